"""Generalised CG coefficients and MACE's symmetric contraction, against e3nn-built references.

Oracles: e3nn's ``wigner_3j`` (coupling tensors rebuilt path by path in MACE's order), e3nn's
Wigner D matrices (equivariance, and the null space of the equivariance constraint, which gives
the dimension of the space of symmetric equivariant maps independently of any CG algebra).
"""

import itertools

import pytest
import torch
from e3nn import o3

from equitensor.nn import SymmetricContraction, generalized_cg
from equitensor.testing import assert_equivariant


def e3nn_blocks(irreps: str) -> list[tuple[o3.Irrep, slice]]:
    irreps = o3.Irreps(irreps)
    return [(ir, sl) for (_, ir), sl in zip(irreps, irreps.slices())]


def reference_level2(irreps: str) -> list[tuple[o3.Irrep, torch.Tensor]]:
    """All (l1 x l2 -> l12) couplings as (l12, tensor (2l12+1, D, D)), sorted stably by l12."""
    dim = o3.Irreps(irreps).dim
    paths = []
    for ir1, sl1 in e3nn_blocks(irreps):
        for ir2, sl2 in e3nn_blocks(irreps):
            for ir12 in ir1 * ir2:
                t = torch.zeros(ir12.dim, dim, dim, dtype=torch.float64)
                t[:, sl1, sl2] = o3.wigner_3j(ir12.l, ir1.l, ir2.l, dtype=torch.float64) * ir12.dim**0.5
                paths.append((ir12, t))
    return sorted(paths, key=lambda p: p[0])


def reference_U(irreps: str, ir_out: str, nu: int) -> torch.Tensor:
    """MACE's coupling basis rebuilt from e3nn's wigner_3j, shape (2L+1, D, .., D, P)."""
    target, dim = o3.Irrep(ir_out), o3.Irreps(irreps).dim
    columns = []
    if nu == 1:
        for ir, sl in e3nn_blocks(irreps):
            if ir == target:
                columns.append(torch.eye(dim, dtype=torch.float64)[sl])
    elif nu == 2:
        for ir1, sl1 in e3nn_blocks(irreps):  # level 1 is in input order, not sorted
            for ir2, sl2 in e3nn_blocks(irreps):
                if target in ir1 * ir2:
                    t = torch.zeros(target.dim, dim, dim, dtype=torch.float64)
                    t[:, sl1, sl2] = (
                        o3.wigner_3j(target.l, ir1.l, ir2.l, dtype=torch.float64) * target.dim**0.5
                    )
                    columns.append(t)
    else:
        for ir12, left in reference_level2(irreps):
            for ir3, sl3 in e3nn_blocks(irreps):
                if target in ir12 * ir3:
                    cg = o3.wigner_3j(target.l, ir12.l, ir3.l, dtype=torch.float64) * target.dim**0.5
                    t = torch.zeros(target.dim, dim, dim, dim, dtype=torch.float64)
                    t[..., sl3] = torch.einsum("axy,oab->oxyb", left, cg)
                    columns.append(t)
    shape = (target.dim,) + (dim,) * nu
    if not columns:
        return torch.zeros(shape + (0,), dtype=torch.float64)
    return torch.stack(columns, -1)


CASES = [
    ("0e+1o", "0e", 1),
    ("0e+1o", "1o", 2),
    ("0e+1o", "1e", 2),
    ("0e+1o+2e", "0e", 2),
    ("0e+1o+2e", "2e", 2),
    ("0e+1o", "0e", 3),
    ("0e+1o", "1o", 3),
    ("0e+1o+2e", "1o", 3),
    ("0e+1o+2e+3o", "0e", 3),
    ("0e+0o+1e+1o", "0o", 3),
]


@pytest.mark.parametrize("irreps, ir_out, nu", CASES)
def test_generalized_cg_matches_e3nn_reference(irreps, ir_out, nu):
    ours = generalized_cg(irreps, ir_out, nu)
    expected = reference_U(irreps, ir_out, nu)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-13)


def test_mace_path_counts_for_lmax3():
    # Number of coupling paths of MACE's default (non-reduced) U_matrix_real for 0e+1o+2e+3o,
    # counted from the selection rules (|l1-l2| <= l12 <= l1+l2, parity) independently of the code.
    ls = [0, 1, 2, 3]

    def paths(L, parity, nu):
        if nu == 1:
            return sum(1 for l in ls if l == L and (-1) ** l == parity)
        total = 0
        for l1, l2 in itertools.product(ls, ls):
            for l12 in range(abs(l1 - l2), l1 + l2 + 1):
                p12 = (-1) ** (l1 + l2)
                if nu == 2:
                    total += l12 == L and p12 == parity
                else:
                    total += sum(
                        1 for l3 in ls if abs(l12 - l3) <= L <= l12 + l3 and p12 * (-1) ** l3 == parity
                    )
        return total

    for ir_out, (L, parity) in [("0e", (0, 1)), ("1o", (1, -1)), ("2e", (2, 1))]:
        counts = [generalized_cg("0e+1o+2e+3o", ir_out, nu).shape[-1] for nu in (1, 2, 3)]
        assert counts == [paths(L, parity, nu) for nu in (1, 2, 3)]


def e3nn_D(irreps: str, R: torch.Tensor) -> torch.Tensor:
    """e3nn's Wigner D in float64 (e3nn builds its generators in the default dtype)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return o3.Irreps(irreps).D_from_matrix(R)
    finally:
        torch.set_default_dtype(default)


def _rotate_slots(u: torch.Tensor, d_in: torch.Tensor, nu: int, first: int = 1) -> torch.Tensor:
    """Contract input slots ``first .. first+nu-1`` of ``u`` with ``d_in``: U[.., i, ..] D[i, j]."""
    for slot in range(first, first + nu):
        u = torch.movedim(torch.tensordot(u, d_in, dims=([slot], [0])), -1, slot)
    return u


@pytest.mark.parametrize("irreps, ir_out, nu", CASES)
def test_generalized_cg_is_equivariant(irreps, ir_out, nu):
    # B(D x) = D_out B(x) for B(x) = U x..x  <=>  U (D x .. x D) = D_out U
    u = generalized_cg(irreps, ir_out, nu)
    for parity in (1, -1):
        R = o3.rand_matrix(dtype=torch.float64) * parity
        d_in, d_out = e3nn_D(irreps, R), e3nn_D(ir_out, R)
        lhs = _rotate_slots(u, d_in, nu)
        rhs = torch.einsum("om,m...->o...", d_out, u)
        torch.testing.assert_close(lhs, rhs, rtol=0, atol=1e-12)


def _symmetrize(u: torch.Tensor, nu: int, first: int = 1) -> torch.Tensor:
    slots = list(range(first, first + nu))
    perms = list(itertools.permutations(slots))
    lead = list(range(first))
    trail = list(range(first + nu, u.dim()))
    return sum(u.permute(*lead, *p, *trail) for p in perms) / len(perms)


@pytest.mark.parametrize(
    "irreps, ir_out, nu", [("0e+1o", "0e", 2), ("0e+1o", "1o", 3), ("0e+1o", "0e", 3), ("0e+1o+2e", "2e", 2)]
)
def test_symmetrized_basis_spans_all_symmetric_equivariant_maps(irreps, ir_out, nu):
    """MACE's paths, symmetrized, span the whole space the product basis can reach.

    That space is the null space of the linear constraints T (D x..x D) = D_out T (random
    rotations and reflections) and T symmetric in its input slots, found numerically.
    """
    dim, m = o3.Irreps(irreps).dim, o3.Irrep(ir_out).dim
    size = m * dim**nu
    basis = torch.eye(size, dtype=torch.float64).reshape(size, m, *([dim] * nu))  # batch of all T
    constraints = [(_symmetrize(basis, nu, first=2) - basis).reshape(size, -1)]
    for parity in (1, -1, 1):
        R = o3.rand_matrix(dtype=torch.float64) * parity
        d_in, d_out = e3nn_D(irreps, R), e3nn_D(ir_out, R)
        moved = _rotate_slots(basis, d_in, nu, first=2) - torch.einsum("om,km...->ko...", d_out, basis)
        constraints.append(moved.reshape(size, -1))
    singular = torch.linalg.svdvals(torch.cat(constraints, dim=1))  # (size, many): rows are T's
    null_dim = int((singular < 1e-9).sum())
    u = generalized_cg(irreps, ir_out, nu)
    paths = u.shape[-1]
    rank = int(torch.linalg.matrix_rank(_symmetrize(u, nu).reshape(-1, paths), atol=1e-9))
    assert null_dim > 0
    assert rank == null_dim


def naive_contraction(module: SymmetricContraction, x: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
    """sum_nu U_nu W_nu[z] A^nu with one full einsum per order (no Horner scheme)."""
    n, c = x.shape[0], module.num_channels
    feats = torch.cat(
        [
            b.reshape(n, c, ir.dim)
            for b, (_, ir) in zip(x.split([m * ir.dim for m, ir in module.irreps_in], -1), module.irreps_in)
        ],
        -1,
    )
    letters = "ijk"
    outs = []
    for k, (_, ir_out) in enumerate(module.irreps_out):
        total = torch.zeros(n, c, ir_out.dim, dtype=x.dtype)
        for nu in range(1, module.correlation + 1):
            u = reference_U(str(module.coupling_irreps), str(ir_out), nu).to(x.dtype)
            w = torch.einsum("be,epc->bpc", attrs, module.weights[k][nu - 1])
            idx = letters[:nu]
            operands = ",".join(f"bc{i}" for i in idx)
            total = total + torch.einsum(f"m{idx}p,bpc,{operands}->bcm", u, w, *([feats] * nu))
        outs.append(total.reshape(n, -1))
    return torch.cat(outs, -1)


@pytest.mark.parametrize(
    "irreps_in, irreps_out, correlation",
    [
        ("3x0e+3x1o+3x2e", "3x0e+3x1o", 3),
        ("4x0e+4x1o+4x2e+4x3o", "4x0e", 2),
        ("2x0e+2x1o", "2x0e+2x1o+2x2e+2x1e", 3),
        ("2x0e+2x1o", "2x0e", 1),
    ],
)
def test_contraction_matches_naive_reference_and_is_equivariant(irreps_in, irreps_out, correlation):
    torch.set_default_dtype(torch.float64)
    try:
        module = SymmetricContraction(irreps_in, irreps_out, correlation, num_elements=3)
    finally:
        torch.set_default_dtype(torch.float32)
    x = o3.Irreps(irreps_in).randn(9, -1, dtype=torch.float64)
    attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 2, 1, 0]), 3).double()
    out = module(x, attrs)
    assert out.shape == (9, o3.Irreps(irreps_out).dim)
    torch.testing.assert_close(out, naive_contraction(module, x, attrs), rtol=1e-12, atol=1e-12)
    assert_equivariant(
        module, [irreps_in, "3x0e"], irreps_out, args_in=[x, attrs], tolerance=1e-11, ntrials=2
    )


@pytest.mark.parametrize("nodes, elements", [(2, 12), (20, 2)])
def test_both_contraction_orders_match_naive_reference_with_gradients(nodes, elements):
    """Few nodes and many elements takes the per-node order, many nodes and few elements folds
    the weights into U per element; both equal the naive sum, also for mixed (non one-hot)
    node attributes, and so do their gradients."""
    torch.set_default_dtype(torch.float64)
    try:
        module = SymmetricContraction("3x0e+3x1o+3x2e", "3x0e+3x1o", 3, num_elements=elements)
    finally:
        torch.set_default_dtype(torch.float32)
    x = o3.Irreps("3x0e+3x1o+3x2e").randn(nodes, -1, dtype=torch.float64).requires_grad_(True)
    attrs = torch.rand(nodes, elements, dtype=torch.float64)
    out, expected = module(x, attrs), naive_contraction(module, x, attrs)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    probe = torch.randn_like(out)
    params = [x, *module.parameters()]
    ours = torch.autograd.grad((out * probe).sum(), params)
    theirs = torch.autograd.grad((expected * probe).sum(), params)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


def test_float32_module_moved_to_float64_keeps_exact_coefficients():
    module = SymmetricContraction("2x0e+2x1o+2x2e", "2x0e+2x1o", 3, num_elements=2).double()
    x = o3.Irreps("2x0e+2x1o+2x2e").randn(5, -1, dtype=torch.float64)
    attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1]), 2).double()
    torch.testing.assert_close(module(x, attrs), naive_contraction(module, x, attrs), rtol=1e-13, atol=1e-13)
    assert_equivariant(module, ["2x0e+2x1o+2x2e", "2x0e"], "2x0e+2x1o", args_in=[x, attrs], tolerance=1e-11)


def test_float32_forward_and_gradients():
    module = SymmetricContraction("4x0e+4x1o", "4x0e+4x1o", 3, num_elements=2)
    x = o3.Irreps("4x0e+4x1o").randn(6, -1).requires_grad_(True)
    attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1, 0]), 2).float()
    out = module(x, attrs)
    assert out.dtype == torch.float32
    expected = naive_contraction(module.double(), x.double(), attrs.double()).float()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    module.float()
    (grad,) = torch.autograd.grad(module(x, attrs).pow(2).sum(), x, create_graph=True)
    grad.sum().backward()  # double backward, as force training needs
    assert all(w.grad is not None for ws in module.weights for w in ws)


def test_weights_are_element_dependent():
    module = SymmetricContraction("2x0e+2x1o", "2x0e", 2, num_elements=2).double()
    x = o3.Irreps("2x0e+2x1o").randn(1, -1, dtype=torch.float64).expand(2, -1)
    attrs = torch.eye(2, dtype=torch.float64)
    out = module(x, attrs)
    assert not torch.allclose(out[0], out[1])
    assert [[w.shape for w in ws] for ws in module.weights] == [[(2, 1, 2), (2, 2, 2)]]


def test_empty_batch_and_zero_paths():
    module = SymmetricContraction("2x0e+2x1o", "2x0e+2x0o", 2, num_elements=1)
    assert module.num_paths == [[1, 2], [0, 0]]  # 0o cannot be made from 0e, 1o at order <= 2
    out = module(torch.randn(0, 8), torch.ones(0, 1))
    assert out.shape == (0, 4)
    out = module(torch.randn(3, 8), torch.ones(3, 1))
    assert torch.all(out[:, 2:] == 0)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="backend 'gaunt' is not available"):
        SymmetricContraction("2x0e+2x1o", "2x0e", 2, 1, backend="gaunt")
    with pytest.raises(ValueError, match="correlation must be between 1 and 3"):
        SymmetricContraction("2x0e+2x1o", "2x0e", 4, 1)
    with pytest.raises(ValueError, match="one multiplicity"):
        SymmetricContraction("2x0e+3x1o", "2x0e", 2, 1)
    with pytest.raises(ValueError, match="distinct irreps"):
        generalized_cg("0e+0e", "0e", 2)
    module = SymmetricContraction("2x0e+2x1o", "2x0e", 2, 2)
    with pytest.raises(ValueError, match=r"node_attrs must have shape \(3, 2\)"):
        module(torch.randn(3, 8), torch.ones(3, 1))
