#!/usr/bin/env python
"""Seconds per training epoch: equitensor's MACE vs mace-torch's, same data, settings and weights.

Both train on the BOTNet acetylacetone 300 K training set (500 frames, ../shared/data/botnet) in
batches of 5 structures, one Adam step (lr 0.01) per batch on loss = MSE(E per atom) + 10 MSE(F),
the same batches in the same order, starting from the same weights (mace-torch's copied into ours
with ``equitensor.interop.mace_torch``). Epochs alternate between the implementations (round-robin)
so they see the same machine load, after two warm-up steps each; the table gives the median
seconds per epoch. Graphs (neighbour
lists) are built once before timing for both: this times the training computation (forward,
forces, double backward, optimiser), not data loading or the two CLIs' logging and validation.

MACE: 32x0e+32x1o, max_ell 3, correlation 3, 2 interactions, r_max 5 (the CPU speed issue's size).
Our rows: ``--ours backend:product_backend`` variants (default cg:cg and sparse:sparse).

Run with a Python that has mace-torch and equitensor:
``/work/venv-mace/bin/python benchmarks/train_epoch.py --out benchmarks/results/train_epoch``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import ase.io
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mace_vs_mace_torch import BOTNET, ELEMENTS, HYPERPARAMETERS, versions, write_results  # noqa: E402

from equitensor.datasets.atoms_to_graph import graph_from_atoms  # noqa: E402
from equitensor.graph import batch_graphs  # noqa: E402
from equitensor.interop.mace_torch import (  # noqa: E402
    load_mace_torch_weights,
    mace_torch_inputs,
    mace_torch_model,
)
from equitensor.models import MACE  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def batches(dtype: torch.dtype, frames: int, batch_size: int):
    atoms = ase.io.read(BOTNET / "dataset_acac" / "train_300K.xyz", index=f":{frames}")
    out = []
    for start in range(0, len(atoms), batch_size):
        part = atoms[start : start + batch_size]
        graph = batch_graphs([graph_from_atoms(a, HYPERPARAMETERS["r_max"], dtype) for a in part])
        energy = torch.tensor([a.get_potential_energy() for a in part], dtype=dtype)
        forces = torch.tensor([f for a in part for f in a.get_forces()], dtype=dtype).reshape(-1, 3)
        out.append((graph, energy, forces))
    return out


def loss_fn(energy, forces, graph, target_e, target_f):
    atoms = torch.bincount(graph.batch, minlength=graph.num_graphs).to(energy.dtype)
    return (((energy - target_e) / atoms) ** 2).mean() + 10 * ((forces - target_f) ** 2).mean()


def ours_epoch(model, optimizer, data):
    def run(batches=None):
        for graph, e, f in data[:batches]:
            optimizer.zero_grad(set_to_none=True)
            out = model(graph, compute_forces=True, training=True)
            loss_fn(out["energy"], out["forces"], graph, e, f).backward()
            optimizer.step()

    return run


def theirs_epoch(model, optimizer, data, reference):
    inputs = [(mace_torch_inputs(reference, g), g, e, f) for g, e, f in data]

    def run(batches=None):
        for x, graph, e, f in inputs[:batches]:
            optimizer.zero_grad(set_to_none=True)
            out = model(dict(x, positions=x["positions"].clone()), training=True, compute_force=True)
            loss_fn(out["energy"], out["forces"], graph, e, f).backward()
            optimizer.step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--ours", nargs="+", default=["cg:cg", "sparse:sparse"])
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per implementation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write OUT.json and OUT.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        data = batches(dtype, args.frames, args.batch_size)
        torch.manual_seed(0)
        reference = MACE(ELEMENTS, **HYPERPARAMETERS).to(dtype)
        theirs = mace_torch_model(reference, dtype)
        epochs = {}
        for variant in args.ours:
            backend, product_backend = variant.split(":")
            model = MACE(ELEMENTS, **HYPERPARAMETERS, backend=backend, product_backend=product_backend)
            model = model.to(dtype)
            load_mace_torch_weights(model, theirs)
            epochs[f"equitensor {variant}"] = ours_epoch(
                model, torch.optim.Adam(model.parameters(), lr=0.01), data
            )
        epochs["mace-torch"] = theirs_epoch(
            theirs, torch.optim.Adam(theirs.parameters(), lr=0.01), data, reference
        )
        for run in epochs.values():  # warm-up: two steps each (the same steps for everyone)
            run(2)
        seconds = {name: [] for name in epochs}
        for repeat in range(args.epochs):
            for name, run in epochs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
                print(f"{dtype_name} epoch {repeat} {name}: {seconds[name][-1]:.2f} s", flush=True)
        theirs_s = statistics.median(seconds["mace-torch"])
        for name, values in seconds.items():
            s = statistics.median(values)
            rows.append(
                {
                    "dtype": dtype_name,
                    "implementation": name,
                    "s_per_epoch": s,
                    "s_all": values,
                    "steps_per_epoch": len(data),
                    "speedup_vs_mace_torch": theirs_s / s,
                }
            )
    if args.out:
        meta = {
            "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            **versions(),
            "hyperparameters": HYPERPARAMETERS,
            "frames": args.frames,
            "batch_size": args.batch_size,
        }
        columns = {
            "dtype": "{dtype}",
            "implementation": "{implementation}",
            "steps": "{steps_per_epoch}",
            "s/epoch (median)": "{s_per_epoch:.2f}",
            "vs mace-torch": "{speedup_vs_mace_torch:.2f}x",
        }
        title = "Training epoch, equitensor vs mace-torch (same data, batches, weights, optimiser)"
        write_results(args.out, title, meta, rows, columns)
    for r in rows:
        print(
            f"{r['dtype']:8s} {r['implementation']:26s} {r['s_per_epoch']:7.2f} s",
            f"{r['speedup_vs_mace_torch']:.2f}x",
        )


if __name__ == "__main__":
    main()
