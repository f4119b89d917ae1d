"""GauntProduct: the pointwise product on the sphere of two spherical signals, with learnable
per-degree weights, on an interchangeable backend (``cg``, ``gaunt`` or ``grid``).

Convention. A spherical signal with C channels and degrees <= L has irreps
``Cx0e + Cx1o + Cx2e + Cx3o + ...``: the degree-l block has parity (-1)^l, like the spherical
harmonics of a vector (``f(-r)`` picks up ``(-1)^l`` per degree), in e3nn's ``mul_ir`` layout.
Channel c of the output is the product of channel c of both inputs ('uuu'-like).

With 'component' normalization (the default, e3nn's feature convention) the signal is
``f(r) = sum_lm x_lm Y_lm(r)`` with harmonics of norm ``sqrt(2l+1)`` (``Y_00 = 1``), and the
output holds the coefficients of ``f1 f2`` projected onto degrees <= ``lmax_out`` in the same
basis; so scalars multiply exactly (``0e x 0e -> 0e`` is ``x1 x2``). With 'integral'
(orthonormal harmonics) the output is ``sum G x1 x2`` with the Gaunt tensor G.

Weights: ``weight_in1[c, l1]``, ``weight_in2[c, l2]`` and ``weight_out[c, l3]`` (initialised to 1)
rescale each degree of each channel, so path (l1, l2, l3) of channel c is weighted by
``w1 w2 w3 G``: rank one per path, the most a Gaunt product can express. The paths with
l1+l2+l3 odd (e.g. the cross product 1o x 1o -> 1e) do not exist in this product.
"""

from __future__ import annotations

import math
from math import prod

import torch
from torch import nn

from equitensor.tp.backends import backend_capabilities, make_executor
from equitensor.tp.backends.auto import (
    BackendChoice,
    check_auto_options,
    choose_backend,
    executor_step,
    unresolved,
)
from equitensor.tp.backends.spherical_signal import gaunt_spec, spherical_irreps

NORMALIZATIONS = ("component", "integral")

__all__ = ["GauntProduct", "gaunt_spec", "spherical_irreps"]


def _per_component(weight: torch.Tensor, lmax: int) -> torch.Tensor:
    """(C, lmax+1) per-degree weights -> (C * (lmax+1)^2,) in the mul_ir layout of the signal."""
    return torch.cat([weight[:, l, None].expand(-1, 2 * l + 1).reshape(-1) for l in range(lmax + 1)])


class GauntProduct(nn.Module):
    """``out = w_out * Proj_{<= lmax_out}((w1 * x1) . (w2 * x2))`` channel by channel on the sphere.

    Called as ``gp(x1, x2)`` with ``x1 (..., irreps_in1.dim)`` and ``x2 (..., irreps_in2.dim)``;
    leading dimensions broadcast. ``backend``: 'cg' (reference), 'gaunt' (2D FFT) or 'grid' (S2
    quadrature); ``backend_options`` go to the backend (for 'grid': ``resolution=(n_theta,
    n_phi)`` and ``allow_approximate=True`` for a grid coarser than the exact one).
    ``weights=False`` gives the plain product without parameters.

    ``backend="auto"`` picks the fastest of the exact backends (measured once per size, dtype and
    device, cached; see :mod:`equitensor.tp.backends.auto`). The choice is an explicit step:
    :func:`equitensor.resolve_backends` on the model (once it is on its device and dtype; under
    ``torch.distributed`` rank 0 chooses for all), or ``device=`` at construction (for the
    default dtype); before it, calling the module raises. Then
    ``self.backend`` is the chosen name and ``self.backend_choice`` says why. ``device`` also
    places the weights.

    >>> gp = GauntProduct(4, lmax1=2, lmax2=2, lmax_out=2)
    >>> gp.irreps_in1, gp(torch.randn(10, 36), torch.randn(10, 36)).shape
    (4x0e+4x1o+4x2e, torch.Size([10, 36]))
    >>> scalars = GauntProduct(1, 0, 0, 0, weights=False)  # scalars multiply exactly
    >>> round(scalars(torch.tensor([2.0]), torch.tensor([3.0])).item(), 5)
    6.0
    """

    def __init__(
        self,
        channels: int,
        lmax1: int,
        lmax2: int,
        lmax_out: int,
        *,
        backend: str = "gaunt",
        normalization: str = "component",
        weights: bool = True,
        device: torch.device | str | None = None,
        **backend_options,
    ) -> None:
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        record = backend_capabilities("cg" if backend == "auto" else backend)
        if "gaunt_product" not in record.operations:
            raise ValueError(
                f"backend {backend!r} does not compute Gaunt products "
                f"(it computes: {', '.join(record.operations)})"
            )
        self.channels, self.lmax1, self.lmax2, self.lmax_out = channels, lmax1, lmax2, lmax_out
        self.backend, self.normalization = backend, normalization
        self.irreps_in1 = spherical_irreps(channels, lmax1)
        self.irreps_in2 = spherical_irreps(channels, lmax2)
        self.irreps_out = spherical_irreps(channels, lmax_out)
        # component harmonics are sqrt(4 pi) x orthonormal ones: f1 f2 gains 4 pi, z loses sqrt(4 pi)
        scale = math.sqrt(4 * math.pi) if normalization == "component" else 1.0
        self.spec = gaunt_spec(channels, lmax1, lmax2, lmax_out, scale)
        self.backend_choice = None
        if backend == "auto":
            check_auto_options(type(self).__name__, backend_options)
            self.executor = None  # chosen by resolve_backends, or now for the given device
            if device is not None:
                self.resolve_backend(torch.device(device), torch.get_default_dtype())
        else:
            self.executor = make_executor(backend, self.spec, **backend_options)
        if weights:
            self.weight_in1 = nn.Parameter(torch.ones(channels, lmax1 + 1, device=device))
            self.weight_in2 = nn.Parameter(torch.ones(channels, lmax2 + 1, device=device))
            self.weight_out = nn.Parameter(torch.ones(channels, lmax_out + 1, device=device))
        else:
            self.register_parameter("weight_in1", None)
            self.register_parameter("weight_in2", None)
            self.register_parameter("weight_out", None)

    @property
    def exact(self) -> bool:
        """False only for an opt-in approximate backend configuration (a coarse grid)."""
        return bool(getattr(getattr(self.executor, "kernel", None), "exact", True))

    @property
    def approximation_error(self) -> float:
        """Relative error of the coupling coefficients (0 for an exact configuration)."""
        kernel = getattr(self.executor, "kernel", None)
        return float(getattr(kernel, "approximation_error", 0.0))

    def resolve_backend(self, device: torch.device, dtype: torch.dtype) -> BackendChoice:
        """Choose ``backend="auto"``'s backend for ``device`` and ``dtype`` and build it (see
        :func:`equitensor.resolve_backends`)."""
        choice = choose_backend(
            "gaunt_product",
            self.spec,
            device,
            dtype,
            lambda name, device, dtype: executor_step(self.spec, name, device, dtype),
        )
        self.use_backend(choice)
        return choice

    def use_backend(self, choice: BackendChoice) -> None:
        """Build the backend ``choice`` names (a choice made elsewhere, e.g. by rank 0)."""
        self.executor = make_executor(choice.backend, self.spec)
        self.backend, self.backend_choice = choice.backend, choice

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        for name, x, irreps in (("x1", x1, self.irreps_in1), ("x2", x2, self.irreps_in2)):
            if x.shape[-1] != irreps.dim:
                raise ValueError(
                    f"{name} has last dimension {x.shape[-1]} but {irreps} needs {irreps.dim} "
                    f"(shape {tuple(x.shape)})"
                )
        if self.executor is None:
            raise unresolved(self)
        batch = torch.broadcast_shapes(x1.shape[:-1], x2.shape[:-1])
        z = prod(batch)
        x1 = x1.expand(batch + x1.shape[-1:]).reshape(z, x1.shape[-1])
        x2 = x2.expand(batch + x2.shape[-1:]).reshape(z, x2.shape[-1])
        if self.weight_in1 is not None:
            x1 = x1 * _per_component(self.weight_in1, self.lmax1).to(x1.dtype)
            x2 = x2 * _per_component(self.weight_in2, self.lmax2).to(x2.dtype)
        out = self.executor(x1, x2, None)
        if self.weight_out is not None:
            out = out * _per_component(self.weight_out, self.lmax_out).to(out.dtype)
        return out.reshape(batch + (self.irreps_out.dim,))

    def extra_repr(self) -> str:
        approx = "" if self.exact else f", approximate (coupling error {self.approximation_error:.2g})"
        return (
            f"{self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out}, backend={self.backend!r}, "
            f"normalization={self.normalization!r}{approx}"
        )
