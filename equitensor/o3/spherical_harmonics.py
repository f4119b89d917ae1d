"""Real spherical harmonics in e3nn's basis, by a stable Cartesian (solid-harmonic) recursion.

Output matches ``e3nn.o3.spherical_harmonics``: degree-l block of size 2l+1, l=1 is proportional
to (x, y, z), the polar axis is y (e3nn's ``Y(x, y, z)`` is the standard real ``Y`` evaluated at
``(X, Y, Z) = (z, x, y)``), normalizations 'integral' | 'component' | 'norm'.

Algorithm (any l, no table): with the standard axes ``(X, Y, Z) = (z, x, y)`` and ``r2 = |x|^2``,

* ``C_m + i S_m = (X + iY)^m`` by the two-term complex-multiplication recursion;
* ``Q_l^m`` = normalised associated Legendre part as a homogeneous polynomial in (Z, r2),
  ``Q_l^l = sqrt((2l-1)/(2l)) Q_{l-1}^{l-1}``, ``Q_l^{l-1} = sqrt(2l-1) Z Q_{l-1}^{l-1}`` and
  ``Q_l^m = (2l-1)/sqrt((l+m)(l-m)) Z Q_{l-1}^m - sqrt((l+m-1)(l-m-1)/((l+m)(l-m))) r2 Q_{l-2}^m``
  (the upward recursion in l at fixed m: stable, values stay O(1), nothing overflows);
* ``r^l Y_l^{+-m} = K_l^m Q_l^m (C_m | S_m)``.

Every step is a product or a sum of polynomials, so ``normalize=False`` gives the homogeneous
polynomials ``r^l Y(x/r)`` and everything is differentiable to any order with plain torch ops.
Each l costs O(1) tensor operations (vectorised over m).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from equitensor.devices import cached

__all__ = ["spherical_harmonics", "SphericalHarmonics"]

_NORMALIZATIONS = ("integral", "component", "norm")
_TERM_RE = re.compile(r"^\s*(?:(\d+)\s*x)?\s*(\d+)\s*([eoy])\s*$")


def _parse_string(text: str) -> list[tuple[int, int, int | None]]:
    """'2x0e + 1o' -> [(mul, l, p)], through equitensor.irreps when available."""
    try:
        from equitensor.irreps import Irreps
    except ImportError:  # standalone fallback: plain '[mul x]<l><e|o|y>' terms
        out = []
        for token in text.split("+") if text.strip() else []:
            match = _TERM_RE.match(token)
            if match is None:
                raise ValueError(f"cannot parse {token!r} in irreps string {text!r}") from None
            mul, l, p = int(match.group(1) or 1), int(match.group(2)), match.group(3)
            out.append((mul, l, {"e": 1, "o": -1, "y": (-1) ** l}[p]))
        return out
    return [(mul, ir.l, ir.p) for mul, ir in Irreps(text)]


def _parse_ls(l: Any, p_in: int | None = None) -> tuple[list[int], int]:
    """Degrees requested and the parity of the input vector (-1: vector '1o', +1: pseudovector '1e').

    Accepts an int, a sequence of ints, an irreps string or any object with ``.ls`` (an Irreps).
    Parities, when given, must all be those of spherical harmonics of one input: ``(-1)^l`` for a
    vector, or all even for a pseudovector (e3nn's rule: an odd l with even parity means '1e').
    ``p_in`` imposes the input parity instead of inferring it.
    """
    if isinstance(l, bool):
        raise ValueError(f"spherical harmonics degree must be an int, got {l!r}")
    if isinstance(l, int):
        terms = [(1, l, None)]
    elif isinstance(l, str):
        terms = _parse_string(l)
    elif hasattr(l, "ls"):
        try:
            terms = [(mul, ir[0], ir[1]) for mul, ir in l]
        except (TypeError, ValueError, IndexError):
            terms = [(1, int(d), None) for d in l.ls]
    elif isinstance(l, Sequence) or hasattr(l, "__iter__"):
        terms = [(1, d, None) for d in l]
    else:
        raise ValueError(f"cannot interpret {l!r} as spherical harmonics degrees")

    ls = []
    for mul, d, _ in terms:
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise ValueError(f"spherical harmonics degrees must be non-negative ints, got {d!r} in {l!r}")
        ls.extend([d] * mul)
    if not ls:
        raise ValueError(f"no spherical harmonics degree requested in {l!r}")

    parities = [(d, p) for _, d, p in terms if p is not None]
    if p_in is None:
        p_in = 1 if any(d % 2 == 1 and p == 1 for d, p in parities) else -1
    for d, p in parities:
        if p != p_in**d:
            kind = "pseudovector ('1e')" if p_in == 1 else "vector ('1o')"
            raise ValueError(
                f"spherical harmonics {l!r}: degree l={d} has parity {p:+d}, but the harmonics of a {kind} "
                f"have parity {p_in**d:+d} at l={d} (parity (-1)^l for a vector, +1 for a pseudovector)"
            )
    return ls, p_in


def _scale(l: int, m: int, normalization: str) -> float:
    """Factor K_l^m turning the normalised Legendre part times (C_m | S_m) into the output."""
    k = math.sqrt(2.0) if m != 0 else 1.0
    if normalization == "integral":
        return k * math.sqrt((2 * l + 1) / (4 * math.pi))
    if normalization == "component":
        return k * math.sqrt(2 * l + 1)
    return k


def _constants_f64(lmax: int, normalization: str):
    """Recursion coefficients for the scaled Legendre parts P_l^m = K_l^m Q_l^m (float64).

    Returns ``top[l]`` (the constant P_l^l), ``sub[l]`` (P_l^{l-1} = sub[l] * Z) and, for l >= 2,
    column vectors ``a[l], b[l]`` over m = 0..l-2 with ``P_l^m = a Z P_{l-1}^m - b r2 P_{l-2}^m``.
    Folding K into the recursion costs no tensor operation.
    """
    q_diag = [1.0]  # unscaled Q_l^l
    for l in range(1, lmax + 1):
        q_diag.append(q_diag[-1] * math.sqrt((2 * l - 1) / (2 * l)))
    top = [q_diag[l] * _scale(l, l, normalization) for l in range(lmax + 1)]
    sub = [0.0] + [
        math.sqrt(2 * l - 1) * q_diag[l - 1] * _scale(l, l - 1, normalization) for l in range(1, lmax + 1)
    ]
    rec = {}
    for l in range(2, lmax + 1):
        ms = range(l - 1)
        a = [
            (2 * l - 1)
            / math.sqrt((l + m) * (l - m))
            * _scale(l, m, normalization)
            / _scale(l - 1, m, normalization)
            for m in ms
        ]
        b = [
            math.sqrt((l + m - 1) * (l - m - 1) / ((l + m) * (l - m)))
            * _scale(l, m, normalization)
            / _scale(l - 2, m, normalization)
            for m in ms
        ]
        rec[l] = (
            torch.tensor(a, dtype=torch.float64)[:, None],
            torch.tensor(b, dtype=torch.float64)[:, None],
        )
    return top, sub, rec


_CONSTANTS: dict = {}


def _constants(lmax: int, normalization: str, dtype: torch.dtype, device: torch.device):
    """:func:`_constants_f64` cast to ``dtype`` on ``device``, cached in a plain dict.

    (A dict rather than ``lru_cache`` so that ``torch.compile`` reads it without warnings.)
    """

    def build():
        top, sub, rec = _constants_f64(lmax, normalization)
        rec = {
            l: (a.to(dtype=dtype, device=device), b.to(dtype=dtype, device=device))
            for l, (a, b) in rec.items()
        }
        return top, sub, rec

    return cached(_CONSTANTS, (lmax, normalization, dtype, device), build)


def _sh(ls: tuple[int, ...], x: torch.Tensor, normalization: str, normalize: bool) -> torch.Tensor:
    """Core: solid harmonics r^l Y_l of x (..., 3) for the degrees ``ls``, concatenated.

    Works on the three coordinate columns (cheaper than reductions over a last dimension of 3).
    ``normalize`` divides by ``max(|x|, 1e-12)`` (``torch.nn.functional.normalize``'s values),
    written with ``rsqrt(max(|x|^2, 1e-24))`` so that zero vectors have finite derivatives of every
    order (F.normalize's second derivative is NaN at 0, which would poison force training).
    The scaled Legendre parts of degree l are kept as one (l, batch) block over m = 0..l-1 (the
    m = l part is a constant), so each degree costs a handful of tensor operations; the output
    components are single products written once by ``torch.stack``.
    """
    lmax = max(ls)
    top, sub, rec = _constants(lmax, normalization, x.dtype, x.device)
    batch = x.shape[:-1]
    x = x.reshape(-1, 3)
    X, Y, Z = x[:, 2], x[:, 0], x[:, 1]  # standard axes; e3nn's polar axis is y
    if normalize:
        inv = (X * X + Y * Y + Z * Z).clamp_min(1e-24).rsqrt()
        X, Y, Z = X * inv, Y * inv, Z * inv
    if lmax >= 2:
        # From the very X, Y, Z used below (not "1" after normalising): the recursion amplifies
        # an inconsistency between r2 and Z by ~l^2, while this keeps it exact for a point off by
        # one rounding, i.e. the error stays ~l * eps.
        n2 = X * X + Y * Y + Z * Z

    Zr = Z[None]
    P: list[torch.Tensor | None] = [None, Zr * sub[1]] if lmax >= 1 else [None]
    if lmax >= 2:
        r2 = n2[None]
        # P_0^0 (a constant) enters only through P_2^0.
        a, b = rec[2]
        P.append(torch.cat([a * Zr * P[1] - (b * top[0]) * r2, Zr * sub[2]]))
    for l in range(3, lmax + 1):
        a, b = rec[l]
        low = (
            a * Zr * P[l - 1][: l - 1]
            - b * r2 * torch.cat([P[l - 2], torch.full_like(Zr, top[l - 2])])[: l - 1]
        )
        P.append(torch.cat([low, Zr * sub[l]]))

    # Azimuthal part: C_m + i S_m = (X + iY)^m.
    C, S = [None, X], [None, Y]
    for _ in range(2, lmax + 1):
        c, s = C[-1], S[-1]
        C.append(X * c - Y * s)
        S.append(X * s + Y * c)

    rows = []
    for l in ls:
        if l == 0:
            rows.append(torch.full_like(Z, top[0]))
            continue
        rows.extend(top[l] * S[l] if m == l else P[l][m] * S[m] for m in range(l, 0, -1))
        rows.append(P[l][0])
        rows.extend(top[l] * C[l] if m == l else P[l][m] * C[m] for m in range(1, l + 1))
    return torch.stack(rows, dim=-1).reshape(*batch, len(rows))


def spherical_harmonics(
    l: int | Sequence[int] | str | Any,
    x: torch.Tensor,
    normalize: bool,
    normalization: str = "integral",
) -> torch.Tensor:
    """Real spherical harmonics of the vectors x (..., 3), e3nn's basis: (..., sum(2l+1)).

    ``l``: an int, a list of ints, an irreps string such as ``"0e + 1o + 2e"`` or an Irreps (any
    object exposing ``ls``); parities must be those of a vector, ``(-1)^l`` (or all even: a
    pseudovector input, as in e3nn).
    ``normalize``: project x onto the unit sphere first (zero vectors give 0 for l > 0, with
    finite gradients); otherwise the output is the homogeneous polynomial ``|x|^l Y(x/|x|)``.
    ``normalization``: 'integral' (orthonormal on the sphere), 'component' (``|Y^l|^2 = 2l+1``
    on the sphere, ``Y^0 = 1``) or 'norm' (``|Y^l| = 1`` on the sphere).

    >>> x = torch.tensor([[0.0, 0.0, 2.0]], dtype=torch.float64)
    >>> spherical_harmonics("0e + 1o + 2e", x, normalize=True).shape
    torch.Size([1, 9])
    >>> spherical_harmonics([0, 1], x, normalize=True, normalization="component")
    tensor([[1.0000, 0.0000, 0.0000, 1.7321]], dtype=torch.float64)
    """
    ls, _ = _parse_ls(l)
    return _spherical_harmonics(tuple(ls), x, normalize, normalization)


def _spherical_harmonics(ls: tuple[int, ...], x: torch.Tensor, normalize: bool, normalization: str):
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if x.shape[-1:] != (3,):
        raise ValueError(
            f"spherical_harmonics expects vectors with last dimension 3, got shape {tuple(x.shape)} "
            f"(last dimension {x.shape[-1] if x.dim() else 'missing'})"
        )
    return _sh(ls, x, normalization, bool(normalize))


class SphericalHarmonics(torch.nn.Module):
    """Module form of :func:`spherical_harmonics` with fixed degrees and options.

    The arguments are e3nn's: ``irreps_out`` (degrees as an int, a list of ints, or irreps),
    ``irreps_in`` ('1o' vector or '1e' pseudovector).

    >>> sh = SphericalHarmonics("0e + 1o + 2e", normalize=True)
    >>> sh.irreps_out, sh(torch.randn(10, 3)).shape
    (1x0e+1x1o+1x2e, torch.Size([10, 9]))
    """

    def __init__(
        self,
        irreps_out: int | Sequence[int] | str | Any,
        normalize: bool,
        normalization: str = "integral",
        irreps_in: Any = None,
    ) -> None:
        super().__init__()
        from equitensor.irreps import Irreps

        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        p_given = None
        if irreps_in is not None:
            irreps_in = Irreps(irreps_in)
            if irreps_in not in (Irreps("1o"), Irreps("1e")):
                raise ValueError(f"irreps_in must be '1o' (vector) or '1e' (pseudovector), got {irreps_in}")
            p_given = irreps_in[0].ir.p
        parsed, p_in = _parse_ls(irreps_out, p_given)
        self.ls = tuple(parsed)
        self.normalize = bool(normalize)
        self.normalization = normalization
        self.irreps_in = Irreps([(1, (1, p_in))])
        self.irreps_out = Irreps([(1, (d, p_in**d)) for d in parsed]).simplify()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _spherical_harmonics(self.ls, x, self.normalize, self.normalization)

    def extra_repr(self) -> str:
        return f"{self.irreps_out}, normalize={self.normalize}, normalization={self.normalization!r}"
