"""Gaunt product basis: MACE's product basis with body order built as powers of one spherical
function (the Gaunt-tensor-product MACE port, Luo et al. ICLR 2024), on any Gaunt backend.

Each channel c of the node features ``A`` is a spherical signal ``f_c(r) = sum_lm A_{c,lm} Y_lm(r)``
(irreps ``Cx0e + Cx1o + Cx2e + ...``, 'component' harmonics, so ``Y_00 = 1``). Body order nu is
the pointwise power ``f^nu = f^(nu-1) . f`` on the sphere (a Gaunt product per step), and::

    B[b, c, lm] = sum_{nu=1..correlation} W_nu[z_b, c, l] (f_c^nu)_{lm}      for l <= lmax_out

with weights per (element, channel, output degree) for every body order, as the port's
``EfficientMultiTensorProduct`` (lsj2408/Gaunt-Tensor-Product). This is far less expressive than
the symmetric contraction (one weight per degree instead of one per coupling path, and no odd
paths such as the cross product), but costs one channel-wise Gaunt product per body order.

Intermediate degrees. ``f^nu`` has degrees up to ``nu * lmax``. Only degrees ``<= lmax_out``
of each power are used, and one more factor ``A`` (degree ``<= lmax``) moves a component by at
most ``lmax`` degrees, so ``f^nu`` only matters up to ``lmax_out + (correlation - nu) * lmax``.
Each step therefore keeps ``f^nu`` up to ``min(nu * lmax, lmax_out + (correlation - nu) * lmax)``:
the smallest cap that is still exact, so the result equals the port's untruncated powers
projected onto ``lmax_out``, with no approximation and no wasted degrees.
"""

from __future__ import annotations

import torch
from torch import nn

from equitensor.irreps import Irreps
from equitensor.nn.symmetric_contraction import check_product_basis_inputs
from equitensor.tp.backends import backend_capabilities
from equitensor.tp.gaunt_product import GauntProduct, spherical_irreps

__all__ = ["GauntProductBasis", "intermediate_degrees"]


def _signal_layout(irreps: Irreps, name: str) -> tuple[int, int]:
    """(channels, lmax) of spherical-signal irreps ``Cx0e + Cx1o + ...``; ValueError naming what is not."""
    wrong = [f"{mul}x{ir}" for mul, ir in irreps if ir.p != (-1) ** ir.l]
    if wrong:
        raise ValueError(
            f"{name} {irreps} is not a spherical signal: irreps {', '.join(wrong)} do not have parity "
            "(-1)^l; a pointwise product on the sphere only has Cx0e + Cx1o + Cx2e + ..."
        )
    if len(irreps) == 0:
        raise ValueError(f"{name} is empty; a spherical signal needs at least Cx0e")
    channels, lmax = irreps[0].mul, irreps.lmax
    expected = spherical_irreps(max(channels, 1), lmax)
    if irreps != expected:
        raise ValueError(
            f"{name} {irreps} is not a spherical signal: expected one block per degree 0..{lmax} "
            f"with one multiplicity, in order, i.e. {expected}"
        )
    return channels, lmax


def intermediate_degrees(lmax: int, lmax_out: int, correlation: int) -> list[int]:
    """Degree kept for ``f^nu``, nu = 1..correlation: ``min(nu lmax, lmax_out + (correlation - nu) lmax)``,
    the smallest that keeps the degrees ``<= lmax_out`` of every power exact."""
    return [min(nu * lmax, lmax_out + (correlation - nu) * lmax) for nu in range(1, correlation + 1)]


def _resize(x: torch.Tensor, channels: int, lmax_from: int, lmax_to: int) -> torch.Tensor:
    """A signal in mul_ir layout truncated (or zero-padded) from degree ``lmax_from`` to ``lmax_to``:
    degrees <= l occupy the first ``C (l+1)^2`` columns."""
    size = channels * (lmax_to + 1) ** 2
    if lmax_to <= lmax_from:
        return x[..., :size]
    return torch.cat([x, x.new_zeros(x.shape[:-1] + (size - x.shape[-1],))], dim=-1)


class GauntProductBasis(nn.Module):
    """``B = sum_nu W_nu[z] (A^nu)`` with ``A^nu`` the nu-th power of each channel's spherical signal.

    ``irreps_in``: ``Cx0e + Cx1o + ... `` up to ``lmax``; ``irreps_out``: ``Cx0e + Cx1o + ...`` up
    to ``lmax_out`` (same C). Call as ``basis(x, node_attrs)`` with ``x`` (N, irreps_in.dim) in
    e3nn's mul_ir layout and ``node_attrs`` (N, num_elements) (one-hot of the element); returns
    (N, irreps_out.dim). ``backend``: 'cg' (reference), 'gaunt' (2D FFT), 'grid' (S2 quadrature)
    or 'auto', the :class:`GauntProduct` backend of every power. ``weights[nu - 1]`` has shape
    (num_elements, C, lmax_out + 1), initialised ``randn`` as in the port.

    >>> basis = GauntProductBasis("4x0e + 4x1o", "4x0e + 4x1o", correlation=3, num_elements=2)
    >>> node_attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1]), num_classes=2).float()
    >>> basis(torch.randn(3, basis.irreps_in.dim), node_attrs).shape
    torch.Size([3, 16])
    """

    def __init__(
        self, irreps_in, irreps_out, correlation: int, num_elements: int, backend: str = "gaunt"
    ) -> None:
        super().__init__()
        irreps_in, irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        channels, lmax = _signal_layout(irreps_in, "irreps_in")
        channels_out, lmax_out = _signal_layout(irreps_out, "irreps_out")
        if channels_out != channels:
            raise ValueError(
                f"irreps_in {irreps_in} and irreps_out {irreps_out} must have the same multiplicity "
                "(the product is channel-wise)"
            )
        if correlation < 1:
            raise ValueError(f"correlation must be >= 1, got {correlation}")
        if num_elements < 1:
            raise ValueError(f"num_elements must be >= 1, got {num_elements}")
        if backend != "auto" and "gaunt_product" not in backend_capabilities(backend).operations:
            raise ValueError(f"backend {backend!r} does not compute Gaunt products")
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        self.channels, self.lmax, self.lmax_out = channels, lmax, lmax_out
        self.correlation, self.num_elements, self.backend = int(correlation), int(num_elements), backend
        self.degrees = intermediate_degrees(lmax, lmax_out, self.correlation)
        # products[nu - 2]: f^(nu-1) (degree degrees[nu-2]) x A (degree lmax) -> f^nu (degree degrees[nu-1])
        self.products = nn.ModuleList(
            GauntProduct(
                channels, self.degrees[nu - 2], lmax, self.degrees[nu - 1], backend=backend, weights=False
            )
            for nu in range(2, self.correlation + 1)
        )
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(self.num_elements, channels, lmax_out + 1))
            for _ in range(self.correlation)
        )
        # entry k of the output (mul_ir layout) takes the weight of (channel, degree) c * (lmax_out + 1) + l
        degree_index = [
            c * (lmax_out + 1) + l
            for l in range(lmax_out + 1)
            for c in range(channels)
            for _ in range(2 * l + 1)
        ]
        self.register_buffer("_weight_index", torch.tensor(degree_index, dtype=torch.long), persistent=False)

    def _weighted(self, nu: int, power: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        """``W_nu[z] (f^nu)`` for the output degrees of ``power`` (degree lmax_out)."""
        per_node = node_attrs @ self.weights[nu - 1].reshape(self.num_elements, -1)
        return power * per_node[:, self._weight_index]

    def forward(self, x: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        check_product_basis_inputs(x, node_attrs, self.irreps_in, self.num_elements)
        node_attrs = node_attrs.to(x.dtype)
        c, lmax_out = self.channels, self.lmax_out
        power = x
        out = self._weighted(1, _resize(x, c, self.lmax, lmax_out), node_attrs)
        for nu, product in enumerate(self.products, start=2):
            power = product(power, x)
            out = out + self._weighted(nu, _resize(power, c, self.degrees[nu - 1], lmax_out), node_attrs)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, "
            f"num_elements={self.num_elements}, degrees of the powers={self.degrees}, "
            f"backend={self.backend!r}"
        )
