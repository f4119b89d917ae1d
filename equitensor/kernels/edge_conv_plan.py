"""The fused edge convolution's execution plan: block layout, paths and their non-zero CG constants.

One plan per product ``irreps_node x irreps_sh -> irreps_out`` ('uvu', per-edge weights, SH
blocks of multiplicity 1). Kernels and the CPU reference ops share it, in the *ir_mul* layout:
within a block of ``mul x (2l+1)`` the element (m, u) sits at ``offset + m * mul + u``, so the
threads of a warp (one channel u each) read consecutive addresses. Weights keep the
TensorProduct layout: path p's ``mul`` weights of an edge at ``weight_offset + u``.

A plan is identified by its ``key``, a canonical JSON string (irreps, instructions and the exact
path coefficients as hex floats). Custom ops take the key as a string argument and rebuild the plan
from it (cached), so torch.compile and torch.library see plain strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

from equitensor.irreps import Irreps
from equitensor.o3.wigner import wigner_3j_sparse
from equitensor.tp.spec import TensorProductSpec


@dataclass(frozen=True)
class Block:
    """One irreps block in the ir_mul layout: ``offset`` into the flat feature, ``slot`` into the
    per-channel register array (``2l+1`` slots per block)."""

    mul: int
    l: int  # noqa: E741
    offset: int
    slot: int

    @property
    def dim(self) -> int:
        return 2 * self.l + 1


@dataclass(frozen=True)
class EdgePath:
    """One 'uvu' path: node block ``node`` x SH block ``sh`` -> output block ``out``.

    ``nonzeros`` are ``(i, j, k, value)`` with ``value = coefficient * C[i, j, k]`` (float64), i.e.
    the normalization folded into the real CG tensor: ``out[k, u] += w[u] value x[i, u] y[j]``.
    """

    node: int
    sh: int
    out: int
    weight_offset: int
    mul: int
    nonzeros: tuple[tuple[int, int, int, float], ...]


def _blocks(irreps: Irreps) -> tuple[Block, ...]:
    blocks, offset, slot = [], 0, 0
    for mul, ir in irreps:
        blocks.append(Block(mul, ir.l, offset, slot))
        offset += mul * ir.dim
        slot += ir.dim
    return tuple(blocks)


@dataclass(frozen=True)
class EdgeConvPlan:
    """Layout and constants of one fused edge convolution (see the module docstring)."""

    key: str
    irreps_node: Irreps
    irreps_sh: Irreps
    irreps_out: Irreps
    node: tuple[Block, ...]
    sh: tuple[Block, ...]
    out: tuple[Block, ...]
    paths: tuple[EdgePath, ...]

    @property
    def node_dim(self) -> int:
        return self.irreps_node.dim

    @property
    def sh_dim(self) -> int:
        return self.irreps_sh.dim

    @property
    def out_dim(self) -> int:
        return self.irreps_out.dim

    @property
    def weight_numel(self) -> int:
        return sum(p.mul for p in self.paths)

    @property
    def max_mul(self) -> int:
        return max((b.mul for b in self.node), default=0)

    @property
    def node_slots(self) -> int:
        return sum(b.dim for b in self.node)

    @property
    def out_slots(self) -> int:
        return sum(b.dim for b in self.out)


def plan_key(spec: TensorProductSpec) -> str:
    """The canonical key of ``spec``'s edge-convolution plan; ValueError if the kernels cannot
    compute it (every path must be weighted 'uvu' with an SH block of multiplicity 1)."""
    problems = edge_conv_limitations(spec)
    if problems:
        listed = "\n".join(f"  - {reason}" for _, reason in problems)
        raise ValueError(f"the cuda edge convolution cannot compute this product:\n{listed}")
    paths, weight_offset = [], 0
    for ins in spec.instructions:
        paths.append([ins.i_in1, ins.i_in2, ins.i_out, float(ins.coefficient).hex(), weight_offset])
        weight_offset += ins.weight_numel
    description = {
        "node": str(spec.irreps_in1),
        "sh": str(spec.irreps_in2),
        "out": str(spec.irreps_out),
        "paths": paths,
    }
    return json.dumps(description, separators=(",", ":"))


def edge_conv_limitations(spec: TensorProductSpec) -> list[tuple[int, str]]:
    """Why the fused kernels cannot compute ``spec``: (instruction index, reason) pairs, empty if
    they can."""
    problems = []
    for index, ins in enumerate(spec.instructions):
        ir1, ir2 = spec.irreps_in1[ins.i_in1], spec.irreps_in2[ins.i_in2]
        name = f"path {index} ({ir1} x {ir2} -> {spec.irreps_out[ins.i_out]})"
        if ins.connection_mode != "uvu":
            problems.append((index, f"{name}: mode {ins.connection_mode!r}, the kernels compute only 'uvu'"))
        elif not ins.has_weight:
            problems.append((index, f"{name}: unweighted, the kernels need per-edge weights on every path"))
        elif ir2.mul != 1:
            problems.append(
                (index, f"{name}: the edge (SH) block has multiplicity {ir2.mul}, the kernels need 1")
            )
    return problems


@cache
def plan_from_key(key: str) -> EdgeConvPlan:
    """Rebuild (once per process) the plan of a key made by :func:`plan_key`."""
    description = json.loads(key)
    irreps_node, irreps_sh, irreps_out = (Irreps(description[k]) for k in ("node", "sh", "out"))
    node, sh, out = _blocks(irreps_node), _blocks(irreps_sh), _blocks(irreps_out)
    paths = []
    for i1, i2, io, coefficient, weight_offset in description["paths"]:
        coefficient = float.fromhex(coefficient)
        indices, values = wigner_3j_sparse(node[i1].l, sh[i2].l, out[io].l)
        nonzeros = tuple(
            (i, j, k, coefficient * v)
            for (i, j, k), v in zip(indices.tolist(), values.tolist())
            if coefficient * v != 0
        )
        paths.append(EdgePath(i1, i2, io, weight_offset, node[i1].mul, nonzeros))
    return EdgeConvPlan(key, irreps_node, irreps_sh, irreps_out, node, sh, out, tuple(paths))
