"""Training from an HDF5 graph store: the same run as from the extxyz file, r_max checks, the CLI,
and DataLoader workers over the training split."""

import json

import pytest
import torch
import yaml
from train_helpers import emt_frames, tiny_config, write_frames

from equitensor.cli import main
from equitensor.datasets import DatasetError, collate_graphs, write_store
from equitensor.train import run_training
from equitensor.train.config import config_from_dict
from equitensor.train.data import is_store, prepare_data

R_MAX = 3.0  # tiny_config's cutoff


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Train (with isolated atoms) and validation files, as extxyz and as stores."""
    folder = tmp_path_factory.mktemp("data")
    train = write_frames(folder / "train.xyz", emt_frames(8, seed=0))
    valid = write_frames(folder / "valid.xyz", emt_frames(3, seed=1, isolated=False))
    write_store(train, folder / "train.h5", R_MAX)
    write_store(valid, folder / "valid.h5", R_MAX)
    return folder


def run(tmp_path, train_file, **overrides):
    config = tiny_config(tmp_path, train_file, **overrides)
    return run_training(config_from_dict(config))


def losses_and_metrics(result) -> tuple[list[dict], list[dict]]:
    """History rows without their timings, and the final metrics table."""
    history = [{k: v for k, v in row.items() if "time" not in k} for row in result.history]
    return history, result.final_metrics


def test_store_run_equals_extxyz_run(tmp_path, files):
    from_xyz = run(tmp_path / "xyz", files / "train.xyz", valid_file=str(files / "valid.xyz"))
    from_store = run(tmp_path / "h5", files / "train.h5", valid_file=str(files / "valid.h5"))
    history, final = losses_and_metrics(from_store)
    assert len(history) == 2 and {"train_loss", "valid_loss"} <= set(history[0])
    assert (history, final) == losses_and_metrics(from_xyz)  # exactly, float64
    log = (from_store.run_dir / "train.log").read_text()
    assert "precomputed in the store" in log and "HDF5 graph store" in log


def test_store_statistics_and_split_match_the_in_memory_path(tmp_path, files):
    config = dict(tiny_config(tmp_path, files / "train.xyz"), shift="mean")
    memory = prepare_data(config_from_dict(config), torch.float64)
    stored = prepare_data(config_from_dict(dict(config, train_file=str(files / "train.h5"))), torch.float64)
    assert stored.e0s == memory.e0s and stored.avg_num_neighbors == memory.avg_num_neighbors
    assert len(stored.train_graphs) == len(memory.train_graphs) == 6  # 8 frames, 2 isolated atoms dropped
    for dataset, reference in [
        (stored.train_graphs, memory.train_graphs),
        (stored.valid_graphs, memory.valid_graphs),
    ]:
        assert not dataset.is_isolated_atom.any()
        for k in range(len(reference)):  # same frames in the same order
            assert torch.equal(dataset[k].graph.positions, reference[k].graph.positions)
            assert torch.equal(dataset[k].labels.forces, reference[k].labels.forces)
    # with the validation split taken from the store, its statistics cover both splits, and the
    # log says so; they are those of all eight non-isolated frames
    whole = prepare_data(
        config_from_dict(dict(config, train_file=str(files / "train.h5"), valid_fraction=0.1)), torch.float64
    )
    assert any("including its 1 validation" in note for note in whole.notes)
    forces = torch.cat(
        [stored.train_graphs[k].labels.forces for k in range(6)]
        + [stored.valid_graphs[k].labels.forces for k in range(2)]
    )
    assert whole.scale == pytest.approx(float(forces.square().mean().sqrt()), rel=1e-12)


def test_store_with_another_r_max_is_an_error(tmp_path, files):
    config = tiny_config(tmp_path, files / "train.h5", r_max=4.0)
    with pytest.raises(DatasetError, match=r"r_max = 3.0 Å, not 4.0 Å"):
        prepare_data(config_from_dict(config), torch.float64)
    config = tiny_config(tmp_path, files / "train.h5", valid_file=str(files / "valid.xyz"))
    write_store(files / "valid.xyz", tmp_path / "valid_r4.h5", 4.0)
    with pytest.raises(DatasetError, match="valid_r4.h5: the store's graphs are built for r_max = 4.0"):
        prepare_data(config_from_dict(dict(config, valid_file=str(tmp_path / "valid_r4.h5"))), torch.float64)


def test_store_found_by_signature(tmp_path, files):
    renamed = tmp_path / "train.graphs"
    renamed.write_bytes((files / "train.h5").read_bytes())
    assert is_store(str(renamed)) and not is_store(str(files / "train.xyz"))
    data = prepare_data(config_from_dict(tiny_config(tmp_path, renamed)), torch.float64)
    assert len(data.train_graphs) + len(data.valid_graphs) == 8


def test_cli_trains_from_a_store(tmp_path, files, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path, files / "train.h5", epochs=1)))
    assert main(["train", str(config)]) == 0, capsys.readouterr().err
    rows = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert [row["name"] for row in rows][:2] == ["train", "valid"]
    assert rows[0]["structures"] == 6 and rows[1]["structures"] == 2


def test_dataloader_workers_read_the_training_split(tmp_path, files):
    from torch.utils.data import DataLoader

    data = prepare_data(config_from_dict(tiny_config(tmp_path, files / "train.h5")), torch.float64)
    dataset = data.train_graphs
    dataset[0]  # the file is open in this process; workers must open their own
    batches = [[0, 1], [2, 3], [4, 5]]
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_graphs, num_workers=2)
    for batch, indices in zip(loader, batches):
        expected = collate_graphs([dataset[k] for k in indices])
        assert torch.equal(batch.graph.positions, expected.graph.positions)
        assert torch.equal(batch.graph.edge_index, expected.graph.edge_index)
        assert torch.equal(batch.labels.energy, expected.labels.energy)
