"""Irrep / Irreps against e3nn (the oracle) on random cases, plus the representation property of D."""

import pickle

import pytest
import torch
from e3nn import o3
from hypothesis import given, settings
from hypothesis import strategies as st

from equitensor.irreps import Irrep, Irreps, MulIr
from equitensor.o3.rotations import rand_angles, rand_matrix

SETTINGS = settings(max_examples=150, deadline=None)

irrep_st = st.tuples(st.integers(0, 6), st.sampled_from([1, -1]))
terms_st = st.lists(st.tuples(st.integers(0, 6), irrep_st), max_size=7)


def _term_text(mul: int, l: int, p: int, style: int) -> str:
    """Spell one term several legal ways: with/without '1x', spaces, the 'y' parity."""
    par = "y" if p == (-1) ** l and style % 3 == 0 else {1: "e", -1: "o"}[p]
    if mul == 1 and style % 2 == 0:
        return f"{l}{par}"
    return f"{mul} x {l}{par}" if style % 4 == 1 else f"{mul}x{l}{par}"


@st.composite
def irreps_text(draw):
    terms = draw(terms_st)
    styles = draw(st.lists(st.integers(0, 11), min_size=len(terms), max_size=len(terms)))
    sep = draw(st.sampled_from(["+", " + ", "+ "]))
    return terms, sep.join(_term_text(m, l, p, s) for (m, (l, p)), s in zip(terms, styles, strict=True))


def same(ours: Irreps, theirs: o3.Irreps) -> bool:
    return [(m, ir.l, ir.p) for m, ir in ours] == [(m, ir.l, ir.p) for m, ir in theirs]


# -- Irrep --------------------------------------------------------------------------------------


@given(irrep_st)
@SETTINGS
def test_irrep_matches_e3nn(lp):
    l, p = lp
    ours, theirs = Irrep(l, p), o3.Irrep(l, p)
    assert ours == theirs == Irrep(str(theirs)) == Irrep((l, p)) == Irrep(ours)
    assert (ours.l, ours.p, ours.dim, ours.is_scalar()) == (l, p, theirs.dim, theirs.is_scalar())
    assert str(ours) == repr(ours) == repr(theirs)
    assert Irrep(f"{l}y") == o3.Irrep(f"{l}y")


@given(irrep_st, irrep_st)
@SETTINGS
def test_irrep_product_and_order(a, b):
    assert list(Irrep(*a) * Irrep(*b)) == list(o3.Irrep(*a) * o3.Irrep(*b))
    assert (Irrep(*a) < Irrep(*b)) == (o3.Irrep(*a) < o3.Irrep(*b))


def test_irrep_basics():
    assert sorted(Irrep(s) for s in ["1e", "0e", "1o", "0o"]) == ["0o", "0e", "1o", "1e"]
    assert list(Irrep.iterator(3)) == list(o3.Irrep.iterator(3))
    assert 3 * Irrep("1e") == Irreps("3x1e")
    assert Irrep("1o") + "2e" == Irreps("1o + 2e")
    assert Irrep("2e") in Irrep("1o") * Irrep("1o")
    assert Irrep("1o") == "1o" and Irrep("1o") != "1e" and Irrep("1o") != "garbage"
    assert {Irrep("1o"): 1}[Irrep(1, -1)] == 1
    assert pickle.loads(pickle.dumps(Irrep("3o"))) == Irrep("3o")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("1q",), "'1q'"),
        (("-1o",), "'-1o'"),
        (("",), "''"),
        ((-1, 1), "non-negative"),
        ((1, 0), "parity"),
        ((1, 2), "parity"),
        ((1.5, 1), "non-negative"),
        ((3,), "cannot interpret"),
    ],
)
def test_irrep_errors(args, match):
    with pytest.raises(ValueError, match=match):
        Irrep(*args)


# -- Irreps: parsing and description -------------------------------------------------------------


@given(irreps_text())
@SETTINGS
def test_irreps_parse_and_describe(case):
    terms, text = case
    ours, theirs = Irreps(text), o3.Irreps(text)
    assert same(ours, theirs)
    assert ours == Irreps(terms) == Irreps(theirs) == Irreps(str(ours)) == Irreps(ours) == text
    assert (
        Irreps([(m, Irrep(ir)) for m, ir in terms])
        == Irreps([(m, f"{Irrep(ir)}") for m, ir in terms])
        == ours
    )
    assert str(ours) == repr(ours) == repr(theirs)
    assert all(isinstance(t, MulIr) and t.dim == t.mul * t.ir.dim for t in ours)
    assert (ours.dim, ours.num_irreps, ours.ls) == (theirs.dim, theirs.num_irreps, theirs.ls)
    assert ours.slices() == theirs.slices()
    if theirs.ls:
        assert ours.lmax == theirs.lmax
    else:
        with pytest.raises(ValueError):
            _ = ours.lmax
    for lp in [(0, 1), (0, -1), (1, -1), (2, 1), (6, -1)]:
        assert ours.count(lp) == theirs.count(o3.Irrep(lp))
        assert (lp in ours) == (o3.Irrep(lp) in theirs)
    assert hash(ours) == hash(Irreps(text)) and pickle.loads(pickle.dumps(ours)) == ours


@given(terms_st, terms_st)
@SETTINGS
def test_irreps_transformations(a, b):
    ours, theirs = Irreps(a), o3.Irreps(a)
    assert same(ours.simplify(), theirs.simplify())
    assert same(ours.remove_zero_multiplicities(), theirs.remove_zero_multiplicities())
    assert same(ours.regroup(), theirs.regroup())
    s, t = ours.sort(), theirs.sort()
    assert same(s.irreps, t.irreps) and s.p == tuple(t.p) and s.inv == tuple(t.inv)
    assert [s.irreps[s.p[i]] for i in range(len(ours))] == list(ours)
    assert same(ours + Irreps(b), theirs + o3.Irreps(b))
    assert same(ours + str(Irreps(b)), theirs + o3.Irreps(b))
    assert same(3 * ours, 3 * theirs) and same(ours * 2, theirs * 2)
    assert same(ours[1:3], theirs[1:3])
    for lmax in range(4):
        assert same(ours.filter(lmax=lmax), theirs.filter(lmax=lmax))
    irs = [ir for _, ir in Irreps(b)]
    assert same(ours.filter(keep=irs), theirs.filter(keep=[o3.Irrep(ir) for ir in irs]))
    assert same(ours.filter(drop=irs), theirs.filter(drop=[o3.Irrep(ir) for ir in irs]))
    # with an irreps string e3nn keeps nothing (its Irrep(_MulIr) returns l); we keep what it names
    assert ours.filter(keep=str(Irreps(b))) == ours.filter(keep=irs)
    assert ours.filter(drop=str(Irreps(b))) == ours.filter(drop=irs)


def test_irreps_misc():
    assert Irreps("") == Irreps() == Irreps([]) == "" and len(Irreps("  ")) == 0
    assert str(Irreps("2x0e + 0o")) == "2x0e+1x0o"
    assert str(Irreps("0x2e")) == "0x2e"
    assert (
        Irreps(Irrep("1o")) == "1x1o" and Irreps(MulIr(2, "1o")) == "2x1o" and Irreps(["1o", "0e"]) == "1o+0e"
    )
    assert 2 * Irreps("0e + 1o") == "0e + 1o + 0e + 1o"
    assert "0e" + Irreps("1o") == "0e + 1o"
    assert Irreps("1e + 2e + 0e").filter(keep="2e + 2x1e") == "1e + 2e"
    assert Irreps("1e + 2e + 0e").filter(keep=lambda mul_ir: mul_ir.ir.l > 0) == "1e + 2e"
    assert Irreps("1e + 2e + 0e").filter(drop=Irrep("2e")) == "1e + 0e"
    with pytest.raises(ValueError, match="only one"):
        Irreps("0e").filter(keep="0e", lmax=1)
    with pytest.raises(NotImplementedError):
        Irreps("0e") * Irreps("0e")
    for lmax in range(6):
        for p in (1, -1):
            assert same(Irreps.spherical_harmonics(lmax, p), o3.Irreps.spherical_harmonics(lmax, p))


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("16x0e + 8x1q", "8x1q"),
        ("1o + ", ""),
        ("-1x0e", "-1x0e"),
        ("2x-1o", "2x-1o"),
        ("ax1o", "ax1o"),
        ("1x2x1o", "1x2x1o"),
        ("0e + 1.5x1o", "1.5x1o"),
        ("3x", "3x"),
        ("x1o", "x1o"),
        ("1o + 2p", "2p"),
    ],
)
def test_irreps_parse_errors_name_token(text, token):
    with pytest.raises(ValueError) as info:
        Irreps(text)
    assert f"'{token}'" in str(info.value) and repr(text) in str(info.value)


@pytest.mark.parametrize(
    "bad", [[(-1, (0, 1))], [(1, (-1, 1))], [(1, (0, 2))], [(1.0, (0, 1))], [(1, 2, 3)], [5]]
)
def test_irreps_bad_items(bad):
    with pytest.raises(ValueError):
        Irreps(bad)


# -- random tensors ------------------------------------------------------------------------------


def test_randn(dtype):
    irreps = Irreps("3x0e + 2x1o + 0x2e + 2o")
    x = irreps.randn(2, -1, 3, dtype=dtype, requires_grad=True)
    assert x.shape == (2, irreps.dim, 3) and x.dtype == dtype and x.requires_grad and x.is_leaf
    y = irreps.randn(4, -1, normalization="norm", dtype=dtype)
    for (mul, ir), s in zip(irreps, irreps.slices(), strict=True):
        norms = y[:, s].reshape(4, mul, ir.dim).norm(dim=-1)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    assert Irreps("").randn(5, -1, normalization="norm").shape == (5, 0)
    with pytest.raises(ValueError):
        irreps.randn(2, 3)
    with pytest.raises(ValueError):
        irreps.randn(-1, normalization="integral")


# -- representation matrices ---------------------------------------------------------------------

D_IRREPS = "2x0e + 0o + 1o + 1e + 2x2e + 2o + 3o + 4e + 0x5o + 6o"


@pytest.fixture
def e3nn64():
    """e3nn builds its Wigner generators in the default dtype: float64 only if that is the default."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield o3
    torch.set_default_dtype(old)


def _rand_O3(n: int) -> torch.Tensor:
    """n proper rotations then n improper ones (rotation times -1), float64."""
    R = rand_matrix(n, dtype=torch.float64)
    return torch.cat([R, -R])


def test_D_from_matrix_matches_e3nn(e3nn64):
    R = _rand_O3(6)
    ours, theirs = Irreps(D_IRREPS).D_from_matrix(R), o3.Irreps(D_IRREPS).D_from_matrix(R)
    assert ours.shape == (12, Irreps(D_IRREPS).dim, Irreps(D_IRREPS).dim)
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    for ir in ["0o", "1o", "1e", "2o", "5e"]:
        torch.testing.assert_close(
            Irrep(ir).D_from_matrix(R), o3.Irrep(ir).D_from_matrix(R), atol=1e-12, rtol=0
        )
    # a reflection through a plane (det -1, not of the form -R for a rotation in the sample)
    M = torch.diag(torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(
        Irreps(D_IRREPS).D_from_matrix(M), o3.Irreps(D_IRREPS).D_from_matrix(M), atol=1e-12, rtol=0
    )


def test_D_from_angles_and_quaternion_match_e3nn(e3nn64):
    a, b, c = rand_angles(5, dtype=torch.float64)
    k = torch.randint(0, 2, (5,)).double()
    ours = Irreps(D_IRREPS).D_from_angles(a, b, c, k)
    torch.testing.assert_close(ours, o3.Irreps(D_IRREPS).D_from_angles(a, b, c, k), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        Irreps(D_IRREPS).D_from_angles(a, b, c),
        o3.Irreps(D_IRREPS).D_from_angles(a, b, c),
        atol=1e-12,
        rtol=0,
    )
    q = o3.rand_quaternion(5, dtype=torch.float64)
    irreps = "2x0e + 1o + 2e + 3o"
    torch.testing.assert_close(
        Irreps(irreps).D_from_quaternion(q), o3.Irreps(irreps).D_from_quaternion(q), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        Irrep("3o").D_from_quaternion(q, k), o3.Irrep("3o").D_from_quaternion(q, k), atol=1e-12, rtol=0
    )


def test_D_is_a_representation(dtype, tol):
    irreps = Irreps(D_IRREPS)
    R1, R2 = _rand_O3(4).to(dtype), _rand_O3(4).flip(0).to(dtype)  # mixes proper and improper pairs
    D1, D2, D12 = irreps.D_from_matrix(R1), irreps.D_from_matrix(R2), irreps.D_from_matrix(R1 @ R2)
    assert D12.dtype == dtype
    atol = 100 * tol
    torch.testing.assert_close(D12, D1 @ D2, atol=atol, rtol=0)
    eye = torch.eye(irreps.dim, dtype=dtype).expand_as(D1)
    torch.testing.assert_close(D1 @ D1.transpose(-1, -2), eye, atol=atol, rtol=0)  # orthogonal
    torch.testing.assert_close(Irrep("1o").D_from_matrix(R1), R1, atol=atol, rtol=0)  # l=1 basis is (x, y, z)
    inversion = -torch.eye(3, dtype=dtype)
    expected = torch.diag(
        torch.cat([torch.full((mul * ir.dim,), float(ir.p), dtype=dtype) for mul, ir in irreps])
    )
    torch.testing.assert_close(irreps.D_from_matrix(inversion), expected, atol=atol, rtol=0)


def test_D_shapes():
    assert Irreps("").D_from_matrix(rand_matrix(3, 2, dtype=torch.float64)).shape == (3, 2, 0, 0)
    assert Irreps("1o + 2e").D_from_matrix(torch.eye(3)).shape == (8, 8)
    a, b, c = rand_angles(5)
    assert Irreps("2x1o").D_from_angles(a, b, c[:1]).shape == (5, 6, 6)


def test_slice_by_mul_matches_e3nn():
    from e3nn import o3 as e3o3

    from equitensor import Irreps

    for irreps, start, stop in [
        ("10x0e", 1, 4),
        ("10x0e + 10x1e", 5, 15),
        ("10x0e + 2e + 10x1e", 5, 15),
        ("3x1o + 2e", 0, 99),
    ]:
        ours = Irreps(irreps).slice_by_mul[start:stop]
        assert str(ours) == str(e3o3.Irreps(irreps).slice_by_mul[start:stop])


def test_irrep_lookup_by_attribute():
    from equitensor import Irrep
    from equitensor.o3 import irrep

    assert irrep.l0e == Irrep("0e") and irrep.l1y == Irrep("1o")
    with pytest.raises(AttributeError, match="l<degree><e|o|y>"):
        getattr(irrep, "x1o")  # noqa: B009
