"""The batched atomic graph shared by models, data pipeline and calculator, and the derivatives
of an energy with respect to positions and strain.

Conventions are MACE's: ``edge_index[0]`` is the sender j, ``edge_index[1]`` the receiver i,
messages are summed onto the receiver, and the edge vector is
``positions[receiver] - positions[sender] + unit_shifts @ cell``. Shifts are kept as integer
cell translations (stored as floats) so that a strain applied to the cell flows into them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True)
class AtomicGraph:
    """One or more structures as one disjoint graph.

    positions: (N, 3) Å. numbers: (N,) atomic numbers. edge_index: (2, E) sender, receiver.
    unit_shifts: (E, 3) integer cell translations of the sender image (float dtype).
    cell: (B, 3, 3) rows are lattice vectors (zeros for a non-periodic structure).
    pbc: (B, 3) bool. batch: (N,) structure index of each atom. num_graphs: B.

    Example: a water molecule with every pair closer than 2 Å as an edge.

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> graph = graph_from_atoms(molecule("H2O"), 2.0)
    >>> graph.num_nodes, graph.num_edges, graph.num_graphs
    (3, 6, 1)
    >>> graph.edge_vectors().shape
    torch.Size([6, 3])
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    edge_index: torch.Tensor
    unit_shifts: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    batch: torch.Tensor
    num_graphs: int

    def __post_init__(self) -> None:
        n, e, b = self.positions.shape[0], self.edge_index.shape[-1], self.num_graphs
        expected = {
            "positions": (n, 3),
            "numbers": (n,),
            "edge_index": (2, e),
            "unit_shifts": (e, 3),
            "cell": (b, 3, 3),
            "pbc": (b, 3),
            "batch": (n,),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"AtomicGraph.{name} has shape {got}, expected {shape}")

    @property
    def num_nodes(self) -> int:
        return self.positions.shape[0]

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def sender(self) -> torch.Tensor:
        return self.edge_index[0]

    @property
    def receiver(self) -> torch.Tensor:
        return self.edge_index[1]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> AtomicGraph:
        """Move to a device; ``dtype`` applies to the floating tensors only."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                float_dtype = dtype if value.is_floating_point() else None
                changes[f.name] = value.to(device=device, dtype=float_dtype)
        return replace(self, **changes)

    def edge_vectors(self, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None):
        """Edge vectors (E, 3) receiver - sender + shift, from the given or the stored positions/cell."""
        positions = self.positions if positions is None else positions
        cell = self.cell if cell is None else cell
        sender, receiver = self.edge_index
        edge_cell = cell[self.batch[sender]]
        shifts = torch.einsum("ei,eij->ej", self.unit_shifts.to(cell.dtype), edge_cell)
        return positions[receiver] - positions[sender] + shifts

    def structure_sum(self, node_values: torch.Tensor) -> torch.Tensor:
        """Sum per-node values (N, ...) into per-structure values (B, ...)."""
        out = node_values.new_zeros((self.num_graphs, *node_values.shape[1:]))
        return out.index_add(0, self.batch, node_values)


def batch_graphs(graphs: list[AtomicGraph]) -> AtomicGraph:
    """Concatenate graphs into one disjoint graph, offsetting node indices and batch ids.

    >>> from ase.build import bulk, molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> water = graph_from_atoms(molecule("H2O"), 2.0)
    >>> copper = graph_from_atoms(bulk("Cu", "fcc", a=3.6), 3.0)
    >>> both = batch_graphs([water, copper])
    >>> both.num_graphs, both.num_nodes, both.batch.tolist()
    (2, 4, [0, 0, 0, 1])
    """
    if not graphs:
        raise ValueError("batch_graphs needs at least one graph")
    node_offsets = torch.cumsum(torch.tensor([0] + [g.num_nodes for g in graphs[:-1]]), 0)
    graph_offsets = torch.cumsum(torch.tensor([0] + [g.num_graphs for g in graphs[:-1]]), 0)
    return AtomicGraph(
        positions=torch.cat([g.positions for g in graphs]),
        numbers=torch.cat([g.numbers for g in graphs]),
        edge_index=torch.cat([g.edge_index + int(o) for g, o in zip(graphs, node_offsets)], dim=1),
        unit_shifts=torch.cat([g.unit_shifts for g in graphs]),
        cell=torch.cat([g.cell for g in graphs]),
        pbc=torch.cat([g.pbc for g in graphs]),
        batch=torch.cat([g.batch + int(o) for g, o in zip(graphs, graph_offsets)]),
        num_graphs=sum(g.num_graphs for g in graphs),
    )


def split_graph(graph: AtomicGraph) -> list[AtomicGraph]:
    """The structures of a batched graph, one graph each (the inverse of :func:`batch_graphs`).

    >>> from ase.build import bulk, molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> water = graph_from_atoms(molecule("H2O"), 2.0)
    >>> copper = graph_from_atoms(bulk("Cu", "fcc", a=3.6), 3.0)
    >>> [(part.num_nodes, part.num_edges) for part in split_graph(batch_graphs([water, copper]))]
    [(3, 6), (1, 12)]
    """
    counts = torch.bincount(graph.batch, minlength=graph.num_graphs).tolist()
    edge_graph = graph.batch[graph.sender]
    parts, start = [], 0
    for b, count in enumerate(counts):
        edges = (edge_graph == b).nonzero().flatten()
        parts.append(
            AtomicGraph(
                positions=graph.positions[start : start + count],
                numbers=graph.numbers[start : start + count],
                edge_index=graph.edge_index[:, edges] - start,
                unit_shifts=graph.unit_shifts[edges],
                cell=graph.cell[b : b + 1],
                pbc=graph.pbc[b : b + 1],
                batch=torch.zeros(count, dtype=graph.batch.dtype, device=graph.batch.device),
                num_graphs=1,
            )
        )
        start += count
    return parts


def as_atomic_graph(graph) -> AtomicGraph:
    """``graph`` itself, or the AtomicGraph of an object with PyG-style fields (``pos``, ``z``,
    ``edge_index``, ``edge_cell_shift``, ``cell`` (B, 3, 3), ``pbc`` (B, 3), ``batch`` or none for
    one structure): what :mod:`equitensor.interop.pyg` writes, so models take a PyG batch.

    Any object with those fields will do; here a plain namespace:

    >>> from types import SimpleNamespace
    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> graph = graph_from_atoms(molecule("H2O"), 2.0)
    >>> as_atomic_graph(graph) is graph
    True
    >>> data = SimpleNamespace(pos=graph.positions, z=graph.numbers, edge_index=graph.edge_index,
    ...                        edge_cell_shift=graph.unit_shifts, cell=graph.cell, pbc=graph.pbc)
    >>> as_atomic_graph(data).num_edges
    6
    """
    if isinstance(graph, AtomicGraph):
        return graph
    missing = [
        name
        for name in ("pos", "z", "edge_index", "edge_cell_shift", "cell", "pbc")
        if getattr(graph, name, None) is None
    ]
    if missing:
        raise TypeError(
            f"expected an AtomicGraph or a PyG-style object with pos, z, edge_index, edge_cell_shift, "
            f"cell and pbc; {type(graph).__name__} lacks {missing}"
        )
    batch = getattr(graph, "batch", None)
    n = graph.pos.shape[0]
    if batch is None:
        batch, num_graphs = torch.zeros(n, dtype=torch.long, device=graph.pos.device), 1
    else:
        num_graphs = int(graph.num_graphs)
    return AtomicGraph(
        positions=graph.pos,
        numbers=graph.z,
        edge_index=graph.edge_index,
        unit_shifts=graph.edge_cell_shift,
        cell=graph.cell.reshape(-1, 3, 3),
        pbc=graph.pbc.reshape(-1, 3),
        batch=batch,
        num_graphs=num_graphs,
    )


def strained(graph: AtomicGraph) -> tuple[AtomicGraph, torch.Tensor, torch.Tensor]:
    """Apply a zero symmetric strain per structure so energies can be differentiated by it.

    Returns the strained graph (positions and cell depend on the strain), the positions leaf
    and the strain leaf (B, 3, 3), both with ``requires_grad``. This is MACE's
    ``get_symmetric_displacement``: r' = r (1 + eps_sym), cell' = cell (1 + eps_sym).

    >>> from ase.build import bulk
    >>> from equitensor.datasets import graph_from_atoms
    >>> graph = graph_from_atoms(bulk("Cu", "fcc", a=3.6), 3.0)
    >>> work, positions, strain = strained(graph)
    >>> strain.shape, positions.requires_grad, torch.equal(work.cell, graph.cell)
    (torch.Size([1, 3, 3]), True, True)
    """
    positions = graph.positions.detach().requires_grad_(True)
    strain = torch.zeros_like(graph.cell).requires_grad_(True)
    symmetric = 0.5 * (strain + strain.transpose(-1, -2))
    eye = torch.eye(3, dtype=graph.cell.dtype, device=graph.cell.device)
    deformation = eye + symmetric
    new_positions = torch.einsum("ni,nij->nj", positions, deformation[graph.batch])
    new_cell = torch.bmm(graph.cell, deformation)
    return replace(graph, positions=new_positions, cell=new_cell), positions, strain


def energy_derivatives(
    energy: torch.Tensor,
    graph: AtomicGraph,
    positions: torch.Tensor,
    strain: torch.Tensor | None,
    training: bool = False,
) -> dict[str, torch.Tensor]:
    """Forces -dE/dr and, when ``strain`` is given, virial -dE/de and stress dE/de / V.

    ``energy`` is per structure (B,). Stress follows ASE's sign convention (positive is
    tensile); structures without a periodic cell get zero stress. ``training=True`` keeps the
    graph so a loss on forces can be differentiated again.

    Example: a harmonic energy 0.5 |r|^2 per atom has forces -r.

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> graph = graph_from_atoms(molecule("H2O"), 2.0)
    >>> work, positions, strain = strained(graph)
    >>> energy = graph.structure_sum(0.5 * work.positions.square().sum(-1))
    >>> out = energy_derivatives(energy, graph, positions, strain)
    >>> torch.allclose(out["forces"], -graph.positions), out["stress"].abs().max().item()
    (True, 0.0)
    """
    inputs = [positions] if strain is None else [positions, strain]
    if energy.requires_grad:
        grads = torch.autograd.grad(
            energy.sum(), inputs, create_graph=training, retain_graph=training, allow_unused=True
        )
    else:  # nothing depends on the positions (no edges: isolated atoms) and the weights are frozen
        grads = [None] * len(inputs)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    out = {"forces": -grads[0]}
    if strain is not None:
        volume = torch.linalg.det(graph.cell).abs()
        periodic = volume > 0
        safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
        out["virial"] = -grads[1]
        out["stress"] = torch.where(periodic[:, None, None], grads[1] / safe_volume[:, None, None], 0.0)
    return out
