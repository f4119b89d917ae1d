"""Losses, metrics and EMA against hand computations (numpy loops over atoms and structures)."""

import math

import numpy as np
import pytest
import torch

from equitensor.datasets import GraphBatch, batch_labels, collate_graphs
from equitensor.datasets.batching import labels_of
from equitensor.datasets.reading import LabelledStructure
from equitensor.graph import AtomicGraph
from equitensor.train.distributed import DistributedContext
from equitensor.train.ema import ExponentialMovingAverage
from equitensor.train.losses import WeightedLoss, batch_counts, num_atoms_per_structure
from equitensor.train.metrics import ErrorAccumulator, format_table


def structure(n, rng, weight=1.0, with_stress=True, forces_weight=1.0):
    s = LabelledStructure(
        positions=rng.standard_normal((n, 3)),
        numbers=np.full(n, 29),
        cell=np.eye(3) * 5,
        pbc=np.ones(3, bool),
        energy=float(rng.standard_normal()),
        forces=rng.standard_normal((n, 3)),
        stress=rng.standard_normal((3, 3)) if with_stress else None,
        weight=weight,
    )
    s.label_weights["forces"] = forces_weight
    if not with_stress:
        s.label_weights["stress"] = 0.0
    return s


def graph_of(sizes):
    n = sum(sizes)
    return AtomicGraph(
        positions=torch.zeros(n, 3, dtype=torch.float64),
        numbers=torch.full((n,), 29),
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        unit_shifts=torch.zeros(0, 3, dtype=torch.float64),
        cell=torch.eye(3, dtype=torch.float64).repeat(len(sizes), 1, 1),
        pbc=torch.ones(len(sizes), 3, dtype=torch.bool),
        batch=torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
        num_graphs=len(sizes),
    )


@pytest.fixture
def example():
    rng = np.random.default_rng(1)
    structures = [structure(3, rng, weight=2.0), structure(5, rng, with_stress=False, forces_weight=0.5)]
    labels = batch_labels([labels_of(s) for s in structures])
    graph = graph_of([3, 5])
    predictions = {
        "energy": torch.tensor(rng.standard_normal(2)),
        "forces": torch.tensor(rng.standard_normal((8, 3))),
        "stress": torch.tensor(rng.standard_normal((2, 3, 3))),
    }
    return structures, labels, graph, predictions


def hand_loss(structures, predictions, weights, elementwise):
    w_e, w_f, w_s = weights
    energy = forces = stress = 0.0
    num_atoms = sum(s.num_atoms for s in structures)
    start = 0
    for b, s in enumerate(structures):
        c = s.weight
        energy += (
            c
            * s.label_weights["energy"]
            * elementwise((predictions["energy"][b].item() - s.energy) / s.num_atoms)
        )
        for i in range(s.num_atoms):
            for k in range(3):
                error = predictions["forces"][start + i, k].item() - s.forces[i, k]
                forces += c * s.label_weights["forces"] * elementwise(error)
        if s.stress is not None:
            for i in range(3):
                for k in range(3):
                    stress += c * elementwise(predictions["stress"][b, i, k].item() - s.stress[i, k])
        start += s.num_atoms
    b = len(structures)
    return w_e * energy / b + w_f * forces / (3 * num_atoms) + w_s * stress / (9 * b)


def huber(error, delta=0.01):
    return 0.5 * error**2 if abs(error) <= delta else delta * (abs(error) - 0.5 * delta)


@pytest.mark.parametrize("kind, elementwise", [("mse", lambda e: e * e), ("huber", huber)])
def test_loss_matches_hand_computation(example, kind, elementwise):
    structures, labels, graph, predictions = example
    loss = WeightedLoss(1.0, 10.0, 3.0, kind=kind, huber_delta=0.01)
    expected = hand_loss(structures, predictions, (1.0, 10.0, 3.0), elementwise)
    assert loss(predictions, labels, graph).item() == pytest.approx(expected, rel=1e-12)


def test_zero_weight_terms_need_no_prediction(example):
    structures, labels, graph, predictions = example
    loss = WeightedLoss(1.0, 0.0, 0.0)
    only_energy = {"energy": predictions["energy"]}
    expected = hand_loss(structures, predictions, (1.0, 0.0, 0.0), lambda e: e * e)
    assert loss(only_energy, labels, graph).item() == pytest.approx(expected, rel=1e-12)


def test_split_batch_with_global_counts_sums_to_whole(example):
    """Two shards normalised by the global batch's counts add up to the whole batch's loss."""
    structures, labels, graph, predictions = example
    loss = WeightedLoss(1.0, 10.0, 3.0)
    whole = loss(predictions, labels, graph).item()
    counts = batch_counts(num_atoms_per_structure(graph))
    parts = 0.0
    for b, atoms in [(0, slice(0, 3)), (1, slice(3, 8))]:
        part_labels = labels_of(structures[b])
        part_graph = graph_of([structures[b].num_atoms])
        part_pred = {
            "energy": predictions["energy"][b : b + 1],
            "forces": predictions["forces"][atoms],
            "stress": predictions["stress"][b : b + 1],
        }
        parts += loss(part_pred, part_labels, part_graph, counts).item()
    assert parts == pytest.approx(whole, rel=1e-12)


def test_metrics_match_numpy(example):
    structures, labels, graph, predictions = example
    accumulator = ErrorAccumulator()
    accumulator.update(predictions, labels, graph)
    summary = accumulator.summary()
    energy_errors = [
        (predictions["energy"][b].item() - s.energy) / s.num_atoms for b, s in enumerate(structures)
    ]
    force_errors = (predictions["forces"].numpy() - np.concatenate([s.forces for s in structures])).ravel()
    stress_errors = (predictions["stress"][0].numpy() - structures[0].stress).ravel()  # only 1st has stress
    for name, errors in [("energy", energy_errors), ("forces", force_errors), ("stress", stress_errors)]:
        errors = np.asarray(errors)
        assert summary[f"{name}_count"] == errors.size
        assert summary[f"{name}_mae"] == pytest.approx(1e3 * np.abs(errors).mean(), rel=1e-12)
        assert summary[f"{name}_rmse"] == pytest.approx(1e3 * np.sqrt((errors**2).mean()), rel=1e-12)
    table = format_table([{"name": "valid", "structures": 2, **summary}])
    assert "E RMSE [meV/atom]" in table and "S MAE [meV/Å^3]" in table


class SummingContext(DistributedContext):
    """A stand-in for all_reduce over ranks: adds the other ranks' tensors."""

    def __init__(self, others):
        super().__init__(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
        object.__setattr__(self, "others", others)

    def all_reduce_sum(self, tensor):
        return tensor + sum(self.others)


def test_reduction_is_sum_of_errors_not_mean_of_means(example):
    structures, labels, graph, predictions = example
    loss = WeightedLoss(1.0, 10.0, 3.0)
    whole = ErrorAccumulator(loss)
    whole.update(predictions, labels, graph)
    shards = []
    for b, atoms in [(0, slice(0, 3)), (1, slice(3, 8))]:
        part = ErrorAccumulator(loss)
        part.update(
            {
                "energy": predictions["energy"][b : b + 1],
                "forces": predictions["forces"][atoms],
                "stress": predictions["stress"][b : b + 1],
            },
            labels_of(structures[b]),
            graph_of([structures[b].num_atoms]),
        )
        shards.append(part)
    other = torch.cat([shards[1].errors.flatten(), shards[1].loss_sums.flatten()])
    reduced = shards[0].reduce(SummingContext([other])).summary()
    expected = whole.summary()
    for key, value in expected.items():
        if math.isnan(value):  # a quantity without labels (virials here): NaN on both sides
            assert math.isnan(reduced[key]), key
            continue
        assert reduced[key] == pytest.approx(value, rel=1e-12), key
    assert expected["loss"] == pytest.approx(loss(predictions, labels, graph).item(), rel=1e-12)
    # the mean of the shards' force RMSEs is not the RMSE (3 vs 5 atoms): the test can tell them apart
    mean_of_means = 0.5 * (shards[0].summary()["forces_rmse"] + shards[1].summary()["forces_rmse"])
    assert not math.isclose(mean_of_means, expected["forces_rmse"], rel_tol=1e-6)


def test_ema_follows_the_warmup_formula():
    model = torch.nn.Linear(2, 1, bias=False).double()
    ema = ExponentialMovingAverage(model, decay=0.9)
    start = model.weight.detach().clone()
    shadow = start.clone()
    for n in range(1, 4):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        shadow = d * shadow + (1 - d) * model.weight.detach()
        torch.testing.assert_close(ema.shadow[0], shadow)
    current = model.weight.detach().clone()
    with ema.applied(model):
        torch.testing.assert_close(model.weight.detach(), shadow)
    torch.testing.assert_close(model.weight.detach(), current)


def test_collate_of_graph_batches_keeps_the_loss(example):
    """GraphBatch collation (what the trainer uses) gives the same loss as the hand-built batch."""
    structures, labels, graph, predictions = example
    items = [GraphBatch(graph_of([s.num_atoms]), labels_of(s)) for s in structures]
    batch = collate_graphs(items)
    loss = WeightedLoss(1.0, 10.0, 3.0)
    assert loss(predictions, batch.labels, batch.graph).item() == pytest.approx(
        loss(predictions, labels, graph).item(), rel=1e-14
    )


def test_virials_term_per_atom_against_a_hand_computation():
    """virials_weight: MSE of (predicted - reference virials) / N over the structures that have
    virials (mace-torch's per-atom virials loss), and its RMSE in the metrics."""
    rng = np.random.default_rng(4)
    structures = [structure(3, rng, weight=2.0), structure(5, rng), structure(2, rng)]
    structures[0].virials = rng.standard_normal((3, 3))
    structures[1].virials = rng.standard_normal((3, 3))  # structure 2 has none: weight 0
    for s in structures:
        s.label_weights["virials"] = 1.0 if s.virials is not None else 0.0
    labels = batch_labels([labels_of(s) for s in structures])
    graph = graph_of([3, 5, 2])
    predictions = {
        "energy": torch.tensor(rng.standard_normal(3)),
        "forces": torch.tensor(rng.standard_normal((10, 3))),
        "virial": torch.tensor(rng.standard_normal((3, 3, 3))),
    }
    loss = WeightedLoss(0.0, 0.0, 0.0, virials_weight=7.0)
    expected, squares, count = 0.0, 0.0, 0
    for b, s in enumerate(structures):
        if s.virials is None:
            continue
        for i in range(3):
            for k in range(3):
                error = (predictions["virial"][b, i, k].item() - s.virials[i, k]) / s.num_atoms
                expected += s.weight * error**2
                squares, count = squares + error**2, count + 1
    assert loss(predictions, labels, graph).item() == pytest.approx(7.0 * expected / 9 / 3, rel=1e-12)
    accumulator = ErrorAccumulator(loss)
    accumulator.update(predictions, labels, graph)
    summary = accumulator.summary()
    assert summary["virials_count"] == 18
    assert summary["virials_rmse"] == pytest.approx(1e3 * math.sqrt(squares / count), rel=1e-12)
