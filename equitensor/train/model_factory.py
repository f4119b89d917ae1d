"""Build the model a config asks for, with the statistics of its training data (or start from a
trained one: ``init_from``, with ``freeze`` patterns), and load trained models back in their
training dtype."""

from __future__ import annotations

import fnmatch
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


def model_elements(model: nn.Module) -> list[int]:
    """The atomic numbers a model knows."""
    elements = getattr(model, "elements", None)
    return list(elements) if elements is not None else list(model.config["atomic_numbers"])


def initial_model(config: TrainConfig, atomic_numbers: list[int], *statistics) -> tuple[nn.Module, list[str]]:
    """The model training starts from, and what was done, for the log.

    Without ``init_from``: :func:`build_model` (``statistics``: e0s, avg_num_neighbors, scale,
    shift). With it: the trained model file, whole (architecture, weights, E0s, scale and shift,
    MACE's avg_num_neighbors are kept; ``model_kwargs`` are not used), in ``config.dtype``; the data
    may hold only elements it knows (a larger element set is refused: not supported yet), and
    ``r_max`` must be its cutoff. ``freeze``: parameters whose names match any of these fnmatch
    patterns are not trained (each pattern must match one).
    """
    notes = []
    if config.init_from is None:
        model = build_model(config, atomic_numbers, *statistics)
    else:
        from equitensor.serialization import load_model

        model = load_model(config.init_from)
        expected = MODEL_CLASSES[config.model]
        if type(model).__name__ != expected:
            raise ConfigError(
                f"init_from {config.init_from} is a {type(model).__name__}, but model: {config.model}"
            )
        unknown = sorted(set(atomic_numbers) - set(model_elements(model)))
        if unknown:
            raise ConfigError(
                f"init_from {config.init_from} knows elements {model_elements(model)}, the data also have "
                f"{unknown}: growing a model's element set is not supported yet"
            )
        if abs(float(model.r_max) - config.r_max) > 1e-12:
            raise ConfigError(
                f"init_from {config.init_from} has cutoff {model.r_max} Å but r_max = {config.r_max}: "
                f"set r_max={model.r_max}"
            )
        model = model.to(DTYPES[config.dtype])
        notes.append(
            f"init_from {config.init_from}: its architecture, weights, E0s, scale and shift are kept "
            "(model_kwargs and the data's E0s/scale are not used)"
        )
    for pattern in config.freeze or []:
        matched = [name for name, _ in model.named_parameters() if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            names = ", ".join(name for name, _ in list(model.named_parameters())[:8])
            raise ConfigError(
                f"freeze pattern {pattern!r} matches no parameter (names look like: {names}, ...)"
            )
        for name, parameter in model.named_parameters():
            if name in matched:
                parameter.requires_grad_(False)
    if config.freeze:
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        notes.append(
            f"freeze {config.freeze}: {frozen} of {sum(p.numel() for p in model.parameters())} weights frozen"
        )
    return model, notes
