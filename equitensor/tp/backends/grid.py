"""The ``grid`` backend: Gaunt products by S2 quadrature (Xie et al., "Price of Freedom").

Each channel's signal is sampled on a Gauss-Legendre (in ``y = cos theta``) x uniform (in phi)
grid, multiplied pointwise and projected back with the quadrature weights:
``z_lm = sum_g w_g f1(g) f2(g) Y_lm(g)``. The projected integrand has degree
``K = L1 + L2 + L3`` (L3 capped at L1 + L2, above which the product is zero), a polynomial of
degree <= K in y and a trigonometric polynomial of degree <= K in phi, so the rule is exact when

    n_theta >= ceil((K + 1) / 2)   and   n_phi >= K + 1,

the default resolution. A coarser grid is an explicit opt-in (``allow_approximate=True``); the
kernel then reports ``exact = False`` and ``approximation_error``, the largest deviation of its
coupling coefficients from the exact Gaunt coefficients relative to the largest of those.

The transforms are dense matrices of harmonics at the grid points (O(L^4) per channel, tensor-core
friendly; the separable O(L^3) form pays off only at large L). Harmonics come from
:func:`equitensor.o3.spherical_harmonics`, independent of the Fourier tables of ``gaunt``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from equitensor.o3 import spherical_harmonics
from equitensor.tp.backends.capabilities import BackendCapabilities, register_backend
from equitensor.tp.backends.gaunt_edge import (
    SIGNAL_PATHS,
    SIGNAL_WEIGHTS,
    build_signal_executor,
    signal_backend_limitations,
)
from equitensor.tp.backends.spherical_signal import CastCache
from equitensor.tp.edge_products import through_tensor_product
from equitensor.tp.spec import TensorProductSpec


def exact_resolution(lmax1: int, lmax2: int, lmax_out: int) -> tuple[int, int]:
    """Smallest Gauss-Legendre x uniform grid ``(n_theta, n_phi)`` that makes the product exact."""
    degree = lmax1 + lmax2 + min(lmax_out, lmax1 + lmax2)
    return degree // 2 + 1, degree + 1


def s2_grid(n_theta: int, n_phi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors ``(n_theta * n_phi, 3)`` and weights (summing to 4 pi) of the grid, float64.

    ``y = cos theta`` at the Gauss-Legendre nodes, ``phi = 2 pi j / n_phi``, and a point is
    ``(sin t sin p, cos t, sin t cos p)`` (e3nn's grid coordinates, polar axis y).
    """
    nodes, weights = np.polynomial.legendre.leggauss(n_theta)
    y = torch.from_numpy(nodes)
    sin = torch.sqrt(1 - y * y)
    phi = 2 * math.pi * torch.arange(n_phi, dtype=torch.float64) / n_phi
    points = torch.stack(
        [sin[:, None] * torch.sin(phi), y[:, None].expand(n_theta, n_phi), sin[:, None] * torch.cos(phi)], -1
    ).reshape(-1, 3)
    w = (torch.from_numpy(weights)[:, None] * (2 * math.pi / n_phi)).expand(n_theta, n_phi).reshape(-1)
    return points, w


def _harmonics(lmax: int, points: torch.Tensor) -> torch.Tensor:
    return spherical_harmonics(list(range(lmax + 1)), points, normalize=False, normalization="integral")


class GridGauntKernel(nn.Module):
    """``z = sum G s1 s2`` for signals ``(z, C, (L+1)^2)`` (orthonormal harmonics), on an S2 grid.
    ``s2`` may have one channel, shared by all (edge convolutions)."""

    def __init__(
        self,
        lmax1: int,
        lmax2: int,
        lmax_out: int,
        resolution: tuple[int, int] | None = None,
        allow_approximate: bool = False,
    ) -> None:
        super().__init__()
        self.lmax1, self.lmax2, self.lmax_out = lmax1, lmax2, lmax_out
        self.lmax_kept = min(lmax_out, lmax1 + lmax2)
        needed = exact_resolution(lmax1, lmax2, lmax_out)
        if resolution is None:
            resolution = needed
        n_theta, n_phi = (int(n) for n in resolution)
        if n_theta < 1 or n_phi < 1:
            raise ValueError(f"resolution must be two positive ints (n_theta, n_phi), got {resolution}")
        self.resolution = (n_theta, n_phi)
        self.exact = n_theta >= needed[0] and n_phi >= needed[1]
        if not self.exact and not allow_approximate:
            raise ValueError(
                f"grid resolution {self.resolution} is below the exact {needed} for lmax "
                f"({lmax1}, {lmax2}) -> {lmax_out}; pass allow_approximate=True to accept an "
                "approximate product (its error is reported as approximation_error)"
            )
        points, weights = s2_grid(n_theta, n_phi)
        to_grid1, to_grid2 = _harmonics(lmax1, points), _harmonics(lmax2, points)
        project = _harmonics(self.lmax_kept, points) * weights[:, None]
        self.approximation_error = 0.0 if self.exact else self._coupling_error(to_grid1, to_grid2, project)
        pad = (lmax_out + 1) ** 2 - (self.lmax_kept + 1) ** 2
        self._tables = CastCache(
            to_grid1=to_grid1.T.contiguous(), to_grid2=to_grid2.T.contiguous(), project=project
        )
        self._pad = pad

    def _coupling_error(self, to_grid1, to_grid2, project) -> float:
        """Max |G_grid - G| / max |G| over all couplings, G from the exact grid."""
        points, weights = s2_grid(*exact_resolution(self.lmax1, self.lmax2, self.lmax_out))
        exact = torch.einsum(
            "pi,pj,pk->ijk",
            _harmonics(self.lmax1, points),
            _harmonics(self.lmax2, points),
            _harmonics(self.lmax_kept, points) * weights[:, None],
        )
        approx = torch.einsum("pi,pj,pk->ijk", to_grid1, to_grid2, project)
        return ((approx - exact).abs().max() / exact.abs().max()).item()

    def forward(self, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        t = self._tables.get(s1.dtype, s1.device)
        z = ((s1 @ t["to_grid1"]) * (s2 @ t["to_grid2"])) @ t["project"]
        if self._pad:
            z = torch.cat([z, z.new_zeros(z.shape[:-1] + (self._pad,))], dim=-1)
        return z

    def extra_repr(self) -> str:
        kind = "exact" if self.exact else f"approximate, coupling error {self.approximation_error:.2g}"
        return (
            f"lmax1={self.lmax1}, lmax2={self.lmax2}, lmax_out={self.lmax_out}, "
            f"resolution={self.resolution} ({kind})"
        )


def build_grid(
    spec: TensorProductSpec, *, resolution: tuple[int, int] | None = None, allow_approximate: bool = False
) -> nn.Module:
    """Executor of a Gaunt spec or an edge-form edge convolution (see
    :mod:`~equitensor.tp.backends.gaunt_edge`) on the ``grid`` backend; see
    :class:`GridGauntKernel` for options."""
    return build_signal_executor(
        spec,
        lambda lmax1, lmax2, lmax_out: GridGauntKernel(lmax1, lmax2, lmax_out, resolution, allow_approximate),
    )


CAPABILITIES = BackendCapabilities(
    name="grid",
    summary="Gaunt product by Gauss-Legendre x uniform S2 quadrature, resolution derived from the degrees",
    builders={
        "tensor_product": build_grid,
        "gaunt_product": build_grid,
        "edge_convolution": through_tensor_product("grid"),
    },
    paths=SIGNAL_PATHS,
    weights=SIGNAL_WEIGHTS,
    exact=True,
    error="float round-off at the derived resolution; a coarser grid is an opt-in approximation "
    "(error reported)",
    max_derivative_order=None,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    limitations=signal_backend_limitations,
)

register_backend(CAPABILITIES)
