"""Error metrics over a data set: MAE and RMSE of energy per atom (meV/atom), force components
(meV/Å) and stress components (meV/Å^3), plus the weighted loss over the whole set.

Accumulated as sums of absolute errors, squared errors and counts (float64), so that a data set
split over ranks is reduced exactly: sum the sums, then divide once (never a mean of means).
"""

from __future__ import annotations

import math

import torch

from equitensor.datasets import Labels
from equitensor.graph import AtomicGraph
from equitensor.train.losses import TERMS, WeightedLoss, batch_counts, num_atoms_per_structure

QUANTITIES = ("energy", "forces", "stress", "virials")
UNITS = {"energy": "meV/atom", "forces": "meV/Å", "stress": "meV/Å^3", "virials": "meV/atom"}


class ErrorAccumulator:
    """Running sums of errors of energy per atom, forces and stress, and of the loss terms.

    Labels with weight 0 (absent) are left out of the metrics; the loss uses the weights as in
    training.

    Example: exact forces and an energy 0.1 eV/atom too high (100 meV/atom).

    >>> from equitensor.datasets import GraphDataset, default_dataset_path, read_structures
    >>> item = GraphDataset(read_structures(default_dataset_path())[2:3], 3.0)[0]  # 32 atoms
    >>> predictions = {"energy": item.labels.energy + 3.2, "forces": item.labels.forces}
    >>> errors = ErrorAccumulator(WeightedLoss())
    >>> errors.update(predictions, item.labels, item.graph)
    >>> summary = errors.summary()
    >>> round(summary["energy_mae"], 6), summary["forces_count"], summary["forces_rmse"]
    (100.0, 96, 0.0)
    """

    def __init__(self, loss: WeightedLoss | None = None) -> None:
        self.loss = loss
        # rows: energy, forces, stress; columns: sum |e|, sum e^2, count
        self.errors = torch.zeros(len(QUANTITIES), 3, dtype=torch.float64)
        # rows: loss terms; columns: weighted sum, count
        self.loss_sums = torch.zeros(len(TERMS), 2, dtype=torch.float64)

    def update(self, predictions: dict[str, torch.Tensor], labels: Labels, graph: AtomicGraph) -> None:
        """Add one batch (predictions from the model, labels of the same structures)."""
        sizes = num_atoms_per_structure(graph)
        with torch.no_grad():
            errors = {
                "energy": _masked(
                    (predictions["energy"] - labels.energy) / sizes.to(labels.energy.dtype),
                    labels.energy_weight > 0,
                ),
                "forces": _masked(
                    predictions["forces"] - labels.forces, labels.forces_weight[graph.batch] > 0
                ),
            }
            if "stress" in predictions:
                errors["stress"] = _masked(predictions["stress"] - labels.stress, labels.stress_weight > 0)
            if "virial" in predictions:
                per_atom = (predictions["virial"] - labels.virials) / sizes.to(labels.virials.dtype)[
                    :, None, None
                ]
                errors["virials"] = _masked(per_atom, labels.virials_weight > 0)
            for row, quantity in enumerate(QUANTITIES):
                if quantity in errors:
                    e = errors[quantity].detach().to("cpu", torch.float64)
                    self.errors[row] += torch.stack(
                        [e.abs().sum(), e.square().sum(), torch.tensor(float(e.numel()))]
                    )
            if self.loss is not None:
                sums = self.loss.sums(predictions, labels, graph)
                counts = batch_counts(sizes)
                for row, term in enumerate(TERMS):
                    if term in sums:
                        self.loss_sums[row, 0] += sums[term].detach().to("cpu", torch.float64)
                    self.loss_sums[row, 1] += counts[term]

    def reduce(self, context) -> ErrorAccumulator:
        """Sum over ranks (a DistributedContext); returns self."""
        packed = torch.cat([self.errors.flatten(), self.loss_sums.flatten()])
        device = context.device if context.device.type == "cuda" else "cpu"
        packed = context.all_reduce_sum(packed.to(device)).to("cpu")
        size = self.errors.numel()
        self.errors = packed[:size].reshape(len(QUANTITIES), 3)
        self.loss_sums = packed[size:].reshape(len(TERMS), 2)
        return self

    def summary(self) -> dict[str, float]:
        """{quantity}_mae, {quantity}_rmse (meV units), {quantity}_count, and loss."""
        out: dict[str, float] = {}
        for row, quantity in enumerate(QUANTITIES):
            abs_sum, sq_sum, count = self.errors[row].tolist()
            out[f"{quantity}_count"] = int(count)
            out[f"{quantity}_mae"] = 1e3 * abs_sum / count if count else math.nan
            out[f"{quantity}_rmse"] = 1e3 * math.sqrt(sq_sum / count) if count else math.nan
        if self.loss is not None:
            total = 0.0
            for row, term in enumerate(TERMS):
                weight = self.loss.weights[term]
                value, count = self.loss_sums[row].tolist()
                if weight > 0 and count > 0:
                    total += weight * value / count
            out["loss"] = total
        return out


def _masked(error: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return error[keep]


def format_table(rows: list[dict], title: str = "") -> str:
    """A plain-text table: one row per data set (``name`` plus the keys of ``summary``)."""
    columns = [("name", "set", "{}"), ("structures", "structures", "{}")]
    for quantity in QUANTITIES:
        if any(r.get(f"{quantity}_count", 0) for r in rows):
            unit = UNITS[quantity]
            columns.append((f"{quantity}_mae", f"{quantity[0].upper()} MAE [{unit}]", "{:.2f}"))
            columns.append((f"{quantity}_rmse", f"{quantity[0].upper()} RMSE [{unit}]", "{:.2f}"))

    def cell(row: dict, key: str, form: str) -> str:
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return form.format(value)

    table = [[header for _, header, _ in columns]]
    table += [[cell(row, key, form) for key, _, form in columns] for row in rows]
    widths = [max(len(line[k]) for line in table) for k in range(len(columns))]
    lines = [
        "  ".join(text.rjust(w) if k else text.ljust(w) for k, (text, w) in enumerate(zip(line, widths)))
        for line in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(([title] if title else []) + lines)
