"""Rank-2 Cartesian primitives against independent oracles: linear algebra, cross products, e3nn."""

import pytest
import torch

from equitensor import rand_matrix
from equitensor.nn.cartesian import (
    compose,
    decompose,
    scalar_to_matrix,
    skew_to_vector,
    squared_norm,
    symmetric_traceless,
    vector_to_skew,
)


def random_orthogonal(n: int) -> torch.Tensor:
    """n random O(3) elements, half of them reflections (det -1)."""
    rotations = rand_matrix(n, dtype=torch.float64)
    signs = torch.tensor([1.0, -1.0], dtype=torch.float64).repeat((n + 1) // 2)[:n]
    return rotations * signs[:, None, None]


def test_decompose_pieces_and_roundtrip():
    x = torch.randn(7, 5, 3, 3, dtype=torch.float64)
    scalar, antisym, sym = decompose(x)
    assert scalar.shape == (7, 5)
    torch.testing.assert_close(compose(scalar, antisym, sym), x)
    torch.testing.assert_close(scalar, torch.einsum("...ii->...", x) / 3)
    torch.testing.assert_close(antisym, -antisym.transpose(-1, -2))
    torch.testing.assert_close(sym, sym.transpose(-1, -2))
    torch.testing.assert_close(torch.einsum("...ii->...", sym), torch.zeros(7, 5, dtype=torch.float64))
    torch.testing.assert_close(symmetric_traceless(x), sym)
    torch.testing.assert_close(scalar_to_matrix(scalar), scalar[..., None, None] * torch.eye(3).double())


def test_pieces_are_orthogonal():
    x = torch.randn(10, 3, 3, dtype=torch.float64)
    scalar, antisym, sym = decompose(x)
    torch.testing.assert_close(squared_norm(x), torch.linalg.matrix_norm(x) ** 2)
    torch.testing.assert_close(squared_norm(x), 3 * scalar**2 + squared_norm(antisym) + squared_norm(sym))


def test_decompose_is_equivariant_under_rotations_and_reflections():
    rot = random_orthogonal(6)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    rotated = rot @ x @ rot.transpose(-1, -2)
    scalar, antisym, sym = decompose(x)
    r_scalar, r_antisym, r_sym = decompose(rotated)
    torch.testing.assert_close(r_scalar, scalar)
    torch.testing.assert_close(r_antisym, rot @ antisym @ rot.transpose(-1, -2))
    torch.testing.assert_close(r_sym, rot @ sym @ rot.transpose(-1, -2))


def test_skew_is_the_cross_product():
    v, w = torch.randn(2, 8, 3, dtype=torch.float64)
    torch.testing.assert_close((vector_to_skew(v) @ w[..., None])[..., 0], torch.linalg.cross(v, w))
    torch.testing.assert_close(skew_to_vector(vector_to_skew(v)), v)
    x = torch.randn(4, 3, 3)
    torch.testing.assert_close(vector_to_skew(skew_to_vector(x)), decompose(x)[1])


def test_skew_of_a_vector_is_a_pseudo_tensor():
    rot = random_orthogonal(6)
    v = torch.randn(6, 3, dtype=torch.float64)
    det = torch.linalg.det(rot)
    lhs = vector_to_skew(torch.einsum("nij,nj->ni", rot, v))
    rhs = det[:, None, None] * rot @ vector_to_skew(v) @ rot.transpose(-1, -2)
    torch.testing.assert_close(lhs, rhs)


def test_pieces_match_e3nn_irreps():
    """I, A, S are exactly the 0e, 1e and 2e parts of e3nn's CartesianTensor('ij')."""
    io = pytest.importorskip("e3nn.io")
    cartesian = io.CartesianTensor("ij")
    assert str(cartesian) == "1x0e+1x1e+1x2e"
    x = torch.randn(5, 3, 3)
    scalar, antisym, sym = decompose(x)
    for piece, (start, stop) in [(scalar_to_matrix(scalar), (0, 1)), (antisym, (1, 4)), (sym, (4, 9))]:
        coefficients = cartesian.from_cartesian(piece)
        outside = torch.cat([coefficients[:, :start], coefficients[:, stop:]], dim=1)
        torch.testing.assert_close(outside, torch.zeros_like(outside), atol=1e-5, rtol=0)
        torch.testing.assert_close(coefficients.norm(dim=1) ** 2, squared_norm(piece), atol=1e-4, rtol=1e-4)


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"decompose input must end in \(3, 3\)"):
        decompose(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="vector_to_skew input must end in 3"):
        vector_to_skew(torch.zeros(4, 2))
