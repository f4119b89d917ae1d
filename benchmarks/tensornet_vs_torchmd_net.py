#!/usr/bin/env python
"""Whole-model TensorNet steps, equitensor vs torchmd-net, same hyperparameters and the same weights.

The cases, timed side by side in one process, round-robin:

- ``train``: one training step (energy + forces, loss = MSE(E) + MSE(F), backward to the
  parameters) on a batch of 5 acetylacetone molecules (BOTNet test_MD_300K frames 0-4);
- ``ef``: energy + forces on the same batch;
- ``ef864``: energy + forces of a rattled fcc Cu cell, 864 atoms (6x6x6 cubic cells, a = 3.61 Å:
  a cubic box, so torchmd-net's reduced-box requirement holds, each width 21.7 Å > 2 x cutoff).

TensorNet: hidden_channels 128, 2 layers, 32 RBF, cutoff 5 Å, O(3), elements H C O Cu. Our random
weights are copied into torchmd-net's ``TorchMD_Net(TensorNet, Scalar, Atomref)`` twin with
``equitensor.interop.torchmd_net.torchmd_net_model``; it runs on its default path (warp-lang
kernels when installed), forces by autograd (``derivative=True``), ``model.train()`` for the
training step (forces keep their graph) and ``model.eval()`` for ``ef``. The 5 molecules go to it
in one call, with the batch vector and no box. Before anything is timed, energies and forces of
every row are compared with torchmd-net's, and for ``train`` also every parameter gradient (theirs
mapped onto ours with ``gradients_as_ours``); the script stops if they differ by more than 1e-6
relative in float64 (torchmd-net's warp kernels are ~1e-7 accurate in float64) or 1e-4 in float32.

Fairness: torchmd-net builds its own neighbour list inside every call (its ``OptimizedDistance``,
default brute-force strategy, self-loops included); ours is given a prebuilt graph. So the ``ef``
cases have a second row of ours, "equitensor (graph included)", that builds the graph (vesin
neighbour list via ``graph_from_atoms`` and ``batch_graphs``, from ASE Atoms) in every call: the
plain row compares the models, that row the whole call. The ``train`` row excludes our graph
construction (training data loaders build graphs once, ahead of the steps); torchmd-net's includes
its neighbour list.

Run with a Python that has torchmd-net and equitensor, e.g. ``/work/venv-tmdn/bin/python
benchmarks/tensornet_vs_torchmd_net.py --out benchmarks/results/tensornet_vs_torchmd_net``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.build import bulk
from side_by_side import machine, result_rows, round_robin, write_results

from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.graph import batch_graphs
from equitensor.interop.torchmd_net import gradients_as_ours, torchmd_net_inputs, torchmd_net_model
from equitensor.models import TensorNet

ROOT = Path(__file__).resolve().parents[1]
BOTNET = Path(os.environ.get("BOTNET_DATA", ROOT.parent / "shared" / "data" / "botnet"))
ELEMENTS = [1, 6, 8, 29]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
CASES = ["train", "ef", "ef864"]
HYPERPARAMETERS = {
    "hidden_channels": 128,
    "num_layers": 2,
    "num_rbf": 32,
    "cutoff": 5.0,
    "equivariance_invariance_group": "O(3)",
}
THEIRS = "torchmd-net"
OURS = "equitensor torch"
OURS_SPARSE = "equitensor sparse"
OURS_WITH_GRAPH = "equitensor sparse (graph included)"
NOTES = [
    "torchmd-net builds its own neighbour list (brute force, in its forward) in every call; "
    f"'{OURS}' and '{OURS_SPARSE}' are given a prebuilt graph, '{OURS_WITH_GRAPH}' builds it "
    "(vesin, from ASE Atoms) in every call (ef cases).",
    f"'{OURS}': TensorNet(backend='torch') (gather, multiply, index_add); '{OURS_SPARSE}': "
    "TensorNet(backend='sparse') (messages on the compiled sparse_contract kernel); same weights.",
    "train: ours exclude graph construction, torchmd-net includes its neighbour list.",
    "torchmd-net runs its default path (warp-lang kernels when installed), forces by autograd; "
    "the 5 molecules of train/ef are one call with a batch vector and no box.",
    "Energies, forces (and for train every parameter gradient) agree with torchmd-net before timing: "
    "max relative difference in max_rel_error_vs_torchmd_net (JSON).",
]


def structures(case: str) -> list:
    if case in ("train", "ef"):
        frames = ase.io.read(BOTNET / "dataset_acac" / "test_MD_300K.xyz", index=":5")
        return [ase.Atoms(a.numbers, a.positions) for a in frames]
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat({"ef864": 6}[case])
    atoms.rattle(0.05, seed=0)
    return [atoms]


def make_graph(atoms: list, dtype: torch.dtype):
    return batch_graphs([graph_from_atoms(a, HYPERPARAMETERS["cutoff"], dtype) for a in atoms])


def their_inputs(graph) -> dict:
    """torchmd-net's forward arguments for all of ``graph``: one structure through the library's
    ``torchmd_net_inputs`` (checks the box against the cutoff); several molecules (no cell) as one
    call with the batch vector."""
    if graph.num_graphs == 1:
        return torchmd_net_inputs(graph, cutoff=HYPERPARAMETERS["cutoff"])
    if bool(graph.pbc.any()):
        raise SystemExit("a batch of several periodic structures needs one torchmd-net call each")
    return {
        "z": graph.numbers.to(torch.long),
        "pos": graph.positions,
        "batch": graph.batch.to(torch.long),
        "box": None,
    }


def ours_step(model, graph, case: str, atoms: list | None = None):
    """Our step; with ``atoms`` the graph is rebuilt from them in every call."""
    dtype = graph.positions.dtype
    if case == "train":
        targets_e = torch.zeros(graph.num_graphs, dtype=dtype)
        targets_f = torch.zeros_like(graph.positions)

        def step():
            model.zero_grad(set_to_none=True)
            out = model(graph, compute_forces=True, training=True)
            loss = ((out["energy"] - targets_e) ** 2).mean() + ((out["forces"] - targets_f) ** 2).mean()
            loss.backward()
            return out

        return step
    if atoms is not None:
        return lambda: model(make_graph(atoms, dtype), compute_forces=True)
    return lambda: model(graph, compute_forces=True)


def theirs_step(model, inputs: dict, case: str):
    train = case == "train"
    model.train(train)  # train: forces with create_graph, so the loss on them can be backpropagated
    n_graphs = int(inputs["batch"].max()) + 1
    dtype = inputs["pos"].dtype

    def step():
        if train:
            model.zero_grad(set_to_none=True)
        # their forward sets requires_grad on pos: a fresh leaf each call
        energy, forces = model(**dict(inputs, pos=inputs["pos"].detach().clone()))
        energy = energy.flatten()
        if train:
            loss = ((energy - torch.zeros(n_graphs, dtype=dtype)) ** 2).mean() + (forces**2).mean()
            loss.backward()
        return {"energy": energy, "forces": forces}

    return step


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def check(ours: dict, theirs: dict, dtype: torch.dtype, label: str, grads: tuple | None = None) -> float:
    """Max relative difference of energy, forces and (``grads`` = (our model, their model), after a
    training step of each) every parameter gradient; SystemExit beyond the tolerance."""
    tol = 1e-6 if dtype == torch.float64 else 1e-4
    errors = {key: relative_error(ours[key], theirs[key]) for key in ("energy", "forces")}
    if grads is not None:
        our_model, their_model = grads
        mapped = gradients_as_ours(our_model, their_model)
        for name, parameter in our_model.named_parameters():
            if not parameter.requires_grad:
                continue
            if name not in mapped or mapped[name] is None or parameter.grad is None:
                raise SystemExit(f"{label}: no gradient of {name} on one side, not timing")
            errors[f"grad {name}"] = relative_error(parameter.grad, mapped[name])
    worst = max(errors, key=errors.get)
    if errors[worst] > tol:
        raise SystemExit(
            f"{label}: equitensor and torchmd-net differ ({worst}: relative {errors[worst]:.2e} > {tol:g}), "
            "not timing"
        )
    return errors[worst]


def run_case(case: str, dtype_name: str, args) -> list[dict]:
    dtype = DTYPES[dtype_name]
    atoms = structures(case)
    graph = make_graph(atoms, dtype)
    torch.manual_seed(0)
    ours = TensorNet(**HYPERPARAMETERS, atomic_numbers=ELEMENTS, dtype=dtype_name)
    sparse = TensorNet(**HYPERPARAMETERS, atomic_numbers=ELEMENTS, dtype=dtype_name, backend="sparse")
    sparse.load_state_dict(ours.state_dict())
    models = {OURS: ours, OURS_SPARSE: sparse, OURS_WITH_GRAPH: sparse}
    theirs = torchmd_net_model(ours, dtype)
    inputs = their_inputs(graph)
    steps = {OURS: ours_step(ours, graph, case), OURS_SPARSE: ours_step(sparse, graph, case)}
    if case != "train":
        steps[OURS_WITH_GRAPH] = ours_step(sparse, graph, case, atoms=atoms)
    steps[THEIRS] = theirs_step(theirs, inputs, case)
    their_out = steps[THEIRS]()
    errors = {}
    for name in (OURS, OURS_SPARSE, OURS_WITH_GRAPH):
        if name in steps:
            grads = (models[name], theirs) if case == "train" else None
            errors[name] = check(steps[name](), their_out, dtype, f"{case} {dtype_name} {name}", grads)
            agrees = f"agrees with torchmd-net: {errors[name]:.1e}"
            print(f"{case:6s} {dtype_name:8s} {name:28s} {agrees}", flush=True)
    samples = round_robin(steps, args.repeats, args.warmup, args.min_seconds)
    base = {"case": case, "dtype": dtype_name, "atoms": graph.num_nodes, "edges": graph.num_edges}
    rows = result_rows(samples, THEIRS, base, errors)
    for row in rows:
        name, ms, ratio = row["implementation"], row["ms"], row["speedup_vs_torchmd_net"]
        print(f"{case:6s} {dtype_name:8s} {name:28s} {ms:9.2f} ms  {ratio:5.2f}x vs torchmd-net", flush=True)
    return rows


def quiet_warp() -> None:
    """No warp-lang banner and kernel-load lines on stdout (set before torchmd-net imports warp)."""
    try:
        import warp
    except ImportError:
        return
    warp.config.quiet = True  # older warp-lang
    if hasattr(warp, "LOG_WARNING"):  # warp-lang 1.19: the banner and load lines are INFO
        warp.config.log_level = warp.LOG_WARNING


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def versions() -> dict:
    from torchmdnet.models import tensornet

    return machine(
        {
            "torchmd-net": package_version("torchmd-net"),
            "warp-lang": package_version("warp-lang"),
            "torchmd-net warp kernels": bool(getattr(tensornet, "OPT", False)),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=CASES, choices=CASES)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=list(DTYPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--out", help="write OUT.json and OUT.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", module="torchmdnet")
    quiet_warp()
    rows = []
    for dtype_name in args.dtypes:
        for case in args.cases:
            rows += run_case(case, dtype_name, args)
    if args.out:
        meta = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), **versions()}
        meta["hyperparameters"] = {**HYPERPARAMETERS, "atomic_numbers": ELEMENTS}
        meta["notes"] = NOTES
        columns = {
            "case": "{case}",
            "dtype": "{dtype}",
            "atoms": "{atoms}",
            "edges": "{edges}",
            "implementation": "{implementation}",
            "ms (median)": "{ms:.1f}",
            "vs torchmd-net": "{speedup_vs_torchmd_net:.2f}x",
        }
        write_results(
            args.out,
            f"TensorNet whole-model steps, equitensor vs torchmd-net ({meta['date']})",
            meta,
            rows,
            columns,
            [
                "",
                "Ratios are torchmd-net's median time over the row's (above 1: faster than torchmd-net).",
                "",
            ]
            + [f"- {note}" for note in NOTES],
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
