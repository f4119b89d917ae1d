"""Irreducible representations of O(3) and their direct sums, with e3nn's semantics.

``Irrep(l, p)`` is one irrep (degree ``l``, parity ``p``); ``Irreps`` is an ordered direct sum of
``MulIr(mul, ir)`` blocks laid out ``mul_ir`` (multiplicity outer, ``2l+1`` inner), written
``"16x0e + 8x1o"``. Both are immutable tuples, so they hash, compare and sort like e3nn's
(plain ``(l, p)`` tuple order: ``0o < 0e < 1o < 1e < 2o < 2e``).

Deliberate differences from e3nn (all supersets or bug fixes):

- ``ir1 * ir2`` returns a tuple (reusable) instead of a one-shot generator; ``Irrep * 3`` is
  ``3 * Irrep`` (``3x...``) where e3nn raises.
- ``Irrep(MulIr)`` returns the irrep (e3nn returns its ``l``, which makes
  ``filter(keep="2e + 1e")`` keep nothing); ``filter`` with a string keeps what it names.
- ``Irreps == "2x0e"`` and ``Irrep == "1o"`` compare against the parsed string.
- Parse errors name the offending token and the whole string.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import torch

__all__ = ["Irrep", "MulIr", "Irreps", "IrrepLike", "IrrepsLike"]

_PARITY = {"e": 1, "o": -1}
_IRREP_RE = re.compile(r"^(\d+)\s*([eoy])$")


def _as_int(x: Any, what: str) -> int:
    """Integer-like to int (bools and floats refused), non-negative."""
    if isinstance(x, bool):
        raise ValueError(f"{what} must be a non-negative integer, got {x!r}")
    try:
        x = operator.index(x)
    except TypeError:
        raise ValueError(f"{what} must be a non-negative integer, got {x!r}") from None
    if x < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {x}")
    return x


def _tuple_eq(value: tuple, other: object, parse) -> bool:
    """Tuple equality that also accepts the string form (``Irreps("0e") == "1x0e"``)."""
    if isinstance(other, str):
        try:
            other = parse(other)
        except ValueError:
            return False
    return tuple.__eq__(value, other)


class Irrep(tuple):
    """Irreducible representation of O(3): degree ``l >= 0`` and parity ``p = +1 ('e') | -1 ('o')``.

    Accepts ``Irrep(l, p)``, ``Irrep("1o")``, ``Irrep("2y")`` (``y``: parity ``(-1)^l`` of the
    spherical harmonics), ``Irrep((l, p))`` and ``Irrep(Irrep)``.

    >>> Irrep("1o"), Irrep(2, 1), Irrep("2y"), Irrep("1o").dim
    (1o, 2e, 2e, 3)
    >>> Irrep("1o") * Irrep("1o")
    (0e, 1e, 2e)
    """

    def __new__(cls, l: IrrepLike | int, p: int | None = None) -> Irrep:
        if p is None:
            if isinstance(l, Irrep):
                return l
            if isinstance(l, MulIr):
                return l.ir
            if isinstance(l, str):
                return cls._parse(l)
            try:
                l, p = l
            except (TypeError, ValueError):
                raise ValueError(f"cannot interpret {l!r} as an Irrep; give (l, p), 'lp' or Irrep") from None
        l = _as_int(l, "l")
        if isinstance(p, bool) or p not in (1, -1):
            raise ValueError(f"parity must be 1 or -1, got {p!r}")
        return super().__new__(cls, (l, int(p)))

    @classmethod
    def _parse(cls, name: str) -> Irrep:
        m = _IRREP_RE.match(name.strip())
        if m is None:
            raise ValueError(f"invalid Irrep string {name!r}: expected '<l><e|o|y>', e.g. '1o'")
        l = int(m.group(1))
        p = (-1) ** l if m.group(2) == "y" else _PARITY[m.group(2)]
        return super().__new__(cls, (l, p))

    @property
    def l(self) -> int:  # noqa: E743
        """Degree ``l``."""
        return self[0]

    @property
    def p(self) -> int:
        """Parity ``p`` (+1 even, -1 odd)."""
        return self[1]

    @property
    def dim(self) -> int:
        """Dimension ``2l + 1``."""
        return 2 * self[0] + 1

    def is_scalar(self) -> bool:
        """True for ``0e`` only."""
        return self == (0, 1)

    def __repr__(self) -> str:
        return f"{self[0]}{'e' if self[1] == 1 else 'o'}"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return _tuple_eq(self, other, Irrep)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = tuple.__hash__

    @classmethod
    def iterator(cls, lmax: int | None = None) -> Iterator[Irrep]:
        """All irreps in the order ``0e, 0o, 1o, 1e, 2e, 2o, ...`` (natural parity first), up to ``lmax``."""
        for l in itertools.count():
            yield cls(l, (-1) ** l)
            yield cls(l, -((-1) ** l))
            if l == lmax:
                break

    def __mul__(self, other: IrrepLike) -> tuple[Irrep, ...]:
        """Irreps in the product ``self x other``: ``|l1 - l2| .. l1 + l2`` with parity ``p1 p2``.

        ``Irrep * int`` gives ``int * Irrep`` (an ``Irreps`` of multiplicity ``int``).
        """
        if isinstance(other, int) and not isinstance(other, bool):
            return Irreps([(other, self)])
        other = Irrep(other)
        p = self.p * other.p
        return tuple(Irrep(l, p) for l in range(abs(self.l - other.l), self.l + other.l + 1))

    def __rmul__(self, other: int) -> Irreps:
        """``3 * Irrep("1e")`` is ``Irreps("3x1e")``."""
        if isinstance(other, int) and not isinstance(other, bool):
            return Irreps([(other, self)])
        return NotImplemented

    def __add__(self, other: IrrepsLike) -> Irreps:
        return Irreps(self) + Irreps(other)

    def __radd__(self, other: IrrepsLike) -> Irreps:
        return Irreps(other) + Irreps(self)

    def D_from_angles(
        self,
        alpha: torch.Tensor,
        beta: torch.Tensor,
        gamma: torch.Tensor,
        k: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``p^k D^l(alpha, beta, gamma)``, shape ``(..., 2l+1, 2l+1)`` (YXY Euler angles, ``k`` parities)."""
        from equitensor.o3.wigner import wigner_D

        alpha, beta, gamma = (torch.as_tensor(a) for a in (alpha, beta, gamma))
        if k is None:
            k = torch.zeros_like(alpha)
        alpha, beta, gamma, k = torch.broadcast_tensors(alpha, beta, gamma, torch.as_tensor(k))
        D = wigner_D(self.l, alpha, beta, gamma)
        if self.p == -1:
            D = D * torch.pow(-1.0, k).to(D.dtype)[..., None, None]
        return D

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        """Representation of the (possibly improper) orthogonal matrix ``R`` of shape ``(..., 3, 3)``.

        ``R = d R'`` with ``d = det R = +-1`` and ``R'`` proper; the result is ``p^k D(R')``, ``k = (1-d)/2``.
        """
        return self.D_from_angles(*_angles_and_parity(R))

    def D_from_quaternion(self, q: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        """Representation of the rotation of the quaternion ``q = (w, x, y, z)``, shape ``(..., 4)``."""
        from equitensor.o3.rotations import matrix_to_angles

        return self.D_from_angles(*matrix_to_angles(_quaternion_to_matrix(q)), k)

    def count(self, _value: Any) -> int:
        raise NotImplementedError

    def index(self, _value: Any, *args: Any) -> int:
        raise NotImplementedError


class _MulIrBase(NamedTuple):
    mul: int
    ir: Irrep


class MulIr(_MulIrBase):
    """``mul`` copies of the irrep ``ir``; a namedtuple ``(mul, ir)``."""

    __slots__ = ()

    def __new__(cls, mul: int, ir: IrrepLike | None = None) -> MulIr:
        if ir is None:
            mul, ir = mul
        return super().__new__(cls, _as_int(mul, "multiplicity"), Irrep(ir))

    @property
    def dim(self) -> int:
        """``mul * (2l + 1)``."""
        return self.mul * self.ir.dim

    def __repr__(self) -> str:
        return f"{self.mul}x{self.ir}"

    __str__ = __repr__


class _SliceByMul:
    """``Irreps.slice_by_mul``: a slice over the copies of every term, in order."""

    def __init__(self, irreps: Irreps) -> None:
        self.irreps = irreps

    def __getitem__(self, index: slice) -> Irreps:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError(f"slice_by_mul takes a slice with step 1, got {index!r}")
        start, stop, _ = index.indices(sum(mul for mul, _ in self.irreps))
        out, first = [], 0
        for mul, ir in self.irreps:
            keep = min(stop, first + mul) - max(start, first)
            if keep > 0:
                out.append((keep, ir))
            first += mul
        return Irreps(out)


class SortResult(NamedTuple):
    """Result of `Irreps.sort`: ``irreps[i] == self[inv[i]]`` and ``self[i] == irreps[p[i]]``."""

    irreps: Irreps
    p: tuple[int, ...]
    inv: tuple[int, ...]


def _parse_irreps(text: str) -> list[MulIr]:
    if text.strip() == "":
        return []
    out = []
    for token in text.split("+"):
        try:
            if "x" in token:
                mul, ir = token.split("x")
                if not mul.strip().isdigit():
                    raise ValueError(f"bad multiplicity {mul.strip()!r}")
                out.append(MulIr(int(mul), Irrep._parse(ir)))
            else:
                out.append(MulIr(1, Irrep._parse(token)))
        except ValueError as e:
            raise ValueError(
                f"invalid term {token.strip()!r} in Irreps string {text!r}: expected '[mul x]<l><e|o|y>' "
                f"joined by '+', e.g. '16x0e + 8x1o' ({e})"
            ) from None
    return out


def _as_mul_ir(item: Any) -> MulIr:
    if isinstance(item, MulIr):
        return item
    if isinstance(item, (str, Irrep)):
        return MulIr(1, Irrep(item))
    try:
        mul, ir = item
    except (TypeError, ValueError):
        raise ValueError(f"cannot interpret {item!r} as (mul, irrep)") from None
    return MulIr(mul, ir)


class Irreps(tuple):
    """Direct sum of irreps: a tuple of ``MulIr(mul, ir)``, written ``"16x0e + 8x1o"``.

    Accepts a string (``mul x`` optional, ``""`` is empty), an ``Irrep``, an ``Irreps``, or an
    iterable of ``(mul, (l, p))``, ``(mul, Irrep)``, ``(mul, "1o")``, ``MulIr`` or ``"1o"`` items.

    ``int * Irreps`` and ``Irreps * int`` repeat the list as tuples do (e3nn):
    ``2 * Irreps("0e + 1o") == "0e + 1o + 0e + 1o"``; to scale multiplicities write
    ``Irreps([(2 * mul, ir) for mul, ir in irreps])``.

    >>> irreps = Irreps("16x0e + 8x1o")
    >>> irreps, irreps.dim, irreps.num_irreps
    (16x0e+8x1o, 40, 24)
    >>> Irreps("0e + 1o + 0e").sort().irreps.simplify()
    2x0e+1x1o
    """

    # e3nn's tools (``e3nn.util.test.assert_equivariant`` and friends) recognise irreps by this
    # class attribute, so they work on equitensor's modules too.
    _e3nn_irreps_marker = True

    def __new__(cls, irreps: IrrepsLike = None) -> Irreps:
        if isinstance(irreps, Irreps):
            return irreps if type(irreps) is cls else super().__new__(cls, irreps)
        if irreps is None:
            items: list[MulIr] = []
        elif isinstance(irreps, str):
            items = _parse_irreps(irreps)
        elif isinstance(irreps, Irrep):
            items = [MulIr(1, irreps)]
        elif isinstance(irreps, MulIr):
            items = [irreps]
        else:
            items = [_as_mul_ir(item) for item in irreps]
        return super().__new__(cls, items)

    # -- description -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return "+".join(map(repr, self))

    __str__ = __repr__

    @property
    def dim(self) -> int:
        """Total dimension ``sum(mul * (2l+1))``."""
        return sum(mul_ir.dim for mul_ir in self)

    @property
    def num_irreps(self) -> int:
        """Sum of the multiplicities."""
        return sum(mul for mul, _ in self)

    @property
    def ls(self) -> list[int]:
        """``l`` of every copy, repeated ``mul`` times."""
        return [ir.l for mul, ir in self for _ in range(mul)]

    @property
    def lmax(self) -> int:
        """Largest ``l`` among the copies; ValueError when there are none."""
        ls = self.ls
        if not ls:
            raise ValueError(f"cannot get lmax of empty Irreps {self!r}")
        return max(ls)

    def slices(self) -> list[slice]:
        """Slice of the feature axis occupied by each ``MulIr``."""
        ends = list(itertools.accumulate(mul_ir.dim for mul_ir in self))
        return [slice(end - mul_ir.dim, end) for mul_ir, end in zip(self, ends, strict=True)]

    @property
    def slice_by_mul(self) -> _SliceByMul:
        """Index the copies one by one across terms: ``irreps.slice_by_mul[a:b]`` keeps copies
        ``a`` to ``b - 1`` counted over all terms in order (e3nn's ``slice_by_mul``).

        >>> Irreps("10x0e + 2e + 10x1e").slice_by_mul[5:15]
        5x0e+1x2e+4x1e
        """
        return _SliceByMul(self)

    def count(self, ir: IrrepLike) -> int:
        """Total multiplicity of ``ir``."""
        ir = Irrep(ir)
        return sum(mul for mul, other in self if other == ir)

    def __contains__(self, ir: object) -> bool:
        ir = Irrep(ir)
        return any(other == ir for _, other in self)

    def index(self, _value: Any, *args: Any) -> int:
        raise NotImplementedError

    # -- tuple behaviour -----------------------------------------------------------------------

    def __getitem__(self, i):
        x = super().__getitem__(i)
        return Irreps(x) if isinstance(i, slice) else x

    def __eq__(self, other: object) -> bool:
        return _tuple_eq(self, other, Irreps)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = tuple.__hash__

    def __add__(self, other: IrrepsLike) -> Irreps:
        return Irreps(tuple(self) + tuple(Irreps(other)))

    def __radd__(self, other: IrrepsLike) -> Irreps:
        return Irreps(other) + self

    def __mul__(self, other: int) -> Irreps:
        if isinstance(other, Irreps):
            raise NotImplementedError("Irreps * Irreps is ambiguous; use a tensor product (equitensor.tp)")
        return Irreps(tuple.__mul__(self, other))

    def __rmul__(self, other: int) -> Irreps:
        return Irreps(tuple.__mul__(self, other))

    # -- transformations -----------------------------------------------------------------------

    def simplify(self) -> Irreps:
        """Merge *adjacent* equal irreps and drop zero multiplicities; the order is kept."""
        out: list[list] = []
        for mul, ir in self:
            if out and out[-1][1] == ir:
                out[-1][0] += mul
            elif mul > 0:
                out.append([mul, ir])
        return Irreps(out)

    def remove_zero_multiplicities(self) -> Irreps:
        """Drop the ``0x`` terms."""
        return Irreps([mul_ir for mul_ir in self if mul_ir.mul > 0])

    def sort(self) -> SortResult:
        """Stable sort by ``(l, p)``; returns ``(irreps, p, inv)`` with ``irreps[p[i]] == self[i]``."""
        inv = tuple(sorted(range(len(self)), key=lambda i: self[i].ir))  # stable
        p = [0] * len(inv)
        for new, old in enumerate(inv):
            p[old] = new
        return SortResult(Irreps([self[i] for i in inv]), tuple(p), inv)

    def regroup(self) -> Irreps:
        """``sort().irreps.simplify()``: one term per irrep, in sorted order."""
        return self.sort().irreps.simplify()

    def filter(
        self,
        keep: IrrepsLike | Callable[[MulIr], bool] = None,
        *,
        drop: IrrepsLike | Callable[[MulIr], bool] = None,
        lmax: int | None = None,
    ) -> Irreps:
        """Keep the terms whose irrep is in ``keep``, or not in ``drop``, or with ``l <= lmax`` (give one).

        ``keep``/``drop``: irreps-like (muls ignored), a list of irreps, or a predicate on ``MulIr``.
        """
        if sum(x is not None for x in (keep, drop, lmax)) > 1:
            raise ValueError("give only one of keep, drop and lmax")
        if keep is None and drop is None and lmax is None:
            return self
        if lmax is not None:
            return Irreps([mul_ir for mul_ir in self if mul_ir.ir.l <= lmax])
        select, wanted = (keep, True) if keep is not None else (drop, False)
        if callable(select):
            return Irreps([mul_ir for mul_ir in self if bool(select(mul_ir)) == wanted])
        if isinstance(select, (str, MulIr)):
            select = Irreps(select)
        if isinstance(select, Irrep):
            select = [select]
        irs = {Irrep(ir) for ir in select}
        return Irreps([mul_ir for mul_ir in self if (mul_ir.ir in irs) == wanted])

    @staticmethod
    def spherical_harmonics(lmax: int, p: int = -1) -> Irreps:
        """Irreps ``1x0e + 1x1o + 1x2e + ...`` of the spherical harmonics up to ``lmax`` (parity ``p^l``)."""
        return Irreps([(1, (l, p**l)) for l in range(lmax + 1)])

    # -- tensors -----------------------------------------------------------------------------

    def randn(
        self,
        *size: int,
        normalization: str = "component",
        requires_grad: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Random features of shape ``size`` with the ``-1`` entry replaced by ``dim``.

        ``'component'``: i.i.d. standard normal entries; ``'norm'``: every irrep copy has unit norm.
        """
        if list(size).count(-1) != 1:
            raise ValueError(f"size must contain exactly one -1 marking the irreps axis, got {size}")
        axis = size.index(-1)
        before, after = size[:axis], size[axis + 1 :]
        if normalization == "component":
            x = torch.randn(*before, self.dim, *after, dtype=dtype, device=device)
        elif normalization == "norm":
            blocks = []
            for mul, ir in self:
                r = torch.randn(*before, mul, ir.dim, *after, dtype=dtype, device=device)
                r = r / r.norm(dim=axis + 1, keepdim=True)
                blocks.append(r.reshape(*before, mul * ir.dim, *after))
            if blocks:
                x = torch.cat(blocks, dim=axis)
            else:
                x = torch.zeros(*before, 0, *after, dtype=dtype, device=device)
        else:
            raise ValueError(f"normalization must be 'component' or 'norm', got {normalization!r}")
        return x.requires_grad_(requires_grad)

    def D_from_angles(
        self,
        alpha: torch.Tensor,
        beta: torch.Tensor,
        gamma: torch.Tensor,
        k: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Block-diagonal representation matrix, shape ``(..., dim, dim)``; see `Irrep.D_from_angles`."""
        alpha, beta, gamma = (torch.as_tensor(a) for a in (alpha, beta, gamma))
        shape = torch.broadcast_shapes(alpha.shape, beta.shape, gamma.shape, () if k is None else k.shape)
        dtype = alpha.dtype if alpha.is_floating_point() else torch.get_default_dtype()
        out = torch.zeros(*shape, self.dim, self.dim, dtype=dtype, device=alpha.device)
        cache: dict[Irrep, torch.Tensor] = {}
        for (mul, ir), s in zip(self, self.slices(), strict=True):
            if mul == 0:
                continue
            if ir not in cache:
                cache[ir] = ir.D_from_angles(alpha, beta, gamma, k).to(dtype)
            D = cache[ir]
            eye = torch.eye(mul, dtype=dtype, device=alpha.device)
            block = torch.einsum("uv,...ij->...uivj", eye, D).reshape(*shape, s.stop - s.start, -1)
            out[..., s, s] = block
        return out

    def D_from_matrix(self, R: torch.Tensor) -> torch.Tensor:
        """Block-diagonal representation of the orthogonal (proper or improper) ``R``: ``(..., dim, dim)``."""
        return self.D_from_angles(*_angles_and_parity(R))

    def D_from_quaternion(self, q: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        """Block-diagonal representation of the rotation given by the quaternion ``q = (w, x, y, z)``."""
        from equitensor.o3.rotations import matrix_to_angles

        return self.D_from_angles(*matrix_to_angles(_quaternion_to_matrix(q)), k)


def _angles_and_parity(R: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(alpha, beta, gamma, k)`` with ``R = (-1)^k * angles_to_matrix(alpha, beta, gamma)``."""
    from equitensor.o3.rotations import matrix_to_angles

    d = torch.det(R).sign()
    alpha, beta, gamma = matrix_to_angles(R * d[..., None, None])
    return alpha, beta, gamma, (1 - d) / 2


def _quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrix of the quaternion ``(w, x, y, z)`` (normalised first)."""
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


#: Anything ``Irrep(...)`` accepts: an ``Irrep``, ``"1o"``, ``(l, p)``.
IrrepLike = Irrep | str | tuple[int, int]
#: Anything ``Irreps(...)`` accepts: Irreps, Irrep, MulIr, ``"16x0e + 8x1o"``, iterables of terms, None.
IrrepsLike = Irreps | Irrep | MulIr | str | Iterable[Any] | None
