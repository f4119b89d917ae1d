#!/usr/bin/env python
"""Train the quickstart MACE for ~20 steps with each kernel backend and compare the losses with cg.

Runs ``equitensor train`` (the quickstart preset on the shipped CuNi data with hidden irreps
16x0e+16x1o, max_ell 3, correlation 3, float64, one epoch of batches of 14: 20 optimiser steps)
once per backend pair, all with the same seed, on one device,
then compares each run's training and validation losses with the cg run's. Same weights, same
batches, same seed: the runs differ only by the kernels' summation order, so in float64 their
losses agree to ~1e-8 relative after 20 Adam steps; a wrong kernel gives visibly different
losses. Writes ``train_check.json`` and ``train_check.md`` into ``--out``.

Usage: python benchmarks/gpu_train_check.py --out DIR [--device cuda]
       [--runs cg:cg,cuda:cg,sparse:sparse]  (edge-convolution backend:product backend)
On a machine without a GPU, ``--device cpu --runs cg:cg,sparse:sparse`` rehearses it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TOLERANCE = 1e-6  # relative, float64 losses after 20 steps


def train(out: Path, device: str, backend: str, product_backend: str) -> dict:
    run_dir = out / f"train_{backend}_{product_backend}"
    command = [
        sys.executable,
        "-m",
        "equitensor.cli",
        "train",
        f"device={device}",
        "dtype=float64",
        "epochs=1",
        "batch_size=14",
        "seed=0",
        "plots=false",
        "progress=false",
        f"output_dir={run_dir}",
        f"name=train_{backend}_{product_backend}",
        # equivariant features (the preset's are scalars only), so every kernel path runs
        "model_kwargs.max_L=1",
        "model_kwargs.max_ell=3",
        "model_kwargs.correlation=3",
        f"model_kwargs.backend={backend}",
        f"model_kwargs.product_backend={product_backend}",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    row = {"backend": backend, "product_backend": product_backend, "seconds": round(seconds, 2)}
    if result.returncode != 0:
        return {**row, "error": (result.stderr or result.stdout)[-3000:]}
    history = json.loads((run_dir / "metrics.json").read_text())
    losses = {key: value for key, value in history[-1].items() if "loss" in key}
    return {**row, "losses": losses}


def compare(rows: list[dict]) -> None:
    """Add each run's largest relative loss difference from the first (cg) run, and a verdict."""
    reference = rows[0].get("losses")
    for row in rows:
        if "error" in row or reference is None:
            row["ok"] = False
            continue
        diffs = [
            abs(row["losses"][k] - v) / max(abs(v), 1e-300)
            for k, v in reference.items()
            if k in row["losses"]
        ]
        row["max_relative_difference"] = max(diffs) if diffs else None
        row["ok"] = bool(diffs) and max(diffs) <= TOLERANCE


def markdown(rows: list[dict], device: str) -> str:
    lines = [
        f"# 20 training steps per backend on {device} (quickstart MACE 16x0e+16x1o, float64, seed 0)",
        "",
        "Losses of the last (only) epoch compared with the first run's; pass: relative difference "
        f"<= {TOLERANCE}.",
        "",
        "| edge conv | product basis | seconds | losses | max rel. diff | ok |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        error = " ".join(row.get("error", "").split())[-200:].replace("|", "/")  # one table cell
        losses = ", ".join(f"{k} {v:.8g}" for k, v in row.get("losses", {}).items()) or error
        diff = row.get("max_relative_difference")
        diff = f"{diff:.2e}" if diff is not None else "-"
        lines.append(
            f"| {row['backend']} | {row['product_backend']} | {row['seconds']} | {losses} | {diff} | "
            f"{'yes' if row['ok'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the runs and the results")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--runs", default="cg:cg,cuda:cg,sparse:sparse", help="backend:product_backend,...")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = [tuple(pair.split(":")) for pair in args.runs.split(",")]
    if pairs[0] != ("cg", "cg"):
        parser.error("the first run must be cg:cg, the reference")
    rows = []
    for backend, product_backend in pairs:
        rows.append(train(out, args.device, backend, product_backend))
        print(json.dumps(rows[-1])[:400], flush=True)
    compare(rows)
    (out / "train_check.json").write_text(json.dumps({"device": args.device, "runs": rows}, indent=1) + "\n")
    (out / "train_check.md").write_text(markdown(rows, args.device))
    print(markdown(rows, args.device))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
