"""The ``cuda`` backend's capability record: the fused edge-convolution kernels of
``cuda/edge_conv.cu`` (see :mod:`equitensor.kernels`), used through ``EdgeConvolution``.

``available(device)`` says why the kernels cannot run (not a CUDA device, CuPy missing, no GPU),
and also excludes them from ``backend="auto"`` until they have been validated against ``cg`` on
a GPU (``equitensor.kernels.GPU_VALIDATED``); ``backend="cuda"`` can always be asked for
explicitly.
"""

from __future__ import annotations

import torch

from equitensor.tp.backends.capabilities import BackendCapabilities, Limitation, register_backend
from equitensor.tp.spec import TensorProductSpec


def cuda_limitations(spec: TensorProductSpec) -> list[Limitation]:
    """Paths the fused kernels cannot compute (anything but weighted 'uvu' with SH of mul 1)."""
    from equitensor.kernels.edge_conv_plan import edge_conv_limitations

    return [Limitation(index, reason) for index, reason in edge_conv_limitations(spec)]


def build_cuda_edge_convolution(spec: TensorProductSpec, **options):
    """The fused kernels' edge convolution (options: ``deterministic``)."""
    from equitensor.kernels.edge_conv import FusedEdgeProduct

    return FusedEdgeProduct(spec, **options)


def cuda_available(device: torch.device) -> str | None:
    """Why the kernels cannot run on ``device`` here, or None."""
    from equitensor import kernels
    from equitensor.kernels.compile import KernelUnavailableError
    from equitensor.kernels.edge_conv import require_gpu

    if device.type != "cuda":
        return f"the kernels run on CUDA devices only, not {device.type}"
    try:
        require_gpu()
    except KernelUnavailableError as error:
        return str(error)
    if not kernels.GPU_VALIDATED:
        return (
            "the CUDA kernels have not yet been validated against cg on a GPU (tests/test_kernels_gpu.py); "
            "ask for the backend by name to use them"
        )
    return None


CAPABILITIES = BackendCapabilities(
    name="cuda",
    summary="fused CUDA kernels: gather, 'uvu' product with SH(edge) and receiver sum in one kernel, "
    "generated per irreps with the CG constants compiled in (NVRTC via CuPy)",
    builders={"edge_convolution": build_cuda_edge_convolution},
    paths="all weighted 'uvu' node x SH(edge) paths, SH blocks of multiplicity 1 (EdgeConvolution only)",
    weights="same as cg: per edge, path and channel (the TensorProduct layout)",
    exact=True,
    error="float round-off (summation order differs from cg; deterministic=True is reproducible)",
    max_derivative_order=None,  # backward of the backward is built from the same fwd/bwd ops
    devices=("cuda",),
    dtypes=(torch.float32, torch.float64),
    limitations=cuda_limitations,
    available=cuda_available,
)

register_backend(CAPABILITIES)
