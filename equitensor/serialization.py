"""Saving and loading models as config + state_dict, never as a pickled module.

A model class in ``equitensor.models`` has a ``config`` attribute: the JSON-compatible keyword
arguments that rebuild it. The file is read with ``torch.load(weights_only=True)``, so opening
it cannot run code.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch
from torch import nn

FORMAT = "equitensor-model"
FORMAT_VERSION = 1


def model_record(model: nn.Module) -> dict:
    """What a saved model file holds: format, versions, class name, config and weights."""
    import equitensor

    if not hasattr(model, "config"):
        raise TypeError(f"{type(model).__name__} has no `config`; only equitensor.models can be saved")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "equitensor_version": equitensor.__version__,
        "model": type(model).__name__,
        "config": model.config,
        "dtype": str(parameter_dtype(model)).removeprefix("torch."),
        "state_dict": model.state_dict(),
    }


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's floating parameters (the default dtype if it has none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """A temporary file in ``path``'s folder (created if needed), opened with ``mode``, that
    replaces ``path`` when the block ends without error and is removed otherwise: a reader never
    sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save through :func:`atomic_write`: never a half-written file."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` as config + state_dict (atomically)."""
    atomic_save(model_record(model), path)


def model_from_record(record: dict, source: str = "<record>") -> nn.Module:
    """Rebuild a model from a record made by :func:`model_record`."""
    import equitensor.models

    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{source} is not an equitensor model file (no '{FORMAT}' header)")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{source} has model format {record['format_version']} (written by equitensor "
            f"{record.get('equitensor_version')}); this equitensor reads up to format {FORMAT_VERSION}"
        )
    cls = getattr(equitensor.models, record["model"], None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ValueError(f"{source} holds a {record['model']!r} model, which equitensor.models does not have")
    model = cls(**record["config"])
    dtype = record.get("dtype")
    if dtype is not None:  # before loading, so float64 weights are not rounded on the way in
        if dtype not in ("float32", "float64"):
            raise ValueError(f"{source} has parameters of dtype {dtype!r}; expected float32 or float64")
        model.to(getattr(torch, dtype))
    model.load_state_dict(record["state_dict"])
    return model


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved by :func:`save_model` (or the model inside a training checkpoint)."""
    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(f"cannot read {path} as an equitensor model file: {error}") from error
    if isinstance(record, dict) and "model_record" in record:  # a training checkpoint
        record = record["model_record"]
    return model_from_record(record, str(path))
