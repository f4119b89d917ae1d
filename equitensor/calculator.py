"""ASE calculator for equitensor models, and batched evaluation of many structures.

``EquitensorCalculator(model)`` gives energy, free_energy (= energy), forces, per-atom energies
and, for periodic cells, the stress (Voigt order xx yy zz yz xz xy, ASE's sign: positive is
tensile). The neighbour list is a Verlet list (:mod:`equitensor.verlet_list`): candidates within
``cutoff + skin`` found by vesin, reused while no atom moved more than ``skin / 2`` and the cell
is unchanged, filtered to ``cutoff`` at every step so the model sees exactly the pairs of a fresh
list.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.data import chemical_symbols
from ase.stress import full_3x3_to_voigt_6_stress
from torch import nn

from equitensor.datasets.atoms_to_graph import graph_from_pairs
from equitensor.errors import InputError
from equitensor.graph import batch_graphs
from equitensor.serialization import load_model, parameter_dtype
from equitensor.tp.backends.auto import resolve_backends
from equitensor.verlet_list import VerletList, canonical_pairs

__all__ = ["EquitensorCalculator", "evaluate_many", "model_cutoff", "prepare_model"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def model_cutoff(model: nn.Module) -> float:
    """The radius within which the model needs every neighbour (every equitensor model's ``r_max``).

    >>> from equitensor.models import TensorNet
    >>> model_cutoff(TensorNet(hidden_channels=8, num_rbf=8, cutoff=3.0, atomic_numbers=[29]))
    3.0
    """
    cutoff = getattr(model, "r_max", None)
    if cutoff is None:
        raise TypeError(f"{type(model).__name__} has no `r_max`; cannot build its graph")
    return float(cutoff)


def model_device(model: nn.Module) -> torch.device:
    exported = getattr(model, "device", None)
    return exported if isinstance(exported, torch.device) else next(model.parameters()).device


def known_elements(model: nn.Module) -> list[int] | None:
    """Atomic numbers the model has weights for, from its ``element_index`` table (None if it has none)."""
    table = getattr(model, "element_index", None)
    if table is None:
        return None
    return torch.nonzero(table >= 0).flatten().tolist()


def check_elements(numbers: np.ndarray, known: list[int] | None, model_name: str) -> None:
    """ValueError naming every element of ``numbers`` outside ``known`` (None: no table to check)."""
    if known is None:
        return
    unknown = sorted(set(np.asarray(numbers).tolist()) - set(known))
    if unknown:
        names = ", ".join(
            f"{chemical_symbols[z]} (Z={z})" if 0 < z < len(chemical_symbols) else f"Z={z}" for z in unknown
        )
        known_names = ", ".join(chemical_symbols[z] for z in known) if len(known) <= 20 else f"{len(known)}"
        raise InputError(
            f"the structure contains {names}, which this {model_name} was not built for; "
            f"it knows {known_names}"
        )


def switch_backend(model: nn.Module, backend: str | Mapping[str, str]) -> nn.Module:
    """The same model (same weights) with other tensor-product backends.

    ``backend`` is the edge-convolution backend (``config["backend"]``) or a mapping of backend
    settings of the config, e.g. ``{"backend": "so2", "product_backend": "cg"}``. The model is
    rebuilt from its config and the weights are loaded strictly, so a backend whose parameters
    differ is an error, never a silent partial copy.
    """
    settings = {"backend": backend} if isinstance(backend, str) else dict(backend)
    config = getattr(model, "config", None)
    supported = sorted(k for k in (config or {}) if k.endswith("backend"))
    if not supported:
        raise InputError(
            f"{type(model).__name__} has no tensor-product backend to switch (asked for {settings})"
        )
    unsupported = sorted(set(settings) - set(supported))
    if unsupported:
        raise InputError(
            f"{type(model).__name__} has no backend setting {unsupported}; "
            f"its backend settings are {supported}"
        )
    rebuilt = type(model)(**{**config, **settings})
    # assign: every tensor keeps its own dtype (a float32 model's float64 E0s are not rounded)
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rebuilt.load_state_dict(state, strict=True, assign=True)
    return rebuilt.to(device=model_device(model)).train(model.training)


def prepare_model(
    model: nn.Module | str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    backend: str | Mapping[str, str] | None = None,
) -> nn.Module:
    """Load (if a path), switch backend, convert dtype, move to ``device``; eval mode, weights frozen.

    A module passed in is converted in place (like ``Module.to``), except a backend switch, which
    builds a new module.

    >>> from equitensor.models import TensorNet
    >>> model = prepare_model(TensorNet(hidden_channels=8, num_rbf=8, atomic_numbers=[29]), dtype="float64")
    >>> model.training, next(model.parameters()).dtype, any(p.requires_grad for p in model.parameters())
    (False, torch.float64, False)
    """
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".pt2"):
        return prepare_exported(model, device, dtype, backend)
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, map_location="cpu")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an equitensor model or a path to one, got {type(model).__name__}")
    if backend is not None:
        model = switch_backend(model, backend)
    if dtype is not None:
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise InputError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
            dtype = DTYPES[dtype]
        if dtype not in DTYPES.values():
            raise InputError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        model.to(dtype=dtype)
    model.to(device=device)
    resolve_backends(model)  # backend='auto' chooses for this device and dtype (logged)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def prepare_exported(
    path: str | os.PathLike,
    device: str | torch.device,
    dtype: str | torch.dtype | None,
    backend: str | Mapping[str, str] | None,
) -> nn.Module:
    """A ``.pt2`` file of ``equitensor export`` (see :mod:`equitensor.export`); its dtype, device
    and backends were fixed when it was compiled, so a request for others is an error."""
    from equitensor.export import load_exported

    exported = load_exported(path)
    if backend is not None:
        raise InputError(
            f"{path} is compiled with {exported.metadata['backends']}; its backend cannot be switched"
        )
    if dtype is not None and DTYPES.get(dtype, dtype) != exported.dtype:
        raise InputError(
            f"{path} computes in {exported.metadata['dtype']}, not {dtype}: export the model again with "
            f"--dtype {dtype if isinstance(dtype, str) else str(dtype).removeprefix('torch.')}"
        )
    if torch.device(device).type != exported.device.type:
        raise InputError(
            f"{path} is compiled for {exported.device.type}, not {device}: export it again for {device}"
        )
    return exported


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the model computes in (an exported file's, or its parameters')."""
    return getattr(model, "dtype", None) or parameter_dtype(model)


def has_cell(atoms: Atoms) -> bool:
    """Periodic in some direction with a cell of non-zero volume: the stress is defined."""
    return bool(atoms.pbc.any()) and abs(float(np.linalg.det(atoms.cell.array))) > 0


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


class EquitensorCalculator(Calculator):
    """ASE calculator of an equitensor model (MACE, TensorNet, ...).

    Args:
        model: a loaded model or the path of a file written by ``equitensor.save_model`` (or a
            training checkpoint), or a ``.pt2`` file of ``equitensor export`` (its dtype and
            device are those it was compiled for).
        device: where the model runs.
        dtype: "float32"/"float64" (or a torch dtype) converts the model; None keeps its dtype.
        backend: switch the model's tensor-product backend (see :func:`switch_backend`).
        skin: Verlet skin in Å; pairs are searched within cutoff + skin and the list is rebuilt
            once an atom moved more than skin / 2 or the cell changed. 0 rebuilds every step.

    Example: a tiny (untrained) TensorNet on a cubic Cu cell, where symmetry makes every force zero.

    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from equitensor.models import TensorNet
    >>> atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    >>> model = TensorNet(hidden_channels=8, num_rbf=8, cutoff=3.0, atomic_numbers=[29])
    >>> atoms.calc = EquitensorCalculator(model, dtype="float64")
    >>> atoms.get_stress().shape, atoms.get_potential_energies().shape, np.allclose(atoms.get_forces(), 0)
    ((6,), (4,), True)
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model: nn.Module | str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        backend: str | Mapping[str, str] | None = None,
        skin: float = 0.5,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.model = prepare_model(model, device, dtype, backend)
        self.device = torch.device(device)
        self.dtype = model_dtype(self.model)
        self.cutoff = model_cutoff(self.model)
        self.neighbours = VerletList(self.cutoff, skin)
        self._known_elements = known_elements(self.model)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = all_changes,
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if len(atoms) == 0:
            raise InputError("the structure has no atoms: there is nothing to compute an energy for")
        periodic = has_cell(atoms)
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                "stress needs a periodic cell of non-zero volume; this structure has "
                f"pbc={atoms.pbc.tolist()} and cell volume {atoms.cell.volume:.6g} Å^3"
            )
        check_elements(atoms.numbers, self._known_elements, type(self.model).__name__)
        graph = graph_from_pairs(atoms, self.neighbours.pairs(atoms), self.dtype, self.device)
        out = self.model(graph, compute_forces=True, compute_stress=periodic)
        energy = float(to_numpy(out["energy"])[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": to_numpy(out["forces"]),
            "energies": to_numpy(out["node_energy"]),
        }
        if periodic:
            self.results["stress"] = full_3x3_to_voigt_6_stress(to_numpy(out["stress"])[0])

    def batch_evaluate(self, structures: Sequence[Atoms], batch_size: int = 16) -> list[dict]:
        """Energies, forces, per-atom energies and stresses of many structures (see :func:`evaluate_many`)."""
        return evaluate_many(self.model, structures, batch_size=batch_size)


def evaluate_many(
    model: nn.Module | str | os.PathLike,
    structures: Sequence[Atoms],
    batch_size: int = 16,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> list[dict]:
    """Evaluate structures ``batch_size`` at a time, for screening.

    Returns one dict per structure with "energy", "free_energy" (floats), "forces" (N, 3),
    "energies" (N,) and, for periodic cells, "stress" (Voigt 6, ASE sign). A path or a model
    given with ``device``/``dtype`` is prepared as by the calculator.

    >>> from ase.build import bulk, molecule
    >>> from equitensor.models import TensorNet
    >>> model = TensorNet(hidden_channels=8, num_rbf=8, cutoff=3.0, atomic_numbers=[1, 8, 29])
    >>> results = evaluate_many(model, [molecule("H2O"), bulk("Cu", "fcc", a=3.6)], dtype="float64")
    >>> sorted(results[1])  # the molecule's dict has no "stress"
    ['energies', 'energy', 'forces', 'free_energy', 'stress']
    >>> "stress" in results[0], results[0]["forces"].shape, results[1]["stress"].shape
    (False, (3, 3), (6,))
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(model, (str, os.PathLike)) or device is not None or dtype is not None:
        model = prepare_model(model, "cpu" if device is None else device, dtype)
    dtype, device, cutoff = model_dtype(model), model_device(model), model_cutoff(model)
    known = known_elements(model)
    results = []
    for start in range(0, len(structures), batch_size):
        chunk = structures[start : start + batch_size]
        for atoms in chunk:
            check_elements(atoms.numbers, known, type(model).__name__)
        graphs = [graph_from_pairs(a, canonical_pairs(a, cutoff), dtype, device) for a in chunk]
        periodic = [has_cell(a) for a in chunk]
        out = model(batch_graphs(graphs), compute_forces=True, compute_stress=any(periodic))
        energies, forces, node_energies = (to_numpy(out[k]) for k in ("energy", "forces", "node_energy"))
        stresses = to_numpy(out["stress"]) if any(periodic) else None
        offsets = np.cumsum([0] + [len(a) for a in chunk])
        for k in range(len(chunk)):
            atoms_slice = slice(offsets[k], offsets[k + 1])
            result = {
                "energy": float(energies[k]),
                "free_energy": float(energies[k]),
                "forces": forces[atoms_slice],
                "energies": node_energies[atoms_slice],
            }
            if periodic[k]:
                result["stress"] = full_3x3_to_voigt_6_stress(stresses[k])
            results.append(result)
    return results
