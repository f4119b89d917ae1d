"""Gaunt coefficients: closed form against an exact quadrature of three spherical harmonics."""

import itertools
import math

import numpy as np
import pytest
import torch

from equitensor import o3

F64 = torch.float64
LMAX = 6
TRIPLES = [(a, b, c) for a, b, c in itertools.product(range(LMAX + 1), repeat=3) if abs(a - b) <= c <= a + b]


@pytest.fixture(scope="module")
def quadrature_gaunt():
    """All int Y1 Y2 Y3 for l <= LMAX by a quadrature exact for the degree-3*LMAX integrand.

    Gauss-Legendre with n nodes in cos(beta) is exact up to degree 2n-1; a uniform grid of N
    azimuths is exact for frequencies below N. The harmonics are ours ('integral' normalization).
    """
    degree = 3 * LMAX
    nodes, weights = np.polynomial.legendre.leggauss(degree // 2 + 1)
    n_alpha = degree + 1
    beta = torch.from_numpy(np.arccos(nodes))
    alpha = torch.arange(n_alpha, dtype=F64) * (2 * math.pi / n_alpha)
    xyz = o3.angles_to_xyz(alpha[:, None], beta[None, :]).reshape(-1, 3)
    w = (torch.from_numpy(weights)[None, :] * (2 * math.pi / n_alpha)).expand(n_alpha, -1).reshape(-1)
    Y = {l: o3.spherical_harmonics(l, xyz, True, "integral") for l in range(LMAX + 1)}
    return lambda l1, l2, l3: torch.einsum("z,zi,zj,zk->ijk", w, Y[l1], Y[l2], Y[l3])


def test_gaunt_matches_exact_quadrature(quadrature_gaunt):
    worst = 0.0
    for ls in TRIPLES:
        G = o3.gaunt(*ls, dtype=F64)
        assert G.shape == tuple(2 * l + 1 for l in ls)
        worst = max(worst, (G - quadrature_gaunt(*ls)).abs().max().item())
    assert worst < 1e-12, worst


def test_selection_rule_odd_sum_is_exactly_zero():
    for ls in TRIPLES:
        G = o3.gaunt(*ls, dtype=F64)
        if sum(ls) % 2:
            assert (G == 0).all(), ls
        else:
            assert G.abs().max() > 1e-3, ls


def test_permutation_symmetry():
    for l1, l2, l3 in TRIPLES:
        G = o3.gaunt(l1, l2, l3, dtype=F64)
        for perm in itertools.permutations(range(3)):
            ls = [(l1, l2, l3)[p] for p in perm]
            torch.testing.assert_close(o3.gaunt(*ls, dtype=F64), G.permute(*perm), atol=1e-14, rtol=0)


def test_known_values_and_proportional_to_3j():
    # int Y_00^3 = 1/sqrt(4 pi); int Y_00 Y_lm Y_lm' = delta / sqrt(4 pi)
    assert math.isclose(o3.gaunt(0, 0, 0, dtype=F64).item(), 1 / math.sqrt(4 * math.pi), rel_tol=1e-15)
    torch.testing.assert_close(
        o3.gaunt(0, 3, 3, dtype=F64)[0], torch.eye(7, dtype=F64) / math.sqrt(4 * math.pi)
    )
    G, C = o3.gaunt(2, 3, 3, dtype=F64), o3.wigner_3j(2, 3, 3, dtype=F64)
    ratio = (G * C).sum()
    torch.testing.assert_close(G, ratio * C, atol=1e-15, rtol=0)


def test_gaunt_errors_dtype_and_copy():
    with pytest.raises(ValueError, match=r"\(1, 1, 3\)"):
        o3.gaunt(1, 1, 3)
    assert o3.gaunt(2, 2, 2, dtype=torch.float32).dtype == torch.float32
    assert o3.gaunt(1, 1, 2).dtype == torch.get_default_dtype()
    G = o3.gaunt(1, 1, 2, dtype=F64)
    G.zero_()
    assert o3.gaunt(1, 1, 2, dtype=F64).abs().max() > 0
