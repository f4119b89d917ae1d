"""Capability records of the tensor-product backends, and the registry that lists them.

Each backend publishes one :class:`BackendCapabilities`: what it computes, which paths and
weights it can express (a predicate on a spec that returns the reasons it cannot), whether it is
exact, which derivatives, devices and dtypes it supports, and how to build its executor.
:func:`make_executor` refuses a spec the backend cannot compute exactly, naming the paths.

The record's ``builders`` map each operation the backend computes to the function that builds its
executor, so every operation (tensor products, Gaunt products, edge convolutions, the MACE product
basis) is dispatched through this one registry, never by backend name. Adding a backend: define a
record in the backend's own module, call :func:`register_backend` there, and import that module in
``equitensor/tp/backends/__init__.py``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from equitensor.tp.edge_products import through_tensor_product
from equitensor.tp.spec import TensorProductSpec

#: Operations a backend may compute (``BackendCapabilities.operations``).
OPERATIONS = ("tensor_product", "gaunt_product", "edge_convolution", "product_basis")


@dataclass(frozen=True)
class Limitation:
    """Why a backend cannot compute (part of) a spec: the instruction index (None: the whole
    spec) and a sentence a person can act on.

    >>> limitation = Limitation(2, "path 2: mode 'uvw' is not computed")
    >>> limitation.instruction, str(limitation)
    (2, "path 2: mode 'uvw' is not computed")
    """

    instruction: int | None
    reason: str

    def __str__(self) -> str:
        return self.reason


def describe_path(spec: TensorProductSpec, index: int) -> str:
    """``'path 3 (1x1o x 1x1o -> 1x1e, uuu)'``: how limitations name an instruction."""
    ins = spec.instructions[index]
    in1, in2, out = spec.irreps_in1[ins.i_in1], spec.irreps_in2[ins.i_in2], spec.irreps_out[ins.i_out]
    weighted = ", weighted" if ins.has_weight else ""
    return f"path {index} ({in1} x {in2} -> {out}, {ins.connection_mode}{weighted})"


def no_limitations(spec: TensorProductSpec) -> list[Limitation]:
    """The predicate of a backend that expresses every spec."""
    return []


@dataclass(frozen=True)
class BackendCapabilities:
    """What one backend can do; ``limitations(spec)`` is empty iff it computes ``spec`` exactly
    (for an approximate backend: iff it can approximate it).

    ``max_derivative_order`` is None when any order works (plain autograd ops).
    ``builders[operation](spec, **options)`` builds the executor of one operation:
    ``tensor_product``/``gaunt_product``: ``module(x1, x2, weight) -> out`` on flat ``(z, dim)``
    inputs; ``edge_convolution``: ``module(node_feats, edge_vectors, edge_sh, edge_weights,
    edge_index) -> (N, out)`` (see :mod:`equitensor.tp.edge_products`); ``product_basis``: see
    :class:`equitensor.nn.SymmetricContraction`.
    ``available(device)`` returns why the backend cannot run on ``device`` in this environment
    (e.g. CuPy missing), or None; None (the default) means it runs wherever ``devices`` says.
    ``backend="auto"`` consults it.

    >>> cg = backend_capabilities("cg")
    >>> cg.exact, cg.derivatives, cg.devices
    (True, 'any order (autograd)', ('cpu', 'cuda'))
    >>> cg.operations
    ('tensor_product', 'gaunt_product', 'edge_convolution', 'product_basis')
    """

    name: str
    summary: str
    builders: Mapping[str, Callable[..., nn.Module]]
    paths: str
    weights: str
    exact: bool
    error: str
    max_derivative_order: int | None
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    limitations: Callable[[TensorProductSpec], list[Limitation]] = field(default=no_limitations)
    available: Callable[[torch.device], str | None] | None = None

    def __post_init__(self) -> None:
        unknown = [op for op in self.builders if op not in OPERATIONS]
        if unknown:
            raise ValueError(f"backend {self.name!r}: unknown operations {unknown}; known: {OPERATIONS}")

    @property
    def operations(self) -> tuple[str, ...]:
        """The operations this backend computes, in :data:`OPERATIONS` order."""
        return tuple(op for op in OPERATIONS if op in self.builders)

    @property
    def derivatives(self) -> str:
        if self.max_derivative_order is None:
            return "any order (autograd)"
        return f"up to order {self.max_derivative_order}"


_REGISTRY: dict[str, BackendCapabilities] = {}


def register_backend(record: BackendCapabilities, *, replace: bool = False) -> None:
    """Publish a backend's record; ValueError if the name is taken (unless ``replace``).

    >>> cg = backend_capabilities("cg")
    >>> register_backend(cg)
    Traceback (most recent call last):
    ValueError: a backend named 'cg' is already registered
    >>> register_backend(cg, replace=True)  # same record again: the registry is unchanged
    """
    if record.name in _REGISTRY and not replace:
        raise ValueError(f"a backend named {record.name!r} is already registered")
    _REGISTRY[record.name] = record


def backend_capabilities(name: str) -> BackendCapabilities:
    """The record of backend ``name``; ValueError naming the available ones otherwise.

    >>> backend_capabilities("cg").summary
    'Clebsch-Gordan reference in pure PyTorch (sparse real CG tensors)'
    >>> backend_capabilities("so2").operations
    ('edge_convolution',)
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown tensor-product backend {name!r}; available: {', '.join(_REGISTRY)}"
        ) from None


def list_backends() -> list[BackendCapabilities]:
    """Every registered backend's record, in registration order.

    >>> names = [record.name for record in list_backends()]
    >>> names[0], {"cg", "gaunt", "so2", "sparse"} <= set(names)
    ('cg', True)
    """
    return list(_REGISTRY.values())


def backends_for(operation: str) -> tuple[str, ...]:
    """The names of the registered backends that compute ``operation``.

    >>> "sparse" in backends_for("product_basis") and "so2" in backends_for("edge_convolution")
    True
    """
    return tuple(record.name for record in _REGISTRY.values() if operation in record.builders)


def format_table(header: list[str], rows: list[list[str]], width: int = 30) -> str:
    """A plain-text table with aligned columns; cells longer than ``width`` wrap onto more lines."""
    wrapped = [
        [textwrap.wrap(cell, width, break_on_hyphens=False) or [""] for cell in row]
        for row in [header, *rows]
    ]
    widths = [max(len(line) for row in wrapped for line in row[i]) for i in range(len(header))]

    def lines(cells: list[list[str]]) -> list[str]:
        height = max(len(cell) for cell in cells)
        return [
            "  ".join((cell[k] if k < len(cell) else "").ljust(w) for cell, w in zip(cells, widths)).rstrip()
            for k in range(height)
        ]

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([*lines(wrapped[0]), rule, *(line for row in wrapped[1:] for line in lines(row))])


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def backends_table() -> str:
    """The registered backends as a table a person can read (one row per backend).

    >>> table = backends_table()
    >>> table.splitlines()[0].split()
    ['backend', 'computes', 'paths', 'weights', 'exactness', 'derivatives', 'devices', 'dtypes']
    """
    header = ["backend", "computes", "paths", "weights", "exactness", "derivatives", "devices", "dtypes"]
    rows = [
        [
            r.name,
            ", ".join(r.operations),
            r.paths,
            r.weights,
            ("exact: " if r.exact else "approximate: ") + r.error,
            r.derivatives,
            ", ".join(r.devices),
            ", ".join(map(_dtype_name, r.dtypes)),
        ]
        for r in _REGISTRY.values()
    ]
    return format_table(header, rows)


def build_operation(operation: str, backend: str, spec, **options) -> nn.Module:
    """Build ``backend``'s executor of ``operation`` for ``spec``.

    ValueError for an unknown backend, one that does not compute ``operation``, or a spec it
    cannot compute exactly (the message lists every path or weight it cannot express). Never
    falls back to another backend. ``options`` go to the backend's builder.

    >>> from equitensor.tp import FullyConnectedTensorProduct
    >>> spec = FullyConnectedTensorProduct("2x0e + 1x1o", "1o", "3x1o + 0e").spec
    >>> executor = build_operation("tensor_product", "cg", spec)
    >>> executor(torch.randn(4, 5), torch.randn(4, 3), torch.randn(spec.weight_numel)).shape
    torch.Size([4, 10])
    >>> build_operation("tensor_product", "so2", spec)
    Traceback (most recent call last):
    ValueError: backend 'so2' does not compute tensor_product (it computes: edge_convolution)
    """
    record = backend_capabilities(backend)
    if operation not in record.builders:
        raise ValueError(
            f"backend {backend!r} does not compute {operation} (it computes: {', '.join(record.operations)})"
        )
    if isinstance(spec, TensorProductSpec):
        problems = record.limitations(spec)
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems)
            raise ValueError(
                f"backend {backend!r} cannot compute this {operation.replace('_', ' ')} "
                f"({spec.irreps_in1} x {spec.irreps_in2} -> {spec.irreps_out}) exactly:\n{listed}"
            )
    return record.builders[operation](spec, **options)


def make_executor(backend: str, spec: TensorProductSpec, **options) -> nn.Module:
    """Build ``backend``'s tensor-product executor for ``spec`` (see :func:`build_operation`).

    >>> spec = TensorProductSpec.build("1o", "1o", "0e", [(0, 0, 0, "uuu", False)])
    >>> x = torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64)
    >>> make_executor("cg", spec)(x, x, None)  # |x|^2 / sqrt(3), 'component' normalization
    tensor([[5.1962]], dtype=torch.float64)
    """
    return build_operation("tensor_product", backend, spec, **options)


def _build_cg(spec: TensorProductSpec, **options) -> nn.Module:
    if options:
        raise ValueError(f"the 'cg' backend takes no options, got {sorted(options)}")
    from equitensor.tp.backends.cg import CGTensorProduct

    return CGTensorProduct(spec)


def _build_cg_product_basis(spec, **options) -> nn.Module:
    from equitensor.nn.symmetric_contraction import DenseProductBasis

    if options:
        raise ValueError(f"the 'cg' product basis takes no options, got {sorted(options)}")
    return DenseProductBasis(spec)


CG = BackendCapabilities(
    name="cg",
    summary="Clebsch-Gordan reference in pure PyTorch (sparse real CG tensors)",
    builders={
        "tensor_product": _build_cg,
        "gaunt_product": _build_cg,
        "edge_convolution": through_tensor_product("cg", blockwise=True),
        "product_basis": _build_cg_product_basis,
    },
    paths="all parity-allowed paths",
    weights="per path: every e3nn mode, shared or per sample",
    exact=True,
    error="float round-off",
    max_derivative_order=None,
    devices=("cpu", "cuda"),
    dtypes=(torch.float32, torch.float64),
    limitations=no_limitations,
)

register_backend(CG)
