"""Every cuda/*.cu compiles (nvcc, and NVRTC as at run time), and the generated per-channel math is
right: the generated header is compiled for the host with g++ and run against the CPU reference.

No GPU needed. nvcc / NVRTC (CuPy) / g++ missing: the test that needs it skips, saying which.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from kernels_helpers import CONFIGS, cg_conv

from equitensor.kernels import edge_conv_cuda, sparse_contract_cuda
from equitensor.kernels.compile import compile_cubin, cuda_source
from equitensor.kernels.edge_conv_codegen import (
    EXAMPLE_HEADER_NAME,
    HEADER_NAME,
    example_header,
    generate_header,
)
from equitensor.kernels.edge_conv_ops import GRAD_SH, GRAD_W, GRAD_X, reference_backward, reference_forward
from equitensor.kernels.edge_conv_plan import plan_from_key

CUDA_DIR = Path(__file__).resolve().parents[1] / "cuda"
CU_FILES = sorted(p.name for p in CUDA_DIR.glob("*.cu"))
NVCC = shutil.which("nvcc")
GXX = shutil.which("g++")


def headers_for(source: str, config: str) -> dict[str, str]:
    """The generated headers a .cu file needs, for one representative configuration."""
    if source == "edge_conv.cu":
        return {HEADER_NAME: generate_header(plan_from_key(cg_conv(config)[1]))}
    if source == "sparse_contract.cu":  # no generated part: the terms are a run-time table
        return {}
    raise AssertionError(f"tests/test_cuda_compile.py does not know the headers of cuda/{source}; add them")


def test_every_cu_file_is_known():
    assert CU_FILES, "no cuda/*.cu file found"
    for name in CU_FILES:
        headers_for(name, "mixed")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("scalar", ["float", "double"])
@pytest.mark.parametrize("source", CU_FILES)
def test_nvcc_compiles(source, scalar, config, tmp_path):
    for name, text in headers_for(source, config).items():
        (tmp_path / name).write_text(text)
    command = [NVCC, "--std=c++17", "-arch=sm_90", "--ptx", f"-DET_SCALAR={scalar}", "-DET_GENERATED_CONFIG"]
    command += ["-I", str(tmp_path)]
    command += ["-o", str(tmp_path / "out.ptx"), str(CUDA_DIR / source)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, f"nvcc failed on cuda/{source} ({scalar}, {config}):\n{result.stderr}"
    assert ".entry et_" in (tmp_path / "out.ptx").read_text()


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("source", CU_FILES)
def test_nvcc_compiles_each_file_as_it_stands(source, tmp_path):
    """`nvcc -c cuda/X.cu` with no options (the committed example configuration, float)."""
    command = [NVCC, "-c", str(CUDA_DIR / source), "-o", str(tmp_path / "out.o")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, f"nvcc failed on cuda/{source} as it stands:\n{result.stderr}"


def test_committed_example_header_is_the_generated_one():
    committed = (CUDA_DIR / EXAMPLE_HEADER_NAME).read_text()
    assert committed == example_header(), (
        f"cuda/{EXAMPLE_HEADER_NAME} is stale: python -m equitensor.kernels.edge_conv_codegen "
        f"> cuda/{EXAMPLE_HEADER_NAME}"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nvrtc_compiles_as_at_run_time(dtype, tmp_path, monkeypatch):
    pytest.importorskip("cupy", reason="CuPy (and its NVRTC) is not installed")
    monkeypatch.setenv("EQUITENSOR_KERNEL_CACHE", str(tmp_path))
    plan = plan_from_key(cg_conv("mixed")[1])
    options = edge_conv_cuda.compile_options(dtype)
    source = cuda_source("edge_conv.cu")
    ptx = compile_cubin(source, edge_conv_cuda.headers(plan), options, "compute_90")
    assert b".entry et_fwd_csr_kernel" in ptx and b".entry et_bwd_edge_111_kernel" in ptx
    assert len(list(tmp_path.glob("*.ptx"))) == 1  # cached on disk
    sparse = compile_cubin(
        cuda_source("sparse_contract.cu"), {}, sparse_contract_cuda.compile_options(dtype), "compute_90"
    )
    assert b".entry et_sparse_contract_kernel" in sparse
    broken = source.replace("typedef long long et_index;", "typedef long long et_index", 1)
    assert broken != source
    with pytest.raises(RuntimeError, match="NVRTC could not compile"):
        compile_cubin(broken, edge_conv_cuda.headers(plan), options, "compute_90")


# ----------------------------------------------------------------------------------------------
# the generated header, run on the host

DRIVER = r"""
#include <cstdio>
#include <vector>
#define __device__
#define __forceinline__ inline
template <typename T, bool ATOMIC>
inline void et_put(T* address, const T value) { if (ATOMIC) *address += value; else *address = value; }
#include "edge_conv_config.cuh"
#define MAX1(n) ((n) > 0 ? (n) : 1)

// stdin: E, then per edge the sender row (ir_mul), sh row, weight row, receiver gradient row.
// stdout: per edge the message row, d/dx row, d/dsh row, d/dw row.
int main() {
  long long E;
  if (std::scanf("%lld", &E) != 1) return 1;
  const int widths[4] = {ET_NODE_DIM, ET_SH_DIM, ET_WEIGHT_NUMEL, ET_OUT_DIM};
  for (long long e = 0; e < E; ++e) {
    std::vector<double> rows[4];
    for (int a = 0; a < 4; ++a) {
      rows[a].resize(widths[a] + 1);
      for (int c = 0; c < widths[a]; ++c) if (std::scanf("%lf", &rows[a][c]) != 1) return 2;
    }
    std::vector<double> msg(ET_OUT_DIM + 1, 0.0), gx(ET_NODE_DIM + 1, 0.0), gw(ET_WEIGHT_NUMEL + 1, 0.0);
    double gy[MAX1(ET_SH_DIM)] = {};
    for (int u = 0; u < ET_MAX_MUL; ++u) {
      double xv[MAX1(ET_NODE_SLOTS)], gv[MAX1(ET_OUT_SLOTS)];
      double acc[MAX1(ET_OUT_SLOTS)] = {}, gxv[MAX1(ET_NODE_SLOTS)] = {};
      et_load_node<double>(rows[0].data(), u, xv);
      et_load_out<double>(rows[3].data(), u, gv);
      et_forward<double>(xv, rows[1].data(), rows[2].data(), u, acc);
      et_store_out<double, false>(msg.data(), u, acc);
      et_backward<double, true, true, true>(xv, rows[1].data(), rows[2].data(), gv, u, gxv, gy, gw.data());
      et_store_node<double, true>(gx.data(), u, gxv);
    }
    for (int c = 0; c < ET_OUT_DIM; ++c) std::printf("%.17g ", msg[c]);
    for (int c = 0; c < ET_NODE_DIM; ++c) std::printf("%.17g ", gx[c]);
    for (int c = 0; c < ET_SH_DIM; ++c) std::printf("%.17g ", gy[c]);
    for (int c = 0; c < ET_WEIGHT_NUMEL; ++c) std::printf("%.17g ", gw[c]);
    std::printf("\n");
  }
  return 0;
}
"""


@pytest.mark.skipif(GXX is None, reason="g++ is not on PATH")
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_generated_products_equal_reference_on_host(config, tmp_path):
    """The unrolled per-channel code (constants, slots, offsets, guards) computes exactly the
    reference's per-edge message and gradients (identity graph: edge e goes from node e to e)."""
    plan = plan_from_key(cg_conv(config)[1])
    (tmp_path / HEADER_NAME).write_text(generate_header(plan))
    (tmp_path / "driver.cpp").write_text(DRIVER)
    binary = tmp_path / "driver"
    build = subprocess.run(
        [GXX, "-std=c++17", "-O1", "-I", str(tmp_path), "-o", str(binary), str(tmp_path / "driver.cpp")],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr

    e = 5
    g = torch.Generator().manual_seed(3)
    x, sh, w, grad = (
        torch.randn(e, d, generator=g, dtype=torch.float64)
        for d in (plan.node_dim, plan.sh_dim, plan.weight_numel, plan.out_dim)
    )
    lines = [str(e)] + [
        " ".join(f"{v:.17g}" for v in torch.cat([x[i], sh[i], w[i], grad[i]]).tolist()) for i in range(e)
    ]
    run = subprocess.run([str(binary)], input="\n".join(lines), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    host = torch.tensor(
        [[float(v) for v in line.split()] for line in run.stdout.splitlines()], dtype=torch.float64
    )

    identity = torch.arange(e).repeat(2, 1)
    csr = identity.new_empty(0)
    message = reference_forward(plan, x, sh, w, identity, csr)
    gx, gsh, gw = reference_backward(plan, x, sh, w, grad, identity, csr, GRAD_X | GRAD_SH | GRAD_W)
    expected = torch.cat([message, gx, gsh, gw], dim=1)
    torch.testing.assert_close(host, expected, rtol=1e-13, atol=1e-13)


def test_repository_cuda_dir_does_not_shadow_nvidia_cuda_packages():
    """From the repository root, ``cuda`` is our source folder; CuPy's ``cuda.pathfinder`` (and
    other NVIDIA ``cuda.*`` namespace packages) must still import."""
    import importlib.util
    import sys

    found = [p for p in sys.path if p and (Path(p) / "cuda" / "pathfinder").is_dir()]
    if not found:
        pytest.skip("no NVIDIA cuda.pathfinder package installed (it comes with CuPy 14)")
    root = Path(__file__).resolve().parents[1]
    code = "import cuda, cuda.pathfinder; print(cuda.pathfinder.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert importlib.util.find_spec("cuda") is not None
