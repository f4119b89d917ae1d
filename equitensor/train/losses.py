"""Weighted energy-per-atom / forces / stress losses (MSE or Huber), MACE's ``weighted`` loss.

    L = w_E * sum_s c_s (E_s - E^_s)^2 / N_s^2 / B
      + w_F * sum_i c_s(i) |F_i - F^_i|^2 / (3 N)
      + w_S * sum_s c_s ||S_s - S^_s||^2 / (9 B)

with c_s the structure weight times the label weight (0 where a label is absent), B structures
and N atoms in the batch; Huber replaces the squares by Huber(delta) of each error component.
The loss is computed as sums over structures, divided by counts that the caller may take from a
larger *global* batch: that is how a data-parallel step reproduces the one-process gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from equitensor.datasets import Labels
from equitensor.graph import AtomicGraph

TERMS = ("energy", "forces", "stress", "virials")


def batch_counts(num_atoms_per_structure: torch.Tensor | list[int]) -> dict[str, float]:
    """Denominators of the three terms for a batch with these structure sizes."""
    sizes = torch.as_tensor(num_atoms_per_structure)
    structures = float(len(sizes))
    return {
        "energy": structures,
        "forces": 3.0 * float(sizes.sum()),
        "stress": 9.0 * structures,
        "virials": 9.0 * structures,
    }


def num_atoms_per_structure(graph: AtomicGraph) -> torch.Tensor:
    return torch.bincount(graph.batch, minlength=graph.num_graphs)


@dataclass(frozen=True)
class WeightedLoss:
    """Weighted MSE or Huber loss of energy per atom, forces, stress and virials per atom.

    Example: exact forces and an energy 0.1 eV/atom too high give w_E * 0.1^2.

    >>> from equitensor.datasets import GraphDataset, default_dataset_path, read_structures
    >>> item = GraphDataset(read_structures(default_dataset_path())[2:3], 3.0)[0]  # 32 atoms
    >>> predictions = {"energy": item.labels.energy + 3.2, "forces": item.labels.forces}
    >>> loss = WeightedLoss(energy_weight=1.0, forces_weight=100.0)
    >>> round(loss(predictions, item.labels, item.graph).item(), 8), loss.needs_stress
    (0.01, False)
    """

    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    kind: str = "mse"
    huber_delta: float = 0.01
    virials_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("mse", "huber"):
            raise ValueError(f"loss kind must be 'mse' or 'huber', got {self.kind!r}")

    @property
    def weights(self) -> dict[str, float]:
        return {
            "energy": self.energy_weight,
            "forces": self.forces_weight,
            "stress": self.stress_weight,
            "virials": self.virials_weight,
        }

    @property
    def needs_stress(self) -> bool:
        """Whether the model must compute stress and virial (their derivative by strain)."""
        return self.stress_weight > 0 or self.virials_weight > 0

    def _elementwise(self, error: torch.Tensor) -> torch.Tensor:
        if self.kind == "mse":
            return error.square()
        return torch.nn.functional.huber_loss(
            error, torch.zeros_like(error), reduction="none", delta=self.huber_delta
        )

    def sums(
        self, predictions: dict[str, torch.Tensor], labels: Labels, graph: AtomicGraph
    ) -> dict[str, torch.Tensor]:
        """Per-term sums of weighted elementwise losses (terms with weight 0 are skipped)."""
        sizes = num_atoms_per_structure(graph).to(labels.energy.dtype)
        out: dict[str, torch.Tensor] = {}
        if self.energy_weight > 0:
            coefficient = labels.weight * labels.energy_weight
            error = (predictions["energy"] - labels.energy) / sizes
            out["energy"] = (coefficient * self._elementwise(error)).sum()
        if self.forces_weight > 0:
            coefficient = (labels.weight * labels.forces_weight)[graph.batch]
            error = predictions["forces"] - labels.forces
            out["forces"] = (coefficient[:, None] * self._elementwise(error)).sum()
        if self.stress_weight > 0:
            coefficient = labels.weight * labels.stress_weight
            error = predictions["stress"] - labels.stress
            out["stress"] = (coefficient[:, None, None] * self._elementwise(error)).sum()
        if self.virials_weight > 0:  # per atom, as mace-torch
            coefficient = labels.weight * labels.virials_weight
            error = (predictions["virial"] - labels.virials) / sizes[:, None, None]
            out["virials"] = (coefficient[:, None, None] * self._elementwise(error)).sum()
        return out

    def combine(self, sums: dict[str, torch.Tensor], counts: dict[str, float]) -> torch.Tensor:
        """sum_k w_k * sums_k / counts_k."""
        total = None
        for term, value in sums.items():
            part = self.weights[term] * value / counts[term]
            total = part if total is None else total + part
        if total is None:
            raise ValueError("no loss term has a positive weight")
        return total

    def __call__(
        self,
        predictions: dict[str, torch.Tensor],
        labels: Labels,
        graph: AtomicGraph,
        counts: dict[str, float] | None = None,
    ) -> torch.Tensor:
        """The loss of this batch, normalised by ``counts`` (default: this batch's own)."""
        if counts is None:
            counts = batch_counts(num_atoms_per_structure(graph))
        return self.combine(self.sums(predictions, labels, graph), counts)
