"""Tensor-product backends: each turns a :class:`~equitensor.tp.spec.TensorProductSpec` into an
executable module. Only ``cg`` (the exact pure-PyTorch reference) exists so far."""

from __future__ import annotations

from torch import nn

from equitensor.tp.spec import TensorProductSpec

BACKENDS = ("cg",)


def make_executor(backend: str, spec: TensorProductSpec) -> nn.Module:
    """Build the executor of ``backend`` for ``spec``; raise ValueError for an unknown backend."""
    if backend == "cg":
        from equitensor.tp.backends.cg import CGTensorProduct

        return CGTensorProduct(spec)
    raise ValueError(f"unknown tensor-product backend {backend!r}; available: {', '.join(BACKENDS)}")
