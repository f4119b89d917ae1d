"""Helpers shared by the whole-model comparisons with a peer library (mace_vs_mace_torch.py,
tensornet_vs_torchmd_net.py): timing one call, the machine and commit, the results files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

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
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
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
