"""The ``so2`` backend of the edge convolution: the 'uvu' product with SH(edge) in the edge frame.

Math (eSCN, Passaro & Zitnick 2023). For a path ``l1 x l2 -> l3`` the product with the spherical
harmonics of the edge direction ``r`` is ``out = c w sum_ij C[i, j, :] x_i Y_j(r)``. Let ``R`` be a
rotation with ``R e_y = r`` (e_y is the SH polar axis); then ``Y(r) = D(R) Y(e_y)`` and the
invariance of C gives

    out = D^{l3}(R) [ c w sum_i C[i, l2, :] x'_i Y_{l2,0}(e_y) ],    x' = D^{l1}(R)^T x,

because ``Y(e_y)`` has only its m=0 entry. The slice ``C[:, m2=0, :]`` is diagonal (m3 = m1) when
l1+l2+l3 is even and anti-diagonal (m3 = -m1) when it is odd, so in the edge frame the product is
an SO(2) map acting on each pair (+m, -m) separately: rotate in, one gather-multiply per path,
rotate out.

Rotations. ``R`` comes from the minimal rotation taking ``s e_y`` to ``r`` (Rodrigues, a rational
function of r with denominator ``1 + s r_y >= 1``), with ``s = sign(r_y)`` choosing one of two
charts, composed with the rotation by pi about x when ``s = -1``. The charts differ by a roll about
the edge axis, which the result does not depend on (the SO(2) map commutes with rotations about
e_y), so switching charts is invisible in the values and in the derivatives of every order: each
edge is computed in a chart that is smooth in a neighbourhood of it. No Euler angles, no acos or
atan2, hence no poles. Wigner matrices are built from ``D^1 = R`` by the Clebsch-Gordan recursion
``D^l = (2l+1) C^T (D^{l-1} (x) D^1) C`` with ``C = wigner_3j(l-1, 1, l)``: polynomials in the
entries of R, differentiable to any order.

Truncation. ``mmax`` keeps only ``|m| <= mmax`` in the edge frame. That commutes with rotations about
the edge axis, so the result is still exactly equivariant (and chart independent), but it is not
the cg product any more: an opt-in approximation, exact only when ``mmax >= min(l1, l3)`` for every
path.

Zero-length edges: ``Y(0)`` is 1 at l=0 and 0 above (like ``spherical_harmonics(normalize=True)``),
so paths with ``l2 > 0`` are masked out on those edges; their derivative with respect to the edge
vector is taken as 0 there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from equitensor.devices import cached
from equitensor.o3.spherical_harmonics import spherical_harmonics
from equitensor.o3.wigner import wigner_3j
from equitensor.tp.backends.capabilities import (
    BackendCapabilities,
    Limitation,
    describe_path,
    register_backend,
)
from equitensor.tp.edge_products import sum_into_receivers
from equitensor.tp.spec import TensorProductSpec

__all__ = ["edge_frame_rotation", "wigner_D_from_matrix", "SO2EdgeProduct", "so2_limitations", "CAPABILITIES"]


def edge_frame_rotation(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotations ``R`` (..., 3, 3) with ``R @ e_y = vectors / |vectors|``, and a mask of non-zero vectors.

    Smooth (to every order) in a neighbourhood of every non-zero vector, including +-y and the
    chart boundary ``y = 0``. Zero vectors get the identity and ``False`` in the mask.
    """
    n2 = (vectors * vectors).sum(-1)
    nonzero = n2 > 0
    # where() on the squared norm, not on the norm: no infinite derivative of sqrt at 0
    r = vectors * torch.where(nonzero, n2, torch.ones_like(n2)).rsqrt()[..., None]
    x, y, z = r.unbind(-1)
    s = torch.where(y >= 0, torch.ones_like(y), -torch.ones_like(y))  # chart, no gradient
    # minimal rotation M taking s e_y to r: M = I + [v]x + [v]x^2 / (1 + c), v = s e_y x r, c = s y
    a, b = s * z, -s * x  # v = (a, 0, b)
    k = 1 / (1 + s * y)
    o = torch.ones_like(y)
    # [v]x = [[0, -b, 0], [b, 0, -a], [0, a, 0]];  [v]x^2 = v v^T - |v|^2 I
    m = torch.stack(
        [
            torch.stack([o - k * b * b, -b, k * a * b], -1),
            torch.stack([b, o - k * (a * a + b * b), -a], -1),
            torch.stack([k * a * b, a, o - k * a * a], -1),
        ],
        -2,
    )
    # R = M @ diag(1, s, s): the rotation by pi about x (e_y -> -e_y) in the chart s = -1
    flip = torch.stack([o, s, s], -1)[..., None, :]
    eye = torch.eye(3, dtype=vectors.dtype, device=vectors.device)
    rotation = torch.where(nonzero[..., None, None], m * flip, eye)
    return rotation, nonzero


_RECURSION_F64: dict[int, torch.Tensor] = {}
_RECURSION: dict = {}


def _recursion_f64(l: int) -> torch.Tensor:
    """``sqrt(2l+1) wigner_3j(l-1, 1, l)`` in float64, cached in a plain dict (compile-friendly)."""
    return cached(_RECURSION_F64, l, lambda: wigner_3j(l - 1, 1, l, dtype=torch.float64) * (2 * l + 1) ** 0.5)


def _recursion_constants(lmax: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """:func:`_recursion_f64` for l = 2..lmax, cast to ``dtype`` on ``device`` and cached."""
    return cached(
        _RECURSION,
        (lmax, dtype, device),
        lambda: [_recursion_f64(l).to(dtype=dtype, device=device) for l in range(2, lmax + 1)],
    )


def wigner_D_from_matrix(lmax: int, R: torch.Tensor) -> list[torch.Tensor]:
    """Wigner matrices ``[D^0, ..., D^lmax]`` (each (..., 2l+1, 2l+1)) of the rotations R (..., 3, 3).

    e3nn's real basis (``D^1 = R``), from the recursion ``D^l = (2l+1) C^T (D^{l-1} (x) R) C``: only
    products and sums of the entries of R, so smooth everywhere and differentiable to any order.
    R must be a proper rotation (the recursion is the representation only on SO(3)).
    """
    batch = R.shape[:-2]
    Ds = [R.new_ones(batch + (1, 1))]
    if lmax >= 1:
        Ds.append(R)
    for C in _recursion_constants(lmax, R.dtype, R.device):
        # D^l[k, K] = sum C[i, j, k] D^{l-1}[i, I] R[j, J] C[I, J, K]
        t = torch.einsum("ijk,...iI->...jIk", C, Ds[-1])
        t = torch.einsum("...jIk,...jJ->...kIJ", t, R)
        Ds.append(torch.einsum("...kIJ,IJK->...kK", t, C))
    return Ds


@dataclass(frozen=True)
class _EdgePath:
    """One path in the edge frame: ``out'[..., l3 + m] += scale[m] w x'[..., source[m]]``, |m| <= k."""

    instruction: int
    i_in1: int
    i_out: int
    l2: int
    k: int  # |m| <= k kept
    source: tuple[int, ...]  # indices into the truncated rotated input block (width 2 k_in + 1)
    scale: tuple[float, ...]  # float64 coefficients: normalization * C[., l2, .] * Y_{l2,0}(e_y)


class SO2EdgeProduct(nn.Module):
    """Executes an edge 'uvu' TensorProductSpec (``x1`` = node features, ``x2`` = SH of the edge) in
    the edge frame: ``forward(x, edge_vectors, weight)`` returns the same per-edge products as the
    ``cg`` backend given ``x2 = spherical_harmonics(spec.irreps_in2, edge_vectors, normalize=True,
    normalization=sh_normalization)`` and the same weights (same layout).

    ``mmax`` (optional) truncates to ``|m| <= mmax`` in the edge frame: still equivariant, no longer
    equal to cg (see the module docstring).
    """

    def __init__(
        self, spec: TensorProductSpec, *, mmax: int | None = None, sh_normalization: str = "component"
    ) -> None:
        super().__init__()
        if mmax is not None and (isinstance(mmax, bool) or not isinstance(mmax, int) or mmax < 0):
            raise ValueError(f"mmax must be a non-negative int or None, got {mmax!r}")
        bad = [ins for ins in spec.instructions if ins.connection_mode != "uvu"]
        if bad:
            raise ValueError(
                f"the so2 backend computes 'uvu' edge products only; got modes "
                f"{sorted({ins.connection_mode for ins in bad})}"
            )
        self.spec = spec
        self.mmax = mmax
        self.sh_normalization = sh_normalization
        self.weight_sizes = [ins.weight_numel for ins in spec.instructions]
        self.paths = _plan(spec, mmax, sh_normalization)
        # truncation width of each rotated input block and each output block
        self.k_in = {p.i_in1: _kept(spec.irreps_in1[p.i_in1].ir.l, mmax) for p in self.paths}
        self.k_out = {}
        for p in self.paths:
            self.k_out[p.i_out] = max(self.k_out.get(p.i_out, 0), p.k)
        ls = [spec.irreps_in1[i].ir.l for i in self.k_in] + [spec.irreps_out[i].ir.l for i in self.k_out]
        self.lmax = max(ls, default=0)
        for l in range(2, self.lmax + 1):
            _recursion_f64(l)  # exact 3j arithmetic now, not inside a torch.compile trace
        self._scales: dict = {}

    @property
    def weight_numel(self) -> int:
        return self.spec.weight_numel

    def _constants(self, dtype: torch.dtype, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return cached(
            self._scales,
            (dtype, device),
            lambda: [
                (
                    torch.tensor(p.source, dtype=torch.long, device=device),
                    torch.tensor(p.scale, dtype=torch.float64).to(dtype=dtype, device=device),
                )
                for p in self.paths
            ],
        )

    def forward(
        self, x: torch.Tensor, edge_vectors: torch.Tensor, weight: torch.Tensor | None
    ) -> torch.Tensor:
        spec = self.spec
        if x.dim() != 2 or x.shape[-1] != spec.irreps_in1.dim:
            raise ValueError(f"x must have shape (E, {spec.irreps_in1.dim}), got {tuple(x.shape)}")
        num_edges = x.shape[0]
        if edge_vectors.shape != (num_edges, 3):
            raise ValueError(
                f"edge_vectors must have shape ({num_edges}, 3), got {tuple(edge_vectors.shape)}"
            )
        shapes = ((num_edges, spec.weight_numel), (spec.weight_numel,))
        if spec.weight_numel > 0 and (weight is None or weight.shape not in shapes):
            got = None if weight is None else tuple(weight.shape)
            raise ValueError(f"weight must have shape ({num_edges}, {spec.weight_numel}), got {got}")

        R, nonzero = edge_frame_rotation(edge_vectors)
        Ds = wigner_D_from_matrix(self.lmax, R)
        blocks_in = x.split([mul * ir.dim for mul, ir in spec.irreps_in1], dim=-1)
        weights = None if weight is None else weight.split(self.weight_sizes, dim=-1)
        mask = nonzero.to(x.dtype)[:, None, None]

        rotated = {}
        for i, k in self.k_in.items():
            mul, ir = spec.irreps_in1[i]
            D = Ds[ir.l][:, :, ir.l - k : ir.l + k + 1]
            rotated[i] = torch.bmm(blocks_in[i].reshape(num_edges, mul, ir.dim), D)  # D^T x

        frame_out: dict[int, list[torch.Tensor]] = {}
        for path, (source, scale) in zip(self.paths, self._constants(x.dtype, x.device)):
            ins = spec.instructions[path.instruction]
            mul2 = spec.irreps_in2[ins.i_in2].mul
            if ins.has_weight:
                w = weights[path.instruction].unflatten(-1, (-1, mul2)).sum(-1)  # copies of Y are equal
                w = w[..., None]
            else:
                w = float(mul2)
            term = rotated[path.i_in1].index_select(-1, source) * scale * w
            if path.l2 > 0:
                term = term * mask
            pad = self.k_out[path.i_out] - path.k
            if pad:
                term = nn.functional.pad(term, (pad, pad))
            frame_out.setdefault(path.i_out, []).append(term)

        blocks_out = []
        for i, (mul, ir) in enumerate(spec.irreps_out):
            terms = frame_out.get(i)
            if not terms:
                blocks_out.append(x.new_zeros(num_edges, mul * ir.dim))
                continue
            k = self.k_out[i]
            total = terms[0] if len(terms) == 1 else torch.stack(terms).sum(0)
            D = Ds[ir.l][:, :, ir.l - k : ir.l + k + 1]
            blocks_out.append(torch.bmm(total, D.transpose(1, 2)).reshape(num_edges, mul * ir.dim))
        return torch.cat(blocks_out, dim=-1) if blocks_out else x.new_zeros(num_edges, 0)


def _kept(l: int, mmax: int | None) -> int:
    """Largest |m| kept for degree l."""
    return l if mmax is None else min(l, mmax)


def _plan(spec: TensorProductSpec, mmax: int | None, sh_normalization: str) -> list[_EdgePath]:
    """Edge-frame form of every path that contributes, from the float64 3j tensors."""
    ir1s, ir2s, outs = spec.irreps_in1, spec.irreps_in2, spec.irreps_out
    axis = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    paths = []
    for index, ins in enumerate(spec.instructions):
        (mul1, ir1), (mul2, ir2), (mul_out, ir_out) = ir1s[ins.i_in1], ir2s[ins.i_in2], outs[ins.i_out]
        if 0 in (mul1, mul2, mul_out) or ins.coefficient == 0:
            continue
        l1, l2, l3 = ir1.l, ir2.l, ir_out.l
        y_axis = spherical_harmonics(str(ir2), axis, normalize=True, normalization=sh_normalization)
        y0 = y_axis[l2].item()
        if y_axis.abs().sum().item() - abs(y0) > 1e-12 * max(abs(y0), 1.0):
            raise AssertionError(f"internal error: SH {ir2} of e_y is not supported on m=0 only")
        C = wigner_3j(l1, l2, l3, dtype=torch.float64)[:, l2, :]  # (2l1+1, 2l3+1)
        sign = 1 if (l1 + l2 + l3) % 2 == 0 else -1  # diagonal or anti-diagonal
        k_in, k = _kept(l1, mmax), _kept(min(l1, l3), mmax)
        source, scale = [], []
        for m in range(-k, k + 1):
            source.append(sign * m + k_in)
            scale.append(ins.coefficient * y0 * C[l1 + sign * m, l3 + m].item())
        expected = torch.zeros_like(C)
        for m in range(-min(l1, l3), min(l1, l3) + 1):
            expected[l1 + sign * m, l3 + m] = C[l1 + sign * m, l3 + m]
        if not torch.equal(expected, C):
            raise AssertionError(f"internal error: C[:, 0, :] of {(l1, l2, l3)} is not (anti-)diagonal")
        paths.append(_EdgePath(index, ins.i_in1, ins.i_out, l2, k, tuple(source), tuple(scale)))
    return paths


def so2_limitations(spec: TensorProductSpec) -> list[Limitation]:
    """Paths the so2 backend cannot compute: anything but 'uvu' (node x SH(edge), per channel)."""
    return [
        Limitation(
            index,
            f"{describe_path(spec, index)}: so2 computes only 'uvu' products of node features with the "
            f"spherical harmonics of the edge (EdgeConvolution), not mode {ins.connection_mode!r}",
        )
        for index, ins in enumerate(spec.instructions)
        if ins.connection_mode != "uvu"
    ]


class SO2EdgeConvolution(nn.Module):
    """The ``so2`` edge convolution: :class:`SO2EdgeProduct` per edge (``per_edge``), summed into
    the receivers. It reads the edge vectors, not their spherical harmonics."""

    uses_sh = False

    def __init__(self, spec: TensorProductSpec, *, mmax: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.per_edge = SO2EdgeProduct(spec, mmax=mmax, sh_normalization="component")

    def forward(self, node_feats, edge_vectors, edge_sh, edge_weights, edge_index) -> torch.Tensor:
        sender, receiver = edge_index
        messages = self.per_edge(node_feats[sender], edge_vectors, edge_weights)
        return sum_into_receivers(receiver, node_feats.shape[0], messages)


def _build_so2_edge_convolution(spec: TensorProductSpec, **options) -> SO2EdgeConvolution:
    unknown = sorted(set(options) - {"mmax"})
    if unknown:
        raise ValueError(f"the 'so2' edge convolution takes only mmax, got {unknown}")
    return SO2EdgeConvolution(spec, **options)


CAPABILITIES = BackendCapabilities(
    name="so2",
    summary="edge convolution in the edge frame (eSCN): per-edge Wigner D, SO(2) map per |m|",
    builders={"edge_convolution": _build_so2_edge_convolution},
    paths="all parity-allowed 'uvu' node x SH(edge) paths (EdgeConvolution only)",
    weights="same as cg: per edge, path and channel (the TensorProduct layout)",
    exact=True,
    error=(
        "float round-off (equals cg to ~1e-15 relative in float64); opt-in mmax < lmax truncates "
        "|m| in the edge frame: still equivariant, no longer equal to cg"
    ),
    max_derivative_order=None,  # plain autograd ops, singularity-free; tested to second order
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    limitations=so2_limitations,
)

register_backend(CAPABILITIES)
