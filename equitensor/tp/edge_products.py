"""Edge convolutions built from a backend's tensor-product executor:
``out[i] = sum_{edges j->i} TP(x[j], Y(r_ij), w_ij)``.

Every edge-convolution executor (these, and the fused kernels of ``sparse`` and ``cuda``, the edge
frame of ``so2``) is called the same way, ``product(node_feats, edge_vectors, edge_sh,
edge_weights, edge_index) -> (N, out)``, and says by ``uses_sh`` whether it reads the spherical
harmonics of the edges (so they are computed only when needed). Backends register one of the
builders below, or their own, as their ``edge_convolution`` builder.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from equitensor.devices import is_tracing


def sum_into_receivers(receiver: torch.Tensor, num_nodes: int, messages: torch.Tensor) -> torch.Tensor:
    """Sum per-edge ``messages`` (E, d) into their receivers: (num_nodes, d)."""
    return messages.new_zeros((num_nodes, messages.shape[-1])).index_add(0, receiver, messages)


class PerEdgeProduct(nn.Module):
    """Gather the senders, multiply every edge with the executor, sum into the receivers."""

    uses_sh = True

    def __init__(self, spec, executor: nn.Module) -> None:
        super().__init__()
        self.spec, self.executor = spec, executor

    def forward(self, node_feats, edge_vectors, edge_sh, edge_weights, edge_index) -> torch.Tensor:
        sender, receiver = edge_index
        return sum_into_receivers(
            receiver, node_feats.shape[0], self.executor(node_feats[sender], edge_sh, edge_weights)
        )


class BlockwiseEdgeProduct(PerEdgeProduct):
    """Block by block and, on CPU, in chunks of edges summed into one buffer per output block: the
    per-edge messages of all edges are never materialised or concatenated. Needs an executor with
    ``output_blocks(x1, x2, weight)`` and ``rows_per_chunk(x)`` (the ``cg`` one)."""

    def forward(self, node_feats, edge_vectors, edge_sh, edge_weights, edge_index) -> torch.Tensor:
        sender, receiver = edge_index
        executor = self.executor
        out = [node_feats.new_zeros(node_feats.shape[0], mul * ir.dim) for mul, ir in self.spec.irreps_out]
        rows = executor.rows_per_chunk(node_feats)
        if is_tracing():  # one chunk: a loop would fix the number of edges
            parts = [slice(None)]
        else:
            parts = [slice(start, start + rows) for start in range(0, sender.shape[0], rows)]
        for part in parts:
            blocks = executor.output_blocks(node_feats[sender[part]], edge_sh[part], edge_weights[part])
            for k, block in enumerate(blocks):
                if block is not None:
                    out[k].index_add_(0, receiver[part], block)
        return torch.cat(out, dim=-1) if out else node_feats.new_zeros(node_feats.shape[0], 0)


def through_tensor_product(backend: str, blockwise: bool = False) -> Callable[..., nn.Module]:
    """The ``edge_convolution`` builder of a backend whose tensor-product executor computes the
    per-edge product (``blockwise``: its executor offers output blocks, see
    :class:`BlockwiseEdgeProduct`)."""

    def build(spec, **options) -> nn.Module:
        from equitensor.tp.backends.capabilities import build_operation

        executor = build_operation("tensor_product", backend, spec, **options)
        return (BlockwiseEdgeProduct if blockwise else PerEdgeProduct)(spec, executor)

    return build
