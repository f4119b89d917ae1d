"""Rotations of R^3 in every parametrisation e3nn has: matrices, YXY Euler angles, unit
quaternions, axis-angle pairs, and points on the sphere.

Conventions are e3nn's so that the two libraries agree number for number:
``R(alpha, beta, gamma) = matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)`` (gamma is applied
first), and the polar axis of the sphere is **y**: ``angles_to_xyz(alpha, beta)`` is
``R(alpha, beta, 0) @ e_y``. Random rotations are Haar distributed and consume the random
generator in the same order as e3nn, so a given seed gives the same rotations in both libraries.
Quaternions are ``(w, x, y, z)`` (scalar first, unit norm); an axis-angle pair is a unit axis
``(..., 3)`` and an angle ``(...)`` (right-handed). ``compose_*(first_args..., second_args...)``
is the rotation ``R1 @ R2`` (the second applied first), as in e3nn.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "rand_matrix",
    "rand_angles",
    "identity_angles",
    "compose_angles",
    "inverse_angles",
    "rand_quaternion",
    "identity_quaternion",
    "compose_quaternion",
    "inverse_quaternion",
    "rand_axis_angle",
    "compose_axis_angle",
    "angles_to_quaternion",
    "angles_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_axis_angle",
    "quaternion_to_matrix",
    "quaternion_to_angles",
    "quaternion_to_axis_angle",
    "axis_angle_to_matrix",
    "axis_angle_to_angles",
    "axis_angle_to_quaternion",
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
    """Rotation matrices (..., 3, 3) by ``angle`` about the x axis (right-handed).

    >>> import torch
    >>> R = matrix_x(torch.tensor(math.pi / 2, dtype=torch.float64))
    >>> torch.allclose(R @ R.new_tensor([0.0, 1.0, 0.0]), R.new_tensor([0.0, 0.0, 1.0]))
    True
    """
    return _rotation_about(angle, 1, 2)


def matrix_y(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) by ``angle`` about the y axis (right-handed).

    >>> import torch
    >>> R = matrix_y(torch.tensor(math.pi / 2, dtype=torch.float64))
    >>> torch.allclose(R @ R.new_tensor([0.0, 0.0, 1.0]), R.new_tensor([1.0, 0.0, 0.0]))
    True
    """
    return _rotation_about(angle, 2, 0)


def matrix_z(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) by ``angle`` about the z axis (right-handed).

    >>> import torch
    >>> R = matrix_z(torch.tensor(math.pi / 2, dtype=torch.float64))
    >>> torch.allclose(R @ R.new_tensor([1.0, 0.0, 0.0]), R.new_tensor([0.0, 1.0, 0.0]))
    True
    """
    return _rotation_about(angle, 0, 1)


def angles_to_matrix(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """YXY Euler angles to rotation matrices: ``matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)``.

    >>> import torch
    >>> a, b, c = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    >>> R = angles_to_matrix(a, b, c)
    >>> R.shape, torch.allclose(R, matrix_y(a) @ matrix_x(b) @ matrix_y(c))
    (torch.Size([3, 3]), True)
    """
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    return matrix_y(alpha) @ matrix_x(beta) @ matrix_y(gamma)


def angles_to_xyz(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Unit vectors (..., 3) at azimuth ``alpha`` (about y, from z) and polar angle ``beta`` (from y).

    >>> import torch
    >>> xyz = angles_to_xyz(torch.tensor([0.0, 0.0]), torch.tensor([0.0, math.pi / 2]))
    >>> torch.allclose(xyz, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), atol=1e-6)
    True
    """
    alpha, beta = torch.broadcast_tensors(alpha, beta)
    sb = torch.sin(beta)
    return torch.stack([sb * torch.sin(alpha), torch.cos(beta), sb * torch.cos(alpha)], dim=-1)


def xyz_to_angles(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`angles_to_xyz` for any non-zero vector (it is normalised first).

    Returns ``(alpha, beta)`` with ``alpha`` in (-pi, pi] and ``beta`` in [0, pi]; the zero vector
    maps to ``(0, pi/2)`` instead of NaN.

    >>> import torch
    >>> alpha, beta = xyz_to_angles(torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]]))
    >>> torch.allclose(beta, torch.tensor([0.0, math.pi / 2])), round(alpha[1].item(), 6)
    (True, 1.570796)
    """
    xyz = torch.nn.functional.normalize(xyz, p=2.0, dim=-1).clamp(-1, 1)
    beta = torch.acos(xyz[..., 1])
    alpha = torch.atan2(xyz[..., 0], xyz[..., 2])
    return alpha, beta


def matrix_to_angles(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """YXY Euler angles ``(alpha, beta, gamma)`` of rotation matrices R (..., 3, 3).

    Raises ValueError if some matrix is not a proper rotation (det != +1).

    >>> import torch
    >>> R = rand_matrix(5, dtype=torch.float64)
    >>> torch.allclose(angles_to_matrix(*matrix_to_angles(R)), R)
    True
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
    """Haar-random YXY Euler angles of shape ``shape``: alpha, gamma ~ U(0, 2pi), beta = acos(U(-1, 1)).

    >>> import torch
    >>> alpha, beta, gamma = rand_angles(2, 3)
    >>> alpha.shape, bool(((beta >= 0) & (beta <= math.pi)).all())
    (torch.Size([2, 3]), True)
    """
    alpha, gamma = 2 * math.pi * torch.rand(2, *shape, dtype=dtype, device=device)
    beta = torch.rand(shape, dtype=dtype, device=device).mul(2).sub(1).acos()
    return tuple(t.detach().requires_grad_(requires_grad) for t in (alpha, beta, gamma))


def rand_matrix(
    *shape: int, requires_grad: bool = False, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    """Haar-random rotation matrices of shape ``(*shape, 3, 3)``.

    >>> import torch
    >>> R = rand_matrix(4, dtype=torch.float64)
    >>> R.shape, torch.allclose(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
    (torch.Size([4, 3, 3]), True)
    """
    R = angles_to_matrix(*rand_angles(*shape, dtype=dtype, device=device))
    return R.detach().requires_grad_(requires_grad)


def identity_angles(
    *shape: int, requires_grad: bool = False, dtype: torch.dtype | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Euler angles of the identity rotation (three zero tensors of shape ``shape``).

    >>> [tuple(t.shape) for t in identity_angles(2)]
    [(2,), (2,), (2,)]
    >>> torch.equal(angles_to_matrix(*identity_angles()), torch.eye(3))
    True
    """
    return tuple(
        torch.zeros(shape, dtype=dtype, device=device).requires_grad_(requires_grad) for _ in range(3)
    )


def compose_angles(a1, b1, c1, a2, b2, c2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Euler angles of ``R(a1, b1, c1) @ R(a2, b2, c2)``.

    >>> import torch
    >>> a = rand_angles(4, dtype=torch.float64)
    >>> c = compose_angles(*a, *inverse_angles(*a))
    >>> torch.allclose(angles_to_matrix(*c), torch.eye(3, dtype=torch.float64), atol=1e-12)
    True
    """
    return matrix_to_angles(angles_to_matrix(a1, b1, c1) @ angles_to_matrix(a2, b2, c2))


def inverse_angles(a, b, c) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Euler angles of the inverse rotation: ``R(a, b, c)^-1 = R(-c, -b, -a)``.

    >>> import torch
    >>> a = rand_angles(3, dtype=torch.float64)
    >>> torch.allclose(angles_to_matrix(*inverse_angles(*a)), angles_to_matrix(*a).transpose(-1, -2))
    True
    """
    return -c, -b, -a


def identity_quaternion(
    *shape: int, requires_grad: bool = False, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    """The identity quaternion ``(1, 0, 0, 0)``, shape ``(*shape, 4)``.

    >>> identity_quaternion(2)
    tensor([[1., 0., 0., 0.],
            [1., 0., 0., 0.]])
    """
    q = torch.zeros(*shape, 4, dtype=dtype, device=device)
    q[..., 0] = 1
    return q.requires_grad_(requires_grad)


def rand_quaternion(
    *shape: int, requires_grad: bool = False, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    """Haar-random unit quaternions ``(*shape, 4)`` (from :func:`rand_angles`, as e3nn).

    >>> import torch
    >>> q = rand_quaternion(5, dtype=torch.float64)
    >>> q.shape, torch.allclose(q.norm(dim=-1), torch.ones(5, dtype=torch.float64))
    (torch.Size([5, 4]), True)
    """
    q = angles_to_quaternion(*rand_angles(*shape, dtype=dtype, device=device))
    return q.detach().requires_grad_(requires_grad)


def compose_quaternion(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """The Hamilton product ``q1 q2``: the rotation ``q2`` followed by ``q1``.

    >>> import torch
    >>> q1, q2 = rand_quaternion(2, dtype=torch.float64)
    >>> R = quaternion_to_matrix(compose_quaternion(q1, q2))
    >>> torch.allclose(R, quaternion_to_matrix(q1) @ quaternion_to_matrix(q2))
    True
    """
    q1, q2 = torch.broadcast_tensors(q1, q2)
    w1, v1 = q1[..., :1], q1[..., 1:]
    w2, v2 = q2[..., :1], q2[..., 1:]
    w = w1 * w2 - (v1 * v2).sum(-1, keepdim=True)
    v = w1 * v2 + w2 * v1 + torch.linalg.cross(v1, v2, dim=-1)
    return torch.cat([w, v], dim=-1)


def inverse_quaternion(q: torch.Tensor) -> torch.Tensor:
    """The inverse of unit quaternions: their conjugate ``(w, -x, -y, -z)``.

    >>> import torch
    >>> q = rand_quaternion(3, dtype=torch.float64)
    >>> identity = identity_quaternion(3, dtype=torch.float64)
    >>> torch.allclose(compose_quaternion(q, inverse_quaternion(q)), identity)
    True
    """
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def rand_axis_angle(
    *shape: int, requires_grad: bool = False, dtype: torch.dtype | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Haar-random rotations as ``(axis (*shape, 3), angle (*shape))`` (from :func:`rand_angles`).

    >>> import torch
    >>> axis, angle = rand_axis_angle(5, dtype=torch.float64)
    >>> axis.shape, angle.shape, torch.allclose(axis.norm(dim=-1), torch.ones(5, dtype=torch.float64))
    (torch.Size([5, 3]), torch.Size([5]), True)
    """
    axis, angle = angles_to_axis_angle(*rand_angles(*shape, dtype=dtype, device=device))
    return axis.detach().requires_grad_(requires_grad), angle.detach().requires_grad_(requires_grad)


def compose_axis_angle(axis1, angle1, axis2, angle2) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-angle of the rotation ``(axis2, angle2)`` followed by ``(axis1, angle1)``.

    >>> import torch
    >>> z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    >>> axis, angle = compose_axis_angle(z, z.new_tensor(0.5), z, z.new_tensor(0.25))
    >>> torch.allclose(axis, z), round(angle.item(), 6)
    (True, 0.75)
    """
    q = compose_quaternion(axis_angle_to_quaternion(axis1, angle1), axis_angle_to_quaternion(axis2, angle2))
    return quaternion_to_axis_angle(q)


def axis_angle_to_quaternion(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Unit quaternions ``(cos(angle/2), sin(angle/2) axis)``; the axis is normalised first.

    >>> import torch
    >>> q = axis_angle_to_quaternion(torch.tensor([0.0, 0.0, 2.0]), torch.tensor(math.pi))
    >>> torch.allclose(q, torch.tensor([0.0, 0.0, 0.0, 1.0]), atol=1e-6)
    True
    """
    axis = torch.nn.functional.normalize(axis, dim=-1)
    half = angle[..., None] / 2
    return torch.cat([half.cos(), half.sin() * axis], dim=-1)


def quaternion_to_axis_angle(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis (unit; zero for the identity) and angle in [0, 2 pi] of unit quaternions.

    >>> import torch
    >>> axis, angle = quaternion_to_axis_angle(torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))
    >>> axis, round(angle.item(), 6)
    (tensor([1., 0., 0.], dtype=torch.float64), 3.141593)
    """
    angle = 2 * torch.atan2(q[..., 1:].norm(dim=-1), q[..., 0])
    return torch.nn.functional.normalize(q[..., 1:], dim=-1), angle


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(..., 3, 3)`` of unit quaternions ``(..., 4)``.

    >>> import torch
    >>> q = axis_angle_to_quaternion(torch.tensor([0.0, 0.0, 1.0]), torch.tensor(math.pi / 2))
    >>> quaternion_to_matrix(q).round(decimals=6) @ torch.tensor([1.0, 0.0, 0.0])
    tensor([0., 1., 0.])
    """
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Unit quaternions (w >= 0) of rotation matrices, accurate at every angle: each component
    is read from the matrix's diagonal where it is largest and the others from the off-diagonals
    divided by it (never by a small number).

    >>> import torch
    >>> q = rand_quaternion(4, dtype=torch.float64)
    >>> q = torch.where(q[..., :1] < 0, -q, q)  # the same rotation, with w >= 0
    >>> torch.allclose(matrix_to_quaternion(quaternion_to_matrix(q)), q)
    True
    """
    r = R.unbind(-1)
    r = [c.unbind(-1) for c in r]  # r[j][i] = R[..., i, j]
    m = [[r[j][i] for j in range(3)] for i in range(3)]
    trace = m[0][0] + m[1][1] + m[2][2]
    # Four candidates, one per largest component; each row is 4 * that component * q.
    candidates = torch.stack(
        [
            torch.stack([1 + trace, m[2][1] - m[1][2], m[0][2] - m[2][0], m[1][0] - m[0][1]], -1),
            torch.stack(
                [m[2][1] - m[1][2], 1 + m[0][0] - m[1][1] - m[2][2], m[0][1] + m[1][0], m[0][2] + m[2][0]], -1
            ),
            torch.stack(
                [m[0][2] - m[2][0], m[0][1] + m[1][0], 1 - m[0][0] + m[1][1] - m[2][2], m[1][2] + m[2][1]], -1
            ),
            torch.stack(
                [m[1][0] - m[0][1], m[0][2] + m[2][0], m[1][2] + m[2][1], 1 - m[0][0] - m[1][1] + m[2][2]], -1
            ),
        ],
        dim=-2,
    )
    diagonal = torch.stack(
        [
            1 + trace,
            1 + m[0][0] - m[1][1] - m[2][2],
            1 - m[0][0] + m[1][1] - m[2][2],
            1 - m[0][0] - m[1][1] + m[2][2],
        ],
        -1,
    )
    best = diagonal.argmax(dim=-1, keepdim=True)
    q = candidates.gather(-2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    q = torch.nn.functional.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices by ``angle`` about ``axis`` (right-handed; the axis is normalised).

    >>> import torch
    >>> x, angle = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64)
    >>> torch.allclose(axis_angle_to_matrix(x, angle), matrix_x(angle))
    True
    """
    return quaternion_to_matrix(axis_angle_to_quaternion(axis, angle))


def matrix_to_axis_angle(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis and angle in [0, pi] of rotation matrices.

    >>> import torch
    >>> axis, angle = matrix_to_axis_angle(matrix_z(torch.tensor(0.5, dtype=torch.float64)))
    >>> axis, round(angle.item(), 6)
    (tensor([0., 0., 1.], dtype=torch.float64), 0.5)
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(R))


def angles_to_quaternion(alpha, beta, gamma) -> torch.Tensor:
    """Unit quaternions of YXY Euler angles.

    >>> import torch
    >>> a = rand_angles(3, dtype=torch.float64)
    >>> torch.allclose(quaternion_to_matrix(angles_to_quaternion(*a)), angles_to_matrix(*a))
    True
    """
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    e_x, e_y = alpha.new_tensor([1.0, 0.0, 0.0]), alpha.new_tensor([0.0, 1.0, 0.0])
    qa, qb, qc = (axis_angle_to_quaternion(e, t) for e, t in ((e_y, alpha), (e_x, beta), (e_y, gamma)))
    return compose_quaternion(qa, compose_quaternion(qb, qc))


def angles_to_axis_angle(alpha, beta, gamma) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-angle pairs of YXY Euler angles.

    >>> import torch
    >>> a = rand_angles(3, dtype=torch.float64)
    >>> torch.allclose(axis_angle_to_matrix(*angles_to_axis_angle(*a)), angles_to_matrix(*a))
    True
    """
    return matrix_to_axis_angle(angles_to_matrix(alpha, beta, gamma))


def quaternion_to_angles(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """YXY Euler angles of unit quaternions.

    >>> import torch
    >>> q = rand_quaternion(3, dtype=torch.float64)
    >>> torch.allclose(angles_to_matrix(*quaternion_to_angles(q)), quaternion_to_matrix(q))
    True
    """
    return matrix_to_angles(quaternion_to_matrix(q))


def axis_angle_to_angles(
    axis: torch.Tensor, angle: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """YXY Euler angles of axis-angle pairs.

    >>> import torch
    >>> axis, angle = rand_axis_angle(3, dtype=torch.float64)
    >>> R = axis_angle_to_matrix(axis, angle)
    >>> torch.allclose(angles_to_matrix(*axis_angle_to_angles(axis, angle)), R)
    True
    """
    return matrix_to_angles(axis_angle_to_matrix(axis, angle))
