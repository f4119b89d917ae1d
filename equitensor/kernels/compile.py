"""Run-time compilation of the CUDA sources in ``cuda/`` (installed as ``equitensor.cuda``).

A kernel source is a ``.cu`` file plus in-memory headers (the generated per-configuration
header) and ``-D`` options. :func:`compile_cubin` compiles it with NVRTC (through CuPy's bindings,
no GPU needed) and caches the binary in memory and on disk, keyed by the SHA-256 of the source,
the headers, the options, the target architecture and the NVRTC version. :func:`load_module`
loads it into CuPy on a device; :func:`launch` runs a kernel on PyTorch's current stream with
tensors exchanged through DLPack.

The on-disk cache lives in ``$EQUITENSOR_KERNEL_CACHE`` (default ``~/.cache/equitensor/kernels``);
writes are atomic (temporary file + rename), so concurrent processes may share it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path
from types import ModuleType

import torch

#: Options every kernel is compiled with (plus ``-D`` defines and the architecture).
BASE_OPTIONS = ("-std=c++17",)

_BINARIES: dict[str, bytes] = {}
_MODULES: dict[tuple[str, int], object] = {}


class KernelUnavailableError(RuntimeError):
    """The CUDA kernels cannot run here (no CuPy, no GPU, CPU tensors); the message says which."""


def require_cupy() -> ModuleType:
    """The ``cupy`` module, or KernelUnavailableError saying how to install it."""
    try:
        import cupy
    except ImportError as error:
        raise KernelUnavailableError(
            "the 'cuda' kernels need CuPy, which is not installed: pip install 'equitensor[cuda]' "
            f"(CUDA 13, cupy-cuda13x) or 'equitensor[cuda12]' (cupy-cuda12x) ({error})"
        ) from None
    return cupy


def cuda_source(name: str) -> str:
    """The text of ``cuda/<name>`` as installed (package data of ``equitensor.cuda``)."""
    return resources.files("equitensor.cuda").joinpath(name).read_text()


def cache_dir() -> Path:
    return Path(os.environ.get("EQUITENSOR_KERNEL_CACHE", Path.home() / ".cache" / "equitensor" / "kernels"))


def _nvrtc():
    try:
        from cupy.cuda import nvrtc
    except ImportError:
        require_cupy()
        raise
    return nvrtc


def source_hash(source: str, headers: dict[str, str], options: tuple[str, ...], arch: str) -> str:
    """The cache key of one compilation (also covers the NVRTC version)."""
    digest = hashlib.sha256()
    for part in (source, *sorted(headers.items()), options, arch, _nvrtc().getVersion()):
        digest.update(repr(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def compile_cubin(
    source: str, headers: dict[str, str], options: tuple[str, ...], arch: str, name: str = "kernel.cu"
) -> bytes:
    """Compile ``source`` with NVRTC for ``arch`` (e.g. ``'sm_90'``: a CUBIN; ``'compute_90'``: PTX).

    ``headers`` maps include names to their text. Cached in memory and on disk. RuntimeError with
    the NVRTC log on a compilation error.
    """
    key = source_hash(source, headers, options, arch)
    if key in _BINARIES:
        return _BINARIES[key]
    path = cache_dir() / f"{key}.{'cubin' if arch.startswith('sm_') else 'ptx'}"
    if path.is_file():
        _BINARIES[key] = path.read_bytes()
        return _BINARIES[key]
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(
        source, name, [h.encode() for h in headers.values()], [n.encode() for n in headers]
    )
    try:
        try:
            nvrtc.compileProgram(program, [*BASE_OPTIONS, *options, f"--gpu-architecture={arch}"])
        except nvrtc.NVRTCError as error:
            log = nvrtc.getProgramLog(program)
            raise RuntimeError(f"NVRTC could not compile {name} ({error}):\n{log}") from None
        binary = nvrtc.getCUBIN(program) if arch.startswith("sm_") else nvrtc.getPTX(program)
    finally:
        nvrtc.destroyProgram(program)
    if isinstance(binary, str):
        binary = binary.encode()
    _write_atomically(path, binary)
    _BINARIES[key] = binary
    return binary


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
    except OSError:
        pass  # an unwritable cache only costs recompilation


def device_arch(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def load_module(source: str, headers: dict[str, str], options: tuple[str, ...], device: torch.device):
    """The CuPy module of ``source`` compiled for ``device``'s architecture, loaded on it (cached)."""
    cupy = require_cupy()
    arch = device_arch(device)
    key = (source_hash(source, headers, options, arch), device.index)
    if key not in _MODULES:
        binary = compile_cubin(source, headers, options, arch)
        with cupy.cuda.Device(device.index):
            module = cupy.cuda.function.Module()
            module.load(binary)
        _MODULES[key] = module
    return _MODULES[key]


def _cupy_stream(cupy: ModuleType, device: torch.device):
    stream = torch.cuda.current_stream(device)
    if hasattr(cupy.cuda.Stream, "from_external") and hasattr(stream, "__cuda_stream__"):
        return cupy.cuda.Stream.from_external(stream)
    return cupy.cuda.ExternalStream(stream.cuda_stream, device.index)


def launch(module, name: str, grid: int, block: tuple[int, int], args: list, device: torch.device) -> None:
    """Run kernel ``name`` of ``module`` with a 1-D grid on PyTorch's current stream of ``device``.

    Tensors in ``args`` (contiguous) cross through DLPack, detached (DLPack refuses a tensor that
    requires grad, and the autograd-visible inputs of an op do); ints are passed as 64-bit integers.
    """
    if grid == 0:
        return
    cupy = require_cupy()
    with cupy.cuda.Device(device.index), _cupy_stream(cupy, device):
        converted = [
            cupy.from_dlpack(a.detach()) if isinstance(a, torch.Tensor) else _scalar(cupy, a) for a in args
        ]
        module.get_function(name)((grid, 1, 1), (block[0], block[1], 1), tuple(converted))


def _scalar(cupy: ModuleType, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"kernel scalar arguments must be ints, got {value!r}")
    return cupy.int64(value)
