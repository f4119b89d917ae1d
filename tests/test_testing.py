"""The test helpers must pass equivariant functions and catch non-equivariant ones."""

import random

import pytest
import torch
from e3nn import o3

from equitensor.irreps import Irreps
from equitensor.testing import (
    FLOAT_TOLERANCE,
    assert_equivariant,
    assert_gradients,
    equivariance_error,
    random_irreps,
)


def cross(a, b):
    return torch.linalg.cross(a, b, dim=-1)


def test_cross_product_is_equivariant(dtype):
    errors = assert_equivariant(cross, ["1o", "1o"], "1e", dtype=dtype, ntrials=3)
    assert set(errors) == {(0, False), (1, False)}
    assert all(len(e) == 1 and e[0] < FLOAT_TOLERANCE[dtype] for e in errors.values())


def test_pseudovector_declared_as_vector_is_caught(dtype):
    # rotations are fine, only parity exposes the wrong declaration
    errors = equivariance_error(cross, ["1o", "1o"], "1o", dtype=dtype)
    assert errors[(0, False)][0] < FLOAT_TOLERANCE[dtype] < errors[(1, False)][0]
    with pytest.raises(AssertionError, match=r"(?s)tolerance.*parity_k=1") as info:
        assert_equivariant(cross, ["1o", "1o"], "1o", dtype=dtype)
    assert "parity_k=0" not in str(info.value)
    assert_equivariant(cross, ["1o", "1o"], "1o", dtype=dtype, do_parity=False)


def test_translated_output_is_caught(dtype):
    shift = torch.tensor([1.0, 0.0, 0.0], dtype=dtype)
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(lambda x: x + shift, "1o", "1o", dtype=dtype)


def test_linear_map_with_D_matrices_and_several_outputs(dtype):
    irreps = Irreps("3x0e + 2x1o + 1e + 2x2o")
    alpha = torch.randn(irreps.num_irreps, dtype=dtype)
    scale = torch.cat(
        [alpha[i].expand(ir.dim) for i, ir in enumerate(ir for mul, ir in irreps for _ in range(mul))]
    )

    def fn(x, y):
        # scaling each copy commutes with the block-diagonal D; also return the invariant norm
        return x * scale + y, (x * y).sum(-1, keepdim=True)

    errors = assert_equivariant(fn, [irreps, irreps], [irreps, "0e"], dtype=dtype)
    assert all(len(e) == 2 for e in errors.values())
    with pytest.raises(AssertionError, match="output 1"):
        assert_equivariant(fn, [irreps, irreps], [irreps, "0o"], dtype=dtype)


def test_cartesian_points_and_translation(dtype):
    def centered(pos):
        return pos - pos.mean(0)

    errors = assert_equivariant(centered, "cartesian_points", "1o", do_translation=True, dtype=dtype)
    assert set(errors) == {(0, False), (0, True), (1, False), (1, True)}
    assert_equivariant(
        lambda pos: pos.roll(1, 0), "cartesian_points", "cartesian_points", do_translation=True, dtype=dtype
    )
    assert_equivariant(lambda pos: pos, "cartesian_points", "1o", dtype=dtype)  # no translation by default
    with pytest.raises(AssertionError, match="did_translate=True"):
        assert_equivariant(lambda pos: pos, "cartesian_points", "1o", do_translation=True, dtype=dtype)


def test_args_in_dtype_and_untouched_args():
    x = Irreps("2x1o").randn(5, -1, dtype=torch.float64)
    errors = assert_equivariant(lambda v, c: c * v, ["2x1o", None], "2x1o", args_in=[x, 3.0])
    assert max(max(e) for e in errors.values()) < 1e-12
    with pytest.raises(ValueError, match="args_in"):
        equivariance_error(lambda v, c: c * v, ["2x1o", None], "2x1o")


def test_float32_compute_dtype_has_float32_tolerance():
    # an error of ~1e-5 passes in float32 (tol 1e-3) and fails in float64 (tol 1e-9)
    def noisy(x):
        return x + 1e-5 * torch.randn_like(x)

    assert_equivariant(noisy, "1o", "1o", dtype=torch.float32)
    with pytest.raises(AssertionError, match="tolerance 1.0e-09"):
        assert_equivariant(noisy, "1o", "1o", dtype=torch.float64)
    assert_equivariant(noisy, "1o", "1o", dtype=torch.float64, tolerance=1e-3)


def test_inputs_requiring_grad_reach_the_function():
    def force_like(pos):
        # -d/dpos of a rotation-invariant energy is a 1o vector field
        with torch.enable_grad():
            energy = (pos.norm(dim=-1) ** 3).sum()
            return -torch.autograd.grad(energy, pos)[0]

    pos = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert_equivariant(force_like, "cartesian_points", "1o", args_in=[pos])


def test_random_irreps():
    rng = random.Random(0)
    for _ in range(200):
        x = random_irreps(lmax=3, mul_max=4, len_max=5, rng=rng)
        irreps = Irreps(x)
        assert len(irreps) <= 5 and all(mul <= 4 and ir.l <= 3 for mul, ir in irreps)
        assert Irreps(random_irreps(clean=True, rng=rng)) is not None
        assert isinstance(random_irreps(clean=True, rng=rng), Irreps)
        assert Irreps(random_irreps(allow_empty=False, rng=rng)).dim > 0
    many = random_irreps(n=4, clean=True, rng=rng)
    assert len(many) == 4 and all(isinstance(i, Irreps) for i in many)
    kinds = {type(random_irreps(rng=rng)).__name__ for _ in range(60)}
    assert kinds == {"Irreps", "str", "list"}
    # e3nn accepts every form
    assert all(o3.Irreps(random_irreps(rng=rng)).dim >= 0 for _ in range(50))


# -- gradients -----------------------------------------------------------------------------------


class WrongBackward(torch.autograd.Function):
    """sin(x) whose backward claims d/dx = sin(x) instead of cos(x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.sin()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x.sin()


class WrongDoubleBackward(torch.autograd.Function):
    """x**2 with a correct first derivative 2x whose own derivative is wrong (computed as x**2)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * _TwoX.apply(x)


class _TwoX(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 2 * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * x  # should be 2


def test_assert_gradients_passes_on_smooth_functions(dtype):
    x, y = torch.randn(4, 3, dtype=dtype), torch.randn(4, 3, dtype=dtype)
    assert_gradients(lambda a, b: (torch.linalg.cross(a, b, dim=-1) * a.tanh()).sum(-1), x, y)
    assert_gradients(torch.nn.Linear(3, 2, dtype=dtype), x)
    assert x.dtype == dtype and not x.requires_grad  # inputs are not modified


def test_assert_gradients_catches_wrong_backward():
    x = torch.randn(5, dtype=torch.float32)
    with pytest.raises(AssertionError, match="gradcheck failed"):
        assert_gradients(WrongBackward.apply, x)
    assert_gradients(WrongDoubleBackward.apply, x, check_gradgrad=False)
    with pytest.raises(AssertionError, match="gradgradcheck failed"):
        assert_gradients(WrongDoubleBackward.apply, x)
