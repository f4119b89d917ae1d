"""Two processes (torchrun, gloo on CPU) train and validate like one process with the same global
batch: the gradient of the global-batch loss and metrics reduced as sums of errors and counts."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from train_helpers import emt_frames, label_with_emt, tiny_config, write_frames

from equitensor.train import run_training
from equitensor.train.config import config_from_dict


@pytest.mark.skipif(
    shutil.which("torchrun") is None
    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun not installed",
)
def test_two_processes_match_one(tmp_path):
    # 9 structures, 7 for training with batches of 3: the last global batch has one structure,
    # so one rank gets an empty shard; 2 validation structures of different sizes
    frames = emt_frames(9, seed=5)
    frames[-1] = label_with_emt(frames[-1].repeat((2, 1, 1)))
    data = write_frames(tmp_path / "train.xyz", frames)
    settings = {"epochs": 2, "batch_size": 3, "valid_fraction": 0.2, "stress_weight": 1.0}
    config = tiny_config(tmp_path / "ddp", data, **settings)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config))
    torchrun = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    process = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nnodes=1",
            "--nproc_per_node=2",
            "-m",
            "equitensor.cli",
            "train",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert process.returncode == 0, process.stderr[-3000:]
    assert "2 process(es)" in process.stdout
    distributed = json.loads((tmp_path / "ddp" / "run" / "metrics.json").read_text())

    single = run_training(config_from_dict(tiny_config(tmp_path / "single", data, **settings))).history
    assert len(distributed) == len(single) == 2
    for a, b in zip(distributed, single):
        for key in (
            "train_loss",
            "valid_loss",
            "valid_energy_mae",
            "valid_energy_rmse",
            "valid_forces_mae",
            "valid_forces_rmse",
            "valid_stress_rmse",
            "valid_forces_count",
        ):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
