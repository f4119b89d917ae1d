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

from equitensor.errors import InputError
from equitensor.serialization import atomic_save, read_checked

FORMAT = "equitensor-checkpoint"
FORMAT_VERSION = 1
LAST = "last.pt"
BEST = "best.pt"
BEST_STAGE_TWO = "best_stage_two.pt"  # stage two (swa) selects its own best model


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


LOCK = ".lock"


class RunFolderLock:
    """An exclusive lock on a run folder for the life of a run (``flock`` on ``<run>/.lock``, which
    names its holder): a second run started into the same folder, even at the same moment, is
    refused instead of interleaving logs and overwriting checkpoints. Released on :meth:`release`
    or when the process ends (the kernel drops the lock, so a killed run never leaves it stale)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        import fcntl
        import socket
        import time

        path = Path(run_dir) / LOCK
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a+")  # noqa: SIM115 (held open for the life of the run)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise InputError(
                f"{Path(run_dir)} is in use by another training run ({holder}); wait for it to end, "
                "or choose another output_dir / name"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing drops the flock


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
        raise InputError(f"{path} is not an equitensor training checkpoint")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{path} has checkpoint format {state['format_version']}; this equitensor reads {FORMAT_VERSION}"
        )
    return state
