"""Interatomic potentials built from equitensor's public pieces (MACE, TDN, eSCN, Facet, TensorNet)."""

from equitensor.models.escn import ESCN  # noqa: F401
from equitensor.models.facet import Facet  # noqa: F401
from equitensor.models.mace import MACE  # noqa: F401
from equitensor.models.tdn import TDN  # noqa: F401
from equitensor.models.tensornet import TensorNet  # noqa: F401
