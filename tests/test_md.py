"""MD through the calculator: NVE energy conservation, NPT barostats driven by our stress, Langevin
NVT, and the ``equitensor md`` command end to end."""

from __future__ import annotations

import io

import ase.io
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from md_helpers import MorsePairs, tiny_tensornet

from equitensor import save_model
from equitensor.calculator import EquitensorCalculator
from equitensor.cli import main as cli_main
from equitensor.md import initialise_velocities, make_dynamics, ns_per_day, run_md

# NVE of the tiny float64 TensorNet (md_helpers): 4 Cu atoms from 300 K, 1 fs. The random model pulls the
# atoms together, so the run heats up (to ~1500 K in 3 ps), a stiff test of the integration.
# Measured on CPU: |drift| (slope of a line fitted to E_total) 6e-4 meV/atom/ps over 300 steps and
# 3e-4 over 3000 steps; E_total spread (max - min) 2e-4 meV/atom over 300 steps, 0.08 over 3000.
NVE_DRIFT_BOUND = 0.01  # meV/atom/ps


pytestmark = pytest.mark.usefixtures("one_thread")


def nve_energies(steps: int, timestep_fs: float = 1.0) -> tuple[np.ndarray, np.ndarray, int]:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = EquitensorCalculator(tiny_tensornet(), skin=0.5)
    initialise_velocities(atoms, 300.0, seed=0)
    dynamics = make_dynamics(atoms, "nve", timestep_fs=timestep_fs)
    total, potential = [], []
    dynamics.attach(
        lambda: (total.append(atoms.get_total_energy()), potential.append(atoms.get_potential_energy()))
    )
    dynamics.run(steps)
    return np.array(total), np.array(potential), len(atoms)


def check_conservation(steps: int, spread_bound: float) -> None:
    total, potential, n = nve_energies(steps)
    time_ps = np.arange(len(total)) * 1e-3
    drift = np.polyfit(time_ps, total, 1)[0] / n * 1000  # meV/atom/ps
    spread = (total.max() - total.min()) / n * 1000
    exchange = (potential.max() - potential.min()) / n * 1000
    assert exchange > 100 * spread, "potential energy barely changed: the test would be vacuous"
    assert abs(drift) < NVE_DRIFT_BOUND, f"drift {drift:.3g} meV/atom/ps"
    assert spread < spread_bound, f"E_total spread {spread:.3g} meV/atom"


def test_nve_conserves_energy_short():
    check_conservation(steps=200, spread_bound=0.01)


@pytest.mark.slow
def test_nve_conserves_energy_3000_steps():
    check_conservation(steps=3000, spread_bound=0.3)


def pressure(atoms: Atoms) -> float:
    """Hydrostatic pressure (eV/Å^3, positive = compressed) from the calculator's stress."""
    return -atoms.get_stress()[:3].mean()


def copper(lattice: float) -> Atoms:
    atoms = bulk("Cu", "fcc", a=lattice, cubic=True).repeat(2)
    atoms.rattle(0.01, seed=5)
    atoms.calc = EquitensorCalculator(MorsePairs(), skin=0.3)
    return atoms


@pytest.mark.parametrize("barostat", ["mtk", "berendsen"])
@pytest.mark.parametrize("lattice", [3.3, 3.9])
def test_npt_compressed_cell_expands_and_stretched_cell_shrinks(barostat, lattice):
    atoms = copper(lattice)
    initialise_velocities(atoms, 300.0, seed=2)
    start_pressure, start_volume = pressure(atoms), atoms.get_volume()
    assert abs(start_pressure) > 1 * units.GPa  # precondition: far from the Morse equilibrium
    dynamics = make_dynamics(
        atoms,
        "npt",
        timestep_fs=2.0,
        temperature_K=300.0,
        barostat=barostat,
        pdamp_fs=100.0,
        tdamp_fs=50.0,
        bulk_modulus_GPa=140.0,
    )
    dynamics.run(40)
    change = atoms.get_volume() - start_volume
    assert np.sign(change) == np.sign(start_pressure), (start_pressure, change)
    assert abs(pressure(atoms)) < abs(start_pressure)


def energy_volume_pressure(atoms: Atoms, relative_step: float = 1e-4) -> float:
    """-dE/dV by central differences of the calculator's energy under isotropic scaling."""
    energies = []
    for factor in (1 + relative_step, 1 - relative_step):
        scaled = atoms.copy()
        scaled.set_cell(atoms.cell.array * factor ** (1 / 3), scale_atoms=True)
        scaled.calc = atoms.calc
        energies.append(scaled.get_potential_energy())
    return -(energies[0] - energies[1]) / (2 * relative_step * atoms.get_volume())


def test_npt_with_a_network_model_follows_the_energy_volume_slope():
    """The barostat, driven by our stress, moves the volume the way the model's energy-volume curve
    says: with the target a bit below (above) the pressure -dE/dV the cell expands (shrinks). A
    sign error in the stress reverses one of the two, since the offset is half the pressure."""
    reference = bulk("Cu", "fcc", a=3.6, cubic=True)
    reference.calc = EquitensorCalculator(tiny_tensornet())
    own = energy_volume_pressure(reference)
    assert abs(own) > 0.1 * units.GPa
    assert pressure(reference) == pytest.approx(own, rel=1e-5)
    for sign in (-1, 1):
        atoms = reference.copy()
        atoms.calc = EquitensorCalculator(tiny_tensornet())
        initialise_velocities(atoms, 1.0, seed=2)
        target = (own + sign * 0.5 * abs(own)) / units.GPa
        dynamics = make_dynamics(
            atoms,
            "npt",
            timestep_fs=1.0,
            temperature_K=1.0,
            barostat="berendsen",
            pressure_GPa=target,
            pdamp_fs=50.0,
            bulk_modulus_GPa=50.0,
        )
        dynamics.run(5)
        assert np.sign(atoms.get_volume() - reference.get_volume()) == -sign


def test_langevin_heats_to_the_target_temperature():
    atoms = copper(3.6)
    dynamics = make_dynamics(atoms, "nvt", timestep_fs=2.0, temperature_K=300.0, friction_per_fs=0.1, seed=1)
    temperatures = []
    dynamics.attach(lambda: temperatures.append(atoms.get_temperature()))
    dynamics.run(150)
    assert temperatures[0] == 0.0
    assert 200 < np.mean(temperatures[50:]) < 400


def test_make_dynamics_errors():
    molecule = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.5]])
    with pytest.raises(ValueError, match="pbc"):
        make_dynamics(molecule, "npt")
    with pytest.raises(ValueError, match="ensemble"):
        make_dynamics(molecule, "nph")
    with pytest.raises(ValueError, match="temperature"):
        make_dynamics(molecule, "nvt", temperature_K=0)


def test_run_md_reports_throughput(tmp_path):
    atoms = copper(3.6)
    initialise_velocities(atoms, 300.0, seed=0)
    dynamics = make_dynamics(atoms, "nve", timestep_fs=2.0)
    stream = io.StringIO()
    throughput = run_md(
        atoms,
        dynamics,
        6,
        2.0,
        output=str(tmp_path / "t.xyz"),
        output_interval=3,
        log=str(tmp_path / "md.log"),
        log_interval=2,
        print_interval=3,
        stream=stream,
    )
    assert throughput.steps == 6 and throughput.seconds > 0
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "ns/day" in lines[-1] and "steps/s" in lines[-1]
    frames = ase.io.read(tmp_path / "t.xyz", index=":")
    assert len(frames) == 3  # steps 0, 3, 6
    np.testing.assert_allclose(frames[-1].positions, atoms.positions, atol=1e-7)  # extxyz: 8 decimals
    np.testing.assert_allclose(frames[-1].get_forces(), atoms.get_forces(), atol=1e-7)
    assert len((tmp_path / "md.log").read_text().splitlines()) == 1 + 4  # header + steps 0, 2, 4, 6
    assert ns_per_day(100.0, 1.0) == pytest.approx(8.64)  # 100 steps/s x 1 fs x 86400 s = 8.64 ns


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.pt"
    save_model(tiny_tensornet(), path)
    return path


@pytest.mark.parametrize(
    "ensemble",
    [
        ["nve"],
        ["nvt", "--friction", "0.02"],
        ["npt", "--barostat", "mtk", "--pressure", "1"],
        ["npt", "--barostat", "berendsen"],
    ],
)
def test_md_command_end_to_end(tmp_path, model_file, capsys, ensemble):
    structure = tmp_path / "cu.xyz"
    ase.io.write(structure, bulk("Cu", "fcc", a=3.6, cubic=True))
    trajectory, log = tmp_path / "traj.xyz", tmp_path / "md.log"
    code = cli_main(
        [
            "md",
            "--model",
            str(model_file),
            "--structure",
            str(structure),
            "--ensemble",
            *ensemble,
            "--steps",
            "4",
            "--timestep",
            "0.5",
            "--output",
            str(trajectory),
            "--output-interval",
            "2",
            "--log",
            str(log),
            "--log-interval",
            "2",
            "--print-interval",
            "2",
            "--seed",
            "3",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "ns/day" in out and "done: 4 steps" in out
    assert len(ase.io.read(trajectory, index=":")) == 3
    assert log.is_file()


def test_md_command_unknown_element(tmp_path, model_file, capsys):
    structure = tmp_path / "nacl.xyz"
    ase.io.write(structure, bulk("NaCl", "rocksalt", a=5.6))
    code = cli_main(["md", "--model", str(model_file), "--structure", str(structure), "--steps", "2"])
    assert code == 2
    assert "Na (Z=11), Cl (Z=17)" in capsys.readouterr().err


def test_md_and_relax_refuse_bad_arguments_before_any_work(tmp_path, model_file, capsys):
    """Clear errors (exit 2, no traceback) for a frame index outside the file, an empty file, a
    negative temperature or step count, and an output folder that does not exist."""
    structure = tmp_path / "cu.xyz"
    ase.io.write(structure, bulk("Cu", "fcc", a=3.6, cubic=True))
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    common = ["--model", str(model_file)]
    cases = [
        (["md", "--structure", str(structure), "--index", "999"], "--index 999: .*has 1 frame"),
        (["md", "--structure", str(empty)], "empty.xyz is empty"),
        (["md", "--structure", str(structure), "--temperature", "-300"], "--temperature must be >= 0"),
        (["md", "--structure", str(structure), "--output", str(tmp_path / "no" / "t.xyz")], "does not exist"),
        (["relax", "--structure", str(structure), "--steps", "-3"], "--steps must be >= 0"),
        (
            ["relax", "--structure", str(structure), "--output", str(tmp_path / "no" / "x.xyz")],
            "does not exist",
        ),
    ]
    import re

    for args, message in cases:
        assert cli_main([*args, *common]) == 2, args
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err, (args, err)
