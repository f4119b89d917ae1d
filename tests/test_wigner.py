"""Wigner D, generators, change of basis and Wigner 3j: e3nn's numbers, group properties, caching."""

import contextlib
import itertools

import pytest
import torch
from e3nn import o3 as e3o3
from e3nn.o3 import _wigner as e3wigner

from equitensor import o3

F64 = torch.float64

# e3nn's wigner_3j is slow to compute (Fractions per coefficient); it is cached per process.


@contextlib.contextmanager
def e3nn_float64():
    """e3nn builds its generators in the default dtype; make it float64 for a fair comparison."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


TRIPLES_UP_TO_6 = [
    (l1, l2, l3) for l1, l2, l3 in itertools.product(range(7), repeat=3) if abs(l1 - l2) <= l3 <= l1 + l2
]
LARGE_TRIPLES = [(10, 10, 10), (7, 3, 10), (9, 10, 1), (8, 8, 0), (10, 5, 6)]


def test_wigner_3j_matches_e3nn_all_up_to_6():
    worst = 0.0
    for l1, l2, l3 in TRIPLES_UP_TO_6:
        ours, ref = o3.wigner_3j(l1, l2, l3, dtype=F64), e3o3.wigner_3j(l1, l2, l3, dtype=F64)
        assert ours.shape == ref.shape
        worst = max(worst, (ours - ref).abs().max().item())
    assert worst < 1e-12, worst


@pytest.mark.parametrize("ls", LARGE_TRIPLES)
def test_wigner_3j_matches_e3nn_large(ls):
    ours, ref = o3.wigner_3j(*ls, dtype=F64), e3o3.wigner_3j(*ls, dtype=F64)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "ls", [(1, 1, 2), (2, 3, 4), (3, 3, 3), (4, 6, 5), (8, 9, 10), (12, 12, 12), (15, 7, 9)]
)
def test_wigner_3j_invariant_and_normalised(ls):
    C = o3.wigner_3j(*ls, dtype=F64)
    torch.testing.assert_close(C.norm(), torch.tensor(1.0, dtype=F64), atol=1e-14, rtol=0)
    abc = o3.rand_angles(3, dtype=F64)
    D1, D2, D3 = (o3.wigner_D(l, *abc) for l in ls)
    rotated = torch.einsum("ijk,zil,zjm,zkn->zlmn", C, D1, D2, D3)
    torch.testing.assert_close(rotated, C.expand_as(rotated), atol=1e-12, rtol=0)


def test_wigner_3j_dtype_device_copy():
    C32 = o3.wigner_3j(2, 3, 4, dtype=torch.float32, device="cpu")
    assert C32.dtype == torch.float32 and C32.shape == (5, 7, 9)
    assert o3.wigner_3j(1, 1, 1).dtype == torch.get_default_dtype()
    C = o3.wigner_3j(1, 1, 1, dtype=F64)
    C.zero_()  # a copy: the cached tensor must not change
    assert o3.wigner_3j(1, 1, 1, dtype=F64).norm() > 0.99
    assert o3.clebsch_gordan is o3.wigner_3j


@pytest.mark.parametrize("bad", [(1, 1, 3), (0, 2, 1), (5, 1, 3), (0, 0, 1)])
def test_wigner_3j_triangle_error(bad):
    with pytest.raises(ValueError, match=r"\({}, {}, {}\)".format(*bad)):
        o3.wigner_3j(*bad)
    with pytest.raises(ValueError, match="triangle"):
        o3.wigner_3j_sparse(*bad)


def test_wigner_3j_rejects_non_integers():
    with pytest.raises(ValueError):
        o3.wigner_3j(1.5, 1, 1)
    with pytest.raises(ValueError):
        o3.wigner_3j(-1, 1, 1)


@pytest.mark.parametrize("ls", [(0, 0, 0), (1, 1, 1), (1, 2, 3), (2, 2, 2), (3, 4, 5), (6, 6, 6), (10, 7, 5)])
def test_wigner_3j_sparse_reconstructs_dense(ls):
    idx, val = o3.wigner_3j_sparse(*ls)
    C = o3.wigner_3j(*ls, dtype=F64)
    assert idx.dtype == torch.long and idx.shape[1] == 3 and val.dtype == F64
    assert (val.abs() > 1e-14).all()
    assert len(val) == int((C.abs() > 1e-14).sum())
    dense = torch.zeros_like(C)
    dense[idx[:, 0], idx[:, 1], idx[:, 2]] = val
    torch.testing.assert_close(dense, C, atol=0, rtol=0)


def test_wigner_3j_parity_zeros_are_exact():
    # (l1 l2 l3; 0 0 0) vanishes for odd l1 + l2 + l3, and real entries cancel exactly elsewhere
    C = o3.wigner_3j(2, 2, 1, dtype=F64)
    assert C[2, 2, 1] == 0.0
    idx, _ = o3.wigner_3j_sparse(1, 1, 1)
    assert len(idx) == 6  # the Levi-Civita symbol


def test_change_basis_matches_e3nn_and_is_unitary():
    for l in range(8):
        Q = o3.change_basis_real_to_complex(l, dtype=F64)
        assert Q.dtype == torch.complex128
        torch.testing.assert_close(Q, e3wigner.change_basis_real_to_complex(l, dtype=F64), atol=1e-15, rtol=0)
        torch.testing.assert_close(Q @ Q.conj().T, torch.eye(2 * l + 1, dtype=Q.dtype), atol=1e-14, rtol=0)
    assert o3.change_basis_real_to_complex(2, dtype=torch.float32).dtype == torch.complex64


def test_so3_generators_match_e3nn_and_commute():
    for l in range(11):
        X = o3.so3_generators(l, dtype=F64)
        assert X.shape == (3, 2 * l + 1, 2 * l + 1)
        with e3nn_float64():
            ref = e3wigner.so3_generators(l)
        torch.testing.assert_close(X, ref, atol=1e-12, rtol=0)
        torch.testing.assert_close(X, -X.transpose(-1, -2), atol=0, rtol=0)
        # [X_x, X_y] = X_z and cyclic
        for i, j, k in [(0, 1, 2), (1, 2, 0), (2, 0, 1)]:
            torch.testing.assert_close(X[i] @ X[j] - X[j] @ X[i], X[k], atol=1e-12, rtol=0)
        # Casimir: sum X_k^2 = -l(l+1)
        cas = (X @ X).sum(0)
        torch.testing.assert_close(cas, -l * (l + 1) * torch.eye(2 * l + 1, dtype=F64), atol=1e-12, rtol=0)


def test_generators_l1_are_cross_products():
    X = o3.so3_generators(1, dtype=F64)
    v = torch.randn(3, dtype=F64)
    for k in range(3):
        e = torch.zeros(3, dtype=F64)
        e[k] = 1
        torch.testing.assert_close(X[k] @ v, torch.linalg.cross(e, v))


def test_wigner_D_matches_e3nn():
    abc = [t * 3 for t in o3.rand_angles(10, dtype=F64)]  # also angles outside [0, 2pi)
    worst = 0.0
    for l in range(13):
        with e3nn_float64():
            ref = e3o3.wigner_D(l, *abc)
        ours = o3.wigner_D(l, *abc)
        assert ours.shape == (10, 2 * l + 1, 2 * l + 1)
        worst = max(worst, (ours - ref).abs().max().item())
    assert worst < 1e-12, worst


def test_wigner_D_l1_is_the_rotation_matrix(dtype, tol):
    abc = o3.rand_angles(20, dtype=dtype)
    torch.testing.assert_close(o3.wigner_D(1, *abc), o3.angles_to_matrix(*abc), atol=10 * tol, rtol=0)


def test_wigner_D_matches_exponential_of_generators():
    a = torch.tensor(0.7, dtype=F64)
    zero = torch.zeros((), dtype=F64)
    for l in range(6):
        X = o3.so3_generators(l, dtype=F64)
        torch.testing.assert_close(o3.wigner_D(l, a, zero, zero), torch.linalg.matrix_exp(a * X[1]))
        torch.testing.assert_close(o3.wigner_D(l, zero, a, zero), torch.linalg.matrix_exp(a * X[0]))


@pytest.mark.parametrize("l", [0, 1, 2, 3, 5, 8])
def test_wigner_D_homomorphism_and_orthogonality(l, dtype, tol):
    R1, R2 = o3.rand_matrix(2, 5, dtype=F64)
    D = lambda R: o3.wigner_D(l, *(t.to(dtype) for t in o3.matrix_to_angles(R)))  # noqa: E731
    torch.testing.assert_close(D(R1 @ R2), D(R1) @ D(R2), atol=100 * tol, rtol=0)
    D1 = D(R1)
    eye = torch.eye(2 * l + 1, dtype=dtype).expand_as(D1)
    torch.testing.assert_close(D1 @ D1.transpose(-1, -2), eye, atol=100 * tol, rtol=0)
    # inverse rotation
    torch.testing.assert_close(D(R1.transpose(-1, -2)), D1.transpose(-1, -2), atol=100 * tol, rtol=0)


def test_wigner_D_broadcasts_and_accepts_floats():
    a = torch.rand(4, 1, dtype=F64)
    b = torch.rand(1, 3, dtype=F64)
    assert o3.wigner_D(2, a, b, 0.5).shape == (4, 3, 5, 5)
    assert o3.wigner_D(2, 0.1, 0.2, 0.3).shape == (5, 5)


def test_wigner_D_twice_differentiable():
    abc = tuple(t.requires_grad_() for t in o3.rand_angles(2, dtype=F64))
    f = lambda a, b, c: o3.wigner_D(3, a, b, c)  # noqa: E731
    assert torch.autograd.gradcheck(f, abc)
    assert torch.autograd.gradgradcheck(f, abc)


@pytest.mark.parametrize("j", [0, 0.5, 1, 1.5, 2, 2.5, 3])
def test_su2_generators_match_e3nn_and_real_basis(j):
    from e3nn import o3 as e3o3

    from equitensor.o3 import change_basis_real_to_complex, so3_generators, su2_generators

    X = su2_generators(j, dtype=torch.float64)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds them in the default dtype
    try:
        ref = e3o3.su2_generators(j)
    finally:
        torch.set_default_dtype(old)
    torch.testing.assert_close(X, ref.to(X.dtype), atol=1e-14, rtol=0)
    torch.testing.assert_close(X[0] @ X[1] - X[1] @ X[0], X[2], atol=1e-12, rtol=0)
    if j == int(j):  # the complex basis of integer spin is the real basis, changed
        Q = change_basis_real_to_complex(int(j), dtype=torch.float64)
        real = so3_generators(int(j), dtype=torch.float64).to(X.dtype)
        torch.testing.assert_close(Q.conj().T @ X @ Q, real, atol=1e-12, rtol=0)


def test_su2_generators_refuse_other_spins():
    from equitensor.o3 import su2_generators

    with pytest.raises(ValueError, match="half integer"):
        su2_generators(0.3)
