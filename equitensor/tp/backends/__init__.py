"""Tensor-product backends: each turns a :class:`~equitensor.tp.spec.TensorProductSpec` into an
executable module and publishes a capability record (see :mod:`.capabilities`).

``cg`` is the exact reference for every path; ``gaunt`` (2D Fourier/FFT) and ``grid`` (S2
quadrature) compute Gaunt products (even paths, weights per degree) and the edge convolutions
that are Gaunt products (:mod:`.gaunt_edge`). ``list_backends()`` and
``backends_table()`` show what each can do; ``make_executor`` refuses what a backend cannot
compute exactly. A new backend registers its record when its module is imported below.
"""

from __future__ import annotations

from equitensor.tp.backends import cp, cuda, gaunt, grid, so2, sparse  # noqa: F401  (register their records)
from equitensor.tp.backends.capabilities import (
    BackendCapabilities,
    Limitation,
    backend_capabilities,
    backends_for,
    backends_table,
    build_operation,
    list_backends,
    make_executor,
    register_backend,
)

__all__ = [
    "BackendCapabilities",
    "Limitation",
    "backend_capabilities",
    "backends_for",
    "backends_table",
    "build_operation",
    "list_backends",
    "make_executor",
    "register_backend",
]
