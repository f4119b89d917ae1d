"""The ``gaunt`` backend: Gaunt products by 2D Fourier convolution (Luo, Chen, Krishnapriyan 2024).

Each channel's spherical signal ``f = sum x_lm Y_lm`` is rewritten as a 2D Fourier series on the
torus ``(theta, phi)`` with the closed-form float64 tables of :mod:`equitensor.o3.sh_fourier`
(``Y_lm`` has terms ``|u| <= l``, ``v = +-m`` only, so each step is O(L^3) per channel):

1. SH -> Fourier: ``G[m, u] = sum_l x_lm A[l, m, u]``, then ``F[u, v] = sum_m G[m, u] B[m, v]``.
2. The product ``f1 f2`` has the 2D convolution ``F1 * F2`` as its Fourier series. It is computed
   with FFTs of size ``N = 2 (L1 + L2) + 1`` (large enough that nothing wraps around): an inverse
   real FFT of both (Hermitian) coefficient arrays gives the two signals at N x N torus points,
   they are multiplied there, and one real FFT returns the coefficients of the product.
   O(L^2 log L) per channel.
3. Fourier -> SH: ``z_lm = int_{S^2} f1 f2 Y_lm``, from exact integrals of ``e^{i(u theta + v
   phi)} Y_lm sin theta`` over the sphere; only ``0 <= v <= L3`` is needed, since the coefficients
   of a real signal satisfy ``P[-u, -v] = conj P[u, v]`` (the ``v > 0`` terms count twice).

Complex numbers are kept as a trailing (real, imaginary) axis and the complex products are real
2x2 tables, so apart from the FFTs every step is a real einsum (fast for the small sizes here).
All steps are linear torch ops: backward and double backward come from autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from equitensor.o3.sh_fourier import sh_phi_fourier, sh_phi_projection, sh_theta_fourier, sh_theta_projection
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


def _fft_rows(table: torch.Tensor, umax: int, n: int) -> torch.Tensor:
    """Move the last axis (frequency u stored at ``u + umax``) to FFT order (``u mod n``, n rows)."""
    out = table.new_zeros(table.shape[:-1] + (n,))
    for u in range(-umax, umax + 1):
        out[..., u % n] = table[..., u + umax]
    return out


def _real_pair(table: torch.Tensor) -> torch.Tensor:
    """Complex table -> trailing (real, imag) axis."""
    return torch.stack([table.real, table.imag], dim=-1)


def _complex_product(table: torch.Tensor) -> torch.Tensor:
    """Complex c -> real (..., 2, 2) ``M[j, k]`` with ``(a c)_k = sum_j a_j M[j, k]``."""
    re, im = table.real, table.imag
    return torch.stack([torch.stack([re, im], -1), torch.stack([-im, re], -1)], -2)


class FourierGauntKernel(nn.Module):
    """``z = sum G s1 s2`` for signals ``(z, C, (L+1)^2)`` (orthonormal harmonics), by FFT.
    ``s2`` may have one channel, shared by all (edge convolutions)."""

    def __init__(self, lmax1: int, lmax2: int, lmax_out: int) -> None:
        super().__init__()
        self.lmax1, self.lmax2, self.lmax_out = lmax1, lmax2, lmax_out
        lmax_product = lmax1 + lmax2
        self.lmax_kept = kept = min(lmax_out, lmax_product)  # higher output degrees are exactly 0
        self.fft_size = n = 2 * lmax_product + 1
        half = n // 2 + 1

        def synthesis(lmax: int) -> dict[str, torch.Tensor]:
            phi = torch.zeros(2 * lmax + 1, half, dtype=torch.complex128)
            phi[:, : lmax + 1] = sh_phi_fourier(lmax)[:, lmax:]  # v >= 0 (Hermitian half)
            return {
                "theta": _real_pair(_fft_rows(sh_theta_fourier(lmax), lmax, n)),  # (l, m, r, 2)
                "phi": _complex_product(phi),  # (m, v, 2, 2)
            }

        weight = torch.full((kept + 1,), 2.0, dtype=torch.float64)
        weight[0] = 1.0  # the v < 0 half is the conjugate of the v > 0 one
        theta_out = _fft_rows(sh_theta_projection(kept, lmax_product), lmax_product, n)
        s1, s2 = synthesis(lmax1), synthesis(lmax2)
        self._tables = CastCache(
            index1=_lm_grid_index(lmax1),
            index2=_lm_grid_index(lmax2),
            theta1=s1["theta"],
            phi1=s1["phi"],
            theta2=s2["theta"],
            phi2=s2["phi"],
            phi_out=_complex_product(sh_phi_projection(kept, kept)[:, kept:] * weight),  # (m, v, 2, 2)
            theta_out=torch.stack([theta_out.real, -theta_out.imag], dim=-1),  # Re(h t): (l, m, r, 2)
            index_out=_flat_index(lmax_out, kept),
        )

    def _coefficients(self, s: torch.Tensor, index, theta, phi, lmax: int) -> torch.Tensor:
        """Hermitian half of the Fourier series, (z, C, n, n // 2 + 1) complex."""
        x = _pad_last(s)[..., index].unflatten(-1, (lmax + 1, 2 * lmax + 1))
        g = torch.einsum("zclm,lmrj->zcmrj", x, theta)
        f = torch.einsum("zcmrj,mvjk->zcrvk", g, phi)
        return torch.view_as_complex(f.contiguous())

    def forward(self, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        if s1.shape[0] == 0:  # MKL's FFT rejects empty batches: run one zero row, return none
            return self(
                torch.cat([s1, s1.new_zeros((1,) + s1.shape[1:])]),
                torch.cat([s2, s2.new_zeros((1,) + s2.shape[1:])]),
            )[:0]
        t = self._tables.get(s1.dtype, s1.device)
        f1 = self._coefficients(s1, t["index1"], t["theta1"], t["phi1"], self.lmax1)
        f2 = self._coefficients(s2, t["index2"], t["theta2"], t["phi2"], self.lmax2)
        n = (self.fft_size, self.fft_size)
        if f1.shape == f2.shape:  # values on the torus, both signals in one call
            samples1, samples2 = torch.fft.irfft2(torch.stack([f1, f2]), s=n, norm="forward")
        else:  # a one-channel s2, broadcast over the channels
            samples1 = torch.fft.irfft2(f1, s=n, norm="forward")
            samples2 = torch.fft.irfft2(f2, s=n, norm="forward")
        product = torch.fft.rfft2(samples1 * samples2, norm="forward")[..., : self.lmax_kept + 1]
        h = torch.einsum("zcrvj,mvjk->zcmrk", torch.view_as_real(product), t["phi_out"])
        z = torch.einsum("zcmrk,lmrk->zclm", h, t["theta_out"]).flatten(-2)
        return _pad_last(z)[..., t["index_out"]]

    def extra_repr(self) -> str:
        return f"lmax1={self.lmax1}, lmax2={self.lmax2}, lmax_out={self.lmax_out}, fft_size={self.fft_size}"


def build_gaunt(spec: TensorProductSpec, **options) -> nn.Module:
    """Executor of a Gaunt spec or an edge-form edge convolution (see
    :mod:`~equitensor.tp.backends.gaunt_edge`) on the ``gaunt`` backend (takes no options)."""
    if options:
        raise ValueError(f"the 'gaunt' backend takes no options, got {sorted(options)}")
    return build_signal_executor(spec, FourierGauntKernel)


CAPABILITIES = BackendCapabilities(
    name="gaunt",
    summary="Gaunt product by 2D Fourier series and FFT convolution (closed-form float64 tables)",
    builders={
        "tensor_product": build_gaunt,
        "gaunt_product": build_gaunt,
        "edge_convolution": through_tensor_product("gaunt"),
    },
    paths=SIGNAL_PATHS,
    weights=SIGNAL_WEIGHTS,
    exact=True,
    error="float round-off",
    max_derivative_order=None,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    limitations=signal_backend_limitations,
)

register_backend(CAPABILITIES)
