"""Interatomic potentials built from equitensor's public pieces (MACE, TensorNet)."""

from equitensor.models.mace import MACE  # noqa: F401
from equitensor.models.tensornet import TensorNet  # noqa: F401
