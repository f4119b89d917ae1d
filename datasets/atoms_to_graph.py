"""Atomic graphs from ASE Atoms: neighbour lists with periodic images, MACE conventions.

The neighbour list is vesin's (the only one used; no fallback): it finds exactly ASE's pairs and
is 10-50x faster (benchmarks/results/neighbour_lists.md).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
import vesin
from ase import Atoms

from equitensor.graph import AtomicGraph

_per_thread = threading.local()


def _vesin_calculator(r_max: float) -> vesin.NeighborList:
    """One vesin calculator per cutoff and thread, reused: building one costs as much as the
    neighbour list of a small molecule. One thread inside vesin: data loaders already run
    structures in parallel processes, and a single thread keeps the pair order deterministic."""
    calculators = _per_thread.__dict__.setdefault("calculators", {})
    if r_max not in calculators:
        calculators[r_max] = vesin.NeighborList(cutoff=r_max, full_list=True, n_threads=1)
    return calculators[r_max]


def effective_box(atoms: Atoms) -> np.ndarray:
    """The cell the neighbour list uses: the lattice vectors if any direction is periodic, else zeros."""
    return np.array(atoms.cell.array, dtype=np.float64) if atoms.pbc.any() else np.zeros((3, 3))


def neighbour_list(atoms: Atoms, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Senders, receivers and integer cell shifts of every pair closer than ``r_max``.

    Self-pairs appear only through a periodic image. Non-periodic directions need no cell.

    >>> from ase.build import bulk, molecule
    >>> sender, receiver, shifts = neighbour_list(molecule("H2O"), 2.0)
    >>> sender.tolist(), receiver.tolist(), shifts.shape
    ([1, 2, 0, 2, 0, 1], [0, 0, 1, 1, 2, 2], (6, 3))
    >>> sender, receiver, shifts = neighbour_list(bulk("Cu", "fcc", a=3.6), 3.0)
    >>> len(sender), bool((sender == receiver).all())  # 12 neighbours, all images of the one atom
    (12, True)
    """
    i, j, shifts = _vesin_calculator(float(r_max)).compute(
        np.ascontiguousarray(atoms.positions, dtype=np.float64),
        effective_box(atoms),
        atoms.pbc,
        quantities="ijS",
    )
    # vesin and ASE: vector = positions[j] - positions[i] + S @ cell. With receiver = i, sender = j the
    # MACE vector positions[receiver] - positions[sender] + shift needs shift = -S.
    return j, i, -shifts


def relative_positions(atoms: Atoms) -> np.ndarray:
    """Positions minus the first atom's (float64): the same graph, translation-proof in float32."""
    positions = np.asarray(atoms.positions, dtype=np.float64)
    return positions - positions[:1] if len(positions) else positions


def graph_from_pairs(
    atoms: Atoms,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> AtomicGraph:
    """One structure with the given (sender, receiver, integer shift) pairs as an AtomicGraph.

    >>> import torch
    >>> from ase.build import molecule
    >>> water = molecule("H2O")
    >>> graph = graph_from_pairs(water, neighbour_list(water, 1.2), torch.float32)  # the O-H bonds
    >>> graph.num_edges, graph.positions.dtype, graph.edge_index.tolist()
    (4, torch.float32, [[1, 2, 0, 0], [0, 0, 1, 2]])
    """
    sender, receiver, shifts = pairs
    as_float = {"dtype": dtype, "device": device}
    return AtomicGraph(
        # relative to the first atom (in float64, before any cast): only differences of positions
        # enter a model, and in float32 a structure far from the origin would lose them
        positions=torch.tensor(relative_positions(atoms), **as_float),
        numbers=torch.tensor(atoms.numbers, dtype=torch.long, device=device),
        edge_index=torch.tensor(np.stack([sender, receiver]), dtype=torch.long, device=device).reshape(2, -1),
        unit_shifts=torch.tensor(shifts, **as_float).reshape(-1, 3),
        cell=torch.tensor(effective_box(atoms), **as_float).reshape(1, 3, 3),
        pbc=torch.tensor(atoms.pbc, dtype=torch.bool, device=device).reshape(1, 3),
        batch=torch.zeros(len(atoms), dtype=torch.long, device=device),
        num_graphs=1,
    )


def graph_from_atoms(atoms: Atoms, r_max: float, dtype: torch.dtype = torch.float64) -> AtomicGraph:
    """One structure as an AtomicGraph with every neighbour within ``r_max``.

    >>> from ase.build import bulk
    >>> graph = graph_from_atoms(bulk("Cu", "fcc", a=3.6, cubic=True), 3.0)
    >>> graph.num_nodes, graph.num_edges, graph.cell.shape, graph.pbc.tolist()
    (4, 48, torch.Size([1, 3, 3]), [[True, True, True]])
    """
    return graph_from_pairs(atoms, neighbour_list(atoms, r_max), dtype)
