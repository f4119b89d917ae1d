"""``equitensor bench tp|conv|product|model``: the argument parsers and what each subcommand runs.

Only argparse is imported at module level so that registering the subcommand costs nothing;
the benchmark machinery is imported when a benchmark runs.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys

__all__ = ["add_bench_parser", "parse_cp_rank", "parse_ints", "run"]

PEERS = {
    "tp": "e3nn,cueq",
    "conv": "e3nn,cueq",
    "product": "mace-torch,cueq",
    "model": "mace-torch,torchmd-net",
}
BACKENDS = {
    "tp": "cg,gaunt,grid,cp",
    "conv": "cg,so2,sparse,cp",
    "product": "cg,sparse",
    "model": "cg,so2,sparse",
}


def parse_ints(text: str) -> list[int]:
    """'3' -> [3]; '1,2,4' -> [1, 2, 4]; '1-4' -> [1, 2, 3, 4]; mixed: '0-2,5'."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            if int(hi) < int(lo):
                raise argparse.ArgumentTypeError(f"empty range {part!r}")
            values += range(int(lo), int(hi) + 1)
        else:
            values.append(int(part))
    if not values:
        raise argparse.ArgumentTypeError(f"no integers in {text!r}")
    return values


def parse_cp_rank(text: str) -> int | str:
    """'full' (the exact construction) or a positive int."""
    if text.strip().lower() == "full":
        return "full"
    try:
        rank = int(text)
    except ValueError:
        rank = 0
    if rank < 1:
        raise argparse.ArgumentTypeError(f"--cp-rank must be 'full' or a positive integer, got {text!r}")
    return rank


def _cp_rank_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cp-rank",
        type=parse_cp_rank,
        default="full",
        help="rank of the cp backend (CP-decomposed CG, approximate, opt-in): 'full' (default) is "
        "each path's exact CP rank, which reproduces cg; an integer R caps every path at R, below a "
        "path's exact rank the product is approximate and checked against cg within 10x its "
        "largest path residual",
    )


def _names(text: str) -> list[str]:
    return [] if text.strip().lower() == "none" else [t.strip() for t in text.split(",") if t.strip()]


def _common(parser: argparse.ArgumentParser, kind: str, lmax: str, channels: str) -> None:
    parser.add_argument(
        "--backends",
        type=_names,
        default=_names(BACKENDS[kind]),
        help=f"equitensor backends to time (default {BACKENDS[kind]}); cg is always built "
        "as the reference of the checks",
    )
    parser.add_argument(
        "--peers",
        type=_names,
        default=_names(PEERS[kind]),
        help=f"other libraries measured in the same run when installed (default {PEERS[kind]}; "
        "'none' for none)",
    )
    parser.add_argument(
        "--lmax",
        type=parse_ints,
        default=parse_ints(lmax),
        help=f"degrees L, e.g. 3, 1-6, 1,2,4 (default {lmax})",
    )
    parser.add_argument(
        "--channels",
        type=parse_ints,
        default=parse_ints(channels),
        help=f"channel counts C (default {channels})",
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--passes",
        type=_names,
        default=["fwd", "fwd+bwd"],
        help="comma list of fwd, fwd+bwd, fwd+bwd+dbwd (default fwd,fwd+bwd)",
    )
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls before timing (default 2)")
    parser.add_argument(
        "--min-reps", type=int, default=3, help="fewest repetitions of a slow call (default 3)"
    )
    parser.add_argument(
        "--min-rep-s",
        type=float,
        default=0.02,
        help="loop short calls so one repetition lasts this long (default 0.02 s)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="cut the repetitions of a call whose timing would exceed this (default 30 s)",
    )
    parser.add_argument(
        "--tol",
        type=float,
        default=None,
        help="accepted relative difference from the reference (default 2e-4 float32, 1e-9 float64)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="skip the measured peak probe (matmul and copy; a few seconds)",
    )
    parser.add_argument(
        "--fma-units",
        type=int,
        default=None,
        help="FMA units per CPU core for the theoretical peak (not readable from the OS)",
    )
    parser.add_argument("--json", default=None, help="write results here (JSON)")
    parser.add_argument("--csv", default=None, help="write the rows here (CSV)")
    parser.add_argument(
        "--plot",
        default=None,
        metavar="PREFIX",
        help="write PNG plots as PREFIX_<operation>_<pass>_..._{time,speedup}.png",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines, only the table")


def add_bench_parser(commands) -> argparse.ArgumentParser:
    """Register ``bench`` and its subcommands on the ``equitensor`` subparsers."""
    bench = commands.add_parser(
        "bench",
        help="microbenchmarks of tensor products, convolutions, product basis and whole models",
        description="Time equitensor's implementations side by side with e3nn/cuEquivariance/MACE "
        "(when installed), after checking each against the cg reference.",
    )
    kinds = bench.add_subparsers(dest="bench_command", required=True)

    tp = kinds.add_parser(
        "tp", help="Gaunt product (cg/gaunt/grid) and full tensor product (cg/cp) of C channels"
    )
    _common(tp, "tp", "1-4", "32")
    tp.add_argument("--op", type=_names, default=["gaunt", "full"], help="gaunt, full or both (default both)")
    tp.add_argument("--batch", type=int, default=1000, help="samples (default 1000)")
    tp.add_argument(
        "--lmax-out",
        choices=("L", "2L"),
        default="2L",
        help="outputs of the Gaunt product up to L or 2L (default 2L, the complete product)",
    )
    _cp_rank_option(tp)

    conv = kinds.add_parser("conv", help="MACE's edge convolution (cg/so2/cp)")
    _common(conv, "conv", "1-3", "32")
    conv.add_argument("--edges", type=int, default=20000, help="edges (default 20000)")
    conv.add_argument("--nodes", type=int, default=None, help="nodes (default edges / 16)")
    conv.add_argument(
        "--node-lmax", type=int, default=1, help="node features C x (0e..node_lmax) (default 1)"
    )
    _cp_rank_option(conv)

    product = kinds.add_parser("product", help="MACE's product basis (symmetric contraction)")
    _common(product, "product", "1-3", "32")
    product.add_argument("--batch", type=int, default=1000, help="nodes (default 1000)")
    product.add_argument("--correlation", type=int, default=3, help="body order - 1 (default 3)")
    product.add_argument("--lmax-out", type=int, default=1, help="outputs C x (0e..lmax_out) (default 1)")
    product.add_argument("--elements", type=int, default=3, help="number of elements (default 3)")

    model = kinds.add_parser("model", help="whole-model energy and forces (MACE, TensorNet)")
    _common(model, "model", "3", "32")
    model.add_argument("--models", type=_names, default=["mace", "tensornet"], help="mace, tensornet")
    model.add_argument(
        "--system",
        choices=("cell", "molecule"),
        default="cell",
        help="periodic fcc CuNi cell or a molecule (default cell)",
    )
    model.add_argument("--atoms", type=int, default=108, help="approximate atoms of the cell (default 108)")
    model.add_argument("--molecule", default="CH3CH2OH", help="ASE molecule name (default CH3CH2OH)")
    model.add_argument("--r-max", type=float, default=5.0, help="cutoff in Å (default 5.0)")
    return bench


def _jobs(args, dtype, device) -> list:
    from functools import partial

    from equitensor.bench import cases

    common = {"backends": args.backends, "peers_wanted": args.peers, "dtype": dtype, "device": device}
    jobs = []
    kind = args.bench_command
    if kind == "tp":
        unknown = [op for op in args.op if op not in ("gaunt", "full")]
        if unknown:
            raise SystemExit(f"equitensor bench tp: unknown --op {unknown}; choose gaunt, full")
        for op in args.op:
            for c in args.channels:
                for l in args.lmax:
                    if op == "gaunt":
                        out = 2 * l if args.lmax_out == "2L" else l
                        build = partial(
                            cases.tp_gaunt_case, l, c, args.batch, lmax_out=out, seed=args.seed, **common
                        )
                    else:
                        build = partial(
                            cases.tp_full_case,
                            l,
                            c,
                            args.batch,
                            seed=args.seed,
                            cp_rank=args.cp_rank,
                            **common,
                        )
                    jobs.append((f"tp:{op} L={l} C={c} batch={args.batch}", build))
    elif kind == "conv":
        nodes = args.nodes or max(1, args.edges // 16)
        for c in args.channels:
            for l in args.lmax:
                build = partial(
                    cases.conv_case,
                    l,
                    c,
                    args.edges,
                    nodes=nodes,
                    node_lmax=args.node_lmax,
                    seed=args.seed,
                    cp_rank=args.cp_rank,
                    **common,
                )
                jobs.append((f"conv L={l} C={c} edges={args.edges} nodes={nodes}", build))
    elif kind == "product":
        for c in args.channels:
            for l in args.lmax:
                build = partial(
                    cases.product_case,
                    l,
                    c,
                    args.batch,
                    correlation=args.correlation,
                    lmax_out=args.lmax_out,
                    elements=args.elements,
                    seed=args.seed,
                    **common,
                )
                jobs.append((f"product L={l} C={c} nodes={args.batch} correlation={args.correlation}", build))
    elif kind == "model":
        unknown = [m for m in args.models if m not in ("mace", "tensornet")]
        if unknown:
            raise SystemExit(f"equitensor bench model: unknown --models {unknown}; choose mace, tensornet")
        for m in args.models:
            for c in args.channels:
                for l in args.lmax if m == "mace" else [None]:
                    build = partial(
                        cases.model_case,
                        m,
                        l,
                        c,
                        system=args.system,
                        atoms=args.atoms,
                        molecule=args.molecule,
                        r_max=args.r_max,
                        seed=args.seed,
                        **common,
                    )
                    jobs.append((f"model:{m} L={l} C={c} {args.system}", build))
    return jobs


def _command(args: argparse.Namespace) -> str:
    argv = getattr(args, "argv", None)
    if argv is None:
        return "equitensor " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return "equitensor bench " + " ".join(shlex.quote(a) for a in argv)


def run(args: argparse.Namespace) -> int:
    """Run the parsed ``equitensor bench`` command; 1 if an implementation failed its check."""
    import torch

    from equitensor.bench import report
    from equitensor.bench.environment import environment, measured_peaks
    from equitensor.bench.passes import PASSES
    from equitensor.bench.runner import TimingOptions, default_tolerance, run_cases

    bad = [p for p in args.passes if p not in PASSES]
    if bad or not args.passes:
        raise SystemExit(f"equitensor bench: unknown --passes {bad}; choose from {', '.join(PASSES)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"equitensor bench: --device {args.device} but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    tol = args.tol if args.tol is not None else default_tolerance(dtype)

    def log(message: str) -> None:
        if not args.quiet:
            print(message, file=sys.stderr, flush=True)

    meta = environment(device, dtype, fma_units=args.fma_units)
    if not args.no_probe:
        log("measuring the peak probe (matmul, copy) ...")
        meta["peak_measured"] = measured_peaks(device, dtype)
    options = TimingOptions(
        warmup=args.warmup,
        reps=args.reps,
        min_reps=min(args.min_reps, args.reps),
        min_rep_s=args.min_rep_s,
        max_seconds=args.max_seconds,
        memory=not args.no_memory,
    )
    meta.update(
        {
            "command": _command(args),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": str(device),
            "dtype": args.dtype,
            "passes": args.passes,
            "tolerance": tol,
            "timing": options.__dict__,
            "protocol": "each implementation is run once on the deepest requested pass and compared with the "
            "reference (output and every gradient; max |diff| / max |ref|); only those within the tolerance "
            f"are timed: {options.warmup} warm-up call(s), then up to {options.reps} repetitions interleaved "
            "round-robin (rotating order), each repetition looping calls to last >= "
            f"{options.min_rep_s} s; median, quartiles, min, max per call; CUDA events on GPU",
        }
    )
    rows, case_list = run_cases(
        _jobs(args, dtype, device), args.passes, options, tol=tol, dtype=dtype, device=device, log=log
    )
    report.add_speedups(rows)
    print(report.table(rows, meta), flush=True)
    if args.json:
        report.write_json(args.json, meta, case_list, rows)
        log(f"wrote {args.json}")
    if args.csv:
        report.write_csv(args.csv, rows)
        log(f"wrote {args.csv}")
    if args.plot:
        for path in report.plot(rows, args.plot):
            log(f"wrote {path}")
    failed = [r for r in rows if r["status"] in ("check failed", "error")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m equitensor.bench.cli ...``: the same as ``equitensor bench ...``."""
    parser = argparse.ArgumentParser(prog="equitensor")
    add_bench_parser(parser.add_subparsers(dest="command", required=True))
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv[1:]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
