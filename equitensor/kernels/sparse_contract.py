"""``equitensor::sparse_contract``: a multilinear map from its non-zero coefficients, in compiled C++.

    out[o(r), t_out, c] += coef[t] * prod_k inputs[k][i_k(r), t_k, c]   (every row r, term t)

Operands are channelled, ``(rows, D, C)`` with the channels innermost, or not, ``(rows, D)``
(broadcast over channels as an input, summed over them as the output); ``indices[k]`` gathers
the rows of input k, ``out_index`` scatters into the output (None: row r). ``components``
(terms, K + 1) int32 are each term's component of every input and of the output,
``coefficients`` (terms,) float64 its value. MACE's edge convolution and product basis are both
such maps (:mod:`equitensor.kernels.sparse_products`).

Derivatives: the map is linear in each input, so the gradient for input j is the same map with
input j and the output swapped (the incoming gradient takes the output's place, its components
and row index included). The backward (registered in C++, a ``torch::autograd::Function``) calls
the op itself and is again differentiable: derivatives of any order run on the same kernel, and
only the gradients the autograd engine will use are computed (no weight gradients inside
``autograd.grad(energy, positions)``).

On CUDA tensors the op runs the kernel of ``cuda/sparse_contract.cu``
(:mod:`equitensor.kernels.sparse_contract_cuda`, NVRTC through CuPy); the C++ library still
defines the op and its autograd, so it is built on GPU machines too.

Build: ``equitensor/kernels/sparse_contract.cpp`` is compiled on first use with
``torch.utils.cpp_extension`` (g++ and ninja, ``-O3 -march=native -fopenmp``) and cached in
``$EQUITENSOR_KERNEL_CACHE/cpu`` (default ``~/.cache/equitensor/kernels/cpu``) under a hash of the
source, the torch version and the CPU; later processes load the cached library in milliseconds.
Without a compiler :func:`load` raises :class:`~equitensor.kernels.compile.KernelUnavailableError`
saying so; nothing falls back to another backend.

Example (a channel-wise product ``z[r, 0, c] = 2 x[r, 1, c] y[r, 0]``)::

    >>> import torch
    >>> from equitensor.kernels.sparse_contract import sparse_contract
    >>> x, y = torch.randn(5, 2, 3), torch.randn(5, 1)
    >>> comps, coef = torch.tensor([[1, 0, 0]], dtype=torch.int32), torch.tensor([2.0], dtype=torch.float64)
    >>> z = sparse_contract([x, y], [None, None], None, 5, 1, 3, comps, coef)
    >>> torch.allclose(z[:, 0], 2 * x[:, 1] * y)
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import threading
from importlib import resources
from pathlib import Path

import torch

from equitensor.kernels.compile import KernelUnavailableError, cache_dir

SOURCE = "sparse_contract.cpp"
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c++17")

_lock = threading.Lock()
_loaded: str | None = None  # path of the loaded library


def _cpu_signature() -> str:
    """The CPU model and its instruction-set flags (the library is built with -march=native)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [ln for ln in lines if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(wanted)
    except OSError:
        return platform.processor() or platform.machine()


def library_key() -> str:
    source = resources.files("equitensor.kernels").joinpath(SOURCE).read_bytes()
    digest = hashlib.sha256()
    for part in (source, torch.__version__.encode(), " ".join(CFLAGS).encode(), _cpu_signature().encode()):
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def load() -> str:
    """Compile (first time on this machine) and load the C++ library; returns its path.

    KernelUnavailableError, with the compiler's complaint, if it cannot be built here.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        from torch.utils import cpp_extension

        key = library_key()
        build = cache_dir() / "cpu" / key
        build.mkdir(parents=True, exist_ok=True)
        source = resources.files("equitensor.kernels").joinpath(SOURCE)
        try:
            with resources.as_file(source) as path, _ninja_on_path():
                library = cpp_extension.load(
                    name=f"equitensor_sparse_{key}",
                    sources=[str(path)],
                    extra_cflags=list(CFLAGS),
                    extra_ldflags=["-fopenmp"],
                    build_directory=str(build),
                    is_python_module=False,
                    verbose=False,
                )
        except (RuntimeError, OSError, ImportError) as error:
            raise KernelUnavailableError(
                "the compiled CPU kernels (backend 'sparse') could not be built here: they need a C++ "
                "compiler (g++ or clang++) and ninja (pip install ninja) at first use. Use backend='cg' "
                f"instead, or fix the build. The build said: {str(error).strip()[-2000:]}"
            ) from None
        _register_python_parts()
        _loaded = str(library) if library is not None else str(build)
        return _loaded


@contextlib.contextmanager
def _ninja_on_path():
    """torch.utils.cpp_extension runs ``ninja`` from PATH; the ``ninja`` package (a dependency)
    puts it next to the Python of a virtual environment, which is not on PATH unless activated."""
    if shutil.which("ninja") is not None:
        yield
        return
    try:
        import ninja
    except ImportError:
        yield
        return
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + path
    try:
        yield
    finally:
        os.environ["PATH"] = path


def sparse_contract(
    inputs: list[torch.Tensor],
    indices: list[torch.Tensor | None],
    out_index: torch.Tensor | None,
    out_rows: int,
    out_dim: int,
    channels: int,
    components: torch.Tensor,
    coefficients: torch.Tensor,
) -> torch.Tensor:
    """Evaluate the map (see the module docstring); differentiable to any order.

    ``channels`` is the output's channel count, 0 for an output without channels.
    """
    load()
    return torch.ops.equitensor.sparse_contract(
        inputs, indices, out_index, out_rows, out_dim, channels, components, coefficients
    )


def _fake(inputs, indices, out_index, out_rows, out_dim, channels, components, coefficients):
    shape = (out_rows, out_dim, channels) if channels > 0 else (out_rows, out_dim)
    return inputs[0].new_empty(shape)


def _register_python_parts() -> None:
    from equitensor.kernels.sparse_contract_cuda import sparse_contract_cuda

    torch.library.register_fake("equitensor::sparse_contract", _fake)
    torch.library.impl("equitensor::sparse_contract", "CUDA", sparse_contract_cuda)


def available() -> str | None:
    """Why the compiled CPU kernels cannot be used here, or None (compiles them if needed)."""
    try:
        load()
    except KernelUnavailableError as error:
        return str(error)
    return None


__all__ = ["available", "library_key", "load", "sparse_contract"]
