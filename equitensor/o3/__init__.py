"""O(3) mathematics: rotations, Wigner matrices, Clebsch-Gordan and Gaunt coefficients, spherical harmonics."""
