"""Running a model over a graph data set: batched predictions, error metrics, and the baseline a
trained model has to beat (energies linear in the composition, zero forces and stress)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from equitensor.datasets import GraphBatch, GraphDataset, LabelledStructure, collate_graphs, fit_e0s
from equitensor.train.losses import WeightedLoss, num_atoms_per_structure
from equitensor.train.metrics import ErrorAccumulator


def predict_batches(
    model: nn.Module,
    dataset: GraphDataset,
    indices: Sequence[int],
    batch_size: int,
    device: torch.device | str,
    compute_stress: bool,
) -> Iterator[tuple[list[int], GraphBatch, dict[str, torch.Tensor]]]:
    """(indices, batch, detached predictions) for consecutive batches of ``indices``."""
    indices = list(indices)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        batch = collate_graphs([dataset[k] for k in chunk]).to(device)
        out = model(batch.graph, compute_forces=True, compute_stress=compute_stress, training=False)
        yield chunk, batch, {key: value.detach() for key, value in out.items()}


@dataclass
class Collected:
    """Reference and predicted values for parity plots (energy per atom, force components)."""

    energy_ref: list[float] = field(default_factory=list)
    energy_pred: list[float] = field(default_factory=list)
    forces_ref: list[np.ndarray] = field(default_factory=list)
    forces_pred: list[np.ndarray] = field(default_factory=list)

    def add(self, batch: GraphBatch, predictions: dict[str, torch.Tensor]) -> None:
        sizes = num_atoms_per_structure(batch.graph).to(torch.float64).cpu()
        labels = batch.labels
        has_energy = (labels.energy_weight > 0).cpu()
        per_atom_ref = labels.energy.detach().cpu().double() / sizes
        per_atom_pred = predictions["energy"].cpu().double() / sizes
        self.energy_ref += per_atom_ref[has_energy].tolist()
        self.energy_pred += per_atom_pred[has_energy].tolist()
        has_forces = (labels.forces_weight > 0)[batch.graph.batch].cpu()
        self.forces_ref.append(labels.forces.detach().cpu().double()[has_forces].numpy().ravel())
        self.forces_pred.append(predictions["forces"].cpu().double()[has_forces].numpy().ravel())

    def arrays(self) -> dict[str, np.ndarray]:
        def cat(parts):
            return np.concatenate(parts) if parts else np.zeros(0)

        return {
            "energy_ref": np.array(self.energy_ref),
            "energy_pred": np.array(self.energy_pred),
            "forces_ref": cat(self.forces_ref),
            "forces_pred": cat(self.forces_pred),
        }


def evaluate(
    model: nn.Module,
    dataset: GraphDataset,
    indices: Sequence[int],
    batch_size: int,
    device: torch.device | str,
    compute_stress: bool,
    loss: WeightedLoss | None = None,
    collect: Collected | None = None,
) -> ErrorAccumulator:
    """Errors of ``model`` on ``dataset[indices]`` (not yet reduced over ranks)."""
    accumulator = ErrorAccumulator(loss)
    for _, batch, predictions in predict_batches(model, dataset, indices, batch_size, device, compute_stress):
        accumulator.update(predictions, batch.labels, batch.graph)
        if collect is not None:
            collect.add(batch, predictions)
    return accumulator


def composition_baseline(
    reference: Sequence[LabelledStructure], dataset: GraphDataset, compute_stress: bool
) -> ErrorAccumulator:
    """Errors of the best model linear in the composition (E0s fitted to ``reference`` by least
    squares) with zero forces and stress: what a trained potential must clearly beat."""
    e0s, _ = fit_e0s(list(reference))
    accumulator = ErrorAccumulator()
    for item in dataset:
        graph = item.graph
        numbers = graph.numbers.tolist()
        energy = sum(e0s.get(z, 0.0) for z in numbers)
        predictions = {
            "energy": torch.tensor([energy], dtype=graph.positions.dtype),
            "forces": torch.zeros_like(graph.positions),
        }
        if compute_stress:
            predictions["stress"] = torch.zeros_like(graph.cell)
        accumulator.update(predictions, item.labels, graph)
    return accumulator
