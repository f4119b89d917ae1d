"""Launching the kernels of ``cuda/edge_conv.cu`` for one plan (CUDA tensors only).

One module per (plan, dtype, device), compiled by :mod:`.compile` from the template and the
generated header. Grids: one warp per item (node or edge), ``WARPS`` items per block.
"""

from __future__ import annotations

from functools import cache

import torch

from equitensor.kernels.compile import cuda_source, launch, load_module
from equitensor.kernels.edge_conv_codegen import HEADER_NAME, generate_header
from equitensor.kernels.edge_conv_ops import GRAD_SH, GRAD_W, GRAD_X, _split_csr
from equitensor.kernels.edge_conv_plan import EdgeConvPlan, plan_from_key

SOURCE = "edge_conv.cu"
WARPS = 4  # items (warps) per block; passed to the source as -DET_WARPS
_SCALAR = {torch.float32: "float", torch.float64: "double"}


@cache
def _header(key: str) -> str:
    return generate_header(plan_from_key(key))


def compile_options(dtype: torch.dtype) -> tuple[str, ...]:
    return (f"-DET_SCALAR={_SCALAR[dtype]}", f"-DET_WARPS={WARPS}", "-DET_GENERATED_CONFIG")


def headers(plan: EdgeConvPlan) -> dict[str, str]:
    return {HEADER_NAME: _header(plan.key)}


def _module(plan: EdgeConvPlan, dtype: torch.dtype, device: torch.device):
    return load_module(cuda_source(SOURCE), headers(plan), compile_options(dtype), device)


def _check_indices(edge_index: torch.Tensor, num_nodes: int) -> None:
    """Out-of-range indices would corrupt memory in a kernel: check them (one synchronisation)."""
    if edge_index.numel() == 0:
        return
    low, high = torch.aminmax(edge_index)
    if int(low) < 0 or int(high) >= num_nodes:
        raise IndexError(
            f"edge_index holds node indices in [{int(low)}, {int(high)}], but there are {num_nodes} nodes"
        )


def _grid(items: int) -> int:
    return (items + WARPS - 1) // WARPS


def forward(plan: EdgeConvPlan, x, sh, weight, edge_index, csr) -> torch.Tensor:
    n, e = x.shape[0], edge_index.shape[1]
    _check_indices(edge_index, n)
    x, sh, weight, edge_index = (t.contiguous() for t in (x, sh, weight, edge_index))
    module = _module(plan, x.dtype, x.device)
    senders, receivers = edge_index[0], edge_index[1]
    if csr.numel():
        recv_perm, _, recv_ptr, _ = _split_csr(csr.contiguous(), e, n)
        out = x.new_empty((n, plan.out_dim))  # every row is written
        args = [x, sh, weight, senders, recv_ptr, recv_perm, out, n]
        launch(module, "et_fwd_csr_kernel", _grid(n), (32, WARPS), args, x.device)
    else:
        out = x.new_zeros((n, plan.out_dim))
        args = [x, sh, weight, senders, receivers, out, e]
        launch(module, "et_fwd_atomic_kernel", _grid(e), (32, WARPS), args, x.device)
    return out


def backward(plan: EdgeConvPlan, x, sh, weight, grad_out, edge_index, csr, mask: int):
    n, e = x.shape[0], edge_index.shape[1]
    _check_indices(edge_index, n)
    x, sh, weight, grad_out, edge_index = (t.contiguous() for t in (x, sh, weight, grad_out, edge_index))
    module = _module(plan, x.dtype, x.device)
    senders, receivers = edge_index[0], edge_index[1]
    deterministic = csr.numel() > 0
    want_x, want_sh, want_w = bool(mask & GRAD_X), bool(mask & GRAD_SH), bool(mask & GRAD_W)
    empty = x.new_empty(0)
    gx = empty
    if want_x:  # the CSR kernel writes every row; atomics add into zeros
        gx = x.new_empty(x.shape) if deterministic else x.new_zeros(x.shape)
    gsh = sh.new_empty(sh.shape) if want_sh else empty  # one write per entry
    gw = weight.new_empty(weight.shape) if want_w else empty  # one write per entry
    atomic_x = want_x and not deterministic
    if atomic_x or want_sh or want_w:
        name = f"et_bwd_edge_{int(atomic_x)}{int(want_sh)}{int(want_w)}_kernel"
        args = [x, sh, weight, grad_out, senders, receivers, gx, gsh, gw, e]
        launch(module, name, _grid(e), (32, WARPS), args, x.device)
    if want_x and deterministic:
        _, send_perm, _, send_ptr = _split_csr(csr.contiguous(), e, n)
        args = [sh, weight, grad_out, receivers, send_ptr, send_perm, gx, n]
        launch(module, "et_bwd_x_csr_kernel", _grid(n), (32, WARPS), args, x.device)
    return gx, gsh, gw
