"""``model_study.py measure``: accuracy, training cost, speed and equivariance of the trained models.

Accuracy: ``equitensor eval``'s metrics (model in its training dtype) on the held-out 300 K set and
the mixed-temperature set. Training cost: one epoch (training and validation) from scratch with the
study's config on 2 threads, the models one after the other on an otherwise idle machine; and the
median epoch of the study's runs (which shared the 2 cores two at a time, one thread each).
Speed (2 threads, float32, the trained weights): energy+forces latency (positions changed each
call) and ASE velocity-Verlet MD steps/s, on the 27-atom 3BPA molecule and an 864-atom fcc cell
(a = 3.61 Å, the Cu cell of the other benchmarks, every atom carbon so the 3BPA models know it;
42 neighbours within 5 Å), models round-robin, median of the repeats. Rows that reuse a trained
model with another backend (same weights) are checked to give the same forces first.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.build import bulk
from ase.md.verlet import VelocityVerlet
from ase.units import fs

from equitensor import load_model
from equitensor.bench.environment import hardware, versions
from equitensor.calculator import EquitensorCalculator
from equitensor.cli import main as cli_main
from equitensor.tp import EdgeConvolution, GauntProduct, expressivity

#: rows of the speed table: (label, trained model, backend switch or None)
SPEED_ROWS = [
    ("mace (sparse kernels)", "mace", None),
    ("mace (cg, same weights)", "mace", {"backend": "cg", "product_backend": "cg"}),
    ("mace-gaunt (2D FFT)", "mace-gaunt", None),
    ("mace-gaunt (S2 grid, same weights)", "mace-gaunt", {"product_backend": "grid"}),
    ("tdn (cp)", "tdn", None),
    ("escn (so2)", "escn", None),
    ("facet", "facet", None),
    ("tensornet", "tensornet", None),
]


def systems(data: Path) -> dict:
    molecule = ase.io.read(data / "test_300K.xyz", 0)
    molecule.calc = None
    cell = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(6)
    cell.set_atomic_numbers([6] * len(cell))
    cell.rattle(0.05, seed=1)
    return {"3bpa_27": molecule, "fcc_864": cell}


def accuracy(out: Path, name: str) -> dict:
    result = {}
    for test in ("test_300K", "test_mixedT"):
        path = out / "metrics" / f"{name}_{test}.json"
        path.parent.mkdir(exist_ok=True)
        model = out / "runs" / name / f"{name}.model"
        fresh = path.is_file() and path.stat().st_mtime > model.stat().st_mtime  # evaluated already
        code = (
            0
            if fresh
            else cli_main(
                [
                    "eval",
                    "--model",
                    str(model),
                    "--data",
                    str(out / "data" / f"{test}.xyz"),
                    "--metrics-json",
                    str(path),
                ]
            )
        )
        if code != 0:
            raise SystemExit(f"eval of {name} on {test} failed")
        metrics = json.loads(path.read_text())
        result[test] = {
            "energy_rmse_meV_per_atom": metrics["energy_rmse"],
            "forces_rmse_meV_per_A": metrics["forces_rmse"],
        }
    return result


def seconds_per_epoch(out: Path, name: str) -> float:
    lines = (out / "runs" / name / "metrics.csv").read_text().splitlines()
    column = lines[0].split(",").index("time_s")
    return statistics.median(float(line.split(",")[column]) for line in lines[1:])


def quiet_epoch_seconds(out: Path, name: str) -> float:
    """One training epoch from scratch with the study's config, 2 threads, nothing else running."""
    import subprocess
    import sys

    run = out / "timing" / name
    overrides = ["epochs=1", "swa=false", "num_threads=2", f"output_dir={run}"]
    command = [
        sys.executable,
        "-m",
        "equitensor.cli",
        "train",
        str(out / "configs" / f"{name}.yaml"),
        *overrides,
    ]
    subprocess.run(command, check=True, capture_output=True)
    lines = (run / "metrics.csv").read_text().splitlines()
    return float(lines[1].split(",")[lines[0].split(",").index("time_s")])


def expressivity_summary(model: torch.nn.Module) -> list[dict]:
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, (EdgeConvolution, GauntProduct)):
            report = expressivity(module)
            rows.append(
                {
                    "module": name,
                    "product": str(report).splitlines()[0],
                    "exact": report.exact,
                    "approximate": report.approximate,
                    "unsupported": report.unsupported,
                }
            )
    return rows


def _time(calculator, atoms, kind: str, steps: int) -> float:
    atoms = atoms.copy()
    atoms.calc = calculator
    if kind == "latency":
        rng = np.random.default_rng(0)
        base = atoms.positions.copy()
        start = time.perf_counter()
        for _ in range(steps):
            atoms.positions = base + rng.normal(scale=0.01, size=base.shape)
            atoms.get_forces()
        return (time.perf_counter() - start) / steps * 1000  # ms per call
    dyn = VelocityVerlet(atoms, timestep=0.5 * fs)
    dyn.run(2)
    start = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - start)  # steps/s


def speed(out: Path, structures: dict, repeats: int = 3) -> dict:
    torch.set_num_threads(2)
    calculators = {}
    for label, name, switch in SPEED_ROWS:
        calculators[label] = EquitensorCalculator(
            str(out / "runs" / name / f"{name}.model"), dtype="float32", backend=switch
        )
    # same-weights rows must give the trained model's forces
    for label, name, switch in SPEED_ROWS:
        if switch is None:
            continue
        reference = next(lbl for lbl, n, s in SPEED_ROWS if n == name and s is None)
        forces = []
        for lbl in (reference, label):
            atoms = structures["3bpa_27"].copy()
            atoms.calc = calculators[lbl]
            forces.append(atoms.get_forces())
        difference = float(np.abs(forces[0] - forces[1]).max())
        if difference > 1e-4:
            raise SystemExit(f"{label} disagrees with {reference}: max force difference {difference} eV/Å")
    steps = {"3bpa_27": (30, 30), "fcc_864": (2, 2)}
    samples: dict = {
        label: {s: {"latency_ms": [], "md_steps_per_s": []} for s in structures} for label in calculators
    }
    for _ in range(repeats):
        for system, atoms in structures.items():
            for label, calculator in calculators.items():  # round-robin
                _time(calculator, atoms, "latency", 2)  # warm-up
                samples[label][system]["latency_ms"].append(
                    _time(calculator, atoms, "latency", steps[system][0])
                )
                samples[label][system]["md_steps_per_s"].append(
                    _time(calculator, atoms, "md", steps[system][1])
                )
    return {
        label: {s: {k: statistics.median(v) for k, v in values.items()} for s, values in per_system.items()}
        for label, per_system in samples.items()
    }


def measure(out: Path, models: list[str], results: Path) -> None:
    structures = systems(out / "data")
    record = {"hardware": hardware("cpu"), "versions": versions(), "models": {}}
    for name in models:
        model = load_model(out / "runs" / name / f"{name}.model")
        report = getattr(model, "equivariance_report", lambda: {})()
        record["models"][name] = {
            "class": type(model).__name__,
            "config": {k: v for k, v in model.config.items() if k not in ("atomic_energies",)},
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds_per_epoch": seconds_per_epoch(out, name),
            "seconds_per_epoch_quiet": quiet_epoch_seconds(out, name),
            "accuracy": accuracy(out, name),
            "equivariance_report": report,
            "expressivity": expressivity_summary(model),
        }
        print(
            name,
            json.dumps({k: v for k, v in record["models"][name].items() if k != "expressivity"}),
            flush=True,
        )
    record["speed"] = speed(out, structures)
    results.mkdir(parents=True, exist_ok=True)
    (results / "model_study.json").write_text(json.dumps(record, indent=1, default=str))
    commands = [
        "git -C <BOTNet-datasets mirror> show HEAD:dataset_3BPA/train_mixedT.xyz > /tmp/mixedT.xyz",
        f"python benchmarks/model_study.py prepare --out {out} --mixed /tmp/mixedT.xyz",
        f"python benchmarks/model_study.py train --out {out}  # = equitensor train <config> per model",
        f"python benchmarks/model_study.py measure --out {out}",
    ]
    write_report(record, results, commands)
    print(json.dumps(record["speed"], indent=1))


def write_report(record: dict, results: Path, commands: list[str]) -> None:
    """model_study.md (tables; the analysis is written by hand below the marker) and model_study.png."""
    models, speed = record["models"], record["speed"]
    lines = [
        "# Model study: every equitensor model on 3BPA, one budget",
        "",
        f"Machine: {record['hardware'].get('cpu', record['hardware'])}; versions: "
        + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
        "",
        "Commands:",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "## Accuracy and training cost",
        "",
        "| model | parameters | s/epoch (quiet, 2 threads) | s/epoch in the study "
        "| 300 K E RMSE (meV/atom) | 300 K F RMSE (meV/Å) "
        "| mixed-T E RMSE (meV/atom) | mixed-T F RMSE (meV/Å) "
        "| equivariance (largest measured piece error) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        cold, hot = m["accuracy"]["test_300K"], m["accuracy"]["test_mixedT"]
        report = m["equivariance_report"]
        equivariance = f"{max(report.values()):.1e}" if report else "exact (round-off)"
        lines.append(
            f"| {name} | {m['parameters']:,} "
            f"| {m['seconds_per_epoch_quiet']:.1f} | {m['seconds_per_epoch']:.1f} "
            f"| {cold['energy_rmse_meV_per_atom']:.2f} | {cold['forces_rmse_meV_per_A']:.1f} "
            f"| {hot['energy_rmse_meV_per_atom']:.2f} | {hot['forces_rmse_meV_per_A']:.1f} "
            f"| {equivariance} |"
        )
    lines += [
        "",
        "## Speed (float32, 2 threads, trained weights; median of round-robin repeats)",
        "",
        "| model (backend) | 27-atom latency (ms) | 27-atom MD steps/s "
        "| 864-atom latency (ms) | 864-atom MD steps/s |",
        "|---|---|---|---|---|",
    ]
    for label, per_system in speed.items():
        molecule, cell = per_system["3bpa_27"], per_system["fcc_864"]
        lines.append(
            f"| {label} | {molecule['latency_ms']:.1f} | {molecule['md_steps_per_s']:.1f} "
            f"| {cell['latency_ms']:.0f} | {cell['md_steps_per_s']:.2f} |"
        )
    lines += ["", "## Which backends can compute each model's products (`expressivity()`)", ""]
    for name, m in models.items():
        for row in m["expressivity"]:
            exact, approximate, unsupported = (
                ", ".join(row[key]) or "none" for key in ("exact", "approximate", "unsupported")
            )
            lines.append(
                f"- {name} `{row['module']}` ({row['product']}): exact on {exact}; "
                f"approximate on {approximate}; not expressible on {unsupported}"
            )
        if not m["expressivity"]:
            lines.append(f"- {name}: no irreps tensor products (Cartesian rank-2 tensors)")
    lines += ["", "## What the numbers show", "", "<!-- analysis -->", ""]
    (results / "model_study.md").write_text("\n".join(lines))

    plot(record, results)


def plot(record: dict, results: Path) -> None:
    """model_study.png: mixed-T force RMSE against MD steps/s, one panel per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, speed = record["models"], record["speed"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, system in zip(axes, ("3bpa_27", "fcc_864")):
        for label, per_system in speed.items():
            name = next(n for lbl, n, _ in SPEED_ROWS if lbl == label)
            if name not in models:
                continue
            error = models[name]["accuracy"]["test_mixedT"]["forces_rmse_meV_per_A"]
            x = per_system[system]["md_steps_per_s"]
            ax.scatter(x, error)
            ax.annotate(label, (x, error), fontsize=7, rotation=35, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(f"MD steps/s, {system} (float32, 2 threads)")
        ax.set_ylabel("mixed-T force RMSE (meV/Å)")
    figure.suptitle("3BPA: accuracy vs speed, same training budget")
    for ax in axes:
        ax.set_ylim(top=ax.get_ylim()[1] + 25)
    figure.tight_layout()
    figure.savefig(results / "model_study.png", dpi=120)
