"""The CUDA kernel of ``equitensor::sparse_contract`` (``cuda/sparse_contract.cu``), run on the CPU.

g++ compiles the kernel source for the host (``-DET_HOST_EMULATION``: a loop over blocks and
threads stands in for the launch) and :func:`launch_arguments`, the CUDA path's own argument
preparation, feeds it. Every call of the op inside MACE's product basis and edge convolution,
and inside their first and second derivatives, is then answered by this kernel instead of the C++
one, and the results must equal the ``cg`` backend's: the CUDA path's arithmetic is checked in CI
without a GPU (tests/test_kernels_gpu.py runs it on one).
"""

import contextlib
import ctypes
import shutil
import subprocess
import types
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from equitensor.kernels.sparse_contract_cuda import BLOCK, OUT_ARGUMENT, POINTERS, launch_arguments
from equitensor.nn import SymmetricContraction
from tests.test_mace import methanol, periodic_cell, tiny_mace
from tests.test_sparse_backend import dense_reference, random_map

SOURCE = Path(__file__).resolve().parents[1] / "cuda" / "sparse_contract.cu"
GXX = shutil.which("g++")
pytestmark = [
    pytest.mark.skipif(GXX is None, reason="g++ is not on PATH"),
    pytest.mark.usefixtures("one_thread"),
]
SCALARS = {torch.float64: "double", torch.float32: "float"}


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    """dtype -> the kernel compiled for the host, as a ctypes function."""
    folder = tmp_path_factory.mktemp("sparse_contract_host")
    kernels = {}
    for dtype, scalar in SCALARS.items():
        library = folder / f"sparse_contract_{scalar}.so"
        command = [GXX, "-x", "c++", "-std=c++17", "-O1", "-shared", "-fPIC", "-DET_HOST_EMULATION"]
        command += [f"-DET_SCALAR={scalar}", "-o", str(library), str(SOURCE)]
        build = subprocess.run(command, capture_output=True, text=True)
        assert build.returncode == 0, build.stderr
        function = ctypes.CDLL(str(library)).et_sparse_contract_host
        function.argtypes = [ctypes.c_void_p] * POINTERS + [ctypes.c_longlong] * 15
        function.restype = None
        kernels[dtype] = function
    return kernels


def emulated(kernels, inputs, indices, out_index, out_rows, out_dim, channels, components, coefficients):
    """The op computed by the CUDA kernel's code on the host, from the CUDA path's arguments."""
    args, threads = launch_arguments(
        [x.detach().contiguous() for x in inputs],
        [None if i is None else i.contiguous() for i in indices],
        out_index,
        out_rows,
        out_dim,
        channels,
        components,
        coefficients,
    )
    pointers = [
        ctypes.c_void_p(a.data_ptr() if isinstance(a, torch.Tensor) else None) for a in args[:POINTERS]
    ]
    grid = (threads + BLOCK - 1) // BLOCK
    kernels[inputs[0].dtype](*pointers, *args[POINTERS:], grid, BLOCK)
    return args[OUT_ARGUMENT]


class KernelOnHost(TorchDispatchMode):
    """Answers every ``equitensor::sparse_contract`` call with the host-compiled CUDA kernel."""

    def __init__(self, kernels):
        super().__init__()
        self.kernels, self.calls = kernels, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.equitensor.sparse_contract.default:
            self.calls += 1
            return emulated(self.kernels, *args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("out_channels", [True, False], ids=["channelled-out", "summed-out"])
@pytest.mark.parametrize("scatter", [True, False], ids=["scatter", "rows"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kernel_equals_the_definition(host_kernels, out_channels, scatter, dtype):
    gen = torch.Generator().manual_seed(1)
    nodes, edges, c = 6, 17, 5
    x = torch.randn(nodes, 4, c, generator=gen, dtype=dtype)
    y = torch.randn(edges, 3, generator=gen, dtype=dtype)
    w = torch.randn(edges, 2, c, generator=gen, dtype=dtype)
    sender = torch.randint(0, nodes, (edges,), generator=gen)
    receiver = torch.randint(0, nodes, (edges,), generator=gen)
    receiver[:3] = 0  # a node with many edges, and (nodes > edges / 3) some with none
    components, coefficients = random_map(gen, [4, 3, 2, 7], 13)
    components[components[:, -1] == 5, -1] = 4  # output component 5 has no term: zeros
    out_index, out_rows = (receiver, nodes) if scatter else (None, edges)
    args = ([x, y, w], [sender, None, None], out_index, out_rows, 7, c if out_channels else 0)
    got = emulated(host_kernels, *args, components, coefficients)
    expected = dense_reference(*args, components, coefficients)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)
    assert got[:, 5].abs().max() == 0 and got.abs().max() > 0


def test_kernel_without_rows_gives_zeros(host_kernels):
    components, coefficients = (
        torch.tensor([[0, 0, 1]], dtype=torch.int32),
        torch.ones(1, dtype=torch.float64),
    )
    x, w = torch.randn(3, 1, 4, dtype=torch.float64), torch.randn(0, 1, 4, dtype=torch.float64)
    empty = torch.zeros(0, dtype=torch.int64)
    got = emulated(host_kernels, [x, w], [empty, None], empty, 3, 2, 4, components, coefficients)
    assert got.shape == (3, 2, 4) and got.abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_product_basis_and_two_derivatives_on_the_kernel_equal_cg(host_kernels, dtype):
    torch.manual_seed(0)
    args = ("4x0e+4x1o+4x2e", "4x0e+4x1o", 3, 3)
    cg = SymmetricContraction(*args, backend="cg").to(dtype)
    sparse = SymmetricContraction(*args, backend="sparse").to(dtype)
    sparse.load_state_dict(cg.state_dict())
    x = torch.randn(7, cg.irreps_in.dim, dtype=dtype, requires_grad=True)
    attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 2, 1, 0, 2]), 3).to(dtype)

    def value_and_derivatives(module, mode=None):
        with mode or torch.enable_grad():
            out = module(x, attrs)
            params = list(module.parameters())
            grads = torch.autograd.grad(out.sin().sum(), [x, *params], create_graph=True)
            second = torch.autograd.grad(grads[0].square().sum(), [x, *params])
        return [out, *grads, *second]

    mode = KernelOnHost(host_kernels)
    got = value_and_derivatives(sparse, mode)
    expected = value_and_derivatives(cg)
    assert mode.calls >= 7  # forward, gradients for x and weights, and their derivatives
    tolerance = 1e-10 if dtype == torch.float64 else 2e-4
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=tolerance, atol=tolerance * e.abs().max().item())


def test_mace_energy_forces_stress_on_the_kernel_equal_cg(host_kernels):
    """A whole MACE on the CUDA kernel's code (edge convolution and product basis, forces and the
    stress are derivatives, the loss gradient of the forces a second one) against cg."""
    torch.manual_seed(0)
    cg = tiny_mace().double()
    sparse = tiny_mace(backend="sparse", product_backend="sparse").double()
    sparse.load_state_dict(cg.state_dict())
    mode = KernelOnHost(host_kernels)
    for graph in (methanol(), periodic_cell()):
        results = []
        for model, context in ((sparse, mode), (cg, None)):
            with context or torch.enable_grad():
                out = model(graph, compute_forces=True, compute_stress=True, training=True)
                loss = out["forces"].square().sum()
                gradient = torch.autograd.grad(loss, list(model.parameters()))
            results.append([out["energy"], out["forces"], out["stress"], *gradient])
        for g, e in zip(*results):
            torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10 * max(e.abs().max().item(), 1.0))
    assert mode.calls > 10


class FakeCupy:
    """Just enough of CuPy for :func:`equitensor.kernels.compile.launch` on the CPU: DLPack
    conversion as CuPy does it (``__dlpack__``, which refuses tensors that require grad), 64-bit
    scalars, and a kernel that runs the host-compiled code on the converted arguments."""

    class cuda:  # noqa: N801 (CuPy's name)
        Device = staticmethod(lambda index: contextlib.nullcontext())

    def __init__(self, kernels):
        self.kernels = kernels

    def from_dlpack(self, tensor):
        tensor.__dlpack__()  # raises for a tensor that requires grad, as CuPy's import does
        return tensor

    int64 = staticmethod(int)

    def module(self, dtype):
        kernel = self.kernels[dtype]

        def run(grid, block, args):
            pointers = [
                ctypes.c_void_p(a.data_ptr() if isinstance(a, torch.Tensor) else a or None)
                for a in args[:POINTERS]
            ]
            kernel(*pointers, *args[POINTERS:], grid[0], block[0])

        return types.SimpleNamespace(get_function=lambda name: run)


def test_cuda_path_launches_the_kernel_with_its_arguments(host_kernels, monkeypatch):
    """The op's CUDA implementation itself (checks, arguments, the launch through CuPy) on CPU
    tensors that require grad, with the host-compiled kernel behind a stand-in for CuPy."""
    from equitensor.kernels import compile as kernel_compile
    from equitensor.kernels import sparse_contract_cuda

    fake = FakeCupy(host_kernels)
    monkeypatch.setattr(kernel_compile, "require_cupy", lambda: fake)
    monkeypatch.setattr(kernel_compile, "_cupy_stream", lambda cupy, device: contextlib.nullcontext())
    monkeypatch.setattr(
        sparse_contract_cuda,
        "load_module",
        lambda source, headers, options, device: fake.module(
            torch.float64 if "double" in options[0] else torch.float32
        ),
    )
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(6, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randn(17, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    sender, receiver = torch.randint(0, 6, (2, 17), generator=gen)
    components, coefficients = random_map(gen, [4, 3, 6], 11)
    args = ([x, y], [sender, None], receiver, 6, 6, 5, components, coefficients)
    got = sparse_contract_cuda.sparse_contract_cuda(*args)
    torch.testing.assert_close(got, dense_reference(*args), rtol=1e-12, atol=1e-12)
    with pytest.raises(IndexError, match="out of range"):
        sparse_contract_cuda.sparse_contract_cuda([x, y], [sender + 6, None], *args[2:])
    # indices the kernel would misread (it reads contiguous int64) are refused, as on the CPU
    pairs = torch.stack([sender, receiver], dim=1)  # (E, 2): a column of it is not contiguous
    with pytest.raises(ValueError, match=r"index 0 must be a contiguous 1-D int64 .*\(not contiguous\)"):
        sparse_contract_cuda.sparse_contract_cuda([x, y], [pairs[:, 0], None], *args[2:])
    with pytest.raises(
        ValueError, match="out_index must be a contiguous 1-D int64 tensor on cpu, got torch.int32"
    ):
        sparse_contract_cuda.sparse_contract_cuda([x, y], [sender, None], receiver.int(), *args[3:])
