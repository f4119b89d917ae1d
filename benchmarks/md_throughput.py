#!/usr/bin/env python
"""MD throughput: equitensor's EquitensorCalculator vs mace-torch's MACECalculator, same MACE size.

Both calculators drive the same ASE velocity-Verlet NVE run (from 300 K Maxwell-Boltzmann
velocities) in one process, on the same structures, one after the other and repeated round-robin
so they see the same machine load; the table gives the median over repeats of steps/s and
ns/day = 86400 s x steps/s x timestep. Every time includes the whole step: neighbour list, graph
and tensor building, model forward and backward (forces, and stress for periodic cells), ASE.

- equitensor: ``EquitensorCalculator`` with a Verlet list (vesin, skin 0.5 Å, filtered to r_max
  each step), on the default backends (cg edge convolution and product basis) and, as
  ``equitensor-sparse``, on the compiled sparse CPU kernels (``backend="sparse"``,
  ``product_backend="sparse"``, same weights); with ``--skin0`` also cg with skin 0 (a fresh
  vesin list every step).
- mace-torch: ``MACECalculator(models=...)`` eager (no compile, no cuEquivariance), which builds
  a fresh matscipy neighbour list and data object every step.
- with ``--exported``, ``equitensor-exported``: the same model written by ``equitensor export``
  (a ``.pt2`` AOTInductor package, forces unfolded into the graph: by default with the sparse
  kernels as custom-operator calls) and run by ``EquitensorCalculator("model.pt2")`` with the same
  Verlet list, and ``equitensor-exported-portable``: the ``--portable`` file (plain torch
  operations, the cg backends compiled by AOTInductor); compilation is not timed.

The two models have the same hyperparameters (``ScaleShiftMACE``, RealAgnostic interaction
blocks, ``use_reduced_cg=False``, which is the variant equitensor's MACE reproduces number for
number, see tests/test_mace.py) and random weights: throughput does not depend on training. The
parameter counts are printed side by side as a check of "same size".

Systems: acetylacetone (C5H8O2, 15 atoms, first frame of the BOTNet test_MD_300K set, a molecule),
fcc Cu 3x3x3 (108 atoms) and 6x6x6 (864 atoms) conventional cells, a = 3.61 Å, rattled 0.05 Å.

mace-torch pins e3nn 0.4.4, so run this with a Python that has mace-torch and equitensor (installed
with --no-deps), e.g. ``python -m venv /work/venv-mace && /work/venv-mace/bin/pip install
torch==2.13.0 mace-torch vesin pyyaml && /work/venv-mace/bin/pip install -e . --no-deps``.

Usage:
  /work/venv-mace/bin/python benchmarks/md_throughput.py [--systems acac cu108 cu864]
      [--dtypes float32 float64] [--steps 50] [--min-seconds 3] [--warmup 5] [--repeats 3]
      [--out PREFIX]
  --quick: a smoke test at the smallest size (acac, a tiny model, 3 steps), results not for quoting.
  --no-mace: equitensor only (for a Python without mace-torch).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

import equitensor
from equitensor.calculator import EquitensorCalculator
from equitensor.md import initialise_velocities, ns_per_day
from equitensor.models import MACE

ROOT = Path(__file__).resolve().parents[1]
BOTNET = Path(os.environ.get("BOTNET_DATA", ROOT.parent / "shared" / "data" / "botnet"))
ELEMENTS = [1, 6, 8, 29]
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def structure(name: str) -> Atoms:
    if name == "acac":
        path = BOTNET / "dataset_acac" / "test_MD_300K.xyz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; set BOTNET_DATA to the BOTNet data folder")
        atoms = ase.io.read(path, index=0)
        return Atoms(atoms.numbers, atoms.positions)  # drop the DFT labels
    repeats = {"cu108": 3, "cu864": 6}
    if name not in repeats:
        raise ValueError(f"unknown system {name!r}; choose from acac, {', '.join(repeats)}")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeats[name])
    atoms.rattle(0.05, seed=0)
    return atoms


def hyperparameters(args: argparse.Namespace) -> dict:
    return {
        "r_max": args.r_max,
        "num_bessel": 8,
        "num_polynomial_cutoff": 5,
        "max_ell": args.max_ell,
        "num_interactions": args.interactions,
        "correlation": args.correlation,
        "radial_MLP": args.radial_mlp,
        "avg_num_neighbors": args.avg_num_neighbors,
        "hidden_irreps": " + ".join(
            f"{args.channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(args.max_L + 1)
        ),
        "MLP_irreps": "16x0e",
    }


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The MACE hyperparameters besides the channels (read back by :func:`hyperparameters`)."""
    parser.add_argument("--max-L", type=int, default=1)
    parser.add_argument("--max-ell", type=int, default=3)
    parser.add_argument("--correlation", type=int, default=3)
    parser.add_argument("--interactions", type=int, default=2)
    parser.add_argument("--r-max", type=float, default=5.0)
    parser.add_argument("--radial-mlp", type=int, nargs="+", default=[64, 64, 64])
    parser.add_argument("--avg-num-neighbors", type=float, default=20.0)


def equitensor_model(hp: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return MACE(ELEMENTS, **hp)


def mace_torch_model(hp: dict) -> torch.nn.Module:
    from e3nn import o3
    from mace.modules import blocks, models

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return models.ScaleShiftMACE(
            atomic_inter_scale=1.0,
            atomic_inter_shift=0.0,
            interaction_cls=blocks.RealAgnosticResidualInteractionBlock,
            interaction_cls_first=blocks.RealAgnosticInteractionBlock,
            num_elements=len(ELEMENTS),
            atomic_energies=np.zeros(len(ELEMENTS)),
            atomic_numbers=ELEMENTS,
            gate=torch.nn.functional.silu,
            use_reduced_cg=False,
            **{
                **hp,
                "hidden_irreps": o3.Irreps(hp["hidden_irreps"]),
                "MLP_irreps": o3.Irreps(hp["MLP_irreps"]),
            },
        )
    finally:
        torch.set_default_dtype(default)


def exported_file(hp: dict, dtype: str, portable: bool = False) -> Path:
    """The model of :func:`equitensor_model` exported to a .pt2 file (compiled once per dtype)."""
    from equitensor.export import export_model

    kind = "portable" if portable else "kernels"
    path = Path(tempfile.gettempdir()) / f"md_throughput_{os.getpid()}_{dtype}_{kind}.pt2"
    if not path.exists():
        started = time.perf_counter()
        export_model(equitensor_model(hp), path, dtype=dtype, portable=portable)
        print(f"exported {path} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def make_calculator(implementation: str, hp: dict, dtype: str):
    """A fresh calculator; mace-torch's sets torch's global default dtype, so restore it."""
    default = torch.get_default_dtype()
    try:
        if implementation.startswith("equitensor-exported"):
            portable = implementation.endswith("portable")
            return EquitensorCalculator(exported_file(hp, dtype, portable), skin=0.5)
        if implementation == "mace-torch":
            from mace.calculators import MACECalculator

            return MACECalculator(models=mace_torch_model(hp), device="cpu", default_dtype=dtype)
        skin = {"equitensor": 0.5, "equitensor-skin0": 0.0, "equitensor-sparse": 0.5}[implementation]
        backend = (
            {"backend": "sparse", "product_backend": "sparse"} if implementation.endswith("sparse") else None
        )
        return EquitensorCalculator(equitensor_model(hp), dtype=dtype, skin=skin, backend=backend)
    finally:
        torch.set_default_dtype(default)


def parameter_count(calculator) -> int | None:
    model = calculator.model if hasattr(calculator, "neighbours") else calculator.models[0]
    return sum(p.numel() for p in model.parameters()) or None  # None: an exported file


def time_md(
    calculator, atoms: Atoms, steps: int, warmup: int, timestep_fs: float, min_seconds: float
) -> dict:
    """Seconds for blocks of ``steps`` NVE steps after ``warmup`` steps, repeated until at least
    ``min_seconds`` have passed (so a fast system is timed over many steps), and a few facts."""
    atoms = atoms.copy()
    atoms.calc = calculator
    initialise_velocities(atoms, 300.0, seed=0)
    dynamics = VelocityVerlet(atoms, timestep=timestep_fs * ase.units.fs)
    dynamics.run(warmup)
    start, done = time.perf_counter(), 0
    while True:
        dynamics.run(steps)
        done += steps
        seconds = time.perf_counter() - start
        if seconds >= min_seconds:
            break
    return {"seconds": seconds, "steps": done, "final_energy": float(atoms.get_total_energy())}


def check_same_forces(calculators: dict, atoms: Atoms, dtype: str) -> None:
    """Every equitensor calculator (same weights) gives the same forces before any timing."""
    forces = {}
    for name, calculator in calculators.items():
        if name.startswith("equitensor"):
            probe = atoms.copy()
            probe.calc = calculator
            forces[name] = probe.get_forces()
            calculator.reset()
    reference = forces["equitensor"]
    tolerance = 1e-8 if dtype == "float64" else 1e-3
    for name, value in forces.items():
        error = float(np.abs(value - reference).max())
        if error > tolerance * max(1.0, float(np.abs(reference).max())):
            raise SystemExit(f"{name} forces differ from equitensor's by {error:.3g} eV/Å")


def neighbours_per_atom(atoms: Atoms, r_max: float) -> float:
    from equitensor.verlet_list import canonical_pairs

    return len(canonical_pairs(atoms, r_max)[0]) / len(atoms)


def versions() -> dict:
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ase": ase.__version__,
        "numpy": np.__version__,
        "equitensor": equitensor.__version__,
    }
    for name in ("mace", "e3nn", "vesin", "matscipy"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError:
            out[name] = None
    try:
        out["equitensor_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        out["equitensor_commit"] = None
    return out


def hardware() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": "cpu"}


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# MD throughput: equitensor vs mace-torch (same MACE hyperparameters, random weights)",
        "",
        f"Date {meta['date']}; {meta['hardware']['cpu']}, {meta['hardware']['cores']} cores, "
        f"torch threads {meta['hardware']['torch_threads']}; versions {meta['versions']}.",
        f"Model: {meta['hyperparameters']}; parameters equitensor {meta['parameters']['equitensor']}, "
        f"mace-torch {meta['parameters'].get('mace-torch')}.",
        f"NVE velocity Verlet, {meta['timestep_fs']} fs; blocks of {meta['steps']} steps timed until at "
        f"least {meta['min_seconds']} s had passed, after {meta['warmup']} warm-up steps; median steps/s "
        f"of {meta['repeats']} round-robin repeats. Neighbour list included in "
        "every time (equitensor: vesin Verlet list, skin 0.5 Å, or skin 0 = fresh list each step; "
        "mace-torch: fresh matscipy list each step).",
        "",
        "| system | atoms | neighbours/atom | dtype | implementation | ms/step | steps/s | ns/day | "
        "vs mace-torch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = row.get("speedup_vs_mace")
        rate = row["steps_per_second"]
        lines.append(
            f"| {row['system']} | {row['atoms']} | {row['neighbours_per_atom']:.1f} | {row['dtype']} | "
            f"{row['implementation']} | {1000 / rate:.2f} | {rate:.2f} | "
            f"{row['ns_per_day']:.4f} | {'' if ratio is None else f'{ratio:.2f}x'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", nargs="+", default=["acac", "cu108", "cu864"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=sorted(DTYPES))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--min-seconds", type=float, default=3.0, help="repeat blocks of --steps until this long"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--channels", type=int, default=128)
    add_model_arguments(parser)
    parser.add_argument("--no-mace", action="store_true", help="time equitensor only")
    parser.add_argument("--quick", action="store_true", help="smoke test at the smallest size")
    parser.add_argument("--skin0", action="store_true", help="also time equitensor (cg) with skin 0")
    parser.add_argument("--exported", action="store_true", help="also time the model exported to .pt2")
    parser.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results" / "md_throughput"),
        help="writes PREFIX.json and PREFIX.md",
    )
    args = parser.parse_args()
    if args.quick:
        args.systems, args.steps, args.warmup, args.repeats = ["acac"], 3, 1, 1
        args.min_seconds = 0.0
        args.channels, args.max_ell, args.correlation, args.radial_mlp = 8, 2, 2, [16]
    implementations = ["equitensor", "equitensor-sparse"]
    if args.skin0:
        implementations.append("equitensor-skin0")
    if args.exported:
        implementations += ["equitensor-exported", "equitensor-exported-portable"]
    if not args.no_mace:
        try:
            import mace  # noqa: F401
        except ImportError as error:
            raise SystemExit(
                f"mace-torch is not importable in this Python ({error}); run with the mace-torch venv "
                "(see the docstring) or pass --no-mace"
            ) from error
        implementations.append("mace-torch")

    hp = hyperparameters(args)
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "hardware": hardware(),
        "versions": versions(),
        "hyperparameters": hp,
        "timestep_fs": args.timestep,
        "steps": args.steps,
        "min_seconds": args.min_seconds,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "quick": args.quick,
        "parameters": {},
    }
    rows = []
    for system in args.systems:
        atoms = structure(system)
        per_atom = neighbours_per_atom(atoms, args.r_max)
        for dtype in args.dtypes:
            calculators = {name: make_calculator(name, hp, dtype) for name in implementations}
            for name, calculator in calculators.items():
                if parameter_count(calculator) is not None:
                    meta["parameters"][name.replace("-skin0", "")] = parameter_count(calculator)
            check_same_forces(calculators, atoms, dtype)
            times = {name: [] for name in implementations}
            for _ in range(args.repeats):
                for name, calculator in calculators.items():
                    calculator.reset()
                    times[name].append(
                        time_md(calculator, atoms, args.steps, args.warmup, args.timestep, args.min_seconds)
                    )
            mace_rate = None
            for name in implementations:
                rate = statistics.median(t["steps"] / t["seconds"] for t in times[name])
                row = {
                    "system": system,
                    "atoms": len(atoms),
                    "neighbours_per_atom": per_atom,
                    "dtype": dtype,
                    "implementation": name,
                    "seconds": [t["seconds"] for t in times[name]],
                    "steps": [t["steps"] for t in times[name]],
                    "steps_per_second": rate,
                    "ns_per_day": ns_per_day(rate, args.timestep),
                }
                if name == "mace-torch":
                    mace_rate = rate
                rows.append(row)
                print(
                    f"{system:6s} {dtype:8s} {name:28s} {rate:9.2f} steps/s {row['ns_per_day']:9.4f} ns/day",
                    flush=True,
                )
            for row in rows[-len(implementations) :]:
                row["speedup_vs_mace"] = None if mace_rate is None else row["steps_per_second"] / mace_rate
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    out.with_suffix(".md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
