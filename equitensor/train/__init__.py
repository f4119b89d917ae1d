"""Training of interatomic potentials: configuration, data preparation, losses, metrics, EMA,
checkpoints, the (optionally distributed) training loop, and the ``train``/``eval`` commands."""

from equitensor.train.config import ConfigError, TrainConfig, load_config
from equitensor.train.losses import WeightedLoss
from equitensor.train.metrics import ErrorAccumulator
from equitensor.train.trainer import TrainResult, run_training

__all__ = [
    "ConfigError",
    "ErrorAccumulator",
    "TrainConfig",
    "TrainResult",
    "WeightedLoss",
    "load_config",
    "run_training",
]
