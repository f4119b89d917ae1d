"""Reading labelled structures: key styles, weights, every bad-input error, and E0s."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from equitensor.datasets import (
    DatasetError,
    compute_e0s,
    fit_e0s,
    read_structures,
    split_isolated_atoms,
    structures_from_atoms,
)
from equitensor.datasets.reading import LabelledStructure


def emt_copper(seed: int = 0) -> tuple[Atoms, dict]:
    """A rattled periodic Cu cell and its EMT labels (stress 3x3, ASE sign)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    labels = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": atoms.get_stress(voigt=False),
    }
    atoms.calc = None
    return atoms, labels


def check_labels(structure: LabelledStructure, atoms: Atoms, labels: dict) -> None:
    assert np.allclose(structure.positions, atoms.positions)
    assert np.array_equal(structure.numbers, atoms.numbers)
    assert np.allclose(structure.cell, atoms.cell.array)
    assert structure.energy == pytest.approx(labels["energy"], abs=1e-7)
    assert np.allclose(structure.forces, labels["forces"], atol=1e-7)
    assert np.allclose(structure.stress, labels["stress"], atol=1e-7)


def test_calculator_results_style(tmp_path):
    atoms, labels = emt_copper()
    atoms.calc = SinglePointCalculator(
        atoms, energy=labels["energy"], forces=labels["forces"], stress=labels["stress"]
    )
    write(tmp_path / "calc.xyz", [atoms, atoms])
    structures = read_structures(tmp_path / "calc.xyz")
    assert len(structures) == 2
    check_labels(structures[1], atoms, labels)
    assert structures[0].virials is None and structures[0].label_weights["virials"] == 0.0


def test_mace_ref_keys_style_with_virials(tmp_path):
    atoms, labels = emt_copper()
    volume = atoms.get_volume()
    atoms.info["REF_energy"] = labels["energy"]
    atoms.arrays["REF_forces"] = labels["forces"]
    atoms.info["REF_stress"] = labels["stress"]
    atoms.info["REF_virials"] = -labels["stress"] * volume
    write(tmp_path / "mace.xyz", atoms)
    (structure,) = read_structures(tmp_path / "mace.xyz")
    check_labels(structure, atoms, labels)
    assert np.allclose(structure.virials, -labels["stress"] * volume, atol=1e-6)


def test_custom_keys_and_voigt_stress(tmp_path):
    atoms, labels = emt_copper()
    atoms.info["dft_energy"] = labels["energy"]
    atoms.arrays["dft_forces"] = labels["forces"]
    s = labels["stress"]
    atoms.info["dft_stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    write(tmp_path / "custom.xyz", atoms)
    (structure,) = read_structures(
        tmp_path / "custom.xyz", energy_key="dft_energy", forces_key="dft_forces", stress_key="dft_stress"
    )
    check_labels(structure, atoms, labels)


def test_two_energy_keys_must_be_chosen(tmp_path):
    atoms, labels = emt_copper()
    atoms.info["REF_energy"] = labels["energy"] + 1.0
    atoms.arrays["REF_forces"] = labels["forces"]
    atoms.calc = SinglePointCalculator(atoms, energy=labels["energy"], forces=labels["forces"])
    write(tmp_path / "both.xyz", atoms)
    with pytest.raises(DatasetError, match="both 'energy' and 'REF_energy'.*energy_key"):
        read_structures(tmp_path / "both.xyz")
    (structure,) = read_structures(tmp_path / "both.xyz", energy_key="REF_energy", forces_key="REF_forces")
    assert structure.energy == pytest.approx(labels["energy"] + 1.0)


def test_weights_and_config_types():
    atoms, labels = emt_copper()
    frames = []
    for config_type, stress_weight in [("MD", 0.0), ("Relax", 2.0)]:
        frame = atoms.copy()
        frame.info.update(config_type=config_type, config_weight=3.0, config_stress_weight=stress_weight)
        frame.calc = SinglePointCalculator(frame, energy=labels["energy"], forces=labels["forces"])
        frames.append(frame)
    md, relax = structures_from_atoms(frames, config_type_weights={"Relax": 0.5})
    assert (md.config_type, md.weight, relax.weight) == ("MD", 3.0, 1.5)
    assert md.label_weights == {"energy": 1.0, "forces": 1.0, "stress": 0.0, "virials": 0.0}
    assert relax.label_weights["stress"] == 0.0  # no stress label: weight 0 whatever the file says


def test_single_atom_frames_need_no_forces(tmp_path):
    atom = Atoms("O", positions=[[0, 0, 0]])
    atom.info.update(config_type="IsolatedAtom", REF_energy=-2035.5)
    write(tmp_path / "iso.xyz", atom)
    (structure,) = read_structures(tmp_path / "iso.xyz")
    assert structure.energy == -2035.5
    assert np.array_equal(structure.forces, np.zeros((1, 3)))


# ------------------------------------------------------------------------------------------ errors

ETHANOL_FRAME = """3
Properties=species:S:1:pos:R:3:forces:R:3 energy={energy} pbc="F F F"
C 0.0 0.0 0.0 0.1 0.0 0.0
O 1.4 0.0 0.0 {fx} 0.0 0.0
H {hx} 1.0 0.0 0.0 0.0 0.0
"""


def frame_text(energy="-100.0", fx="-0.1", hx="-0.5") -> str:
    return ETHANOL_FRAME.format(energy=energy, fx=fx, hx=hx)


def test_good_handwritten_file_reads(tmp_path):
    path = tmp_path / "good.xyz"
    path.write_text(frame_text() + frame_text(energy="-101.0"))
    structures = read_structures(path)
    assert [s.energy for s in structures] == [-100.0, -101.0]
    assert structures[0].forces[1, 0] == -0.1


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        read_structures(tmp_path / "absent.xyz")


def test_malformed_file_names_file_and_frame(tmp_path):
    path = tmp_path / "broken.xyz"
    broken = frame_text().replace("O 1.4 0.0 0.0 -0.1 0.0 0.0", "O 1.4 zero 0.0")
    path.write_text(frame_text() + broken)
    with pytest.raises(DatasetError, match=r"broken\.xyz, frame 1: malformed"):
        read_structures(path)


def test_missing_key_lists_present_keys(tmp_path):
    path = tmp_path / "plain.xyz"
    path.write_text(frame_text())
    with pytest.raises(
        DatasetError, match=r"frame 0: missing energy \(key 'REF_energy'\).*'energy'.*'forces'"
    ):
        read_structures(path, energy_key="REF_energy")
    read_structures(path, require=("energy", "stress"))  # a molecule has no stress to require
    atoms, labels = emt_copper()
    atoms.calc = SinglePointCalculator(atoms, energy=labels["energy"], forces=labels["forces"])
    write(tmp_path / "nostress.xyz", atoms)
    with pytest.raises(DatasetError, match="missing stress"):
        read_structures(tmp_path / "nostress.xyz", require=("energy", "stress"))


@pytest.mark.parametrize(
    "bad, label",
    [({"energy": "nan"}, "energy"), ({"fx": "inf"}, "forces"), ({"hx": "nan"}, "positions")],
)
def test_nan_and_inf_are_errors(tmp_path, bad, label):
    path = tmp_path / "nan.xyz"
    path.write_text(frame_text() + frame_text(**bad))
    with pytest.raises(DatasetError, match=rf"frame 1: {label}.*NaN or inf"):
        read_structures(path)


def test_forces_of_wrong_shape(tmp_path):
    path = tmp_path / "shape.xyz"
    text = frame_text().replace("forces:R:3", "forces:R:2").replace(" 0.0 0.0\n", " 0.0\n")
    path.write_text(text)
    with pytest.raises(DatasetError, match=r"frame 0: forces .* shape \(3, 2\), expected \(3, 3\)"):
        read_structures(path)


def test_two_atoms_at_the_same_position(tmp_path):
    path = tmp_path / "overlap.xyz"
    path.write_text(frame_text().replace("H -0.5 1.0 0.0", "H 1.4 0.0 0.0"))  # H on top of O
    with pytest.raises(DatasetError, match="atoms 1 and 2 .* same position"):
        read_structures(path)


def test_overlap_through_a_periodic_image():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions[1] = atoms.positions[0] + atoms.cell[2]  # the image of atom 0 in the next cell
    atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((4, 3)))
    with pytest.raises(DatasetError, match="same position"):
        structures_from_atoms([atoms])


def test_slab_with_a_two_dimensional_cell_reads_but_a_flat_periodic_cell_does_not():
    slab = fcc111("Al", (2, 2, 2), vacuum=None)
    slab.pbc = [True, True, False]
    slab.cell[2] = 0.0
    slab.calc = SinglePointCalculator(slab, energy=0.0, forces=np.zeros((8, 3)))
    (structure,) = structures_from_atoms([slab])
    assert structure.cell[2].tolist() == [0.0, 0.0, 0.0]
    slab.pbc = True
    with pytest.raises(DatasetError, match="degenerate"):
        structures_from_atoms([slab])


def test_empty_data_set(tmp_path):
    path = tmp_path / "empty.xyz"
    path.write_text("\n")
    with pytest.raises(DatasetError, match="empty data set"):
        read_structures(path)
    with pytest.raises(DatasetError, match="empty data set"):
        structures_from_atoms([])


def test_stress_and_virials_of_opposite_convention(tmp_path):
    atoms, labels = emt_copper()
    atoms.info.update(REF_energy=labels["energy"], REF_stress=labels["stress"])
    atoms.info["REF_virials"] = +labels["stress"] * atoms.get_volume()  # wrong sign
    atoms.arrays["REF_forces"] = labels["forces"]
    write(tmp_path / "sign.xyz", atoms)
    with pytest.raises(DatasetError, match="stress and virials disagree"):
        read_structures(tmp_path / "sign.xyz")


# --------------------------------------------------------------------------------------------- E0s


def structure(symbols: str, energy: float, config_type: str = "Default") -> LabelledStructure:
    atoms = (
        molecule(symbols) if len(symbols) > 2 else Atoms(symbols, positions=np.eye(3)[: len(symbols)] * 1.5)
    )
    return LabelledStructure(
        positions=atoms.positions,
        numbers=atoms.numbers,
        cell=np.zeros((3, 3)),
        pbc=np.zeros(3, bool),
        energy=energy,
        forces=np.zeros((len(atoms), 3)),
        config_type=config_type,
        source=symbols,
    )


def test_e0s_from_isolated_atoms():
    data = [
        structure("H", -13.6, "IsolatedAtom"),
        structure("O", -2035.0, "IsolatedAtom"),
        structure("H2O", -2080.0),
    ]
    e0s, sentence = compute_e0s(data)
    assert e0s == {1: -13.6, 8: -2035.0}
    assert "isolated-atom" in sentence
    isolated, others = split_isolated_atoms(data)
    assert [s.source for s in isolated] == ["H", "O"] and [s.source for s in others] == ["H2O"]


def test_isolated_atoms_must_cover_every_element():
    data = [structure("H", -13.6, "IsolatedAtom"), structure("H2O", -2080.0)]
    with pytest.raises(DatasetError, match="also contain O"):
        compute_e0s(data)


def test_least_squares_e0s_match_numpy_lstsq():
    rng = np.random.default_rng(0)
    true_e0 = {1: -13.6, 6: -1029.0, 8: -2035.0}
    data, rows, energies = [], [], []
    for name in ["CH4", "H2O", "CO2", "CH3OH", "C2H6", "H2CO", "C2H4", "HCOOH"]:
        numbers = molecule(name).numbers
        energy = sum(true_e0[int(z)] for z in numbers) + rng.normal(0, 0.5)
        data.append(structure(name, energy))
        rows.append([np.sum(numbers == z) for z in (1, 6, 8)])
        energies.append(energy)
    expected = np.linalg.lstsq(np.array(rows, float), np.array(energies), rcond=None)[0]
    e0s, sentence = compute_e0s(data)  # no isolated atoms: fitted
    assert np.allclose([e0s[1], e0s[6], e0s[8]], expected, rtol=0, atol=1e-9)
    assert np.allclose(expected, [-13.6, -1029.0, -2035.0], atol=1.0)  # the fit is near the truth
    assert "least squares" in sentence and "not unique" not in sentence


def test_least_squares_on_one_composition_says_not_unique():
    data = [structure("H2O", -2080.0 + 0.1 * k) for k in range(3)]
    e0s, sentence = fit_e0s(data)
    assert "not unique" in sentence
    assert 2 * e0s[1] + e0s[8] == pytest.approx(-2079.9)
