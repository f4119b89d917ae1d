#!/usr/bin/env python
"""CPU benchmark of equitensor's tensor products against e3nn and cuEquivariance (naive CPU path).

Case A: channel-wise ('uvu') edge product, MACE style.
    x1 = 64x0e+64x1o+64x2e+... up to L (parity (-1)^l), node features gathered per edge;
    x2 = Irreps.spherical_harmonics(L);
    one output block (mul1, ir_out) per path (i1, i2, ir_out) with ir_out in ir1 * ir2 and
    l_out <= L, outputs sorted and the instructions remapped with the sort permutation;
    per-edge weights (shared_weights=False), ``--edges`` edges.
    Implementations: equitensor.tp.TensorProduct(backend="cg"), e3nn o3.TensorProduct (same
    instructions), cuet.ChannelWiseTensorProduct (group O3_e3nn, layout mul_ir, method "naive";
    weight blocks permuted to cuEquivariance's order).

Case B: full tensor product of single-channel inputs 1x0e+1x1o+...+1xLp with itself.
    Implementations: equitensor.tp.FullTensorProduct, e3nn o3.FullTensorProduct,
    cuet.SegmentedPolynomial(cue.descriptors.full_tensor_product(...), method="naive").

Before timing, every implementation is run once forward+backward on the benchmark inputs (this is
also its first warm-up) and its output and the gradients of all inputs are compared with
equitensor's. Modes: ``fwd`` = forward under torch.no_grad(); ``fwd+bwd`` = forward with
requires_grad on x1, x2 (and the weights) followed by ``y.backward(g)`` with a precomputed random
``g``. Implementations are timed round-robin (rep 1 of every implementation, then rep 2, ...) so
that they see the same machine load; the CPU time used by other processes during each group is
recorded (from /proc/stat minus this process's own CPU time).

Usage: python benchmarks/tp_cpu.py [--quick] [--out-json ...] [--out-md ...]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch

from equitensor.bench.peers import transpose_layout

REF = "equitensor"
LABELS = {"cueq": "cueq naive (mul_ir)", "cueq_ir_mul": "cueq naive (ir_mul)"}


# ----------------------------------------------------------------------------- environment


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware() -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu_model": cpu_model(),
        "os_cpu_count": os.cpu_count(),
        "sched_affinity_cpus": affinity,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "mem_total_gib": mem_gib,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "e3nn", "cuequivariance", "cuequivariance-torch", "equitensor", "opt-einsum-fx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    try:
        import cuequivariance_ops_torch  # noqa: F401

        out["cuequivariance_ops_torch"] = "installed"
    except ImportError:
        out["cuequivariance_ops_torch"] = None
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "../equitensor"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        out["equitensor_git_commit"] = commit + (" (equitensor/ modified)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["equitensor_git_commit"] = None
    try:
        import equitensor.tp.backends.cg as cg
        import equitensor.tp.tensor_product as tp

        for mod in (cg, tp):
            with open(mod.__file__, "rb") as f:
                out[f"sha256[{mod.__name__}]"] = hashlib.sha256(f.read()).hexdigest()[:16]
    except (ImportError, OSError):
        pass
    return out


_CLK = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds spent non-idle by the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / _CLK


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class ExternalLoad:
    """Average number of cores used by other processes between start() and stop()."""

    def start(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), _busy_seconds(), _own_seconds()

    def stop(self) -> float:
        wall = time.perf_counter() - self.t0
        other = (_busy_seconds() - self.busy0) - (_own_seconds() - self.own0)
        return max(other, 0.0) / max(wall, 1e-9)


def idle_external_load(seconds: float = 2.0) -> float:
    probe = ExternalLoad()
    probe.start()
    time.sleep(seconds)
    return probe.stop()


def wait_for_quiet(max_external: float, max_wait: float, log) -> dict:
    """Sleep until other processes use less than ``max_external`` cores (or ``max_wait`` passes)."""
    t0 = time.perf_counter()
    while True:
        ext = idle_external_load()
        if ext <= max_external or time.perf_counter() - t0 > max_wait:
            return {
                "external_cores_before": round(ext, 3),
                "waited_s": round(time.perf_counter() - t0, 1),
                "loadavg_before": [round(v, 2) for v in os.getloadavg()],
                "quiet": ext <= max_external,
            }
        log(f"    machine busy (other processes use {ext:.2f} cores), waiting ...")


# ----------------------------------------------------------------------------- implementations


@dataclass
class Impl:
    """One implementation of a case: ``call()`` evaluates it on its own leaf tensors."""

    name: str
    call: object  # () -> Tensor
    leaves: list  # tensors that get requires_grad in fwd+bwd mode
    grad_out: torch.Tensor
    # maps this implementation's leaf gradients to the reference layout (same order as leaves)
    grads_to_ref: object = None
    info: dict = field(default_factory=dict)
    # maps this implementation's output to the reference layout
    out_to_ref: object = None

    def fwd(self) -> None:
        with torch.no_grad():
            self.call()

    def fwd_bwd(self) -> None:
        for t in self.leaves:
            t.grad = None
        self.call().backward(self.grad_out)


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


def case_a_spec(L: int, mul: int):
    """e3nn irreps and 'uvu' instructions of the MACE-style channel-wise edge product."""
    from e3nn import o3

    irreps_in1 = o3.Irreps([(mul, (l, (-1) ** l)) for l in range(L + 1)])
    irreps_in2 = o3.Irreps.spherical_harmonics(L)
    out, instructions = [], []
    for i1, (mul1, ir1) in enumerate(irreps_in1):
        for i2, (_, ir2) in enumerate(irreps_in2):
            for ir_out in ir1 * ir2:
                if ir_out.l <= L:
                    instructions.append((i1, i2, len(out), "uvu", True))
                    out.append((mul1, ir_out))
    irreps_out, p, _ = o3.Irreps(out).sort()
    instructions = [(i1, i2, p[i_out], mode, w) for i1, i2, i_out, mode, w in instructions]
    return irreps_in1, irreps_in2, irreps_out, instructions


def build_case_a(L: int, mul: int, edges: int, dtype, with_cueq: bool, seed: int):
    from e3nn import o3

    from equitensor.tp import TensorProduct

    irreps_in1, irreps_in2, irreps_out, instructions = case_a_spec(L, mul)
    ours = TensorProduct(
        str(irreps_in1),
        str(irreps_in2),
        str(irreps_out),
        instructions,
        shared_weights=False,
        internal_weights=False,
        backend="cg",
    ).to(dtype)
    theirs = o3.TensorProduct(
        irreps_in1, irreps_in2, irreps_out, instructions, shared_weights=False, internal_weights=False
    ).to(dtype)
    assert ours.weight_numel == theirs.weight_numel

    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(edges, irreps_in1.dim, generator=gen, dtype=dtype)
    x2 = torch.randn(edges, irreps_in2.dim, generator=gen, dtype=dtype)
    w = torch.randn(edges, ours.weight_numel, generator=gen, dtype=dtype)
    g = torch.randn(edges, irreps_out.dim, generator=gen, dtype=dtype)

    def plain(name, module, info):
        a, b, c = _leaf(x1), _leaf(x2), _leaf(w)
        return Impl(name, lambda: module(a, b, c), [a, b, c], g, info=info)

    shape = {
        "irreps_in1": str(irreps_in1),
        "irreps_in2": str(irreps_in2),
        "irreps_out": str(irreps_out),
        "num_paths": len(instructions),
        "mode": "uvu",
        "shared_weights": False,
        "edges": edges,
        "x1": list(x1.shape),
        "x2": list(x2.shape),
        "weight": list(w.shape),
        "out": list(g.shape),
    }
    impls = [
        plain(REF, ours, {"module": "equitensor.tp.TensorProduct", "backend": "cg"}),
        plain("e3nn", theirs, {"module": "e3nn.o3.TensorProduct"}),
    ]
    if with_cueq:
        for layout in ("mul_ir", "ir_mul"):
            impls.append(
                build_case_a_cueq(irreps_in1, irreps_in2, irreps_out, instructions, x1, x2, w, g, layout)
            )
    return shape, impls


def build_case_a_cueq(
    irreps_in1, irreps_in2, irreps_out, instructions, x1, x2, w, g, layout: str = "mul_ir"
) -> Impl:
    """cuet.ChannelWiseTensorProduct with inputs, outputs and gradients in ``layout``.

    With ``ir_mul`` (cuEquivariance's native layout: no transposes inside the module) the inputs and
    the output gradient are converted once, outside the timed call, as a model kept in that
    layout would hold them; results are converted back to mul_ir for the check.
    """
    import cuequivariance as cue
    import cuequivariance_torch as cuet
    from cuequivariance.group_theory.experimental.e3nn import O3_e3nn
    from e3nn import o3

    filter_out = [ir for _, ir in cue.Irreps(O3_e3nn, str(irreps_out.simplify()))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = cuet.ChannelWiseTensorProduct(
            cue.Irreps(O3_e3nn, str(irreps_in1)),
            cue.Irreps(O3_e3nn, str(irreps_in2)),
            filter_out,
            layout=getattr(cue, layout),
            shared_weights=False,
            internal_weights=False,
            dtype=x1.dtype,
            method="naive",
        )
    if o3.Irreps(str(module.irreps_out)) != irreps_out:
        raise RuntimeError(f"cueq output irreps {module.irreps_out} != {irreps_out}")
    stp = cue.descriptors.channelwise_tensor_product(
        cue.Irreps(O3_e3nn, str(irreps_in1)), cue.Irreps(O3_e3nn, str(irreps_in2)), filter_out
    ).polynomial.operations[0][1]
    # cuEquivariance orders its weight blocks like its (sorted) output blocks; here every path has
    # its own output block, so e3nn's weight block n (instruction n) goes to block i_out(n).
    sizes = [irreps_in1[i1].mul * irreps_in2[i2].mul for i1, i2, *_ in instructions]
    offsets = [sum(sizes[:n]) for n in range(len(sizes))]
    order = sorted(range(len(instructions)), key=lambda n: instructions[n][2])
    perm = torch.cat([torch.arange(offsets[n], offsets[n] + sizes[n]) for n in order])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    ir_mul = layout == "ir_mul"
    a = _leaf(transpose_layout(x1, irreps_in1, True) if ir_mul else x1)
    b = _leaf(transpose_layout(x2, irreps_in2, True) if ir_mul else x2)
    c = _leaf(w[:, perm])
    g_cue = transpose_layout(g, irreps_out, True) if ir_mul else g

    def grads_to_ref(grads):
        ga, gb, gc = grads
        if ir_mul:
            ga, gb = transpose_layout(ga, irreps_in1, False), transpose_layout(gb, irreps_in2, False)
        return [ga, gb, gc[:, inv]]

    def out_to_ref(y):
        return transpose_layout(y, irreps_out, False) if ir_mul else y

    info = {
        "module": "cuequivariance_torch.ChannelWiseTensorProduct",
        "group": "O3_e3nn",
        "layout": layout,
        "method_requested": "naive",
        "method_used": module.f.method,
        "num_paths": stp.num_paths,
        "weight_numel": module.weight_numel,
        "warnings": sorted({str(x.message).splitlines()[0] for x in caught}),
        "weight_order": "e3nn weight blocks permuted to cuEquivariance's sorted-output order",
    }
    if stp.num_paths != len(instructions):
        raise RuntimeError(f"cueq has {stp.num_paths} paths, e3nn instructions {len(instructions)}")
    name = "cueq" if layout == "mul_ir" else f"cueq_{layout}"
    return Impl(name, lambda: module(a, b, c), [a, b, c], g_cue, grads_to_ref, info, out_to_ref)


def build_case_b(L: int, batch: int, dtype, with_cueq: bool, seed: int):
    from e3nn import o3

    from equitensor.tp import FullTensorProduct

    irreps = o3.Irreps([(1, (l, (-1) ** l)) for l in range(L + 1)])
    ours = FullTensorProduct(str(irreps), str(irreps)).to(dtype)
    theirs = o3.FullTensorProduct(irreps, irreps).to(dtype)
    if str(ours.irreps_out) != str(theirs.irreps_out):
        raise RuntimeError(f"output irreps differ: {ours.irreps_out} vs {theirs.irreps_out}")

    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randn(batch, irreps.dim, generator=gen, dtype=dtype)
    x2 = torch.randn(batch, irreps.dim, generator=gen, dtype=dtype)
    g = torch.randn(batch, theirs.irreps_out.dim, generator=gen, dtype=dtype)

    def plain(name, module, info):
        a, b = _leaf(x1), _leaf(x2)
        return Impl(name, lambda: module(a, b), [a, b], g, info=info)

    shape = {
        "irreps_in1": str(irreps),
        "irreps_in2": str(irreps),
        "irreps_out": str(theirs.irreps_out),
        "num_paths": len(theirs.instructions),
        "mode": "uvuv",
        "batch": batch,
        "x1": list(x1.shape),
        "x2": list(x2.shape),
        "out": list(g.shape),
    }
    impls = [
        plain(REF, ours, {"module": "equitensor.tp.FullTensorProduct", "backend": "cg"}),
        plain("e3nn", theirs, {"module": "e3nn.o3.FullTensorProduct"}),
    ]
    if with_cueq:
        import cuequivariance as cue
        import cuequivariance_torch as cuet
        from cuequivariance.group_theory.experimental.e3nn import O3_e3nn

        ci = cue.Irreps(O3_e3nn, str(irreps))
        ep = cue.descriptors.full_tensor_product(ci, ci)
        if o3.Irreps(str(ep.outputs[0].irreps)) != theirs.irreps_out:
            raise RuntimeError(f"cueq output irreps {ep.outputs[0].irreps} != {theirs.irreps_out}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = cuet.SegmentedPolynomial(ep.polynomial, method="naive")
        a, b = _leaf(x1), _leaf(x2)
        stp = ep.polynomial.operations[0][1]
        info = {
            "module": "cuequivariance_torch.SegmentedPolynomial(cue.descriptors.full_tensor_product)",
            "group": "O3_e3nn",
            "layout": "mul_ir == ir_mul (multiplicity 1)",
            "method_requested": "naive",
            "method_used": module.method,
            "num_paths": stp.num_paths,
            "warnings": sorted({str(x.message).splitlines()[0] for x in caught}),
        }
        impls.append(Impl("cueq", lambda: module([a, b])[0], [a, b], g, info=info))
    return shape, impls


# ----------------------------------------------------------------------------- check and timing


def check(impls: list[Impl]) -> dict:
    """One forward+backward per implementation (also its first warm-up); compare with the reference."""
    results = {}
    for impl in impls:
        t0 = time.perf_counter()
        for t in impl.leaves:
            t.grad = None
        y = impl.call()
        y.backward(impl.grad_out)
        elapsed = time.perf_counter() - t0
        grads = [t.grad for t in impl.leaves]
        if impl.grads_to_ref is not None:
            grads = impl.grads_to_ref(grads)
        y = y.detach()
        if impl.out_to_ref is not None:
            y = impl.out_to_ref(y)
        results[impl.name] = (y, grads, elapsed)

    y_ref, g_ref, _ = results[REF]
    out = {}
    for name, (y, grads, elapsed) in results.items():
        entry = {"first_fwd_bwd_s": round(elapsed, 4)}
        if name != REF:
            scale = y_ref.abs().max().item()
            entry["out_max_abs_diff"] = (y - y_ref).abs().max().item()
            entry["out_max_abs"] = scale
            entry["grad_max_rel_diff"] = [
                ((a - b).abs().max() / b.abs().max()).item() for a, b in zip(grads, g_ref)
            ]
            rel = max([entry["out_max_abs_diff"] / scale] + entry["grad_max_rel_diff"])
            entry["max_rel_diff"] = rel
        out[name] = entry
    return out


def time_round_robin(
    impls: list[Impl], mode: str, reps: int, min_reps: int, slow_s: float, warmup: int, min_rep_s: float
) -> dict:
    """Warm up every implementation, then time ``reps`` rounds, one rep of each per round.

    A rep runs the call ``inner`` times (so that a rep lasts at least ``min_rep_s``) and records the
    time per call. An implementation whose call takes longer than ``slow_s`` gets ``min_reps`` reps.
    """
    fns = {impl.name: (impl.fwd if mode == "fwd" else impl.fwd_bwd) for impl in impls}
    plan = {}
    for name, fn in fns.items():
        t_warm = math.inf
        for _ in range(warmup):
            t0 = time.perf_counter()
            fn()
            t_warm = min(t_warm, time.perf_counter() - t0)
        inner = max(1, math.ceil(min_rep_s / t_warm)) if t_warm < min_rep_s else 1
        n = min_reps if t_warm > slow_s else reps
        plan[name] = {"inner": inner, "reps": n, "warmup_s": t_warm}

    times = {name: [] for name in fns}
    load = ExternalLoad()
    gc.collect()
    load.start()
    for r in range(max(p["reps"] for p in plan.values())):
        for name, fn in fns.items():
            if r >= plan[name]["reps"]:
                continue
            inner = plan[name]["inner"]
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t0) / inner)
    external = load.stop()

    out = {}
    for name, ts in times.items():
        out[name] = {
            "times_s": [round(t, 6) for t in ts],
            "median_s": statistics.median(ts),
            "min_s": min(ts),
            "max_s": max(ts),
            "reps": len(ts),
            "inner_loops": plan[name]["inner"],
            "warmup_runs": warmup,
        }
    out["_external_cores_during"] = round(external, 3)
    return out


# ----------------------------------------------------------------------------- report


def fmt_time(s: float) -> str:
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def fmt_cell(r: dict | None) -> str:
    if r is None:
        return "-"
    return f"{fmt_time(r['median_s'])} [{fmt_time(r['min_s'])}, {fmt_time(r['max_s'])}] n={r['reps']}"


def markdown(report: dict) -> str:
    meta = report["meta"]
    hw, ver = meta["hardware"], meta["versions"]
    lines = [
        "# Tensor-product CPU benchmark (`benchmarks/tp_cpu.py`)",
        "",
        f"Generated {meta['date']} by `python benchmarks/tp_cpu.py {' '.join(meta['argv'])}`.",
        "",
        f"- CPU: {hw['cpu_model']}, {hw['os_cpu_count']} cores visible, "
        f"torch threads {hw['torch_num_threads']}, {hw['mem_total_gib']} GiB RAM",
        f"- torch {ver['torch']}, e3nn {ver['e3nn']} (opt-einsum-fx {ver['opt-einsum-fx']}), "
        f"cuequivariance {ver['cuequivariance']} / cuequivariance-torch {ver['cuequivariance-torch']} "
        f"(ops package: {ver['cuequivariance_ops_torch'] or 'not installed'}), "
        f"equitensor {ver['equitensor']} @ {ver['equitensor_git_commit']}",
        f"- dtype {meta['dtype']}; {meta['protocol']}",
        "",
        "Times are per call: median [min, max] over n repetitions. Ratios are median/median "
        "(> 1: equitensor is faster). 'ext' = cores used by other processes during the group "
        "(2 cores in all).",
        "",
    ]
    for case, title in (
        ("A", "Case A: channel-wise 'uvu' edge product, per-edge weights"),
        ("B", "Case B: full tensor product of 1x0e+1x1o+...+1xLp with itself"),
    ):
        rows = [g for g in report["groups"] if g["case"] == case]
        if not rows:
            continue
        lines += [f"## {title}", ""]
        size_key = "edges" if case == "A" else "batch"
        names = [n for n in rows[0]["check"] if n != REF]
        header = (
            [REF]
            + [(LABELS if case == "A" else {"cueq": "cueq naive"}).get(n, n) for n in names]
            + [f"{n}/ours" for n in names]
        )
        lines += [
            f"| L | {size_key} | paths | mode | " + " | ".join(header) + " | ext |",
            "|" + "---|" * (len(header) + 5),
        ]
        for g in rows:
            for mode in ("fwd", "fwd+bwd"):
                t = g["timings"].get(mode)
                if t is None:
                    continue
                ratios = g["ratios"][mode]
                cells = [fmt_cell(t.get(n)) for n in [REF] + names]
                cells += [
                    f"{ratios[f'{n}/ours']:.2f}x" if ratios.get(f"{n}/ours") is not None else "-"
                    for n in names
                ]
                lines.append(
                    f"| {g['L']} | {g['shape'][size_key]} | {g['shape']['num_paths']} | {mode} | "
                    + " | ".join(cells)
                    + f" | {t['_external_cores_during']:.2f} |"
                )
        lines.append("")
        lines += [
            "Correctness (float32, same inputs/weights, vs equitensor; max relative difference of "
            "output and of every input gradient):",
            "",
        ]
        for g in rows:
            parts = [
                f"{name} {c['max_rel_diff']:.1e}" for name, c in g["check"].items() if "max_rel_diff" in c
            ]
            lines.append(f"- L={g['L']}: " + ", ".join(parts))
        lines.append("")
    return "\n".join(lines)


def ratio(t: dict, num: str) -> float | None:
    if num in t and REF in t:
        return t[num]["median_s"] / t[REF]["median_s"]
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default="AB", help="which cases to run: A, B or AB")
    parser.add_argument("--L-a", type=int, nargs="+", default=[1, 2, 3], help="L values for case A")
    parser.add_argument("--L-b", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6], help="L values for case B")
    parser.add_argument("--mul", type=int, default=64, help="channels of x1 in case A")
    parser.add_argument("--edges", type=int, default=20000, help="batch (edges) of case A")
    parser.add_argument("--batch-b", type=int, nargs="+", default=[1000], help="batch sizes of case B")
    parser.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up runs per mode (after the check run)")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions")
    parser.add_argument("--min-reps", type=int, default=3, help="repetitions for calls slower than --slow-s")
    parser.add_argument("--slow-s", type=float, default=8.0, help="a call slower than this gets --min-reps")
    parser.add_argument("--min-rep-s", type=float, default=0.05, help="loop short calls to last this long")
    parser.add_argument("--no-cueq", action="store_true", help="skip cuEquivariance")
    parser.add_argument("--max-external", type=float, default=0.3, help="wait while others use more cores")
    parser.add_argument("--max-wait", type=float, default=180.0, help="longest wait for a quiet machine (s)")
    parser.add_argument("--retries", type=int, default=2, help="re-time a mode when others were busy")
    parser.add_argument("--tol", type=float, default=1e-4, help="max relative difference allowed in checks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 reps: a smoke test")
    parser.add_argument("--out-json", default=None, help="write the results here (JSON)")
    parser.add_argument("--out-md", default=None, help="write a markdown table here")
    args = parser.parse_args(argv)

    if args.quick:
        args.L_a, args.L_b, args.edges, args.batch_b = [1, 2], [1, 2], 500, [100]
        args.reps, args.min_reps, args.max_wait, args.retries = 2, 2, 0.0, 0

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.set_default_dtype(dtype)
    with_cueq = not args.no_cueq
    warnings.filterwarnings("ignore", message=".*cuequivariance_ops_torch is not available.*")

    def log(msg: str) -> None:
        print(msg, flush=True)

    report = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv[1:] if argv is None else list(argv),
            "hardware": hardware(),
            "versions": versions(),
            "dtype": args.dtype,
            "protocol": (
                f"1 checked fwd+bwd run + {args.warmup} warm-up run(s) per mode, then {args.reps} timed "
                f"reps ({args.min_reps} for calls > {args.slow_s} s), implementations interleaved "
                f"round-robin; fwd = forward under torch.no_grad(); fwd+bwd = forward + "
                f"y.backward(precomputed random grad) with requires_grad on all inputs"
            ),
            "reference": REF,
        },
        "groups": [],
    }
    log(json.dumps(report["meta"]["hardware"]))
    log(json.dumps(report["meta"]["versions"]))

    jobs = []
    if "A" in args.cases.upper():
        jobs += [("A", L, args.edges) for L in args.L_a]
    if "B" in args.cases.upper():
        jobs += [("B", L, b) for b in args.batch_b for L in args.L_b]

    failures = []
    t_start = time.perf_counter()
    for case, L, size in jobs:
        log(f"case {case} L={L} {'edges' if case == 'A' else 'batch'}={size}")
        quiet = wait_for_quiet(args.max_external, args.max_wait, log)
        if case == "A":
            shape, impls = build_case_a(L, args.mul, size, dtype, with_cueq, args.seed)
        else:
            shape, impls = build_case_b(L, size, dtype, with_cueq, args.seed)
        checked = check(impls)
        for name, c in checked.items():
            if c.get("max_rel_diff", 0.0) > args.tol:
                failures.append(f"case {case} L={L}: {name} differs from {REF} by {c['max_rel_diff']:.2e}")
        log("    check: " + ", ".join(f"{n} {c.get('max_rel_diff', 0):.1e}" for n, c in checked.items()))
        group = {
            "case": case,
            "L": L,
            "shape": shape,
            "dtype": args.dtype,
            "impl_info": {impl.name: impl.info for impl in impls},
            "check": checked,
            "load": quiet,
            "timings": {},
            "ratios": {},
        }
        for mode in args.modes:
            discarded = []
            for attempt in range(args.retries + 1):
                t = time_round_robin(
                    impls, mode, args.reps, args.min_reps, args.slow_s, args.warmup, args.min_rep_s
                )
                if t["_external_cores_during"] <= args.max_external or attempt == args.retries:
                    break
                discarded.append(t["_external_cores_during"])
                log(f"    {mode}: others used {discarded[-1]:.2f} cores during timing, retrying")
                wait_for_quiet(args.max_external, args.max_wait, log)
            t["_discarded_attempts_external_cores"] = discarded
            group["timings"][mode] = t
            group["ratios"][mode] = {f"{i.name}/ours": ratio(t, i.name) for i in impls if i.name != REF}
            log(
                f"    {mode:8s} "
                + "  ".join(f"{impl.name}: {fmt_cell(t[impl.name])}" for impl in impls)
                + f"  (others used {t['_external_cores_during']:.2f} cores)"
            )
        group["load"]["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
        report["groups"].append(group)
        del impls
        gc.collect()

    report["meta"]["total_wall_s"] = round(time.perf_counter() - t_start, 1)
    report["meta"]["check_failures"] = failures
    if args.out_json:
        os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
        with open(args.out_json, "w") as f:
            json.dump(report, f, indent=1)
    md = markdown(report)
    if args.out_md:
        os.makedirs(os.path.dirname(os.path.abspath(args.out_md)), exist_ok=True)
        with open(args.out_md, "w") as f:
            f.write(md + "\n")
    log(md)
    for msg in failures:
        log("CHECK FAILED: " + msg)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
