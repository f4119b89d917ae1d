"""``equitensor::sparse_contract`` on CUDA devices: the kernel of ``cuda/sparse_contract.cu``.

Registered as the op's CUDA implementation when :func:`equitensor.kernels.sparse_contract.load`
loads the C++ library (which defines the op, its CPU kernel and its autograd), so the same op
runs MACE's product basis and edge convolution, and all their derivatives, on a GPU.

:func:`launch_arguments` turns the op's arguments into the kernel's (terms sorted by output
component, rows sorted by output row, both as CSR offsets, computed on the device: no copy from
the host, no synchronisation); it is plain torch, so the tests run it on the CPU and feed the
kernel compiled for the host (``-DET_HOST_EMULATION``). :func:`sparse_contract_cuda` checks the
arguments as the CPU kernel does (dtypes, shapes, contiguity; the index ranges cost one
synchronisation per call), compiles the source once per dtype (NVRTC through CuPy, cached) and
launches one thread per output element.
"""

from __future__ import annotations

import torch

from equitensor.kernels.compile import cuda_source, launch, load_module

SOURCE = "sparse_contract.cu"
KERNEL = "et_sparse_contract_kernel"
MAX_INPUTS = 4
BLOCK = 128  # threads per block
OUT_ARGUMENT = 2 * MAX_INPUTS + 5  # position of the output among the kernel's arguments
POINTERS = OUT_ARGUMENT + 1  # pointer arguments, then 2 * MAX_INPUTS + 5 integers
_SCALAR = {torch.float32: "float", torch.float64: "double"}


def compile_options(dtype: torch.dtype) -> tuple[str, ...]:
    return (f"-DET_SCALAR={_SCALAR[dtype]}",)


def output_shape(out_rows: int, out_dim: int, channels: int) -> tuple[int, ...]:
    return (out_rows, out_dim, channels) if channels > 0 else (out_rows, out_dim)


def launch_arguments(
    inputs: list[torch.Tensor],
    indices: list[torch.Tensor | None],
    out_index: torch.Tensor | None,
    out_rows: int,
    out_dim: int,
    channels: int,
    components: torch.Tensor,
    coefficients: torch.Tensor,
) -> tuple[list, int]:
    """The kernel's arguments (tensors and ints, in its order, output last among the tensors)
    and the number of threads. Everything stays on the inputs' device."""
    k_in = len(inputs)
    device = inputs[0].device
    channelled = [x.dim() == 3 for x in inputs]
    num_channels = channels if channels > 0 else next((x.shape[2] for x in inputs if x.dim() == 3), 1)
    padding = [0] * (MAX_INPUTS - k_in)
    layout = [x.stride(0) for x in inputs] + padding + [int(c) for c in channelled] + padding
    # terms sorted (stably) by output component; group g = output component g, maybe empty
    order = torch.argsort(components[:, k_in], stable=True)
    sorted_components = components.index_select(0, order).to(torch.int64)
    offsets = torch.stack(
        [sorted_components[:, k] * (num_channels if channelled[k] else 1) for k in range(k_in)], dim=1
    )
    offsets = torch.nn.functional.pad(offsets, (0, MAX_INPUTS - k_in)).contiguous()
    outputs = sorted_components[:, k_in].contiguous()
    group_start = torch.searchsorted(outputs, torch.arange(out_dim + 1, device=device)).contiguous()
    coefficients = coefficients.index_select(0, order).contiguous()
    if out_index is None:
        row_start = row_order = 0  # null pointers: row o alone
    else:
        row_order = torch.argsort(out_index, stable=True)
        sorted_rows = out_index.index_select(0, row_order).contiguous()
        row_start = torch.searchsorted(sorted_rows, torch.arange(out_rows + 1, device=device)).contiguous()
    padded = list(inputs) + [inputs[0]] * (MAX_INPUTS - k_in)
    rows = [0 if index is None else index for index in indices] + [0] * (MAX_INPUTS - k_in)
    out = inputs[0].new_empty(output_shape(out_rows, out_dim, channels))  # every element is written
    tensors = [*padded, *rows, offsets, coefficients, group_start, row_start, row_order, out]
    threads = out_rows * out_dim * (num_channels if channels > 0 else 1)
    return [*tensors, *layout, k_in, out_rows, out_dim, num_channels, int(channels > 0)], threads


def check_arguments(
    inputs: list[torch.Tensor],
    indices: list[torch.Tensor | None],
    out_index: torch.Tensor | None,
    out_rows: int,
    out_dim: int,
    channels: int,
    components: torch.Tensor,
    coefficients: torch.Tensor,
) -> None:
    """The CPU kernel's checks (ValueError/IndexError naming the argument): a kernel reading out
    of range would corrupt memory. The value checks cost one synchronisation."""
    k_in = len(inputs)
    if not 1 <= k_in <= MAX_INPUTS or len(indices) != k_in:
        raise ValueError(
            f"sparse_contract: 1 to {MAX_INPUTS} inputs with one index (or None) each, got {k_in}"
        )
    device, dtype = inputs[0].device, inputs[0].dtype
    if dtype not in _SCALAR:
        raise ValueError(f"sparse_contract: float32 or float64, got {dtype}")
    for k, x in enumerate(inputs):
        if x.device != device or x.dtype != dtype or not x.is_contiguous() or x.dim() not in (2, 3):
            raise ValueError(
                f"sparse_contract: input {k} must be a contiguous (rows, D) or (rows, D, C) tensor of "
                f"{dtype} on {device}, got {x.dtype} {tuple(x.shape)} on {x.device}"
            )
    widths = {x.shape[2] for x in inputs if x.dim() == 3} | ({channels} if channels > 0 else set())
    if len(widths) > 1:
        raise ValueError(f"sparse_contract: inputs and output have different channel counts {sorted(widths)}")
    for name, t, kind in (
        ("components", components, torch.int32),
        ("coefficients", coefficients, torch.float64),
    ):
        if t.device != device or t.dtype != kind:
            raise ValueError(
                f"sparse_contract: {name} must be {kind} on {device}, got {t.dtype} on {t.device}"
            )
    if components.dim() != 2 or components.shape[1] != k_in + 1 or coefficients.shape != components.shape[:1]:
        raise ValueError(
            f"sparse_contract: components (terms, {k_in + 1}) and coefficients (terms,), got "
            f"{tuple(components.shape)} and {tuple(coefficients.shape)}"
        )
    for name, index in [*((f"index {k}", i) for k, i in enumerate(indices)), ("out_index", out_index)]:
        if index is not None and (
            index.dim() != 1
            or index.dtype != torch.int64
            or not index.is_contiguous()
            or index.device != device
        ):
            raise ValueError(
                f"sparse_contract: {name} must be a contiguous 1-D int64 tensor on {device}, got "
                f"{index.dtype} of shape {tuple(index.shape)} on {index.device}"
                + ("" if index.is_contiguous() else " (not contiguous)")
            )
    rows = {index.shape[0] for index in (*indices, out_index) if index is not None}
    rows |= {x.shape[0] for x, index in zip(inputs, indices) if index is None}
    if out_index is None:
        rows.add(out_rows)
    if len(rows) > 1:
        raise ValueError(
            f"sparse_contract: the operands and indices disagree on the number of rows {sorted(rows)}"
        )
    limits = [x.shape[1] for x in inputs] + [out_dim]
    bounds = [(components[:, k], limit) for k, limit in enumerate(limits)]
    bounds += [(index, x.shape[0]) for x, index in zip(inputs, indices) if index is not None]
    bounds += [(out_index, out_rows)] if out_index is not None else []
    bounds = [(values, limit) for values, limit in bounds if values.numel()]
    if bounds:
        inside = torch.stack([((v >= 0) & (v < limit)).all() for v, limit in bounds])
        if not bool(inside.all()):
            raise IndexError("sparse_contract: a term component or a row index is out of range")


def sparse_contract_cuda(
    inputs: list[torch.Tensor],
    indices: list[torch.Tensor | None],
    out_index: torch.Tensor | None,
    out_rows: int,
    out_dim: int,
    channels: int,
    components: torch.Tensor,
    coefficients: torch.Tensor,
) -> torch.Tensor:
    """The op on CUDA tensors (registered for the CUDA dispatch key; call the op, not this)."""
    arguments = (inputs, indices, out_index, out_rows, out_dim, channels, components, coefficients)
    check_arguments(*arguments)
    args, threads = launch_arguments(*arguments)
    out = args[OUT_ARGUMENT]
    if threads:
        device = inputs[0].device
        module = load_module(cuda_source(SOURCE), {}, compile_options(inputs[0].dtype), device)
        launch(module, KERNEL, (threads + BLOCK - 1) // BLOCK, (BLOCK, 1), args, device)
    return out


__all__ = ["check_arguments", "launch_arguments", "sparse_contract_cuda"]
