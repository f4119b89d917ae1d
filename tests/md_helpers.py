"""Shared pieces of the calculator/MD/relax tests: a tiny network model and a Morse pair potential
with the model interface."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from equitensor.graph import AtomicGraph, energy_derivatives, strained
from equitensor.models import TensorNet
from equitensor.models.tensornet import cosine_cutoff


def tiny_tensornet(
    scale: float = 1.0, atomic_numbers: Sequence[int] = (29,), dtype: str = "float64"
) -> TensorNet:
    """A randomly initialised (seed 0) TensorNet, by default float64 for Cu: a smooth, cheap
    potential (``scale`` multiplies its interaction energy)."""
    torch.manual_seed(0)
    return TensorNet(
        hidden_channels=8,
        num_layers=1,
        num_rbf=8,
        cutoff=3.5,
        atomic_numbers=list(atomic_numbers),
        scale=scale,
        dtype=dtype,
    )


class MorsePairs(nn.Module):
    """A Morse pair potential (Girifalco-Weizer copper) times TensorNet's cosine cutoff, with the
    equitensor model interface: a potential whose equation of state is known, so a barostat run can
    be checked for physics (a compressed crystal must expand)."""

    def __init__(self, depth: float = 0.3429, alpha: float = 1.3588, r0: float = 2.866, cutoff: float = 5.0):
        super().__init__()
        self.r_max = cutoff
        self.depth = nn.Parameter(torch.tensor(depth, dtype=torch.float64))
        self.alpha, self.r0 = alpha, r0

    def forward(self, graph: AtomicGraph, compute_forces=True, compute_stress=False, training=False):
        with torch.enable_grad():
            work, positions, strain = strained(graph)
            r = work.edge_vectors().norm(dim=-1)
            morse = self.depth * ((1 - torch.exp(-self.alpha * (r - self.r0))) ** 2 - 1)
            pair = morse * cosine_cutoff(r, self.r_max)
            node_energy = 0.5 * pair.new_zeros(graph.num_nodes).index_add(0, graph.receiver, pair)
            energy = graph.structure_sum(node_energy)
            out = energy_derivatives(energy, graph, positions, strain if compute_stress else None)
        return {"energy": energy.detach(), "node_energy": node_energy.detach(), **out}
