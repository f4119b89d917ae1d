"""O(3) mathematics: rotations, Wigner matrices, Clebsch-Gordan and Gaunt coefficients, spherical harmonics."""  # noqa: E501

from .gaunt import gaunt
from .rotations import (
    angles_to_matrix,
    angles_to_xyz,
    matrix_to_angles,
    matrix_x,
    matrix_y,
    matrix_z,
    rand_angles,
    rand_matrix,
    xyz_to_angles,
)
from .spherical_harmonics import SphericalHarmonics, spherical_harmonics
from .wigner import (
    change_basis_real_to_complex,
    clebsch_gordan,
    so3_generators,
    wigner_3j,
    wigner_3j_sparse,
    wigner_D,
)

__all__ = [
    "rand_matrix",
    "rand_angles",
    "angles_to_matrix",
    "matrix_to_angles",
    "xyz_to_angles",
    "angles_to_xyz",
    "matrix_x",
    "matrix_y",
    "matrix_z",
    "so3_generators",
    "wigner_D",
    "change_basis_real_to_complex",
    "wigner_3j",
    "wigner_3j_sparse",
    "clebsch_gordan",
    "spherical_harmonics",
    "SphericalHarmonics",
    "gaunt",
]
