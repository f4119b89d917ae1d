"""Rotations and Euler angles: same numbers as e3nn, round trips, Haar sampling sanity."""

import math

import pytest
import torch
from e3nn import o3 as e3o3

from equitensor import o3

F64 = torch.float64


@pytest.mark.parametrize("name", ["matrix_x", "matrix_y", "matrix_z"])
def test_axis_matrices_match_e3nn(name):
    angle = 10 * torch.randn(7, 3, dtype=F64)
    ours, ref = getattr(o3, name)(angle), getattr(e3o3, name)(angle)
    assert ours.shape == (7, 3, 3, 3)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


def test_angles_to_matrix_matches_e3nn():
    a, b, c = (10 * torch.randn(50, dtype=F64) for _ in range(3))
    torch.testing.assert_close(
        o3.angles_to_matrix(a, b, c), e3o3.angles_to_matrix(a, b, c), atol=1e-12, rtol=0
    )
    # broadcasting
    assert o3.angles_to_matrix(a[:, None], b[None, :5], torch.tensor(0.3, dtype=F64)).shape == (50, 5, 3, 3)


def test_matrix_to_angles_matches_e3nn():
    R = e3o3.rand_matrix(100, dtype=F64)
    for ours, ref in zip(o3.matrix_to_angles(R), e3o3.matrix_to_angles(R), strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


def test_xyz_angles_match_e3nn():
    xyz = torch.randn(100, 3, dtype=F64)
    for ours, ref in zip(o3.xyz_to_angles(xyz), e3o3.xyz_to_angles(xyz), strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    a, b = 10 * torch.randn(2, 100, dtype=F64)
    torch.testing.assert_close(o3.angles_to_xyz(a, b), e3o3.angles_to_xyz(a, b), atol=1e-12, rtol=0)


def test_angles_xyz_round_trip_and_polar_axis():
    xyz = torch.nn.functional.normalize(torch.randn(100, 3, dtype=F64), dim=-1)
    torch.testing.assert_close(o3.angles_to_xyz(*o3.xyz_to_angles(xyz)), xyz, atol=1e-12, rtol=0)
    # the polar axis is y: R(alpha, beta, 0) e_y = angles_to_xyz(alpha, beta)
    a, b = torch.rand(2, 10, dtype=F64) * 6
    e_y = torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    torch.testing.assert_close(o3.angles_to_matrix(a, b, torch.zeros_like(a)) @ e_y, o3.angles_to_xyz(a, b))


def test_xyz_to_angles_zero_vector_is_finite():
    a, b = o3.xyz_to_angles(torch.zeros(2, 3))
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


def test_random_functions_match_e3nn_for_a_seed():
    torch.manual_seed(123)
    ours = o3.rand_angles(4, 5, dtype=F64)
    torch.manual_seed(123)
    ref = e3o3.rand_angles(4, 5, dtype=F64)
    for u, v in zip(ours, ref, strict=True):
        assert u.shape == (4, 5)
        torch.testing.assert_close(u, v, atol=0, rtol=0)
    torch.manual_seed(7)
    R = o3.rand_matrix(6, dtype=F64)
    torch.manual_seed(7)
    torch.testing.assert_close(R, e3o3.rand_matrix(6, dtype=F64), atol=0, rtol=0)


def test_rand_matrix_is_a_rotation(dtype, tol):
    R = o3.rand_matrix(1000, dtype=dtype)
    assert R.shape == (1000, 3, 3) and R.dtype == dtype and not R.requires_grad
    eye = torch.eye(3, dtype=dtype).expand_as(R)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=10 * tol, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(1000, dtype=dtype), atol=10 * tol, rtol=0)
    assert o3.rand_matrix(2, requires_grad=True).requires_grad


def test_rand_angles_ranges_and_haar_marginal():
    a, b, c = o3.rand_angles(20000, dtype=F64)
    assert (a >= 0).all() and (a < 2 * math.pi).all() and (c >= 0).all() and (c < 2 * math.pi).all()
    assert (b >= 0).all() and (b <= math.pi).all()
    # Haar: cos(beta) is uniform on [-1, 1], mean 0 and variance 1/3
    assert abs(b.cos().mean().item()) < 0.02
    assert abs(b.cos().var().item() - 1 / 3) < 0.02


def test_matrix_angles_round_trip(dtype, tol):
    R = o3.rand_matrix(200, dtype=dtype)
    R2 = o3.angles_to_matrix(*o3.matrix_to_angles(R))
    torch.testing.assert_close(R2, R, atol=100 * tol, rtol=0)
    abc = o3.rand_angles(200, dtype=F64)
    a, b, c = o3.matrix_to_angles(o3.angles_to_matrix(*abc))
    torch.testing.assert_close(torch.remainder(a, 2 * math.pi), abc[0], atol=1e-9, rtol=0)
    torch.testing.assert_close(b, abc[1], atol=1e-9, rtol=0)
    torch.testing.assert_close(torch.remainder(c, 2 * math.pi), abc[2], atol=1e-9, rtol=0)


def test_matrix_to_angles_rejects_improper_rotations():
    R = o3.rand_matrix(3, dtype=F64)
    with pytest.raises(ValueError, match="det"):
        o3.matrix_to_angles(-R)
    with pytest.raises(ValueError, match="det"):
        o3.matrix_to_angles(2 * R)


def test_rotation_is_right_handed():
    # rotating e_x by +90 degrees about z gives e_y
    R = o3.matrix_z(torch.tensor(math.pi / 2, dtype=F64))
    torch.testing.assert_close(R @ torch.tensor([1.0, 0, 0], dtype=F64), torch.tensor([0.0, 1, 0], dtype=F64))


# ------------------------------------------------------------- quaternions and axis-angle pairs

CONVERSIONS = [
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
]


def _inputs(name: str, n: int = 40):
    """Random arguments of the conversion ``name`` (every parametrisation of the same rotations)."""
    abc = o3.rand_angles(n, dtype=F64)
    source = name.split("_to_")[0]
    return {
        "angles": abc,
        "matrix": (o3.angles_to_matrix(*abc),),
        "quaternion": (o3.angles_to_quaternion(*abc),),
        "axis_angle": o3.angles_to_axis_angle(*abc),
    }[source]


def _as_matrix(name: str, value):
    target = name.split("_to_")[1]
    convert = {
        "angles": lambda v: o3.angles_to_matrix(*v),
        "matrix": lambda v: v,
        "quaternion": e3o3.quaternion_to_matrix,
        "axis_angle": lambda v: e3o3.axis_angle_to_matrix(*v),
    }[target]
    return convert(value)


@pytest.mark.parametrize("name", CONVERSIONS)
def test_conversions_give_e3nns_rotation(name):
    """Each conversion gives the same rotation as e3nn's (compared as matrices: a quaternion's
    sign and an axis-angle pair at angle 0 are not unique)."""
    args = _inputs(name)
    ours, ref = getattr(o3, name)(*args), getattr(e3o3, name)(*args)
    torch.testing.assert_close(_as_matrix(name, ours), _as_matrix(name, ref), atol=1e-10, rtol=0)


def test_random_quaternions_and_axis_angles_draw_like_e3nn():
    for name in ["rand_quaternion", "rand_axis_angle"]:
        torch.manual_seed(3)
        ours = getattr(o3, name)(5, dtype=F64)
        torch.manual_seed(3)
        ref = getattr(e3o3, name)(5, dtype=F64)
        for a, b in zip(
            ours if isinstance(ours, tuple) else [ours], ref if isinstance(ref, tuple) else [ref]
        ):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_compose_and_inverse_match_matrix_products():
    q1, q2 = o3.rand_quaternion(20, dtype=F64), o3.rand_quaternion(20, dtype=F64)
    R1, R2 = o3.quaternion_to_matrix(q1), o3.quaternion_to_matrix(q2)
    torch.testing.assert_close(o3.quaternion_to_matrix(o3.compose_quaternion(q1, q2)), R1 @ R2)
    torch.testing.assert_close(o3.quaternion_to_matrix(o3.inverse_quaternion(q1)), R1.transpose(-1, -2))
    axis_angle = o3.compose_axis_angle(*o3.quaternion_to_axis_angle(q1), *o3.quaternion_to_axis_angle(q2))
    torch.testing.assert_close(o3.axis_angle_to_matrix(*axis_angle), R1 @ R2)
    abc = o3.compose_angles(*o3.quaternion_to_angles(q1), *o3.quaternion_to_angles(q2))
    torch.testing.assert_close(o3.angles_to_matrix(*abc), R1 @ R2)
    eye = torch.eye(3, dtype=F64)
    torch.testing.assert_close(
        o3.quaternion_to_matrix(o3.identity_quaternion(4, dtype=F64)), eye.expand(4, 3, 3)
    )
    torch.testing.assert_close(o3.angles_to_matrix(*o3.identity_angles(4, dtype=F64)), eye.expand(4, 3, 3))


def test_matrix_to_quaternion_is_accurate_near_half_turns():
    """At angle pi the axis cannot be read from the antisymmetric part (e3nn's route loses ~1e-8
    there); ours reads the largest component from the diagonal."""
    axis = torch.randn(10, 3, dtype=F64)
    for angle in [math.pi, math.pi - 1e-9, 1e-9, 0.0]:
        R = o3.axis_angle_to_matrix(axis, torch.full((10,), angle, dtype=F64))
        torch.testing.assert_close(o3.quaternion_to_matrix(o3.matrix_to_quaternion(R)), R, atol=1e-14, rtol=0)
        torch.testing.assert_close(
            o3.axis_angle_to_matrix(*o3.matrix_to_axis_angle(R)), R, atol=1e-14, rtol=0
        )
