"""A torch Dataset of atomic graphs with labels, their collate function, and a batch sampler that
packs structures up to a number of structures, atoms and/or edges (predictable memory).

Graphs are built once, when the dataset is made, and kept in memory. Absent labels are stored as
zeros with weight 0, so a loss can always multiply by the weight (MACE's convention).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.datasets.reading import LABELS, LabelledStructure
from equitensor.graph import AtomicGraph, batch_graphs


@dataclass(frozen=True)
class Labels:
    """Reference labels of B structures with N atoms in total.

    energy (B,) eV; forces (N, 3) eV/Å; stress and virials (B, 3, 3) (ASE sign);
    weight (B,) the structure weight; {energy,forces,stress,virials}_weight (B,) per-label weights,
    0 where the label is absent. config_type: one string per structure.

    Example: the labels of one frame of the shipped data set (it has no virials: weight 0).

    >>> from equitensor.datasets import GraphDataset, default_dataset_path, read_structures
    >>> labels = GraphDataset(read_structures(default_dataset_path())[2:3], 3.0)[0].labels
    >>> labels.energy.shape, labels.forces.shape, labels.stress.shape
    (torch.Size([1]), torch.Size([32, 3]), torch.Size([1, 3, 3]))
    >>> labels.stress_weight.tolist(), labels.virials_weight.tolist(), labels.config_type
    ([1.0], [0.0], ('MD_300K',))
    """

    energy: torch.Tensor
    forces: torch.Tensor
    stress: torch.Tensor
    virials: torch.Tensor
    weight: torch.Tensor
    energy_weight: torch.Tensor
    forces_weight: torch.Tensor
    stress_weight: torch.Tensor
    virials_weight: torch.Tensor
    config_type: tuple[str, ...]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Labels:
        """Move to a device; ``dtype`` applies to every tensor (all are floating)."""
        changes = {
            f.name: getattr(self, f.name).to(device=device, dtype=dtype)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **changes)


@dataclass(frozen=True)
class GraphBatch:
    """A batched graph and the labels of its structures.

    >>> from equitensor.datasets import GraphDataset, default_dataset_path, read_structures
    >>> item = GraphDataset(read_structures(default_dataset_path())[2:3], 3.0)[0]
    >>> item.num_graphs, item.graph.num_nodes, item.labels.forces.shape
    (1, 32, torch.Size([32, 3]))
    >>> item.to(dtype=torch.float32).labels.energy.dtype
    torch.float32
    """

    graph: AtomicGraph
    labels: Labels

    @property
    def num_graphs(self) -> int:
        return self.graph.num_graphs

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GraphBatch:
        return GraphBatch(self.graph.to(device, dtype), self.labels.to(device, dtype))


def labels_of(structure: LabelledStructure, dtype: torch.dtype = torch.float64) -> Labels:
    """One structure's labels as tensors (zeros where absent, with weight 0)."""

    def tensor(value, shape) -> torch.Tensor:
        if value is None:
            return torch.zeros(shape, dtype=dtype)
        return torch.as_tensor(np.asarray(value), dtype=dtype).reshape(shape)

    weights = {  # an absent label has weight 0, whatever label_weights says
        f"{label}_weight": torch.tensor(
            [structure.label_weights.get(label, 1.0) if getattr(structure, label) is not None else 0.0],
            dtype=dtype,
        )
        for label in LABELS
    }
    return Labels(
        energy=tensor(structure.energy, (1,)),
        forces=tensor(structure.forces, (structure.num_atoms, 3)),
        stress=tensor(structure.stress, (1, 3, 3)),
        virials=tensor(structure.virials, (1, 3, 3)),
        weight=torch.tensor([structure.weight], dtype=dtype),
        config_type=(structure.config_type,),
        **weights,
    )


def batch_labels(labels: Sequence[Labels]) -> Labels:
    """Concatenate labels in the same order as :func:`equitensor.graph.batch_graphs`.

    >>> from equitensor.datasets import GraphDataset, default_dataset_path, read_structures
    >>> dataset = GraphDataset(read_structures(default_dataset_path())[:3], 3.0)
    >>> labels = batch_labels([item.labels for item in dataset])
    >>> labels.energy.shape, labels.forces.shape, labels.config_type
    (torch.Size([3]), torch.Size([34, 3]), ('IsolatedAtom', 'IsolatedAtom', 'MD_300K'))
    """
    if not labels:
        raise ValueError("batch_labels needs at least one Labels")
    tensors = {
        f.name: torch.cat([getattr(item, f.name) for item in labels])
        for f in fields(Labels)
        if f.name != "config_type"
    }
    return Labels(**tensors, config_type=tuple(c for item in labels for c in item.config_type))


def collate_graphs(items: Sequence[GraphBatch]) -> GraphBatch:
    """DataLoader collate function: one disjoint graph and the concatenated labels.

    >>> from torch.utils.data import DataLoader
    >>> from equitensor.datasets import GraphDataset, default_dataset_path, read_structures
    >>> dataset = GraphDataset(read_structures(default_dataset_path())[:4], 3.0)
    >>> batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=collate_graphs)))
    >>> batch.num_graphs, batch.graph.num_nodes, batch.labels.energy.shape
    (3, 34, torch.Size([3]))
    """
    return GraphBatch(batch_graphs([i.graph for i in items]), batch_labels([i.labels for i in items]))


class GraphDataset(Dataset):
    """Labelled structures as graphs with every neighbour within ``r_max`` (built once, in memory).

    Items are one-structure :class:`GraphBatch` objects; batch them with :func:`collate_graphs`.

    Example: two isolated atoms and two 32-atom CuNi cells of the shipped data set.

    >>> from equitensor.datasets import default_dataset_path, read_structures
    >>> dataset = GraphDataset(read_structures(default_dataset_path())[:4], r_max=3.0)
    >>> len(dataset), dataset.num_atoms.tolist(), dataset.num_edges.tolist()
    (4, [1, 1, 32, 32], [0, 0, 384, 384])
    >>> dataset.average_num_neighbours(), dataset[2].graph.num_edges
    (11.636363636363637, 384)
    """

    def __init__(
        self, structures: Sequence[LabelledStructure], r_max: float, dtype: torch.dtype = torch.float64
    ) -> None:
        if not structures:
            raise ValueError("GraphDataset needs at least one structure")
        self.r_max = float(r_max)
        self.dtype = dtype
        self.items = [
            GraphBatch(graph_from_atoms(s.to_atoms(), self.r_max, dtype), labels_of(s, dtype))
            for s in structures
        ]
        self.num_atoms = np.array([item.graph.num_nodes for item in self.items])
        self.num_edges = np.array([item.graph.num_edges for item in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> GraphBatch:
        return self.items[index]

    def average_num_neighbours(self) -> float:
        """Mean number of edges per atom (MACE's avg_num_neighbors)."""
        return float(self.num_edges.sum() / self.num_atoms.sum())


class MaxSizeBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices holding at most ``max_structures`` structures, ``max_atoms`` atoms
    and ``max_edges`` edges (any of them may be None), filled greedily in (shuffled) order.

    A structure that alone exceeds a limit is an error, not a batch over the limit. With
    ``shuffle``, the order of epoch e is a permutation drawn from ``seed + e``; call
    :meth:`set_epoch` every epoch (as with DistributedSampler).

    Example: at most two structures and 64 atoms per batch (use it as a DataLoader's
    ``batch_sampler``; :meth:`for_dataset` takes the sizes from a :class:`GraphDataset`).

    >>> sampler = MaxSizeBatchSampler([1, 1, 32, 32, 32], max_structures=2, max_atoms=64)
    >>> list(sampler), len(sampler)
    ([[0, 1], [2, 3], [4]], 3)
    >>> sorted(i for batch in MaxSizeBatchSampler([1, 1, 32], max_atoms=33, shuffle=True) for i in batch)
    [0, 1, 2]
    """

    def __init__(
        self,
        num_atoms: Sequence[int],
        num_edges: Sequence[int] | None = None,
        *,
        max_structures: int | None = None,
        max_atoms: int | None = None,
        max_edges: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if max_structures is None and max_atoms is None and max_edges is None:
            raise ValueError("give at least one of max_structures, max_atoms, max_edges")
        if max_edges is not None and num_edges is None:
            raise ValueError("max_edges needs num_edges")
        self.num_atoms = np.asarray(num_atoms)
        self.num_edges = np.zeros_like(self.num_atoms) if num_edges is None else np.asarray(num_edges)
        self.max_structures, self.max_atoms, self.max_edges = max_structures, max_atoms, max_edges
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        for name, sizes, limit in [
            ("atoms", self.num_atoms, max_atoms),
            ("edges", self.num_edges, max_edges),
        ]:
            if limit is not None and len(sizes) and sizes.max() > limit:
                index = int(sizes.argmax())
                raise ValueError(
                    f"structure {index} has {int(sizes[index])} {name}, more than max_{name}={limit}"
                )

    @classmethod
    def for_dataset(cls, dataset: GraphDataset, **kwargs) -> MaxSizeBatchSampler:
        """A sampler over a GraphDataset's structures."""
        return cls(dataset.num_atoms, dataset.num_edges, **kwargs)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.num_atoms))
        return np.random.default_rng(self.seed + self.epoch).permutation(len(self.num_atoms))

    def _batches(self) -> list[list[int]]:
        batches: list[list[int]] = []
        current: list[int] = []
        atoms = edges = 0
        for index in self._order().tolist():
            fits = (
                (self.max_structures is None or len(current) < self.max_structures)
                and (self.max_atoms is None or atoms + self.num_atoms[index] <= self.max_atoms)
                and (self.max_edges is None or edges + self.num_edges[index] <= self.max_edges)
            )
            if current and not fits:
                batches.append(current)
                current, atoms, edges = [], 0, 0
            current.append(index)
            atoms += int(self.num_atoms[index])
            edges += int(self.num_edges[index])
        if current and not self.drop_last:
            batches.append(current)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
