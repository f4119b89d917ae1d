"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint holds the raw model weights, optimiser, scheduler and EMA states, the RNG states,
the position in the run (epoch, step inside the epoch, partial epoch sums), the best validation
loss so far and the per-epoch history. It also holds ``model_record`` (the EMA weights when EMA
is on: the model that is validated and saved), so ``equitensor.load_model`` opens checkpoints
too. Files are read with ``torch.load(weights_only=True)``: opening one cannot run code; their
SHA-256 content digest is checked (see :mod:`equitensor.serialization`).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from equitensor.serialization import atomic_save, read_checked

FORMAT = "equitensor-checkpoint"
FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def rng_state() -> dict:
    """Torch (CPU and CUDA), NumPy and Python RNG states as weights_only-loadable values."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    atomic_save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, path)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint written by :func:`save_checkpoint`; ValueError if the file is something else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    state = read_checked(path, "equitensor training checkpoint")
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} is not an equitensor training checkpoint")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format {state['format_version']}; this equitensor reads {FORMAT_VERSION}"
        )
    return state
