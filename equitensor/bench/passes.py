"""The timed passes of an operation: forward, forward+backward, and double backward.

- ``fwd``: the call under ``torch.no_grad()``.
- ``fwd+bwd``: the call, then ``torch.autograd.grad`` of the output against a fixed random
  output gradient with respect to every differentiable input (no ``.grad`` accumulation).
- ``fwd+bwd+dbwd``: as fwd+bwd with ``create_graph=True``, then the gradient of
  ``sum_i <grad_i, v_i>`` (fixed random directions ``v_i``) with respect to the inputs again: the
  second-order work force training does.

Every pass returns the tensors it computed (output, first gradients, second gradients) so the
same function that is timed is also checked against the reference. A peer library may hold its
inputs in another layout; :class:`Layout` maps reference-layout tensors to its own and back, and
only the mapping back runs outside the timed function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["PASSES", "Layout", "autograd_passes", "identity"]

PASSES = ("fwd", "fwd+bwd", "fwd+bwd+dbwd")

PassFunction = Callable[[], list[torch.Tensor]]


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Layout:
    """Maps between the reference layout and an implementation's own, per input and for the output
    (to: reference -> own; back: own -> reference). Defaults are identities."""

    inputs_to: Sequence[Callable] | None = None
    inputs_back: Sequence[Callable] | None = None
    output_to: Callable = field(default=identity)
    output_back: Callable = field(default=identity)

    def to_inputs(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        maps = self.inputs_to or [identity] * len(tensors)
        return [f(t) for f, t in zip(maps, tensors)]

    def back_inputs(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        maps = self.inputs_back or [identity] * len(tensors)
        return [f(t) for f, t in zip(maps, tensors)]


def autograd_passes(
    call: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    constants: Sequence[object],
    grad_out: torch.Tensor,
    directions: Sequence[torch.Tensor],
    layout: Layout | None = None,
) -> tuple[dict[str, PassFunction], Callable[[str, list[torch.Tensor]], list[torch.Tensor]]]:
    """Pass functions of ``call(*inputs, *constants)`` and the map of their results to the
    reference layout.

    ``inputs`` are differentiated (given in the reference layout, copied to fresh leaves in the
    implementation's layout); ``constants`` are passed as they are (indices, one-hot tensors).
    ``grad_out`` and ``directions`` (one per input) are the fixed random tensors of the backward
    and double-backward passes, in the reference layout.
    """
    layout = layout or Layout()
    leaves = [t.detach().clone().requires_grad_(True) for t in layout.to_inputs(inputs)]
    g = layout.output_to(grad_out).detach()
    v = [t.detach() for t in layout.to_inputs(directions)]

    def fwd() -> list[torch.Tensor]:
        with torch.no_grad():
            return [call(*leaves, *constants)]

    def fwd_bwd() -> list[torch.Tensor]:
        y = call(*leaves, *constants)
        return [y.detach(), *torch.autograd.grad(y, leaves, g)]

    def fwd_bwd_dbwd() -> list[torch.Tensor]:
        y = call(*leaves, *constants)
        grads = torch.autograd.grad(y, leaves, g, create_graph=True)
        s = sum((gi * vi).sum() for gi, vi in zip(grads, v))
        second = torch.autograd.grad(s, leaves, allow_unused=True)
        return [y.detach(), *(gi.detach() for gi in grads), *second]

    def to_reference(pass_name: str, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(leaves)
        out = [layout.output_back(tensors[0])]
        if pass_name != "fwd":
            out += layout.back_inputs(tensors[1 : 1 + n])
        if pass_name == "fwd+bwd+dbwd":
            second = [torch.zeros_like(leaf) if t is None else t for t, leaf in zip(tensors[1 + n :], leaves)]
            out += layout.back_inputs(second)
        return out

    return {"fwd": fwd, "fwd+bwd": fwd_bwd, "fwd+bwd+dbwd": fwd_bwd_dbwd}, to_reference
