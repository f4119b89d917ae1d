"""GFN2-xTB labels through tblite (the optional extra equitensor[xtb]): deterministic MD frames whose
forces are tblite's, and a clear error naming the extra when tblite is missing."""

import sys

import numpy as np
import pytest
from ase import Atoms

from equitensor.cli import main
from equitensor.datasets import read_structures
from equitensor.datasets.generate import generate_xtb_dataset, xtb_calculator

SHORT_MD = {
    "temperatures": [500.0],
    "trajectories_per_temperature": 1,
    "frames_per_trajectory": 3,
    "steps_between_frames": 2,
    "equilibration_steps": 2,
}


def test_missing_tblite_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite.ase", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"equitensor\[xtb\]"):
        xtb_calculator()


def tblite_or_skip():
    return pytest.importorskip("tblite.ase", reason="tblite is not installed (pip install 'equitensor[xtb]')")


@pytest.mark.parametrize("molecule", ["H2O", "CH3CH2OH"])
def test_xtb_frames_are_deterministic_and_carry_tblite_forces(tmp_path, molecule):
    tblite = tblite_or_skip()
    frames = generate_xtb_dataset(tmp_path / "a.xyz", molecule=molecule, seed=3, **SHORT_MD)
    generate_xtb_dataset(tmp_path / "b.xyz", molecule=molecule, seed=3, **SHORT_MD)
    other = generate_xtb_dataset(tmp_path / "c.xyz", molecule=molecule, seed=4, **SHORT_MD)
    assert len(frames) == 3
    assert (tmp_path / "a.xyz").read_bytes() == (tmp_path / "b.xyz").read_bytes()
    assert not np.allclose(frames[-1].positions, other[-1].positions)
    assert not np.allclose(frames[0].positions, frames[-1].positions)  # the molecule moved
    for frame in frames:
        fresh = Atoms(numbers=frame.numbers, positions=frame.positions)
        fresh.calc = tblite.TBLite(method="GFN2-xTB", verbosity=0)
        np.testing.assert_allclose(frame.get_forces(), fresh.get_forces(), rtol=0, atol=1e-10)
        assert frame.get_potential_energy() == pytest.approx(fresh.get_potential_energy(), abs=1e-10)
    structures = read_structures(tmp_path / "a.xyz")
    for structure, frame in zip(structures, frames):
        assert structure.stress is None and not structure.pbc.any()
        np.testing.assert_allclose(structure.forces, frame.get_forces(), atol=1e-6)


def test_cli_generates_xtb_data(tmp_path, capsys):
    tblite_or_skip()
    path = tmp_path / "water.xyz"
    args = [
        "data",
        "generate",
        str(path),
        "--calculator",
        "xtb",
        "--molecule",
        "H2O",
        "--temperatures",
        "500",
    ]
    args += ["--trajectories-per-temperature", "1", "--frames-per-trajectory", "3"]
    args += ["--steps-between-frames", "2", "--equilibration-steps", "2"]
    assert main(args) == 0
    assert "wrote 3 frames" in capsys.readouterr().out
    structures = read_structures(path)
    assert len(structures) == 3 and all(s.energy is not None and s.forces is not None for s in structures)
