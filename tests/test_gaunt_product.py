"""GauntProduct and its backends: cg (reference), gaunt (2D FFT), grid (S2 quadrature).

Oracles: the cg backend (Gaunt = c * wigner_3j), pointwise products of functions evaluated with
spherical_harmonics, o3.gaunt, finite differences, random rotations and reflections.
"""

import itertools
import math
import random

import pytest
import torch

from equitensor.o3 import gaunt, spherical_harmonics, wigner_3j
from equitensor.o3.gaunt import gaunt_factor
from equitensor.o3.sh_fourier import sh_phi_fourier, sh_phi_projection, sh_theta_fourier, sh_theta_projection
from equitensor.testing import assert_equivariant, assert_gradients
from equitensor.tp import GauntProduct, TensorProduct, spherical_irreps
from equitensor.tp.backends.gaunt import FourierGauntKernel
from equitensor.tp.backends.grid import GridGauntKernel, exact_resolution

BACKENDS = ("cg", "gaunt", "grid")
ALL_DEGREES = list(itertools.product(range(11), repeat=3))
CORNERS = [(0, 0, 0), (10, 10, 10), (10, 0, 10), (0, 10, 3), (3, 7, 10), (10, 10, 0), (1, 1, 10)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny products: see conftest.one_thread


def _unit_vectors(n: int) -> torch.Tensor:
    x = torch.randn(n, 3, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def _signal(lmax: int, channels: int = 1, batch: int = 2, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(batch, channels, (lmax + 1) ** 2, dtype=dtype)


# ---------------------------------------------------------------- closed-form tables


def test_fourier_tables_reproduce_spherical_harmonics():
    lmax = 10
    x = _unit_vectors(40)
    theta, phi = torch.acos(x[:, 1]), torch.atan2(x[:, 0], x[:, 2])
    freq = torch.arange(-lmax, lmax + 1, dtype=torch.float64)
    theta_part = torch.einsum("lmu,pu->plm", sh_theta_fourier(lmax), torch.exp(1j * theta[:, None] * freq))
    phi_part = torch.einsum("mv,pv->pm", sh_phi_fourier(lmax), torch.exp(1j * phi[:, None] * freq))
    values = theta_part * phi_part[:, None, :]
    series = torch.cat([values[:, l, lmax - l : lmax + l + 1] for l in range(lmax + 1)], dim=1)
    expected = spherical_harmonics(list(range(lmax + 1)), x, normalize=True, normalization="integral")
    torch.testing.assert_close(series.real, expected, atol=1e-13, rtol=0)
    assert series.imag.abs().max() < 1e-14


def test_projection_tables_are_orthonormal_on_the_sphere():
    """Fourier series of Y_l'm' projected back onto every Y_lm gives the identity."""
    lmax = 9
    series = torch.einsum("lmu,mv->lmuv", sh_theta_fourier(lmax), sh_phi_fourier(lmax))
    gram = torch.einsum(
        "lmuv,pnu,nv->lmpn", series, sh_theta_projection(lmax, lmax), sh_phi_projection(lmax, lmax)
    )
    identity = torch.zeros(gram.shape, dtype=torch.float64)
    for l in range(lmax + 1):
        for m in range(2 * l + 1):
            identity[l, lmax - l + m, l, lmax - l + m] = 1
    torch.testing.assert_close(gram, identity.to(gram.dtype), atol=1e-13, rtol=0)


@pytest.mark.parametrize("l1, l2, l3", [(0, 0, 0), (1, 1, 2), (2, 3, 3), (4, 2, 6), (5, 5, 4), (3, 4, 3)])
def test_gaunt_factor_is_the_gaunt_over_3j_ratio(l1, l2, l3):
    G = gaunt(l1, l2, l3, dtype=torch.float64)
    torch.testing.assert_close(G, gaunt_factor(l1, l2, l3) * wigner_3j(l1, l2, l3, dtype=torch.float64))
    assert (gaunt_factor(l1, l2, l3) > 0) == ((l1 + l2 + l3) % 2 == 0)


# ---------------------------------------------------------------- backends agree


def _kernels_agree(l1, l2, l3):
    s1, s2 = _signal(l1), _signal(l2)
    a = FourierGauntKernel(l1, l2, l3)(s1, s2)
    b = GridGauntKernel(l1, l2, l3)(s1, s2)
    assert a.shape == b.shape == (2, 1, (l3 + 1) ** 2)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("degrees", CORNERS + random.Random(0).sample(ALL_DEGREES, 100), ids=str)
def test_gaunt_and_grid_kernels_agree(degrees):
    _kernels_agree(*degrees)


@pytest.mark.slow
def test_gaunt_and_grid_kernels_agree_on_every_degree_combination():
    for degrees in ALL_DEGREES:
        _kernels_agree(*degrees)


def _backends_agree(l1, l2, l3, channels=2):
    modules = {b: GauntProduct(channels, l1, l2, l3, backend=b).double() for b in BACKENDS}
    for m in modules.values():  # the same random per-degree weights everywhere
        for name, p in m.named_parameters():
            with torch.no_grad():
                p.copy_(
                    torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name)), dtype=p.dtype)
                )
    ref = modules["cg"]
    x1 = ref.irreps_in1.randn(3, -1, dtype=torch.float64)
    x2 = ref.irreps_in2.randn(3, -1, dtype=torch.float64)
    expected = ref(x1, x2)
    assert expected.abs().max() > 0 or l3 > l1 + l2
    for backend in ("gaunt", "grid"):
        torch.testing.assert_close(modules[backend](x1, x2), expected, atol=1e-10, rtol=0, msg=backend)


@pytest.mark.parametrize(
    "degrees",
    [(0, 0, 0), (1, 1, 2), (2, 3, 10), (6, 6, 6), (5, 2, 3), (0, 4, 4)]
    + random.Random(1).sample(list(itertools.product(range(5), repeat=3)), 8),
    ids=str,
)
def test_backends_agree_with_cg(degrees):
    _backends_agree(*degrees)


@pytest.mark.slow
@pytest.mark.parametrize("degrees", [(10, 10, 10), (10, 7, 10), (3, 10, 10), (10, 10, 4)], ids=str)
def test_backends_agree_with_cg_full_size(degrees):
    _backends_agree(*degrees, channels=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_product_of_functions_on_the_sphere(backend):
    """Without truncation (lmax_out >= lmax1 + lmax2) the output is f1 f2 pointwise."""
    l1, l2, channels = 3, 2, 2
    gp = GauntProduct(channels, l1, l2, l1 + l2, backend=backend, weights=False).double()
    x1 = gp.irreps_in1.randn(1, -1, dtype=torch.float64)
    x2 = gp.irreps_in2.randn(1, -1, dtype=torch.float64)
    out = gp(x1, x2)
    points = _unit_vectors(30)

    def evaluate(x, lmax):  # f_c(r) = sum_lm x_{c,lm} Y_lm(r), 'component' harmonics
        Y = spherical_harmonics(list(range(lmax + 1)), points, normalize=True, normalization="component")
        blocks, offset = [], 0
        for l in range(lmax + 1):
            blocks.append(x[0, offset : offset + channels * (2 * l + 1)].reshape(channels, 2 * l + 1))
            offset += channels * (2 * l + 1)
        return torch.cat(blocks, dim=1) @ Y.T  # (channels, points)

    torch.testing.assert_close(
        evaluate(out, l1 + l2), evaluate(x1, l1) * evaluate(x2, l2), atol=1e-12, rtol=0
    )


def test_integral_normalization_is_the_gaunt_tensor():
    gp = GauntProduct(1, 2, 2, 3, backend="gaunt", normalization="integral", weights=False).double()
    x1, x2 = torch.randn(9, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    expected = torch.zeros(16, dtype=torch.float64)
    for l1, l2, l3 in itertools.product(range(3), range(3), range(4)):
        if abs(l1 - l2) <= l3 <= l1 + l2:
            G = gaunt(l1, l2, l3, dtype=torch.float64)
            expected[l3**2 : (l3 + 1) ** 2] += torch.einsum(
                "i,j,ijk->k", x1[l1**2 : (l1 + 1) ** 2], x2[l2**2 : (l2 + 1) ** 2], G
            )
    torch.testing.assert_close(gp(x1, x2), expected, atol=1e-13, rtol=0)


def test_weights_are_rank_one_per_path():
    """GauntProduct weights == a 'uuu' TensorProduct whose path weights are w1 w2 w3 (cg oracle)."""
    channels, l1, l2, l3 = 3, 2, 1, 2
    gp = GauntProduct(channels, l1, l2, l3, backend="gaunt").double()
    with torch.no_grad():
        for p in gp.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype))
    paths = [(a, b, c) for a in range(l1 + 1) for b in range(l2 + 1) for c in range(l3 + 1)]
    paths = [p for p in paths if abs(p[0] - p[1]) <= p[2] <= p[0] + p[1] and sum(p) % 2 == 0]
    k = math.sqrt(4 * math.pi)  # 'component' normalization
    tp = TensorProduct(
        gp.irreps_in1,
        gp.irreps_in2,
        gp.irreps_out,
        [(a, b, c, "uuu", True, (k * gaunt_factor(a, b, c)) ** 2) for a, b, c in paths],
        irrep_normalization="none",
        path_normalization="none",
        internal_weights=False,
    )
    weight = torch.cat([gp.weight_in1[:, a] * gp.weight_in2[:, b] * gp.weight_out[:, c] for a, b, c in paths])
    x1 = gp.irreps_in1.randn(4, -1, dtype=torch.float64)
    x2 = gp.irreps_in2.randn(4, -1, dtype=torch.float64)
    torch.testing.assert_close(gp(x1, x2), tp(x1, x2, weight.detach()), atol=1e-12, rtol=0)


# ---------------------------------------------------------------- dtypes, derivatives, symmetry


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_matches_float64(backend):
    gp = GauntProduct(4, 3, 3, 4, backend=backend)
    x1 = gp.irreps_in1.randn(5, -1)
    x2 = gp.irreps_in2.randn(5, -1)
    out32 = gp(x1, x2)
    assert out32.dtype == torch.float32
    out64 = gp.double()(x1.double(), x2.double())
    torch.testing.assert_close(out32.double(), out64, atol=1e-5 * out64.abs().max().item(), rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_and_double_backward(backend):
    gp = GauntProduct(1, 2, 1, 2, backend=backend)
    with torch.no_grad():
        for p in gp.parameters():
            p.add_(0.3 * torch.randn(p.shape))
    x1 = gp.irreps_in1.randn(1, -1)
    x2 = gp.irreps_in2.randn(1, -1)
    assert_gradients(gp, x1, x2)

    def with_weights(x1, x2, w1, w2, w3):
        module = GauntProduct(1, 2, 1, 2, backend=backend, weights=False).double()
        from equitensor.tp.gaunt_product import _per_component

        out = module(x1 * _per_component(w1, 2), x2 * _per_component(w2, 1))
        return out * _per_component(w3, 2)

    assert_gradients(with_weights, x1, x2, gp.weight_in1, gp.weight_in2, gp.weight_out)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equivariant_under_rotations_and_reflections(backend, dtype):
    gp = GauntProduct(3, 3, 2, 4, backend=backend).to(dtype)
    with torch.no_grad():
        for p in gp.parameters():
            p.add_(0.5 * torch.randn(p.shape, dtype=dtype))
    assert_equivariant(gp, [gp.irreps_in1, gp.irreps_in2], gp.irreps_out, dtype=dtype, ntrials=2)


def test_odd_paths_are_absent():
    """The cross product 1o x 1o -> 1e has no counterpart: vectors give 0e + 2e only."""
    gp = GauntProduct(1, 1, 1, 2, backend="gaunt", weights=False).double()
    x1 = torch.cat([torch.zeros(1, 1), torch.randn(1, 3)], 1).double()
    x2 = torch.cat([torch.zeros(1, 1), torch.randn(1, 3)], 1).double()
    out = gp(x1, x2)
    assert out[0, 1:4].abs().max() < 1e-14  # degree 1 output of two pure vectors
    assert out[0, 4:].abs().max() > 1e-3


def test_degrees_above_lmax1_plus_lmax2_are_zero():
    for backend in ("gaunt", "grid"):
        gp = GauntProduct(2, 1, 1, 4, backend=backend, weights=False).double()
        out = gp(
            gp.irreps_in1.randn(3, -1, dtype=torch.float64), gp.irreps_in2.randn(3, -1, dtype=torch.float64)
        )
        assert out.shape == (3, gp.irreps_out.dim)
        assert out[:, 2 * 9 :].abs().max() == 0  # degrees 3, 4


@pytest.mark.slow
def test_torch_compile_inference():
    gp = GauntProduct(2, 2, 2, 2, backend="gaunt")
    x1 = gp.irreps_in1.randn(3, -1)
    x2 = gp.irreps_in2.randn(3, -1)
    compiled = torch.compile(gp)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x1, x2), gp(x1, x2), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- grid resolution


def test_exact_resolution_rule():
    assert exact_resolution(2, 2, 4) == (5, 9)  # K = 8
    assert exact_resolution(3, 3, 10) == (7, 13)  # output capped at 6: K = 12
    assert GridGauntKernel(2, 2, 4).exact


def test_coarse_grid_needs_an_explicit_opt_in():
    with pytest.raises(ValueError, match=r"below the exact \(5, 9\).*allow_approximate=True"):
        GauntProduct(1, 2, 2, 4, backend="grid", resolution=(4, 9))
    gp = GauntProduct(
        1, 2, 2, 4, backend="grid", resolution=(4, 8), allow_approximate=True, weights=False
    ).double()
    assert not gp.exact and gp.approximation_error > 1e-3
    assert "approximate" in repr(gp)
    ref = GauntProduct(1, 2, 2, 4, backend="cg", weights=False).double()
    x1, x2 = (
        ref.irreps_in1.randn(3, -1, dtype=torch.float64),
        ref.irreps_in2.randn(3, -1, dtype=torch.float64),
    )
    assert (gp(x1, x2) - ref(x1, x2)).abs().max() > 1e-6  # really approximate


def test_finer_grid_stays_exact():
    gp = GauntProduct(1, 2, 2, 4, backend="grid", resolution=(8, 12), weights=False).double()
    ref = GauntProduct(1, 2, 2, 4, backend="cg", weights=False).double()
    assert gp.exact and gp.approximation_error == 0
    x1, x2 = (
        ref.irreps_in1.randn(3, -1, dtype=torch.float64),
        ref.irreps_in2.randn(3, -1, dtype=torch.float64),
    )
    torch.testing.assert_close(gp(x1, x2), ref(x1, x2), atol=1e-12, rtol=0)


# ---------------------------------------------------------------- interface


def test_irreps_convention_and_broadcasting():
    gp = GauntProduct(2, 3, 1, 2)
    assert str(gp.irreps_in1) == "2x0e+2x1o+2x2e+2x3o"
    assert gp.irreps_out == spherical_irreps(2, 2)
    x1 = gp.irreps_in1.randn(4, 1, -1)
    x2 = gp.irreps_in2.randn(5, -1)
    assert gp(x1, x2).shape == (4, 5, gp.irreps_out.dim)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    gp = GauntProduct(2, 2, 1, 3, backend=backend)
    x1 = torch.zeros(0, gp.irreps_in1.dim, requires_grad=True)
    out = gp(x1, torch.zeros(0, gp.irreps_in2.dim))
    assert out.shape == (0, gp.irreps_out.dim)
    assert torch.autograd.grad(out.sum(), x1)[0].shape == x1.shape


def test_errors_are_clear():
    with pytest.raises(ValueError, match="last dimension"):
        GauntProduct(2, 1, 1, 1)(torch.randn(3, 5), torch.randn(3, 8))
    with pytest.raises(ValueError, match="unknown tensor-product backend 'fft'"):
        GauntProduct(2, 1, 1, 1, backend="fft")
    with pytest.raises(ValueError, match="normalization"):
        GauntProduct(2, 1, 1, 1, normalization="norm")
    with pytest.raises(ValueError, match="takes no options"):
        GauntProduct(2, 1, 1, 1, backend="gaunt", resolution=(3, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["gaunt", "grid"])
def test_cuda_matches_the_cpu_reference(backend, dtype):
    ref = GauntProduct(3, 4, 3, 5, backend="cg").double()
    gp = GauntProduct(3, 4, 3, 5, backend=backend).to(device="cuda", dtype=dtype)
    with torch.no_grad():
        for p, q in zip(gp.parameters(), ref.parameters()):
            q.copy_(torch.randn(q.shape, dtype=q.dtype))
            p.copy_(q)
    x1 = ref.irreps_in1.randn(16, -1, dtype=torch.float64)
    x2 = ref.irreps_in2.randn(16, -1, dtype=torch.float64)
    expected = ref(x1, x2)
    out = gp(x1.to("cuda", dtype), x2.to("cuda", dtype)).cpu().double()
    atol = (1e-10 if dtype == torch.float64 else 1e-5) * expected.abs().max().item()
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)
