"""Labelled structures read from extxyz (or anything ASE reads), checked frame by frame.

Label keys are configurable (``energy_key``, ``forces_key``, ``stress_key``, ``virials_key``).
A key is looked up in ``atoms.info`` / ``atoms.arrays`` first, then in the results of the frame's
calculator (ASE's extxyz reader moves ``energy``, ``forces`` and ``stress`` there). With a key left
as ``None`` the reader accepts either ASE's name or MACE's ``REF_`` name (``energy`` or
``REF_energy``), but only one of them per file: a file holding both must say which one to use.

Per-structure weights follow MACE: ``config_weight`` and ``config_{energy,forces,stress,virials}_weight``
in ``atoms.info``, ``config_type`` (default "Default") with optional ``config_type_weights``.
Every problem raises :class:`DatasetError` naming the file and the frame (counting from 0).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.io import iread
from ase.stress import voigt_6_to_full_3x3_stress

from equitensor.datasets.atoms_to_graph import neighbour_list
from equitensor.errors import InputError

LABELS = ("energy", "forces", "stress", "virials")
DEFAULT_KEYS = {label: (label, f"REF_{label}") for label in LABELS}


class DatasetError(InputError):
    """A data file or structure that cannot be used, with the file and frame it came from.

    >>> from ase import Atoms
    >>> try:
    ...     structures_from_atoms([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]])])
    ... except DatasetError as error:
    ...     print(error)
    <atoms>, frame 0: missing energy (key 'energy' or 'REF_energy'); keys present: []
    """


@dataclass
class LabelledStructure:
    """One structure and its reference labels (eV, Å; stress in eV/Å^3 with ASE's sign).

    Absent labels are ``None``; ``label_weights`` holds the per-label weights (1 unless the file
    says otherwise). ``source`` says where the structure came from, for error messages.

    >>> import numpy as np
    >>> structure = LabelledStructure(
    ...     positions=np.zeros((1, 3)), numbers=np.array([29]), cell=np.zeros((3, 3)),
    ...     pbc=np.zeros(3, bool), energy=3.51, config_type="IsolatedAtom")
    >>> structure.num_atoms, structure.to_atoms().get_chemical_formula()
    (1, 'Cu')
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    virials: np.ndarray | None = None
    weight: float = 1.0
    label_weights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LABELS, 1.0))
    config_type: str = "Default"
    source: str = ""

    @property
    def num_atoms(self) -> int:
        return len(self.numbers)

    def to_atoms(self) -> Atoms:
        """The structure as ASE Atoms (without labels)."""
        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)


def read_structures(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    virials_key: str | None = None,
    require: Sequence[str] = ("energy", "forces"),
    config_type_weights: dict[str, float] | None = None,
    min_distance: float = 1e-3,
) -> list[LabelledStructure]:
    """Every frame of ``path`` as a checked LabelledStructure.

    ``require`` names the labels every frame must have; forces are not required of one-atom
    frames (they are zero), stress and virials only of periodic frames. Two atoms closer than
    ``min_distance`` Å are an error.

    Example: the shipped data set (2 isolated atoms, then 300 CuNi cells with stress).

    >>> from equitensor.datasets import default_dataset_path
    >>> structures = read_structures(default_dataset_path())
    >>> len(structures), structures[2].num_atoms, structures[2].forces.shape, structures[2].stress.shape
    (302, 32, (32, 3), (3, 3))
    """
    path = _checked_path(path)
    return structures_from_atoms(
        list(_read_frames(path, format)),
        source=path,
        energy_key=energy_key,
        forces_key=forces_key,
        stress_key=stress_key,
        virials_key=virials_key,
        require=require,
        config_type_weights=config_type_weights,
        min_distance=min_distance,
    )


def iter_structures(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    virials_key: str | None = None,
    require: Sequence[str] = ("energy", "forces"),
    config_type_weights: dict[str, float] | None = None,
    min_distance: float = 1e-3,
) -> Iterator[LabelledStructure]:
    """The frames of ``path`` one at a time, checked as :func:`read_structures` checks them, for
    files larger than memory.

    A key left as ``None`` is resolved frame by frame: the first default name met is used, and a
    later frame holding the other one is an error (as a file holding both is for read_structures).
    """
    path = _checked_path(path)
    _check_require(require)
    given = {"energy": energy_key, "forces": forces_key, "stress": stress_key, "virials": virials_key}
    keys = dict(given)
    count = 0
    for index, atoms in enumerate(_read_frames(path, format)):
        where = f"{path}, frame {index}"
        for label in LABELS:
            if given[label] is None:
                found = _resolve_key(label, None, [atoms], where)
                if found is not None and keys[label] not in (None, found):
                    raise DatasetError(
                        f"{where}: holds {found!r} but earlier frames hold {keys[label]!r}; "
                        f"pass {label}_key to say which one holds the reference {label}"
                    )
                keys[label] = keys[label] or found
        yield _structure(atoms, where, keys, require, config_type_weights, min_distance)
        count += 1
    if count == 0:
        raise DatasetError(f"{path}: empty data set, no structures in it")


def _checked_path(path: str | os.PathLike) -> str:
    """``path`` as a string, if it names a non-empty file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such file")
    with open(path, "rb") as f:
        if not f.read(4096).strip():
            raise DatasetError(f"{path}: empty data set, the file is empty")
    return path


def _read_frames(path: str, format: str | None) -> Iterator[Atoms]:
    """ASE's frames of ``path``, one at a time; a frame ASE cannot parse is a DatasetError."""
    frames = iread(path, index=":", format=format)
    index = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as error:  # ASE raises many kinds of errors on malformed files
            raise DatasetError(
                f"{path}, frame {index}: malformed file, ASE could not read it "
                f"({type(error).__name__}: {error})"
            ) from error
        yield atoms
        index += 1


def _check_require(require: Sequence[str]) -> None:
    unknown = set(require) - set(LABELS)
    if unknown:
        raise ValueError(f"require names unknown labels {sorted(unknown)}; known: {LABELS}")


def structures_from_atoms(
    frames: Iterable[Atoms],
    *,
    source: str = "<atoms>",
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    virials_key: str | None = None,
    require: Sequence[str] = ("energy", "forces"),
    config_type_weights: dict[str, float] | None = None,
    min_distance: float = 1e-3,
) -> list[LabelledStructure]:
    """ASE Atoms (labels in info/arrays or a calculator) as checked LabelledStructures.

    Example: labels from an EMT calculator's results.

    >>> from ase.build import bulk
    >>> from ase.calculators.emt import EMT
    >>> atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    >>> atoms.calc = EMT()
    >>> _ = atoms.get_stress()  # energy, forces and stress are now in atoms.calc.results
    >>> [structure] = structures_from_atoms([atoms], require=("energy", "forces", "stress"))
    >>> round(structure.energy, 4), structure.forces.shape, structure.stress.shape, structure.source
    (-0.0268, (4, 3), (3, 3), '<atoms>, frame 0')
    """
    frames = list(frames)
    if not frames:
        raise DatasetError(f"{source}: empty data set, no structures in it")
    _check_require(require)
    given = {"energy": energy_key, "forces": forces_key, "stress": stress_key, "virials": virials_key}
    keys = {label: _resolve_key(label, given[label], frames, source) for label in LABELS}
    return [
        _structure(atoms, f"{source}, frame {index}", keys, require, config_type_weights, min_distance)
        for index, atoms in enumerate(frames)
    ]


def _available(atoms: Atoms) -> dict[str, object]:
    """Every label-like value of a frame: info, arrays, then calculator results."""
    values = {k: v for k, v in atoms.arrays.items() if k not in ("numbers", "positions")}
    values.update(atoms.info)
    if atoms.calc is not None:
        for k, v in getattr(atoms.calc, "results", {}).items():
            values.setdefault(k, v)
    return values


def _resolve_key(label: str, key: str | None, frames: list[Atoms], source: str) -> str | None:
    """The key to read ``label`` from: the given one, or the one default name present in the file."""
    if key is not None:
        return key
    present = [name for name in DEFAULT_KEYS[label] if any(name in _available(a) for a in frames)]
    if len(present) > 1:
        raise DatasetError(
            f"{source}: both {present[0]!r} and {present[1]!r} are present; "
            f"pass {label}_key to say which one holds the reference {label}"
        )
    return present[0] if present else None


def _structure(
    atoms: Atoms,
    where: str,
    keys: dict[str, str | None],
    require: Sequence[str],
    config_type_weights: dict[str, float] | None,
    min_distance: float,
) -> LabelledStructure:
    num_atoms = len(atoms)
    if num_atoms == 0:
        raise DatasetError(f"{where}: structure with no atoms")
    positions = np.array(atoms.positions, dtype=np.float64)
    if not np.isfinite(positions).all():
        raise DatasetError(f"{where}: positions contain NaN or inf")
    cell = np.array(atoms.cell.array, dtype=np.float64)
    pbc = np.array(atoms.pbc, dtype=bool)
    flat = [k for k in range(3) if pbc[k] and np.linalg.norm(cell[k]) < 1e-9]
    if flat or (pbc.all() and abs(np.linalg.det(cell)) < 1e-9):
        raise DatasetError(
            f"{where}: periodic (pbc={pbc.tolist()}) but the cell {cell.tolist()} is degenerate"
        )
    _check_no_overlap(atoms, where, min_distance)

    available = _available(atoms)
    labels: dict[str, object] = {}
    for label in LABELS:
        key = keys[label]
        value = available.get(key) if key is not None else None
        if value is None:
            exempt = (label == "forces" and num_atoms == 1) or (
                label in ("stress", "virials") and not pbc.all()
            )
            if label in require and not exempt:
                wanted = repr(key) if key is not None else " or ".join(map(repr, DEFAULT_KEYS[label]))
                raise DatasetError(
                    f"{where}: missing {label} (key {wanted}); keys present: {sorted(available)}"
                )
            labels[label] = None
            continue
        labels[label] = _convert(label, key, value, num_atoms, where)
    if labels["forces"] is None and num_atoms == 1 and "forces" in require:
        labels["forces"] = np.zeros((1, 3))  # one atom: the net force, hence its force, is zero
    if labels["stress"] is not None and labels["virials"] is not None and pbc.all():
        _check_stress_matches_virials(labels["stress"], labels["virials"], abs(np.linalg.det(cell)), where)

    info = atoms.info
    config_type = str(info.get("config_type", "Default"))
    weight = _weight(info, "config_weight", where)
    if config_type_weights is not None:
        weight *= float(config_type_weights.get(config_type, 1.0))
    label_weights = {
        label: _weight(info, f"config_{label}_weight", where) if labels[label] is not None else 0.0
        for label in LABELS
    }
    return LabelledStructure(
        positions=positions,
        numbers=np.array(atoms.numbers, dtype=np.int64),
        cell=cell,
        pbc=pbc,
        energy=labels["energy"],
        forces=labels["forces"],
        stress=labels["stress"],
        virials=labels["virials"],
        weight=weight,
        label_weights=label_weights,
        config_type=config_type,
        source=where,
    )


def _convert(label: str, key: str, value: object, num_atoms: int, where: str):
    """One label as float / (N, 3) / (3, 3) array, checked for shape and finiteness."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{where}: {label} ({key!r}) is not numeric: {value!r}") from error
    if label == "energy":
        if array.size != 1:
            raise DatasetError(f"{where}: energy ({key!r}) has shape {array.shape}, expected one number")
        array = array.reshape(())
    elif label == "forces":
        if array.shape != (num_atoms, 3):
            raise DatasetError(
                f"{where}: forces ({key!r}) have shape {array.shape}, expected ({num_atoms}, 3)"
            )
    else:
        if array.shape == (6,):
            array = voigt_6_to_full_3x3_stress(array)  # ASE Voigt order xx yy zz yz xz xy
        elif array.size == 9:
            array = array.reshape(3, 3)
        else:
            raise DatasetError(
                f"{where}: {label} ({key!r}) has shape {array.shape}, expected 3x3, 9 or Voigt 6"
            )
    if not np.isfinite(array).all():
        raise DatasetError(f"{where}: {label} ({key!r}) contains NaN or inf")
    return float(array) if label == "energy" else array


def _check_no_overlap(atoms: Atoms, where: str, min_distance: float) -> None:
    if len(atoms) < 2 and not atoms.pbc.any():
        return
    # vesin's cell list is slow for tiny cutoffs (tens of ms at 1e-3 Å), so search a 2 Å sphere.
    try:
        sender, receiver, shifts = neighbour_list(atoms, max(min_distance, 2.0))
    except Exception as error:
        raise DatasetError(f"{where}: neighbour list failed ({error})") from error
    vectors = atoms.positions[receiver] - atoms.positions[sender] + shifts @ atoms.cell.array
    close = np.flatnonzero(np.linalg.norm(vectors, axis=1) < min_distance)
    if len(close):
        ordered = close[sender[close] <= receiver[close]]  # each pair appears both ways: lower index first
        k = ordered[0] if len(ordered) else close[0]
        raise DatasetError(
            f"{where}: atoms {int(sender[k])} and {int(receiver[k])} (cell shift {shifts[k].tolist()}) "
            f"are closer than {min_distance} Å: two atoms at the same position"
        )


def _check_stress_matches_virials(stress: np.ndarray, virials: np.ndarray, volume: float, where: str) -> None:
    """Both given: they must agree as virials = -stress * volume (ASE's stress sign)."""
    expected = -stress * volume
    scale = max(np.abs(expected).max(), np.abs(virials).max(), 1e-8)
    if np.abs(virials - expected).max() > 1e-3 * scale:
        raise DatasetError(
            f"{where}: stress and virials disagree: expected virials = -stress * volume "
            f"(ASE sign convention), got virials {virials.tolist()} and -stress*V {expected.tolist()}"
        )


def _weight(info: dict, key: str, where: str) -> float:
    value = info.get(key, 1.0)
    try:
        weight = float(value)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{where}: {key} is not a number: {value!r}") from error
    if not np.isfinite(weight) or weight < 0:
        raise DatasetError(f"{where}: {key} must be a finite number >= 0, got {weight}")
    return weight
