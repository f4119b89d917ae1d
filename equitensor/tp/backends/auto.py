"""``backend="auto"``: pick the fastest backend that computes a product exactly, openly.

Candidates. Among the registered backends, a candidate for an operation ('tensor_product',
'gaunt_product' or 'edge_convolution') on a spec, dtype and device is one whose record lists the
operation, is exact (approximate backends such as ``cp`` are never chosen, not even at full
rank), has no limitation for the spec, lists the device type and dtype, and whose ``available``
check (if any, e.g. CuPy and a GPU for ``cuda``) passes. Every other backend is excluded with
its reason, kept in the choice.

Choice. One candidate: chosen without measuring. Several: each runs a few forward+backward calls
on a representative random batch (:data:`MEASURE_BATCH` samples or edges, drawn from a private
generator, so the global RNG is untouched) after a warm-up, and the fastest median wins. The
result is cached in memory and on disk as JSON (folder ``$EQUITENSOR_CACHE/auto``, else
``$XDG_CACHE_HOME/equitensor/auto``, else ``~/.cache/equitensor/auto``; written atomically), keyed
by a hash of the operation, the spec, the candidates, dtype, device name, thread count, torch
and equitensor versions. ``EQUITENSOR_AUTO_BACKEND=<name>`` forces a backend (deterministic
tests); it must be a candidate, otherwise the choice fails naming why.

Reporting. Every choice is logged at INFO on the ``equitensor.tp`` logger with the candidates'
times and the exclusions, and returned as a :class:`BackendChoice` that the modules keep as
``module.backend_choice`` (``module.backend`` becomes the chosen name).

When. Choosing is an explicit step, never hidden in a forward call: construct the module with
``device=`` (it chooses then, for that device and the default dtype), or build the model, move it
to its device and dtype, and call :func:`resolve_backends` on it (every ``auto`` submodule chooses
for that device and dtype). A module that has not chosen refuses to run, saying so. Under
``torch.distributed``, :func:`resolve_backends` lets rank 0 measure and broadcasts its choices, so
every rank runs the same backends. Resolve before ``torch.compile``, which should not trace a
measurement.

>>> import torch, equitensor
>>> tp = equitensor.FullyConnectedTensorProduct("2x1o", "1o", "0e + 1e", backend="auto")
>>> choices = equitensor.resolve_backends(tp)  # CPU, default dtype: measures (or reads the cache)
>>> tp.backend == choices[""].backend != "auto"
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from equitensor.cache import cache_dir as equitensor_cache_dir
from equitensor.serialization import atomic_write
from equitensor.tp.backends.capabilities import list_backends
from equitensor.tp.spec import TensorProductSpec

__all__ = [
    "resolve_backends",
    "unresolved",
    "FORCE_ENV",
    "MEASURE_BATCH",
    "BackendChoice",
    "cache_dir",
    "candidate_backends",
    "choose_backend",
    "clear_memory_cache",
    "edge_convolution_step",
    "executor_step",
    "measure",
]

logger = logging.getLogger("equitensor.tp")

#: Environment variable that forces the choice (a backend name).
FORCE_ENV = "EQUITENSOR_AUTO_BACKEND"
#: Samples (tensor products) or edges (edge convolutions) in the measurement batch.
MEASURE_BATCH = 256
WARMUP_CALLS = 2
TIMED_CALLS = 5
#: Bump when the measurement or the cache format changes: it is part of every cache key.
CACHE_VERSION = 1

Step = Callable[[], None]


@dataclass(frozen=True)
class BackendChoice:
    """What ``auto`` chose and why.

    ``times``: median seconds of one forward+backward call per measured candidate (empty when
    nothing was measured). ``excluded``: backend -> why it was not a candidate. ``source``:
    'measured', 'memory cache', 'disk cache', 'only candidate' or 'forced by <env>'.
    """

    backend: str
    reason: str
    operation: str
    device: str
    dtype: str
    candidates: tuple[str, ...]
    times: dict[str, float] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    source: str = "measured"

    def __str__(self) -> str:
        timed = ", ".join(f"{name} {seconds * 1e3:.3g} ms" for name, seconds in self.ranked())
        parts = [
            f"chose {self.backend!r} for {self.operation} on {self.device} ({self.dtype}): {self.reason}"
        ]
        if timed:
            parts.append(f"forward+backward times: {timed}")
        if self.excluded:
            parts.append("not candidates: " + "; ".join(f"{k} ({v})" for k, v in self.excluded.items()))
        return ". ".join(parts)

    def ranked(self) -> list[tuple[str, float]]:
        """Measured candidates, fastest first."""
        return sorted(self.times.items(), key=lambda item: item[1])


# --------------------------------------------------------------------------------------------
# Candidates


def candidate_backends(
    operation: str,
    spec: TensorProductSpec,
    device: torch.device,
    dtype: torch.dtype,
    names: Sequence[str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The backends that compute ``spec`` exactly for ``operation`` on ``device`` in ``dtype``,
    and the reason each other one is excluded. ``names`` restricts the search (a module's own
    backend list); a name without a registered record is excluded, saying so."""
    records = {record.name: record for record in list_backends()}
    candidates, excluded = [], {}
    for name in names if names is not None else records:
        record = records.get(name)
        if record is None:
            excluded[name] = "no capability record is registered for it"
        elif operation not in record.operations:
            excluded[name] = f"does not compute {operation}"
        elif not record.exact:
            excluded[name] = "approximate backend (auto picks exact ones only)"
        elif device.type not in record.devices:
            excluded[name] = f"does not run on {device.type} (runs on {', '.join(record.devices)})"
        elif dtype not in record.dtypes:
            excluded[name] = f"does not support {str(dtype).removeprefix('torch.')}"
        elif problems := record.limitations(spec):
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            excluded[name] = f"cannot compute this spec exactly: {problems[0]}{more}"
        elif record.available is not None and (why := record.available(device)) is not None:
            excluded[name] = f"unavailable here: {why}"
        else:
            candidates.append(name)
    return candidates, excluded


# --------------------------------------------------------------------------------------------
# Measurement


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Step, device: torch.device) -> float:
    """Median seconds of ``step()`` over :data:`TIMED_CALLS` calls after :data:`WARMUP_CALLS`."""
    for _ in range(WARMUP_CALLS):
        step()
    _synchronize(device)
    times = []
    for _ in range(TIMED_CALLS):
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_inputs(
    shapes: Sequence[tuple[int, ...]], device: torch.device, dtype: torch.dtype, seed: int = 0
) -> list[torch.Tensor]:
    """Standard normal leaf tensors (requiring grad) from a private generator (global RNG untouched)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(shape, generator=generator, dtype=dtype).to(device).requires_grad_() for shape in shapes
    ]


def backward_step(forward: Callable[[], torch.Tensor], inputs: Sequence[torch.Tensor]) -> Step:
    """A step running ``forward()`` and the gradients of its sum with respect to ``inputs``."""

    def step() -> None:
        out = forward()
        if out.requires_grad:
            torch.autograd.grad(out.sum(), list(inputs), allow_unused=True)

    return step


def executor_step(
    spec: TensorProductSpec,
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
    *,
    shared_weights: bool = True,
    batch: int | None = None,
) -> Step:
    """One forward+backward of ``backend``'s executor of ``spec`` on a random batch (flat
    ``(batch, dim)`` inputs, weights shared or per sample as the module uses them)."""
    from equitensor.tp.backends.capabilities import make_executor

    executor = make_executor(backend, spec)
    batch = MEASURE_BATCH if batch is None else batch
    shapes = [(batch, spec.irreps_in1.dim), (batch, spec.irreps_in2.dim)]
    if spec.weight_numel:
        shapes.append((spec.weight_numel,) if shared_weights else (batch, spec.weight_numel))
    inputs = random_inputs(shapes, device, dtype)
    weight = inputs[2] if spec.weight_numel else None
    return backward_step(lambda: executor(inputs[0], inputs[1], weight), inputs)


# --------------------------------------------------------------------------------------------
# Cache


def cache_dir() -> Path:
    """Where choices are kept: the ``auto`` folder of :func:`equitensor.cache.cache_dir`."""
    return equitensor_cache_dir("auto")


_MEMORY: dict[str, BackendChoice] = {}


def clear_memory_cache() -> None:
    """Forget the in-process choices (the disk cache stays)."""
    _MEMORY.clear()


def device_name(device: torch.device) -> str:
    """The device's model (GPU name, or CPU model and torch's thread count)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{device.type}: {model}, {torch.get_num_threads()} threads"


def cache_key(
    operation: str,
    spec: TensorProductSpec,
    device: torch.device,
    dtype: torch.dtype,
    candidates: Sequence[str],
    context: str,
) -> tuple[str, dict[str, str]]:
    """The hash that names a choice's cache entry, and the readable fields it hashes."""
    import equitensor

    fields = {
        "operation": operation,
        "spec": repr(spec),
        "context": context,
        "candidates": ",".join(candidates),
        "dtype": str(dtype),
        "device": device_name(device),
        "torch": torch.__version__,
        "equitensor": equitensor.__version__,
        "batch": str(MEASURE_BATCH),
        "cache_version": str(CACHE_VERSION),
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]
    return digest, fields


def _load(path: Path, fields: dict[str, str], candidates: Sequence[str]) -> BackendChoice | None:
    """The cached choice, or None (with a warning for an unusable file)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("key") != fields:
            raise ValueError("its key fields do not match (hash collision or edited file)")
        choice = BackendChoice(**{**data["choice"], "candidates": tuple(data["choice"]["candidates"])})
        if choice.backend not in candidates:
            raise ValueError(f"it names {choice.backend!r}, which is not a candidate")
    except Exception as error:  # an unusable entry is measured again and overwritten
        warnings.warn(f"ignoring the auto-backend cache file {path} ({error}); measuring again", stacklevel=4)
        return None
    return choice


# --------------------------------------------------------------------------------------------
# The choice


def _log(choice: BackendChoice) -> BackendChoice:
    logger.info("auto backend: %s", choice)
    return choice


def choose_backend(
    operation: str,
    spec: TensorProductSpec,
    device: torch.device | str,
    dtype: torch.dtype,
    make_step: Callable[[str, torch.device, torch.dtype], Step],
    *,
    names: Sequence[str] | None = None,
    context: str = "",
) -> BackendChoice:
    """Choose the backend for ``operation`` on ``spec``, ``device`` and ``dtype`` (see the module
    docstring). ``make_step(name, device, dtype)`` returns one forward+backward call of a fresh
    instance on that backend; ``context`` is extra key material (e.g. the weight sharing).

    ValueError when no backend qualifies or the forced one is not a candidate.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    candidates, excluded = candidate_backends(operation, spec, device, dtype, names)
    where = f"{device.type} ({str(dtype).removeprefix('torch.')})"
    common = dict(
        operation=operation,
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        candidates=tuple(candidates),
        excluded=excluded,
    )
    if not candidates:
        listed = "\n".join(f"  - {name}: {why}" for name, why in excluded.items())
        raise ValueError(
            f"backend='auto': no backend computes this {operation} exactly on {where}:\n{listed}"
        )

    forced = os.environ.get(FORCE_ENV)
    if forced:
        if forced not in candidates:
            why = excluded.get(forced, "it is not a backend of this module")
            raise ValueError(
                f"{FORCE_ENV}={forced!r} cannot be used for this {operation} on {where}: {why}; "
                f"candidates: {', '.join(candidates)}"
            )
        return _log(
            BackendChoice(forced, f"forced by {FORCE_ENV}", source=f"forced by {FORCE_ENV}", **common)
        )
    if len(candidates) == 1:
        return _log(
            BackendChoice(
                candidates[0],
                "the only backend that computes it exactly here; nothing measured",
                source="only candidate",
                **common,
            )
        )

    digest, fields = cache_key(operation, spec, device, dtype, candidates, context)
    hit = _MEMORY.get(digest)
    if hit is not None:
        return _log(BackendChoice(**{**asdict(hit), "source": "memory cache"}))
    path = cache_dir() / f"{digest}.json"
    stored = _load(path, fields, candidates)
    if stored is not None:
        _MEMORY[digest] = stored
        return _log(BackendChoice(**{**asdict(stored), "source": f"disk cache {path}"}))

    times = {}
    with torch.inference_mode(False), torch.enable_grad():
        for name in candidates:
            times[name] = measure(make_step(name, device, dtype), device)
    fastest = min(times, key=times.get)
    choice = BackendChoice(
        fastest,
        f"fastest of {len(candidates)} exact candidates (median forward+backward, batch {MEASURE_BATCH})",
        times=times,
        source="measured",
        **common,
    )
    _MEMORY[digest] = choice
    try:
        with atomic_write(path, "w") as file:
            json.dump({"key": fields, "choice": asdict(choice)}, file, indent=1, sort_keys=True)
    except OSError as error:
        warnings.warn(f"could not write the auto-backend cache file {path}: {error}", stacklevel=2)
    return _log(choice)


def check_auto_options(module: str, options: dict) -> None:
    """backend='auto' takes no backend options (they belong to one backend)."""
    if options:
        raise ValueError(
            f"{module}(backend='auto') takes no backend options (they are specific to one backend), "
            f"got {sorted(options)}; name the backend to pass options"
        )


def edge_convolution_step(conv: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> Step:
    """One forward+backward of the edge convolution ``conv`` on a random graph with
    :data:`MEASURE_BATCH` edges among a eighth as many nodes (gradients for the node features,
    edge vectors and edge weights, as in force training)."""
    edges = MEASURE_BATCH
    nodes = max(1, edges // 8)
    conv = conv.to(device)
    inputs = random_inputs(
        [(nodes, conv.irreps_node.dim), (edges, 3), (edges, conv.weight_numel)], device, dtype
    )
    edge_index = torch.randint(nodes, (2, edges), generator=torch.Generator().manual_seed(1)).to(device)
    return backward_step(lambda: conv(*inputs, edge_index), inputs)


def unresolved(module: torch.nn.Module) -> RuntimeError:
    """The error of an ``auto`` module called before it has chosen its backend."""
    return RuntimeError(
        f"{type(module).__name__}(backend='auto') has not chosen its backend: call "
        "equitensor.resolve_backends(model) once the model is on its device and dtype, or construct "
        "it with device=..."
    )


def resolve_backends(
    model: torch.nn.Module, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> dict[str, BackendChoice]:
    """Choose the backend of every ``backend="auto"`` submodule of ``model`` (itself included)
    that has not chosen yet, for ``device`` and ``dtype`` (default: those of the model's first
    floating-point parameter or buffer; else the CPU and the default dtype). Returns the choices by
    submodule name (``""`` for ``model`` itself).

    With ``torch.distributed`` initialised and several ranks, rank 0 measures and broadcasts its
    choices (every rank must call this, as with any collective), so all ranks run the same
    backends whatever their own timings.

    >>> from equitensor import FullyConnectedTensorProduct
    >>> tp = FullyConnectedTensorProduct("2x0e + 1x1o", "1o", "3x1o + 0e", backend="auto")
    >>> tp.backend, tp.backend_choice
    ('auto', None)
    >>> choices = resolve_backends(tp)  # only cg computes it exactly: chosen without measuring
    >>> tp.backend, choices[""].source
    ('cg', 'only candidate')
    """
    pending = {
        name: module
        for name, module in model.named_modules()
        if getattr(module, "backend", None) == "auto" and hasattr(module, "resolve_backend")
    }
    if device is None or dtype is None:
        tensor = next((t for t in [*model.parameters(), *model.buffers()] if t.is_floating_point()), None)
        device = device if device is not None else (tensor.device if tensor is not None else "cpu")
        dtype = dtype or (tensor.dtype if tensor is not None else torch.get_default_dtype())
    device = torch.device(device)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed or torch.distributed.get_world_size() == 1:
        return {name: module.resolve_backend(device, dtype) for name, module in pending.items()}
    choices = [None]
    if torch.distributed.get_rank() == 0:
        choices = [{name: module.resolve_backend(device, dtype) for name, module in pending.items()}]
    torch.distributed.broadcast_object_list(choices, src=0)
    if torch.distributed.get_rank() != 0:
        for name, choice in choices[0].items():
            pending[name].use_backend(choice)
    return choices[0]
