"""EquitensorCalculator: results equal the model's, forces and stress equal finite differences of
the calculator's energy, the Verlet list equals a fresh neighbour list, dtype/backend switches,
batched evaluation, and clear errors."""

from __future__ import annotations

import ase.io
import md_helpers
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.stress import full_3x3_to_voigt_6_stress

from equitensor import EdgeConvolution, save_model
from equitensor.calculator import EquitensorCalculator, evaluate_many, model_cutoff, switch_backend
from equitensor.datasets import graph_from_atoms
from equitensor.md import initialise_velocities, make_dynamics
from equitensor.models import MACE, TensorNet
from equitensor.verlet_list import VerletList, canonical_pairs

ELEMENTS = [1, 6, 8, 29]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_tensornet(dtype: str = "float64") -> TensorNet:
    return md_helpers.tiny_tensornet(atomic_numbers=ELEMENTS, dtype=dtype)


def tiny_mace(backend: str = "cg") -> MACE:
    torch.manual_seed(0)
    model = MACE(
        ELEMENTS,
        r_max=3.5,
        num_channels=4,
        max_L=1,
        max_ell=2,
        correlation=2,
        num_interactions=2,
        radial_MLP=[8],
        atomic_energies=[-1.0, -2.0, -3.0, -4.0],
        backend=backend,
    )
    return model.double()


MODELS = {"tensornet": tiny_tensornet, "mace": tiny_mace}


def copper_cell(seed: int = 1) -> Atoms:
    """4 Cu atoms in a slightly sheared cell, rattled: a small periodic test case with many images."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.set_cell(
        atoms.cell.array + np.array([[0.0, 0.1, 0.0], [0.05, 0.0, -0.1], [0.0, 0.2, 0.0]]), scale_atoms=True
    )
    atoms.rattle(0.1, seed=seed)
    return atoms


def methanol() -> Atoms:
    atoms = molecule("CH3OH")
    atoms.rattle(0.05, seed=2)
    return atoms


def model_reference(model, atoms: Atoms) -> dict:
    """What the model itself gives on a graph from the dataset pipeline's neighbour list."""
    graph = graph_from_atoms(atoms, model_cutoff(model), dtype=next(model.parameters()).dtype)
    periodic = bool(atoms.pbc.any())
    out = model(graph, compute_forces=True, compute_stress=periodic)
    ref = {
        "energy": out["energy"].item(),
        "forces": out["forces"].detach().double().numpy(),
        "energies": out["node_energy"].detach().double().numpy(),
    }
    if periodic:
        ref["stress"] = full_3x3_to_voigt_6_stress(out["stress"][0].detach().double().numpy())
    return ref


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("system", ["periodic", "molecule"])
def test_results_equal_the_model(name, system):
    model = MODELS[name]()
    atoms = copper_cell() if system == "periodic" else methanol()
    atoms.calc = EquitensorCalculator(model)
    ref = model_reference(model, atoms)
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"], rel=1e-12, abs=1e-12)
    assert atoms.calc.get_property("free_energy", atoms) == atoms.get_potential_energy()
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(atoms.get_potential_energies(), ref["energies"], rtol=1e-10, atol=1e-12)
    assert atoms.get_potential_energies().sum() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    if system == "periodic":
        np.testing.assert_allclose(atoms.get_stress(), ref["stress"], rtol=1e-10, atol=1e-12)
    else:
        with pytest.raises(PropertyNotImplementedError, match="periodic cell"):
            atoms.get_stress()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forces_and_stress_are_finite_differences_of_the_energy(name):
    atoms = copper_cell()
    atoms.calc = EquitensorCalculator(MODELS[name](), skin=0.3)
    forces, stress = atoms.get_forces(), atoms.get_stress()
    assert np.abs(forces).max() > 1e-3 and np.abs(stress).max() > 1e-4  # not trivially zero
    np.testing.assert_allclose(forces, calculate_numerical_forces(atoms, eps=1e-5), atol=1e-7)
    np.testing.assert_allclose(stress, calculate_numerical_stress(atoms, eps=1e-5), atol=1e-8)


def test_molecule_forces_are_finite_differences_of_the_energy():
    atoms = methanol()
    atoms.calc = EquitensorCalculator(tiny_tensornet())
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5), atol=1e-7)


def test_verlet_list_equals_a_fresh_list_along_md():
    """Atoms move more than the skin (rebuilds happen); every step's results are bitwise those of
    a calculator that rebuilds every step, and match the dataset pipeline's list to rounding."""
    model = tiny_tensornet()
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=3)
    atoms.calc = EquitensorCalculator(model, skin=0.2)
    fresh = EquitensorCalculator(model, skin=0.0)
    initialise_velocities(atoms, 2000.0, seed=4)
    dynamics = make_dynamics(atoms, "nve", timestep_fs=2.0)
    start = atoms.positions.copy()
    checked = []

    def compare():
        probe = atoms.copy()
        probe.calc = fresh
        assert probe.get_potential_energy() == atoms.get_potential_energy()
        assert np.array_equal(probe.get_forces(), atoms.get_forces())
        assert np.array_equal(probe.get_stress(), atoms.get_stress())
        if len(checked) % 10 == 0:
            ref = model_reference(model, atoms)
            np.testing.assert_allclose(atoms.get_forces(), ref["forces"], rtol=1e-10, atol=1e-12)
        checked.append(True)

    dynamics.attach(compare, interval=1)
    dynamics.run(60)
    moved = np.linalg.norm(atoms.positions - start, axis=1).max()
    builds = atoms.calc.neighbours.num_builds
    assert len(checked) == 61 and moved > 0.2
    assert 1 < builds < 61, f"{builds} builds in 61 steps: the list was never rebuilt or never reused"


def test_verlet_list_rebuilds_on_a_cell_change_and_a_wrap():
    atoms = copper_cell()
    verlet = VerletList(3.5, skin=0.5)

    def same_as_fresh():
        got, want = verlet.pairs(atoms), canonical_pairs(atoms, 3.5)
        for a, b in zip(got, want):
            assert np.array_equal(a, b)

    same_as_fresh()
    atoms.set_cell(atoms.cell.array * 1.02, scale_atoms=True)
    same_as_fresh()
    assert verlet.num_builds == 2
    atoms.positions[0] += atoms.cell.array[0]  # the same structure, but every shift of atom 0 changes
    same_as_fresh()
    assert verlet.num_builds == 3
    atoms.positions[1] += 0.1  # within skin / 2: reuse
    same_as_fresh()
    assert verlet.num_builds == 3


def test_dtype_conversion_and_model_path(tmp_path):
    model32 = tiny_tensornet("float32")
    path = tmp_path / "model.pt"
    save_model(model32, path)
    atoms = copper_cell()
    calc = EquitensorCalculator(path, dtype="float64")
    assert calc.dtype == torch.float64
    ref = model_reference(tiny_tensornet("float32").double(), atoms)
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(ref["energy"], rel=1e-12)
    np.testing.assert_allclose(atoms.get_stress(), ref["stress"], rtol=1e-10, atol=1e-12)
    calc32 = EquitensorCalculator(path)
    assert calc32.dtype == torch.float32
    assert calc32.get_potential_energy(atoms) == pytest.approx(ref["energy"], rel=1e-5)
    with pytest.raises(ValueError, match="dtype"):
        EquitensorCalculator(path, dtype="float16")


def test_backend_switch():
    atoms = copper_cell()
    cg = EquitensorCalculator(tiny_mace("cg"))
    so2 = EquitensorCalculator(tiny_mace("cg"), backend="so2")
    assert so2.model.config["backend"] == "so2"
    convolutions = [m for m in so2.model.modules() if isinstance(m, EdgeConvolution)]
    assert len(convolutions) == 2 and all(m.backend == "so2" for m in convolutions)
    assert so2.get_potential_energy(atoms) == pytest.approx(cg.get_potential_energy(atoms), rel=1e-10)
    np.testing.assert_allclose(so2.get_forces(atoms), cg.get_forces(atoms), atol=1e-10)
    sparse = EquitensorCalculator(tiny_tensornet(), backend="sparse")  # TensorNet's message kernels
    reference = EquitensorCalculator(tiny_tensornet())
    assert sparse.model.backend == "sparse"
    assert sparse.get_potential_energy(atoms) == pytest.approx(
        reference.get_potential_energy(atoms), rel=1e-10
    )
    with pytest.raises(ValueError, match="TensorNet backend must be one of"):
        EquitensorCalculator(tiny_tensornet(), backend="so2")
    with pytest.raises(ValueError, match="no backend setting"):
        EquitensorCalculator(tiny_mace(), backend={"edge_backend": "so2"})


def test_unknown_element_is_a_clear_error():
    atoms = molecule("CH3Cl")
    atoms.calc = EquitensorCalculator(tiny_tensornet())
    with pytest.raises(ValueError, match=r"Cl \(Z=17\).*knows H, C, O, Cu"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match=r"Cl \(Z=17\)"):
        evaluate_many(tiny_mace(), [methanol(), atoms])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_batched_evaluation_equals_one_at_a_time(name):
    model = MODELS[name]()
    structures = [copper_cell(1), methanol(), copper_cell(5).repeat((1, 2, 1)), molecule("H2O")]
    results = EquitensorCalculator(model).batch_evaluate(structures, batch_size=3)
    assert len(results) == len(structures)
    for atoms, result in zip(structures, results):
        ref = model_reference(model, atoms)
        assert result["energy"] == pytest.approx(ref["energy"], rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(result["forces"], ref["forces"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(result["energies"], ref["energies"], rtol=1e-10, atol=1e-12)
        assert ("stress" in result) == bool(atoms.pbc.any())
        if "stress" in result:
            np.testing.assert_allclose(result["stress"], ref["stress"], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_many(model, structures, batch_size=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_structures_without_edges(name, tmp_path, capsys):
    """One atom, atoms farther apart than the cutoff (a molecule and a periodic cell): energy = the
    atoms' E0s (+ shift), zero forces and stress, through the calculator, md and relax; an empty
    structure is a clear error. (It raised "element 0 of tensors does not require grad".)"""
    from equitensor.cli import main as cli_main

    model = MODELS[name]()
    calc = EquitensorCalculator(model)
    isolated = {
        int(z): float(model(graph_from_atoms(Atoms([int(z)]), 3.5, torch.float64))["energy"].detach())
        for z in (6, 29)
    }
    cases = [
        Atoms("Cu", positions=[[0.0, 0.0, 0.0]]),
        Atoms("CCu", positions=[[0.0, 0.0, 0.0], [9.0, 0.0, 0.0]]),
        Atoms("Cu", positions=[[1.0, 1.0, 1.0]], cell=[12.0, 12.0, 12.0], pbc=True),
    ]
    for atoms in cases:
        atoms.calc = calc
        expected = sum(isolated[int(z)] for z in atoms.numbers)
        assert atoms.get_potential_energy() == pytest.approx(expected, abs=1e-10)
        assert np.all(atoms.get_forces() == 0)
        if atoms.pbc.any():
            assert np.all(atoms.get_stress() == 0)
    if name == "mace":  # E0 of Cu is -4, shift 0: the readouts of all-zero features vanish
        assert isolated[29] == pytest.approx(-4.0, abs=1e-12)
    empty = Atoms()
    empty.calc = calc
    with pytest.raises(ValueError, match="no atoms"):
        empty.get_potential_energy()
    model_file = tmp_path / "model.pt"
    save_model(model, model_file)
    for index, atoms in enumerate(cases[:2]):
        structure = tmp_path / f"lonely{index}.xyz"
        ase.io.write(structure, Atoms(atoms.numbers, atoms.positions))
        common = ["--model", str(model_file), "--structure", str(structure)]
        assert cli_main(["md", *common, "--steps", "3", "--ensemble", "nvt"]) == 0
        assert cli_main(["relax", *common, "--output", str(tmp_path / f"relaxed{index}.xyz")]) == 0
        out = capsys.readouterr().out
        assert "nan" not in out.lower()
    nothing = tmp_path / "nothing.xyz"
    ase.io.write(nothing, Atoms())  # a frame with zero atoms
    for command in ("md", "relax"):
        args = [
            command,
            "--model",
            str(model_file),
            "--structure",
            str(nothing),
            "--output",
            str(tmp_path / "o.xyz"),
        ]
        assert cli_main(args) == 2
        assert "no atoms" in capsys.readouterr().err


def test_float32_energy_is_translation_invariant_far_from_the_origin():
    """A molecule moved 1e4 Å away gives the same float32 energy to 1e-5 eV (positions are made
    relative before the cast; it changed by ~1e-3 eV)."""
    model = tiny_mace().float()
    calc = EquitensorCalculator(model)
    atoms = methanol()
    atoms.calc = calc
    near = atoms.get_potential_energy()
    forces = atoms.get_forces()
    far = atoms.copy()
    far.positions += np.array([1.0e4, -2.0e4, 1.5e4])
    far.calc = calc
    assert far.get_potential_energy() == pytest.approx(near, abs=1e-5)
    np.testing.assert_allclose(far.get_forces(), forces, atol=1e-5)


def test_backend_switch_keeps_every_tensor_and_its_dtype():
    """A float32 model's float64 buffers (E0s) stay float64 and unrounded through a switch."""
    torch.manual_seed(0)
    model = MACE(ELEMENTS, r_max=3.5, num_channels=4, max_ell=2, radial_MLP=[8], atomic_energies=[-1.3] * 4)
    model.eval()
    switched = switch_backend(model, "so2")
    assert model.atomic_energies.dtype == torch.float64 and next(model.parameters()).dtype == torch.float32
    assert not switched.training
    original, copied = model.state_dict(), switched.state_dict()
    for name, tensor in original.items():
        assert copied[name].dtype == tensor.dtype and torch.equal(copied[name], tensor), name
        assert copied[name].data_ptr() != tensor.data_ptr(), name  # a copy, not shared storage
