"""The train and eval commands: exit codes, error messages without tracebacks, eval output."""

import json
import os
import subprocess
import sys

import ase.io
import numpy as np
import pytest
import torch
import yaml
from train_helpers import emt_frames, tiny_config, write_frames

from equitensor import load_model
from equitensor.cli import main
from equitensor.datasets import GraphDataset, collate_graphs, read_structures


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_frames(tmp_path_factory.mktemp("data") / "train.xyz", emt_frames(8, seed=0))


def config_file(tmp_path, data_file, **overrides):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, data_file, **overrides)))
    return path


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_unknown_key_is_exit_2_with_message(tmp_path, data_file, capsys):
    code, _, err = run_cli(["train", str(config_file(tmp_path, data_file)), "lerning_rate=0.1"], capsys)
    assert code == 2
    assert err.startswith("error: ") and "'lerning_rate'" in err and "Traceback" not in err


def test_bad_data_names_file_and_frame(tmp_path, data_file, capsys):
    frames = ase.io.read(data_file, ":")
    frames[4].positions[1] = frames[4].positions[0]  # two atoms on top of each other
    bad = tmp_path / "bad.xyz"
    ase.io.write(bad, frames, format="extxyz")
    code, _, err = run_cli(["train", str(config_file(tmp_path, bad))], capsys)
    assert code == 2 and "bad.xyz, frame 4" in err and "same position" in err
    code, _, err = run_cli(["train", str(config_file(tmp_path, tmp_path / "absent.xyz"))], capsys)
    assert code == 2 and "absent.xyz: no such file" in err


def test_exit_code_through_the_console_entry(tmp_path, data_file):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: mace\nepochs: -1\n")
    process = subprocess.run(
        [sys.executable, "-m", "equitensor.cli", "train", str(bad)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 2
    assert "error: " in process.stderr and "epochs must be > 0" in process.stderr
    assert "Traceback" not in process.stderr


def test_print_config(tmp_path, data_file, capsys):
    code, out, _ = run_cli(
        ["train", str(config_file(tmp_path, data_file)), "epochs=7", "--print-config"], capsys
    )
    assert code == 0 and yaml.safe_load(out)["epochs"] == 7


def test_train_then_eval_writes_predictions_and_same_metrics(tmp_path, data_file, capsys):
    test_file = write_frames(tmp_path / "test.xyz", emt_frames(4, seed=7, isolated=False))
    path = config_file(tmp_path, data_file, test_file=str(test_file), epochs=1)
    code, out, _ = run_cli(["train", str(path)], capsys)
    assert code == 0 and "test baseline" in out
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    test_row = next(row for row in final if row["name"] == "test")

    model_path = tmp_path / "run" / "tiny.model"
    output, metrics = tmp_path / "predictions.xyz", tmp_path / "metrics.json"
    code, out, _ = run_cli(
        ["eval", "--model", str(model_path), "--data", str(test_file), "--metrics-json", str(metrics)], capsys
    )
    assert code == 0 and "F RMSE [meV/Å]" in out
    evaluated = json.loads(metrics.read_text())
    for key in ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse", "stress_rmse"):
        assert evaluated[key] == pytest.approx(test_row[key], rel=1e-9), key

    # predictions in the file equal the model's, frame by frame; the reference labels stay
    code, out, _ = run_cli(
        ["eval", "--model", str(model_path), "--data", str(data_file), "--output", str(output)], capsys
    )
    assert code == 0 and "predictions written" in out
    frames = ase.io.read(output, ":")
    structures = read_structures(data_file)
    assert len(frames) == len(structures)
    model = load_model(model_path)
    batch = collate_graphs(list(GraphDataset(structures, 3.0, torch.float64)))
    reference = model(batch.graph, compute_stress=True)
    energies = np.array([atoms.info["equitensor_energy"] for atoms in frames])
    np.testing.assert_allclose(energies, reference["energy"].detach().numpy(), rtol=1e-10)
    forces = np.concatenate([atoms.arrays["equitensor_forces"] for atoms in frames])
    np.testing.assert_allclose(forces, reference["forces"].detach().numpy(), atol=1e-7)  # extxyz: 8 decimals
    assert (
        "equitensor_stress" in frames[5].info and "equitensor_stress" not in frames[0].info
    )  # 0: isolated atom
    assert frames[5].get_potential_energy() == pytest.approx(structures[5].energy)


def test_eval_errors(tmp_path, data_file, capsys):
    code, _, err = run_cli(
        ["eval", "--model", str(tmp_path / "none.model"), "--data", str(data_file)], capsys
    )
    assert code == 2 and "none.model" in err
    path = config_file(tmp_path, data_file, epochs=1)
    assert main(["train", str(path)]) == 0
    silver = write_frames(tmp_path / "ag.xyz", emt_frames(1, elements=("Ag",), isolated=False))
    code, _, err = run_cli(
        ["eval", "--model", str(tmp_path / "run" / "tiny.model"), "--data", str(silver)], capsys
    )
    assert code == 2 and "ag.xyz, frame 0" in err and "Ag" in err and "Traceback" not in err


def test_diverging_configuration_stops_with_exit_3_and_saves_nothing(tmp_path, data_file, capsys):
    """energy_weight 1e308 overflows the first step's gradient: the run stops at once, names the
    step, what went non-finite and the structures, exits 3 and writes no model (it used to save
    NaN weights and exit 0)."""
    config = config_file(tmp_path, data_file, energy_weight=1e308)
    code, _, err = run_cli(["train", str(config)], capsys)
    assert code == 3 and "Traceback" not in err
    assert "training diverged at epoch 1, step 1" in err and "non-finite gradient norm" in err
    assert "train.xyz frame(s)" in err and "nothing non-finite was saved" in err
    assert not (tmp_path / "run" / "tiny.model").exists()


def test_divergence_after_a_checkpoint_keeps_the_last_good_one(tmp_path, data_file, capsys, monkeypatch):
    """A gradient that turns NaN in epoch 2 stops the run before the optimiser step: the epoch-1
    checkpoint is named and still holds finite weights; no model file is written."""
    from equitensor.train import checkpoint as ckpt

    real, calls = torch.nn.utils.clip_grad_norm_, []

    def failing_norm(parameters, max_norm, *args, **kwargs):
        calls.append(1)
        norm = real(parameters, max_norm, *args, **kwargs)
        return norm * float("nan") if len(calls) == 5 else norm  # 3 steps per epoch: epoch 2, step 2

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", failing_norm)
    code, _, err = run_cli(["train", str(config_file(tmp_path, data_file, epochs=3))], capsys)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert code == 3 and "training diverged at epoch 2, step 2" in err and "gradient norm (nan)" in err
    assert f"the last good checkpoint is {last}" in err
    state = ckpt.load_checkpoint(last)
    assert all(torch.isfinite(v).all() for v in state["model_state"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "tiny.model").exists()


def test_eval_with_non_finite_predictions_exits_non_zero(tmp_path, data_file, capsys):
    from equitensor import save_model

    assert main(["train", str(config_file(tmp_path, data_file, epochs=1))]) == 0
    model = load_model(tmp_path / "run" / "tiny.model")
    code, _, err = run_cli(
        ["eval", "--model", str(tmp_path / "run" / "tiny.model"), "--data", str(data_file)], capsys
    )
    assert code == 0 and err == ""
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    broken = tmp_path / "nan.model"
    save_model(model, broken)
    code, _, err = run_cli(["eval", "--model", str(broken), "--data", str(data_file)], capsys)
    assert (
        code == 3 and "non-finite energies or forces for 10 of 10 structures" in err
    )  # 8 + 2 isolated atoms


def test_two_runs_started_together_into_one_folder(tmp_path, data_file):
    """Both started at the same moment: exactly one trains, the other is refused naming the folder
    and the holder (they used to interleave train.log and overwrite each other's files)."""
    config = config_file(tmp_path, data_file, epochs=3)
    command = [sys.executable, "-m", "equitensor.cli", "train", str(config)]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [(run.wait(timeout=600), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    refused = [err for code, err in results if code == 2]
    assert codes == [0, 2], results
    assert "is in use by another training run (pid" in refused[0] and str(tmp_path / "run") in refused[0]
    assert (tmp_path / "run" / "tiny.model").is_file()


def test_run_folder_lock_is_released_after_a_run(tmp_path, data_file, capsys):
    from equitensor.train.checkpoint import RunFolderLock

    held = RunFolderLock(tmp_path / "run")
    code, _, err = run_cli(["train", str(config_file(tmp_path, data_file, epochs=1))], capsys)
    assert code == 2 and f"pid {os.getpid()}" in err
    held.release()
    assert run_cli(["train", str(config_file(tmp_path, data_file, epochs=1))], capsys)[0] == 0
    assert run_cli(["train", str(config_file(tmp_path, data_file, epochs=2)), "--resume"], capsys)[0] == 0


def tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_logs_config_yaml_tensorboard_and_seed_flag(tmp_path, data_file, capsys):
    """config.yaml is the resolved configuration; TensorBoard holds the history's numbers per epoch,
    and a resumed run continues the curves without repeating an epoch; --seed is seed=N."""
    pytest.importorskip("tensorboard")
    path = config_file(tmp_path, data_file, epochs=1)
    code, out, _ = run_cli(["train", str(path), "--seed", "5"], capsys)
    assert code == 0, out
    run = tmp_path / "run"
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["seed"] == 5 and written["epochs"] == 1 and written["tensorboard"] == "auto"
    code, out, _ = run_cli(["train", str(path), "epochs=2", "--seed", "5", "--resume"], capsys)
    assert code == 0, out
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2
    history = json.loads((run / "metrics.json").read_text())
    scalars = tensorboard_scalars(run / "tensorboard")
    assert [step for step, _ in scalars["train/loss"]] == [1, 2]
    for (step, value), row in zip(scalars["train/loss"], history):
        assert step == row["epoch"] and value == pytest.approx(row["train_loss"], rel=1e-6)
    assert [v for _, v in scalars["valid/loss"]] == pytest.approx(
        [row["valid_loss"] for row in history], rel=1e-6
    )


def test_tensorboard_true_without_the_package_is_a_named_error(tmp_path, data_file, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    path = config_file(tmp_path, data_file, epochs=1, tensorboard=True)
    code, _, err = run_cli(["train", str(path)], capsys)
    assert code == 2 and "tensorboard=true needs the tensorboard package" in err
    code, out, _ = run_cli(
        ["train", str(config_file(tmp_path, data_file, epochs=1, output_dir=str(tmp_path / "b")))], capsys
    )
    assert code == 0 and "tensorboard: none (the tensorboard package is not installed" in out


def test_stage_two_swa_on_the_shipped_data(tmp_path, capsys):
    """swa: after swa_start epochs the loss weights and lr change, stage two keeps its own best
    model, which is the one saved; with swa_average it is the mean of the stage-two weights."""
    config = tiny_config(tmp_path, "unused", epochs=4, swa=True, swa_start=2, swa_lr=5e-4, swa_average=True)
    del config["train_file"]  # the shipped CuNi EMT set
    config.update(valid_fraction=0.1, batch_size=20, max_atoms_per_batch=None)
    path = tmp_path / "swa.yaml"
    path.write_text(yaml.safe_dump(config))
    code, out, _ = run_cli(["train", str(path)], capsys)
    assert code == 0, out
    assert "stage two from epoch 3: loss weights energy 1000, forces 100, stress 1; lr 0.0005" in out
    run = tmp_path / "run"
    history = json.loads((run / "metrics.json").read_text())
    assert [row["stage"] for row in history] == [1, 1, 2, 2]
    assert [row["lr"] for row in history][2:] == [5e-4, 5e-4]
    best_two = torch.load(run / "checkpoints" / "best_stage_two.pt", weights_only=False)
    assert best_two["progress"]["best_epoch"] in (3, 4)
    saved = load_model(run / "tiny.model")
    for name, tensor in saved.state_dict().items():
        torch.testing.assert_close(tensor, best_two["model_record"]["state_dict"][name], msg=name)
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert last["average"]["num_updates"] == 2
    # resuming in stage two keeps its weights (a changed swa setting is refused)
    code, out, err = run_cli(["train", str(path), "epochs=5", "--resume"], capsys)
    assert code == 0, out + err
    assert [row["stage"] for row in json.loads((run / "metrics.json").read_text())] == [1, 1, 2, 2, 2]
    code, _, err = run_cli(["train", str(path), "epochs=6", "swa_start=3", "--resume"], capsys)
    assert code == 2 and "swa_start" in err


def test_stage_two_settings_are_checked(tmp_path, data_file, capsys):
    code, _, err = run_cli(["train", str(config_file(tmp_path, data_file, swa=True, swa_start=2))], capsys)
    assert code == 2 and "stage two must start after epoch 0 and before the last (2), got swa_start=2" in err


def test_data_loader_workers_give_the_same_training(tmp_path, data_file, capsys):
    """The batches come from torch's DataLoader: with 2 worker processes (persistent, prefetching)
    the losses of every epoch are exactly those of num_workers=0."""
    histories = []
    for workers in (0, 2):
        out_dir = tmp_path / f"w{workers}"
        path = config_file(tmp_path, data_file, epochs=2, num_workers=workers, output_dir=str(out_dir))
        code, out, _ = run_cli(["train", str(path)], capsys)
        assert code == 0, out
        histories.append(json.loads((out_dir / "metrics.json").read_text()))
    for key in ("train_loss", "valid_loss", "valid_forces_rmse"):
        assert [row[key] for row in histories[0]] == [row[key] for row in histories[1]], key


def test_fits_virials_when_the_file_has_them(tmp_path, data_file, capsys):
    """virials_weight fits the virials of a file that has virials and no stress (mace-torch's
    per-atom virials loss); asking for them without any in the data is a named error."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.stress import voigt_6_to_full_3x3_stress

    frames = []
    for atoms in emt_frames(8, seed=2):
        if atoms.pbc.all():
            stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
            atoms.info["virials"] = -stress * atoms.get_volume()
        atoms.calc = SinglePointCalculator(
            atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces()
        )
        frames.append(atoms)
    virials_file = write_frames(tmp_path / "virials.xyz", frames)
    path = config_file(tmp_path, virials_file, epochs=1, stress_weight=0.0, virials_weight=1.0)
    code, out, err = run_cli(["train", str(path)], capsys)
    assert code == 0, out + err
    row = json.loads((tmp_path / "run" / "metrics.json").read_text())[0]
    assert np.isfinite(row["valid_virials_rmse"]) and row["valid_virials_count"] > 0
    path = config_file(tmp_path, data_file, epochs=1, virials_weight=1.0, output_dir=str(tmp_path / "none"))
    code, _, err = run_cli(["train", str(path)], capsys)
    assert code == 2 and "virials_weight = 1.0 but no training structure has virials" in err


def test_fine_tuning_init_from_and_freeze(tmp_path, data_file, capsys):
    """init_from starts a new run (own folder, new optimiser) from a trained model's weights;
    frozen parameters keep their values, the others train; what cannot be done is refused."""
    code, out, _ = run_cli(["train", str(config_file(tmp_path, data_file, epochs=1))], capsys)
    assert code == 0, out
    source_path = tmp_path / "run" / "tiny.model"
    source = load_model(source_path)
    new_data = write_frames(tmp_path / "new.xyz", emt_frames(6, seed=11))
    path = config_file(
        tmp_path,
        new_data,
        epochs=1,
        init_from=str(source_path),
        freeze=["embedding.*"],
        output_dir=str(tmp_path / "ft"),
    )
    code, out, _ = run_cli(["train", str(path)], capsys)
    assert code == 0, out
    assert "its architecture, weights, E0s, scale and shift are kept" in out and "weights frozen" in out
    tuned = load_model(tmp_path / "ft" / "tiny.model")
    before, after = source.state_dict(), tuned.state_dict()
    frozen = [name for name in before if name.startswith("embedding.")]
    assert frozen and all(torch.equal(before[name], after[name]) for name in frozen)
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("layers."))
    assert torch.equal(before["atomic_energies"], after["atomic_energies"])
    for overrides, message in [
        ({"freeze": ["nothing.*"]}, "freeze pattern 'nothing.*' matches no parameter"),
        ({"r_max": 2.5}, "has cutoff 3.0 Å but r_max = 2.5"),
        ({"model": "mace"}, "is a TensorNet, but model: mace"),
    ]:
        bad = config_file(
            tmp_path,
            new_data,
            epochs=1,
            init_from=str(source_path),
            output_dir=str(tmp_path / "x"),
            **overrides,
        )
        code, _, err = run_cli(["train", str(bad)], capsys)
        assert code == 2 and message in err, err
    silver = write_frames(tmp_path / "ag.xyz", emt_frames(3, seed=1, elements=("Cu", "Ag")))
    grow = config_file(tmp_path, silver, epochs=1, init_from=str(source_path), output_dir=str(tmp_path / "y"))
    code, out, _ = run_cli(["train", str(grow)], capsys)
    assert code == 0 and "new elements [47]: fresh weights in" in out
    assert load_model(tmp_path / "y" / "tiny.model").elements == [28, 29, 47]


@pytest.mark.parametrize("kind", ["mace", "tensornet"])
def test_growing_the_element_set_keeps_the_old_elements(kind):
    """grow_elements: the bigger model gives the old model's energies and forces on structures of
    the old elements (every old weight kept, rescaled where a layer normalises by the element
    count) and runs on the new element."""
    from ase.build import bulk, molecule

    from equitensor.datasets.atoms_to_graph import graph_from_atoms
    from equitensor.models import MACE, TensorNet
    from equitensor.train.model_factory import grow_elements

    torch.manual_seed(0)
    if kind == "mace":
        old = MACE([28, 29], r_max=3.0, num_channels=4, max_L=1, max_ell=2, correlation=3, radial_MLP=[8],
                   atomic_energies=[-1.0, -2.0]).double()  # fmt: skip
    else:
        old = TensorNet(hidden_channels=4, num_layers=2, num_rbf=4, cutoff=3.0, atomic_numbers=[28, 29],
                        atomic_energies=[-1.0, -2.0], dtype="float64")  # fmt: skip
    with torch.no_grad():
        for p in old.parameters():
            p.add_(0.1 * torch.randn_like(p))
    config = {**old.config, "atomic_numbers": [28, 29, 47], "atomic_energies": [-1.0, -2.0, -3.0]}
    new = type(old)(**config).double()
    grown = grow_elements(old, new)
    assert grown  # the element-dependent parameters were found
    cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    cell.numbers[::2] = 28
    cell.rattle(0.05, seed=3)
    mol = molecule("CH4")
    mol.numbers[:] = [29, 28, 28, 28, 28]
    for atoms in (cell, mol):
        graph = graph_from_atoms(atoms, 3.0, torch.float64)
        expected, got = old(graph), new(graph)
        torch.testing.assert_close(got["energy"], expected["energy"], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got["forces"], expected["forces"], rtol=1e-10, atol=1e-10)
    cell.numbers[0] = 47
    assert torch.isfinite(new(graph_from_atoms(cell, 3.0, torch.float64))["energy"]).all()


def test_only_input_errors_are_shortened(monkeypatch, capsys):
    """InputError (bad config, data, files, values) is one line and exit 2; any other exception is
    a bug and keeps its traceback."""
    from equitensor.errors import InputError
    from equitensor.train import train_command

    def bad_input(args):
        raise InputError("train.xyz, frame 3: no forces")

    def bug(args):
        raise ValueError("an internal bug")

    monkeypatch.setattr(train_command, "run", bad_input)
    assert main(["train"]) == 2 and capsys.readouterr().err == "error: train.xyz, frame 3: no forces\n"
    monkeypatch.setattr(train_command, "run", bug)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["train"])


def test_deterministic_training_is_bit_identical_with_two_threads(tmp_path, data_file, capsys, monkeypatch):
    """deterministic (default) turns on torch's deterministic algorithms for the run: then a MACE
    force-training gradient on a 108-atom cell with 2 threads is bit-identical from run to run
    (without it forces differed by ~1e-6: a multi-threaded scatter sums in a varying order)."""
    from ase.build import bulk

    from equitensor.datasets.atoms_to_graph import graph_from_atoms
    from equitensor.models import MACE

    calls = []
    original = torch.use_deterministic_algorithms
    monkeypatch.setattr(
        torch, "use_deterministic_algorithms", lambda *a, **k: calls.append(a[0]) or original(*a, **k)
    )
    code, out, _ = run_cli(["train", str(config_file(tmp_path, data_file, epochs=1))], capsys)
    assert code == 0, out
    assert calls == [True, False]  # on for the run, the process's setting restored after it
    monkeypatch.undo()
    torch.use_deterministic_algorithms(True)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    atoms.numbers[::3] = 28
    atoms.rattle(0.1, seed=0)
    graph = graph_from_atoms(atoms, 5.0, torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for _ in range(3):
            torch.manual_seed(0)
            model = MACE([28, 29], r_max=5.0, num_channels=16, max_L=0, max_ell=2, correlation=2)
            prediction = model(graph, training=True)
            loss = prediction["energy"].sum() ** 2 + prediction["forces"].square().sum()
            results.append(
                [prediction["forces"].detach(), *torch.autograd.grad(loss, list(model.parameters()))]
            )
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
