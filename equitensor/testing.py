"""Test helpers: equivariance checks under random rotations and reflections, random irreps, gradchecks.

The equivariance check follows e3nn's ``e3nn.util.test``: compare ``f(D_in x)`` with ``D_out f(x)`` for
random Haar rotations ``R`` (parity ``k=0``) and ``-R`` (``k=1``), transforming in float64 whatever the
compute dtype, and report the max absolute componentwise error per output, keyed ``(parity_k,
did_translate)``.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import random as _random
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from equitensor.irreps import Irreps

__all__ = [
    "FLOAT_TOLERANCE",
    "assert_equivariant",
    "equivariance_error",
    "format_equivariance_error",
    "random_irreps",
    "assert_gradients",
    "single_device",
]

#: Default equivariance tolerance per compute dtype (e3nn's values).
FLOAT_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-9}

CARTESIAN = "cartesian_points"
_BATCH = 4
_TRANSFORM_DTYPE = torch.float64


def _normalize_irreps(irreps: Any) -> list[Irreps | str | None]:
    """One ``Irreps`` (or irreps-like, or ``'cartesian_points'``/``None``), or a list of them, to a list."""

    def one(x: Any) -> Irreps | str | None:
        return x if x is None or (isinstance(x, str) and x == CARTESIAN) else Irreps(x)

    if isinstance(irreps, list):
        return [one(x) for x in irreps]
    return [one(irreps)]


def _transform(
    values: Sequence[Any], irreps: Sequence[Irreps | str | None], R: torch.Tensor, t: torch.Tensor | None
) -> list[Any]:
    """Apply the O(3) element ``R`` (and translation ``t`` to cartesian points), computing in float64."""
    out = []
    for x, ir in zip(values, irreps, strict=True):
        if ir is None:
            out.append(x)
            continue
        x64 = x.detach().to(_TRANSFORM_DTYPE)
        R_ = R.to(x.device)
        if isinstance(ir, str):  # cartesian points
            y = x64 @ R_.T + (0 if t is None else t.to(x.device))
        else:
            y = x64 @ ir.D_from_matrix(R_).T
        out.append(y)
    return out


def _outputs(y: Any) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (list, tuple)):
        return list(y)
    raise TypeError(f"the function must return a tensor or a tuple/list of tensors, got {type(y).__name__}")


def _compute_dtype(args_in: Sequence[Any] | None, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    for a in args_in or ():
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return a.dtype
    return torch.get_default_dtype()


def _random_args(irreps_in: Sequence[Irreps | str | None], dtype: torch.dtype) -> list[torch.Tensor]:
    if any(ir is None for ir in irreps_in):
        raise ValueError("cannot generate random inputs for arguments with irreps None; pass args_in")
    return [
        torch.randn(_BATCH, 3, dtype=dtype) if isinstance(ir, str) else ir.randn(_BATCH, -1, dtype=dtype)
        for ir in irreps_in
    ]


def equivariance_error(
    fn: Callable[..., Any],
    irreps_in: Any,
    irreps_out: Any,
    *,
    args_in: Sequence[Any] | None = None,
    ntrials: int = 1,
    do_parity: bool = True,
    do_translation: bool = False,
    dtype: torch.dtype | None = None,
) -> dict[tuple[int, bool], list[float]]:
    """Max abs error of ``fn(g x) - g fn(x)`` per output, over ``ntrials`` random ``g``.

    ``irreps_in``/``irreps_out``: one irreps-like or a list, one per argument/output; the special
    ``'cartesian_points'`` marks positions ``(..., 3)`` (rotated and, if ``do_translation``, translated),
    and ``None`` an argument left untouched (then ``args_in`` is required). Random inputs (batch 4)
    come from ``Irreps.randn`` in ``dtype`` (default: that of ``args_in``, else torch's default).

    Returns ``{(parity_k, did_translate): [error per output]}``.

    >>> def cross(a, b):
    ...     return torch.linalg.cross(a, b, dim=-1)
    >>> errors = equivariance_error(cross, ["1o", "1o"], "1e", dtype=torch.float64)
    >>> sorted(errors), max(max(e) for e in errors.values()) < 1e-12
    ([(0, False), (1, False)], True)
    """
    irreps_in = _normalize_irreps(irreps_in)
    irreps_out = _normalize_irreps(irreps_out)
    dtype = _compute_dtype(args_in, dtype)
    if args_in is None:
        args_in = _random_args(irreps_in, dtype)
    args_in = list(args_in)
    if len(args_in) != len(irreps_in):
        raise ValueError(f"got {len(args_in)} arguments for {len(irreps_in)} irreps_in")

    from equitensor.o3.rotations import rand_matrix

    translations = (
        [False, True] if do_translation and any(isinstance(ir, str) for ir in irreps_in) else [False]
    )
    cases = list(itertools.product([0, 1] if do_parity else [0], translations))
    errors = {case: [0.0] * len(irreps_out) for case in cases}

    for _ in range(ntrials):
        y = [v.detach() for v in _outputs(fn(*args_in))]
        if len(y) != len(irreps_out):
            raise ValueError(f"the function returned {len(y)} outputs for {len(irreps_out)} irreps_out")
        for parity_k, translate in cases:
            R = rand_matrix(dtype=_TRANSFORM_DTYPE) * (-1) ** parity_k
            t = 10 * torch.randn(3, dtype=_TRANSFORM_DTYPE) if translate else None
            rotated = [
                a if ir is None else r.to(a.dtype).requires_grad_(a.requires_grad)
                for a, r, ir in zip(args_in, _transform(args_in, irreps_in, R, t), irreps_in, strict=True)
            ]
            y_of_gx = [v.detach().to(_TRANSFORM_DTYPE) for v in _outputs(fn(*rotated))]
            g_of_y = _transform(y, irreps_out, R, t)
            for i, (a, b) in enumerate(zip(y_of_gx, g_of_y, strict=True)):
                b = torch.as_tensor(b).to(_TRANSFORM_DTYPE)
                err = (a - b).abs().max().item() if a.numel() else 0.0
                errors[(parity_k, translate)][i] = max(errors[(parity_k, translate)][i], err)
    return errors


def format_equivariance_error(errors: dict[tuple[int, bool], list[float]]) -> str:
    """One line per transform: which transform, the largest error and the output it occurred in.

    >>> print(format_equivariance_error({(0, False): [1e-7, 3e-7], (1, False): [2e-7, 0.0]}))
    (parity_k=0, did_translate=False) rotation: max error 3.000e-07 in output 1
    (parity_k=1, did_translate=False) rotation x inversion (parity): max error 2.000e-07 in output 0
    """
    lines = []
    for (parity_k, translate), errs in errors.items():
        what = "rotation" if parity_k == 0 else "rotation x inversion (parity)"
        what += " + translation" if translate else ""
        worst = max(range(len(errs)), key=errs.__getitem__) if errs else 0
        lines.append(
            f"(parity_k={parity_k}, did_translate={translate}) {what}: "
            f"max error {max(errs, default=0.0):.3e} in output {worst}"
        )
    return "\n".join(lines)


def assert_equivariant(
    fn: Callable[..., Any],
    irreps_in: Any,
    irreps_out: Any,
    *,
    args_in: Sequence[Any] | None = None,
    tolerance: float | None = None,
    ntrials: int = 1,
    do_parity: bool = True,
    do_translation: bool = False,
    dtype: torch.dtype | None = None,
) -> dict[tuple[int, bool], list[float]]:
    """Raise AssertionError unless ``fn`` is O(3)- (and optionally translation-) equivariant.

    Arguments as `equivariance_error`; ``tolerance`` defaults to ``FLOAT_TOLERANCE`` of the compute
    dtype. Returns the error dict.

    >>> def cross(a, b):
    ...     return torch.linalg.cross(a, b, dim=-1)
    >>> errors = assert_equivariant(cross, ["1o", "1o"], "1e")  # a x b is a pseudovector: passes
    >>> assert_equivariant(cross, ["1o", "1o"], "1o")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    AssertionError: cross is not equivariant: largest error ...
    """
    __tracebackhide__ = True
    compute_dtype = _compute_dtype(args_in, dtype)
    errors = equivariance_error(
        fn,
        irreps_in,
        irreps_out,
        args_in=args_in,
        ntrials=ntrials,
        do_parity=do_parity,
        do_translation=do_translation,
        dtype=compute_dtype,
    )
    if tolerance is None:
        tolerance = FLOAT_TOLERANCE.get(compute_dtype, FLOAT_TOLERANCE[torch.float32])
    failed = {case: errs for case, errs in errors.items() if max(errs, default=0.0) > tolerance}
    if failed:
        worst = max(max(errs) for errs in failed.values())
        name = getattr(fn, "__name__", type(fn).__name__)
        raise AssertionError(
            f"{name} is not equivariant: largest error {worst:.3e} > tolerance {tolerance:.1e} "
            f"({compute_dtype}); failing transforms:\n{format_equivariance_error(failed)}"
        )
    return errors


def random_irreps(
    n: int = 1,
    lmax: int = 4,
    mul_min: int = 0,
    mul_max: int = 5,
    len_min: int = 0,
    len_max: int = 4,
    clean: bool = False,
    allow_empty: bool = True,
    *,
    rng: _random.Random | None = None,
) -> Any:
    """Random irreps for tests, as e3nn's: one if ``n == 1``, else a list of ``n``.

    With ``clean=False`` each is an ``Irreps``, its string, or a list of ``(mul, (l, p))``, at random.
    ``allow_empty=False`` guarantees at least one copy. ``rng`` defaults to the ``random`` module.

    >>> import random
    >>> random_irreps(3, lmax=2, clean=True, allow_empty=False, rng=random.Random(0))
    [3x0o+4x1o+2x1o+4x0e, 1x0o+4x2e+2x0e, 3x2e+2x1o+4x2e]
    """
    rng = rng or _random
    if not (n >= 1 and lmax >= 0 and 0 <= mul_min <= mul_max):
        raise ValueError("need n >= 1, lmax >= 0 and 0 <= mul_min <= mul_max")
    if not allow_empty:
        len_min = max(len_min, 1)
    if not 0 <= len_min <= len_max:
        raise ValueError("need 0 <= len_min <= len_max")
    if not allow_empty and mul_max == 0:
        raise ValueError("allow_empty=False needs mul_max >= 1")

    out = []
    for _ in range(n):
        terms = [
            (rng.randint(mul_min, mul_max), (rng.randint(0, lmax), rng.choice((1, -1))))
            for _ in range(rng.randint(len_min, len_max))
        ]
        if not allow_empty and all(mul == 0 for mul, _ in terms):
            terms[-1] = (rng.randint(max(mul_min, 1), mul_max), terms[-1][1])
        irreps = Irreps(terms)
        kind = "irreps" if clean else rng.choice(("irreps", "str", "list"))
        out.append({"irreps": irreps, "str": str(irreps), "list": terms}[kind])
    return out[0] if n == 1 else out


def assert_gradients(
    fn: Callable[..., Any],
    *inputs: Any,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    check_gradgrad: bool = True,
) -> None:
    """Check ``fn``'s first (and second) derivatives against finite differences, in float64.

    Floating tensors in ``inputs`` are cast to float64, cloned and made to require grad; an
    ``nn.Module`` ``fn`` is deep-copied to float64. Runs ``torch.autograd.gradcheck`` and
    ``gradgradcheck`` and raises AssertionError naming the check that failed.

    >>> from equitensor.o3 import spherical_harmonics
    >>> x = torch.tensor([[1.0, 2.0, 3.0], [-0.5, 0.3, 0.8]])
    >>> assert_gradients(lambda x: spherical_harmonics(2, x, normalize=True), x)  # raises if wrong
    """
    __tracebackhide__ = True
    if isinstance(fn, torch.nn.Module):
        fn = copy.deepcopy(fn).to(torch.float64)
    inputs = tuple(
        x.detach().to(torch.float64).clone().requires_grad_(True)
        if isinstance(x, torch.Tensor) and x.is_floating_point()
        else x
        for x in inputs
    )
    name = getattr(fn, "__name__", type(fn).__name__)
    checks = [("gradcheck", torch.autograd.gradcheck)]
    if check_gradgrad:
        checks.append(("gradgradcheck", torch.autograd.gradgradcheck))
    for check_name, check in checks:
        try:
            ok = check(fn, inputs, eps=eps, atol=atol, rtol=rtol, raise_exception=True)
        except Exception as e:  # GradcheckError, or errors raised by a broken backward
            raise AssertionError(f"{check_name} failed for {name}: {e}") from e
        if not ok:
            raise AssertionError(f"{check_name} failed for {name}")


#: Operations that may take a tensor from another device: they are how one gets moved.
_MOVES = {"_to_copy", "copy_", "_copy_from", "lift_fresh", "lift_fresh_copy", "_copy_from_and_resize"}


class _SingleDeviceMode(TorchDispatchMode):
    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.copies: list[str] = []  # copies onto the device from another one

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.__name__.split(".")[0] in _MOVES:
            result = func(*args, **kwargs)
            sources = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
            outputs = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
            if any(t.device != self.device for t in sources) and any(
                t.device == self.device for t in outputs
            ):
                self.copies.append(f"{func} of {tuple(sources[-1].shape)} from {sources[-1].device}")
            return result
        tensors = [v for v in tree_flatten((args, kwargs))[0] if isinstance(v, torch.Tensor)]
        # 0-dim CPU tensors are scalars, which every device accepts; work done entirely on
        # another device (building constants) is not mixing
        strangers = [t for t in tensors if t.device != self.device and t.dim() > 0]
        if strangers and any(t.device == self.device for t in tensors):
            value = strangers[0]
            raise AssertionError(
                f"{func} got a tensor of shape {tuple(value.shape)} on {value.device} among its "
                f"inputs on {self.device}: something was created on the wrong device"
            )
        return func(*args, **kwargs)


@contextlib.contextmanager
def single_device(device: torch.device | str):
    """Fail every tensor operation inside that mixes ``device`` with a (non-scalar) tensor on another.

    Stricter than the devices themselves (``meta`` accepts CPU indices and matrices): run a model
    on ``meta`` inside it and any constant, index or buffer the library creates on the CPU shows
    up as an AssertionError naming the operation, the way it would fail on a GPU. Copies between
    devices (``.to``) are allowed and listed in the yielded object's ``copies`` (on a GPU each one
    from the host may stall the stream: a warm call should make none).

    Example::

        >>> import torch
        >>> x = torch.ones(3, device="meta")
        >>> with single_device("meta") as mode:
        ...     y = x * 2 + x.new_ones(3)
        >>> mode.copies
        []
        >>> with single_device("meta"):
        ...     x + torch.ones(3)
        Traceback (most recent call last):
        AssertionError: aten.add.Tensor got a tensor of shape (3,) on cpu among its inputs on meta: ...
    """
    with _SingleDeviceMode(torch.device(device)) as mode:
        yield mode
