"""An eSCN-style potential (Passaro & Zitnick 2023, "Reducing SO(3) Convolutions to SO(2)") from
equitensor's public pieces.

Node features are spherical signals ``C x (0e + 1o + ... + Le)`` of high degree (``lmax`` 4 by
default). Each layer (pre-norm residual blocks, as eSCN/EquiformerV2):

- message: per-degree layer norm, ``Linear``, the edge convolution with the edge's spherical
  harmonics computed in the edge frame as an SO(2) convolution (the ``so2`` backend: rotate into
  the edge frame, one multiply per (l_in, l_out, |m|) block, rotate back; ``mmax`` keeps
  ``|m| <= mmax`` there, eSCN's truncation), weights per edge, path and channel from a radial MLP of
  the Bessel features, ``Linear``, divided by ``avg_num_neighbors``;
- feed-forward: per-degree layer norm, ``Linear``, SiLU applied pointwise on a spherical grid
  (:class:`equitensor.nn.GridActivation`, eSCN's S2 activation), ``Linear``.

The energy is read from the scalars after a last layer norm (``Linear -> SiLU -> Linear``).

Differences from eSCN: the SO(2) convolution is channel-wise (MACE's 'uvu' product; the ``Linear``
layers around it mix channels) rather than a dense SO(2) linear map over channels, and edges carry
no element embedding. Equivariance: the SO(2) convolution is exactly equivariant at any ``mmax``
(the edge frame's rotations are differentiable and pole-free, so forces by autograd are
well-defined for every bond direction); the grid activation is equivariant only up to its
quadrature error (``equivariance_report()``, about 1e-4 relative per activation at the default
grid). ``backend="cg"`` computes the same convolution with Clebsch-Gordan products (``mmax`` None).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from equitensor.graph import AtomicGraph
from equitensor.irreps import Irreps
from equitensor.models.mace import NonLinearReadout
from equitensor.models.potential import AtomicPotential
from equitensor.nn import EquivariantLayerNorm, GridActivation, Linear, RadialEmbedding, RadialMLP
from equitensor.tp import EdgeConvolution, spherical_irreps


class ESCNLayer(nn.Module):
    """``h += Linear(SO2Conv(Linear(norm(h)))) / avg_num_neighbors``, then
    ``h += Linear(GridActivation(Linear(norm(h))))``."""

    def __init__(
        self,
        irreps: Irreps,
        irreps_sh: Irreps,
        num_radial: int,
        radial_MLP: Sequence[int],
        avg_num_neighbors: float,
        backend: str,
        mmax: int | None,
        grid_resolution: tuple[int, int] | None,
    ) -> None:
        super().__init__()
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.norm_message = EquivariantLayerNorm(irreps)
        self.linear_up = Linear(irreps, irreps)
        options = {} if mmax is None else {"mmax": mmax}
        self.conv = EdgeConvolution(irreps, irreps_sh, irreps, backend=backend, **options)
        self.radial_mlp = RadialMLP([num_radial, *radial_MLP, self.conv.weight_numel])
        self.linear_message = Linear(self.conv.irreps_out, irreps)
        self.norm_ffn = EquivariantLayerNorm(irreps)
        self.ffn_in = Linear(irreps, irreps)
        self.activation = GridActivation(irreps, "silu", grid_resolution)
        self.ffn_out = Linear(irreps, irreps)

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_vectors: torch.Tensor,
        edge_feats: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor | None,
    ) -> torch.Tensor:
        up = self.linear_up(self.norm_message(node_feats))
        message = self.conv(up, edge_vectors, self.radial_mlp(edge_feats), edge_index, edge_sh)
        node_feats = node_feats + self.linear_message(message) / self.avg_num_neighbors
        return node_feats + self.ffn_out(self.activation(self.ffn_in(self.norm_ffn(node_feats))))


class ESCN(AtomicPotential):
    """eSCN-style potential: SO(2) edge convolutions on high-degree spherical-signal features.

    ``num_channels`` C and ``lmax`` L give the node irreps ``C x (0e + 1o + ... + Le)``; ``max_ell``
    the degrees of the edge harmonics (default L); ``mmax`` eSCN's edge-frame truncation (None: all
    m, the exact convolution; it needs the ``so2`` backend); ``grid_resolution`` (n_theta, n_phi)
    of the S2 activation (default :func:`equitensor.nn.spherical_grid.default_resolution`).
    ``r_max``, ``num_bessel``, ``num_polynomial_cutoff``, ``radial_MLP``, ``MLP_irreps``,
    ``avg_num_neighbors``, ``atomic_energies``, ``scale``, ``shift`` as in MACE.

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.models import ESCN
    >>> model = ESCN([1, 8], r_max=3.0, num_channels=4, lmax=2, mmax=1, radial_MLP=[8]).double()
    >>> model(graph_from_atoms(molecule("H2O"), model.r_max))["forces"].shape
    torch.Size([3, 3])
    """

    def __init__(
        self,
        atomic_numbers: Sequence[int],
        r_max: float = 5.0,
        num_channels: int = 32,
        lmax: int = 4,
        max_ell: int | None = None,
        mmax: int | None = 2,
        num_interactions: int = 2,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        radial_MLP: Sequence[int] | None = None,
        MLP_irreps: str = "16x0e",
        avg_num_neighbors: float = 1.0,
        atomic_energies: Sequence[float] | Mapping | None = None,
        scale: float = 1.0,
        shift: float = 0.0,
        backend: str = "so2",
        grid_resolution: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        atomic_numbers, energies = self.init_energy_terms(atomic_numbers, atomic_energies, scale, shift)
        if num_interactions < 1 or avg_num_neighbors <= 0:
            raise ValueError(
                f"need num_interactions >= 1 and avg_num_neighbors > 0, "
                f"got {num_interactions}, {avg_num_neighbors}"
            )
        if mmax is not None and backend != "so2":
            raise ValueError(f"mmax truncates the so2 convolution; backend {backend!r} needs mmax=None")
        max_ell = lmax if max_ell is None else int(max_ell)
        radial_MLP = [64, 64] if radial_MLP is None else [int(h) for h in radial_MLP]
        resolution = None if grid_resolution is None else tuple(int(n) for n in grid_resolution)
        self.config = {
            "atomic_numbers": atomic_numbers,
            "r_max": float(r_max),
            "num_channels": int(num_channels),
            "lmax": int(lmax),
            "max_ell": max_ell,
            "mmax": None if mmax is None else int(mmax),
            "num_interactions": int(num_interactions),
            "num_bessel": int(num_bessel),
            "num_polynomial_cutoff": int(num_polynomial_cutoff),
            "radial_MLP": radial_MLP,
            "MLP_irreps": str(Irreps(MLP_irreps)),
            "avg_num_neighbors": float(avg_num_neighbors),
            "atomic_energies": energies,
            "scale": float(scale),
            "shift": float(shift),
            "backend": backend,
            "grid_resolution": None if resolution is None else list(resolution),
        }
        if mmax is not None:  # truncated: only so2 computes it, so no other backend may replace it
            self.portable_backends, self.kernel_backends = {}, {}
        self.r_max = float(r_max)
        self.hidden_irreps = spherical_irreps(int(num_channels), int(lmax))
        self.node_embedding = Linear(f"{self.num_elements}x0e", self.hidden_irreps)
        self.radial_embedding = RadialEmbedding(r_max, num_bessel, num_polynomial_cutoff)
        sh = Irreps.spherical_harmonics(max_ell)
        self.interactions = nn.ModuleList(
            ESCNLayer(
                self.hidden_irreps, sh, num_bessel, radial_MLP, avg_num_neighbors, backend, mmax, resolution
            )
            for _ in range(num_interactions)
        )
        self.norm_out = EquivariantLayerNorm(self.hidden_irreps)
        self.readout = NonLinearReadout(self.hidden_irreps, Irreps(MLP_irreps))

    #: the convolution's exact plain-torch and compiled-kernel forms (same numbers; at mmax None only)
    portable_backends = {"backend": "cg"}
    kernel_backends = {"backend": "sparse"}

    def interaction_energy(
        self, graph: AtomicGraph, node_attrs: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        edge_feats = self.radial_embedding(vectors.norm(dim=-1))
        conv = self.interactions[0].conv  # every layer's convolution uses the same SH of the edges
        edge_sh = conv.edge_spherical_harmonics(vectors) if conv.uses_sh else None
        node_feats = self.node_embedding(node_attrs)
        for layer in self.interactions:
            node_feats = layer(node_feats, vectors, edge_feats, graph.edge_index, edge_sh)
        return self.readout(self.norm_out(node_feats)).squeeze(-1)
