"""The fused edge convolution's op graph (custom ops equitensor::edge_conv_fwd/bwd) on CPU.

The ops' CPU implementations are the plain-torch reference of what the CUDA kernels compute (same
layout, constants and CSR arrays), so values, first and second derivatives against the cg
EdgeConvolution, gradcheck to third order, opcheck (schema, fake, autograd registration) and
torch.compile are all checked here without a GPU. The GPU only has to show kernel == CPU op
(tests/test_kernels_gpu.py).
"""

from __future__ import annotations

import pytest
import torch
from kernels_helpers import CONFIGS, cg_conv, random_graph, random_inputs

from equitensor import EdgeConvolution, spherical_harmonics
from equitensor.kernels.compile import KernelUnavailableError
from equitensor.kernels.edge_conv import fused_edge_convolution, ir_mul_to_mul_ir, mul_ir_to_ir_mul
from equitensor.kernels.edge_conv_ops import edge_conv_bwd, edge_conv_fwd, edge_csr
from equitensor.kernels.edge_conv_plan import plan_from_key, plan_key
from equitensor.tp.backends import backend_capabilities, backends_for
from equitensor.tp.backends.auto import candidate_backends
from equitensor.tp.spec import TensorProductSpec

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors (conftest)
MODES = pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "csr"])


def sh_of(conv: EdgeConvolution, v: torch.Tensor) -> torch.Tensor:
    return spherical_harmonics(conv.irreps_sh, v, normalize=True, normalization="component")


def fused(conv, key, deterministic):
    """``(x, v, w, edge_index) -> out`` through the custom ops, SH computed as cg does."""
    plan = plan_from_key(key)
    return lambda x, v, w, edge_index: fused_edge_convolution(
        plan, x, sh_of(conv, v), w, edge_index, deterministic=deterministic
    )


@MODES
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_forward_equals_cg(config, deterministic):
    conv, key = cg_conv(config)
    edge_index = random_graph(7, 30, seed=1)
    x, v, w = random_inputs(conv, 7, 30, torch.float64, seed=2)
    expected = conv(x, v, w, edge_index)
    out = fused(conv, key, deterministic)(x, v, w, edge_index)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12 * expected.abs().max().item())
    assert out[-1].abs().max() == 0  # the last node has no edge


@MODES
def test_float32_forward_equals_cg(deterministic):
    conv, key = cg_conv("mace")
    edge_index = random_graph(6, 25, seed=3)
    inputs = random_inputs(conv, 6, 25, torch.float32, seed=4)
    expected = conv(*(t.double() for t in inputs), edge_index)
    out = fused(conv, key, deterministic)(*inputs, edge_index)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@MODES
def test_no_edges(deterministic):
    conv, key = cg_conv("mixed")
    x, v, w = (t.requires_grad_() for t in random_inputs(conv, 4, 0, torch.float64, seed=5))
    edge_index = torch.zeros(2, 0, dtype=torch.long)
    out = fused(conv, key, deterministic)(x, v, w, edge_index)
    assert out.shape == (4, conv.irreps_out.dim) and out.abs().max() == 0
    gx, gv, gw = torch.autograd.grad(out.sum(), (x, v, w))
    assert gx.abs().max() == 0 and gv.shape == (0, 3) and gw.shape == (0, conv.weight_numel)


def first_and_second_derivatives(function, x, v, w, edge_index, seed: int):
    """A force-training-like chain: E = sum(c * out^2); F = -dE/dv; L = sum(d * F) + sum(dE/dx);
    returns (dE/dx, dE/dv, dE/dw, dL/dx, dL/dv, dL/dw)."""
    g = torch.Generator().manual_seed(seed)
    x, v, w = (t.detach().clone().requires_grad_() for t in (x, v, w))
    out = function(x, v, w, edge_index)
    # drawn in float64 then cast: float32 and float64 runs get the same numbers
    c = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device, out.dtype)
    energy = (c * out * out).sum()
    first = torch.autograd.grad(energy, (x, v, w), create_graph=True)
    d = torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.device, v.dtype)
    loss = (d * -first[1]).sum() + first[0].sum()
    second = torch.autograd.grad(loss, (x, v, w))
    return [t.detach() for t in first] + list(second)


@MODES
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_first_and_second_derivatives_equal_cg(config, deterministic):
    conv, key = cg_conv(config)
    edge_index = random_graph(6, 20, seed=6)
    inputs = random_inputs(conv, 6, 20, torch.float64, seed=7)
    expected = first_and_second_derivatives(conv, *inputs, edge_index, seed=8)
    got = first_and_second_derivatives(fused(conv, key, deterministic), *inputs, edge_index, seed=8)
    for name, a, b in zip(("dx", "dv", "dw", "d2x", "d2v", "d2w"), got, expected):
        scale = b.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11 * scale, msg=name)


@MODES
def test_gradcheck_to_third_order(deterministic):
    """Finite differences of the op graph itself (SH as a free input): the autograd formulas of
    edge_conv_fwd and edge_conv_bwd (whose backward is built from both ops) to third order."""
    conv, key = cg_conv("mixed")
    edge_index = random_graph(4, 7, seed=9)
    x, _, w = random_inputs(conv, 4, 7, torch.float64, seed=10)
    sh = torch.randn(7, conv.irreps_sh.dim, dtype=torch.float64)
    plan = plan_from_key(key)
    inputs = tuple(t.requires_grad_() for t in (x, sh, w))

    def f(x, sh, w):
        return fused_edge_convolution(plan, x, sh, w, edge_index, deterministic=deterministic)

    def grads(x, sh, w):
        return torch.autograd.grad((f(x, sh, w) ** 2).sum(), (x, sh, w), create_graph=True)

    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(f, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(grads, inputs, fast_mode=True)


@MODES
def test_opcheck(deterministic):
    """torch.library.opcheck: schema, fake (meta) implementation, autograd registration."""
    conv, key = cg_conv("mixed")
    edge_index = random_graph(5, 9, seed=11)
    x, _, w = random_inputs(conv, 5, 9, torch.float64, seed=12)
    x = mul_ir_to_ir_mul(x, conv.irreps_node)
    sh = torch.randn(9, conv.irreps_sh.dim, dtype=torch.float64)
    g = torch.randn(5, conv.irreps_out.dim, dtype=torch.float64)
    csr = edge_csr(edge_index, 5) if deterministic else edge_index.new_empty(0)
    torch.library.opcheck(edge_conv_fwd, (x, sh, w, edge_index, csr, key))
    torch.library.opcheck(edge_conv_fwd, (x.requires_grad_(), sh.requires_grad_(), w, edge_index, csr, key))
    for mask in (1, 2, 4, 7):
        torch.library.opcheck(edge_conv_bwd, (x, sh, w, g.requires_grad_(), edge_index, csr, key, mask))


def test_compile_traces_with_fake_impls():
    """torch.compile (fullgraph, AOT autograd on the fake impls) of the forward and the gradient."""
    conv, key = cg_conv("mixed")
    edge_index = random_graph(5, 12, seed=13)
    x, v, w = random_inputs(conv, 5, 12, torch.float64, seed=14)

    def energy_and_grads(x, v, w):
        out = fused(conv, key, True)(x, v, w, edge_index)
        return out, torch.autograd.grad(out.pow(2).sum(), (x, v, w))

    function = fused(conv, key, True)
    compiled = torch.compile(
        lambda x, v, w: function(x, v, w, edge_index), backend="aot_eager", fullgraph=True
    )
    inputs = [t.requires_grad_() for t in (x, v, w)]
    out = compiled(*inputs)
    grads = torch.autograd.grad(out.pow(2).sum(), inputs)
    expected_out, expected_grads = energy_and_grads(*inputs)
    torch.testing.assert_close(out, expected_out, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, expected_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_edge_csr():
    edge_index = torch.tensor([[0, 2, 1, 2, 0], [1, 1, 0, 3, 1]])
    csr = edge_csr(edge_index, 5)
    recv_perm, send_perm, recv_ptr, send_ptr = csr[:5], csr[5:10], csr[10:16], csr[16:]
    assert recv_perm.tolist() == [2, 0, 1, 4, 3]  # stable: edges 0, 1, 4 of receiver 1 in order
    assert recv_ptr.tolist() == [0, 1, 4, 4, 5, 5]
    assert send_perm.tolist() == [0, 4, 2, 1, 3]
    assert send_ptr.tolist() == [0, 2, 3, 5, 5, 5]


def test_bad_arguments_are_named():
    conv, key = cg_conv("mixed")
    edge_index = random_graph(4, 6, seed=15)
    x, v, w = random_inputs(conv, 4, 6, torch.float64, seed=16)
    with pytest.raises(ValueError, match="weight has shape"):
        fused_edge_convolution(plan_from_key(key), x, sh_of(conv, v), w[:, :-1], edge_index)
    with pytest.raises(ValueError, match="csr must be"):
        edge_conv_fwd(x, sh_of(conv, v), w, edge_index, edge_index.new_zeros(3), key)


def test_layout_round_trip():
    conv, _ = cg_conv("mixed")
    x = torch.randn(3, conv.irreps_node.dim)
    y = mul_ir_to_ir_mul(x, conv.irreps_node)
    # block 1 is 3x1o: mul_ir element (u, m) -> ir_mul (m, u)
    assert y[1, 2 + 1 * 3 + 2] == x[1, 2 + 2 * 3 + 1]
    assert torch.equal(ir_mul_to_mul_ir(y, conv.irreps_node), x)


def test_unsupported_products_are_refused_by_name():
    spec = TensorProductSpec.build("2x1o", "1x1o", "2x1e", [(0, 0, 0, "uvw", True)])
    with pytest.raises(ValueError, match=r"path 0 .*'uvw'"):
        plan_key(spec)
    assert backend_capabilities("cuda").limitations(spec)
    spec2 = TensorProductSpec.build("2x0e", "2x0e", "2x0e", [(0, 0, 0, "uvu", True)])
    with pytest.raises(ValueError, match="multiplicity 2"):
        plan_key(spec2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without a GPU")
def test_cuda_backend_refuses_without_gpu_or_cupy():
    with pytest.raises(KernelUnavailableError, match="CuPy|CUDA GPU"):
        EdgeConvolution("2x0e+2x1o", "0e+1o", backend="cuda")


def test_cuda_backend_refuses_cpu_tensors(monkeypatch):
    import equitensor.kernels.edge_conv as edge_conv

    monkeypatch.setattr(edge_conv, "require_gpu", lambda: None)  # pretend CuPy and a GPU exist
    conv = EdgeConvolution("2x0e+2x1o", "0e+1o", backend="cuda", deterministic=True)
    assert conv.product.deterministic and conv.weight_numel == conv.spec.weight_numel
    x, v, w = random_inputs(conv, 3, 4, torch.float64, seed=17)
    with pytest.raises(KernelUnavailableError, match="node_feats on cpu"):
        conv(x, v, w, random_graph(3, 4, seed=18))


def test_auto_never_picks_cuda_here():
    conv, _ = cg_conv("mixed")
    devices = [torch.device("cpu")] + ([] if torch.cuda.is_available() else [torch.device("cuda")])
    for device in devices:
        candidates, excluded = candidate_backends(
            "edge_convolution", conv.spec, device, torch.float64, names=backends_for("edge_convolution")
        )
        assert "cuda" not in candidates and "cuda" in excluded, (device, excluded)
