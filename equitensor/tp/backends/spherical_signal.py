"""Tensor products that are pointwise products of spherical signals (Gaunt products).

A spherical signal of degree <= L with C channels holds, per channel, the coefficients of
``f(r) = sum_lm x_lm Y_lm(r)``. Its natural irreps are ``Cx0e + Cx1o + Cx2e + ...`` (parity
``(-1)^l``). The product ``f1 f2`` projected onto degrees <= L3 is the Gaunt product
``z = sum G x1 x2`` with ``G = c(l1, l2, l3) * wigner_3j``. As a TensorProduct spec it is the
channel-wise ('uuu') product on every path with l1 + l2 + l3 even, whose path coefficients are
``c(l1, l2, l3)`` times one factor per block (per-degree weights are rank one per path).

This module decides whether a spec has that form (:func:`gaunt_limitations`), lowers it to
per-block scale factors, and wraps a signal kernel ``(z, C, (L1+1)^2) x (z, C, (L2+1)^2) ->
(z, C, (L3+1)^2)`` (orthonormal harmonics, ``z = sum G s1 s2``) as a spec executor. The Fourier
(``gaunt``) and quadrature (``grid``) backends differ only in the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from equitensor.devices import cached
from equitensor.irreps import Irreps
from equitensor.o3.gaunt import gaunt_factor
from equitensor.tp.backends.capabilities import Limitation, describe_path
from equitensor.tp.spec import TensorProductSpec

# Path coefficients of a Gaunt spec must factorise to this relative accuracy.
_FACTORISATION_TOLERANCE = 1e-9


def spherical_irreps(channels: int, lmax: int) -> Irreps:
    """``Cx0e + Cx1o + Cx2e + ...`` up to ``lmax``: the irreps of a spherical signal.

    >>> spherical_irreps(8, 3)
    8x0e+8x1o+8x2e+8x3o
    """
    if channels < 1 or lmax < 0:
        raise ValueError(f"need channels >= 1 and lmax >= 0, got channels={channels}, lmax={lmax}")
    return Irreps([(channels, (l, (-1) ** l)) for l in range(lmax + 1)])


def gaunt_spec(channels: int, lmax1: int, lmax2: int, lmax_out: int, scale: float = 1.0) -> TensorProductSpec:
    """The Gaunt product of two spherical signals as a TensorProduct spec.

    Every even path (l1, l2, l3) in mode 'uuu' without weights and with coefficient
    ``scale * c(l1, l2, l3)`` (irrep and path normalization 'none', ``path_weight = coefficient^2``;
    c > 0 in e3nn's basis), so ``out = scale * sum G x1 x2``.

    >>> spec = gaunt_spec(2, 1, 1, 2)
    >>> spec.irreps_out, [(ins.i_in1, ins.i_in2, ins.i_out) for ins in spec.instructions]
    (2x0e+2x1o+2x2e, [(0, 0, 0), (0, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 2)])
    """
    instructions = [
        (l1, l2, l3, "uuu", False, (scale * gaunt_factor(l1, l2, l3)) ** 2)
        for l1 in range(lmax1 + 1)
        for l2 in range(lmax2 + 1)
        for l3 in range(abs(l1 - l2), min(l1 + l2, lmax_out) + 1)
        if (l1 + l2 + l3) % 2 == 0
    ]
    return TensorProductSpec.build(
        spherical_irreps(channels, lmax1),
        spherical_irreps(channels, lmax2),
        spherical_irreps(channels, lmax_out),
        instructions,
        irrep_normalization="none",
        path_normalization="none",
    )


@dataclass(frozen=True)
class SignalPlan:
    """How a Gaunt spec maps onto one signal product: channels, degrees and a scale per block
    (0 for a block no path uses)."""

    channels: int
    lmax1: int
    lmax2: int
    lmax_out: int
    scales1: tuple[float, ...]
    scales2: tuple[float, ...]
    scales_out: tuple[float, ...]


def _path_limitations(spec: TensorProductSpec) -> list[Limitation]:
    """One limitation per path that a Gaunt product cannot have, with all its reasons."""
    out = []
    for index, ins in enumerate(spec.instructions):
        ls = (
            spec.irreps_in1[ins.i_in1].ir.l,
            spec.irreps_in2[ins.i_in2].ir.l,
            spec.irreps_out[ins.i_out].ir.l,
        )
        reasons = []
        if sum(ls) % 2:
            reasons.append("l1+l2+l3 is odd, and a pointwise product on the sphere has no such path")
        if ins.connection_mode != "uuu":
            reasons.append(
                f"mode {ins.connection_mode!r} mixes or pairs channels; the product is channel-wise ('uuu')"
            )
        if ins.has_weight:
            reasons.append(
                "per-path weights cannot be expressed; weights act per degree on the inputs and the output "
                "(rank one per path, see GauntProduct)"
            )
        if reasons:
            out.append(Limitation(index, f"{describe_path(spec, index)}: {'; '.join(reasons)}"))
    return out


def _active(spec: TensorProductSpec) -> list[int]:
    """Instructions that contribute (non-zero coefficient, non-empty blocks)."""
    return [
        index
        for index, ins in enumerate(spec.instructions)
        if ins.coefficient != 0
        and min(
            spec.irreps_in1[ins.i_in1].mul, spec.irreps_in2[ins.i_in2].mul, spec.irreps_out[ins.i_out].mul
        )
        > 0
    ]


def _block_limitations(spec: TensorProductSpec, used: dict[str, set[int]]) -> list[Limitation]:
    out = []
    muls = {
        spec_irreps[i].mul
        for key, spec_irreps in (("in1", spec.irreps_in1), ("in2", spec.irreps_in2), ("out", spec.irreps_out))
        for i in used[key]
    }
    if len(muls) > 1:
        out.append(
            Limitation(
                None,
                f"the blocks the paths use have multiplicities {sorted(muls)}; a channel-wise "
                "product of signals needs one multiplicity (the channel count) for all",
            )
        )
    for key, irreps in (("in1", spec.irreps_in1), ("in2", spec.irreps_in2), ("out", spec.irreps_out)):
        degrees: dict[int, int] = {}
        for i in sorted(used[key]):
            l = irreps[i].ir.l
            if l in degrees:
                out.append(
                    Limitation(
                        None,
                        f"irreps_{key} {irreps} has two used blocks of degree {l} "
                        f"(blocks {degrees[l]} and {i}); a spherical signal has one block per degree",
                    )
                )
            degrees[l] = i
    return out


def _factorise(
    spec: TensorProductSpec, active: list[int], used: dict[str, set[int]]
) -> tuple[dict[str, dict[int, float]], list[Limitation]]:
    """Per-block factors a, b, d with ``coefficient = a[i1] b[i2] d[io] c(l1, l2, l3)`` on every
    even triangle-allowed triple of used blocks; limitations for missing triples or a misfit."""
    ratio: dict[tuple[int, int, int], float] = {}
    for index in active:
        ins = spec.instructions[index]
        key = (ins.i_in1, ins.i_in2, ins.i_out)
        ratio[key] = ratio.get(key, 0.0) + ins.coefficient

    problems = []
    for i1 in sorted(used["in1"]):
        for i2 in sorted(used["in2"]):
            for io in sorted(used["out"]):
                ir1, ir2, ir3 = spec.irreps_in1[i1].ir, spec.irreps_in2[i2].ir, spec.irreps_out[io].ir
                even = (ir1.l + ir2.l + ir3.l) % 2 == 0
                if even and abs(ir1.l - ir2.l) <= ir3.l <= ir1.l + ir2.l and (i1, i2, io) not in ratio:
                    problems.append(
                        Limitation(
                            None,
                            f"the product also couples blocks {i1} x {i2} -> {io} "
                            f"({ir1} x {ir2} -> {ir3}) but the spec has no such path",
                        )
                    )
    if problems:
        return {}, problems

    columns = {("in1", i): n for n, i in enumerate(sorted(used["in1"]))}
    columns |= {("in2", i): len(columns) + n for n, i in enumerate(sorted(used["in2"]))}
    columns |= {("out", i): len(columns) + n for n, i in enumerate(sorted(used["out"]))}
    keys = list(ratio)
    system = torch.zeros(len(keys), len(columns), dtype=torch.float64)
    target = torch.zeros(len(keys), 1, dtype=torch.float64)
    for row, (i1, i2, io) in enumerate(keys):
        ls = (spec.irreps_in1[i1].ir.l, spec.irreps_in2[i2].ir.l, spec.irreps_out[io].ir.l)
        if ratio[(i1, i2, io)] <= 0:
            return {}, [
                Limitation(
                    None,
                    f"blocks {i1} x {i2} -> {io}: coefficient {ratio[(i1, i2, io)]:g} "
                    "is not a positive multiple of the Gaunt coefficient",
                )
            ]
        for column in (columns[("in1", i1)], columns[("in2", i2)], columns[("out", io)]):
            system[row, column] = 1.0
        target[row, 0] = math.log(ratio[(i1, i2, io)] / gaunt_factor(*ls))
    logs = torch.linalg.lstsq(system, target, driver="gelsd").solution
    misfit = (system @ logs - target).abs().flatten()
    if len(keys) and misfit.max().item() > _FACTORISATION_TOLERANCE:
        worst = [keys[i] for i in misfit.argsort(descending=True)[:3].tolist()]
        return {}, [
            Limitation(
                None,
                "the path coefficients are not Gaunt coefficients times one factor per block "
                f"(worst blocks {worst}, log misfit {misfit.max().item():.2g}); a Gaunt product's weights "
                "are rank one per path",
            )
        ]
    factors: dict[str, dict[int, float]] = {"in1": {}, "in2": {}, "out": {}}
    for (key, i), column in columns.items():
        factors[key][i] = math.exp(logs[column, 0].item())
    return factors, []


def _analyse(spec: TensorProductSpec) -> tuple[SignalPlan | None, list[Limitation]]:
    problems = _path_limitations(spec)
    # the spec-wide checks concern what is left once the inexpressible paths are dropped
    dropped = {p.instruction for p in problems}
    active = [i for i in _active(spec) if i not in dropped]
    used: dict[str, set[int]] = {
        "in1": {spec.instructions[i].i_in1 for i in active},
        "in2": {spec.instructions[i].i_in2 for i in active},
        "out": {spec.instructions[i].i_out for i in active},
    }
    problems += _block_limitations(spec, used)
    if problems:
        return None, problems
    factors, problems = _factorise(spec, active, used)
    if problems:
        return None, problems

    def scales(key: str, irreps: Irreps) -> tuple[float, ...]:
        return tuple(factors[key].get(i, 0.0) for i in range(len(irreps)))

    def lmax(key: str, irreps: Irreps) -> int:
        return max((irreps[i].ir.l for i in used[key]), default=0)

    channels = spec.irreps_in1[next(iter(used["in1"]))].mul if active else 1
    plan = SignalPlan(
        channels,
        lmax("in1", spec.irreps_in1),
        lmax("in2", spec.irreps_in2),
        lmax("out", spec.irreps_out),
        scales("in1", spec.irreps_in1),
        scales("in2", spec.irreps_in2),
        scales("out", spec.irreps_out),
    )
    return plan, []


def gaunt_limitations(spec: TensorProductSpec) -> list[Limitation]:
    """Why ``spec`` is not a Gaunt product (empty list when it is)."""
    return _analyse(spec)[1]


def plan_signals(spec: TensorProductSpec) -> SignalPlan:
    """The :class:`SignalPlan` of a Gaunt spec; ValueError listing the limitations otherwise."""
    plan, problems = _analyse(spec)
    if plan is None:
        raise ValueError("not a Gaunt product:\n" + "\n".join(f"  - {p}" for p in problems))
    return plan


def _signal_gather(irreps: Irreps, scales: tuple[float, ...], channels: int, lmax: int):
    """Index (into the flat features padded by one zero column) and scale of each signal entry
    ``(c, l*l + l + m)``; degrees without a used block read the zero column."""
    size = (lmax + 1) ** 2
    index = torch.full((channels, size), irreps.dim, dtype=torch.long)
    scale = torch.zeros(channels, size, dtype=torch.float64)
    offset = 0
    for (mul, ir), factor in zip(irreps, scales):
        if factor != 0:
            block = offset + torch.arange(mul * ir.dim).reshape(mul, ir.dim)
            index[:, ir.l**2 : (ir.l + 1) ** 2] = block
            scale[:, ir.l**2 : (ir.l + 1) ** 2] = factor
        offset += mul * ir.dim
    return index.flatten(), scale.flatten()


def _output_gather(irreps: Irreps, scales: tuple[float, ...], channels: int, lmax: int):
    """Index (into the flat signal padded by one zero column) and scale of each output feature."""
    size = (lmax + 1) ** 2
    index, scale = [], []
    for (mul, ir), factor in zip(irreps, scales):
        if factor != 0:
            columns = torch.arange(channels)[:, None] * size + ir.l**2 + torch.arange(ir.dim)
            index.append(columns.flatten())
            scale.append(torch.full((mul * ir.dim,), factor, dtype=torch.float64))
        else:
            index.append(torch.full((mul * ir.dim,), channels * size, dtype=torch.long))
            scale.append(torch.zeros(mul * ir.dim, dtype=torch.float64))
    if not index:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
    return torch.cat(index), torch.cat(scale)


class CastCache:
    """float64 master tensors cast once per (dtype, device) on use (not buffers, so moving a
    module between dtypes never degrades the constants). Complex masters follow the real dtype."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.masters = tensors
        self._cast: dict[tuple[torch.dtype, torch.device], dict[str, torch.Tensor]] = {}

    def get(self, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
        complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        return cached(
            self._cast,
            (dtype, device),
            lambda: {
                name: t.to(
                    device=device,
                    dtype=complex_dtype if t.is_complex() else dtype if t.is_floating_point() else None,
                )
                for name, t in self.masters.items()
            },
        )


SignalKernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SignalProductExecutor(nn.Module):
    """Runs a Gaunt spec with a signal kernel: gather + scale the inputs into signals, call
    ``kernel(s1, s2)``, scale + scatter the result into the output irreps."""

    def __init__(self, spec: TensorProductSpec, kernel: nn.Module, plan: SignalPlan) -> None:
        super().__init__()
        self.spec = spec
        self.plan = plan
        self.kernel = kernel
        c = plan.channels
        index1, scale1 = _signal_gather(spec.irreps_in1, plan.scales1, c, plan.lmax1)
        index2, scale2 = _signal_gather(spec.irreps_in2, plan.scales2, c, plan.lmax2)
        index_out, scale_out = _output_gather(spec.irreps_out, plan.scales_out, c, plan.lmax_out)
        self._tables = CastCache(
            index1=index1,
            scale1=scale1,
            index2=index2,
            scale2=scale2,
            index_out=index_out,
            scale_out=scale_out,
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if weight is not None and weight.numel() > 0:
            raise ValueError("a Gaunt-product spec has no per-path weights; got a weight tensor")
        t = self._tables.get(x1.dtype, x1.device)
        z, c, plan = x1.shape[0], self.plan.channels, self.plan
        s1 = (_pad(x1)[:, t["index1"]] * t["scale1"]).reshape(z, c, (plan.lmax1 + 1) ** 2)
        s2 = (_pad(x2)[:, t["index2"]] * t["scale2"]).reshape(z, c, (plan.lmax2 + 1) ** 2)
        s = self.kernel(s1, s2).reshape(z, c * (plan.lmax_out + 1) ** 2)
        return _pad(s)[:, t["index_out"]] * t["scale_out"]


def _pad(x: torch.Tensor) -> torch.Tensor:
    """Append one zero column (what missing degrees and unused blocks read)."""
    return torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)
