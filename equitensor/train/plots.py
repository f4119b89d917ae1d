"""PNG figures of a run: learning curves and parity plots (reference vs predicted).

matplotlib is imported here only, with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(history: list[dict], path: Path) -> None:
    """Loss (train and validation) and validation RMSEs of energy and forces per epoch."""
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    series = [
        (axes[0], [("train_loss", "train"), ("valid_loss", "validation")], "loss"),
        (
            axes[1],
            [("valid_energy_rmse", "validation RMSE"), ("valid_energy_mae", "validation MAE")],
            "energy error [meV/atom]",
        ),
        (
            axes[2],
            [("valid_forces_rmse", "validation RMSE"), ("valid_forces_mae", "validation MAE")],
            "force error [meV/Å]",
        ),
    ]
    for axis, keys, label in series:
        for key, name in keys:
            points = [(e, row.get(key)) for e, row in zip(epochs, history)]
            points = [(e, v) for e, v in points if isinstance(v, float) and math.isfinite(v) and v > 0]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=name)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parity_plot(arrays: dict[str, np.ndarray], path: Path, title: str) -> None:
    """Predicted vs reference energy per atom (eV/atom) and force components (eV/Å)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for axis, key, label, unit in [
        (axes[0], "energy", "energy per atom", "eV/atom"),
        (axes[1], "forces", "force components", "eV/Å"),
    ]:
        ref, pred = arrays[f"{key}_ref"], arrays[f"{key}_pred"]
        if len(ref):
            axis.scatter(ref, pred, s=4, alpha=0.5)
            low, high = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            axis.plot([low, high], [low, high], color="black", linewidth=0.8)
            rmse = float(np.sqrt(np.mean((pred - ref) ** 2)))
            axis.set_title(f"{label}: RMSE {1e3 * rmse:.1f} m{unit}")
        axis.set_xlabel(f"reference [{unit}]")
        axis.set_ylabel(f"predicted [{unit}]")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
