"""The EMT data generator: deterministic, labels equal to EMT's, and the shipped default set."""

import numpy as np
import pytest
from ase.calculators.emt import EMT

from equitensor.datasets import compute_e0s, default_dataset_path, read_structures
from equitensor.datasets.generate import generate_emt_dataset, main

SMALL = dict(
    composition={"Cu": 0.7, "Ni": 0.3},
    temperatures=(600.0,),
    trajectories_per_temperature=1,
    frames_per_trajectory=3,
    steps_between_frames=3,
    equilibration_steps=5,
)


def test_same_seed_same_file_other_seed_other_file(tmp_path):
    generate_emt_dataset(tmp_path / "a.xyz", seed=3, **SMALL)
    generate_emt_dataset(tmp_path / "b.xyz", seed=3, **SMALL)
    generate_emt_dataset(tmp_path / "c.xyz", seed=4, **SMALL)
    assert (tmp_path / "a.xyz").read_bytes() == (tmp_path / "b.xyz").read_bytes()
    assert (tmp_path / "a.xyz").read_bytes() != (tmp_path / "c.xyz").read_bytes()


def test_labels_are_emts_energy_forces_and_stress(tmp_path):
    generate_emt_dataset(tmp_path / "d.xyz", seed=0, **SMALL)
    structures = read_structures(tmp_path / "d.xyz", require=("energy", "forces", "stress"))
    md = [s for s in structures if s.config_type == "MD_600K"]
    assert len(md) == 3 and all(s.num_atoms == 32 for s in md)
    for structure in md:
        atoms = structure.to_atoms()
        atoms.calc = EMT()
        assert structure.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
        assert np.allclose(structure.forces, atoms.get_forces(), atol=1e-6)
        assert np.allclose(structure.stress, atoms.get_stress(voigt=False), atol=1e-7)
        assert np.abs(structure.stress).max() > 1e-4  # strained, hot cells: a stress worth learning
    # frames of one trajectory differ (the MD moved)
    assert not np.allclose(md[0].positions, md[1].positions)
    e0s, sentence = compute_e0s(structures)
    assert set(e0s) == {28, 29} and "isolated-atom" in sentence


def test_command_line(tmp_path, capsys):
    main([str(tmp_path / "e.xyz"), "--composition", "Al", "--temperatures", "300", "--repeat", "1",
          "--trajectories-per-temperature", "1", "--frames-per-trajectory", "2",
          "--steps-between-frames", "2", "--equilibration-steps", "2"])  # fmt: skip
    assert "wrote 3 frames" in capsys.readouterr().out
    assert [s.num_atoms for s in read_structures(tmp_path / "e.xyz")] == [1, 4, 4]


def test_unknown_element_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="EMT has no parameters for \\['Fe'\\]"):
        generate_emt_dataset(tmp_path / "f.xyz", composition={"Fe": 1.0})


def test_shipped_default_set_is_what_its_recipe_makes(tmp_path):
    """The RNG draws come in order, so a short run of the recipe reproduces the file's first frames."""
    shipped = read_structures(default_dataset_path(), require=("energy", "forces", "stress"))
    assert len(shipped) == 302
    assert {s.config_type for s in shipped} == {"IsolatedAtom", "MD_300K", "MD_600K", "MD_1000K"}
    assert default_dataset_path().stat().st_size < 2_000_000
    start = generate_emt_dataset(
        tmp_path / "start.xyz",
        composition={"Cu": 0.7, "Ni": 0.3},
        temperatures=(300.0,),
        trajectories_per_temperature=1,
        frames_per_trajectory=2,
        seed=0,
    )
    regenerated = read_structures(tmp_path / "start.xyz")
    assert len(start) == len(regenerated) == 4
    for ours, theirs in zip(regenerated, shipped[:4]):
        assert np.allclose(ours.positions, theirs.positions, atol=1e-7)
        assert ours.energy == pytest.approx(theirs.energy, abs=1e-7)
        assert np.allclose(ours.forces, theirs.forces, atol=1e-7)
