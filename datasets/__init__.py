"""Data: readers (extxyz and anything ASE reads), E0s, graphs and batching, named benchmark sets,
generated EMT data, and the small default data set shipped with the package."""

from pathlib import Path

from equitensor.datasets.atoms_to_graph import graph_from_atoms, graph_from_pairs, neighbour_list
from equitensor.datasets.batching import (
    GraphBatch,
    GraphDataset,
    Labels,
    MaxSizeBatchSampler,
    batch_labels,
    collate_graphs,
)
from equitensor.datasets.e0s import compute_e0s, fit_e0s, isolated_atom_energies, split_isolated_atoms
from equitensor.datasets.reading import (
    DatasetError,
    LabelledStructure,
    read_structures,
    structures_from_atoms,
)
from equitensor.datasets.store import StoredGraphDataset, write_store

DEFAULT_DATASET = Path(__file__).parent / "default" / "cuni_emt.xyz"


def default_dataset_path() -> Path:
    """The shipped default data set: EMT-labelled MD of 32-atom CuNi fcc cells (see default/README.md).

    >>> path = default_dataset_path()
    >>> path.name, len(read_structures(path))
    ('cuni_emt.xyz', 302)
    """
    if not DEFAULT_DATASET.is_file():
        raise DatasetError(f"the default data set {DEFAULT_DATASET} is missing from this installation")
    return DEFAULT_DATASET


__all__ = [
    "DatasetError",
    "GraphBatch",
    "GraphDataset",
    "Labels",
    "LabelledStructure",
    "MaxSizeBatchSampler",
    "StoredGraphDataset",
    "batch_labels",
    "collate_graphs",
    "compute_e0s",
    "default_dataset_path",
    "fit_e0s",
    "graph_from_atoms",
    "graph_from_pairs",
    "isolated_atom_energies",
    "neighbour_list",
    "read_structures",
    "split_isolated_atoms",
    "structures_from_atoms",
    "write_store",
]
