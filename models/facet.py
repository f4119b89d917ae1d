"""A Facet-style potential (Miklaucic et al. 2025, "Facet: highly efficient E(3)-equivariant
networks for interatomic potentials") from equitensor's public pieces.

MACE-like message passing (MACE's interaction and product blocks) with Facet's two changes:

- radial functions are learned cubic splines of the edge length
  (:class:`equitensor.nn.SplineRadial`) in place of the Bessel basis and radial MLP;
- after the product basis, the node features are mixed by Facet's grid layer
  (:class:`GridMixing`: ``Linear`` up to spherical signals, a standard MLP over the channels at
  every point of a spherical grid (:class:`equitensor.nn.GridMLP`), ``Linear`` back) in place of
  MACE's ``Linear``, plus a linear skip.

Equivariance: everything but the grid MLP is exactly equivariant; the grid MLP only up to its
quadrature error (``equivariance_report()``, about 1e-4 relative per layer at the default grid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from equitensor.graph import AtomicGraph
from equitensor.irreps import Irreps, IrrepsLike
from equitensor.models.mace import InteractionBlock, NonLinearReadout
from equitensor.models.potential import AtomicPotential
from equitensor.nn import GridMLP, Linear, SplineRadial, SymmetricContraction
from equitensor.tp import spherical_irreps


class GridMixing(nn.Module):
    """``Linear(x) + Linear(GridMLP(Linear(x)))``: Facet's node-mixing layer on ``irreps`` (spherical
    signals of ``grid_channels`` channels on the grid, an MLP of ``grid_hidden`` units per point)."""

    def __init__(
        self,
        irreps: IrrepsLike,
        grid_channels: int,
        grid_hidden: int,
        grid_resolution: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        irreps = Irreps(irreps)
        signal = spherical_irreps(grid_channels, irreps.lmax)
        self.skip = Linear(irreps, irreps)
        self.up = Linear(irreps, signal)
        self.mlp = GridMLP(signal, grid_hidden, "silu", grid_resolution)
        self.down = Linear(signal, irreps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.down(self.mlp(self.up(x)))


class Facet(AtomicPotential):
    """Facet-style potential: MACE message passing, spline radial functions, grid-MLP node mixing.

    ``num_channels`` C and ``max_L`` give the hidden irreps ``C x (0e + 1o + ... )`` (spherical
    signals, the grid's input); ``max_ell`` the edge harmonics; ``correlation`` the product basis'
    body order; ``num_spline_basis`` the cubic B-splines of each radial function; ``grid_channels``
    and ``grid_hidden`` the signal channels and MLP width of the grid layer; ``grid_resolution`` its
    (n_theta, n_phi). ``backend``/``product_backend``, ``r_max``, ``num_polynomial_cutoff``,
    ``MLP_irreps``, ``avg_num_neighbors``, ``atomic_energies``, ``scale``, ``shift`` as in MACE.

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.models import Facet
    >>> model = Facet([1, 8], r_max=3.0, num_channels=4, max_ell=1, correlation=2, grid_hidden=8).double()
    >>> model(graph_from_atoms(molecule("H2O"), model.r_max))["forces"].shape
    torch.Size([3, 3])
    """

    def __init__(
        self,
        atomic_numbers: Sequence[int],
        r_max: float = 5.0,
        num_channels: int = 32,
        max_L: int = 1,
        max_ell: int = 3,
        num_interactions: int = 2,
        correlation: int = 3,
        num_spline_basis: int = 8,
        num_polynomial_cutoff: int = 5,
        grid_channels: int | None = None,
        grid_hidden: int = 64,
        grid_resolution: Sequence[int] | None = None,
        MLP_irreps: str = "16x0e",
        avg_num_neighbors: float = 1.0,
        atomic_energies: Sequence[float] | Mapping | None = None,
        scale: float = 1.0,
        shift: float = 0.0,
        backend: str = "cg",
        product_backend: str = "cg",
    ) -> None:
        super().__init__()
        atomic_numbers, energies = self.init_energy_terms(atomic_numbers, atomic_energies, scale, shift)
        if num_interactions < 1 or avg_num_neighbors <= 0:
            raise ValueError(
                f"need num_interactions >= 1 and avg_num_neighbors > 0, "
                f"got {num_interactions}, {avg_num_neighbors}"
            )
        channels = int(num_channels)
        grid_channels = channels if grid_channels is None else int(grid_channels)
        resolution = None if grid_resolution is None else tuple(int(n) for n in grid_resolution)
        self.config = {
            "atomic_numbers": atomic_numbers,
            "r_max": float(r_max),
            "num_channels": channels,
            "max_L": int(max_L),
            "max_ell": int(max_ell),
            "num_interactions": int(num_interactions),
            "correlation": int(correlation),
            "num_spline_basis": int(num_spline_basis),
            "num_polynomial_cutoff": int(num_polynomial_cutoff),
            "grid_channels": grid_channels,
            "grid_hidden": int(grid_hidden),
            "grid_resolution": None if resolution is None else list(resolution),
            "MLP_irreps": str(Irreps(MLP_irreps)),
            "avg_num_neighbors": float(avg_num_neighbors),
            "atomic_energies": energies,
            "scale": float(scale),
            "shift": float(shift),
            "backend": backend,
            "product_backend": product_backend,
        }
        self.r_max = float(r_max)
        self.hidden_irreps = hidden = spherical_irreps(channels, int(max_L))
        scalars = Irreps(f"{channels}x0e")
        sh = Irreps.spherical_harmonics(max_ell)
        message = spherical_irreps(channels, int(max_ell))

        def radial(weight_numel: int) -> nn.Module:
            return SplineRadial(r_max, weight_numel, num_spline_basis, num_polynomial_cutoff)

        self.node_embedding = Linear(f"{self.num_elements}x0e", scalars)
        self.interactions = nn.ModuleList()
        self.contractions = nn.ModuleList()
        self.mixings = nn.ModuleList()
        self.readouts = nn.ModuleList()
        for i in range(num_interactions):
            first, last = i == 0, i == num_interactions - 1
            irreps_out = scalars if last else hidden
            self.interactions.append(
                InteractionBlock(
                    irreps_node=scalars if first else hidden,
                    irreps_sh=sh,
                    irreps_message=message,
                    irreps_residual=irreps_out,
                    num_elements=self.num_elements,
                    num_radial=1,
                    radial_MLP=[],
                    avg_num_neighbors=avg_num_neighbors,
                    residual=not first,
                    backend=backend,
                    radial=radial,
                )
            )
            self.contractions.append(
                SymmetricContraction(
                    message, irreps_out, int(correlation), self.num_elements, backend=product_backend
                )
            )
            self.mixings.append(GridMixing(irreps_out, grid_channels, int(grid_hidden), resolution))
            self.readouts.append(
                NonLinearReadout(irreps_out, Irreps(MLP_irreps)) if last else Linear(irreps_out, "1x0e")
            )

    portable_backends = {"backend": "cg", "product_backend": "cg"}
    kernel_backends = {"backend": "sparse", "product_backend": "sparse"}

    def interaction_energy(
        self, graph: AtomicGraph, node_attrs: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        lengths = vectors.norm(dim=-1)
        conv = self.interactions[0].conv  # every layer's convolution uses the same SH of the edges
        edge_sh = conv.edge_spherical_harmonics(vectors) if conv.uses_sh else None
        node_feats = self.node_embedding(node_attrs)
        readouts = []
        for interaction, contraction, mixing, readout in zip(
            self.interactions, self.contractions, self.mixings, self.readouts
        ):
            message, skip = interaction(node_feats, node_attrs, vectors, lengths, graph.edge_index, edge_sh)
            node_feats = mixing(contraction(message, node_attrs))
            if skip is not None:
                node_feats = node_feats + skip
            readouts.append(readout(node_feats).squeeze(-1))
        return torch.stack(readouts).sum(0)
