"""The fused edge convolution in e3nn's mul_ir layout: the ``cuda`` backend of EdgeConvolution.

:func:`fused_edge_convolution` transposes node features to the kernels' ir_mul layout, calls the
custom op ``equitensor::edge_conv_fwd`` and transposes the sum back; it runs on any device (on
CPU through the ops' plain-torch reference, which is how the op graph is tested without a GPU).
:class:`FusedEdgeProduct` is what ``EdgeConvolution(backend="cuda")`` holds: it refuses to be
built without CuPy or a CUDA GPU and to run on CPU tensors, with errors that say which.
"""

from __future__ import annotations

import torch
from torch import nn

from equitensor.irreps import Irreps
from equitensor.kernels.compile import KernelUnavailableError, require_cupy
from equitensor.kernels.edge_conv_ops import edge_conv_fwd, edge_csr
from equitensor.kernels.edge_conv_plan import EdgeConvPlan, plan_from_key, plan_key
from equitensor.tp.spec import TensorProductSpec


def ir_mul_permutation(irreps: Irreps) -> torch.Tensor:
    """Column index ``p`` with ``x[..., p]`` the ir_mul layout of mul_ir features ``x`` (int64):
    one ``index_select`` instead of a split, transposes and a cat (and so in every derivative)."""
    columns, offset = [], 0
    for mul, ir in Irreps(irreps):
        block = torch.arange(offset, offset + mul * ir.dim).reshape(mul, ir.dim)
        columns.append(block.T.reshape(-1))
        offset += mul * ir.dim
    return torch.cat(columns) if columns else torch.zeros(0, dtype=torch.int64)


def mul_ir_to_ir_mul(x: torch.Tensor, irreps: Irreps) -> torch.Tensor:
    """(rows, dim) from e3nn's mul_ir layout to ir_mul (each block ``(mul, 2l+1)`` -> ``(2l+1, mul)``)."""
    blocks = x.split([mul * ir.dim for mul, ir in irreps], dim=-1)
    parts = [
        b.reshape(-1, mul, ir.dim).transpose(1, 2).reshape(-1, mul * ir.dim)
        for b, (mul, ir) in zip(blocks, irreps)
    ]
    return torch.cat(parts, dim=-1) if parts else x


def ir_mul_to_mul_ir(x: torch.Tensor, irreps: Irreps) -> torch.Tensor:
    """Inverse of :func:`mul_ir_to_ir_mul`."""
    blocks = x.split([mul * ir.dim for mul, ir in irreps], dim=-1)
    parts = [
        b.reshape(-1, ir.dim, mul).transpose(1, 2).reshape(-1, mul * ir.dim)
        for b, (mul, ir) in zip(blocks, irreps)
    ]
    return torch.cat(parts, dim=-1) if parts else x


def fused_edge_convolution(
    plan: EdgeConvPlan,
    node_feats: torch.Tensor,
    sh: torch.Tensor,
    edge_weights: torch.Tensor,
    edge_index: torch.Tensor,
    *,
    deterministic: bool = False,
) -> torch.Tensor:
    """``out[r] = sum_{e: s -> r} TP_uvu(node_feats[s], sh[e], edge_weights[e])`` (mul_ir layout).

    ``plan`` is the product's plan, ``plan_from_key(plan_key(spec))`` (made once, outside any
    compiled region);
    ``sh`` the spherical harmonics of the edges (E, irreps_sh.dim); ``edge_weights`` (E,
    weight_numel) in the TensorProduct layout. ``deterministic``: sum in CSR order (receivers
    sorted once per call) without atomics, bitwise reproducible on a GPU.
    """
    edge_index = edge_index.to(torch.int64)
    csr = edge_csr(edge_index, node_feats.shape[0]) if deterministic else edge_index.new_empty(0)
    x = mul_ir_to_ir_mul(node_feats, plan.irreps_node)
    out = edge_conv_fwd(x, sh.contiguous(), edge_weights.contiguous(), edge_index.contiguous(), csr, plan.key)
    return ir_mul_to_mul_ir(out, plan.irreps_out)


def require_gpu() -> None:
    """KernelUnavailableError unless CuPy imports and PyTorch sees a CUDA GPU."""
    require_cupy()
    if not torch.cuda.is_available():
        raise KernelUnavailableError(
            "the 'cuda' backend needs a CUDA GPU, but torch.cuda.is_available() is False "
            "(no GPU visible or a CPU-only PyTorch build); use backend='cg' or 'so2' instead"
        )


class FusedEdgeProduct(nn.Module):
    """Gather, 'uvu' product with the SH of the edge, and sum over receivers in one CUDA kernel.

    Built from the same :class:`TensorProductSpec` as the cg backend (same weights, same layout).
    Call as ``product(node_feats, sh, edge_weights, edge_index)``; returns the per-node sums.
    """

    def __init__(self, spec: TensorProductSpec, *, deterministic: bool = False) -> None:
        super().__init__()
        self.plan = plan_from_key(plan_key(spec))  # ValueError for a product the kernels cannot compute
        require_gpu()
        self.spec = spec
        self.deterministic = bool(deterministic)

    @property
    def weight_numel(self) -> int:
        return self.spec.weight_numel

    uses_sh = True

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_vectors: torch.Tensor,
        sh: torch.Tensor,
        edge_weights: torch.Tensor,
        edge_index: torch.Tensor,
    ) -> torch.Tensor:
        for name, tensor in (
            ("node_feats", node_feats),
            ("edge vectors/SH", sh),
            ("edge_weights", edge_weights),
        ):
            if tensor.device.type != "cuda":
                raise KernelUnavailableError(
                    f"the 'cuda' backend got {name} on {tensor.device}; move the model and the graph to a "
                    "CUDA device, or use backend='cg' on CPU"
                )
        return fused_edge_convolution(
            self.plan, node_feats, sh, edge_weights, edge_index, deterministic=self.deterministic
        )

    def extra_repr(self) -> str:
        return f"deterministic={self.deterministic}"
