"""Closed-form 2D Fourier tables of the real spherical harmonics (e3nn basis), in float64.

With the polar angle ``theta`` measured from +y and the azimuth ``phi`` from +z towards +x (so a
unit vector is ``(sin t sin p, cos t, sin t cos p)``), the orthonormal ('integral') harmonic of
degree l and order m (e3nn index ``l + m``) separates as

    Y_lm(theta, phi) = Theta_lm(theta) T_m(phi),
    Theta_lm = N_lm P_l^|m|(cos theta),  T_m = cos(m phi) | 1 | sin(|m| phi)  for m > 0 | 0 | < 0,

with ``P_l^mu(x) = (1 - x^2)^(mu/2) d^mu P_l / dx^mu`` (no Condon-Shortley phase) and
``N_lm = sqrt((2l+1)/(4 pi) (2 - delta_m0) (l-mu)!/(l+mu)!)``.

Writing ``w = e^{i theta}``, ``cos = (w + 1/w)/2`` and ``sin = (w - 1/w)/(2i)`` turns ``Theta_lm``
into a finite Laurent polynomial in w with rational coefficients times ``(-i)^mu`` (computed
exactly with :class:`fractions.Fraction`). Extended to ``theta`` in [0, 2 pi) it is the torus
function that the Gaunt/FFT product convolves (for odd m it flips sign past the pole, exactly as
the sphere point ``(2 pi - theta, phi + pi)`` requires).

Projections back onto the harmonics use ``int_0^pi e^{i n theta} sin theta d theta`` =
``2/(1-n^2)`` (n even), ``+-i pi/2`` (n = +-1), 0 otherwise: exact rationals and pi, no quadrature.
Table layouts: m, u and v are stored at index ``m + lmax`` (etc.) so negative orders fit.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch

from equitensor.devices import cache_unless_tracing

__all__ = [
    "sh_theta_fourier",
    "sh_phi_fourier",
    "sh_theta_projection",
    "sh_phi_projection",
]

Laurent = dict[int, Fraction]


def _mul(a: Laurent, b: Laurent) -> Laurent:
    out: Laurent = {}
    for i, x in a.items():
        for j, y in b.items():
            out[i + j] = out.get(i + j, Fraction(0)) + x * y
    return out


@functools.cache
def _legendre_derivative(l: int, mu: int) -> tuple[Fraction, ...]:
    """Coefficients (by power of x) of ``d^mu P_l / dx^mu``, exact."""
    coeffs = [Fraction(0)] * (l + 1)
    for k in range(l // 2 + 1):
        coeffs[l - 2 * k] = Fraction((-1) ** k * math.comb(l, k) * math.comb(2 * l - 2 * k, l), 2**l)
    for _ in range(mu):
        coeffs = [coeffs[p] * p for p in range(1, len(coeffs))] or [Fraction(0)]
    return tuple(coeffs)


@functools.cache
def _theta_laurent(l: int, mu: int) -> Laurent:
    """R with ``P_l^mu(cos theta) = (-i)^mu sum_k R[k] e^{i k theta}`` (rational R, |k| <= l)."""
    cos: Laurent = {1: Fraction(1, 2), -1: Fraction(1, 2)}
    half_sin: Laurent = {1: Fraction(1, 2), -1: Fraction(-1, 2)}  # 2^-1 (w - 1/w) = i sin
    result: Laurent = {0: Fraction(0)}
    power: Laurent = {0: Fraction(1)}
    for c in _legendre_derivative(l, mu):  # Q(cos theta) by powers of cos
        if c:
            result = {k: result.get(k, Fraction(0)) + c * power.get(k, Fraction(0)) for k in result | power}
        power = _mul(power, cos)
    for _ in range(mu):
        result = _mul(result, half_sin)
    return {k: v for k, v in result.items() if v}


def _norm(l: int, mu: int) -> float:
    factor = 1.0 if mu == 0 else 2.0
    return math.sqrt((2 * l + 1) / (4 * math.pi) * factor * math.factorial(l - mu) / math.factorial(l + mu))


def _phase(mu: int) -> complex:
    return (-1j) ** mu


@cache_unless_tracing
def sh_theta_fourier(lmax: int) -> torch.Tensor:
    """``A[l, m + lmax, u + lmax]``: coefficient of ``e^{i u theta}`` in ``Theta_lm`` (complex128).

    Zero where |m| > l. Cached: treat the returned tensor as read-only.
    """
    table = torch.zeros(lmax + 1, 2 * lmax + 1, 2 * lmax + 1, dtype=torch.complex128)
    for l in range(lmax + 1):
        for m in range(-l, l + 1):
            scale = _norm(l, abs(m)) * _phase(abs(m))
            for u, r in _theta_laurent(l, abs(m)).items():
                table[l, m + lmax, u + lmax] = scale * float(r)
    return table


@cache_unless_tracing
def sh_phi_fourier(lmax: int) -> torch.Tensor:
    """``B[m + lmax, v + lmax]``: coefficient of ``e^{i v phi}`` in ``T_m(phi)`` (complex128)."""
    table = torch.zeros(2 * lmax + 1, 2 * lmax + 1, dtype=torch.complex128)
    table[lmax, lmax] = 1.0
    for m in range(1, lmax + 1):
        table[lmax + m, lmax + m] = table[lmax + m, lmax - m] = 0.5  # cos(m phi)
        table[lmax - m, lmax + m] = -0.5j  # sin(m phi) = (e^{i m phi} - e^{-i m phi}) / 2i
        table[lmax - m, lmax - m] = 0.5j
    return table


def _sin_weighted_integral(n: int) -> tuple[Fraction, Fraction]:
    """``int_0^pi e^{i n theta} sin theta d theta = a + i pi b``, returned as exact (a, b)."""
    if n in (1, -1):
        return Fraction(0), Fraction(n, 2)
    if n % 2:
        return Fraction(0), Fraction(0)
    return Fraction(2, 1 - n * n), Fraction(0)


@functools.cache
def _theta_projection_entry(l: int, mu: int, u: int) -> complex:
    """``int_0^pi e^{i u theta} Theta_l^mu(theta) sin theta d theta``, exact up to the last rounding."""
    a, b = Fraction(0), Fraction(0)
    for k, r in _theta_laurent(l, mu).items():
        da, db = _sin_weighted_integral(u + k)
        a, b = a + r * da, b + r * db
    return _norm(l, mu) * _phase(mu) * complex(float(a), math.pi * float(b))


@cache_unless_tracing
def sh_theta_projection(lmax: int, umax: int) -> torch.Tensor:
    """``P[l, m + lmax, u + umax] = int_0^pi e^{i u theta} Theta_lm(theta) sin theta d theta``.

    Complex128, exact up to the final rounding. Cached: treat as read-only.
    """
    table = torch.zeros(lmax + 1, 2 * lmax + 1, 2 * umax + 1, dtype=torch.complex128)
    for l in range(lmax + 1):
        for mu in range(l + 1):
            row = torch.tensor(
                [_theta_projection_entry(l, mu, u) for u in range(-umax, umax + 1)], dtype=torch.complex128
            )
            table[l, lmax + mu] = table[l, lmax - mu] = row
    return table


@cache_unless_tracing
def sh_phi_projection(lmax: int, vmax: int) -> torch.Tensor:
    """``Q[m + lmax, v + vmax] = int_0^{2 pi} e^{i v phi} T_m(phi) d phi`` (complex128)."""
    table = torch.zeros(2 * lmax + 1, 2 * vmax + 1, dtype=torch.complex128)
    coefficients = sh_phi_fourier(lmax)
    for m in range(-lmax, lmax + 1):
        for v in range(-min(vmax, abs(m)), min(vmax, abs(m)) + 1):
            # only the e^{-i v phi} term of T_m survives the integral
            table[m + lmax, v + vmax] = 2 * math.pi * coefficients[m + lmax, lmax - v]
    return table
