"""ACEsuit/mace (``mace-torch``) models with equitensor's weights, and their inputs.

equitensor's :class:`~equitensor.models.MACE` is the same architecture as mace-torch's
``ScaleShiftMACE`` built with ``RealAgnosticInteractionBlock`` first, then
``RealAgnosticResidualInteractionBlock``, ``use_reduced_cg=False`` and SiLU gates (MACE's CLI
defaults otherwise), so every weight has a counterpart:

- linears, skip tensor products and the radial MLP's hidden layers: the same tensors;
- the radial MLP's last layer: its output columns are blocks, one per convolution path; mace-torch
  orders the paths by output block, equitensor in enumeration order, so the blocks are permuted;
- the product basis: mace-torch's ``weights_max`` is the highest correlation order, ``weights``
  the lower orders from high to low; equitensor keeps ``weights[k][nu - 1]`` per output block k.
  An order with no coupling path is a frozen zero ``EmptyParam`` there and has no weight here.

:func:`load_mace_torch_weights` copies a mace-torch model's weights into ours (same numbers to
round-off in float64: ``tests/test_mace.py``); :func:`mace_torch_parameter_map` is the mapping
itself, also used to bring mace-torch's parameter gradients into our layout (the benchmark
compares training gradients). :func:`mace_torch_model` builds the mace-torch twin of our model
and :func:`mace_torch_inputs` its input dict. mace-torch is imported only by the builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module

import numpy as np
import torch
from torch import nn

from equitensor.tp.backends import backends_for

__all__ = [
    "ParameterMatch",
    "mace_from_mace_torch",
    "features_from_mace_torch",
    "features_to_mace_torch",
    "gradients_as_ours",
    "load_mace_torch_contraction_weights",
    "load_mace_torch_weights",
    "mace_torch_contraction",
    "mace_torch_inputs",
    "mace_torch_model",
    "mace_torch_parameter_map",
]


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class ParameterMatch:
    """Our parameter ``name`` and the mace-torch tensor it equals, through ``to_ours`` (a
    reordering that applies to the weight and to its gradient alike). ``frozen_zero``: an order
    without coupling paths, an empty parameter here and a frozen zero there (nothing to copy).

    The items of :func:`mace_torch_parameter_map`; made by hand here:

    >>> import torch
    >>> match = ParameterMatch("linear.weight", torch.ones(2, 3))
    >>> match.to_ours(match.theirs).shape, match.frozen_zero
    (torch.Size([2, 3]), False)
    """

    name: str
    theirs: torch.Tensor
    to_ours: Callable[[torch.Tensor], torch.Tensor] = _same
    frozen_zero: bool = False


def _contraction_matches(ours, theirs, prefix: str = "") -> list[ParameterMatch]:
    """Matches of an equitensor SymmetricContraction's weights with a mace-torch one's."""
    contractions = list(theirs.contractions)
    if len(contractions) != len(ours.weights):
        raise ValueError(
            f"mace-torch SymmetricContraction has {len(contractions)} output blocks, ours {len(ours.weights)}"
        )
    matches = []
    for k, contraction in enumerate(contractions):
        if contraction.correlation != ours.correlation:
            raise ValueError(
                f"output block {k}: mace-torch correlation {contraction.correlation}, ours {ours.correlation}"
            )
        highest_first = [contraction.weights_max, *contraction.weights]
        for j, tensor in enumerate(highest_first):
            nu = ours.correlation - j
            name = f"{prefix}weights.{k}.{nu - 1}"
            frozen = ours.weights[k][nu - 1].shape[1] == 0
            matches.append(ParameterMatch(name, tensor, frozen_zero=frozen))
    return matches


def _radial_output_permutation(interaction) -> Callable[[torch.Tensor], torch.Tensor]:
    """mace-torch's last radial layer (blocks by output block) -> ours (blocks by path)."""
    from equitensor.tp import edge_product_irreps

    conv = interaction.conv
    _, instructions = edge_product_irreps(conv.irreps_node, conv.irreps_sh, interaction.linear.irreps_in)
    by_output = sorted(range(len(instructions)), key=lambda k: instructions[k][2])
    sizes = [conv.irreps_node[instructions[k][0]].mul for k in by_output]
    position = {path: n for n, path in enumerate(by_output)}

    def to_ours(weight: torch.Tensor) -> torch.Tensor:
        blocks = weight.split(sizes, dim=1)
        return torch.cat([blocks[position[path]] for path in range(len(instructions))], dim=1)

    return to_ours


def mace_torch_parameter_map(ours: nn.Module, theirs: nn.Module) -> list[ParameterMatch]:
    """Every parameter of our :class:`~equitensor.models.MACE` (a symmetric-contraction
    ``product_backend``: 'cg' or 'sparse') with its counterpart in a mace-torch ``ScaleShiftMACE``
    of the same hyperparameters, in the order of ``ours.named_parameters()``. Raises ValueError
    when the architectures differ.

    Example (needs mace-torch):

    >>> import torch
    >>> from equitensor.models import MACE
    >>> ours = MACE([1, 8], r_max=3.0, num_channels=4, max_ell=1, correlation=2, radial_MLP=[8]).double()
    >>> matches = mace_torch_parameter_map(ours, mace_torch_model(ours))  # doctest: +SKIP
    >>> [m.name for m in matches] == [name for name, _ in ours.named_parameters()]  # doctest: +SKIP
    True
    """
    if ours.config.get("product_backend", "cg") not in (*backends_for("product_basis"), "auto"):
        raise ValueError(
            f"only a MACE whose product basis is MACE's symmetric contraction (product_backend in "
            f"{backends_for('product_basis')}) has mace-torch counterparts, got "
            f"product_backend={ours.config['product_backend']!r}"
        )
    layers = (ours.interactions, theirs.interactions, ours.products, theirs.products)
    if len({len(x) for x in layers}) != 1:
        raise ValueError(
            f"ours has {len(ours.interactions)} interactions, mace-torch {len(theirs.interactions)}"
        )
    matches = [ParameterMatch("node_embedding.weight", theirs.node_embedding.linear.weight)]
    for i, (a, b) in enumerate(zip(ours.interactions, theirs.interactions)):
        p = f"interactions.{i}."
        matches.append(ParameterMatch(p + "linear_up.weight", b.linear_up.weight))
        hidden = len(a.radial_mlp.weights) - 1
        for k in range(hidden):
            matches.append(
                ParameterMatch(f"{p}radial_mlp.weights.{k}", getattr(b.conv_tp_weights, f"layer{k}").weight)
            )
        matches.append(
            ParameterMatch(
                f"{p}radial_mlp.weights.{hidden}",
                getattr(b.conv_tp_weights, f"layer{hidden}").weight,
                _radial_output_permutation(a),
            )
        )
        matches.append(ParameterMatch(p + "linear.weight", b.linear.weight))
        matches.append(ParameterMatch(p + "skip.weight", b.skip_tp.weight))
    for i, (a, b) in enumerate(zip(ours.products, theirs.products)):
        p = f"products.{i}."
        matches += _contraction_matches(a.contraction, b.symmetric_contractions, p + "contraction.")
        matches.append(ParameterMatch(p + "linear.weight", b.linear.weight))
    for i, b in enumerate(theirs.readouts):
        p = f"readouts.{i}."
        if hasattr(b, "linear_1"):
            matches.append(ParameterMatch(p + "linear_1.weight", b.linear_1.weight))
            matches.append(ParameterMatch(p + "linear_2.weight", b.linear_2.weight))
        else:
            matches.append(ParameterMatch(p + "weight", b.linear.weight))
    _check_complete(ours, matches)
    return matches


def _check_complete(ours: nn.Module, matches: list[ParameterMatch]) -> None:
    names = [name for name, _ in ours.named_parameters()]
    mapped = [m.name for m in matches]
    if sorted(mapped) != sorted(names):
        raise ValueError(
            "mace-torch mapping does not cover our parameters: unmapped "
            f"{sorted(set(names) - set(mapped))}, unknown {sorted(set(mapped) - set(names))}"
        )
    matches.sort(key=lambda m: names.index(m.name))


def _copy(ours: nn.Module, matches: list[ParameterMatch], what: str) -> None:
    parameters = dict(ours.named_parameters())
    with torch.no_grad():
        for m in matches:
            destination = parameters[m.name]
            if m.frozen_zero:
                if torch.any(m.theirs != 0):
                    raise ValueError(
                        f"{what} {m.name}: ours has no coupling path but mace-torch's weight is not zero"
                    )
                continue
            source = m.to_ours(m.theirs.detach())
            if source.shape != destination.shape:
                raise ValueError(
                    f"{what} {m.name}: mace-torch shape {tuple(source.shape)}, "
                    f"ours {tuple(destination.shape)}"
                )
            destination.copy_(source)


def load_mace_torch_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy a mace-torch ``ScaleShiftMACE``'s weights into our :class:`~equitensor.models.MACE`
    of the same hyperparameters (see the module doc; E0s, scale and shift are constructor
    arguments of both and are not copied). Raises ValueError naming the first mismatch.

    Example (needs mace-torch): after the copy both models give the same energy.

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> import torch
    >>> from equitensor.models import MACE
    >>> ours = MACE([1, 8], r_max=3.0, num_channels=4, max_ell=1, correlation=2, radial_MLP=[8]).double()
    >>> graph = graph_from_atoms(molecule("H2O"), ours.r_max)
    >>> theirs = mace_torch_model(ours)  # doctest: +SKIP
    >>> load_mace_torch_weights(ours, theirs)  # doctest: +SKIP
    >>> inputs = mace_torch_inputs(ours, graph)
    >>> reference = theirs(inputs, training=False, compute_force=True)  # doctest: +SKIP
    >>> torch.allclose(ours(graph)["energy"], reference["energy"])  # doctest: +SKIP
    True
    """
    _copy(ours, mace_torch_parameter_map(ours, theirs), "MACE parameter")


def load_mace_torch_contraction_weights(ours: nn.Module, theirs: nn.Module) -> None:
    """Copy a mace-torch ``SymmetricContraction``'s weights into our
    :class:`~equitensor.nn.SymmetricContraction` (same irreps, correlation and elements) so
    that both compute the same function of the same features.

    mace-torch built on e3nn < 0.5 has other signs for some ``wigner_3j``, so some columns of
    its coupling tensors U are the negatives of ours: the weights of those columns are negated.
    (Inside a whole model those signs cancel against its convolution's, and
    :func:`load_mace_torch_weights` copies the weights as they are.)

    Example (needs mace-torch): both contractions then give the same output.

    >>> import torch
    >>> from equitensor.nn import SymmetricContraction
    >>> ours = SymmetricContraction("4x0e+4x1o", "4x0e+4x1o", 2, 2).double()
    >>> theirs = mace_torch_contraction("4x0e+4x1o", "4x0e+4x1o", 2, 2, torch.float64)  # doctest: +SKIP
    >>> load_mace_torch_contraction_weights(ours, theirs)  # doctest: +SKIP
    >>> x, attrs = torch.randn(3, 16, dtype=torch.float64), torch.eye(2, dtype=torch.float64)[[0, 1, 1]]
    >>> features = features_to_mace_torch(x, "4x0e+4x1o")
    >>> torch.allclose(ours(x, attrs), theirs(features, attrs))  # doctest: +SKIP
    True
    """
    from equitensor.nn.symmetric_contraction import generalized_cg

    matches = _contraction_matches(ours, theirs)
    _check_complete(ours, matches)
    _copy(ours, matches, "SymmetricContraction parameter")
    for k, ((_, ir_out), contraction) in enumerate(zip(ours.irreps_out, theirs.contractions)):
        for nu in range(1, ours.correlation + 1):
            u_ours = generalized_cg(ours.coupling_irreps, ir_out, nu)
            stored = getattr(contraction, f"U_matrix_{nu}")
            u_theirs = stored.to(torch.float64).reshape(u_ours.shape)
            signs = torch.sign((u_ours * u_theirs).flatten(0, -2).sum(0))
            if not torch.allclose(u_theirs, u_ours * signs, atol=100 * torch.finfo(stored.dtype).eps):
                raise ValueError(
                    f"output block {k} ({ir_out}), order {nu}: mace-torch's coupling tensor differs "
                    "from ours by more than column signs"
                )
            with torch.no_grad():
                ours.weights[k][nu - 1].mul_(signs.to(ours.weights[k][nu - 1])[None, :, None])


def gradients_as_ours(
    ours: nn.Module, matches: list[ParameterMatch], their_gradients: list[torch.Tensor | None]
) -> list[torch.Tensor]:
    """Gradients of mace-torch's matched tensors (``None`` = unused: zero), given in the order
    of ``matches`` without the frozen zeros, as our parameters' gradients in
    ``ours.named_parameters()`` order (frozen zeros: empty zero tensors of our shape).

    Typically ``matches`` is :func:`mace_torch_parameter_map` of the two models and the gradients
    ``torch.autograd.grad`` of mace-torch's loss by ``[m.theirs for m in matches if not
    m.frozen_zero]``. A by-hand example (an unused tensor's gradient is zero):

    >>> import torch
    >>> ours = torch.nn.Linear(3, 2, bias=False)
    >>> matches = [ParameterMatch("weight", torch.ones(2, 3))]
    >>> [g.shape for g in gradients_as_ours(ours, matches, [None])]
    [torch.Size([2, 3])]
    >>> torch.equal(gradients_as_ours(ours, matches, [torch.ones(2, 3)])[0], torch.ones(2, 3))
    True
    """
    parameters = dict(ours.named_parameters())
    gradients = iter(their_gradients)
    out = []
    for m in matches:
        if m.frozen_zero:
            out.append(torch.zeros_like(parameters[m.name]))
            continue
        gradient = next(gradients)
        out.append(torch.zeros_like(parameters[m.name]) if gradient is None else m.to_ours(gradient))
    return out


def _with_default_dtype(dtype: torch.dtype, build: Callable[[], nn.Module]) -> nn.Module:
    """Build with torch's default dtype set to ``dtype`` (mace-torch creates its constants in the
    default dtype), then restore the previous default."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return build().to(dtype)
    finally:
        torch.set_default_dtype(default)


def mace_torch_model(ours: nn.Module, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A mace-torch ``ScaleShiftMACE`` with the hyperparameters of our MACE (its ``config``), in
    ``dtype``, with mace-torch's own random initial weights (copy them over with
    :func:`load_mace_torch_weights`). Needs ``mace-torch``.

    Example (needs mace-torch):

    >>> import torch
    >>> from equitensor.models import MACE
    >>> ours = MACE([1, 8], r_max=3.0, num_channels=4, max_ell=1, correlation=2, radial_MLP=[8]).double()
    >>> theirs = mace_torch_model(ours)  # doctest: +SKIP
    >>> type(theirs).__name__, sum(p.numel() for p in theirs.parameters()) == sum(
    ...     p.numel() for p in ours.parameters())  # doctest: +SKIP
    ('ScaleShiftMACE', True)
    """
    from mace.modules import blocks, models

    o3 = import_module("e3nn.o3")  # after mace, which makes its pinned e3nn importable

    config = ours.config
    if config.get("product_backend", "cg") not in (*backends_for("product_basis"), "auto"):
        raise ValueError(f"mace-torch has no product_backend={config['product_backend']!r}")

    def build() -> nn.Module:
        return models.ScaleShiftMACE(
            r_max=config["r_max"],
            num_bessel=config["num_bessel"],
            num_polynomial_cutoff=config["num_polynomial_cutoff"],
            max_ell=config["max_ell"],
            interaction_cls=blocks.RealAgnosticResidualInteractionBlock,
            interaction_cls_first=blocks.RealAgnosticInteractionBlock,
            num_interactions=config["num_interactions"],
            num_elements=len(config["atomic_numbers"]),
            hidden_irreps=o3.Irreps(config["hidden_irreps"]),
            MLP_irreps=o3.Irreps(config["MLP_irreps"]),
            atomic_energies=np.array(config["atomic_energies"], dtype=np.float64),
            avg_num_neighbors=config["avg_num_neighbors"],
            atomic_numbers=list(config["atomic_numbers"]),
            correlation=config["correlation"],
            gate=torch.nn.functional.silu,
            radial_MLP=list(config["radial_MLP"]),
            atomic_inter_scale=config["scale"],
            atomic_inter_shift=config["shift"],
            use_reduced_cg=False,
        )

    return _with_default_dtype(dtype, build)


def mace_torch_contraction(irreps_in, irreps_out, correlation: int, num_elements: int, dtype: torch.dtype):
    """mace-torch's ``SymmetricContraction`` (non-reduced CG, MACE's default normalizations) in
    ``dtype``. It takes features (N, C, D) (channels, then every irrep's components) and
    one-hot elements, and returns (N, irreps_out.dim) in e3nn's mul_ir layout.

    Example (needs mace-torch):

    >>> import torch
    >>> theirs = mace_torch_contraction("4x0e+4x1o", "4x0e", 2, 2, torch.float64)  # doctest: +SKIP
    >>> features = features_to_mace_torch(torch.randn(3, 16, dtype=torch.float64), "4x0e+4x1o")
    >>> attrs = torch.eye(2, dtype=torch.float64)[[0, 1, 1]]
    >>> theirs(features, attrs).shape  # doctest: +SKIP
    torch.Size([3, 4])
    """
    from mace.modules.symmetric_contraction import SymmetricContraction

    o3 = import_module("e3nn.o3")  # after mace, as above

    return _with_default_dtype(
        dtype,
        lambda: SymmetricContraction(
            o3.Irreps(str(irreps_in)),
            o3.Irreps(str(irreps_out)),
            correlation,
            num_elements=num_elements,
            use_reduced_cg=False,
        ),
    )


def features_to_mace_torch(x: torch.Tensor, irreps) -> torch.Tensor:
    """(N, irreps.dim) in e3nn's mul_ir layout -> (N, C, D), mace-torch's product-basis input
    (every block C x ir as (N, C, 2l+1), concatenated along the last axis; one multiplicity C).

    >>> import torch
    >>> x = torch.arange(16.0).reshape(1, 16)  # 4x0e (4 numbers) then 4x1o (4 x 3)
    >>> features = features_to_mace_torch(x, "4x0e+4x1o")
    >>> features.shape, features[0, 1].tolist()  # channel 1: its scalar, then its vector
    (torch.Size([1, 4, 4]), [1.0, 7.0, 8.0, 9.0])
    """
    from equitensor.irreps import Irreps

    irreps = Irreps(irreps)
    n = x.shape[0]
    blocks = x.split([mul * ir.dim for mul, ir in irreps], dim=-1)
    return torch.cat([b.reshape(n, mul, ir.dim) for b, (mul, ir) in zip(blocks, irreps)], dim=-1)


def features_from_mace_torch(features: torch.Tensor, irreps) -> torch.Tensor:
    """Inverse of :func:`features_to_mace_torch`: (N, C, D) -> (N, irreps.dim) mul_ir.

    >>> import torch
    >>> x = torch.randn(5, 16)
    >>> torch.equal(features_from_mace_torch(features_to_mace_torch(x, "4x0e+4x1o"), "4x0e+4x1o"), x)
    True
    """
    from equitensor.irreps import Irreps

    irreps = Irreps(irreps)
    n = features.shape[0]
    blocks = features.split([ir.dim for _, ir in irreps], dim=-1)
    return torch.cat([b.reshape(n, -1) for b in blocks], dim=-1)


def mace_torch_inputs(ours: nn.Module, graph) -> dict[str, torch.Tensor]:
    """mace-torch's input dict for an :class:`~equitensor.graph.AtomicGraph`, elements one-hot
    in the order of our model's ``atomic_numbers`` (positions copied: mace-torch marks its
    positions as requiring grad).

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> import torch
    >>> from equitensor.models import MACE
    >>> ours = MACE([1, 8], r_max=3.0, num_channels=4, max_ell=1, correlation=2, radial_MLP=[8]).double()
    >>> inputs = mace_torch_inputs(ours, graph_from_atoms(molecule("H2O"), ours.r_max))
    >>> inputs["node_attrs"].tolist(), inputs["ptr"].tolist(), inputs["shifts"].shape
    ([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], [0, 3], torch.Size([6, 3]))
    """
    counts = torch.bincount(graph.batch, minlength=graph.num_graphs)
    dtype = graph.positions.dtype
    shifts = torch.einsum(
        "ei,eij->ej", graph.unit_shifts.to(dtype), graph.cell[graph.batch[graph.edge_index[0]]]
    )
    return {
        "positions": graph.positions.detach().clone(),
        "node_attrs": nn.functional.one_hot(ours.element_indices(graph.numbers), ours.num_elements).to(dtype),
        "edge_index": graph.edge_index,
        "batch": graph.batch,
        "ptr": torch.cat([counts.new_zeros(1), counts.cumsum(0)]),
        "cell": graph.cell.reshape(-1, 3),
        "unit_shifts": graph.unit_shifts.to(dtype),
        "shifts": shifts,
        "head": torch.zeros(graph.num_graphs, dtype=torch.long, device=graph.positions.device),
    }


def _mace_torch_config(theirs: nn.Module) -> dict:
    """Our MACE's constructor arguments read off a mace-torch ``ScaleShiftMACE``; ValueError for
    what does not map (another model or interaction class, several heads)."""
    problems = []
    if type(theirs).__name__ != "ScaleShiftMACE":
        problems.append(f"model class {type(theirs).__name__} (only ScaleShiftMACE maps)")
    heads = list(getattr(theirs, "heads", ["Default"]) or ["Default"])
    if len(heads) > 1:
        problems.append(f"{len(heads)} heads {heads} (multi-head models do not map)")
    kinds = [type(block).__name__ for block in theirs.interactions]
    expected = ["RealAgnosticInteractionBlock"] + ["RealAgnosticResidualInteractionBlock"] * (len(kinds) - 1)
    if kinds != expected:
        problems.append(f"interaction blocks {kinds} (only {expected} map)")
    if problems:
        raise ValueError("this mace-torch model does not map to equitensor's MACE: " + "; ".join(problems))
    radial = [m for m in theirs.interactions[0].conv_tp_weights.modules()][0]
    sizes = list(radial.hs)
    readout = theirs.readouts[-1]
    mlp = str(readout.linear_1.irreps_out) if hasattr(readout, "linear_1") else "16x0e"
    return {
        "atomic_numbers": [int(z) for z in theirs.atomic_numbers.tolist()],
        "r_max": float(theirs.r_max),
        "num_bessel": int(theirs.radial_embedding.bessel_fn.bessel_weights.shape[0]),
        "num_polynomial_cutoff": int(theirs.radial_embedding.cutoff_fn.p),
        "max_ell": max(ir.l for _, ir in theirs.spherical_harmonics.irreps_out),
        "hidden_irreps": str(theirs.products[0].linear.irreps_out),
        "num_interactions": int(theirs.num_interactions),
        "correlation": [int(p.symmetric_contractions.contractions[0].correlation) for p in theirs.products],
        "radial_MLP": [int(h) for h in sizes[1:-1]],
        "MLP_irreps": mlp,
        "avg_num_neighbors": float(theirs.interactions[0].avg_num_neighbors),
        "atomic_energies": [float(e) for e in theirs.atomic_energies_fn.atomic_energies.reshape(-1).tolist()],
        "scale": float(theirs.scale_shift.scale.reshape(-1)[0]),
        "shift": float(theirs.scale_shift.shift.reshape(-1)[0]),
    }


def mace_from_mace_torch(theirs: nn.Module, check_tolerance: float = 1e-8) -> nn.Module:
    """Our MACE computing what mace-torch's ``ScaleShiftMACE`` ``theirs`` computes (float64), its
    weights copied in, then checked: energies and forces of a random periodic structure of its
    elements must agree within ``check_tolerance`` (relative), else ValueError (e.g. reduced CG
    coefficients, another non-linearity). Needs ``mace-torch``.

    Example (needs mace-torch): a mace-torch model (here the twin of a tiny one of ours; usually one
    trained with mace-torch, loaded with ``torch.load``) as ours.

    >>> import torch
    >>> from equitensor.models import MACE
    >>> ours = MACE([1, 8], r_max=3.0, num_channels=4, max_ell=1, correlation=2, radial_MLP=[8]).double()
    >>> converted = mace_from_mace_torch(mace_torch_model(ours))  # doctest: +SKIP
    >>> converted.config["hidden_irreps"], converted.config["atomic_numbers"]  # doctest: +SKIP
    ('4x0e+4x1o', [1, 8])
    """
    from ase import Atoms

    from equitensor.datasets.atoms_to_graph import graph_from_atoms
    from equitensor.models import MACE

    config = _mace_torch_config(theirs)
    theirs = theirs.to(torch.float64)
    ours = MACE(**config).double()
    try:
        load_mace_torch_weights(ours, theirs)
    except (ValueError, RuntimeError, KeyError) as error:
        raise ValueError(
            f"mace-torch weights do not map onto our MACE ({error}); reduced CG coefficients?"
        ) from None
    rng = np.random.default_rng(0)
    numbers = [config["atomic_numbers"][k % len(config["atomic_numbers"])] for k in range(8)]
    atoms = Atoms(numbers=numbers, positions=rng.uniform(0, 5.0, (8, 3)), cell=np.eye(3) * 5.0, pbc=True)
    graph = graph_from_atoms(atoms, config["r_max"], torch.float64)
    out = ours(graph)
    reference = theirs(mace_torch_inputs(ours, graph), training=False, compute_force=True)
    for key in ("energy", "forces"):
        difference = float((out[key] - reference[key].detach()).abs().max())
        scale = float(reference[key].abs().max()) or 1.0
        if difference > check_tolerance * scale:
            raise ValueError(
                f"the converted model differs from the mace-torch model in {key} by {difference:.3g} "
                f"(relative {difference / scale:.2e} > {check_tolerance:g}): it does not map (reduced CG "
                "coefficients or another non-linearity?)"
            )
    return ours
