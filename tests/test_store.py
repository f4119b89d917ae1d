"""The HDF5 graph store: same items as GraphDataset, statistics as computed in memory, bounded
memory while writing, DataLoader workers, and errors that name the file and frame."""

import pickle
from dataclasses import fields

import h5py
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from torch.utils.data import DataLoader

from equitensor.datasets import (
    DatasetError,
    GraphDataset,
    MaxSizeBatchSampler,
    collate_graphs,
    compute_e0s,
    read_structures,
    split_isolated_atoms,
)
from equitensor.datasets import store as store_module
from equitensor.datasets.batching import Labels
from equitensor.datasets.reading import iter_structures
from equitensor.datasets.store import StoredGraphDataset, write_store
from equitensor.graph import AtomicGraph

R_MAX = 4.0


def labelled(atoms: Atoms, stress: bool = True, **info) -> Atoms:
    """A copy of ``atoms`` holding EMT's labels as calculator results, and ``info``."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress()
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    frame.info.update(info)
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def cuni_cell(rng: np.random.Generator) -> Atoms:
    """A rattled 8-atom fcc cell with random Cu/Ni occupancy (compositions vary: E0s are fittable)."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (1, 1, 2)
    atoms.symbols = list(rng.choice(["Cu", "Ni"], size=len(atoms)))
    atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
    return atoms


def mixed_frames(num: int = 12, seed: int = 0, isolated: bool = True) -> list[Atoms]:
    """Periodic cells with weights and config types, a non-periodic cluster without stress, and
    (optionally) isolated Cu and Ni atoms."""
    rng = np.random.default_rng(seed)
    frames = []
    if isolated:
        for symbol in ("Cu", "Ni"):
            frames.append(labelled(Atoms(symbol, pbc=False), stress=False, config_type="IsolatedAtom"))
    for k in range(num):
        info = {"config_type": "bulk" if k % 2 else "strained"}
        if k % 3 == 0:
            info["config_weight"] = 0.5
            info["config_forces_weight"] = 2.0
        frames.append(labelled(cuni_cell(rng), **info))
    cluster = Atoms("Cu3Ni", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]], pbc=False)
    cluster.cell = np.diag([10.0, 11.0, 12.0])  # a cell that a non-periodic graph must not use
    frames.append(labelled(cluster, stress=False, config_type="cluster"))
    return frames


def assert_items_equal(stored, expected) -> None:
    for f in fields(AtomicGraph):
        a, b = getattr(stored.graph, f.name), getattr(expected.graph, f.name)
        assert (a == b) if f.name == "num_graphs" else (a.dtype == b.dtype and torch.equal(a, b)), f.name
    for f in fields(Labels):
        a, b = getattr(stored.labels, f.name), getattr(expected.labels, f.name)
        assert (a == b) if f.name == "config_type" else (a.dtype == b.dtype and torch.equal(a, b)), f.name


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "mixed.xyz"
    write(path, mixed_frames())
    return path


@pytest.fixture(scope="module")
def mixed_store(mixed_file):
    path = mixed_file.with_suffix(".h5")
    write_store(mixed_file, path, R_MAX, chunk=5)
    return path


def test_items_equal_graph_dataset_items(mixed_file, mixed_store, dtype):
    structures = read_structures(mixed_file)
    expected = GraphDataset(structures, R_MAX, dtype)
    stored = StoredGraphDataset(mixed_store, dtype=dtype)
    assert len(stored) == len(expected) == len(structures)
    assert stored.r_max == expected.r_max
    assert np.array_equal(stored.num_atoms, expected.num_atoms)
    assert np.array_equal(stored.num_edges, expected.num_edges)
    assert stored.average_num_neighbours() == expected.average_num_neighbours()
    for k in range(len(stored)):
        assert_items_equal(stored[k], expected[k])
    assert_items_equal(stored[-1], expected[len(expected) - 1])
    with pytest.raises(IndexError):
        stored[len(stored)]


def test_statistics_with_isolated_atoms_equal_in_memory_ones(mixed_file, mixed_store):
    structures = read_structures(mixed_file)
    isolated, others = split_isolated_atoms(structures)
    e0s, sentence = compute_e0s(structures)
    statistics = StoredGraphDataset(mixed_store).statistics
    assert statistics.e0s == e0s and statistics.e0s_method == sentence
    interaction = [(s.energy - sum(e0s[int(z)] for z in s.numbers)) / s.num_atoms for s in others]
    assert statistics.mean_interaction_energy_per_atom == pytest.approx(np.mean(interaction), rel=1e-12)
    forces = np.concatenate([s.forces for s in others])
    assert statistics.rms_forces == pytest.approx(np.sqrt(np.mean(forces**2)), rel=1e-12)
    in_memory = GraphDataset(others, R_MAX)
    assert statistics.avg_num_neighbours == pytest.approx(in_memory.average_num_neighbours(), rel=1e-12)
    assert statistics.num_structures == len(structures)
    assert statistics.num_isolated_atoms == len(isolated) == 2
    assert statistics.num_atoms == sum(s.num_atoms for s in structures)
    assert statistics.num_edges == int(GraphDataset(structures, R_MAX).num_edges.sum())
    assert statistics.elements == [28, 29]
    assert statistics.label_counts == {
        label: sum(getattr(s, label) is not None for s in structures)
        for label in ("energy", "forces", "stress", "virials")
    }


def test_least_squares_e0s_equal_compute_e0s_fit(tmp_path):
    path = tmp_path / "no_isolated.xyz"
    write(path, mixed_frames(num=15, seed=1, isolated=False))
    write_store(path, tmp_path / "s.h5", R_MAX, chunk=4)
    statistics = StoredGraphDataset(tmp_path / "s.h5").statistics
    structures = read_structures(path)
    e0s, sentence = compute_e0s(structures)
    assert "least squares" in sentence
    assert statistics.e0s.keys() == e0s.keys()
    for z in e0s:
        assert statistics.e0s[z] == pytest.approx(e0s[z], rel=1e-9, abs=1e-9)
    assert statistics.e0s_method == sentence
    interaction = [(s.energy - sum(e0s[int(z)] for z in s.numbers)) / s.num_atoms for s in structures]
    assert statistics.mean_interaction_energy_per_atom == pytest.approx(np.mean(interaction), abs=1e-9)


def test_least_squares_on_one_composition_is_the_minimum_norm_solution(tmp_path):
    rng = np.random.default_rng(2)
    frames = []
    for _ in range(6):
        cluster = Atoms("Cu3Ni", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0], [0, 0, 2.5]], pbc=False)
        cluster.positions += rng.normal(scale=0.1, size=(4, 3))
        frames.append(labelled(cluster, stress=False))
    write(tmp_path / "one.xyz", frames)
    write_store(tmp_path / "one.xyz", tmp_path / "one.h5", R_MAX)
    statistics = StoredGraphDataset(tmp_path / "one.h5").statistics
    e0s, sentence = compute_e0s(read_structures(tmp_path / "one.xyz"))
    assert "not unique" in sentence and statistics.e0s_method == sentence
    for z in e0s:
        assert statistics.e0s[z] == pytest.approx(e0s[z], rel=1e-9, abs=1e-9)


def test_isolated_atoms_missing_an_element_leave_e0s_undetermined_with_the_reason(tmp_path):
    frames = [f for f in mixed_frames(num=3) if not (len(f) == 1 and f.symbols[0] == "Ni")]
    write(tmp_path / "partial.xyz", frames)
    write_store(tmp_path / "partial.xyz", tmp_path / "partial.h5", R_MAX)
    statistics = StoredGraphDataset(tmp_path / "partial.h5").statistics
    with pytest.raises(DatasetError) as error:
        compute_e0s(read_structures(tmp_path / "partial.xyz"))
    assert statistics.e0s is None and statistics.mean_interaction_energy_per_atom is None
    assert statistics.e0s_method == f"E0s not determined: {error.value}"


def test_writer_holds_at_most_chunk_structures(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    write(tmp_path / "fifty.xyz", [labelled(cuni_cell(rng)) for _ in range(50)])
    read = {"frames": 0}
    blocks = []

    def counting(*args, **kwargs):
        for structure in iter_structures(*args, **kwargs):
            read["frames"] += 1
            yield structure

    original_append = store_module._AppendableTables.append

    def recording(self, table, block):
        if table == "structures":
            blocks.append((read["frames"], self.rows["structures"], len(block["num_atoms"])))
        original_append(self, table, block)

    monkeypatch.setattr(store_module, "iter_structures", counting)
    monkeypatch.setattr(store_module._AppendableTables, "append", recording)
    write_store(tmp_path / "fifty.xyz", tmp_path / "fifty.h5", R_MAX, chunk=8)
    assert read["frames"] == 50
    assert [size for _, _, size in blocks] == [8] * 6 + [2]
    for frames_read, rows_written, size in blocks:
        assert frames_read - rows_written == size <= 8  # only the block being written is in memory
    assert len(StoredGraphDataset(tmp_path / "fifty.h5")) == 50


def test_frames_are_read_lazily(tmp_path):
    path = tmp_path / "late_error.xyz"
    write(path, mixed_frames(num=2, isolated=False))
    text = path.read_text().splitlines(keepends=True)
    last_atom_line = len(text) - 1  # the cluster's last atom, in the last frame
    text[last_atom_line] = text[last_atom_line].replace(text[last_atom_line].split()[1], "x", 1)
    path.write_text("".join(text))
    frames = iter_structures(path)
    assert next(frames).num_atoms == 8  # the first frame arrives before the broken one is parsed
    with pytest.raises(DatasetError, match=r"late_error\.xyz, frame 2: malformed"):
        list(frames)


def test_default_keys_must_agree_across_frames(tmp_path):
    first, second = mixed_frames(num=2, isolated=False)[:2]
    second.info["REF_energy"] = second.calc.results.pop("energy")
    write(tmp_path / "two_keys.xyz", [first, second])
    with pytest.raises(DatasetError, match=r"two_keys\.xyz, frame 1: holds 'REF_energy'.*'energy'"):
        write_store(tmp_path / "two_keys.xyz", tmp_path / "two_keys.h5", R_MAX)
    with pytest.raises(DatasetError, match="both 'energy' and 'REF_energy'"):
        read_structures(tmp_path / "two_keys.xyz")  # the in-memory reader refuses the same file


@pytest.mark.parametrize(
    "damage, message",
    [
        ("nan_forces", r"bad\.xyz, frame 2: forces \('forces'\) contains NaN"),
        ("overlap", r"bad\.xyz, frame 2: atoms 0 and 1 .* closer than"),
    ],
)
def test_bad_frames_name_file_and_frame_and_leave_no_store(tmp_path, damage, message):
    frames = mixed_frames(num=3, isolated=False)
    if damage == "nan_forces":
        frames[2].calc.results["forces"][1, 0] = np.nan
    else:
        frames[2].positions[1] = frames[2].positions[0]
    write(tmp_path / "bad.xyz", frames)
    with pytest.raises(DatasetError, match=message):
        write_store(tmp_path / "bad.xyz", tmp_path / "bad.h5", R_MAX, chunk=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.xyz"]


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(DatasetError, match=r"absent\.xyz: no such file"):
        write_store(tmp_path / "absent.xyz", tmp_path / "a.h5", R_MAX)
    (tmp_path / "empty.xyz").write_text("\n")
    with pytest.raises(DatasetError, match=r"empty\.xyz: empty data set"):
        write_store(tmp_path / "empty.xyz", tmp_path / "a.h5", R_MAX)


def test_opening_wrong_files(tmp_path, mixed_store):
    with pytest.raises(DatasetError, match="no such file"):
        StoredGraphDataset(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        StoredGraphDataset(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(DatasetError, match="not an equitensor graph store"):
        StoredGraphDataset(tmp_path / "other.h5")
    with pytest.raises(DatasetError, match=r"built for r_max = 4.0 Å, not 5.0 Å"):
        StoredGraphDataset(mixed_store, r_max=5.0)
    assert StoredGraphDataset(mixed_store, r_max=R_MAX).r_max == R_MAX


def test_provenance(mixed_file, mixed_store):
    provenance = StoredGraphDataset(mixed_store).provenance
    assert provenance["input"] == str(mixed_file.resolve())
    assert provenance["input_sha256"] == store_module.file_sha256(mixed_file)
    import hashlib

    assert provenance["input_sha256"] == hashlib.sha256(mixed_file.read_bytes()).hexdigest()
    assert provenance["r_max"] == R_MAX
    assert provenance["keys"] == {"energy": None, "forces": None, "stress": None, "virials": None}
    from equitensor import __version__

    assert provenance["versions"]["equitensor"] == __version__


def test_subset_and_isolated_atom_mask(mixed_store):
    stored = StoredGraphDataset(mixed_store)
    assert stored.is_isolated_atom.tolist() == [True, True] + [False] * (len(stored) - 2)
    indices = np.flatnonzero(~stored.is_isolated_atom)[::2]
    part = stored.subset(indices)
    assert len(part) == len(indices)
    assert np.array_equal(part.num_atoms, stored.num_atoms[indices])
    assert np.array_equal(part.num_edges, stored.num_edges[indices])
    for k, index in enumerate(indices):
        assert_items_equal(part[k], stored[int(index)])


def test_dataloader_with_two_workers(mixed_store):
    stored = StoredGraphDataset(mixed_store)
    stored[0]  # the parent holds an open handle when the workers fork
    sampler = MaxSizeBatchSampler.for_dataset(stored, max_atoms=20, shuffle=True, seed=1)
    loader = DataLoader(stored, batch_sampler=sampler, collate_fn=collate_graphs, num_workers=2)
    batches = list(loader)
    expected = [collate_graphs([stored[k] for k in indices]) for indices in sampler]
    assert len(batches) == len(expected) > 2
    for batch, reference in zip(batches, expected):
        assert torch.equal(batch.graph.positions, reference.graph.positions)
        assert torch.equal(batch.graph.edge_index, reference.graph.edge_index)
        assert torch.equal(batch.labels.forces, reference.labels.forces)
        assert batch.labels.config_type == reference.labels.config_type


def test_pickles_without_its_file_handle(mixed_store):
    stored = StoredGraphDataset(mixed_store)
    stored[3]
    copy = pickle.loads(pickle.dumps(stored))
    assert copy._file is None
    assert_items_equal(copy[3], stored[3])
    stored.close()
    assert_items_equal(stored[3], copy[3])  # reopens on demand
