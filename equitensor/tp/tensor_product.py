"""Tensor-product modules with e3nn's interface: instructions, normalization, weight layout."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from math import prod

import torch
from torch import nn

from equitensor.irreps import Irreps, IrrepsLike
from equitensor.tp.backends import make_executor
from equitensor.tp.backends.auto import (
    BackendChoice,
    check_auto_options,
    choose_backend,
    executor_step,
    unresolved,
)
from equitensor.tp.spec import TensorProductSpec, output_mask


def _check_last_dim(name: str, x: torch.Tensor, irreps: Irreps) -> None:
    if x.shape[-1] != irreps.dim:
        raise ValueError(
            f"{name} has last dimension {x.shape[-1]} but {irreps} needs {irreps.dim} "
            f"(shape {tuple(x.shape)})"
        )


class TensorProduct(nn.Module):
    """Bilinear equivariant product ``x1 (x) x2 -> out`` given by e3nn-style instructions.

    Each instruction is ``(i_in1, i_in2, i_out, mode, has_weight[, path_weight])`` with mode in
    ``uvw, uvu, uvv, uuw, uuu, uvuv, uvu<v, u<vw``. With the same weight vector it returns the
    numbers of e3nn's ``o3.TensorProduct`` (same normalization, same weight layout).

    Called as ``tp(x1, x2, weight=None)``; leading dimensions broadcast. ``weight`` has shape
    ``(weight_numel,)`` when ``shared_weights`` and ``(..., weight_numel)`` otherwise.
    ``backend_options`` go to the backend's builder (e.g. ``{"rank": 8, "allow_approximate":
    True}`` for ``cp``). As in e3nn, ``weight`` may also be a list of per-path tensors, ``.weight``
    is an empty tensor when there are no internal weights, ``output_mask`` marks the outputs some
    path writes, and ``right(x2)`` gives the matrix of the map ``x1 -> tp(x1, x2)``. e3nn's
    code-generation switches (``compile_left_right``, ``compile_right``, ``_specialized_code``,
    ``_optimize_einsums``) are accepted and have no effect: nothing is generated, ``right`` always
    works.

    ``backend="auto"`` picks the fastest backend that computes the spec exactly (never an
    approximate one), measured once per spec, dtype and device and cached (see
    :mod:`equitensor.tp.backends.auto`). The choice is an explicit step:
    :func:`equitensor.resolve_backends` on the model (once it is on its device and dtype; under
    ``torch.distributed`` rank 0 chooses for all), or ``device=`` at construction (for the
    default dtype); before it, calling the module raises. Then
    ``self.backend`` is the chosen name and ``self.backend_choice`` says why. ``device`` also
    places the internal weights.

    >>> instructions = [(0, 0, 0, "uvw", True), (1, 0, 1, "uvw", True)]
    >>> tp = TensorProduct("2x0e + 1x1o", "1o", "2x1o + 1x1e", instructions)
    >>> tp
    TensorProduct(2x0e+1x1o x 1x1o -> 2x1o+1x1e | 2 paths | 5 weights | backend=cg)
    >>> tp(torch.randn(10, 5), torch.randn(10, 3)).shape
    torch.Size([10, 9])
    """

    def __init__(
        self,
        irreps_in1: IrrepsLike,
        irreps_in2: IrrepsLike,
        irreps_out: IrrepsLike,
        instructions: Sequence[tuple],
        *,
        in1_var: Sequence[float] | None = None,
        in2_var: Sequence[float] | None = None,
        out_var: Sequence[float] | None = None,
        irrep_normalization: str | None = None,
        path_normalization: str | None = None,
        internal_weights: bool | None = None,
        shared_weights: bool | None = None,
        backend: str = "cg",
        backend_options: dict | None = None,
        device: torch.device | str | None = None,
        compile_left_right: bool = True,
        compile_right: bool = False,
        _specialized_code: bool | None = None,
        _optimize_einsums: bool | None = None,
    ) -> None:
        super().__init__()
        # e3nn's switches, recorded for code that reads them back; nothing depends on them here.
        self._specialized_code = True if _specialized_code is None else _specialized_code
        self._optimize_einsums = True if _optimize_einsums is None else _optimize_einsums
        self.spec = TensorProductSpec.build(
            irreps_in1,
            irreps_in2,
            irreps_out,
            instructions,
            in1_var=in1_var,
            in2_var=in2_var,
            out_var=out_var,
            irrep_normalization=irrep_normalization,
            path_normalization=path_normalization,
        )
        if shared_weights is False and internal_weights is None:
            internal_weights = False
        shared_weights = True if shared_weights is None else shared_weights
        if internal_weights is None:
            internal_weights = shared_weights and any(ins.has_weight for ins in self.instructions)
        if internal_weights and not shared_weights:
            raise ValueError("internal_weights=True requires shared_weights=True")
        self.shared_weights = shared_weights
        self.internal_weights = internal_weights
        self.backend = backend
        self.backend_choice = None
        if backend == "auto":
            check_auto_options(type(self).__name__, backend_options or {})
            self.executor = None  # chosen by resolve_backends, or now for the given device
            if device is not None:
                self.resolve_backend(torch.device(device), torch.get_default_dtype())
        else:
            self.executor = make_executor(backend, self.spec, **(backend_options or {}))
        if internal_weights and self.weight_numel > 0:
            self.weight = nn.Parameter(torch.randn(self.weight_numel, device=device))
        else:
            self.register_buffer("weight", torch.empty(0, device=device), persistent=False)
        mask = output_mask(self.irreps_out, self.spec.instructions).to(device)
        self.register_buffer("output_mask", mask, persistent=False)

    irreps_in1 = property(lambda self: self.spec.irreps_in1)
    irreps_in2 = property(lambda self: self.spec.irreps_in2)
    irreps_out = property(lambda self: self.spec.irreps_out)
    instructions = property(lambda self: list(self.spec.instructions))
    weight_numel = property(lambda self: self.spec.weight_numel)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.irreps_in1} x {self.irreps_in2} -> {self.irreps_out} | "
            f"{len(self.spec.instructions)} paths | {self.weight_numel} weights | backend={self.backend})"
        )

    def resolve_backend(self, device: torch.device, dtype: torch.dtype) -> BackendChoice:
        """Choose ``backend="auto"``'s backend for ``device`` and ``dtype`` and build it (see
        :func:`equitensor.resolve_backends`)."""
        shared = self.shared_weights

        def step(name, device, dtype):
            return executor_step(self.spec, name, device, dtype, shared_weights=shared)

        choice = choose_backend(
            "tensor_product", self.spec, device, dtype, step, context=f"shared_weights={shared}"
        )
        self.use_backend(choice)
        return choice

    def use_backend(self, choice: BackendChoice) -> None:
        """Build the backend ``choice`` names (a choice made elsewhere, e.g. by rank 0)."""
        self.executor = make_executor(choice.backend, self.spec)
        self.backend, self.backend_choice = choice.backend, choice

    def _weight(self, weight: torch.Tensor | Sequence[torch.Tensor] | None) -> torch.Tensor | None:
        if weight is None:
            if self.weight_numel == 0:
                return None
            if not self.internal_weights:
                raise ValueError(
                    f"this TensorProduct has no internal weights: pass weight of shape "
                    f"{'(' if self.shared_weights else '(..., '}{self.weight_numel},)"
                )
            return self.weight
        if isinstance(weight, (list, tuple)):
            weight = self._concatenate(weight)
        if self.shared_weights and weight.shape != (self.weight_numel,):
            raise ValueError(f"weight must have shape ({self.weight_numel},), got {tuple(weight.shape)}")
        if not self.shared_weights and (weight.dim() < 1 or weight.shape[-1] != self.weight_numel):
            raise ValueError(f"weight must have shape (..., {self.weight_numel}), got {tuple(weight.shape)}")
        return weight

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        _check_last_dim("x1", x1, self.irreps_in1)
        _check_last_dim("x2", x2, self.irreps_in2)
        weight = self._weight(weight)
        if self.executor is None:
            raise unresolved(self)
        per_sample = weight is not None and not self.shared_weights
        leading = [x1.shape[:-1], x2.shape[:-1]] + ([weight.shape[:-1]] if per_sample else [])
        batch = torch.broadcast_shapes(*leading)
        z = prod(batch)
        x1 = x1.expand(batch + x1.shape[-1:]).reshape(z, x1.shape[-1])
        x2 = x2.expand(batch + x2.shape[-1:]).reshape(z, x2.shape[-1])
        if per_sample:
            weight = weight.expand(batch + weight.shape[-1:]).reshape(z, weight.shape[-1])
        out = self.executor(x1, x2, weight)
        return out.reshape(batch + (self.irreps_out.dim,))

    def _concatenate(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """One flat weight tensor from one tensor per weighted path (e3nn's list form)."""
        weighted = [ins for ins in self.spec.instructions if ins.has_weight]
        if len(weights) != len(weighted):
            raise ValueError(
                f"weight is a list of {len(weights)} tensors; this product has {len(weighted)} weighted paths"
            )
        leads = []
        for ins, w in zip(weighted, weights):
            leads.append(w.shape[: w.dim() - len(ins.path_shape)])
            if w.shape[len(leads[-1]) :] != ins.path_shape:
                raise ValueError(
                    f"a path's weight must have shape (..., *{ins.path_shape}), got {tuple(w.shape)}"
                )
        lead = torch.broadcast_shapes(*leads)
        return torch.cat(
            [
                w.expand(lead + ins.path_shape).reshape(lead + (ins.weight_numel,))
                for ins, w in zip(weighted, weights)
            ],
            dim=-1,
        )

    def weight_view_for_instruction(
        self, instruction: int, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The ``(..., *path_shape)`` view of path ``instruction``'s weights inside ``weight``
        (default: the module's own); writing into it changes the weights."""
        ins = self.spec.instructions[instruction]
        if not ins.has_weight:
            raise ValueError(f"instruction {instruction} ({ins.connection_mode}) has no weights")
        weight = self._weight(weight)
        offset = sum(i.weight_numel for i in self.spec.instructions[:instruction])
        return weight.narrow(-1, offset, ins.weight_numel).view(weight.shape[:-1] + ins.path_shape)

    def weight_views(self, weight: torch.Tensor | None = None, yield_instruction: bool = False) -> Iterator:
        """The weight view of every weighted path, in order (as e3nn: ``(index, instruction,
        view)`` triples with ``yield_instruction=True``)."""
        for index, ins in enumerate(self.spec.instructions):
            if ins.has_weight:
                view = self.weight_view_for_instruction(index, weight)
                yield (index, ins, view) if yield_instruction else view

    def right(self, x2: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The matrix ``(..., irreps_in1.dim, irreps_out.dim)`` of the linear map
        ``x1 -> tp(x1, x2, weight)``: ``tp(x1, x2) == x1 @ tp.right(x2)`` (the product is linear
        in x1, so row i is the product of the i-th basis vector with x2).

        >>> import torch
        >>> tp = FullyConnectedTensorProduct("2x1o", "1o", "0e + 1e")
        >>> x1, x2 = torch.randn(4, 6), torch.randn(4, 3)
        >>> torch.allclose(tp(x1, x2), torch.einsum("zi,zij->zj", x1, tp.right(x2)), atol=1e-6)
        True
        """
        _check_last_dim("x2", x2, self.irreps_in2)
        weight = self._weight(weight)
        if weight is not None and not self.shared_weights:
            weight = weight[..., None, :]
        basis = torch.eye(self.irreps_in1.dim, dtype=x2.dtype, device=x2.device)
        return self(basis, x2[..., None, :], weight)


def _filter(filter_ir_out):
    if filter_ir_out is None:
        return None
    from equitensor.irreps import Irrep

    return [Irrep(ir) for ir in filter_ir_out]


class FullyConnectedTensorProduct(TensorProduct):
    """All paths ``(i1, i2) -> i_out`` allowed by the selection rules, mode ``uvw``, weighted.

    >>> from equitensor.testing import assert_equivariant
    >>> tp = FullyConnectedTensorProduct("2x0e + 1x1o", "1o", "3x1o + 0e")
    >>> tp.weight_numel, tp(torch.randn(4, 5), torch.randn(4, 3)).shape
    (7, torch.Size([4, 10]))
    >>> errors = assert_equivariant(tp, [tp.irreps_in1, tp.irreps_in2], tp.irreps_out)  # raises if not
    """

    def __init__(
        self, irreps_in1: IrrepsLike, irreps_in2: IrrepsLike, irreps_out: IrrepsLike, **kwargs
    ) -> None:
        irreps_in1, irreps_in2, irreps_out = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
        instructions = [
            (i1, i2, io, "uvw", True, 1.0)
            for i1, (_, ir1) in enumerate(irreps_in1)
            for i2, (_, ir2) in enumerate(irreps_in2)
            for io, (_, ir_out) in enumerate(irreps_out)
            if ir_out in ir1 * ir2
        ]
        super().__init__(irreps_in1, irreps_in2, irreps_out, instructions, **kwargs)


class FullTensorProduct(TensorProduct):
    """Every product ``x1_u (x) x2_v`` (mode ``uvuv``), no weights; outputs sorted like e3nn.

    >>> tp = FullTensorProduct("2x1o", "1o")
    >>> tp.irreps_out, tp.weight_numel
    (2x0e+2x1e+2x2e, 0)
    >>> tp(torch.randn(4, 6), torch.randn(4, 3)).shape
    torch.Size([4, 18])
    """

    def __init__(self, irreps_in1: IrrepsLike, irreps_in2: IrrepsLike, filter_ir_out=None, **kwargs) -> None:
        irreps_in1, irreps_in2 = Irreps(irreps_in1).simplify(), Irreps(irreps_in2).simplify()
        keep = _filter(filter_ir_out)
        out, instructions = [], []
        for i1, (mul1, ir1) in enumerate(irreps_in1):
            for i2, (mul2, ir2) in enumerate(irreps_in2):
                for ir_out in ir1 * ir2:
                    if keep is not None and ir_out not in keep:
                        continue
                    instructions.append((i1, i2, len(out), "uvuv", False))
                    out.append((mul1 * mul2, ir_out))
        irreps_out, p, _ = Irreps(out).sort()
        instructions = [(i1, i2, p[io], mode, w) for i1, i2, io, mode, w in instructions]
        super().__init__(irreps_in1, irreps_in2, irreps_out, instructions, **kwargs)


class ElementwiseTensorProduct(TensorProduct):
    """Channel-by-channel products ``x1_u (x) x2_u`` (mode ``uuu``), no weights.

    >>> tp = ElementwiseTensorProduct("2x1o", "2x1o", filter_ir_out=["0e"])
    >>> x, y = torch.randn(2, 6, dtype=torch.float64)
    >>> tp.irreps_out, torch.allclose(tp(x, y), (x.view(2, 3) * y.view(2, 3)).sum(-1) / 3**0.5)
    (2x0e, True)
    """

    def __init__(self, irreps_in1: IrrepsLike, irreps_in2: IrrepsLike, filter_ir_out=None, **kwargs) -> None:
        irreps_in1, irreps_in2 = Irreps(irreps_in1).simplify(), Irreps(irreps_in2).simplify()
        if irreps_in1.num_irreps != irreps_in2.num_irreps:
            raise ValueError(
                f"{irreps_in1} and {irreps_in2} must have the same number of irreps "
                f"({irreps_in1.num_irreps} != {irreps_in2.num_irreps})"
            )
        irreps_in1, irreps_in2 = _split_to_match(irreps_in1, irreps_in2)
        keep = _filter(filter_ir_out)
        out, instructions = [], []
        for i, ((mul, ir1), (_, ir2)) in enumerate(zip(irreps_in1, irreps_in2)):
            for ir_out in ir1 * ir2:
                if keep is not None and ir_out not in keep:
                    continue
                instructions.append((i, i, len(out), "uuu", False))
                out.append((mul, ir_out))
        super().__init__(irreps_in1, irreps_in2, out, instructions, **kwargs)


def _split_to_match(irreps1: Irreps, irreps2: Irreps) -> tuple[Irreps, Irreps]:
    """Split blocks so both irreps have the same multiplicity block by block."""
    a, b = list(irreps1), list(irreps2)
    i = 0
    while i < len(a):
        (mul1, ir1), (mul2, ir2) = a[i], b[i]
        if mul1 < mul2:
            b[i] = (mul1, ir2)
            b.insert(i + 1, (mul2 - mul1, ir2))
        elif mul2 < mul1:
            a[i] = (mul2, ir1)
            a.insert(i + 1, (mul1 - mul2, ir1))
        i += 1
    return Irreps(a), Irreps(b)
