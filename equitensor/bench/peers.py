"""Other libraries' implementations of the benchmarked operations (e3nn, cuEquivariance, MACE).

Each builder returns a callable with the same arguments as ours plus a :class:`Layout` that maps
our tensors to its own. A peer that cannot be imported, or that has no equivalent of an
operation, is skipped with a reason (:func:`unavailable`) rather than silently replaced.

- e3nn: ``o3.TensorProduct`` with exactly our instructions and normalizations (same weights),
  ``o3.FullTensorProduct``; for the edge convolution its spherical harmonics, then gather and
  ``index_add`` like ours.
- cuEquivariance (group ``O3_e3nn``, e3nn's irrep order; ``mul_ir`` layout): the channel-wise
  product ``cuet.ChannelWiseTensorProduct`` (weight blocks permuted to cuEquivariance's sorted
  order) and ``cue.descriptors.full_tensor_product``. On CPU only the ``naive`` method exists;
  on CUDA cuEquivariance picks its method, which is recorded.
"""

from __future__ import annotations

import importlib
import warnings

import torch

from equitensor.bench.passes import Layout
from equitensor.tp.spec import TensorProductSpec

__all__ = ["cueq_channelwise", "cueq_full_tensor_product", "e3nn_tensor_product", "unavailable"]

_MODULES = {"e3nn": "e3nn", "cueq": "cuequivariance_torch", "mace-torch": "mace", "torchmd-net": "torchmdnet"}


def unavailable(peer: str) -> str | None:
    """Why ``peer`` cannot be used here (None when it imports)."""
    try:
        importlib.import_module(_MODULES[peer])
    except Exception as error:  # an import of a broken install may raise anything
        return f"{peer} is not importable ({type(error).__name__}: {error})"
    return None


def e3nn_tensor_product(spec: TensorProductSpec, *, shared_weights: bool):
    """e3nn ``o3.TensorProduct`` with our spec's irreps, instructions, path weights and
    normalizations, and external weights (same flat layout as ours)."""
    from e3nn import o3

    instructions = [
        (ins.i_in1, ins.i_in2, ins.i_out, ins.connection_mode, ins.has_weight, ins.path_weight)
        for ins in spec.instructions
    ]
    return o3.TensorProduct(
        str(spec.irreps_in1),
        str(spec.irreps_in2),
        str(spec.irreps_out),
        instructions,
        irrep_normalization=spec.irrep_normalization,
        path_normalization=spec.path_normalization,
        shared_weights=shared_weights,
        internal_weights=False,
    )


def transpose_layout(x: torch.Tensor, irreps, to_ir_mul: bool) -> torch.Tensor:
    """(z, dim) between e3nn's mul_ir layout and cuEquivariance's ir_mul layout."""
    blocks = []
    for (mul, ir), block in zip(irreps, x.split([mul * ir.dim for mul, ir in irreps], dim=-1)):
        shape = (mul, ir.dim) if to_ir_mul else (ir.dim, mul)
        blocks.append(block.reshape(-1, *shape).transpose(1, 2).reshape(-1, mul * ir.dim))
    return torch.cat(blocks, dim=-1)


def _cueq_method(device: torch.device) -> str | None:
    return "naive" if device.type == "cpu" else None


def cueq_channelwise(spec: TensorProductSpec, dtype: torch.dtype, device: torch.device):
    """``cuet.ChannelWiseTensorProduct`` (mul_ir, per-sample weights) for a 'uvu' spec with one
    output block per path (our edge product). Returns (module, weight permutation, info):
    cuEquivariance orders weight blocks like its sorted output blocks, so our weight block n
    goes to the position of its output block."""
    import cuequivariance as cue
    import cuequivariance_torch as cuet
    from cuequivariance.group_theory.experimental.e3nn import O3_e3nn

    irreps_in1, irreps_in2 = (
        cue.Irreps(O3_e3nn, str(spec.irreps_in1)),
        cue.Irreps(O3_e3nn, str(spec.irreps_in2)),
    )
    filter_out = [ir for _, ir in cue.Irreps(O3_e3nn, str(spec.irreps_out.simplify()))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = cuet.ChannelWiseTensorProduct(
            irreps_in1,
            irreps_in2,
            filter_out,
            layout=cue.mul_ir,
            shared_weights=False,
            internal_weights=False,
            dtype=dtype,
            device=device,
            method=_cueq_method(device),
        )
    if str(module.irreps_out) != str(spec.irreps_out):
        raise RuntimeError(f"cuEquivariance output irreps {module.irreps_out} differ from {spec.irreps_out}")
    sizes = [ins.weight_numel for ins in spec.instructions]
    offsets = [sum(sizes[:n]) for n in range(len(sizes))]
    order = sorted(range(len(sizes)), key=lambda n: spec.instructions[n].i_out)
    perm = torch.cat([torch.arange(offsets[n], offsets[n] + sizes[n]) for n in order]).to(device)
    info = {
        "module": "cuequivariance_torch.ChannelWiseTensorProduct",
        "group": "O3_e3nn",
        "layout": "mul_ir",
        "method": getattr(getattr(module, "f", None), "method", None),
        "warnings": sorted({str(w.message).splitlines()[0] for w in caught}),
    }
    return module, perm, info


def weight_layout(perm: torch.Tensor, position: int, count: int) -> Layout:
    """Layout permuting the weight columns of input ``position`` (of ``count`` inputs)."""
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(len(perm), device=perm.device)
    to = [lambda t: t] * count
    back = [lambda t: t] * count
    to[position] = lambda t: t[..., perm]
    back[position] = lambda t: t[..., inverse]
    return Layout(inputs_to=to, inputs_back=back)


def cueq_full_tensor_product(irreps1, irreps2, dtype: torch.dtype, device: torch.device):
    """``cue.descriptors.full_tensor_product`` as a ``cuet.SegmentedPolynomial`` (both inputs of
    multiplicity 1, where mul_ir and ir_mul coincide). Returns (callable(x1, x2), info)."""
    import cuequivariance as cue
    import cuequivariance_torch as cuet
    from cuequivariance.group_theory.experimental.e3nn import O3_e3nn

    if any(mul != 1 for mul, _ in irreps1) or any(mul != 1 for mul, _ in irreps2):
        raise ValueError("only inputs of multiplicity 1 (layout-free) are compared with cuEquivariance")
    polynomial = cue.descriptors.full_tensor_product(
        cue.Irreps(O3_e3nn, str(irreps1)), cue.Irreps(O3_e3nn, str(irreps2))
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kwargs = {"method": _cueq_method(device)} if device.type == "cpu" else {}
        module = cuet.SegmentedPolynomial(polynomial.polynomial, **kwargs).to(device)
    info = {
        "module": "cuequivariance_torch.SegmentedPolynomial(cue.descriptors.full_tensor_product)",
        "group": "O3_e3nn",
        "irreps_out": str(polynomial.outputs[0].irreps),
        "method": getattr(module, "method", None),
        "warnings": sorted({str(w.message).splitlines()[0] for w in caught}),
    }
    del dtype  # SegmentedPolynomial follows its inputs' dtype
    return (lambda x1, x2: module([x1, x2])[0]), info
