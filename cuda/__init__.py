"""CUDA C++ sources of the hot-path kernels, compiled at run time (NVRTC via CuPy) by
``equitensor.kernels``; installed as ``equitensor.cuda`` (package data ``*.cu``, ``*.cuh``).

This directory is also importable as a top-level ``cuda`` package whenever the repository root is
on ``sys.path`` (``python -m pytest`` from the root, scripts run there). That name belongs to
NVIDIA's namespace packages (``cuda.pathfinder``, ``cuda.bindings``, which CuPy imports), so the
path is extended with every other ``cuda`` directory on ``sys.path``: their subpackages stay
importable instead of being shadowed.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
