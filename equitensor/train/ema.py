"""Averages of model weights, used for validation and for saved models: the exponential moving
average of every step, and the equal-weight average of stage two (stochastic weight averaging).

shadow <- d * shadow + (1 - d) * weights after every optimiser step, with the warm-up
d = min(decay, (1 + n) / (10 + n)) after n updates (as torch_ema, which MACE uses), so early
averages are not dominated by the random initial weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ExponentialMovingAverage:
    """EMA of a model's floating-point parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.num_updates = 0
        self.shadow = [p.detach().clone() for p in self._parameters(model)]

    @staticmethod
    def _parameters(model: nn.Module) -> list[torch.Tensor]:
        return [p for p in model.parameters() if p.requires_grad]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        for shadow, p in zip(self.shadow, self._parameters(model)):
            shadow.lerp_(p.detach(), 1.0 - decay)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Inside the block the model holds the averaged weights; its own are restored after."""
        params = self._parameters(model)
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, shadow in zip(params, self.shadow):
                p.copy_(shadow)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, original in zip(params, saved):
                    p.copy_(original)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": list(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(
                f"EMA state has {len(state['shadow'])} tensors, the model has {len(self.shadow)} parameters"
            )
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for shadow, saved in zip(self.shadow, state["shadow"]):
            shadow.copy_(saved)


class StochasticWeightAverage(ExponentialMovingAverage):
    """The equal-weight average of the weights at every update (Izmailov et al.'s SWA, mace-torch's
    ``--swa`` averaging): shadow <- shadow + (weights - shadow) / (n + 1). The trainer updates it at
    the end of every stage-two epoch. (torch.optim.swa_utils.AveragedModel computes the same mean
    on a deep copy of the model; this keeps one copy of the weights, swapped in like the EMA.)"""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, decay=0.0)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.num_updates += 1
        for shadow, p in zip(self.shadow, self._parameters(model)):
            shadow.lerp_(p.detach(), 1.0 / self.num_updates)
