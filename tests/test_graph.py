"""AtomicGraph, neighbour lists, batching, and forces/stress against finite differences."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.graph import AtomicGraph, batch_graphs, energy_derivatives, strained


def pair_energy(graph: AtomicGraph) -> torch.Tensor:
    """A smooth pair potential per structure, enough to exercise shifts and strain."""
    r = graph.edge_vectors().norm(dim=1)
    per_edge = torch.exp(-r) * (1 - r / 5) ** 2
    return torch.zeros(graph.num_graphs, dtype=r.dtype).index_add(0, graph.batch[graph.receiver], per_edge)


@pytest.fixture
def copper() -> object:
    atoms = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    return atoms


def test_edge_vectors_match_ase_distances_through_periodic_images(copper):
    graph = graph_from_atoms(copper, 5.0)
    lengths = np.sort(graph.edge_vectors().norm(dim=1).numpy())
    assert np.allclose(lengths, np.sort(neighbor_list("d", copper, 5.0)))
    assert graph.num_edges > 20 * len(copper)  # many edges reach a neighbour through images


def test_batch_offsets_nodes_edges_and_structures(copper):
    a, b = graph_from_atoms(copper, 5.0), graph_from_atoms(molecule("CH3CH2OH"), 3.0)
    both = batch_graphs([a, b])
    assert (both.num_graphs, both.num_nodes, both.num_edges) == (
        2,
        a.num_nodes + b.num_nodes,
        a.num_edges + b.num_edges,
    )
    assert torch.allclose(pair_energy(both), torch.cat([pair_energy(a), pair_energy(b)]))


def test_wrong_shape_names_the_field(copper):
    graph = graph_from_atoms(copper, 5.0)
    with pytest.raises(ValueError, match="unit_shifts"):
        replace(graph, unit_shifts=graph.unit_shifts[:-1])


def test_forces_and_stress_equal_finite_differences(copper):
    graph = batch_graphs([graph_from_atoms(copper, 5.0), graph_from_atoms(molecule("CH3CH2OH"), 3.0)])
    strained_graph, positions, strain = strained(graph)
    out = energy_derivatives(pair_energy(strained_graph), graph, positions, strain)
    h = 1e-5
    for atom, axis in [(0, 1), (3, 2), (7, 0)]:
        shifted = [graph.positions.clone() for _ in range(2)]
        shifted[0][atom, axis] += h
        shifted[1][atom, axis] -= h
        plus, minus = (pair_energy(replace(graph, positions=p)).sum() for p in shifted)
        assert torch.isclose(out["forces"][atom, axis], -(plus - minus) / (2 * h), rtol=1e-6, atol=1e-9)

    def strained_energy(eps: np.ndarray) -> float:
        atoms = copper.copy()
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
        return pair_energy(graph_from_atoms(atoms, 5.0)).item()

    for i, j in [(0, 0), (0, 1), (1, 2)]:
        eps = np.zeros((3, 3))
        eps[i, j] = eps[j, i] = h
        expected = (strained_energy(eps) - strained_energy(-eps)) / (2 * h) / copper.get_volume()
        expected /= 1 if i == j else 2
        assert np.isclose(out["stress"][0, i, j].item(), expected, rtol=1e-6, atol=1e-10)
    assert out["stress"][1].abs().max() == 0  # the molecule has no cell
