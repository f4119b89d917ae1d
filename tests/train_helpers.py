"""Tiny labelled data sets and configs shared by the training tests (EMT, a few 4-atom cells)."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator


def emt_frames(count: int, seed: int = 0, elements=("Cu", "Ni"), isolated: bool = True) -> list[Atoms]:
    """``count`` rattled, strained 4-atom fcc cells of random Cu/Ni labelled by EMT, plus one
    isolated atom per element (config_type=IsolatedAtom) first."""
    rng = np.random.default_rng(seed)
    frames = []
    if isolated:
        for symbol in elements:
            atom = Atoms(symbol, pbc=False)
            atom.calc = EMT()
            energy = atom.get_potential_energy()
            atom.calc = SinglePointCalculator(atom, energy=energy, forces=np.zeros((1, 3)))
            atom.info["config_type"] = "IsolatedAtom"
            frames.append(atom)
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.set_chemical_symbols(rng.choice(list(elements), size=len(atoms)).tolist())
        strain = np.eye(3) + 0.02 * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ (strain + strain.T) / 2, scale_atoms=True)
        atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
        frames.append(label_with_emt(atoms))
    return frames


def label_with_emt(atoms: Atoms) -> Atoms:
    """``atoms`` with EMT energy, forces and stress stored in a SinglePointCalculator."""
    atoms.calc = EMT()
    results = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(),
    }
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def write_frames(path: Path, frames: list[Atoms]) -> Path:
    ase.io.write(path, frames, format="extxyz")
    return path


def tiny_config(tmp_path: Path, train_file: Path, **overrides) -> dict:
    """A TensorNet config that trains in about a second per epoch."""
    config = {
        "model": "tensornet",
        "model_kwargs": {"hidden_channels": 4, "num_layers": 1, "num_rbf": 4},
        "train_file": str(train_file),
        "valid_fraction": 0.25,
        "r_max": 3.0,
        "epochs": 2,
        "batch_size": 2,
        "valid_batch_size": 3,
        "stress_weight": 1.0,
        "output_dir": str(tmp_path / "run"),
        "name": "tiny",
        "progress": False,
        "plots": False,
        "num_threads": 1,  # tiny tensors: one thread avoids OpenMP contention on a busy machine
    }
    config.update(overrides)
    return config
