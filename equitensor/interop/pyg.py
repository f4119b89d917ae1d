"""torch-geometric (PyG) views of equitensor's graphs and data sets, so our models and data drop
into a PyG pipeline (``pip install torch-geometric``; imported only here).

Field names are PyG's usual ones where PyG has one: ``pos`` (N, 3), ``z`` (N,) atomic numbers,
``edge_index`` (2, E) (row 0 the sender j, row 1 the receiver i: PyG's ``source_to_target``
flow, and MACE's convention), ``batch`` (N,); then ``edge_cell_shift`` (E, 3) integer cell
translations of the sender image (nequip's name), ``cell`` (1, 3, 3) and ``pbc`` (1, 3) per
structure (so PyG's collation concatenates them to (B, 3, 3) and (B, 3)); labels ``energy`` (1,),
``forces`` (N, 3), ``stress`` and ``virials`` (1, 3, 3), with their per-label weights.

- :func:`to_pyg` / :func:`from_pyg`: one structure or a batch, both ways, losslessly;
- :class:`PyGDataset`: a ``torch_geometric.data.Dataset`` over an equitensor
  :class:`~equitensor.datasets.GraphDataset` (iterate it with PyG's ``DataLoader``);
- models take a PyG batch directly: ``model(batch)`` (:func:`equitensor.graph.as_atomic_graph`
  reads any object with these fields).

Example (needs torch-geometric)::

    >>> import torch
    >>> from ase.build import molecule
    >>> from equitensor.datasets.atoms_to_graph import graph_from_atoms
    >>> graph = graph_from_atoms(molecule("H2O"), 3.0, torch.float64)
    >>> data = to_pyg(graph)  # doctest: +SKIP
    >>> from_pyg(data).num_edges == graph.num_edges  # doctest: +SKIP
    True
"""

from __future__ import annotations

import torch

from equitensor.graph import AtomicGraph, as_atomic_graph

__all__ = ["LABEL_FIELDS", "PyGDataset", "from_pyg", "to_pyg"]

#: Label fields copied to and from a PyG object (per structure unless ``forces``).
LABEL_FIELDS = (
    "energy",
    "forces",
    "stress",
    "virials",
    "weight",
    "energy_weight",
    "forces_weight",
    "stress_weight",
    "virials_weight",
)


def to_pyg(graph: AtomicGraph, labels=None):
    """A ``torch_geometric.data.Data`` (one structure) or ``Batch`` (several) with ``graph``'s
    tensors under PyG's names, and ``labels`` (:class:`~equitensor.datasets.batching.Labels`)
    if given.

    Example (needs torch-geometric): two structures give a ``Batch``.

    >>> from ase.build import bulk, molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.graph import batch_graphs
    >>> water = graph_from_atoms(molecule("H2O"), 2.0)
    >>> data = to_pyg(water)  # doctest: +SKIP
    >>> data.pos.shape, data.z.tolist(), data.edge_index.shape  # doctest: +SKIP
    (torch.Size([3, 3]), [8, 1, 1], torch.Size([2, 6]))
    >>> to_pyg(batch_graphs([water, graph_from_atoms(bulk("Cu"), 3.0)])).num_graphs  # doctest: +SKIP
    2
    """
    from torch_geometric.data import Batch, Data

    if graph.num_graphs == 1:
        data = Data(
            pos=graph.positions,
            z=graph.numbers,
            edge_index=graph.edge_index,
            edge_cell_shift=graph.unit_shifts,
            cell=graph.cell,
            pbc=graph.pbc,
            num_nodes=graph.num_nodes,
        )
        if labels is not None:
            for name in LABEL_FIELDS:
                data[name] = getattr(labels, name)
        return data
    from equitensor.graph import split_graph

    parts = split_graph(graph)
    label_parts = [None] * len(parts) if labels is None else _split_labels(labels, graph)
    return Batch.from_data_list([to_pyg(part, lab) for part, lab in zip(parts, label_parts)])


def _split_labels(labels, graph: AtomicGraph) -> list:
    from dataclasses import replace

    counts = torch.bincount(graph.batch, minlength=graph.num_graphs).tolist()
    forces = labels.forces.split(counts)
    out = []
    for b in range(graph.num_graphs):
        per_structure = {name: getattr(labels, name)[b : b + 1] for name in LABEL_FIELDS if name != "forces"}
        out.append(
            replace(labels, forces=forces[b], config_type=labels.config_type[b : b + 1], **per_structure)
        )
    return out


def from_pyg(data) -> AtomicGraph:
    """The :class:`AtomicGraph` of a PyG ``Data`` or ``Batch`` written by :func:`to_pyg` (or any
    object with those fields).

    Example (needs torch-geometric): the round trip is lossless.

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> graph = graph_from_atoms(molecule("H2O"), 2.0)
    >>> back = from_pyg(to_pyg(graph))  # doctest: +SKIP
    >>> torch.equal(back.edge_index, graph.edge_index), back.num_graphs  # doctest: +SKIP
    (True, 1)
    >>> torch.equal(back.positions, graph.positions), torch.equal(back.cell, graph.cell)  # doctest: +SKIP
    (True, True)
    """
    return as_atomic_graph(data)


class PyGDataset:
    """A ``torch_geometric.data.Dataset`` view of an equitensor ``GraphDataset``: item ``i`` is
    :func:`to_pyg` of its graph and labels. Built lazily so this module imports without PyG.

    Example (needs torch-geometric): batches from PyG's ``DataLoader``, straight into a model.

    >>> from equitensor.datasets import GraphDataset, default_dataset_path, read_structures
    >>> graphs = GraphDataset(read_structures(default_dataset_path())[:4], 3.0)
    >>> dataset = PyGDataset(graphs)  # doctest: +SKIP
    >>> from torch_geometric.loader import DataLoader  # doctest: +SKIP
    >>> batch = next(iter(DataLoader(dataset, batch_size=4)))  # doctest: +SKIP
    >>> len(dataset), batch.num_graphs, batch.pos.shape, batch.energy.shape  # doctest: +SKIP
    (4, 4, torch.Size([66, 3]), torch.Size([4]))
    """

    def __new__(cls, dataset):
        from torch_geometric.data import Dataset

        class _View(Dataset):
            def __init__(self, items):
                super().__init__()
                self.items = items

            def len(self) -> int:
                return len(self.items)

            def get(self, index: int):
                item = self.items[index]
                return to_pyg(item.graph, item.labels)

        return _View(dataset)
