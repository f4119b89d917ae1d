"""Floating-point operation and byte counts of the benchmarked operations (per call, forward).

A count turns a time into an achieved rate (GFLOP/s, GB/s) that can be set next to the
machine's peak. Each function states its formula: the algorithm as the backend runs it (dense
tables count densely, sparse ones by their non-zeros; the Fourier Gaunt product by its
algorithm's sparsity), one multiply-add = 2 flops. Bytes are the *compulsory* traffic: every
input, weight and output read or written once; the real traffic of an implementation is higher
(temporaries), so GB/s from these counts is a lower bound on what the memory system delivered.

Passes (:func:`pass_counts`). The forward count is the stated formula. For a multilinear map
(the tensor products: linear in each input) the gradient with respect to one input is one
contraction with the same non-zeros, so fwd+bwd = (1 + number of differentiated inputs) x fwd
flops and fwd bytes + (output gradient + inputs re-read + input gradients written). Other passes
and other operations are not modelled (None), rather than guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch

from equitensor.o3 import wigner_3j
from equitensor.tp.spec import TensorProductSpec

__all__ = [
    "Counts",
    "cg_nonzeros",
    "edge_convolution_counts",
    "fft_flops",
    "gaunt_fft_counts",
    "grid_counts",
    "pass_counts",
    "so2_counts",
    "symmetric_contraction_counts",
    "tensor_product_counts",
]


@dataclass(frozen=True)
class Counts:
    """Forward flops and compulsory bytes of one call; ``multilinear`` marks a map linear in each
    of its ``differentiable_inputs`` (what :func:`pass_counts` needs to extend to fwd+bwd)."""

    flops: float | None
    bytes_in: float
    bytes_out: float
    formula: str
    multilinear: bool = False
    differentiable_inputs: int = 0

    @property
    def bytes(self) -> float:
        return self.bytes_in + self.bytes_out


def pass_counts(counts: Counts | None, pass_name: str) -> tuple[float | None, float | None]:
    """(flops, bytes) of one call of ``pass_name`` ('fwd', 'fwd+bwd', 'fwd+bwd+dbwd'); None where
    not modelled (see the module docstring)."""
    if counts is None:
        return None, None
    if pass_name == "fwd":
        return counts.flops, counts.bytes
    if pass_name == "fwd+bwd" and counts.multilinear:
        flops = None if counts.flops is None else counts.flops * (1 + counts.differentiable_inputs)
        return flops, counts.bytes + counts.bytes_out + 2 * counts.bytes_in
    return None, None


@cache
def cg_nonzeros(l1: int, l2: int, l3: int) -> int:
    """Non-zero entries of the real CG tensor ``wigner_3j(l1, l2, l3)`` (only m3 = +-m1 +-m2)."""
    cg = wigner_3j(l1, l2, l3, dtype=torch.float64)
    return int((cg.abs() > 1e-12 * cg.abs().max()).sum())


def _pairs(mode: str, mul1: int, mul2: int) -> int:
    """Channel pairs a path multiplies: (u, v) for uv* modes, u for uu*, u < v for the triangle."""
    if mode.startswith("uu"):
        return mul1
    if mode in ("uvu<v", "u<vw"):
        return mul1 * (mul1 - 1) // 2
    return mul1 * mul2


def tensor_product_counts(spec: TensorProductSpec, batch: int, itemsize: int, *, per_sample_weights: bool):
    """Counts of the ``cg`` backend on ``batch`` samples.

    flops = batch x sum over paths of [pairs x 2 nnz(C_l1l2l3)  +  weight flops], with pairs the
    channel pairs of the mode (uv*: mul1 mul2; uu*: mul1; u<v: mul1 (mul1 - 1) / 2) and weight
    flops 2 pairs mul_out dim_out for the modes that mix into w channels (uvw, uuw, u<vw), 2 pairs
    dim_out for uvu/uvv (scale and sum over the other channel), pairs dim_out otherwise; the
    outer products x1_i x2_j are not counted separately (a lower bound of the naive sparse
    algorithm). bytes = batch x (dim1 + dim2 + dim_out) + weights (per sample or once).
    """
    flops = 0
    for ins in spec.instructions:
        (mul1, ir1), (mul2, ir2) = spec.irreps_in1[ins.i_in1], spec.irreps_in2[ins.i_in2]
        mul_out, ir_out = spec.irreps_out[ins.i_out]
        pairs = _pairs(ins.connection_mode, mul1, mul2)
        flops += pairs * 2 * cg_nonzeros(ir1.l, ir2.l, ir_out.l)
        if ins.has_weight:
            if ins.connection_mode in ("uvw", "uuw", "u<vw"):
                flops += 2 * pairs * mul_out * ir_out.dim
            elif ins.connection_mode in ("uvu", "uvv"):
                flops += 2 * pairs * ir_out.dim
            else:
                flops += pairs * ir_out.dim
    weights = spec.weight_numel * (batch if per_sample_weights else 1)
    return Counts(
        flops=float(batch * flops),
        bytes_in=float(itemsize * (batch * (spec.irreps_in1.dim + spec.irreps_in2.dim) + weights)),
        bytes_out=float(itemsize * batch * spec.irreps_out.dim),
        formula="cg: batch * sum_paths pairs * 2 nnz(CG) (+ weight multiply-adds)",
        multilinear=True,
        differentiable_inputs=2 + (spec.weight_numel > 0),
    )


def fft_flops(n1: int, n2: int) -> float:
    """The conventional 5 N log2 N flops of a complex 2D FFT of N = n1 n2 points (radix-2
    Cooley-Tukey estimate, also used for sizes that are not powers of two)."""
    size = n1 * n2
    return 5.0 * size * math.log2(size) if size > 1 else 0.0


def gaunt_fft_counts(lmax1: int, lmax2: int, lmax_out: int, channels: int, batch: int, itemsize: int):
    """Counts of the Gaunt product by 2D Fourier series (Luo et al. 2024), ``batch`` samples of
    ``channels`` channels: the *algorithm's* count, with the sparsity of the conversion tables
    (``Y_lm`` has terms |u| <= l and v = +-m only), not the backend's particular table layout.

    Per channel, with n = 2 (L1 + L2) + 1 the FFT size and k = min(L3, L1 + L2):
    SH -> Fourier (each input): 2 sum_{l<=L} (2l+1)^2 terms, real x complex = 4 flops each;
    FFTs: 3 x 5 n^2 log2(n^2) (two forward, one inverse, complex) + 6 n^2 (pointwise product);
    Fourier -> SH: 2 n sum_{l<=k} (2l+1) terms (all u, v = +-m), 4 flops each (real part only).
    Real-FFT savings (Hermitian symmetry) are not counted, so an implementation using them does
    fewer flops than this. bytes = batch x channels x ((L1+1)^2 + (L2+1)^2 + (L3+1)^2) x itemsize.
    """

    def to_fourier(l_max: int) -> int:
        return 4 * 2 * sum((2 * l + 1) ** 2 for l in range(l_max + 1))

    n, k = 2 * (lmax1 + lmax2) + 1, min(lmax_out, lmax1 + lmax2)
    per_channel = (
        to_fourier(lmax1)
        + to_fourier(lmax2)
        + 3 * fft_flops(n, n)
        + 6 * n * n
        + 4 * 2 * n * sum(2 * l + 1 for l in range(k + 1))
    )
    return Counts(
        flops=float(batch * channels * per_channel),
        bytes_in=float(itemsize * batch * channels * ((lmax1 + 1) ** 2 + (lmax2 + 1) ** 2)),
        bytes_out=float(itemsize * batch * channels * (lmax_out + 1) ** 2),
        formula="gaunt: per channel sparse SH<->Fourier conversions + 3 complex FFTs (5 N log2 N) "
        "+ pointwise product (algorithmic count)",
        multilinear=True,
        differentiable_inputs=2,
    )


def grid_counts(
    lmax1: int,
    lmax2: int,
    lmax_out: int,
    resolution: tuple[int, int],
    channels: int,
    batch: int,
    itemsize: int,
):
    """Counts of the ``grid`` (S2 quadrature) backend: dense matrices of harmonics at G grid points.

    Per channel: 2 G (L1+1)^2 + 2 G (L2+1)^2 (to the grid) + G (pointwise product)
    + 2 G (k+1)^2 (projection, k = min(L3, L1 + L2)), G = n_theta n_phi.
    """
    g = resolution[0] * resolution[1]
    k = min(lmax_out, lmax1 + lmax2)
    per_channel = 2 * g * (lmax1 + 1) ** 2 + 2 * g * (lmax2 + 1) ** 2 + g + 2 * g * (k + 1) ** 2
    return Counts(
        flops=float(batch * channels * per_channel),
        bytes_in=float(itemsize * batch * channels * ((lmax1 + 1) ** 2 + (lmax2 + 1) ** 2)),
        bytes_out=float(itemsize * batch * channels * (lmax_out + 1) ** 2),
        formula=f"grid: per channel dense transforms at {resolution[0]}x{resolution[1]} points",
        multilinear=True,
        differentiable_inputs=2,
    )


def _convolution_bytes(spec: TensorProductSpec, nodes: int, edges: int, itemsize: int) -> tuple[float, float]:
    """Compulsory bytes of an edge convolution: node features, edge vectors, per-edge weights and
    the edge index (int64) in; the node output out."""
    bytes_in = itemsize * (nodes * spec.irreps_in1.dim + edges * (3 + spec.weight_numel)) + 8 * 2 * edges
    return float(bytes_in), float(itemsize * nodes * spec.irreps_out.dim)


def edge_convolution_counts(spec: TensorProductSpec, nodes: int, edges: int, itemsize: int) -> Counts:
    """Counts of the ``cg`` edge convolution: the uvu product on every edge
    (:func:`tensor_product_counts` with batch = edges) + edges x dim_out adds of the scatter.
    The spherical harmonics of the edges are not counted."""
    tp = tensor_product_counts(spec, edges, itemsize, per_sample_weights=True)
    bytes_in, bytes_out = _convolution_bytes(spec, nodes, edges, itemsize)
    return Counts(
        flops=tp.flops + edges * spec.irreps_out.dim,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        formula="conv cg: uvu product per edge (sparse CG) + scatter adds; SH not counted",
    )


def so2_counts(product, nodes: int, edges: int, itemsize: int) -> Counts:
    """Counts of the ``so2`` edge convolution from its plan (a ``SO2EdgeProduct``).

    Per edge: rotate each input block into the edge frame, 2 mul (2l+1)(2k+1); per path
    3 mul (2k+1) (coefficient, weight, accumulate); rotate each output block back,
    2 mul (2k+1)(2l+1); plus edges x dim_out scatter adds. Building the Wigner matrices
    (per edge, independent of the channels) is not counted.
    """
    spec = product.spec
    per_edge = 0
    for i, k in product.k_in.items():
        mul, ir = spec.irreps_in1[i]
        per_edge += 2 * mul * ir.dim * (2 * k + 1)
    for path in product.paths:
        per_edge += 3 * spec.irreps_in1[path.i_in1].mul * (2 * path.k + 1)
    for i, k in product.k_out.items():
        mul, ir = spec.irreps_out[i]
        per_edge += 2 * mul * ir.dim * (2 * k + 1)
    bytes_in, bytes_out = _convolution_bytes(spec, nodes, edges, itemsize)
    return Counts(
        flops=float(edges * (per_edge + spec.irreps_out.dim)),
        bytes_in=bytes_in,
        bytes_out=bytes_out,
        formula="conv so2: rotations in/out + per-path scaling + scatter adds; Wigner D not counted",
    )


def sparse_product_counts(module, nodes: int, itemsize: int) -> Counts:
    """Counts of ``SymmetricContraction(backend="sparse")``: folding the weights into the T_nu
    symmetrised terms, 2 E P_nu C T_nu, then per node, channel and term ``correlation``
    multiplications and one add (lower orders are padded with a constant factor)."""
    c, elements = module.num_channels, module.num_elements
    terms = sum(t.shape[1] for t in module.basis._term_coefficients)
    fold = sum(2 * elements * t.shape[0] * c * t.shape[1] for t in module.basis._term_coefficients)
    weights = sum(p.numel() for p in module.parameters())
    return Counts(
        flops=float(fold + nodes * c * terms * (module.correlation + 1)),
        bytes_in=float(itemsize * (nodes * (module.irreps_in.dim + elements) + weights)),
        bytes_out=float(itemsize * nodes * module.irreps_out.dim),
        formula="product: non-zero symmetrised terms only (sparse kernel), weights folded per element",
    )


def symmetric_contraction_counts(module, nodes: int, itemsize: int) -> Counts:
    """Counts of ``SymmetricContraction`` (dense Horner scheme as implemented), per output irrep
    (M = 2L+1 components, D coupled dimension, C channels, E elements, P_nu paths, N nodes,
    S = M D^(nu-1)): element weights 2 N E P_nu C for every nu below the highest; highest order
    nu either per node, N (2 E P C + P D C + 2 C P D S), or with the weights folded into U per
    element (the module's choice), 2 E P C D S + N C E D + 2 N C E D S; each lower order:
    N (2 C P M D^nu + C M D^nu (add) + 2 C M D^nu (contract one copy of A))."""
    c, dim, elements = module.num_channels, module.coupling_irreps.dim, module.num_elements
    flops = 0
    for (_, ir_out), paths in zip(module.irreps_out, module.num_paths):
        m = ir_out.dim
        for nu in range(module.correlation, 0, -1):
            p = paths[nu - 1]
            if nu == module.correlation:
                size = m * dim ** (nu - 1)
                if module.basis.folds_weights(nodes, p):
                    flops += 2 * elements * p * c * dim * size + nodes * c * elements * dim
                    flops += 2 * nodes * c * elements * dim * size
                else:
                    flops += nodes * (2 * elements * p * c + p * dim * c + 2 * c * p * dim * size)
            else:
                flops += nodes * (2 * elements * p * c + 2 * c * p * m * dim**nu + 3 * c * m * dim**nu)
    weights = sum(p.numel() for p in module.parameters())
    return Counts(
        flops=float(flops),
        bytes_in=float(itemsize * (nodes * (module.irreps_in.dim + elements) + weights)),
        bytes_out=float(itemsize * nodes * module.irreps_out.dim),
        formula="product: dense Horner contraction with the generalised CG tensors, as implemented",
    )
