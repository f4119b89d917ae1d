"""What the library needs to know about devices and tracing: which tensors hold values, caches
of constants that a ``torch.compile`` / ``torch.export`` trace cannot pollute, and float64 tables
that follow the module's device but keep their dtype.

Data-dependent input checks (an unknown element, a zero-length edge) read tensor values, which a
tensor on the ``meta`` device (or a fake tensor while ``torch.export`` traces) does not hold.
:func:`has_values` says whether they can run; they are skipped on ``meta`` so that a whole model
can run there, shapes only, to prove that every tensor
the library creates follows its inputs' device (``tests/test_meta_device.py``, with
:func:`equitensor.testing.single_device`). On a GPU such a check costs one synchronisation.

Example::

    >>> import torch
    >>> has_values(torch.zeros(2)), has_values(torch.zeros(2, device="meta"))
    (True, False)
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")

_capturing = contextvars.ContextVar("equitensor_capturing_graph", default=False)


@contextlib.contextmanager
def capturing_graph() -> Iterator[None]:
    """Mark a graph capture that ``torch.compiler`` does not announce (``make_fx``, which
    :mod:`equitensor.export` uses to unfold the forces' autograd into the graph): inside it
    :func:`is_tracing` is True.

    >>> with capturing_graph():
    ...     is_tracing()
    True
    """
    token = _capturing.set(True)
    try:
        yield
    finally:
        _capturing.reset(token)


def is_tracing() -> bool:
    """Whether tensors are being traced into a graph (``torch.compile``, ``torch.export`` or
    :func:`capturing_graph`): their values are symbols, and nothing made from them may be kept.

    >>> is_tracing()
    False
    """
    return torch.compiler.is_compiling() or _capturing.get()


def has_values(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds values that a check can read: False on the ``meta`` device and
    while ``torch.export`` traces (a check there would be a data-dependent branch in the exported
    graph: validate the inputs before calling an exported model). ``torch.compile`` still checks
    (a graph break).

    >>> has_values(torch.zeros(2)), has_values(torch.zeros(2, device="meta"))
    (True, False)
    """
    return not (tensor.is_meta or torch.compiler.is_exporting() or _capturing.get())


def cached(cache: dict, key, build: Callable[[], T]) -> T:
    """``cache[key]``, made by ``build()`` on a miss. Nothing is stored while ``torch.compile`` or
    ``torch.export`` trace: a tensor made there stands for a value of the traced graph, and a later
    eager call reading it would compute wrong numbers (seen: an exported MACE's eager energy 0).

    Example::

        >>> store = {}
        >>> cached(store, ("ones", 2), lambda: torch.ones(2)), list(store)
        (tensor([1., 1.]), [('ones', 2)])
    """
    hit = cache.get(key)
    if hit is None:
        hit = build()
        if not is_tracing():
            cache[key] = hit
    return hit


def cache_unless_tracing(function: Callable[..., T]) -> Callable[..., T]:
    """``functools.cache`` for functions that build tensors, through :func:`cached`.

    >>> calls = []
    >>> @cache_unless_tracing
    ... def table(n):
    ...     calls.append(n)
    ...     return torch.arange(n)
    >>> table(3), table(3), calls  # built once
    (tensor([0, 1, 2]), tensor([0, 1, 2]), [3])
    """
    store: dict = {}

    @functools.wraps(function)
    def wrapper(*args):
        return cached(store, args, lambda: function(*args))

    wrapper.cache_clear = store.clear
    return wrapper


class Float64Constant:
    """A float64 table of a module (coefficients a kernel reads in float64 whatever the module's
    dtype) that follows ``.to(device)`` and keeps its exact values under ``.to(dtype)``,
    ``.float()`` and ``.double()``, so that a module moved to float32 and back loses nothing.

    ``nn.Module.to`` casts floating-point tensors only, so the table is registered as a
    non-persistent buffer ``_<name>_bits`` holding its int64 bit pattern, and read back as a
    float64 view (no copy; ``torch.export`` and ``torch.compile`` trace the view). Public
    ``nn.Module`` behaviour only: no override of ``_apply``.

    Example::

        >>> class Table(nn.Module):
        ...     coefficients = Float64Constant()
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.coefficients = torch.tensor([1 / 3], dtype=torch.float64)
        >>> table = Table().float().double()
        >>> table.coefficients.dtype, table.coefficients.item() == 1 / 3
        (torch.float64, True)
        >>> Table().to("meta").coefficients.device
        device(type='meta')
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.buffer = f"_{name}_bits"

    def __get__(self, module: nn.Module | None, owner: type | None = None):
        if module is None:
            return self
        return getattr(module, self.buffer).view(torch.float64)

    def __set__(self, module: nn.Module, value: torch.Tensor) -> None:
        bits = value.to(torch.float64).contiguous().view(torch.int64)
        module.register_buffer(self.buffer, bits, persistent=False)


__all__ = ["Float64Constant", "capturing_graph", "is_tracing", "cache_unless_tracing", "cached", "has_values"]
