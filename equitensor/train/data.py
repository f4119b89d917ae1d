"""The data of a training run: reading the files, E0s, the train/validation split, element checks,
graph data sets and the statistics the model is built with (avg_num_neighbors, scale, shift).

Every decision is also written as a sentence in ``PreparedData.notes`` for the training log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from ase.data import atomic_numbers as symbol_to_z
from ase.data import chemical_symbols

from equitensor.datasets import (
    DatasetError,
    GraphDataset,
    LabelledStructure,
    compute_e0s,
    default_dataset_path,
    fit_e0s,
    read_structures,
    split_isolated_atoms,
)
from equitensor.train.config import TrainConfig


@dataclass
class PreparedData:
    """Structures and graphs of each split, and the statistics derived from the training split."""

    train: list[LabelledStructure]
    valid: list[LabelledStructure]
    test: list[LabelledStructure]
    atomic_numbers: list[int]
    e0s: dict[int, float]
    train_graphs: GraphDataset
    valid_graphs: GraphDataset
    test_graphs: GraphDataset | None
    avg_num_neighbors: float
    scale: float
    shift: float
    has_stress: bool
    notes: list[str] = field(default_factory=list)


def read_split(path: str, config: TrainConfig, what: str) -> list[LabelledStructure]:
    """One data file with the configured keys; energy and forces required when they are fitted."""
    require = [label for label in ("energy", "forces") if getattr(config, f"{label}_weight") > 0]
    structures = read_structures(
        path,
        energy_key=config.energy_key,
        forces_key=config.forces_key,
        stress_key=config.stress_key,
        virials_key=config.virials_key,
        require=require,
    )
    if not structures:
        raise DatasetError(f"{what} file {path}: empty data set")
    return structures


def e0s_from_config(
    config: TrainConfig, train_all: list[LabelledStructure], others: list[LabelledStructure]
) -> tuple[dict[int, float], str]:
    """E0s as the config asks: auto (isolated atoms if any, else least squares), isolated,
    least_squares, or a {Z or symbol: eV} mapping."""
    if isinstance(config.e0s, dict):
        e0s = {}
        for key, value in config.e0s.items():
            z = symbol_to_z.get(key) if isinstance(key, str) and not key.isdigit() else int(key)
            if z is None or not 0 < z < len(chemical_symbols):
                raise DatasetError(f"e0s: {key!r} is not an element symbol or atomic number")
            e0s[z] = float(value)
        return e0s, f"E0s given in the config ({_symbols(e0s)})."
    if config.e0s == "least_squares":
        return fit_e0s(others)
    if config.e0s == "isolated" and len(others) == len(train_all):
        raise DatasetError(
            "e0s: isolated asks for isolated-atom energies, but the training data have no "
            "one-atom frames with config_type=IsolatedAtom"
        )
    return compute_e0s(train_all)


def split_train_valid(
    others: list[LabelledStructure], fraction: float, seed: int
) -> tuple[list[LabelledStructure], list[LabelledStructure]]:
    """A random (seeded) fraction of the training structures set aside for validation."""
    num_valid = max(1, int(round(fraction * len(others))))
    if num_valid >= len(others):
        raise DatasetError(
            f"cannot set aside valid_fraction={fraction} of {len(others)} training structures "
            "and keep at least one for training; give a valid_file or more data"
        )
    order = np.random.default_rng(seed).permutation(len(others))
    valid = sorted(order[:num_valid].tolist())
    train = sorted(order[num_valid:].tolist())
    return [others[k] for k in train], [others[k] for k in valid]


def check_elements(structures: list[LabelledStructure], known: list[int], what: str) -> None:
    """Every element of ``structures`` must be one the model is trained on."""
    known_set = set(known)
    for structure in structures:
        unknown = sorted({int(z) for z in structure.numbers} - known_set)
        if unknown:
            raise DatasetError(
                f"{structure.source}: {what} structure has element(s) {_symbols(unknown)} that the "
                f"training data do not contain; the model knows {_symbols(known)}"
            )


def rms_forces(structures: list[LabelledStructure]) -> float:
    """Root mean square of the force components of the structures that have forces."""
    squares = [np.square(s.forces).sum() for s in structures if s.forces is not None]
    count = sum(3 * s.num_atoms for s in structures if s.forces is not None)
    return float(np.sqrt(sum(squares) / count)) if count else 0.0


def mean_interaction_energy(structures: list[LabelledStructure], e0s: dict[int, float]) -> float:
    """Mean over structures of (E - sum_i E0(z_i)) / N: ScaleShiftMACE's shift."""
    values = [
        (s.energy - sum(e0s[int(z)] for z in s.numbers)) / s.num_atoms
        for s in structures
        if s.energy is not None
    ]
    return float(np.mean(values)) if values else 0.0


def prepare_data(config: TrainConfig, dtype: torch.dtype) -> PreparedData:
    """Read, split and check the data of ``config`` and compute the model's statistics."""
    notes = []
    train_path = config.train_file
    if train_path is None:
        train_path = str(default_dataset_path())
        notes.append(f"train_file not given: using the shipped default data set {train_path}")
    train_all = read_split(train_path, config, "train")
    isolated, others = split_isolated_atoms(train_all)
    if not others:
        raise DatasetError(
            f"{train_path}: no training structures besides {len(isolated)} isolated-atom frame(s)"
        )
    e0s, sentence = e0s_from_config(config, train_all, others)
    notes.append(sentence)
    if isolated:
        notes.append(f"{len(isolated)} isolated-atom frame(s) are used for E0s only, not trained on.")

    if config.valid_file is not None:
        train = others
        valid = split_isolated_atoms(read_split(config.valid_file, config, "validation"))[1]
        if not valid:
            raise DatasetError(f"{config.valid_file}: no validation structures besides isolated atoms")
        notes.append(f"validation: {len(valid)} structures from {config.valid_file}")
    else:
        train, valid = split_train_valid(others, config.valid_fraction, config.seed)
        notes.append(
            f"validation: {len(valid)} of {len(others)} training structures "
            f"(valid_fraction={config.valid_fraction}, seed {config.seed})"
        )
    test: list[LabelledStructure] = []
    if config.test_file is not None:
        test = split_isolated_atoms(read_split(config.test_file, config, "test"))[1]
        if not test:
            raise DatasetError(f"{config.test_file}: no test structures besides isolated atoms")

    atomic_numbers = sorted({int(z) for s in train_all for z in s.numbers})
    missing = [z for z in atomic_numbers if z not in e0s]
    if missing:
        raise DatasetError(f"e0s: no E0 for {_symbols(missing)} (E0s given for {_symbols(e0s)})")
    e0s = {z: e0s[z] for z in atomic_numbers}
    check_elements(valid, atomic_numbers, "validation")
    check_elements(test, atomic_numbers, "test")

    train_graphs = GraphDataset(train, config.r_max, dtype)
    valid_graphs = GraphDataset(valid, config.r_max, dtype)
    test_graphs = GraphDataset(test, config.r_max, dtype) if test else None

    avg_num_neighbors = train_graphs.average_num_neighbours()
    scale, shift = 1.0, 0.0
    if config.scaling == "rms_forces":
        scale = rms_forces(train)
        if scale == 0:
            scale = 1.0
            notes.append("scale: the training forces are all zero, so scale = 1")
        else:
            notes.append(f"scale = RMS training force component = {scale:.4f} eV/Å (rms_forces scaling)")
    if config.shift == "mean":
        shift = mean_interaction_energy(train, e0s)
        notes.append(f"shift = mean training energy per atom above the E0s = {shift:.4f} eV/atom")
    notes.append(f"avg_num_neighbors = {avg_num_neighbors:.3f} (training graphs, r_max = {config.r_max} Å)")
    has_stress = any(s.stress is not None and s.label_weights["stress"] > 0 for s in train + valid + test)
    if config.stress_weight > 0 and not any(s.stress is not None for s in train):
        raise DatasetError(
            f"stress_weight = {config.stress_weight} but no training structure has a stress "
            f"(key {config.stress_key or 'stress or REF_stress'}); set stress_weight=0 or add stresses"
        )
    if config.stress_weight == 0 and has_stress:
        notes.append("the data have stresses but stress_weight = 0: stress is reported, not fitted")
    return PreparedData(
        train=train,
        valid=valid,
        test=test,
        atomic_numbers=atomic_numbers,
        e0s=e0s,
        train_graphs=train_graphs,
        valid_graphs=valid_graphs,
        test_graphs=test_graphs,
        avg_num_neighbors=avg_num_neighbors,
        scale=scale,
        shift=shift,
        has_stress=has_stress,
        notes=notes,
    )


def _symbols(numbers) -> str:
    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in sorted(numbers))
