"""TorchMD-Net (``torchmd-net``) TensorNet models with equitensor's weights, both ways.

equitensor's :class:`~equitensor.models.TensorNet` is torchmd-net's ``TensorNet`` representation
with its ``Scalar`` output head, wrapped in ``TorchMD_Net`` (reduce "add", ``std`` = our ``scale``,
an ``Atomref`` prior = our E0s), so every weight has a counterpart (:func:`torchmd_net_parameter_map`):

- radial projections, pair embedding, the embedding's gate MLP and norm, every layer's radial MLP
  and channel mixings, the output norm and linear, the head: the same tensors, renamed;
- the element embedding: torchmd-net indexes it by atomic number (``max_z`` rows), we by the
  position of the element in ``atomic_numbers``: our row k is their row Z_k;
- the RBF means and widths: buffers (or parameters when trainable) of both.

What does not map, and is refused naming it (:class:`UnmappableError`): our ``shift`` (per atom)
has no counterpart (torchmd-net's ``mean`` is added once per structure), torchmd-net's charge
factor ``1 + 0.1 q`` (we take no charges: q = 0), a lower cutoff, an activation other than SiLU,
an RBF other than ``expnorm``, output models other than ``Scalar``, priors other than ``Atomref``.

:func:`torchmd_net_model` builds the torchmd-net twin of our model (weights copied in);
:func:`tensornet_from_torchmd_net` ours from theirs; :func:`load_torchmd_net_weights` copies
theirs into an existing one of ours; :func:`torchmd_net_inputs` gives their inputs for one of our
graphs. Same energies and forces to round-off in float64 (``tests/test_interop_torchmd_net.py``).
torchmd-net is imported only by the builders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from equitensor.errors import InputError
from equitensor.graph import AtomicGraph

__all__ = [
    "UnmappableError",
    "gradients_as_ours",
    "load_torchmd_net_weights",
    "tensornet_from_torchmd_net",
    "torchmd_net_inputs",
    "torchmd_net_model",
    "torchmd_net_parameter_map",
]


class UnmappableError(InputError):
    """An option one side has and the other lacks: the models would not compute the same thing.

    Example: torchmd-net's neighbour list needs a box in reduced form, which fcc's primitive cell
    is not.

    >>> from ase.build import bulk
    >>> from equitensor.datasets import graph_from_atoms
    >>> try:
    ...     torchmd_net_inputs(graph_from_atoms(bulk("Cu", "fcc", a=3.6), 3.0), cutoff=3.0)
    ... except UnmappableError as error:
    ...     print(error)  # doctest: +ELLIPSIS
    torchmd-net needs a lower-triangular box with widths >= 2 x cutoff = 6.0 Å; got [[...]]
    """


@dataclass(frozen=True)
class ParameterMatch:
    """Our parameter ``ours`` is torchmd-net's ``theirs`` (names); ``rows``: their rows to take
    (the element embedding), None for the whole tensor."""

    ours: str
    theirs: str
    rows: tuple[int, ...] | None = None


def _linear(ours: str, theirs: str, bias: bool = True) -> list[ParameterMatch]:
    names = ("weight", "bias") if bias else ("weight",)
    return [ParameterMatch(f"{ours}.{n}", f"{theirs}.{n}") for n in names]


def torchmd_net_parameter_map(ours: nn.Module) -> list[ParameterMatch]:
    """Every parameter and RBF buffer of our TensorNet with its torchmd-net ``TorchMD_Net`` name.

    >>> from equitensor.models import TensorNet
    >>> matches = torchmd_net_parameter_map(TensorNet(hidden_channels=8, num_rbf=8, atomic_numbers=[1, 8]))
    >>> matches[0].ours, matches[0].theirs
    ('radial_basis.means', 'representation_model.distance_expansion.means')
    >>> [(m.ours, m.rows) for m in matches if m.rows is not None]  # their rows 1 and 8 are our 0 and 1
    [('embedding.element_embedding.weight', (1, 8))]
    """
    rep, emb = "representation_model", "representation_model.tensor_embedding"
    elements = tuple(ours.elements)
    matches = [ParameterMatch("radial_basis.means", f"{rep}.distance_expansion.means")]
    matches.append(ParameterMatch("radial_basis.betas", f"{rep}.distance_expansion.betas"))
    for k in range(3):
        matches += _linear(f"embedding.distance_projections.{k}", f"{emb}.distance_proj{k + 1}")
        matches += _linear(f"embedding.piece_linears.{k}", f"{emb}.linears_tensor.{k}", bias=False)
    matches.append(ParameterMatch("embedding.element_embedding.weight", f"{emb}.emb.weight", elements))
    matches += _linear("embedding.pair_embedding", f"{emb}.emb2")
    matches += _linear("embedding.norm", f"{emb}.init_norm")
    matches += _linear("embedding.gate.0", f"{emb}.linears_scalar.0")
    matches += _linear("embedding.gate.2", f"{emb}.linears_scalar.1")
    for i in range(len(ours.layers)):
        layer = f"{rep}.layers.{i}"
        for k, ours_k in enumerate((0, 2, 4)):
            matches += _linear(f"layers.{i}.radial.{ours_k}", f"{layer}.linears_scalar.{k}")
        for k in range(3):
            matches += _linear(f"layers.{i}.input_linears.{k}", f"{layer}.linears_tensor.{k}", bias=False)
            matches += _linear(
                f"layers.{i}.output_linears.{k}", f"{layer}.linears_tensor.{k + 3}", bias=False
            )
    matches += _linear("out_norm", f"{rep}.out_norm")
    matches += _linear("out_linear", f"{rep}.linear")
    matches += _linear("head.0", "output_model.output_network.layers.0")
    matches += _linear("head.2", "output_model.output_network.layers.2")
    return matches


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_buffers()), **dict(module.named_parameters())}


def _copy(target: nn.Module, source: nn.Module, matches: list[ParameterMatch], into_ours: bool) -> None:
    targets, sources = _tensors(target), _tensors(source)
    with torch.no_grad():
        for match in matches:
            ours_name, theirs_name = match.ours, match.theirs
            if into_ours:
                value = sources[theirs_name]
                value = value[list(match.rows)] if match.rows is not None else value
                targets[ours_name].copy_(value)
            else:
                value = sources[ours_name]
                if match.rows is not None:
                    targets[theirs_name][list(match.rows)] = value.to(targets[theirs_name].dtype)
                else:
                    targets[theirs_name].copy_(value)


def _check_config(ours: nn.Module) -> None:
    if float(ours.shift) != 0.0:
        raise UnmappableError(
            f"our TensorNet has shift={float(ours.shift)} eV per atom; torchmd-net has no per-atom shift "
            "(its 'mean' is added once per structure): fold it into the E0s (atomic_energies) first"
        )


def _check_theirs(theirs: nn.Module) -> None:
    rep = theirs.representation_model
    problems = []
    if type(rep).__name__ != "TensorNet":
        problems.append(f"representation model {type(rep).__name__} (only TensorNet maps)")
    else:
        if float(rep.cutoff_lower) != 0.0:
            problems.append(f"cutoff_lower={rep.cutoff_lower} (ours is 0)")
        if rep.activation != "silu":
            problems.append(f"activation {rep.activation!r} (ours is SiLU)")
        if rep.rbf_type != "expnorm":
            problems.append(f"rbf_type {rep.rbf_type!r} (ours is expnorm)")
    head = theirs.output_model
    if type(head).__name__ != "Scalar" or len(head.output_network.layers) != 3:
        problems.append(f"output model {type(head).__name__} (only Scalar with one hidden layer maps)")
    elif getattr(head, "reduce_op", "sum") not in ("sum", "add"):
        problems.append(f"reduce_op {head.reduce_op!r} (ours sums)")
    for prior in theirs.prior_model or []:
        if type(prior).__name__ != "Atomref":
            problems.append(f"prior {type(prior).__name__} (only Atomref maps, to our E0s)")
    if float(theirs.mean) != 0.0:
        problems.append(f"mean={float(theirs.mean)} per structure (we have no per-structure shift)")
    if problems:
        raise UnmappableError("this torchmd-net model does not map to our TensorNet: " + "; ".join(problems))


def _atomref(theirs: nn.Module) -> nn.Module | None:
    priors = [p for p in theirs.prior_model or [] if type(p).__name__ == "Atomref"]
    return priors[0] if priors else None


def torchmd_net_model(ours: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """The torchmd-net ``TorchMD_Net`` twin of our TensorNet, our weights copied in (forces by
    autograd, ``derivative=True``). UnmappableError for what has no counterpart.

    Example (needs torchmd-net): the twin gives our energy.

    >>> import torch
    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.models import TensorNet
    >>> ours = TensorNet(hidden_channels=8, num_rbf=8, cutoff=3.0, atomic_numbers=[1, 8], dtype="float64")
    >>> graph = graph_from_atoms(molecule("H2O"), ours.r_max)
    >>> theirs = torchmd_net_model(ours)  # doctest: +SKIP
    >>> energy, forces = theirs(**torchmd_net_inputs(graph))  # doctest: +SKIP
    >>> torch.allclose(energy.flatten(), ours(graph)["energy"]), forces.shape  # doctest: +SKIP
    (True, torch.Size([3, 3]))
    """
    from torchmdnet.models.model import TorchMD_Net
    from torchmdnet.models.output_modules import Scalar
    from torchmdnet.models.tensornet import TensorNet as TheirTensorNet
    from torchmdnet.priors import Atomref

    _check_config(ours)
    dtype = dtype or next(ours.parameters()).dtype
    config = ours.config
    max_z = max(ours.elements) + 1
    f = config["hidden_channels"]
    representation = TheirTensorNet(
        hidden_channels=f,
        num_layers=config["num_layers"],
        num_rbf=config["num_rbf"],
        rbf_type="expnorm",
        trainable_rbf=config["trainable_rbf"],
        activation="silu",
        cutoff_lower=0.0,
        cutoff_upper=config["cutoff"],
        max_z=max_z,
        max_num_neighbors=256,
        equivariance_invariance_group=config["equivariance_invariance_group"],
        static_shapes=False,
        dtype=dtype,
    )
    prior = Atomref(max_z=max_z)
    model = TorchMD_Net(
        representation,
        Scalar(f, activation="silu", reduce_op="sum", dtype=dtype),
        prior_model=prior,
        std=ours.scale.detach().to(torch.float64),
        derivative=True,
        dtype=dtype,
    )
    _copy(model, ours, torchmd_net_parameter_map(ours), into_ours=False)
    with torch.no_grad():
        weight = torch.zeros(max_z, 1, dtype=prior.atomref.weight.dtype)
        weight[list(ours.elements), 0] = ours.atomic_energies.to(weight.dtype)
        prior.atomref.weight.copy_(weight)
        prior.initial_atomref.copy_(weight)
    return model


def tensornet_from_torchmd_net(theirs: nn.Module, atomic_numbers: list[int], **options) -> nn.Module:
    """Our TensorNet computing what torchmd-net's ``TorchMD_Net`` ``theirs`` computes, for the
    elements ``atomic_numbers`` (rows of their embedding that are used). ``options`` go to our
    constructor (e.g. ``dtype``). UnmappableError for what has no counterpart.

    Example (needs torchmd-net): a torchmd-net model (here the twin of a tiny one of ours; usually
    one trained with torchmd-net) as ours.

    >>> import torch
    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.models import TensorNet
    >>> ours = TensorNet(hidden_channels=8, num_rbf=8, cutoff=3.0, atomic_numbers=[1, 8], dtype="float64")
    >>> graph = graph_from_atoms(molecule("H2O"), ours.r_max)
    >>> converted = tensornet_from_torchmd_net(torchmd_net_model(ours), [1, 8])  # doctest: +SKIP
    >>> converted.elements, converted.config["hidden_channels"]  # doctest: +SKIP
    ([1, 8], 8)
    >>> torch.allclose(converted(graph)["energy"], ours(graph)["energy"])  # doctest: +SKIP
    True
    """
    from equitensor.models import TensorNet

    _check_theirs(theirs)
    rep = theirs.representation_model
    elements = [int(z) for z in atomic_numbers]
    if max(elements) >= rep.tensor_embedding.max_z:
        raise UnmappableError(
            f"element {max(elements)} is beyond torchmd-net's max_z={rep.tensor_embedding.max_z}"
        )
    atomref = _atomref(theirs)
    energies = None if atomref is None else atomref.atomref.weight[elements, 0].tolist()
    dtype = "float64" if next(theirs.parameters()).dtype == torch.float64 else "float32"
    ours = TensorNet(
        hidden_channels=rep.hidden_channels,
        num_layers=rep.num_layers,
        num_rbf=rep.num_rbf,
        cutoff=float(rep.cutoff_upper),
        equivariance_invariance_group=rep.equivariance_invariance_group,
        atomic_numbers=elements,
        atomic_energies=energies,
        scale=float(theirs.std),
        trainable_rbf=isinstance(rep.distance_expansion.means, nn.Parameter),
        **{"dtype": dtype, **options},
    )
    load_torchmd_net_weights(ours, theirs)
    return ours


def load_torchmd_net_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy the weights of torchmd-net's ``TorchMD_Net`` ``theirs`` into our TensorNet ``ours``
    (same architecture and sizes; scale from their ``std``, E0s from their Atomref prior).

    Example (needs torchmd-net): a second model of the same sizes takes the first one's weights.

    >>> import torch
    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.models import TensorNet
    >>> ours = TensorNet(hidden_channels=8, num_rbf=8, cutoff=3.0, atomic_numbers=[1, 8], dtype="float64")
    >>> graph = graph_from_atoms(molecule("H2O"), ours.r_max)
    >>> other = TensorNet(hidden_channels=8, num_rbf=8, cutoff=3.0, atomic_numbers=[1, 8], dtype="float64")
    >>> load_torchmd_net_weights(other, torchmd_net_model(ours))  # doctest: +SKIP
    >>> torch.allclose(other(graph)["energy"], ours(graph)["energy"])  # doctest: +SKIP
    True
    """
    _check_theirs(theirs)
    _copy(ours, theirs, torchmd_net_parameter_map(ours), into_ours=True)
    atomref = _atomref(theirs)
    with torch.no_grad():
        ours.scale.copy_(theirs.std.to(ours.scale.dtype))
        if atomref is not None:
            ours.atomic_energies.copy_(
                atomref.atomref.weight[list(ours.elements), 0].to(ours.atomic_energies.dtype)
            )


def gradients_as_ours(ours: nn.Module, theirs: nn.Module) -> dict[str, torch.Tensor]:
    """torchmd-net's parameter gradients (after a backward) under our parameter names and shapes.

    Example (needs torchmd-net):

    >>> import torch
    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.models import TensorNet
    >>> ours = TensorNet(hidden_channels=8, num_rbf=8, cutoff=3.0, atomic_numbers=[1, 8], dtype="float64")
    >>> graph = graph_from_atoms(molecule("H2O"), ours.r_max)
    >>> theirs = torchmd_net_model(ours)  # doctest: +SKIP
    >>> energy, _ = theirs(**torchmd_net_inputs(graph))  # doctest: +SKIP
    >>> energy.sum().backward()  # doctest: +SKIP
    >>> gradients_as_ours(ours, theirs)["embedding.element_embedding.weight"].shape  # doctest: +SKIP
    torch.Size([2, 8])
    """
    grads = {name: p.grad for name, p in theirs.named_parameters()}
    out = {}
    for match in torchmd_net_parameter_map(ours):
        grad = grads.get(match.theirs)
        if grad is None:
            continue
        out[match.ours] = grad[list(match.rows)] if match.rows is not None else grad
    return out


def torchmd_net_inputs(graph: AtomicGraph, cutoff: float | None = None) -> dict[str, torch.Tensor | None]:
    """Their forward's arguments for one structure of our graph: ``z``, ``pos``, ``batch`` and, for
    a periodic cell, ``box``. torchmd-net builds its own neighbour list, which is right only for a
    box in its reduced form (lower triangular, each width at least twice the cutoff): a ``cutoff``
    given is checked against the box, UnmappableError otherwise.

    >>> from ase.build import bulk, molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> inputs = torchmd_net_inputs(graph_from_atoms(molecule("H2O"), 3.0))
    >>> sorted(inputs), inputs["z"].tolist(), inputs["box"] is None
    (['batch', 'box', 'pos', 'z'], [8, 1, 1], True)
    >>> cell = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)  # 7.2 Å wide: fine for a 3 Å cutoff
    >>> torchmd_net_inputs(graph_from_atoms(cell, 3.0), cutoff=3.0)["box"].shape
    torch.Size([3, 3])
    """
    if graph.num_graphs != 1:
        raise ValueError("torchmd-net takes one box per call: pass one structure at a time")
    periodic = bool(graph.pbc.any())
    if periodic and not bool(graph.pbc.all()):
        raise UnmappableError("torchmd-net boxes are periodic in all three directions or none")
    if periodic and cutoff is not None:
        box = graph.cell[0]
        reduced = bool(box[0, 1] == 0 and box[0, 2] == 0 and box[1, 2] == 0)
        widths = torch.diagonal(box)
        if not reduced or bool((widths < 2 * cutoff).any()):
            raise UnmappableError(
                f"torchmd-net needs a lower-triangular box with widths >= 2 x cutoff = {2 * cutoff} Å; "
                f"got {box.tolist()}"
            )
    return {
        "z": graph.numbers.to(torch.long),
        "pos": graph.positions,
        "batch": graph.batch.to(torch.long),
        "box": graph.cell[0] if periodic else None,
    }
