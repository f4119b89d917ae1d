"""The training configuration: defaults, YAML loading, dotted ``key=value`` overrides and checks.

Every key has a default, so a YAML of a few lines (``model``, ``train_file``, ``r_max``,
``epochs``) is a complete configuration. Unknown keys are errors that name the valid ones: a typo
must never be ignored silently. Values given on the command line are parsed as YAML scalars, so
``epochs=5``, ``lr=1e-3``, ``e0s={29: -0.1}`` and ``model_kwargs.num_channels=32`` all work.
"""

from __future__ import annotations

import difflib
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from equitensor.errors import InputError


class ConfigError(InputError):
    """A configuration that cannot be used; the message names the key and what is allowed.

    >>> try:
    ...     load_config(None, ["model=schnet"])
    ... except ConfigError as error:
    ...     print(error)
    quickstart preset with overrides: model must be one of mace, tdn, escn, facet, tensornet, got 'schnet'
    """


CHOICES = {
    "model": ("mace", "tdn", "escn", "facet", "tensornet"),
    "dtype": ("float32", "float64"),
    "scaling": ("rms_forces", "none"),
    "shift": ("zero", "mean"),
    "loss": ("mse", "huber"),
    "optimizer": ("adam", "adamw"),
    "scheduler": ("plateau", "cosine", "none"),
    "progress": ("auto", "true", "false"),
    "tensorboard": ("auto", "true", "false"),
}
E0S_METHODS = ("auto", "isolated", "least_squares")


@dataclass
class TrainConfig:
    """Everything ``equitensor train`` reads from the YAML file (units: Å, eV).

    Model: ``model`` (mace | tdn | escn | facet | tensornet, the classes of
    :mod:`equitensor.models`), ``model_kwargs`` (constructor arguments passed through, e.g.
    num_channels, max_L, rank, lmax, mmax, hidden_channels), ``backend`` (the edge-convolution
    backend of MACE, eSCN and Facet; TensorNet's torch | sparse), ``r_max`` (cutoff, Å), ``dtype``.
    Data: ``train_file`` (default: the shipped CuNi EMT set), ``valid_file`` or
    ``valid_fraction``, ``test_file``, label keys, ``e0s`` (auto | isolated | least_squares | a
    {Z or symbol: eV} dict), ``scaling`` (rms_forces: scale = RMS force component, MACE's default),
    ``shift`` (zero, MACE's default: a MACE model then gives isolated atoms exactly their E0; or
    mean: the mean training energy per atom above the E0s, as ScaleShiftMACE with a shift).
    Loss: ``loss`` (mse | huber), ``huber_delta``, ``{energy,forces,stress,virials}_weight`` (energy and
    virials per atom, as mace-torch; virials from the ``virials_key`` / ``virial`` labels).
    Optimisation: ``epochs``, ``batch_size``, ``max_atoms_per_batch``, ``optimizer`` (adam | adamw,
    ``amsgrad``), ``lr``, ``weight_decay``, ``scheduler`` (plateau | cosine | none), ``lr_factor``,
    ``scheduler_patience``, ``warmup_epochs``, ``min_lr``, ``ema``/``ema_decay``, ``clip_grad``.
    Stage two (mace-torch's ``--swa``): with ``swa: true``, after ``swa_start`` epochs (default the
    first 75%) the loss weights become ``swa_{energy,forces,stress}_weight`` (energy-heavy; stress
    default unchanged) and the learning rate ``swa_lr`` (no scheduler from then on); stage two keeps
    its own best model (``checkpoints/best_stage_two.pt``, the one saved and evaluated at the end);
    ``swa_average: true`` also validates and saves the equal-weight average of the weights at the
    end of every stage-two epoch.
    Run: ``seed``, ``device`` (auto | cpu | cuda | cuda:N), ``eval_interval`` (epochs),
    ``patience`` (early stopping, in evaluations), ``checkpoint_every_steps`` (0: per epoch only),
    ``output_dir``, ``name``, ``progress``, ``plots``, ``num_threads``, ``num_workers`` (processes
    that read and collate the next batches, torch's DataLoader; 0: in the training process),
    ``persistent_workers`` (kept between epochs), ``deterministic`` (torch's deterministic
    algorithms: runs with the same seed are bit-identical with several CPU threads too; without it a
    scatter's summation order varies), ``tensorboard`` (auto: event
    files in ``RUN/tensorboard`` when the ``tensorboard`` package is installed, true: required,
    false: none). The resolved configuration is written to ``RUN/config.yaml`` at every start.

    Example: every key has a default; a run folder defaults to ``runs/NAME``.

    >>> config = TrainConfig(model="tensornet", r_max=4.5, epochs=10, name="water")
    >>> config.run_dir.as_posix(), config.forces_weight, config.dtype
    ('runs/water', 100.0, 'float64')
    >>> config.to_dict()["model_kwargs"]
    {}
    """

    model: str = "mace"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    freeze: list[str] | None = None
    backend: str | None = None
    r_max: float = 5.0
    dtype: str = "float64"

    train_file: str | None = None
    valid_file: str | None = None
    valid_fraction: float = 0.1
    test_file: str | None = None
    energy_key: str | None = None
    forces_key: str | None = None
    stress_key: str | None = None
    virials_key: str | None = None
    e0s: Any = "auto"
    scaling: str = "rms_forces"
    shift: str = "zero"

    loss: str = "mse"
    huber_delta: float = 0.01
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    stress_weight: float = 0.0
    virials_weight: float = 0.0

    epochs: int = 100
    batch_size: int = 10
    valid_batch_size: int = 20
    max_atoms_per_batch: int | None = None
    optimizer: str = "adam"
    amsgrad: bool = True
    lr: float = 0.01
    weight_decay: float = 0.0
    scheduler: str = "plateau"
    lr_factor: float = 0.8
    scheduler_patience: int = 50
    warmup_epochs: int = 0
    min_lr: float = 0.0
    ema: bool = True
    ema_decay: float = 0.99
    clip_grad: float | None = 10.0
    swa: bool = False
    swa_start: int | None = None
    swa_lr: float = 1e-3
    swa_energy_weight: float = 1000.0
    swa_forces_weight: float = 100.0
    swa_stress_weight: float | None = None
    swa_average: bool = False

    seed: int = 0
    device: str = "auto"
    eval_interval: int = 1
    patience: int | None = None
    checkpoint_every_steps: int = 0
    output_dir: str | None = None
    name: str | None = None
    progress: str | bool = "auto"
    tensorboard: str | bool = "auto"
    plots: bool = True
    num_threads: int | None = None
    num_workers: int = 0
    deterministic: bool = True
    persistent_workers: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def run_name(self) -> str:
        return self.name or "run"

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.run_name


# Keys whose change would make a resumed run a different run.
RESUME_FIXED_KEYS = (
    "model",
    "model_kwargs",
    "init_from",
    "freeze",
    "backend",
    "r_max",
    "dtype",
    "train_file",
    "valid_file",
    "valid_fraction",
    "energy_key",
    "forces_key",
    "stress_key",
    "virials_key",
    "e0s",
    "scaling",
    "shift",
    "seed",
    "batch_size",
    "max_atoms_per_batch",
    "optimizer",
    "scheduler",
    "amsgrad",  # in the optimiser's saved state
    "ema",  # the EMA weights are part of the run's state
    "swa",  # stage two's start, averaging and best model are part of the run's state
    "swa_start",
    "swa_average",
    "lr_factor",  # in the plateau scheduler's saved state
    "scheduler_patience",
    "min_lr",
    "warmup_epochs",
)
# With scheduler: cosine, the schedule itself (in its saved state) depends on these too.
RESUME_FIXED_KEYS_COSINE = ("lr", "epochs")

# Small enough to train on 2 CPU cores in a couple of minutes (README's main job): MACE with 16
# scalar channels (max_L 0, as MACE-MP "small"), float32. The energy and stress weights are
# raised from MACE's defaults because the run is short: stresses in eV/Å^3 are ~50x smaller
# numbers than forces in eV/Å, so a weight of 1-10 leaves them unfitted.
QUICKSTART = {
    "name": "quickstart",
    "model": "mace",
    "model_kwargs": {
        "num_channels": 16,
        "max_L": 0,
        "max_ell": 2,
        "correlation": 2,
        "radial_MLP": [32, 32],
    },
    "r_max": 4.0,
    "dtype": "float32",
    "epochs": 15,
    "batch_size": 5,
    "lr": 0.01,
    "energy_weight": 100.0,
    "stress_weight": 1000.0,
}


def _types_of(hint: Any) -> tuple[type, ...]:
    """The Python types a YAML value may have for a type hint: unions and ``X | None`` give each
    member, ``list[str]``/``dict[str, Any]`` their container, ``Literal`` its values' types, a
    float field also takes an int, ``Any`` everything."""
    if hint is Any:
        return (object,)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(hint) for t in _types_of(arg))
    if origin is typing.Literal:
        return tuple({type(value) for value in typing.get_args(hint)})
    if origin is not None:
        return (origin,)
    if hint is float:
        return (int, float)
    return (hint,)


def _allowed_types(name: str) -> tuple[type, ...]:
    """Python types a YAML value may have for the field ``name`` (from its type hint)."""
    return _types_of(typing.get_type_hints(TrainConfig)[name])


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join(sorted({"null" if t is type(None) else t.__name__ for t in types}))


def _unknown_key_message(keys: Sequence[str], valid: Sequence[str], where: str) -> str:
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, valid, n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{where}: unknown key(s) {', '.join(hints)}; valid keys: {', '.join(valid)}"


def _yaml_float(text: str) -> float | str:
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string; a float field takes it as the number."""
    try:
        return float(text)
    except ValueError:
        return text


def config_from_dict(values: Mapping[str, Any], where: str = "config") -> TrainConfig:
    """A checked TrainConfig from a mapping; unknown keys and wrong types are ConfigErrors."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of key: value, got {type(values).__name__}")
    valid = [f.name for f in fields(TrainConfig)]
    unknown = [k for k in values if k not in valid]
    if unknown:
        raise ConfigError(_unknown_key_message([str(k) for k in unknown], valid, where))
    values = dict(values)
    for key, value in values.items():
        types = _allowed_types(key)
        if float in types and isinstance(value, str):
            value = values[key] = _yaml_float(value)
        wrong_bool = isinstance(value, bool) and bool not in types and object not in types
        if wrong_bool or not isinstance(value, types):
            raise ConfigError(f"{where}: {key} must be {_type_name(types)}, got {value!r}")
    config = TrainConfig(**values)
    if isinstance(config.r_max, int):
        config.r_max = float(config.r_max)
    check_config(config, where)
    return config


def _non_finite(value: Any, key: str) -> list[str]:
    """Dotted keys of the NaN/inf numbers in ``value`` (nested mappings and lists included)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [key]
    if isinstance(value, Mapping):
        return [k for name, item in value.items() for k in _non_finite(item, f"{key}.{name}")]
    if isinstance(value, (list, tuple)):
        return [k for i, item in enumerate(value) for k in _non_finite(item, f"{key}[{i}]")]
    return []


def check_config(config: TrainConfig, where: str = "config") -> None:
    """Value checks beyond types: finite numbers, choices, ranges and combinations."""
    bad = [k for f in fields(TrainConfig) for k in _non_finite(getattr(config, f.name), f.name)]
    if bad:
        values = ", ".join(f"{k}" for k in bad)
        raise ConfigError(f"{where}: {values} must be finite (got NaN or infinity)")
    for key, choices in CHOICES.items():
        value = getattr(config, key)
        if isinstance(value, bool) and key in ("progress", "tensorboard"):
            setattr(config, key, "true" if value else "false")
            continue
        if value not in choices:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(choices)}, got {value!r}")
    positive = ("r_max", "epochs", "batch_size", "valid_batch_size", "lr", "eval_interval", "huber_delta")
    for key in positive:
        if getattr(config, key) <= 0:
            raise ConfigError(f"{where}: {key} must be > 0, got {getattr(config, key)!r}")
    non_negative = (
        "energy_weight",
        "forces_weight",
        "stress_weight",
        "virials_weight",
        "weight_decay",
        "warmup_epochs",
        "min_lr",
        "checkpoint_every_steps",
        "scheduler_patience",
    )
    for key in non_negative:
        if getattr(config, key) < 0:
            raise ConfigError(f"{where}: {key} must be >= 0, got {getattr(config, key)!r}")
    if config.energy_weight == config.forces_weight == config.stress_weight == config.virials_weight == 0:
        raise ConfigError(
            f"{where}: energy_weight, forces_weight, stress_weight and virials_weight are all 0: "
            "nothing to fit"
        )
    if not 0 <= config.valid_fraction < 1:
        raise ConfigError(f"{where}: valid_fraction must be in [0, 1), got {config.valid_fraction}")
    if config.valid_file is None and config.valid_fraction == 0:
        raise ConfigError(
            f"{where}: give valid_file or a valid_fraction > 0 (validation chooses the best model)"
        )
    if not 0 <= config.ema_decay < 1:
        raise ConfigError(f"{where}: ema_decay must be in [0, 1), got {config.ema_decay}")
    if config.patience is not None and config.patience < 1:
        raise ConfigError(f"{where}: patience must be >= 1 or null, got {config.patience}")
    if config.clip_grad is not None and config.clip_grad <= 0:
        raise ConfigError(f"{where}: clip_grad must be > 0 or null, got {config.clip_grad}")
    if config.max_atoms_per_batch is not None and config.max_atoms_per_batch < 1:
        raise ConfigError(f"{where}: max_atoms_per_batch must be >= 1 or null")
    if config.num_threads is not None and config.num_threads < 1:
        raise ConfigError(f"{where}: num_threads must be >= 1 or null")
    e0s = config.e0s
    if not (isinstance(e0s, dict) or e0s in E0S_METHODS):
        raise ConfigError(
            f"{where}: e0s must be one of {', '.join(E0S_METHODS)} "
            f"or a mapping {{Z or symbol: eV}}, got {e0s!r}"
        )
    if config.swa:
        start = stage_two_start(config)
        if not 0 < start < config.epochs:
            raise ConfigError(
                f"{where}: stage two must start after epoch 0 and before the last ({config.epochs}), "
                f"got swa_start={start}"
            )
        if config.swa_lr <= 0:
            raise ConfigError(f"{where}: swa_lr must be > 0, got {config.swa_lr}")
    if config.backend is not None and config.model == "tensornet":
        from equitensor.models.tensornet import BACKENDS

        if config.backend not in BACKENDS:
            raise ConfigError(
                f"{where}: TensorNet's backend (how messages are summed) must be one of "
                f"{', '.join(BACKENDS)}, got {config.backend!r}"
            )


def stage_two_start(config: TrainConfig) -> int:
    """Epochs of stage one: ``swa_start``, by default the first 75% (mace-torch's default)."""
    return config.swa_start if config.swa_start is not None else max(1, config.epochs * 3 // 4)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({error})") from error
    return path, value


def apply_overrides(values: dict, overrides: Sequence[str]) -> dict:
    """A copy of ``values`` with every dotted ``key=value`` override set (nested dicts created)."""
    result = yaml.safe_load(yaml.safe_dump(values))  # deep copy of plain data
    for text in overrides:
        path, value = parse_override(text)
        target = result
        for part in path[:-1]:
            current = target.get(part)
            if current is None:
                current = target[part] = {}
            if not isinstance(current, dict):
                raise ConfigError(f"override {text!r}: {part!r} is {current!r}, not a mapping")
            target = current
        target[path[-1]] = value
    return result


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The configuration from a YAML file (or the quickstart preset when ``path`` is None),
    with command-line overrides applied last.

    Example: the quickstart preset with two overrides (a YAML file's path works the same way).

    >>> config = load_config(None, ["epochs=2", "model_kwargs.num_channels=8"])
    >>> config.name, config.model, config.epochs, config.model_kwargs["num_channels"], config.r_max
    ('quickstart', 'mace', 2, 8, 4.0)
    """
    if path is None:
        values: dict = dict(QUICKSTART)
        where = "quickstart preset"
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from error
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
        values.setdefault("name", path.stem)
        where = str(path)
    values = apply_overrides(values, overrides)
    return config_from_dict(values, where if not overrides else f"{where} with overrides")
