"""Spherical harmonics: e3nn's numbers to 1e-12 up to l=12, equivariance, normalisations, gradients."""

import math

import numpy as np
import pytest
import torch
from e3nn import o3 as e3o3

from equitensor import o3
from equitensor.irreps import Irreps

F64 = torch.float64
NORMALIZATIONS = ["integral", "component", "norm"]


def _vectors(n, dtype=F64):
    """Random directions with norms in [0.5, 2], plus the six signed axis vectors."""
    x = torch.nn.functional.normalize(torch.randn(n, 3, dtype=F64), dim=-1)
    x = x * (0.5 + 1.5 * torch.rand(n, 1, dtype=F64))
    axes = torch.cat([torch.eye(3, dtype=F64), -torch.eye(3, dtype=F64)])
    return torch.cat([x, axes, 1.7 * axes]).to(dtype)


def _sphere_quadrature(lmax):
    """Exact quadrature for polynomials of degree <= lmax on S2: Gauss-Legendre x uniform."""
    n_beta = lmax // 2 + 1
    n_alpha = lmax + 1
    nodes, weights = np.polynomial.legendre.leggauss(n_beta)
    beta = torch.from_numpy(np.arccos(nodes))
    alpha = torch.arange(n_alpha, dtype=F64) * (2 * math.pi / n_alpha)
    xyz = o3.angles_to_xyz(alpha[:, None], beta[None, :]).reshape(-1, 3)
    w = (torch.from_numpy(weights)[None, :] * (2 * math.pi / n_alpha)).expand(n_alpha, n_beta).reshape(-1)
    return xyz, w


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_e3nn_float64_all_l_up_to_12(normalization, normalize):
    x = _vectors(500)
    r = x.norm(dim=-1, keepdim=True)
    worst = 0.0
    for l in range(13):
        ours = o3.spherical_harmonics(l, x, normalize, normalization)
        ref = e3o3.spherical_harmonics(l, x, normalize, normalization=normalization)
        assert ours.shape == ref.shape == (len(x), 2 * l + 1)
        err = (ours - ref).abs()
        if not normalize:
            err = err / r**l  # homogeneous polynomials: compare r^l Y at the scale r^l
        worst = max(worst, err.max().item())
    assert worst < 1e-12, worst
    # all degrees at once, same layout as e3nn
    ls = list(range(13))
    ref = e3o3.spherical_harmonics(ls, x, True, normalization=normalization)
    torch.testing.assert_close(o3.spherical_harmonics(ls, x, True, normalization), ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_float32_matches_e3nn(normalization):
    x = _vectors(500)
    ls = list(range(13))
    ref = e3o3.spherical_harmonics(ls, x, True, normalization=normalization)
    ours = o3.spherical_harmonics(ls, x.float(), True, normalization)
    assert ours.dtype == torch.float32
    scale = ref.abs().max()
    assert ((ours.double() - ref).abs().max() / scale).item() < 1e-5
    ref = e3o3.spherical_harmonics([0, 1, 2, 3], x, False, normalization=normalization)
    ours = o3.spherical_harmonics([0, 1, 2, 3], x.float(), False, normalization)
    assert ((ours.double() - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_input_forms():
    x = _vectors(20)
    full = o3.spherical_harmonics(list(range(4)), x, True)
    blocks = {l: full[:, l * l : (l + 1) ** 2] for l in range(4)}
    torch.testing.assert_close(o3.spherical_harmonics(2, x, True), blocks[2])
    torch.testing.assert_close(
        o3.spherical_harmonics([3, 1, 1], x, True), torch.cat([blocks[3], blocks[1], blocks[1]], -1)
    )
    torch.testing.assert_close(o3.spherical_harmonics("0e+1o+2e+3o", x, True), full)
    torch.testing.assert_close(
        o3.spherical_harmonics("2x1o + 0e", x, True), torch.cat([blocks[1], blocks[1], blocks[0]], -1)
    )
    torch.testing.assert_close(o3.spherical_harmonics("1y + 2y", x, True), full[:, 1:9])
    torch.testing.assert_close(o3.spherical_harmonics(Irreps("0e+1o+2e+3o"), x, True), full)
    torch.testing.assert_close(o3.spherical_harmonics(e3o3.Irreps("0e+1o+2e+3o"), x, True), full)
    # a pseudovector input (e3nn's rule: an odd l with even parity): same numbers, all parities +1
    torch.testing.assert_close(o3.spherical_harmonics("0e + 1e + 2e", x, True), full[:, :9])
    ref = e3o3.spherical_harmonics([2, 0, 5, 5], x, False, normalization="norm")
    torch.testing.assert_close(
        o3.spherical_harmonics((2, 0, 5, 5), x, False, "norm"), ref, atol=1e-12, rtol=0
    )


def test_batch_shapes():
    x = torch.randn(2, 5, 3)
    assert o3.spherical_harmonics([0, 1, 2], x, True).shape == (2, 5, 9)
    assert o3.spherical_harmonics(3, torch.randn(3), True).shape == (7,)
    assert o3.spherical_harmonics(3, torch.randn(0, 3), True).shape == (0, 7)
    # a non-contiguous input
    y = torch.randn(3, 10)[:, ::2].T
    torch.testing.assert_close(
        o3.spherical_harmonics(4, y, False), o3.spherical_harmonics(4, y.contiguous(), False)
    )


@pytest.mark.parametrize("bad", ["0e + 1e + 1o", "2o", "0e + 1o + 2o", "0o"])
def test_parity_errors(bad):
    with pytest.raises(ValueError, match="parity"):
        o3.spherical_harmonics(bad, torch.randn(3), True)


def test_argument_errors():
    with pytest.raises(ValueError, match="normalization"):
        o3.spherical_harmonics(1, torch.randn(3), True, "unit")
    with pytest.raises(ValueError, match=r"3.*got.*\(4, 2\)"):
        o3.spherical_harmonics(1, torch.randn(4, 2), True)
    with pytest.raises(ValueError):
        o3.spherical_harmonics(-1, torch.randn(3), True)
    with pytest.raises(ValueError):
        o3.spherical_harmonics([], torch.randn(3), True)
    with pytest.raises(ValueError):
        o3.SphericalHarmonics(1, True, "bad")


def test_equivariance(dtype, tol):
    lmax = 8
    ls = list(range(lmax + 1))
    x = _vectors(50, dtype)
    abc = o3.rand_angles(dtype=F64)
    R = o3.angles_to_matrix(*abc).to(dtype)
    D = torch.block_diag(*(o3.wigner_D(l, *abc) for l in ls)).to(dtype)
    for normalize in (True, False):
        lhs = o3.spherical_harmonics(ls, x @ R.T, normalize)
        rhs = o3.spherical_harmonics(ls, x, normalize) @ D.T
        scale = rhs.abs().max().item()
        torch.testing.assert_close(lhs, rhs, atol=100 * tol * scale, rtol=0)


def test_equivariance_high_degree():
    x = _vectors(20)
    abc = o3.rand_angles(dtype=F64)
    R = o3.angles_to_matrix(*abc)
    for l in (13, 16, 20):
        lhs = o3.spherical_harmonics(l, x @ R.T, True)
        rhs = o3.spherical_harmonics(l, x, True) @ o3.wigner_D(l, *abc).T
        torch.testing.assert_close(lhs, rhs, atol=1e-11, rtol=0)


def test_orthonormal_up_to_high_degree():
    lmax = 20
    xyz, w = _sphere_quadrature(2 * lmax)
    Y = o3.spherical_harmonics(list(range(lmax + 1)), xyz, False, "integral")
    gram = Y.T @ (w[:, None] * Y)
    torch.testing.assert_close(gram, torch.eye(len(gram), dtype=F64), atol=1e-12, rtol=0)


def test_normalizations_on_the_sphere():
    x = torch.nn.functional.normalize(torch.randn(100, 3, dtype=F64), dim=-1)
    for l in range(9):
        comp = o3.spherical_harmonics(l, x, False, "component")
        torch.testing.assert_close(comp.pow(2).sum(-1), torch.full((100,), 2.0 * l + 1, dtype=F64))
        norm = o3.spherical_harmonics(l, x, False, "norm")
        torch.testing.assert_close(norm.pow(2).sum(-1), torch.ones(100, dtype=F64))
        integ = o3.spherical_harmonics(l, x, False, "integral")
        torch.testing.assert_close(integ, comp / math.sqrt(4 * math.pi))
    # the l=1 component harmonics are sqrt(3) (x, y, z): e3nn's basis
    torch.testing.assert_close(o3.spherical_harmonics(1, x, False, "component"), math.sqrt(3) * x)


def test_homogeneous_and_parity():
    x = _vectors(30)
    for l in range(9):
        y = o3.spherical_harmonics(l, x, False)
        torch.testing.assert_close(o3.spherical_harmonics(l, 2.5 * x, False), 2.5**l * y)
        torch.testing.assert_close(o3.spherical_harmonics(l, -x, False), (-1) ** l * y)
        unit = o3.spherical_harmonics(l, x, True)
        torch.testing.assert_close(y, unit * x.norm(dim=-1, keepdim=True) ** l)


def test_zero_vectors(dtype):
    x = torch.zeros(4, 3, dtype=dtype, requires_grad=True)
    y = o3.spherical_harmonics([0, 1, 2, 3], x, True, "component")
    torch.testing.assert_close(y[:, 0], torch.ones(4, dtype=dtype))
    assert (y[:, 1:] == 0).all()
    (g,) = torch.autograd.grad((y + y**2).sum(), x, create_graph=True)
    assert torch.isfinite(g).all()
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.isfinite(gg).all()
    # not normalised: the polynomials and their derivatives at 0
    y = o3.spherical_harmonics([1, 2], x, False, "component")
    (g,) = torch.autograd.grad(y.sum(), x)
    assert (y == 0).all() and torch.isfinite(g).all()


@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck(normalize):
    x = (0.5 + torch.rand(3, 1, dtype=F64)) * torch.nn.functional.normalize(
        torch.randn(3, 3, dtype=F64), dim=-1
    )
    x.requires_grad_()
    f = lambda v: o3.spherical_harmonics([0, 1, 2, 3, 4], v, normalize)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x,))
    assert torch.autograd.gradgradcheck(f, (x,))


def test_gradient_matches_e3nn():
    x = _vectors(50).requires_grad_()
    w = torch.randn(25, dtype=F64)
    ls = [0, 1, 2, 3, 4]
    for normalize in (True, False):
        (g1,) = torch.autograd.grad(
            o3.spherical_harmonics(ls, x, normalize) @ w, x, torch.ones(len(x), dtype=F64)
        )
        (g2,) = torch.autograd.grad(
            e3o3.spherical_harmonics(ls, x, normalize) @ w, x, torch.ones(len(x), dtype=F64)
        )
        torch.testing.assert_close(g1, g2, atol=1e-11, rtol=0)


def test_module():
    x = _vectors(10)
    m = o3.SphericalHarmonics("0e + 1o + 2e", normalize=True, normalization="component")
    torch.testing.assert_close(m(x), o3.spherical_harmonics([0, 1, 2], x, True, "component"))
    assert m.irreps_out == Irreps("0e + 1o + 2e") and m.irreps_in == Irreps("1o")
    m = o3.SphericalHarmonics([1, 2], normalize=False)
    assert m.irreps_out == Irreps("1o + 2e")
    ref = e3o3.SphericalHarmonics([1, 2], normalize=False)
    torch.testing.assert_close(m(x), ref(x), atol=1e-12, rtol=0)
    m = o3.SphericalHarmonics([1, 2], normalize=True, irreps_in="1e")
    assert m.irreps_out == Irreps("1e + 2e")
    assert "normalize=True" in repr(m)
    with pytest.raises(ValueError, match="parity"):
        o3.SphericalHarmonics("1o", normalize=True, irreps_in="1e")
    with pytest.raises(ValueError, match="irreps_in"):
        o3.SphericalHarmonics("1o", normalize=True, irreps_in="2e")
