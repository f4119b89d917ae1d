"""Edge convolutions that are Gaunt products, for the ``gaunt`` and ``grid`` backends.

An edge convolution multiplies each channel u of the node features by the spherical harmonics of
the edge ('uvu' paths, the second input one block of multiplicity 1 per degree) and weights each
path per channel. Read as spherical signals (the node features one signal per channel, the
harmonics one signal shared by all channels), the pointwise product gives, in output degree l3,
the sum over every even coupling ``(l1, l2, l3)`` of the used degrees. That equals the
convolution exactly when (the *edge form*):

- every path is 'uvu', has l1 + l2 + l3 even and a second-input block of multiplicity 1;
- no two paths reach one output degree (the product sums couplings into one degree, the
  convolution weights each path on its own);
- every even coupling of the used degrees is a path (the product cannot leave one out);
- the used node blocks share one multiplicity (the channels) and both inputs use one block per
  degree.

Then path ``(l1, l2, l3)`` of channel u is ``coefficient / c(l1, l2, l3) * w[u] * z[u, l3]``,
with ``z = sum G s1 s2`` the signal kernel's product (orthonormal harmonics, Gaunt tensor
``G = c * wigner_3j``), the same weight vector and layout as ``cg``. Examples: ``Cx0e x SH``
(MACE's first layer), ``Cx1o x 1o -> 0e + 2e``.

:func:`signal_backend_limitations` is the predicate of the gaunt/grid records (a Gaunt product
spec, or an edge-form spec) and :func:`build_signal_executor` builds the executor of either,
around the backend's own signal kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from equitensor.o3.gaunt import gaunt_factor
from equitensor.tp.backends.capabilities import Limitation, describe_path
from equitensor.tp.backends.spherical_signal import (
    CastCache,
    SignalPlan,
    SignalProductExecutor,
    _output_gather,
    _pad,
    _signal_gather,
    gaunt_limitations,
    plan_signals,
)
from equitensor.tp.spec import TensorProductSpec

#: The ``paths`` and ``weights`` entries of the gaunt and grid capability records.
SIGNAL_PATHS = (
    "l1+l2+l3 even only. Gaunt products: channel-wise (uuu), one block per degree. Edge "
    "convolutions (uvu, one-channel second input): one path per output degree, every even "
    "coupling of the used degrees a path"
)
SIGNAL_WEIGHTS = (
    "Gaunt products: per degree and channel on inputs and output (rank one per path). Edge "
    "convolutions: per path and channel, shared or per edge"
)
_EDGE_FORM = "As an edge convolution (a pointwise product with weights per channel and output degree)"


def _degrees(spec: TensorProductSpec, index: int) -> tuple[int, int, int]:
    ins = spec.instructions[index]
    return (
        spec.irreps_in1[ins.i_in1].ir.l,
        spec.irreps_in2[ins.i_in2].ir.l,
        spec.irreps_out[ins.i_out].ir.l,
    )


def is_edge_shaped(spec: TensorProductSpec) -> bool:
    """Every path is 'uvu' (the shape of an edge convolution), so the edge form is worth checking."""
    return bool(spec.instructions) and all(ins.connection_mode == "uvu" for ins in spec.instructions)


def _path_reasons(spec: TensorProductSpec) -> dict[int, list[str]]:
    """Why each path cannot be in the edge form (paths without a reason are left out)."""
    by_degree: dict[int, list[int]] = {}
    for index in range(len(spec.instructions)):
        by_degree.setdefault(_degrees(spec, index)[2], []).append(index)
    out = {}
    for index, ins in enumerate(spec.instructions):
        l1, l2, l3 = _degrees(spec, index)
        reasons = []
        if ins.connection_mode != "uvu":
            reasons.append(f"mode {ins.connection_mode!r} is not 'uvu'")
        if (l1 + l2 + l3) % 2:
            reasons.append("l1+l2+l3 is odd")
        mul2 = spec.irreps_in2[ins.i_in2].mul
        if mul2 != 1:
            reasons.append(f"its second input block has multiplicity {mul2}, not one signal (1)")
        others = [other for other in by_degree[l3] if other != index]
        if others:
            reasons.append(
                f"paths {others} also reach output degree {l3}: the product sums them, "
                "the convolution weights each path on its own"
            )
        if reasons:
            out[index] = reasons
    return out


def _spec_problems(spec: TensorProductSpec) -> list[Limitation]:
    """Spec-wide reasons: channel counts, repeated degrees, couplings that are not paths."""
    out = []
    used1 = sorted({ins.i_in1 for ins in spec.instructions})
    used2 = sorted({ins.i_in2 for ins in spec.instructions})
    muls = sorted({spec.irreps_in1[i].mul for i in used1})
    if len(muls) > 1:
        out.append(Limitation(None, f"{_EDGE_FORM}: the node blocks have multiplicities {muls}, not one"))
    for name, irreps, used in (
        ("irreps_in1", spec.irreps_in1, used1),
        ("irreps_in2", spec.irreps_in2, used2),
    ):
        degrees = [irreps[i].ir.l for i in used]
        repeated = sorted({l for l in degrees if degrees.count(l) > 1})
        if repeated:
            out.append(
                Limitation(None, f"{_EDGE_FORM}: {name} {irreps} uses several blocks of degree {repeated}")
            )
    if out:
        return out
    paths = {_degrees(spec, index) for index in range(len(spec.instructions))}
    degrees1, degrees2, degrees3 = ({ls[k] for ls in paths} for k in range(3))
    for a in sorted(degrees1):
        for b in sorted(degrees2):
            for c in sorted(degrees3):
                if abs(a - b) <= c <= a + b and (a + b + c) % 2 == 0 and (a, b, c) not in paths:
                    out.append(
                        Limitation(
                            None,
                            f"{_EDGE_FORM}: the product also couples degrees {a} x {b} -> {c}, "
                            "which is not a path",
                        )
                    )
    return out


def edge_form_limitations(spec: TensorProductSpec) -> list[Limitation]:
    """Why ``spec`` is not an edge convolution in the edge form (empty list when it is)."""
    paths = [
        Limitation(index, f"{describe_path(spec, index)}: {_EDGE_FORM}: {'; '.join(reasons)}")
        for index, reasons in _path_reasons(spec).items()
    ]
    return paths + _spec_problems(spec)


def signal_backend_limitations(spec: TensorProductSpec) -> list[Limitation]:
    """The gaunt/grid predicate: none for a Gaunt product spec or an edge-form spec. Otherwise
    why it is not a Gaunt product, and for an all-'uvu' spec why it is not in the edge form
    either (appended to each path's reasons, then the spec-wide ones)."""
    problems = gaunt_limitations(spec)
    if not problems or not is_edge_shaped(spec):
        return problems
    edge_reasons, spec_wide = _path_reasons(spec), _spec_problems(spec)
    if not edge_reasons and not spec_wide:
        return []
    merged = [
        Limitation(
            p.instruction,
            f"{p.reason}. {_EDGE_FORM}: " + "; ".join(edge_reasons[p.instruction]),
        )
        if p.instruction in edge_reasons
        else p
        for p in problems
    ]
    return merged + spec_wide


def plan_edge(spec: TensorProductSpec) -> SignalPlan:
    """The signal plan of an edge-form spec: node blocks scaled by 1, the harmonics (one channel)
    by 1, each output block by its path's ``coefficient / c(l1, l2, l3)``; ValueError otherwise."""
    problems = edge_form_limitations(spec)
    if problems:
        raise ValueError(
            "not an edge convolution in the edge form:\n" + "\n".join(f"  - {p}" for p in problems)
        )
    scales1 = [0.0] * len(spec.irreps_in1)
    scales2 = [0.0] * len(spec.irreps_in2)
    scales_out = [0.0] * len(spec.irreps_out)
    for index, ins in enumerate(spec.instructions):
        scales1[ins.i_in1] = scales2[ins.i_in2] = 1.0
        scales_out[ins.i_out] = ins.coefficient / gaunt_factor(*_degrees(spec, index))
    return SignalPlan(
        channels=spec.irreps_in1[spec.instructions[0].i_in1].mul,
        lmax1=max(_degrees(spec, i)[0] for i in range(len(spec.instructions))),
        lmax2=max(_degrees(spec, i)[1] for i in range(len(spec.instructions))),
        lmax_out=max(_degrees(spec, i)[2] for i in range(len(spec.instructions))),
        scales1=tuple(scales1),
        scales2=tuple(scales2),
        scales_out=tuple(scales_out),
    )


def _weight_gather(spec: TensorProductSpec, channels: int) -> torch.Tensor:
    """Per output feature, the weight column that scales it; ``weight_numel`` (an appended column
    of ones) for unweighted paths and blocks no path reaches. A 'uvu' path with a one-channel
    second input has weights (channels, 1): column ``offset + u`` for channel u."""
    columns = [
        torch.full((mul * ir.dim,), spec.weight_numel, dtype=torch.long) for mul, ir in spec.irreps_out
    ]
    offset = 0
    for ins in spec.instructions:
        if ins.has_weight:
            dim = spec.irreps_out[ins.i_out].ir.dim
            columns[ins.i_out] = (offset + torch.arange(channels)).repeat_interleave(dim)
            offset += ins.weight_numel
    return torch.cat(columns) if columns else torch.zeros(0, dtype=torch.long)


class EdgeSignalExecutor(nn.Module):
    """Runs an edge-form spec with a signal kernel: node features as C signals, the second input
    as one signal (broadcast over the channels by the kernel), ``kernel(s1, s2)``, then each
    output block scaled by its path's ratio and weight. ``weight`` is ``(weight_numel,)``
    (shared) or ``(z, weight_numel)`` (per sample, e.g. per edge)."""

    def __init__(self, spec: TensorProductSpec, kernel: nn.Module, plan: SignalPlan) -> None:
        super().__init__()
        self.spec, self.kernel, self.plan = spec, kernel, plan
        c = plan.channels
        index1, scale1 = _signal_gather(spec.irreps_in1, plan.scales1, c, plan.lmax1)
        index2, scale2 = _signal_gather(spec.irreps_in2, plan.scales2, 1, plan.lmax2)
        index_out, scale_out = _output_gather(spec.irreps_out, plan.scales_out, c, plan.lmax_out)
        self._tables = CastCache(
            index1=index1,
            scale1=scale1,
            index2=index2,
            scale2=scale2,
            index_out=index_out,
            scale_out=scale_out,
            weight_index=_weight_gather(spec, c),
        )

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        numel = self.spec.weight_numel
        if numel and (weight is None or weight.shape[-1] != numel):
            got = None if weight is None else tuple(weight.shape)
            raise ValueError(f"this spec needs weights (..., {numel}), got {got}")
        t = self._tables.get(x1.dtype, x1.device)
        z, plan = x1.shape[0], self.plan
        s1 = (_pad(x1)[:, t["index1"]] * t["scale1"]).reshape(z, plan.channels, (plan.lmax1 + 1) ** 2)
        s2 = (_pad(x2)[:, t["index2"]] * t["scale2"]).reshape(z, 1, (plan.lmax2 + 1) ** 2)
        s = self.kernel(s1, s2).reshape(z, plan.channels * (plan.lmax_out + 1) ** 2)
        out = _pad(s)[:, t["index_out"]] * t["scale_out"]
        if numel:
            ones = weight.new_ones(weight.shape[:-1] + (1,))
            out = out * torch.cat([weight, ones], dim=-1)[..., t["weight_index"]]
        return out


KernelFactory = Callable[[int, int, int], nn.Module]


def build_signal_executor(spec: TensorProductSpec, make_kernel: KernelFactory) -> nn.Module:
    """The executor of a Gaunt product spec or an edge-form spec around
    ``make_kernel(lmax1, lmax2, lmax_out)``; ValueError naming the reasons for any other spec."""
    if not gaunt_limitations(spec):
        plan = plan_signals(spec)
        return SignalProductExecutor(spec, make_kernel(plan.lmax1, plan.lmax2, plan.lmax_out), plan)
    if not is_edge_shaped(spec):
        plan_signals(spec)  # raises, listing why it is not a Gaunt product
    plan = plan_edge(spec)
    return EdgeSignalExecutor(spec, make_kernel(plan.lmax1, plan.lmax2, plan.lmax_out), plan)
