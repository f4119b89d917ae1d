"""The ``gaunt`` backend: Gaunt products by 2D Fourier convolution (Luo, Chen, Krishnapriyan 2024).

Each channel's spherical signal ``f = sum x_lm Y_lm`` is rewritten as a 2D Fourier series on the
torus ``(theta, phi)`` with the closed-form float64 tables of :mod:`equitensor.o3.sh_fourier`
(``Y_lm`` has terms ``|u| <= l``, ``v = +-m`` only, so each step is O(L^3) per channel):

1. SH -> Fourier: ``G[m, u] = sum_l x_lm A[l, m, u]``, then ``F[u, v] = sum_m G[m, u] B[m, v]``.
2. The product ``f1 f2`` has the 2D convolution ``F1 * F2`` as its Fourier series; it is
   computed with zero-padded FFTs of size ``2 (L1 + L2) + 1`` (no wrap-around): O(L^2 log L).
3. Fourier -> SH: ``z_lm = int_{S^2} f1 f2 Y_lm``, from exact integrals of ``e^{i(u theta + v
   phi)} Y_lm sin theta`` over the sphere (only ``|v| <= L3`` is needed).

Every step is a linear torch op, so backward and double backward come from autograd. Tables are
complex128 masters cast once per dtype (complex64 for float32 inputs).
"""

from __future__ import annotations

import torch
from torch import nn

from equitensor.o3.sh_fourier import sh_phi_fourier, sh_phi_projection, sh_theta_fourier, sh_theta_projection
from equitensor.tp.backends.capabilities import BackendCapabilities, register_backend
from equitensor.tp.backends.spherical_signal import (
    CastCache,
    SignalProductExecutor,
    gaunt_limitations,
    plan_signals,
)
from equitensor.tp.spec import TensorProductSpec


def _lm_grid_index(lmax: int) -> torch.Tensor:
    """Index into a flat signal ``(l*l + l + m)`` padded by one zero entry, laid out (l, m + lmax)."""
    size = (lmax + 1) ** 2
    index = torch.full((lmax + 1, 2 * lmax + 1), size, dtype=torch.long)
    for l in range(lmax + 1):
        index[l, lmax - l : lmax + l + 1] = torch.arange(l * l, (l + 1) ** 2)
    return index.flatten()


def _flat_index(lmax_out: int, lmax_kept: int) -> torch.Tensor:
    """Index from a flat (l, m + lmax_kept) grid padded by one zero into ``l*l + l + m`` order;
    degrees above ``lmax_kept`` read the zero."""
    width, pad = 2 * lmax_kept + 1, (lmax_kept + 1) * (2 * lmax_kept + 1)
    index = []
    for l in range(lmax_out + 1):
        for m in range(-l, l + 1):
            index.append(l * width + m + lmax_kept if l <= lmax_kept else pad)
    return torch.tensor(index, dtype=torch.long)


def _pad_last(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros(x.shape[:-1] + (1,))], dim=-1)


class FourierGauntKernel(nn.Module):
    """``z = sum G s1 s2`` for signals ``(z, C, (L+1)^2)`` (orthonormal harmonics), by FFT."""

    def __init__(self, lmax1: int, lmax2: int, lmax_out: int) -> None:
        super().__init__()
        self.lmax1, self.lmax2, self.lmax_out = lmax1, lmax2, lmax_out
        self.lmax_product = lmax1 + lmax2
        self.lmax_kept = min(lmax_out, self.lmax_product)  # higher output degrees are exactly 0
        self.fft_size = 2 * self.lmax_product + 1
        kept = self.lmax_kept
        self._tables = CastCache(
            index1=_lm_grid_index(lmax1),
            index2=_lm_grid_index(lmax2),
            theta1=sh_theta_fourier(lmax1),
            phi1=sh_phi_fourier(lmax1),
            theta2=sh_theta_fourier(lmax2),
            phi2=sh_phi_fourier(lmax2),
            theta_out=sh_theta_projection(kept, self.lmax_product),
            phi_out=sh_phi_projection(kept, kept),
            index_out=_flat_index(lmax_out, kept),
        )

    def _to_fourier(self, s: torch.Tensor, index, theta, phi, lmax: int) -> torch.Tensor:
        x = _pad_last(s)[..., index].unflatten(-1, (lmax + 1, 2 * lmax + 1)).to(theta.dtype)
        g = torch.einsum("zclm,lmu->zcmu", x, theta)
        return torch.einsum("zcmu,mv->zcuv", g, phi)

    def forward(self, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        t = self._tables.get(s1.dtype, s1.device)
        f1 = self._to_fourier(s1, t["index1"], t["theta1"], t["phi1"], self.lmax1)
        f2 = self._to_fourier(s2, t["index2"], t["theta2"], t["phi2"], self.lmax2)
        n = (self.fft_size, self.fft_size)
        product = torch.fft.ifft2(torch.fft.fft2(f1, s=n) * torch.fft.fft2(f2, s=n))
        # index p holds frequency p - lmax_product; keep |v| <= lmax_kept
        centre, kept = self.lmax_product, self.lmax_kept
        product = product[..., centre - kept : centre + kept + 1]
        h = torch.einsum("zcuv,mv->zcmu", product, t["phi_out"])
        z = torch.einsum("zcmu,lmu->zclm", h, t["theta_out"]).real.flatten(-2)
        return _pad_last(z)[..., t["index_out"]]

    def extra_repr(self) -> str:
        return f"lmax1={self.lmax1}, lmax2={self.lmax2}, lmax_out={self.lmax_out}, fft_size={self.fft_size}"


def build_gaunt(spec: TensorProductSpec, **options) -> nn.Module:
    """Executor of a Gaunt spec on the ``gaunt`` backend (takes no options)."""
    if options:
        raise ValueError(f"the 'gaunt' backend takes no options, got {sorted(options)}")
    plan = plan_signals(spec)
    return SignalProductExecutor(spec, FourierGauntKernel(plan.lmax1, plan.lmax2, plan.lmax_out), plan)


CAPABILITIES = BackendCapabilities(
    name="gaunt",
    summary="Gaunt product by 2D Fourier series and FFT convolution (closed-form float64 tables)",
    operations=("tensor_product", "gaunt_product"),
    paths="l1+l2+l3 even only; channel-wise (uuu); one block per degree",
    weights="per degree and channel on inputs and output (rank one per path); no per-path weights",
    exact=True,
    error="float round-off",
    max_derivative_order=None,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    limitations=gaunt_limitations,
    build=build_gaunt,
)

register_backend(CAPABILITIES)
