"""Timing and memory measurement: warm-up, repetitions, round-robin interleaving, robust statistics.

Protocol (:func:`round_robin`). Every implementation is warmed up first; the fastest warm-up call
decides how many calls one repetition loops over (so a repetition lasts at least ``min_rep_s``,
far above the timer's resolution) and, with ``max_seconds``, how many repetitions it gets.
Then the repetitions are interleaved: round r runs one repetition of every implementation,
starting at a different implementation each round, so all of them see the same machine load
and none always runs right after the same neighbour. Results are per call: median, quartiles,
min and max over the repetitions.

Clocks. On CPU ``time.perf_counter``. On CUDA a pair of CUDA events around the repetition on
the current stream, after a ``torch.cuda.synchronize`` (so earlier work is not counted) and
synchronising on the end event (so all of the repetition's kernels are).

Peak memory (:func:`peak_memory`), measured in a separate, untimed call:
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was
  allocated before the call: the peak of live tensor memory the call added (caching-allocator
  reserve not included).
- CPU: there is no allocator high-water mark, so the call runs under the torch profiler with
  ``profile_memory=True`` and the peak is the maximum running sum of the allocation and free
  events it records: the peak of *torch-allocated* bytes live during the call beyond those live
  before it. Memory allocated outside torch (Python objects, library workspaces) is not seen, and
  neither is how much of it the C allocator keeps resident afterwards. (Process RSS is not used:
  after warm-up the C allocator reuses freed pages, so an RSS delta reads close to zero.)

Other processes (:class:`ExternalLoad`, Linux only): the average number of cores used by other
processes during a timing, from ``/proc/stat`` minus this process's CPU time. On a shared machine
it says whether a timing can be trusted.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

__all__ = [
    "ExternalLoad",
    "Timing",
    "is_cuda",
    "peak_memory",
    "round_robin",
    "synchronize",
    "time_repetition",
]


def is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if is_cuda(device):
        torch.cuda.synchronize(device)


def time_repetition(fn: Callable[[], object], device: torch.device | str, inner: int = 1) -> float:
    """Seconds per call of ``inner`` back-to-back calls of ``fn`` (CUDA events on a GPU)."""
    if is_cuda(device):
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / inner
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


@dataclass(frozen=True)
class Timing:
    """Per-call times of one implementation: every repetition and the summary statistics."""

    times_s: tuple[float, ...]
    inner: int
    warmup: int
    warmup_min_s: float

    @property
    def reps(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def q25_s(self) -> float:
        return _quantile(self.times_s, 0.25)

    @property
    def q75_s(self) -> float:
        return _quantile(self.times_s, 0.75)

    @property
    def min_s(self) -> float:
        return min(self.times_s)

    @property
    def max_s(self) -> float:
        return max(self.times_s)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.05 = the middle half within 5 %)."""
        return (self.q75_s - self.q25_s) / self.median_s if self.median_s > 0 else math.nan

    def summary(self) -> dict:
        """JSON-ready statistics (seconds) and the raw repetitions."""
        out = asdict(self)
        out["times_s"] = list(self.times_s)
        for name in ("reps", "median_s", "q25_s", "q75_s", "min_s", "max_s", "spread"):
            out[name] = getattr(self, name)
        return out


def _quantile(values: tuple[float, ...], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty sequence."""
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def round_robin(
    fns: dict[str, Callable[[], object]],
    device: torch.device | str,
    *,
    warmup: int = 2,
    reps: int = 10,
    min_reps: int = 3,
    min_rep_s: float = 0.0,
    max_seconds: float | None = None,
) -> dict[str, Timing]:
    """Time every function in ``fns`` with interleaved repetitions (see the module docstring).

    ``warmup`` calls each first (at least one). A repetition loops ``ceil(min_rep_s / t_warm)``
    calls when a call is shorter than ``min_rep_s``. With ``max_seconds``, an implementation
    whose ``reps`` repetitions would take longer gets fewer, but never fewer than ``min_reps``.
    """
    if not fns:
        return {}
    if reps < 1 or min_reps < 1:
        raise ValueError(f"reps and min_reps must be >= 1, got {reps} and {min_reps}")
    plan: dict[str, tuple[int, int, float]] = {}
    for name, fn in fns.items():
        fastest = math.inf
        for _ in range(max(warmup, 1)):
            fastest = min(fastest, time_repetition(fn, device))
        inner = max(1, math.ceil(min_rep_s / fastest)) if 0 < fastest < min_rep_s else 1
        n = reps
        if max_seconds is not None and fastest * inner * reps > max_seconds:
            n = max(min_reps, min(reps, int(max_seconds / (fastest * inner))))
        plan[name] = (inner, n, fastest)

    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    for r in range(max(n for _, n, _ in plan.values())):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            inner, n, _ = plan[name]
            if r < n:
                times[name].append(time_repetition(fns[name], device, inner))
    return {name: Timing(tuple(times[name]), plan[name][0], max(warmup, 1), plan[name][2]) for name in names}


@contextlib.contextmanager
def _silenced_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null: the profiler's C++ side logs a start and a stop line
    per use that Python cannot switch off. (The profiled call ran checked before; its warnings,
    if any, were shown then.)"""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory(fn: Callable[[], object], device: torch.device | str) -> dict:
    """Peak memory one call of ``fn`` adds on ``device``: ``{"bytes": int | None, "method": str}``.

    See the module docstring for what each method does and does not count.
    """
    gc.collect()
    if is_cuda(device):
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return {
            "bytes": int(peak - before),
            "method": "torch.cuda.max_memory_allocated during the call minus memory_allocated before it",
        }
    try:
        from torch.profiler import ProfilerActivity, profile

        with _silenced_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = sorted(
            (event.start_ns(), event.nbytes())
            for event in prof.profiler.kineto_results.events()
            if event.name() == "[memory]" and str(event.device_type()).endswith("CPU")
        )
    except (AttributeError, RuntimeError) as error:  # profiler internals differ across torch versions
        return {"bytes": None, "method": f"unavailable: torch profiler memory events not readable ({error})"}
    peak = max(itertools.accumulate(n for _, n in events), default=0)
    return {
        "bytes": int(max(peak, 0)),
        "method": "torch profiler (profile_memory): peak running sum of torch CPU allocations minus frees "
        "during the call; allocations outside torch are not seen",
    }


# ----------------------------------------------------------------------------- other processes


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent non-idle since boot (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class ExternalLoad:
    """Average number of cores other processes used between ``start()`` and ``stop()``.

    ``stop()`` returns None where ``/proc/stat`` cannot be read (not Linux).
    """

    def start(self) -> None:
        self._t0 = time.perf_counter()
        try:
            self._busy0, self._own0 = _busy_seconds(), _own_seconds()
        except OSError:
            self._busy0 = None

    def stop(self) -> float | None:
        if self._busy0 is None:
            return None
        wall = time.perf_counter() - self._t0
        other = (_busy_seconds() - self._busy0) - (_own_seconds() - self._own0)
        return max(other, 0.0) / max(wall, 1e-9)
