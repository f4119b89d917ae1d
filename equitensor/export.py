"""Export a model as one compiled file (``torch.export`` + AOTInductor, ``.pt2``) that plain torch
loads, in Python (``torch._inductor.aoti_load_package``) or C++ (``AOTIModelPackageLoader``),
without equitensor: the calculator, the LAMMPS pair style and anyone's own MD code run it.

The file computes one structure, or one LAMMPS subdomain with its ghost atoms:

=================  ===========  ===========================================================
input              shape        meaning
=================  ===========  ===========================================================
``positions``      (N, 3)       Å, the model's dtype
``numbers``        (N,) int64   atomic numbers (every one among the metadata's elements)
``edge_index``     (2, E) int64 sender, receiver of every ordered pair within the cutoff
``unit_shifts``    (E, 3)       the sender image's cell translation (integers, model dtype)
``cell``           (3, 3)       rows are lattice vectors (zeros without a cell)
``energy_mask``    (N,)         1 where the atom's energy counts, 0 for ghost atoms
=================  ===========  ===========================================================

and returns ``energy`` (1,) = the masked sum of ``node_energy`` (N,), ``forces`` (N, 3) =
-d energy / d positions (on every atom, ghosts included) and ``virial`` (3, 3) = -d energy /
d strain (stress = -virial / volume). N and E are dynamic. The forces' autograd is unfolded into
the graph by ``make_fx`` before ``torch.export`` (nequip's approach): the file holds no autograd.
Input checks (unknown elements, zero-length edges) cannot run inside the compiled graph: the
caller validates (``ExportedModel`` does, as does the LAMMPS pair style).

Backends. By default MACE and TensorNet are exported with the ``sparse`` backend: its compiled
CPU kernel goes into the file as calls of the custom operator ``equitensor::sparse_contract``
(with its derivatives unfolded into the same calls), which runs 4-9x faster than the portable
file (benchmarks/results/md_throughput_exported.md) and keeps no per-edge intermediates, so
large LAMMPS subdomains fit in memory. The operator lives in a small
torch extension library: equitensor loads it (``ExportedModel`` does), the LAMMPS plugin ships
it (``lammps/build/libequitensor_ops.so``), and plain torch loads it with
``torch.ops.load_library(equitensor.kernels.sparse_contract.load())``. ``portable=True``
(``--portable``) exports plain torch operations only (``cg``; TensorNet's ``torch``), for a file
that torch alone runs anywhere, CUDA included. Other exact backends (``auto``, ``so2``, ``cuda``)
are exported as one of those (same weights, same numbers, checked) and the exporter says so;
approximate ones are refused. The metadata (strings) records the model class, cutoff, elements,
dtype, message-passing steps, ghost cutoff, backends, the custom operators the file calls,
equitensor version and a SHA-256 of the weights.

Example (skipped in the doctests: compiling takes ~30 s; tests/test_export.py runs it)::

    >>> import os, tempfile
    >>> from ase.build import molecule
    >>> from equitensor.models import TensorNet
    >>> model = TensorNet(hidden_channels=4, num_layers=1, num_rbf=4, cutoff=3.0, atomic_numbers=[1, 8])
    >>> with tempfile.TemporaryDirectory() as folder:  # doctest: +SKIP
    ...     metadata = export_model(model, os.path.join(folder, "water.pt2"), dtype="float64")
    ...     exported = load_exported(os.path.join(folder, "water.pt2"))
    >>> metadata["message_passing_steps"], metadata["ghost_cutoff"]  # doctest: +SKIP
    ('2', '6.0')
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from torch import nn

import equitensor
from equitensor.devices import capturing_graph
from equitensor.errors import InputError
from equitensor.graph import AtomicGraph, energy_derivatives, strained
from equitensor.models.elements import element_table
from equitensor.serialization import atomic_write, content_digest, parameter_dtype
from equitensor.tp.backends.capabilities import backend_capabilities, list_backends

log = logging.getLogger(__name__)


def backend_names() -> set[str]:
    return {record.name for record in list_backends()}


INPUTS = ("positions", "numbers", "edge_index", "unit_shifts", "cell", "energy_mask")
OUTPUTS = ("energy", "node_energy", "forces", "virial")
DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


class ExportError(InputError):
    """The model cannot be exported (what torch cannot trace, a model without a ghost cutoff)."""


class EnergyForcesVirial(nn.Module):
    """The exported interface (see the module docstring) around an equitensor model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        positions: torch.Tensor,
        numbers: torch.Tensor,
        edge_index: torch.Tensor,
        unit_shifts: torch.Tensor,
        cell: torch.Tensor,
        energy_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        graph = AtomicGraph(
            positions=positions,
            numbers=numbers,
            edge_index=edge_index,
            unit_shifts=unit_shifts,
            cell=cell[None],
            pbc=(cell.abs().sum(-1) > 0)[None],
            batch=torch.zeros_like(numbers),
            num_graphs=1,
        )
        with torch.enable_grad():
            work, leaf_positions, strain = strained(graph)
            node_energy = self.model(work, compute_forces=False)["node_energy"]
            energy = (node_energy * energy_mask).sum()[None]
            derivatives = energy_derivatives(energy, graph, leaf_positions, strain)
        return energy.detach(), node_energy.detach(), derivatives["forces"], derivatives["virial"][0]


#: backend settings made of plain torch operations: exported as they are, everywhere
PORTABLE_BACKENDS = ("cg", "torch")
#: backend settings whose compiled kernels go into the file as custom-operator calls (CPU only)
KERNEL_BACKENDS = ("sparse",)


def exportable_backends(
    model: nn.Module, portable: bool = False, device: str | torch.device = "cpu"
) -> dict[str, str]:
    """The backend settings of ``model.config`` to export with.

    Exact settings become the model's ``kernel_backends`` (the sparse CPU kernels, the default
    on CPU) or, with ``portable`` or on another device, its ``portable_backends`` (plain torch);
    both compute the same numbers from the same weights. Approximate backends are refused.

    >>> from equitensor.models import MACE
    >>> model = MACE([1, 8], r_max=3.0, num_channels=4, backend="cg", product_backend="cg")
    >>> exportable_backends(model)
    {'backend': 'sparse', 'product_backend': 'sparse'}
    >>> exportable_backends(model, portable=True)
    {'backend': 'cg', 'product_backend': 'cg'}
    """
    config = getattr(model, "config", {}) or {}
    portable = portable or torch.device(device).type != "cpu"
    if portable:
        targets = dict(getattr(model, "portable_backends", {}))
    else:
        targets = {**getattr(model, "portable_backends", {}), **getattr(model, "kernel_backends", {})}
    settings = {}
    for key, value in config.items():
        if not (key.endswith("backend") and isinstance(value, str)):
            continue
        exact = value in ("auto", *PORTABLE_BACKENDS, *KERNEL_BACKENDS) or (
            value in backend_names() and backend_capabilities(value).exact
        )
        if exact and key in targets:
            settings[key] = targets[key]
        elif value in PORTABLE_BACKENDS + (() if portable else KERNEL_BACKENDS):
            settings[key] = value
        else:
            raise ExportError(
                f"{type(model).__name__} with {key}={value!r} cannot be exported: the exported backends "
                f"are {', '.join(PORTABLE_BACKENDS + KERNEL_BACKENDS)} (exact backends are exported as "
                f"{targets or 'none'})"
            )
    return settings


def custom_operators(program: torch.export.ExportedProgram) -> list[str]:
    """The operators outside torch's own (``aten``, ``prims``) that ``program`` calls."""
    names = set()
    for node in program.graph.nodes:
        namespace = getattr(node.target, "namespace", None)
        if node.op == "call_function" and namespace not in (None, "aten", "prims"):
            names.add(node.target.name().split(".")[0])
    return sorted(names)


def package_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a ``.pt2`` package, read from the archive without loading its code
    (to load the custom operators it calls first); empty if it has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith("wrapper_metadata.json"):
                    return json.loads(archive.read(name))
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        raise InputError(f"{path} is not a readable .pt2 package: {error}") from error
    return {}


def load_custom_operators(names: list[str]) -> None:
    """Register the equitensor operators in ``names`` (compiling the library on first use)."""
    from equitensor.kernels.sparse_contract import load

    unknown = [name for name in names if name != "equitensor::sparse_contract"]
    if unknown:
        raise InputError(f"the file calls operators this equitensor does not provide: {unknown}")
    if names:
        load()


def example_structure(model: nn.Module, atoms_per_side: int = 2, seed: int = 0) -> Atoms:
    """A small periodic structure of the model's elements with every atom within its cutoff of
    several others: a rattled simple-cubic lattice, spacing 0.55 r_max (for tracing and checks)."""
    from equitensor.calculator import known_elements, model_cutoff

    elements = known_elements(model) or [1]
    spacing = 0.55 * model_cutoff(model)
    grid = np.stack(np.meshgrid(*[np.arange(atoms_per_side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(seed)
    positions = (grid + rng.uniform(-0.1, 0.1, grid.shape)) * spacing
    numbers = [elements[k % len(elements)] for k in range(len(grid))]
    return Atoms(numbers=numbers, positions=positions, cell=np.eye(3) * spacing * atoms_per_side, pbc=True)


def interface_inputs(graph: AtomicGraph, energy_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """The exported file's inputs for a one-structure ``graph`` (every atom's energy counts by default)."""
    if graph.num_graphs != 1:
        raise InputError(
            f"an exported model computes one structure at a time, got a batch of {graph.num_graphs}"
        )
    if energy_mask is None:
        energy_mask = torch.ones_like(graph.positions[:, 0])
    return (
        graph.positions.contiguous(),
        graph.numbers.to(torch.int64).contiguous(),
        graph.edge_index.to(torch.int64).contiguous(),
        graph.unit_shifts.contiguous(),
        graph.cell[0].contiguous(),
        energy_mask.contiguous(),
    )


def _check_close(got, expected, dtype: torch.dtype, what: str) -> None:
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    for name, a, b in zip(OUTPUTS, got, expected):
        scale = max(1.0, float(b.abs().max()) if b.numel() else 1.0)
        error = float((a - b).abs().max()) if b.numel() else 0.0
        if error > tolerance * scale:
            raise RuntimeError(
                f"{what}: {name} differs from the eager model by {error:.3g} (tolerance {tolerance:g}); "
                "this is a bug of equitensor's export, please report it"
            )


def export_model(
    model: nn.Module | str | os.PathLike,
    path: str | os.PathLike,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    portable: bool = False,
) -> dict[str, str]:
    """Write ``model`` (or the model file at that path) to ``path`` as a ``.pt2`` AOTInductor
    package with dynamic numbers of atoms and edges; returns its metadata.

    The exported program and then the compiled file are checked against the eager model on two
    structures of different sizes (1e-10 relative in float64, 1e-5 in float32): a mismatch
    raises RuntimeError and nothing is left at ``path``. What cannot be exported raises
    :class:`ExportError`.
    """
    from equitensor.calculator import known_elements, model_cutoff, prepare_model, switch_backend
    from equitensor.datasets.atoms_to_graph import graph_from_atoms

    path = Path(path)
    if path.suffix != ".pt2":
        raise InputError(f"the exported file's name must end in .pt2, got {path}")
    if isinstance(model, (str, os.PathLike)):
        model = equitensor.load_model(model, map_location="cpu")
    model = copy.deepcopy(model)  # the caller's model keeps its dtype, device and mode
    steps = getattr(model, "message_passing_steps", None)
    if steps is None:
        raise ExportError(
            f"{type(model).__name__} has no `message_passing_steps`: its ghost cutoff is unknown"
        )
    chosen = exportable_backends(model, portable, device)
    changed = {k: v for k, v in chosen.items() if model.config.get(k) != v}
    if changed:
        log.warning(
            "exporting with %s instead of %s (same weights, same numbers, checked below; %s)",
            changed,
            {k: model.config[k] for k in changed},
            "plain torch operations only, as asked"
            if portable
            else "the sparse CPU kernels, the fastest; --portable for plain torch operations only",
        )
        try:
            model = switch_backend(model, chosen)
        except RuntimeError as error:  # other parameters (a Gaunt product basis), no compiler
            hint = "" if portable else " (--portable exports plain torch operations instead)"
            raise ExportError(
                f"{type(model).__name__} cannot be exported with {chosen}: {error}{hint}"
            ) from error
    model = prepare_model(model, device, dtype)
    dtype = parameter_dtype(model)
    interface = EnergyForcesVirial(model)
    cutoff = model_cutoff(model)
    graphs = [
        graph_from_atoms(atoms, cutoff, dtype).to(device)
        for atoms in (example_structure(model, 2), example_structure(model, 3, seed=1))
    ]
    expected = [interface(*interface_inputs(g)) for g in graphs]

    duck_shape = torch.fx.experimental._config.use_duck_shape
    torch.fx.experimental._config.use_duck_shape = False  # no atoms == edges specialisation
    try:
        with capturing_graph():
            unfolded = torch.fx.experimental.proxy_tensor.make_fx(
                interface,
                tracing_mode="symbolic",
                _allow_non_fake_inputs=True,
                _error_on_data_dependent_ops=True,
            )(*interface_inputs(graphs[0]))
        atoms, edges = torch.export.Dim("atoms", min=1), torch.export.Dim("edges", min=1)
        program = torch.export.export(
            unfolded,
            interface_inputs(graphs[0]),
            dynamic_shapes=({0: atoms}, {0: atoms}, {1: edges}, {0: edges}, None, {0: atoms}),
            strict=False,
        )
    except Exception as error:  # what torch refuses to trace, with the model named
        name = type(model).__name__
        raise ExportError(f"torch.export cannot trace {name} with {chosen}: {error}") from error
    finally:
        torch.fx.experimental._config.use_duck_shape = duck_shape
    for graph, reference in zip(graphs, expected):
        _check_close(program.module()(*interface_inputs(graph)), reference, dtype, "the exported program")

    metadata = {
        "format": "equitensor-pt2-1",
        "model": type(model).__name__,
        "cutoff": repr(cutoff),
        "atomic_numbers": " ".join(str(z) for z in known_elements(model) or []),
        "dtype": DTYPE_NAMES[dtype],
        "device": torch.device(device).type,
        "message_passing_steps": str(steps),
        "ghost_cutoff": repr(steps * cutoff),
        "backends": " ".join(f"{k}={v}" for k, v in chosen.items()),
        "custom_ops": " ".join(custom_operators(program)),
        "inputs": " ".join(INPUTS),
        "outputs": " ".join(OUTPUTS),
        "equitensor_version": equitensor.__version__,
        "torch_version": torch.__version__,
        "weights_sha256": content_digest(model.state_dict()),
    }
    with atomic_write(path) as handle:
        torch._inductor.aoti_compile_and_package(
            program, package_path=handle, inductor_configs={"aot_inductor.metadata": metadata}
        )
    compiled = torch._inductor.aoti_load_package(str(path))
    for graph, reference in zip(graphs, expected):
        try:
            _check_close(compiled(*interface_inputs(graph)), reference, dtype, f"the compiled file {path}")
        except RuntimeError:
            path.unlink(missing_ok=True)
            raise
    return metadata


class ExportedModel(nn.Module):
    """A ``.pt2`` file written by :func:`export_model`, called like an equitensor model
    (``model(graph, compute_forces=True, compute_stress=False)`` -> energy, node_energy, forces,
    virial/stress) for one structure at a time; unknown elements are refused before the call.
    Loading needs only torch (and the library of the custom operators the file calls, which
    this class loads); it adds the checks and the model-like interface.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = str(path)
        load_custom_operators(package_metadata(path).get("custom_ops", "").split())
        try:
            self.compiled = torch._inductor.aoti_load_package(self.path)
        except Exception as error:
            raise InputError(f"{path} is not a loadable .pt2 package: {error}") from error
        self.metadata: Mapping[str, str] = self.compiled.get_metadata()
        if self.metadata.get("format") != "equitensor-pt2-1":
            raise InputError(f"{path} was not written by `equitensor export` (no equitensor metadata)")
        self.r_max = float(self.metadata["cutoff"])
        self.dtype = {name: dtype for dtype, name in DTYPE_NAMES.items()}[self.metadata["dtype"]]
        self.device = torch.device(self.metadata["device"])
        self.atomic_numbers = [int(z) for z in self.metadata["atomic_numbers"].split()]
        self.register_buffer("element_index", element_table(self.atomic_numbers), persistent=False)

    def forward(
        self, graph: AtomicGraph, compute_forces: bool = True, compute_stress: bool = False
    ) -> dict[str, torch.Tensor]:
        from equitensor.calculator import check_elements

        if graph.positions.dtype != self.dtype:
            raise InputError(
                f"{self.path} computes in {self.dtype}, got positions in {graph.positions.dtype}"
            )
        check_elements(graph.numbers.cpu().numpy(), self.atomic_numbers, f"exported model {self.path}")
        energy, node_energy, forces, virial = self.compiled(*interface_inputs(graph))
        out = {"energy": energy, "node_energy": node_energy}
        if compute_forces:
            out["forces"] = forces
        if compute_stress:
            volume = torch.linalg.det(graph.cell[0]).abs()
            out["virial"] = virial[None]
            out["stress"] = -virial[None] / volume if volume > 0 else torch.zeros_like(virial[None])
        return out


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "export",
        help="compile a model into one .pt2 file for plain torch, C++ and LAMMPS",
        description=(
            "Export an equitensor model file (or training checkpoint) as an AOTInductor package "
            "(.pt2) computing energy, per-atom energies, forces and virial for any number of atoms "
            "and edges; plain torch loads it in Python and C++ (see equitensor.export). The file is "
            "checked against the eager model before it is kept."
        ),
    )
    parser.add_argument("model", help="the equitensor model file or checkpoint")
    parser.add_argument("output", help="the .pt2 file to write")
    parser.add_argument("--dtype", choices=sorted(DTYPE_NAMES.values()), help="default: the model's")
    parser.add_argument("--device", default="cpu", help="the device it will run on (default cpu)")
    parser.add_argument(
        "--portable",
        action="store_true",
        help="plain torch operations only (cg): a file torch alone runs, slower than the default "
        "sparse CPU kernels (custom operators, shipped with equitensor and the LAMMPS plugin)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metadata = export_model(
        args.model, args.output, dtype=args.dtype, device=args.device, portable=args.portable
    )
    listed = ", ".join(f"{k}={v}" for k, v in metadata.items() if k not in ("inputs", "outputs"))
    print(f"wrote {args.output}: {listed}")
    return 0


def load_exported(path: str | os.PathLike) -> ExportedModel:
    """The ``.pt2`` file at ``path`` as a model-like module (see :class:`ExportedModel`)."""
    return ExportedModel(path)


__all__ = [
    "EnergyForcesVirial",
    "ExportError",
    "ExportedModel",
    "export_model",
    "exportable_backends",
    "load_exported",
    "package_metadata",
]
