"""Optimiser and learning-rate schedule of a training run."""

from __future__ import annotations

import math

import torch
from torch import nn

from equitensor.train.config import ConfigError, TrainConfig


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (L2 weight decay) or AdamW (decoupled), amsgrad as configured (on by default, as MACE)."""
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    parameters = [p for p in model.parameters() if p.requires_grad]
    return cls(parameters, lr=config.lr, weight_decay=config.weight_decay, amsgrad=config.amsgrad)


class WarmupCosine:
    """LR factor per epoch: linear warm-up to 1, then cosine decay to ``min_factor`` at ``epochs``.

    A class (not a lambda) so the scheduler's state can be saved and checked on resume.
    """

    def __init__(self, warmup_epochs: int, epochs: int, min_factor: float) -> None:
        self.warmup_epochs, self.epochs, self.min_factor = warmup_epochs, epochs, min_factor

    def __call__(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return (epoch + 1) / (self.warmup_epochs + 1)
        span = max(1, self.epochs - self.warmup_epochs)
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """ReduceLROnPlateau on the validation loss, warm-up + cosine per epoch, or None."""
    if config.warmup_epochs and config.scheduler != "cosine":
        raise ConfigError(
            f"warmup_epochs is implemented for scheduler: cosine only, not {config.scheduler!r}"
        )
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_factor, patience=config.scheduler_patience, min_lr=config.min_lr
        )
    if config.scheduler == "cosine":
        schedule = WarmupCosine(config.warmup_epochs, config.epochs, config.min_lr / config.lr)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return None


def step_scheduler(scheduler, valid_loss: float | None) -> None:
    """Advance after an epoch: plateau steps only when there is a validation loss."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        if valid_loss is not None:
            scheduler.step(valid_loss)
    else:
        scheduler.step()


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
