"""Rank-2 Cartesian tensors: the irreducible pieces of a 3x3 matrix, as TensorNet uses them.

A 3x3 matrix X splits uniquely into a scalar part I = tr(X)/3 (l=0, stored as the scalar I;
the matrix is I * Id), an antisymmetric part A = (X - X^T)/2 (l=1, three numbers, a vector
written as a skew matrix) and a symmetric traceless part S = (X + X^T)/2 - I * Id (l=2, five
numbers). Under X -> R X R^T each piece transforms on its own, which is why products of such
matrices are equivariant without Clebsch-Gordan tables.

Every function acts on the last two dimensions (..., 3, 3); leading dimensions are batch or
channel dimensions.
"""

from __future__ import annotations

import torch

__all__ = [
    "compose",
    "decompose",
    "scalar_to_matrix",
    "skew_to_vector",
    "squared_norm",
    "symmetric_traceless",
    "vector_to_skew",
]


def _check_matrix(x: torch.Tensor, name: str) -> None:
    if x.shape[-2:] != (3, 3):
        raise ValueError(f"{name} must end in (3, 3), got shape {tuple(x.shape)}")


def scalar_to_matrix(scalar: torch.Tensor) -> torch.Tensor:
    """The matrix ``scalar * Id``: (...) -> (..., 3, 3)."""
    eye = torch.eye(3, dtype=scalar.dtype, device=scalar.device)
    return scalar[..., None, None] * eye


def symmetric_traceless(x: torch.Tensor) -> torch.Tensor:
    """The symmetric traceless part (X + X^T)/2 - tr(X)/3 Id of (..., 3, 3) matrices (the l=2 piece)."""
    _check_matrix(x, "symmetric_traceless input")
    symmetric = 0.5 * (x + x.transpose(-1, -2))
    return symmetric - scalar_to_matrix(x.diagonal(dim1=-2, dim2=-1).mean(-1))


def decompose(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split (..., 3, 3) matrices into (I, A, S): I = tr(X)/3 with shape (...), A = (X - X^T)/2,
    S = (X + X^T)/2 - I Id, so that ``compose(I, A, S) == X``."""
    _check_matrix(x, "decompose input")
    scalar = x.diagonal(dim1=-2, dim2=-1).mean(-1)
    antisymmetric = 0.5 * (x - x.transpose(-1, -2))
    symmetric = 0.5 * (x + x.transpose(-1, -2)) - scalar_to_matrix(scalar)
    return scalar, antisymmetric, symmetric


def compose(scalar: torch.Tensor, antisymmetric: torch.Tensor, symmetric: torch.Tensor) -> torch.Tensor:
    """The matrix I Id + A + S from the pieces returned by :func:`decompose`."""
    return scalar_to_matrix(scalar) + antisymmetric + symmetric


def vector_to_skew(vector: torch.Tensor) -> torch.Tensor:
    """The skew matrix [v]_x with [v]_x w = v x w: (..., 3) -> (..., 3, 3).

    [[0, -vz, vy], [vz, 0, -vx], [-vy, vx, 0]]. Under a rotation-reflection R it transforms as
    [R v]_x = det(R) R [v]_x R^T, i.e. a polar vector becomes a pseudo-tensor.
    """
    if vector.shape[-1] != 3:
        raise ValueError(f"vector_to_skew input must end in 3, got shape {tuple(vector.shape)}")
    x, y, z = vector.unbind(-1)
    zero = torch.zeros_like(x)
    rows = (
        torch.stack([zero, -z, y], dim=-1),
        torch.stack([z, zero, -x], dim=-1),
        torch.stack([-y, x, zero], dim=-1),
    )
    return torch.stack(rows, dim=-2)


def skew_to_vector(matrix: torch.Tensor) -> torch.Tensor:
    """The vector v of the antisymmetric part of (..., 3, 3) matrices: inverse of :func:`vector_to_skew`
    on skew matrices, (..., 3, 3) -> (..., 3)."""
    _check_matrix(matrix, "skew_to_vector input")
    return 0.5 * torch.stack(
        [
            matrix[..., 2, 1] - matrix[..., 1, 2],
            matrix[..., 0, 2] - matrix[..., 2, 0],
            matrix[..., 1, 0] - matrix[..., 0, 1],
        ],
        dim=-1,
    )


def squared_norm(x: torch.Tensor) -> torch.Tensor:
    """Squared Frobenius norm sum_ab X_ab^2 of (..., 3, 3) matrices, shape (...).

    TensorNet's ``tensor_norm``. The pieces are orthogonal: |X|^2 = 3 I^2 + |A|^2 + |S|^2.
    """
    _check_matrix(x, "squared_norm input")
    return x.square().sum((-2, -1))
