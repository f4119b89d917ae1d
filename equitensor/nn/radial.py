"""Radial features of edge lengths: MACE's Bessel basis, polynomial cutoff envelope and radial MLP.

``RadialEmbedding`` returns ``bessel(r) * envelope(r)``, what MACE feeds to the radial MLP that
produces the per-edge tensor-product weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from equitensor.nn.activation import NormalizedActivation


class BesselBasis(nn.Module):
    """``R_n(r) = sqrt(2 / r_max) sin(n pi r / r_max) / r`` for ``n = 1..num_basis`` (MACE, DimeNet).

    Input: lengths of shape (...); output (..., num_basis). Lengths must be positive (edges
    never have zero length). The frequencies ``n pi / r_max`` are fixed, as in MACE's default,
    and made in the input's dtype on every call (so float64 keeps them exact); with
    ``trainable=True`` they are a parameter instead.

    >>> basis = BesselBasis(r_max=5.0, num_basis=8)
    >>> r = torch.tensor([1.0, 2.5], dtype=torch.float64)
    >>> basis(r).shape, torch.allclose(basis(r)[:, 0], math.sqrt(2 / 5) * torch.sin(math.pi * r / 5) / r)
    (torch.Size([2, 8]), True)
    """

    def __init__(self, r_max: float, num_basis: int = 8, trainable: bool = False) -> None:
        super().__init__()
        if r_max <= 0 or num_basis < 1:
            raise ValueError(f"BesselBasis needs r_max > 0 and num_basis >= 1, got {r_max}, {num_basis}")
        self.r_max = float(r_max)
        self.num_basis = int(num_basis)
        self.prefactor = math.sqrt(2.0 / self.r_max)
        if trainable:
            self.frequencies = nn.Parameter(self._fixed_frequencies(torch.get_default_dtype(), None))
        else:
            self.register_parameter("frequencies", None)

    def _fixed_frequencies(self, dtype: torch.dtype, device: torch.device | None) -> torch.Tensor:
        n = torch.arange(1, self.num_basis + 1, dtype=torch.float64, device=device)
        return (n * (math.pi / self.r_max)).to(dtype)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        frequencies = self.frequencies
        if frequencies is None:
            frequencies = self._fixed_frequencies(lengths.dtype, lengths.device)
        r = lengths.unsqueeze(-1)
        return self.prefactor * torch.sin(frequencies * r) / r

    def extra_repr(self) -> str:
        trainable = self.frequencies is not None
        return f"r_max={self.r_max}, num_basis={self.num_basis}, trainable={trainable}"


class PolynomialCutoff(nn.Module):
    """Smooth envelope going from 1 at r=0 to 0 at r_max with p continuous derivatives there.

    ``u(x) = 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)``, ``x = r / r_max``, times
    ``(r < r_max)``. MACE trains with p=5 (its CLI default ``--num_cutoff_basis``).

    >>> PolynomialCutoff(r_max=5.0, p=5)(torch.tensor([0.0, 2.5, 5.0], dtype=torch.float64)).tolist()
    [1.0, 0.7734375, 0.0]
    """

    def __init__(self, r_max: float, p: int = 5) -> None:
        super().__init__()
        if r_max <= 0 or p < 1:
            raise ValueError(f"PolynomialCutoff needs r_max > 0 and p >= 1, got {r_max}, {p}")
        self.r_max = float(r_max)
        self.p = int(p)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        p, x = self.p, lengths / self.r_max
        envelope = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * x**p
            + p * (p + 2.0) * x ** (p + 1)
            - p * (p + 1.0) / 2.0 * x ** (p + 2)
        )
        return envelope * (lengths < self.r_max).to(lengths.dtype)

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, p={self.p}"


class RadialEmbedding(nn.Module):
    """Edge features ``bessel(r) * envelope(r)``, shape (E, num_bessel): MACE's RadialEmbeddingBlock.

    >>> embedding = RadialEmbedding(r_max=5.0, num_bessel=8)
    >>> lengths = torch.tensor([1.0, 2.5, 4.9])
    >>> expected = embedding.bessel(lengths) * embedding.cutoff(lengths)[:, None]
    >>> embedding(lengths).shape, torch.allclose(embedding(lengths), expected)
    (torch.Size([3, 8]), True)
    """

    def __init__(self, r_max: float, num_bessel: int = 8, num_polynomial_cutoff: int = 5) -> None:
        super().__init__()
        self.bessel = BesselBasis(r_max, num_bessel)
        self.cutoff = PolynomialCutoff(r_max, num_polynomial_cutoff)
        self.out_dim = num_bessel

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.bessel(lengths) * self.cutoff(lengths).unsqueeze(-1)


class RadialMLP(nn.Module):
    """MLP without biases, e3nn's ``FullyConnectedNet`` as MACE uses it for the tensor-product weights.

    ``sizes = [in, hidden..., out]``. Each layer is ``x @ W / sqrt(fan_in)`` with ``W ~ N(0, 1)``;
    hidden layers are followed by the activation rescaled to unit second moment
    (:class:`NormalizedActivation`); the last layer has no activation. Weight ``i`` has shape
    ``(sizes[i], sizes[i + 1])`` like e3nn's ``layer{i}.weight``.

    >>> mlp = RadialMLP([8, 64, 64, 16])
    >>> mlp(torch.randn(100, 8)).shape, [tuple(weight.shape) for weight in mlp.weights]
    (torch.Size([100, 16]), [(8, 64), (64, 64), (64, 16)])
    """

    def __init__(self, sizes: Sequence[int], activation: str = "silu") -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"RadialMLP needs at least an input and an output size, all >= 1; got {sizes}")
        self.sizes = sizes
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(h_in, h_out)) for h_in, h_out in zip(sizes, sizes[1:])
        )
        self.activation = NormalizedActivation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the activation's normalization constant is folded into the next (small) weight matrix
        # instead of scaling the (edges, hidden) activations: same function, fewer large ops
        last, scale = len(self.weights) - 1, 1.0
        for i, weight in enumerate(self.weights):
            x = x @ (weight * (scale / math.sqrt(weight.shape[0])))
            if i < last:
                x, scale = self.activation.function(x), self.activation.scale
        return x

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, activation={self.activation.name}"


def cubic_bspline(u: torch.Tensor) -> torch.Tensor:
    """The cardinal cubic B-spline (support [0, 4], C2, sums to 1 over integer shifts)."""
    u1, u2, u3 = u - 1, u - 2, u - 3
    pieces = [
        u**3,
        -3 * u1**3 + 3 * u1**2 + 3 * u1 + 1,
        3 * u2**3 - 6 * u2**2 + 4,
        (1 - u3) ** 3,
    ]
    value = torch.zeros_like(u)
    for k, piece in enumerate(pieces):
        value = torch.where((u >= k) & (u < k + 1), piece, value)
    return value / 6


class SplineRadial(nn.Module):
    """Per-edge weights as learned cubic splines of the edge length (Facet's radial functions):
    ``w_k(r) = envelope(r) sum_b B_b(r) c_bk``, in place of MACE's Bessel basis and radial MLP.

    ``num_basis`` uniform cubic B-splines cover [0, r_max] (C2, so forces and their training
    derivatives are smooth); the polynomial envelope takes every weight to 0 at ``r_max`` with
    ``num_polynomial_cutoff`` continuous derivatives. One learned matrix ``c`` (num_basis, out),
    initialised N(0, 1): evaluation is a (E, num_basis) basis times a small matrix, cheaper than an
    MLP with hidden layers.

    >>> radial = SplineRadial(r_max=5.0, out_features=6, num_basis=10)
    >>> w = radial(torch.tensor([0.5, 2.0, 5.0]))
    >>> w.shape, bool(w[-1].abs().max() == 0)
    (torch.Size([3, 6]), True)
    """

    def __init__(
        self, r_max: float, out_features: int, num_basis: int = 8, num_polynomial_cutoff: int = 5
    ) -> None:
        super().__init__()
        if num_basis < 4 or out_features < 1:
            raise ValueError(
                f"SplineRadial needs num_basis >= 4 and out_features >= 1, got {num_basis}, {out_features}"
            )
        self.r_max, self.num_basis = float(r_max), int(num_basis)
        self.spacing = self.r_max / (self.num_basis - 3)
        self.cutoff = PolynomialCutoff(r_max, num_polynomial_cutoff)
        self.coefficients = nn.Parameter(torch.randn(self.num_basis, int(out_features)))

    def basis(self, lengths: torch.Tensor) -> torch.Tensor:
        """(..., num_basis) B-spline values; knots at ``(b - 3) * spacing``, b = 0..num_basis+3."""
        shifts = torch.arange(self.num_basis, dtype=lengths.dtype, device=lengths.device) - 3
        return cubic_bspline(lengths.unsqueeze(-1) / self.spacing - shifts)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return (self.basis(lengths) * self.cutoff(lengths).unsqueeze(-1)) @ self.coefficients

    def extra_repr(self) -> str:
        return f"r_max={self.r_max}, num_basis={self.num_basis}, out_features={self.coefficients.shape[1]}"
