"""A training process killed mid-run resumes from its last checkpoint and ends where an
uninterrupted run ends (same history, same weights)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from train_helpers import emt_frames, tiny_config, write_frames

from equitensor import load_model
from equitensor.train import run_training
from equitensor.train.config import config_from_dict


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    data = write_frames(tmp_path / "train.xyz", emt_frames(8, seed=3))
    settings = {"epochs": 4, "batch_size": 1, "checkpoint_every_steps": 1}
    config = tiny_config(tmp_path / "killed", data, **settings)
    path = tmp_path / "killed.yaml"
    path.write_text(yaml.safe_dump(config))
    last = tmp_path / "killed" / "run" / "checkpoints" / "last.pt"

    process = subprocess.Popen(
        [sys.executable, "-m", "equitensor.cli", "train", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    still_running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    if not still_running:
        pytest.fail(
            f"the training process ended before its first checkpoint: {process.stderr.read().decode()}"
        )
    assert last.exists()

    resumed = run_training(config_from_dict(config), resume=True)
    reference = run_training(config_from_dict(tiny_config(tmp_path / "reference", data, **settings)))
    assert len(resumed.history) == len(reference.history) == 4
    for a, b in zip(resumed.history, reference.history):
        for key in ("train_loss", "valid_loss", "valid_energy_mae", "valid_forces_rmse"):
            assert a[key] == b[key], key
    for (name, x), (_, y) in zip(
        load_model(resumed.model_path).state_dict().items(),
        load_model(reference.model_path).state_dict().items(),
    ):
        assert torch.equal(x, y), name
