"""``equitensor export``: a ``.pt2`` file that plain torch runs, equal to the eager model on
structures of several sizes (dynamic shapes), with the calculator on top; and the ghost-atom
interface that LAMMPS' domain decomposition relies on, checked in Python."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

from equitensor.calculator import EquitensorCalculator
from equitensor.cli import main as cli_main
from equitensor.datasets.atoms_to_graph import graph_from_atoms
from equitensor.errors import InputError
from equitensor.export import (
    EnergyForcesVirial,
    ExportError,
    export_model,
    exportable_backends,
    interface_inputs,
    load_exported,
    package_metadata,
)
from equitensor.graph import AtomicGraph
from equitensor.kernels import sparse_contract
from equitensor.models import MACE, TensorNet
from equitensor.serialization import save_model

pytestmark = pytest.mark.usefixtures("one_thread")
CUTOFF = 4.0
MODELS = {
    "mace": lambda: MACE(
        [28, 29], r_max=CUTOFF, num_channels=8, max_L=1, max_ell=2, radial_MLP=[16], backend="sparse"
    ),
    "tensornet": lambda: TensorNet(
        hidden_channels=8, num_layers=1, num_rbf=6, cutoff=CUTOFF, atomic_numbers=[28, 29]
    ),
}


def structures() -> list[Atoms]:
    """A molecule, an isolated atom (no edges) and periodic cells of two sizes."""
    mol = molecule("CH3CH2OH")
    mol.numbers[:] = [28 if z == 8 else 29 for z in mol.numbers]
    small = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    large = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 2, 2))
    for k, atoms in enumerate((small, large)):
        atoms.numbers[::3] = 28
        atoms.rattle(0.05, seed=k)
    return [small, mol, Atoms("Ni", positions=[[0, 0, 0]]), large]


def trained_like(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MODELS[name]()
    with torch.no_grad():  # non-zero E0s, scale and shift, as after training
        model.atomic_energies.copy_(torch.tensor([-1.5, -2.25]))
        model.shift.fill_(0.125)
    return model


@pytest.fixture(
    scope="module",
    params=[
        ("mace", "float64", False),
        ("tensornet", "float64", False),
        ("mace", "float32", False),
        ("mace", "float64", True),
    ],
    ids=["mace-float64", "tensornet-float64", "mace-float32", "mace-float64-portable"],
)
def exported(request, tmp_path_factory):
    name, dtype, portable = request.param
    model = trained_like(name)
    path = tmp_path_factory.mktemp("export") / f"{name}_{dtype}_{portable}.pt2"
    metadata = export_model(model, path, dtype=dtype, portable=portable)
    return model, path, metadata, dtype, portable


def test_exported_file_equals_eager_model_for_any_size(exported):
    model, path, metadata, dtype, portable = exported
    tolerance = 1e-10 if dtype == "float64" else 1e-5
    for atoms in structures():
        eager, compiled = atoms.copy(), atoms.copy()
        eager.calc = EquitensorCalculator(model, dtype=dtype)
        compiled.calc = EquitensorCalculator(path)
        np.testing.assert_allclose(
            compiled.get_potential_energy(), eager.get_potential_energy(), rtol=tolerance, atol=tolerance
        )
        np.testing.assert_allclose(compiled.get_forces(), eager.get_forces(), rtol=tolerance, atol=tolerance)
        np.testing.assert_allclose(
            compiled.get_potential_energies(), eager.get_potential_energies(), rtol=tolerance, atol=tolerance
        )
        if atoms.pbc.any():
            np.testing.assert_allclose(
                compiled.get_stress(), eager.get_stress(), rtol=tolerance, atol=tolerance
            )


def test_metadata_records_what_a_md_engine_needs(exported):
    model, path, metadata, dtype, portable = exported
    steps = len(model.interactions) if isinstance(model, MACE) else len(model.layers) + 1
    assert metadata["cutoff"] == "4.0" and metadata["atomic_numbers"] == "28 29"
    assert metadata["dtype"] == dtype and metadata["message_passing_steps"] == str(steps)
    assert float(metadata["ghost_cutoff"]) == steps * CUTOFF
    if portable:  # plain torch operations
        expected, ops = model.portable_backends, ""
    else:  # the default: the sparse kernels
        expected, ops = model.kernel_backends, "equitensor::sparse_contract"
    assert metadata["backends"] == " ".join(f"{k}={v}" for k, v in expected.items())
    assert metadata["custom_ops"] == ops
    assert package_metadata(path)["custom_ops"] == metadata["custom_ops"]  # readable before loading
    assert load_exported(path).metadata.items() >= metadata.items()  # AOTI adds its own keys


def test_plain_torch_loads_it_without_equitensor(exported, tmp_path):
    """A portable file needs torch alone; one with the sparse kernels also their operator
    library (a torch extension, no equitensor Python)."""
    model, path, metadata, dtype, portable = exported
    graph = graph_from_atoms(structures()[0], CUTOFF, getattr(torch, dtype))
    inputs = interface_inputs(graph)
    torch.save(inputs, tmp_path / "inputs.pt")
    library = sparse_contract.load() if metadata["custom_ops"] else None
    script = (
        "import sys, json, torch\n"
        "sys.modules['equitensor'] = None  # importing equitensor would fail\n"
        + (f"torch.ops.load_library({library!r})\n" if library else "")
        + f"model = torch._inductor.aoti_load_package({str(path)!r})\n"
        f"energy, node_energy, forces, virial = model(*torch.load({str(tmp_path / 'inputs.pt')!r}))\n"
        "print(json.dumps([energy.item(), forces.tolist()]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    energy, forces = json.loads(result.stdout.strip().splitlines()[-1])
    reference = EnergyForcesVirial(model.to(getattr(torch, dtype)).eval())(*inputs)
    tolerance = 1e-10 if dtype == "float64" else 1e-5
    assert energy == pytest.approx(float(reference[0]), rel=tolerance, abs=tolerance)
    np.testing.assert_allclose(forces, reference[2].numpy(), rtol=tolerance, atol=tolerance)


def test_exported_file_refuses_what_it_cannot_compute(exported):
    model, path, metadata, dtype, portable = exported
    other = "float32" if dtype == "float64" else "float64"
    with pytest.raises(InputError, match=f"computes in {dtype}, not {other}: export the model again"):
        EquitensorCalculator(path, dtype=other)
    with pytest.raises(InputError, match="its backend cannot be switched"):
        EquitensorCalculator(path, backend="cg")
    atoms = molecule("H2O")
    atoms.calc = EquitensorCalculator(path)
    with pytest.raises(InputError, match=r"contains H \(Z=1\), O \(Z=8\), which this"):
        atoms.get_potential_energy()


def test_cli_export_writes_a_file_the_calculator_runs(tmp_path, capsys):
    model = MODELS["tensornet"]()
    save_model(model, tmp_path / "model.pt")
    command = ["export", str(tmp_path / "model.pt"), str(tmp_path / "model.pt2"), "--dtype", "float64"]
    assert cli_main([*command, "--portable"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "model.pt2").exists()
    assert package_metadata(tmp_path / "model.pt2")["backends"] == "backend=torch"
    atoms = structures()[0]
    atoms.calc = EquitensorCalculator(tmp_path / "model.pt2")
    reference = atoms.copy()
    reference.calc = EquitensorCalculator(model, dtype="float64")
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_what_cannot_be_exported_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(InputError, match=r"must end in \.pt2"):
        export_model(MODELS["tensornet"](), tmp_path / "model.pt")

    class NoSteps(torch.nn.Module):
        r_max = 3.0

    with pytest.raises(ExportError, match="NoSteps has no `message_passing_steps`"):
        export_model(NoSteps(), tmp_path / "model.pt2")
    gaunt = MACE([28, 29], r_max=CUTOFF, num_channels=8, max_ell=2, radial_MLP=[16], product_backend="gaunt")
    with pytest.raises(
        ExportError, match=r"cannot be exported with \{'backend': 'cg', 'product_backend': 'cg'\}"
    ):
        export_model(gaunt, tmp_path / "model.pt2", portable=True)  # the Gaunt basis has other weights
    so2 = MACE([28, 29], r_max=CUTOFF, num_channels=8, max_ell=2, radial_MLP=[16], backend="so2")
    assert exportable_backends(so2) == {"backend": "sparse", "product_backend": "sparse"}  # same weights
    assert exportable_backends(so2, portable=True) == {"backend": "cg", "product_backend": "cg"}
    assert exportable_backends(so2, device="cuda") == {"backend": "cg", "product_backend": "cg"}
    save_model(MODELS["tensornet"](), tmp_path / "model.pt")
    assert cli_main(["export", str(tmp_path / "model.pt"), str(tmp_path / "model.zip")]) == 2
    assert "must end in .pt2" in capsys.readouterr().err


# --- the ghost-atom interface (what the LAMMPS pair style does on each MPI rank) ---------------


def subdomain_with_ghosts(atoms: Atoms, local: np.ndarray, ghost_cutoff: float):
    """The atoms of ``local`` and, as ghosts, every other periodic image of any atom within
    ``ghost_cutoff`` of them, as one non-periodic cluster (locals first): positions, numbers,
    the original index of each and the energy mask."""
    cell = atoms.cell.array
    positions, owners = [atoms.positions[local]], [local]
    for shift in np.stack(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij"), -1).reshape(-1, 3):
        moved = atoms.positions + shift @ cell
        distance = np.linalg.norm(moved[:, None] - atoms.positions[local][None], axis=-1).min(1)
        ghost = distance <= ghost_cutoff
        if not shift.any():
            ghost[local] = False
        positions.append(moved[ghost])
        owners.append(np.flatnonzero(ghost))
    positions, owners = np.concatenate(positions), np.concatenate(owners)
    mask = np.zeros(len(owners))
    mask[: len(local)] = 1.0
    return positions, atoms.numbers[owners], owners, mask


def cluster_graph(positions, numbers, cutoff) -> AtomicGraph:
    r = torch.tensor(positions)
    distances = torch.cdist(r, r, compute_mode="donot_use_mm_for_euclid_dist")  # exact self-distance 0
    distances.fill_diagonal_(float("inf"))
    receiver, sender = torch.nonzero(distances < cutoff, as_tuple=True)
    n, e = len(positions), len(sender)
    return AtomicGraph(
        positions=r,
        numbers=torch.tensor(numbers),
        edge_index=torch.stack([sender, receiver]),
        unit_shifts=torch.zeros(e, 3, dtype=torch.float64),
        cell=torch.zeros(1, 3, 3, dtype=torch.float64),
        pbc=torch.zeros(1, 3, dtype=torch.bool),
        batch=torch.zeros(n, dtype=torch.long),
        num_graphs=1,
    )


def decomposed(interface, atoms, ghost_cutoff):
    """Energy, forces and virial summed over two subdomains (x below and above the middle), each
    computed on its local atoms plus ghosts with the energy mask, ghost forces folded back."""
    halves = atoms.get_scaled_positions()[:, 0] < 0.5
    energy, forces, virial = 0.0, np.zeros((len(atoms), 3)), np.zeros((3, 3))
    for part in (halves, ~halves):
        local = np.flatnonzero(part)
        positions, numbers, owners, mask = subdomain_with_ghosts(atoms, local, ghost_cutoff)
        graph = cluster_graph(positions, numbers, CUTOFF)
        e, _, f, w = interface(*interface_inputs(graph, torch.tensor(mask)))
        energy += float(e)
        np.add.at(forces, owners, f.numpy())
        virial += w.numpy()
    return energy, forces, virial


@pytest.mark.parametrize("name", sorted(MODELS))
def test_local_energy_with_ghosts_to_the_ghost_cutoff_is_exact(name):
    model = trained_like(name).double().eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    interface = EnergyForcesVirial(model)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((4, 2, 2))  # 14.4 x 7.2 x 7.2 Å
    atoms.numbers[::3] = 28
    atoms.rattle(0.05, seed=3)
    full = interface(*interface_inputs(graph_from_atoms(atoms, CUTOFF, torch.float64)))
    ghost_cutoff = model.message_passing_steps * CUTOFF
    energy, forces, virial = decomposed(interface, atoms, ghost_cutoff)
    assert energy == pytest.approx(float(full[0]), rel=1e-12)
    np.testing.assert_allclose(forces, full[2].numpy(), atol=1e-10)
    np.testing.assert_allclose(virial, full[3].numpy(), atol=1e-9)
    # one message-passing step fewer of ghosts is not enough: the check above can fail
    short, _, _ = decomposed(interface, atoms, ghost_cutoff - CUTOFF)
    assert abs(short - float(full[0])) > 1e-6
