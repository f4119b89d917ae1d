"""The ``cp`` backend: tensor products through CP-decomposed Clebsch-Gordan tensors (after TDN,
Lin et al. 2025), fitted deterministically in float64 and cached on disk.

Each path's CG tensor (``wigner_3j(l1, l2, l3)``, one per path: per-path factors keep e3nn's
per-path weights, so the weight layout is cg's and the backends are interchangeable; TDN's single
tensor over all degrees would tie all paths to one weight) is replaced by a rank-R sum

    C[i, j, k] ~ sum_r A[i, r] B[j, r] D[k, r],

and a path is computed in rank space: ``a = A^T x1``, ``b = B^T x2``, the path's weights act on
``a * b`` per rank component exactly as they act per output component in cg, then ``out = D (.)``
with the normalization coefficient folded into D. Cost per channel pair is O((d1 + d2 + d3) R)
instead of the CG tensor's non-zeros.

Factors. ``rank >= exact_cp_rank(l1, l2, l3)`` (the fewest non-zero fibres of C along any mode
pair) uses an exact construction (one unit vector per fibre), so the product equals cg up to
round-off. Below it the factors come from alternating least squares in float64 (ridge 1e-12,
at most ``MAX_ITERATIONS`` sweeps, stopping when the residual improves by less than ``TOLERANCE``
over ``CHECK_EVERY`` sweeps). The fit at rank R is the best of two runs, one warm-started from the
rank R-1 fit plus one new column and one from fresh initial factors, both drawn from a generator
seeded by (l1, l2, l3, R); if neither beats rank R-1, its factors padded with a zero column are
kept. So the relative residual ``|C - C_R| / |C|`` never increases with the rank, and every fit is
deterministic. Each fitted rank is written to the cache folder (``EQUITENSOR_CACHE``, else
``$XDG_CACHE_HOME/equitensor``, else ``~/.cache/equitensor``; subfolder ``cp``) as a NumPy
``.npz`` without pickles, keyed by (l1, l2, l3, rank, ALGORITHM_VERSION), written atomically;
the residual is recomputed from the loaded factors, never trusted from the file.

A rank below a path's exact rank gives an approximate, no longer exactly equivariant product:
the executor refuses it unless ``allow_approximate=True``, and then reports each path's residual
(``report()``) and the measured equivariance error of the whole product (random rotations and
reflections, float64). All steps are torch ops, so any derivative order comes from autograd.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from equitensor.cache import cache_dir as equitensor_cache_dir
from equitensor.o3.wigner import wigner_3j, wigner_3j_sparse
from equitensor.serialization import atomic_write
from equitensor.tp.backends.capabilities import BackendCapabilities, describe_path, register_backend
from equitensor.tp.backends.cg import _path_from_product, _weight_subscript
from equitensor.tp.backends.spherical_signal import CastCache
from equitensor.tp.edge_products import through_tensor_product
from equitensor.tp.spec import Instruction, TensorProductSpec

__all__ = [
    "ALGORITHM_VERSION",
    "CAPABILITIES",
    "CPFactors",
    "CPPathReport",
    "CPReport",
    "CPTensorProduct",
    "cache_dir",
    "cp_factors",
    "exact_cp_rank",
]

#: Bump when the fit changes: it is part of every cache key.
ALGORITHM_VERSION = 1
MAX_ITERATIONS = 1000
CHECK_EVERY = 10
TOLERANCE = 1e-13
RIDGE = 1e-12


# --------------------------------------------------------------------------------------------
# Factors of one CG tensor


@dataclass(frozen=True)
class CPFactors:
    """``C(l1, l2, l3) ~ einsum('ir,jr,kr->ijk', a, b, d)`` in float64, with its relative residual."""

    ls: tuple[int, int, int]
    a: torch.Tensor
    b: torch.Tensor
    d: torch.Tensor
    residual: float

    @property
    def rank(self) -> int:
        return self.a.shape[1]

    def tensor(self) -> torch.Tensor:
        return torch.einsum("ir,jr,kr->ijk", self.a, self.b, self.d)

    @property
    def equivariance_defect(self) -> float:
        """``|T - <T, C> C| / |T|``: the fraction of the fitted tensor T outside the invariant
        line of C (|C| = 1), exact, no sampling. Over Haar-random rotations g the RMS of
        ``|T(g) - T| / |T|`` is sqrt(2) times this (T(g): D^l(g) on all three indices); reflections
        act on a path by p1 p2 p3 = +1. For a least-squares fit it equals the residual."""
        t, c = self.tensor(), wigner_3j(*self.ls, dtype=torch.float64)
        norm = t.norm().item()
        return (t - (t * c).sum() * c).norm().item() / norm if norm > 0 else 0.0


def _cg(ls: tuple[int, int, int]) -> np.ndarray:
    return wigner_3j(*ls, dtype=torch.float64).numpy()


def exact_cp_rank(l1: int, l2: int, l3: int) -> int:
    """Rank of the exact construction: the fewest non-zero fibres of C along any mode pair."""
    indices, _ = wigner_3j_sparse(l1, l2, l3)
    return min(len({tuple(row) for row in indices[:, pair].tolist()}) for pair in ([0, 1], [0, 2], [1, 2]))


def _exact_factors(ls: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """One rank-one term per non-zero fibre along the cheapest mode pair: exact."""
    c = _cg(ls)
    indices, _ = wigner_3j_sparse(*ls)
    pairs = [(0, 1), (0, 2), (1, 2)]
    fibres = [sorted({(int(r[p]), int(r[q])) for r in indices}) for p, q in pairs]
    best = min(range(3), key=lambda n: len(fibres[n]))
    (p, q), keep = pairs[best], fibres[best]
    free = 3 - p - q  # the mode the fibres run along
    factors = [np.zeros((c.shape[n], len(keep))) for n in range(3)]
    for r, (i, j) in enumerate(keep):
        factors[p][i, r] = 1.0
        factors[q][j, r] = 1.0
        index = [i, j]
        index.insert(free, slice(None))
        factors[free][:, r] = c[tuple(index)]
    return tuple(factors)


def _relative_residual(c: np.ndarray, a: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """|C - [[a, b, d]]| / |C|; the factors may carry a leading batch axis."""
    difference = c - np.einsum("...ir,...jr,...kr->...ijk", a, b, d)
    return np.sqrt((difference**2).sum(axis=(-3, -2, -1))) / np.linalg.norm(c)


def _als(c: np.ndarray, starts: list[list[np.ndarray]]) -> list[tuple[list[np.ndarray], float]]:
    """Alternating least squares from each start (run side by side as one batch); returns each
    run's factors and relative residual."""
    a, b, d = (np.stack(x) for x in zip(*starts))  # (runs, dim, rank)
    runs, rank = len(starts), a.shape[-1]
    eye = np.eye(rank)
    # unfoldings: C_(n) with mode n first, the other two modes flattened in order
    c1 = c.reshape(c.shape[0], -1)
    c2 = c.transpose(1, 0, 2).reshape(c.shape[1], -1)
    c3 = c.transpose(2, 0, 1).reshape(c.shape[2], -1)

    def solve(gram: np.ndarray, unfolding: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """argmin_F |C_(n) - F khatri_rao(x, y)^T|^2 + ridge |F|^2."""
        khatri_rao = (x[:, :, None, :] * y[:, None, :, :]).reshape(runs, -1, rank)
        ridge = RIDGE * np.maximum(np.einsum("nii->n", gram) / rank, 1e-300)
        rhs = (unfolding @ khatri_rao).transpose(0, 2, 1)
        return np.linalg.solve(gram + ridge[:, None, None] * eye, rhs).transpose(0, 2, 1)

    def gram(x: np.ndarray) -> np.ndarray:
        return x.transpose(0, 2, 1) @ x

    previous = np.full(runs, np.inf)
    gb, gd = gram(b), gram(d)
    for sweep in range(MAX_ITERATIONS):
        a = solve(gb * gd, c1, b, d)
        ga = gram(a)
        b = solve(ga * gd, c2, a, d)
        gb = gram(b)
        d = solve(ga * gb, c3, a, b)
        gd = gram(d)
        if sweep % CHECK_EVERY == 0:
            # equal column norms across the three factors: same product, better conditioning
            norms = [np.linalg.norm(x, axis=1, keepdims=True) + 1e-300 for x in (a, b, d)]
            scale = np.cbrt(norms[0] * norms[1] * norms[2])
            a, b, d = a / norms[0] * scale, b / norms[1] * scale, d / norms[2] * scale
            gb, gd = gram(b), gram(d)
            residual = _relative_residual(c, a, b, d)
            if np.all(previous - residual < TOLERANCE):
                break
            previous = residual
    residual = _relative_residual(c, a, b, d)
    return [([a[n], b[n], d[n]], float(residual[n])) for n in range(runs)]


def _fit_rank(ls: tuple[int, int, int], rank: int, previous: CPFactors | None) -> tuple[np.ndarray, ...]:
    """The rank-``rank`` factors from the rank-1-lower fit ``previous`` (see the module doc)."""
    c = _cg(ls)
    rng = np.random.default_rng([ALGORITHM_VERSION, *ls, rank])
    starts = [[rng.standard_normal((n, rank)) for n in c.shape]]
    kept = []
    if previous is not None:
        old = [previous.a.numpy(), previous.b.numpy(), previous.d.numpy()]
        size = np.cbrt(max(previous.residual, 1e-12) / rank) * 0.1
        starts.append([np.hstack([x, size * rng.standard_normal((x.shape[0], 1))]) for x in old])
        kept.append(([np.hstack([x, np.zeros((x.shape[0], 1))]) for x in old], previous.residual))
    factors, _ = min(_als(c, starts) + kept, key=lambda candidate: candidate[1])
    return tuple(factors)


def cache_dir() -> Path:
    """Where fitted factors are kept: the ``cp`` folder of :func:`equitensor.cache.cache_dir`."""
    return equitensor_cache_dir("cp")


def _cache_file(ls: tuple[int, int, int], rank: int) -> Path:
    l1, l2, l3 = ls
    return cache_dir() / f"cg_{l1}_{l2}_{l3}_rank{rank}_v{ALGORITHM_VERSION}.npz"


def _factors(ls: tuple[int, int, int], a: np.ndarray, b: np.ndarray, d: np.ndarray) -> CPFactors:
    a, b, d = (np.ascontiguousarray(x, dtype=np.float64) for x in (a, b, d))
    residual = float(_relative_residual(_cg(ls), a, b, d))
    return CPFactors(ls, torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(d), residual)


def _load(ls: tuple[int, int, int], rank: int) -> CPFactors | None:
    path = _cache_file(ls, rank)
    if not path.exists():
        return None
    shape = tuple(2 * l + 1 for l in ls)
    try:
        with np.load(path, allow_pickle=False) as data:
            a, b, d = data["a"], data["b"], data["d"]
        if [x.shape for x in (a, b, d)] != [(n, rank) for n in shape]:
            raise ValueError(f"factor shapes {[x.shape for x in (a, b, d)]} do not match")
    except Exception as error:  # an unreadable entry is refitted (deterministic: same result)
        warnings.warn(f"ignoring unreadable CP cache file {path} ({error}); refitting it", stacklevel=3)
        return None
    return _factors(ls, a, b, d)


def _store(ls: tuple[int, int, int], factors: CPFactors) -> None:
    path = _cache_file(ls, factors.rank)
    with atomic_write(path) as file:
        np.savez(
            file,
            a=factors.a.numpy(),
            b=factors.b.numpy(),
            d=factors.d.numpy(),
            ls=np.array(ls),
            algorithm_version=np.array(ALGORITHM_VERSION),
        )


def cp_factors(l1: int, l2: int, l3: int, rank: int) -> CPFactors:
    """Rank-``rank`` CP factors of ``wigner_3j(l1, l2, l3)`` (exact at ``exact_cp_rank`` and up).

    Fitted ranks come from the disk cache when present; a fit of rank R first needs ranks
    1..R-1 (cached on the way).
    """
    ls = (int(l1), int(l2), int(l3))
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be a positive int, got {rank!r}")
    exact = exact_cp_rank(*ls)
    if rank >= exact:
        return _factors(ls, *_exact_factors(ls))
    start = rank
    found = _load(ls, rank)
    while found is None and start > 1:
        start -= 1
        found = _load(ls, start)
    if found is not None and start == rank:
        return found
    previous = found
    for r in range(start + 1 if found is not None else 1, rank + 1):
        previous = _factors(ls, *_fit_rank(ls, r, previous))
        _store(ls, previous)
    return previous


# --------------------------------------------------------------------------------------------
# Executor


@dataclass(frozen=True)
class CPPathReport:
    """One path of a cp executor: its degrees, rank used, exact rank, relative residual and
    equivariance defect (see :attr:`CPFactors.equivariance_defect`)."""

    instruction: int
    ls: tuple[int, int, int]
    rank: int
    exact_rank: int
    residual: float
    equivariance_defect: float

    @property
    def exact(self) -> bool:
        return self.rank >= self.exact_rank


@dataclass(frozen=True)
class CPReport:
    """The approximation of a cp executor: per-path fits and the measured equivariance error
    of the whole product (see :meth:`CPTensorProduct.measure_equivariance_error`)."""

    rank: int | str
    paths: tuple[CPPathReport, ...]
    equivariance_error: float

    @property
    def exact(self) -> bool:
        return all(p.exact for p in self.paths)

    @property
    def max_residual(self) -> float:
        return max((p.residual for p in self.paths), default=0.0)

    def __str__(self) -> str:
        lines = [
            f"cp rank {self.rank}: max path residual {self.max_residual:.3e}, "
            f"equivariance error {self.equivariance_error:.3e}"
        ]
        lines += [
            f"  path {p.instruction} {p.ls}: rank {p.rank}/{p.exact_rank}, residual {p.residual:.3e}, "
            f"equivariance defect {p.equivariance_defect:.3e}"
            for p in self.paths
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Path:
    index: int
    rank: int
    in1: tuple[int, int]  # columns of its block's concatenated A
    in2: tuple[int, int]  # columns of its block's concatenated B


def _rank_space(ins: Instruction, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """One path in rank space: ``a`` (z, u, R), ``b`` (z, v, R) -> (z, mul_out, R), weights as cg."""
    mode, s = ins.connection_mode, _weight_subscript(ins, w)
    if mode == "uvw":
        return torch.einsum(f"zur,zvr,{s}uvw->zwr", a, b, w)
    if mode == "uvu":
        return a * (b.sum(1, keepdim=True) if w is None else torch.einsum(f"{s}uv,zvr->zur", w, b))
    if mode == "uvv":
        return b * (a.sum(1, keepdim=True) if w is None else torch.einsum(f"{s}uv,zur->zvr", w, a))
    if mode == "uuu":
        return a * b if w is None else a * b * w.unsqueeze(-1)
    t = a * b if mode.startswith("uu") else a.unsqueeze(2) * b.unsqueeze(1)
    return _path_from_product(ins, t, w)


class CPTensorProduct(nn.Module):
    """Executes a :class:`TensorProductSpec` with CP-decomposed CG tensors, weights as cg.

    ``rank``: an int (capped per path at its exact rank) or ``'full'`` (exact). A rank below some
    path's exact rank is refused unless ``allow_approximate=True``; ``report()`` gives each path's
    residual and the measured equivariance error.
    """

    def __init__(self, spec: TensorProductSpec, rank: int | str, allow_approximate: bool = False) -> None:
        super().__init__()
        if not (rank == "full" or (isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1)):
            raise ValueError(f"the 'cp' backend needs rank= a positive int or 'full', got {rank!r}")
        self.spec, self.rank = spec, rank
        ir1s, ir2s, outs = spec.irreps_in1, spec.irreps_in2, spec.irreps_out
        active = [
            index
            for index, ins in enumerate(spec.instructions)
            if 0 not in (ir1s[ins.i_in1].mul, ir2s[ins.i_in2].mul, outs[ins.i_out].mul)
            and ins.coefficient != 0
            and not (ins.has_weight and ins.weight_numel == 0)
        ]
        degrees = {i: self._degrees(i) for i in active}
        exact_ranks = {i: exact_cp_rank(*degrees[i]) for i in active}
        ranks = {i: exact_ranks[i] if rank == "full" else min(rank, exact_ranks[i]) for i in active}
        approximate = [i for i in active if ranks[i] < exact_ranks[i]]
        if approximate and not allow_approximate:
            listed = "\n".join(
                f"  - {describe_path(spec, i)}: exact CP rank {exact_ranks[i]}" for i in approximate
            )
            raise ValueError(
                f"cp rank {rank} is below the exact CP rank of {len(approximate)} path(s), so the "
                f"product would be approximate and not exactly equivariant:\n{listed}\n"
                "pass allow_approximate=True to accept it (report() gives the residuals and the "
                "measured equivariance error), or rank='full' for the exact product"
            )
        factors = {i: cp_factors(*degrees[i], ranks[i]) for i in active}
        self.path_reports = tuple(
            CPPathReport(
                i, degrees[i], ranks[i], exact_ranks[i], factors[i].residual, factors[i].equivariance_defect
            )
            for i in active
        )

        # concatenate the factors of all paths reading one input block: one matmul per block
        a_columns: dict[int, list[torch.Tensor]] = {}
        b_columns: dict[int, list[torch.Tensor]] = {}
        d_rows: dict[int, list[torch.Tensor]] = {}
        self.paths: list[_Path] = []
        for i in active:
            ins, f = spec.instructions[i], factors[i]
            start1 = sum(x.shape[1] for x in a_columns.get(ins.i_in1, []))
            start2 = sum(x.shape[1] for x in b_columns.get(ins.i_in2, []))
            a_columns.setdefault(ins.i_in1, []).append(f.a)
            b_columns.setdefault(ins.i_in2, []).append(f.b)
            d_rows.setdefault(ins.i_out, []).append(ins.coefficient * f.d.T)
            self.paths.append(_Path(i, f.rank, (start1, start1 + f.rank), (start2, start2 + f.rank)))
        self.weight_sizes = [ins.weight_numel for ins in spec.instructions]
        self._tables = CastCache(
            **{f"a{k}": torch.cat(v, 1) for k, v in a_columns.items()},
            **{f"b{k}": torch.cat(v, 1) for k, v in b_columns.items()},
            **{f"d{k}": torch.cat(v, 0) for k, v in d_rows.items()},
        )
        self._equivariance_error: float | None = None

    def _degrees(self, index: int) -> tuple[int, int, int]:
        ins, spec = self.spec.instructions[index], self.spec
        return (
            spec.irreps_in1[ins.i_in1].ir.l,
            spec.irreps_in2[ins.i_in2].ir.l,
            spec.irreps_out[ins.i_out].ir.l,
        )

    @property
    def exact(self) -> bool:
        return all(p.exact for p in self.path_reports)

    @property
    def residuals(self) -> dict[int, float]:
        """Relative residual of each active path's fit, keyed by instruction index."""
        return {p.instruction: p.residual for p in self.path_reports}

    @property
    def approximation_error(self) -> float:
        """The largest relative residual of a path's CP fit (0 up to round-off when exact)."""
        return max((p.residual for p in self.path_reports), default=0.0)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        spec = self.spec
        z = x1.shape[0]
        ir1s, ir2s, outs = spec.irreps_in1, spec.irreps_in2, spec.irreps_out
        t = self._tables.get(x1.dtype, x1.device)
        x1_blocks = x1.split([mul * ir.dim for mul, ir in ir1s], dim=-1)
        x2_blocks = x2.split([mul * ir.dim for mul, ir in ir2s], dim=-1)
        weights = None if weight is None else weight.split(self.weight_sizes, dim=-1)
        a_all: dict[int, torch.Tensor] = {}
        b_all: dict[int, torch.Tensor] = {}
        contributions: list[list[torch.Tensor]] = [[] for _ in outs]
        for path in self.paths:
            ins = spec.instructions[path.index]
            if ins.i_in1 not in a_all:
                mul, ir = ir1s[ins.i_in1]
                a_all[ins.i_in1] = x1_blocks[ins.i_in1].reshape(z, mul, ir.dim) @ t[f"a{ins.i_in1}"]
            if ins.i_in2 not in b_all:
                mul, ir = ir2s[ins.i_in2]
                b_all[ins.i_in2] = x2_blocks[ins.i_in2].reshape(z, mul, ir.dim) @ t[f"b{ins.i_in2}"]
            w = None
            if ins.has_weight:
                flat = weights[path.index]
                w = flat.reshape(flat.shape[:-1] + ins.path_shape)
            a = a_all[ins.i_in1][..., path.in1[0] : path.in1[1]]
            b = b_all[ins.i_in2][..., path.in2[0] : path.in2[1]]
            contributions[ins.i_out].append(_rank_space(ins, a, b, w))
        blocks = []
        for i_out, ((mul, ir), parts) in enumerate(zip(outs, contributions)):
            if not parts:
                blocks.append(x1.new_zeros(z, mul * ir.dim))
                continue
            rank_space = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
            blocks.append((rank_space @ t[f"d{i_out}"]).reshape(z, mul * ir.dim))
        return torch.cat(blocks, dim=-1) if blocks else x1.new_zeros(z, 0)

    def measure_equivariance_error(self, trials: int = 8, batch: int = 8, seed: int = 0) -> float:
        """Relative RMS equivariance error ``|f(g x) - g f(x)| / |f(x)|`` (Frobenius norms summed
        over samples and transforms) for ``trials`` random rotations and as many reflections
        (rotation times -1), with random float64 inputs and per-sample weights; seeded."""
        spec = self.spec
        generator = torch.Generator().manual_seed(seed)

        def randn(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator, dtype=torch.float64)

        x1, x2 = randn(batch, spec.irreps_in1.dim), randn(batch, spec.irreps_in2.dim)
        weight = randn(batch, spec.weight_numel)
        q = torch.linalg.qr(randn(trials, 3, 3)).Q
        rotations = q * torch.sign(torch.linalg.det(q))[:, None, None]
        g = torch.cat([rotations, -rotations])  # (2 trials, 3, 3): rotations, then reflections
        d1, d2, d_out = (
            irreps.D_from_matrix(g) for irreps in (spec.irreps_in1, spec.irreps_in2, spec.irreps_out)
        )
        with torch.no_grad():
            out = self(x1, x2, weight)
            moved_in = self(
                torch.einsum("tij,zj->tzi", d1, x1).flatten(0, 1),
                torch.einsum("tij,zj->tzi", d2, x2).flatten(0, 1),
                weight.repeat(len(g), 1),
            )
            moved_out = torch.einsum("tij,zj->tzi", d_out, out).flatten(0, 1)
        size = out.square().sum().item() * len(g)
        return ((moved_in - moved_out).square().sum().item() / size) ** 0.5 if size > 0 else 0.0

    def report(self) -> CPReport:
        """Per-path residuals and the measured equivariance error (computed once, then kept)."""
        if self._equivariance_error is None:
            self._equivariance_error = self.measure_equivariance_error()
        return CPReport(self.rank, self.path_reports, self._equivariance_error)

    def extra_repr(self) -> str:
        kind = "exact" if self.exact else f"approximate, max path residual {self.approximation_error:.2g}"
        return f"rank={self.rank!r} ({kind})"


def build_cp(
    spec: TensorProductSpec, *, rank: int | str | None = None, allow_approximate: bool = False
) -> nn.Module:
    """Executor of ``spec`` on the ``cp`` backend; see :class:`CPTensorProduct`."""
    if rank is None:
        raise ValueError("the 'cp' backend needs rank= (a positive int, or 'full' for the exact product)")
    return CPTensorProduct(spec, rank, allow_approximate)


CAPABILITIES = BackendCapabilities(
    name="cp",
    summary="CP-decomposed CG tensor per path (TDN-style), fitted by float64 ALS, cached on disk",
    builders={"tensor_product": build_cp, "edge_convolution": through_tensor_product("cp")},
    paths="all parity-allowed paths, every e3nn mode",
    weights="same as cg: per path, every e3nn mode, shared or per sample",
    exact=False,
    error=(
        "relative CP residual per path and measured equivariance error (report()); exact at "
        "rank >= each path's exact CP rank; lower ranks need allow_approximate=True"
    ),
    max_derivative_order=None,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
)

register_backend(CAPABILITIES)
