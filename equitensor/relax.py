"""``equitensor relax``: geometry (and optionally cell) optimisation with an equitensor model.

Positions are relaxed with an ASE optimizer until every force is below ``fmax``; with ``cell``
the cell relaxes too through ASE's ``FrechetCellFilter`` (log-strain cell degrees of freedom),
whose generalised forces include the stress times the volume, so convergence covers both.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import ase.io
import numpy as np
from ase import Atoms, units
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE, LBFGS

from equitensor.errors import InputError
from equitensor.md import add_model_and_structure_arguments, check_output_folder, structure_with_calculator

OPTIMIZERS = {"BFGS": BFGS, "FIRE": FIRE, "LBFGS": LBFGS}


@dataclass
class RelaxResult:
    converged: bool
    steps: int
    energy: float
    max_force: float
    max_stress: float | None


def relax(
    atoms: Atoms,
    fmax: float = 0.05,
    steps: int = 1000,
    optimizer: str = "BFGS",
    cell: bool = False,
    pressure_GPa: float = 0.0,
    trajectory: str | None = None,
    logfile: str | None = "-",
) -> RelaxResult:
    """Relax ``atoms`` (which carry a calculator) in place; ``cell`` also relaxes the cell towards
    the hydrostatic ``pressure_GPa``. Returns whether fmax was reached and the final state."""
    if optimizer not in OPTIMIZERS:
        raise InputError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
    if fmax <= 0:
        raise InputError(f"fmax must be positive, got {fmax}")
    if cell and not atoms.pbc.all():
        raise InputError(f"a cell relaxation needs pbc in all three directions, got {atoms.pbc.tolist()}")
    target = FrechetCellFilter(atoms, scalar_pressure=pressure_GPa * units.GPa) if cell else atoms
    opt = OPTIMIZERS[optimizer](target, logfile=logfile, trajectory=trajectory)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    forces = atoms.get_forces()
    stress = np.abs(atoms.get_stress()).max() if atoms.pbc.all() else None
    return RelaxResult(
        converged=converged,
        steps=opt.nsteps,
        energy=atoms.get_potential_energy(),
        max_force=float(np.linalg.norm(forces, axis=1).max()) if len(atoms) else 0.0,
        max_stress=None if stress is None else float(stress),
    )


def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``relax`` subcommand's arguments."""
    p = commands.add_parser("relax", help="geometry (and cell) optimisation with a trained model")
    add_model_and_structure_arguments(p, "structure to relax, any format ASE reads")
    p.add_argument("--cell", action="store_true", help="relax the cell too (FrechetCellFilter)")
    p.add_argument("--pressure", type=float, default=0.0, help="target pressure with --cell, GPa")
    p.add_argument("--fmax", type=float, default=0.05, help="force convergence, eV/Å (default 0.05)")
    p.add_argument("--steps", type=int, default=1000, help="maximum optimizer steps")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="BFGS")
    p.add_argument("--output", default="relaxed.xyz", help="relaxed structure, extxyz (default relaxed.xyz)")
    p.add_argument("--trajectory", default=None, help="ASE .traj file of every optimizer step")
    return p


def main(args: argparse.Namespace) -> int:
    if args.steps < 0:
        raise InputError(f"--steps must be >= 0, got {args.steps}")
    check_output_folder(args.output, "--output")
    check_output_folder(args.trajectory, "--trajectory")
    atoms = structure_with_calculator(args)
    result = relax(
        atoms,
        fmax=args.fmax,
        steps=args.steps,
        optimizer=args.optimizer,
        cell=args.cell,
        pressure_GPa=args.pressure,
        trajectory=args.trajectory,
    )
    ase.io.write(args.output, atoms, format="extxyz")
    stress = "" if result.max_stress is None else f", max |stress| {result.max_stress / units.GPa:.4f} GPa"
    status = "converged" if result.converged else f"NOT converged (fmax {args.fmax} eV/Å not reached)"
    print(
        f"{status} after {result.steps} steps: energy {result.energy:.6f} eV, "
        f"max |force| {result.max_force:.4f} eV/Å{stress}; wrote {args.output}"
    )
    return 0 if result.converged else 1
