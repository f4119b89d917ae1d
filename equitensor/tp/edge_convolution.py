"""The edge convolution: node features x spherical harmonics of the edge, gathered and scattered.

This is the hot path of MACE/NequIP-style interactions, so it is a first-class module whose
backend is a choice. The product is the channel-wise ('uvu') tensor product with per-edge
weights (one per path and channel), as in MACE's ``conv_tp``.

Backends: ``cg`` (the reference TensorProduct on the spherical harmonics) and ``so2`` (the same
numbers computed in the edge frame from the edge vectors, see ``equitensor.tp.backends.so2``;
same weights, same layout). ``mmax`` (so2 only) truncates to |m| <= mmax in the edge frame: still
equivariant, but an approximation of the cg product unless mmax >= every path's min(l1, l_out).
``cp`` (CP-decomposed CG tensors, ``equitensor.tp.backends.cp``) takes ``rank=`` and, below the
exact rank, ``allow_approximate=True``; other keyword options go to the backend's builder.
``auto`` measures the exact ones once and keeps the fastest (see ``EdgeConvolution``).
``sparse`` fuses gather, product and sum in one compiled C++ pass over the edges and the non-zero
CG coefficients (CPU; one multiplicity for all node blocks, see ``equitensor.tp.backends.sparse``).
``cuda`` fuses gather, product and sum in one generated CUDA kernel (``equitensor.kernels``;
CUDA tensors only, needs CuPy); option ``deterministic=True`` sums without atomics.
``gaunt`` (2D FFT) and ``grid`` (S2 quadrature) compute the product pointwise on the sphere, exactly
and with the same weights, but only for specs in the edge form of
:mod:`equitensor.tp.backends.gaunt_edge` (every path even, one path per output degree, every even
coupling of the used degrees a path: e.g. ``Cx0e x SH``); other specs are refused, path by path.
"""

from __future__ import annotations

import torch
from torch import nn

from equitensor.irreps import Irreps, IrrepsLike
from equitensor.o3 import spherical_harmonics
from equitensor.tp.backends.auto import (
    BackendChoice,
    check_auto_options,
    choose_backend,
    edge_convolution_step,
    unresolved,
)
from equitensor.tp.backends.capabilities import build_operation
from equitensor.tp.spec import TensorProductSpec


def edge_product_irreps(
    irreps_node: IrrepsLike, irreps_sh: IrrepsLike, irreps_target: IrrepsLike | None = None
) -> tuple[Irreps, list[tuple]]:
    """Output irreps and 'uvu' instructions of every node x SH path, kept if in ``irreps_target``.

    The output holds one block per path (not simplified), sorted in e3nn's order, exactly as
    MACE's ``tp_out_irreps_with_instructions``.

    >>> irreps_out, instructions = edge_product_irreps("2x0e + 2x1o", "0e + 1o", "0e + 1o")
    >>> irreps_out, instructions[:2]
    (2x0e+2x0e+2x1o+2x1o, [(0, 0, 0, 'uvu', True), (0, 1, 2, 'uvu', True)])
    """
    irreps_node, irreps_sh = Irreps(irreps_node), Irreps(irreps_sh)
    allowed = None if irreps_target is None else {ir for _, ir in Irreps(irreps_target)}
    out, instructions = [], []
    for i1, (mul, ir1) in enumerate(irreps_node):
        for i2, (_, ir2) in enumerate(irreps_sh):
            for ir_out in ir1 * ir2:
                if allowed is None or ir_out in allowed:
                    instructions.append((i1, i2, len(out), "uvu", True))
                    out.append((mul, ir_out))
    irreps_out, perm, _ = Irreps(out).sort()
    return irreps_out, [(i1, i2, perm[io], mode, w) for i1, i2, io, mode, w in instructions]


class EdgeConvolution(nn.Module):
    """``out[i] = sum_{edges j->i} TP_uvu(x[j], Y(r_ij), w_ij)`` for every receiver i.

    Spherical harmonics use e3nn's 'component' normalization of the normalized edge vector,
    like MACE. Call as ``conv(node_feats, edge_vectors, edge_weights, edge_index)`` with
    ``edge_index[0]`` the senders and ``edge_index[1]`` the receivers; ``edge_weights`` has
    shape (E, weight_numel).

    ``backend`` is any registered backend that computes ``edge_convolution`` (the registry builds
    ``self.product``; ``equitensor.tp.backends.backends_for("edge_convolution")`` lists them).
    ``backend="auto"`` picks the fastest registered one that computes the product
    exactly on the device (never ``cp``, never ``cuda`` on CPU tensors or without CuPy and a
    GPU), measured once per product, dtype and device on a random graph and cached (see
    :mod:`equitensor.tp.backends.auto`). The choice is an explicit step:
    :func:`equitensor.resolve_backends` on the model (once it is on its device and dtype; under
    ``torch.distributed`` rank 0 chooses for all), or ``device=`` at construction (for the
    default dtype); before it, calling the module raises. Then
    ``self.backend`` is the chosen name and ``self.backend_choice`` says why.

    >>> conv = EdgeConvolution("4x0e + 4x1o", "0e + 1o + 2e", "4x0e + 4x1o")
    >>> nodes, vectors = torch.randn(3, 16, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    >>> weights = torch.randn(4, conv.weight_numel, dtype=torch.float64)
    >>> edge_index = torch.tensor([[0, 1, 2, 0], [1, 2, 0, 2]])  # senders, receivers
    >>> so2 = EdgeConvolution("4x0e + 4x1o", "0e + 1o + 2e", "4x0e + 4x1o", backend="so2")
    >>> out = conv(nodes, vectors, weights, edge_index)
    >>> out.shape, torch.allclose(so2(nodes, vectors, weights, edge_index), out)
    (torch.Size([3, 44]), True)
    """

    def __init__(
        self,
        irreps_node: IrrepsLike,
        irreps_sh: IrrepsLike,
        irreps_target: IrrepsLike | None = None,
        *,
        backend: str = "cg",
        mmax: int | None = None,
        device: torch.device | str | None = None,
        **backend_options,
    ) -> None:
        super().__init__()
        if mmax is not None:
            backend_options["mmax"] = mmax
        self.backend = backend
        self.mmax = mmax
        self.irreps_node = Irreps(irreps_node)
        self.irreps_sh = Irreps(irreps_sh)
        self.irreps_out, instructions = edge_product_irreps(self.irreps_node, self.irreps_sh, irreps_target)
        self.spec = TensorProductSpec.build(self.irreps_node, self.irreps_sh, self.irreps_out, instructions)
        self.backend_choice = None
        if backend == "auto":
            check_auto_options("EdgeConvolution", backend_options)
            self.product = None  # chosen by resolve_backends, or now for the given device
            if device is not None:
                self.resolve_backend(torch.device(device), torch.get_default_dtype())
        else:
            self.product = build_operation("edge_convolution", backend, self.spec, **backend_options)

    @property
    def weight_numel(self) -> int:
        return self.spec.weight_numel

    @property
    def uses_sh(self) -> bool:
        """Whether the backend takes the edges' spherical harmonics (so a model computes them once
        for all its layers); so2 works from the edge vectors, an unresolved ``auto`` says False."""
        return self.product is not None and self.product.uses_sh

    def _with_backend(self, backend: str) -> EdgeConvolution:
        return EdgeConvolution(self.irreps_node, self.irreps_sh, self.irreps_out, backend=backend)

    def resolve_backend(self, device: torch.device, dtype: torch.dtype) -> BackendChoice:
        """Choose ``backend="auto"``'s backend for ``device`` and ``dtype`` and build it (see
        :func:`equitensor.resolve_backends`)."""
        choice = choose_backend(
            "edge_convolution",
            self.spec,
            device,
            dtype,
            lambda name, device, dtype: edge_convolution_step(self._with_backend(name), device, dtype),
        )
        self.use_backend(choice)
        return choice

    def use_backend(self, choice: BackendChoice) -> None:
        """Build the backend ``choice`` names (a choice made elsewhere, e.g. by rank 0)."""
        self.product = build_operation("edge_convolution", choice.backend, self.spec)
        self.backend, self.backend_choice = choice.backend, choice

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_vectors: torch.Tensor,
        edge_weights: torch.Tensor,
        edge_index: torch.Tensor,
        edge_sh: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``edge_sh``: the edges' :meth:`edge_spherical_harmonics`, when already computed (a model
        whose layers share the edges computes them once); ignored by ``so2``, which uses the vectors."""
        expected = (edge_vectors.shape[0], self.weight_numel)
        if edge_weights.shape != expected or node_feats.shape[-1:] != (self.irreps_node.dim,):
            raise ValueError(
                f"EdgeConvolution takes node_feats (N, {self.irreps_node.dim}) and edge_weights "
                f"{expected} for {edge_vectors.shape[0]} edges, got {tuple(node_feats.shape)} and "
                f"{tuple(edge_weights.shape)}"
            )
        if self.product is None:
            raise unresolved(self)
        if edge_sh is None and self.product.uses_sh:
            edge_sh = self.edge_spherical_harmonics(edge_vectors)
        return self.product(node_feats, edge_vectors, edge_sh, edge_weights, edge_index)

    def edge_spherical_harmonics(self, edge_vectors: torch.Tensor) -> torch.Tensor:
        """The SH of the edge directions this product uses: ``irreps_sh``, 'component'
        normalization, of the normalized vectors (MACE's convention). (E, irreps_sh.dim)."""
        return spherical_harmonics(self.irreps_sh, edge_vectors, normalize=True, normalization="component")

    def extra_repr(self) -> str:
        mmax = "" if self.mmax is None else f", mmax={self.mmax}"
        return f"{self.irreps_node} x {self.irreps_sh} -> {self.irreps_out}, backend={self.backend!r}{mmax}"
