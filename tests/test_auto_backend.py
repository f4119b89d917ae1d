"""backend="auto": exact candidates only, equal to cg, measured once and cached, said openly.

Also: which edge convolutions the Gaunt backends (gaunt, grid) can compute: exactly the subset
that a Gaunt product expresses (per-edge weights per output degree), stated independently below
and checked numerically; every other spec is refused with a named reason per path (values and
derivatives on that subset: tests/test_edge_convolution_gaunt.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import subprocess
import sys

import pytest
import torch
from tp_helpers import first_call

from equitensor import EdgeConvolution, GauntProduct, TensorProduct, expressivity
from equitensor.o3.gaunt import gaunt_factor
from equitensor.o3.spherical_harmonics import spherical_harmonics
from equitensor.tp import FullyConnectedTensorProduct
from equitensor.tp.backends import auto, capabilities, make_executor
from equitensor.tp.backends.spherical_signal import gaunt_spec

GAUNT_TP_CANDIDATES = {"cg", "gaunt", "grid"}


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """Every test starts with empty memory and disk caches and no forced backend."""
    monkeypatch.setenv("EQUITENSOR_CACHE", str(tmp_path))
    monkeypatch.delenv(auto.FORCE_ENV, raising=False)
    monkeypatch.setattr(auto, "MEASURE_BATCH", 16)  # small measurements keep the tests fast
    auto.clear_memory_cache()
    yield tmp_path
    auto.clear_memory_cache()


@pytest.fixture
def measured(monkeypatch):
    """Counts measurements (each runs the real step once, so the candidate is exercised) and
    returns the times queued in ``measured.times`` in candidate order (default: real timing)."""

    class Counter:
        calls = 0
        times: list[float] = []

    real = auto.measure

    def counting(step, device):
        Counter.calls += 1
        if Counter.times:
            step()
            return Counter.times.pop(0)
        return real(step, device)

    monkeypatch.setattr(auto, "measure", counting)
    return Counter


def gaunt_tensor_product(**kwargs) -> TensorProduct:
    """A TensorProduct that gaunt and grid compute exactly: a Gaunt product spec (2 channels)."""
    spec = gaunt_spec(2, 2, 1, 2)
    instructions = [
        (i.i_in1, i.i_in2, i.i_out, i.connection_mode, i.has_weight, i.path_weight) for i in spec.instructions
    ]
    return TensorProduct(
        spec.irreps_in1,
        spec.irreps_in2,
        spec.irreps_out,
        instructions,
        irrep_normalization="none",
        path_normalization="none",
        **kwargs,
    )


def random(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    assert scale > 0
    assert (actual - expected).abs().max().item() <= 1e-10 * scale


# --------------------------------------------------------------------------------------------
# The choice


def test_tensor_product_auto_picks_an_exact_backend_and_equals_cg(measured):
    tp, ref = gaunt_tensor_product(backend="auto"), gaunt_tensor_product(backend="cg")
    assert tp.backend == "auto" and tp.backend_choice is None  # nothing chosen before resolving
    x1, x2 = random(7, tp.irreps_in1.dim), random(7, tp.irreps_in2.dim)
    with pytest.raises(RuntimeError, match=r"TensorProduct\(backend='auto'\) has not chosen its backend"):
        tp(x1, x2)  # choosing is an explicit step, never inside a forward call
    out = first_call(tp, x1, x2)
    choice = tp.backend_choice
    assert set(choice.candidates) == GAUNT_TP_CANDIDATES
    assert tp.backend == choice.backend in GAUNT_TP_CANDIDATES
    assert set(choice.times) == GAUNT_TP_CANDIDATES and measured.calls == 3
    assert choice.source == "measured" and choice.device == "cpu" and choice.dtype == "float64"
    assert "approximate" in choice.excluded["cp"] and "does not compute" in choice.excluded["so2"]
    assert_close(out, ref(x1, x2))
    assert f"backend={choice.backend}" in repr(tp)


def test_the_fastest_measured_candidate_wins(measured):
    measured.times = [3.0, 1.0, 2.0]  # in candidate (registry) order
    tp = gaunt_tensor_product(backend="auto")
    first_call(tp, random(2, tp.irreps_in1.dim), random(2, tp.irreps_in2.dim))
    choice = tp.backend_choice
    assert sorted(choice.times.values()) == [1.0, 2.0, 3.0]
    assert choice.times[choice.backend] == 1.0
    assert choice.ranked()[0] == (choice.backend, 1.0)


def test_gaunt_product_auto_equals_cg(measured):
    measured.times = [3.0, 1.0, 2.0] * 2
    gp, ref = GauntProduct(3, 2, 2, 3, backend="auto"), GauntProduct(3, 2, 2, 3, backend="cg")
    x1, x2 = random(5, gp.irreps_in1.dim), random(5, gp.irreps_in2.dim)
    out = first_call(gp, x1, x2)
    assert gp.backend in GAUNT_TP_CANDIDATES and set(gp.backend_choice.candidates) == GAUNT_TP_CANDIDATES
    assert measured.calls == 3
    assert_close(out, ref(x1, x2))


def test_edge_convolution_auto_equals_cg_values_and_gradients(measured):
    conv = EdgeConvolution("3x0e+3x1o", "0e+1o+2e", backend="auto")
    ref = EdgeConvolution("3x0e+3x1o", "0e+1o+2e", backend="cg")
    assert conv.weight_numel == ref.weight_numel  # known before the choice
    nodes = random(6, conv.irreps_node.dim).requires_grad_()
    vectors = random(15, 3).requires_grad_()
    weights = random(15, conv.weight_numel)
    edge_index = torch.randint(6, (2, 15))
    out = first_call(conv, nodes, vectors, weights, edge_index)
    assert conv.backend in set(conv.backend_choice.candidates) - {"cp"}
    assert {"cg", "so2"} <= set(conv.backend_choice.candidates)
    assert "cp" in conv.backend_choice.excluded
    expected = ref(nodes, vectors, weights, edge_index)
    assert_close(out, expected)
    cotangent = random(*out.shape)
    grads = torch.autograd.grad(out, (nodes, vectors), cotangent)
    expected_grads = torch.autograd.grad(expected, (nodes, vectors), cotangent)
    for got, want in zip(grads, expected_grads):
        assert_close(got, want)


def test_only_cg_computes_it_so_nothing_is_measured(measured, caplog):
    # uvw paths including the odd 1o x 1o -> 1e: gaunt/grid refuse, cp is approximate
    with caplog.at_level(logging.INFO, logger="equitensor.tp"):
        tp = FullyConnectedTensorProduct("2x0e+2x1o", "0e+1o", "2x0e+2x1o+1x1e", backend="auto")
        first_call(tp, torch.randn(3, tp.irreps_in1.dim), torch.randn(3, tp.irreps_in2.dim))
    assert tp.backend == "cg" and tp.backend_choice.source == "only candidate"
    assert tp.backend_choice.times == {} and measured.calls == 0
    assert "cannot compute this spec exactly: path 0" in tp.backend_choice.excluded["gaunt"]
    [message] = [r.getMessage() for r in caplog.records if r.name == "equitensor.tp"]
    assert "chose 'cg'" in message and "nothing measured" in message


def test_the_log_names_the_choice_and_the_times(measured, caplog):
    measured.times = [3e-3, 1e-3, 2e-3]
    with caplog.at_level(logging.INFO, logger="equitensor.tp"):
        tp = gaunt_tensor_product(backend="auto")
        first_call(tp, random(2, tp.irreps_in1.dim), random(2, tp.irreps_in2.dim))
    [record] = [r for r in caplog.records if r.name == "equitensor.tp"]
    assert record.levelno == logging.INFO
    message = record.getMessage()
    assert f"chose {tp.backend!r}" in message and "fastest of 3" in message
    for name, seconds in tp.backend_choice.times.items():
        assert f"{name} {seconds * 1e3:.3g} ms" in message
    assert "cp (approximate" in message


def test_the_choice_is_cached_in_memory_and_on_disk(measured, fresh_cache):
    measured.times = [3.0, 1.0, 2.0] * 2

    def run() -> TensorProduct:
        tp = gaunt_tensor_product(backend="auto")
        first_call(tp, random(2, tp.irreps_in1.dim), random(2, tp.irreps_in2.dim))
        return tp

    first = run()
    assert measured.calls == 3
    second = run()
    assert measured.calls == 3 and second.backend == first.backend
    assert second.backend_choice.source == "memory cache"
    [path] = (fresh_cache / "auto").glob("*.json")
    stored = json.loads(path.read_text())
    assert stored["choice"]["backend"] == first.backend and stored["key"]["dtype"] == "torch.float64"
    auto.clear_memory_cache()
    third = run()
    assert measured.calls == 3 and third.backend == first.backend
    assert third.backend_choice.source.startswith("disk cache")
    assert third.backend_choice.times == first.backend_choice.times


def test_the_cache_key_separates_dtypes(measured):
    measured.times = [3.0, 1.0, 2.0] * 2
    tp = gaunt_tensor_product(backend="auto")
    first_call(tp, random(2, tp.irreps_in1.dim), random(2, tp.irreps_in2.dim))
    tp32 = gaunt_tensor_product(backend="auto")
    first_call(tp32, torch.randn(2, tp.irreps_in1.dim), torch.randn(2, tp.irreps_in2.dim))
    assert measured.calls == 6 and tp32.backend_choice.dtype == "float32"


def test_an_unreadable_cache_file_is_measured_again(measured, fresh_cache):
    measured.times = [3.0, 1.0, 2.0] * 2
    tp = gaunt_tensor_product(backend="auto")
    first_call(tp, random(2, tp.irreps_in1.dim), random(2, tp.irreps_in2.dim))
    [path] = (fresh_cache / "auto").glob("*.json")
    path.write_text("{ not json")
    auto.clear_memory_cache()
    again = gaunt_tensor_product(backend="auto")
    with pytest.warns(UserWarning, match="ignoring the auto-backend cache file"):
        first_call(again, random(2, tp.irreps_in1.dim), random(2, tp.irreps_in2.dim))
    assert measured.calls == 6 and again.backend_choice.source == "measured"
    json.loads(path.read_text())  # rewritten whole


def test_an_approximate_backend_is_never_picked(measured, monkeypatch):
    """A registered approximate backend that is 'fastest' by far is still not a candidate."""
    fake = dataclasses.replace(
        capabilities.backend_capabilities("cg"), name="fake_approx", exact=False, error="made up"
    )
    monkeypatch.setitem(capabilities._REGISTRY, "fake_approx", fake)
    measured.times = [1.0, 1.0, 1.0, 1e-9]  # a fourth candidate would get the fastest time
    tp = gaunt_tensor_product(backend="auto")
    first_call(tp, random(2, tp.irreps_in1.dim), random(2, tp.irreps_in2.dim))
    choice = tp.backend_choice
    assert "fake_approx" not in choice.candidates and "fake_approx" not in choice.times
    assert "approximate" in choice.excluded["fake_approx"]
    assert choice.backend in GAUNT_TP_CANDIDATES and measured.calls == 3


def test_device_dtype_and_availability_exclude_backends(monkeypatch):
    spec = gaunt_tensor_product().spec
    cg = capabilities.backend_capabilities("cg")
    gpu_only = dataclasses.replace(cg, name="gpu_only", devices=("cuda",))
    no_cupy = dataclasses.replace(cg, name="no_cupy", available=lambda device: "CuPy is not installed")
    float64_only = dataclasses.replace(cg, name="float64_only", dtypes=(torch.float64,))
    for record in (gpu_only, no_cupy, float64_only):
        monkeypatch.setitem(capabilities._REGISTRY, record.name, record)
    candidates, excluded = auto.candidate_backends(
        "tensor_product",
        spec,
        torch.device("cpu"),
        torch.float32,
        names=["cg", "gpu_only", "no_cupy", "float64_only", "nope"],
    )
    assert candidates == ["cg"]
    assert "does not run on cpu" in excluded["gpu_only"]
    assert "unavailable here: CuPy is not installed" in excluded["no_cupy"]
    assert "does not support float32" in excluded["float64_only"]
    assert "no capability record" in excluded["nope"]


def test_edge_convolution_auto_never_picks_cuda_on_cpu(measured):
    conv = EdgeConvolution("2x0e+2x1o", "0e+1o", backend="auto")
    first_call(
        conv,
        random(4, conv.irreps_node.dim),
        random(6, 3),
        random(6, conv.weight_numel),
        torch.randint(4, (2, 6)),
    )
    assert "cuda" not in conv.backend_choice.candidates and conv.backend != "cuda"
    assert "cuda" in conv.backend_choice.excluded


def test_forced_backend(monkeypatch, measured):
    monkeypatch.setenv(auto.FORCE_ENV, "grid")
    tp = gaunt_tensor_product(backend="auto")
    first_call(tp, random(2, tp.irreps_in1.dim), random(2, tp.irreps_in2.dim))
    assert tp.backend == "grid" and tp.backend_choice.source.startswith("forced") and measured.calls == 0
    monkeypatch.setenv(auto.FORCE_ENV, "gaunt")
    odd = FullyConnectedTensorProduct("1x1o", "1x1o", "1x1e", backend="auto")
    with pytest.raises(ValueError, match="EQUITENSOR_AUTO_BACKEND='gaunt' cannot be used.*odd"):
        first_call(odd, torch.randn(1, 3), torch.randn(1, 3))
    monkeypatch.setenv(auto.FORCE_ENV, "so2")
    with pytest.raises(ValueError, match="does not compute tensor_product"):
        gaunt_tensor_product(backend="auto", device="cpu")


def test_eager_choice_with_device_and_options_refused(measured):
    tp = gaunt_tensor_product(backend="auto", device="cpu")
    assert tp.backend in GAUNT_TP_CANDIDATES and tp.backend_choice.dtype == "float32"
    conv = EdgeConvolution("2x0e", "0e+1o", backend="auto", device="cpu")
    assert conv.backend_choice is not None and conv.product is not None
    with pytest.raises(ValueError, match="takes no backend options"):
        gaunt_tensor_product(backend="auto", backend_options={"rank": 3})
    with pytest.raises(ValueError, match="takes no backend options"):
        EdgeConvolution("2x0e", "0e+1o", backend="auto", rank="full")


def test_measurement_leaves_the_global_rng_and_grad_mode_alone(measured):
    def draw_after(backend: str) -> torch.Tensor:
        torch.manual_seed(123)
        conv = EdgeConvolution("2x0e+2x1o", "0e+1o", backend=backend)
        with torch.no_grad():  # the first call may come without grad: the measurement still works
            first_call(
                conv,
                torch.ones(3, conv.irreps_node.dim),
                torch.ones(4, 3),
                torch.ones(4, conv.weight_numel),
                torch.zeros(2, 4, dtype=torch.long),
            )
            assert not torch.is_grad_enabled()
        return torch.rand(3)

    assert torch.equal(draw_after("auto"), draw_after("cg"))
    assert measured.calls == 3  # the exact CPU candidates of this product: cg, so2, sparse


# --------------------------------------------------------------------------------------------
# The Gaunt backends and the edge convolution


EDGE_SPECS = [
    # (node irreps, SH irreps, target, expressible by a Gaunt product in principle)
    ("4x0e", "0e+1o+2e", None, True),  # scalar nodes (MACE's first layer): one path per degree
    ("4x1o", "1o", "0e+2e", True),  # 1 x 1 -> 0, 2: even, distinct output degrees
    ("4x0e+4x1o", "0e+1o+2e", None, False),  # two paths into 1o (and odd paths)
    ("4x1o", "1o", None, False),  # the odd path 1o x 1o -> 1e
    ("2x0e+2x1o+2x2e", "0e+1o+2e+3o", "0e+1o+2e+3o", False),
    ("3x2e", "2e", "0e+2e+4e", True),
    ("3x2e", "2e", "0e+4e", True),  # the coupling 2 x 2 -> 2 lands in no output degree
    ("2x0e+2x2e", "2e", "2e", False),  # two paths into 2e
    ("3x1e", "0e+1o", "0o+1e", True),  # parities do not matter, degrees do
]


def _degrees(conv: EdgeConvolution, ins) -> tuple[int, int, int]:
    spec = conv.spec
    return spec.irreps_in1[ins.i_in1].ir.l, spec.irreps_in2[ins.i_in2].ir.l, spec.irreps_out[ins.i_out].ir.l


def gaunt_expressible_in_principle(conv: EdgeConvolution) -> bool:
    """A Gaunt product (pointwise product on the sphere of the node signal and the SH, then
    per-edge, per-channel weights per output degree) equals the edge convolution iff every path
    is even, no two paths share an output degree (the product sums couplings into one degree,
    the convolution keeps one block per path with its own weights), and every even coupling
    of the used degrees is a path (the product cannot leave one out)."""
    paths = [_degrees(conv, ins) for ins in conv.spec.instructions]
    if any(sum(ls) % 2 for ls in paths) or len({l3 for *_, l3 in paths}) < len(paths):
        return False
    used1, used2, used3 = ({ls[k] for ls in paths} for k in range(3))
    couplings = {
        (a, b, c)
        for a in used1
        for b in used2
        for c in used3
        if abs(a - b) <= c <= a + b and (a + b + c) % 2 == 0
    }
    return couplings == set(paths)


@pytest.mark.parametrize("node, sh, target, in_principle", EDGE_SPECS)
@pytest.mark.parametrize("backend", ["gaunt", "grid"])
def test_gaunt_backends_compute_exactly_the_in_principle_edge_convolutions(
    node, sh, target, in_principle, backend
):
    """The backends' predicate agrees with the criterion above; what they refuse names every
    path with its reasons (why it is not a Gaunt product, and why not the edge form)."""
    conv = EdgeConvolution(node, sh, target)
    assert gaunt_expressible_in_principle(conv) == in_principle
    report = expressivity(conv)
    fit = report[backend]
    if in_principle:
        assert fit.status == "exact" and backend in report.exact and fit.limitations == ()
        assert EdgeConvolution(node, sh, target, backend=backend).backend == backend
        return
    with pytest.raises(ValueError, match=f"(?s)backend '{backend}' cannot compute.*path 0 "):
        EdgeConvolution(node, sh, target, backend=backend)
    assert fit.status == "no" and backend not in report.exact
    n = len(conv.spec.instructions)
    assert fit.paths_not_expressible == tuple(range(n))  # every path is named, with its reasons
    for lim in fit.limitations:
        if lim.instruction is None:  # spec-wide: why the edge form does not apply
            assert lim.reason.startswith("As an edge convolution")
            continue
        ins = conv.spec.instructions[lim.instruction]
        assert f"path {lim.instruction} (" in lim.reason
        assert "per-path weights cannot be expressed" in lim.reason
        assert ("l1+l2+l3 is odd" in lim.reason) == (sum(_degrees(conv, ins)) % 2 == 1)
    with pytest.raises(ValueError, match=f"(?s)backend '{backend}' cannot compute.*path 0 "):
        make_executor(backend, conv.spec)
    assert f"{backend}:" in str(report) and "per-path weights cannot be expressed" in str(report)


@pytest.mark.parametrize("node, sh, target", [spec[:3] for spec in EDGE_SPECS if spec[3]])
def test_the_in_principle_subset_is_a_gaunt_product_with_per_degree_edge_weights(node, sh, target):
    """Evidence for the criterion above: on that subset the cg edge messages equal a GauntProduct
    (node signal x SH broadcast over channels) times one weight per edge, channel and output
    degree, which is what the gaunt/grid edge convolutions compute."""
    conv = EdgeConvolution(node, sh, target, backend="cg")
    channels = conv.irreps_node[0].mul
    paths = [_degrees(conv, ins) for ins in conv.spec.instructions]
    lmax1, lmax2, lmax3 = (max(ls[k] for ls in paths) for k in range(3))
    product = GauntProduct(channels, lmax1, lmax2, lmax3, backend="gaunt", weights=False).double()
    edges = 9
    nodes, vectors, weights = (
        random(edges, conv.irreps_node.dim),
        random(edges, 3),
        random(edges, conv.weight_numel),
    )
    ends = torch.arange(edges)
    messages = conv(nodes, vectors, weights, torch.stack([ends, ends]))  # one edge per receiver

    def signal(x: torch.Tensor, irreps, lmax: int) -> torch.Tensor:
        """Features with one block per degree (multiplicity C, or 1: broadcast over the channels)
        as the spherical signal Cx0e + Cx1o + ... up to lmax (mul_ir), missing degrees 0."""
        blocks = x.split([mul * ir.dim for mul, ir in irreps], dim=-1)
        per_degree = {
            ir.l: block.reshape(edges, mul, ir.dim).expand(edges, channels, ir.dim)
            for (mul, ir), block in zip(irreps, blocks)
        }
        zero = torch.zeros(edges, channels, 0, dtype=torch.float64)
        return torch.cat(
            [
                per_degree.get(l, zero.new_zeros(edges, channels, 2 * l + 1)).reshape(edges, -1)
                for l in range(lmax + 1)
            ],
            dim=-1,
        )

    sh_values = spherical_harmonics(conv.irreps_sh, vectors, normalize=True, normalization="component")
    gaunt_out = product(signal(nodes, conv.irreps_node, lmax1), signal(sh_values, conv.irreps_sh, lmax2))
    by_degree = gaunt_out.split([channels * (2 * l + 1) for l in range(lmax3 + 1)], dim=-1)
    expected_blocks = {}
    views = weights.split([ins.weight_numel for ins in conv.spec.instructions], dim=-1)
    for ins, w, (l1, l2, l3) in zip(conv.spec.instructions, views, paths):
        ratio = ins.coefficient / (math.sqrt(4 * math.pi) * gaunt_factor(l1, l2, l3))
        block = by_degree[l3].reshape(edges, channels, 2 * l3 + 1)
        expected_blocks[ins.i_out] = (ratio * w.reshape(edges, channels, 1) * block).reshape(edges, -1)
    expected = torch.cat([expected_blocks[i] for i in range(len(conv.irreps_out))], dim=-1)
    assert_close(messages, expected)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_cuda_chooses_for_the_gpu_and_equals_cg(measured):
    device = torch.device("cuda")
    tp, ref = gaunt_tensor_product(backend="auto"), gaunt_tensor_product(backend="cg")
    x1, x2 = random(7, tp.irreps_in1.dim), random(7, tp.irreps_in2.dim)
    out = tp(x1.to(device), x2.to(device))
    assert tp.backend_choice.device.startswith("cuda") and tp.backend in GAUNT_TP_CANDIDATES
    assert_close(out.cpu(), ref(x1, x2))
    conv = EdgeConvolution("8x0e+8x1o", "0e+1o+2e", backend="auto", device=device)
    assert conv.backend_choice.device.startswith("cuda") and conv.backend != "cp"
    reference = EdgeConvolution("8x0e+8x1o", "0e+1o+2e", backend="cg")
    nodes, vectors, weights = random(6, conv.irreps_node.dim), random(20, 3), random(20, conv.weight_numel)
    edge_index = torch.randint(6, (2, 20))
    got = conv(nodes.to(device), vectors.to(device), weights.to(device), edge_index.to(device))
    assert_close(got.cpu(), reference(nodes, vectors, weights, edge_index))


RANKS_SCRIPT = """
import os, sys, torch, torch.distributed as dist
from equitensor import GauntProduct, resolve_backends
dist.init_process_group("gloo", init_method=f"file://{sys.argv[1]}", rank=int(sys.argv[2]), world_size=2)
gp = GauntProduct(3, 2, 2, 3, backend="auto")
choices = resolve_backends(gp, "cpu", torch.float64)
print(dist.get_rank(), gp.backend, choices[""].source)
dist.destroy_process_group()
"""


def test_distributed_ranks_run_rank_zeros_choice(tmp_path):
    """Each rank would choose another backend on its own (forced differently here); after
    resolve_backends both run rank 0's choice, and rank 1 measured nothing."""
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    env = dict(os.environ, EQUITENSOR_CACHE=str(tmp_path / "cache"))
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "rendezvous"), str(rank)],
            env=dict(env, EQUITENSOR_AUTO_BACKEND=("grid", "gaunt")[rank]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in outputs]
    lines = sorted(out.strip() for out, _ in outputs)
    assert [line.split()[:2] for line in lines] == [["0", "grid"], ["1", "grid"]]
    assert all(line.split()[2].startswith("forced") for line in lines)  # rank 0's choice, received
