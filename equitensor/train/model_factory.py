"""Build the model a config asks for, with the statistics of its training data, and load trained
models back in their training dtype."""

from __future__ import annotations

import inspect

import torch
from torch import nn

import equitensor.models
from equitensor.train.config import ConfigError, TrainConfig

MODEL_CLASSES = {"mace": "MACE", "tensornet": "TensorNet"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def model_class(name: str) -> type[nn.Module]:
    cls = getattr(equitensor.models, MODEL_CLASSES[name], None)
    if cls is None:
        raise ConfigError(
            f"model {name!r}: equitensor.models has no {MODEL_CLASSES[name]} in this installation"
        )
    return cls


def build_model(
    config: TrainConfig,
    atomic_numbers: list[int],
    e0s: dict[int, float],
    avg_num_neighbors: float,
    scale: float,
    shift: float,
) -> nn.Module:
    """The model of ``config.model`` with ``config.model_kwargs`` passed through.

    The elements, cutoff, E0s, scale/shift (and MACE's avg_num_neighbors) come from the data and
    the top-level config keys; setting them in model_kwargs as well is an error.
    """
    cls = model_class(config.model)
    derived = {
        "atomic_numbers": list(atomic_numbers),
        "atomic_energies": [e0s[z] for z in atomic_numbers],
        "scale": scale,
        "shift": shift,
    }
    if config.model == "mace":
        derived.update(r_max=config.r_max, avg_num_neighbors=avg_num_neighbors)
        if config.backend is not None:
            derived["backend"] = config.backend
    else:
        derived.update(cutoff=config.r_max, dtype=config.dtype)
    kwargs = dict(config.model_kwargs)
    clash = sorted(set(kwargs) & set(derived))
    if clash:
        raise ConfigError(
            f"model_kwargs sets {', '.join(clash)}, which the trainer sets from the data or from "
            "top-level keys (r_max, dtype, backend, e0s, scaling)"
        )
    parameters = inspect.signature(cls.__init__).parameters
    valid = [name for name in parameters if name != "self" and name not in derived]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ConfigError(
            f"model_kwargs: {cls.__name__} has no argument(s) {', '.join(unknown)}; valid: {', '.join(valid)}"
        )
    try:
        model = cls(**derived, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"model_kwargs: {cls.__name__} rejected the arguments: {error}") from error
    return model.to(DTYPES[config.dtype])
