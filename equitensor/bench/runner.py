"""Run benchmark cases: check every implementation against the reference, then time the ones that
agree, pass by pass, interleaved round-robin, and measure their peak memory.

A row of the result is one (case, implementation, pass). Its ``status`` is ``timed``,
``check failed`` (not timed: its results differ from the reference by more than the tolerance),
``error`` (it raised while checked) or ``skipped`` (not built; ``reason`` says why).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from equitensor.bench.cases import Case, Implementation
from equitensor.bench.counts import pass_counts
from equitensor.bench.passes import PASSES
from equitensor.bench.timing import ExternalLoad, peak_memory, round_robin, synchronize

__all__ = [
    "APPROXIMATION_MARGIN",
    "TimingOptions",
    "approximate_tolerance",
    "default_tolerance",
    "max_relative_difference",
    "run_cases",
]

#: An approximate implementation's results may differ from the reference by this many times its
#: reported relative error: the CP residual is a Frobenius norm per path's coefficient tensor,
#: while the check takes the largest entry of outputs and gradients relative to the largest
#: reference entry, which can be a few times larger.
APPROXIMATION_MARGIN = 10.0


@dataclass(frozen=True)
class TimingOptions:
    warmup: int = 2
    reps: int = 10
    min_reps: int = 3
    min_rep_s: float = 0.02
    max_seconds: float | None = 30.0
    memory: bool = True


def default_tolerance(dtype: torch.dtype) -> float:
    """Largest accepted difference from the reference, relative to the reference's largest entry."""
    return 1e-9 if dtype == torch.float64 else 2e-4


def approximate_tolerance(tol: float, approximation_error: float | None) -> float:
    """The check's tolerance for an implementation reporting ``approximation_error`` (None: exact):
    the larger of ``tol`` and ``APPROXIMATION_MARGIN`` times the reported error."""
    if approximation_error is None:
        return tol
    return max(tol, APPROXIMATION_MARGIN * approximation_error)


def max_relative_difference(ours: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """Max over tensors of max|a - b| / max|b| (absolute when the reference tensor is all zero)."""
    if len(ours) != len(reference):
        raise ValueError(f"{len(ours)} results against {len(reference)} of the reference")
    worst = 0.0
    for a, b in zip(ours, reference):
        if a.shape != b.shape:
            raise ValueError(f"result of shape {tuple(a.shape)} against the reference's {tuple(b.shape)}")
        a, b = a.detach().double(), b.detach().double()
        scale = b.abs().max().item() if b.numel() else 0.0
        diff = (a - b).abs().max().item() if b.numel() else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def _check(case: Case, pass_name: str, tol: float, device) -> dict[str, dict]:
    """Run every implementation's ``pass_name`` once (its first warm-up) and compare."""
    results, status = {}, {}
    for impl in case.implementations:
        t0 = time.perf_counter()
        try:
            tensors = impl.to_reference(pass_name, impl.passes[pass_name]())
            synchronize(device)
        except Exception as error:  # report, do not abort the whole benchmark
            status[impl.name] = {"status": "error", "reason": f"{type(error).__name__}: {error}"}
            continue
        results[impl.name] = tensors
        status[impl.name] = {"status": "ok", "first_call_s": time.perf_counter() - t0}
    reference = results.get(case.reference)
    if reference is None:
        raise RuntimeError(
            f"{case.operation}: the reference {case.reference!r} failed: {status[case.reference]['reason']}"
        )
    impls = {impl.name: impl for impl in case.implementations}
    for name, tensors in results.items():
        if name == case.reference:
            status[name]["max_rel_diff"] = 0.0
            continue
        limit = approximate_tolerance(tol, impls[name].approximation_error)
        try:
            diff = max_relative_difference(tensors, reference)
        except ValueError as error:
            status[name] = {"status": "check failed", "reason": str(error)}
            continue
        status[name].update(max_rel_diff=diff, tolerance=limit)
        if not diff <= limit:
            status[name].update(
                status="check failed",
                reason=f"differs from {case.reference} by {diff:.2e} (relative) > tolerance {limit:.1e}",
            )
    return status


def _note(case: Case, impl: Implementation, check: dict) -> str | None:
    """The implementation's note, with the tolerance its check used when it is approximate."""
    if impl.approximation_error is None or "tolerance" not in check:
        return impl.note
    limit = check["tolerance"]
    text = f"{impl.note}; checked against {case.reference} within {limit:.1e} (relative)"
    if limit >= 1:
        text += ", which cannot fail: this rank is too low for the check to mean anything"
    return text


def _row(case: Case, name: str, source: str, pass_name: str | None, dtype, device, **fields) -> dict:
    row = {
        "operation": case.operation,
        "lmax": case.lmax,
        "channels": case.channels,
        "size": case.size,
        "size_name": case.size_name,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(device),
        "implementation": name,
        "source": source,
        "pass": pass_name,
    }
    row.update(fields)
    return row


def run_case(
    case: Case,
    passes: Sequence[str],
    options: TimingOptions,
    *,
    tol: float,
    dtype: torch.dtype,
    device,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], dict]:
    """Check, time and measure one case; returns its rows and a JSON-ready description."""
    unknown = [p for p in passes if p not in PASSES]
    if unknown:
        raise ValueError(f"unknown passes {unknown}; choose from {PASSES}")
    deepest = max(passes, key=PASSES.index)
    checks = _check(case, deepest, tol, device)
    log(
        "    check ("
        + deepest
        + "): "
        + ", ".join(
            f"{n} {c['max_rel_diff']:.1e}"
            if "max_rel_diff" in c and c["status"] == "ok"
            else f"{n} {c['status']}"
            for n, c in checks.items()
        )
    )
    rows = []
    for name, reason in case.skipped.items():
        log(f"    skipped {name}: {reason}")
        rows.append(_row(case, name, name, None, dtype, device, status="skipped", reason=reason))
    timed: list[Implementation] = []
    for impl in case.implementations:
        check = checks[impl.name]
        if check["status"] != "ok":
            log(f"    not timed {impl.name}: {check['reason']}")
            rows.append(
                _row(
                    case,
                    impl.name,
                    impl.source,
                    None,
                    dtype,
                    device,
                    status=check["status"],
                    reason=check["reason"],
                    note=_note(case, impl, check),
                )
            )
        elif impl.timed:
            timed.append(impl)

    for pass_name in passes:
        load = ExternalLoad()
        load.start()
        timings = round_robin(
            {impl.name: impl.passes[pass_name] for impl in timed},
            device,
            warmup=options.warmup,
            reps=options.reps,
            min_reps=options.min_reps,
            min_rep_s=options.min_rep_s,
            max_seconds=options.max_seconds,
        )
        external = load.stop()
        for impl in timed:
            t = timings[impl.name]
            flops, nbytes = pass_counts(impl.counts, pass_name)
            memory = peak_memory(impl.passes[pass_name], device) if options.memory else {"bytes": None}
            rows.append(
                _row(
                    case,
                    impl.name,
                    impl.source,
                    pass_name,
                    dtype,
                    device,
                    status="timed",
                    reason=None,
                    **t.summary(),
                    flops=flops,
                    bytes=nbytes,
                    gflops=None if flops is None else flops / t.median_s / 1e9,
                    gbs=None if nbytes is None else nbytes / t.median_s / 1e9,
                    peak_memory_bytes=memory["bytes"],
                    max_rel_diff=checks[impl.name]["max_rel_diff"],
                    tolerance=checks[impl.name].get("tolerance"),
                    note=_note(case, impl, checks[impl.name]),
                    external_cores=external,
                )
            )
        log(
            f"    {pass_name:13s} "
            + "  ".join(f"{impl.name} {timings[impl.name].median_s * 1e3:.3g} ms" for impl in timed)
            + ("" if external is None else f"  (other processes: {external:.2f} cores)")
        )
    description = {
        "operation": case.operation,
        "lmax": case.lmax,
        "channels": case.channels,
        case.size_name: case.size,
        "shape": case.shape,
        "reference": case.reference,
        "implementations": {
            impl.name: {
                "source": impl.source,
                "info": impl.info,
                "timed": impl.timed,
                "counts_formula": impl.counts.formula if impl.counts else None,
                "check": checks[impl.name],
                "approximation_error": impl.approximation_error,
                "note": _note(case, impl, checks[impl.name]),
            }
            for impl in case.implementations
        },
        "skipped": case.skipped,
    }
    return rows, description


def run_cases(
    jobs: Sequence[tuple[str, Callable[[], Case]]],
    passes: Sequence[str],
    options: TimingOptions,
    *,
    tol: float,
    dtype: torch.dtype,
    device,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], list[dict]]:
    """Build and run every job (label, case factory) in turn, showing progress through ``log``."""
    rows, cases = [], []
    start = time.perf_counter()
    for i, (label, build) in enumerate(jobs, 1):
        log(f"[{i}/{len(jobs)}] {label}  ({time.perf_counter() - start:.0f} s elapsed)")
        case = build()
        case_rows, description = run_case(case, passes, options, tol=tol, dtype=dtype, device=device, log=log)
        rows += case_rows
        cases.append(description)
        del case
        gc.collect()
    return rows, cases
