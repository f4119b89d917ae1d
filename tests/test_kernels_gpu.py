"""The CUDA kernels against cg and against their CPU reference ops (GPU only): the fused edge
convolution (``cuda`` backend) and ``equitensor::sparse_contract`` (``sparse`` backend on a GPU).

Marked ``gpu`` (run with ``-m gpu``); every test skips with the reason when there is no CUDA GPU
or no CuPy. Tolerances are relative to the largest magnitude of the reference: float64 1e-11,
float32 1e-5 (values, first derivatives) and 1e-4 (second derivatives, which sum more terms).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from kernels_helpers import CONFIGS, random_graph, random_inputs
from test_kernels_cpu_ops import first_and_second_derivatives, fused, sh_of

from equitensor import EdgeConvolution
from equitensor.kernels.compile import KernelUnavailableError
from equitensor.kernels.edge_conv import mul_ir_to_ir_mul, require_gpu
from equitensor.kernels.edge_conv_ops import edge_conv_bwd, edge_conv_fwd, edge_csr
from equitensor.kernels.edge_conv_plan import plan_key


def _why_no_gpu() -> str | None:
    try:
        require_gpu()
    except KernelUnavailableError as error:
        return str(error)
    return None


WHY = _why_no_gpu()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(WHY is not None, reason=f"no GPU run possible: {WHY}")]
MODES = pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "csr"])
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
TOL = {torch.float32: (1e-5, 1e-4), torch.float64: (1e-11, 1e-11)}  # (first order, second order)

# channel counts below, at and above a warp, and not multiples of 32
GPU_CONFIGS = {
    **CONFIGS,
    "wide": ("40x0e+40x1o+40x2e", "0e+1o+2e+3o", "0e+1o+2e+3o"),
    "mace128": ("128x0e+128x1o", "0e+1o+2e+3o", "0e+1o+2e+3o"),
}


def gpu_conv(config: str) -> tuple[EdgeConvolution, str]:
    conv = EdgeConvolution(*GPU_CONFIGS[config])
    return conv, plan_key(conv.spec)


def assert_close(got, expected, rtol, name=""):
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(got, expected, rtol=rtol, atol=rtol * max(scale, 1e-30), msg=name)


@DTYPES
@MODES
@pytest.mark.parametrize("config", sorted(GPU_CONFIGS))
def test_values_and_derivatives_equal_cg(config, deterministic, dtype):
    """Forward, backward and double backward (a force-training chain) vs cg in float64 on the GPU."""
    conv, key = gpu_conv(config)
    nodes, edges = 23, 300
    edge_index = random_graph(nodes, edges, seed=1, device="cuda")
    inputs = random_inputs(conv, nodes, edges, dtype, seed=2, device="cuda")
    truth = random_inputs(conv, nodes, edges, torch.float64, seed=2, device="cuda")
    conv = conv.to("cuda")
    expected = first_and_second_derivatives(conv, *truth, edge_index, seed=3)
    got = first_and_second_derivatives(fused(conv, key, deterministic), *inputs, edge_index, seed=3)
    first, second = TOL[dtype]
    out_expected = conv(*truth, edge_index)
    out = fused(conv, key, deterministic)(*inputs, edge_index)
    assert_close(out.double(), out_expected, first, "forward")
    for name, a, b in zip(("dx", "dv", "dw", "d2x", "d2v", "d2w"), got, expected):
        assert_close(a.double(), b, first if name[1] != "2" else second, name)


@DTYPES
@MODES
@pytest.mark.parametrize("config", ["mixed", "wide"])
def test_kernels_equal_cpu_ops(config, deterministic, dtype):
    """Op level: the CUDA implementation of each op (every gradient mask) equals its CPU reference."""
    conv, key = gpu_conv(config)
    nodes, edges = 17, 150
    edge_index = random_graph(nodes, edges, seed=4)
    x, v, w = random_inputs(conv, nodes, edges, dtype, seed=5)
    x = mul_ir_to_ir_mul(x, conv.irreps_node)
    sh = sh_of(conv, v)
    g = torch.randn(nodes, conv.irreps_out.dim, dtype=dtype)
    csr = edge_csr(edge_index, nodes) if deterministic else edge_index.new_empty(0)
    cpu_args = (x, sh, w, edge_index, csr, key)
    gpu_args = tuple(a.cuda() if isinstance(a, torch.Tensor) else a for a in cpu_args)
    rtol = TOL[dtype][0]
    assert_close(edge_conv_fwd(*gpu_args).cpu(), edge_conv_fwd(*cpu_args), rtol, "fwd")
    for mask in range(1, 8):
        cpu = edge_conv_bwd(x, sh, w, g, edge_index, csr, key, mask)
        gpu = edge_conv_bwd(*gpu_args[:3], g.cuda(), *gpu_args[3:], mask)
        for name, a, b in zip(("gx", "gsh", "gw"), gpu, cpu):
            assert a.shape == b.shape, (mask, name)
            assert_close(a.cpu(), b, rtol, f"mask {mask} {name}")


@MODES
def test_empty_edge_list_and_isolated_nodes(deterministic):
    conv, key = gpu_conv("mixed")
    x, v, w = (t.requires_grad_() for t in random_inputs(conv, 5, 0, torch.float64, seed=6, device="cuda"))
    edge_index = torch.zeros(2, 0, dtype=torch.long, device="cuda")
    out = fused(conv, key, deterministic)(x, v, w, edge_index)
    assert out.shape == (5, conv.irreps_out.dim) and out.abs().max() == 0
    gx, gv, gw = torch.autograd.grad(out.sum(), (x, v, w))
    assert gx.abs().max() == 0 and gv.shape == (0, 3) and gw.shape == (0, conv.weight_numel)
    # no nodes at all
    none = fused(conv, key, deterministic)(x[:0], v, w, edge_index)
    assert none.shape == (0, conv.irreps_out.dim)


def test_deterministic_mode_is_bitwise_reproducible():
    conv, key = gpu_conv("wide")
    nodes, edges = 300, 20000  # ~67 edges per receiver, so atomics would reorder sums
    edge_index = random_graph(nodes, edges, seed=7, device="cuda")
    inputs = [
        t.requires_grad_() for t in random_inputs(conv, nodes, edges, torch.float32, seed=8, device="cuda")
    ]
    function = fused(conv, key, True)
    runs = []
    for _ in range(3):
        out = function(*inputs, edge_index)
        runs.append([out, *torch.autograd.grad((out * out).sum(), inputs)])
    for later in runs[1:]:
        for a, b in zip(runs[0], later):
            assert torch.equal(a, b)


def test_module_backend_cuda_equals_cg_and_checks_indices():
    conv_cg = EdgeConvolution(*GPU_CONFIGS["mace128"]).cuda()
    conv = EdgeConvolution(*GPU_CONFIGS["mace128"], backend="cuda").cuda()
    edge_index = random_graph(20, 200, seed=9, device="cuda")
    inputs = random_inputs(conv, 20, 200, torch.float64, seed=10, device="cuda")
    assert_close(conv(*inputs, edge_index), conv_cg(*inputs, edge_index), 1e-11)
    with pytest.raises(IndexError, match="20 nodes"):
        conv(*inputs, torch.full_like(edge_index, 20))


@pytest.mark.parametrize(
    "backend, product_backend", [("cuda", "cg"), ("sparse", "sparse"), ("cuda", "sparse")]
)
def test_force_hessian_is_symmetric_and_equals_cg(backend, product_backend):
    """A small MACE on the kernels (the fused cuda edge convolution, or the sparse kernels for the
    edge convolution and the product basis): forces from their backward, the Hessian dF_i/dr_j
    from their double backward. It must be symmetric (conservative forces) and equal the cg
    model's Hessian with the same weights."""
    from ase.build import molecule

    from equitensor.datasets.atoms_to_graph import graph_from_atoms
    from equitensor.models import MACE

    kwargs = dict(
        atomic_numbers=[1, 6, 8],
        r_max=3.0,
        max_ell=3,
        num_channels=8,
        max_L=2,
        num_interactions=2,
        correlation=3,
        radial_MLP=[16, 16],
        avg_num_neighbors=4.0,
    )
    torch.manual_seed(0)
    cg = MACE(**kwargs).double().cuda()
    cuda = MACE(**kwargs, backend=backend, product_backend=product_backend).double().cuda()
    cuda.load_state_dict(cg.state_dict())
    graph = graph_from_atoms(molecule("CH3CH2OH"), 3.0, torch.float64).to("cuda")

    def hessian(model):
        positions = graph.positions.detach().clone().requires_grad_()
        energy = model(replace(graph, positions=positions), compute_forces=False)["energy"].sum()
        forces = -torch.autograd.grad(energy, positions, create_graph=True)[0].flatten()
        rows = [torch.autograd.grad(f, positions, retain_graph=True)[0].flatten() for f in forces]
        return forces.detach(), -torch.stack(rows)

    forces_cg, h_cg = hessian(cg)
    forces, h = hessian(cuda)
    assert_close(forces, forces_cg, 1e-10, "forces")
    assert_close(h, h_cg, 1e-10, "hessian")
    assert_close(h, h.T, 1e-10, "hessian symmetry")


# ---------------------------------------------------------------- equitensor::sparse_contract


@DTYPES
@pytest.mark.parametrize("out_channels", [True, False], ids=["channelled-out", "summed-out"])
@pytest.mark.parametrize("scatter", [True, False], ids=["scatter", "rows"])
def test_sparse_contract_on_gpu_equals_cpu(scatter, out_channels, dtype):
    from test_sparse_backend import random_map

    from equitensor.kernels.sparse_contract import sparse_contract

    gen = torch.Generator().manual_seed(11)
    nodes, edges, c = 50, 900, 40  # channels above a warp, not a multiple of 32
    x = torch.randn(nodes, 4, c, generator=gen, dtype=dtype)
    y = torch.randn(edges, 3, generator=gen, dtype=dtype)
    w = torch.randn(edges, 2, c, generator=gen, dtype=dtype)
    sender = torch.randint(0, nodes, (edges,), generator=gen)
    receiver = torch.randint(0, nodes - 1, (edges,), generator=gen)  # the last node gets nothing
    components, coefficients = random_map(gen, [4, 3, 2, 6], 60)
    out_index, out_rows = (receiver, nodes) if scatter else (None, edges)
    args = ([x, y, w], [sender, None, None], out_index, out_rows, 6, c if out_channels else 0)
    cpu = sparse_contract(*args, components, coefficients)
    moved = (
        [t.cuda() for t in args[0]],
        [None if t is None else t.cuda() for t in args[1]],
        None if out_index is None else out_index.cuda(),
        *args[3:],
    )
    gpu = sparse_contract(*moved, components.cuda(), coefficients.cuda())
    assert_close(gpu.cpu(), cpu, TOL[dtype][0])
    with pytest.raises(ValueError, match="on cuda"):
        sparse_contract(
            [moved[0][0].cpu(), *moved[0][1:]], *moved[1:], components.cuda(), coefficients.cuda()
        )
    with pytest.raises(IndexError, match="out of range"):
        bad = [torch.full_like(sender, nodes).cuda(), None, None]
        sparse_contract(moved[0], bad, *moved[2:], components.cuda(), coefficients.cuda())


@DTYPES
def test_sparse_product_basis_on_gpu_equals_cg(dtype):
    """SymmetricContraction(backend='sparse') on the GPU: value, first and second derivatives
    (input and weights) against cg with the same weights, computed in float64."""
    from equitensor.nn import SymmetricContraction

    torch.manual_seed(0)
    args = ("32x0e+32x1o+32x2e", "32x0e+32x1o", 3, 4)
    cg = SymmetricContraction(*args, backend="cg").double().cuda()
    sparse = SymmetricContraction(*args, backend="sparse").cuda().to(dtype)
    sparse.load_state_dict(cg.state_dict())
    x = torch.randn(300, cg.irreps_in.dim, dtype=torch.float64, device="cuda")
    attrs = torch.nn.functional.one_hot(torch.arange(300, device="cuda") % 4, 4).double()

    def derivatives(module, x, attrs):
        x = x.clone().requires_grad_()
        out = module(x, attrs)
        params = list(module.parameters())
        first = torch.autograd.grad(out.sin().sum(), [x, *params], create_graph=True)
        second = torch.autograd.grad(first[0].square().sum(), [x, *params])
        return [out, *first, *second]

    expected = derivatives(cg, x, attrs)
    got = derivatives(sparse, x.to(dtype), attrs.to(dtype))
    first, second = TOL[dtype]
    for k, (a, b) in enumerate(zip(got, expected)):
        assert_close(a.double(), b, first if k <= len(got) // 2 else second, f"output {k}")


@DTYPES
@pytest.mark.parametrize("config", ["mace128", "wide"])
def test_sparse_edge_convolution_on_gpu_equals_cg(config, dtype):
    """EdgeConvolution(backend='sparse') on the GPU: the force-training chain against cg."""
    conv, _ = gpu_conv(config)
    if len({mul for mul, _ in conv.irreps_node}) > 1:
        pytest.skip("the sparse edge convolution needs one node multiplicity")
    sparse = EdgeConvolution(*GPU_CONFIGS[config], backend="sparse").cuda()
    conv = conv.cuda()
    nodes, edges = 23, 300
    edge_index = random_graph(nodes, edges, seed=1, device="cuda")
    inputs = random_inputs(conv, nodes, edges, dtype, seed=2, device="cuda")
    truth = random_inputs(conv, nodes, edges, torch.float64, seed=2, device="cuda")
    expected = first_and_second_derivatives(conv, *truth, edge_index, seed=3)
    got = first_and_second_derivatives(sparse, *inputs, edge_index, seed=3)
    first, second = TOL[dtype]
    assert_close(sparse(*inputs, edge_index).double(), conv(*truth, edge_index), first, "forward")
    for name, a, b in zip(("dx", "dv", "dw", "d2x", "d2v", "d2w"), got, expected):
        assert_close(a.double(), b, first if name[1] != "2" else second, name)


def test_sparse_without_edges_and_with_isolated_nodes():
    """Zero rows reach CuPy as 0-size DLPack tensors: zeros out, gradients of the right shapes."""
    conv = EdgeConvolution(*GPU_CONFIGS["mace128"], backend="sparse").cuda()
    x, v, w = (t.requires_grad_() for t in random_inputs(conv, 5, 0, torch.float64, seed=6, device="cuda"))
    edge_index = torch.zeros(2, 0, dtype=torch.long, device="cuda")
    out = conv(x, v, w, edge_index)
    assert out.shape == (5, conv.irreps_out.dim) and out.abs().max() == 0
    gx, gv, gw = torch.autograd.grad(out.sum(), (x, v, w))
    assert gx.abs().max() == 0 and gv.shape == (0, 3) and gw.shape == (0, conv.weight_numel)
