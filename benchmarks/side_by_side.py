"""Helpers shared by the whole-model comparisons with a peer library (mace_vs_mace_torch.py,
tensornet_vs_torchmd_net.py): timing one call, the machine and commit, the results files; and by
the side-by-side training studies (tensornet_vs_torchmd_net_training.py,
mace_vs_mace_torch_training.py): training CLIs run a few at a time on one thread each, test errors
of predictions, statistics over seeds."""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

import equitensor

ROOT = Path(__file__).resolve().parents[1]


def time_calls(fn, min_seconds: float) -> float:
    """Seconds per call of ``fn``, calling it until ``min_seconds`` have passed (at least once)."""
    start, calls = time.perf_counter(), 0
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / calls


def round_robin(steps: dict, repeats: int, warmup: int, min_seconds: float) -> dict[str, list[float]]:
    """Seconds per call of every step, ``repeats`` times each, the steps interleaved (each repeat
    starts one further along) after ``warmup`` calls of each."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in steps}
    names = list(steps)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            samples[name].append(time_calls(steps[name], min_seconds))
    return samples


def result_rows(
    samples: dict[str, list[float]], peer: str, base: dict, errors: dict[str, float]
) -> list[dict]:
    """One row per implementation: ``base`` (case, dtype, sizes), its median and every time in ms,
    its speed relative to ``peer`` (the peer's median over its own) and its checked difference
    from the peer (``errors``, by implementation name)."""
    key = peer.replace("-", "_")
    peer_ms = statistics.median(samples[peer]) * 1e3
    rows = []
    for name, times in samples.items():
        ms = statistics.median(times) * 1e3
        rows.append(
            {
                **base,
                "implementation": name,
                "ms": ms,
                "ms_all": [t * 1e3 for t in times],
                f"speedup_vs_{key}": peer_ms / ms,
                f"max_rel_error_vs_{key}": errors.get(name, 0.0),
            }
        )
    return rows


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine(peer_versions: dict) -> dict:
    """Python, torch, the peer's versions (given), equitensor and its commit, CPU, cores, threads."""
    commit = git_commit()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        **peer_versions,
        "equitensor": equitensor.__version__,
        "equitensor_commit": commit,
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def write_results(
    prefix: str, title: str, meta: dict, rows: list[dict], columns: dict[str, str], footer: list[str] = ()
) -> None:
    """PREFIX.json (meta and rows) and PREFIX.md (title, meta without its notes, one table row per
    row, then ``footer`` lines; ``columns`` maps each header to a format string over a row's keys)."""
    Path(prefix + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    shown = {k: v for k, v in meta.items() if k != "notes"}
    lines = [f"# {title}", "", "```", json.dumps(shown, indent=1), "```", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(f.format(**r) for f in columns.values()) + " |" for r in rows]
    lines += list(footer)
    Path(prefix + ".md").write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------
# training studies: CLI runs side by side, test errors, statistics over seeds
def git_commit() -> str | None:
    """The repository's short HEAD commit (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def package_versions(names: list[str]) -> dict[str, str | None]:
    """Installed versions of the distributions ``names`` (None where not installed)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def one_thread_env() -> dict:
    """This process's environment with one thread for OpenMP/MKL/OpenBLAS and unbuffered output."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_queue(jobs: list[dict], parallel: int, poll_s: float = 2.0) -> tuple[dict, dict]:
    """Run ``jobs`` in order, ``parallel`` at once (each: ``key``, ``command`` (a list), ``log``
    (a path for its stdout and stderr), ``cwd``, optional ``env`` (default one thread), and any
    other keys, kept). Returns ({key: the job's record with ``wall_s`` and ``returncode``}, the
    machine's 1-minute load average sampled meanwhile: mean, max, samples). Jobs queued next to
    each other run at the same time and so see the same machine load."""
    queue, running, done, load = list(jobs), [], {}, []
    while queue or running:
        load.append(os.getloadavg()[0])
        while queue and len(running) < parallel:
            job = dict(queue.pop(0))
            log = open(job["log"], "w")  # noqa: SIM115 (closed when the job ends)
            process = subprocess.Popen(
                [str(c) for c in job["command"]],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=job.pop("env", None) or one_thread_env(),
                cwd=job.get("cwd"),
            )
            running.append((process, log, time.perf_counter(), job))
            print(f"started {job['key']}", flush=True)
        time.sleep(poll_s)
        for item in list(running):
            process, log, start, job = item
            if process.poll() is None:
                continue
            running.remove(item)
            log.close()
            job["wall_s"] = time.perf_counter() - start
            job["returncode"] = process.returncode
            job["command"] = shlex.join(str(c) for c in job["command"])
            job["log"] = str(job["log"])
            done[job["key"]] = job
            print(f"finished {job['key']}: rc {process.returncode}, {job['wall_s']:.0f} s", flush=True)
            if process.returncode != 0:
                print(Path(job["log"]).read_text()[-3000:], file=sys.stderr)
    loads = {"mean": float(np.mean(load)), "max": float(np.max(load)), "samples": len(load)}
    return done, loads


def prediction_errors(pred_e, ref_e, pred_f, ref_f, num_atoms) -> dict[str, float]:
    """Energy (per structure and per atom) and force errors of predictions, in meV and meV/Å:
    RMSE, MAE, the mean (signed) energy error and the energy RMSE without it. ``num_atoms``: the
    atoms of each structure (energies per atom are (E - E^) / N); forces are (structures, atoms,
    3) arrays or (all atoms, 3)."""
    num_atoms = np.asarray(num_atoms, dtype=np.float64)
    de = np.asarray(pred_e, dtype=np.float64) - np.asarray(ref_e, dtype=np.float64)
    df = (np.asarray(pred_f, dtype=np.float64) - np.asarray(ref_f, dtype=np.float64)).ravel()
    return {
        "energy_rmse_meV": 1e3 * float(np.sqrt(np.mean(de**2))),
        "energy_mae_meV": 1e3 * float(np.mean(np.abs(de))),
        "energy_rmse_meV_per_atom": 1e3 * float(np.sqrt(np.mean((de / num_atoms) ** 2))),
        "energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(de / num_atoms))),
        "energy_mean_error_meV": 1e3 * float(np.mean(de)),
        "energy_rmse_without_mean_error_meV": 1e3 * float(np.std(de)),
        "forces_rmse_meV_per_A": 1e3 * float(np.sqrt(np.mean(df**2))),
        "forces_mae_meV_per_A": 1e3 * float(np.mean(np.abs(df))),
    }


def seed_statistics(values) -> dict[str, float]:
    """mean, sample standard deviation (n - 1; 0 for one value), min, max and n."""
    values = np.asarray(list(values), dtype=np.float64)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "min": float(values.min()),
        "max": float(values.max()),
        "n": len(values),
    }


def statistics_cell(stats: dict, digits: int = 2) -> str:
    """``mean ± std [min, max]`` of :func:`seed_statistics`."""
    return (
        f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f} "
        f"[{stats['min']:.{digits}f}, {stats['max']:.{digits}f}]"
    )
