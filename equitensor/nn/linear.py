"""Equivariant linear map between irreps: mixes channels of equal irreps, e3nn's ``o3.Linear``."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import NamedTuple

import torch
from torch import nn

from equitensor.irreps import Irreps, IrrepsLike
from equitensor.tp.spec import output_mask


class Instruction(NamedTuple):
    """One path of a :class:`Linear`: input block ``i_in`` to output block ``i_out`` through a
    ``path_shape = (mul_in, mul_out)`` weight matrix scaled by ``path_weight`` (e3nn's record)."""

    i_in: int
    i_out: int
    path_shape: tuple[int, int]
    path_weight: float


class Linear(nn.Module):
    """``out[i_out] = sum_{i_in} x[i_in] @ W / sqrt(fan_in)`` over pairs of equal irreps.

    Same arguments, weight layout and normalization as e3nn's ``o3.Linear``: the flat weight
    vector concatenates one ``(mul_in, mul_out)`` matrix per instruction (row-major), and the
    fan-in is the sum of ``mul_in`` over the instructions feeding the output block ('element') or
    the instruction's own ``mul_in`` times their number ('path'). ``biases=True`` adds a bias to
    the ``0e`` outputs (a separate ``bias`` parameter, initialized to zero). ``f_in``/``f_out``
    add a channel axis before the irreps axis, mixed by the same weights ``(f_in, f_out, numel)``
    (the fan-in then includes ``f_in``). ``_optimize_einsums`` is accepted and ignored (e3nn's
    code-generation switch; nothing is generated here).

    >>> import torch
    >>> lin = Linear("2x0e + 1o", "3x0e + 2x1o")
    >>> lin.weight_numel, [ins.path_shape for ins in lin.instructions]
    (8, [(2, 3), (1, 2)])
    >>> lin(torch.randn(5, 5)).shape
    torch.Size([5, 9])
    """

    def __init__(
        self,
        irreps_in: IrrepsLike,
        irreps_out: IrrepsLike,
        *,
        f_in: int | None = None,
        f_out: int | None = None,
        internal_weights: bool | None = None,
        shared_weights: bool | None = None,
        instructions: Sequence[tuple[int, int]] | None = None,
        biases: bool | Sequence[bool] = False,
        path_normalization: str = "element",
        _optimize_einsums: bool | None = None,
    ) -> None:
        super().__init__()
        irreps_in, irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        if path_normalization not in ("element", "path"):
            raise ValueError(f"path_normalization must be 'element' or 'path', got {path_normalization!r}")
        if (f_in is None) != (f_out is None):
            raise ValueError(f"give both f_in and f_out or neither, got f_in={f_in}, f_out={f_out}")
        if instructions is None:
            instructions = [
                (i_in, i_out)
                for i_in, (_, ir_in) in enumerate(irreps_in)
                for i_out, (_, ir_out) in enumerate(irreps_out)
                if ir_in == ir_out
            ]
        for i_in, i_out in instructions:
            if not (0 <= i_in < len(irreps_in) and 0 <= i_out < len(irreps_out)):
                raise IndexError(
                    f"instruction {(i_in, i_out)}: index out of range for {irreps_in} -> {irreps_out}"
                )
            if irreps_in[i_in].ir != irreps_out[i_out].ir:
                raise ValueError(
                    f"instruction {(i_in, i_out)}: {irreps_in[i_in].ir} cannot map to {irreps_out[i_out].ir}"
                )
        if isinstance(biases, bool):
            biases = [biases and ir.is_scalar() for _, ir in irreps_out]
        biases = list(biases)
        if len(biases) != len(irreps_out):
            raise ValueError(f"biases has {len(biases)} entries, {irreps_out} has {len(irreps_out)} blocks")
        for has_bias, (_, ir) in zip(biases, irreps_out):
            if has_bias and not ir.is_scalar():
                raise ValueError(f"a bias is only equivariant on 0e outputs, not on {ir}")

        def fan_in(i_in: int, i_out: int) -> int:
            feeding = [i for i, o in instructions if o == i_out]
            if path_normalization == "element":
                fan = sum(irreps_in[i].mul for i in feeding)
            else:
                fan = irreps_in[i_in].mul * len(feeding)
            return fan * (f_in or 1)

        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        self.f_in, self.f_out = f_in, f_out
        self.instructions = [
            Instruction(i, o, (irreps_in[i].mul, irreps_out[o].mul), max(fan_in(i, o), 1) ** -0.5)
            for i, o in instructions
        ]
        self.biases = biases
        self.weight_numel = sum(prod(ins.path_shape) for ins in self.instructions)
        self.bias_numel = sum(mul * ir.dim for has_bias, (mul, ir) in zip(biases, irreps_out) if has_bias)
        self.register_buffer("output_mask", output_mask(self.irreps_out, self.instructions), persistent=False)

        if shared_weights is False and internal_weights is None:
            internal_weights = False
        self.shared_weights = True if shared_weights is None else shared_weights
        self.internal_weights = True if internal_weights is None else internal_weights
        if self.internal_weights and not self.shared_weights:
            raise ValueError("internal_weights=True requires shared_weights=True")
        # As e3nn: parameters where there are weights, empty buffers otherwise (so ``.weight`` is
        # always a tensor).
        channels = () if f_in is None else (f_in, f_out)
        if self.internal_weights and self.weight_numel:
            self.weight = nn.Parameter(torch.randn(*channels, self.weight_numel))
        else:
            self.register_buffer("weight", torch.empty(0), persistent=False)
        if self.internal_weights and self.bias_numel:
            self.bias = nn.Parameter(torch.zeros(*channels[1:], self.bias_numel))
        else:
            self.register_buffer("bias", torch.empty(0), persistent=False)

    @property
    def path_shapes(self) -> list[tuple[int, int]]:
        """``(mul_in, mul_out)`` of every instruction."""
        return [ins.path_shape for ins in self.instructions]

    @property
    def path_coefficients(self) -> list[float]:
        """The normalization ``1 / sqrt(fan_in)`` of every instruction."""
        return [ins.path_weight for ins in self.instructions]

    def weight_view_for_instruction(
        self, instruction: int, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The ``(..., mul_in, mul_out)`` view of instruction ``instruction``'s weights inside
        ``weight`` (default: the module's own); writing into it changes the weights."""
        weight = self._weight_or_own(weight)
        offset = sum(prod(ins.path_shape) for ins in self.instructions[:instruction])
        shape = self.instructions[instruction].path_shape
        return weight.narrow(-1, offset, prod(shape)).view(weight.shape[:-1] + shape)

    def weight_views(self, weight: torch.Tensor | None = None, yield_instruction: bool = False):
        """The view of every instruction's weights, in order (as e3nn: ``(index, instruction,
        view)`` triples with ``yield_instruction=True``)."""
        for index, ins in enumerate(self.instructions):
            view = self.weight_view_for_instruction(index, weight)
            yield (index, ins, view) if yield_instruction else view

    def _weight_or_own(self, weight: torch.Tensor | None) -> torch.Tensor:
        if weight is not None:
            return weight
        if not self.internal_weights:
            raise ValueError(
                f"this Linear has no internal weights: pass weight of shape (..., {self.weight_numel})"
            )
        return self.weight

    def __repr__(self) -> str:
        return f"Linear({self.irreps_in} -> {self.irreps_out} | {self.weight_numel} weights)"

    def forward(
        self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"x has last dimension {x.shape[-1]} but {self.irreps_in} needs {self.irreps_in.dim}"
            )
        if self.f_in is not None and (x.dim() < 2 or x.shape[-2] != self.f_in):
            raise ValueError(
                f"x must have shape (..., f_in={self.f_in}, {self.irreps_in.dim}), got {tuple(x.shape)}"
            )
        if weight is None and self.weight_numel:
            weight = self._weight_or_own(None)
        if bias is None and self.bias_numel and self.internal_weights:
            bias = self.bias
        if weight is not None and weight.shape[-1] != self.weight_numel:
            raise ValueError(
                f"weight must have last dimension {self.weight_numel}, got {tuple(weight.shape)}"
            )
        batch = x.shape[:-1] if self.f_in is None else x.shape[:-2]
        channels = () if self.f_in is None else (self.f_in,)
        x_blocks = [
            block.reshape(batch + channels + (mul, ir.dim))
            for block, (mul, ir) in zip(x.split([m * ir.dim for m, ir in self.irreps_in], -1), self.irreps_in)
        ]
        w_blocks = [] if weight is None else weight.split([prod(s) for s in self.path_shapes], -1)
        per_sample = weight is not None and weight.dim() > (1 if self.f_in is None else 3)

        outputs: list[list[torch.Tensor]] = [[] for _ in self.irreps_out]
        for ins, w in zip(self.instructions, w_blocks):
            shape, coefficient = ins.path_shape, ins.path_weight
            w = w.reshape(w.shape[:-1] + shape)
            x_in = x_blocks[ins.i_in]
            if self.f_in is not None:
                out = coefficient * torch.einsum("...fui,...fguw->...gwi", x_in, w)
            elif per_sample:
                out = coefficient * torch.einsum("...ui,...uw->...wi", x_in, w)
            elif x_in.shape[-1] == 1:  # shared weights, scalars: one mm
                out = (x_in.reshape(-1, shape[0]) @ (w * coefficient)).reshape(batch + (shape[1], 1))
            else:  # shared weights: the coefficient scales the (small) weight, then one matmul
                out = torch.matmul((w * coefficient).T, x_in)
            outputs[ins.i_out].append(out)

        out_channels = () if self.f_out is None else (self.f_out,)
        bias_blocks = iter(
            []
            if bias is None
            else bias.split([m for (m, _), b in zip(self.irreps_out, self.biases) if b], -1)
        )
        blocks = []
        for parts, has_bias, (mul, ir) in zip(outputs, self.biases, self.irreps_out):
            block = sum(parts[1:], parts[0]) if parts else x.new_zeros(batch + out_channels + (mul, ir.dim))
            if has_bias and bias is not None:
                block = block + next(bias_blocks).unsqueeze(-1)
            blocks.append(block.reshape(block.shape[:-2] + (mul * ir.dim,)))
        return torch.cat(blocks, dim=-1) if blocks else x.new_zeros(batch + out_channels + (0,))
