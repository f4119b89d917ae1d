"""Atomic graphs from ASE Atoms: neighbour lists with periodic images, MACE conventions."""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from equitensor.graph import AtomicGraph


def neighbour_list(atoms: Atoms, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Senders, receivers and integer cell shifts of every pair closer than ``r_max``.

    Self-pairs appear only through a periodic image. Non-periodic directions need no cell.
    """
    i, j, shifts = neighbor_list("ijS", atoms, float(r_max), self_interaction=False)
    # ASE: vector = positions[j] - positions[i] + S @ cell. With receiver = i, sender = j the
    # MACE vector positions[receiver] - positions[sender] + shift needs shift = -S.
    return j, i, -shifts


def graph_from_atoms(atoms: Atoms, r_max: float, dtype: torch.dtype = torch.float64) -> AtomicGraph:
    """One structure as an AtomicGraph with every neighbour within ``r_max``."""
    sender, receiver, shifts = neighbour_list(atoms, r_max)
    cell = atoms.cell.array if atoms.pbc.any() else np.zeros((3, 3))
    return AtomicGraph(
        positions=torch.tensor(atoms.positions, dtype=dtype),
        numbers=torch.tensor(atoms.numbers, dtype=torch.long),
        edge_index=torch.tensor(np.stack([sender, receiver]), dtype=torch.long).reshape(2, -1),
        unit_shifts=torch.tensor(shifts, dtype=dtype).reshape(-1, 3),
        cell=torch.tensor(cell, dtype=dtype).reshape(1, 3, 3),
        pbc=torch.tensor(atoms.pbc, dtype=torch.bool).reshape(1, 3),
        batch=torch.zeros(len(atoms), dtype=torch.long),
        num_graphs=1,
    )
