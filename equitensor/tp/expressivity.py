"""Which backends can compute a given product, exactly or approximately, and what each would drop.

``expressivity(x)`` takes a :class:`TensorProductSpec`, a TensorProduct, a GauntProduct or an
EdgeConvolution and asks every registered backend's capability record about it. Printing the
report gives a table plus the reasons, path by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equitensor.tp.backends.capabilities import Limitation, format_table, list_backends
from equitensor.tp.spec import TensorProductSpec

_MAX_REASONS = 6  # reasons shown per backend when printing; the report holds all of them


@dataclass(frozen=True)
class BackendFit:
    """One backend's answer: ``status`` is 'exact', 'approximate' or 'no'.

    >>> from equitensor.tp import TensorProduct
    >>> fit = expressivity(TensorProduct("1o", "1o", "1e", [(0, 0, 0, "uuu", False)]))["gaunt"]
    >>> fit.status, fit.paths_not_expressible
    ('no', (0,))
    >>> print(fit.limitations[0])
    path 0 (1x1o x 1x1o -> 1x1e, uuu): l1+l2+l3 is odd, and a pointwise product on the sphere has no such path
    """

    backend: str
    status: str
    limitations: tuple[Limitation, ...]

    @property
    def paths_not_expressible(self) -> tuple[int, ...]:
        """Instruction indices this backend would have to drop or change."""
        return tuple(sorted({lim.instruction for lim in self.limitations if lim.instruction is not None}))


@dataclass(frozen=True)
class ExpressivityReport:
    """What every registered backend answers about one product, as :func:`expressivity` returns it.

    ``exact``, ``approximate`` and ``unsupported`` list the backends by status, ``report[name]``
    is one backend's :class:`BackendFit`, and ``str(report)`` a table followed by the reasons.

    >>> from equitensor.tp import FullyConnectedTensorProduct
    >>> report = expressivity(FullyConnectedTensorProduct("2x0e + 1x1o", "1o", "3x1o + 0e"))
    >>> "cg" in report.exact, "cp" in report.approximate, "gaunt" in report.unsupported
    (True, True, True)
    >>> print(str(report).splitlines()[0])
    tensor_product: 2x0e+1x1o x 1x1o -> 3x1o+1x0e, 2 paths
    """

    spec: TensorProductSpec
    operation: str
    fits: tuple[BackendFit, ...]

    def _names(self, status: str) -> list[str]:
        return [fit.backend for fit in self.fits if fit.status == status]

    @property
    def exact(self) -> list[str]:
        return self._names("exact")

    @property
    def approximate(self) -> list[str]:
        return self._names("approximate")

    @property
    def unsupported(self) -> list[str]:
        return self._names("no")

    def __getitem__(self, backend: str) -> BackendFit:
        for fit in self.fits:
            if fit.backend == backend:
                return fit
        raise KeyError(backend)

    def __str__(self) -> str:
        spec = self.spec
        title = (
            f"{self.operation}: {spec.irreps_in1} x {spec.irreps_in2} -> {spec.irreps_out}, "
            f"{len(spec.instructions)} paths"
        )
        rows = []
        for fit in self.fits:
            parts = []
            if fit.paths_not_expressible:
                parts.append("paths " + ", ".join(map(str, fit.paths_not_expressible)))
            if any(lim.instruction is None for lim in fit.limitations):
                parts.append("spec-wide")
            rows.append([fit.backend, fit.status, " + ".join(parts) or "-"])
        lines = [title, format_table(["backend", "computes it", "paths it cannot express"], rows, width=60)]
        for fit in self.fits:
            if fit.limitations:
                lines.append(f"{fit.backend}:")
                lines += [f"  - {lim}" for lim in fit.limitations[:_MAX_REASONS]]
                if len(fit.limitations) > _MAX_REASONS:
                    lines.append(f"  ... and {len(fit.limitations) - _MAX_REASONS} more")
        return "\n".join(lines)


def _spec_and_operation(obj: Any) -> tuple[TensorProductSpec, str]:
    from equitensor.tp.edge_convolution import EdgeConvolution
    from equitensor.tp.gaunt_product import GauntProduct

    if isinstance(obj, TensorProductSpec):
        return obj, "tensor_product"
    if isinstance(obj, GauntProduct):
        return obj.spec, "gaunt_product"
    if isinstance(obj, EdgeConvolution):
        return obj.spec, "edge_convolution"
    spec = getattr(obj, "spec", None)
    if isinstance(spec, TensorProductSpec):
        return spec, "tensor_product"
    raise TypeError(
        f"expressivity needs a TensorProductSpec, TensorProduct, GauntProduct or EdgeConvolution, "
        f"got {type(obj).__name__}"
    )


def expressivity(obj: Any) -> ExpressivityReport:
    """Ask every registered backend whether it can compute ``obj`` (a spec or product module).

    >>> from equitensor.tp import FullyConnectedTensorProduct
    >>> report = expressivity(FullyConnectedTensorProduct("2x0e + 1x1o", "1o", "3x1o + 0e"))
    >>> report.operation, report["cg"].status, report["cp"].status, report["gaunt"].status
    ('tensor_product', 'exact', 'approximate', 'no')
    """
    spec, operation = _spec_and_operation(obj)
    fits = []
    for record in list_backends():
        if operation not in record.operations:
            reason = (
                f"{record.name!r} does not compute {operation} (it computes {', '.join(record.operations)})"
            )
            # and what it could not express even as a plain tensor product (e.g. a Gaunt
            # backend asked for an edge convolution: its per-path, per-edge weights)
            fits.append(BackendFit(record.name, "no", (Limitation(None, reason), *record.limitations(spec))))
            continue
        limitations = tuple(record.limitations(spec))
        status = "no" if limitations else "exact" if record.exact else "approximate"
        fits.append(BackendFit(record.name, status, limitations))
    return ExpressivityReport(spec, operation, tuple(fits))
