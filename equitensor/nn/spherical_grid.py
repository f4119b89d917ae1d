"""Pointwise functions of spherical-signal features on an S2 grid: eSCN/EquiformerV2's S2
activation (:class:`GridActivation`) and Facet's grid MLP (:class:`GridMLP`).

Features ``C x (0e + 1o + 2e + ... + Le)`` (one multiplicity, spherical-signal parities) are C
functions on the sphere, ``f_c(s) = sum_lm x_{c,lm} Y_lm(s) / (L + 1)`` with 'component'
harmonics (so unit-variance features give unit-variance samples). They are sampled on a
Gauss-Legendre x uniform grid (:func:`equitensor.tp.backends.grid.s2_grid`), transformed pointwise,
and projected back with the quadrature weights, ``x_lm = (L + 1) / (4 pi) sum_g w_g f(g) Y_lm(g)``.

Exactness. The round trip is the identity and a polynomial of degree k in the samples is
projected exactly when the grid integrates degree ``(k + 1) L`` exactly. A non-polynomial function
(SiLU, an MLP) creates every degree, and projecting back truncates it through a finite grid: the
result is equivariant only approximately, with an error that shrinks with the resolution (the same
class as eSCN's and EquiformerV2's S2 activations). ``equivariance_error()`` measures it (random
rotations and reflections, float64) so models can report it. The default resolution integrates
degree ``8 L`` exactly (terms of the function up to degree 7 are exact): about 1e-4 relative
error for SiLU or a small MLP at L = 1..4, against about 1e-2 at degree ``4 L``; its ``n_phi`` is
even, so the inversion ``s -> -s`` maps the grid onto itself and reflections cost nothing extra.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from equitensor.irreps import Irreps, IrrepsLike
from equitensor.nn.activation import NormalizedActivation
from equitensor.o3 import spherical_harmonics
from equitensor.o3.rotations import rand_matrix
from equitensor.tp.backends.grid import s2_grid
from equitensor.tp.backends.spherical_signal import CastCache

__all__ = ["SphericalGrid", "GridFunction", "GridActivation", "GridMLP", "default_resolution"]


def default_resolution(lmax: int) -> tuple[int, int]:
    """``(n_theta, n_phi)`` integrating degree ``8 lmax`` exactly, ``n_phi`` even.

    >>> default_resolution(3)
    (13, 26)
    """
    degree = 8 * lmax
    n_phi = degree + 1 + (degree + 1) % 2
    return degree // 2 + 1, n_phi


class SphericalGrid(nn.Module):
    """Sampling ``(..., dim)`` spherical-signal features to ``(..., C, points)`` and back.

    >>> grid = SphericalGrid("4x0e + 4x1o + 4x2e")
    >>> x = torch.randn(3, grid.irreps.dim, dtype=torch.float64)
    >>> samples = grid.to_grid(x)
    >>> samples.shape, torch.allclose(grid.from_grid(samples), x)
    (torch.Size([3, 4, 162]), True)
    """

    def __init__(self, irreps: IrrepsLike, resolution: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.irreps = Irreps(irreps)
        muls = {mul for mul, _ in self.irreps}
        expected = Irreps([(self.irreps[0].mul, (l, (-1) ** l)) for l in range(self.irreps.lmax + 1)])
        if len(muls) != 1 or self.irreps != expected:
            raise ValueError(
                f"grid features must be C x (0e + 1o + 2e + ...) with one multiplicity, got {self.irreps}"
            )
        self.channels, self.lmax = self.irreps[0].mul, self.irreps.lmax
        self.resolution = tuple(int(n) for n in (resolution or default_resolution(self.lmax)))
        points, weights = s2_grid(*self.resolution)
        harmonics = spherical_harmonics(
            list(range(self.lmax + 1)), points, normalize=False, normalization="component"
        )
        scale = self.lmax + 1
        self._tables = CastCache(
            to_grid=(harmonics / scale).T.contiguous(),
            from_grid=harmonics * (weights * scale / (4 * math.pi))[:, None],
        )

    @property
    def num_points(self) -> int:
        return self.resolution[0] * self.resolution[1]

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) mul_ir -> (..., C, (L+1)^2)."""
        c = self.channels
        return torch.cat(
            [
                x[..., s].reshape(*x.shape[:-1], c, ir.dim)
                for s, (_, ir) in zip(self.irreps.slices(), self.irreps)
            ],
            dim=-1,
        )

    def _features(self, y: torch.Tensor) -> torch.Tensor:
        """(..., C, (L+1)^2) -> (..., dim) mul_ir."""
        parts = y.split([2 * l + 1 for l in range(self.lmax + 1)], dim=-1)
        return torch.cat([p.reshape(*y.shape[:-2], -1) for p in parts], dim=-1)

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        return self._blocks(x) @ self._tables.get(x.dtype, x.device)["to_grid"]

    def from_grid(self, samples: torch.Tensor) -> torch.Tensor:
        return self._features(samples @ self._tables.get(samples.dtype, samples.device)["from_grid"])

    def extra_repr(self) -> str:
        return f"{self.irreps}, resolution={self.resolution}"


class GridFunction(nn.Module):
    """A function applied pointwise on the sphere: ``forward(x) = from_grid(pointwise(to_grid(x)))``;
    subclasses define ``pointwise``. Approximately equivariant: ``equivariance_error()`` says how much."""

    def __init__(self, irreps: IrrepsLike, resolution: tuple[int, int] | None) -> None:
        super().__init__()
        self.grid = SphericalGrid(irreps, resolution)
        self.irreps_in = self.irreps_out = self.grid.irreps

    def pointwise(self, samples: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grid.from_grid(self.pointwise(self.grid.to_grid(x)))

    @torch.no_grad()
    def equivariance_error(self, trials: int = 4, batch: int = 16, seed: int = 0) -> float:
        """Max over random rotations and reflections of ``|f(D x) - D f(x)| / max |f(x)|`` in float64."""
        module = copy.deepcopy(self).double()
        worst = 0.0
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            for trial in range(trials):
                x = torch.randn(batch, self.irreps_in.dim, dtype=torch.float64)
                R = rand_matrix(dtype=torch.float64) * (-1) ** trial
                D = self.irreps_in.D_from_matrix(R)
                y = module(x)
                worst = max(worst, ((module(x @ D.T) - y @ D.T).abs().max() / y.abs().max()).item())
        return worst


class GridActivation(GridFunction):
    """``act`` applied to every channel's signal pointwise on the sphere (eSCN's S2 activation).

    Approximately equivariant (see the module docstring; ``equivariance_error()`` measures it).

    >>> act = GridActivation("8x0e + 8x1o + 8x2e")
    >>> act(torch.randn(5, act.irreps_in.dim)).shape
    torch.Size([5, 72])
    """

    def __init__(
        self, irreps: IrrepsLike, activation: str = "silu", resolution: tuple[int, int] | None = None
    ):
        super().__init__(irreps, resolution)
        self.activation = NormalizedActivation(activation)

    def pointwise(self, samples: torch.Tensor) -> torch.Tensor:
        return self.activation(samples)


class GridMLP(GridFunction):
    """A two-layer MLP over the channels at every grid point (Facet's node-mixing layer):
    ``f'(s) = W2 act(W1 f(s) + b1)``, the same MLP at every point.

    Approximately equivariant (see the module docstring; ``equivariance_error()`` measures it).

    >>> mlp = GridMLP("8x0e + 8x1o + 8x2e", hidden=16)
    >>> mlp(torch.randn(5, mlp.irreps_in.dim)).shape
    torch.Size([5, 72])
    """

    def __init__(
        self,
        irreps: IrrepsLike,
        hidden: int,
        activation: str = "silu",
        resolution: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(irreps, resolution)
        channels = self.grid.channels
        self.hidden = int(hidden)
        self.weight_in = nn.Parameter(torch.randn(channels, self.hidden))
        self.bias_in = nn.Parameter(torch.zeros(self.hidden))
        self.weight_out = nn.Parameter(torch.randn(self.hidden, channels))
        self.activation = NormalizedActivation(activation)

    def pointwise(self, samples: torch.Tensor) -> torch.Tensor:
        x = samples.transpose(-1, -2)  # (..., points, C)
        h = self.activation(x @ (self.weight_in / math.sqrt(self.grid.channels)) + self.bias_in)
        return (h @ (self.weight_out / math.sqrt(self.hidden))).transpose(-1, -2)
