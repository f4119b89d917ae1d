"""TensorNet (Simeon & De Fabritiis, NeurIPS 2023), following torchmd-net's implementation.

Each atom carries F channels of 3x3 Cartesian matrices X = I Id + A + S (scalar, antisymmetric,
symmetric traceless; see :mod:`equitensor.nn.cartesian`). Couplings between atoms are per-channel
3x3 matrix products, so no Clebsch-Gordan tables are needed.

Faithful to torchmd-net's ``TensorNet`` (torchmdnet/models/tensornet.py, pure PyTorch path) in
the radial basis, embedding, interaction and output layers, including its self-loops (every atom
is its own neighbour at distance 0, with a zero edge vector). Differences, all deliberate:

- the graph comes from the caller (:class:`equitensor.graph.AtomicGraph`, MACE conventions:
  messages flow from ``edge_index[0]`` (sender) to ``edge_index[1]`` (receiver)), so periodic
  cells of any size work through integer cell shifts; periodic self-images are ordinary edges;
- the total charge q is not an input (torchmd-net's factor ``1 + 0.1 q`` is 1, neutral systems);
- cutoff_lower is 0 and the activation is SiLU (torchmd-net's defaults, not options here);
- the energy is ``sum_i [E0(z_i) + scale * e_i + shift]`` with per-element reference energies
  and scale/shift buffers (as MACE's ScaleShift models) instead of torchmd-net's priors;
- elements are mapped through a table, and an element outside it is an error naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from ase.data import chemical_symbols
from torch import nn

from equitensor.devices import cached, has_values
from equitensor.errors import InputError
from equitensor.graph import AtomicGraph, as_atomic_graph, energy_derivatives, strained
from equitensor.models.elements import element_table, lookup_elements
from equitensor.nn.cartesian import (
    compose,
    decompose,
    skew_to_vector,
    squared_norm,
    symmetric_traceless,
    vector_to_skew,
)

__all__ = ["ExpNormalRBF", "TensorNet", "cosine_cutoff"]

GROUPS = ("O(3)", "SO(3)")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
BACKENDS = ("torch", "sparse")


def cosine_cutoff(distances: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 (cos(pi r / r_c) + 1) for r < r_c, else 0: value and slope vanish at the cutoff."""
    envelope = 0.5 * (torch.cos(distances * (math.pi / cutoff)) + 1.0)
    return envelope * (distances < cutoff)


class ExpNormalRBF(nn.Module):
    """PhysNet's exponential-normal radial basis times the cosine cutoff (torchmd-net ``expnorm``).

    phi_k(r) = f_cut(r) exp(-beta_k (exp(-alpha r) - mu_k)^2), alpha = 5 / r_c, mu_k evenly spaced
    in [exp(-r_c), 1], beta_k = (2 / K (1 - exp(-r_c)))^-2.
    """

    def __init__(self, cutoff: float, num_rbf: int, trainable: bool = False) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.alpha = 5.0 / self.cutoff
        start = math.exp(-self.cutoff)
        means = torch.linspace(start, 1.0, num_rbf, dtype=torch.float64)
        betas = torch.full((num_rbf,), (2.0 / num_rbf * (1.0 - start)) ** -2, dtype=torch.float64)
        if trainable:
            self.means = nn.Parameter(means)
            self.betas = nn.Parameter(betas)
        else:
            self.register_buffer("means", means)
            self.register_buffer("betas", betas)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """(E,) distances -> (E, K) features."""
        r = distances[:, None]
        gaussians = torch.exp(-self.betas * (torch.exp(-self.alpha * r) - self.means) ** 2)
        return cosine_cutoff(r, self.cutoff) * gaussians


#: The 13 components a message carries, (scalar, vector (3), 3x3 matrix (9)), and the piece (0,
#: 1, 2) whose per-edge factor multiplies each: the term table of the sparse kernel.
PIECE_OF_COMPONENT = (0,) + (1,) * 3 + (2,) * 9
_PIECE_TERMS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def piece_terms(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``equitensor::sparse_contract`` terms ``out[k] = factor[piece(k)] * value[k]`` (cached per device)."""

    def build() -> tuple[torch.Tensor, torch.Tensor]:
        rows = [(piece, k, k) for k, piece in enumerate(PIECE_OF_COMPONENT)]
        components = torch.tensor(rows, dtype=torch.int32, device=device)
        return components, torch.ones(len(rows), dtype=torch.float64, device=device)

    return cached(_PIECE_TERMS, device, build)


def _stack_pieces(scalar: torch.Tensor, vector: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(N, F), (N, F, 3), (N, F, 3, 3) -> (N, 13, F), channels innermost."""
    return torch.cat(
        [scalar[:, None], vector.transpose(1, 2), matrix.flatten(2).transpose(1, 2)], 1
    ).contiguous()


def _split_pieces(stacked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 13, F) -> (N, F), (N, F, 3), (N, F, 3, 3)."""
    return (
        stacked[:, 0],
        stacked[:, 1:4].transpose(1, 2),
        stacked[:, 4:].transpose(1, 2).unflatten(-1, (3, 3)),
    )


@dataclass(frozen=True)
class Edges:
    """Edges including one self-loop per atom: sender/receiver (E,), distances (E,), unit vectors
    (E, 3) (zero on self-loops), cutoff envelope (E,) and radial features (E, K). ``sparse``: sum
    messages with the compiled ``equitensor::sparse_contract`` kernel (gather, per-edge factor and
    receiver sum in one pass, no per-edge tensor) instead of gather, multiply and ``index_add``."""

    sender: torch.Tensor
    receiver: torch.Tensor
    units: torch.Tensor
    envelope: torch.Tensor
    rbf: torch.Tensor
    num_nodes: int
    sparse: bool = False

    def _contract(
        self, factors: torch.Tensor, values: torch.Tensor, gather: torch.Tensor | None
    ) -> torch.Tensor:
        from equitensor.kernels.sparse_contract import sparse_contract

        components, ones = piece_terms(factors.device)
        channels = factors.shape[-1]
        return sparse_contract(
            [factors.contiguous(), values],
            [None, gather],
            self.receiver,
            self.num_nodes,
            13,
            channels,
            components,
            ones,
        )

    def messages(
        self, factors: torch.Tensor, scalar: torch.Tensor, vector: torch.Tensor, matrix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sums over edges j -> i of ``factors[:, p]`` (E, 3, F) times atom j's scalar (N, F),
        vector (N, F, 3) and matrix (N, F, 3, 3) pieces (p = 0, 1, 2)."""
        if self.sparse:
            return _split_pieces(self._contract(factors, _stack_pieces(scalar, vector, matrix), self.sender))
        f_scalar, f_vector, f_matrix = factors.unbind(1)
        n = self.num_nodes
        return (
            scatter_sum(f_scalar * scalar[self.sender], self.receiver, n),
            scatter_sum(f_vector[..., None] * vector[self.sender], self.receiver, n),
            scatter_sum(f_matrix[..., None, None] * matrix[self.sender], self.receiver, n),
        )

    def directional_sums(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sums over edges j -> i of ``weights[:, p]`` (E, 3, F) times 1, the unit vector u and
        u u^T of the edge: (N, F), (N, F, 3), (N, F, 3, 3)."""
        u = self.units
        outer = u[:, :, None] * u[:, None, :]
        if self.sparse:
            geometry = torch.cat([torch.ones_like(u[:, :1]), u, outer.flatten(1)], 1).contiguous()
            return _split_pieces(self._contract(weights, geometry, None))
        w_scalar, w_vector, w_matrix = weights.unbind(1)
        n = self.num_nodes
        return (
            scatter_sum(w_scalar, self.receiver, n),
            scatter_sum(w_vector[:, :, None] * u[:, None, :], self.receiver, n),
            scatter_sum(w_matrix[:, :, None, None] * outer[:, None], self.receiver, n),
        )


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """Sum rows of ``values`` (E, ...) into ``size`` rows by ``index`` (E,)."""
    return values.new_zeros((size, *values.shape[1:])).index_add(0, index, values)


def mix_channels(linear: nn.Linear, tensor: torch.Tensor) -> torch.Tensor:
    """Apply ``linear`` over the channel dimension 1 of (N, F) or (N, F, 3, 3) features."""
    return linear(tensor.movedim(1, -1)).movedim(-1, 1)


def split_three(factors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Split (..., 3F) factors into three (..., F) blocks, the factors of (I, A, S) in that order."""
    return tuple(factors.unflatten(-1, (3, -1)).unbind(-2))


class TensorEmbedding(nn.Module):
    """Initial features X_i from neighbour directions, distances and both atoms' elements."""

    def __init__(self, hidden_channels: int, num_rbf: int, num_elements: int) -> None:
        super().__init__()
        f = hidden_channels
        self.distance_projections = nn.ModuleList(nn.Linear(num_rbf, f) for _ in range(3))
        self.element_embedding = nn.Embedding(num_elements, f)
        self.pair_embedding = nn.Linear(2 * f, f)
        self.piece_linears = nn.ModuleList(nn.Linear(f, f, bias=False) for _ in range(3))
        self.norm = nn.LayerNorm(f)
        self.gate = nn.Sequential(nn.Linear(f, 2 * f), nn.SiLU(), nn.Linear(2 * f, 3 * f), nn.SiLU())

    def forward(self, species: torch.Tensor, edges: Edges) -> torch.Tensor:
        """(N,) element indices -> (N, F, 3, 3) features."""
        z = self.element_embedding(species)
        pair = self.pair_embedding(torch.cat([z[edges.receiver], z[edges.sender]], dim=-1))
        pair = pair * edges.envelope[:, None]
        weights = torch.stack([proj(edges.rbf) * pair for proj in self.distance_projections], dim=1)
        scalar, vector, tensor = edges.directional_sums(weights)
        antisym, sym = vector_to_skew(vector), symmetric_traceless(tensor)

        gates = self.gate(self.norm(squared_norm(compose(scalar, antisym, sym))))
        g_scalar, g_antisym, g_sym = split_three(gates)
        scalar = mix_channels(self.piece_linears[0], scalar) * g_scalar
        antisym = mix_channels(self.piece_linears[1], antisym) * g_antisym[..., None, None]
        sym = mix_channels(self.piece_linears[2], sym) * g_sym[..., None, None]
        return compose(scalar, antisym, sym)


class TensorInteraction(nn.Module):
    """One TensorNet interaction layer: X -> X + dX + dX dX."""

    def __init__(self, hidden_channels: int, num_rbf: int, group: str) -> None:
        super().__init__()
        f = hidden_channels
        self.group = group
        self.radial = nn.Sequential(
            nn.Linear(num_rbf, f),
            nn.SiLU(),
            nn.Linear(f, 2 * f),
            nn.SiLU(),
            nn.Linear(2 * f, 3 * f),
            nn.SiLU(),
        )
        self.input_linears = nn.ModuleList(nn.Linear(f, f, bias=False) for _ in range(3))
        self.output_linears = nn.ModuleList(nn.Linear(f, f, bias=False) for _ in range(3))

    def forward(self, x: torch.Tensor, edges: Edges) -> torch.Tensor:
        factors = (self.radial(edges.rbf) * edges.envelope[:, None]).unflatten(-1, (3, -1))

        x = x / (squared_norm(x) + 1)[..., None, None]
        scalar, antisym, sym = (mix_channels(lin, p) for lin, p in zip(self.input_linears, decompose(x)))
        y = compose(scalar, antisym, sym)

        m_scalar, m_vector, m_tensor = edges.messages(factors, scalar, skew_to_vector(antisym), sym)
        message = compose(m_scalar, vector_to_skew(m_vector), m_tensor)

        # O(3): the symmetrised product keeps the parity of each piece; SO(3): 2 Y M mixes them
        product = message @ y + y @ message if self.group == "O(3)" else 2 * (y @ message)
        normalizer = squared_norm(product) + 1
        scalar, antisym, sym = decompose(product)
        pieces = (
            scalar / normalizer,
            antisym / normalizer[..., None, None],
            sym / normalizer[..., None, None],
        )
        dx = compose(*(mix_channels(lin, p) for lin, p in zip(self.output_linears, pieces)))
        return x + dx + dx @ dx


class TensorNet(nn.Module):
    """TensorNet interatomic potential on an :class:`~equitensor.graph.AtomicGraph`.

    Args:
        hidden_channels: F, channels of 3x3 features (torchmd-net default 128).
        num_layers: interaction layers (default 2).
        num_rbf: exp-normal radial functions (default 32).
        cutoff: r_c in Å (default 4.5); the graph must hold every pair closer than this
            (pairs farther away contribute exactly zero).
        equivariance_invariance_group: "O(3)" (symmetrised products, energy invariant under
            rotations and reflections) or "SO(3)" (plain products, rotations only).
        atomic_numbers: the elements the model knows; ``None`` means every Z in 1..max_z-1.
        max_z: used only when ``atomic_numbers`` is None.
        atomic_energies: E0 per element of ``atomic_numbers`` (eV), added to the energy.
        scale, shift: per-atom interaction energy is ``scale * e_i + shift``.
        trainable_rbf: learn the RBF means and widths.
        dtype: "float32" or "float64" for the parameters (inputs must match).
        backend: how messages are summed over edges: "torch" (gather, multiply, ``index_add``;
            any device) or "sparse" (the compiled ``equitensor::sparse_contract`` kernels: one
            pass over the edges with no per-edge 3x3 tensors, C++ on CPU, CUDA on GPU; same
            numbers to round-off, any derivative order).

    Example: a tiny float32 TensorNet for H and O; the stress is zero without a periodic cell.

    >>> from ase.build import molecule
    >>> from equitensor.datasets import graph_from_atoms
    >>> from equitensor.models import TensorNet
    >>> model = TensorNet(hidden_channels=8, num_rbf=8, cutoff=3.0, atomic_numbers=[1, 8])
    >>> out = model(graph_from_atoms(molecule("H2O"), model.r_max, torch.float32), compute_stress=True)
    >>> out["energy"].shape, out["forces"].shape, out["stress"].abs().max().item()
    (torch.Size([1]), torch.Size([3, 3]), 0.0)
    >>> model.config["dtype"], model.elements
    ('float32', [1, 8])
    """

    def __init__(
        self,
        hidden_channels: int = 128,
        num_layers: int = 2,
        num_rbf: int = 32,
        cutoff: float = 4.5,
        equivariance_invariance_group: str = "O(3)",
        atomic_numbers: list[int] | None = None,
        max_z: int = 128,
        atomic_energies: list[float] | None = None,
        scale: float = 1.0,
        shift: float = 0.0,
        trainable_rbf: bool = False,
        dtype: str = "float32",
        backend: str = "torch",
    ) -> None:
        super().__init__()
        if equivariance_invariance_group not in GROUPS:
            raise ValueError(
                f"equivariance_invariance_group must be one of {GROUPS}, "
                f"got {equivariance_invariance_group!r}"
            )
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if backend not in BACKENDS:
            raise ValueError(f"TensorNet backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "sparse":
            from equitensor.kernels.sparse_contract import load

            load()  # KernelUnavailableError (no compiler) now, not at the first call
        if hidden_channels < 2:
            raise ValueError(
                f"hidden_channels must be at least 2 (the head has F/2 units), got {hidden_channels}"
            )
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        if num_layers < 0 or num_rbf < 1:
            raise ValueError(f"need num_layers >= 0 and num_rbf >= 1, got {num_layers} and {num_rbf}")
        elements = self._element_list(atomic_numbers, max_z)
        if atomic_energies is not None and atomic_numbers is None:
            raise ValueError("atomic_energies needs atomic_numbers (the elements they belong to)")
        if atomic_energies is not None and len(atomic_energies) != len(elements):
            raise ValueError(
                f"atomic_energies has {len(atomic_energies)} values for {len(elements)} atomic_numbers"
            )
        self._init_kwargs = {
            "hidden_channels": int(hidden_channels),
            "num_layers": int(num_layers),
            "num_rbf": int(num_rbf),
            "cutoff": float(cutoff),
            "equivariance_invariance_group": equivariance_invariance_group,
            "atomic_numbers": None if atomic_numbers is None else [int(z) for z in atomic_numbers],
            "max_z": int(max_z),
            "atomic_energies": None if atomic_energies is None else [float(e) for e in atomic_energies],
            "scale": float(scale),
            "shift": float(shift),
            "trainable_rbf": bool(trainable_rbf),
            "backend": backend,
        }
        self.backend = backend
        self.cutoff = float(cutoff)

        self.register_buffer("element_index", element_table(elements))
        # float buffers start in float64 so a float64 model keeps them exact; .to(dtype) below casts
        e0 = [0.0] * len(elements) if atomic_energies is None else atomic_energies
        self.register_buffer("atomic_energies", torch.tensor(e0, dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(float(scale), dtype=torch.float64))
        self.register_buffer("shift", torch.tensor(float(shift), dtype=torch.float64))

        f = hidden_channels
        self.radial_basis = ExpNormalRBF(cutoff, num_rbf, trainable_rbf)
        self.embedding = TensorEmbedding(f, num_rbf, len(elements))
        self.layers = nn.ModuleList(
            TensorInteraction(f, num_rbf, equivariance_invariance_group) for _ in range(num_layers)
        )
        self.out_norm = nn.LayerNorm(3 * f)
        self.out_linear = nn.Linear(3 * f, f)
        self.head = nn.Sequential(nn.Linear(f, f // 2), nn.SiLU(), nn.Linear(f // 2, 1))
        for layer in self.head:
            if isinstance(layer, nn.Linear):  # torchmd-net's Scalar head initialisation
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.to(DTYPES[dtype])

    @staticmethod
    def _element_list(atomic_numbers: list[int] | None, max_z: int) -> list[int]:
        if atomic_numbers is None:
            if max_z < 2:
                raise ValueError(f"max_z must be at least 2, got {max_z}")
            return list(range(1, max_z))
        elements = [int(z) for z in atomic_numbers]
        if not elements or len(set(elements)) != len(elements) or min(elements) < 1:
            raise ValueError(f"atomic_numbers must be distinct positive integers, got {atomic_numbers}")
        return elements

    @property
    def elements(self) -> list[int]:
        """The atomic numbers the model knows, in the order of its element embedding's rows."""
        return self._element_list(self._init_kwargs["atomic_numbers"], self._init_kwargs["max_z"])

    @property
    def r_max(self) -> float:
        """The neighbour radius (the ``cutoff``), under the name every equitensor model shares."""
        return self.cutoff

    #: backend settings made of plain torch operations (what ``equitensor export --portable`` compiles)
    portable_backends = {"backend": "torch"}
    #: backend settings of equitensor's compiled CPU kernels (custom operators ``equitensor export``
    #: puts into the file by default)
    kernel_backends = {"backend": "sparse"}

    @property
    def message_passing_steps(self) -> int:
        """How many times features travel along edges (the embedding, then each layer): an atom's
        energy depends on the atoms within ``message_passing_steps * r_max``."""
        return len(self.layers) + 1

    @property
    def config(self) -> dict:
        """JSON-compatible constructor kwargs that rebuild this model (with its current dtype)."""
        dtype = next(self.parameters()).dtype
        names = [k for k, v in DTYPES.items() if v == dtype]
        if not names:
            raise ValueError(f"TensorNet parameters are {dtype}; only {sorted(DTYPES)} can be saved")
        return {**self._init_kwargs, "dtype": names[0]}

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Atomic numbers (N,) -> element indices; a ValueError names any element the model lacks."""
        index, unknown = lookup_elements(self.element_index, numbers)
        if unknown:
            names = ", ".join(
                f"{z} ({chemical_symbols[z]})" if 0 < z < len(chemical_symbols) else str(z) for z in unknown
            )
            known = self._init_kwargs["atomic_numbers"] or f"1..{len(self.element_index) - 1}"
            raise InputError(f"TensorNet has no element for atomic number {names}; it knows {known}")
        return index

    def edges(self, graph: AtomicGraph) -> Edges:
        """The graph's edges plus one self-loop per atom, with their radial features."""
        vectors = graph.edge_vectors()
        distances = vectors.norm(dim=-1)
        if has_values(distances) and bool((distances == 0).any()):
            raise InputError(
                "the graph has zero-length edges (self-loops or atoms on top of each other); "
                "TensorNet adds its own self-loop per atom, so build the graph without them"
            )
        n = graph.num_nodes
        loops = torch.arange(n, device=vectors.device)
        distances = torch.cat([distances, distances.new_zeros(n)])
        units = torch.cat([vectors / distances[: graph.num_edges, None], vectors.new_zeros(n, 3)])
        return Edges(
            sender=torch.cat([graph.sender, loops]),
            receiver=torch.cat([graph.receiver, loops]),
            units=units,
            envelope=cosine_cutoff(distances, self.cutoff),
            rbf=self.radial_basis(distances),
            num_nodes=n,
            sparse=self.backend == "sparse",
        )

    def node_features(self, graph: AtomicGraph, species: torch.Tensor) -> torch.Tensor:
        """Invariant per-atom features (N, F) after the embedding, interactions and output norm."""
        edges = self.edges(graph)
        x = self.embedding(species, edges)
        for layer in self.layers:
            x = layer(x, edges)
        scalar, antisym, sym = decompose(x)
        invariants = torch.cat([3 * scalar**2, squared_norm(antisym), squared_norm(sym)], dim=-1)
        return nn.functional.silu(self.out_linear(self.out_norm(invariants)))

    def node_energies(self, graph: AtomicGraph) -> torch.Tensor:
        """E0(z_i) + scale * e_i + shift for every atom, (N,)."""
        dtype = next(self.parameters()).dtype
        if graph.positions.dtype != dtype:
            raise TypeError(
                f"graph positions are {graph.positions.dtype} but the model is {dtype}; "
                f"convert one of them (graph.to(dtype=...) or model.to(...))"
            )
        species = self.species(graph.numbers)
        interaction = self.head(self.node_features(graph, species))[:, 0]
        return self.atomic_energies[species] + self.scale * interaction + self.shift

    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        training: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energy (B,) and node_energy (N,); forces (N, 3) = -dE/dr; stress and virial (B, 3, 3)
        (ASE sign convention, zero without a periodic cell). ``training`` keeps the graph of the
        derivatives so a loss on forces can be backpropagated. ``graph`` may also be a PyG batch
        (see :mod:`equitensor.interop.pyg`)."""
        graph = as_atomic_graph(graph)
        if not (compute_forces or compute_stress):
            node_energy = self.node_energies(graph)
            return {"energy": graph.structure_sum(node_energy), "node_energy": node_energy}
        with torch.enable_grad():
            strained_graph, positions, strain = strained(graph)
            node_energy = self.node_energies(strained_graph)
            energy = graph.structure_sum(node_energy)
            derivatives = energy_derivatives(
                energy, graph, positions, strain if compute_stress else None, training=training
            )
        out = {"energy": energy, "node_energy": node_energy}
        if compute_forces:
            out["forces"] = derivatives["forces"]
        if compute_stress:
            out["stress"] = derivatives["stress"]
            out["virial"] = derivatives["virial"]
        return out
