"""What every equitensor potential shares: the element table, E0s, scale and shift, and energy ->
forces/stress by autograd. A model only says how atoms interact (:meth:`interaction_energy`).

``E = sum_i E0(z_i) + sum_i (scale * e_i + shift)`` with ``e_i`` the model's per-atom interaction
energy; forces ``-dE/dr`` and stress ``dE/d(strain) / V`` by autograd.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from equitensor.errors import InputError
from equitensor.graph import AtomicGraph, as_atomic_graph, energy_derivatives, strained
from equitensor.models.elements import element_table, lookup_elements
from equitensor.nn import GridFunction
from equitensor.tp.backends.cp import CPTensorProduct


def atomic_energies_list(
    atomic_energies: Sequence[float] | Mapping | None, atomic_numbers: list[int]
) -> list[float]:
    """E0s aligned with ``atomic_numbers`` from a list, a {Z: E0} dict (keys int or str) or None."""
    if atomic_energies is None:
        return [0.0] * len(atomic_numbers)
    if isinstance(atomic_energies, Mapping):
        by_z = {int(z): float(e) for z, e in atomic_energies.items()}
        missing = [z for z in atomic_numbers if z not in by_z]
        if missing:
            raise ValueError(f"atomic_energies has no E0 for atomic numbers {missing}")
        return [by_z[z] for z in atomic_numbers]
    values = [float(e) for e in atomic_energies]
    if len(values) != len(atomic_numbers):
        raise ValueError(f"atomic_energies has {len(values)} values for {len(atomic_numbers)} atomic numbers")
    return values


class AtomicPotential(nn.Module):
    """Base of the message-passing potentials: subclasses call :meth:`init_energy_terms` and
    implement :meth:`interaction_energy` (and hold ``self.interactions``, one per message-passing
    step)."""

    def init_energy_terms(
        self,
        atomic_numbers: Sequence[int],
        atomic_energies: Sequence[float] | Mapping | None,
        scale: float,
        shift: float,
    ) -> tuple[list[int], list[float]]:
        """Check the elements, register the element table, E0s, scale and shift; return the
        elements and E0s as lists (for ``config``)."""
        atomic_numbers = [int(z) for z in atomic_numbers]
        if not atomic_numbers or len(set(atomic_numbers)) != len(atomic_numbers):
            raise ValueError(f"atomic_numbers must be a non-empty list of distinct Z, got {atomic_numbers}")
        if min(atomic_numbers) < 1:
            raise ValueError(f"atomic numbers must be >= 1, got {atomic_numbers}")
        energies = atomic_energies_list(atomic_energies, atomic_numbers)
        self.num_elements = len(atomic_numbers)
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers, dtype=torch.long))
        self.register_buffer("element_index", element_table(atomic_numbers), persistent=False)
        # float buffers start in float64 so that .double() keeps them exact; .float() casts them
        self.register_buffer("atomic_energies", torch.tensor(energies, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))
        self.register_buffer("shift", torch.tensor(float(shift), dtype=torch.float64))
        return atomic_numbers, energies

    def element_indices(self, numbers: torch.Tensor) -> torch.Tensor:
        """Index of each atom's element in ``atomic_numbers``; InputError naming unknown elements."""
        index, unknown = lookup_elements(self.element_index, numbers)
        if unknown:
            raise InputError(
                f"atomic numbers {unknown} are not in this model's atomic_numbers "
                f"{self.atomic_numbers.tolist()}"
            )
        return index

    @property
    def message_passing_steps(self) -> int:
        """How many times features travel along edges (one per interaction): an atom's energy
        depends on the atoms within ``message_passing_steps * r_max``."""
        return len(self.interactions)

    def equivariance_report(self) -> dict[str, float]:
        """Measured relative equivariance error (random rotations and reflections, float64) of every
        piece that is only approximately equivariant, by module name: CP products below their exact
        rank and functions on a spherical grid. Empty when the model is exactly equivariant (up to
        round-off). It is not a bound on the whole model's error, which the pieces' errors feed through
        the layers and into the derivatives: in the tests, energies, forces and stress under random
        rotations and reflections stay within 50x of the largest entry (about 20x for eSCN's forces)."""
        report = {}
        for name, module in self.named_modules():
            if isinstance(module, CPTensorProduct) and not module.exact:
                report[name] = module.report().equivariance_error
            elif isinstance(module, GridFunction):
                report[name] = module.equivariance_error()
        return report

    def _dtype(self) -> torch.dtype:
        """The parameters' dtype, which the graph's positions must have."""
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def interaction_energy(
        self, graph: AtomicGraph, node_attrs: torch.Tensor, vectors: torch.Tensor
    ) -> torch.Tensor:
        """Per-atom interaction energy (N,) before scale and shift, from the one-hot elements
        ``node_attrs`` (N, num_elements) and the edge vectors (E, 3) of ``graph``'s edges."""
        raise NotImplementedError

    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        training: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energies (B,), node energies (N,), and forces (N, 3), stress/virial (B, 3, 3) on request.

        ``training=True`` keeps the autograd graph of the forces so a loss on them can be
        differentiated; otherwise derivative outputs are detached. ``graph`` may also be a PyG
        batch (see :mod:`equitensor.interop.pyg`).
        """
        graph = as_atomic_graph(graph)
        dtype = self._dtype()
        if graph.positions.dtype != dtype:
            raise ValueError(
                f"graph positions are {graph.positions.dtype} but the model is {dtype}; "
                f"convert one of them (graph.to(dtype=...) or model.to(...))"
            )
        index = self.element_indices(graph.numbers)
        node_attrs = nn.functional.one_hot(index, self.num_elements).to(dtype)
        derivatives = compute_forces or compute_stress
        with torch.enable_grad() if derivatives else contextlib.nullcontext():
            if derivatives:
                work_graph, positions, strain = strained(graph)
            else:
                work_graph, positions, strain = graph, None, None
            vectors = work_graph.edge_vectors()
            interaction = self.interaction_energy(graph, node_attrs, vectors)
            node_energy = self.atomic_energies.to(dtype)[index] + (
                self.scale.to(dtype) * interaction + self.shift.to(dtype)
            )
            energy = graph.structure_sum(node_energy)
            out = {"energy": energy, "node_energy": node_energy}
            if derivatives:
                out.update(
                    energy_derivatives(
                        energy, graph, positions, strain if compute_stress else None, training=training
                    )
                )
                if not compute_forces:
                    del out["forces"]
                if not training:
                    out = {key: value.detach() for key, value in out.items()}
        return out
