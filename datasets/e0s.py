"""Per-element reference energies (E0s): from isolated-atom frames, or fitted by least squares.

Every function that decides E0s also returns one sentence saying how they were obtained, for the
training log. Isolated atoms are the recommended source (MACE's advice: E0s fitted to the data make
less stable potentials in MD); the fit is used only when the data hold no isolated atoms at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase.data import chemical_symbols

from equitensor.datasets.reading import DatasetError, LabelledStructure

ISOLATED_ATOM_CONFIG_TYPES = ("IsolatedAtom", "isolated_atom")


def is_isolated_atom(
    structure: LabelledStructure, config_types: Sequence[str] = ISOLATED_ATOM_CONFIG_TYPES
) -> bool:
    """A one-atom frame marked as an isolated atom (MACE: ``config_type=IsolatedAtom``)."""
    return structure.num_atoms == 1 and structure.config_type in config_types


def split_isolated_atoms(
    structures: Sequence[LabelledStructure], config_types: Sequence[str] = ISOLATED_ATOM_CONFIG_TYPES
) -> tuple[list[LabelledStructure], list[LabelledStructure]]:
    """(isolated-atom frames, all other frames), each in the original order.

    >>> from equitensor.datasets import default_dataset_path, read_structures
    >>> isolated, others = split_isolated_atoms(read_structures(default_dataset_path()))
    >>> [s.config_type for s in isolated], len(others)
    (['IsolatedAtom', 'IsolatedAtom'], 300)
    """
    isolated = [s for s in structures if is_isolated_atom(s, config_types)]
    others = [s for s in structures if not is_isolated_atom(s, config_types)]
    return isolated, others


def isolated_atom_energies(isolated: Sequence[LabelledStructure]) -> dict[int, float]:
    """E0 per atomic number from one-atom frames; repeated elements must agree to 1e-6 eV.

    >>> from equitensor.datasets import default_dataset_path, read_structures
    >>> isolated, _ = split_isolated_atoms(read_structures(default_dataset_path()))
    >>> isolated_atom_energies(isolated)  # Cu and Ni, eV
    {29: 3.51, 28: 4.44}
    """
    e0s: dict[int, float] = {}
    for structure in isolated:
        if structure.num_atoms != 1:
            raise DatasetError(
                f"{structure.source}: an isolated-atom frame needs 1 atom, has {structure.num_atoms}"
            )
        if structure.energy is None:
            raise DatasetError(f"{structure.source}: isolated-atom frame without an energy")
        z = int(structure.numbers[0])
        if z in e0s and abs(e0s[z] - structure.energy) > 1e-6:
            raise DatasetError(
                f"{structure.source}: second isolated-atom energy for {chemical_symbols[z]} "
                f"({structure.energy} eV) differs from the first ({e0s[z]} eV)"
            )
        e0s.setdefault(z, float(structure.energy))
    return e0s


def fit_e0s(structures: Sequence[LabelledStructure]) -> tuple[dict[int, float], str]:
    """E0s minimising sum_s (E_s - sum_Z n_sZ E0_Z)^2 (numpy lstsq), and a sentence about the fit.

    When the compositions do not determine every element (e.g. every structure is the same
    molecule), lstsq returns the minimum-norm solution and the sentence says so.

    Example: energies that are exactly -1 eV per H and -5 eV per O.

    >>> from ase.build import molecule
    >>> from equitensor.datasets import structures_from_atoms
    >>> frames = [molecule(name) for name in ("H2", "H2O", "O2")]
    >>> for atoms, energy in zip(frames, (-2.0, -7.0, -10.0)):
    ...     atoms.info["energy"] = energy
    >>> e0s, sentence = fit_e0s(structures_from_atoms(frames, require=("energy",)))
    >>> {z: round(e0, 6) for z, e0 in e0s.items()}
    {1: -1.0, 8: -5.0}
    """
    labelled = [s for s in structures if s.energy is not None]
    if not labelled:
        raise DatasetError("cannot fit E0s: no structure has an energy")
    elements = sorted({int(z) for s in labelled for z in s.numbers})
    column = {z: k for k, z in enumerate(elements)}
    counts = np.zeros((len(labelled), len(elements)))
    for row, structure in enumerate(labelled):
        for z in structure.numbers:
            counts[row, column[int(z)]] += 1
    energies = np.array([s.energy for s in labelled])
    solution, _, rank, _ = np.linalg.lstsq(counts, energies, rcond=None)
    e0s = {z: float(solution[column[z]]) for z in elements}
    residual = energies - counts @ solution
    rms_per_atom = float(np.sqrt(np.mean((residual / counts.sum(1)) ** 2)))
    return e0s, least_squares_sentence(len(labelled), elements, rms_per_atom, int(rank))


def least_squares_sentence(
    num_structures: int, elements: Sequence[int], rms_per_atom: float, rank: int
) -> str:
    """The training-log sentence about a least-squares E0 fit (shared by every way of fitting)."""
    sentence = (
        f"E0s fitted by least squares of the energy on the composition of {num_structures} structures "
        f"(elements {', '.join(chemical_symbols[z] for z in elements)}; RMS residual "
        f"{1e3 * rms_per_atom:.1f} meV/atom)"
    )
    if rank < len(elements):
        sentence += (
            f"; the compositions determine only {rank} combination(s) of the {len(elements)} E0s, "
            "so these are the minimum-norm solution, not unique"
        )
    return sentence + "."


def compute_e0s(
    structures: Sequence[LabelledStructure], config_types: Sequence[str] = ISOLATED_ATOM_CONFIG_TYPES
) -> tuple[dict[int, float], str]:
    """E0s from the isolated-atom frames if there are any, else fitted by least squares.

    Isolated atoms must then cover every element of the other frames: a mix of isolated-atom and
    fitted E0s is never made silently.

    >>> from equitensor.datasets import default_dataset_path, read_structures
    >>> compute_e0s(read_structures(default_dataset_path()))
    ({29: 3.51, 28: 4.44}, 'E0s from 2 isolated-atom frames (Ni, Cu).')
    """
    isolated, others = split_isolated_atoms(structures, config_types)
    if not isolated:
        return fit_e0s(others)
    needed = {int(z) for s in others for z in s.numbers}
    return e0s_covering(isolated_atom_energies(isolated), len(isolated), needed)


def e0s_covering(e0s: dict[int, float], num_isolated: int, needed: set[int]) -> tuple[dict[int, float], str]:
    """Isolated-atom E0s, checked to cover every element in ``needed``, and their sentence."""
    missing = sorted(needed - set(e0s))
    if missing:
        raise DatasetError(
            f"isolated-atom frames give E0s for {_symbols(e0s)} but the data also contain "
            f"{_symbols(missing)}: add isolated-atom frames (config_type=IsolatedAtom) for them "
            "or give every E0 explicitly"
        )
    sentence = f"E0s from {num_isolated} isolated-atom frames ({_symbols(e0s)})."
    return e0s, sentence


def _symbols(numbers) -> str:
    return ", ".join(chemical_symbols[z] for z in sorted(numbers))
