"""Activations rescaled to unit second moment under a standard normal input, as e3nn does.

e3nn (and so MACE's radial MLP and readout) multiplies an activation ``f`` by
``c = <f(z)^2>^(-1/2)``, ``z ~ N(0, 1)``, so that unit-variance pre-activations give
unit-variance outputs. e3nn estimates ``<f(z)^2>`` by Monte Carlo with a fixed seed; we do the
same, so the same weights give the same numbers as e3nn and MACE (the exact Gaussian integral
differs from that estimate by about 0.2% for SiLU).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import torch
from torch import nn

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


@cache
def second_moment_scale(name: str) -> float:
    """``<f(z)^2>^(-1/2)`` for the named activation, e3nn's estimate (10^6 samples, seed 0, float64)."""
    f = activation_function(name)
    generator = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(1_000_000, generator=generator, dtype=torch.float64)
    return f(z).pow(2).mean().pow(-0.5).item()


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called ``name`` (one of ``silu``, ``tanh``, ``sigmoid``)."""
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}") from None


class NormalizedActivation(nn.Module):
    """``f(x) * c`` with ``c`` making the second moment 1 for normal inputs (e3nn's ``normalize2mom``).

    The factor is skipped when it is within 1e-4 of 1, as in e3nn.

    >>> act = NormalizedActivation("silu")
    >>> round(act.scale, 3)
    1.679
    >>> z = torch.randn(100_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> round(act(z).pow(2).mean().item(), 1)  # unit second moment
    1.0
    """

    def __init__(self, name: str = "silu") -> None:
        super().__init__()
        self.name = name
        self.function = activation_function(name)
        scale = second_moment_scale(name)
        self.scale = 1.0 if abs(scale - 1.0) < 1e-4 else scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.function(x)
        return y if self.scale == 1.0 else y * self.scale

    def extra_repr(self) -> str:
        return f"{self.name}, scale={self.scale:.6f}"
