"""TensorProduct (reference ``cg`` backend) against e3nn's ``o3.TensorProduct`` as the oracle.

The core claim: given the same weight vector, equitensor returns e3nn's numbers (relative error
<= 1e-10 in float64) for every connection mode, on many seeded random instruction sets. Also
covered: the derived products, broadcasting and empty shapes, first and second derivatives,
equivariance under rotations and reflections, error messages and dtype/state_dict handling.

e3nn builds some tensors in torch's default dtype, so every e3nn module is constructed and called
with float64 as the default dtype (``_float64_default``).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import random

import pytest
import torch
from e3nn import o3
from tp_helpers import relative_error

from equitensor import (
    ElementwiseTensorProduct,
    FullTensorProduct,
    FullyConnectedTensorProduct,
    Irreps,
    TensorProduct,
)
from equitensor.testing import FLOAT_TOLERANCE, assert_equivariant, assert_gradients, random_irreps

MODES = ("uvw", "uvu", "uvv", "uuw", "uuu", "uvuv", "uvu<v", "u<vw")
PAIRED = ("uuw", "uuu", "uvu<v", "u<vw")  # modes that need mul_in1 == mul_in2
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


# --------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _float64_default():
    return _default_dtype(torch.float64)


def e3nn_tp(*args, **kwargs) -> o3.TensorProduct:
    with _float64_default():
        return o3.TensorProduct(*args, **kwargs)


def tp64(*args, **kwargs) -> TensorProduct:
    """Our TensorProduct built with float64 as the default dtype (float64 constants)."""
    with _float64_default():
        return TensorProduct(*args, **kwargs)


def call_e3nn(module, *args):
    """Call an e3nn module in float64 (inputs cast to float64)."""
    with _float64_default():
        return module(*[None if a is None else a.double() for a in args])


def assert_close_rel(got, expected, rtol, what=""):
    __tracebackhide__ = True
    err = relative_error(got, expected)
    assert err <= rtol, f"{what}: relative error {err:.3e} > {rtol:.0e}"
    return err


def _required_mul_out(mode: str, mul1: int, mul2: int, has_weight: bool) -> int | None:
    """The output multiplicity a mode forces, or None when it is free."""
    return {
        "uvw": None,
        "uvu": mul1,
        "uvv": mul2,
        "uuw": None if has_weight else 1,
        "uuu": mul1,
        "uvuv": mul1 * mul2,
        "uvu<v": mul1 * (mul1 - 1) // 2,
        "u<vw": None,
    }[mode]


def _path_shape(mode: str, mul1: int, mul2: int, mul_out: int) -> tuple[int, ...]:
    pairs = mul1 * (mul2 - 1) // 2
    return {
        "uvw": (mul1, mul2, mul_out),
        "uvu": (mul1, mul2),
        "uvv": (mul1, mul2),
        "uuw": (mul1, mul_out),
        "uuu": (mul1,),
        "uvuv": (mul1, mul2),
        "uvu<v": (pairs,),
        "u<vw": (pairs, mul_out),
    }[mode]


def random_case(seed: int, modes=MODES) -> dict:
    """A seeded random valid tensor product: irreps, instructions and constructor options.

    Instructions draw a random mode, input blocks that satisfy its multiplicity constraints and an
    allowed output irrep; they write to a new output block or reuse a compatible one (so several
    paths share an output and the 'element'/'path' normalizations matter). Output blocks are then
    shuffled, and sometimes an untouched block is added.
    """
    rng = random.Random(seed)
    in1 = Irreps(random_irreps(lmax=3, mul_max=4, len_min=1, len_max=4, rng=rng))
    in2 = Irreps(random_irreps(lmax=3, mul_max=4, len_min=1, len_max=4, rng=rng))
    if any(mode in PAIRED for mode in modes) and rng.random() < 0.7:
        # make paired modes likely to find partners: give in2 a block with the mul of a random in1 block
        mul, _ = in1[rng.randrange(len(in1))]
        in2 = in2 + Irreps([(mul, (rng.randint(0, 3), rng.choice((1, -1))))])

    out_blocks: list[tuple[int, tuple[int, int]]] = []
    instructions = []
    weight_numel = 0
    target = rng.randint(1, 6)
    for _ in range(60):
        if len(instructions) >= target:
            break
        mode = rng.choice(modes)
        i1 = rng.randrange(len(in1))
        mul1, ir1 = in1[i1]
        choices = [i for i, (mul, _) in enumerate(in2) if mode not in PAIRED or mul == mul1]
        if not choices:
            continue
        i2 = rng.choice(choices)
        mul2, ir2 = in2[i2]
        ir_out = rng.choice(ir1 * ir2)
        has_weight = mode in ("uvw", "u<vw") or rng.random() < 0.7
        required = _required_mul_out(mode, mul1, mul2, has_weight)
        reuse = [
            io
            for io, (mul, ir) in enumerate(out_blocks)
            if ir == (ir_out.l, ir_out.p) and (required is None or mul == required)
        ]
        if reuse and rng.random() < 0.8:
            io = rng.choice(reuse)
        else:
            mul_out = rng.randint(0, 4) if required is None else required
            out_blocks.append((mul_out, (ir_out.l, ir_out.p)))
            io = len(out_blocks) - 1
        ins = (i1, i2, io, mode, has_weight)
        if has_weight:
            weight_numel += math.prod(_path_shape(mode, mul1, mul2, out_blocks[io][0]))
        if rng.random() < 0.5:
            ins += (round(rng.uniform(0.1, 3.0), 3),)
        instructions.append(ins)
    if rng.random() < 0.2:  # an output block no instruction writes to
        out_blocks.append((rng.randint(1, 3), (rng.randint(0, 3), rng.choice((1, -1)))))
    perm = list(range(len(out_blocks)))
    rng.shuffle(perm)  # perm[old] = new position
    out = [None] * len(out_blocks)
    for old, new in enumerate(perm):
        out[new] = out_blocks[old]
    instructions = [(i1, i2, perm[io], *rest) for i1, i2, io, *rest in instructions]

    kwargs = {}
    if rng.random() < 0.8:
        kwargs["irrep_normalization"] = rng.choice(("component", "norm", "none"))
    if rng.random() < 0.8:
        kwargs["path_normalization"] = rng.choice(("element", "path", "none"))
    for name, irreps in (("in1_var", in1), ("in2_var", in2), ("out_var", out)):
        if rng.random() < 0.3:
            kwargs[name] = [round(rng.uniform(0.3, 3.0), 3) for _ in irreps]
    shared = rng.random() < 0.5
    batch = rng.choice([(5,), (2, 3), (1,)])
    return dict(
        irreps_in1=in1,
        irreps_in2=in2,
        irreps_out=Irreps(out),
        instructions=instructions,
        kwargs=kwargs,
        shared=shared,
        batch=batch,
    )


def nontrivial_case(seed: int, modes=MODES) -> dict:
    """The first random case from ``seed`` on with weights and a non-empty output."""
    for s in range(seed, seed + 100):
        case = random_case(s, modes)
        weighted = [ins for ins in case["instructions"] if ins[4]]
        if weighted and case["irreps_out"].dim and case["irreps_in1"].dim and case["irreps_in2"].dim:
            args = (case["irreps_in1"], case["irreps_in2"], case["irreps_out"], case["instructions"])
            if tp64(*args).weight_numel:
                return case
    raise AssertionError(f"no non-trivial case for {modes} from seed {seed}")


def build_pair(case: dict, dtype=torch.float64):
    """(ours in ``dtype``, e3nn in float64), both with external weights."""
    args = (case["irreps_in1"], case["irreps_in2"], case["irreps_out"], case["instructions"])
    options = dict(case["kwargs"], shared_weights=case["shared"], internal_weights=False)
    ref = e3nn_tp(*[str(a) for a in args[:3]], args[3], **options)
    with _default_dtype(dtype):
        ours = TensorProduct(*args, **options)
    return ours, ref


def random_inputs(case: dict, weight_numel: int, dtype=torch.float64):
    batch = case["batch"]
    x1 = torch.randn(*batch, case["irreps_in1"].dim, dtype=dtype)
    x2 = torch.randn(*batch, case["irreps_in2"].dim, dtype=dtype)
    if weight_numel == 0:
        weight = None
    elif case["shared"]:
        weight = torch.randn(weight_numel, dtype=dtype)
    else:
        weight = torch.randn(*batch, weight_numel, dtype=dtype)
    return x1, x2, weight


def check_against_e3nn(case: dict, dtype=torch.float64) -> float:
    """Compare structure and numbers with e3nn; return the relative error of the output."""
    ours, ref = build_pair(case, dtype)
    assert ours.weight_numel == ref.weight_numel
    assert len(ours.instructions) == len(ref.instructions)
    for user, mine, theirs in zip(case["instructions"], ours.instructions, ref.instructions):
        assert (mine.i_in1, mine.i_in2, mine.i_out) == (theirs.i_in1, theirs.i_in2, theirs.i_out)
        assert mine.connection_mode == theirs.connection_mode
        assert mine.has_weight == theirs.has_weight
        assert mine.path_shape == tuple(theirs.path_shape)
        # e3nn overwrites path_weight with the final coefficient; we keep both
        assert math.isclose(mine.coefficient, theirs.path_weight, rel_tol=1e-12, abs_tol=1e-300)
        assert mine.path_weight == (user[5] if len(user) == 6 else 1.0)
    x1, x2, weight = random_inputs(case, ours.weight_numel, dtype)
    got = ours(x1, x2, weight)
    assert got.dtype == dtype
    expected = call_e3nn(ref, x1, x2, weight)
    return assert_close_rel(got, expected, RTOL[dtype], f"{ours!r} {case['kwargs']}")


# ------------------------------------------------------------------- 1. random instruction sets


def test_random_generator_covers_every_mode_and_option():
    """The random cases below really exercise every mode, option and weight sharing."""
    cases = [random_case(seed) for seed in range(200)]
    modes = {ins[3] for case in cases for ins in case["instructions"]}
    assert modes == set(MODES)
    assert {ins[4] for case in cases for ins in case["instructions"] if ins[3] not in ("uvw", "u<vw")} == {
        True,
        False,
    }
    assert {case["kwargs"].get("irrep_normalization") for case in cases} >= {"component", "norm", "none"}
    assert {case["kwargs"].get("path_normalization") for case in cases} >= {"element", "path", "none"}
    assert {case["shared"] for case in cases} == {True, False}
    assert sum("in1_var" in case["kwargs"] for case in cases) > 20
    assert sum(len(ins) == 6 for case in cases for ins in case["instructions"]) > 100
    assert sum(0 in [mul for mul, _ in case["irreps_in1"]] for case in cases) > 20  # mul-0 blocks
    # several paths into one output block
    assert sum(len({ins[2] for ins in c["instructions"]}) < len(c["instructions"]) for c in cases) > 50


@pytest.mark.parametrize("seed", range(200))
def test_random_instructions_match_e3nn_float64(seed):
    check_against_e3nn(random_case(seed), torch.float64)


@pytest.mark.parametrize("seed", range(0, 200, 5))
def test_random_instructions_match_e3nn_float32(seed):
    check_against_e3nn(random_case(seed), torch.float32)


# ------------------------------------------------------------------------------ 2. each mode


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_matches_e3nn(mode, seed, dtype):
    case = nontrivial_case(1000 + 100 * seed, modes=(mode,))
    assert {ins[3] for ins in case["instructions"]} == {mode}
    check_against_e3nn(case, dtype)


HAND_CASES = {
    # mode: (in1, in2, out); multiplicities chosen so that every mode is non-trivial
    "uvw": ("3x1o", "2x1o", "4x1e"),
    "uvu": ("3x1o", "2x2e", "3x1o"),
    "uvv": ("3x1o", "2x2e", "2x2o"),
    "uuw": ("3x1o", "3x1e", "2x0o"),
    "uuu": ("3x2e", "3x1o", "3x1o"),
    "uvuv": ("3x1o", "2x1o", "6x2e"),
    "uvu<v": ("4x1o", "4x1o", "6x1e"),
    "u<vw": ("4x1o", "4x1o", "2x0e"),
}
SINGLE_PATHS = [
    (mode, has_weight)
    for mode in MODES
    for has_weight in (True, False)
    if has_weight or mode not in ("uvw", "u<vw")  # these two always have weights
]


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "per_sample"])
@pytest.mark.parametrize(("mode", "has_weight"), SINGLE_PATHS)
def test_each_mode_single_path(mode, has_weight, shared):
    in1, in2, out = HAND_CASES[mode]
    if not has_weight and mode == "uuw":
        out = "1x0o"  # without weights uuw sums over u into a single channel
    case = dict(
        irreps_in1=Irreps(in1),
        irreps_in2=Irreps(in2),
        irreps_out=Irreps(out),
        instructions=[(0, 0, 0, mode, has_weight, 0.7)],
        kwargs={},
        shared=shared,
        batch=(4,),
    )
    check_against_e3nn(case)


# ---------------------------------------------------------------------- 3. derived products


def _copy_weight(ours, ref):
    assert ours.weight_numel == ref.weight_numel
    if ours.weight_numel:
        with torch.no_grad():
            ours.weight.copy_(ref.weight)


@pytest.mark.parametrize("seed", range(12))
def test_fully_connected_matches_e3nn(seed):
    rng = random.Random(seed)
    in1, in2, out = (
        Irreps(random_irreps(lmax=3, mul_max=3, len_min=1, len_max=4, rng=rng)) for _ in range(3)
    )
    kwargs = {}
    if seed % 3:
        kwargs = dict(
            irrep_normalization=rng.choice(("component", "norm", "none")),
            path_normalization=rng.choice(("element", "path", "none")),
        )
    with _float64_default():
        ref = o3.FullyConnectedTensorProduct(str(in1), str(in2), str(out), **kwargs)
        ours = FullyConnectedTensorProduct(in1, in2, out, **kwargs)
    assert str(ours.irreps_out) == str(ref.irreps_out)
    assert [(i.i_in1, i.i_in2, i.i_out) for i in ours.instructions] == [
        (i.i_in1, i.i_in2, i.i_out) for i in ref.instructions
    ]
    _copy_weight(ours, ref)
    x1 = torch.randn(5, in1.dim, dtype=torch.float64)
    x2 = torch.randn(5, in2.dim, dtype=torch.float64)
    assert_close_rel(ours(x1, x2), call_e3nn(ref, x1, x2), 1e-10, repr(ours))


@pytest.mark.parametrize("normalization", ["element", "path"])
def test_element_dependent_linear_matches_e3nn_to_second_order(normalization):
    """x2 = scalars only with shared 'uvw' weights (MACE's element-dependent skip connection) takes
    the cg backend's weights-times-x2-first path: e3nn's values, first and second derivatives."""
    in1, in2, out = "4x0e + 3x1o + 2x2e + 4x1o", "3x0e", "2x0e + 5x1o + 3x2e"
    with _float64_default():
        ref = o3.FullyConnectedTensorProduct(in1, in2, out, path_normalization=normalization)
        ours = FullyConnectedTensorProduct(in1, in2, out, path_normalization=normalization)
    _copy_weight(ours, ref)
    x1 = torch.randn(6, Irreps(in1).dim, dtype=torch.float64)
    x2 = torch.nn.functional.one_hot(torch.tensor([0, 2, 1, 1, 0, 2]), 3).double() + 0.3
    weight = ours.weight.detach()
    mine = _derivatives(lambda a, b, w: ours(a, b, w), x1, x2, weight)
    with _float64_default():
        theirs = _derivatives(lambda a, b, w: call_e3nn(ref, a, b, w), x1, x2, weight)
    for name, a, b in zip(["out", "d/dx1", "d/dx2", "d/dw", "d2/dx1", "d2/dx2", "d2/dw"], mine, theirs):
        assert_close_rel(a, b, 1e-10, name)


FULL_CASES = [
    ("2x0e+3x1o", "1x1o+2x2e", None),
    ("2x0e+3x1o", "1x1o+2x2e", ["0e", "1o", "2e"]),
    ("1x0e+1x0e+2x1e", "3x1o+1x1o", None),  # unsimplified inputs
    ("2x1o+1x3e", "2x2o+1x0o", ["1e", "3o", "5e"]),
    ("1x1o", "1x1o", ["3o"]),  # the filter keeps nothing
    ("2x0e+0x1o", "1x2e", None),  # a mul-0 block
]


@pytest.mark.parametrize(("in1", "in2", "filter_ir_out"), FULL_CASES)
def test_full_tensor_product_matches_e3nn(in1, in2, filter_ir_out):
    with _float64_default():
        ref = o3.FullTensorProduct(in1, in2, filter_ir_out=filter_ir_out)
        ours = FullTensorProduct(in1, in2, filter_ir_out=filter_ir_out)
    assert str(ours.irreps_in1) == str(ref.irreps_in1)
    assert str(ours.irreps_in2) == str(ref.irreps_in2)
    assert str(ours.irreps_out) == str(ref.irreps_out)
    assert ours.weight_numel == ref.weight_numel == 0
    x1 = torch.randn(4, ours.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(4, ours.irreps_in2.dim, dtype=torch.float64)
    assert_close_rel(ours(x1, x2), call_e3nn(ref, x1, x2), 1e-10, repr(ours))


ELEMENTWISE_CASES = [
    ("3x0e+2x1o", "1x1o+4x2e", None),
    ("3x0e+2x1o", "1x1o+4x2e", ["1o", "2e", "3o"]),
    ("2x1o+1x1o+2x0e", "5x1e", None),
    ("4x2e", "1x0e+1x1o+2x2e", ["0e", "2e", "4e"]),
    ("1x3o", "1x3o", ["6e"]),
]


@pytest.mark.parametrize(("in1", "in2", "filter_ir_out"), ELEMENTWISE_CASES)
def test_elementwise_matches_e3nn(in1, in2, filter_ir_out):
    with _float64_default():
        ref = o3.ElementwiseTensorProduct(in1, in2, filter_ir_out=filter_ir_out)
        ours = ElementwiseTensorProduct(in1, in2, filter_ir_out=filter_ir_out)
    assert str(ours.irreps_in1) == str(ref.irreps_in1)
    assert str(ours.irreps_in2) == str(ref.irreps_in2)
    assert str(ours.irreps_out) == str(ref.irreps_out)
    x1 = torch.randn(4, ours.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(4, ours.irreps_in2.dim, dtype=torch.float64)
    assert_close_rel(ours(x1, x2), call_e3nn(ref, x1, x2), 1e-10, repr(ours))


def test_elementwise_splits_mismatched_multiplicities():
    tp = ElementwiseTensorProduct("3x0e+2x1o", "1x1o+4x2e")
    assert str(tp.irreps_in1) == "1x0e+2x0e+2x1o"
    assert str(tp.irreps_in2) == "1x1o+2x2e+2x2e"


@pytest.mark.parametrize("internal", [True, False])
def test_weighted_path_without_weight_entries(internal):
    args = ("1x1o", "1x1o", "2x0e", [(0, 0, 0, "u<vw", True)])
    tp = tp64(*args, internal_weights=internal)
    assert tp.weight_numel == 0
    x1 = torch.randn(3, 3, dtype=torch.float64)
    x2 = torch.randn(3, 3, dtype=torch.float64)
    expected = call_e3nn(e3nn_tp(*args, internal_weights=internal), x1, x2)
    assert torch.equal(tp(x1, x2), expected)  # zeros: u<v is empty for mul 1


# ---------------------------------------------------------------- 4. broadcasting and shapes


def _broadcast_tp(shared: bool):
    in1, in2, out = "2x0e+2x1o", "1x1o+2x2e", "2x1e+3x1o+1x1o"
    instructions = [
        (0, 0, 1, "uvw", True),  # 0e x 1o -> 1o
        (1, 0, 0, "uvu", True),  # 1o x 1o -> 1e (2 = mul1)
        (1, 1, 2, "uvw", True),  # 1o x 2e -> 1o
        (0, 0, 2, "uvv", False),  # 0e x 1o -> 1o (1 = mul2)
    ]
    options = dict(shared_weights=shared, internal_weights=False)
    return tp64(in1, in2, out, instructions, **options), e3nn_tp(in1, in2, out, instructions, **options)


@pytest.mark.parametrize(
    ("shape1", "shape2", "shape_w"),
    [
        ((2, 1), (1, 3), (2, 3)),
        ((2, 1), (1, 3), (3,)),
        ((2, 3), (3,), (2, 1)),
        ((4,), (4,), (1,)),
        ((), (3,), (3,)),
        ((2, 1, 1), (1, 3, 1), (1, 1, 4)),
    ],
)
def test_broadcasting_per_sample_weights(shape1, shape2, shape_w):
    ours, ref = _broadcast_tp(shared=False)
    x1 = torch.randn(*shape1, ours.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(*shape2, ours.irreps_in2.dim, dtype=torch.float64)
    w = torch.randn(*shape_w, ours.weight_numel, dtype=torch.float64)
    got = ours(x1, x2, w)
    batch = torch.broadcast_shapes(shape1, shape2, shape_w)
    assert got.shape == batch + (ours.irreps_out.dim,)
    assert_close_rel(got, call_e3nn(ref, x1, x2, w), 1e-10, "broadcast vs e3nn")
    # the explicit loop over the broadcast batch
    x1e, x2e, we = (t.expand(batch + t.shape[-1:]) for t in (x1, x2, w))
    for index in itertools.product(*map(range, batch)):
        one = ours(x1e[index], x2e[index], we[index])
        assert torch.allclose(got[index], one, rtol=1e-12, atol=1e-12)


def test_broadcasting_shared_weights():
    ours, ref = _broadcast_tp(shared=True)
    x1 = torch.randn(2, 1, ours.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(1, 3, ours.irreps_in2.dim, dtype=torch.float64)
    w = torch.randn(ours.weight_numel, dtype=torch.float64)
    got = ours(x1, x2, w)
    assert got.shape == (2, 3, ours.irreps_out.dim)
    assert_close_rel(got, call_e3nn(ref, x1, x2, w), 1e-10, "broadcast vs e3nn")
    for i, j in itertools.product(range(2), range(3)):
        assert torch.allclose(got[i, j], ours(x1[i, 0], x2[0, j], w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
def test_empty_batch(shared):
    ours, _ = _broadcast_tp(shared=shared)
    x1 = torch.randn(0, ours.irreps_in1.dim, requires_grad=True)
    x2 = torch.randn(0, ours.irreps_in2.dim)
    w = torch.randn(*(() if shared else (0,)), ours.weight_numel, requires_grad=True)
    out = ours(x1, x2, w)
    assert out.shape == (0, ours.irreps_out.dim)
    out.sum().backward()
    assert x1.grad.shape == x1.shape
    assert torch.equal(w.grad, torch.zeros_like(w))
    x1 = torch.randn(3, 0, ours.irreps_in1.dim)
    x2 = torch.randn(1, 1, ours.irreps_in2.dim)
    w = torch.randn(ours.weight_numel) if shared else torch.randn(3, 1, ours.weight_numel)
    assert ours(x1, x2, w).shape == (3, 0, ours.irreps_out.dim)


def test_mul_zero_blocks_match_e3nn():
    in1, in2, out = "0x0e+2x1o+0x2o", "3x1o+0x0o", "0x1o+2x1e+6x0e+0x2e"
    instructions = [
        (0, 0, 0, "uvw", True),  # empty input and output
        (1, 0, 1, "uvw", True),
        (1, 1, 1, "uvu", True),  # empty in2 block
        (2, 0, 3, "uvw", True),  # empty in1 and out
        (1, 0, 2, "uvuv", False),
        (1, 0, 3, "uvw", True),  # empty output only
    ]
    ours = tp64(in1, in2, out, instructions)
    ref = e3nn_tp(in1, in2, out, instructions)
    assert ours.weight_numel == ref.weight_numel
    x1 = torch.randn(5, ours.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(5, ours.irreps_in2.dim, dtype=torch.float64)
    w = torch.randn(ours.weight_numel, dtype=torch.float64)
    assert_close_rel(ours(x1, x2, w), call_e3nn(ref, x1, x2, w), 1e-10, "mul-0 blocks")


def test_empty_irreps_out():
    tp = TensorProduct("2x0e+1x1o", "1x1o", "", [])
    assert tp.weight_numel == 0
    out = tp(torch.randn(4, 5), torch.randn(4, 3))
    assert out.shape == (4, 0)
    assert tp(torch.randn(2, 3, 5), torch.randn(3, 3)).shape == (2, 3, 0)


def test_no_instructions_gives_zeros():
    tp = TensorProduct("2x0e", "1x1o", "3x1o+1x0e", [])
    out = tp(torch.randn(4, 2), torch.randn(4, 3))
    assert torch.equal(out, torch.zeros(4, 10))


def test_untouched_output_block_is_zero():
    in1, in2, out = "2x0e+1x1o", "1x1o", "3x1o+2x2e+1x0e"
    instructions = [(0, 0, 0, "uvw", True), (1, 0, 2, "uvw", True)]  # block 1 (2x2e) untouched
    ours = tp64(in1, in2, out, instructions)
    ref = e3nn_tp(in1, in2, out, instructions)
    x1 = torch.randn(6, 5, dtype=torch.float64)
    x2 = torch.randn(6, 3, dtype=torch.float64)
    w = torch.randn(ours.weight_numel, dtype=torch.float64)
    got = ours(x1, x2, w)
    assert torch.equal(got[:, 9:19], torch.zeros(6, 10, dtype=torch.float64))
    assert got[:, :9].abs().min() > 0 and got[:, 19:].abs().min() > 0
    assert_close_rel(got, call_e3nn(ref, x1, x2, w), 1e-10, "untouched block")


@pytest.mark.parametrize("seed", [7, 8])
def test_weight_views_match_e3nn(seed):
    case = nontrivial_case(seed)
    ours, ref = build_pair(case)
    w = torch.randn(*(() if case["shared"] else (3,)), ours.weight_numel, dtype=torch.float64)
    with _float64_default():
        theirs = list(ref.weight_views(w, yield_instruction=True))
        theirs_plain = list(ref.weight_views(w))
    mine = list(ours.weight_views(w, yield_instruction=True))
    assert len(mine) == len(theirs)
    for (i, ins, view), (i_ref, ins_ref, view_ref), plain in zip(mine, theirs, ours.weight_views(w)):
        assert i == i_ref and ins.path_shape == tuple(ins_ref.path_shape)
        assert torch.equal(view, view_ref) and torch.equal(plain, view_ref)
        assert torch.equal(ours.weight_view_for_instruction(i, w), ref.weight_view_for_instruction(i, w))
    assert len(theirs_plain) == len(mine)


# -------------------------------------------------------------------------------- 5. gradients

GRAD_CASES = {
    "uvw": ("2x0e+1x1o", "1x1o+1x0e", "2x1o+1x0e", [(0, 0, 0, "uvw", True), (1, 0, 1, "uvw", True)]),
    "uvu": ("2x1o", "2x1o+1x2e", "2x1e+2x2o", [(0, 0, 0, "uvu", True), (0, 1, 1, "uvu", True)]),
    "uvv": ("2x1o", "2x2e", "2x1o", [(0, 0, 0, "uvv", True)]),
    "uuw": ("2x1e", "2x1o", "2x1o", [(0, 0, 0, "uuw", True)]),
    "uuu": ("2x1o", "2x1o", "2x0e+2x1e", [(0, 0, 0, "uuu", True), (0, 0, 1, "uuu", False)]),
    "uvuv": ("2x1o", "1x1o+1x0e", "2x2e+2x1o", [(0, 0, 0, "uvuv", True), (0, 1, 1, "uvuv", True)]),
    "uvu<v": ("3x1o", "3x1o", "3x1e", [(0, 0, 0, "uvu<v", True)]),
    "u<vw": ("3x1o", "3x2e", "2x1o", [(0, 0, 0, "u<vw", True)]),
}


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_per_sample_weights(mode):
    in1, in2, out, instructions = GRAD_CASES[mode]
    tp = tp64(in1, in2, out, instructions, shared_weights=False)
    x1 = torch.randn(2, tp.irreps_in1.dim)
    x2 = torch.randn(2, tp.irreps_in2.dim)
    w = torch.randn(2, tp.weight_numel)
    assert_gradients(tp, x1, x2, w)


def test_gradcheck_shared_unweighted_and_broadcast():
    tp = tp64("2x1o", "1x1o+1x0e", "2x2e+2x1o", [(0, 0, 0, "uvu", False), (0, 1, 1, "uvu", True)])
    assert_gradients(tp, torch.randn(2, 1, 6), torch.randn(3, 4), torch.randn(tp.weight_numel))


def _derivatives(fn, x1, x2, w):
    """Output, first derivatives of a random projection and second derivatives of a random
    projection of those, with respect to (x1, x2, w)."""
    inputs = [x1.clone().requires_grad_(), x2.clone().requires_grad_(), w.clone().requires_grad_()]
    out = fn(*inputs)
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    first = torch.autograd.grad((out * v).sum(), inputs, create_graph=True)
    u = [torch.randn(g.shape, generator=gen, dtype=g.dtype) for g in first]
    scalar = sum((g * ui).sum() for g, ui in zip(first, u))
    second = torch.autograd.grad(scalar, inputs, allow_unused=True)
    second = [torch.zeros_like(x) if s is None else s for s, x in zip(second, inputs)]
    return [out.detach(), *[g.detach() for g in first], *second]


@pytest.mark.parametrize("seed", [3, 11, 42])
def test_first_and_second_derivatives_match_e3nn(seed):
    case = nontrivial_case(seed)
    case["shared"] = False
    ours, ref = build_pair(case)
    x1, x2, _ = random_inputs(case, 0)
    w = torch.randn(*case["batch"], ours.weight_numel, dtype=torch.float64)
    mine = _derivatives(ours, x1, x2, w)
    with _float64_default():
        theirs = _derivatives(ref, x1, x2, w)
    names = ["out", "d/dx1", "d/dx2", "d/dw", "d2/dx1", "d2/dx2", "d2/dw"]
    for name, a, b in zip(names, mine, theirs):
        assert_close_rel(a, b, 1e-10, name)


# ------------------------------------------------------------------------------ 6. equivariance


EQUIVARIANCE_MODULES = {
    "fctp": lambda: FullyConnectedTensorProduct(
        "2x0e+2x1o+1x2e", "1x0e+1x1o+1x2o", "3x0e+2x1o+2x1e+2x2e+1x3o"
    ),
    "full": lambda: FullTensorProduct("2x0e+1x1o+1x2e", "1x1o+1x2o"),
    "uvu": lambda: TensorProduct(
        "2x0e+3x1o",
        "1x1e+2x2o",
        "3x1o+3x2e+3x3e+2x2o",
        [(1, 0, 0, "uvu", True), (1, 1, 1, "uvu", True), (1, 1, 2, "uvu", False), (0, 1, 3, "uvu", True)],
    ),
}


@pytest.mark.parametrize("name", ["fctp", "full", "uvu"])
def test_equivariance(name, dtype):
    with _default_dtype(dtype):
        tp = EQUIVARIANCE_MODULES[name]()
    errors = assert_equivariant(
        tp,
        [tp.irreps_in1, tp.irreps_in2],
        tp.irreps_out,
        dtype=dtype,
        ntrials=2,
        tolerance=FLOAT_TOLERANCE[dtype],
    )
    assert set(errors) == {(0, False), (1, False)}  # rotations and rotations x inversion


def test_equivariance_check_detects_a_broken_product():
    tp = FullyConnectedTensorProduct("1x1o", "1x1o", "1x1e").double()

    def broken(x1, x2):
        return tp(x1, x2) + x1  # 1o is not 1e

    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(broken, ["1x1o", "1x1o"], "1x1e", dtype=torch.float64)


# ------------------------------------------------------------------------------------- 7. errors


@pytest.mark.parametrize(
    ("irreps", "instructions", "match"),
    [
        (("1x0e", "1x0e", "1x0e"), [(1, 0, 0, "uvw", True)], r"i_in1=1 is not a block index of 1x0e"),
        (("1x0e", "1x0e", "1x0e"), [(0, -1, 0, "uvw", True)], r"i_in2=-1 is not a block index"),
        (("1x0e", "1x0e", "1x0e"), [(0, 0, 3, "uvw", True)], r"i_out=3 is not a block index"),
        (("1x1o", "1x1o", "1x1o"), [(0, 0, 0, "uvw", True)], r"parity violation, 1o x 1o cannot give 1o"),
        (("1x1o", "1x1o", "1x3e"), [(0, 0, 0, "uvw", True)], r"triangle violation, 1o x 1o cannot give 3e"),
        (("2x1o", "3x1o", "3x1e"), [(0, 0, 0, "uvu", True)], r"'uvu' needs mul_in1 == mul_out, got 2 and 3"),
        (("2x1o", "3x1o", "2x1e"), [(0, 0, 0, "uvv", True)], r"'uvv' needs mul_in2 == mul_out, got 3 and 2"),
        (("2x1o", "3x1o", "2x1e"), [(0, 0, 0, "uuw", True)], r"'uuw' needs mul_in1 == mul_in2, got 2 and 3"),
        (("2x1o", "2x1o", "2x1e"), [(0, 0, 0, "uuw", False)], r"'uuw' without weights .* mul_out == 1"),
        (("2x1o", "2x1o", "3x1e"), [(0, 0, 0, "uuu", True)], r"'uuu' needs equal multiplicities"),
        (("2x1o", "3x1o", "5x1e"), [(0, 0, 0, "uvuv", True)], r"'uvuv' needs mul_out == mul_in1 \* mul_in2"),
        (("3x1o", "3x1o", "2x1e"), [(0, 0, 0, "uvu<v", True)], r"'uvu<v' needs mul_out == mul\(mul-1\)/2"),
        (("3x1o", "2x1o", "3x1e"), [(0, 0, 0, "u<vw", True)], r"'u<vw' needs mul_in1 == mul_in2"),
        (("1x1o", "1x1o", "1x1e"), [(0, 0, 0, "uvw", False)], r"'uvw' needs weights"),
        (("2x1o", "2x1o", "1x1e"), [(0, 0, 0, "u<vw", False)], r"'u<vw' needs weights"),
        (("1x1o", "1x1o", "1x1e"), [(0, 0, 0, "uvx", True)], r"unknown connection mode 'uvx'"),
        (("1x1o", "1x1o", "1x1e"), [(0, 0, 0, "uvw")], r"expected \(i_in1, i_in2, i_out, mode, has_weight"),
    ],
)
def test_invalid_instructions(irreps, instructions, match):
    with pytest.raises(ValueError, match=match):
        TensorProduct(*irreps, instructions)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(irrep_normalization="unit"), r"irrep_normalization must be one of .* got 'unit'"),
        (dict(path_normalization="fan_in"), r"path_normalization must be one of .* got 'fan_in'"),
        (dict(in1_var=[1.0, 2.0]), r"in1_var has 2 entries but the irreps 1x1o have 1 blocks"),
        (dict(out_var=[]), r"out_var has 0 entries"),
        (dict(internal_weights=True, shared_weights=False), r"internal_weights=True requires shared_weights"),
        (dict(backend="magic"), r"unknown tensor-product backend 'magic'; available: cg"),
    ],
)
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TensorProduct("1x1o", "1x1o", "2x1e", [(0, 0, 0, "uvw", True)], **kwargs)


def test_wrong_input_dimensions():
    tp = TensorProduct("2x0e+1x1o", "1x1o", "2x1o", [(0, 0, 0, "uvw", True)])
    with pytest.raises(ValueError, match=r"x1 has last dimension 4 but 2x0e\+1x1o needs 5"):
        tp(torch.randn(3, 4), torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"x2 has last dimension 5 but 1x1o needs 3"):
        tp(torch.randn(3, 5), torch.randn(3, 5))


def test_wrong_weight_shape():
    shared = TensorProduct("2x0e", "1x1o", "2x1o", [(0, 0, 0, "uvw", True)], internal_weights=False)
    assert shared.weight_numel == 4
    x1, x2 = torch.randn(3, 2), torch.randn(3, 3)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\), got \(5,\)"):
        shared(x1, x2, torch.randn(5))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\), got \(3, 4\)"):
        shared(x1, x2, torch.randn(3, 4))
    per_sample = TensorProduct("2x0e", "1x1o", "2x1o", [(0, 0, 0, "uvw", True)], shared_weights=False)
    with pytest.raises(ValueError, match=r"weight must have shape \(\.\.\., 4\), got \(3, 5\)"):
        per_sample(x1, x2, torch.randn(3, 5))


def test_missing_weights():
    for kwargs, match in [
        (dict(internal_weights=False), r"no internal weights: pass weight of shape \(4,\)"),
        (dict(shared_weights=False), r"no internal weights: pass weight of shape \(\.\.\., 4,\)"),
    ]:
        tp = TensorProduct("2x0e", "1x1o", "2x1o", [(0, 0, 0, "uvw", True)], **kwargs)
        assert tp.weight.shape == (0,)  # an empty tensor, as e3nn
        with pytest.raises(ValueError, match=match):
            tp(torch.randn(3, 2), torch.randn(3, 3))


def test_elementwise_needs_equal_number_of_irreps():
    with pytest.raises(ValueError, match=r"same number of irreps \(5 != 4\)"):
        ElementwiseTensorProduct("3x0e+2x1o", "4x0e")


# ------------------------------------------------------------------ 8. dtype, state_dict, defaults


def test_weight_defaults_follow_e3nn():
    with _float64_default():
        for kwargs in [{}, dict(shared_weights=False), dict(internal_weights=False)]:
            args = ("2x0e", "1x1o", "2x1o", [(0, 0, 0, "uvw", True)])
            ours, ref = TensorProduct(*args, **kwargs), o3.TensorProduct(*args, **kwargs)
            assert (ours.shared_weights, ours.internal_weights) == (ref.shared_weights, ref.internal_weights)
        unweighted = TensorProduct("2x1o", "2x1o", "2x0e", [(0, 0, 0, "uuu", False)])
        ref = o3.TensorProduct("2x1o", "2x1o", "2x0e", [(0, 0, 0, "uuu", False)])
        assert unweighted.internal_weights is False and unweighted.weight.shape == ref.weight.shape == (0,)


FCTP_IRREPS = ("2x0e+2x1o", "1x1o+1x2e", "2x1e+3x1o+1x2e")


@pytest.mark.parametrize("convert", ["to", "double"])
def test_to_float64(convert):
    with _default_dtype(torch.float32):
        tp = FullyConnectedTensorProduct(*FCTP_IRREPS)
    assert tp.weight.dtype == torch.float32
    tp = tp.to(torch.float64) if convert == "to" else tp.double()
    assert tp.weight.dtype == torch.float64
    x1 = torch.randn(4, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(4, tp.irreps_in2.dim, dtype=torch.float64)
    assert tp(x1, x2).dtype == torch.float64
    with _float64_default():
        ref = o3.FullyConnectedTensorProduct(*FCTP_IRREPS)
    _copy_weight(tp, ref)
    assert_close_rel(tp(x1, x2), call_e3nn(ref, x1, x2), 1e-10, "module converted to float64")


@pytest.mark.parametrize("how", ["to", "double", "float64_inputs"])
def test_float64_precision_of_a_module_built_in_float32(how):
    with _default_dtype(torch.float32):
        tp = FullyConnectedTensorProduct(*FCTP_IRREPS, internal_weights=False)
    tp = {"to": lambda m: m.to(torch.float64), "double": lambda m: m.double()}.get(how, lambda m: m)(tp)
    with _float64_default():
        ref = o3.FullyConnectedTensorProduct(*FCTP_IRREPS, internal_weights=False)
    x1 = torch.randn(4, tp.irreps_in1.dim, dtype=torch.float64)
    x2 = torch.randn(4, tp.irreps_in2.dim, dtype=torch.float64)
    w = torch.randn(tp.weight_numel, dtype=torch.float64)
    assert_close_rel(tp(x1, x2, w), call_e3nn(ref, x1, x2, w), 1e-10, how)


def test_float32_module():
    with _float64_default():
        tp = FullyConnectedTensorProduct(*FCTP_IRREPS).float()
        ref = o3.FullyConnectedTensorProduct(*FCTP_IRREPS)
    assert tp.weight.dtype == torch.float32
    _copy_weight(tp, ref)
    x1, x2 = torch.randn(4, tp.irreps_in1.dim), torch.randn(4, tp.irreps_in2.dim)
    out = tp(x1, x2)
    assert out.dtype == torch.float32
    assert_close_rel(out, call_e3nn(ref, x1, x2), 1e-5, "float32 module")


def test_state_dict_round_trip():
    a = FullyConnectedTensorProduct(*FCTP_IRREPS)
    b = FullyConnectedTensorProduct(*FCTP_IRREPS)
    assert set(a.state_dict()) == {"weight"}  # constants are not persistent
    assert not torch.equal(a.weight, b.weight)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer))
    assert torch.equal(a.weight, b.weight)
    x1, x2 = torch.randn(3, a.irreps_in1.dim), torch.randn(3, a.irreps_in2.dim)
    assert torch.equal(a(x1, x2), b(x1, x2))


def test_repr_names_irreps_and_backend():
    text = repr(FullyConnectedTensorProduct("2x0e", "1x1o", "2x1o"))
    assert "2x0e x 1x1o -> 2x1o" in text and "backend=cg" in text and "4 weights" in text


# ---------------------------------------------------------- e3nn's TensorProduct API, beyond the numbers


def test_right_output_mask_and_list_weights_match_e3nn():
    with _float64_default():
        args = ("2x0e + 1o + 2e", "0e + 1o", "3x0e + 2x1o + 1e")
        ours, ref = (
            FullyConnectedTensorProduct(*args, shared_weights=False),
            o3.FullyConnectedTensorProduct(*args, shared_weights=False, compile_right=True),
        )
        x1, x2 = torch.randn(4, ours.irreps_in1.dim), torch.randn(4, ours.irreps_in2.dim)
        w = torch.randn(4, ours.weight_numel)
        torch.testing.assert_close(ours.right(x2, w), ref.right(x2, w), atol=1e-12, rtol=0)
        torch.testing.assert_close(torch.einsum("zi,zij->zj", x1, ours.right(x2, w)), ours(x1, x2, w))
        assert torch.equal(ours.output_mask, ref.output_mask)
        views = [view.clone() for view in ours.weight_views(w)]
        torch.testing.assert_close(ours(x1, x2, views), ref(x1, x2, w), atol=1e-12, rtol=0)
        masked = TensorProduct(
            "0e + 1o", "0e", "0e + 1o + 1e", [(0, 0, 0, "uvw", True), (1, 0, 1, "uvw", True, 0.0)]
        )
        assert masked.output_mask.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_e3nn_codegen_switches_are_accepted_and_recorded():
    tp = TensorProduct(
        "0e",
        "0e",
        "0e",
        [(0, 0, 0, "uvw", True)],
        compile_left_right=False,
        compile_right=True,
        _specialized_code=False,
        _optimize_einsums=False,
    )
    assert tp._specialized_code is False and tp._optimize_einsums is False
    assert tp.right(torch.ones(1)).shape == (1, 1)


def test_impossible_instructions_are_value_and_assertion_errors():
    """e3nn asserts the selection rules and e3nn code catches AssertionError; ours is both."""
    for error in (ValueError, AssertionError):
        with pytest.raises(error, match="parity violation"):
            TensorProduct("0e", "0e", "0o", [(0, 0, 0, "uvw", True)])
