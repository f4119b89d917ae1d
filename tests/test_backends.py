"""Backend capability records, the registry, refusals naming what cannot be expressed, the
Gaunt backends behind the TensorProduct front end, and the expressivity report."""

import dataclasses

import pytest
import torch

import equitensor
from equitensor.o3.gaunt import gaunt_factor
from equitensor.testing import assert_equivariant
from equitensor.tp import (
    BackendCapabilities,
    EdgeConvolution,
    FullyConnectedTensorProduct,
    GauntProduct,
    TensorProduct,
    TensorProductSpec,
    backend_capabilities,
    backends_table,
    expressivity,
    gaunt_spec,
    list_backends,
    register_backend,
)
from equitensor.tp.backends import capabilities, make_executor


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry, restored after the test."""
    monkeypatch.setattr(capabilities, "_REGISTRY", dict(capabilities._REGISTRY))
    return capabilities._REGISTRY


def _gaunt_form_spec(block_factors: dict, paths, irreps_in1, irreps_in2, irreps_out, **kwargs):
    """uuu paths with path_weight (f1 f2 f3 c)^2: a Gaunt product with per-block factors."""
    in1, in2, out = (
        equitensor.Irreps(irreps_in1),
        equitensor.Irreps(irreps_in2),
        equitensor.Irreps(irreps_out),
    )
    instructions = []
    for i1, i2, io in paths:
        c = gaunt_factor(in1[i1].ir.l, in2[i2].ir.l, out[io].ir.l)
        factor = block_factors["in1"][i1] * block_factors["in2"][i2] * block_factors["out"][io]
        instructions.append((i1, i2, io, "uuu", False, (factor * c) ** 2))
    return in1, in2, out, instructions


# ---------------------------------------------------------------- records and registry


def test_builtin_records_are_listed():
    names = [r.name for r in list_backends()]
    assert {"cg", "gaunt", "grid"} <= set(names)
    cg = backend_capabilities("cg")
    assert cg.exact and cg.max_derivative_order is None and torch.float64 in cg.dtypes
    assert "edge_convolution" in cg.operations
    for name in ("gaunt", "grid"):
        record = backend_capabilities(name)
        assert "gaunt_product" in record.operations and "even" in record.paths
    assert equitensor.list_backends is list_backends


def test_backends_table_is_readable():
    table = backends_table()
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["backend", "computes", "paths"]
    assert set(lines[1]) <= {"-", " "}
    for name in ("cg", "gaunt", "grid"):
        assert any(line.startswith(name + " ") for line in lines)
    assert "float64" in table and "any order (autograd)" in table
    assert max(len(line) for line in lines) < 220


def test_register_a_backend(registry):
    record = BackendCapabilities(
        name="toy",
        summary="a test record",
        builders={"tensor_product": lambda spec: torch.nn.Identity()},
        paths="none",
        weights="none",
        exact=False,
        error="unbounded",
        max_derivative_order=1,
        devices=("cpu",),
        dtypes=(torch.float64,),
    )
    register_backend(record)
    assert backend_capabilities("toy") is record
    assert "toy" in backends_table() and "up to order 1" in backends_table()
    with pytest.raises(ValueError, match="already registered"):
        register_backend(record)
    register_backend(dataclasses.replace(record, summary="v2"), replace=True)
    assert backend_capabilities("toy").summary == "v2"
    spec = FullyConnectedTensorProduct("2x0e", "2x0e", "2x0e").spec
    assert expressivity(spec)["toy"].status == "approximate"  # no limitations, not exact
    assert isinstance(make_executor("toy", spec), torch.nn.Identity)
    with pytest.raises(
        ValueError, match=r"'toy' does not compute edge_convolution \(it computes: tensor_product\)"
    ):
        EdgeConvolution("2x0e", "0e + 1o", backend="toy")


def test_record_rejects_unknown_operations():
    with pytest.raises(ValueError, match="unknown operations"):
        dataclasses.replace(backend_capabilities("cg"), name="x", builders={"fft": None})


def test_unknown_backend_names_the_available_ones():
    with pytest.raises(
        ValueError, match=r"unknown tensor-product backend 'nope'; available: cg, .*gaunt, grid"
    ):
        TensorProduct("1x0e", "1x0e", "1x0e", [(0, 0, 0, "uuu", False)], backend="nope")
    with pytest.raises(ValueError, match="takes no options"):
        make_executor("cg", FullyConnectedTensorProduct("1x0e", "1x0e", "1x0e").spec, resolution=3)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("backend", ["gaunt", "grid"])
def test_refuses_the_cross_product(backend):
    with pytest.raises(
        ValueError, match=r"cannot compute.*exactly:\n  - path 0 \(1x1o x 1x1o -> 1x1e, uuu\).*odd"
    ):
        TensorProduct("1x1o", "1x1o", "1x1e", [(0, 0, 0, "uuu", False)], backend=backend)


@pytest.mark.parametrize("backend", ["gaunt", "grid"])
def test_refuses_channel_mixing_and_per_path_weights(backend):
    with pytest.raises(ValueError) as info:
        FullyConnectedTensorProduct("2x0e+2x1o", "2x0e+2x1o", "2x0e+2x1o+2x1e", backend=backend)
    message = str(info.value)
    assert "mode 'uvw'" in message and "per-path weights cannot be expressed" in message
    assert all(f"path {i} " in message for i in range(5))
    assert "1o x 2x1o -> 2x1e" in message and "odd" in message


def test_refuses_coefficients_that_do_not_factorise():
    irreps = "1x0e+1x1o+1x2e"
    paths = [
        (a, b, c, "uuu", False)
        for a in range(3)
        for b in range(3)
        for c in range(3)
        if abs(a - b) <= c <= a + b and (a + b + c) % 2 == 0
    ]
    with pytest.raises(ValueError, match="not Gaunt coefficients times one factor per block"):
        TensorProduct(irreps, irreps, irreps, paths, backend="gaunt")


def test_refuses_a_gaunt_spec_with_a_missing_path():
    spec = gaunt_spec(2, 1, 1, 2)
    trimmed = [
        (i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight, i.path_weight)
        for i in spec.instructions[1:]
    ]
    with pytest.raises(ValueError, match=r"also couples blocks 0 x 0 -> 0 \(0e x 0e -> 0e\)"):
        TensorProduct(spec.irreps_in1, spec.irreps_in2, spec.irreps_out, trimmed, backend="grid")


def test_refuses_repeated_degrees():
    irreps = "2x0e+2x0e"
    spec_paths = [
        (0, 0, 0, "uuu", False),
        (1, 1, 1, "uuu", False),
        (0, 1, 0, "uuu", False),
        (1, 0, 1, "uuu", False),
    ]
    with pytest.raises(ValueError, match="two used blocks of degree 0"):
        TensorProduct(irreps, irreps, irreps, spec_paths, backend="gaunt")


# ---------------------------------------------------------------- Gaunt specs behind TensorProduct


@pytest.mark.parametrize("backend", ["gaunt", "grid"])
def test_tensor_product_with_a_gaunt_form_spec_matches_cg(backend):
    """Blocks out of degree order, a missing degree, an output block no path reaches, e3nn's
    'component'/'element' normalization and arbitrary per-block factors."""
    factors = {"in1": [0.7, 1.9], "in2": [1.3], "out": [0.4, 2.2, 5.0]}
    paths = [(0, 0, 0), (0, 0, 1), (1, 0, 0)]  # 2e x 1o -> 1o, 3o ; 0e x 1o -> 1o
    args = _gaunt_form_spec(factors, paths, "3x2e+3x0e", "3x1o", "3x1o+3x3o+3x4e")
    cg = TensorProduct(*args, backend="cg")
    other = TensorProduct(*args, backend=backend)
    x1 = cg.irreps_in1.randn(5, -1, dtype=torch.float64)
    x2 = cg.irreps_in2.randn(5, -1, dtype=torch.float64)
    expected = cg(x1, x2)
    torch.testing.assert_close(other(x1, x2), expected, atol=1e-12, rtol=0)
    assert expected[:, -27:].abs().max() == 0  # 3x4e: no path
    assert_equivariant(other, [cg.irreps_in1, cg.irreps_in2], cg.irreps_out, dtype=torch.float64)


def test_grid_options_through_make_executor():
    spec = gaunt_spec(1, 2, 2, 4)
    with pytest.raises(ValueError, match="below the exact"):
        make_executor("grid", spec, resolution=(3, 3))
    executor = make_executor("grid", spec, resolution=(3, 3), allow_approximate=True)
    assert not executor.kernel.exact and executor.kernel.approximation_error > 0


# ---------------------------------------------------------------- expressivity


def test_expressivity_of_a_fully_connected_product():
    tp = FullyConnectedTensorProduct("2x0e+2x1o", "2x0e+2x1o", "2x0e+2x1o+2x1e")
    report = expressivity(tp)
    assert report.operation == "tensor_product"
    assert "cg" in report.exact and {"gaunt", "grid"} <= set(report.unsupported)
    assert report["gaunt"].paths_not_expressible == tuple(range(len(tp.instructions)))
    assert report["cg"].limitations == ()
    text = str(report)
    assert text.splitlines()[0].startswith("tensor_product: 2x0e+2x1o x 2x0e+2x1o -> 2x0e+2x1o+2x1e")
    assert "computes it" in text and "mode 'uvw'" in text


def test_expressivity_names_the_odd_paths_a_gaunt_backend_drops():
    """A Gaunt product of 0e+1o signals plus the cross product 1o x 1o -> 1e (path 4)."""
    gaunt_paths = [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0)]
    instructions = [(a, b, c, "uuu", False, gaunt_factor(a, b, c) ** 2) for a, b, c in gaunt_paths]
    instructions.append((1, 1, 2, "uuu", False))
    spec = TensorProductSpec.build(
        "1x0e+1x1o",
        "1x0e+1x1o",
        "1x0e+1x1o+1x1e",
        instructions,
        irrep_normalization="none",
        path_normalization="none",
    )
    report = expressivity(spec)
    assert report["gaunt"].status == report["grid"].status == "no"
    assert report["gaunt"].paths_not_expressible == (4,)
    assert all(lim.instruction == 4 for lim in report["gaunt"].limitations)
    assert "path 4 (1x1o x 1x1o -> 1x1e, uuu): l1+l2+l3 is odd" in str(report)
    assert report["cg"].status == "exact"
    without_odd = TensorProductSpec.build(
        "1x0e+1x1o",
        "1x0e+1x1o",
        "1x0e+1x1o",
        instructions[:4],
        irrep_normalization="none",
        path_normalization="none",
    )
    assert {"cg", "gaunt", "grid"} <= set(expressivity(without_odd).exact)


def test_expressivity_of_products_and_convolutions():
    report = expressivity(GauntProduct(2, 2, 2, 2))
    assert report.operation == "gaunt_product" and {"cg", "gaunt", "grid"} <= set(report.exact)
    conv = expressivity(EdgeConvolution("4x0e+4x1o", "0e+1o"))
    assert conv.operation == "edge_convolution"
    assert "cg" in conv.exact and conv["gaunt"].status == "no"
    assert "per-path weights cannot be expressed" in str(conv["gaunt"].limitations[0])
    with pytest.raises(TypeError, match="expressivity needs"):
        expressivity(42)


def test_a_new_backend_is_one_record_for_every_operation(registry):
    """A backend registered once (as its own module would) serves EdgeConvolution and
    SymmetricContraction by name, with no change to either module: the record's builders say
    what it computes. Here the toy backend reuses cg's executors and counts the builds."""
    from equitensor.nn import SymmetricContraction
    from equitensor.nn.symmetric_contraction import DenseProductBasis
    from equitensor.tp.edge_products import PerEdgeProduct

    built = []

    def edge_convolution(spec):
        built.append("edge_convolution")
        return PerEdgeProduct(spec, make_executor("cg", spec))

    def product_basis(spec):
        built.append("product_basis")
        return DenseProductBasis(spec)

    toy = dataclasses.replace(
        backend_capabilities("cg"),
        name="toy",
        builders={"edge_convolution": edge_convolution, "product_basis": product_basis},
    )
    register_backend(toy)
    torch.manual_seed(0)
    conv, ref = (EdgeConvolution("3x0e + 3x1o", "0e + 1o + 2e", backend=b) for b in ("toy", "cg"))
    nodes, vectors = torch.randn(5, conv.irreps_node.dim), torch.randn(9, 3)
    weights, edge_index = torch.randn(9, conv.weight_numel), torch.randint(0, 5, (2, 9))
    torch.testing.assert_close(
        conv(nodes, vectors, weights, edge_index), ref(nodes, vectors, weights, edge_index)
    )
    contraction = SymmetricContraction("3x0e + 3x1o", "3x0e", 2, 2, backend="toy")
    reference = SymmetricContraction("3x0e + 3x1o", "3x0e", 2, 2)
    reference.load_state_dict(contraction.state_dict())
    attrs = torch.eye(2)[[0, 1, 1, 0, 1]]
    torch.testing.assert_close(contraction(nodes, attrs), reference(nodes, attrs))
    assert built == ["edge_convolution", "product_basis"]
    assert "toy" in capabilities.backends_for("edge_convolution")
