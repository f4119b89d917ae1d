"""The cp backend (CP-decomposed CG tensors): exactness at full rank against cg, monotone
residual and equivariance error in the rank, opt-in, the disk cache, derivatives, compile."""

import math

import numpy as np
import pytest
import torch
from tp_helpers import assert_compiled_inference_matches, relative_error

from equitensor import EdgeConvolution, Irreps
from equitensor.o3 import rand_matrix, wigner_3j
from equitensor.testing import assert_equivariant
from equitensor.tp import TensorProduct, expressivity
from equitensor.tp.backends import backend_capabilities
from equitensor.tp.backends import cp as cp_module
from equitensor.tp.backends.cp import cp_factors, exact_cp_rank

APPROXIMATE = {"rank": 2, "allow_approximate": True}


@pytest.fixture(scope="module", autouse=True)
def _cache_for_this_module(tmp_path_factory):
    """Fits go to a temporary cache shared by this module's tests, never to ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EQUITENSOR_CACHE", str(tmp_path_factory.mktemp("cp_cache")))
        yield


def all_paths(irreps_in1, irreps_in2, irreps_out, mode: str, has_weight: bool = True) -> list[tuple]:
    i1, i2, o = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
    return [
        (a, b, c, mode, has_weight)
        for a, (_, ir1) in enumerate(i1)
        for b, (_, ir2) in enumerate(i2)
        for c, (_, ir3) in enumerate(o)
        if ir3 in ir1 * ir2
    ]


def pair(*args, shared: bool, backend_options, **kwargs) -> tuple[TensorProduct, TensorProduct]:
    """The same product on cg and on cp."""
    common = dict(shared_weights=shared, internal_weights=False, **kwargs)
    return TensorProduct(*args, **common), TensorProduct(
        *args, backend="cp", backend_options=backend_options, **common
    )


# (irreps_in1, irreps_in2, irreps_out, mode, has_weight): every e3nn mode, odd and even paths
MODES = [
    ("2x0e+2x1o+2x2e", "2x0e+2x1o+1x2e", "3x0e+3x1o+3x1e+3x2e", "uvw", True),
    ("2x0e+2x1o+2x2e", "2x0e+2x1o+2x2e", "2x0e+2x1o+2x1e+2x2e", "uvu", True),
    ("2x0o+2x1e", "3x0e+3x1o", "3x0o+3x1e+3x1o", "uvv", False),
    ("2x1o+2x2e", "2x1o+2x2e", "3x0e+3x1e+3x2e", "uuw", True),
    ("2x0e+2x1o+2x2e", "2x0e+2x1o+2x2e", "2x0e+2x1o+2x1e+2x2e", "uuu", True),
    ("2x1o+2x2e", "2x1o", "4x0e+4x1e+4x2e+4x2o+4x3e", "uvuv", False),
    ("3x1o", "3x1o", "3x0e+3x1e+3x2e", "uvu<v", True),
    ("3x1o+3x2e", "3x1o+3x2e", "2x0e+2x1e+2x1o+2x2e", "u<vw", True),
]


@pytest.mark.parametrize("config", MODES, ids=[c[3] for c in MODES])
@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per-sample"])
def test_full_rank_equals_cg(config, shared, dtype):
    *irreps, mode, has_weight = config
    instructions = all_paths(*irreps, mode, has_weight)
    cg, cp = pair(*irreps, instructions, shared=shared, backend_options={"rank": "full"})
    assert cp.executor.exact and cp.executor.approximation_error < 1e-12
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(5, cg.irreps_in1.dim, generator=g, dtype=torch.float64)
    x2 = torch.randn(5, cg.irreps_in2.dim, generator=g, dtype=torch.float64)
    shape = (cg.weight_numel,) if shared else (5, cg.weight_numel)
    w = torch.randn(*shape, generator=g, dtype=torch.float64) if cg.weight_numel else None
    expected = cg(x1, x2, w)
    to = dict(dtype=dtype)
    out = cp(x1.to(**to), x2.to(**to), None if w is None else w.to(**to))
    assert out.dtype == dtype
    assert relative_error(out.double(), expected) < (1e-12 if dtype == torch.float64 else 1e-5)


def test_rank_at_or_above_every_exact_rank_needs_no_opt_in():
    irreps = ("2x1o+1x2e", "1x1o+1x2e", "2x0e+2x1e+2x2e+1x3o")
    instructions = all_paths(*irreps, "uvw")
    ranks = [exact_cp_rank(1, 1, 0), exact_cp_rank(2, 2, 2), exact_cp_rank(2, 1, 3)]
    cg, cp = pair(*irreps, instructions, shared=True, backend_options={"rank": 30})
    assert max(ranks) <= 30 and cp.executor.exact
    x1, x2 = cg.irreps_in1.randn(3, -1, dtype=torch.float64), cg.irreps_in2.randn(3, -1, dtype=torch.float64)
    w = torch.randn(cg.weight_numel, dtype=torch.float64)
    assert relative_error(cp(x1, x2, w), cg(x1, x2, w)) < 1e-12


def test_exact_construction_rank_and_factors():
    for ls in [(0, 0, 0), (1, 1, 0), (1, 1, 1), (2, 1, 3), (3, 3, 2)]:
        rank = exact_cp_rank(*ls)
        factors = cp_factors(*ls, rank)
        assert factors.rank == rank and factors.residual < 1e-14
        torch.testing.assert_close(factors.tensor(), wigner_3j(*ls, dtype=torch.float64), rtol=0, atol=1e-15)
    assert exact_cp_rank(1, 1, 0) == 3 and exact_cp_rank(1, 1, 1) == 6


def edge_inputs(conv: EdgeConvolution, num_nodes: int, num_edges: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    vectors = torch.randn(num_edges, 3, generator=g, dtype=torch.float64)
    x = torch.randn(num_nodes, conv.irreps_node.dim, generator=g, dtype=torch.float64)
    w = torch.randn(num_edges, conv.weight_numel, generator=g, dtype=torch.float64)
    return x, vectors, w, edge_index


def test_edge_convolution_full_rank_equals_cg(dtype):
    config = ("3x0e+2x1o+2x2e", Irreps.spherical_harmonics(2), None)
    cg = EdgeConvolution(*config)
    cp = EdgeConvolution(*config, backend="cp", rank="full")
    assert cp.weight_numel == cg.weight_numel and cp.irreps_out == cg.irreps_out
    x, v, w, edge_index = edge_inputs(cg, 5, 17)
    expected = cg(x, v, w, edge_index)
    out = cp(x.to(dtype), v.to(dtype), w.to(dtype), edge_index)
    assert out.dtype == dtype
    assert relative_error(out.double(), expected) < (1e-12 if dtype == torch.float64 else 1e-5)

    def rotated_call(x_, v_):
        return cp(x_, v_, w, edge_index)

    assert_equivariant(rotated_call, [cp.irreps_node, "cartesian_points"], cp.irreps_out, args_in=[x, v])


def test_edge_convolution_approximate_is_not_equivariant_and_reports_it():
    conv = EdgeConvolution("2x0e+2x1o", "0e+1o", backend="cp", **APPROXIMATE)
    report = conv.product.executor.report()
    assert not report.exact and report.max_residual > 0.1
    assert report.equivariance_error > 0.05
    x, v, w, edge_index = edge_inputs(conv, 4, 9)
    R = rand_matrix(dtype=torch.float64)
    D = conv.irreps_node.D_from_matrix(R)
    D_out = conv.irreps_out.D_from_matrix(R)
    moved = conv(x @ D.T, v @ R.T, w, edge_index)
    assert relative_error(moved, conv(x, v, w, edge_index) @ D_out.T) > 1e-3


# rank sweeps ending at the exact rank (fitted ranks up to 5: seconds)
SWEEPS = {
    ("1o", "1o", "1e"): [1, 2, 3, 4, 5, 6],
    ("2e", "1o", "1o"): [1, 2, 3, 4, 9],
    ("1o", "2e", "2o"): [1, 2, 3, 4, 14],
}


@pytest.mark.parametrize("path", list(SWEEPS), ids=["x".join(p) for p in SWEEPS])
def test_residual_and_equivariance_error_fall_with_the_rank(path):
    ir1, ir2, ir_out = path
    ranks = SWEEPS[path]
    args = (f"3x{ir1}", f"1x{ir2}", f"3x{ir_out}", [(0, 0, 0, "uvu", True)])
    reports = [
        TensorProduct(
            *args,
            shared_weights=False,
            internal_weights=False,
            backend="cp",
            backend_options={"rank": rank, "allow_approximate": True},
        ).executor.report()
        for rank in ranks
    ]
    residual = [r.paths[0].residual for r in reports]
    defect = [r.paths[0].equivariance_defect for r in reports]
    measured = [r.equivariance_error for r in reports]
    print(path, "residual", residual, "defect", defect, "measured", measured)
    assert residual[0] > 0.5 and all(b <= a for a, b in zip(residual, residual[1:]))
    assert all(b <= a + 1e-12 for a, b in zip(defect, defect[1:]))
    assert residual[-1] < 1e-14 and defect[-1] < 1e-14 and measured[-1] < 1e-12  # exact rank
    # the sampled error of the whole product tracks sqrt(2) x residual (its Haar-RMS value for a
    # least-squares fit with Gaussian inputs) and falls over coarse steps of the sweep
    for res, meas in zip(residual, measured):
        if res > 1e-3:
            assert 0.5 < meas / (math.sqrt(2) * res) < 2
    coarse = [measured[0], measured[3], measured[-1]]
    assert coarse[0] > coarse[1] > coarse[2]


def test_refuses_approximation_without_opt_in():
    args = ("2x1o+2x2e", "1x1o", "2x1e+2x2e+2x1o", [(0, 0, 0, "uvu", True), (1, 0, 2, "uvu", True)])
    with pytest.raises(ValueError, match="allow_approximate=True") as error:
        TensorProduct(*args, backend="cp", backend_options={"rank": 2})
    message = str(error.value)
    assert "not exactly equivariant" in message and "exact CP rank 6" in message
    assert "path 0 (2x1o x 1x1o -> 2x1e, uvu, weighted)" in message
    with pytest.raises(ValueError, match="allow_approximate=True"):
        EdgeConvolution("2x0e+2x1o", "0e+1o", backend="cp", rank=2)
    with pytest.raises(ValueError, match="needs rank="):
        TensorProduct(*args, backend="cp")
    for bad in (0, -3, 2.5, "half", True):
        with pytest.raises(ValueError, match="rank"):
            TensorProduct(*args, backend="cp", backend_options={"rank": bad, "allow_approximate": True})
    with pytest.raises(ValueError, match="takes no options"):
        EdgeConvolution("2x0e+2x1o", "0e+1o", rank=2)
    with pytest.raises(ValueError, match="only mmax"):
        EdgeConvolution("2x0e+2x1o", "0e+1o", backend="so2", rank=2)


def test_disk_cache_written_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path))
    fits = []
    original = cp_module._fit_rank

    def counting_fit(ls, rank, previous):
        fits.append((ls, rank))
        return original(ls, rank, previous)

    monkeypatch.setattr(cp_module, "_fit_rank", counting_fit)
    args = ("2x1o", "1x1o", "2x1e", [(0, 0, 0, "uvu", True)])
    options = {"rank": 3, "allow_approximate": True}
    first = TensorProduct(*args, backend="cp", backend_options=options)
    assert fits == [((1, 1, 1), 1), ((1, 1, 1), 2), ((1, 1, 1), 3)]  # ranks 1..3, each once
    files = sorted((tmp_path / "cp").iterdir())
    assert [f.name for f in files] == [
        f"cg_1_1_1_rank{r}_v{cp_module.ALGORITHM_VERSION}.npz" for r in (1, 2, 3)
    ]
    stamps = {f: f.stat().st_mtime_ns for f in files}

    second = TensorProduct(*args, backend="cp", backend_options=options)
    assert len(fits) == 3  # nothing refitted
    assert {f: f.stat().st_mtime_ns for f in sorted((tmp_path / "cp").iterdir())} == stamps
    x1, x2 = first.irreps_in1.randn(4, -1), first.irreps_in2.randn(4, -1)
    assert torch.equal(first(x1, x2, first.weight.detach()), second(x1, x2, first.weight.detach()))

    TensorProduct(*args, backend="cp", backend_options={**options, "rank": 4})
    assert fits[3:] == [((1, 1, 1), 4)]  # warm-started from the cached rank 3

    with np.load(files[-1], allow_pickle=False) as data:  # plain arrays, no pickles
        a, b, d = data["a"], data["b"], data["d"]
    assert a.shape == b.shape == d.shape == (3, 3) and a.dtype == np.float64
    residual = np.linalg.norm(
        np.einsum("ir,jr,kr->ijk", a, b, d) - wigner_3j(1, 1, 1, dtype=torch.float64).numpy()
    )
    assert residual == pytest.approx(second.executor.approximation_error, rel=1e-12)


def test_unreadable_cache_entry_is_refitted_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path))
    good = cp_factors(1, 1, 1, 2)
    path = tmp_path / "cp" / f"cg_1_1_1_rank2_v{cp_module.ALGORITHM_VERSION}.npz"
    path.write_bytes(b"not an npz file")
    with pytest.warns(UserWarning, match="unreadable CP cache"):
        again = cp_factors(1, 1, 1, 2)
    assert torch.equal(again.a, good.a) and torch.equal(again.d, good.d)


def test_fit_is_deterministic(tmp_path, monkeypatch):
    fits = []
    for folder in ("one", "two"):
        monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path / folder))
        fits.append(cp_factors(2, 1, 1, 3))
    assert all(torch.equal(getattr(fits[0], n), getattr(fits[1], n)) for n in "abd")


def test_gradcheck_and_gradgradcheck():
    tp = TensorProduct(
        "1x0e+1x1o",
        "1x1o+1x2e",
        "1x1e+1x1o+1x2e",
        all_paths("1x0e+1x1o", "1x1o+1x2e", "1x1e+1x1o+1x2e", "uvu"),
        shared_weights=False,
        internal_weights=False,
        backend="cp",
        backend_options=APPROXIMATE,
    )
    assert not tp.executor.exact
    x1 = tp.irreps_in1.randn(2, -1, dtype=torch.float64, requires_grad=True)
    x2 = tp.irreps_in2.randn(2, -1, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, tp.weight_numel, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tp, (x1, x2, w))
    assert torch.autograd.gradgradcheck(tp, (x1, x2, w))


def test_capability_record_and_expressivity():
    record = backend_capabilities("cp")
    assert not record.exact and record.max_derivative_order is None
    assert set(record.operations) == {"tensor_product", "edge_convolution"}
    assert set(record.dtypes) == {torch.float32, torch.float64}
    tp = TensorProduct("2x1o", "2x1o", "2x0e+2x1e", all_paths("2x1o", "2x1o", "2x0e+2x1e", "uvw"))
    report = expressivity(tp)
    assert "cp" in report.approximate and report["cp"].limitations == ()


def test_report_text():
    tp = TensorProduct(
        "2x1o", "1x1o", "2x1e", [(0, 0, 0, "uvu", True)], backend="cp", backend_options=APPROXIMATE
    )
    text = str(tp.executor.report())
    assert "cp rank 2" in text and "path 0 (1, 1, 1): rank 2/6" in text
    assert "approximate" in repr(tp.executor)


@pytest.mark.slow  # inductor's C++ compile takes tens of seconds on a 2-core CPU
def test_torch_compile_inference():
    conv = EdgeConvolution("2x0e+2x1o", "0e+1o+2e", backend="cp", **APPROXIMATE)
    assert_compiled_inference_matches(conv, edge_inputs(conv, 4, 10))
