"""Shared pieces of the kernel tests: representative products and random graphs with awkward nodes."""

from __future__ import annotations

import torch

from equitensor import EdgeConvolution, Irreps
from equitensor.kernels.edge_conv_plan import plan_key

# name -> (irreps_node, irreps_sh, irreps_target)
CONFIGS = {
    # mixed multiplicities, an odd path (1o x 1o -> 1e), l up to 2
    "mixed": ("2x0e+3x1o+1x2e", "0e+1o+2e", "0e+1o+2e+1e"),
    # MACE-like: one channel count, SH up to l=3, target up to l=3
    "mace": ("3x0e+3x1o", str(Irreps.spherical_harmonics(3)), "0e+1o+2e+3o"),
}


def cg_conv(config: str) -> tuple[EdgeConvolution, str]:
    """The cg EdgeConvolution of a config and its kernel plan key."""
    conv = EdgeConvolution(*CONFIGS[config])
    return conv, plan_key(conv.spec)


def random_graph(num_nodes: int, num_edges: int, seed: int, device="cpu") -> torch.Tensor:
    """(2, E) edge_index where the last node has no edge at all and node 0 has a self-loop."""
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, max(num_nodes - 1, 1), (2, num_edges), generator=g)
    if num_edges:
        edge_index[:, 0] = 0
    return edge_index.to(device)


def random_inputs(conv: EdgeConvolution, num_nodes: int, num_edges: int, dtype, seed: int, device="cpu"):
    """Node features, edge vectors and edge weights (float tensors requiring no grad)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_nodes, conv.irreps_node.dim, generator=g, dtype=torch.float64)
    v = torch.randn(num_edges, 3, generator=g, dtype=torch.float64)
    w = torch.randn(num_edges, conv.weight_numel, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, v, w))
