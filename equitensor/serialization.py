"""Saving and loading models as config + state_dict, never as a pickled module.

A model class in ``equitensor.models`` has a ``config`` attribute: the JSON-compatible keyword
arguments that rebuild it. The file is read with ``torch.load(weights_only=True)``, so opening
it cannot run code. Model files and training checkpoints carry ``sha256``, a digest of their
whole content (every tensor's bytes, dtype and shape, and every other value), checked on load:
a corrupted file is an error naming the file, never wrong numbers.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import torch
from torch import nn

from equitensor.errors import InputError

FORMAT = "equitensor-model"
FORMAT_VERSION = 2  # 2: with the sha256 content digest
CHECKSUM_KEY = "sha256"


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
    umask = os.umask(0)  # mkstemp creates 0600: give the file the mode any new file would get
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def content_digest(obj: object) -> str:
    """SHA-256 of a nested structure of dicts, lists, tensors and plain values, in a canonical
    order (dict keys sorted by their text), tensors by dtype, shape and bytes."""
    digest = hashlib.sha256()

    def visit(value: object) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        elif isinstance(value, dict):
            digest.update(f"D{len(value)}".encode())
            for key in sorted(value, key=str):
                digest.update(f"K{key!r}".encode())
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"L{len(value)}".encode())
            for item in value:
                visit(item)
        else:
            digest.update(f"V{value!r}".encode())

    visit(obj)
    return digest.hexdigest()


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` leaves when a process is killed
    mid-write (``.<name>.<random>.tmp``) below ``folder``; returns them. Call only while no other
    process writes there (e.g. holding the run-folder lock)."""
    removed = []
    for stale in Path(folder).rglob(".*.tmp"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def atomic_save(obj: dict, path: str | os.PathLike) -> None:
    """torch.save through :func:`atomic_write` (never a half-written file), with the content
    digest of ``obj`` stored under :data:`CHECKSUM_KEY`."""
    with atomic_write(path) as f:
        torch.save({**obj, CHECKSUM_KEY: content_digest(obj)}, f)


def read_checked(path: str | os.PathLike, what: str, map_location: str | torch.device = "cpu") -> dict:
    """A dict written by :func:`atomic_save`, its digest verified; ValueError saying what the file
    is not (empty, not a PyTorch archive, unreadable, corrupted)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an {what}")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{path} is empty (0 bytes), not an {what}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise InputError(f"{path} is not an {what}: not a PyTorch archive (it starts with {head!r})")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path} is not a readable {what} (corrupted or truncated?): {reason}") from error
    if not isinstance(obj, dict):
        raise InputError(f"{path} is not an {what}: it holds a {type(obj).__name__}")
    stored = obj.pop(CHECKSUM_KEY, None)
    if stored is None:
        warnings.warn(
            f"{path} has no content checksum (written by an older equitensor): its integrity is not verified",
            stacklevel=3,
        )
    elif stored != content_digest(obj):
        raise InputError(f"{path} is corrupted: its content does not match its SHA-256 checksum")
    return obj


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model`` as config + state_dict (atomically).

    >>> import os, tempfile
    >>> from equitensor.models import TensorNet
    >>> model = TensorNet(hidden_channels=4, num_layers=1, num_rbf=4, cutoff=5.0, max_z=10)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save_model(model, os.path.join(folder, "model.pt"))
    ...     sorted(os.listdir(folder))
    ['model.pt']
    """
    atomic_save(model_record(model), path)


def model_from_record(record: dict, source: str = "<record>") -> nn.Module:
    """Rebuild a model from a record made by :func:`model_record`."""
    import equitensor.models

    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{source} is not an equitensor model file (no '{FORMAT}' header)")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"{source} has model format {record['format_version']} (written by equitensor "
            f"{record.get('equitensor_version')}); this equitensor reads up to format {FORMAT_VERSION}"
        )
    cls = getattr(equitensor.models, record["model"], None)
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise InputError(f"{source} holds a {record['model']!r} model, which equitensor.models does not have")
    model = cls(**record["config"])
    dtype = record.get("dtype")
    if dtype is not None:  # before loading, so float64 weights are not rounded on the way in
        if dtype not in ("float32", "float64"):
            raise InputError(f"{source} has parameters of dtype {dtype!r}; expected float32 or float64")
        model.to(getattr(torch, dtype))
    model.load_state_dict(record["state_dict"])
    return model


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a model saved by :func:`save_model` (or the model inside a training checkpoint),
    checksum verified.

    >>> import os, tempfile
    >>> from equitensor.models import TensorNet
    >>> model = TensorNet(hidden_channels=4, num_layers=1, num_rbf=4, cutoff=5.0, max_z=10)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     save_model(model, os.path.join(folder, "model.pt"))
    ...     loaded = load_model(os.path.join(folder, "model.pt"))
    >>> type(loaded).__name__, loaded.config == model.config
    ('TensorNet', True)
    """
    record = read_checked(path, "equitensor model file", map_location)
    if "model_record" in record:  # a training checkpoint
        record = record["model_record"]
    return model_from_record(record, str(path))
