"""MACE (Batatia et al., NeurIPS 2022) from equitensor's public pieces, as ACEsuit/mace builds it.

The layer structure, normalizations and defaults follow ACEsuit/mace's ``ScaleShiftMACE`` as its
training CLI configures it, so published hyperparameters transfer:

- one-hot of the element's index in ``atomic_numbers`` -> ``Linear`` to ``C x 0e``;
- edge features ``bessel(r) * envelope_p(r)``; edge directions as 'component' spherical harmonics
  up to ``max_ell``;
- interaction t: ``Linear`` up, edge convolution (uvu, per-edge weights from the radial MLP),
  ``Linear``, divided by ``avg_num_neighbors`` (not its square root). The first block is
  MACE's ``RealAgnosticInteractionBlock`` (an element-dependent linear map on the message, no
  residual), later ones ``RealAgnosticResidualInteractionBlock`` (element-dependent residual);
- product basis: symmetric contraction up to ``correlation`` with per-element weights, ``Linear``,
  plus the residual;
- readouts: ``Linear`` to one scalar after every layer but the last, whose hidden features are
  scalars only and read out by ``Linear -> SiLU -> Linear`` through ``MLP_irreps``;
- ``E = sum_i E0(z_i) + sum_i (scale * sum_t readout_t(h_i^t) + shift)``; forces -dE/dr and
  stress dE/d(strain)/V by autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from equitensor.graph import AtomicGraph
from equitensor.irreps import Irrep, Irreps
from equitensor.models.potential import AtomicPotential
from equitensor.nn import (
    GauntProductBasis,
    Linear,
    NormalizedActivation,
    RadialEmbedding,
    RadialMLP,
    SymmetricContraction,
)
from equitensor.tp import EdgeConvolution, FullyConnectedTensorProduct
from equitensor.tp.backends import backends_for


class InteractionBlock(nn.Module):
    """Message ``A_i = Linear(sum_{j->i} TP_uvu(Linear(h)_j, Y(r_ij), MLP(edge_ij))) / avg_num_neighbors``.

    ``residual=False`` (MACE's first block) then applies an element-dependent linear map to the
    message and returns no skip connection; ``residual=True`` returns the element-dependent
    linear map of the input features, in ``irreps_residual``, as the skip connection.

    ``conv_options`` go to the edge convolution's backend (``mmax`` of so2, ``rank`` and
    ``allow_approximate`` of cp). ``shared_path_weights`` (TDN's path-weight sharing): the radial
    function gives one weight per channel, used by every path, instead of one per path and channel.
    ``radial(weight_numel)`` builds the module mapping the edge features to those weights (default:
    MACE's ``RadialMLP([num_radial, *radial_MLP, weight_numel])`` of the Bessel features).
    """

    def __init__(
        self,
        irreps_node: Irreps,
        irreps_sh: Irreps,
        irreps_message: Irreps,
        irreps_residual: Irreps,
        num_elements: int,
        num_radial: int,
        radial_MLP: Sequence[int],
        avg_num_neighbors: float,
        residual: bool,
        backend: str,
        conv_options: Mapping | None = None,
        shared_path_weights: bool = False,
        radial: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        attrs = Irreps(f"{num_elements}x0e")
        self.residual = residual
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.linear_up = Linear(irreps_node, irreps_node)
        self.conv = EdgeConvolution(
            irreps_node, irreps_sh, irreps_message, backend=backend, **dict(conv_options or {})
        )
        self.num_paths = len(self.conv.spec.instructions)
        self.shared_path_weights = bool(shared_path_weights)
        weights = self.conv.weight_numel // self.num_paths if shared_path_weights else self.conv.weight_numel
        if radial is None:
            self.radial_mlp = RadialMLP([num_radial, *radial_MLP, weights])
        else:
            self.radial_mlp = radial(weights)
        self.linear = Linear(self.conv.irreps_out, irreps_message)
        if residual:
            self.skip = FullyConnectedTensorProduct(irreps_node, attrs, irreps_residual)
        else:
            self.skip = FullyConnectedTensorProduct(irreps_message, attrs, irreps_message)

    def forward(
        self,
        node_feats: torch.Tensor,
        node_attrs: torch.Tensor,
        edge_vectors: torch.Tensor,
        edge_feats: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        skip = self.skip(node_feats, node_attrs) if self.residual else None
        up = self.linear_up(node_feats)
        weights = self.radial_mlp(edge_feats)
        if self.shared_path_weights:  # the uvu weights are path-major: the same C weights per path
            weights = weights.repeat(1, self.num_paths)
        message = self.conv(up, edge_vectors, weights, edge_index, edge_sh)
        message = self.linear(message) / self.avg_num_neighbors
        if not self.residual:
            message = self.skip(message, node_attrs)
        return message, skip


# product_backend names of the Gaunt product basis (powers of the message's spherical signal, see
# GauntProductBasis) -> the Gaunt-product backend computing them; other names are the symmetric
# contraction's backends ("cg", "sparse", "auto").
GAUNT_PRODUCT_BACKENDS = {"gaunt": "gaunt", "grid": "grid", "cg-gaunt": "cg"}


class ProductBlock(nn.Module):
    """``h = Linear(SymmetricContraction(A, z)) (+ skip)``: MACE's EquivariantProductBasisBlock;
    with a ``GAUNT_PRODUCT_BACKENDS`` backend the contraction is a :class:`GauntProductBasis`."""

    def __init__(
        self, irreps_message: Irreps, irreps_out: Irreps, correlation: int, num_elements: int, backend: str
    ) -> None:
        super().__init__()
        if backend in GAUNT_PRODUCT_BACKENDS:
            self.contraction = GauntProductBasis(
                irreps_message, irreps_out, correlation, num_elements, backend=GAUNT_PRODUCT_BACKENDS[backend]
            )
        else:
            self.contraction = SymmetricContraction(
                irreps_message, irreps_out, correlation, num_elements, backend=backend
            )
        self.linear = Linear(irreps_out, irreps_out)

    def forward(
        self, message: torch.Tensor, skip: torch.Tensor | None, node_attrs: torch.Tensor
    ) -> torch.Tensor:
        out = self.linear(self.contraction(message, node_attrs))
        return out if skip is None else out + skip


class NonLinearReadout(nn.Module):
    """``Linear(hidden -> MLP_irreps) -> normalized SiLU -> Linear(-> 1x0e)``, MACE's last readout."""

    def __init__(self, irreps_in: Irreps, irreps_mlp: Irreps) -> None:
        super().__init__()
        self.linear_1 = Linear(irreps_in, irreps_mlp)
        self.activation = NormalizedActivation("silu")
        self.linear_2 = Linear(irreps_mlp, "1x0e")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.activation(self.linear_1(x)))


def resolve_hidden_irreps(num_channels: int | None, max_L: int | None, hidden_irreps: str | None) -> Irreps:
    """Hidden irreps as MACE's CLI resolves them: ``C x (0e + 1o + .. up to max_L)`` by default 128, 1."""
    if hidden_irreps is not None:
        irreps = Irreps(hidden_irreps)
        if len({mul for mul, _ in irreps}) != 1:
            raise ValueError(f"hidden_irreps must have one multiplicity for every irrep, got {irreps}")
        if irreps.count("0e") == 0:
            raise ValueError(f"hidden_irreps must contain scalars (0e), got {irreps}")
        if num_channels is not None and num_channels != irreps[0].mul:
            raise ValueError(f"num_channels={num_channels} disagrees with hidden_irreps={irreps}")
        if max_L is not None and max_L != irreps.lmax:
            raise ValueError(f"max_L={max_L} disagrees with hidden_irreps={irreps}")
        return irreps
    channels = 128 if num_channels is None else int(num_channels)
    max_L = 1 if max_L is None else int(max_L)
    if channels < 1 or max_L < 0:
        raise ValueError(f"num_channels must be >= 1 and max_L >= 0, got {channels}, {max_L}")
    return Irreps([(channels, (l, (-1) ** l)) for l in range(max_L + 1)])


class MACE(AtomicPotential):
    """MACE interatomic potential (ScaleShiftMACE), from equitensor's pieces.

    Arguments and defaults are MACE's CLI ones: ``atomic_numbers`` (the z_table), ``r_max`` (Å),
    ``num_bessel`` 8, ``num_polynomial_cutoff`` 5, ``max_ell`` 3, ``num_channels``/``max_L``
    (128/1) or ``hidden_irreps``, ``num_interactions`` 2, ``correlation`` 3 (or one per layer),
    ``radial_MLP`` [64, 64, 64], ``MLP_irreps`` 16x0e, ``avg_num_neighbors``, ``atomic_energies``
    (E0s: list aligned with ``atomic_numbers`` or {Z: E0}), ``scale``, ``shift``. ``backend``
    selects the edge-convolution backend, ``product_backend`` the product basis: "cg" MACE's
    symmetric contraction, "sparse" the same numbers from its non-zero terms in compiled C++ (CPU),
    "auto" the faster of the two, measured on the first input; "gaunt", "grid" or "cg-gaunt"
    the Gaunt product basis (body order as powers of the message's spherical signal, weights per
    element, channel and degree; the Gaunt MACE port) computed by the 2D-FFT, S2-grid or CG
    backend. The Gaunt basis needs messages and
    hidden irreps of spherical-signal type (``Cx0e + Cx1o + ...``, so no ``0o`` in hidden_irreps).
    ``conv_options`` go to the edge convolution's backend (e.g. ``{"mmax": 2}`` for so2,
    ``{"rank": 8, "allow_approximate": True}`` for cp); ``shared_path_weights`` makes the radial MLP
    give one weight per channel shared by every path of the convolution (TDN's path-weight sharing).

    ``config`` holds the JSON-compatible constructor arguments, so ``equitensor.load_model``
    rebuilds the model. E0s, scale and shift are buffers that ``.to(dtype)`` casts like the
    weights (they start in float64; ``config`` keeps the E0s exact).

    Example: a tiny MACE for H and O (float64, like the graph) on a water molecule.

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.models import MACE
    >>> model = MACE([1, 8], r_max=3.0, num_channels=4, max_ell=1, correlation=2, radial_MLP=[8]).double()
    >>> out = model(graph_from_atoms(molecule("H2O"), model.r_max))
    >>> out["energy"].shape, out["node_energy"].shape, out["forces"].shape
    (torch.Size([1]), torch.Size([3]), torch.Size([3, 3]))
    >>> torch.allclose(out["forces"].sum(0), torch.zeros(3, dtype=torch.float64))  # no net force
    True
    """

    def __init__(
        self,
        atomic_numbers: Sequence[int],
        r_max: float = 5.0,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        max_ell: int = 3,
        num_channels: int | None = None,
        max_L: int | None = None,
        hidden_irreps: str | None = None,
        num_interactions: int = 2,
        correlation: int | Sequence[int] = 3,
        radial_MLP: Sequence[int] | None = None,
        MLP_irreps: str = "16x0e",
        avg_num_neighbors: float = 1.0,
        atomic_energies: Sequence[float] | Mapping | None = None,
        scale: float = 1.0,
        shift: float = 0.0,
        backend: str = "cg",
        product_backend: str = "cg",
        conv_options: Mapping | None = None,
        shared_path_weights: bool = False,
    ) -> None:
        super().__init__()
        atomic_numbers, energies = self.init_energy_terms(atomic_numbers, atomic_energies, scale, shift)
        if num_interactions < 1:
            raise ValueError(f"num_interactions must be >= 1, got {num_interactions}")
        if avg_num_neighbors <= 0:
            raise ValueError(f"avg_num_neighbors must be > 0, got {avg_num_neighbors}")
        product_backends = (*backends_for("product_basis"), "auto", *GAUNT_PRODUCT_BACKENDS)
        if product_backend not in product_backends:
            raise ValueError(
                f"product_backend {product_backend!r} is not available; choose one of {product_backends}"
            )
        hidden = resolve_hidden_irreps(num_channels, max_L, hidden_irreps)
        correlations = (
            [int(correlation)] * num_interactions
            if isinstance(correlation, int)
            else [int(c) for c in correlation]
        )
        if len(correlations) != num_interactions:
            raise ValueError(
                f"correlation has {len(correlations)} entries for {num_interactions} interactions"
            )
        radial_MLP = [64, 64, 64] if radial_MLP is None else [int(h) for h in radial_MLP]
        mlp_irreps = Irreps(MLP_irreps)
        if any(ir != Irrep("0e") for _, ir in mlp_irreps):
            raise ValueError(f"MLP_irreps must be scalars (Nx0e), got {mlp_irreps}")

        self.config = {
            "atomic_numbers": atomic_numbers,
            "r_max": float(r_max),
            "num_bessel": int(num_bessel),
            "num_polynomial_cutoff": int(num_polynomial_cutoff),
            "max_ell": int(max_ell),
            "hidden_irreps": str(hidden),
            "num_interactions": int(num_interactions),
            "correlation": correlation if isinstance(correlation, int) else correlations,
            "radial_MLP": radial_MLP,
            "MLP_irreps": str(mlp_irreps),
            "avg_num_neighbors": float(avg_num_neighbors),
            "atomic_energies": energies,
            "scale": float(scale),
            "shift": float(shift),
            "backend": backend,
            "product_backend": product_backend,
            "conv_options": dict(conv_options or {}),
            "shared_path_weights": bool(shared_path_weights),
        }
        self.r_max = float(r_max)
        self.hidden_irreps = hidden

        channels = hidden[0].mul
        scalars = Irreps(f"{channels}x0e")
        sh = Irreps.spherical_harmonics(max_ell)
        # messages carry C channels of every l <= max_ell (both parities if hidden has 0o, as MACE)
        message_irs = (
            sh
            if hidden.count("0o") == 0
            else Irreps([(1, (l, p)) for l in range(max_ell + 1) for p in (1, -1)])
        )
        message_first = Irreps([(channels, ir) for _, ir in sh]).regroup()
        message_later = Irreps([(channels, ir) for _, ir in message_irs]).regroup()

        self.node_embedding = Linear(f"{self.num_elements}x0e", scalars)
        self.radial_embedding = RadialEmbedding(r_max, num_bessel, num_polynomial_cutoff)
        self.interactions = nn.ModuleList()
        self.products = nn.ModuleList()
        self.readouts = nn.ModuleList()
        for i in range(num_interactions):
            last = i == num_interactions - 1
            irreps_out = scalars if last else hidden
            first = i == 0
            self.interactions.append(
                InteractionBlock(
                    irreps_node=scalars if first else hidden,
                    irreps_sh=sh,
                    irreps_message=message_first if first else message_later,
                    irreps_residual=irreps_out,
                    num_elements=self.num_elements,
                    num_radial=num_bessel,
                    radial_MLP=radial_MLP,
                    avg_num_neighbors=avg_num_neighbors,
                    residual=not first,
                    backend=backend,
                    conv_options=conv_options,
                    shared_path_weights=shared_path_weights,
                )
            )
            self.products.append(
                ProductBlock(
                    message_first if first else message_later,
                    irreps_out,
                    correlations[i],
                    self.num_elements,
                    backend=product_backend,
                )
            )
            if last and num_interactions > 1:
                self.readouts.append(NonLinearReadout(irreps_out, mlp_irreps))
            else:
                self.readouts.append(Linear(irreps_out, "1x0e"))

    #: backend settings made of plain torch operations (what ``equitensor export --portable`` compiles)
    portable_backends = {"backend": "cg", "product_backend": "cg"}
    #: backend settings of equitensor's compiled CPU kernels (custom operators ``equitensor export``
    #: puts into the file by default)
    kernel_backends = {"backend": "sparse", "product_backend": "sparse"}

    def interaction_energy(
        self, graph: AtomicGraph, node_attrs: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        """Sum over layers of the readouts of the node features (N,)."""
        edge_feats = self.radial_embedding(vectors.norm(dim=-1))
        node_feats = self.node_embedding(node_attrs)
        conv = self.interactions[0].conv  # every layer's convolution uses the same SH of the edges
        edge_sh = conv.edge_spherical_harmonics(vectors) if conv.uses_sh else None
        readouts = []
        for interaction, product, readout in zip(self.interactions, self.products, self.readouts):
            message, skip = interaction(
                node_feats, node_attrs, vectors, edge_feats, graph.edge_index, edge_sh
            )
            node_feats = product(message, skip, node_attrs)
            readouts.append(readout(node_feats).squeeze(-1))
        return torch.stack(readouts).sum(0)
