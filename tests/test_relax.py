"""Geometry and cell relaxation through the calculator, and ``equitensor relax`` end to end."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from md_helpers import MorsePairs, tiny_tensornet

from equitensor import save_model
from equitensor.calculator import EquitensorCalculator
from equitensor.cli import main as cli_main
from equitensor.relax import relax

pytestmark = pytest.mark.usefixtures("one_thread")


def rattled_copper() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.1, seed=7)
    return atoms


def morse_copper(lattice: float) -> Atoms:
    atoms = bulk("Cu", "fcc", a=lattice, cubic=True)
    atoms.rattle(0.05, seed=8)
    atoms.calc = EquitensorCalculator(MorsePairs(), skin=0.3)
    return atoms


def test_morse_helper_forces_and_stress_are_derivatives():
    """The Morse test potential used for cell relaxation and NPT is itself right."""
    atoms = morse_copper(3.5)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5), atol=1e-7)
    np.testing.assert_allclose(atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-5), atol=1e-8)


@pytest.mark.parametrize("optimizer", ["BFGS", "FIRE", "LBFGS"])
def test_positions_relax_to_fmax(optimizer):
    atoms = rattled_copper()
    atoms.calc = EquitensorCalculator(tiny_tensornet(scale=20.0))
    start = np.linalg.norm(atoms.get_forces(), axis=1).max()
    result = relax(atoms, fmax=0.01, steps=300, optimizer=optimizer, logfile=None)
    assert start > 0.1 and result.converged
    assert result.max_force < 0.01
    assert np.linalg.norm(atoms.get_forces(), axis=1).max() == pytest.approx(result.max_force)
    assert result.energy == atoms.get_potential_energy()


def test_cell_relaxes_to_the_target_pressure():
    pressure_GPa = 3.0
    atoms = morse_copper(3.4)  # compressed beyond 3 GPa: the cell must grow
    start_volume = atoms.get_volume()
    result = relax(atoms, fmax=1e-3, steps=500, cell=True, pressure_GPa=pressure_GPa, logfile=None)
    assert result.converged
    assert atoms.get_volume() > start_volume
    stress = atoms.get_stress()
    # FrechetCellFilter's cell forces are (virial - p V) / N, converged to fmax
    tolerance = 1e-3 * len(atoms) / atoms.get_volume()
    np.testing.assert_allclose(stress[:3], -pressure_GPa * units.GPa, atol=tolerance)
    np.testing.assert_allclose(stress[3:], 0.0, atol=tolerance)


def test_relax_errors():
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]])
    atoms.calc = EquitensorCalculator(tiny_tensornet())
    with pytest.raises(ValueError, match="pbc"):
        relax(atoms, cell=True)
    with pytest.raises(ValueError, match="optimizer"):
        relax(atoms, optimizer="CG")


def test_relax_command_end_to_end(tmp_path, capsys):
    model, structure, output = tmp_path / "model.pt", tmp_path / "start.xyz", tmp_path / "relaxed.xyz"
    save_model(tiny_tensornet(scale=20.0), model)
    ase.io.write(structure, rattled_copper())
    args = ["relax", "--model", str(model), "--structure", str(structure), "--output", str(output)]
    assert cli_main([*args, "--fmax", "0.02", "--optimizer", "FIRE", "--dtype", "float64"]) == 0
    assert "converged after" in capsys.readouterr().out
    relaxed = ase.io.read(output)
    assert np.linalg.norm(relaxed.get_forces(), axis=1).max() < 0.02
    assert cli_main([*args, "--fmax", "1e-6", "--steps", "1"]) == 1  # not converged: exit code 1
    assert "NOT converged" in capsys.readouterr().out
