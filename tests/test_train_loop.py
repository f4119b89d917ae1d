"""The training loop on tiny data: outputs, exact resume, saved models, and bad input."""

import json

import pytest
import torch
from train_helpers import emt_frames, tiny_config, write_frames

from equitensor import load_model
from equitensor.datasets import DatasetError, GraphDataset, collate_graphs, read_structures
from equitensor.train import run_training
from equitensor.train.config import ConfigError, config_from_dict


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_frames(tmp_path_factory.mktemp("data") / "train.xyz", emt_frames(8, seed=0))


def train(tmp_path, data_file, resume=False, **overrides):
    return run_training(config_from_dict(tiny_config(tmp_path, data_file, **overrides)), resume=resume)


def test_run_writes_logs_checkpoints_and_a_loadable_model(tmp_path, data_file):
    result = train(tmp_path, data_file, plots=True, test_file=str(data_file))
    run = tmp_path / "run"
    for name in [
        "metrics.csv",
        "metrics.json",
        "train.log",
        "final_metrics.txt",
        "final_metrics.json",
        "tiny.model",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "learning_curves.png",
        "parity_valid.png",
        "parity_test.png",
    ]:
        assert (run / name).is_file(), name
    history = json.loads((run / "metrics.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"train_loss", "valid_loss", "valid_energy_rmse", "valid_forces_mae", "valid_stress_rmse"} <= set(
        history[0]
    )
    assert (run / "metrics.csv").read_text().count("\n") == 3
    names = [row["name"] for row in result.final_metrics]
    assert names == ["train", "valid", "test", "valid baseline", "test baseline"]

    # the model file and both checkpoints load with load_model and predict the same numbers
    structures = read_structures(data_file)[2:5]
    batch = collate_graphs(list(GraphDataset(structures, 3.0, torch.float64)))
    model = load_model(result.model_path).double()
    best = load_model(run / "checkpoints/best.pt").double()
    reference = model(batch.graph)
    for other in (best, load_model(run / "checkpoints/best.pt")):
        out = other(batch.graph)
        torch.testing.assert_close(out["energy"], reference["energy"])
        torch.testing.assert_close(out["forces"], reference["forces"])
    test_row = result.final_metrics[2]
    assert test_row["structures"] == 8 and test_row["forces_count"] == 8 * 4 * 3


def test_resume_continues_exactly(tmp_path, data_file):
    uninterrupted = train(tmp_path / "a", data_file, epochs=3)
    train(tmp_path / "b", data_file, epochs=1)
    resumed = train(tmp_path / "b", data_file, epochs=3, resume=True)
    assert len(resumed.history) == 3
    for before, after in zip(uninterrupted.history, resumed.history):
        for key in ("train_loss", "valid_loss", "valid_forces_rmse", "lr"):
            assert after[key] == before[key], key
    a = load_model(uninterrupted.model_path)
    b = load_model(resumed.model_path)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_existing_run_needs_resume_and_resume_needs_same_model(tmp_path, data_file):
    train(tmp_path, data_file, epochs=1)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tmp_path, data_file, epochs=1)
    with pytest.raises(ConfigError, match="different r_max"):
        train(tmp_path, data_file, epochs=2, r_max=3.5, resume=True)
    with pytest.raises(ConfigError, match="no run to continue"):
        train(tmp_path / "elsewhere", data_file, resume=True)


def test_mace_trains_and_loss_decreases(tmp_path, data_file):
    result = train(
        tmp_path,
        data_file,
        model="mace",
        model_kwargs={"num_channels": 4, "max_L": 1, "max_ell": 1, "correlation": 2, "radial_MLP": [8]},
        epochs=3,
        ema=False,
        lr=0.02,
    )
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]


def test_unknown_element_in_validation_file(tmp_path, data_file):
    valid = write_frames(tmp_path / "valid.xyz", emt_frames(2, seed=1, elements=("Cu", "Ag"), isolated=False))
    with pytest.raises(DatasetError, match=r"valid.xyz, frame \d+: validation structure has element\(s\) Ag"):
        train(tmp_path, data_file, valid_file=str(valid))


def test_empty_and_isolated_only_data(tmp_path, data_file):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(DatasetError, match="empty"):
        train(tmp_path, data_file, test_file=str(empty))
    isolated = write_frames(tmp_path / "isolated.xyz", emt_frames(0))
    with pytest.raises(DatasetError, match="no training structures besides 2 isolated-atom"):
        train(tmp_path, isolated)


def test_model_kwargs_are_checked(tmp_path, data_file):
    with pytest.raises(
        ConfigError, match="TensorNet has no argument.*hidden_channel.*valid: hidden_channels"
    ):
        train(tmp_path, data_file, model_kwargs={"hidden_channel": 4})
    with pytest.raises(ConfigError, match="model_kwargs sets cutoff"):
        train(tmp_path, data_file, model_kwargs={"cutoff": 4.0})


def test_e0s_choices(tmp_path, data_file):
    no_isolated = write_frames(tmp_path / "noiso.xyz", emt_frames(6, seed=2, isolated=False))
    with pytest.raises(DatasetError, match="no one-atom frames"):
        train(tmp_path, no_isolated, e0s="isolated")
    with pytest.raises(DatasetError, match="no E0 for Ni"):
        train(tmp_path, no_isolated, e0s={"Cu": -0.1})
    result = train(tmp_path, no_isolated, e0s="least_squares", epochs=1)
    assert "E0s fitted by least squares" in (result.run_dir / "train.log").read_text()


def test_early_stopping_after_patience_evaluations(tmp_path, data_file, monkeypatch):
    from equitensor.train.trainer import Trainer

    losses = iter([3.0, 2.0, 2.5, 2.1, 1.0, 0.5])
    original = Trainer._validate

    def fake_validate(self):
        summary = original(self)
        summary["loss"] = next(losses)
        return summary

    monkeypatch.setattr(Trainer, "_validate", fake_validate)
    result = train(tmp_path, data_file, epochs=6, patience=2)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]  # no improvement in epochs 3 and 4
    assert result.best_epoch == 2
    assert "early stop" in (result.run_dir / "train.log").read_text()


def test_cosine_schedule_with_warmup():
    from equitensor.train.optim import WarmupCosine

    schedule = WarmupCosine(warmup_epochs=2, epochs=12, min_factor=0.1)
    assert [schedule(e) for e in (0, 1)] == [1 / 3, 2 / 3]
    assert schedule(2) == pytest.approx(1.0)
    assert schedule(7) == pytest.approx(0.1 + 0.9 * 0.5)
    assert schedule(12) == pytest.approx(0.1) and schedule(20) == pytest.approx(0.1)


def test_statistics_from_the_training_split(tmp_path, data_file):
    import numpy as np
    from ase.neighborlist import neighbor_list

    from equitensor.train.data import prepare_data

    config = config_from_dict(tiny_config(tmp_path, data_file, shift="mean"))
    data = prepare_data(config, torch.float64)
    e0s = {29: emt_frames(0)[0].get_potential_energy(), 28: emt_frames(0)[1].get_potential_energy()}
    assert data.e0s == pytest.approx(e0s)
    per_atom = [(s.energy - sum(e0s[int(z)] for z in s.numbers)) / s.num_atoms for s in data.train]
    assert data.shift == pytest.approx(np.mean(per_atom), rel=1e-12)
    forces = np.concatenate([s.forces for s in data.train])
    assert data.scale == pytest.approx(np.sqrt(np.mean(forces**2)), rel=1e-12)
    edges = sum(len(neighbor_list("i", s.to_atoms(), 3.0)) for s in data.train)
    assert data.avg_num_neighbors == pytest.approx(edges / sum(s.num_atoms for s in data.train), rel=1e-12)
    assert len(data.train) + len(data.valid) == 8 and len(data.valid) == 2


def test_resume_applies_or_refuses_every_change(tmp_path, data_file, capsys):
    """A changed lr is applied to the optimiser and logged (it was recorded but ignored); a data
    file whose content changed at the same path is refused (it was used without a word); ema
    false -> true is refused by name (it raised a TypeError)."""
    data = tmp_path / "data.xyz"
    data.write_bytes(data_file.read_bytes())
    train(tmp_path, data, epochs=1, lr=0.01, ema=False)
    capsys.readouterr()
    resumed = train(tmp_path, data, epochs=2, lr=0.001, ema=False, resume=True)
    out = capsys.readouterr().out
    assert "resume: lr 0.01 -> 0.001 (applied)" in out and "resume: epochs 1 -> 2 (applied)" in out
    assert resumed.history[-1]["lr"] == pytest.approx(0.001)
    with pytest.raises(ConfigError, match="different ema"):
        train(tmp_path, data, epochs=3, lr=0.001, ema=True, resume=True)
    frames = emt_frames(8, seed=0)
    frames[3].positions[0, 0] += 0.01  # same path, other content
    write_frames(data, frames)
    with pytest.raises(ConfigError, match=r"the content of train_file .* changed"):
        train(tmp_path, data, epochs=3, lr=0.001, ema=False, resume=True)


def test_files_follow_the_umask_and_stale_temporaries_are_removed(tmp_path, data_file):
    """Model files and checkpoints get the mode any new file would (they were 0600 whatever the
    umask); a resumed run deletes the .tmp files a killed writer left in its folder."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        result = train(tmp_path, data_file, epochs=1)
    finally:
        os.umask(previous)
    for path in (result.model_path, tmp_path / "run" / "checkpoints" / "last.pt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    stale = tmp_path / "run" / "checkpoints" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    train(tmp_path, data_file, epochs=2, resume=True)
    assert not stale.exists()
