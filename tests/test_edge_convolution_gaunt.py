"""EdgeConvolution on the gaunt and grid backends: exactly the edge-form specs (every path even,
one path per output degree, every even coupling of the used degrees a path), equal to cg in
values and derivatives with the same weights, equivariant, seen by auto and expressivity; every
other spec refused naming its paths and reasons."""

from __future__ import annotations

import pytest
import torch
from tp_helpers import first_call, relative_error

from equitensor import EdgeConvolution, TensorProduct, expressivity
from equitensor.testing import assert_equivariant
from equitensor.tp.backends import auto, backend_capabilities, backends_for, make_executor

pytestmark = pytest.mark.usefixtures("one_thread")

BACKENDS = ["gaunt", "grid"]

VALID = [
    ("4x0e", "0e+1o+2e+3o", None),  # MACE's first layer: scalar nodes x SH(l <= 3)
    ("4x1o", "1o", "0e+2e"),
    ("3x2e", "2e", "0e+2e+4e"),
    ("3x1e", "0e+1o", "0o+1e"),  # pseudo-vector nodes: parities do not matter, degrees do
]

INVALID = [
    # (node, SH, target, a phrase the refusal must contain)
    ("4x0e+4x1o", "0e+1o+2e", None, "also reach output degree 1"),
    ("4x1o", "1o", None, "l1+l2+l3 is odd"),
    ("2x0e+2x2e", "2e", "2e", "also reach output degree 2"),
]


def random_graph(nodes: int, edges: int, seed: int = 0):
    """Random senders/receivers (node ``nodes - 1`` isolated), edge vectors and a generator."""
    generator = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(nodes - 1, (2, edges), generator=generator)
    vectors = torch.randn(edges, 3, generator=generator, dtype=torch.float64)
    return edge_index, vectors, generator


def inputs(conv: EdgeConvolution, nodes: int = 6, edges: int = 17, seed: int = 0):
    edge_index, vectors, generator = random_graph(nodes, edges, seed)
    x = torch.randn(nodes, conv.irreps_node.dim, generator=generator, dtype=torch.float64)
    w = torch.randn(edges, conv.weight_numel, generator=generator, dtype=torch.float64)
    return x, vectors, w, edge_index


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("node, sh, target", VALID)
def test_equals_cg_in_float64_and_float32(node, sh, target, backend):
    cg = EdgeConvolution(node, sh, target, backend="cg")
    conv = EdgeConvolution(node, sh, target, backend=backend)
    assert conv.irreps_out == cg.irreps_out and conv.weight_numel == cg.weight_numel
    x, vectors, w, edge_index = inputs(cg)
    expected = cg(x, vectors, w, edge_index)
    assert expected.abs().max() > 0 and expected[-1].abs().max() == 0  # the isolated node
    assert relative_error(first_call(conv, x, vectors, w, edge_index), expected) < 1e-10
    got32 = conv(x.float(), vectors.float(), w.float(), edge_index)
    assert got32.dtype == torch.float32 and relative_error(got32, expected) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("node, sh, target", VALID[:2])
def test_first_and_second_derivatives_equal_cg(node, sh, target, backend):
    """Gradients for node features, edge vectors and weights; and the gradient of the
    vector-gradient (what force training differentiates) for all three."""
    cg = EdgeConvolution(node, sh, target, backend="cg")
    conv = EdgeConvolution(node, sh, target, backend=backend)
    x, vectors, w, edge_index = (t.requires_grad_() if t.is_floating_point() else t for t in inputs(cg))
    leaves = (x, vectors, w)

    def derivatives(module: EdgeConvolution) -> list[torch.Tensor]:
        out = module(x, vectors, w, edge_index)
        cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
        first = torch.autograd.grad(out, leaves, cotangent, create_graph=True)
        probe = torch.randn(vectors.shape, generator=torch.Generator().manual_seed(8), dtype=out.dtype)
        second = torch.autograd.grad(first[1], leaves, probe, allow_unused=True)
        return [*first, *second]

    for got, expected in zip(derivatives(conv), derivatives(cg)):
        assert expected.abs().max() > 0
        assert relative_error(got, expected) < 1e-10


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("node, sh, target", VALID)
def test_equivariant_under_rotations_and_reflections(node, sh, target, backend):
    conv = EdgeConvolution(node, sh, target, backend=backend)
    x, vectors, w, edge_index = inputs(conv, nodes=5, edges=12, seed=1)
    assert_equivariant(
        lambda x, v: first_call(conv, x, v, w, edge_index),
        [conv.irreps_node, "1o"],
        conv.irreps_out,
        args_in=[x, vectors],
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_edges_gives_zeros(backend):
    conv = EdgeConvolution("2x1o", "1o", "0e+2e", backend=backend)
    out = conv(
        torch.randn(3, conv.irreps_node.dim, dtype=torch.float64),
        torch.zeros(0, 3, dtype=torch.float64),
        torch.zeros(0, conv.weight_numel, dtype=torch.float64),
        torch.zeros(2, 0, dtype=torch.long),
    )
    assert out.shape == (3, conv.irreps_out.dim) and out.abs().max() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_shared_weights_through_tensor_product_equal_cg(backend):
    """The same executor behind TensorProduct with one weight vector shared by the batch."""
    paths = [(1, 0, 0, "uvu", True), (0, 0, 1, "uvu", True), (1, 0, 2, "uvu", True)]
    args = ("3x0e+3x1o", "1x1o", "3x0e+3x1o+3x2e", paths)
    cg = TensorProduct(*args, backend="cg").double()
    other = TensorProduct(*args, backend=backend).double()
    other.load_state_dict(cg.state_dict())
    x1 = cg.irreps_in1.randn(5, -1, dtype=torch.float64)
    x2 = cg.irreps_in2.randn(5, -1, dtype=torch.float64)
    assert relative_error(first_call(other, x1, x2), cg(x1, x2)) < 1e-10


def test_grid_resolution_options_reach_the_kernel():
    with pytest.raises(ValueError, match="below the exact"):
        EdgeConvolution("2x0e", "0e+1o+2e", backend="grid", resolution=(2, 2))
    coarse = EdgeConvolution("2x0e", "0e+1o+2e", backend="grid", resolution=(2, 2), allow_approximate=True)
    kernel = coarse.product.executor.kernel
    assert not kernel.exact and kernel.approximation_error > 0


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("node, sh, target, phrase", INVALID)
def test_refusals_name_every_path_and_the_reason(node, sh, target, phrase, backend):
    conv = EdgeConvolution(node, sh, target)
    with pytest.raises(ValueError, match=f"backend '{backend}' cannot compute") as info:
        EdgeConvolution(node, sh, target, backend=backend)
    message = str(info.value)
    assert phrase in message and "As an edge convolution" in message
    for index in range(len(conv.spec.instructions)):
        assert f"path {index} (" in message
    fit = expressivity(conv)[backend]
    assert fit.status == "no" and fit.paths_not_expressible == tuple(range(len(conv.spec.instructions)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_refuses_a_missing_coupling_and_a_multichannel_second_input(backend):
    # 0e x 2e -> 2e and 2e x 2e -> 4e, but the product also couples 2e x 2e -> 2e
    missing = TensorProduct(
        "3x0e+3x2e",
        "1x2e",
        "3x2e+3x4e",
        [(0, 0, 0, "uvu", True), (1, 0, 1, "uvu", True)],
        shared_weights=False,
    )
    with pytest.raises(ValueError, match=r"also couples degrees 2 x 2 -> 2, which is not a path"):
        make_executor(backend, missing.spec)
    two_channels = TensorProduct("3x0e", "2x1o", "3x1o", [(0, 0, 0, "uvu", True)], shared_weights=False)
    with pytest.raises(ValueError, match=r"path 0 .*second input block has multiplicity 2"):
        make_executor(backend, two_channels.spec)


# ---------------------------------------------------------------- records, expressivity, auto


def test_records_list_edge_convolution_and_expressivity_sees_it():
    conv = EdgeConvolution("4x0e", "0e+1o+2e+3o")
    report = expressivity(conv)
    for backend in BACKENDS:
        assert "edge_convolution" in backend_capabilities(backend).operations
        assert backend in report.exact and report[backend].limitations == ()


@pytest.fixture
def fresh_auto(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path))
    monkeypatch.delenv(auto.FORCE_ENV, raising=False)
    monkeypatch.setattr(auto, "MEASURE_BATCH", 16)
    auto.clear_memory_cache()
    yield
    auto.clear_memory_cache()


@pytest.mark.parametrize("winner", BACKENDS)
def test_auto_measures_gaunt_and_grid_for_a_valid_spec(fresh_auto, monkeypatch, winner):
    """Injected times make ``winner`` the fastest; each candidate still runs once."""
    calls = []

    def fake_measure(step, device):
        step()
        calls.append(step)
        return 1e-6 if len(calls) - 1 == candidates.index(winner) else 1.0

    candidates, excluded = auto.candidate_backends(
        "edge_convolution",
        EdgeConvolution("2x1o", "1o", "0e+2e").spec,
        torch.device("cpu"),
        torch.float64,
        backends_for("edge_convolution"),
    )
    assert {"cg", "so2", "gaunt", "grid"} <= set(candidates) and "cp" in excluded
    monkeypatch.setattr(auto, "measure", fake_measure)
    conv = EdgeConvolution("2x1o", "1o", "0e+2e", backend="auto")
    cg = EdgeConvolution("2x1o", "1o", "0e+2e", backend="cg")
    x, vectors, w, edge_index = inputs(cg)
    out = first_call(conv, x, vectors, w, edge_index)
    assert conv.backend == winner and list(conv.backend_choice.candidates) == candidates
    assert len(calls) == len(candidates)
    assert relative_error(out, cg(x, vectors, w, edge_index)) < 1e-10


def test_auto_excludes_gaunt_and_grid_for_an_invalid_spec():
    candidates, excluded = auto.candidate_backends(
        "edge_convolution",
        EdgeConvolution("2x0e+2x1o", "0e+1o").spec,
        torch.device("cpu"),
        torch.float64,
        backends_for("edge_convolution"),
    )
    for backend in BACKENDS:
        assert backend not in candidates
        assert excluded[backend].startswith("cannot compute this spec exactly: path 0 (")
