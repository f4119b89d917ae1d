"""GauntProductBasis (powers of a spherical signal with element weights) and MACE built on it:
pointwise powers on the sphere as the oracle, backends against cg, the exact degree cap,
equivariance under rotations and reflections, MACE symmetries, forces and save/load."""

import json
from dataclasses import replace

import pytest
import torch
from test_mace import methanol, periodic_cell, tiny_mace, transformed
from tp_helpers import relative_error

from equitensor import load_model, rand_matrix, save_model
from equitensor.irreps import Irreps
from equitensor.models import MACE
from equitensor.nn import GauntProductBasis
from equitensor.o3 import spherical_harmonics
from equitensor.testing import assert_equivariant

pytestmark = pytest.mark.usefixtures("one_thread")

BACKENDS = ["cg", "gaunt", "grid"]


def signal(channels: int, lmax: int) -> Irreps:
    return Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def one_hot(elements: list[int], num_elements: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(elements), num_elements).double()


def basis(lmax: int, lmax_out: int, correlation: int, backend: str, channels: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return GauntProductBasis(
        signal(channels, lmax), signal(channels, lmax_out), correlation, num_elements=2, backend=backend
    ).double()


def on_sphere(x: torch.Tensor, channels: int, lmax: int, points: torch.Tensor) -> torch.Tensor:
    """Values f_c(r) = sum_lm x_{c,lm} Y_lm(r) ('component' harmonics) of a mul_ir signal: (N, C, P)."""
    sh = spherical_harmonics(list(range(lmax + 1)), points, normalize=True, normalization="component")
    blocks, offset = [], 0
    for l in range(lmax + 1):
        size = channels * (2 * l + 1)
        blocks.append(x[:, offset : offset + size].reshape(x.shape[0], channels, 2 * l + 1))
        offset += size
    return torch.einsum("ncm,pm->ncp", torch.cat(blocks, dim=-1), sh)


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_body_order_is_the_pointwise_power_on_the_sphere(backend):
    lmax, correlation, channels = 2, 3, 2
    module = basis(lmax, correlation * lmax, correlation, backend, channels)
    x = torch.randn(3, module.irreps_in.dim, dtype=torch.float64)
    elements = [0, 1, 1]
    points = torch.randn(40, 3, dtype=torch.float64)
    f = on_sphere(x, channels, lmax, points)
    with torch.no_grad():
        for nu in range(1, correlation + 1):
            for k, weight in enumerate(module.weights):
                weight.fill_(1.0 if k == nu - 1 else 0.0)
            out = module(x, one_hot(elements, 2))
            assert relative_error(on_sphere(out, channels, correlation * lmax, points), f**nu) < 1e-12


def test_element_weights_on_scalars_by_hand():
    module = basis(0, 0, 4, "gaunt", channels=3)
    x = torch.randn(5, 3, dtype=torch.float64)
    elements = [1, 0, 0, 1, 1]
    expected = sum(module.weights[nu - 1][elements, :, 0] * x**nu for nu in range(1, 5))
    torch.testing.assert_close(module(x, one_hot(elements, 2)), expected, rtol=1e-13, atol=0)


@pytest.mark.parametrize("lmax, lmax_out, correlation", [(2, 1, 3), (1, 2, 2), (3, 0, 3), (1, 1, 4)])
def test_backends_agree_with_cg(lmax, lmax_out, correlation):
    modules = {name: basis(lmax, lmax_out, correlation, name) for name in BACKENDS}
    x = torch.randn(4, modules["cg"].irreps_in.dim, dtype=torch.float64, requires_grad=True)
    attrs = one_hot([0, 1, 0, 1], 2)
    results = {}
    for name, module in modules.items():
        out = module(x, attrs)
        (grad,) = torch.autograd.grad(out.pow(2).sum(), x)
        results[name] = (out.detach(), grad)
    ref_out, ref_grad = results["cg"]
    assert ref_out.abs().max() > 0.1
    for name in ("gaunt", "grid"):
        assert relative_error(results[name][0], ref_out) < 1e-10, name
        assert relative_error(results[name][1], ref_grad) < 1e-10, name


def test_degree_cap_is_exact():
    """Projecting onto a low lmax_out (intermediate powers capped at lmax_out + (K - nu) lmax)
    equals computing every power in full and truncating at the end."""
    lmax, correlation, channels = 2, 3, 2
    full = basis(lmax, correlation * lmax, correlation, "gaunt", channels)
    for lmax_out in (0, 1, 2):
        low = basis(lmax, lmax_out, correlation, "gaunt", channels)
        assert low.degrees == [2, min(4, lmax_out + 2), lmax_out]
        with torch.no_grad():
            for w_low, w_full in zip(low.weights, full.weights):
                w_low.copy_(w_full[..., : lmax_out + 1])
        x = torch.randn(3, full.irreps_in.dim, dtype=torch.float64)
        attrs = one_hot([0, 1, 1], 2)
        expected = full(x, attrs)[:, : channels * (lmax_out + 1) ** 2]
        assert relative_error(low(x, attrs), expected) < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_equivariant_under_rotations_and_reflections(backend):
    module = basis(2, 2, 3, backend)
    x = torch.randn(4, module.irreps_in.dim, dtype=torch.float64)
    attrs = one_hot([0, 1, 1, 0], 2)
    assert_equivariant(module, [module.irreps_in, None], module.irreps_out, args_in=[x, attrs], ntrials=2)


def test_non_signal_irreps_raise_naming_them():
    with pytest.raises(ValueError, match=r"irreps_in 4x0e\+4x1e is not a spherical signal: irreps 4x1e"):
        GauntProductBasis("4x0e+4x1e", "4x0e", 2, 1)
    with pytest.raises(ValueError, match=r"irreps_out .* irreps 4x0o"):
        GauntProductBasis("4x0e+4x1o", "4x0e+4x0o", 2, 1)
    with pytest.raises(ValueError, match="one block per degree 0..2"):
        GauntProductBasis("4x0e+4x2e", "4x0e", 2, 1)
    with pytest.raises(ValueError, match="one block per degree"):
        GauntProductBasis("4x0e+2x1o", "4x0e", 2, 1)
    with pytest.raises(ValueError, match="same multiplicity"):
        GauntProductBasis("4x0e+4x1o", "2x0e", 2, 1)
    with pytest.raises(ValueError, match="unknown tensor-product backend 'nope'"):
        GauntProductBasis("4x0e", "4x0e", 2, 1, backend="nope")
    with pytest.raises(ValueError, match=r"irreps 8x0o, 8x1e"):
        tiny_mace(product_backend="gaunt", hidden_irreps="8x0e+8x0o+8x1o+8x1e", num_channels=None, max_L=None)


@pytest.fixture(scope="module")
def gaunt_mace() -> MACE:
    torch.manual_seed(2)
    return tiny_mace(product_backend="gaunt", num_channels=4).double()


def test_mace_uses_the_gaunt_basis(gaunt_mace):
    assert all(isinstance(p.contraction, GauntProductBasis) for p in gaunt_mace.products)
    assert [p.contraction.backend for p in gaunt_mace.products] == ["gaunt", "gaunt"]
    assert tiny_mace(product_backend="cg-gaunt").products[0].contraction.backend == "cg"


@pytest.mark.parametrize("make_graph", [methanol, periodic_cell], ids=["molecule", "periodic"])
def test_mace_energy_invariant_forces_equivariant(gaunt_mace, make_graph):
    graph = make_graph()
    ref = gaunt_mace(graph)
    generator = torch.Generator().manual_seed(5)
    for parity in (1, -1):
        R = rand_matrix(dtype=torch.float64) * parity
        t = torch.randn(3, dtype=torch.float64, generator=generator)
        perm = torch.randperm(graph.num_nodes, generator=generator)
        out = gaunt_mace(transformed(graph, R, t, perm))
        torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(out["forces"], (ref["forces"] @ R.T)[perm], rtol=0, atol=1e-10)
    assert ref["forces"].abs().max() > 1e-3


def test_mace_forces_equal_finite_differences(gaunt_mace):
    graph = periodic_cell()
    forces = gaunt_mace(graph)["forces"]
    h = 1e-5
    generator = torch.Generator().manual_seed(6)
    for _ in range(2):
        direction = torch.randn(graph.positions.shape, dtype=torch.float64, generator=generator)

        def energy(step, direction=direction):
            shifted = replace(graph, positions=graph.positions + step * direction)
            return gaunt_mace(shifted, compute_forces=False)["energy"].item()

        numeric = (energy(h) - energy(-h)) / (2 * h)
        assert numeric == pytest.approx(-(forces * direction).sum().item(), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("product_backend", ["grid", "cg-gaunt"])
def test_mace_product_backends_agree(gaunt_mace, product_backend):
    other = MACE(**{**gaunt_mace.config, "product_backend": product_backend}).double()
    other.load_state_dict(gaunt_mace.state_dict())
    graph = periodic_cell()
    a, b = gaunt_mace(graph), other(graph)
    assert relative_error(b["energy"], a["energy"]) < 1e-10
    assert relative_error(b["forces"], a["forces"]) < 1e-10


def test_mace_save_load_round_trip(tmp_path, gaunt_mace):
    path = tmp_path / "gaunt_mace.pt"
    save_model(gaunt_mace, path)
    loaded = load_model(path).double()
    assert loaded.config == json.loads(json.dumps(gaunt_mace.config))
    assert loaded.config["product_backend"] == "gaunt"
    graph = periodic_cell()
    a, b = gaunt_mace(graph, compute_stress=True), loaded(graph, compute_stress=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
