"""Real Gaunt coefficients: integrals of three orthonormal real spherical harmonics (e3nn basis).

``G[i, j, k] = int_{S^2} Y^{l1}_i Y^{l2}_j Y^{l3}_k`` with 'integral' (orthonormal) harmonics.

Closed form, no quadrature. G is an invariant tensor of l1 x l2 x l3, so by Schur's lemma it is a
multiple of the real 3j tensor C: ``G = g C``. Contracting, ``g = <G, C> = int f`` where
``f(x) = sum C_ijk Y_i(x) Y_j(x) Y_k(x)`` is rotation invariant, hence constant on the sphere:
``g = 4 pi f(e_y)``. At the polar axis e_y only the m = 0 components survive, each equal to
``sqrt((2l+1)/(4 pi))``, so

    G = sqrt((2l1+1)(2l2+1)(2l3+1) / (4 pi)) * C[l1, l2, l3] * C

with ``C[l1, l2, l3]`` the central (m = 0, 0, 0) entry. This fixes the sign rigorously in our own
basis; it vanishes exactly when l1 + l2 + l3 is odd (parity).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch

from equitensor.devices import cache_unless_tracing

from .wigner import _check_triangle, _wigner_3j_f64

__all__ = ["gaunt", "gaunt_factor"]


@cache_unless_tracing
def _gaunt_f64(l1: int, l2: int, l3: int) -> torch.Tensor:
    C = _wigner_3j_f64(l1, l2, l3)
    if (l1 + l2 + l3) % 2 == 1:
        return torch.zeros_like(C)
    g = math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) / (4 * math.pi)) * C[l1, l2, l3].item()
    return g * C


def gaunt(l1: int, l2: int, l3: int, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Real Gaunt tensor (2l1+1, 2l2+1, 2l3+1): ``int Y^{l1}_i Y^{l2}_j Y^{l3}_k`` over the sphere.

    Harmonics are :func:`equitensor.o3.spherical_harmonics` with 'integral' normalization. Zero when
    l1 + l2 + l3 is odd; ValueError on a triangle violation. Computed in float64 once (cached)
    and returned as a copy in ``dtype`` (default: the default dtype) on ``device``.

    >>> G = gaunt(1, 1, 0, dtype=torch.float64)
    >>> G.shape, torch.allclose(G[:, :, 0], torch.eye(3, dtype=torch.float64) / math.sqrt(4 * math.pi))
    (torch.Size([3, 3, 1]), True)
    >>> bool((gaunt(1, 1, 1) == 0).all())  # l1 + l2 + l3 odd
    True
    """
    _check_triangle(l1, l2, l3)
    return _gaunt_f64(l1, l2, l3).to(dtype=dtype or torch.get_default_dtype(), device=device, copy=True)


@functools.cache
def gaunt_factor(l1: int, l2: int, l3: int) -> float:
    """The scalar c with ``gaunt(l1, l2, l3) = c * wigner_3j(l1, l2, l3)``, in closed form.

    ``c = sqrt((2l1+1)(2l2+1)(2l3+1)/(4 pi)) |(l1 l2 l3; 0 0 0)|``: the central 3j symbol from its
    factorial formula (exact rational square, one final square root), so no 3j tensor is built.
    In e3nn's real basis the central entry of ``wigner_3j`` is positive for every even path (the
    ``(-i)^l`` basis factors cancel the usual ``(-1)^g`` sign), hence c >= 0. Zero when
    l1 + l2 + l3 is odd; ValueError on a triangle violation.
    """
    _check_triangle(l1, l2, l3)
    if (l1 + l2 + l3) % 2:
        return 0.0
    g = (l1 + l2 + l3) // 2
    f = math.factorial
    central_squared = Fraction(f(2 * g - 2 * l1) * f(2 * g - 2 * l2) * f(2 * g - 2 * l3), f(2 * g + 1)) * (
        Fraction(f(g), f(g - l1) * f(g - l2) * f(g - l3)) ** 2
    )
    return math.sqrt((2 * l1 + 1) * (2 * l2 + 1) * (2 * l3 + 1) * float(central_squared) / (4 * math.pi))
