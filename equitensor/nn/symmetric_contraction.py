"""MACE's product basis: channel-wise symmetric tensor powers of the node features, coupled to
output irreps by generalised Clebsch-Gordan coefficients, with element-dependent weights.

For every output irrep L, channel c and node b with element weights selected by ``node_attrs``::

    B[b, c, L M] = sum_{nu=1..correlation} sum_p W_nu[z_b, p, c]
                   sum_{i_1..i_nu} U_nu[M, i_1, .., i_nu, p] A[b, c, i_1] ... A[b, c, i_nu]

``A[b, c, :]`` concatenates the components of every input irrep for channel c. ``U_nu`` holds
one column ``p`` per coupling path ((l1 x l2 -> l12) x l3 -> ... -> L), each a product of real
``wigner_3j`` (e3nn's basis) scaled by ``sqrt(2 l_out + 1)`` at every step ('component'
normalization): MACE's ``U_matrix_real`` in its default (non-reduced) form, with the same path
order, so MACE's product-basis weights map one to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from equitensor.devices import Float64Constant, cached, has_values, is_tracing
from equitensor.irreps import Irrep, Irreps, IrrepsLike
from equitensor.o3 import wigner_3j
from equitensor.tp.backends.capabilities import backends_for, build_operation

MAX_CORRELATION = 3


def _level(irreps: Irreps, nu: int) -> list[tuple[Irrep, torch.Tensor]]:
    """Every coupling path of ``nu`` copies of ``irreps``: (output irrep, tensor (2l+1, D**nu)).

    Level 1 is one identity block per input irrep, in input order; higher levels couple each
    path of level nu-1 with each input irrep, then are stably sorted by output irrep (MACE's order).
    """
    dim = irreps.dim
    if nu == 1:
        eye = torch.eye(dim, dtype=torch.float64)
        return [(ir, eye[sl]) for (_, ir), sl in zip(irreps, irreps.slices())]
    return sorted(_couple(_level(irreps, nu - 1), irreps, keep=None), key=lambda path: path[0])


def _couple(
    left_paths: list[tuple[Irrep, torch.Tensor]], irreps: Irreps, keep: Irrep | None
) -> list[tuple[Irrep, torch.Tensor]]:
    """Couple each left path with each input irrep, in enumeration order (only to ``keep`` if given)."""
    dim = irreps.dim
    out = []
    for ir_left, left in left_paths:
        for (_, ir), sl in zip(irreps, irreps.slices()):
            for ir_out in ir_left * ir:
                if keep is not None and ir_out != keep:
                    continue
                cg = wigner_3j(ir_out.l, ir_left.l, ir.l, dtype=torch.float64) * ir_out.dim**0.5
                block = torch.einsum("ak,oab->okb", left, cg)
                full = torch.zeros(ir_out.dim, left.shape[1], dim, dtype=torch.float64)
                full[..., sl] = block
                out.append((ir_out, full.reshape(ir_out.dim, -1)))
    return out


@cache
def _generalized_cg_cached(irreps_in: str, ir_out: str, correlation: int) -> torch.Tensor:
    irreps, target = Irreps(irreps_in), Irrep(ir_out)
    if correlation == 1:
        paths = [(ir, block) for ir, block in _level(irreps, 1) if ir == target]
    else:
        paths = _couple(_level(irreps, correlation - 1), irreps, keep=target)
    shape = (target.dim,) + (irreps.dim,) * correlation
    columns = [block.reshape(shape) for _, block in paths]
    if not columns:
        return torch.zeros(shape + (0,), dtype=torch.float64)
    return torch.stack(columns, dim=-1)


def generalized_cg(irreps_in: IrrepsLike, ir_out, correlation: int) -> torch.Tensor:
    """Generalised real Clebsch-Gordan tensor ``U`` of shape ``(2L+1, D, ..., D, num_paths)`` (float64).

    ``irreps_in`` are the coupled irreps (multiplicity 1 each, distinct, e.g. ``0e+1o+2e``),
    ``D`` their total dimension, ``correlation`` the number of copies (1 to 3). Columns are
    MACE's coupling paths in MACE's order; the tensor is equivariant,
    ``U[.., D(R) on every input slot] = D_L(R) U``. Computed once per arguments and cached.

    >>> U = generalized_cg("0e + 1o", "0e", correlation=2)  # paths 0e x 0e -> 0e and 1o x 1o -> 0e
    >>> U.shape, torch.allclose(U[0, 1:, 1:, 1], torch.eye(3, dtype=torch.float64) / 3**0.5)
    (torch.Size([1, 4, 4, 2]), True)
    """
    irreps = _coupling_irreps(irreps_in)
    if not 1 <= correlation <= MAX_CORRELATION:
        raise ValueError(f"correlation must be between 1 and {MAX_CORRELATION}, got {correlation}")
    return _generalized_cg_cached(str(irreps), str(Irrep(ir_out)), int(correlation)).clone()


def symmetric_terms(irreps_in: IrrepsLike, ir_out, correlation: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-zero terms of ``generalized_cg`` once the symmetry of ``A_i1 .. A_inu`` is used.

    Returns ``monomials`` (T, correlation + 1) int64 rows ``(M, i_1 <= .. <= i_nu)`` and
    ``coefficients`` (num_paths, T) float64 with ``sum_p W_p coefficients[p, t]`` the factor of
    ``A_i1 .. A_inu`` in output component M: every permutation of the indices is summed into one
    term, and terms whose column is zero for every path are dropped. For D = 16 (l <= 3) and
    correlation 3 this keeps a few hundred terms per output component of the 4096 of the dense U.
    """
    u = generalized_cg(irreps_in, ir_out, correlation)  # (M, D, .., D, P)
    m_dim, dim, paths = u.shape[0], u.shape[1], u.shape[-1]
    grid = torch.cartesian_prod(*[torch.arange(dim)] * correlation).reshape(-1, correlation)
    ordered = grid.sort(dim=1).values
    keys, inverse = torch.unique(ordered, dim=0, return_inverse=True)
    summed = torch.zeros(m_dim, keys.shape[0], paths, dtype=torch.float64)
    summed.index_add_(1, inverse, u.reshape(m_dim, -1, paths))
    scale = summed.abs().max().clamp_min(1e-300)
    m_index, key_index = (summed.abs().amax(-1) > 1e-13 * scale).nonzero(as_tuple=True)
    monomials = torch.cat([m_index[:, None], keys[key_index]], dim=1)
    return monomials, summed[m_index, key_index].T.contiguous()


@dataclass(frozen=True)
class ProductBasisSpec:
    """What a symmetric contraction computes, for the backend registry and ``auto``."""

    irreps_in: str
    irreps_out: str
    correlation: int
    num_elements: int


def one_hot_index(node_attrs: torch.Tensor) -> torch.Tensor | None:
    """Each row's position of its single 1 if ``node_attrs`` is exactly one-hot (and needs no
    gradient), else None. Attributes without values (``meta``) are taken as one-hot (MACE's)."""
    if node_attrs.requires_grad or node_attrs.shape[1] == 0:
        return None
    if not has_values(node_attrs):
        return node_attrs.argmax(1)
    if not bool(((node_attrs == 0) | (node_attrs == 1)).all() and (node_attrs.sum(1) == 1).all()):
        return None
    return node_attrs.argmax(1)


def _coupling_irreps(irreps_in) -> Irreps:
    irreps = Irreps(irreps_in)
    irs = [ir for _, ir in irreps]
    if any(mul != 1 for mul, _ in irreps) or len(set(irs)) != len(irs):
        raise ValueError(f"coupling irreps must be distinct irreps of multiplicity 1, got {irreps}")
    return irreps


def check_product_basis_inputs(
    x: torch.Tensor, node_attrs: torch.Tensor, irreps_in: Irreps, num_elements: int
) -> None:
    """ValueError unless ``x`` is (N, irreps_in.dim) and ``node_attrs`` (N, num_elements): the
    inputs of every product basis (this one and the Gaunt one)."""
    if x.dim() != 2 or x.shape[-1] != irreps_in.dim:
        raise ValueError(f"x must have shape (N, {irreps_in.dim}) for {irreps_in}, got {tuple(x.shape)}")
    if node_attrs.shape != (x.shape[0], num_elements):
        raise ValueError(
            f"node_attrs must have shape ({x.shape[0]}, {num_elements}), got {tuple(node_attrs.shape)}"
        )


def _layout(spec: ProductBasisSpec) -> tuple[Irreps, Irreps, Irreps, int]:
    """``(irreps_in, irreps_out, coupling irreps, channels)`` of a product-basis spec."""
    irreps_in, irreps_out = Irreps(spec.irreps_in), Irreps(spec.irreps_out)
    coupling = _coupling_irreps(Irreps([(1, ir) for _, ir in irreps_in]))
    return irreps_in, irreps_out, coupling, irreps_in[0].mul


class DenseProductBasis(nn.Module):
    """The ``cg`` product basis: the generalised CG tensors U, evaluated Horner-like, highest order
    first, so nothing larger than (N, C, (2L+1) D^(correlation-1)) is formed (and, when the weights
    are folded into U per element, (C, E D, (2L+1) D^(correlation-1)) once per call).

    ``forward(x, node_attrs, weights)`` with ``weights[k][nu - 1]`` (num_elements, paths, C).
    """

    def __init__(self, spec: ProductBasisSpec) -> None:
        super().__init__()
        self.irreps_in, self.irreps_out, self.coupling_irreps, self.num_channels = _layout(spec)
        self.correlation, self.num_elements = spec.correlation, spec.num_elements
        dim = self.coupling_irreps.dim
        # float64 masters (not buffers), cast once per (dtype, device) on use: a module built in
        # float32 and moved to float64 keeps exact coefficients. _couplings[k][nu - 1] is
        # (P, D_last, M D^(nu-1)) for the highest order, contracted with w and A at once, and
        # (P, M D^nu) for the lower orders.
        self._couplings: list[list[torch.Tensor]] = []
        self._cast: dict = {}
        for _, ir_out in self.irreps_out:
            couplings = []
            for nu in range(1, self.correlation + 1):
                u = generalized_cg(self.coupling_irreps, ir_out, nu).movedim(-1, 0)  # (P, M, D, .., D)
                paths = u.shape[0]
                if nu == self.correlation:
                    u = u.movedim(-1, 1).reshape(paths, dim, ir_out.dim * dim ** (nu - 1))
                else:
                    u = u.reshape(paths, ir_out.dim * dim**nu)
                couplings.append(u.contiguous())
            self._couplings.append(couplings)

    def _couplings_for(self, dtype: torch.dtype, device: torch.device) -> list[list[torch.Tensor]]:
        return cached(
            self._cast,
            ("couplings", dtype, device),
            lambda: [[u.to(device=device, dtype=dtype) for u in us] for us in self._couplings],
        )

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, irreps_in.dim) in mul_ir layout -> (N, C, D)."""
        n, c = x.shape[0], self.num_channels
        blocks = x.split([mul * ir.dim for mul, ir in self.irreps_in], dim=-1)
        return torch.cat([b.reshape(n, c, ir.dim) for b, (_, ir) in zip(blocks, self.irreps_in)], dim=-1)

    def forward(self, x: torch.Tensor, node_attrs: torch.Tensor, weights) -> torch.Tensor:
        features = self._features(x)
        n, c = features.shape[:2]
        dim = self.coupling_irreps.dim
        couplings = self._couplings_for(x.dtype, x.device)
        outputs = []
        for k, (_, ir_out) in enumerate(self.irreps_out):
            out = None
            for nu in range(self.correlation, 0, -1):
                u = couplings[k][nu - 1]
                paths = u.shape[0]
                size = ir_out.dim * dim ** (nu - 1)
                if out is None:  # highest order: U with the weights and one copy of A at once
                    out = self._highest_order(u, weights[k][nu - 1], features, node_attrs, size)
                else:  # add order nu, then contract one more copy of A
                    weight = weights[k][nu - 1].reshape(self.num_elements, paths * c)
                    w = (node_attrs @ weight).reshape(n, paths, c).transpose(1, 2)  # per-node (N, C, P)
                    weighted = (w.reshape(n * c, paths) @ u).reshape(n, c, size, dim)
                    out = torch.einsum("bcxi,bci->bcx", weighted + out.reshape(n, c, size, dim), features)
            outputs.append(out.reshape(n, c * ir_out.dim))
        return torch.cat(outputs, dim=-1)

    def folds_weights(self, nodes: int, paths: int) -> bool:
        """Whether the highest order (with ``paths`` paths) folds the weights into U per element
        for ``nodes`` nodes: cheaper when E P + N E < N P (see ``_highest_order``). While
        ``torch.compile`` / ``torch.export`` trace, the choice for many nodes (E < P), so that the
        graph holds for any number of nodes."""
        if is_tracing():
            return self.num_elements < paths
        return self.num_elements * (paths + nodes) < nodes * paths

    def _highest_order(
        self,
        u: torch.Tensor,
        weight: torch.Tensor,
        features: torch.Tensor,
        node_attrs: torch.Tensor,
        size: int,
    ) -> torch.Tensor:
        """``sum_{p,i} W[z_b, p, c] A[b, c, i] U[p, i, :]`` as (N, C, size), in the cheaper order.

        Per node first (weights of each node, then one (N C, P D) @ (P D, size) product) costs
        N C P D size; folding the weights into U per element first, then contracting the outer
        product of ``node_attrs`` and A with it channel by channel, costs (E P + N E) C D size,
        far less when there are fewer elements than paths and nodes (MACE's usual case).
        """
        n, c, dim = features.shape
        elements, paths = self.num_elements, u.shape[0]
        if self.folds_weights(n, paths):
            folded = torch.einsum("epc,pq->ceq", weight, u.reshape(paths, dim * size))
            folded = folded.reshape(c, elements * dim, size)
            outer = node_attrs[:, None, :, None] * features[:, :, None, :]  # (N, C, E, D)
            return torch.bmm(outer.reshape(n, c, elements * dim).transpose(0, 1), folded).transpose(0, 1)
        w = (node_attrs @ weight.reshape(elements, paths * c)).reshape(n, paths, c).transpose(1, 2)
        v = (w.unsqueeze(-1) * features.unsqueeze(2)).reshape(n * c, paths * dim)
        return (v @ u.reshape(paths * dim, size)).reshape(n, c, size)


class SparseProductBasis(nn.Module):
    """The ``sparse`` product basis: the same polynomial from its non-zero terms only (see
    :func:`symmetric_terms`) with the compiled kernels (C++ on CPU, CUDA on GPU) of
    :mod:`equitensor.tp.backends.sparse`: the weights are folded into the terms per element (a
    small (E C, P) @ (P, T) product), then one pass over nodes and terms, channels innermost,
    computes every order and output at once (a constant 1 appended to A stands in for the
    missing factors of the lower orders). Frozen weights (inference, MD) are folded once and reused
    until they change.
    """

    term_ones = Float64Constant()  # the kernel's float64 term coefficients, all 1

    def __init__(self, spec: ProductBasisSpec) -> None:
        from equitensor.kernels.edge_conv import ir_mul_permutation
        from equitensor.kernels.sparse_contract import load

        super().__init__()
        load()  # KernelUnavailableError now, not at the first call
        self.irreps_in, self.irreps_out, self.coupling_irreps, self.num_channels = _layout(spec)
        self.correlation, self.num_elements = spec.correlation, spec.num_elements
        # Term table: one row ``(t, i_1, .., i_corr, M)`` per term (index D is the constant 1 that
        # pads lower orders), and per (output, order) the (P, T) coefficients.
        dim, rows, offset, start = self.coupling_irreps.dim, [], 0, 0
        self._term_coefficients: list[torch.Tensor] = []
        for _, ir_out in self.irreps_out:
            for nu in range(1, self.correlation + 1):
                monomials, coefficients = symmetric_terms(self.coupling_irreps, ir_out, nu)
                pad = torch.full((monomials.shape[0], self.correlation - nu), dim, dtype=torch.int64)
                count = monomials.shape[0]
                term = torch.arange(start, start + count)[:, None]
                rows.append(torch.cat([term, monomials[:, 1:], pad, monomials[:, :1] + offset], dim=1))
                self._term_coefficients.append(coefficients)
                start += count
            offset += ir_out.dim
        self._cast: dict = {}
        terms = torch.cat(rows).to(torch.int32).contiguous()
        # A (N, D + 1, C) in ir_mul layout straight from x padded with a column of ones, and the
        # output back to mul_ir: one index_select each (also in every derivative)
        c = self.num_channels
        input_columns = torch.cat([ir_mul_permutation(self.irreps_in), torch.full((c,), self.irreps_in.dim)])
        self.register_buffer("term_components", terms, persistent=False)
        self.term_ones = torch.ones(terms.shape[0], dtype=torch.float64)
        self.register_buffer("input_columns", input_columns, persistent=False)
        self.register_buffer(
            "output_columns", ir_mul_permutation(self.irreps_out).argsort(), persistent=False
        )

    def _folded_weights(self, weights, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The weights folded into the symmetrised terms, (elements, terms, C). Frozen weights
        (inference, MD) are folded once and reused until they change."""
        coefficients = cached(
            self._cast,
            ("terms", dtype, device),
            lambda: [u.to(device=device, dtype=dtype) for u in self._term_coefficients],
        )
        weights = [weight for per_output in weights for weight in per_output]
        frozen = not (torch.is_grad_enabled() and any(w.requires_grad for w in weights))
        state = (dtype, device, tuple((w.data_ptr(), w._version, w.dtype) for w in weights))
        if frozen and getattr(self, "_folded_cache", (None, None))[0] == state:
            return self._folded_cache[1]
        folded = torch.cat(
            [torch.einsum("epc,pt->etc", w, u) for w, u in zip(weights, coefficients)], dim=1
        ).contiguous()
        if not is_tracing():  # a traced value must not be read later
            self._folded_cache = (state, folded) if frozen else (None, None)
        return folded

    def forward(self, x: torch.Tensor, node_attrs: torch.Tensor, weights) -> torch.Tensor:
        from equitensor.kernels.sparse_contract import sparse_contract

        n, c = x.shape[0], self.num_channels
        folded = self._folded_weights(weights, x.dtype, x.device)
        padded = torch.nn.functional.pad(x, (0, 1), value=1.0)
        a = padded.index_select(1, self.input_columns).reshape(n, self.coupling_irreps.dim + 1, c)
        out_dim = sum(ir.dim for _, ir in self.irreps_out)

        def contract(weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return sparse_contract(
                [weights, *[a] * self.correlation],
                [rows, *[None] * self.correlation],
                None,
                n,
                out_dim,
                c,
                self.term_components,
                self.term_ones,
            )

        elements = one_hot_index(node_attrs)
        if elements is not None:
            out = contract(folded, elements)
        else:  # mixed attributes: one pass per element, scaled by its attribute
            rows = torch.zeros(n, dtype=torch.int64, device=x.device)
            out = sum(
                node_attrs[:, z, None, None] * contract(folded[z : z + 1], rows)
                for z in range(self.num_elements)
            )
        return out.reshape(n, out_dim * c).index_select(1, self.output_columns)


class SymmetricContraction(nn.Module):
    """MACE's symmetric contraction (product basis) with element-dependent weights.

    ``irreps_in``: ``C x ir`` for every coupled irrep (same multiplicity C, distinct irreps),
    e.g. ``8x0e + 8x1o + 8x2e``; ``irreps_out``: ``C x L`` blocks, e.g. ``8x0e + 8x1o``.
    Call as ``sc(x, node_attrs)`` with ``x`` (N, irreps_in.dim) in e3nn's mul_ir layout and
    ``node_attrs`` (N, num_elements) (one-hot of the element) ; returns (N, irreps_out.dim).

    Weights ``weights[k][nu - 1]`` of output block k have shape (num_elements, num_paths, C),
    initialised ``randn / num_paths`` as in MACE. The evaluation is the ``product_basis``
    operation of the chosen backend, from the backend registry: ``cg``
    (:class:`DenseProductBasis`) or ``sparse`` (:class:`SparseProductBasis`), in ``self.basis``.
    ``backend="auto"`` measures the backends that can run on the first input's device and dtype
    and keeps the fastest (:mod:`equitensor.tp.backends.auto`; ``self.backend_choice`` says why).

    >>> import torch
    >>> sc = SymmetricContraction("4x0e + 4x1o", "4x0e", correlation=2, num_elements=3)
    >>> sc(torch.randn(5, 16), torch.eye(3)[[0, 1, 2, 0, 1]]).shape
    torch.Size([5, 4])
    """

    def __init__(
        self,
        irreps_in: IrrepsLike,
        irreps_out: IrrepsLike,
        correlation: int,
        num_elements: int,
        *,
        backend: str = "cg",
    ) -> None:
        super().__init__()
        if backend != "auto" and backend not in backends_for("product_basis"):
            raise ValueError(
                f"SymmetricContraction backend {backend!r} is not available; choose one of "
                f"{(*backends_for('product_basis'), 'auto')}"
            )
        irreps_in, irreps_out = Irreps(irreps_in), Irreps(irreps_out)
        muls = {mul for mul, _ in irreps_in} | {mul for mul, _ in irreps_out}
        if len(muls) != 1:
            raise ValueError(
                f"SymmetricContraction needs one multiplicity for every input and output irrep, "
                f"got {irreps_in} -> {irreps_out}"
            )
        if not 1 <= correlation <= MAX_CORRELATION:
            raise ValueError(f"correlation must be between 1 and {MAX_CORRELATION}, got {correlation}")
        if num_elements < 1:
            raise ValueError(f"num_elements must be >= 1, got {num_elements}")
        self.backend = backend
        self.backend_choice = None
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        self.coupling_irreps = _coupling_irreps(Irreps([(1, ir) for _, ir in irreps_in]))
        self.num_channels = muls.pop()
        self.correlation = int(correlation)
        self.num_elements = int(num_elements)
        self.weights = nn.ModuleList()
        self.num_paths: list[list[int]] = []
        for _, ir_out in irreps_out:
            weights, counts = nn.ParameterList(), []
            for nu in range(1, self.correlation + 1):
                paths = generalized_cg(self.coupling_irreps, ir_out, nu).shape[-1]
                counts.append(paths)
                weights.append(
                    nn.Parameter(torch.randn(self.num_elements, paths, self.num_channels) / max(paths, 1))
                )
            self.weights.append(weights)
            self.num_paths.append(counts)
        self.basis = None if backend == "auto" else self._build(backend)

    def _build(self, backend: str) -> nn.Module:
        basis = build_operation("product_basis", backend, self.spec())
        return basis.to(self.weights[0][0].device)

    def forward(self, x: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        check_product_basis_inputs(x, node_attrs, self.irreps_in, self.num_elements)
        if self.basis is None:
            from equitensor.tp.backends.auto import unresolved

            raise unresolved(self)
        return self.basis(x, node_attrs, self.weights)

    def spec(self) -> ProductBasisSpec:
        """What this contraction computes (the key of ``auto``'s choice)."""
        return ProductBasisSpec(
            str(self.irreps_in), str(self.irreps_out), self.correlation, self.num_elements
        )

    def resolve_backend(self, device: torch.device, dtype: torch.dtype):
        """Choose ``backend="auto"``'s backend for ``device`` and ``dtype`` and build it (see
        :func:`equitensor.resolve_backends`)."""
        from equitensor.tp.backends.auto import MEASURE_BATCH, backward_step, choose_backend, random_inputs

        def step(name: str, device: torch.device, dtype: torch.dtype):
            args = (self.irreps_in, self.irreps_out, self.correlation, self.num_elements)
            module = SymmetricContraction(*args, backend=name).to(device=device, dtype=dtype)
            (x,) = random_inputs([(MEASURE_BATCH, self.irreps_in.dim)], device, dtype)
            elements = torch.arange(MEASURE_BATCH, device=device) % self.num_elements
            attrs = nn.functional.one_hot(elements, self.num_elements).to(dtype)
            return backward_step(lambda: module(x, attrs), [x, *module.parameters()])

        choice = choose_backend("product_basis", self.spec(), device, dtype, step)
        self.use_backend(choice)
        return choice

    def use_backend(self, choice) -> None:
        """Build the backend ``choice`` names (a choice made elsewhere, e.g. by rank 0)."""
        self.basis = self._build(choice.backend)
        self.backend, self.backend_choice = choice.backend, choice

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_in} -> {self.irreps_out}, correlation={self.correlation}, "
            f"num_elements={self.num_elements}, paths={self.num_paths}, backend={self.backend!r}"
        )


__all__ = [
    "MAX_CORRELATION",
    "DenseProductBasis",
    "SparseProductBasis",
    "SymmetricContraction",
    "generalized_cg",
    "symmetric_terms",
]
