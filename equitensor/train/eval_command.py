"""``equitensor eval --model CKPT --data FILE [--output preds.xyz]``: errors of a trained model on a
data file, and its predictions written as extxyz."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress

from equitensor.datasets import GraphDataset, read_structures
from equitensor.errors import InputError
from equitensor.serialization import load_model, parameter_dtype
from equitensor.tp.backends.auto import resolve_backends
from equitensor.train.data import check_elements
from equitensor.train.distributed import resolve_device
from equitensor.train.evaluation import predict_batches
from equitensor.train.logs import write_json
from equitensor.train.metrics import ErrorAccumulator, format_table


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "eval",
        help="errors and predictions of a trained model on a data file",
        description="Evaluate a model file or training checkpoint on an extxyz (or any ASE-readable) file.",
    )
    parser.add_argument("--model", required=True, help="model file (.model) or training checkpoint (.pt)")
    parser.add_argument("--data", required=True, help="structures to evaluate")
    parser.add_argument("--output", help="write predictions here as extxyz")
    parser.add_argument(
        "--prefix", default="equitensor_", help="name prefix of predicted values (default %(default)s)"
    )
    parser.add_argument("--metrics-json", help="also write the metrics as JSON here")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    for label in ("energy", "forces", "stress", "virials"):
        parser.add_argument(f"--{label}-key", default=None, help=f"key of the reference {label}")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = resolve_device(args.device)
    model = load_model(args.model).to(device)
    resolve_backends(model)
    structures = read_structures(
        args.data,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        virials_key=args.virials_key,
        require=(),
    )
    known = model.config.get("atomic_numbers")
    if known is not None:
        check_elements(structures, list(known), "evaluation")
    dataset = GraphDataset(structures, model.r_max, parameter_dtype(model))
    compute_stress = any(s.pbc.all() for s in structures)
    accumulator = ErrorAccumulator()
    energies, forces, stresses = [], [], []
    for _, batch, predictions in predict_batches(
        model, dataset, range(len(dataset)), args.batch_size, device, compute_stress
    ):
        accumulator.update(predictions, batch.labels, batch.graph)
        sizes = torch.bincount(batch.graph.batch, minlength=batch.num_graphs).tolist()
        energies += predictions["energy"].double().cpu().tolist()
        forces += list(torch.split(predictions["forces"].double().cpu(), sizes))
        if compute_stress:
            stresses += list(predictions["stress"].double().cpu())
    non_finite = [
        k
        for k, (e, f) in enumerate(zip(energies, forces))
        if not (np.isfinite(e) and torch.isfinite(f).all())
    ]
    summary = {"name": Path(args.data).name, "structures": len(dataset), **accumulator.summary()}
    if any(summary.get(f"{q}_count") for q in ("energy", "forces", "stress")):
        print(format_table([summary], title=f"errors of {args.model} on {args.data}"))
    else:
        print(f"{args.data} has no reference energies, forces or stresses: predictions only")
    _note_isolated_atoms(structures, model)
    if args.metrics_json:
        write_json(Path(args.metrics_json), summary)
    if args.output:
        write_predictions(args, structures, energies, forces, stresses)
        print(
            f"predictions written to {args.output} (info {args.prefix}energy, arrays {args.prefix}forces"
            + (f", info {args.prefix}stress (Voigt, eV/Å^3)" if compute_stress else "")
            + ")"
        )
    if non_finite:
        shown = ", ".join(map(str, non_finite[:20])) + (" ..." if len(non_finite) > 20 else "")
        print(
            f"error: {args.model} predicts non-finite energies or forces for {len(non_finite)} of "
            f"{len(dataset)} structures of {args.data} (frames {shown})",
            file=sys.stderr,
        )
        return 3
    return 0


def _note_isolated_atoms(structures, model) -> None:
    """Isolated atoms get E0 + shift from a model with a shift (ScaleShift models): say so."""
    shift = float(model.config.get("shift", 0.0))
    isolated = sum(1 for s in structures if s.num_atoms == 1)
    if isolated and shift != 0:
        print(
            f"note: {isolated} one-atom frame(s) in the data; this model has shift = {shift:.4f} eV/atom "
            "(a MACE model trained with shift: zero keeps isolated atoms at exactly their E0)"
        )


def write_predictions(args, structures, energies, forces, stresses) -> None:
    """The input frames with predicted energy, forces and stress added under ``args.prefix``."""
    frames = ase.io.read(args.data, index=":")
    if len(frames) != len(structures):
        raise InputError(f"{args.data}: read {len(frames)} frames for {len(structures)} structures")
    for k, atoms in enumerate(frames):
        atoms.info[f"{args.prefix}energy"] = energies[k]
        atoms.arrays[f"{args.prefix}forces"] = forces[k].numpy()
        if stresses and atoms.pbc.all():
            atoms.info[f"{args.prefix}stress"] = full_3x3_to_voigt_6_stress(stresses[k].numpy())
    ase.io.write(args.output, frames, format="extxyz")
