"""A Verlet neighbour list: pairs within ``cutoff + skin``, reused while no atom moved far.

Every pair closer than ``cutoff`` now was closer than ``cutoff + skin`` at the last build as long
as no atom moved more than ``skin / 2`` since then and the cell is unchanged, so the stored
candidate pairs (with their integer cell shifts) only need filtering by the current distance.

The model is given the filtered pairs only (distance < cutoff), never the whole candidate list:
the model's per-edge work (radial network, tensor product) costs far more than the filter, the
model sees exactly the graph a fresh neighbour list gives (whatever its cutoff function does
outside ``cutoff``), and pairs are kept in one canonical order (receiver, sender, shift) from
every build, so results are bitwise identical to a fresh list built the same way.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from equitensor.datasets.atoms_to_graph import effective_box, neighbour_list


def canonical_pairs(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Senders, receivers and integer shifts of every pair closer than ``cutoff`` (vesin), sorted by
    receiver, sender, then shift so that the order does not depend on how they were found."""
    sender, receiver, shifts = neighbour_list(atoms, cutoff)
    shifts = np.asarray(shifts, dtype=np.int64).reshape(-1, 3)
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], sender, receiver))
    return np.asarray(sender)[order], np.asarray(receiver)[order], shifts[order]


def pair_distances_squared(
    positions: np.ndarray, box: np.ndarray, sender: np.ndarray, receiver: np.ndarray, shifts: np.ndarray
) -> np.ndarray:
    """|r_receiver - r_sender + shift @ box|^2 for each pair (MACE's edge-vector convention)."""
    vectors = positions[receiver] - positions[sender] + shifts @ box
    return np.einsum("ij,ij->i", vectors, vectors)


class VerletList:
    """Pairs within ``cutoff`` of a changing structure, rebuilt only when needed.

    ``skin = 0`` rebuilds whenever any position changed. ``num_builds`` counts the vesin calls.
    """

    def __init__(self, cutoff: float, skin: float = 0.5) -> None:
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.num_builds = 0
        self._built_positions: np.ndarray | None = None
        self._built_box: np.ndarray | None = None
        self._built_pbc: np.ndarray | None = None
        self._candidates: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def needs_rebuild(self, atoms: Atoms) -> bool:
        """True if the stored candidates may miss a pair: new structure, new cell or pbc, or an atom
        that moved more than skin / 2 since the last build."""
        if self._built_positions is None or len(atoms) != len(self._built_positions):
            return True
        if not np.array_equal(atoms.pbc, self._built_pbc):
            return True
        if not np.array_equal(effective_box(atoms), self._built_box):
            return True
        displacement = atoms.positions - self._built_positions
        if len(displacement) == 0:
            return False
        max_squared = float(np.einsum("ij,ij->i", displacement, displacement).max())
        if self.skin == 0:
            return max_squared > 0
        return max_squared > (0.5 * self.skin) ** 2

    def build(self, atoms: Atoms) -> None:
        """Find every pair within ``cutoff + skin`` and remember where the atoms were."""
        self._candidates = canonical_pairs(atoms, self.cutoff + self.skin)
        self._built_positions = np.array(atoms.positions, dtype=np.float64)
        self._built_box = effective_box(atoms)
        self._built_pbc = np.array(atoms.pbc, dtype=bool)
        self.num_builds += 1

    def pairs(self, atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Senders, receivers and integer shifts of the pairs closer than ``cutoff`` now."""
        if self.needs_rebuild(atoms):
            self.build(atoms)
        sender, receiver, shifts = self._candidates
        positions = np.asarray(atoms.positions, dtype=np.float64)
        inside = pair_distances_squared(positions, self._built_box, sender, receiver, shifts) < self.cutoff**2
        return sender[inside], receiver[inside], shifts[inside]
