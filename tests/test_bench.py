"""equitensor bench: every subcommand at tiny sizes writes well-formed results; the timing, counting,
checking and reporting pieces against independent oracles. No timing assertions."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from equitensor.bench import cli as bench_cli
from equitensor.bench import counts as cnt
from equitensor.bench import peers, report, timing
from equitensor.bench.cases import Case, Implementation
from equitensor.bench.passes import Layout, autograd_passes
from equitensor.bench.runner import (
    APPROXIMATION_MARGIN,
    TimingOptions,
    approximate_tolerance,
    max_relative_difference,
    run_case,
)
from equitensor.tp import TensorProduct

# the smallest settings that still exercise every piece: one repetition, no loops, no probe
FAST = ["--reps", "1", "--warmup", "1", "--min-rep-s", "0", "--no-probe", "--threads", "1"]


def run_bench(argv: list[str]) -> int:
    return bench_cli.main(["bench", *argv])


def bench_json(tmp_path, argv: list[str]) -> tuple[dict, list[dict]]:
    """Run ``equitensor bench`` with ``argv`` plus ``--json`` and its checked output: data and rows."""
    path = tmp_path / "bench.json"
    assert run_bench([*argv, "--json", str(path)]) == 0
    data = json.loads(path.read_text())
    assert {"meta", "cases", "rows"} <= set(data)
    for key in ("hardware", "versions", "peak_theoretical", "command", "protocol", "tolerance"):
        assert key in data["meta"], key
    return data, data["rows"]


def timed(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["implementation"], r["pass"]): r for r in rows if r["status"] == "timed"}


# ----------------------------------------------------------------------------- subcommands


def test_bench_tp_writes_json_csv_and_plots(tmp_path):
    data, rows = bench_json(
        tmp_path,
        ["tp", "--op", "gaunt", "--lmax", "1-2", "--channels", "2", "--batch", "4", "--passes", "fwd,fwd+bwd"]
        + ["--no-memory", *FAST]
        + ["--csv", str(tmp_path / "tp.csv"), "--plot", str(tmp_path / "plots" / "tp")],
    )
    gaunt = [r for r in rows if r["operation"] == "tp:gaunt"]
    names = {r["implementation"] for r in gaunt if r["status"] == "timed"}
    assert names == {"cg", "gaunt", "grid", "e3nn"}
    for r in gaunt:
        if r["status"] == "timed":
            assert r["median_s"] > 0 and r["reps"] == 1
            assert r["max_rel_diff"] < 2e-4
            assert r["speedup_vs_e3nn"] is not None
            if r["source"] == "equitensor":  # peers run their own algorithms: not counted
                assert r["flops"] > 0 and r["gflops"] > 0
    # cuEquivariance has no Gaunt product: skipped with a reason
    assert all(r["reason"] for r in rows if r["implementation"] == "cueq")
    with (tmp_path / "tp.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and set(report.CSV_FIELDS) == set(table[0])
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert any("speedup" in p.name for p in pngs) and any("time" in p.name for p in pngs)


def test_bench_tp_full_compares_cueq_at_one_channel(tmp_path):
    """The full product: cg, cp, e3nn and cuEquivariance; the Gaunt backends cannot express it and
    are skipped with the registry's reason."""
    pytest.importorskip("cuequivariance_torch")
    _, rows = bench_json(
        tmp_path,
        ["tp", "--op", "full", "--lmax", "2", "--channels", "1", "--batch", "4", "--passes", "fwd+bwd", *FAST]
        + ["--no-memory"],
    )
    assert {r["implementation"] for r in rows if r["status"] == "timed"} == {"cg", "cp", "e3nn", "cueq"}
    reasons = {r["implementation"]: r["reason"] for r in rows if r["status"] == "skipped"}
    assert set(reasons) == {"gaunt", "grid"} and all(
        "cannot compute" in reason for reason in reasons.values()
    )


def test_bench_conv_checks_so2_and_peers_with_double_backward(tmp_path):
    _, rows = bench_json(
        tmp_path,
        ["conv", "--lmax", "2", "--channels", "2", "--edges", "12", "--nodes", "3"]
        + ["--passes", "fwd+bwd+dbwd", "--no-memory", *FAST],
    )
    runs = timed(rows)
    assert ("cg", "fwd+bwd+dbwd") in runs and ("so2", "fwd+bwd+dbwd") in runs
    assert ("e3nn", "fwd+bwd+dbwd") in runs
    assert runs[("so2", "fwd+bwd+dbwd")]["max_rel_diff"] < 2e-4
    assert runs[("cp", "fwd+bwd+dbwd")]["max_rel_diff"] < 2e-4  # cp at full rank by default
    assert "rank full" in runs[("cp", "fwd+bwd+dbwd")]["note"]
    # counts are modelled for the forward only; double backward says so with None
    assert runs[("so2", "fwd+bwd+dbwd")]["flops"] is None


def test_bench_product_writes_json(tmp_path):
    data, rows = bench_json(
        tmp_path,
        ["product", "--lmax", "1", "--channels", "2", "--batch", "5", "--correlation", "2"]
        + ["--passes", "fwd,fwd+bwd", *FAST],
    )
    runs = timed(rows)
    assert runs[("cg", "fwd")]["flops"] > 0
    assert runs[("cg", "fwd")]["peak_memory_bytes"] is not None
    peer = [r for r in rows if r["implementation"] == "mace-torch"]
    if peers.unavailable("mace-torch"):
        assert peer and peer[0]["status"] == "skipped" and "not importable" in peer[0]["reason"]
    else:
        assert ("mace-torch", "fwd+bwd") in runs
    assert data["cases"][0]["shape"]["correlation"] == 2


def test_bench_model_mace_backends_and_tensornet(tmp_path):
    data, rows = bench_json(
        tmp_path,
        ["model", "--lmax", "1", "--channels", "4", "--atoms", "4", "--r-max", "3.0"]
        + ["--passes", "fwd+bwd", "--no-memory", *FAST],
    )
    ops = {(r["operation"], r["implementation"]) for r in rows if r["status"] == "timed"}
    expected = {("model:mace", b) for b in ("cg", "so2", "sparse")} | {("model:tensornet", "tensornet")}
    if not peers.unavailable("mace-torch"):
        expected.add(("model:mace", "mace-torch"))
    assert ops == expected
    mace = next(c for c in data["cases"] if c["operation"] == "model:mace")
    assert mace["shape"]["atoms"] == 4 and mace["shape"]["edges"] > 0


def test_bench_model_molecule(tmp_path):
    data, _ = bench_json(
        tmp_path,
        ["model", "--models", "tensornet", "--channels", "4", "--system", "molecule", "--molecule", "H2O"]
        + ["--passes", "fwd", "--no-memory", *FAST],
    )
    assert data["cases"][0]["shape"]["atoms"] == 3


def test_bench_tp_times_cp_at_full_rank_and_skips_it_for_the_gaunt_product(tmp_path):
    """cp is in tp's defaults: it computes the full product (exact construction, checked against
    cg at the default tolerance, its rank and residual in the JSON and the notes) and is skipped
    with the registry's reason for the Gaunt product."""
    data, rows = bench_json(
        tmp_path,
        ["tp", "--lmax", "2", "--channels", "2", "--batch", "4", "--passes", "fwd+bwd", "--peers", "none"]
        + ["--no-memory", *FAST],
    )
    cp_rows = [r for r in rows if r["implementation"] == "cp"]
    gaunt = next(r for r in cp_rows if r["operation"] == "tp:gaunt")
    assert gaunt["status"] == "skipped" and "does not compute Gaunt products" in gaunt["reason"]
    full = next(r for r in cp_rows if r["operation"] == "tp:full")
    assert full["status"] == "timed" and full["max_rel_diff"] < 2e-4 and full["tolerance"] == 2e-4
    assert "approximate backend" in full["note"] and "rank full" in full["note"]
    info = next(c for c in data["cases"] if c["operation"] == "tp:full")["implementations"]["cp"]["info"]
    assert info["cp_rank"] == "full" and info["cp_exact"] and info["max_path_residual"] < 1e-12


def test_bench_cp_below_the_exact_rank_is_checked_within_its_residual(tmp_path):
    """--cp-rank below a path's exact rank: approximate, opted in, its residual and measured
    equivariance error reported, the check's tolerance APPROXIMATION_MARGIN x the residual."""
    data, rows = bench_json(
        tmp_path,
        ["tp", "--op", "full", "--lmax", "2", "--channels", "2", "--batch", "4", "--cp-rank", "6"]
        + ["--backends", "cg,cp", "--peers", "none", "--passes", "fwd", "--no-memory", *FAST],
    )
    info = data["cases"][0]["implementations"]["cp"]["info"]
    assert info["cp_rank"] == 6 and not info["cp_exact"] and info["paths_below_exact_rank"] > 0
    assert info["max_path_residual"] > 1e-3 and info["equivariance_error"] > 1e-3
    row = timed(rows)[("cp", "fwd")]
    assert row["tolerance"] == pytest.approx(APPROXIMATION_MARGIN * info["max_path_residual"])
    assert "APPROXIMATE" in row["note"] and "rank 6" in row["note"]
    assert row["max_rel_diff"] > 1e-3  # it really differs from cg


def test_approximate_tolerance_and_cp_rank_parsing():
    assert approximate_tolerance(2e-4, None) == 2e-4
    assert approximate_tolerance(2e-4, 1e-9) == 2e-4
    assert approximate_tolerance(2e-4, 0.01) == pytest.approx(APPROXIMATION_MARGIN * 0.01)
    assert bench_cli.parse_cp_rank("full") == "full" and bench_cli.parse_cp_rank("8") == 8
    with pytest.raises(Exception, match="cp-rank"):
        bench_cli.parse_cp_rank("0")


def test_e3nn_basis_layout_maps_e3nn_products_to_ours():
    """Whatever e3nn is installed (0.4 flips some wigner_3j signs, 0.6 does not), its full
    product through the sign map equals ours."""
    pytest.importorskip("e3nn")
    from equitensor.tp import FullTensorProduct, spherical_irreps

    irreps = spherical_irreps(1, 2)
    ours = FullTensorProduct(irreps, irreps)
    theirs = peers.e3nn_o3().FullTensorProduct(str(irreps), str(irreps))
    layout, _ = peers.e3nn_basis_layout(ours.spec)
    back = (lambda t: t) if layout is None else layout.output_back
    x1, x2 = torch.randn(3, irreps.dim), torch.randn(3, irreps.dim)
    torch.testing.assert_close(back(theirs(x1, x2)), ours(x1, x2), rtol=1e-5, atol=1e-5)


def test_bench_product_mace_torch_peer_matches_in_float64(tmp_path):
    pytest.importorskip("mace.modules.symmetric_contraction")
    data, rows = bench_json(
        tmp_path,
        ["product", "--lmax", "2", "--channels", "3", "--batch", "5", "--correlation", "3"]
        + ["--dtype", "float64", "--passes", "fwd,fwd+bwd,fwd+bwd+dbwd", "--no-memory", *FAST],
    )
    runs = timed(rows)
    for pass_name in ("fwd", "fwd+bwd", "fwd+bwd+dbwd"):
        assert runs[("mace-torch", pass_name)]["max_rel_diff"] < 1e-12
    assert "SymmetricContraction" in data["cases"][0]["implementations"]["mace-torch"]["info"]["module"]


def test_bench_product_cueq_peer_matches_with_our_weights(tmp_path):
    """cuEquivariance's SymmetricContraction holding our weights (the weight map) computes our
    output and gradients in float64 (naive method on CPU)."""
    pytest.importorskip("cuequivariance_torch")
    data, rows = bench_json(
        tmp_path,
        ["product", "--lmax", "2", "--channels", "3", "--batch", "5", "--correlation", "3"]
        + ["--lmax-out", "2", "--peers", "cueq", "--backends", "cg", "--dtype", "float64"]
        + ["--passes", "fwd,fwd+bwd+dbwd", "--no-memory", *FAST],
    )
    runs = timed(rows)
    for pass_name in ("fwd", "fwd+bwd+dbwd"):
        row = runs[("cueq", pass_name)]
        assert row["max_rel_diff"] < 1e-12 and row["max_rel_diff"] < row["tolerance"]
    info = data["cases"][0]["implementations"]["cueq"]["info"]
    assert info["group"] == "O3_e3nn" and info["method"] == "naive"


def test_bench_model_mace_torch_peer_matches_energy_forces_and_training_gradients(tmp_path):
    pytest.importorskip("mace.modules.models")
    data, rows = bench_json(
        tmp_path,
        ["model", "--models", "mace", "--lmax", "2", "--channels", "4", "--atoms", "4", "--r-max", "3.0"]
        + ["--dtype", "float64", "--passes", "fwd,fwd+bwd,fwd+bwd+dbwd", "--no-memory", *FAST],
    )
    runs = timed(rows)
    for pass_name in ("fwd", "fwd+bwd", "fwd+bwd+dbwd"):
        assert runs[("mace-torch", pass_name)]["max_rel_diff"] < 1e-10
        assert runs[("so2", pass_name)]["max_rel_diff"] < 1e-10
    info = data["cases"][0]["implementations"]["mace-torch"]["info"]
    assert "ScaleShiftMACE" in info["model"]
    assert info["parameters"] == data["cases"][0]["implementations"]["cg"]["info"]["parameters"]
    assert torch.get_default_dtype() == torch.float32  # mace-torch's default dtype was restored


def test_bench_registered_in_the_equitensor_cli():
    from equitensor.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0


def test_bench_rejects_unknown_pass():
    with pytest.raises(SystemExit, match="unknown --passes"):
        run_bench(["tp", "--passes", "fwd,backward", *FAST])


# ----------------------------------------------------------------------------- pieces


def test_parse_ints():
    assert bench_cli.parse_ints("3") == [3]
    assert bench_cli.parse_ints("1-4") == [1, 2, 3, 4]
    assert bench_cli.parse_ints("0-1,5") == [0, 1, 5]


def test_round_robin_interleaves_and_counts_reps():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    result = timing.round_robin(fns, "cpu", warmup=1, reps=3, min_rep_s=0.0)
    assert calls[:3] == ["a", "b", "c"]  # warm-ups
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotating rounds
    assert all(t.reps == 3 and t.inner == 1 for t in result.values())


def test_timing_statistics_match_numpy():
    values = (0.5, 0.1, 0.4, 0.2, 0.9, 0.3)
    t = timing.Timing(values, inner=1, warmup=1, warmup_min_s=0.1)
    assert t.median_s == pytest.approx(np.median(values))
    assert t.q25_s == pytest.approx(np.percentile(values, 25))
    assert t.q75_s == pytest.approx(np.percentile(values, 75))
    assert t.spread == pytest.approx(
        (np.percentile(values, 75) - np.percentile(values, 25)) / np.median(values)
    )


def test_peak_memory_sees_a_known_allocation():
    size = 2_000_000  # float64 -> 16 MB, two alive at once

    def work():
        a = torch.ones(size, dtype=torch.float64)
        b = a * 2
        return float(b[0])

    measured = timing.peak_memory(work, "cpu")
    if measured["bytes"] is None:
        pytest.skip(measured["method"])
    assert 2 * 8 * size <= measured["bytes"] <= 2 * 8 * size + 1_000_000


def test_cg_nonzeros_against_e3nn():
    o3 = pytest.importorskip("e3nn.o3")
    for l1, l2, l3 in [(1, 1, 0), (1, 1, 1), (2, 1, 2), (2, 2, 4), (3, 2, 3)]:
        dense = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        assert cnt.cg_nonzeros(l1, l2, l3) == int((dense.abs() > 1e-10).sum())


def test_tensor_product_counts_by_hand():
    # 3x1o x 1x1o -> 3x0e, 'uvu' with weights: pairs = 3, nnz(1,1,0) = 3, weight flops 2 * 3 * 1
    tp = TensorProduct("3x1o", "1x1o", "3x0e", [(0, 0, 0, "uvu", True)], shared_weights=False)
    counts = cnt.tensor_product_counts(tp.spec, batch=10, itemsize=4, per_sample_weights=True)
    assert counts.flops == 10 * (3 * 2 * 3 + 2 * 3 * 1)
    assert counts.bytes_in == 4 * 10 * (9 + 3 + 3) and counts.bytes_out == 4 * 10 * 3
    assert cnt.pass_counts(counts, "fwd+bwd")[0] == counts.flops * 4  # x1, x2, w: one contraction each
    assert cnt.pass_counts(counts, "fwd+bwd+dbwd") == (None, None)
    assert cnt.fft_flops(4, 4) == 5 * 16 * 4


def test_fit_slope_recovers_a_power_law():
    ls = [1, 2, 3, 4, 6]
    assert report.fit_slope(ls, [2.0 * l**3.5 for l in ls]) == pytest.approx(3.5)
    assert report.fit_slope([0, 2], [1.0, 2.0]) is None  # L = 0 cannot be on a log axis


def test_max_relative_difference():
    ref = [torch.tensor([1.0, -4.0]), torch.zeros(2)]
    assert max_relative_difference([torch.tensor([1.0, -3.0]), torch.zeros(2)], ref) == pytest.approx(0.25)
    assert max_relative_difference([ref[0], torch.tensor([0.0, 0.5])], ref) == pytest.approx(0.5)


def _linear_case(scale_of_peer: float) -> Case:
    """y = A x: the reference and a peer that multiplies by ``scale_of_peer`` too much."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, generator=gen)
    x = torch.randn(4, 3, generator=gen)
    g, v = torch.randn(4, 3, generator=gen), [torch.randn(4, 3, generator=gen)]
    impls = []
    for name, factor in (("cg", 1.0), ("peer", scale_of_peer)):
        passes, back = autograd_passes(lambda t, f=factor: f * t @ a.T, [x], [], g, v)
        impls.append(Implementation(name, name, passes, back))
    return Case("toy", 1, 3, 4, "batch", {}, impls, {"absent": "not installed"})


def test_a_wrong_peer_is_reported_and_not_timed():
    options = TimingOptions(warmup=1, reps=1, min_rep_s=0.0, memory=False)
    rows, description = run_case(
        _linear_case(1.01),
        ["fwd", "fwd+bwd"],
        options,
        tol=1e-4,
        dtype=torch.float32,
        device="cpu",
        log=lambda m: None,
    )
    status = {(r["implementation"], r["pass"]): r["status"] for r in rows}
    assert status[("peer", None)] == "check failed"
    assert ("peer", "fwd") not in status and status[("cg", "fwd")] == "timed"
    assert status[("absent", None)] == "skipped"
    assert description["implementations"]["peer"]["check"]["max_rel_diff"] == pytest.approx(0.01, rel=1e-3)
    rows, _ = run_case(
        _linear_case(1.0), ["fwd"], options, tol=1e-4, dtype=torch.float32, device="cpu", log=lambda m: None
    )
    assert {(r["implementation"], r["status"]) for r in rows if r["pass"]} == {
        ("cg", "timed"),
        ("peer", "timed"),
    }


def test_layout_maps_peer_gradients_back():
    # a peer holding its input reversed along the last axis gives the reference's gradients back
    gen = torch.Generator().manual_seed(1)
    a, x = torch.randn(3, 3, generator=gen), torch.randn(2, 3, generator=gen)
    g, v = torch.randn(2, 3, generator=gen), [torch.randn(2, 3, generator=gen)]
    flip = lambda t: t.flip(-1)  # noqa: E731
    ours, back = autograd_passes(lambda t: (t @ a.T) ** 2, [x], [], g, v)
    theirs, back_theirs = autograd_passes(
        lambda t: (t.flip(-1) @ a.T) ** 2, [x], [], g, v, Layout(inputs_to=[flip], inputs_back=[flip])
    )
    expected = back("fwd+bwd+dbwd", ours["fwd+bwd+dbwd"]())
    got = back_theirs("fwd+bwd+dbwd", theirs["fwd+bwd+dbwd"]())
    assert max_relative_difference(got, expected) < 1e-6


def test_theoretical_peak_states_its_basis():
    from equitensor.bench.environment import theoretical_peaks

    peak = theoretical_peaks("cpu", torch.float32)
    assert peak["basis"]
    assert peak["bytes_per_s"] is None  # not readable from the OS: never invented
    if peak["flops_per_s"] is not None:
        assert math.isfinite(peak["flops_per_s"]) and peak["flops_per_s"] > 0
        assert "assumed" in peak["basis"]  # the FMA units per core: said, not hidden
