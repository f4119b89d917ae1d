"""Neighbour lists (vesin) against ASE's, the graph dataset, collation and the batch sampler."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list
from torch.utils.data import DataLoader

from equitensor.datasets import (
    GraphDataset,
    LabelledStructure,
    MaxSizeBatchSampler,
    collate_graphs,
    graph_from_atoms,
    structures_from_atoms,
)
from equitensor.datasets.batching import labels_of


def awkward_structures() -> dict[str, Atoms]:
    """Cells where neighbour lists go wrong: tiny, unwrapped, triclinic, slab, mixed pbc, molecule."""
    unwrapped = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    unwrapped.rattle(0.1, seed=3)
    unwrapped.positions[0] += 2 * unwrapped.cell[0] - unwrapped.cell[1]
    unwrapped.positions[3] -= 0.3 * unwrapped.cell[2]
    slab = fcc111("Al", (2, 2, 3), vacuum=5.0)
    slab.rattle(0.05, seed=2)
    triclinic = bulk("Cu", "fcc", a=3.6)
    triclinic.set_cell(triclinic.cell.array + [[0.3, 0, 0], [0, 0, 0.2], [0, 0, 0]], scale_atoms=True)
    triclinic = triclinic * (2, 1, 2)
    triclinic.rattle(0.05, seed=4)
    mixed = bulk("Si", "diamond", a=5.43)
    mixed.pbc = [True, False, True]
    return {
        "one-atom cell": bulk("Cu", "fcc", a=3.6),
        "unwrapped": unwrapped,
        "triclinic": triclinic,
        "slab": slab,
        "mixed pbc": mixed,
        "molecule": molecule("CH3CH2OH"),
    }


@pytest.mark.parametrize("name", list(awkward_structures()))
@pytest.mark.parametrize("r_max", [2.6, 5.0])
def test_edges_are_exactly_ases_pairs(name, r_max):
    atoms = awkward_structures()[name]
    graph = graph_from_atoms(atoms, r_max)
    i, j, shifts, vectors = neighbor_list("ijSD", atoms, r_max, self_interaction=False)
    # ASE: D = pos[j] - pos[i] + S cell; ours: receiver i, sender j, vector pos[i] - pos[j] + s cell = -D.
    expected = sorted(zip(i.tolist(), j.tolist(), map(tuple, (-shifts).tolist())))
    sender, receiver = graph.edge_index.tolist()
    found = sorted(zip(receiver, sender, map(tuple, graph.unit_shifts.long().tolist())))
    assert found == expected
    ours_shift = graph.unit_shifts.long().numpy()
    order_ase = np.lexsort((-shifts[:, 2], -shifts[:, 1], -shifts[:, 0], j, i))
    order_ours = np.lexsort((ours_shift[:, 2], ours_shift[:, 1], ours_shift[:, 0], sender, receiver))
    assert np.allclose(graph.edge_vectors().numpy()[order_ours], -vectors[order_ase], atol=1e-12)


def labelled(atoms: Atoms, energy: float, stress: bool) -> Atoms:
    atoms = atoms.copy()
    rng = np.random.default_rng(len(atoms))
    results = {"energy": energy, "forces": rng.normal(size=(len(atoms), 3))}
    if stress:
        results["stress"] = rng.normal(size=6)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


@pytest.fixture
def structures():
    copper = bulk("Cu", "fcc", a=3.6, cubic=True)
    copper.rattle(0.05, seed=0)
    frames = [
        labelled(molecule("CH3CH2OH"), -10.0, stress=False),
        labelled(copper, -20.0, stress=True),
        labelled(molecule("H2O"), -30.0, stress=False),
        labelled(copper * (2, 1, 1), -40.0, stress=True),
    ]
    return structures_from_atoms(frames)


def test_collate_batches_graphs_and_labels_in_the_same_order(structures, dtype):
    dataset = GraphDataset(structures, r_max=4.0, dtype=dtype)
    batch = collate_graphs([dataset[3], dataset[0], dataset[2]])
    picked = [structures[k] for k in (3, 0, 2)]
    assert batch.num_graphs == 3
    assert batch.graph.positions.dtype == dtype and batch.labels.forces.dtype == dtype
    assert torch.equal(batch.labels.energy, torch.tensor([-40.0, -10.0, -30.0], dtype=dtype))
    assert torch.allclose(
        batch.labels.forces, torch.tensor(np.concatenate([s.forces for s in picked]), dtype=dtype)
    )
    assert torch.allclose(batch.labels.stress[0], torch.tensor(picked[0].stress, dtype=dtype))
    assert torch.equal(batch.labels.stress[1:], torch.zeros(2, 3, 3, dtype=dtype))
    assert batch.labels.stress_weight.tolist() == [1.0, 0.0, 0.0]
    assert batch.labels.energy_weight.tolist() == [1.0, 1.0, 1.0]
    # the batched graph's structure of each atom matches the labels' order
    assert batch.graph.batch.tolist() == sum(([k] * s.num_atoms for k, s in enumerate(picked)), [])
    assert torch.equal(batch.graph.numbers, torch.tensor(np.concatenate([s.numbers for s in picked])))
    assert batch.labels.config_type == ("Default",) * 3


def test_dataset_caches_graphs_and_counts_neighbours(structures):
    dataset = GraphDataset(structures, r_max=4.0)
    assert dataset[1] is dataset[1]
    assert dataset.num_atoms.tolist() == [9, 4, 3, 8]
    expected = sum(len(neighbor_list("i", s.to_atoms(), 4.0)) for s in structures) / 24
    assert dataset.average_num_neighbours() == pytest.approx(expected)


def test_max_size_sampler_respects_limits_and_covers_everything():
    rng = np.random.default_rng(0)
    num_atoms = rng.integers(1, 30, size=50)
    num_edges = num_atoms * rng.integers(5, 20, size=50)
    sampler = MaxSizeBatchSampler(
        num_atoms, num_edges, max_structures=6, max_atoms=60, max_edges=600, shuffle=True, seed=1
    )
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for batch in batches:
            assert len(batch) <= 6 and num_atoms[batch].sum() <= 60 and num_edges[batch].sum() <= 600
        assert sorted(sum(batches, [])) == list(range(50))
        # greedy: the next structure did not fit into the previous batch
        for before, after in zip(batches, batches[1:]):
            first = after[0]
            assert (
                len(before) == 6
                or num_atoms[before].sum() + num_atoms[first] > 60
                or num_edges[before].sum() + num_edges[first] > 600
            )
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]


def test_sampler_rejects_a_structure_larger_than_the_limit():
    with pytest.raises(ValueError, match="structure 1 has 100 atoms, more than max_atoms=50"):
        MaxSizeBatchSampler([10, 100, 20], max_atoms=50)


def test_data_loader_with_the_sampler(structures):
    dataset = GraphDataset(structures, r_max=4.0)
    sampler = MaxSizeBatchSampler.for_dataset(dataset, max_atoms=13)
    batches = list(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_graphs))
    assert [b.graph.num_nodes for b in batches] == [13, 11]
    assert [b.labels.energy.tolist() for b in batches] == [[-10.0, -20.0], [-30.0, -40.0]]
    plain = list(DataLoader(dataset, batch_size=3, collate_fn=collate_graphs))
    assert [b.num_graphs for b in plain] == [3, 1]


def test_absent_labels_get_weight_zero_even_if_the_structure_says_one():
    atoms = molecule("H2O")
    structure = LabelledStructure(
        positions=atoms.positions,
        numbers=atoms.numbers,
        cell=np.zeros((3, 3)),
        pbc=np.zeros(3, bool),
        energy=-1.0,
    )
    labels = labels_of(structure)
    assert [labels.energy_weight.item(), labels.forces_weight.item(), labels.stress_weight.item()] == [
        1.0,
        0,
        0,
    ]
    assert torch.equal(labels.forces, torch.zeros(3, 3, dtype=torch.float64))
