"""Equivariant linear map between irreps: mixes channels of equal irreps, e3nn's ``o3.Linear``."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn

from equitensor.irreps import Irreps, IrrepsLike


class Linear(nn.Module):
    """``out[i_out] = sum_{i_in} x[i_in] @ W / sqrt(fan_in)`` over pairs of equal irreps.

    Same weight layout and normalization as e3nn's ``o3.Linear``: the flat weight vector
    concatenates one ``(mul_in, mul_out)`` matrix per instruction (row-major), and the fan-in
    is the sum of ``mul_in`` over the instructions feeding the output block ('element') or the
    instruction's own ``mul_in`` times their number ('path'). ``biases=True`` adds a bias to
    the ``0e`` outputs (a separate ``bias`` parameter, initialized to zero).
    """

    def __init__(
        self,
        irreps_in: IrrepsLike,
        irreps_out: IrrepsLike,
        *,
        internal_weights: bool | None = None,
        shared_weights: bool | None = None,
        instructions: Sequence[tuple[int, int]] | None = None,
        biases: bool | Sequence[bool] = False,
        path_normalization: str = "element",
    ) -> None:
        super().__init__()
        irreps_in, irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        if path_normalization not in ("element", "path"):
            raise ValueError(f"path_normalization must be 'element' or 'path', got {path_normalization!r}")
        if instructions is None:
            instructions = [
                (i_in, i_out)
                for i_in, (_, ir_in) in enumerate(irreps_in)
                for i_out, (_, ir_out) in enumerate(irreps_out)
                if ir_in == ir_out
            ]
        for i_in, i_out in instructions:
            if not (0 <= i_in < len(irreps_in) and 0 <= i_out < len(irreps_out)):
                raise ValueError(
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
                return sum(irreps_in[i].mul for i in feeding)
            return irreps_in[i_in].mul * len(feeding)

        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        self.instructions = [(i_in, i_out) for i_in, i_out in instructions]
        self.path_shapes = [(irreps_in[i].mul, irreps_out[o].mul) for i, o in self.instructions]
        self.path_coefficients = [max(fan_in(i, o), 1) ** -0.5 for i, o in self.instructions]
        self.biases = biases
        self.weight_numel = sum(prod(shape) for shape in self.path_shapes)
        self.bias_numel = sum(mul * ir.dim for has_bias, (mul, ir) in zip(biases, irreps_out) if has_bias)

        if shared_weights is False and internal_weights is None:
            internal_weights = False
        self.shared_weights = True if shared_weights is None else shared_weights
        self.internal_weights = True if internal_weights is None else internal_weights
        if self.internal_weights and not self.shared_weights:
            raise ValueError("internal_weights=True requires shared_weights=True")
        has_params = self.internal_weights
        self.weight = (
            nn.Parameter(torch.randn(self.weight_numel)) if has_params and self.weight_numel else None
        )
        self.bias = nn.Parameter(torch.zeros(self.bias_numel)) if has_params and self.bias_numel else None

    def __repr__(self) -> str:
        return f"Linear({self.irreps_in} -> {self.irreps_out} | {self.weight_numel} weights)"

    def forward(
        self, x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        if x.shape[-1] != self.irreps_in.dim:
            raise ValueError(
                f"x has last dimension {x.shape[-1]} but {self.irreps_in} needs {self.irreps_in.dim}"
            )
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        if weight is None and self.weight_numel:
            raise ValueError(
                f"this Linear has no internal weights: pass weight of shape (..., {self.weight_numel})"
            )
        if weight is not None and weight.shape[-1] != self.weight_numel:
            raise ValueError(
                f"weight must have last dimension {self.weight_numel}, got {tuple(weight.shape)}"
            )
        batch = x.shape[:-1]
        x_blocks = [
            block.reshape(batch + (mul, ir.dim))
            for block, (mul, ir) in zip(x.split([m * ir.dim for m, ir in self.irreps_in], -1), self.irreps_in)
        ]
        w_blocks = [] if weight is None else weight.split([prod(s) for s in self.path_shapes], -1)
        per_sample = "..." if weight is not None and weight.dim() > 1 else ""

        outputs: list[list[torch.Tensor]] = [[] for _ in self.irreps_out]
        for (i_in, i_out), shape, coefficient, w in zip(
            self.instructions, self.path_shapes, self.path_coefficients, w_blocks
        ):
            w = w.reshape(w.shape[:-1] + shape)
            if per_sample:
                out = coefficient * torch.einsum("...ui,...uw->...wi", x_blocks[i_in], w)
            elif x_blocks[i_in].shape[-1] == 1:  # shared weights, scalars: one mm
                x_in = x_blocks[i_in]
                out = (x_in.reshape(-1, shape[0]) @ (w * coefficient)).reshape(batch + (shape[1], 1))
            else:  # shared weights: the coefficient scales the (small) weight, then one matmul
                out = torch.matmul((w * coefficient).T, x_blocks[i_in])
            outputs[i_out].append(out)

        bias_blocks = iter(
            []
            if bias is None
            else bias.split([m for (m, _), b in zip(self.irreps_out, self.biases) if b], -1)
        )
        blocks = []
        for parts, has_bias, (mul, ir) in zip(outputs, self.biases, self.irreps_out):
            block = sum(parts[1:], parts[0]) if parts else x.new_zeros(batch + (mul, ir.dim))
            if has_bias and bias is not None:
                block = block + next(bias_blocks).unsqueeze(-1)
            blocks.append(block.reshape(batch + (mul * ir.dim,)))
        return torch.cat(blocks, dim=-1) if blocks else x.new_zeros(batch + (0,))
