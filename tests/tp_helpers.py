"""Shared pieces of the tensor-product backend tests: a relative error, the torch.compile check, and
the explicit ``backend="auto"`` resolution before a first call."""

from __future__ import annotations

import time

import torch
from torch import nn


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected| / max |expected| in float64 (absolute error when ``expected`` is zero)."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    if got.numel() == 0:
        return 0.0
    err = (got.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    return err / scale if scale > 0 else err


def assert_compiled_inference_matches(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """``torch.compile(module, fullgraph=True)`` gives the eager result (no grad) to 1e-12 relative;
    prints how long compiling and the first call took."""
    start = time.perf_counter()
    compiled = torch.compile(module, fullgraph=True)
    with torch.no_grad():
        out = compiled(*inputs)
        expected = module(*inputs)
    assert relative_error(out, expected) < 1e-12
    print(f"compile + first call: {time.perf_counter() - start:.1f} s")


def first_call(module: nn.Module, *inputs: torch.Tensor):
    """The explicit step ``backend="auto"`` needs: resolve for the first input's device and dtype,
    then call."""
    from equitensor import resolve_backends

    resolve_backends(module, inputs[0].device, inputs[0].dtype)
    return module(*inputs)
