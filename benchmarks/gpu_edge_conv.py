#!/usr/bin/env python
"""GPU benchmark of the fused edge convolution (issue 4): time and peak memory.

Product (MACE's interaction ``conv_tp``): node features ``128x0e+128x1o`` (hidden L=1) or
``128x0e+128x1o+128x2e`` (L=2) x SH ``0e+1o+2e+3o`` -> every path with output l <= 3 (one output
block per path, e3nn order), per-edge weights; gathered from senders and summed into receivers.
Graphs: 1e5 and 1e6 edges, ~30 edges per node (random senders/receivers). float32 and float64.

Implementations (every one gets the same node features, SH, weights and edge_index):
    equitensor-cuda      EdgeConvolution's cuda backend (fused kernel, atomics)
    equitensor-cuda-det  the same, deterministic mode (CSR, no atomics)
    equitensor-cg        equitensor's cg TensorProduct on x[senders], then index_add
    e3nn                 e3nn o3.TensorProduct on x[senders], then index_add (as MACE does)
    cueq-fused           cuequivariance_torch.SegmentedPolynomial(channelwise_tensor_product,
                         method="uniform_1d") with input_indices={1: senders},
                         output_indices={0: receivers} (ir_mul layout, converted outside the
                         timed region; weights permuted to cuEquivariance's order)
Modes: fwd (no_grad); fwd+bwd (gradients of <out, g> for x, sh, w); fwd+bwd+dbwd (a force-training
chain: first gradients with create_graph, then the gradient of <d, dE/dsh> + <c, dE/dx>).

Before timing, each implementation's output and first gradients are compared with
equitensor-cg (when it fits in memory) and the maximum relative deviation is recorded; a failed
check is reported and that implementation is not timed. Out-of-memory is recorded as such.
Timing: CUDA events, warm-up, median of repetitions, implementations round-robin. Peak memory:
``torch.cuda.max_memory_allocated`` during one call minus what was allocated before it.

Usage: python benchmarks/gpu_edge_conv.py [--quick] [--out-json F] [--out-md F]
No numbers are committed from a machine without a GPU; results go next to their hardware.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
from dataclasses import dataclass, field

import torch

from equitensor import EdgeConvolution, Irreps, spherical_harmonics
from equitensor.kernels.edge_conv import fused_edge_convolution, ir_mul_to_mul_ir, mul_ir_to_ir_mul
from equitensor.kernels.edge_conv_plan import plan_from_key, plan_key

NODE_IRREPS = {1: "128x0e+128x1o", 2: "128x0e+128x1o+128x2e"}
SH_IRREPS = "0e+1o+2e+3o"
TARGET = "0e+1o+2e+3o"
MODES = ("fwd", "fwd+bwd", "fwd+bwd+dbwd")
REF = "equitensor-cg"


@dataclass
class Impl:
    name: str
    forward: callable  # (x, sh, w) -> out (mul_ir)
    info: dict = field(default_factory=dict)


def build_impls(
    conv: EdgeConvolution, edge_index: torch.Tensor, num_nodes: int, wanted: set[str], dtype: torch.dtype
) -> list[Impl]:
    senders, receivers = edge_index
    impls = []
    plan = plan_from_key(plan_key(conv.spec))
    if "equitensor-cuda" in wanted:
        impls.append(
            Impl("equitensor-cuda", lambda x, sh, w: fused_edge_convolution(plan, x, sh, w, edge_index))
        )
    if "equitensor-cuda-det" in wanted:
        impls.append(
            Impl(
                "equitensor-cuda-det",
                lambda x, sh, w: fused_edge_convolution(plan, x, sh, w, edge_index, deterministic=True),
                {"note": "includes the per-call CSR construction (argsort of receivers and senders)"},
            )
        )

    def gathered(product):
        def run(x, sh, w):
            messages = product(x[senders], sh, w)
            return messages.new_zeros((num_nodes, messages.shape[-1])).index_add(0, receivers, messages)

        return run

    if REF in wanted:
        impls.append(Impl(REF, gathered(conv.product)))
    if "e3nn" in wanted:
        try:
            from e3nn import o3

            from equitensor.tp import edge_product_irreps

            irreps_out, instructions = edge_product_irreps(conv.irreps_node, conv.irreps_sh, TARGET)
            tp = o3.TensorProduct(
                str(conv.irreps_node),
                str(conv.irreps_sh),
                str(irreps_out),
                instructions,
                shared_weights=False,
                internal_weights=False,
            ).to(device=edge_index.device, dtype=dtype)
            impls.append(Impl("e3nn", gathered(tp), {"version": __import__("e3nn").__version__}))
        except ImportError as error:
            print(f"e3nn skipped: {error}", file=sys.stderr)
    if "cueq-fused" in wanted:
        try:
            impls.append(build_cueq(conv, edge_index, num_nodes))
        except ImportError as error:
            print(f"cuEquivariance skipped: {error}", file=sys.stderr)
    return impls


def build_cueq(
    conv: EdgeConvolution, edge_index: torch.Tensor, num_nodes: int, method: str = "uniform_1d"
) -> Impl:
    """cuEquivariance's channel-wise product with fused gather/scatter (uniform_1d)."""
    import cuequivariance as cue
    import cuequivariance_torch as cuet
    from cuequivariance.group_theory.experimental.e3nn import O3_e3nn

    from equitensor.tp import edge_product_irreps

    irreps_out, instructions = edge_product_irreps(conv.irreps_node, conv.irreps_sh, TARGET)
    filter_out = [ir for _, ir in cue.Irreps(O3_e3nn, str(irreps_out.simplify()))]
    descriptor = cue.descriptors.channelwise_tensor_product(
        cue.Irreps(O3_e3nn, str(conv.irreps_node)), cue.Irreps(O3_e3nn, str(conv.irreps_sh)), filter_out
    )
    cue_out = Irreps(str(descriptor.outputs[0].irreps))
    if cue_out != irreps_out:
        raise RuntimeError(f"cuEquivariance output irreps {cue_out} != {irreps_out}")
    module = cuet.SegmentedPolynomial(descriptor.polynomial, method=method).to(edge_index.device)
    # cuEquivariance orders weight blocks like its sorted output blocks (one per path here)
    sizes = [conv.irreps_node[i1].mul for i1, *_ in instructions]
    offsets = [sum(sizes[:n]) for n in range(len(sizes))]
    order = sorted(range(len(instructions)), key=lambda n: instructions[n][2])
    perm = torch.cat([torch.arange(offsets[n], offsets[n] + sizes[n]) for n in order]).to(edge_index.device)
    senders, receivers = edge_index
    shape = torch.empty(num_nodes, 1, device=edge_index.device)

    def run(x, sh, w):
        # layout conversions are inside the call here; a model kept in ir_mul would not pay them
        [out] = module(
            [w[:, perm], mul_ir_to_ir_mul(x, conv.irreps_node), sh],
            input_indices={1: senders},
            output_shapes={0: shape},
            output_indices={0: receivers},
        )
        return ir_mul_to_mul_ir(out, irreps_out)

    return Impl(
        "cueq-fused",
        run,
        {
            "version": cue.__version__,
            "method": method,
            "note": "mul_ir<->ir_mul transposes and weight permutation inside the call",
        },
    )


def step_function(impl: Impl, mode: str, inputs, g, c, d):
    x, sh, w = inputs
    if mode == "fwd":

        def step():
            with torch.no_grad():
                return impl.forward(x, sh, w)
    elif mode == "fwd+bwd":

        def step():
            out = impl.forward(x, sh, w)
            return torch.autograd.grad(out, (x, sh, w), g)
    else:

        def step():
            out = impl.forward(x, sh, w)
            gx, gsh, _ = torch.autograd.grad(out, (x, sh, w), g, create_graph=True)
            return torch.autograd.grad((gsh * d).sum() + (gx * c).sum(), (x, sh, w))

    return step


def check(impl: Impl, ref: Impl | None, inputs, g) -> str:
    """Max deviation of output and first gradients from the reference, relative to its max."""
    if ref is None or impl is ref:
        return "reference" if impl is ref else "unchecked (no reference fits)"
    worst = 0.0
    results = []
    for f in (impl.forward, ref.forward):
        out = f(*inputs)
        results.append([out.detach(), *torch.autograd.grad(out, inputs, g)])
    for a, b in zip(*results):
        worst = max(worst, ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item())
    return f"{worst:.2e}"


def measure(step, reps: int, warmup: int) -> tuple[float, float]:
    """(median milliseconds, peak MiB above the memory allocated before the call)."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), peak


def run_case(hidden_l: int, edges: int, dtype: torch.dtype, args) -> list[dict]:
    device = torch.device("cuda")
    nodes = max(1, edges // 30)
    conv = EdgeConvolution(NODE_IRREPS[hidden_l], SH_IRREPS, TARGET).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    edge_index = torch.randint(0, nodes, (2, edges), device=device, generator=gen)
    x = torch.randn(nodes, conv.irreps_node.dim, device=device, dtype=dtype, generator=gen).requires_grad_()
    v = torch.randn(edges, 3, device=device, dtype=dtype, generator=gen)
    sh = spherical_harmonics(conv.irreps_sh, v, normalize=True, normalization="component").requires_grad_()
    w = torch.randn(edges, conv.weight_numel, device=device, dtype=dtype, generator=gen).requires_grad_()
    g = torch.randn(nodes, conv.irreps_out.dim, device=device, dtype=dtype, generator=gen)
    c, d = torch.randn_like(x), torch.randn_like(sh)
    inputs = (x, sh, w)
    impls = build_impls(conv, edge_index, nodes, set(args.impls), dtype)
    ref = next((i for i in impls if i.name == REF), None)
    rows = []
    checks = {}
    for impl in impls:
        try:
            checks[impl.name] = check(impl, ref, inputs, g)
        except torch.OutOfMemoryError:
            checks[impl.name] = "OOM"
            if impl is ref:
                ref = None
        except Exception as error:  # noqa: BLE001  (recorded, not timed)
            checks[impl.name] = f"failed: {type(error).__name__}: {error}"
        torch.cuda.empty_cache()
    for mode in MODES:
        for impl in impls:
            row = {
                "hidden_L": hidden_l,
                "edges": edges,
                "nodes": nodes,
                "dtype": str(dtype).removeprefix("torch."),
                "mode": mode,
                "impl": impl.name,
                "check": checks[impl.name],
                **impl.info,
            }
            if checks[impl.name] == "OOM" or checks[impl.name].startswith("failed"):
                row["ms"] = row["peak_MiB"] = None
            else:
                try:
                    row["ms"], row["peak_MiB"] = measure(
                        step_function(impl, mode, inputs, g, c, d), args.reps, args.warmup
                    )
                except torch.OutOfMemoryError:
                    row["ms"], row["peak_MiB"], row["check"] = None, None, "OOM"
            torch.cuda.empty_cache()
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def environment() -> dict:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cupy": __import__("cupy").__version__,
    }


def markdown(rows: list[dict], env: dict) -> str:
    lines = [f"# Fused edge convolution on {env['gpu']}", "", "```", json.dumps(env, indent=1), "```", ""]
    lines += [
        "| L | edges | dtype | mode | impl | ms | peak MiB | check (max rel. dev. vs cg) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = "-" if r["ms"] is None else f"{r['ms']:.3f}"
        mem = "-" if r["peak_MiB"] is None else f"{r['peak_MiB']:.0f}"
        cells = [r["hidden_L"], f"{r['edges']:.0e}", r["dtype"], r["mode"], r["impl"], ms, mem, r["check"]]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e4 edges, L=1, float32 only (smoke test)")
    parser.add_argument(
        "--impls", nargs="+", default=["equitensor-cuda", "equitensor-cuda-det", REF, "e3nn", "cueq-fused"]
    )
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out-json", default="benchmarks/results/gpu_edge_conv.json")
    parser.add_argument("--out-md", default="benchmarks/results/gpu_edge_conv.md")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_edge_conv.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    cases = (
        [(1, 10_000, torch.float32)]
        if args.quick
        else [
            (l, e, dt) for l in (1, 2) for e in (100_000, 1_000_000) for dt in (torch.float32, torch.float64)
        ]
    )
    env = environment()
    rows = [row for case in cases for row in run_case(*case, args)]
    with open(args.out_json, "w") as f:
        json.dump({"environment": env, "rows": rows}, f, indent=1)
    with open(args.out_md, "w") as f:
        f.write(markdown(rows, env))


if __name__ == "__main__":
    main()
