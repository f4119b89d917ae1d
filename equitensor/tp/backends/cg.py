"""The ``cg`` backend: the exact reference tensor product in pure PyTorch.

Plan. Instructions are grouped by their ``x1`` block (and whether they pair channels ``uu`` or
not). For a group, all its ``x2`` blocks (of one multiplicity ``v``) are concatenated and
contracted first with the Clebsch-Gordan coefficients of every path in the group at once:

    M[z, v, i, k] = sum_j C[i, j, k] x2[z, v, j]

using the sparsity of real CG tensors (only m3 = +-m1 +-m2 is non-zero, so each (i, k) column
has at most a few non-zero j): M is a gather of ``x2`` columns times constants. Then one
batched matrix product with the ``x1`` block gives every path of the group:

    t[z, u, v, k] = sum_i x1[z, u, i] M[z, v, i, k]

and each path applies its weights to its slice of ``k``. All steps are differentiable torch
ops, so backward and double backward come from autograd. Normalization coefficients are
folded into the CG constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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

    groups = []
    for (i_in1, _, paired), members in keys.items():
        blocks_in2 = tuple(sorted({spec.instructions[i].i_in2 for i in members}))
        paths, k = [], 0
        for index in members:
            dim_out = outs[spec.instructions[index].i_out].ir.dim
            paths.append(_Path(index, k, k + dim_out))
            k += dim_out
        groups.append(_Group(i_in1, blocks_in2, paired, tuple(paths)))
    return groups


def _sparse_contraction(spec: TensorProductSpec, group: _Group) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather table of the group's CG tensor C[i, j, k] (coefficients folded in).

    Returns ``index`` and ``value`` of shape (S, i * K): ``M[:, c] = sum_s value[s, c] *
    x2[:, index[s, c]]`` where S is the most non-zeros any column (i, k) has.
    """
    ir1 = spec.irreps_in1[group.i_in1].ir
    j_offsets, j = {}, 0
    for b in group.blocks_in2:
        j_offsets[b] = j
        j += spec.irreps_in2[b].ir.dim
    k_total = group.paths[-1].k_stop
    dense = torch.zeros(ir1.dim, j, k_total, dtype=torch.float64)
    for path in group.paths:
        ins = spec.instructions[path.index]
        ir2, ir_out = spec.irreps_in2[ins.i_in2].ir, spec.irreps_out[ins.i_out].ir
        j0 = j_offsets[ins.i_in2]
        cg = wigner_3j(ir1.l, ir2.l, ir_out.l, dtype=torch.float64)
        dense[:, j0 : j0 + ir2.dim, path.k_start : path.k_stop] = ins.coefficient * cg

    columns = dense.permute(0, 2, 1).reshape(ir1.dim * k_total, j)  # (i*K, j)
    nonzero = columns.abs() > 1e-14 * max(columns.abs().max().item(), 1e-300)
    width = max(int(nonzero.sum(1).max().item()), 1)
    index = torch.zeros(width, columns.shape[0], dtype=torch.long)
    value = torch.zeros(width, columns.shape[0], dtype=torch.float64)
    for c in range(columns.shape[0]):
        js = nonzero[c].nonzero().flatten()
        index[: len(js), c] = js
        value[: len(js), c] = columns[c, js]
    return index, value


# modes computed from the full product t[z, u, v, k] (or t[z, u, k] when paired), which is
# then evaluated once for the whole group
_PRODUCT_MODES = ("uvuv", "uvu<v", "u<vw", "uuw")


def _path_product(
    ins: Instruction, x1: torch.Tensor, m: torch.Tensor, w: torch.Tensor | None, t: torch.Tensor | None
):
    """One path: ``x1`` is (z, u, i), ``m`` is (z, v, i, k) (x2 already contracted with the CG
    tensor), ``w`` the path's weights, shared or per sample, ``t`` the path's slice of the
    group's full product for the modes of ``_PRODUCT_MODES``. Returns (z, mul_out, k).

    Weights are folded into the small operand before the batched matrix product wherever the
    mode allows it, so the large per-path output is written once and never rescaled.
    """
    mode = ins.connection_mode
    s = "" if w is None or w.dim() == len(ins.path_shape) else "z"  # shared or per-sample weights
    z, mul2, dim1, dim_out = m.shape
    if mode == "uvu":
        if w is None:
            return torch.bmm(x1, m.sum(1))
        a = torch.einsum(f"zui,{s}uv->zuvi", x1, w).reshape(z, x1.shape[1], mul2 * dim1)
        return torch.bmm(a, m.reshape(z, mul2 * dim1, dim_out))
    if mode == "uvv":
        y = (
            x1.sum(1, keepdim=True).expand(z, mul2, dim1)
            if w is None
            else torch.einsum(f"zui,{s}uv->zvi", x1, w)
        )
        return torch.einsum("zvi,zvik->zvk", y, m)
    if mode == "uvw":
        y = torch.einsum(f"zui,{s}uvw->zwvi", x1, w).reshape(z, w.shape[-1], mul2 * dim1)
        return torch.bmm(y, m.reshape(z, mul2 * dim1, dim_out))
    if mode == "uuu":
        return torch.einsum("zui,zuik->zuk", x1 if w is None else x1 * w.unsqueeze(-1), m)
    if mode == "uuw":
        return t.sum(1, keepdim=True) if w is None else torch.einsum(f"zuk,{s}uw->zwk", t, w)
    if mode == "uvuv":
        out = t if w is None else t * w.unsqueeze(-1)
        return out.reshape(z, x1.shape[1] * mul2, dim_out)
    u, v = torch.triu_indices(mul2, mul2, 1, device=t.device)
    pairs = t[:, u, v]
    if mode == "uvu<v":
        return pairs if w is None else pairs * w.unsqueeze(-1)
    if mode == "u<vw":
        return torch.einsum(f"zpk,{s}pw->zwk", pairs, w)
    raise AssertionError(mode)


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
        self._tables = [_sparse_contraction(spec, group) for group in self.groups]
        self._cast: dict[tuple[torch.dtype, torch.device], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _tables_for(
        self, dtype: torch.dtype, device: torch.device
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        key = (dtype, device)
        if key not in self._cast:
            self._cast[key] = [(i.to(device), v.to(device=device, dtype=dtype)) for i, v in self._tables]
        return self._cast[key]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        spec = self.spec
        z = x1.shape[0]
        ir1s, ir2s, outs = spec.irreps_in1, spec.irreps_in2, spec.irreps_out
        # split (not slice): its backward is one concatenation instead of a zero-fill per slice
        x1_blocks = x1.split([mul * ir.dim for mul, ir in ir1s], dim=-1)
        x2_blocks = x2.split([mul * ir.dim for mul, ir in ir2s], dim=-1)
        weights = None if weight is None else weight.split(self.weight_sizes, dim=-1)
        contributions: list[list[torch.Tensor]] = [[] for _ in outs]
        tables = self._tables_for(x2.dtype, x2.device)

        for group, (index, value) in zip(self.groups, tables):
            mul1, ir1 = ir1s[group.i_in1]
            mul2 = ir2s[group.blocks_in2[0]].mul
            x1_block = x1_blocks[group.i_in1].reshape(z, mul1, ir1.dim)
            x2_group = torch.cat(
                [x2_blocks[b].reshape(z, mul2, ir2s[b].ir.dim) for b in group.blocks_in2], -1
            )

            width, columns = index.shape
            gathered = x2_group[:, :, index.flatten()].reshape(z, mul2, width, columns)
            m = (gathered * value).sum(2).reshape(z, mul2, ir1.dim, group.paths[-1].k_stop)  # (z, v, i, K)
            sizes = [path.k_stop - path.k_start for path in group.paths]
            m_paths = m.split(sizes, dim=-1)
            t_paths = [None] * len(sizes)
            if any(spec.instructions[path.index].connection_mode in _PRODUCT_MODES for path in group.paths):
                equation = "zui,zuik->zuk" if group.paired else "zui,zvik->zuvk"
                t_paths = torch.einsum(equation, x1_block, m).split(sizes, dim=-1)

            for path, m_path, t_path in zip(group.paths, m_paths, t_paths):
                ins = spec.instructions[path.index]
                w = None
                if ins.has_weight:
                    flat = weights[path.index]
                    w = flat.reshape(flat.shape[:-1] + ins.path_shape)
                out = _path_product(ins, x1_block, m_path, w, t_path)
                contributions[ins.i_out].append(out.reshape(z, out.shape[1] * out.shape[2]))

        blocks = []
        for (mul, ir), parts in zip(outs, contributions):
            if not parts:
                blocks.append(x1.new_zeros(z, mul * ir.dim))
            else:
                blocks.append(parts[0] if len(parts) == 1 else torch.stack(parts).sum(0))
        return torch.cat(blocks, dim=-1) if blocks else x1.new_zeros(z, 0)
