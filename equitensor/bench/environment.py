"""What a benchmark ran on: hardware, library versions, git commit, and the machine's peak rates.

Peak rates are reported two ways, never invented:

- ``theoretical``: from what the system says about itself. CPU: cores x clock x SIMD lanes x 2
  (FMA) x FMA units per core. The clock is ``cpuinfo_max_freq`` from sysfs, else the current
  ``cpu MHz`` of ``/proc/cpuinfo`` (under a hypervisor often the nominal clock, not the boost
  clock); the SIMD width comes from the instruction-set flags. The number of FMA units per core
  cannot be read from the OS: without ``fma_units`` the estimate assumes one and says so (many
  x86 server cores since Haswell/Zen 2 have two, so it may underestimate the peak). Memory bandwidth cannot be
  read from the OS either: unknown unless given. GPU: the vendor data-sheet figures of a few
  known devices (looked up by exact device name), else unknown.
- ``measured``: a short probe on the same device and dtype (``torch.mm`` of n x n matrices for
  FLOP/s, a large tensor copy for bytes/s, counting the read and the write): an achievable
  ceiling for simple kernels, not the hardware peak.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from equitensor.bench.timing import round_robin

__all__ = ["environment", "git_commit", "hardware", "measured_peaks", "theoretical_peaks", "versions"]

#: Packages whose versions are recorded next to every result.
PACKAGES = (
    "equitensor",
    "torch",
    "numpy",
    "e3nn",
    "opt-einsum-fx",
    "cuequivariance",
    "cuequivariance-torch",
    "cuequivariance-ops-torch-cu12",
    "mace-torch",
    "torchmd-net",
    "matplotlib",
    "ase",
)

# Vendor data sheets (non-tensor-core FP32/FP64 TFLOP/s, memory TB/s), by torch's device name.
# NVIDIA H100 SXM5 / H100 PCIe / H200 SXM / A100 SXM4 product data sheets.
_GPU_DATASHEETS = {
    "NVIDIA H100 80GB HBM3": {"float32": 67e12, "float64": 34e12, "bytes_per_s": 3.35e12},
    "NVIDIA H100 PCIe": {"float32": 51e12, "float64": 26e12, "bytes_per_s": 2.0e12},
    "NVIDIA H200": {"float32": 67e12, "float64": 34e12, "bytes_per_s": 4.8e12},
    "NVIDIA A100-SXM4-80GB": {"float32": 19.5e12, "float64": 9.7e12, "bytes_per_s": 2.039e12},
    "NVIDIA A100-SXM4-40GB": {"float32": 19.5e12, "float64": 9.7e12, "bytes_per_s": 1.555e12},
}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _cpuinfo_field(name: str) -> str | None:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.split(":")[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def _affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """Logical CPUs this process may run on."""
    return len(_affinity())


def physical_cores() -> int | None:
    """Distinct physical cores among the usable CPUs (SMT siblings counted once), from sysfs;
    None where the topology is not readable."""
    cores = set()
    for cpu in _affinity():
        core = _read(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id")
        package = _read(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id")
        if core is None or package is None:
            return None
        cores.add((package.strip(), core.strip()))
    return len(cores)


def hardware(device: torch.device | str = "cpu") -> dict:
    """CPU model, cores, memory, platform; the GPU's name and properties when ``device`` is CUDA."""
    mem = _read("/proc/meminfo") or ""
    mem_gib = next(
        (round(int(line.split()[1]) / 2**20, 1) for line in mem.splitlines() if line.startswith("MemTotal")),
        None,
    )
    out = {
        "cpu_model": _cpuinfo_field("model name") or platform.processor() or "unknown",
        "os_cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "physical_cores": physical_cores(),
        "torch_num_threads": torch.get_num_threads(),
        "mem_total_gib": mem_gib,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out["gpu"] = {
            "name": props.name,
            "total_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "compute_capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
        }
    return out


def git_commit() -> str | None:
    """HEAD of the checkout equitensor is imported from, with ' (modified)' for local changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + (" (modified)" if dirty else "")


def versions() -> dict:
    """Installed versions of the packages that matter for the numbers (None: not installed)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["torch_cuda"] = torch.version.cuda
    out["equitensor_git"] = git_commit()
    return out


def _simd_bits(flags: set[str]) -> int | None:
    if "avx512f" in flags:
        return 512
    if "avx" in flags or "avx2" in flags:
        return 256
    if "sse2" in flags or "asimd" in flags:
        return 128
    return None


def theoretical_peaks(device: torch.device | str, dtype: torch.dtype, fma_units: int | None = None) -> dict:
    """Peak FLOP/s and bytes/s from the system's own description (see the module docstring).

    Returns ``{"flops_per_s", "bytes_per_s", "basis"}``; a rate is None when unknown.
    """
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_properties(device).name
        sheet = _GPU_DATASHEETS.get(name)
        if sheet is None:
            return {"flops_per_s": None, "bytes_per_s": None, "basis": f"unknown: no data sheet for {name!r}"}
        key = "float64" if dtype == torch.float64 else "float32"
        return {
            "flops_per_s": sheet[key],
            "bytes_per_s": sheet["bytes_per_s"],
            "basis": f"vendor data sheet for {name} (non-tensor-core {key}, memory bandwidth)",
        }
    flags = set((_cpuinfo_field("flags") or _cpuinfo_field("Features") or "").split())
    bits = _simd_bits(flags)
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_khz is not None:
        ghz, clock = int(max_khz) / 1e6, "cpufreq cpuinfo_max_freq"
    else:
        mhz = _cpuinfo_field("cpu MHz")
        ghz, clock = (float(mhz) / 1e3, "'cpu MHz' of /proc/cpuinfo") if mhz else (None, None)
    unknown_bw = "memory bandwidth unknown (not readable from the OS)"
    if bits is None or ghz is None:
        return {
            "flops_per_s": None,
            "bytes_per_s": None,
            "basis": "unknown: SIMD width or clock not readable; " + unknown_bw,
        }
    lanes = bits // (64 if dtype == torch.float64 else 32)
    fma = 2 if "fma" in flags or "asimd" in flags else 1
    units = fma_units or 1
    physical = physical_cores()
    cores = min(torch.get_num_threads(), physical or usable_cpus())
    counted = "physical cores" if physical else "logical CPUs (topology unreadable: SMT not excluded)"
    bound = (
        ""
        if fma_units
        else " (assumed: FMA units per core cannot be read from the OS; many x86 server cores have 2, "
        "so this may underestimate the peak)"
    )
    return {
        "flops_per_s": cores * ghz * 1e9 * lanes * fma * units,
        "bytes_per_s": None,
        "basis": f"{cores} core(s) (torch threads, at most the usable {counted}) x {ghz:.2f} GHz ({clock}) "
        f"x {lanes} lanes ({bits}-bit SIMD) x {fma} (FMA) x {units} FMA unit(s){bound}; {unknown_bw}",
    }


def measured_peaks(
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    matmul_n: int = 2048,
    copy_mib: int = 256,
    reps: int = 5,
) -> dict:
    """Achievable FLOP/s (``torch.mm``) and bytes/s (tensor copy: read + write) on ``device``."""
    a = torch.randn(matmul_n, matmul_n, device=device, dtype=dtype)
    b = torch.randn(matmul_n, matmul_n, device=device, dtype=dtype)
    n = copy_mib * 2**20 // torch.empty((), dtype=dtype).element_size()
    src, dst = torch.randn(n, device=device, dtype=dtype), torch.empty(n, device=device, dtype=dtype)
    timings = round_robin(
        {"mm": lambda: torch.mm(a, b), "copy": lambda: dst.copy_(src)}, device, warmup=2, reps=reps
    )
    return {
        "flops_per_s": 2 * matmul_n**3 / timings["mm"].median_s,
        "bytes_per_s": 2 * n * src.element_size() / timings["copy"].median_s,
        "basis": f"measured: torch.mm {matmul_n}x{matmul_n} and a {copy_mib} MiB copy (read + write), "
        f"{dtype}, median of {reps}",
    }


def environment(device: torch.device | str, dtype: torch.dtype, *, fma_units: int | None = None) -> dict:
    """Hardware, versions and theoretical peaks (the measured probe is separate: it takes time)."""
    return {
        "hardware": hardware(device),
        "versions": versions(),
        "peak_theoretical": theoretical_peaks(device, dtype, fma_units),
    }
