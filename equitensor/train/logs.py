"""What a run writes as it goes: a text log, the resolved configuration as YAML, the per-epoch
history as CSV and JSON, and the same per-epoch scalars as TensorBoard event files.

Only the main rank writes. The history files are rewritten whole after every epoch (atomically),
so after a resume they hold exactly the epochs of the checkpoint the run continued from.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog:
    """Prints messages (main rank only) and appends them to ``train.log`` in the run folder."""

    def __init__(self, run_dir: Path | None, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self.path = None if run_dir is None else Path(run_dir) / "train.log"
        if self.enabled and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        print(message, file=self.stream, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(message + "\n")


def write_history(history: list[dict], run_dir: Path) -> None:
    """``metrics.csv`` and ``metrics.json``: one row per epoch."""
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in history:
        writer.writerow({key: row.get(key, "") for key in columns})
    _atomic_write_text(Path(run_dir) / "metrics.csv", buffer.getvalue())
    safe = [{key: _json_safe(value) for key, value in row.items()} for row in history]
    _atomic_write_text(Path(run_dir) / "metrics.json", json.dumps(safe, indent=1) + "\n")


def write_json(path: Path, data) -> None:
    def clean(value):
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return _json_safe(value)

    _atomic_write_text(Path(path), json.dumps(clean(data), indent=1) + "\n")


def write_text(path: Path, text: str) -> None:
    _atomic_write_text(Path(path), text)


def write_config(config, run_dir: Path) -> None:
    """``config.yaml``: the resolved configuration this (re)start runs with, every key present."""
    import yaml

    _atomic_write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))


class TensorBoardLog:
    """Per-epoch scalars as TensorBoard event files in ``RUN/tensorboard`` (``torch.utils.tensorboard``).

    ``mode``: "auto" writes them when the ``tensorboard`` package is installed, "true" requires it
    (ConfigError naming the extra otherwise), "false" writes none. A resumed run purges the events
    after the epoch it continues from, so the curves hold exactly the checkpoint's epochs.
    """

    def __init__(self, run_dir: Path, mode: str, first_epoch: int, enabled: bool = True) -> None:
        self.writer = None
        self.reason = "tensorboard=false"
        if mode == "false" or not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            if mode == "true":
                from equitensor.train.config import ConfigError

                raise ConfigError(
                    "tensorboard=true needs the tensorboard package: pip install 'equitensor[tensorboard]' "
                    f"({error})"
                ) from None
            self.reason = "the tensorboard package is not installed (pip install 'equitensor[tensorboard]')"
            return
        self.path = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(str(self.path), purge_step=first_epoch + 1 if first_epoch else None)

    def epoch(self, row: dict) -> None:
        """Every numeric value of an epoch's history row, at step = the epoch number."""
        if self.writer is None:
            return
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(
                    key.replace("_", "/", 1) if key.startswith(("train_", "valid_")) else key, value, step
                )
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
