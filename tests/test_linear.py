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


# ------------------------------------------------------------------ e3nn's Linear API, beyond the numbers


@pytest.mark.parametrize("path_normalization", ["element", "path"])
def test_channel_axes_match_e3nn(path_normalization, float64_default):
    """``f_in``/``f_out``: an extra channel axis mixed by (f_in, f_out, numel) weights."""
    irreps_in, irreps_out = "0e + 2x1e + 2e", "3x0e + 1e + 2x2e"
    kwargs = dict(f_in=4, f_out=3, biases=True, path_normalization=path_normalization)
    ours, ref = Linear(irreps_in, irreps_out, **kwargs), o3.Linear(irreps_in, irreps_out, **kwargs)
    assert ours.weight.shape == ref.weight.shape == (4, 3, ref.weight_numel)
    assert ours.bias.shape == ref.bias.shape
    with torch.no_grad():
        ours.weight.copy_(ref.weight)
        ours.bias.copy_(torch.randn_like(ref.bias))
        ref.bias.copy_(ours.bias)
    x = torch.randn(5, 4, Irreps(irreps_in).dim)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="f_in=4"):
        ours(torch.randn(5, 2, Irreps(irreps_in).dim))


def test_instructions_masks_and_weight_views_match_e3nn(float64_default):
    args = ("4x0e + 3x1o + 2x0e + 1e", "2x1o + 8x0e + 2e")
    ours, ref = Linear(*args), o3.Linear(*args)
    assert [tuple(i) for i in ours.instructions] == [tuple(i) for i in ref.instructions]
    assert torch.equal(ours.output_mask, ref.output_mask)
    with torch.no_grad():
        ours.weight.copy_(ref.weight)
    for index in range(len(ours.instructions)):
        assert torch.equal(ours.weight_view_for_instruction(index), ref.weight_view_for_instruction(index))
    views = list(ours.weight_views(yield_instruction=True))
    assert [(i, tuple(ins)) for i, ins, _ in views] == [
        (i, tuple(ins)) for i, ins, _ in ref.weight_views(yield_instruction=True)
    ]
    with torch.no_grad():  # the views write into the weights
        for view in ours.weight_views():
            view.fill_(2.0)
    assert torch.all(ours.weight == 2.0)
    unshared = Linear(*args, shared_weights=False)
    w = torch.randn(7, unshared.weight_numel)
    assert unshared.weight_view_for_instruction(1, w).shape == (7, 3, 2)
    with pytest.raises(ValueError, match="no internal weights"):
        unshared.weight_view_for_instruction(0)


def test_out_of_range_instruction_is_an_index_error():
    with pytest.raises(IndexError, match=r"instruction \(4, 0\): index out of range"):
        Linear("4x0e + 3x4o", "1x2e + 4x0e", instructions=[(4, 0)])
