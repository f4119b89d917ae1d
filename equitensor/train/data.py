"""The data of a training run: reading the files, E0s, the train/validation split, element checks,
graph data sets and the statistics the model is built with (avg_num_neighbors, scale, shift).

A data file is an extxyz (or ASE-readable) file, read into memory and turned into graphs, or an
HDF5 graph store written by ``equitensor data preprocess`` (suffix .h5/.hdf5 or the HDF5
signature), whose graphs are read item by item and whose precomputed statistics replace a pass over
the data. Both are a :class:`DataFile`: every frame as a :class:`LabelledStructure` (for a store a
composition record: numbers, energy, weights and config_type, no positions or forces) plus a way to
make the graph data set of chosen frames, so the split, E0 and element logic is one code path.

Every decision is also written as a sentence in ``PreparedData.notes`` for the training log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import h5py
import numpy as np
import torch
from ase.data import atomic_numbers as symbol_to_z
from ase.data import chemical_symbols

from equitensor.datasets import (
    DatasetError,
    GraphDataset,
    LabelledStructure,
    StoredGraphDataset,
    compute_e0s,
    default_dataset_path,
    fit_e0s,
    read_structures,
)
from equitensor.datasets.e0s import is_isolated_atom
from equitensor.datasets.reading import LABELS
from equitensor.train.config import TrainConfig

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
STORE_SUFFIXES = (".h5", ".hdf5")
T = TypeVar("T")


@dataclass
class PreparedData:
    """Structures and graphs of each split, and the statistics derived from the training split.

    For a store the structures are composition records (see the module docstring).
    """

    train: list[LabelledStructure]
    valid: list[LabelledStructure]
    test: list[LabelledStructure]
    atomic_numbers: list[int]
    e0s: dict[int, float]
    train_graphs: GraphDataset | StoredGraphDataset
    valid_graphs: GraphDataset | StoredGraphDataset
    test_graphs: GraphDataset | StoredGraphDataset | None
    avg_num_neighbors: float
    scale: float
    shift: float
    has_stress: bool
    notes: list[str] = field(default_factory=list)
    train_path: str = ""
    train_frames: list[int] = field(default_factory=list)  # frame in train_path of each training graph

    def describe_train(self, indices: Sequence[int]) -> str:
        """'train.xyz frames 3, 17' for training-graph indices (how errors name structures)."""
        if not self.train_frames:
            return f"training structures {', '.join(map(str, sorted(indices)))}"
        frames = sorted(self.train_frames[i] for i in indices)
        return f"{self.train_path} frame(s) {', '.join(map(str, frames))}"


def read_split(path: str, config: TrainConfig, what: str) -> list[LabelledStructure]:
    """One data file with the configured keys; energy and forces required when they are fitted."""
    structures = read_structures(
        path,
        energy_key=config.energy_key,
        forces_key=config.forces_key,
        stress_key=config.stress_key,
        virials_key=config.virials_key,
        require=_required_labels(config),
    )
    if not structures:
        raise DatasetError(f"{what} file {path}: empty data set")
    return structures


@dataclass
class DataFile:
    """One data file: every frame as a structure (a composition record for a store), and the store
    when the file is one (None: an extxyz file held in memory)."""

    path: str
    structures: list[LabelledStructure]
    store: StoredGraphDataset | None = None

    def graphs(
        self, indices: Sequence[int], r_max: float, dtype: torch.dtype
    ) -> GraphDataset | StoredGraphDataset:
        """The graph data set of the frames ``indices`` (built now, or read lazily from the store)."""
        if self.store is not None:
            return self.store.subset(indices)
        return GraphDataset([self.structures[k] for k in indices], r_max, dtype)

    def non_isolated(self) -> list[int]:
        """Indices of the frames that are not isolated atoms (the ones a model is trained on)."""
        return [k for k, s in enumerate(self.structures) if not is_isolated_atom(s)]


def is_store(path: str) -> bool:
    """An HDF5 graph store: by its suffix (.h5, .hdf5) or, whatever its name, the HDF5 signature."""
    if path.lower().endswith(STORE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as file:
            return file.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False  # the reader names the problem


def open_data_file(path: str, config: TrainConfig, dtype: torch.dtype, what: str) -> DataFile:
    """A data file of either kind, checked against the config (labels, keys, and r_max for a store)."""
    if not is_store(path):
        return DataFile(path, read_split(path, config, what))
    store = StoredGraphDataset(path, r_max=config.r_max, dtype=dtype)
    statistics = store.statistics
    for label in _required_labels(config):
        if statistics.label_counts[label] != statistics.num_structures:
            raise DatasetError(
                f"{what} store {path}: {label}_weight > 0 but only {statistics.label_counts[label]} of "
                f"{statistics.num_structures} structures have {label}"
            )
    for label in LABELS:
        asked, stored = getattr(config, f"{label}_key"), store.provenance["keys"][label]
        if asked is not None and asked != stored:
            raise DatasetError(
                f"{what} store {path} was preprocessed with {label}_key={stored!r}, the config asks "
                f"for {asked!r}; preprocess again with that key or remove {label}_key from the config"
            )
    return DataFile(path, composition_records(path), store)


def composition_records(path: str) -> list[LabelledStructure]:
    """Every frame of a store as a structure without positions or forces (zeros stand in): what
    E0s, the shift, element checks and the composition baseline need, read column by column."""
    with h5py.File(path, "r") as file:
        rows = {name: file["structures"][name][:] for name in file["structures"]}
        numbers = file["atoms"]["numbers"][:].astype(np.int64)
    config_types = [c.decode() if isinstance(c, bytes) else str(c) for c in rows["config_type"]]
    records = []
    for k, (start, size) in enumerate(zip(rows["atom_start"], rows["num_atoms"])):
        present = {label: bool(rows[f"has_{label}"][k]) for label in LABELS}
        records.append(
            LabelledStructure(
                positions=np.broadcast_to(np.zeros(3), (size, 3)),
                numbers=numbers[start : start + size],
                cell=rows["cell"][k],
                pbc=rows["pbc"][k],
                energy=float(rows["energy"][k]) if present["energy"] else None,
                stress=rows["stress"][k] if present["stress"] else None,
                virials=rows["virials"][k] if present["virials"] else None,
                weight=float(rows["weight"][k]),
                label_weights={label: float(rows[f"{label}_weight"][k]) for label in LABELS},
                config_type=config_types[k],
                source=f"{path}: structure {k}",
            )
        )
    return records


def _required_labels(config: TrainConfig) -> list[str]:
    return [label for label in ("energy", "forces") if getattr(config, f"{label}_weight") > 0]


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


def training_e0s(
    config: TrainConfig, train_file: DataFile, others: list[LabelledStructure]
) -> tuple[dict[int, float], str, bool]:
    """(E0s, sentence, whether they are a store's precomputed ones): with ``e0s: auto`` a store's
    E0s are taken as preprocessing determined them; otherwise as :func:`e0s_from_config` says."""
    if train_file.store is None or config.e0s != "auto":
        return (*e0s_from_config(config, train_file.structures, others), False)
    statistics = train_file.store.statistics
    if statistics.e0s is None:
        raise DatasetError(f"{train_file.path}: {statistics.e0s_method}")
    return statistics.e0s, f"{statistics.e0s_method.rstrip('.')} (precomputed in the store).", True


def split_train_valid(others: list[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """A random (seeded) fraction of the training structures (or their indices) set aside for
    validation."""
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
    train_file = open_data_file(train_path, config, dtype, "train")
    if train_file.store is not None:
        notes.append(f"train_file {train_path} is an HDF5 graph store: graphs are read from it item by item")
    train_all = train_file.structures
    others = train_file.non_isolated()
    num_isolated = len(train_all) - len(others)
    if not others:
        raise DatasetError(
            f"{train_path}: no training structures besides {num_isolated} isolated-atom frame(s)"
        )
    e0s, sentence, from_store = training_e0s(config, train_file, [train_all[k] for k in others])
    notes.append(sentence)
    if num_isolated:
        notes.append(f"{num_isolated} isolated-atom frame(s) are used for E0s only, not trained on.")

    if config.valid_file is not None:
        train_rows = others
        valid_file = open_data_file(config.valid_file, config, dtype, "validation")
        valid_rows = valid_file.non_isolated()
        if not valid_rows:
            raise DatasetError(f"{config.valid_file}: no validation structures besides isolated atoms")
        notes.append(f"validation: {len(valid_rows)} structures from {config.valid_file}")
    else:
        valid_file = train_file
        train_rows, valid_rows = split_train_valid(others, config.valid_fraction, config.seed)
        notes.append(
            f"validation: {len(valid_rows)} of {len(others)} training structures "
            f"(valid_fraction={config.valid_fraction}, seed {config.seed})"
        )
    test_file, test_rows = None, []
    if config.test_file is not None:
        test_file = open_data_file(config.test_file, config, dtype, "test")
        test_rows = test_file.non_isolated()
        if not test_rows:
            raise DatasetError(f"{config.test_file}: no test structures besides isolated atoms")
    train = [train_all[k] for k in train_rows]
    valid = [valid_file.structures[k] for k in valid_rows]
    test = [test_file.structures[k] for k in test_rows] if test_file is not None else []

    atomic_numbers = sorted({int(z) for s in train_all for z in s.numbers})
    missing = [z for z in atomic_numbers if z not in e0s]
    if missing:
        raise DatasetError(f"e0s: no E0 for {_symbols(missing)} (E0s given for {_symbols(e0s)})")
    e0s = {z: e0s[z] for z in atomic_numbers}
    check_elements(valid, atomic_numbers, "validation")
    check_elements(test, atomic_numbers, "test")

    train_graphs = train_file.graphs(train_rows, config.r_max, dtype)
    valid_graphs = valid_file.graphs(valid_rows, config.r_max, dtype)
    test_graphs = test_file.graphs(test_rows, config.r_max, dtype) if test_file is not None else None

    # The store's statistics cover all its non-isolated frames: exactly the training split unless
    # the validation frames are taken from the same store.
    store_statistics = train_file.store.statistics if train_file.store is not None else None
    whole_store = (
        ""
        if len(train_rows) == len(others)
        else (f", over the whole store including its {len(valid_rows)} validation structures")
    )
    avg_num_neighbors = train_graphs.average_num_neighbours()
    scale, shift = 1.0, 0.0
    if config.scaling == "rms_forces":
        if store_statistics is not None:
            scale = store_statistics.rms_forces or 0.0
            origin = f"precomputed in the store{whole_store}"
        else:
            scale, origin = rms_forces(train), "training split"
        if scale == 0:
            scale = 1.0
            notes.append("scale: the training forces are all zero, so scale = 1")
        else:
            notes.append(
                f"scale = RMS training force component = {scale:.4f} eV/Å (rms_forces scaling, {origin})"
            )
    if config.shift == "mean":
        if from_store and store_statistics.mean_interaction_energy_per_atom is not None:
            shift = store_statistics.mean_interaction_energy_per_atom
            origin = f"precomputed in the store{whole_store}"
        else:
            shift, origin = mean_interaction_energy(train, e0s), "training split"
        notes.append(f"shift = mean training energy per atom above the E0s = {shift:.4f} eV/atom ({origin})")
    notes.append(f"avg_num_neighbors = {avg_num_neighbors:.3f} (training graphs, r_max = {config.r_max} Å)")
    # stress and virials: both are the strain derivative, computed when either is present
    has_stress = False
    for label, what in (("stress", "a stress"), ("virials", "virials")):
        weight = getattr(config, f"{label}_weight")
        present = any(
            getattr(s, label) is not None and s.label_weights[label] > 0 for s in train + valid + test
        )
        if weight > 0 and not any(getattr(s, label) is not None for s in train):
            key = getattr(config, f"{label}_key") or f"{label} or REF_{label}"
            raise DatasetError(
                f"{label}_weight = {weight} but no training structure has {what} (key {key}); "
                f"set {label}_weight=0 or add them"
            )
        if weight == 0 and present:
            notes.append(f"the data have {label} but {label}_weight = 0: reported, not fitted")
        has_stress = has_stress or present
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
        train_path=str(train_path),
        train_frames=[int(k) for k in train_rows],
    )


def _symbols(numbers) -> str:
    return ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in sorted(numbers))
