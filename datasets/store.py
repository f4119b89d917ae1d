"""An HDF5 store of labelled atomic graphs: written frame by frame, read lazily, item by item.

:func:`write_store` streams the frames of an extxyz (or any ASE-readable) file through the reader's
checks (:func:`~equitensor.datasets.reading.iter_structures`), builds each graph once with
:func:`~equitensor.datasets.atoms_to_graph.graph_from_atoms`, and appends ``chunk`` structures at a time to
resizable HDF5 datasets, so memory stays bounded however large the input. The normalisation
statistics are accumulated on the way (the E0 least squares through its normal equations) and
finished by one pass over the stored energies. :class:`StoredGraphDataset` serves the structures
exactly as :class:`~equitensor.datasets.batching.GraphDataset` does, opening the file once per
process so that DataLoader workers can share it.

Layout (S structures, N atoms, E edges; each structure row points into the atom and edge tables)::

    /structures  atom_start, num_atoms, edge_start, num_edges, cell, pbc, energy, stress, virials,
                 weight, {energy,forces,stress,virials}_weight, has_{label}, isolated_atom,
                 config_type                                               (S rows)
    /atoms       positions, numbers, forces                                (N rows)
    /edges       index (sender, receiver, within the structure), unit_shifts   (E rows)
    attributes   format, format_version, r_max, statistics (JSON), provenance (JSON)

Absent labels are stored as zeros with weight 0 and ``has_{label}`` false, as GraphDataset holds them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import ase
import h5py
import numpy as np
import torch
import vesin
from ase.data import chemical_symbols
from torch.utils.data import Dataset
from tqdm import tqdm

from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.datasets.batching import GraphBatch, Labels, labels_of
from equitensor.datasets.e0s import (
    e0s_covering,
    is_isolated_atom,
    isolated_atom_energies,
    least_squares_sentence,
)
from equitensor.datasets.reading import LABELS, DatasetError, LabelledStructure, iter_structures
from equitensor.errors import InputError
from equitensor.graph import AtomicGraph

FORMAT = "equitensor-graph-store"
FORMAT_VERSION = 1
NUM_ELEMENTS = len(chemical_symbols)  # atomic numbers 0..118

# Table name -> column -> (shape of one row, stored dtype). Rows of "structures" are per structure.
COLUMNS: dict[str, dict[str, tuple[tuple[int, ...], object]]] = {
    "structures": {
        "atom_start": ((), np.int64),
        "num_atoms": ((), np.int64),
        "edge_start": ((), np.int64),
        "num_edges": ((), np.int64),
        "cell": ((3, 3), np.float64),
        "pbc": ((3,), np.bool_),
        "energy": ((), np.float64),
        "stress": ((3, 3), np.float64),
        "virials": ((3, 3), np.float64),
        "weight": ((), np.float64),
        **{f"{label}_weight": ((), np.float64) for label in LABELS},
        **{f"has_{label}": ((), np.bool_) for label in LABELS},
        "isolated_atom": ((), np.bool_),
        "config_type": ((), h5py.string_dtype()),
    },
    "atoms": {
        "positions": ((3,), np.float64),
        "numbers": ((), np.int16),
        "forces": ((3,), np.float64),
    },
    "edges": {
        "index": ((2,), np.int32),
        "unit_shifts": ((3,), np.int32),
    },
}
HDF5_CHUNK_ROWS = {"structures": 1024, "atoms": 2048, "edges": 8192}


@dataclass(frozen=True)
class StoreStatistics:
    """Numbers a model is built with, computed over the whole store.

    Counts cover every structure. E0s follow :func:`~equitensor.datasets.e0s.compute_e0s` (isolated
    atoms if any, else least squares); ``e0s`` is None when they cannot be determined and
    ``e0s_method`` then says why. The mean interaction energy per atom ((E - sum of E0s) / atoms),
    the RMS force component and the average number of neighbours (edges per atom) are over the
    structures that are not isolated atoms (the ones a model trains on); None where undefined.
    """

    num_structures: int
    num_isolated_atoms: int
    num_atoms: int
    num_edges: int
    elements: list[int]
    label_counts: dict[str, int]
    e0s: dict[int, float] | None
    e0s_method: str
    mean_interaction_energy_per_atom: float | None
    rms_forces: float | None
    avg_num_neighbours: float | None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> StoreStatistics:
        values = json.loads(text)
        if values["e0s"] is not None:
            values["e0s"] = {int(z): float(e) for z, e in values["e0s"].items()}
        return cls(**values)


class _StatisticsAccumulator:
    """Running sums of everything :class:`StoreStatistics` needs, one structure at a time.

    The least-squares E0s need sum_s c_s c_s^T and sum_s c_s E_s (c_s: composition of structure s);
    isolated atoms keep only the first frame of each element (later ones are checked against it).
    """

    def __init__(self) -> None:
        self.num_structures = self.num_isolated = self.num_atoms = self.num_edges = 0
        self.elements: set[int] = set()
        self.label_counts = dict.fromkeys(LABELS, 0)
        self.first_isolated: dict[int, LabelledStructure] = {}
        self.e0_error: str | None = None
        self.needed: set[int] = set()  # elements of the non-isolated structures
        self.fit_elements: set[int] = set()
        self.num_fitted = 0
        self.gram = np.zeros((NUM_ELEMENTS, NUM_ELEMENTS))
        self.rhs = np.zeros(NUM_ELEMENTS)
        self.force_squares = 0.0
        self.force_components = 0
        self.trained_atoms = self.trained_edges = 0

    def add(self, structure: LabelledStructure, num_edges: int) -> None:
        self.num_structures += 1
        self.num_atoms += structure.num_atoms
        self.num_edges += num_edges
        numbers = [int(z) for z in structure.numbers]
        self.elements.update(numbers)
        for label in LABELS:
            self.label_counts[label] += getattr(structure, label) is not None
        if is_isolated_atom(structure):
            self._add_isolated(structure)
            return
        self.needed.update(numbers)
        self.trained_atoms += structure.num_atoms
        self.trained_edges += num_edges
        if structure.forces is not None:
            self.force_squares += float(np.square(structure.forces).sum())
            self.force_components += structure.forces.size
        if structure.energy is not None:
            composition = np.bincount(structure.numbers, minlength=NUM_ELEMENTS).astype(np.float64)
            present = np.flatnonzero(composition)
            self.gram[np.ix_(present, present)] += np.outer(composition[present], composition[present])
            self.rhs[present] += composition[present] * structure.energy
            self.fit_elements.update(numbers)
            self.num_fitted += 1

    def _add_isolated(self, structure: LabelledStructure) -> None:
        self.num_isolated += 1
        z = int(structure.numbers[0])
        earlier = [self.first_isolated[z]] if z in self.first_isolated else []
        try:  # the reader's check: an energy, and the same one as earlier frames of this element
            isolated_atom_energies([*earlier, structure])
        except DatasetError as error:
            self.e0_error = self.e0_error or str(error)
        self.first_isolated.setdefault(z, structure)

    def e0s(self) -> tuple[dict[int, float] | None, str, np.ndarray | None, int]:
        """(E0s, sentence, least-squares solution over all Z or None, its rank)."""
        if self.num_isolated:
            if self.e0_error is not None:
                return None, f"E0s not determined: {self.e0_error}", None, 0
            e0s = {z: float(s.energy) for z, s in self.first_isolated.items()}
            try:
                return (*e0s_covering(e0s, self.num_isolated, self.needed), None, 0)
            except DatasetError as error:
                return None, f"E0s not determined: {error}", None, 0
        if not self.num_fitted:
            return None, "E0s not determined: no structure has an energy to fit them to", None, 0
        elements = sorted(self.fit_elements)
        # The count matrix is integer, so the Gram matrix is exact; its singular values are the
        # squares of the count matrix's, hence the cut 1e-12 (1e-6 on the counts) for the rank.
        solution, _, rank, _ = np.linalg.lstsq(
            self.gram[np.ix_(elements, elements)], self.rhs[elements], rcond=1e-12
        )
        full = np.zeros(NUM_ELEMENTS)
        full[elements] = solution
        return {z: float(full[z]) for z in elements}, "", full, int(rank)

    def finish(self, structures: h5py.Group, atoms: h5py.Group, block: int) -> StoreStatistics:
        """The statistics, with one pass over the stored energies for what needs the E0s first."""
        e0s, sentence, fitted, rank = self.e0s()
        e0_vector = np.zeros(NUM_ELEMENTS)
        if e0s is not None:
            e0_vector[list(e0s)] = list(e0s.values())
        interaction_sum = residual_squares = 0.0
        interaction_count = 0
        for start in range(0, self.num_structures, block):
            rows = slice(start, min(start + block, self.num_structures))
            used = structures["has_energy"][rows] & ~structures["isolated_atom"][rows]
            if not used.any():
                continue
            counts = _compositions(structures, atoms, rows)[used]
            energy = structures["energy"][rows][used]
            sizes = counts.sum(1)
            interaction_sum += float(((energy - counts @ e0_vector) / sizes).sum())
            interaction_count += int(used.sum())
            if fitted is not None:
                residual_squares += float((((energy - counts @ fitted) / sizes) ** 2).sum())
        if fitted is not None:
            rms = float(np.sqrt(residual_squares / self.num_fitted))
            sentence = least_squares_sentence(self.num_fitted, sorted(self.fit_elements), rms, rank)
        return StoreStatistics(
            num_structures=self.num_structures,
            num_isolated_atoms=self.num_isolated,
            num_atoms=self.num_atoms,
            num_edges=self.num_edges,
            elements=sorted(self.elements),
            label_counts=self.label_counts,
            e0s=e0s,
            e0s_method=sentence,
            mean_interaction_energy_per_atom=(
                interaction_sum / interaction_count if e0s is not None and interaction_count else None
            ),
            rms_forces=(
                float(np.sqrt(self.force_squares / self.force_components)) if self.force_components else None
            ),
            avg_num_neighbours=self.trained_edges / self.trained_atoms if self.trained_atoms else None,
        )


def _compositions(structures: h5py.Group, atoms: h5py.Group, rows: slice) -> np.ndarray:
    """(structures in ``rows``, NUM_ELEMENTS) atom counts per element, read from the atom table."""
    starts = structures["atom_start"][rows]
    sizes = structures["num_atoms"][rows]
    numbers = atoms["numbers"][starts[0] : starts[-1] + sizes[-1]].astype(np.int64)
    owner = np.repeat(np.arange(len(sizes)), sizes)
    counts = np.zeros((len(sizes), NUM_ELEMENTS))
    np.add.at(counts, (owner, numbers), 1.0)
    return counts


class _AppendableTables:
    """The store's resizable HDF5 datasets, appended to one block of structures at a time."""

    def __init__(self, file: h5py.File) -> None:
        self.file = file
        self.rows = dict.fromkeys(COLUMNS, 0)
        for table, columns in COLUMNS.items():
            group = file.create_group(table)
            for name, (shape, dtype) in columns.items():
                group.create_dataset(
                    name,
                    shape=(0, *shape),
                    maxshape=(None, *shape),
                    dtype=dtype,
                    chunks=(HDF5_CHUNK_ROWS[table], *shape),
                )

    def append(self, table: str, block: dict[str, np.ndarray]) -> None:
        start = self.rows[table]
        stop = start + len(next(iter(block.values())))
        for name, values in block.items():
            dataset = self.file[table][name]
            dataset.resize(stop, axis=0)
            dataset[start:stop] = values
        self.rows[table] = stop


class _StoreWriter:
    """Buffers at most ``chunk`` structures and writes them as one block."""

    def __init__(self, file: h5py.File, r_max: float, chunk: int) -> None:
        self.tables = _AppendableTables(file)
        self.r_max = r_max
        self.chunk = chunk
        self.buffer: list[tuple[LabelledStructure, GraphBatch]] = []

    def add(self, structure: LabelledStructure) -> int:
        """Buffer one structure (its graph built now); returns its number of edges."""
        item = GraphBatch(
            graph_from_atoms(structure.to_atoms(), self.r_max, torch.float64), labels_of(structure)
        )
        self.buffer.append((structure, item))
        if len(self.buffer) >= self.chunk:
            self.flush()
        return item.graph.num_edges

    def flush(self) -> None:
        if not self.buffer:
            return
        structures = [s for s, _ in self.buffer]
        graphs = [item.graph for _, item in self.buffer]
        labels = [item.labels for _, item in self.buffer]
        num_atoms = np.array([g.num_nodes for g in graphs], dtype=np.int64)
        num_edges = np.array([g.num_edges for g in graphs], dtype=np.int64)
        atom_offset, edge_offset = self.tables.rows["atoms"], self.tables.rows["edges"]
        per_structure = {
            "atom_start": atom_offset + np.cumsum(num_atoms) - num_atoms,
            "num_atoms": num_atoms,
            "edge_start": edge_offset + np.cumsum(num_edges) - num_edges,
            "num_edges": num_edges,
            "cell": np.stack([s.cell for s in structures]),
            "pbc": np.stack([s.pbc for s in structures]),
            "isolated_atom": np.array([is_isolated_atom(s) for s in structures]),
            "config_type": np.array([s.config_type for s in structures], dtype=object),
        }
        for name in ("energy", "stress", "virials", "weight", *(f"{label}_weight" for label in LABELS)):
            per_structure[name] = torch.cat([getattr(item, name) for item in labels]).numpy()
        for label in LABELS:
            per_structure[f"has_{label}"] = np.array([getattr(s, label) is not None for s in structures])
        self.tables.append("structures", per_structure)
        self.tables.append(
            "atoms",
            {
                "positions": torch.cat([g.positions for g in graphs]).numpy(),
                "numbers": torch.cat([g.numbers for g in graphs]).numpy(),
                "forces": torch.cat([item.forces for item in labels]).numpy(),
            },
        )
        self.tables.append(
            "edges",
            {
                "index": torch.cat([g.edge_index.T for g in graphs]).numpy(),
                "unit_shifts": torch.cat([g.unit_shifts for g in graphs]).numpy(),
            },
        )
        self.buffer = []


def write_store(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    r_max: float,
    *,
    format: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    virials_key: str | None = None,
    require: Sequence[str] = ("energy", "forces"),
    config_type_weights: dict[str, float] | None = None,
    min_distance: float = 1e-3,
    chunk: int = 256,
    progress: bool = False,
) -> StoreStatistics:
    """Read ``input_path`` frame by frame, check it as the reader does, and write the HDF5 store
    ``output_path`` with graphs for cutoff ``r_max`` (Å) and the statistics of the whole set.

    At most ``chunk`` structures are held in memory. The store is written to a temporary file next
    to ``output_path`` and renamed when complete, so a failure leaves no half-written store.

    Example: the first four frames of the shipped data set (two of them isolated atoms).

    >>> import os, tempfile
    >>> from ase.io import read, write
    >>> from equitensor.datasets import default_dataset_path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write(os.path.join(folder, "data.xyz"), read(default_dataset_path(), index=":4"))
    ...     statistics = write_store(os.path.join(folder, "data.xyz"), os.path.join(folder, "data.h5"), 3.0)
    >>> statistics.num_structures, statistics.num_isolated_atoms, statistics.e0s
    (4, 2, {29: 3.51, 28: 4.44})
    """
    if not r_max > 0:
        raise InputError(f"r_max must be positive, got {r_max}")
    if chunk < 1:
        raise InputError(f"chunk must be at least 1, got {chunk}")
    keys = {"energy": energy_key, "forces": forces_key, "stress": stress_key, "virials": virials_key}
    frames = iter_structures(
        input_path,
        format=format,
        **{f"{label}_key": key for label, key in keys.items()},
        require=require,
        config_type_weights=config_type_weights,
        min_distance=min_distance,
    )
    output_path = os.fspath(output_path)
    partial = output_path + ".partial"
    try:
        with h5py.File(partial, "w") as file:
            writer = _StoreWriter(file, float(r_max), chunk)
            statistics = _StatisticsAccumulator()
            for structure in tqdm(frames, disable=not progress, unit=" frames", desc="preprocess"):
                statistics.add(structure, writer.add(structure))
            writer.flush()
            result = statistics.finish(file["structures"], file["atoms"], block=max(chunk, 4096))
            file.attrs["format"] = FORMAT
            file.attrs["format_version"] = FORMAT_VERSION
            file.attrs["r_max"] = float(r_max)
            file.attrs["statistics"] = result.to_json()
            file.attrs["provenance"] = json.dumps(
                {
                    "input": os.path.abspath(os.fspath(input_path)),
                    "input_sha256": file_sha256(input_path),
                    "input_format": format,
                    "r_max": float(r_max),
                    "keys": keys,  # None: ASE's name or MACE's REF_ name, whichever the file holds
                    "require": list(require),
                    "config_type_weights": config_type_weights,
                    "min_distance": min_distance,
                    "versions": _versions(),
                }
            )
        os.replace(partial, output_path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return result


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from equitensor import __version__

    return {
        "equitensor": __version__,
        "ase": ase.__version__,
        "vesin": getattr(vesin, "__version__", "unknown"),
        "h5py": h5py.__version__,
        "numpy": np.__version__,
    }


class StoredGraphDataset(Dataset):
    """The structures of an HDF5 store as one-structure :class:`GraphBatch` items, read on demand.

    Same interface as :class:`~equitensor.datasets.batching.GraphDataset` (``len``, items,
    ``num_atoms``, ``num_edges``, ``average_num_neighbours()``, ``r_max``, ``dtype``) and the same
    items, plus ``statistics`` (:class:`StoreStatistics`), ``provenance`` (dict),
    ``is_isolated_atom`` (bool per item) and :meth:`subset`. Give ``r_max`` to check that the store
    was built for that cutoff. The file is opened lazily, once per process (DataLoader workers).

    Example: a store of the first four frames of the shipped data set, read back.

    >>> import os, tempfile
    >>> from ase.io import read, write
    >>> from equitensor.datasets import default_dataset_path, write_store
    >>> folder = tempfile.TemporaryDirectory()
    >>> xyz, store = os.path.join(folder.name, "data.xyz"), os.path.join(folder.name, "data.h5")
    >>> write(xyz, read(default_dataset_path(), index=":4"))
    >>> _ = write_store(xyz, store, r_max=3.0)
    >>> dataset = StoredGraphDataset(store, r_max=3.0)
    >>> len(dataset), dataset.num_atoms.tolist(), dataset.is_isolated_atom.tolist()
    (4, [1, 1, 32, 32], [True, True, False, False])
    >>> dataset[2].graph.num_edges, dataset[2].labels.forces.shape, len(dataset.subset([2, 3]))
    (384, torch.Size([32, 3]), 2)
    >>> dataset.close(); folder.cleanup()
    """

    def __init__(
        self,
        path: str | os.PathLike,
        r_max: float | None = None,
        dtype: torch.dtype = torch.float64,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.dtype = dtype
        if not os.path.isfile(self.path):
            raise DatasetError(f"{self.path}: no such file")
        try:
            file = h5py.File(self.path, "r")
        except OSError as error:
            raise DatasetError(f"{self.path}: not an HDF5 file ({error})") from error
        with file:
            if file.attrs.get("format") != FORMAT:
                raise DatasetError(f"{self.path}: not an equitensor graph store (no format={FORMAT!r})")
            version = int(file.attrs["format_version"])
            if version != FORMAT_VERSION:
                raise DatasetError(
                    f"{self.path}: store format version {version}; this equitensor reads {FORMAT_VERSION}"
                )
            self.r_max = float(file.attrs["r_max"])
            self.statistics = StoreStatistics.from_json(file.attrs["statistics"])
            self.provenance = json.loads(file.attrs["provenance"])
            structures = file["structures"]
            rows = np.arange(len(structures["num_atoms"])) if indices is None else np.asarray(indices)
            if rows.ndim != 1 or (
                len(rows) and (rows.min() < 0 or rows.max() >= self.statistics.num_structures)
            ):
                raise IndexError(f"indices must be 1-D within [0, {self.statistics.num_structures})")
            self._rows = rows.astype(np.int64)
            self._atom_start = structures["atom_start"][:][self._rows]
            self._edge_start = structures["edge_start"][:][self._rows]
            self.num_atoms = structures["num_atoms"][:][self._rows]
            self.num_edges = structures["num_edges"][:][self._rows]
            self.is_isolated_atom = structures["isolated_atom"][:][self._rows]
        if r_max is not None and float(r_max) != self.r_max:
            raise DatasetError(
                f"{self.path}: the store's graphs are built for r_max = {self.r_max} Å, "
                f"not {float(r_max)} Å; preprocess the data again with that cutoff"
            )
        if not len(self._rows):
            raise ValueError("StoredGraphDataset needs at least one structure")
        self._file: h5py.File | None = None
        self._file_pid: int | None = None
        self._datasets: dict[str, h5py.Dataset] | None = None

    def subset(self, indices: Sequence[int] | np.ndarray) -> StoredGraphDataset:
        """A dataset of the items ``indices`` of this one (e.g. a train/validation split)."""
        return StoredGraphDataset(self.path, self.r_max, self.dtype, self._rows[np.asarray(indices)])

    def __len__(self) -> int:
        return len(self._rows)

    def average_num_neighbours(self) -> float:
        """Mean number of edges per atom over this dataset's items (as GraphDataset's)."""
        return float(self.num_edges.sum() / self.num_atoms.sum())

    def _tables(self) -> dict[str, h5py.Dataset]:
        """This process's handles on the store's datasets (a forked worker opens its own file);
        looking a dataset up by name costs more than reading a row, so the handles are kept."""
        if self._file is None or self._file_pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._file_pid = os.getpid()
            self._datasets = {
                name: self._file[table][name] for table, columns in COLUMNS.items() for name in columns
            }
        return self._datasets

    def close(self) -> None:
        if self._file is not None and self._file_pid == os.getpid():
            self._file.close()
        self._file = self._file_pid = self._datasets = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = state["_file_pid"] = state["_datasets"] = None  # h5py handles stay in their process
        return state

    def __getitem__(self, index: int) -> GraphBatch:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} structures")
        index = int(index) % len(self)
        table, row, dtype = self._tables(), int(self._rows[index]), self.dtype
        start, size = int(self._atom_start[index]), int(self.num_atoms[index])
        atom_rows = slice(start, start + size)
        start, count = int(self._edge_start[index]), int(self.num_edges[index])
        edge_rows = slice(start, start + count)

        def floats(name: str, rows, shape) -> torch.Tensor:
            values = np.asarray(table[name][rows], dtype=np.float64)
            return torch.from_numpy(values).to(dtype).reshape(shape)

        pbc = torch.from_numpy(table["pbc"][row]).reshape(1, 3)
        cell = floats("cell", row, (1, 3, 3))
        graph = AtomicGraph(
            positions=floats("positions", atom_rows, (-1, 3)),
            numbers=torch.from_numpy(table["numbers"][atom_rows].astype(np.int64)),
            edge_index=torch.from_numpy(table["index"][edge_rows].T.astype(np.int64)).reshape(2, -1),
            unit_shifts=floats("unit_shifts", edge_rows, (-1, 3)),
            cell=cell if pbc.any() else torch.zeros_like(cell),  # graph_from_atoms' convention
            pbc=pbc,
            batch=torch.zeros(size, dtype=torch.long),
            num_graphs=1,
        )
        labels = Labels(
            energy=floats("energy", row, (1,)),
            forces=floats("forces", atom_rows, (-1, 3)),
            stress=floats("stress", row, (1, 3, 3)),
            virials=floats("virials", row, (1, 3, 3)),
            weight=floats("weight", row, (1,)),
            energy_weight=floats("energy_weight", row, (1,)),
            forces_weight=floats("forces_weight", row, (1,)),
            stress_weight=floats("stress_weight", row, (1,)),
            virials_weight=floats("virials_weight", row, (1,)),
            config_type=(table["config_type"].asstr()[row],),
        )
        return GraphBatch(graph, labels)


def describe_store(dataset: StoredGraphDataset) -> str:
    """A readable summary of a store's statistics and provenance (``equitensor data info``)."""
    s, p = dataset.statistics, dataset.provenance

    def symbols(numbers) -> str:
        return ", ".join(chemical_symbols[z] for z in numbers)

    def number(value: float | None, unit: str) -> str:
        return "undefined" if value is None else f"{value:.6g} {unit}"

    e0s = "none" if s.e0s is None else ", ".join(f"{chemical_symbols[z]} {e:.6f}" for z, e in s.e0s.items())
    lines = [
        ("store", dataset.path),
        (
            "structures",
            f"{s.num_structures} ({s.num_isolated_atoms} isolated-atom frames), "
            f"{s.num_atoms} atoms, {s.num_edges} edges",
        ),
        ("elements", symbols(s.elements)),
        ("labels", ", ".join(f"{label} {count}" for label, count in s.label_counts.items())),
        ("r_max", f"{dataset.r_max} Å"),
        ("E0s (eV)", e0s),
        ("", s.e0s_method),
        ("mean interaction energy", number(s.mean_interaction_energy_per_atom, "eV/atom")),
        ("RMS force component", number(s.rms_forces, "eV/Å")),
        ("avg neighbours", number(s.avg_num_neighbours, "edges/atom")),
        ("input", p["input"]),
        ("input sha256", p["input_sha256"]),
        ("keys", ", ".join(f"{k}={v or 'auto'}" for k, v in p["keys"].items())),
        ("versions", ", ".join(f"{k} {v}" for k, v in p["versions"].items())),
    ]
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in lines)
