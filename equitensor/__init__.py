"""equitensor: E(3)-equivariant tensor products with interchangeable backends.

Conventions are e3nn's (irreps strings and order, real spherical harmonics with y as polar
axis, ``wigner_3j`` with unit Frobenius norm, TensorProduct instructions and normalization),
so e3nn users meet familiar objects and the same weights give the same numbers.
"""

from equitensor.irreps import Irrep, Irreps
from equitensor.nn import Linear
from equitensor.o3 import (
    SphericalHarmonics,
    angles_to_matrix,
    angles_to_xyz,
    clebsch_gordan,
    gaunt,
    matrix_to_angles,
    rand_angles,
    rand_matrix,
    spherical_harmonics,
    wigner_3j,
    wigner_D,
    xyz_to_angles,
)
from equitensor.serialization import load_model, save_model
from equitensor.tp import (
    EdgeConvolution,
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    GauntProduct,
    TensorProduct,
    backends_table,
    expressivity,
    list_backends,
)
from equitensor.tp.backends.auto import resolve_backends

__version__ = "0.1.0"

__all__ = [
    "EdgeConvolution",
    "ElementwiseTensorProduct",
    "FullTensorProduct",
    "FullyConnectedTensorProduct",
    "GauntProduct",
    "Irrep",
    "Irreps",
    "Linear",
    "SphericalHarmonics",
    "TensorProduct",
    "angles_to_matrix",
    "angles_to_xyz",
    "backends_table",
    "clebsch_gordan",
    "expressivity",
    "gaunt",
    "list_backends",
    "load_model",
    "matrix_to_angles",
    "rand_angles",
    "rand_matrix",
    "resolve_backends",
    "save_model",
    "spherical_harmonics",
    "wigner_3j",
    "wigner_D",
    "xyz_to_angles",
]
