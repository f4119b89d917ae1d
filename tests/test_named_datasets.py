"""Named data sets: the BOTNet loaders on the shared copies, missing/corrupt files, download from a
local address, and the rMD17 npz reader on a small file in its format."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from equitensor.datasets import DatasetError, named
from equitensor.datasets.named import acetylacetone, ethanol, named_e0s, rmd17, three_bpa

SHARED_BOTNET = Path(
    os.environ.get(
        "EQUITENSOR_BOTNET_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "botnet"
    )
)
needs_shared = pytest.mark.skipif(
    not SHARED_BOTNET.is_dir(),
    reason=f"BOTNet data not found at {SHARED_BOTNET} (set EQUITENSOR_BOTNET_DATA)",
)


@needs_shared
def test_ethanol_train_and_e0s():
    structures = ethanol(SHARED_BOTNET, "train")
    assert len(structures) == 1000
    assert all(s.num_atoms == 9 and sorted(s.numbers.tolist()) == [1] * 6 + [6] * 2 + [8] for s in structures)
    energies = np.array([s.energy for s in structures])
    assert -4215 < energies.min() < energies.max() < -4205  # eV, total DFT energy of ethanol
    assert all(s.forces.shape == (9, 3) for s in structures)
    e0s, sentence = named_e0s("ethanol", SHARED_BOTNET)
    assert set(e0s) == {1, 6, 7, 8} and "isolated_atoms.xyz" in sentence
    atomisation = energies - (6 * e0s[1] + 2 * e0s[6] + e0s[8])
    # ethanol binds by about 33 eV (experiment); these isolated atoms give about 42 eV
    assert (atomisation > -45).all() and (atomisation < -30).all()


@needs_shared
def test_3bpa_and_acetylacetone():
    bpa = three_bpa(SHARED_BOTNET, "train_300K")
    assert len(bpa) == 500 and {s.num_atoms for s in bpa} == {27}
    assert set(named_e0s("3bpa", SHARED_BOTNET)[0]) == {1, 6, 7, 8}
    acac = acetylacetone(SHARED_BOTNET, "train_300K")
    test = acetylacetone(SHARED_BOTNET, "test_MD_300K")
    assert len(acac) == 500 and {s.num_atoms for s in acac + test} == {15}
    assert set(named_e0s("acetylacetone", SHARED_BOTNET)[0]) == {1, 6, 8}


def test_missing_file_says_where_and_from_what(tmp_path):
    spec = named.named_file("acetylacetone", "train_300K")
    with pytest.raises(DatasetError) as error:
        acetylacetone(tmp_path, "train_300K")
    message = str(error.value)
    for part in (str(tmp_path / "dataset_acac" / "train_300K.xyz"), spec.url, spec.sha256, "download=True"):
        assert part in message
    assert spec.url.startswith("https://raw.githubusercontent.com/davkovacs/BOTNet-datasets/29e6d46")


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown data set 'md22'"):
        named.named_file("md22", "train")
    with pytest.raises(ValueError, match="3bpa has no split 'test_300K'"):
        named.named_file("3bpa", "test_300K")


def test_offline_download_fails_with_the_same_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr(named, "BOTNET_URL", f"file://{tmp_path}/nowhere/")
    with pytest.raises(DatasetError, match=r"needs .*isolated_atoms\.xyz.*downloading it failed"):
        ethanol(tmp_path / "root", "isolated_atoms", download=True)
    assert not (tmp_path / "root" / "dataset_ethanol" / "isolated_atoms.xyz").exists()


@needs_shared
def test_download_checks_the_checksum(tmp_path, monkeypatch):
    monkeypatch.setattr(named, "BOTNET_URL", SHARED_BOTNET.as_uri() + "/")
    structures = ethanol(tmp_path, "isolated_atoms", download=True)
    assert (tmp_path / "dataset_ethanol" / "isolated_atoms.xyz").is_file() and len(structures) == 4
    # a source whose bytes differ is refused and nothing is left behind
    fake = tmp_path / "fake"
    shutil.copytree(SHARED_BOTNET / "dataset_acac", fake / "dataset_acac")
    with open(fake / "dataset_acac" / "isolated_atoms.xyz", "a") as f:
        f.write("\n")
    monkeypatch.setattr(named, "BOTNET_URL", fake.as_uri() + "/")
    with pytest.raises(DatasetError, match="has sha256"):
        acetylacetone(tmp_path, "isolated_atoms", download=True)
    assert list((tmp_path / "dataset_acac").iterdir()) == []


@needs_shared
def test_a_modified_local_file_is_refused(tmp_path):
    target = tmp_path / "dataset_3BPA" / "iso_atoms.xyz"
    target.parent.mkdir()
    target.write_text(
        (SHARED_BOTNET / "dataset_3BPA" / "iso_atoms.xyz").read_text().replace("-13.5", "-13.6")
    )
    with pytest.raises(DatasetError, match="differs from the upstream file"):
        three_bpa(tmp_path, "isolated_atoms")


def write_fake_rmd17(root: Path) -> dict:
    """A 4-frame file in rMD17's npz format (kcal/mol, kcal/mol/Å) and a split file."""
    rng = np.random.default_rng(0)
    data = {
        "nuclear_charges": np.array([8, 1, 1]),
        "coords": np.array([[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]]) + rng.normal(0, 0.02, (4, 3, 3)),
        "energies": -47900.0 + rng.normal(0, 1, 4),
        "forces": rng.normal(0, 10, (4, 3, 3)),
    }
    (root / "rmd17" / "npz_data").mkdir(parents=True)
    (root / "rmd17" / "splits").mkdir()
    np.savez(root / "rmd17" / "npz_data" / "rmd17_ethanol.npz", **data)
    np.savetxt(root / "rmd17" / "splits" / "index_train_01.csv", [3, 1], fmt="%d")
    return data


def test_rmd17_npz_in_ev(tmp_path):
    data = write_fake_rmd17(tmp_path)
    structures = rmd17(tmp_path, "ethanol")
    kcal_mol_in_ev = 0.0433641  # 4.184 kJ/mol / 96.485 kJ/mol/eV
    assert len(structures) == 4
    assert structures[2].energy == pytest.approx(data["energies"][2] * kcal_mol_in_ev, rel=1e-6)
    assert np.allclose(structures[2].forces, data["forces"][2] * kcal_mol_in_ev, rtol=1e-6)
    assert np.allclose(structures[2].positions, data["coords"][2])
    picked = rmd17(tmp_path, "ethanol", split="train_01")
    assert [s.energy for s in picked] == [structures[3].energy, structures[1].energy]


def test_rmd17_missing_file_names_the_archive(tmp_path):
    with pytest.raises(DatasetError, match=r"rmd17_aspirin\.npz, which is missing.*figshare"):
        rmd17(tmp_path, "aspirin")
