"""Labelled data generated offline: Langevin MD of fcc metal cells labelled with ASE's EMT, or of
molecules labelled with GFN2-xTB through tblite (the optional extra ``equitensor[xtb]``).

EMT is a cheap many-body potential for Al, Cu, Ag, Au, Ni, Pd, Pt, so this makes honest periodic
training data with energies, forces and stress anywhere. Each trajectory starts from a fcc
supercell with random site occupancy (for alloys) and a random symmetric strain of the cell (so
stresses vary beyond the thermal ones), equilibrates, then keeps one frame every
``steps_between_frames`` steps. One isolated-atom frame per element (``config_type=IsolatedAtom``)
gives the E0s. The output is fully determined by the arguments, ``seed`` included.

xTB (:func:`generate_xtb_dataset`): MD of one molecule (an ``ase.build.molecule`` name or a
structure file), energies in eV and forces in eV/Å, no stress (no cell). No isolated-atom frames:
open-shell atoms need a spin treatment this generator does not choose for you, so E0s of such data
come from a least-squares fit, or from isolated atoms you add.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
from ase import Atoms, units
from ase.build import bulk
from ase.build import molecule as build_molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixCom
from ase.data import atomic_numbers, reference_states
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary

from equitensor.errors import InputError

EMT_ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
CALCULATORS = ("emt", "xtb")
XTB_METHOD = "GFN2-xTB"


def generate_emt_dataset(
    path: str | os.PathLike,
    *,
    composition: dict[str, float] | None = None,
    repeat: int = 2,
    temperatures: Sequence[float] = (300.0, 600.0, 1000.0),
    trajectories_per_temperature: int = 2,
    frames_per_trajectory: int = 50,
    steps_between_frames: int = 10,
    equilibration_steps: int = 100,
    timestep_fs: float = 2.0,
    friction_per_fs: float = 0.02,
    max_strain: float = 0.02,
    seed: int = 0,
) -> list[Atoms]:
    """Write an extxyz file of EMT-labelled MD frames (energy, forces, stress) and return the frames.

    composition: probability of each element on every site (default pure Cu), e.g.
    ``{"Cu": 0.7, "Ni": 0.3}``. Cells are ``repeat``^3 conventional fcc cells (4 atoms each), with
    the lattice constant averaged over the sites' elements (Vegard's law) times a random symmetric
    strain with entries up to ``max_strain``.
    """
    composition = {"Cu": 1.0} if composition is None else dict(composition)
    unknown = sorted(set(composition) - set(EMT_ELEMENTS))
    if unknown:
        raise InputError(f"EMT has no parameters for {unknown}; it covers {EMT_ELEMENTS}")
    symbols = sorted(composition)
    probabilities = np.array([composition[s] for s in symbols], dtype=float)
    if (probabilities < 0).any() or probabilities.sum() <= 0:
        raise InputError(f"composition must have non-negative weights with a positive sum: {composition}")
    probabilities /= probabilities.sum()

    rng = np.random.default_rng(seed)
    frames = [_isolated_atom(symbol) for symbol in symbols]
    for temperature in temperatures:
        for _ in range(trajectories_per_temperature):
            atoms = _starting_cell(symbols, probabilities, repeat, max_strain, rng)
            atoms.calc = EMT()
            frames += _md_frames(
                atoms,
                temperature,
                rng,
                frames=frames_per_trajectory,
                steps_between_frames=steps_between_frames,
                equilibration_steps=equilibration_steps,
                timestep_fs=timestep_fs,
                friction_per_fs=friction_per_fs,
                with_stress=True,
            )
    write(os.fspath(path), frames, format="extxyz")
    return frames


def generate_xtb_dataset(
    path: str | os.PathLike,
    *,
    molecule: str = "H2O",
    structure: str | os.PathLike | None = None,
    temperatures: Sequence[float] = (300.0, 600.0, 1000.0),
    trajectories_per_temperature: int = 2,
    frames_per_trajectory: int = 50,
    steps_between_frames: int = 10,
    equilibration_steps: int = 100,
    timestep_fs: float = 0.5,
    friction_per_fs: float = 0.02,
    seed: int = 0,
) -> list[Atoms]:
    """Write an extxyz file of GFN2-xTB-labelled MD frames (energy, forces) of one molecule and
    return the frames.

    The molecule is ``structure`` (a file ASE reads, its first frame) if given, else
    ``ase.build.molecule(molecule)``. Needs tblite (``pip install 'equitensor[xtb]'``).
    """
    start = read(os.fspath(structure), index=0) if structure is not None else build_molecule(molecule)
    if start.pbc.any():
        raise InputError(f"{structure}: the xtb generator makes molecular data; this structure is periodic")
    rng = np.random.default_rng(seed)
    frames = []
    for temperature in temperatures:
        for _ in range(trajectories_per_temperature):
            atoms = Atoms(numbers=start.numbers, positions=start.positions)
            atoms.calc = xtb_calculator()
            trajectory = _md_frames(
                atoms,
                temperature,
                rng,
                frames=frames_per_trajectory,
                steps_between_frames=steps_between_frames,
                equilibration_steps=equilibration_steps,
                timestep_fs=timestep_fs,
                friction_per_fs=friction_per_fs,
                with_stress=False,
            )
            # The MD's calculator starts each SCF from the previous step's wavefunction, which
            # moves the converged forces by ~1e-5 eV/Å; a fresh calculator labels each frame, so
            # the labels are what a new calculation on the stored positions gives.
            for frame in trajectory:
                frame.calc = xtb_calculator()
                frames.append(_labelled_copy(frame, frame.info["config_type"], with_stress=False))
    write(os.fspath(path), frames, format="extxyz")
    return frames


def xtb_calculator():
    """tblite's ASE calculator for GFN2-xTB (eV, eV/Å), quiet; a clear error without tblite."""
    try:
        from tblite.ase import TBLite
    except ImportError as error:
        raise ImportError(
            "the xtb calculator needs tblite, which is not installed: "
            "pip install 'equitensor[xtb]' (or pip install tblite)"
        ) from error
    return TBLite(method=XTB_METHOD, verbosity=0)


def _md_frames(
    atoms: Atoms,
    temperature: float,
    rng: np.random.Generator,
    *,
    frames: int,
    steps_between_frames: int,
    equilibration_steps: int,
    timestep_fs: float,
    friction_per_fs: float,
    with_stress: bool,
) -> list[Atoms]:
    """Langevin MD of ``atoms`` (calculator attached) at ``temperature`` K: equilibrate, then keep
    one labelled frame every ``steps_between_frames`` steps."""
    atoms.set_constraint(FixCom())  # ASE's advice over Langevin(fixcm=True)
    _thermal_momenta(atoms, temperature, rng)
    dynamics = Langevin(
        atoms,
        timestep_fs * units.fs,
        temperature_K=temperature,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )
    dynamics.run(equilibration_steps)
    kept = []
    for _ in range(frames):
        dynamics.run(steps_between_frames)
        kept.append(_labelled_copy(atoms, f"MD_{temperature:g}K", with_stress=with_stress))
    return kept


def _starting_cell(
    symbols: list[str], probabilities: np.ndarray, repeat: int, max_strain: float, rng: np.random.Generator
) -> Atoms:
    atoms = bulk("Cu", "fcc", a=1.0, cubic=True) * (repeat, repeat, repeat)  # unit lattice, scaled below
    atoms.symbols = list(rng.choice(symbols, size=len(atoms), p=probabilities))
    lattice = np.mean([reference_states[atomic_numbers[s]]["a"] for s in atoms.get_chemical_symbols()])
    strain = rng.uniform(-max_strain, max_strain, size=(3, 3))
    deformation = lattice * (np.eye(3) + 0.5 * (strain + strain.T))
    atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
    return atoms


def _thermal_momenta(atoms: Atoms, temperature: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature`` K with zero total momentum."""
    sigma = np.sqrt(atoms.get_masses() * units.kB * temperature)
    atoms.set_momenta(rng.standard_normal((len(atoms), 3)) * sigma[:, None])
    Stationary(atoms)


def _isolated_atom(symbol: str) -> Atoms:
    atom = Atoms(symbol, positions=[[0.0, 0.0, 0.0]], pbc=False)
    atom.calc = EMT()
    return _labelled_copy(atom, "IsolatedAtom", with_stress=False)


def _labelled_copy(atoms: Atoms, config_type: str, with_stress: bool = True) -> Atoms:
    """A copy holding the calculator's energy, forces (and stress, ASE sign, Voigt) as results."""
    # The MD's FixCom constraint would remove the net force: keep the calculator's own forces.
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(apply_constraint=False)}
    if with_stress:
        results["stress"] = atoms.get_stress()
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info["config_type"] = config_type
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m equitensor.datasets.generate out.xyz --composition Cu=0.7,Ni=0.3``
    (EMT) or ``... out.xyz --calculator xtb --molecule CH3CH2OH`` (GFN2-xTB)."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    add_arguments(parser)
    run(parser.parse_args(argv))


DESCRIPTION = "MD frames as extxyz: fcc metal cells labelled by EMT, or a molecule labelled by GFN2-xTB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The generator's options (shared by this module's main and ``equitensor data generate``)."""
    parser.add_argument("path", help="output extxyz file")
    parser.add_argument(
        "--calculator",
        choices=CALCULATORS,
        default="emt",
        help="emt: fcc metal cells (energy, forces, stress); xtb: a molecule with GFN2-xTB through "
        "tblite (energy, forces; needs pip install 'equitensor[xtb]')",
    )
    parser.add_argument("--composition", default="Cu=1", help="emt: site probabilities, e.g. Cu=0.7,Ni=0.3")
    parser.add_argument("--repeat", type=int, default=2, help="emt: conventional fcc cells per side")
    parser.add_argument("--molecule", default="H2O", help="xtb: an ase.build.molecule name, e.g. CH3CH2OH")
    parser.add_argument("--structure", default=None, help="xtb: start from this structure file instead")
    parser.add_argument("--temperatures", default="300,600,1000", help="kelvin, comma-separated")
    parser.add_argument("--trajectories-per-temperature", type=int, default=2)
    parser.add_argument("--frames-per-trajectory", type=int, default=50)
    parser.add_argument("--steps-between-frames", type=int, default=10)
    parser.add_argument("--equilibration-steps", type=int, default=100)
    parser.add_argument("--timestep-fs", type=float, default=None, help="default: emt 2.0, xtb 0.5")
    parser.add_argument("--max-strain", type=float, default=0.02, help="emt: random cell strain")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> None:
    """Generate the data set that parsed options ``args`` describe."""
    md = {
        "temperatures": [float(t) for t in args.temperatures.split(",")],
        "trajectories_per_temperature": args.trajectories_per_temperature,
        "frames_per_trajectory": args.frames_per_trajectory,
        "steps_between_frames": args.steps_between_frames,
        "equilibration_steps": args.equilibration_steps,
        "seed": args.seed,
    }
    if args.timestep_fs is not None:
        md["timestep_fs"] = args.timestep_fs
    if args.calculator == "xtb":
        frames = generate_xtb_dataset(args.path, molecule=args.molecule, structure=args.structure, **md)
    else:
        composition = {}
        for part in args.composition.split(","):
            symbol, _, weight = part.partition("=")
            composition[symbol.strip()] = float(weight or 1.0)
        frames = generate_emt_dataset(
            args.path, composition=composition, repeat=args.repeat, max_strain=args.max_strain, **md
        )
    print(f"wrote {len(frames)} frames to {args.path}")


if __name__ == "__main__":
    main()
