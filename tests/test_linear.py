"""equitensor.Linear against e3nn's o3.Linear with the same weights, plus equivariance and errors."""

import random

import pytest
import torch
from e3nn import o3

from equitensor import Irreps, Linear
from equitensor.testing import assert_equivariant, assert_gradients, random_irreps


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("seed", range(40))
def test_matches_e3nn_on_random_irreps(seed, float64_default):
    rng = random.Random(seed)
    irreps_in = Irreps(random_irreps(lmax=3, mul_max=5, len_max=5, rng=rng))
    irreps_out = Irreps(random_irreps(lmax=3, mul_max=5, len_max=5, rng=rng))
    kwargs = dict(biases=rng.random() < 0.5, path_normalization=rng.choice(["element", "path"]))
    ours = Linear(irreps_in, irreps_out, **kwargs)
    x = torch.randn(6, irreps_in.dim)
    weight = torch.randn(ours.weight_numel)
    bias = torch.randn(ours.bias_numel)
    if any(m1 and m2 and ir1 == ir2 for m1, ir1 in irreps_in for m2, ir2 in irreps_out):
        ref = o3.Linear(str(irreps_in), str(irreps_out), **kwargs)
        assert ours.weight_numel == ref.weight_numel and ours.bias_numel == ref.bias_numel
        expected = ref(x, weight, bias) if ref.bias_numel else ref(x, weight)
    else:  # e3nn's codegen fails without a non-empty path; only the bias is left
        expected = torch.zeros(6, irreps_out.dim)
        slices = [s for s, (_, ir) in zip(irreps_out.slices(), irreps_out) if ir == "0e"]
        if kwargs["biases"] and slices:
            expected[:, torch.cat([torch.arange(s.start, s.stop) for s in slices])] = bias
    got = ours(x, weight if ours.weight_numel else None, bias if ours.bias_numel else None)
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_per_sample_weights_and_instructions(float64_default):
    irreps_in, irreps_out = "4x0e+3x1o+2x0e", "5x0e+4x1o"
    instructions = [(0, 0), (1, 1)]
    ref = o3.Linear(irreps_in, irreps_out, instructions=instructions, shared_weights=False)
    ours = Linear(irreps_in, irreps_out, instructions=instructions, shared_weights=False)
    x = torch.randn(7, Irreps(irreps_in).dim)
    weight = torch.randn(7, ref.weight_numel)
    assert torch.allclose(ours(x, weight), ref(x, weight), rtol=1e-10, atol=1e-12)


def test_example_weight_numel():
    assert Linear("4x0e+16x1o", "8x0e+8x1o").weight_numel == 160


def test_equivariant(dtype):
    lin = Linear("4x0e+3x1o+2x2e+1x1e", "5x0e+4x1o+3x2e+2x1e", biases=True).to(dtype)
    with torch.no_grad():
        lin.bias.normal_()
    assert_equivariant(lin, lin.irreps_in, lin.irreps_out, dtype=dtype)


def test_gradients():
    lin = Linear("2x0e+2x1o", "3x0e+1x1o", biases=True)
    assert_gradients(lin, torch.randn(3, Irreps("2x0e+2x1o").dim))


def test_errors():
    with pytest.raises(ValueError, match="1o cannot map to 1x?1e|1o cannot map to 1e"):
        Linear("1o", "1e", instructions=[(0, 0)])
    with pytest.raises(ValueError, match="only equivariant on 0e"):
        Linear("1o", "1o", biases=[True])
    with pytest.raises(ValueError, match=r"last dimension 4 but .* needs 3"):
        Linear("1o", "1o")(torch.randn(2, 4))
    with pytest.raises(ValueError, match="no internal weights"):
        Linear("1o", "1o", shared_weights=False)(torch.randn(2, 3))
