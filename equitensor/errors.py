"""The one exception class for bad input from the user.

A config, a data file, a model file or a command-line value that cannot be used raises
:class:`InputError` (or a subclass: ``ConfigError``, ``DatasetError``, ``UnmappableError``), and the
``equitensor`` command prints its message in one line (exit code 2). Any other exception is a bug,
and the command keeps its traceback. It is a ``ValueError``, so ``except ValueError`` still holds.

Example::

    >>> issubclass(InputError, ValueError)
    True
"""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be used; the message names the problem (file, frame, key, value)."""


__all__ = ["InputError"]
