#!/usr/bin/env python
"""Training epoch time of ``equitensor train`` with ``num_workers`` 0 vs 2 (torch DataLoader
worker processes that read and collate the next batches from an HDF5 graph store).

Rerun everything (about 10 minutes on 2 cores) with

    /work/venv/bin/python benchmarks/train_workers.py

which, in a scratch folder outside the repository (``--workdir``, default /tmp/train_workers,
emptied first):

1. generates 5000 EMT-labelled CuNi frames (32-atom fcc cells, 4 temperatures x 5 trajectories x
   250 frames) with ``equitensor data generate``, plus its isolated-atom frames;
2. writes the graph store with ``equitensor data preprocess FRAMES.xyz STORE.h5 --r-max 5.0``;
3. times the in-process read + collate of one epoch's batches (no model), for scale;
4. runs one epoch (+ the validation on 2% of the store) of ``equitensor train train_file=STORE.h5``
   for each setting (num_workers, num_threads) = (0, default), (2, default), (0, 1), (2, 1),
   round-robin (the order rotates every repeat), ``--repeats`` times each. Each run's epoch time is
   epoch 1's ``time_s`` in its metrics.json (training epoch + validation); the command's wall time
   (start-up, data preparation, the final evaluation and saving included) is recorded too, with
   how many cores other processes used meanwhile (``external_cores``, from /proc/stat minus this
   run's own CPU time);
5. checks that the runs with 0 and 2 workers give the same training loss and the same final
   weights (bit for bit: the DataLoader serves the same batches in the same order);
6. writes ``--out``.md and ``--out``.json (default benchmarks/results/train_workers).

Settings: quickstart MACE (num_channels 8, max_L 0, max_ell 2, correlation 2, 2 interactions,
float32), r_max 5.0, batch_size 10, valid_fraction 0.02, energy_weight 100, forces_weight 100,
stress_weight 0 (training on stress made a step ~10-25x slower on this machine, which would not fit
the runs into the time budget; validation still reports stress errors), plots/progress/tensorboard
off, seed 0. ``persistent_workers`` keeps its default (true; one epoch, so it makes no difference).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EQUITENSOR = str(BIN / "equitensor") if (BIN / "equitensor").exists() else "equitensor"

GENERATE = [
    "--calculator",
    "emt",
    "--composition",
    "Cu=0.7,Ni=0.3",
    "--repeat",
    "2",
    "--temperatures",
    "300,600,900,1200",
    "--trajectories-per-temperature",
    "5",
    "--frames-per-trajectory",
    "250",
    "--steps-between-frames",
    "5",
    "--equilibration-steps",
    "50",
    "--seed",
    "0",
]
R_MAX = 5.0
TRAIN = [
    "r_max=5.0",
    "epochs=1",
    "batch_size=10",
    "valid_fraction=0.02",
    "model=mace",
    "model_kwargs.num_channels=8",
    "stress_weight=0",
    "seed=0",
    "plots=false",
    "progress=false",
    "tensorboard=false",
]
# (num_workers, num_threads); None: torch's default (one thread per core)
SETTINGS = [(0, None), (2, None), (0, 1), (2, 1)]


def label(workers: int, threads: int | None) -> str:
    return f"workers={workers} threads={'default' if threads is None else threads}"


def cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str], log: Path) -> dict:
    """Run a command (output to ``log``); its wall time, CPU time and the other processes' cores."""
    busy, own, start = cpu_busy_seconds(), children_cpu_seconds(), time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    busy, own = cpu_busy_seconds() - busy, children_cpu_seconds() - own
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{log.read_text()[-3000:]}")
    return {"wall_s": wall, "cpu_s": own, "external_cores": max(0.0, busy - own) / wall}


def collate_time(store: Path) -> dict:
    """Seconds to read and collate one epoch's training batches in this process (no model)."""
    from equitensor.datasets import MaxSizeBatchSampler, collate_graphs
    from equitensor.train.config import load_config
    from equitensor.train.data import prepare_data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = load_config(None, [f"train_file={store}", *TRAIN])
        data = prepare_data(config, torch.float32)
        sampler = MaxSizeBatchSampler.for_dataset(
            data.train_graphs, max_structures=config.batch_size, shuffle=True, seed=config.seed
        )
        batches = list(sampler)
        start = time.perf_counter()
        for batch in batches:
            collate_graphs([data.train_graphs[i] for i in batch])
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    return {"seconds": seconds, "batches": len(batches), "ms_per_batch": 1000 * seconds / len(batches)}


def count_frames(path: Path) -> int:
    """Frames in an extxyz file (atom count line, comment line, atoms)."""
    lines, count, k = path.read_text().splitlines(), 0, 0
    while k < len(lines) and lines[k].strip():
        k += int(lines[k]) + 2
        count += 1
    return count


def git_head(length: int = 12) -> str:
    """The repository's HEAD, with -dirty when tracked files differ from it (the code a run imports)."""
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return commit[:length] + ("-dirty" if dirty else "")


def run_deterministic(run_dir: Path) -> bool | None:
    """The run's ``deterministic`` setting from its config.yaml (None: a version without the key)."""
    import yaml

    path = run_dir / "config.yaml"
    return yaml.safe_load(path.read_text()).get("deterministic") if path.is_file() else None


def final_weights(run_dir: Path) -> dict:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    return checkpoint["model_state"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def hardware() -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    keep = ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor", "L3 cache")
    details = {
        k.strip(): v.strip()
        for k, _, v in (line.partition(":") for line in lscpu.splitlines())
        if k.strip() in keep
    }
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "lscpu": details,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
    }


def versions() -> dict:
    import ase
    import h5py
    import numpy

    return {
        "equitensor_commit": git_head(length=40),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
        "h5py": h5py.__version__,
        "ase": ase.__version__,
    }


def fmt(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


QUIET = 0.3  # external cores above which a run counts as disturbed


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for workers, threads in SETTINGS:
        group = [r for r in runs if r["num_workers"] == workers and r["num_threads"] == threads]
        epochs = [r["epoch_s"] for r in group]
        quiet = [r["epoch_s"] for r in group if r["external_cores"] <= QUIET]
        summary[label(workers, threads)] = {
            "median_epoch_s": statistics.median(epochs),
            "min_epoch_s": min(epochs),
            "max_epoch_s": max(epochs),
            "median_wall_s": statistics.median(r["wall_s"] for r in group),
            "epoch_s": epochs,
            "quiet_epoch_s": quiet,
            "quiet_median_epoch_s": statistics.median(quiet) if quiet else None,
        }
    return summary


def change(new: float, old: float) -> str:
    pct = 100 * (new - old) / old
    if abs(pct) < 3:
        return f"the same within noise ({pct:+.0f}%)"
    return f"{abs(pct):.0f}% {'slower' if pct > 0 else 'faster'}"


def conclusion(runs: list[dict], summary: dict, collate: dict) -> list[str]:
    external = [r["external_cores"] for r in runs]
    one = [r for r in runs if r["num_threads"] == 1]
    two = [r for r in runs if r["num_threads"] is None]
    base1, two1 = summary[label(0, 1)]["median_epoch_s"], summary[label(2, 1)]["median_epoch_s"]
    base, twod = summary[label(0, None)]["median_epoch_s"], summary[label(2, None)]["median_epoch_s"]
    q1 = [summary[label(w, 1)]["quiet_median_epoch_s"] for w in (0, 2)]
    q0, q2 = (summary[label(w, None)]["quiet_median_epoch_s"] for w in (0, 2))
    loaded = [r for r in two if r["external_cores"] > QUIET]
    out = [
        f"- The machine was shared: other processes used {min(external):.2f}-{max(external):.2f} cores "
        f"during the runs (over {QUIET} in {sum(x > QUIET for x in external)} of {len(runs)} runs).",
        f"- num_threads=1 (the training process on one core, the other left to the workers and to other "
        f"processes): every epoch took {fmt(min(r['epoch_s'] for r in one))}-"
        f"{fmt(max(r['epoch_s'] for r in one))} s whatever the external load "
        f"({min(r['external_cores'] for r in one):.2f}-{max(r['external_cores'] for r in one):.2f} cores); "
        f"2 workers vs 0 workers: {change(two1, base1)} (median {fmt(two1)} s vs {fmt(base1)} s"
        + (f"; quiet runs only {fmt(q1[1])} s vs {fmt(q1[0])} s" if None not in q1 else "")
        + ").",
    ]
    if q0 is not None and q2 is not None:
        line = (
            f"- torch's default threads (2 intra-op threads on 2 cores), quiet runs (external <= {QUIET} "
            f"cores): {fmt(q2)} s with 2 workers vs {fmt(q0)} s with 0 workers, {change(q2, q0)}; and "
            f"{change(q0, summary[label(0, 1)]['quiet_median_epoch_s'] or base1)} than one thread "
            "(0 workers). "
        )
    else:
        line = "- torch's default threads (2 intra-op threads on 2 cores): no quiet run of both settings. "
    if loaded:
        lo, hi = min(r["epoch_s"] for r in loaded), max(r["epoch_s"] for r in loaded)
        line += (
            f"Under load ({min(r['external_cores'] for r in loaded):.2f}-"
            f"{max(r['external_cores'] for r in loaded):.2f} external cores) the same settings took "
            f"{fmt(lo)}-{fmt(hi)} s with 0 or 2 workers ({', '.join(r['setting'] for r in loaded)}): two "
            "threads that wait on each other stall when another process takes one of the two cores. The "
            f"medians over all runs ({fmt(twod)} s with 2 workers, {fmt(base)} s with 0) measure that "
            "load, not the workers."
        )
    out += [
        line,
        f"- Reading and collating a batch from the store costs {fmt(collate['ms_per_batch'])} ms in one "
        f"thread ({fmt(collate['seconds'])} s for the epoch's {collate['batches']} batches, "
        f"{fmt(100 * collate['seconds'] / base1)}% of the 1-thread epoch): that is all a worker can take "
        "off the training process here, no more than the run-to-run noise, while each worker is one "
        "more process on the 2 cores. So on 2 CPU cores with this model, 2 workers do not make the "
        "epoch faster.",
        "- Where workers should help: GPU training (the CPU is otherwise idle while the GPU steps, and "
        "pin_memory overlaps the copies), slow or network storage (reads overlap the step), and "
        "costlier per-batch work (bigger structures and batches). On a few-core CPU machine, "
        "num_threads (the cores left after workers and other load) matters far more than num_workers.",
    ]
    return out


def equality(runs: list[dict]) -> tuple[bool, dict, list[str]]:
    """Whether 0 and 2 workers gave bit-identical runs (from each run's ``vs_reference``)."""
    lines, identical, groups = [], True, {}
    for threads in (1, None):
        name = "default" if threads is None else str(threads)
        group = [r for r in runs if r["num_threads"] == threads]
        same = all(r["vs_reference"]["same_losses"] and r["vs_reference"]["same_weights"] for r in group)
        zero = [r for r in group if r["num_workers"] == 0]
        zero_same = all(r["vs_reference"]["same_losses"] and r["vs_reference"]["same_weights"] for r in zero)
        groups[name] = {"bitwise_identical": same, "zero_worker_runs_identical": zero_same}
        head = f"num_threads={name}, {len(group)} runs ({len(zero)} with 0 workers, the rest with 2): "
        if same:
            losses = ", ".join(sorted({repr(r["train_loss"]) for r in group}))
            lines.append(
                head + f"training loss {losses} in every run; training and validation losses and the "
                "final weights identical bit for bit"
            )
        else:
            values = {}
            for r in group:
                values.setdefault(repr(r["train_loss"]), []).append(
                    f"{r['order']} ({r['num_workers']} workers, external {r['external_cores']:.2f})"
                )
            listing = "; ".join(f"{v} in run(s) {', '.join(who)}" for v, who in values.items())
            worst = max(r["vs_reference"]["train_loss_rel_diff"] for r in group)
            weight = max(r["vs_reference"]["max_weight_diff"] for r in group)
            lines.append(
                head + f"NOT all bit for bit: training loss {listing} (largest relative difference "
                f"{worst:.1e}, largest weight difference {weight:.1e} after 490 steps); "
                + (
                    "0-worker runs differ from each other too, so this is the multi-threaded model step "
                    "not being reproducible run to run (presumably the split of float32 reductions over "
                    "threads is decided at run time, differently under load), whatever num_workers is"
                    if not zero_same
                    else "the 0-worker runs agree with each other, so the workers may be at fault"
                )
            )
        if threads == 1 or zero_same:
            identical &= same
    one = {r["train_loss"] for r in runs if r["num_threads"] == 1}
    also = [r["order"] for r in runs if r["num_threads"] is None and r["train_loss"] in one]
    if len(one) == 1 and also:
        flags = {str(r.get("deterministic")) for r in runs if r["order"] in also}
        lines.append(
            f"run(s) {', '.join(map(str, also))} with default threads (deterministic: "
            f"{', '.join(sorted(flags))}) got exactly the num_threads=1 result, bit for bit"
        )
    return identical, groups, lines


def code_warning(report: dict) -> list[str]:
    """A paragraph when the runs did not all import the same code (the tree changed meanwhile)."""
    runs = report["runs"]
    heads = {r.get("equitensor_head") for r in runs} - {None}
    flags = {r.get("deterministic") for r in runs}
    lines = []
    if len(flags) > 1:
        groups = {
            str(flag): ", ".join(str(r["order"]) for r in runs if r.get("deterministic") == flag)
            for flag in flags
        }
        lines.append(
            "**The library changed during these runs**: `deterministic` (torch's deterministic "
            "algorithms) was "
            + "; ".join(
                f"{'absent (an older equitensor)' if k == 'None' else k} in runs {v}"
                for k, v in groups.items()
            )
            + ". Compare runs only within one group; rerun on an unchanging tree for clean numbers."
        )
    if len(heads) > 1 or any(h.endswith("-dirty") for h in heads):
        lines.append(f"Repository HEAD at the runs' starts: {', '.join(sorted(heads))}.")
    lines += report.get("notes", [])
    return [x for line in lines for x in (line, "")]


def write_markdown(path: Path, report: dict) -> None:
    s, h, v, d = report["settings"], report["hardware"], report["versions"], report["data"]
    lines = [
        "# Training epoch time: `num_workers` 0 vs 2 (HDF5 graph store, 2 CPU cores)",
        "",
        f"Command: `{report['command']}` (script `benchmarks/train_workers.py`; data in "
        f"`{report['workdir']}`). Date: {report['date']}"
        + (
            f" (this text regenerated from the JSON with `--report-only` on {report['report_rewritten']})."
            if "report_rewritten" in report
            else "."
        ),
        "",
        f"Hardware: {h['cpu_model']} (lscpu: {h['lscpu'].get('Model name', '?')}, "
        f"{h['lscpu'].get('Hypervisor vendor', 'no')} hypervisor), {h['cores']} cores, shared with other "
        f"processes (see `external cores`), {h['memory_gib']} GiB. torch {v['torch']} (CPU, default "
        f"{v['torch_default_threads']} threads), h5py {v['h5py']}, ase {v['ase']}, Python {v['python']}, "
        f"equitensor `{v['equitensor_commit']}` (HEAD when the report was written).",
        "",
        *code_warning(report),
        "## Data",
        "",
        f"- `equitensor data generate FRAMES.xyz {' '.join(s['generate'])}`: {d['frames']} frames "
        f"({d['generate_s']:.0f} s), of which {d['isolated_atoms']} isolated atoms (used for E0s only).",
        f"- `equitensor data preprocess FRAMES.xyz STORE.h5 --r-max {s['r_max']}` "
        f"({d['preprocess_s']:.0f} s): "
        f"{d['store_mib']:.0f} MiB; the trainer reads the graphs from it item by item.",
        f"- Training: {d['train']} structures ({d['steps']} steps of 10); validation: {d['valid']}.",
        "",
        "## Settings",
        "",
        f"`equitensor train train_file=STORE.h5 {' '.join(s['train'])} num_workers=W "
        "[num_threads=T] output_dir=RUN`: the quickstart MACE (num_channels 8, max_L 0, max_ell 2, "
        f"correlation 2, radial_MLP [32, 32], float32; {d['parameters']} parameters), persistent_workers "
        "default (true). stress_weight 0: training on stress made a step ~10-25x slower here, too slow "
        "for the time budget (validation still computes stresses). num_threads default: torch's, one "
        "per core (2); the DataLoader's workers run one thread each.",
        "",
        "Settings (num_workers, num_threads) run round-robin, the order rotating every repeat. "
        "Epoch s: epoch 1's `time_s` from the run's metrics.json (training epoch + validation). "
        "Wall s: the whole command (start-up, data preparation, the final evaluation of the best model "
        "on train and validation, saving). CPU s: the command's CPU time, workers included. External "
        f"cores: CPU used by other processes meanwhile (above {QUIET} the run was disturbed).",
        "",
        "| order | setting | repeat | epoch s | wall s | CPU s | external cores | train loss |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['order']} | {r['setting']} | {r['repeat']} | {fmt(r['epoch_s'])} | {fmt(r['wall_s'])} | "
            f"{fmt(r['cpu_s'])} | {fmt(r['external_cores'], 2)} | {r['train_loss']!r} |"
        )
    lines += [
        "",
        "| setting | median epoch s | min | max | median wall s | "
        f"median epoch s, quiet runs (external <= {QUIET}) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["summary"].items():
        quiet = row["quiet_median_epoch_s"]
        quiet = "none" if quiet is None else f"{fmt(quiet)} ({len(row['quiet_epoch_s'])} run(s))"
        lines.append(
            f"| {name} | {fmt(row['median_epoch_s'])} | {fmt(row['min_epoch_s'])} | "
            f"{fmt(row['max_epoch_s'])} | {fmt(row['median_wall_s'])} | {quiet} |"
        )
    c = report["collate"]
    lines += [
        "",
        f"Read + collate of one epoch's {c['batches']} batches in one thread, no model: "
        f"{fmt(c['seconds'])} s ({fmt(c['ms_per_batch'])} ms per batch).",
        "",
        "## Same losses",
        "",
    ]
    lines += [f"- {line}." for line in report["equality"]["lines"]]
    lines += ["", "## What the numbers show", "", *report["conclusion"], ""]
    path.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/train_workers", help="scratch folder (emptied)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "train_workers"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite OUT.md (and the summary) from OUT.json, no runs"
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only:
        report = json.loads(out.with_suffix(".json").read_text())
        for r in report["runs"]:
            if "deterministic" not in r:
                r["deterministic"] = run_deterministic(Path(r["run_dir"]))
        report["summary"] = summarise(report["runs"])
        identical, groups, lines = equality(report["runs"])
        report["equality"] = {"identical_0_vs_2_workers": identical, "groups": groups, "lines": lines}
        report["conclusion"] = conclusion(report["runs"], report["summary"], report["collate"])
        report["report_rewritten"] = time.strftime("%Y-%m-%d %H:%M %Z")
        out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        write_markdown(out.with_suffix(".md"), report)
        print(f"rewrote {out}.md and {out}.json from {out}.json", flush=True)
        return

    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    frames, store = work / "frames.xyz", work / "store.h5"
    print(f"work folder {work}", flush=True)

    generated = run([EQUITENSOR, "data", "generate", str(frames), *GENERATE], work / "generate.log")
    print(f"generated in {generated['wall_s']:.0f} s", flush=True)
    preprocessed = run(
        [EQUITENSOR, "data", "preprocess", str(frames), str(store), "--r-max", str(R_MAX), "--quiet"],
        work / "preprocess.log",
    )
    print(f"preprocessed in {preprocessed['wall_s']:.0f} s", flush=True)
    collate = collate_time(store)
    print(f"read + collate: {collate['seconds']:.1f} s for {collate['batches']} batches", flush=True)

    runs = []
    order = 0
    for repeat in range(args.repeats):
        for k in range(len(SETTINGS)):
            workers, threads = SETTINGS[(k + repeat) % len(SETTINGS)]
            order += 1
            run_dir = work / f"run{order:02d}_w{workers}_t{threads or 'd'}"
            command = [EQUITENSOR, "train", f"train_file={store}", *TRAIN, f"num_workers={workers}"]
            if threads is not None:
                command.append(f"num_threads={threads}")
            command.append(f"output_dir={run_dir}")
            head = git_head()
            timing = run(command, work / f"{run_dir.name}.log")
            epoch = json.loads((run_dir / "metrics.json").read_text())[0]
            row = {
                "order": order,
                "setting": label(workers, threads),
                "num_workers": workers,
                "num_threads": threads,
                "repeat": repeat + 1,
                "epoch_s": epoch["time_s"],
                **timing,
                "train_loss": epoch["train_loss"],
                "valid_loss": epoch["valid_loss"],
                "run_dir": str(run_dir),
                "equitensor_head": head,  # at the run's start: the tree may change during the benchmark
                "deterministic": run_deterministic(run_dir),
            }
            runs.append(row)
            print(
                f"{order:2d} {row['setting']:28s} epoch {row['epoch_s']:6.1f} s  "
                f"wall {row['wall_s']:6.1f} s  external {row['external_cores']:.2f}  "
                f"train loss {row['train_loss']!r}",
                flush=True,
            )

    # 0 vs 2 workers: same training loss and weights (bitwise), per thread count
    for threads in (1, None):
        group = [r for r in runs if r["num_threads"] == threads]
        reference = next(r for r in group if r["num_workers"] == 0)
        weights = final_weights(Path(reference["run_dir"]))
        for r in group:
            other = final_weights(Path(r["run_dir"]))
            r["vs_reference"] = {
                "reference_order": reference["order"],
                "same_losses": r["train_loss"] == reference["train_loss"]
                and r["valid_loss"] == reference["valid_loss"],
                "same_weights": same_weights(weights, other),
                "train_loss_rel_diff": abs(r["train_loss"] - reference["train_loss"])
                / abs(reference["train_loss"]),
                "max_weight_diff": max(float((weights[k] - other[k]).abs().max()) for k in weights),
            }
    identical, groups, lines = equality(runs)
    print("\n".join(lines), flush=True)

    summary = summarise(runs)
    log = (Path(runs[0]["run_dir"]) / "train.log").read_text()
    parameters = int(log.split("MACE with ")[1].split()[0])
    counts = log.split("data: ")[1].split()
    isolated = sum("IsolatedAtom" in line for line in frames.read_text().splitlines())
    report = {
        "command": " ".join(["python", "benchmarks/train_workers.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "workdir": str(work),
        "hardware": hardware(),
        "versions": versions(),
        "settings": {"generate": GENERATE, "r_max": R_MAX, "train": TRAIN, "settings": SETTINGS},
        "data": {
            "frames": count_frames(frames),
            "isolated_atoms": isolated,
            "generate_s": generated["wall_s"],
            "preprocess_s": preprocessed["wall_s"],
            "store_mib": store.stat().st_size / 2**20,
            "train": int(counts[0]),
            "valid": int(counts[2]),
            "steps": collate["batches"],
            "parameters": parameters,
        },
        "collate": collate,
        "runs": runs,
        "summary": summary,
        "equality": {"identical_0_vs_2_workers": identical, "groups": groups, "lines": lines},
    }
    report["conclusion"] = conclusion(runs, summary, collate)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(out.with_suffix(".md"), report)
    print(f"wrote {out}.md and {out}.json", flush=True)
    if not identical:
        sys.exit("0 and 2 workers gave different losses or weights")


if __name__ == "__main__":
    main()
