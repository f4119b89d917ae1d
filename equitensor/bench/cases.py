"""The benchmarked operations: each builder returns a :class:`Case`, one operation at one size,
with every requested implementation (ours per backend, peers when installed) ready to run.

Operations and the shapes they use (C channels, degree L):

- ``tp:gaunt``: the Gaunt product of two spherical signals ``Cx0e + Cx1o + .. + CxLp`` channel by
  channel, outputs up to ``lmax_out`` (L or 2L); ``GauntProduct(weights=False)`` on backends cg,
  gaunt, grid. Peer: e3nn ``TensorProduct`` with the same 'uuu' instructions and coefficients.
- ``tp:full``: the full tensor product ``(Cx0e + .. + CxLp) x (1x0e + .. + 1xLp)``, every path,
  outputs up to 2L (C = 1 is the "MIMO" product of the Price-of-Freedom benchmark);
  ``FullTensorProduct`` on cg and cp (Gaunt backends cannot express the odd paths: skipped with
  the registry's reason). Peers: e3nn ``FullTensorProduct``; cuEquivariance for C = 1.
- ``conv``: MACE's edge convolution ``EdgeConvolution(C x (0e..node_lmax), SH(L), C x (0e..L))``
  on random edges, backends cg, so2 and cp. Peers: e3nn and cuEquivariance channel-wise products,
  each with e3nn's spherical harmonics, gather and ``index_add``.
- ``product``: MACE's product basis ``SymmetricContraction(C x (0e..L) -> C x (0e..lmax_out))``
  with element weights (cg). Peers: mace-torch's ``SymmetricContraction``, its weights copied
  into ours; cuEquivariance's ``SymmetricContraction`` with ours (element index input).
- ``model:mace`` / ``model:tensornet``: energy (fwd), energy + forces (fwd+bwd), and a training
  step's gradient of an energy+force loss with respect to the parameters (fwd+bwd+dbwd), on a
  periodic CuNi cell or a molecule. MACE on edge-convolution backends cg and so2 (same weights);
  peer mace-torch's ``ScaleShiftMACE`` of the same hyperparameters, whose weights ours take.

``cp`` (CP-decomposed CG tensors) is an approximate backend: built at ``cp_rank`` ('full', the
default, is each path's exact CP rank and reproduces cg), its rank and largest path residual are
recorded, and its check accepts a difference from cg of 10x that residual (``runner``).

Inputs are random normal (fixed seed); edge vectors random normal, senders and receivers random.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from equitensor.bench import counts as cnt
from equitensor.bench import peers
from equitensor.bench.passes import Layout, PassFunction, autograd_passes
from equitensor.interop.mace_torch import (
    features_from_mace_torch,
    features_to_mace_torch,
    load_mace_torch_contraction_weights,
    load_mace_torch_weights,
)
from equitensor.irreps import Irreps
from equitensor.tp import EdgeConvolution, FullTensorProduct, GauntProduct, spherical_irreps

__all__ = [
    "Case",
    "Implementation",
    "conv_case",
    "model_case",
    "product_case",
    "tp_full_case",
    "tp_gaunt_case",
]

REFERENCE = "cg"


@dataclass
class Implementation:
    """One implementation of a case: its pass functions, the map of their results to the
    reference layout, its forward counts, and what it is (``source``: 'equitensor' or the peer)."""

    name: str
    source: str
    passes: dict[str, PassFunction]
    to_reference: Callable[[str, list[torch.Tensor]], list[torch.Tensor]]
    counts: cnt.Counts | None = None
    info: dict = field(default_factory=dict)
    timed: bool = True  # False: built only as the reference of the check
    # an approximate backend's reported relative error: the check accepts a difference that large
    # (see runner.approximate_tolerance); None for exact implementations
    approximation_error: float | None = None
    note: str | None = None  # shown under the table (e.g. an approximate backend and its setting)


@dataclass
class Case:
    """One operation at one size: implementations, and those skipped with their reasons."""

    operation: str
    lmax: int | None
    channels: int
    size: int
    size_name: str
    shape: dict
    implementations: list[Implementation]
    skipped: dict[str, str]
    reference: str = REFERENCE


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(gen: torch.Generator, shape, dtype, device) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)


def _operator(
    name: str,
    source: str,
    call,
    inputs,
    constants,
    grad_out,
    directions,
    layout: Layout | None = None,
    **extra,
) -> Implementation:
    passes, back = autograd_passes(call, inputs, constants, grad_out, directions, layout)
    return Implementation(name, source, passes, back, **extra)


def _first_line(error: Exception) -> str:
    """The error's first line and first listed item, with how many more items it lists."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = f"{type(error).__name__}: " + " ".join(lines[:2])
    return text + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")


def _wanted(backends: list[str], reference_first: bool = True) -> list[str]:
    """The backends to build: the reference always (timed only if asked for), then the others."""
    return [REFERENCE] + [b for b in backends if b != REFERENCE] if reference_first else list(backends)


def _ours(
    backend: str,
    module,
    inputs,
    constants,
    grad_out,
    directions,
    counts: cnt.Counts | None,
    backends: list[str],
    executor=None,
) -> Implementation:
    """Our ``module`` on ``backend``; timed only if asked for (the reference is always built).
    ``executor``: the module's cp executor, whose rank and residual are recorded."""
    info, extra = {"module": repr(module)}, {}
    if backend == "cp":
        cp_info = cp_description(executor)
        info.update(cp_info)
        extra = {"approximation_error": cp_info["max_path_residual"], "note": cp_note(cp_info)}
    return _operator(
        backend,
        "equitensor",
        module,
        inputs,
        constants,
        grad_out,
        directions,
        counts=counts,
        info=info,
        timed=backend in backends,
        **extra,
    )


def _e3nn_basis(spec, info: dict) -> tuple[Layout | None, dict]:
    """e3nn's output sign map (e3nn < 0.5 flips some wigner_3j) and ``info`` saying which paths."""
    layout, flipped = peers.e3nn_basis_layout(spec)
    if flipped:
        info = {**info, "wigner_3j_sign_flipped_paths": flipped}
    return layout, info


# ----------------------------------------------------------------------------- cp


def cp_options(rank: int | str) -> dict:
    """Options of the ``cp`` backend at ``rank`` ('full': the exact construction, which reproduces
    cg; an int: capped per path at its exact rank, approximate below it, so opted in)."""
    return {"rank": rank, "allow_approximate": rank != "full"}


def cp_description(executor) -> dict:
    """What the JSON says of a cp executor: rank, exactness, largest path residual, and for an
    approximate one the measured equivariance error (random rotations and reflections)."""
    info = {
        "approximate_backend": True,
        "cp_rank": executor.rank,
        "cp_exact": executor.exact,
        "max_path_residual": executor.approximation_error,
        "paths_below_exact_rank": sum(not p.exact for p in executor.path_reports),
    }
    if not executor.exact:
        info["equivariance_error"] = executor.report().equivariance_error
    return info


def cp_note(info: dict) -> str:
    """The line under the table for a cp implementation."""
    if info["cp_exact"]:
        kind = "exact at this rank (every path at its exact CP rank)"
    else:
        kind = (
            f"APPROXIMATE: {info['paths_below_exact_rank']} path(s) below their exact CP rank, "
            f"equivariance error {info['equivariance_error']:.1e}"
        )
    return (
        f"cp = CP-decomposed CG tensors, an approximate backend (opt-in), rank {info['cp_rank']}: "
        f"{kind}; max path residual {info['max_path_residual']:.1e}"
    )


# ----------------------------------------------------------------------------- tp


def tp_gaunt_case(
    lmax: int,
    channels: int,
    batch: int,
    *,
    lmax_out: int,
    backends: list[str],
    peers_wanted: list[str],
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
) -> Case:
    """Gaunt product of C-channel signals of degree <= lmax, outputs up to ``lmax_out``."""
    gen = _generator(seed)
    irreps, irreps_out = spherical_irreps(channels, lmax), spherical_irreps(channels, lmax_out)
    x1, x2 = (_randn(gen, (batch, irreps.dim), dtype, device) for _ in range(2))
    g = _randn(gen, (batch, irreps_out.dim), dtype, device)
    v = [_randn(gen, (batch, irreps.dim), dtype, device) for _ in range(2)]
    itemsize = x1.element_size()
    impls, skipped, spec = [], {}, None
    for backend in _wanted(backends):
        try:
            module = GauntProduct(channels, lmax, lmax, lmax_out, backend=backend, weights=False)
        except ValueError as error:  # e.g. cp: a tensor-product backend, no Gaunt product
            skipped[backend] = _first_line(error)
            continue
        module = module.to(device)
        spec = module.spec
        if backend == "gaunt":
            counts = cnt.gaunt_fft_counts(lmax, lmax, lmax_out, channels, batch, itemsize)
        elif backend == "grid":
            resolution = module.executor.kernel.resolution
            counts = cnt.grid_counts(lmax, lmax, lmax_out, resolution, channels, batch, itemsize)
        else:
            counts = cnt.tensor_product_counts(spec, batch, itemsize, per_sample_weights=False)
        impls.append(_ours(backend, module, [x1, x2], [], g, v, counts, backends))
    if "e3nn" in peers_wanted:
        reason = peers.unavailable("e3nn")
        if reason:
            skipped["e3nn"] = reason
        else:
            theirs = peers.e3nn_tensor_product(spec, shared_weights=True).to(device=device, dtype=dtype)
            layout, info = _e3nn_basis(spec, {"module": "e3nn.o3.TensorProduct"})
            impls.append(_operator("e3nn", "e3nn", theirs, [x1, x2], [], g, v, layout, info=info))
    if "cueq" in peers_wanted:
        skipped["cueq"] = (
            "cuEquivariance has no Gaunt-product (per-path fixed coefficient, uuu) module: not compared"
        )
    shape = {"irreps_in": str(irreps), "irreps_out": str(irreps_out), "paths": len(spec.instructions)}
    return Case("tp:gaunt", lmax, channels, batch, "batch", shape, impls, skipped)


def tp_full_case(
    lmax: int,
    channels: int,
    batch: int,
    *,
    backends: list[str],
    peers_wanted: list[str],
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
    cp_rank: int | str = "full",
) -> Case:
    """Full tensor product of ``C x (0e..L)`` with ``1 x (0e..L)``: every parity-allowed path
    (``cp`` at ``cp_rank``)."""
    gen = _generator(seed)
    irreps1, irreps2 = spherical_irreps(channels, lmax), spherical_irreps(1, lmax)
    impls, skipped = [], {}
    reference = FullTensorProduct(irreps1, irreps2).to(device)
    x1 = _randn(gen, (batch, irreps1.dim), dtype, device)
    x2 = _randn(gen, (batch, irreps2.dim), dtype, device)
    g = _randn(gen, (batch, reference.irreps_out.dim), dtype, device)
    v = [_randn(gen, (batch, irreps1.dim), dtype, device), _randn(gen, (batch, irreps2.dim), dtype, device)]
    itemsize = x1.element_size()
    for backend in _wanted(backends):
        options = cp_options(cp_rank) if backend == "cp" else None
        try:
            module = (
                reference
                if backend == REFERENCE
                else FullTensorProduct(irreps1, irreps2, backend=backend, backend_options=options)
            )
        except ValueError as error:  # the registry refuses what a backend cannot express
            skipped[backend] = _first_line(error)
            continue
        counts = (
            None  # the CP product's work is not modelled
            if backend == "cp"
            else cnt.tensor_product_counts(module.spec, batch, itemsize, per_sample_weights=False)
        )
        impls.append(_ours(backend, module.to(device), [x1, x2], [], g, v, counts, backends, module.executor))
    if "e3nn" in peers_wanted:
        reason = peers.unavailable("e3nn")
        if reason:
            skipped["e3nn"] = reason
        else:
            theirs = (
                peers.e3nn_o3().FullTensorProduct(str(irreps1), str(irreps2)).to(device=device, dtype=dtype)
            )
            if str(theirs.irreps_out) != str(reference.irreps_out):
                skipped["e3nn"] = f"e3nn output irreps {theirs.irreps_out} differ from {reference.irreps_out}"
            else:
                try:
                    layout, info = _e3nn_basis(reference.spec, {"module": "e3nn.o3.FullTensorProduct"})
                    impls.append(_operator("e3nn", "e3nn", theirs, [x1, x2], [], g, v, layout, info=info))
                except ValueError as error:
                    skipped["e3nn"] = _first_line(error)
    if "cueq" in peers_wanted:
        reason = peers.unavailable("cueq")
        if reason:
            skipped["cueq"] = reason
        elif channels != 1:
            skipped["cueq"] = "cuEquivariance full product compared only for C = 1 (mul_ir == ir_mul)"
        else:
            try:
                call, info = peers.cueq_full_tensor_product(irreps1, irreps2, dtype, device)
                if Irreps(info["irreps_out"]) != reference.irreps_out:
                    raise RuntimeError(
                        f"output irreps {info['irreps_out']} differ from {reference.irreps_out}"
                    )
                impls.append(_operator("cueq", "cuequivariance", call, [x1, x2], [], g, v, info=info))
            except Exception as error:  # a peer's failure is reported, never fatal
                skipped["cueq"] = _first_line(error)
    shape = {
        "irreps_in1": str(irreps1),
        "irreps_in2": str(irreps2),
        "irreps_out": str(reference.irreps_out),
        "paths": len(reference.instructions),
    }
    return Case("tp:full", lmax, channels, batch, "batch", shape, impls, skipped)


# ----------------------------------------------------------------------------- conv


def random_edges(nodes: int, edges: int, gen: torch.Generator, device) -> torch.Tensor:
    """(2, E) random senders and receivers (self-loops allowed: only the shapes matter)."""
    return torch.randint(0, nodes, (2, edges), generator=gen).to(device)


def conv_case(
    lmax: int,
    channels: int,
    edges: int,
    *,
    nodes: int,
    node_lmax: int,
    backends: list[str],
    peers_wanted: list[str],
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
    cp_rank: int | str = "full",
) -> Case:
    """MACE's edge convolution with spherical harmonics up to ``lmax`` (``cp`` at ``cp_rank``)."""
    gen = _generator(seed)
    irreps_node, irreps_sh = spherical_irreps(channels, node_lmax), Irreps.spherical_harmonics(lmax)
    target = spherical_irreps(channels, lmax)
    reference = EdgeConvolution(irreps_node, irreps_sh, target, backend=REFERENCE).to(device)
    spec = reference.product.spec
    x = _randn(gen, (nodes, irreps_node.dim), dtype, device)
    vectors = _randn(gen, (edges, 3), dtype, device)
    w = _randn(gen, (edges, reference.weight_numel), dtype, device)
    edge_index = random_edges(nodes, edges, gen, device)
    g = _randn(gen, (nodes, reference.irreps_out.dim), dtype, device)
    v = [_randn(gen, tuple(t.shape), dtype, device) for t in (x, vectors, w)]
    itemsize = x.element_size()
    impls, skipped = [], {}
    for backend in _wanted(backends):
        options = cp_options(cp_rank) if backend == "cp" else {}
        try:
            module = (
                reference
                if backend == REFERENCE
                else EdgeConvolution(irreps_node, irreps_sh, target, backend=backend, **options).to(device)
            )
        except ValueError as error:
            skipped[backend] = _first_line(error)
            continue
        if backend == "so2":
            counts = cnt.so2_counts(module.product.per_edge, nodes, edges, itemsize)
        elif backend == "cp":
            counts = None  # the CP product's work is not modelled
        else:
            counts = cnt.edge_convolution_counts(spec, nodes, edges, itemsize)
        executor = module.product.executor if backend == "cp" else None
        impls.append(_ours(backend, module, [x, vectors, w], [edge_index], g, v, counts, backends, executor))

    def message_passing(product, sh_irreps):
        o3 = peers.e3nn_o3()

        def call(x, vectors, w, edge_index):
            sh = o3.spherical_harmonics(sh_irreps, vectors, normalize=True, normalization="component")
            messages = product(x[edge_index[0]], sh, w)
            return messages.new_zeros((x.shape[0], messages.shape[-1])).index_add(0, edge_index[1], messages)

        return call

    for peer in ("e3nn", "cueq"):
        if peer not in peers_wanted:
            continue
        reason = peers.unavailable(peer) or peers.unavailable("e3nn")
        if reason:
            skipped[peer] = reason
            continue
        try:
            if peer == "e3nn":
                product = peers.e3nn_tensor_product(spec, shared_weights=False).to(device=device, dtype=dtype)
                layout, info = _e3nn_basis(spec, {"module": "e3nn.o3.TensorProduct + e3nn SH + index_add"})
            else:
                product, perm, info = peers.cueq_channelwise(spec, dtype, device)
                layout = peers.weight_layout(perm, 2, 3)
                info["module"] += " + e3nn SH + index_add"
            call = message_passing(product, str(irreps_sh))
            impls.append(
                _operator(
                    peer,
                    "cuequivariance" if peer == "cueq" else peer,
                    call,
                    [x, vectors, w],
                    [edge_index],
                    g,
                    v,
                    layout,
                    info=info,
                )
            )
        except Exception as error:  # a peer's failure is reported, never fatal
            skipped[peer] = _first_line(error)
    shape = {
        "irreps_node": str(irreps_node),
        "irreps_sh": str(irreps_sh),
        "irreps_out": str(reference.irreps_out),
        "paths": len(spec.instructions),
        "nodes": nodes,
        "edges": edges,
        "weight_numel": reference.weight_numel,
    }
    return Case("conv", lmax, channels, edges, "edges", shape, impls, skipped)


# ----------------------------------------------------------------------------- product


def product_case(
    lmax: int,
    channels: int,
    nodes: int,
    *,
    correlation: int,
    lmax_out: int,
    elements: int,
    backends: list[str],
    peers_wanted: list[str],
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
) -> Case:
    """MACE's symmetric contraction of ``C x (0e..L)`` to ``C x (0e..lmax_out)``."""
    from equitensor.nn import SymmetricContraction

    gen = _generator(seed)
    irreps_in, irreps_out = spherical_irreps(channels, lmax), spherical_irreps(channels, lmax_out)
    torch.manual_seed(seed)
    x = _randn(gen, (nodes, irreps_in.dim), dtype, device)
    species = torch.randint(0, elements, (nodes,), generator=gen).to(device)
    attrs = torch.nn.functional.one_hot(species, elements).to(dtype)
    g = _randn(gen, (nodes, irreps_out.dim), dtype, device)
    v = [_randn(gen, (nodes, irreps_in.dim), dtype, device)]
    impls, skipped, modules = [], {}, []
    for backend in _wanted(backends):
        try:
            module = SymmetricContraction(irreps_in, irreps_out, correlation, elements, backend=backend)
        except ValueError as error:
            skipped[backend] = _first_line(error)
            continue
        module = module.to(device=device, dtype=dtype)
        if modules:
            module.load_state_dict(modules[0].state_dict())
        modules.append(module)
        if backend == "sparse":
            counts = cnt.sparse_product_counts(module, nodes, x.element_size())
        else:
            counts = cnt.symmetric_contraction_counts(module, nodes, x.element_size())
        impls.append(_ours(backend, module, [x], [attrs], g, v, counts, backends))
    reference = modules[0] if modules else None
    if "mace-torch" in peers_wanted:
        reason = peers.unavailable("mace-torch")
        if reason:
            skipped["mace-torch"] = reason
        else:
            try:
                theirs, info = peers.mace_torch_contraction(
                    irreps_in, irreps_out, correlation, elements, dtype, device
                )
                for module in modules:  # mace-torch's weights, in every one of ours
                    load_mace_torch_contraction_weights(module, theirs)
                layout = Layout(
                    inputs_to=[lambda t: features_to_mace_torch(t, irreps_in)],
                    inputs_back=[lambda t: features_from_mace_torch(t, irreps_in)],
                )
                impls.append(
                    _operator("mace-torch", "mace-torch", theirs, [x], [attrs], g, v, layout, info=info)
                )
            except Exception as error:  # a peer's failure is reported, never fatal
                skipped["mace-torch"] = _first_line(error)
    if "cueq" in peers_wanted:  # after mace-torch: it takes our weights, mace-torch's if loaded
        reason = peers.unavailable("cueq") or ("no reference was built" if reference is None else None)
        if reason:
            skipped["cueq"] = reason
        else:
            try:
                theirs, info = peers.cueq_symmetric_contraction(reference, dtype, device)
                index = species.to(torch.int32)  # the element index in place of the one-hot attrs
                impls.append(_operator("cueq", "cuequivariance", theirs, [x], [index], g, v, info=info))
            except Exception as error:  # a peer's failure is reported, never fatal
                skipped["cueq"] = _first_line(error)
    shape = {
        "irreps_in": str(irreps_in),
        "irreps_out": str(irreps_out),
        "correlation": correlation,
        "elements": elements,
        "paths": reference.num_paths if reference is not None else None,
    }
    return Case("product", lmax, channels, nodes, "nodes", shape, impls, skipped)


# ----------------------------------------------------------------------------- model


def atoms_for(system: str, atoms: int, molecule: str, seed: int):
    """A rattled fcc CuNi supercell of about ``atoms`` atoms (periodic), or an ASE molecule."""
    from ase.build import bulk
    from ase.build import molecule as ase_molecule

    rng = np.random.default_rng(seed)
    if system == "molecule":
        structure = ase_molecule(molecule)
    elif system == "cell":
        repeat = max(1, round((atoms / 4) ** (1 / 3)))
        structure = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
        numbers = structure.numbers.copy()
        numbers[rng.random(len(structure)) < 0.3] = 28
        structure.numbers = numbers
    else:
        raise ValueError(f"system must be 'cell' or 'molecule', got {system!r}")
    structure.positions += rng.normal(scale=0.05, size=structure.positions.shape)
    return structure


def _model_passes(model, graph) -> tuple[dict[str, PassFunction], Callable]:
    params = [p for p in model.parameters() if p.requires_grad]

    def fwd():
        with torch.no_grad():
            return [model(graph, compute_forces=False)["energy"]]

    def fwd_bwd():
        out = model(graph)
        return [out["energy"], out["forces"]]

    def fwd_bwd_dbwd():
        out = model(graph, training=True)
        loss = (out["energy"] ** 2).sum() + (out["forces"] ** 2).sum()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [out["energy"].detach(), out["forces"].detach(), *grads]

    def to_reference(pass_name, tensors):
        return [torch.zeros_like(p) if t is None else t for t, p in zip(tensors, [None, None, *params])]

    return {"fwd": fwd, "fwd+bwd": fwd_bwd, "fwd+bwd+dbwd": fwd_bwd_dbwd}, to_reference


def _peer_twin(peer: str, ours, dtype, device, skipped: dict):
    """The peer's model with the same weights: mace-torch's ScaleShiftMACE (its weights copied
    into ours) or torchmd-net's TorchMD_Net (ours copied into it); None, with the reason in
    ``skipped``, when the peer is missing or fails."""
    reason = peers.unavailable(peer)
    if reason:
        skipped[peer] = reason
        return None
    try:
        if peer == "mace-torch":
            from equitensor.interop.mace_torch import mace_torch_model

            theirs = mace_torch_model(ours, dtype).to(device)
            load_mace_torch_weights(ours, theirs)
            return theirs
        from equitensor.interop.torchmd_net import torchmd_net_model

        return torchmd_net_model(ours, dtype).to(device)
    except Exception as error:  # a peer's failure is reported, never fatal
        skipped[peer] = _first_line(error)
        return None


def model_case(
    model_name: str,
    lmax: int | None,
    channels: int,
    *,
    system: str,
    atoms: int,
    molecule: str,
    r_max: float,
    backends: list[str],
    peers_wanted: list[str],
    dtype: torch.dtype,
    device: torch.device,
    seed: int = 0,
) -> Case:
    """Whole-model energy and forces for ``mace`` (lmax = max_ell, on each conv backend) or
    ``tensornet`` (no backends, lmax unused)."""
    from equitensor.datasets.atoms_to_graph import graph_from_atoms
    from equitensor.models import MACE, TensorNet

    structure = atoms_for(system, atoms, molecule, seed)
    graph = graph_from_atoms(structure, r_max, dtype=dtype).to(device=device)
    elements = sorted(set(structure.numbers.tolist()))
    impls, skipped, reference = [], {}, None
    names = _wanted(backends) if model_name == "mace" else ["tensornet"]
    peer = {"mace": "mace-torch", "tensornet": "torchmd-net"}[model_name]
    theirs = None
    for name in names:
        torch.manual_seed(seed)
        if model_name == "mace":
            model = MACE(
                elements,
                r_max=r_max,
                max_ell=lmax,
                num_channels=channels,
                avg_num_neighbors=graph.num_edges / max(graph.num_nodes, 1),
                backend=name,
                product_backend="sparse" if name == "sparse" else "cg",  # both kernels on sparse
            )
        elif model_name == "tensornet":
            model = TensorNet(hidden_channels=channels, cutoff=r_max, atomic_numbers=elements)
        else:
            raise ValueError(f"unknown model {model_name!r}; choose mace or tensornet")
        model = model.to(device=device, dtype=dtype)
        if reference is None:
            reference = model
            if peer in peers_wanted:
                theirs = _peer_twin(peer, reference, dtype, device, skipped)
        else:
            model.load_state_dict(reference.state_dict())
        passes, back = _model_passes(model, graph)
        params = sum(p.numel() for p in model.parameters())
        impls.append(
            Implementation(
                name,
                "equitensor",
                passes,
                back,
                info={"model": type(model).__name__, "parameters": params},
                timed=model_name != "mace" or name in backends,
            )
        )
    if theirs is not None:
        try:
            if peer == "mace-torch":
                passes, back, info = peers.mace_torch_model_passes(theirs, reference, graph)
                impls.append(Implementation(peer, peer, passes, back, info=info))
            else:
                passes, back, info = peers.torchmd_net_model_passes(theirs, reference, graph)
                note = "torchmd-net's warp kernels: float64 output norms to ~1e-7 (check accepts it)"
                error = peers.TORCHMD_NET_WARP_ERROR if info["warp kernels"] else None
                impls.append(
                    Implementation(peer, peer, passes, back, info=info, approximation_error=error, note=note)
                )
        except Exception as error:  # a peer's failure is reported, never fatal
            skipped[peer] = _first_line(error)
    shape = {
        "system": system if system == "cell" else f"molecule {molecule}",
        "atoms": graph.num_nodes,
        "edges": graph.num_edges,
        "r_max": r_max,
        "parameters": impls[0].info["parameters"],
    }
    reference_name = impls[0].name
    return Case(
        f"model:{model_name}", lmax, channels, graph.num_nodes, "atoms", shape, impls, skipped, reference_name
    )
