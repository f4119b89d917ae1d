#!/usr/bin/env python
"""MACE trained with ``equitensor train`` and with mace-torch's ``mace_run_train``, the same
settings, seeds and budget, with and without the EMA of the weights: test errors side by side
(issue 17 item 7, "Accuracy by default": do our defaults give the best accuracy for the budget?).

One command reruns everything (data, 24 training runs, the evaluation, the report); run it from
the repository root with a Python that has equitensor (its ``equitensor`` CLI) and mace-torch
0.3.16 (its ``mace_run_train`` CLI) next to it, e.g.::

    /work/venv-mace/bin/python benchmarks/mace_vs_mace_torch_training.py \\
        --out benchmarks/results/mace_training_defaults

(2 cases x 3 seeds x EMA on/off x 2 implementations = 24 runs, 1 thread each, 2 at once; about
90 minutes on 2 CPU cores). ``--quick`` runs 2 epochs per run, one seed, a 20-frame test set, into
a temporary folder (smoke test); ``--evaluate-only`` re-evaluates the runs already in ``--work``
and rewrites the report.

Cases (``CASES``), every file written outside the repository into ``--work`` (default
``/tmp/mace_training_study``):

- ``quickstart``: ``equitensor train``'s quickstart preset (``QUICKSTART`` in
  equitensor/train/config.py: MACE 16x0e, max_ell 2, correlation 2, radial MLP [32, 32], r_max 4 Å,
  float32, 15 epochs, batch 5, lr 0.01, loss weights energy 100 / forces 100 / stress 1000) on
  the shipped ``datasets/default/cuni_emt.xyz``: training and validation are the 270/30 frames
  of the split ``equitensor train`` makes with seed 0 (fixed for every run, so the runs differ
  only by their seed's initial weights and batch order), the two isolated atoms give the E0s. The
  shipped set has no test part: the test set is 300 fresh frames from the same generator with
  another seed (``generate_emt_dataset(..., composition={"Cu": 0.7, "Ni": 0.3}, seed=1)``).
- ``acac``: BOTNet acetylacetone (MIT licence, ``$BOTNET_DATA/dataset_acac``, default
  ``../shared/data/botnet``): training = ``train_300K.xyz`` frames 0-449 plus the isolated atoms of
  ``isolated_atoms.xyz`` (marked ``config_type=IsolatedAtom``: the E0s for both CLIs), validation =
  frames 450-499, test = all 650 frames of ``test_MD_300K.xyz``. ``TrainConfig``'s defaults
  (float64, batch 10, lr 0.01, loss weights energy 1 / forces 100, ...) with a small MACE
  (``ACAC_MODEL``) and the epochs of ``ACAC_EPOCHS``.

mace-torch gets the same settings, derived from our resolved config by :func:`mace_arguments`
(which refuses settings it cannot map): same architecture (``--model MACE``: ScaleShiftMACE with
``RealAgnosticInteractionBlock`` first, shift 0, scale = RMS training force; non-reduced CG), r_max,
dtype, epochs, batch sizes, Adam with AMSGrad, lr, weight decay 0, ReduceLROnPlateau (factor,
patience), gradient-norm clipping, EMA (on/off, same decay, both with torch_ema's warm-up
min(decay, (1 + n) / (10 + n))), the model of the epoch with the lowest validation loss (computed
with the EMA weights) kept, E0s from the same isolated atoms, 1 thread. The loss is the same
function: mace-torch's ``weighted`` (``stress`` when stress is fitted) loss is
w_E mean_s ((E_s - E^_s) / N_s)^2 + w_F mean over force components (F - F^)^2 + w_S mean over
stress components (S - S^)^2, and so is ours (equitensor/train/losses.py). What cannot be set
equal is in ``DIFFERENCES``.

Evaluation, one code path for both: every trained model becomes an equitensor MACE in float64
(ours: ``equitensor.load_model``; mace-torch's ``.model`` file through
``equitensor.interop.mace_torch.mace_from_mace_torch``, which checks the converted model against
the mace-torch model on a test structure) and predicts every test structure (batches of 10,
energies, forces and, for the quickstart, stress) in float64; the errors come from the same numpy
function. Cross-checks recorded in the JSON: each model in its training dtype, ours through our
forward and mace-torch's through its own forward, against the test table its CLI printed, and the
largest difference of those predictions from the float64 ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
import yaml
from ase import Atoms
from side_by_side import (
    cpu_model,
    git_commit,
    package_versions,
    prediction_errors,
    run_queue,
    seed_statistics,
    statistics_cell,
)

from equitensor.train.config import QUICKSTART, TrainConfig, config_from_dict

ROOT = Path(__file__).resolve().parents[1]
BOTNET = Path(os.environ.get("BOTNET_DATA", ROOT.parent / "shared" / "data" / "botnet"))
LIBRARIES = ("equitensor", "mace-torch")
CASES = ("quickstart", "acac")
SEEDS = (0, 1, 2)
QUICKSTART_TEST_SEED = 1  # the shipped set is seed 0
ACAC_MODEL = {"num_channels": 32, "max_L": 1, "max_ell": 2, "correlation": 2, "radial_MLP": [32, 32]}
ACAC_EPOCHS = 70
ACAC_TRAIN, ACAC_VALID = 450, 50

DIFFERENCES = [
    "Initial weights: each library draws its own from the seed (the same schemes: standard-normal "
    "weights normalised in the forward pass as e3nn does, the product basis randn / paths as MACE; "
    "different random streams), so seed k of ours and seed k of mace-torch start from different "
    "weights. Between EMA on and off of the same library and seed they are the same.",
    "Batch order: ours shuffles with its own sampler seeded by `seed`, mace-torch with torch_geometric's "
    "DataLoader and a `torch.Generator` seeded by `--seed` (drop_last: no effect here, the training "
    "sets divide by the batch size); same number of steps per epoch, different batches.",
    "Neighbour lists: ours builds the graphs with vesin, mace-torch with matscipy; both contain "
    "every pair within r_max (the same average number of neighbours, in the JSON).",
    "Validation loss: ours is the loss of the whole validation set, mace-torch's the sum of the "
    "per-batch mean losses divided by the number of structures; with one validation batch "
    "(`valid_batch_size` = the validation set) the two are the same number up to the constant "
    "factor 1/N_valid, so the best epoch and the plateau scheduler (relative threshold) act alike.",
    "Scheduler step: ours steps ReduceLROnPlateau at the end of each epoch, mace-torch at the start "
    "of the next one (with the same validation loss); the same schedule. With 50 epochs of patience "
    "neither lowers the learning rate within these budgets.",
    "Float32 (quickstart): both train in float32; the evaluation here is in float64 (the cross-check "
    "table gives each model's errors in float32 too: the same to the digits shown).",
    "Label keys: the files both CLIs read name the labels `REF_energy`, `REF_forces`, `REF_stress`. "
    "With `--energy_key energy` (ASE's name, which ASE's reader moves into a calculator) mace-torch "
    "0.3.16 takes the E0s of `IsolatedAtom` frames from `atoms.info`, finds none, warns and uses "
    "E0 = 0 (seen in this script's first smoke test); ours reads either name.",
    "Wall time includes each CLI's start-up, data reading and final evaluation (mace-torch also "
    "compiles a TorchScript copy of the model at the end); the machine was shared: accuracy, "
    "not speed, is compared.",
]


# ---------------------------------------------------------------------------------------------
# data
def _labelled(atoms: Atoms, energy: float | None = None) -> Atoms:
    """A copy carrying only its labels, under MACE's keys ``REF_energy``, ``REF_forces`` and
    ``REF_stress`` (Voigt, ASE's sign), and its config_type. Both CLIs read these keys (ours finds
    them by itself). Not ``energy``/``forces``: ASE's reader moves those into a calculator, and
    mace-torch 0.3.16 then looks for the isolated atoms' energies in ``atoms.info`` and silently
    uses E0 = 0."""
    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    results = atoms.calc.results if atoms.calc is not None else {}
    out.info["REF_energy"] = float(atoms.get_potential_energy() if energy is None else energy)
    forces = results.get("forces")
    out.arrays["REF_forces"] = np.zeros((len(atoms), 3)) if forces is None else np.array(forces)
    if "stress" in results:
        out.info["REF_stress"] = atoms.get_stress()
    if "config_type" in atoms.info:
        out.info["config_type"] = atoms.info["config_type"]
    return out


def _isolated(atoms: Atoms) -> bool:
    return len(atoms) == 1 and atoms.info.get("config_type") == "IsolatedAtom"


def _write(path: Path, frames: list[Atoms]) -> None:
    ase.io.write(path, frames, format="extxyz")


def prepare_quickstart(data_dir: Path, test_frames: int | None) -> dict:
    """train/valid = the shipped set split as ``equitensor train`` does with seed 0; test = a
    fresh set from the same generator with another seed."""
    from equitensor.datasets import default_dataset_path
    from equitensor.datasets.generate import generate_emt_dataset
    from equitensor.train.data import split_train_valid

    frames = [_labelled(a) for a in ase.io.read(default_dataset_path(), index=":")]
    isolated = [a for a in frames if _isolated(a)]
    others = [a for a in frames if not _isolated(a)]
    valid_fraction = TrainConfig.valid_fraction
    train, valid = split_train_valid(others, valid_fraction, 0)
    generated = data_dir / f"generated_seed{QUICKSTART_TEST_SEED}.xyz"
    if not generated.is_file():
        print(f"generating the quickstart test set ({generated})", flush=True)
        generate_emt_dataset(generated, composition={"Cu": 0.7, "Ni": 0.3}, seed=QUICKSTART_TEST_SEED)
    test = [_labelled(a) for a in ase.io.read(generated, index=":") if not _isolated(a)]
    test = test[:test_frames] if test_frames else test
    _write(data_dir / "train.xyz", isolated + train)
    _write(data_dir / "valid.xyz", valid)
    _write(data_dir / "test.xyz", test)
    return {
        "source": "datasets/default/cuni_emt.xyz (shipped, generator seed 0)",
        "train": f"{len(train)} frames of the shipped set ({len(isolated)} isolated atoms for the E0s)",
        "valid": f"{len(valid)} frames of the shipped set (equitensor's split, valid_fraction "
        f"{valid_fraction}, seed 0)",
        "test": f"{len(test)} frames generated with generate_emt_dataset(path, composition="
        f"{{'Cu': 0.7, 'Ni': 0.3}}, seed={QUICKSTART_TEST_SEED}) (outside the repository)",
        "num_train": len(train),
        "num_valid": len(valid),
        "num_test": len(test),
        "e0s_isolated_eV": {str(int(a.numbers[0])): a.info["REF_energy"] for a in isolated},
    }


def prepare_acac(data_dir: Path, test_frames: int | None) -> dict:
    source = BOTNET / "dataset_acac"
    frames = [_labelled(a) for a in ase.io.read(source / "train_300K.xyz", index=":")]
    test = [_labelled(a) for a in ase.io.read(source / "test_MD_300K.xyz", index=":")]
    test = test[:test_frames] if test_frames else test
    isolated = []
    for atoms in ase.io.read(source / "isolated_atoms.xyz", index=":"):
        single = _labelled(Atoms(atoms.numbers, [[0.0, 0.0, 0.0]]), energy=atoms.get_potential_energy())
        single.info["config_type"] = "IsolatedAtom"  # BOTNet's `isolated_atom`, as MACE reads it
        isolated.append(single)
    train, valid = frames[:ACAC_TRAIN], frames[ACAC_TRAIN : ACAC_TRAIN + ACAC_VALID]
    _write(data_dir / "train.xyz", isolated + train)
    _write(data_dir / "valid.xyz", valid)
    _write(data_dir / "test.xyz", test)
    return {
        "source": str(source),
        "train": f"train_300K.xyz frames 0-{ACAC_TRAIN - 1} (+ isolated_atoms.xyz for the E0s)",
        "valid": f"train_300K.xyz frames {ACAC_TRAIN}-{ACAC_TRAIN + ACAC_VALID - 1}",
        "test": f"test_MD_300K.xyz, {len(test)} frames",
        "num_train": len(train),
        "num_valid": len(valid),
        "num_test": len(test),
        "e0s_isolated_eV": {str(int(a.numbers[0])): a.info["REF_energy"] for a in isolated},
    }


# ---------------------------------------------------------------------------------------------
# configurations
def ours_values(case: str, data_dir: Path, data: dict, epochs: int | None) -> dict:
    """Our config for a case: the quickstart preset or TrainConfig's defaults, plus the files,
    the run's fixed bookkeeping (one thread, no progress bar or plots) and one validation batch.
    ``ema`` and ``seed`` are given per run on the command line."""
    if case == "quickstart":
        values = {k: v for k, v in QUICKSTART.items() if k != "name"}
    else:
        values = {"model": "mace", "model_kwargs": dict(ACAC_MODEL), "r_max": 5.0, "epochs": ACAC_EPOCHS}
    if epochs is not None:
        values["epochs"] = epochs
    values.update(
        train_file=str(data_dir / "train.xyz"),
        valid_file=str(data_dir / "valid.xyz"),
        test_file=str(data_dir / "test.xyz"),
        valid_batch_size=data["num_valid"],
        device="cpu",
        num_threads=1,
        progress="false",
        plots=False,
        tensorboard="false",
    )
    return values


def model_hyperparameters(config: TrainConfig) -> dict:
    """The MACE our trainer builds for ``config`` (its constructor's resolved ``config``)."""
    from equitensor.models import MACE

    model = MACE([29], r_max=config.r_max, **config.model_kwargs)
    return {k: v for k, v in model.config.items() if k not in ("atomic_numbers", "atomic_energies")}


def mace_arguments(config: TrainConfig, model: dict) -> list[str]:
    """mace_run_train's arguments for the settings of ``config`` (seed, EMA and folders are
    added per run); ValueError for a setting it has no equal of."""
    unsupported = {
        "optimizer": (config.optimizer, "adam"),
        "amsgrad": (config.amsgrad, True),  # mace_run_train's --amsgrad cannot be turned off
        "loss": (config.loss, "mse"),
        "scheduler": (config.scheduler, "plateau"),
        "scaling": (config.scaling, "rms_forces"),
        "shift": (config.shift, "zero"),
        "swa": (config.swa, False),
        "warmup_epochs": (config.warmup_epochs, 0),
        "min_lr": (config.min_lr, 0.0),
        "patience": (config.patience, None),
        "eval_interval": (config.eval_interval, 1),
        "virials_weight": (config.virials_weight, 0.0),
        "max_atoms_per_batch": (config.max_atoms_per_batch, None),
        "init_from": (config.init_from, None),
    }
    bad = [f"{k}={v!r} (needs {want!r})" for k, (v, want) in unsupported.items() if v != want]
    correlations = (
        set(model["correlation"]) if isinstance(model["correlation"], list) else {model["correlation"]}
    )
    if len(correlations) != 1:
        bad.append(f"correlation per layer {model['correlation']}")
    if bad:
        raise ValueError("no mace_run_train equal of: " + ", ".join(bad))
    from equitensor.irreps import Irreps

    hidden = Irreps(model["hidden_irreps"])
    args = [
        "--model", "MACE",
        "--interaction_first", "RealAgnosticInteractionBlock",
        "--interaction", "RealAgnosticResidualInteractionBlock",
        "--num_channels", str(hidden[0].mul),
        "--max_L", str(max(ir.l for _, ir in hidden)),
        "--max_ell", str(model["max_ell"]),
        "--correlation", str(correlations.pop()),
        "--num_interactions", str(model["num_interactions"]),
        "--num_radial_basis", str(model["num_bessel"]),
        "--num_cutoff_basis", str(model["num_polynomial_cutoff"]),
        "--radial_MLP", str(list(model["radial_MLP"])),
        "--MLP_irreps", str(model["MLP_irreps"]),
        "--gate", "silu",
        "--use_reduced_cg", "False",
        "--r_max", str(config.r_max),
        "--scaling", "rms_forces_scaling",
        "--default_dtype", config.dtype,
        "--device", "cpu",
        "--loss", "stress" if config.stress_weight > 0 else "weighted",
        "--energy_weight", str(config.energy_weight),
        "--forces_weight", str(config.forces_weight),
        "--stress_weight", str(config.stress_weight),
        "--optimizer", "adam",
        "--lr", str(config.lr),
        "--weight_decay", str(config.weight_decay),
        "--scheduler", "ReduceLROnPlateau",
        "--lr_factor", str(config.lr_factor),
        "--scheduler_patience", str(config.scheduler_patience),
        "--batch_size", str(config.batch_size),
        "--valid_batch_size", str(config.valid_batch_size),
        "--max_num_epochs", str(config.epochs),
        "--patience", str(10**6),
        "--eval_interval", "1",
        "--clip_grad", str(config.clip_grad),
        "--train_file", str(config.train_file),
        "--valid_file", str(config.valid_file),
        "--test_file", str(config.test_file),
        "--energy_key", "REF_energy",
        "--forces_key", "REF_forces",
        "--stress_key", "REF_stress",
        "--error_table", "PerAtomRMSE",
        "--num_workers", "0",
        "--plot", "False",
        "--save_cpu",
    ]  # fmt: skip
    return args


def case_setup(case: str, work: Path, test_frames: int | None, epochs: int | None) -> dict:
    data_dir = work / case / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    data = (prepare_quickstart if case == "quickstart" else prepare_acac)(data_dir, test_frames)
    values = ours_values(case, data_dir, data, epochs)
    config = config_from_dict(values, f"{case} study config")
    path = work / case / "equitensor.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    model = model_hyperparameters(config)
    return {
        "data": data,
        "config_file": str(path),
        "ours_config": values,
        "resolved": config.to_dict(),
        "model": model,
        "mace_arguments": mace_arguments(config, model),
    }


# ---------------------------------------------------------------------------------------------
# training
def run_job(case: str, library: str, seed: int, ema: bool, work: Path, setup: dict) -> dict:
    bindir = Path(sys.executable).parent
    name = f"{library}_ema{'on' if ema else 'off'}_seed{seed}"
    run_dir = work / case / "runs" / name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    decay = setup["resolved"]["ema_decay"]
    if library == "equitensor":
        command = [
            bindir / "equitensor", "train", setup["config_file"], f"seed={seed}",
            f"ema={'true' if ema else 'false'}", f"output_dir={run_dir}", "name=mace",
        ]  # fmt: skip
    else:
        command = [
            bindir / "mace_run_train", *setup["mace_arguments"], "--seed", str(seed), "--name", "mace",
            "--log_dir", run_dir / "logs", "--model_dir", run_dir, "--checkpoints_dir",
            run_dir / "checkpoints", "--results_dir", run_dir / "results", "--work_dir", run_dir,
            *(["--ema", "--ema_decay", str(decay)] if ema else []),
        ]  # fmt: skip
    return {
        "key": f"{case}/{name}",
        "case": case,
        "library": library,
        "seed": seed,
        "ema": ema,
        "run_dir": str(run_dir),
        "command": command,
        "log": run_dir.parent / f"{name}.log",
        "cwd": run_dir,
    }


def train_all(work: Path, setups: dict, seeds, emas, parallel: int) -> dict:
    """Ours and mace-torch with the same case, seed and EMA setting side by side."""
    jobs = [
        run_job(case, library, seed, ema, work, setups[case])
        for case in setups
        for seed in seeds
        for ema in emas
        for library in LIBRARIES
    ]
    done, load = run_queue(jobs, parallel)
    (work / "timings.json").write_text(json.dumps(done, indent=1, default=str))
    (work / "load.json").write_text(json.dumps(load))
    return done


# ---------------------------------------------------------------------------------------------
# evaluation (one code path)
def reference(frames: list[Atoms], with_stress: bool) -> dict:
    from ase.stress import voigt_6_to_full_3x3_stress

    out = {
        "energy": np.array([a.info["REF_energy"] for a in frames]),
        "forces": np.concatenate([a.arrays["REF_forces"] for a in frames]),
        "num_atoms": np.array([len(a) for a in frames]),
    }
    if with_stress:
        out["stress"] = np.stack([voigt_6_to_full_3x3_stress(a.info["REF_stress"]) for a in frames])
    return out


def predict(forward, frames: list[Atoms], r_max: float, dtype: torch.dtype, batch: int = 10) -> dict:
    """Energies, forces (and stress) of ``frames`` in float64 numpy: ``forward(graph)`` -> dict."""
    from equitensor.datasets.atoms_to_graph import graph_from_atoms
    from equitensor.graph import batch_graphs

    parts: dict[str, list] = {}
    for start in range(0, len(frames), batch):
        graph = batch_graphs([graph_from_atoms(a, r_max, dtype) for a in frames[start : start + batch]])
        for key, value in forward(graph).items():
            parts.setdefault(key, []).append(value.detach().to(torch.float64).numpy())
    return {key: np.concatenate(value) for key, value in parts.items()}


def ours_forward(model, with_stress: bool):
    def forward(graph):
        out = model(graph, compute_forces=True, compute_stress=with_stress)
        return {k: out[k] for k in ("energy", "forces", *(("stress",) if with_stress else ()))}

    return forward


def mace_torch_forward(theirs, ours, with_stress: bool):
    """mace-torch's own forward on our graph (its inputs built by the interop module)."""
    from equitensor.interop.mace_torch import mace_torch_inputs

    def forward(graph):
        out = theirs(
            mace_torch_inputs(ours, graph), training=False, compute_force=True, compute_stress=with_stress
        )
        return {k: out[k] for k in ("energy", "forces", *(("stress",) if with_stress else ()))}

    return forward


def errors(pred: dict, ref: dict) -> dict:
    out = prediction_errors(pred["energy"], ref["energy"], pred["forces"], ref["forces"], ref["num_atoms"])
    if "stress" in ref and "stress" in pred:
        ds = (pred["stress"] - ref["stress"]).ravel()
        out["stress_rmse_meV_per_A3"] = 1e3 * float(np.sqrt(np.mean(ds**2)))
    return out


def max_differences(a: dict, b: dict) -> dict:
    return {f"max_abs_{k}_diff": float(np.abs(a[k] - b[k]).max()) for k in a if k in b}


def load_ours(run_dir: Path):
    import equitensor

    return equitensor.load_model(run_dir / "mace.model")


def load_mace_torch(run_dir: Path):
    """mace-torch's model file (a pickled module: its own format) and our float64 MACE with its
    weights (checked against it on a random structure by mace_from_mace_torch)."""
    from equitensor.interop.mace_torch import mace_from_mace_torch

    theirs = torch.load(run_dir / "mace.model", map_location="cpu", weights_only=False)
    dtype = next(theirs.parameters()).dtype
    # `theirs` becomes float64 in place; built in float32, it keeps float32 constants inside e3nn's
    # generated code, so the two agree to ~1e-7 relative only
    tolerance = 1e-8 if dtype == torch.float64 else 1e-5
    converted = mace_from_mace_torch(theirs, check_tolerance=tolerance)
    return theirs.to(dtype), converted, dtype


def ours_cli_test(run_dir: Path) -> dict:
    rows = {r["name"]: r for r in json.loads((run_dir / "final_metrics.json").read_text())}
    test = rows["test"]
    return {
        "energy_rmse_meV_per_atom": test.get("energy_rmse"),
        "forces_rmse_meV_per_A": test.get("forces_rmse"),
        "stress_rmse_meV_per_A3": test.get("stress_rmse"),
    }


def mace_cli_test(run_dir: Path, seed: int, frames: list[Atoms]) -> dict:
    """The test errors mace_run_train logged ('Error-table on TEST'). It splits the test file by
    config_type (one row each, rounded to 0.1): the rows are pooled here into the whole set's RMSE,
    sqrt(sum_i n_i RMSE_i^2 / sum_i n_i) with n_i the row's structures (energy per atom, stress) or
    atoms (forces)."""
    text = (run_dir / "logs" / f"mace_run-{seed}.log").read_text()
    tail = text.split("Error-table on TEST:", 1)[1].splitlines()
    rows = [line for line in tail if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[1:]:
        values = [c.strip() for c in line.strip("|").split("|")]
        table[values[0].removesuffix("_Default")] = dict(zip(header, values))
    structures, atoms = {}, {}
    for a in frames:
        kind = a.info.get("config_type", "Default")
        structures[kind] = structures.get(kind, 0) + 1
        atoms[kind] = atoms.get(kind, 0) + len(a)
    if set(table) != set(structures):
        raise ValueError(
            f"{run_dir}: mace-torch's test rows {sorted(table)} != config types {sorted(structures)}"
        )
    out = {"rows": table}
    for key, name, counts in (
        ("energy_rmse_meV_per_atom", "RMSE E / meV / atom", structures),
        ("forces_rmse_meV_per_A", "RMSE F / meV / A", atoms),
        ("stress_rmse_meV_per_A3", "RMSE Stress (Virials) / meV / A (A^3)", structures),
    ):
        if all(name in row for row in table.values()):
            squares = sum(counts[k] * float(row[name]) ** 2 for k, row in table.items())
            out[key] = float(np.sqrt(squares / sum(counts.values())))
    return out


def longest_wait(losses: list[float]) -> int:
    """The most consecutive epochs without a new lowest validation loss (what ReduceLROnPlateau's
    patience counts, up to its 1e-4 relative threshold)."""
    best, wait, longest = float("inf"), 0, 0
    for loss in losses:
        best, wait = (loss, 0) if loss < best else (best, wait + 1)
        longest = max(longest, wait)
    return longest


def ours_history(run_dir: Path) -> dict:
    with open(run_dir / "metrics.csv") as file:
        history = list(csv.DictReader(file))
    losses = [float(r["valid_loss"]) for r in history]
    return {
        "epochs_run": len(history),
        "best_epoch": int(np.argmin(losses)) + 1,
        "longest_wait": longest_wait(losses),
        "last_lr": float(history[-1]["lr"]),
        "train_loop_s": float(sum(float(r["time_s"]) for r in history)),
    }


def mace_history(run_dir: Path, seed: int) -> dict:
    """Epochs, best epoch (1-based, lowest validation loss) and the checkpoint kept."""
    evals = []
    for line in (run_dir / "results" / f"mace_run-{seed}_train.txt").read_text().splitlines():
        row = json.loads(line)
        if row.get("mode") == "eval" and row.get("epoch") is not None:
            evals.append(row)
    losses = [float(r["loss"]) for r in evals]
    checkpoints = sorted((run_dir / "checkpoints").glob("*.pt"))
    kept = [int(m.group(1)) for p in checkpoints if (m := re.search(r"_epoch-(\d+)", p.name))]
    return {
        "epochs_run": len(evals),
        "best_epoch": int(evals[int(np.argmin(losses))]["epoch"]) + 1,
        "longest_wait": longest_wait(losses),
        "checkpoint_epoch": max(kept) + 1 if kept else None,
    }


def evaluate_runs(work: Path, timings: dict, setups: dict) -> list[dict]:
    torch.set_num_threads(1)
    rows = []
    frames = {case: ase.io.read(work / case / "data" / "test.xyz", index=":") for case in setups}
    order = {case: k for k, case in enumerate(CASES)}
    runs = sorted(timings.values(), key=lambda r: (order[r["case"]], r["library"], not r["ema"], r["seed"]))
    for info in runs:
        case, library, seed, ema = info["case"], info["library"], info["seed"], info["ema"]
        if case not in setups:
            continue
        run_dir = Path(info["run_dir"])
        with_stress = setups[case]["resolved"]["stress_weight"] > 0
        ref = reference(frames[case], with_stress)
        row = {"case": case, "library": library, "ema": ema, "seed": seed, "wall_s": info["wall_s"]}
        if library == "equitensor":
            native = load_ours(run_dir)
            dtype = next(native.parameters()).dtype
            model = load_ours(run_dir).double()
            native_pred = predict(ours_forward(native, with_stress), frames[case], model.r_max, dtype)
            row["cli_test"] = ours_cli_test(run_dir)
            row.update(ours_history(run_dir))
        else:
            native, model, dtype = load_mace_torch(run_dir)
            native_pred = predict(
                mace_torch_forward(native, model, with_stress), frames[case], model.r_max, dtype
            )
            row["cli_test"] = mace_cli_test(run_dir, seed, frames[case])
            row.update(mace_history(run_dir, seed))
        row["avg_num_neighbors"] = float(model.config["avg_num_neighbors"])
        row["scale"] = float(model.config["scale"])
        row["e0s"] = {
            str(z): float(e) for z, e in zip(model.config["atomic_numbers"], model.config["atomic_energies"])
        }
        pred = predict(ours_forward(model, with_stress), frames[case], model.r_max, torch.float64)
        row.update(errors(pred, ref))
        row["native_dtype"] = str(dtype).replace("torch.", "")
        row["native"] = {
            **{k: v for k, v in errors(native_pred, ref).items() if "rmse" in k},
            **max_differences(native_pred, pred),
        }
        rows.append(row)
        print(
            f"{case:10s} {library:10s} ema {'on ' if ema else 'off'} seed {seed}: "
            f"F RMSE {row['forces_rmse_meV_per_A']:.2f} meV/Å, "
            f"E RMSE {row['energy_rmse_meV_per_atom']:.3f} meV/atom "
            f"(native {row['native']['forces_rmse_meV_per_A']:.2f}; "
            f"CLI {row['cli_test'].get('forces_rmse_meV_per_A')})",
            flush=True,
        )
    return rows


# ---------------------------------------------------------------------------------------------
# report
METRICS = ("forces_rmse_meV_per_A", "energy_rmse_meV_per_atom", "stress_rmse_meV_per_A3", "wall_s")


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for case in CASES:
        for library in LIBRARIES:
            for ema in (True, False):
                part = [r for r in rows if (r["case"], r["library"], r["ema"]) == (case, library, ema)]
                if not part:
                    continue
                stats = {m: seed_statistics(r[m] for r in part) for m in METRICS if m in part[0]}
                out.append({"case": case, "library": library, "ema": ema, "seeds": len(part), **stats})
    return out


def ema_effect(rows: list[dict]) -> list[dict]:
    """Per case and library: test force RMSE with EMA minus without, paired by seed (same initial
    weights and batches: the EMA draws no random numbers), and whether the ranges overlap."""
    out = []
    for case in CASES:
        for library in LIBRARIES:
            on = {r["seed"]: r for r in rows if (r["case"], r["library"], r["ema"]) == (case, library, True)}
            off = {
                r["seed"]: r for r in rows if (r["case"], r["library"], r["ema"]) == (case, library, False)
            }
            seeds = sorted(set(on) & set(off))
            if not seeds:
                continue
            entry = {"case": case, "library": library, "seeds": seeds}
            for metric in ("forces_rmse_meV_per_A", "energy_rmse_meV_per_atom"):
                diffs = [on[s][metric] - off[s][metric] for s in seeds]
                a, b = [on[s][metric] for s in seeds], [off[s][metric] for s in seeds]
                entry[metric] = {
                    "paired_differences": diffs,
                    **seed_statistics(diffs),
                    "ema_better_every_seed": all(d < 0 for d in diffs),
                    "ema_worse_every_seed": all(d > 0 for d in diffs),
                    "ranges_separate": max(a) < min(b) or max(b) < min(a),
                }
            out.append(entry)
    return out


def versions() -> dict:
    import equitensor

    names = ["equitensor", "mace-torch", "e3nn", "torch-ema", "torch_geometric", "matscipy", "vesin", "ase"]
    v = package_versions(names)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "equitensor": v["equitensor"],
        "equitensor_commit": git_commit(),
        # the study may run on a clean checkout of the commit (PYTHONPATH), not the working tree
        "equitensor_imported_from": str(Path(equitensor.__file__).parent),
        **{k: v[k] for k in names[1:]},
        "numpy": np.__version__,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads_per_run": 1,
    }


def _settings_rows(setup: dict) -> list[tuple[str, str]]:
    c, m = setup["resolved"], setup["model"]
    return [
        ("model", f"MACE {m['hidden_irreps']}, max_ell {m['max_ell']}, correlation {m['correlation']}, "
         f"{m['num_interactions']} interactions, {m['num_bessel']} Bessel, p={m['num_polynomial_cutoff']}, "
         f"radial MLP {m['radial_MLP']}, readout MLP {m['MLP_irreps']}"),
        ("r_max (Å)", str(c["r_max"])),
        ("dtype", c["dtype"]),
        ("epochs", str(c["epochs"])),
        ("batch size / validation batch", f"{c['batch_size']} / {c['valid_batch_size']}"),
        ("optimiser", f"Adam, AMSGrad {c['amsgrad']}, lr {c['lr']}, weight decay {c['weight_decay']}"),
        ("scheduler", f"ReduceLROnPlateau on the validation loss, factor {c['lr_factor']}, "
         f"patience {c['scheduler_patience']} epochs"),
        ("loss", f"MSE, weights energy per atom {c['energy_weight']}, forces {c['forces_weight']}, "
         f"stress {c['stress_weight']}"),
        ("gradient clipping (norm)", str(c["clip_grad"])),
        ("EMA", f"on/off, decay {c['ema_decay']} (warm-up min(decay, (1+n)/(10+n)))"),
        ("E0s", "isolated atoms in the training file (ours `e0s: auto`, mace-torch `IsolatedAtom` frames)"),
        ("scale / shift", "RMS training force / 0 (ours `scaling: rms_forces`, `shift: zero`; mace-torch "
         "`--model MACE --scaling rms_forces_scaling`)"),
        ("model kept", "lowest validation loss (with the EMA weights when on)"),
    ]  # fmt: skip


def write_report(out: Path, record: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    v, rows = record["environment"], record["rows"]
    lines = [
        f"# MACE: `equitensor train` vs `mace_run_train`, EMA on and off ({record['date']})",
        "",
        "Issue 17 item 7 (accuracy by default). Produced by `benchmarks/mace_vs_mace_torch_training.py` "
        f"(command: `{record['command']}`); every number below is in `{out.with_suffix('.json').name}`.",
        "",
        f"Hardware: {v['cpu']}, {v['cores']} cores, shared with another engineer's work; each run 1 "
        "thread, two runs at once (ours and mace-torch's with the same case, seed and EMA setting side "
        f"by side). Versions: Python {v['python']}, torch {v['torch']}, equitensor {v['equitensor']} "
        f"(commit {v['equitensor_commit']}, imported from {v.get('equitensor_imported_from')}), "
        f"mace-torch {v['mace-torch']} (e3nn {v['e3nn']}, torch-ema "
        f"{v['torch-ema']}, matscipy {v['matscipy']}), vesin {v['vesin']}, ase {v['ase']}, "
        f"numpy {v['numpy']}.",
        "",
        f"Budget: {record['budget']}",
        "",
        "## Test errors: mean ± std over seeds [min, max]",
        "",
        "Errors of the kept (best-validation) model of every run, all computed by the same code: the "
        "model as an equitensor MACE in float64 (mace-torch's weights loaded through "
        "`equitensor.interop.mace_torch`), predictions compared with numpy. Sample standard deviation "
        "(n - 1).",
        "",
        "| case | library | EMA | seeds | test F RMSE (meV/Å) | test E RMSE (meV/atom) | "
        "test stress RMSE (meV/Å³) | wall time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in record["summary"]:
        stress = statistics_cell(s["stress_rmse_meV_per_A3"], 2) if "stress_rmse_meV_per_A3" in s else "-"
        lines.append(
            f"| {s['case']} | {s['library']} | {'on' if s['ema'] else 'off'} | {s['seeds']} | "
            f"{statistics_cell(s['forces_rmse_meV_per_A'])} | "
            f"{statistics_cell(s['energy_rmse_meV_per_atom'], 3)} | "
            f"{stress} | {statistics_cell(s['wall_s'], 0)} |"
        )
    lines += [
        "",
        "## The EMA's effect, paired by seed",
        "",
        "With the same library and seed, EMA on and off start from the same weights and see the same "
        "batches (the EMA draws no random numbers), so the per-seed difference isolates the EMA. "
        "Negative: the EMA lowers the error.",
        "",
        "| case | library | F RMSE on - off (meV/Å), per seed | mean ± std | "
        "E RMSE on - off (meV/atom), per seed "
        "| mean ± std | F ranges over seeds separate |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in record["ema_effect"]:
        f, en = e["forces_rmse_meV_per_A"], e["energy_rmse_meV_per_atom"]
        lines.append(
            f"| {e['case']} | {e['library']} | {', '.join(f'{d:+.2f}' for d in f['paired_differences'])} | "
            f"{f['mean']:+.2f} ± {f['std']:.2f} | "
            f"{', '.join(f'{d:+.3f}' for d in en['paired_differences'])} | "
            f"{en['mean']:+.3f} ± {en['std']:.3f} | {'yes' if f['ranges_separate'] else 'no'} |"
        )
    lines += [
        "",
        "## Every run",
        "",
        "| case | library | EMA | seed | epochs | best epoch | wall (s) | test F RMSE (meV/Å) | "
        "test F MAE (meV/Å) | test E RMSE (meV/atom) | test E mean error (meV) | test stress RMSE (meV/Å³) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        stress = f"{r['stress_rmse_meV_per_A3']:.2f}" if "stress_rmse_meV_per_A3" in r else "-"
        lines.append(
            f"| {r['case']} | {r['library']} | {'on' if r['ema'] else 'off'} | {r['seed']} | "
            f"{r['epochs_run']} | "
            f"{r['best_epoch']} | {r['wall_s']:.0f} | {r['forces_rmse_meV_per_A']:.2f} | "
            f"{r['forces_mae_meV_per_A']:.2f} | {r['energy_rmse_meV_per_atom']:.3f} | "
            f"{r['energy_mean_error_meV']:+.2f} | {stress} |"
        )
    lines += [
        "",
        "## Cross-checks",
        "",
        "Each model also evaluated in its training dtype through its own library's forward "
        "(`native`), next to the test table its CLI printed at the end of training (its own code, "
        "its training dtype): F RMSE (meV/Å) and E RMSE (meV/atom); and the largest difference of the "
        "native predictions from the float64 ones above.",
        "",
        "| case | library | EMA | seed | F RMSE here / native / CLI | E RMSE here / native / CLI | "
        "max abs diff native vs float64: E (meV), F (meV/Å) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        n, c = r["native"], r["cli_test"]

        def fmt(x, d):
            return f"{x:.{d}f}" if isinstance(x, (int, float)) else "?"

        lines.append(
            f"| {r['case']} | {r['library']} | {'on' if r['ema'] else 'off'} | {r['seed']} | "
            f"{r['forces_rmse_meV_per_A']:.2f} / {n['forces_rmse_meV_per_A']:.2f} / "
            f"{fmt(c.get('forces_rmse_meV_per_A'), 2)} | {r['energy_rmse_meV_per_atom']:.3f} / "
            f"{n['energy_rmse_meV_per_atom']:.3f} / {fmt(c.get('energy_rmse_meV_per_atom'), 3)} | "
            f"{1e3 * n['max_abs_energy_diff']:.3f}, {1e3 * n['max_abs_forces_diff']:.3f} |"
        )
    checks = record["statistics_check"]
    lines += [
        "",
        "Same statistics on both sides (from the trained models): "
        + "; ".join(f"{case}: {text}" for case, text in checks.items())
        + ".",
    ]
    for case, setup in record["cases"].items():
        d = setup["data"]
        lines += [
            "",
            f"## Settings: {case} (the same for both)",
            "",
            f"Data: training {d['train']}; validation {d['valid']}; test {d['test']}. Source: {d['source']}.",
            "",
            "| setting | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {val} |" for k, val in _settings_rows(setup)]
        example = {
            r["library"]: r
            for r in record["runs"].values()
            if r["case"] == case and r["seed"] == 0 and r["ema"]
        }
        lines += ["", "Commands (seed 0, EMA on; `ema=false` / no `--ema` for EMA off):", ""]
        for library in LIBRARIES:
            if library in example:
                lines += ["```", example[library]["command"], "```"]
        lines += ["", f"Our configuration file (`{Path(setup['config_file']).name}`):", "", "```yaml"]
        lines += yaml.safe_dump(setup["ours_config"], sort_keys=False).splitlines() + ["```"]
    lines += ["", "## Differences that remain", ""] + [f"- {item}" for item in record["differences"]]
    if record.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in record["notes"]]
    if record.get("reevaluated"):
        r = record["reevaluated"]
        lines += [
            "",
            f"Re-evaluated from the trained runs on {r['date']} at commit {r['equitensor_commit']} "
            f"(`{r['command']}`); the training ran as above.",
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def statistics_check(rows: list[dict]) -> dict:
    """Do both libraries' models carry the same E0s, average neighbour count and scale?"""
    out = {}
    for case in CASES:
        part = [r for r in rows if r["case"] == case]
        if not part:
            continue
        texts = []
        for library in LIBRARIES:
            mine = [r for r in part if r["library"] == library]
            if mine:
                r = mine[0]
                texts.append(
                    f"{library} E0s {r['e0s']}, avg_num_neighbors {r['avg_num_neighbors']:.6f}, "
                    f"scale {r['scale']:.6f} eV/Å"
                )
        out[case] = " / ".join(texts)
    return out


def notes(record: dict) -> list[str]:
    rows, out = record["rows"], []
    load = record.get("load_average_during_training")
    walls = {}
    for r in rows:
        walls.setdefault((r["case"], r["library"]), []).append(r["wall_s"])
    spread = max(max(w) / min(w) for w in walls.values())
    out.append(
        "Wall times: the 2-core machine was shared"
        + (
            f" (1-minute load average {load['mean']:.1f} on average, {load['max']:.1f} at most, of "
            "which our two runs are 2)"
            if load
            else ""
        )
        + f"; the same case and library vary by up to {spread:.2f}x between runs, so they say little "
        "about speed. The budget is matched in epochs and optimiser steps, not seconds."
    )
    for case, setup in record["cases"].items():
        part = [r for r in rows if r["case"] == case]
        patience, epochs = setup["resolved"]["scheduler_patience"], setup["resolved"]["epochs"]
        lrs = sorted({r["last_lr"] for r in part if "last_lr" in r})
        out.append(
            f"{case}: the plateau scheduler never lowered the learning rate: the longest run of epochs "
            f"without a new best validation loss was {max(r['longest_wait'] for r in part)} (both "
            f"libraries; patience {patience}, {epochs} epochs), and ours logged lr "
            f"{', '.join(f'{x:g}' for x in lrs)} in its last epoch. With EMA on, the best validation "
            f"loss came in the last epoch in {sum(r['best_epoch'] == epochs for r in part if r['ema'])} "
            f"of {sum(1 for r in part if r['ema'])} runs: the budget ends while the models still improve."
        )
    for effect in record["ema_effect"]:
        for metric, unit, digits in (
            ("forces_rmse_meV_per_A", "F RMSE (meV/Å)", 2),
            ("energy_rmse_meV_per_atom", "E RMSE (meV/atom)", 3),
        ):
            e = effect[metric]
            verdict = (
                "lower with EMA for every seed"
                if e["ema_better_every_seed"]
                else "higher with EMA for every seed"
                if e["ema_worse_every_seed"]
                else "not consistently changed by the EMA (paired differences of both signs)"
            )
            out.append(
                f"{effect['case']}, {effect['library']}: test {unit} {verdict}; on - off "
                f"{e['mean']:+.{digits}f} ± {e['std']:.{digits}f} (mean ± std over {e['n']} seeds)."
            )
    return out


# ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="results stem (.md and .json); default none")
    parser.add_argument(
        "--work",
        default=None,
        help="work folder outside the repository (default /tmp/mace_training_study; --quick: a new "
        "temporary folder)",
    )
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--ema", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--epochs", type=int, default=None, help="override every case's epochs")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument(
        "--quick", action="store_true", help="2 epochs, seed 0, 20 test frames, temporary folder"
    )
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate the runs in --work")
    args = parser.parse_args()
    test_frames = None
    if args.quick:
        args.epochs, args.seeds, test_frames = 2, [0], 20
        args.work = args.work or tempfile.mkdtemp(prefix="mace_training_quick_")
    args.work = args.work or "/tmp/mace_training_study"
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if str(work.resolve()).startswith(str(ROOT)):
        raise SystemExit("--work must be outside the repository (the data are not copied into it)")

    setups = {case: case_setup(case, work, test_frames, args.epochs) for case in args.cases}
    emas = [e == "on" for e in args.ema]
    if args.evaluate_only:
        timings = json.loads((work / "timings.json").read_text())
    else:
        start = time.perf_counter()
        timings = train_all(work, setups, args.seeds, emas, args.parallel)
        total = time.perf_counter() - start
        print(f"all training: {total:.0f} s", flush=True)
        (work / "total.json").write_text(json.dumps({"training_wall_s": total}))
        failed = [k for k, v in timings.items() if v["returncode"] != 0]
        if failed:
            raise SystemExit(f"training failed: {failed} (logs in {work})")
    rows = evaluate_runs(work, timings, setups)
    total = (
        json.loads((work / "total.json").read_text())["training_wall_s"]
        if (work / "total.json").is_file()
        else None
    )
    budget = "; ".join(
        f"{case}: {s['resolved']['epochs']} epochs of "
        f"{s['data']['num_train'] // s['resolved']['batch_size']} "
        f"steps (batch {s['resolved']['batch_size']})"
        for case, s in setups.items()
    )
    if total is not None:
        budget += (
            f"; all {len(timings)} runs took {total / 60:.0f} minutes of wall time, {args.parallel} at once"
        )
    record = {
        "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "environment": versions(),
        "budget": budget,
        "cases": setups,
        "runs": timings,
        "rows": rows,
        "summary": summary(rows),
        "ema_effect": ema_effect(rows),
        "statistics_check": statistics_check(rows),
        "differences": DIFFERENCES,
    }
    previous = Path(f"{args.out}.json") if args.out else None
    if args.evaluate_only and previous is not None and previous.is_file():
        old = json.loads(previous.read_text())  # the training run's command, date and environment
        record["reevaluated"] = {
            **{k: record[k] for k in ("command", "date")},
            "equitensor_commit": record["environment"]["equitensor_commit"],
        }
        record.update({k: old[k] for k in ("command", "date", "environment")})
    load = work / "load.json"
    if load.is_file():
        record["load_average_during_training"] = json.loads(load.read_text())
    record["notes"] = notes(record)
    if args.out:
        write_report(Path(args.out), record)
        print(f"wrote {args.out}.md and .json")
    else:
        print(json.dumps(record["summary"], indent=1))
        print(json.dumps(record["ema_effect"], indent=1))


if __name__ == "__main__":
    main()
