"""The so2 edge-convolution backend against the cg reference, finite differences and O(3) actions."""

import pytest
import torch
from tp_helpers import assert_compiled_inference_matches, relative_error

from equitensor import EdgeConvolution, Irreps
from equitensor.o3 import angles_to_matrix, rand_angles, wigner_D
from equitensor.testing import assert_equivariant
from equitensor.tp.backends.so2 import edge_frame_rotation, wigner_D_from_matrix

AXES = [[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [0, 0, 1.0], [0, 0, -1.0]]
# next to the poles +-y and across the chart boundary y = 0
NEAR_AXES = [[1e-9, 1.0, -2e-9], [3e-8, -2.0, 1e-8], [0.5, 1e-12, 0.3], [0.5, -1e-12, -0.3]]

# (node irreps, SH irreps, target filter); odd parities, several channels, L up to 3
CONFIGS = [
    ("4x0e+4x1o", "0e+1o+2e", None),
    ("3x0e+2x1o+2x2e+2x3o", Irreps.spherical_harmonics(3), None),
    ("2x0o+3x1e+2x2o+2x3e", "0e+1o+2e+3o", "0e+0o+1o+1e+2e+3o"),
    ("2x1o+1x3o", "1x0e+2x1o+1x2e", None),
    ("3x2e", "1e+3e", "1e+2e"),  # pseudovector harmonics
]


def graph(num_nodes: int, num_edges: int, dtype=torch.float64, seed: int = 0):
    """Random edges whose first six vectors are the +-x, +-y, +-z axes (scaled), then NEAR_AXES."""
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    vectors = torch.randn(num_edges, 3, generator=g, dtype=torch.float64)
    vectors[:6] = 1.7 * torch.tensor(AXES, dtype=torch.float64)
    near = min(len(NEAR_AXES), num_edges - 6)
    vectors[6 : 6 + near] = torch.tensor(NEAR_AXES[:near], dtype=torch.float64)
    return edge_index, vectors.to(dtype)


def inputs(conv: EdgeConvolution, num_nodes: int, num_edges: int, dtype=torch.float64, seed: int = 0):
    edge_index, vectors = graph(num_nodes, num_edges, dtype, seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(num_nodes, conv.irreps_node.dim, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(num_edges, conv.weight_numel, generator=g, dtype=torch.float64).to(dtype)
    return x, vectors, w, edge_index


def test_wigner_from_matrix_equals_wigner_D():
    angles = rand_angles(7, dtype=torch.float64)
    Ds = wigner_D_from_matrix(6, angles_to_matrix(*angles))
    for l, D in enumerate(Ds):
        torch.testing.assert_close(D, wigner_D(l, *angles), rtol=0, atol=1e-13)


def test_edge_frame_maps_y_onto_the_edge():
    vectors = torch.cat([torch.tensor(AXES, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)])
    vectors[-1, 1] = 0.0  # on the chart boundary
    R, nonzero = edge_frame_rotation(vectors)
    assert nonzero.all()
    unit = vectors / vectors.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(R[..., 1], unit, rtol=0, atol=1e-15)
    torch.testing.assert_close(
        R @ R.transpose(-1, -2), torch.eye(3).expand_as(R).double(), rtol=0, atol=1e-14
    )
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(len(R), dtype=torch.float64))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c[0]))
def test_equals_cg_with_gradients_float64(config):
    cg = EdgeConvolution(*config)
    so2 = EdgeConvolution(*config, backend="so2")
    assert so2.weight_numel == cg.weight_numel and so2.irreps_out == cg.irreps_out
    x, v, w, edge_index = inputs(cg, 5, 16)
    results = []
    for conv in (cg, so2):
        leaves = [t.clone().requires_grad_() for t in (x, v, w)]
        out = conv(leaves[0], leaves[1], leaves[2], edge_index)
        probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
        grads = torch.autograd.grad((out * probe).sum(), leaves)
        results.append((out, *grads))
    for name, a, b in zip(("output", "d/dx", "d/dvectors", "d/dweights"), results[1], results[0]):
        assert relative_error(a, b) < 1e-10, name


def test_equals_cg_float32():
    config = CONFIGS[1]
    cg = EdgeConvolution(*config)
    so2 = EdgeConvolution(*config, backend="so2")
    x, v, w, edge_index = inputs(cg, 6, 24, dtype=torch.float32)
    reference = cg(x.double(), v.double(), w.double(), edge_index)
    assert relative_error(so2(x, v, w, edge_index).double(), reference) < 1e-5
    assert relative_error(cg(x, v, w, edge_index).double(), reference) < 1e-5


def test_zero_length_edges_equal_cg():
    config = CONFIGS[0]
    cg, so2 = EdgeConvolution(*config), EdgeConvolution(*config, backend="so2")
    x, v, w, edge_index = inputs(cg, 4, 8)
    v[3] = 0.0
    out = so2(x, v, w, edge_index)
    assert relative_error(out, cg(x, v, w, edge_index)) < 1e-12
    v.requires_grad_()
    (grad,) = torch.autograd.grad(so2(x, v, w, edge_index).sum(), v)
    assert torch.isfinite(grad).all()


def test_second_derivatives_equal_cg_on_axis_edges():
    """d/dv of (forces . u): the force-training derivative, on edges along every axis."""
    config = ("2x0e+2x1o+1x2e", "0e+1o+2e", None)
    results = []
    for backend in ("cg", "so2"):
        conv = EdgeConvolution(*config, backend=backend)
        x, v, w, edge_index = inputs(conv, 4, 9)
        x, v, w = (t.requires_grad_() for t in (x, v, w))
        energy = (conv(x, v, w, edge_index) ** 2).sum()
        (forces,) = torch.autograd.grad(energy, v, create_graph=True)
        u = torch.randn(forces.shape, generator=torch.Generator().manual_seed(3), dtype=forces.dtype)
        results.append(torch.autograd.grad((forces * u).sum(), (x, v, w)))
    for a, b in zip(results[1], results[0]):
        assert relative_error(a, b) < 1e-10


def test_gradgradcheck_tiny():
    conv = EdgeConvolution("1x0e+1x1o+1x2e", "0e+1o+2e", "0e+1o+2e", backend="so2")
    edge_index = torch.tensor([[0, 1, 2, 1], [1, 2, 0, 0]])
    g = torch.Generator().manual_seed(0)
    v = torch.tensor(
        [[0.0, 1.3, 0.0], [0.0, 0.0, -0.8], [0.3, -0.9, 0.2], [0.5, 0.0, 0.4]], dtype=torch.float64
    )
    x = torch.randn(3, conv.irreps_node.dim, generator=g, dtype=torch.float64)
    w = torch.randn(4, conv.weight_numel, generator=g, dtype=torch.float64)
    args = tuple(t.requires_grad_() for t in (x, v, w))

    def fn(x, v, w):
        return conv(x, v, w, edge_index)

    # fast mode checks random projections of the Jacobians (the full check takes ~45 s here)
    assert torch.autograd.gradcheck(fn, args, fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


@pytest.mark.parametrize("mmax", [None, 0, 1])
def test_equivariant_under_rotations_and_reflections(mmax):
    conv = EdgeConvolution("2x0e+2x1o+2x2e+1x3o", Irreps.spherical_harmonics(3), backend="so2", mmax=mmax)
    x, v, w, edge_index = inputs(conv, 5, 12, seed=2)
    assert_equivariant(
        lambda x, v: conv(x, v, w, edge_index), [conv.irreps_node, "1o"], conv.irreps_out, args_in=[x, v]
    )


def test_mmax_truncation_is_an_approximation_unless_large():
    config = CONFIGS[1]
    cg = EdgeConvolution(*config)
    x, v, w, edge_index = inputs(cg, 5, 12)
    reference = cg(x, v, w, edge_index)
    exact = EdgeConvolution(*config, backend="so2", mmax=3)(x, v, w, edge_index)
    assert relative_error(exact, reference) < 1e-10
    truncated = EdgeConvolution(*config, backend="so2", mmax=1)(x, v, w, edge_index)
    assert relative_error(truncated, reference) > 1e-3
    # m = 0 only: the scalar outputs from scalar inputs and l=0 harmonics are untouched
    scalar_only = EdgeConvolution("3x0e", "0e+1o+2e", backend="so2", mmax=0)
    cg_scalar = EdgeConvolution("3x0e", "0e+1o+2e")
    x, v, w, edge_index = inputs(cg_scalar, 5, 12)
    assert relative_error(scalar_only(x, v, w, edge_index), cg_scalar(x, v, w, edge_index)) < 1e-10


@pytest.mark.parametrize("mmax", [None, 1])
def test_forces_match_finite_differences_on_axes_and_random_edges(mmax):
    conv = EdgeConvolution("2x0e+2x1o+2x2e", Irreps.spherical_harmonics(2), backend="so2", mmax=mmax)
    num_nodes, num_edges = 4, 9
    x, v, w, edge_index = inputs(conv, num_nodes, num_edges, seed=4)
    probe = torch.randn(num_nodes, conv.irreps_out.dim, generator=torch.Generator().manual_seed(9))

    def energies(vectors):  # (B, E, 3) -> (B,): B copies of the graph in one disjoint batch
        copies = vectors.shape[0]
        offsets = num_nodes * torch.arange(copies).repeat_interleave(num_edges)
        out = conv(
            x.repeat(copies, 1),
            vectors.reshape(-1, 3),
            w.repeat(copies, 1),
            edge_index.repeat(1, copies) + offsets,
        )
        return (out.reshape(copies, num_nodes, -1) * probe.double()).sum((1, 2))

    v.requires_grad_()
    (analytic,) = torch.autograd.grad(energies(v[None]).sum(), v)
    h = 1e-6
    steps = h * torch.eye(num_edges * 3, dtype=v.dtype).reshape(-1, num_edges, 3)
    v = v.detach()
    numeric = (energies(v + steps) - energies(v - steps)).reshape(num_edges, 3) / (2 * h)
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-7 * analytic.abs().max().item())


def test_mmax_only_with_so2_and_validated():
    with pytest.raises(ValueError, match="mmax"):
        EdgeConvolution("2x0e", "0e+1o", mmax=1)
    with pytest.raises(ValueError, match="mmax"):
        EdgeConvolution("2x0e", "0e+1o", backend="so2", mmax=-1)


@pytest.mark.slow  # inductor's C++ compile: ~50 s on a 2-core CPU
def test_torch_compile_inference():
    config = ("2x0e+2x1o", "0e+1o+2e", None)
    conv = EdgeConvolution(*config, backend="so2")
    assert_compiled_inference_matches(conv, inputs(conv, 4, 10))


def test_capability_record():
    from equitensor.tp.backends import backend_capabilities, make_executor
    from equitensor.tp.spec import TensorProductSpec

    record = backend_capabilities("so2")
    assert record.operations == ("edge_convolution",) and record.exact
    assert set(record.dtypes) == {torch.float32, torch.float64}
    conv = EdgeConvolution("2x0e+2x1o", "0e+1o", backend="so2")
    assert record.limitations(conv.product.spec) == []
    uvw = TensorProductSpec.build("2x1o", "1x1o", "3x0e", [(0, 0, 0, "uvw", True)])
    (limitation,) = record.limitations(uvw)
    assert limitation.instruction == 0 and "'uvw'" in limitation.reason
    with pytest.raises(ValueError, match="does not compute tensor_product"):
        make_executor("so2", conv.product.spec)
