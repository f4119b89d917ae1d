"""The 'sparse' backend (compiled C++ CPU kernel ``equitensor::sparse_contract``) against plain-torch
references and the cg backend: the raw op, the edge convolution, MACE's product basis and a whole
MACE (values, first and second derivatives, rotations and reflections), and its errors."""

import os
import subprocess
import sys

import pytest
import torch
from tp_helpers import first_call

from equitensor import rand_matrix, resolve_backends
from equitensor.irreps import Irreps
from equitensor.kernels.sparse_contract import sparse_contract
from equitensor.nn import SymmetricContraction
from equitensor.testing import assert_equivariant
from equitensor.tp import EdgeConvolution
from equitensor.tp.backends import backend_capabilities
from tests.test_mace import methanol, periodic_cell, tiny_mace


def dense_reference(inputs, indices, out_index, out_rows, out_dim, channels, components, coefficients):
    """The op's definition, term by term, in plain torch."""
    rows = [x if i is None else x[i] for x, i in zip(inputs, indices)]
    c = max([x.shape[2] for x in inputs if x.dim() == 3], default=max(channels, 1))
    shape = (out_rows, out_dim, channels) if channels else (out_rows, out_dim)
    out = inputs[0].new_zeros(shape)
    n = rows[0].shape[0]
    for term, coef in zip(components.tolist(), coefficients.tolist()):
        value = torch.full((n, c), coef, dtype=inputs[0].dtype)
        for x, k in zip(rows, term[:-1]):
            value = value * (x[:, k] if x.dim() == 3 else x[:, k, None])
        target = torch.arange(n) if out_index is None else out_index
        if channels:
            out[:, term[-1]] = out[:, term[-1]].index_add(0, target, value)
        else:
            out[:, term[-1]] = out[:, term[-1]].index_add(0, target, value.sum(1))
    return out


def random_map(gen, dims, terms):
    columns = [torch.randint(0, d, (terms,), generator=gen) for d in dims]
    return torch.stack(columns, 1).to(torch.int32), torch.randn(terms, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("out_channels", [True, False], ids=["channelled-out", "summed-out"])
@pytest.mark.parametrize("scatter", [True, False], ids=["scatter", "rows"])
def test_op_equals_its_definition_with_derivatives(out_channels, scatter):
    gen = torch.Generator().manual_seed(0)
    nodes, edges, c = 6, 17, 5
    x = torch.randn(nodes, 4, c, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(edges, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(edges, 2, c, generator=gen, dtype=torch.float64, requires_grad=True)
    sender = torch.randint(0, nodes, (edges,), generator=gen)
    receiver = torch.randint(0, nodes, (edges,), generator=gen)
    components, coefficients = random_map(gen, [4, 3, 2, 6], 13)
    out_index, out_rows = (receiver, nodes) if scatter else (None, edges)
    channels = c if out_channels else 0

    def op(x, y, w):
        args = ([x, y, w], [sender, None, None], out_index, out_rows, 6, channels, components, coefficients)
        return sparse_contract(*args)

    expected = dense_reference(
        [x, y, w], [sender, None, None], out_index, out_rows, 6, channels, components, coefficients
    )
    torch.testing.assert_close(op(x, y, w), expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(op, (x, y, w))
    assert torch.autograd.gradgradcheck(op, (x, y, w))


def test_op_is_thread_count_independent():
    """Threads own output rows, so the sums are bitwise the same whatever the thread count."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(50, 4, 16, generator=gen)
    w = torch.randn(3000, 2, 16, generator=gen)
    sender, receiver = torch.randint(0, 50, (2, 3000), generator=gen)
    components, coefficients = random_map(gen, [4, 2, 5], 40)
    args = ([x, w], [sender, None], receiver, 50, 5, 16, components, coefficients)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sparse_contract(*args)
        torch.set_num_threads(2)
        two = sparse_contract(*args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_op_errors_name_the_problem():
    x = torch.randn(4, 3, 2, dtype=torch.float64)
    components = torch.tensor([[5, 0]], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="component 5 out of range 3"):
        sparse_contract([x], [None], None, 4, 1, 2, components, torch.ones(1, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="out of range 4"):
        sparse_contract(
            [x], [torch.tensor([0, 1, 9, 2])], None, 4, 1, 2, components[:, :] * 0, torch.ones(1).double()
        )


# ---------------------------------------------------------------------------------------------
# edge convolution


def conv_inputs(conv, dtype, nodes=9, edges=40, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(nodes, conv.irreps_node.dim, generator=gen, dtype=dtype, requires_grad=True)
    vectors = torch.randn(edges, 3, generator=gen, dtype=dtype, requires_grad=True)
    weights = torch.randn(edges, conv.weight_numel, generator=gen, dtype=dtype, requires_grad=True)
    edge_index = torch.randint(0, nodes, (2, edges), generator=gen)
    return x, vectors, weights, edge_index


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("node", ["4x0e", "4x0e + 4x1o", "3x0e + 3x1o + 3x2e + 3x1e"])
def test_edge_convolution_equals_cg_to_second_order(node, dtype):
    sh = Irreps.spherical_harmonics(3)
    cg = EdgeConvolution(node, sh, backend="cg")
    sparse = EdgeConvolution(node, sh, backend="sparse")
    x, vectors, weights, edge_index = conv_inputs(cg, dtype)
    rtol = 1e-11 if dtype == torch.float64 else 1e-4
    outs = [conv(x, vectors, weights, edge_index) for conv in (cg, sparse)]
    torch.testing.assert_close(outs[1], outs[0], rtol=rtol, atol=rtol * outs[0].abs().max().item())
    cotangent = torch.randn_like(outs[0])
    firsts = [torch.autograd.grad(o, (x, vectors, weights), cotangent, create_graph=True) for o in outs]
    for a, b in zip(*firsts):
        torch.testing.assert_close(b, a, rtol=rtol, atol=rtol * a.abs().max().item())
    seconds = [
        torch.autograd.grad(sum((g**2).sum() for g in first), (x, vectors, weights)) for first in firsts
    ]
    for a, b in zip(*seconds):
        torch.testing.assert_close(b, a, rtol=rtol, atol=rtol * a.abs().max().item())


def test_edge_convolution_is_equivariant():
    sparse = EdgeConvolution("3x0e + 3x1o + 3x2e", Irreps.spherical_harmonics(2), backend="sparse")
    x, vectors, weights, edge_index = conv_inputs(sparse, torch.float64)
    assert_equivariant(
        lambda x, v: sparse(x, v, weights.detach(), edge_index),
        [sparse.irreps_node, "1x1o"],
        sparse.irreps_out,
        args_in=[x.detach(), vectors.detach()],
        ntrials=3,
    )


def test_edge_convolution_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="several multiplicities"):
        EdgeConvolution("4x0e + 2x1o", Irreps.spherical_harmonics(1), backend="sparse")
    conv = EdgeConvolution("2x0e", Irreps.spherical_harmonics(1), backend="sparse")
    x, vectors, weights, edge_index = conv_inputs(conv, torch.float64)
    # the CUDA implementation checks its operands' devices as the C++ one does (meta stands in)
    from equitensor.kernels.sparse_contract_cuda import check_arguments

    product = conv.product
    sh = conv.edge_spherical_harmonics(vectors)
    args = ([x.reshape(len(x), 1, 2), sh, weights.reshape(len(sh), -1, 2)], [edge_index[0], None, None])
    more = (edge_index[1], len(x), product.out_dim, 2, product.components, product.coefficients)
    with pytest.raises(ValueError, match=r"input 1 must be .* on meta, got torch.float64 \(40, 4\) on cpu"):
        check_arguments([args[0][0].to("meta"), *args[0][1:]], args[1], *more)
    record = backend_capabilities("sparse")
    assert "edge_convolution" in record.operations and "product_basis" in record.operations
    assert record.available(torch.device("meta")) is not None


def test_auto_considers_sparse(monkeypatch):
    monkeypatch.setenv("EQUITENSOR_AUTO_BACKEND", "sparse")
    conv = EdgeConvolution("2x0e + 2x1o", Irreps.spherical_harmonics(2), backend="auto")
    x, vectors, weights, edge_index = conv_inputs(conv, torch.float64)
    first_call(conv, x, vectors, weights, edge_index)
    assert conv.backend == "sparse" and "sparse" in conv.backend_choice.candidates


# ---------------------------------------------------------------------------------------------
# product basis


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("correlation", [1, 2, 3])
@pytest.mark.parametrize("attrs", ["one-hot", "mixed"])
def test_product_basis_equals_cg(correlation, attrs, dtype):
    torch.manual_seed(correlation)
    irreps_in, irreps_out = "4x0e + 4x1o + 4x2e + 4x3o", "4x0e + 4x1o + 4x2e"
    cg = SymmetricContraction(irreps_in, irreps_out, correlation, 3).to(dtype)
    sparse = SymmetricContraction(irreps_in, irreps_out, correlation, 3, backend="sparse").to(dtype)
    sparse.load_state_dict(cg.state_dict())
    x = torch.randn(11, cg.irreps_in.dim, dtype=dtype, requires_grad=True)
    if attrs == "one-hot":
        node_attrs = torch.nn.functional.one_hot(torch.randint(0, 3, (11,)), 3).to(dtype)
    else:
        node_attrs = torch.rand(11, 3, dtype=dtype)
    rtol = 1e-12 if dtype == torch.float64 else 2e-5
    outs = [m(x, node_attrs) for m in (cg, sparse)]
    scale = outs[0].abs().max().item()
    torch.testing.assert_close(outs[1], outs[0], rtol=rtol, atol=rtol * scale)
    cotangent = torch.randn_like(outs[0])
    grads = []
    for module, out in zip((cg, sparse), outs):
        first = torch.autograd.grad(out, [x, *module.parameters()], cotangent, create_graph=True)
        second = torch.autograd.grad(
            (first[0] ** 2).sum(), [x, *module.parameters()], allow_unused=True, materialize_grads=True
        )
        grads.append([*first, *second])
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=rtol, atol=rtol * max(a.abs().max().item(), 1e-30))


def test_product_basis_gradgradcheck():
    torch.manual_seed(0)
    sparse = SymmetricContraction("2x0e + 2x1o", "2x0e + 2x1o", 3, 2, backend="sparse").double()
    x = torch.randn(3, sparse.irreps_in.dim, dtype=torch.float64, requires_grad=True)
    attrs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    weight = sparse.weights[1][2]
    assert torch.autograd.gradcheck(lambda x, w: sparse(x, attrs), (x, weight))
    assert torch.autograd.gradgradcheck(lambda x, w: sparse(x, attrs), (x, weight))


def test_product_basis_is_equivariant():
    torch.manual_seed(0)
    sparse = SymmetricContraction("3x0e + 3x1o + 3x2e", "3x0e + 3x1o + 3x2e", 3, 2, backend="sparse").double()
    attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1]), 2).double()
    x = sparse.irreps_in.randn(5, -1, dtype=torch.float64)
    assert_equivariant(
        lambda x: sparse(x, attrs), [sparse.irreps_in], sparse.irreps_out, args_in=[x], ntrials=3
    )


# ---------------------------------------------------------------------------------------------
# whole MACE


@pytest.mark.parametrize("make_graph", [methanol, periodic_cell], ids=["molecule", "periodic"])
def test_mace_on_sparse_equals_cg(make_graph):
    torch.manual_seed(3)
    cg = tiny_mace(max_ell=3).double()
    sparse = tiny_mace(max_ell=3, backend="sparse", product_backend="sparse").double()
    sparse.load_state_dict(cg.state_dict())
    graph = make_graph()
    outs = [m(graph, compute_stress=True, training=True) for m in (cg, sparse)]
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(outs[1][key], outs[0][key], rtol=1e-10, atol=1e-12, msg=key)
    assert outs[0]["forces"].abs().max() > 1e-3
    losses = [(o["energy"] ** 2).sum() + (o["forces"] ** 2).sum() for o in outs]
    grads = [torch.autograd.grad(loss, list(m.parameters())) for loss, m in zip(losses, (cg, sparse))]
    for (name, _), a, b in zip(cg.named_parameters(), *grads):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=name)


def test_mace_on_sparse_force_hessian_is_symmetric():
    torch.manual_seed(4)
    model = tiny_mace(backend="sparse", product_backend="sparse").double()
    graph = methanol()
    positions = graph.positions.clone().requires_grad_(True)
    from dataclasses import replace

    def energy(p):
        return model(replace(graph, positions=p), compute_forces=False)["energy"].sum()

    hessian = torch.autograd.functional.hessian(energy, positions).reshape(positions.numel(), -1)
    torch.testing.assert_close(hessian, hessian.T, rtol=1e-9, atol=1e-10)
    assert hessian.abs().max() > 1e-3
    rotated = rand_matrix(dtype=torch.float64)
    assert torch.isfinite(model(replace(graph, positions=graph.positions @ rotated.T))["energy"]).all()


def test_missing_compiler_is_a_clear_error(tmp_path):
    """Without a compiler the first use says what is missing and names the alternative."""
    code = (
        "import torch\n"
        "from equitensor.tp import EdgeConvolution\n"
        "EdgeConvolution('2x0e', '1x0e + 1x1o', backend='sparse')\n"
    )
    env = dict(os.environ, CXX="/nonexistent/c++", EQUITENSOR_KERNEL_CACHE=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "could not be built" in result.stderr and "backend='cg'" in result.stderr


def test_backward_computes_only_the_gradients_asked_for():
    """The C++ backward asks the autograd engine which inputs need a gradient (forces must not pay
    for weight gradients): one kernel call per requested input."""
    from torch.profiler import profile

    gen = torch.Generator().manual_seed(2)
    x, w = (torch.randn(5, d, 4, generator=gen, requires_grad=True) for d in (2, 3))
    y = torch.randn(5, 2, generator=gen, requires_grad=True)
    components, coefficients = random_map(gen, [2, 2, 3, 2], 6)

    def kernel_calls(wanted):
        out = sparse_contract([x, y, w], [None] * 3, None, 5, 2, 4, components, coefficients)
        with profile() as prof:
            torch.autograd.grad(out.sum(), wanted)
        return sum(e.count for e in prof.key_averages() if e.key == "equitensor::sparse_contract")

    assert [kernel_calls([x]), kernel_calls([x, w]), kernel_calls([x, y, w])] == [1, 2, 3]


def test_frozen_product_basis_reuses_folded_weights_until_they_change():
    torch.manual_seed(5)
    cg = SymmetricContraction("3x0e + 3x1o", "3x0e + 3x1o", 3, 2).double().requires_grad_(False)
    sparse = SymmetricContraction("3x0e + 3x1o", "3x0e + 3x1o", 3, 2, backend="sparse").double()
    sparse.requires_grad_(False).load_state_dict(cg.state_dict())
    x = torch.randn(4, cg.irreps_in.dim, dtype=torch.float64)
    attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0]), 2).double()
    torch.testing.assert_close(sparse(x, attrs), cg(x, attrs), rtol=1e-12, atol=1e-12)
    assert sparse.basis._folded_cache[0] is not None  # folded once and kept
    with torch.no_grad():
        for module in (cg, sparse):
            module.weights[0][2].mul_(-3.0)  # an in-place update (as an optimiser makes)
    torch.testing.assert_close(sparse(x, attrs), cg(x, attrs), rtol=1e-12, atol=1e-12)


def test_product_basis_auto_measures_and_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path))
    torch.manual_seed(6)
    auto = SymmetricContraction("3x0e + 3x1o", "3x0e + 3x1o", 2, 2, backend="auto").double()
    cg = SymmetricContraction("3x0e + 3x1o", "3x0e + 3x1o", 2, 2).double()
    cg.load_state_dict(auto.state_dict())
    x = torch.randn(5, cg.irreps_in.dim, dtype=torch.float64)
    attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1]), 2).double()
    torch.testing.assert_close(first_call(auto, x, attrs), cg(x, attrs), rtol=1e-12, atol=1e-12)
    choice = auto.backend_choice
    assert auto.backend in ("cg", "sparse") and set(choice.candidates) == {"cg", "sparse"}
    assert set(choice.times) == {"cg", "sparse"} and choice.operation == "product_basis"


def test_mace_product_backend_auto(monkeypatch):
    monkeypatch.setenv("EQUITENSOR_AUTO_BACKEND", "sparse")
    model = tiny_mace(product_backend="auto").double()
    resolve_backends(model)
    model(methanol())
    assert {p.contraction.backend for p in model.products} == {"sparse"}


def test_structures_without_edges_or_nodes():
    """Zero rows (an isolated atom's graph, an empty batch) give zeros and zero gradients, to
    second order (a kernel reading rows that do not exist would crash here)."""
    conv = EdgeConvolution("4x0e + 4x1o", Irreps.spherical_harmonics(2), backend="sparse")
    x = torch.randn(3, conv.irreps_node.dim, requires_grad=True)
    vectors = torch.zeros(0, 3, requires_grad=True)
    weights = torch.zeros(0, conv.weight_numel, requires_grad=True)
    out = conv(x, vectors, weights, torch.zeros(2, 0, dtype=torch.long))
    assert out.shape == (3, conv.irreps_out.dim) and not out.any()
    grads = torch.autograd.grad((out**2).sum(), [x, vectors, weights], create_graph=True)
    assert [tuple(g.shape) for g in grads] == [(3, conv.irreps_node.dim), (0, 3), (0, conv.weight_numel)]
    contraction = SymmetricContraction("4x0e + 4x1o", "4x0e", 3, 2, backend="sparse")
    empty = torch.zeros(0, contraction.irreps_in.dim, requires_grad=True)
    assert contraction(empty, torch.zeros(0, 2)).shape == (0, 4)
    torch.manual_seed(7)
    model = tiny_mace(backend="sparse", product_backend="sparse").double()
    reference = tiny_mace().double()
    reference.load_state_dict(model.state_dict())
    from ase import Atoms

    from equitensor.datasets.atoms_to_graph import graph_from_atoms

    lonely = graph_from_atoms(Atoms("O", positions=[[0.0, 0.0, 0.0]]), 3.0, torch.float64)
    torch.testing.assert_close(model(lonely)["energy"], reference(lonely)["energy"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels", [3, 16, 32, 64, 128, 130, 256])
def test_op_every_channel_width(channels):
    """Compile-time widths (16/32/64/128), the runtime width, and widths above the register
    accumulator (direct and term-by-term paths), for channelled and channel-summed outputs."""
    gen = torch.Generator().manual_seed(channels)
    x = torch.randn(7, 4, channels, generator=gen, dtype=torch.float64)
    y = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    w = torch.randn(30, 2, channels, generator=gen, dtype=torch.float64)
    sender = torch.randint(0, 7, (30,), generator=gen)
    components, coefficients = random_map(gen, [4, 3, 2, 5], 60)  # ~12 terms per output: registers
    for out_index, out_rows, out_channels in ((sender, 7, channels), (None, 30, 0)):
        args = (
            [x, y, w],
            [sender, None, None],
            out_index,
            out_rows,
            5,
            out_channels,
            components,
            coefficients,
        )
        torch.testing.assert_close(sparse_contract(*args), dense_reference(*args), rtol=1e-12, atol=1e-12)


def test_non_finite_inputs_propagate_like_cg():
    """A NaN in a node feature reaches the outputs it feeds (as with cg), even through an edge
    whose SH factor is exactly zero: divergence is never hidden."""
    conv = EdgeConvolution("2x0e + 2x1o", Irreps.spherical_harmonics(1), backend="sparse")
    cg = EdgeConvolution("2x0e + 2x1o", Irreps.spherical_harmonics(1), backend="cg")
    x = torch.randn(2, conv.irreps_node.dim, dtype=torch.float64)
    x[0, 0] = float("nan")
    vectors = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)  # x and y components of Y are 0
    weights = torch.ones(1, conv.weight_numel, dtype=torch.float64)
    edge_index = torch.tensor([[0], [1]])
    assert torch.equal(
        conv(x, vectors, weights, edge_index).isnan(), cg(x, vectors, weights, edge_index).isnan()
    )
