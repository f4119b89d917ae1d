"""Radial features: Bessel basis, polynomial envelope, radial MLP and normalized activation vs oracles."""

import math

import numpy as np
import pytest
import torch
from e3nn.math import normalize2mom, soft_one_hot_linspace
from e3nn.nn import FullyConnectedNet

from equitensor.nn import BesselBasis, NormalizedActivation, PolynomialCutoff, RadialEmbedding, RadialMLP


def test_bessel_matches_e3nn_and_formula():
    r_max, n = 4.5, 8
    r = torch.linspace(0.05, r_max - 1e-3, 57, dtype=torch.float64)
    ours = BesselBasis(r_max, n)(r)
    # e3nn's 'bessel' soft one-hot: sqrt(2/c) sin(n pi x / c) / x
    e3nn = soft_one_hot_linspace(r, 0.0, r_max, n, basis="bessel", cutoff=True)
    torch.testing.assert_close(ours, e3nn, rtol=1e-12, atol=1e-12)
    rn = r.numpy()[:, None]
    formula = math.sqrt(2 / r_max) * np.sin(np.arange(1, n + 1) * np.pi * rn / r_max) / rn
    np.testing.assert_allclose(ours.numpy(), formula, rtol=1e-12, atol=1e-12)


def test_bessel_float32_module_is_exact_in_float64():
    basis = BesselBasis(5.0, 6).double()  # built in float32: no stored constants to round
    r = torch.tensor([0.3, 1.7, 4.9], dtype=torch.float64)
    expected = (
        math.sqrt(2 / 5.0)
        * torch.sin(torch.arange(1, 7, dtype=torch.float64) * math.pi * r[:, None] / 5)
        / r[:, None]
    )
    torch.testing.assert_close(basis(r), expected, rtol=1e-15, atol=1e-15)


def test_trainable_bessel_has_a_parameter():
    basis = BesselBasis(5.0, 4, trainable=True)
    assert [name for name, _ in basis.named_parameters()] == ["frequencies"]
    r = torch.tensor([1.0, 2.0])
    basis(r).sum().backward()
    assert basis.frequencies.grad is not None


@pytest.mark.parametrize("p", [5, 6])
def test_polynomial_cutoff_formula_and_smoothness(p):
    r_max = 5.0
    cutoff = PolynomialCutoff(r_max, p)
    x = np.linspace(0, 1.2, 61)
    u = 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    expected = u * (x < 1)
    np.testing.assert_allclose(cutoff(torch.tensor(x * r_max)).numpy(), expected, atol=1e-14)
    # value, first and second derivative vanish at r_max (from below); zero beyond
    r = torch.tensor([r_max * (1 - 1e-7)], dtype=torch.float64, requires_grad=True)
    value = cutoff(r)
    (d1,) = torch.autograd.grad(value.sum(), r, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), r)
    assert abs(value.item()) < 1e-12 and abs(d1.item()) < 1e-9 and abs(d2.item()) < 1e-5
    assert cutoff(torch.tensor([r_max, 7.0])).tolist() == [0.0, 0.0]
    assert cutoff(torch.tensor([0.0])).item() == 1.0
    assert np.all(np.diff(expected[x < 1]) < 0)


def test_radial_embedding_is_bessel_times_envelope():
    r = torch.linspace(0.1, 6.0, 20, dtype=torch.float64)
    emb = RadialEmbedding(5.0, 8, 5)
    expected = BesselBasis(5.0, 8)(r) * PolynomialCutoff(5.0, 5)(r)[:, None]
    torch.testing.assert_close(emb(r), expected, rtol=0, atol=0)
    assert torch.all(emb(r)[r >= 5.0] == 0)


def test_normalized_activation_matches_e3nn():
    ours = NormalizedActivation("silu")
    theirs = normalize2mom(torch.nn.functional.silu)
    assert ours.scale == pytest.approx(theirs.cst, rel=1e-12)
    # and is close to the exact Gaussian second moment
    z, w = np.polynomial.hermite_e.hermegauss(200)
    second = (w * (z / (1 + np.exp(-z))) ** 2).sum() / math.sqrt(2 * math.pi)
    assert ours.scale == pytest.approx(second**-0.5, rel=5e-3)
    x = torch.randn(10, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x))
    with pytest.raises(ValueError, match="unknown activation 'relu6'"):
        NormalizedActivation("relu6")


def test_radial_mlp_matches_e3nn_fully_connected_net():
    sizes = [8, 16, 16, 30]
    ours = RadialMLP(sizes).double()
    theirs = FullyConnectedNet(sizes, torch.nn.functional.silu).double()
    for i, weight in enumerate(ours.weights):
        assert weight.shape == getattr(theirs, f"layer{i}").weight.shape
        getattr(theirs, f"layer{i}").weight.data.copy_(weight.data)
    x = torch.randn(11, 8, dtype=torch.float64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-13, atol=1e-13)
    assert not any("bias" in name for name, _ in ours.named_parameters())


def test_radial_mlp_rejects_bad_sizes():
    with pytest.raises(ValueError, match="at least an input and an output"):
        RadialMLP([8])
