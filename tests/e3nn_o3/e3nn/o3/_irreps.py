"""``e3nn.o3._irreps``, imported by e3nn's test harness."""

from equitensor import Irrep, Irreps  # noqa: F401
