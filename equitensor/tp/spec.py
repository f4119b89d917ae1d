"""The declarative description of a tensor product: what is computed, not how.

A :class:`TensorProductSpec` holds the irreps, the validated instructions and their final
normalization coefficients, in e3nn's conventions, so the same weights give e3nn's numbers.
Backends lower it to their own execution plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod, sqrt

import torch

from equitensor.irreps import Irreps

CONNECTION_MODES = ("uvw", "uvu", "uvv", "uuw", "uuu", "uvuv", "uvu<v", "u<vw")
IRREP_NORMALIZATIONS = ("component", "norm", "none")
PATH_NORMALIZATIONS = ("element", "path", "none")


class InstructionError(ValueError, AssertionError):
    """An instruction that cannot be built (index, mode, selection rule, multiplicities).

    A ``ValueError``; also an ``AssertionError`` because e3nn asserts these conditions and e3nn
    code (its own tests among it) catches ``AssertionError`` to skip impossible paths.
    """


@dataclass(frozen=True)
class Instruction:
    """One path ``irreps_in1[i_in1] x irreps_in2[i_in2] -> irreps_out[i_out]``.

    ``path_weight`` is the value the user gave; ``coefficient`` is the final normalization
    factor the path is multiplied by (e3nn overwrites ``path_weight`` with it; we keep both).

    >>> spec = TensorProductSpec.build("2x1o", "1o", "2x1e", [(0, 0, 0, "uvu", True)])
    >>> ins = spec.instructions[0]
    >>> ins.connection_mode, ins.path_shape, ins.weight_numel, ins.path_weight
    ('uvu', (2, 1), 2, 1.0)
    """

    i_in1: int
    i_in2: int
    i_out: int
    connection_mode: str
    has_weight: bool
    path_weight: float
    path_shape: tuple[int, ...]
    coefficient: float

    @property
    def weight_numel(self) -> int:
        return prod(self.path_shape) if self.has_weight else 0


def _path_shape(mode: str, mul1: int, mul2: int, mul_out: int) -> tuple[int, ...]:
    pairs = mul1 * (mul2 - 1) // 2
    return {
        "uvw": (mul1, mul2, mul_out),
        "uvu": (mul1, mul2),
        "uvv": (mul1, mul2),
        "uuw": (mul1, mul_out),
        "uuu": (mul1,),
        "uvuv": (mul1, mul2),
        "uvu<v": (pairs,),
        "u<vw": (pairs, mul_out),
    }[mode]


def _fan_in(mode: str, mul1: int, mul2: int) -> int:
    """Number of products summed into one output element (e3nn's ``num_elements``)."""
    return {
        "uvw": mul1 * mul2,
        "uvu": mul2,
        "uvv": mul1,
        "uuw": mul1,
        "uuu": 1,
        "uvuv": 1,
        "uvu<v": 1,
        "u<vw": mul1 * (mul2 - 1) // 2,
    }[mode]


def _check_multiplicities(mode: str, has_weight: bool, mul1: int, mul2: int, mul_out: int) -> str | None:
    """Return why the multiplicities do not fit the mode, or None when they do."""
    if mode == "uvw" and not has_weight:
        return "mode 'uvw' needs weights (has_weight=True)"
    if mode == "u<vw" and not has_weight:
        return "mode 'u<vw' needs weights (has_weight=True)"
    if mode == "uvu" and mul1 != mul_out:
        return f"mode 'uvu' needs mul_in1 == mul_out, got {mul1} and {mul_out}"
    if mode == "uvv" and mul2 != mul_out:
        return f"mode 'uvv' needs mul_in2 == mul_out, got {mul2} and {mul_out}"
    if mode in ("uuw", "uvu<v", "u<vw") and mul1 != mul2:
        return f"mode '{mode}' needs mul_in1 == mul_in2, got {mul1} and {mul2}"
    if mode == "uuw" and not has_weight and mul_out != 1:
        return f"mode 'uuw' without weights sums over u and needs mul_out == 1, got {mul_out}"
    if mode == "uuu" and not mul1 == mul2 == mul_out:
        return f"mode 'uuu' needs equal multiplicities, got {mul1}, {mul2}, {mul_out}"
    if mode == "uvuv" and mul1 * mul2 != mul_out:
        return f"mode 'uvuv' needs mul_out == mul_in1 * mul_in2, got {mul_out} != {mul1} * {mul2}"
    if mode == "uvu<v" and mul_out != mul1 * (mul1 - 1) // 2:
        return f"mode 'uvu<v' needs mul_out == mul(mul-1)/2, got {mul_out}"
    return None


def _variances(name: str, var: Sequence[float] | None, irreps: Irreps) -> list[float]:
    if var is None:
        return [1.0] * len(irreps)
    var = [float(v) for v in var]
    if len(var) != len(irreps):
        raise ValueError(f"{name} has {len(var)} entries but the irreps {irreps} have {len(irreps)} blocks")
    return var


@dataclass(frozen=True)
class TensorProductSpec:
    """Irreps, normalized instructions and weight layout of a tensor product.

    The flat weight vector concatenates the weighted instructions in order, each reshaped
    row-major to its ``path_shape`` (e3nn's layout).

    Normalization follows e3nn, including its known wart (e3nn/e3nn#296): the fan-in is
    counted per *block* as written, so ``"3x0e+7x0e"`` and ``"10x0e"`` normalize differently.
    Call ``Irreps.simplify()`` first if that is not wanted.

    >>> instructions = [(0, 0, 0, "uvw", True), (1, 0, 1, "uvw", True)]
    >>> spec = TensorProductSpec.build("2x0e + 1x1o", "1o", "2x1o + 1x1e", instructions)
    >>> spec.irreps_out, len(spec.instructions), spec.weight_numel
    (2x1o+1x1e, 2, 5)
    """

    irreps_in1: Irreps
    irreps_in2: Irreps
    irreps_out: Irreps
    instructions: tuple[Instruction, ...]
    irrep_normalization: str = "component"
    path_normalization: str = "element"

    @property
    def weight_numel(self) -> int:
        return sum(ins.weight_numel for ins in self.instructions)

    @classmethod
    def build(
        cls,
        irreps_in1,
        irreps_in2,
        irreps_out,
        instructions: Sequence[tuple],
        *,
        in1_var: Sequence[float] | None = None,
        in2_var: Sequence[float] | None = None,
        out_var: Sequence[float] | None = None,
        irrep_normalization: str | None = None,
        path_normalization: str | None = None,
    ) -> TensorProductSpec:
        """Validate e3nn-style instruction tuples and compute their normalization."""
        irreps_in1, irreps_in2, irreps_out = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
        irrep_normalization = irrep_normalization or "component"
        path_normalization = path_normalization or "element"
        if irrep_normalization not in IRREP_NORMALIZATIONS:
            raise ValueError(
                f"irrep_normalization must be one of {IRREP_NORMALIZATIONS}, got {irrep_normalization!r}"
            )
        if path_normalization not in PATH_NORMALIZATIONS:
            raise ValueError(
                f"path_normalization must be one of {PATH_NORMALIZATIONS}, got {path_normalization!r}"
            )
        in1_var = _variances("in1_var", in1_var, irreps_in1)
        in2_var = _variances("in2_var", in2_var, irreps_in2)
        out_var = _variances("out_var", out_var, irreps_out)

        raw = [_validate(ins, irreps_in1, irreps_in2, irreps_out) for ins in instructions]

        def fan_in(ins) -> float:
            i1, i2, _, mode, *_ = ins
            return in1_var[i1] * in2_var[i2] * _fan_in(mode, irreps_in1[i1].mul, irreps_in2[i2].mul)

        normalized = []
        for ins in raw:
            i1, i2, io, mode, has_weight, path_weight = ins
            ir1, ir2, ir_out = irreps_in1[i1].ir, irreps_in2[i2].ir, irreps_out[io].ir
            alpha = {"component": ir_out.dim, "norm": ir1.dim * ir2.dim, "none": 1}[irrep_normalization]
            same_out = [other for other in raw if other[2] == io]
            if path_normalization == "element":
                x = sum(fan_in(other) for other in same_out)
            elif path_normalization == "path":
                x = fan_in(ins) * len(same_out)
            else:
                x = 1.0
            if x > 0:
                alpha /= x
            alpha *= out_var[io] * path_weight
            shape = _path_shape(mode, irreps_in1[i1].mul, irreps_in2[i2].mul, irreps_out[io].mul)
            normalized.append(Instruction(i1, i2, io, mode, has_weight, path_weight, shape, sqrt(alpha)))

        return cls(
            irreps_in1, irreps_in2, irreps_out, tuple(normalized), irrep_normalization, path_normalization
        )


def _validate(ins: tuple, irreps_in1: Irreps, irreps_in2: Irreps, irreps_out: Irreps) -> tuple:
    """Check one instruction tuple; return it with ``path_weight`` filled in."""
    if len(ins) not in (5, 6):
        raise InstructionError(
            f"instruction {ins!r}: expected (i_in1, i_in2, i_out, mode, has_weight[, path_weight])"
        )
    i1, i2, io, mode, has_weight = ins[:5]
    path_weight = float(ins[5]) if len(ins) == 6 else 1.0
    for name, index, irreps in (
        ("i_in1", i1, irreps_in1),
        ("i_in2", i2, irreps_in2),
        ("i_out", io, irreps_out),
    ):
        if not isinstance(index, int) or not 0 <= index < len(irreps):
            raise InstructionError(f"instruction {ins!r}: {name}={index!r} is not a block index of {irreps}")
    if mode not in CONNECTION_MODES:
        raise InstructionError(
            f"instruction {ins!r}: unknown connection mode {mode!r}; expected one of {CONNECTION_MODES}"
        )
    (mul1, ir1), (mul2, ir2), (mul_out, ir_out) = irreps_in1[i1], irreps_in2[i2], irreps_out[io]
    if ir1.p * ir2.p != ir_out.p:
        raise InstructionError(f"instruction {ins!r}: parity violation, {ir1} x {ir2} cannot give {ir_out}")
    if not abs(ir1.l - ir2.l) <= ir_out.l <= ir1.l + ir2.l:
        raise InstructionError(f"instruction {ins!r}: triangle violation, {ir1} x {ir2} cannot give {ir_out}")
    problem = _check_multiplicities(mode, bool(has_weight), mul1, mul2, mul_out)
    if problem:
        raise InstructionError(f"instruction {ins!r}: {problem}")
    return (i1, i2, io, mode, bool(has_weight), path_weight)


def output_mask(irreps_out: Irreps, instructions: Sequence) -> torch.Tensor:
    """e3nn's ``output_mask``: 1.0 on the output components some path writes (a path of non-zero
    weight and no zero multiplicity), 0.0 elsewhere; ``instructions`` are records with ``i_out``,
    ``path_shape`` and ``path_weight``."""
    written = {ins.i_out for ins in instructions if ins.path_weight != 0 and 0 not in ins.path_shape}
    parts = [torch.full((mul * ir.dim,), float(i in written)) for i, (mul, ir) in enumerate(irreps_out)]
    return torch.cat(parts) if parts else torch.ones(0)
