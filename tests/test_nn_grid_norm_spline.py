"""The layers the eSCN and Facet models add: functions on an S2 grid, the per-degree layer norm and
spline radial functions."""

import pytest
import torch

from equitensor.irreps import Irreps
from equitensor.nn import (
    EquivariantLayerNorm,
    GridActivation,
    GridFunction,
    GridMLP,
    SphericalGrid,
    SplineRadial,
)
from equitensor.nn.radial import cubic_bspline
from equitensor.testing import equivariance_error


def signal_irreps(channels: int, lmax: int) -> str:
    return " + ".join(f"{channels}x{l}{'eo'[l % 2]}" for l in range(lmax + 1))


@pytest.mark.parametrize("lmax", range(5))
def test_grid_round_trip_is_identity(lmax):
    grid = SphericalGrid(signal_irreps(3, lmax))
    x = torch.randn(7, grid.irreps.dim, dtype=torch.float64)
    torch.testing.assert_close(grid.from_grid(grid.to_grid(x)), x, rtol=0, atol=1e-12)
    assert grid.to_grid(torch.randn(20000, grid.irreps.dim)).var().item() == pytest.approx(1.0, rel=0.05)


class Cube(GridFunction):
    def pointwise(self, samples):
        return samples**3


@pytest.mark.parametrize("lmax", [1, 2, 3])
def test_polynomials_up_to_the_grid_degree_are_exactly_equivariant(lmax):
    """The default grid integrates degree 8 L: a cubic of the signal (degree 3 L, times Y of degree
    <= L) is projected exactly, so it commutes with rotations and reflections to round-off; SiLU
    does not, and its error is what equivariance_error() reports."""
    irreps = signal_irreps(2, lmax)
    errors = equivariance_error(Cube(irreps, None), irreps, irreps, dtype=torch.float64, ntrials=3)
    assert max(max(e) for e in errors.values()) < 1e-10
    assert Cube(irreps, None).equivariance_error() < 1e-12
    silu = GridActivation(irreps)
    assert 1e-8 < silu.equivariance_error() < 1e-3
    assert GridMLP(irreps, 8).equivariance_error() < 1e-2


def test_grid_rejects_features_that_are_not_spherical_signals():
    for irreps in ("4x0e + 2x1o", "4x0e + 4x1e", "4x1o"):
        with pytest.raises(ValueError, match="C x \\(0e \\+ 1o"):
            SphericalGrid(irreps)


def test_layer_norm_is_equivariant_and_normalises_each_degree():
    irreps = Irreps("5x0e + 3x1o + 2x2e + 3x1e + 2x0o")
    norm = EquivariantLayerNorm(irreps).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.normal_()
    errors = equivariance_error(norm, irreps, irreps, dtype=torch.float64, ntrials=3)
    assert max(max(e) for e in errors.values()) < 1e-12
    plain = EquivariantLayerNorm(irreps).double()
    y = plain(10 * torch.randn(6, irreps.dim, dtype=torch.float64) + 3)
    for s, (mul, ir) in zip(irreps.slices(), irreps):
        block = y[:, s].reshape(6, mul, ir.dim)
        assert block.pow(2).sum(-1).mean(-1).div(ir.dim).sub(1).abs().max() < 1e-6
        if ir == Irreps("0e")[0].ir:
            assert block.mean(1).abs().max() < 1e-12
    assert torch.isfinite(plain(torch.zeros(2, irreps.dim, dtype=torch.float64))).all()


def test_bspline_is_a_c2_partition_of_unity():
    r = torch.linspace(0.0, 5.0, 2001, dtype=torch.float64)[:-1]
    radial = SplineRadial(5.0, out_features=3, num_basis=9).double()
    torch.testing.assert_close(radial.basis(r).sum(-1), torch.ones_like(r), rtol=0, atol=1e-12)
    # C2 at the knots: one-sided second differences agree
    u = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    h = 1e-4
    left = (cubic_bspline(u - 2 * h) - 2 * cubic_bspline(u - h) + cubic_bspline(u)) / h**2
    right = (cubic_bspline(u) - 2 * cubic_bspline(u + h) + cubic_bspline(u + 2 * h)) / h**2
    torch.testing.assert_close(left, right, rtol=0, atol=1e-3)
    lengths = torch.tensor([4.9999, 5.0, 6.0], dtype=torch.float64, requires_grad=True)
    w = radial(lengths)
    assert w[1:].abs().max() == 0 and w[0].abs().max() < 1e-12
    (grad,) = torch.autograd.grad(w.sum(), lengths)
    assert torch.isfinite(grad).all()
