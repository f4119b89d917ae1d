"""Equivariant layers built on irreps-typed features."""

from equitensor.nn.activation import NormalizedActivation
from equitensor.nn.gaunt_product_basis import GauntProductBasis
from equitensor.nn.linear import Linear
from equitensor.nn.radial import BesselBasis, PolynomialCutoff, RadialEmbedding, RadialMLP
from equitensor.nn.symmetric_contraction import SymmetricContraction, generalized_cg

__all__ = [
    "BesselBasis",
    "GauntProductBasis",
    "Linear",
    "NormalizedActivation",
    "PolynomialCutoff",
    "RadialEmbedding",
    "RadialMLP",
    "SymmetricContraction",
    "generalized_cg",
]
