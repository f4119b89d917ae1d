"""``equitensor data generate | preprocess | info`` from the command line."""

import json
import subprocess
import sys
from dataclasses import asdict

import pytest

from equitensor.cli import main
from equitensor.datasets import read_structures
from equitensor.datasets.store import StoredGraphDataset

TINY = [
    "--composition",
    "Cu=0.5,Ni=0.5",
    "--repeat",
    "1",
    "--temperatures",
    "300",
    "--trajectories-per-temperature",
    "1",
    "--frames-per-trajectory",
    "4",
    "--steps-between-frames",
    "1",
    "--equilibration-steps",
    "2",
]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("data_cli") / "tiny.xyz"
    assert main(["data", "generate", str(path), *TINY]) == 0
    return path


def test_generate_writes_a_readable_file(generated):
    structures = read_structures(generated)
    assert len(structures) == 2 + 4  # isolated Cu and Ni, then the MD frames
    assert [s.config_type for s in structures[:2]] == ["IsolatedAtom", "IsolatedAtom"]
    assert all(s.num_atoms == 4 and s.stress is not None for s in structures[2:])


def test_preprocess_then_info(generated, capsys):
    store = generated.with_suffix(".h5")
    assert main(["data", "preprocess", str(generated), str(store), "--r-max", "3.5", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "E0s from 2 isolated-atom frames" in printed and "avg neighbours" in printed
    dataset = StoredGraphDataset(store, r_max=3.5)
    assert len(dataset) == 6

    assert main(["data", "info", str(store)]) == 0
    assert capsys.readouterr().out.strip() == printed.strip()
    assert main(["data", "info", str(store), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["statistics"] == json.loads(json.dumps(asdict(dataset.statistics)))
    assert shown["provenance"]["r_max"] == 3.5


def test_preprocess_options_reach_the_reader(generated, tmp_path, capsys):
    store = tmp_path / "keys.h5"
    argv = ["data", "preprocess", str(generated), str(store), "--r-max", "3.0", "--quiet"]
    assert main([*argv, "--energy-key", "energy", "--require", "energy", "--chunk", "2"]) == 0
    assert StoredGraphDataset(store).provenance["keys"]["energy"] == "energy"
    assert main([*argv, "--energy-key", "absent_energy"]) == 2
    assert "frame 0: missing energy (key 'absent_energy')" in capsys.readouterr().err


def test_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "absent.h5")]) == 2
    assert "absent.h5: no such file" in capsys.readouterr().err
    args = ["data", "preprocess", str(tmp_path / "absent.xyz"), str(tmp_path / "a.h5"), "--r-max", "4"]
    assert main(args) == 2
    assert "absent.xyz: no such file" in capsys.readouterr().err


def test_installed_command_line_runs(generated, tmp_path):
    store = tmp_path / "sub.h5"
    command = [sys.executable, "-m", "equitensor.cli", "data", "preprocess", str(generated), str(store)]
    done = subprocess.run([*command, "--r-max", "3.5"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "isolated-atom frames" in done.stdout
    assert "preprocess: 6" in done.stderr  # the progress bar counts frames
