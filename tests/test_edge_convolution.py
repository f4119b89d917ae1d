"""EdgeConvolution: equals the per-edge TensorProduct summed by hand, and is equivariant."""

import pytest
import torch

from equitensor import (
    EdgeConvolution,
    FullyConnectedTensorProduct,
    Irreps,
    TensorProduct,
    spherical_harmonics,
)
from equitensor.testing import assert_equivariant
from equitensor.tp import edge_product_irreps


def random_graph(num_nodes: int, num_edges: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    vectors = torch.randn(num_edges, 3, generator=g, dtype=torch.float64)
    return edge_index, vectors


def test_matches_explicit_per_edge_products():
    conv = EdgeConvolution("4x0e+4x1o", "0e+1o+2e", "0e+1o+2e+1e")
    edge_index, vectors = random_graph(6, 20)
    x = torch.randn(6, conv.irreps_node.dim, dtype=torch.float64)
    w = torch.randn(20, conv.weight_numel, dtype=torch.float64)
    out = conv(x, vectors, w, edge_index)
    irreps_out, instructions = edge_product_irreps(conv.irreps_node, conv.irreps_sh, "0e+1o+2e+1e")
    tp = TensorProduct(conv.irreps_node, conv.irreps_sh, irreps_out, instructions, shared_weights=False)
    expected = torch.zeros_like(out)
    for e, (j, i) in enumerate(edge_index.T):
        sh = spherical_harmonics(conv.irreps_sh, vectors[e], normalize=True, normalization="component")
        expected[i] += tp(x[j], sh, w[e])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert conv.irreps_out == irreps_out


@pytest.mark.parametrize("backend", ["cg", "so2"])
def test_isolated_nodes_get_zeros_and_no_edges_work(backend):
    conv = EdgeConvolution("2x0e+2x1o", "0e+1o", backend=backend)
    x = torch.randn(3, conv.irreps_node.dim, dtype=torch.float64)
    empty = conv(
        x,
        torch.zeros(0, 3, dtype=torch.float64),
        torch.zeros(0, conv.weight_numel, dtype=torch.float64),
        torch.zeros(2, 0, dtype=torch.long),
    )
    assert empty.shape == (3, conv.irreps_out.dim) and empty.abs().max() == 0


def test_equivariant_under_rotations_and_reflections():
    conv = EdgeConvolution("3x0e+3x1o+2x2e", Irreps.spherical_harmonics(3))
    edge_index, _ = random_graph(5, 12, seed=1)
    w = torch.randn(12, conv.weight_numel, dtype=torch.float64)
    x = conv.irreps_node.randn(5, -1, dtype=torch.float64)
    v = torch.randn(12, 3, dtype=torch.float64)
    assert_equivariant(
        lambda x, v: conv(x, v, w, edge_index), [conv.irreps_node, "1o"], conv.irreps_out, args_in=[x, v]
    )


def test_unknown_backend_is_named():
    with pytest.raises(ValueError, match="'nope'"):
        EdgeConvolution("2x0e", "0e+1o", backend="nope")


def test_so2_backend_matches_explicit_per_edge_products():
    cg = EdgeConvolution("4x0e+4x1o", "0e+1o+2e", "0e+1o+2e+1e")
    so2 = EdgeConvolution("4x0e+4x1o", "0e+1o+2e", "0e+1o+2e+1e", backend="so2")
    edge_index, vectors = random_graph(6, 20)
    x = torch.randn(6, cg.irreps_node.dim, dtype=torch.float64)
    w = torch.randn(20, cg.weight_numel, dtype=torch.float64)
    torch.testing.assert_close(
        so2(x, vectors, w, edge_index), cg(x, vectors, w, edge_index), rtol=1e-12, atol=1e-12
    )
    assert so2.irreps_out == cg.irreps_out and so2.weight_numel == cg.weight_numel


def test_so2_state_dict_interchangeable_with_cg():
    cg = EdgeConvolution("2x0e+2x1o", "0e+1o")
    so2 = EdgeConvolution("2x0e+2x1o", "0e+1o", backend="so2")
    assert set(cg.state_dict()) == set(so2.state_dict())


def _values_and_derivatives(conv, x, vectors, w, edge_index):
    """Output, first derivatives and a second derivative (through the force-like gradient)."""
    out = conv(x, vectors, w, edge_index)
    probe = torch.randn_like(out, generator=torch.Generator().manual_seed(1))
    gx, gv, gw = torch.autograd.grad((out * probe).sum(), [x, vectors, w], create_graph=True)
    (second,) = torch.autograd.grad(gv.square().sum(), [w])
    return [out, gx, gv, gw, second]


def test_cpu_chunks_of_edges_give_the_same_numbers(monkeypatch):
    """On CPU the cg backend computes the edges (and a plain product's rows) in chunks; with
    chunks of a few rows every value and derivative equals the all-rows-at-once result."""
    from equitensor.tp.backends import cg

    conv = EdgeConvolution("3x0e+3x1o+3x2e", "0e+1o+2e", "0e+1o+2e+1e")
    edge_index, vectors = random_graph(7, 40)
    x = torch.randn(7, conv.irreps_node.dim, dtype=torch.float64, requires_grad=True)
    w = torch.randn(40, conv.weight_numel, dtype=torch.float64, requires_grad=True)
    vectors.requires_grad_(True)
    whole = _values_and_derivatives(conv, x, vectors, w, edge_index)
    tp = FullyConnectedTensorProduct("3x0e+3x1o", "0e+1o+2e", "2x0e+2x1o+2x2e")  # shared, uvw
    x1 = torch.randn(30, tp.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(30, tp.irreps_in2.dim, dtype=torch.float64)
    tp_whole = tp.double()(x1, x2)
    assert conv.product.executor.rows_per_chunk(x) >= 40  # the default takes all rows at once here
    monkeypatch.setattr(cg, "CPU_CHUNK_BYTES", 7 * 8 * 60)  # a few rows per chunk
    assert 1 < conv.product.executor.rows_per_chunk(x) < 40
    assert tp.executor.rows_per_chunk(x1) < 30
    chunked = _values_and_derivatives(conv, x, vectors, w, edge_index)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tp(x1, x2), tp_whole, rtol=1e-12, atol=1e-12)
