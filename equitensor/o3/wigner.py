"""Wigner D matrices and Wigner 3j (Clebsch-Gordan) coefficients of SO(3), in e3nn's real basis.

The real basis of degree l is e3nn's: the standard (Wikipedia) real spherical harmonics with the
axes relabelled so that the polar axis is y and l=1 is ordered (x, y, z), hence ``D^1(R) = R``.

* ``wigner_3j`` is computed once per (l1, l2, l3) from Racah's closed formula for the complex
  Clebsch-Gordan coefficients in exact rational arithmetic, then changed to the real basis
  exactly (every entry is a sum of +-sqrt(rational) terms, grouped by radicand), and normalised
  to Frobenius norm 1. Structural zeros are exact zeros.
* ``wigner_D`` uses the explicit form of rotations about the polar axis y (cos/sin of m*angle)
  and gets rotations about x by conjugating with a fixed matrix, ``D(R_x(b)) = J D(R_y(b)) J^T``
  with ``J = D(R_z(-pi/2))``. Only cos, sin and matmul act on the angles, so it is differentiable
  to any order and batched.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch

from equitensor.devices import cache_unless_tracing

__all__ = [
    "so3_generators",
    "wigner_D",
    "change_basis_real_to_complex",
    "wigner_3j",
    "wigner_3j_sparse",
    "clebsch_gordan",
]

_HALF = Fraction(1, 2)


def _check_l(l: int) -> int:
    if not isinstance(l, int) or isinstance(l, bool) or l < 0:
        raise ValueError(f"degree l must be a non-negative int, got {l!r}")
    return l


def _check_triangle(l1: int, l2: int, l3: int) -> None:
    for l in (l1, l2, l3):
        _check_l(l)
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(
            f"(l1, l2, l3) = ({l1}, {l2}, {l3}) violates the triangle condition |l1 - l2| <= l3 <= l1 + l2"
        )


# --------------------------------------------------------------------------------------------
# Change of basis


def _real_from_complex_exact(l: int) -> dict[tuple[int, int], tuple[complex, Fraction]]:
    """Entries of e3nn's real<-complex matrix Q (row: complex m, column: real m) as exact pairs.

    ``Q[l + mc, l + mr] = phase * sqrt(radicand)`` with ``phase`` a Gaussian integer (a complex
    number with integer parts) and ``radicand`` in {1, 1/2}. The real basis vector with m > 0 is
    the cosine-like combination, m < 0 the sine-like one (Wikipedia's real form, no Condon-Shortley
    phase on the real functions), multiplied by (-i)^l so that the 3j coefficients are real.
    """
    q: dict[tuple[int, int], tuple[complex, Fraction]] = {(l, l): (1, Fraction(1))}
    for m in range(1, l + 1):
        sign = (-1) ** m
        q[(l - m, l + m)] = (1, _HALF)
        q[(l - m, l - m)] = (-1j, _HALF)
        q[(l + m, l + m)] = (sign, _HALF)
        q[(l + m, l - m)] = (1j * sign, _HALF)
    phase = (-1j) ** l  # exact: a unit Gaussian integer
    phase = complex(round(phase.real), round(phase.imag))
    return {k: (phase * p, r) for k, (p, r) in q.items()}


def change_basis_real_to_complex(l: int, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Unitary matrix Q (2l+1, 2l+1) with ``Y_complex = Q @ Y_real`` in e3nn's real basis.

    Rows index the complex m = -l..l (Condon-Shortley convention), columns the real basis. dtype
    is the real dtype whose complex counterpart is returned (default: complex of the default dtype).

    >>> Q = change_basis_real_to_complex(1, dtype=torch.float64)
    >>> Q.dtype, torch.allclose(Q @ Q.conj().T, torch.eye(3, dtype=torch.complex128))
    (torch.complex128, True)
    """
    _check_l(l)
    q = torch.zeros(2 * l + 1, 2 * l + 1, dtype=torch.complex128)
    for (i, j), (p, r) in _real_from_complex_exact(l).items():
        q[i, j] = p * math.sqrt(r)
    dtype = dtype or torch.get_default_dtype()
    cdtype = {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(dtype, dtype)
    return q.to(dtype=cdtype, device=device, copy=True)


# --------------------------------------------------------------------------------------------
# Clebsch-Gordan / Wigner 3j


def _su2_cg_exact(j1: int, m1: int, j2: int, m2: int, j3: int, m3: int) -> tuple[int, Fraction]:
    """<j1 m1 j2 m2 | j3 m3> (Condon-Shortley) by Racah's formula, exactly, as (sign, square).

    The coefficient equals ``sign * sqrt(square)``; (0, 0) when it vanishes.
    """
    if m1 + m2 != m3 or abs(m1) > j1 or abs(m2) > j2 or abs(m3) > j3:
        return 0, Fraction(0)
    f = math.factorial
    pre = Fraction(
        (2 * j3 + 1) * f(j3 + j1 - j2) * f(j3 - j1 + j2) * f(j1 + j2 - j3),
        f(j1 + j2 + j3 + 1),
    ) * (f(j3 + m3) * f(j3 - m3) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2))
    kmin = max(0, j2 - j3 - m1, j1 - j3 + m2)
    kmax = min(j1 + j2 - j3, j1 - m1, j2 + m2)
    s = Fraction(0)
    for k in range(kmin, kmax + 1):
        den = (
            f(k)
            * f(j1 + j2 - j3 - k)
            * f(j1 - m1 - k)
            * f(j2 + m2 - k)
            * f(j3 - j2 + m1 + k)
            * f(j3 - j1 - m2 + k)
        )
        s += Fraction((-1) ** k, den)
    if s == 0:
        return 0, Fraction(0)
    return (1 if s > 0 else -1), pre * s * s


@functools.cache
def _wigner_3j_exact(l1: int, l2: int, l3: int) -> tuple[tuple[int, int, int, float], ...]:
    """Non-zero entries ``(i, j, k, value)`` of the real-basis, unit-norm 3j tensor.

    ``C[a, b, c] = sum Q1[m1, a] Q2[m2, b] conj(Q3[m3, c]) <l1 m1 l2 m2 | l3 m3> / sqrt(2l3+1)``.
    Every term is ``gaussian_int * sqrt(rational)``; terms are summed exactly per radicand (the
    two terms of an entry come from the pair (m1, m2, m3), (-m1, -m2, -m3), whose CGs have equal
    magnitude, so exact cancellations are found exactly). The imaginary part is checked to vanish.
    """
    q1, q2, q3 = (_real_from_complex_exact(l) for l in (l1, l2, l3))
    cols1: dict[int, list] = {}
    cols2: dict[int, list] = {}
    cols3: dict[int, list] = {}
    for q, cols in ((q1, cols1), (q2, cols2), (q3, cols3)):
        for (row, col), v in q.items():
            cols.setdefault(row, []).append((col, v))  # complex m -> [(real index, entry)]
    acc: dict[tuple[int, int, int], dict[Fraction, complex]] = {}
    norm = Fraction(1, 2 * l3 + 1)
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            m3 = m1 + m2
            if abs(m3) > l3:
                continue
            sign, square = _su2_cg_exact(l1, m1, l2, m2, l3, m3)
            if sign == 0:
                continue
            for a, (pa, ra) in cols1[l1 + m1]:
                for b, (pb, rb) in cols2[l2 + m2]:
                    for c, (pc, rc) in cols3[l3 + m3]:
                        phase = sign * pa * pb * pc.conjugate()
                        rad = square * ra * rb * rc * norm
                        slot = acc.setdefault((a, b, c), {})
                        slot[rad] = slot.get(rad, 0) + phase
    out = []
    for (a, b, c), terms in sorted(acc.items()):
        value = 0.0
        for rad, phase in terms.items():
            if phase.imag != 0:
                raise AssertionError(f"wigner_3j({l1},{l2},{l3}) has an imaginary part at {(a, b, c)}")
            if phase.real != 0:
                value += phase.real * math.sqrt(rad)
        if any(p.real != 0 for p in terms.values()):
            out.append((a, b, c, value))
    return tuple(out)


@cache_unless_tracing
def _wigner_3j_f64(l1: int, l2: int, l3: int) -> torch.Tensor:
    C = torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1, dtype=torch.float64)
    for a, b, c, v in _wigner_3j_exact(l1, l2, l3):
        C[a, b, c] = v
    return C


def wigner_3j(l1: int, l2: int, l3: int, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Real Wigner 3j tensor C (2l1+1, 2l2+1, 2l3+1), e3nn's normalisation and sign.

    C is invariant, ``C_ijk = C_abc D1_ai D2_bj D3_ck`` for every rotation, and has Frobenius norm 1.
    Computed once in float64 (cached) and returned as a fresh copy in ``dtype`` on ``device``.
    Raises ValueError when (l1, l2, l3) violates the triangle condition.

    >>> C = wigner_3j(1, 2, 3, dtype=torch.float64)
    >>> C.shape, round(C.norm().item(), 6)
    (torch.Size([3, 5, 7]), 1.0)
    >>> C = wigner_3j(1, 1, 0, dtype=torch.float64)
    >>> torch.allclose(C[:, :, 0], torch.eye(3, dtype=torch.float64) / 3**0.5)
    True
    """
    _check_triangle(l1, l2, l3)
    dtype = dtype or torch.get_default_dtype()
    return _wigner_3j_f64(l1, l2, l3).to(dtype=dtype, device=device, copy=True)


clebsch_gordan = wigner_3j


def wigner_3j_sparse(l1: int, l2: int, l3: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-zero entries of :func:`wigner_3j`: ``indices`` (nnz, 3) long and ``values`` (nnz,) float64.

    Zeros are decided exactly (rational arithmetic), so the list holds exactly the non-zeros.

    >>> indices, values = wigner_3j_sparse(1, 1, 0)
    >>> indices.tolist(), torch.allclose(values, torch.full((3,), 3**-0.5, dtype=torch.float64))
    ([[0, 0, 0], [1, 1, 0], [2, 2, 0]], True)
    """
    _check_triangle(l1, l2, l3)
    entries = _wigner_3j_exact(l1, l2, l3)
    indices = torch.tensor([e[:3] for e in entries], dtype=torch.long).reshape(-1, 3)
    values = torch.tensor([e[3] for e in entries], dtype=torch.float64)
    return indices, values


# --------------------------------------------------------------------------------------------
# Generators and Wigner D


@cache_unless_tracing
def _so3_generators_f64(l: int) -> torch.Tensor:
    """Generators from the invariant map l x 1 -> l: ``X_k = c_l * C^{l1l}[:, k, :]``.

    The map is unique up to scale (Schur), so the generators are proportional to the 3j tensor;
    ``c_l`` is fixed by the explicit generator about the polar axis, ``X_y[l+m, l-m] = -m``.
    """
    n = 2 * l + 1
    if l == 0:
        return torch.zeros(3, 1, 1, dtype=torch.float64)
    Xy = torch.zeros(n, n, dtype=torch.float64)
    for m in range(-l, l + 1):
        Xy[l + m, l - m] = -m
    C = _wigner_3j_f64(l, 1, l).permute(1, 0, 2)
    scale = (Xy * C[1]).sum() / (C[1] * C[1]).sum()
    X = scale * C
    if not torch.allclose(X[1], Xy, atol=1e-12):
        raise AssertionError("internal error: the 3j tensor is not proportional to the generators")
    X[1] = Xy
    return X.contiguous()


def su2_generators(j: float, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Complex anti-Hermitian generators (3, 2j+1, 2j+1) of SU(2) in spin ``j`` (integer or half
    integer), e3nn's: ``(-i J_y, i J_z, i J_x)`` in the standard basis ``|j, m>``, m = -j..j, so that
    ``[X0, X1] = X2`` cyclically; for integer j, ``Q^H X Q`` (Q from
    :func:`change_basis_real_to_complex`) is :func:`so3_generators`. ``dtype`` is the real dtype
    whose complex counterpart is returned.

    >>> X = su2_generators(0.5)
    >>> torch.allclose(X[0] @ X[1] - X[1] @ X[0], X[2])
    True
    """
    if j < 0 or (2 * j) % 1:
        raise ValueError(f"su2_generators: j must be a non-negative integer or half integer, got {j}")
    m = torch.arange(-j, j + 1, dtype=torch.float64)
    up = torch.sqrt(j * (j + 1) - m[:-1] * (m[:-1] + 1))  # <m+1| J+ |m>
    j_plus = torch.diag(up, -1).to(torch.complex128)
    j_minus = j_plus.T
    j_x, j_y = (j_plus + j_minus) / 2, (j_plus - j_minus) / 2j
    j_z = torch.diag(m).to(torch.complex128)
    X = torch.stack([-1j * j_y, 1j * j_z, 1j * j_x])
    dtype = dtype or torch.get_default_dtype()
    cdtype = {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(dtype, dtype)
    return X.to(dtype=cdtype, device=device)


def so3_generators(l: int, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Real antisymmetric generators (3, 2l+1, 2l+1) of rotations about x, y, z in e3nn's basis.

    ``wigner_D(l, a, 0, 0) = matrix_exp(a * X[1])`` and so on; for l=1 they are the usual
    cross-product matrices (``X[k] @ v = e_k x v``).

    >>> X = so3_generators(2, dtype=torch.float64)
    >>> a = torch.tensor(0.3, dtype=torch.float64)
    >>> X.shape, torch.allclose(torch.linalg.matrix_exp(a * X[1]), wigner_D(2, a, 0 * a, 0 * a))
    (torch.Size([3, 5, 5]), True)
    """
    _check_l(l)
    return _so3_generators_f64(l).to(dtype=dtype or torch.get_default_dtype(), device=device, copy=True)


def _rot_y(l: int, angle: torch.Tensor) -> torch.Tensor:
    """D^l of the rotation about y: ``D[l+m, l+m] = cos(m a)``, ``D[l+m, l-m] = -sin(m a)``."""
    m = torch.arange(-l, l + 1, dtype=angle.dtype, device=angle.device)
    ma = angle[..., None] * m
    diag = torch.diag_embed(torch.cos(ma))
    anti = torch.diag_embed(-torch.sin(ma)).flip(-1)  # entry (l+m, l-m)
    return diag + anti


@cache_unless_tracing
def _j_matrix_f64(l: int) -> torch.Tensor:
    """``J = D^l(R_z(-pi/2))``, which maps the y axis onto the x axis: ``D(R_x(b)) = J D(R_y(b)) J^T``."""
    X = _so3_generators_f64(l)
    J = torch.linalg.matrix_exp(-math.pi / 2 * X[2])
    return J


def wigner_D(l: int, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Wigner D matrices (..., 2l+1, 2l+1) of the YXY Euler angles, ``D(alpha) D_x(beta) D(gamma)``.

    Rotation ``gamma`` about y is applied first, then ``beta`` about x, then ``alpha`` about y, as in
    :func:`equitensor.o3.angles_to_matrix`; ``wigner_D(1, ...)`` equals that rotation matrix.
    It is a homomorphism, ``D(R1 R2) = D(R1) D(R2)``, and orthogonal.

    >>> from equitensor.o3.rotations import angles_to_matrix, rand_angles
    >>> angles = rand_angles(4, dtype=torch.float64)
    >>> wigner_D(2, *angles).shape, torch.allclose(wigner_D(1, *angles), angles_to_matrix(*angles))
    (torch.Size([4, 5, 5]), True)
    """
    _check_l(l)
    tensors = [t for t in (alpha, beta, gamma) if isinstance(t, torch.Tensor)]
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors]) if tensors else None
    if dtype is None or not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    device = tensors[0].device if tensors else None
    alpha, beta, gamma = torch.broadcast_tensors(
        *(torch.as_tensor(t, dtype=dtype, device=device) for t in (alpha, beta, gamma))
    )
    J = _j_matrix_f64(l).to(dtype=beta.dtype, device=beta.device)
    Dx = J @ _rot_y(l, beta) @ J.transpose(0, 1)
    return _rot_y(l, alpha) @ Dx @ _rot_y(l, gamma)
