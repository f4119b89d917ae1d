"""Equivariant layers built on irreps-typed features."""

from equitensor.nn.linear import Linear

__all__ = ["Linear"]
