"""The ``cg`` backend: the exact reference tensor product in pure PyTorch.

Plan. Instructions are grouped by their ``x1`` block (and whether they pair channels ``uu`` or
not). For a group, all its ``x2`` blocks (of one multiplicity ``v``) are concatenated and
contracted first with the Clebsch-Gordan coefficients of every path in the group at once:

    M[z, v, i, k] = sum_j C[i, j, k] x2[z, v, j]

using the sparsity of real CG tensors (only m3 = +-m1 +-m2 is non-zero, so each (i, k) column
has at most a few non-zero j): M is a gather of ``x2`` columns times constants. Then one
batched matrix product with the ``x1`` block gives every path of the group:

    t[z, u, v, k] = sum_i x1[z, u, i] M[z, v, i, k]

and each path applies its weights to its slice of ``k``. When the channel counts are small
(single-channel full products), ``M`` and its gathers would cost far more than the output, so
such a group is split per ``x2`` block and forms the outer product first, contracted with the
dense CG matrix in one matrix product:

    t[z, u, v, k] = sum_{(i, j)} x1[z, u, i] x2[z, v, j] C[(i, j), k]

The order is chosen per group by an operation count. All steps are differentiable torch ops,
so backward and double backward come from autograd. Normalization coefficients are folded into
the CG constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import torch
from torch import nn

from equitensor.devices import cached, is_tracing
from equitensor.o3.wigner import wigner_3j
from equitensor.tp.spec import Instruction, TensorProductSpec


@dataclass(frozen=True)
class _Path:
    index: int  # position in spec.instructions
    k_start: int
    k_stop: int


@dataclass(frozen=True)
class _Group:
    i_in1: int
    blocks_in2: tuple[int, ...]
    paired: bool  # 'uu*' modes: t[z, u, k] instead of t[z, u, v, k]
    paths: tuple[_Path, ...]
    outer_first: bool = False  # contract the outer product with a dense CG matrix


def _plan(spec: TensorProductSpec) -> list[_Group]:
    """Group the non-empty instructions that can share one contraction."""
    ir1s, ir2s, outs = spec.irreps_in1, spec.irreps_in2, spec.irreps_out
    keys: dict[tuple, list[int]] = {}
    for index, ins in enumerate(spec.instructions):
        empty = 0 in (ir1s[ins.i_in1].mul, ir2s[ins.i_in2].mul, outs[ins.i_out].mul)
        if empty or ins.coefficient == 0 or (ins.has_weight and ins.weight_numel == 0):
            continue  # contributes exactly zero
        key = (ins.i_in1, ir2s[ins.i_in2].mul, ins.connection_mode.startswith("uu"))
        keys.setdefault(key, []).append(index)

    def group_of(i_in1: int, paired: bool, members: list[int], outer_first: bool = False) -> _Group:
        blocks_in2 = tuple(sorted({spec.instructions[i].i_in2 for i in members}))
        paths, k = [], 0
        for index in members:
            dim_out = outs[spec.instructions[index].i_out].ir.dim
            paths.append(_Path(index, k, k + dim_out))
            k += dim_out
        return _Group(i_in1, blocks_in2, paired, tuple(paths), outer_first)

    groups = []
    for (i_in1, _, paired), members in keys.items():
        by_in2: dict[int, list[int]] = {}
        for index in members:
            by_in2.setdefault(spec.instructions[index].i_in2, []).append(index)
        x2_first = group_of(i_in1, paired, members)
        outer_first = [group_of(i_in1, paired, m, outer_first=True) for m in by_in2.values()]
        if sum(_cost(spec, g) for g in outer_first) < _cost(spec, x2_first):
            groups.extend(outer_first)
        else:
            groups.append(x2_first)
    return groups


def _dense_cg(spec: TensorProductSpec, group: _Group) -> torch.Tensor:
    """The group's CG tensor C[i, j, k] in float64, coefficients folded in, x2 blocks along j."""
    ir1 = spec.irreps_in1[group.i_in1].ir
    j_offsets, j = {}, 0
    for b in group.blocks_in2:
        j_offsets[b] = j
        j += spec.irreps_in2[b].ir.dim
    dense = torch.zeros(ir1.dim, j, group.paths[-1].k_stop, dtype=torch.float64)
    for path in group.paths:
        ins = spec.instructions[path.index]
        ir2, ir_out = spec.irreps_in2[ins.i_in2].ir, spec.irreps_out[ins.i_out].ir
        j0 = j_offsets[ins.i_in2]
        cg = wigner_3j(ir1.l, ir2.l, ir_out.l, dtype=torch.float64)
        dense[:, j0 : j0 + ir2.dim, path.k_start : path.k_stop] = ins.coefficient * cg
    return dense


def _gather_table(columns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded gather table of a sparse matrix given as its columns (C, R).

    Returns ``index`` and ``value`` of shape (S, C) with ``out[:, c] = sum_s value[s, c] *
    x[:, index[s, c]]``, S being the most non-zeros any column has (padding has value 0).
    """
    nonzero = columns.abs() > 1e-14 * max(columns.abs().max().item(), 1e-300)
    width = max(int(nonzero.sum(1).max().item()), 1)
    index = torch.zeros(width, columns.shape[0], dtype=torch.long)
    value = torch.zeros(width, columns.shape[0], dtype=torch.float64)
    for c in range(columns.shape[0]):
        rows = nonzero[c].nonzero().flatten()
        index[: len(rows), c] = rows
        value[: len(rows), c] = columns[c, rows]
    return index, value


def _contraction_table(spec: TensorProductSpec, group: _Group) -> tuple[torch.Tensor, ...]:
    """The group's constants: the dense CG matrix (i*j, K) that multiplies the flattened outer
    product when the group contracts it first, else the gather table of ``x2`` per column (i, k)."""
    dense = _dense_cg(spec, group)
    i, j, k = dense.shape
    if group.outer_first:
        return (dense.reshape(i * j, k),)
    return _gather_table(dense.permute(0, 2, 1).reshape(i * k, j))


# On CPU the batch is computed in chunks of rows whose inputs, weights and outputs take about
# this many bytes: their intermediates then stay in cache and below glibc's mmap threshold, so
# they are not page-faulted in afresh on every call (fwd+bwd of a 64-channel L=3 uvu product
# on 20000 rows: 1.9x faster than all rows at once on a 2-core EPYC).
CPU_CHUNK_BYTES = 16 * 2**20

# Relative cost of a gathered multiply-add against one inside a matrix product.
_GATHER_COST = 10


def _scalar_x2_factors(spec: TensorProductSpec, group: _Group) -> list[float] | None:
    """For a group whose ``x2`` is one block of scalars (l = 0) and whose paths are all weighted
    'uvw': each path's constant ``f`` with ``C[i, 0, k] = f delta_ik`` (normalization folded in).
    None for any other group."""
    if len(group.blocks_in2) != 1 or group.paired or spec.irreps_in2[group.blocks_in2[0]].ir.l != 0:
        return None
    factors = []
    for path in group.paths:
        ins = spec.instructions[path.index]
        if ins.connection_mode != "uvw" or not ins.has_weight:
            return None
        l1 = spec.irreps_in1[ins.i_in1].ir.l
        cg = ins.coefficient * wigner_3j(l1, 0, spec.irreps_out[ins.i_out].ir.l, dtype=torch.float64)[:, 0, :]
        if cg.shape[0] != cg.shape[1] or not torch.allclose(
            cg, cg[0, 0] * torch.eye(cg.shape[0], dtype=torch.float64), atol=1e-14
        ):
            return None
        factors.append(float(cg[0, 0]))
    return factors


def _cost(spec: TensorProductSpec, group: _Group) -> int:
    """Operation count per sample of the group's contraction, gathers weighted by their cost."""
    mul1, ir1 = spec.irreps_in1[group.i_in1]
    mul2 = spec.irreps_in2[group.blocks_in2[0]].mul
    pairs = mul1 if group.paired else mul1 * mul2
    dense = _dense_cg(spec, group)
    i, j, k = dense.shape
    if group.outer_first:  # outer product, then one dense matrix product
        return pairs * i * j * (1 + k)
    nonzero = dense.abs() > 1e-14 * max(dense.abs().max().item(), 1e-300)
    width = int(nonzero.sum(1).max())  # most non-zeros of a column (i, k)
    return _GATHER_COST * mul2 * i * k * width + pairs * i * k


# modes computed from the full product t[z, u, v, k] (or t[z, u, k] when paired), which is
# then evaluated once for the whole group
_PRODUCT_MODES = ("uvuv", "uvu<v", "u<vw", "uuw")


def _weight_subscript(ins: Instruction, w: torch.Tensor | None) -> str:
    """'' for shared weights, 'z' for per-sample ones."""
    return "" if w is None or w.dim() == len(ins.path_shape) else "z"


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.bmm``, as a broadcast product when the inner dimension is 1 (a scalar input
    irrep): 2-5x faster than a batched matrix product of (u, 1) @ (1, k) matrices on CPU."""
    return a * b if a.shape[-1] == 1 else torch.bmm(a, b)


def _path_from_x2_contraction(ins: Instruction, x1: torch.Tensor, m: torch.Tensor, w: torch.Tensor | None):
    """One path of a mode outside ``_PRODUCT_MODES``: ``x1`` is (z, u, i), ``m`` is (z, v, i, k)
    (x2 already contracted with the CG tensor), ``w`` the path's weights, shared or per sample.
    Returns (z, mul_out, k).

    Weights are folded into the smaller operand: into ``x1`` before the batched matrix product,
    or, for 'uvu' with one ``x2`` channel and an output smaller than ``x1``, onto the output.
    """
    mode, s = ins.connection_mode, _weight_subscript(ins, w)
    z, mul2, dim1, dim_out = m.shape
    if mode == "uvu":
        if w is None:
            return _bmm(x1, m.sum(1))
        if mul2 == 1 and dim_out < dim1:  # scaling the smaller output is cheaper than folding
            return _bmm(x1, m[:, 0]) * w[..., 0].unsqueeze(-1)
        a = torch.einsum(f"zui,{s}uv->zuvi", x1, w).reshape(z, x1.shape[1], mul2 * dim1)
        return _bmm(a, m.reshape(z, mul2 * dim1, dim_out))
    if mode == "uvv":
        y = (
            x1.sum(1, keepdim=True).expand(z, mul2, dim1)
            if w is None
            else torch.einsum(f"zui,{s}uv->zvi", x1, w)
        )
        return torch.einsum("zvi,zvik->zvk", y, m)
    if mode == "uvw":
        y = torch.einsum(f"zui,{s}uvw->zwvi", x1, w).reshape(z, w.shape[-1], mul2 * dim1)
        return _bmm(y, m.reshape(z, mul2 * dim1, dim_out))
    if mode == "uuu":
        return torch.einsum("zui,zuik->zuk", x1 if w is None else x1 * w.unsqueeze(-1), m)
    raise AssertionError(mode)


def _path_from_product(ins: Instruction, t: torch.Tensor, w: torch.Tensor | None):
    """One path from its slice of the full product ``t`` (z, u, v, k), or (z, u, k) for the
    paired 'uu*' modes, and its weights. Returns (z, mul_out, k)."""
    mode, s = ins.connection_mode, _weight_subscript(ins, w)
    if mode == "uvu":
        if t.shape[2] == 1:  # one x2 channel: scale each u's outputs
            return t[:, :, 0] if w is None else t[:, :, 0] * w[..., 0].unsqueeze(-1)
        return t.sum(2) if w is None else torch.einsum(f"zuvk,{s}uv->zuk", t, w)
    if mode == "uvv":
        return t.sum(1) if w is None else torch.einsum(f"zuvk,{s}uv->zvk", t, w)
    if mode == "uvw":
        return torch.einsum(f"zuvk,{s}uvw->zwk", t, w)
    if mode == "uuu":
        return t if w is None else t * w.unsqueeze(-1)
    if mode == "uuw":
        return t.sum(1, keepdim=True) if w is None else torch.einsum(f"zuk,{s}uw->zwk", t, w)
    z, mul1, mul2, dim_out = t.shape
    if mode == "uvuv":
        out = t if w is None else t * w.unsqueeze(-1)
        return out.reshape(z, mul1 * mul2, dim_out)
    u, v = torch.triu_indices(mul2, mul2, 1, device=t.device)
    pairs = t[:, u, v]
    if mode == "uvu<v":
        return pairs if w is None else pairs * w.unsqueeze(-1)
    if mode == "u<vw":
        return torch.einsum(f"zpk,{s}pw->zwk", pairs, w)
    raise AssertionError(mode)


def _sparse_sum(x: torch.Tensor, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``out[..., c] = sum_s value[s, c] * x[..., index[s, c]]`` (a padded gather table)."""
    width, columns = index.shape
    gathered = x.index_select(-1, index.flatten()).unflatten(-1, (width, columns))
    return (gathered * value).sum(-2)


class CGTensorProduct(nn.Module):
    """Executes a :class:`TensorProductSpec` on flat inputs ``(z, dim)``.

    ``weight`` is ``(weight_numel,)`` (shared) or ``(z, weight_numel)`` (per sample).
    """

    def __init__(self, spec: TensorProductSpec) -> None:
        super().__init__()
        self.spec = spec
        self.groups = _plan(spec)
        self.weight_sizes = [ins.weight_numel for ins in spec.instructions]
        # float64 masters, cast once per (dtype, device) on use: not buffers, so that a module
        # built in float32 and moved to float64 keeps exact constants
        self._tables = [_contraction_table(spec, group) for group in self.groups]
        self._scalar_x2 = [_scalar_x2_factors(spec, group) for group in self.groups]
        self._cast: dict[tuple[torch.dtype, torch.device], list[tuple[torch.Tensor, ...]]] = {}

    def _tables_for(self, dtype: torch.dtype, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
        return cached(
            self._cast,
            (dtype, device),
            lambda: [
                tuple(t.to(device=device, dtype=dtype if t.is_floating_point() else None) for t in table)
                for table in self._tables
            ],
        )

    def rows_per_chunk(self, x: torch.Tensor) -> int:
        """How many rows of ``x``'s batch to compute at once: on CPU, as many as keep one chunk's
        inputs, weights and outputs near ``CPU_CHUNK_BYTES``; elsewhere, and while ``torch.compile``
        or ``torch.export`` trace (a loop over chunks would fix the number of rows), all of them."""
        if x.device.type != "cpu" or is_tracing():
            return max(x.shape[0], 1)
        spec = self.spec
        per_row = spec.irreps_in1.dim + spec.irreps_in2.dim + spec.weight_numel + spec.irreps_out.dim
        return max(1, CPU_CHUNK_BYTES // (x.element_size() * per_row))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        rows = self.rows_per_chunk(x1)
        if x1.shape[0] <= rows:
            return self._forward_rows(x1, x2, weight)
        per_sample = weight is not None and weight.dim() == 2
        weights = weight.split(rows) if per_sample else repeat(weight)
        chunks = zip(x1.split(rows), x2.split(rows), weights)
        return torch.cat([self._forward_rows(a, b, w) for a, b, w in chunks])

    def _forward_rows(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        blocks = self.output_blocks(x1, x2, weight)
        if not blocks:
            return x1.new_zeros(x1.shape[0], 0)
        z = x1.shape[0]
        return torch.cat(
            [
                x1.new_zeros(z, mul * ir.dim) if b is None else b
                for b, (mul, ir) in zip(blocks, self.spec.irreps_out)
            ],
            dim=-1,
        )

    def output_blocks(
        self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None
    ) -> list[torch.Tensor | None]:
        """The output block by block, (z, mul * ir.dim) each, ``None`` where no path reaches it:
        a caller that reduces the output (the edge convolution's sum into receivers) can do so
        per block instead of materialising the concatenation."""
        spec = self.spec
        z = x1.shape[0]
        ir1s, ir2s, outs = spec.irreps_in1, spec.irreps_in2, spec.irreps_out
        # split (not slice): its backward is one concatenation instead of a zero-fill per slice
        x1_blocks = x1.split([mul * ir.dim for mul, ir in ir1s], dim=-1)
        x2_blocks = x2.split([mul * ir.dim for mul, ir in ir2s], dim=-1)
        weights = None if weight is None else weight.split(self.weight_sizes, dim=-1)
        contributions: list[list[torch.Tensor]] = [[] for _ in outs]
        tables = self._tables_for(x2.dtype, x2.device)

        shared = weight is None or weight.dim() == 1
        for group, table, scalar_x2 in zip(self.groups, tables, self._scalar_x2):
            mul1, ir1 = ir1s[group.i_in1]
            mul2 = ir2s[group.blocks_in2[0]].mul
            x1_block = x1_blocks[group.i_in1].reshape(z, mul1, ir1.dim)
            if scalar_x2 is not None and shared:
                # x2 is one block of scalars and every path 'uvw' with shared weights (e.g. an
                # element-dependent linear map, x2 = one-hot elements): contract the weights with
                # x2 first, (z, v) @ (v, u w), then one batched product per path
                x2_block = x2_blocks[group.blocks_in2[0]]
                for path, factor in zip(group.paths, scalar_x2):
                    ins = spec.instructions[path.index]
                    u, v, w = ins.path_shape
                    mixed = weights[path.index].reshape(u, v, w).transpose(0, 1).reshape(v, u * w) * factor
                    per_sample = (x2_block @ mixed).reshape(z, u, w)
                    out = torch.bmm(x1_block.transpose(1, 2), per_sample).transpose(1, 2)
                    contributions[ins.i_out].append(out.reshape(z, w * ir1.dim))
                continue
            x2_group = torch.cat(
                [x2_blocks[b].reshape(z, mul2, ir2s[b].ir.dim) for b in group.blocks_in2], -1
            )

            sizes = [path.k_stop - path.k_start for path in group.paths]
            if group.outer_first:
                if group.paired:
                    outer = x1_block.unsqueeze(-1) * x2_group.unsqueeze(-2)  # (z, u, i, j)
                else:
                    outer = x1_block[:, :, None, :, None] * x2_group[:, None, :, None, :]
                t = outer.flatten(-2) @ table[0]  # (z, u[, v], K)
                m_paths, t_paths = [None] * len(sizes), t.split(sizes, dim=-1)
            else:
                m = _sparse_sum(x2_group, *table).unflatten(-1, (ir1.dim, -1))  # (z, v, i, K)
                m_paths, t_paths = m.split(sizes, dim=-1), [None] * len(sizes)
                if mul2 == 1 and all(
                    spec.instructions[p.index].connection_mode == "uvu" for p in group.paths
                ):
                    # one x2 channel: one product for the whole group, weights scale its outputs
                    t_paths = _bmm(x1_block, m[:, 0]).unsqueeze(2).split(sizes, dim=-1)
                elif any(spec.instructions[p.index].connection_mode in _PRODUCT_MODES for p in group.paths):
                    equation = "zui,zuik->zuk" if group.paired else "zui,zvik->zuvk"
                    t_paths = torch.einsum(equation, x1_block, m).split(sizes, dim=-1)

            for path, m_path, t_path in zip(group.paths, m_paths, t_paths):
                ins = spec.instructions[path.index]
                w = None
                if ins.has_weight:
                    flat = weights[path.index]
                    w = flat.reshape(flat.shape[:-1] + ins.path_shape)
                if t_path is not None:
                    out = _path_from_product(ins, t_path, w)
                else:
                    out = _path_from_x2_contraction(ins, x1_block, m_path, w)
                contributions[ins.i_out].append(out.reshape(z, out.shape[1] * out.shape[2]))

        return [
            None if not parts else parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)
            for parts in contributions
        ]
