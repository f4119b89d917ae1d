"""Equivariant layers built on irreps-typed features."""

from equitensor.nn.activation import NormalizedActivation
from equitensor.nn.gaunt_product_basis import GauntProductBasis
from equitensor.nn.layer_norm import EquivariantLayerNorm
from equitensor.nn.linear import Linear
from equitensor.nn.radial import BesselBasis, PolynomialCutoff, RadialEmbedding, RadialMLP, SplineRadial
from equitensor.nn.spherical_grid import GridActivation, GridFunction, GridMLP, SphericalGrid
from equitensor.nn.symmetric_contraction import SymmetricContraction, generalized_cg

__all__ = [
    "BesselBasis",
    "EquivariantLayerNorm",
    "GridActivation",
    "GridFunction",
    "GridMLP",
    "GauntProductBasis",
    "Linear",
    "NormalizedActivation",
    "PolynomialCutoff",
    "RadialEmbedding",
    "RadialMLP",
    "SphericalGrid",
    "SplineRadial",
    "SymmetricContraction",
    "generalized_cg",
]
