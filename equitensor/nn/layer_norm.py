"""Per-degree equivariant layer norm (EquiformerV2's and eSCN's normalisation of irreps features).

For each block ``mul x ir`` of the features: scalars (``0e``) are centred over the channels; every
block is then divided by the root mean square over its channels of ``|x_c|^2 / dim(ir)`` (plus
``eps``) and scaled by a learned weight per channel; scalars also get a learned bias. Norms and
means over channels are invariant, so the layer is exactly equivariant (rotations and
reflections), and smooth everywhere (``eps > 0``), also at all-zero features.
"""

from __future__ import annotations

import torch
from torch import nn

from equitensor.irreps import Irrep, Irreps, IrrepsLike


class EquivariantLayerNorm(nn.Module):
    """Layer norm of each irreps block over its channels, one scale per channel, biases on 0e.

    >>> norm = EquivariantLayerNorm("4x0e + 4x1o")
    >>> y = norm(torch.randn(10, 16, dtype=torch.float64) * 5)
    >>> round(y[:, :4].pow(2).mean().item(), 4), round(y[:, 4:].pow(2).mean().item(), 4)  # unit mean square
    (1.0, 1.0)
    """

    def __init__(self, irreps: IrrepsLike, eps: float = 1e-5) -> None:
        super().__init__()
        self.irreps = Irreps(irreps)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(sum(mul for mul, _ in self.irreps)))
        self.bias = nn.Parameter(torch.zeros(sum(mul for mul, ir in self.irreps if ir == Irrep("0e"))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, w, b = [], 0, 0
        for s, (mul, ir) in zip(self.irreps.slices(), self.irreps):
            block = x[..., s].reshape(*x.shape[:-1], mul, ir.dim)
            scalar = ir == Irrep("0e")
            if scalar:
                block = block - block.mean(dim=-2, keepdim=True)
            rms = (block.pow(2).sum(-1).mean(-1, keepdim=True) / ir.dim + self.eps).rsqrt()
            block = block * (rms * self.weight[w : w + mul])[..., None]
            if scalar:
                block = block + self.bias[b : b + mul, None]
                b += mul
            w += mul
            out.append(block.reshape(*x.shape[:-1], mul * ir.dim))
        return torch.cat(out, dim=-1)

    def extra_repr(self) -> str:
        return f"{self.irreps}, eps={self.eps}"
