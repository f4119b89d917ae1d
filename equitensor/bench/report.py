"""Benchmark results for people: a terminal table, JSON, CSV, and PNG plots.

- Table: one line per timed (case, implementation, pass): median time, interquartile spread,
  repetitions, achieved GFLOP/s and GB/s (from :mod:`equitensor.bench.counts`, '-' where not
  modelled), peak memory, speed-up over e3nn measured in the same run, and the check result;
  then notes on implementations (e.g. an approximate backend's rank and residual) and the
  implementations not timed, with the reason.
- JSON: ``{"meta": environment, peaks, protocol, command; "cases": descriptions; "rows": rows}``.
- CSV: the rows (raw repetition times left out; they are in the JSON).
- Plots (matplotlib, optional extra ``bench``): per operation, pass and size, time against L on
  log-log axes with the least-squares slope of log(time) on log(L) (L >= 1) per implementation,
  and the speed-up over e3nn against L.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

from equitensor.tp.backends.capabilities import format_table

__all__ = ["add_speedups", "fit_slope", "plot", "table", "write_csv", "write_json"]

_GROUP = ("operation", "lmax", "channels", "size", "dtype", "device", "pass")
CSV_FIELDS = (
    "operation",
    "lmax",
    "channels",
    "size",
    "size_name",
    "dtype",
    "device",
    "implementation",
    "source",
    "pass",
    "status",
    "reason",
    "median_s",
    "q25_s",
    "q75_s",
    "min_s",
    "max_s",
    "spread",
    "reps",
    "inner",
    "flops",
    "bytes",
    "gflops",
    "gbs",
    "peak_memory_bytes",
    "speedup_vs_e3nn",
    "max_rel_diff",
    "tolerance",
    "note",
    "external_cores",
)


def add_speedups(rows: list[dict]) -> None:
    """Set ``speedup_vs_e3nn`` = e3nn median / this median for timed rows whose case and pass
    also timed e3nn in the same run (None otherwise)."""
    e3nn = {
        tuple(r[k] for k in _GROUP): r["median_s"]
        for r in rows
        if r["status"] == "timed" and r["implementation"] == "e3nn"
    }
    for r in rows:
        base = e3nn.get(tuple(r.get(k) for k in _GROUP)) if r["status"] == "timed" else None
        r["speedup_vs_e3nn"] = None if base is None else base / r["median_s"]


def _time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _rate(value: float | None) -> str:
    return "unknown" if value is None else f"{value / 1e9:.4g}"


def peaks_line(meta: dict) -> str:
    """Peak FLOP/s and bytes/s of the machine, as the JSON records them."""
    lines = []
    for key, label in (
        ("peak_theoretical", "peak (theoretical)"),
        ("peak_measured", "peak (measured probe)"),
    ):
        peak = meta.get(key)
        if peak:
            flops, rate = _rate(peak["flops_per_s"]), _rate(peak["bytes_per_s"])
            lines.append(f"{label}: {flops} GFLOP/s, {rate} GB/s; {peak['basis']}")
    return "\n".join(lines)


def table(rows: list[dict], meta: dict | None = None) -> str:
    """The terminal table (with the machine and its peaks first when ``meta`` is given)."""
    head = []
    if meta:
        hw, ver = meta["hardware"], meta["versions"]
        gpu = f", GPU {hw['gpu']['name']}" if "gpu" in hw else ""
        head = [
            f"{hw['cpu_model']}, {hw['usable_cpus']} usable cores, "
            f"torch threads {hw['torch_num_threads']}{gpu}; "
            f"torch {ver['torch']}, e3nn {ver['e3nn']}, cuequivariance-torch {ver['cuequivariance-torch']}, "
            f"mace-torch {ver.get('mace-torch')}, "
            f"equitensor {ver['equitensor']} @ {ver['equitensor_git']}",
            peaks_line(meta),
            "",
        ]
    header = [
        "operation",
        "L",
        "C",
        "size",
        "impl",
        "pass",
        "median",
        "IQR",
        "n",
        "GFLOP/s",
        "GB/s",
        "peak mem",
        "x e3nn",
        "check",
    ]
    body = []
    for r in rows:
        if r["status"] != "timed":
            continue
        body.append(
            [
                r["operation"],
                _num(r["lmax"], "d") if r["lmax"] is not None else "-",
                str(r["channels"]),
                f"{r['size']} {r['size_name']}",
                r["implementation"],
                r["pass"],
                _time(r["median_s"]),
                f"{100 * r['spread']:.0f}%" if not math.isnan(r["spread"]) else "-",
                str(r["reps"]),
                _num(r["gflops"]),
                _num(r["gbs"]),
                _bytes(r["peak_memory_bytes"]),
                _num(r.get("speedup_vs_e3nn"), ".2f"),
                "ref" if r["max_rel_diff"] == 0 else f"{r['max_rel_diff']:.1e}",
            ]
        )
    others = [
        f"{r['operation']} L={r['lmax']} C={r['channels']} {r['implementation']}: "
        f"{r['status']} ({r['reason']})"
        for r in rows
        if r["status"] != "timed"
    ]
    notes = [
        f"{r['operation']} L={r['lmax']} C={r['channels']} {r['implementation']}: {r['note']}"
        for r in rows
        if r.get("note")
    ]
    parts = head + [format_table(header, body, width=40)]
    if notes:
        parts += ["", "Notes:"] + [f"  {line}" for line in dict.fromkeys(notes)]
    if others:
        parts += ["", "Not timed:"] + [f"  {line}" for line in dict.fromkeys(others)]
    return "\n".join(parts)


def write_json(path: str | Path, meta: dict, cases: list[dict], rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "cases": cases, "rows": rows}, indent=1, default=str) + "\n")


def write_csv(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in CSV_FIELDS})


def fit_slope(ls: list[float], times: list[float]) -> float | None:
    """Least-squares slope of log(time) against log(L) over the points with L >= 1 (None: < 2 points)."""
    points = [(math.log(l), math.log(t)) for l, t in zip(ls, times) if l >= 1 and t > 0]
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _finish(plt, fig, ax, ylabel: str, title: str, path: Path) -> Path:
    """Label a figure over L (axes, title, legend, grid), write it to ``path`` and close it."""
    ax.set_xlabel("L (lmax)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(rows: list[dict], prefix: str | Path) -> list[Path]:
    """Write time-vs-L (log-log, fitted slopes) and speed-up-over-e3nn PNGs; returns their paths.

    One figure pair per (operation, pass, channels, size, dtype, device) with at least two
    values of L >= 1. Needs matplotlib (``pip install equitensor[bench]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError(
            "plots need matplotlib: pip install 'equitensor[bench]' (or drop --plot)"
        ) from error
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["status"] == "timed" and r["lmax"] is not None:
            key = (
                r["operation"],
                r["pass"],
                r["channels"],
                r["size"],
                r["size_name"],
                r["dtype"],
                r["device"],
            )
            groups[key][r["implementation"]].append(r)
    written = []
    for (operation, pass_name, channels, size, size_name, dtype, device), by_impl in groups.items():
        if len({r["lmax"] for rs in by_impl.values() for r in rs if r["lmax"] >= 1}) < 2:
            continue
        title = f"{operation} {pass_name}, C={channels}, {size} {size_name}, {dtype}, {device}"
        stem = _safe(f"{prefix.name}_{operation}_{pass_name}_C{channels}_{size_name}{size}_{dtype}_{device}")
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for name, rs in sorted(by_impl.items()):
            rs = sorted((r for r in rs if r["lmax"] >= 1), key=lambda r: r["lmax"])
            ls, ts = [r["lmax"] for r in rs], [r["median_s"] for r in rs]
            lo = [r["median_s"] - r["q25_s"] for r in rs]
            hi = [r["q75_s"] - r["median_s"] for r in rs]
            slope = fit_slope(ls, ts)
            label = name if slope is None else f"{name} (slope {slope:.2f})"
            ax.errorbar(ls, ts, yerr=[lo, hi], marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ylabel = "time per call [s] (median, IQR)"
        written.append(_finish(plt, fig, ax, ylabel, title, prefix.parent / f"{stem}_time.png"))

        speedups = {
            name: sorted(
                (r["lmax"], r["speedup_vs_e3nn"]) for r in rs if r.get("speedup_vs_e3nn") is not None
            )
            for name, rs in by_impl.items()
            if name != "e3nn"
        }
        speedups = {name: pts for name, pts in speedups.items() if pts}
        if speedups:
            fig, ax = plt.subplots(figsize=(6, 4.5))
            for name, pts in sorted(speedups.items()):
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_yscale("log")
            ylabel = "speed-up over e3nn (e3nn time / time)"
            written.append(_finish(plt, fig, ax, ylabel, title, prefix.parent / f"{stem}_speedup.png"))
    return written
