"""Rotations of R^3: matrices, YXY Euler angles, and points on the sphere.

Conventions are e3nn's so that the two libraries agree number for number:
``R(alpha, beta, gamma) = matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)`` (gamma is applied
first), and the polar axis of the sphere is **y**: ``angles_to_xyz(alpha, beta)`` is
``R(alpha, beta, 0) @ e_y``. Random rotations are Haar distributed and consume the random
generator in the same order as e3nn, so a given seed gives the same rotations in both libraries.
"""

from __future__ import annotations

import math

import torch

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
]


def _rotation_about(angle: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """Rotation by ``angle`` in the (i, j) coordinate plane: ``e_i -> cos e_i + sin e_j``."""
    c, s = angle.cos(), angle.sin()
    o, z = torch.ones_like(angle), torch.zeros_like(angle)
    rows = [[o, z, z], [z, o, z], [z, z, o]]
    rows[i][i], rows[j][j] = c, c
    rows[j][i], rows[i][j] = s, -s
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_x(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) by ``angle`` about the x axis (right-handed)."""
    return _rotation_about(angle, 1, 2)


def matrix_y(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) by ``angle`` about the y axis (right-handed)."""
    return _rotation_about(angle, 2, 0)


def matrix_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) by ``angle`` about the z axis (right-handed)."""
    return _rotation_about(angle, 0, 1)


def angles_to_matrix(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """YXY Euler angles to rotation matrices: ``matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)``."""
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    return matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)


def angles_to_xyz(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Unit vectors (..., 3) at azimuth ``alpha`` (about y, from z) and polar angle ``beta`` (from y)."""
    alpha, beta = torch.broadcast_tensors(alpha, beta)
    sb = torch.sin(beta)
    return torch.stack([sb * torch.sin(alpha), torch.cos(beta), sb * torch.cos(alpha)], dim=-1)


def xyz_to_angles(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`angles_to_xyz` for any non-zero vector (it is normalised first).

    Returns ``(alpha, beta)`` with ``alpha`` in (-pi, pi] and ``beta`` in [0, pi]; the zero vector
    maps to ``(0, pi/2)`` instead of NaN.
    """
    xyz = torch.nn.functional.normalize(xyz, p=2.0, dim=-1).clamp(-1, 1)
    beta = torch.acos(xyz[..., 1])
    alpha = torch.atan2(xyz[..., 0], xyz[..., 2])
    return alpha, beta


def matrix_to_angles(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """YXY Euler angles ``(alpha, beta, gamma)`` of rotation matrices R (..., 3, 3).

    Raises ValueError if some matrix is not a proper rotation (det != +1).
    """
    det = torch.linalg.det(R)
    if not torch.allclose(det, torch.ones_like(det)):
        raise ValueError(
            f"matrix_to_angles expects proper rotations (det = +1); got determinants in "
            f"[{det.min().item():.6g}, {det.max().item():.6g}]"
        )
    # alpha, beta locate the image of the polar axis e_y; gamma is what is left about e_y.
    a, b = xyz_to_angles(R[..., :, 1])
    rest = angles_to_matrix(a, b, torch.zeros_like(a)).transpose(-1, -2) @ R
    c = torch.atan2(rest[..., 0, 2], rest[..., 0, 0])
    return a, b, c


def rand_angles(
    *shape: int, requires_grad: bool = False, dtype: torch.dtype | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Haar-random YXY Euler angles of shape ``shape``: alpha, gamma ~ U(0, 2pi), beta = acos(U(-1, 1))."""
    alpha, gamma = 2 * math.pi * torch.rand(2, *shape, dtype=dtype, device=device)
    beta = torch.rand(shape, dtype=dtype, device=device).mul(2).sub(1).acos()
    return tuple(t.detach().requires_grad_(requires_grad) for t in (alpha, beta, gamma))


def rand_matrix(
    *shape: int, requires_grad: bool = False, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    """Haar-random rotation matrices of shape ``(*shape, 3, 3)``."""
    R = angles_to_matrix(*rand_angles(*shape, dtype=dtype, device=device))
    return R.detach().requires_grad_(requires_grad)
