"""Interatomic potentials built from equitensor's public pieces (MACE, TensorNet): not implemented yet."""

from equitensor.models.tensornet import TensorNet  # noqa: F401
