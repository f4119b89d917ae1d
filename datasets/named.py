"""Named benchmark data sets: ethanol (rMD17), 3BPA and acetylacetone from the BOTNet data
(davkovacs/BOTNet-datasets, MIT licence), and any rMD17 molecule from the rMD17 archive.

Every loader takes a ``root`` folder laid out as the upstream repository (``root/dataset_ethanol/
train.xyz``, ...). Files are checked against the SHA-256 of upstream commit 29e6d46. A missing file
is an error saying where to put it and where it comes from; with ``download=True`` it is fetched
from that address and checked first. Units: Å, eV, eV/Å.

Not available upstream (absent from the BOTNet repository): the 3BPA test sets and ethanol's
``test.xyz`` named in its README (the repository has ``test_MD.xyz`` instead).
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms, units

from equitensor.datasets.e0s import isolated_atom_energies
from equitensor.datasets.reading import (
    DatasetError,
    LabelledStructure,
    read_structures,
    structures_from_atoms,
)
from equitensor.datasets.store import file_sha256
from equitensor.errors import InputError

BOTNET_COMMIT = "29e6d467317e4b5967b7ea5cbee54de953fa0d45"
BOTNET_URL = f"https://raw.githubusercontent.com/davkovacs/BOTNet-datasets/{BOTNET_COMMIT}/"

# (data set, split) -> (path under root and in the repository, SHA-256 of the upstream file)
BOTNET_FILES: dict[str, dict[str, tuple[str, str]]] = {
    "ethanol": {
        "train": (
            "dataset_ethanol/train.xyz",
            "a26a16d8910581fa321fedc3bd3dfe31f2460e8cbfdc7a8f65243f4fd7250dd0",
        ),
        "test_MD": (
            "dataset_ethanol/test_MD.xyz",
            "b8726933d5b9083989d8e3cc7013c18e0950cf0cbc6f6cd570fdb9759001031c",
        ),
        "test_H_removal": (
            "dataset_ethanol/test_H_removal.xyz",
            "8d9f13272eb1c7570edaf6afc31e6f8670df38c41b82611504878576708b1a1c",
        ),
        "test_dimers": (
            "dataset_ethanol/test_dimers.xyz",
            "6beaf368c2caed6493a39c643438317246926675f14b188b7a2dcbd7868f7342",
        ),
        "test_norm_mode_874": (
            "dataset_ethanol/test_norm_mode_874.xyz",
            "13f363e0c141dc25af4d8f59668623a27e024c781a07a52f8565fc6bb0e58f99",
        ),
        "test_norm_mode_3005": (
            "dataset_ethanol/test_norm_mode_3005.xyz",
            "9412f0ac3562ee3f307e823eae5f6a9b793e1805feea908f58c9d24a0068f6b0",
        ),
        "train_eth_meth": (
            "dataset_ethanol/train_eth_meth.xyz",
            "2aea243261f05b7d556cca37d73de335a98573d198441f32dc6f835cd948e3a0",
        ),
        "test_eth_meth": (
            "dataset_ethanol/test_eth_meth.xyz",
            "e9109584eb66d2ffe7509dd792c436e4b54bed2583a4de555bda9b2cd4799adf",
        ),
        "isolated_atoms": (
            "dataset_ethanol/isolated_atoms.xyz",
            "a2a662390f31ad623ce493038e680bc34214f88d4432566bf8fbd0761be57583",
        ),
    },
    "3bpa": {
        "train_300K": (
            "dataset_3BPA/train_300K.xyz",
            "d109971fab90e2231ad931a83eb704c8d940f5c7d7a8de27fe3b84ea18634c0a",
        ),
        "train_mixedT": (
            "dataset_3BPA/train_mixedT.xyz",
            "bc108532964b2ed259eaaabf82e5dfaffa5bda9ac384fc2afabcce192a49250b",
        ),
        "isolated_atoms": (
            "dataset_3BPA/iso_atoms.xyz",
            "e12a2465a2612bf38fd5dabdf64d4b57fc58ce9610a858c54ea1142d517c053f",
        ),
    },
    "acetylacetone": {
        "train_300K": (
            "dataset_acac/train_300K.xyz",
            "8f5706d6902360555a5be59395612d2afc3489a75688388a58e7275fdad68af3",
        ),
        "train_600K": (
            "dataset_acac/train_600K.xyz",
            "180c2538508f7810a623c279426f44953ee7cfb2af77e48ea3986ff97645a71c",
        ),
        "test_MD_300K": (
            "dataset_acac/test_MD_300K.xyz",
            "2291f3186a3cc6a5e05e92952c84a9237ca53f862d78fd3316a769360719ec43",
        ),
        "test_MD_600K": (
            "dataset_acac/test_MD_600K.xyz",
            "d5a5bba154ec43f915eb7529f86ec3af60e6f911743859daba030181a0378ff7",
        ),
        "test_H_transfer": (
            "dataset_acac/test_H_transfer.xyz",
            "ea4d76c79cf4cfccd2f93eaf755172b0b648886c4907eb0f82dff07a77530743",
        ),
        "test_dihedral": (
            "dataset_acac/test_dihedral.xyz",
            "0c2246a593579de5a4450698d5f4ba5802b095824b7f211aa5889339967c6809",
        ),
        "isolated_atoms": (
            "dataset_acac/isolated_atoms.xyz",
            "b74f321b453374621b447d65c60979f70df1b7182c8ee0215388b2c574f33823",
        ),
    },
}

RMD17_URL = (
    "https://figshare.com/ndownloader/files/23950376"  # rmd17.tar.bz2, doi 10.6084/m9.figshare.12672038
)
RMD17_MOLECULES = (
    "aspirin",
    "azobenzene",
    "benzene",
    "ethanol",
    "malonaldehyde",
    "naphthalene",
    "paracetamol",
    "salicylic",
    "toluene",
    "uracil",
)
KCAL_PER_MOL = units.kcal / units.mol  # eV


@dataclass(frozen=True)
class NamedFile:
    """A data file: where it goes under the root, where it comes from, and its SHA-256."""

    dataset: str
    split: str
    relative_path: str
    sha256: str

    @property
    def url(self) -> str:
        return BOTNET_URL + self.relative_path


def named_file(dataset: str, split: str) -> NamedFile:
    """The file of one split of a BOTNet data set (``ethanol``, ``3bpa``, ``acetylacetone``)."""
    key = dataset.lower()
    if key not in BOTNET_FILES:
        raise InputError(f"unknown data set {dataset!r}; known: {sorted(BOTNET_FILES)}")
    if split not in BOTNET_FILES[key]:
        raise InputError(f"{dataset} has no split {split!r}; it has {sorted(BOTNET_FILES[key])}")
    return NamedFile(key, split, *BOTNET_FILES[key][split])


def fetch_named_file(dataset: str, split: str, root: str | os.PathLike, download: bool = False) -> Path:
    """Path of a checked data file under ``root``; downloaded first if missing and ``download``."""
    spec = named_file(dataset, split)
    path = Path(root) / spec.relative_path
    if not path.is_file():
        where = (
            f"{spec.dataset} {spec.split!r} needs {path}, which is missing. Put the file there "
            f"(it is {spec.url}, sha256 {spec.sha256})"
        )
        if not download:
            raise DatasetError(where + ", or pass download=True to fetch it.")
        _download(spec.url, path, spec.sha256, where)
    actual = file_sha256(path)
    if actual != spec.sha256:
        raise DatasetError(
            f"{path}: sha256 {actual} differs from the upstream file's {spec.sha256} ({spec.url}); "
            "replace it with the upstream file"
        )
    return path


def load_named(
    dataset: str, split: str, root: str | os.PathLike, download: bool = False
) -> list[LabelledStructure]:
    """The structures of one split (energy and forces required; isolated atoms: energy only)."""
    path = fetch_named_file(dataset, split, root, download)
    require = ("energy",) if split == "isolated_atoms" else ("energy", "forces")
    return read_structures(path, energy_key="energy", forces_key="forces", require=require)


def named_e0s(dataset: str, root: str | os.PathLike, download: bool = False) -> tuple[dict[int, float], str]:
    """E0s of a BOTNet data set from its isolated-atom file, and a sentence for the log."""
    isolated = load_named(dataset, "isolated_atoms", root, download)
    e0s = isolated_atom_energies(isolated)
    spec = named_file(dataset, "isolated_atoms")
    return e0s, f"E0s from the {len(e0s)} isolated-atom energies of {spec.relative_path} (same DFT settings)."


def ethanol(root: str | os.PathLike, split: str = "train", download: bool = False) -> list[LabelledStructure]:
    """Ethanol from rMD17 (PBE/def2-SVP): ``train`` (1000), ``test_MD``, and the BOTNet extra tests."""
    return load_named("ethanol", split, root, download)


def three_bpa(
    root: str | os.PathLike, split: str = "train_300K", download: bool = False
) -> list[LabelledStructure]:
    """3BPA (27 atoms, DFT): ``train_300K`` or ``train_mixedT`` (500 each); test sets are not upstream."""
    return load_named("3bpa", split, root, download)


def acetylacetone(
    root: str | os.PathLike, split: str = "train_300K", download: bool = False
) -> list[LabelledStructure]:
    """Acetylacetone (15 atoms, PBE+D3): ``train_300K/600K``, ``test_MD_300K/600K``, ``test_H_transfer``,
    ``test_dihedral``."""
    return load_named("acetylacetone", split, root, download)


def rmd17(root: str | os.PathLike, molecule: str, split: str | None = None) -> list[LabelledStructure]:
    """One rMD17 molecule from ``root/rmd17/npz_data/rmd17_<molecule>.npz`` (energies kcal/mol and
    forces kcal/mol/Å, converted to eV and eV/Å). ``split`` like ``"train_01"`` or ``"test_03"``
    keeps the frames listed in ``root/rmd17/splits/index_<split>.csv``.

    The archive has no checksum known to equitensor, so it is never downloaded here.
    """
    if molecule not in RMD17_MOLECULES:
        raise InputError(f"unknown rMD17 molecule {molecule!r}; known: {RMD17_MOLECULES}")
    path = Path(root) / "rmd17" / "npz_data" / f"rmd17_{molecule}.npz"
    if not path.is_file():
        raise DatasetError(
            f"rMD17 {molecule} needs {path}, which is missing. Download rmd17.tar.bz2 from {RMD17_URL} "
            f"and extract it in {root} (it holds rmd17/npz_data/ and rmd17/splits/)."
        )
    try:
        with np.load(path) as data:
            numbers, coords = data["nuclear_charges"], data["coords"]
            energies, forces = data["energies"], data["forces"]
    except (KeyError, ValueError, OSError) as error:
        raise DatasetError(f"{path}: not an rMD17 npz file ({error})") from error
    indices = np.arange(len(coords))
    if split is not None:
        split_path = Path(root) / "rmd17" / "splits" / f"index_{split}.csv"
        if not split_path.is_file():
            raise DatasetError(f"rMD17 split {split!r} needs {split_path}, which is missing")
        indices = np.loadtxt(split_path, dtype=np.int64).reshape(-1)
    frames = []
    for k in indices:
        atoms = Atoms(numbers=numbers, positions=coords[k])
        atoms.info["energy"] = float(energies[k]) * KCAL_PER_MOL
        atoms.arrays["forces"] = np.asarray(forces[k], dtype=np.float64) * KCAL_PER_MOL
        frames.append(atoms)
    return structures_from_atoms(frames, source=str(path), energy_key="energy", forces_key="forces")


def _download(url: str, path: Path, sha256: str, where: str) -> None:
    """Fetch ``url`` to ``path`` through a temporary file, keeping it only if the checksum matches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    tmp.write(block)
        except OSError as error:
            tmp.close()
            os.unlink(tmp.name)
            raise DatasetError(f"{where}; downloading it failed ({error}).") from error
    actual = file_sha256(Path(tmp.name))
    if actual != sha256:
        os.unlink(tmp.name)
        raise DatasetError(f"{where}; the download from {url} has sha256 {actual}, not the expected one.")
    os.replace(tmp.name, path)
