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
  on CUDA cuEquivariance picks its method, which is recorded. The product basis
  ``cuet.SymmetricContraction(original_mace=True)`` (called with the element index, not one-hot),
  our weights copied into its ``weight`` (see :func:`cueq_symmetric_contraction`).
- TorchMD-Net (torchmd-net): ``TorchMD_Net`` with its ``TensorNet`` and ``Scalar`` head, our
  TensorNet's weights copied in (:mod:`equitensor.interop.torchmd_net`), on its default path
  (warp-lang kernels when installed), building its own neighbour list in every call.
- mace-torch (ACEsuit/mace): ``mace.modules.symmetric_contraction.SymmetricContraction`` for the
  product basis and ``ScaleShiftMACE`` for the whole model, both with ``use_reduced_cg=False``
  and their weights copied into ours (:mod:`equitensor.interop.mace_torch`), so the same numbers
  are computed; the model takes mace-torch's input dict built from the same graph.
"""

from __future__ import annotations

import importlib
import warnings

import torch

from equitensor.bench.passes import Layout
from equitensor.tp.spec import TensorProductSpec

__all__ = [
    "cueq_channelwise",
    "cueq_full_tensor_product",
    "cueq_symmetric_contraction",
    "e3nn_o3",
    "e3nn_tensor_product",
    "mace_torch_contraction",
    "mace_torch_model_passes",
    "torchmd_net_model_passes",
    "unavailable",
]

_MODULES = {
    "e3nn": "e3nn.o3",
    "cueq": "cuequivariance_torch",
    "mace-torch": "mace",
    "torchmd-net": "torchmdnet",
}


def _import(name: str):
    """Import ``name``. e3nn < 0.5 (the one mace-torch pins) reads its constants with a bare
    ``torch.load``, which torch >= 2.6 refuses (weights-only by default) because they hold
    ``slice`` objects: that one harmless builtin is allowed while importing, nothing else."""
    with torch.serialization.safe_globals([slice]):
        return importlib.import_module(name)


def e3nn_o3():
    """``e3nn.o3``, importable with any e3nn version (see :func:`_import`)."""
    return _import("e3nn.o3")


def unavailable(peer: str) -> str | None:
    """Why ``peer`` cannot be used here (None when it imports)."""
    try:
        _import(_MODULES[peer])
    except Exception as error:  # an import of a broken install may raise anything
        return f"{peer} is not importable ({type(error).__name__}: {error})"
    return None


def e3nn_tensor_product(spec: TensorProductSpec, *, shared_weights: bool):
    """e3nn ``o3.TensorProduct`` with our spec's irreps, instructions, path weights and
    normalizations, and external weights (same flat layout as ours)."""
    o3 = e3nn_o3()
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


def e3nn_basis_layout(spec: TensorProductSpec) -> tuple[Layout | None, list[str]]:
    """Output sign map between the installed e3nn and us, and the paths it flips.

    e3nn < 0.5 (pinned by mace-torch) has the opposite sign of ``wigner_3j`` for some
    (l1, l2, l3), e.g. (1, 2, 2), (2, 2, 1), (4, 4, 5); its products on those paths are ours
    times -1 (an equally valid basis choice). Each output block fed by such paths is multiplied
    by -1 on the way to and from e3nn (None: no path differs, e3nn >= 0.5). Raises ValueError when
    an output block mixes paths of both signs (no output map exists)."""
    from equitensor.o3 import wigner_3j

    o3 = e3nn_o3()
    signs: dict[int, float] = {}
    flipped = []
    for ins in spec.instructions:
        ls = tuple(
            irreps[i].ir.l
            for irreps, i in zip(
                (spec.irreps_in1, spec.irreps_in2, spec.irreps_out), (ins.i_in1, ins.i_in2, ins.i_out)
            )
        )
        theirs, ours = o3.wigner_3j(*ls).double(), wigner_3j(*ls, dtype=torch.float64)
        if torch.allclose(theirs, ours, atol=1e-6):
            sign = 1.0
        elif torch.allclose(theirs, -ours, atol=1e-6):
            sign = -1.0
            flipped.append(str(ls))
        else:
            raise ValueError(f"e3nn's wigner_3j{ls} is neither ours nor its negative")
        if signs.setdefault(ins.i_out, sign) != sign:
            raise ValueError(f"output block {ins.i_out} mixes paths whose e3nn wigner_3j signs differ")
    if not flipped:
        return None, []
    factor = torch.cat(
        [torch.full((mul * ir.dim,), signs.get(i, 1.0)) for i, (mul, ir) in enumerate(spec.irreps_out)]
    )

    def flip(t: torch.Tensor) -> torch.Tensor:
        return t * factor.to(device=t.device, dtype=t.dtype)

    return Layout(output_to=flip, output_back=flip), sorted(set(flipped))


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


def cueq_symmetric_contraction(ours, dtype: torch.dtype, device: torch.device):
    """``cuet.SymmetricContraction`` (O3_e3nn, mul_ir, ``original_mace=True``) holding the weights
    of ``ours`` (our ``SymmetricContraction``); call it as ``module(x, element_index)``.

    Its weight (elements, paths, C) concatenates along the paths, for every output irrep k in
    order, our ``weights[k][nu - 1]`` for nu = correlation down to 1 (mace-torch's order). Built
    with torch's default dtype at float64: O3_e3nn takes its Clebsch-Gordan coefficients from
    e3nn's ``wigner_3j``, which follows the default dtype (float32 ones differ from ours by ~1e-8,
    and cuEquivariance caches the contraction per irreps: the check would catch a stale one).
    cuEquivariance's plain ``O3`` is another basis (off by ~0.2 at correlation 3, lmax_out >= 1).
    Returns (module, info)."""
    import cuequivariance as cue
    import cuequivariance_torch as cuet
    from cuequivariance.group_theory.experimental.e3nn import O3_e3nn

    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = cuet.SymmetricContraction(
                cue.Irreps(O3_e3nn, str(ours.irreps_in)),
                cue.Irreps(O3_e3nn, str(ours.irreps_out)),
                contraction_degree=ours.correlation,
                num_elements=ours.num_elements,
                layout_in=cue.mul_ir,
                layout_out=cue.mul_ir,
                original_mace=True,
                dtype=dtype,
                device=device,
                method=_cueq_method(device),
            )
    finally:
        torch.set_default_dtype(default)
    weight = torch.cat([w for per_output in ours.weights for w in reversed(list(per_output))], dim=1)
    if weight.shape != module.weight.shape:
        raise RuntimeError(
            f"cuEquivariance weight shape {tuple(module.weight.shape)} is not ours {tuple(weight.shape)}"
        )
    with torch.no_grad():
        module.weight.copy_(weight)
    info = {
        "module": "cuequivariance_torch.SymmetricContraction(original_mace=True), our weights",
        "group": "O3_e3nn",
        "layout": "mul_ir",
        "method": module.method,
        "warnings": sorted({str(w.message).splitlines()[0] for w in caught}),
    }
    return module, info


def _mace_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mace-torch")
    except PackageNotFoundError:
        return "unknown"


def mace_torch_contraction(irreps_in, irreps_out, correlation: int, elements: int, dtype, device):
    """mace-torch's ``SymmetricContraction`` (its own random weights; copy them into ours) and
    what it is. Its input is (N, C, D): see ``equitensor.interop.mace_torch.features_to_mace_torch``."""
    from equitensor.interop.mace_torch import mace_torch_contraction as build

    module = build(irreps_in, irreps_out, correlation, elements, dtype).to(device)
    info = {
        "module": "mace.modules.symmetric_contraction.SymmetricContraction(use_reduced_cg=False)",
        "mace-torch": _mace_version(),
    }
    return module, info


def mace_torch_model_passes(theirs, ours, graph):
    """Pass functions of mace-torch's model on ``graph`` like ours (``cases._model_passes``):
    energy; energy and forces; and a training step's gradient of sum(E^2) + sum(F^2) with respect
    to its parameters, mapped onto our parameters' layout for the check. Returns (passes,
    to_reference, info)."""
    from equitensor.interop.mace_torch import gradients_as_ours, mace_torch_inputs, mace_torch_parameter_map

    data = mace_torch_inputs(ours, graph)
    matches = mace_torch_parameter_map(ours, theirs)
    tensors = [m.theirs for m in matches if not m.frozen_zero]

    def fwd():
        with torch.no_grad():
            return [theirs(data, training=False, compute_force=False)["energy"]]

    def fwd_bwd():
        out = theirs(data, training=False, compute_force=True)
        return [out["energy"].detach(), out["forces"].detach()]

    def fwd_bwd_dbwd():
        out = theirs(data, training=True, compute_force=True)
        loss = (out["energy"] ** 2).sum() + (out["forces"] ** 2).sum()
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        return [out["energy"].detach(), out["forces"].detach(), *grads]

    def to_reference(pass_name, results):
        if pass_name != "fwd+bwd+dbwd":
            return results
        return results[:2] + gradients_as_ours(ours, matches, list(results[2:]))

    info = {
        "model": "mace.modules.models.ScaleShiftMACE (RealAgnosticInteractionBlock first, then "
        "RealAgnosticResidualInteractionBlock, use_reduced_cg=False), our weights",
        "mace-torch": _mace_version(),
        "parameters": sum(p.numel() for p in theirs.parameters()),
    }
    passes = {"fwd": fwd, "fwd+bwd": fwd_bwd, "fwd+bwd+dbwd": fwd_bwd_dbwd}
    return passes, to_reference, info


def _torchmd_net_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchmd-net")
    except PackageNotFoundError:
        return "unknown"


#: torchmd-net's warp kernels (its default path when warp-lang is installed) compute the output
#: norms to ~1e-7 relative in float64 (its plain PyTorch path equals ours to 1e-10:
#: tests/test_interop_torchmd_net.py); the bench check accepts that much.
TORCHMD_NET_WARP_ERROR = 1e-6


def torchmd_net_model_passes(theirs, ours, graph):
    """Pass functions of torchmd-net's ``TorchMD_Net`` (our TensorNet's twin) on ``graph`` like ours
    (``cases._model_passes``): energy; energy and forces; a training step's gradient of
    sum(E^2) + sum(F^2) for its parameters, mapped onto ours for the check. Returns (passes,
    to_reference, info)."""
    from equitensor.interop.torchmd_net import torchmd_net_inputs, torchmd_net_parameter_map

    inputs = torchmd_net_inputs(graph, cutoff=ours.cutoff)
    theirs_by_name = dict(theirs.named_parameters())
    matches = {m.ours: m for m in torchmd_net_parameter_map(ours)}
    ours_names = [name for name, p in ours.named_parameters() if p.requires_grad]
    tensors = [theirs_by_name[matches[name].theirs] for name in ours_names]

    def run(derivative: bool, training: bool):
        theirs.derivative = derivative
        theirs.train(training)
        energy, forces = theirs(**inputs)
        return energy.flatten(), forces

    def fwd():
        with torch.no_grad():
            return [run(False, False)[0]]

    def fwd_bwd():
        energy, forces = run(True, False)
        return [energy.detach(), forces.detach()]

    def fwd_bwd_dbwd():
        energy, forces = run(True, True)
        loss = (energy**2).sum() + (forces**2).sum()
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        return [energy.detach(), forces.detach(), *grads]

    def to_reference(pass_name, results):
        if pass_name != "fwd+bwd+dbwd":
            return results
        grads = []
        for name, grad in zip(ours_names, results[2:]):
            rows = matches[name].rows
            grads.append(grad[list(rows)] if rows is not None and grad is not None else grad)
        return results[:2] + grads

    info = {
        "model": "torchmdnet TorchMD_Net(TensorNet, Scalar, Atomref prior), our weights; builds its own "
        "neighbour list in each call (ours is given the graph)",
        "torchmd-net": _torchmd_net_version(),
        "warp kernels": bool(getattr(theirs.representation_model, "opt", False)),
        "parameters": sum(p.numel() for p in theirs.parameters()),
    }
    passes = {"fwd": fwd, "fwd+bwd": fwd_bwd, "fwd+bwd+dbwd": fwd_bwd_dbwd}
    return passes, to_reference, info
