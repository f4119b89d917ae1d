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

#: ``model:`` name in the training config -> class in :mod:`equitensor.models`
MODEL_CLASSES = {"mace": "MACE", "tdn": "TDN", "escn": "ESCN", "facet": "Facet", "tensornet": "TensorNet"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def model_class(name: str) -> type[nn.Module]:
    cls = getattr(equitensor.models, MODEL_CLASSES[name], None)
    if cls is None:
        raise ConfigError(
            f"model {name!r}: equitensor.models has no {MODEL_CLASSES[name]} in this installation"
        )
    return cls


def constructor_arguments(cls: type) -> list[str]:
    """The named arguments of ``cls``, including those its ``**kwargs`` pass on to its base class
    (e.g. TDN's MACE arguments)."""
    names: list[str] = []
    for klass in cls.__mro__:
        parameters = inspect.signature(klass.__init__).parameters.values()
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names += [p.name for p in parameters if p.kind in named and p.name != "self" and p.name not in names]
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters):
            return names
    return names


def build_model(
    config: TrainConfig,
    atomic_numbers: list[int],
    e0s: dict[int, float],
    avg_num_neighbors: float,
    scale: float,
    shift: float,
) -> nn.Module:
    """The model of ``config.model`` with ``config.model_kwargs`` passed through.

    The elements, cutoff, E0s, scale/shift (and the message-passing models' avg_num_neighbors)
    come from the data and the top-level config keys; setting them in model_kwargs as well is an
    error. ``backend`` goes to models with a ``backend`` argument (MACE, eSCN, Facet).
    """
    cls = model_class(config.model)
    derived = {
        "atomic_numbers": list(atomic_numbers),
        "atomic_energies": [e0s[z] for z in atomic_numbers],
        "scale": scale,
        "shift": shift,
    }
    if config.model == "tensornet":
        derived.update(cutoff=config.r_max, dtype=config.dtype)
    else:
        derived.update(r_max=config.r_max, avg_num_neighbors=avg_num_neighbors)
        if config.backend is not None:
            if "backend" not in inspect.signature(cls.__init__).parameters:
                raise ConfigError(
                    f"model {config.model!r} sets its own backend; remove backend: {config.backend}"
                )
            derived["backend"] = config.backend
    kwargs = dict(config.model_kwargs)
    clash = sorted(set(kwargs) & set(derived))
    if clash:
        raise ConfigError(
            f"model_kwargs sets {', '.join(clash)}, which the trainer sets from the data or from "
            "top-level keys (r_max, dtype, backend, e0s, scaling)"
        )
    valid = [name for name in constructor_arguments(cls) if name not in derived]
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
    MACE's avg_num_neighbors are kept; ``model_kwargs`` are not used), in ``config.dtype``; elements
    of the data it does not know are added (:func:`grow_elements`), and ``r_max`` must be its cutoff.
    ``freeze``: parameters whose names match any of these fnmatch patterns are not trained (each
    pattern must match one).
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
        known = model_elements(model)
        extra = [z for z in atomic_numbers if z not in known]
        if extra:
            e0s = statistics[0]
            if config.model == "tensornet" and model.config["atomic_numbers"] is None:
                raise ConfigError(
                    f"init_from {config.init_from} covers Z < max_z; the data have {extra} beyond it"
                )
            grown_config = dict(model.config)
            grown_config["atomic_numbers"] = known + extra
            grown_config["atomic_energies"] = list(model.config["atomic_energies"] or [0.0] * len(known)) + [
                e0s[z] for z in extra
            ]
            bigger = type(model)(**grown_config).to(DTYPES[config.dtype])
            grown = grow_elements(model, bigger)
            model = bigger
            notes.append(
                f"new elements {extra}: fresh weights in {', '.join(grown)}, E0s from the data; every weight "
                "of the old elements kept (rescaled where a layer normalises by the element count), so "
                "their energies are unchanged"
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


def _element_rows(old: torch.Tensor, new: torch.Tensor, count: int, axis: int, factor: float = 1.0) -> None:
    """new[..., :count, ...] (along ``axis``) = old * factor: the old elements' weights."""
    new.narrow(axis, 0, count).copy_(old * factor)


def grow_elements(old: nn.Module, new: nn.Module) -> list[str]:
    """Copy a trained model ``old`` into ``new``, the same architecture built with more elements
    (``old``'s elements first, in their order). Every weight of the old elements is kept, scaled
    where a layer normalises by the number of elements (the skip tensor products' and the node
    embedding's fan-in), so the old elements' energies are unchanged; the new elements keep
    ``new``'s fresh initial weights. Returns the names of the element-dependent parameters.
    """
    from equitensor.nn import Linear, SymmetricContraction
    from equitensor.tp import TensorProduct

    count = len(model_elements(old))
    old_modules = dict(old.named_modules())
    grown = set()
    with torch.no_grad():
        for name, module in new.named_modules():
            previous = old_modules.get(name)
            prefix = f"{name}." if name else ""
            if isinstance(module, Linear) and module.irreps_in != previous.irreps_in:  # the node embedding
                offset_new = offset_old = 0
                for shape_new, shape_old, c_new, c_old in zip(
                    module.path_shapes,
                    previous.path_shapes,
                    module.path_coefficients,
                    previous.path_coefficients,
                ):
                    size_new, size_old = shape_new[0] * shape_new[1], shape_old[0] * shape_old[1]
                    view_new = module.weight[offset_new : offset_new + size_new].view(shape_new)
                    view_old = previous.weight[offset_old : offset_old + size_old].view(shape_old)
                    _element_rows(view_old, view_new, count, 0, c_old / c_new)
                    offset_new, offset_old = offset_new + size_new, offset_old + size_old
                grown.add(prefix + "weight")
            elif isinstance(module, TensorProduct) and module.spec.irreps_in2 != previous.spec.irreps_in2:
                for (_, ins, view_new), (_, ins_old, view_old) in zip(
                    module.weight_views(yield_instruction=True), previous.weight_views(yield_instruction=True)
                ):
                    _element_rows(view_old, view_new, count, 1, ins_old.coefficient / ins.coefficient)
                grown.add(prefix + "weight")
            elif isinstance(module, SymmetricContraction) and module.num_elements != previous.num_elements:
                for pname, parameter in module.named_parameters():
                    _element_rows(dict(previous.named_parameters())[pname], parameter, count, 0)
                    grown.add(prefix + pname)
            elif isinstance(module, nn.Embedding) and module.num_embeddings != previous.num_embeddings:
                _element_rows(previous.weight, module.weight, count, 0)
                grown.add(prefix + "weight")
        old_parameters = dict(old.named_parameters())
        for pname, parameter in new.named_parameters():
            if pname in grown:
                continue
            if parameter.shape != old_parameters[pname].shape:
                raise ConfigError(f"cannot grow the element set: {pname} changes shape in a way not handled")
            parameter.copy_(old_parameters[pname])
        new.atomic_energies[:count] = old.atomic_energies.to(new.atomic_energies.dtype)
        for buffer in ("scale", "shift"):
            getattr(new, buffer).copy_(getattr(old, buffer))
    return sorted(grown)
