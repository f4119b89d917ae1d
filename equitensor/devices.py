"""What the library needs to know about devices and tracing: which tensors hold values, caches
of constants that a ``torch.compile`` / ``torch.export`` trace cannot pollute, and buffers that
follow the module's device but keep their dtype.

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

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T")


def has_values(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds values that a check can read: False on the ``meta`` device and
    while ``torch.export`` traces (a check there would be a data-dependent branch in the exported
    graph: validate the inputs before calling an exported model). ``torch.compile`` still checks
    (a graph break).

    >>> has_values(torch.zeros(2)), has_values(torch.zeros(2, device="meta"))
    (True, False)
    """
    return not (tensor.is_meta or torch.compiler.is_exporting())


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
        if not torch.compiler.is_compiling():
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


class FixedDtypeBuffers(nn.Module):
    """A module whose buffers named in ``fixed_dtype_buffers`` follow ``.to(device)`` but keep their
    dtype under ``.to(dtype)``, ``.float()``, ``.double()``: exact float64 constants (coefficient
    tables, E0s) of a module computing in float32, so that moving it back to float64 loses nothing.

    Example::

        >>> class Table(FixedDtypeBuffers):
        ...     fixed_dtype_buffers = ("coefficients",)
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.register_buffer("coefficients", torch.tensor([1 / 3], dtype=torch.float64))
        >>> Table().float().to("meta").coefficients.dtype, Table().to("meta").coefficients.device
        (torch.float64, device(type='meta'))
    """

    fixed_dtype_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        kept = {
            name: self._buffers[name]
            for name in self.fixed_dtype_buffers
            if self._buffers.get(name) is not None
        }
        super()._apply(fn, recurse)
        for name, value in kept.items():
            device = self._buffers[name].device
            # to_empty() from meta: no values to keep, only the dtype
            self._buffers[name] = (
                torch.empty_like(value, device=device) if value.is_meta else value.to(device)
            )
        return self


__all__ = ["FixedDtypeBuffers", "cache_unless_tracing", "cached", "has_values"]
