"""The contract-check kit: small checks that say what is wrong and what the likely mistake is.

Lessons use them to show that code does what the text claims, the package tests use them on the
reference code, and the graded exercises use them in their self-checks and hidden tests. Each
check raises :class:`ContractError` (an ``AssertionError``, so a failing check fails a test cell)
with a message meant for a learner::

    >>> expect_rows_sum_to_one(torch.ones(2, 3, 4) / 3)
    Traceback (most recent call last):
    ContractError: the rows of weights sum to 1.333 over dim -1, not 1, but its columns sum to 1:
    is the sum (or the softmax) over dim -2 instead of dim -1? In attention, that is a softmax over
    the queries instead of the keys
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch


class ContractError(AssertionError):
    """A contract check failed; the message names the likely mistake."""


def _fail(message: str, hint: str | None) -> None:
    raise ContractError(f"{message}: {hint}" if hint else message)


def expect_shape(
    x: torch.Tensor, expected: Sequence[int | None], name: str = "output", hint: str | None = None
) -> None:
    """``x`` has shape ``expected``; ``None`` in ``expected`` matches any size."""
    if not isinstance(x, torch.Tensor):
        _fail(f"{name} is a {type(x).__name__}, expected a torch.Tensor", hint)
    got, want = tuple(x.shape), tuple(expected)
    if len(got) == len(want) and all(w is None or g == w for g, w in zip(got, want, strict=True)):
        return
    shown = "(" + ", ".join("*" if w is None else str(w) for w in want) + ")"
    if hint is None:
        if len(got) != len(want):
            hint = "a dimension is missing or extra (keepdim=True? an axis squeezed away?)"
        elif sorted(got) == sorted(w for w in want if w is not None) and None not in want:
            hint = "two axes are swapped: check the order of your transpose or view"
    _fail(f"{name} has shape {got}, expected {shown}", hint)


def expect_finite(x: torch.Tensor, name: str = "output", hint: str | None = None) -> None:
    """No NaN or infinity in ``x``."""
    bad = ~torch.isfinite(x)
    if bad.any():
        where = tuple(bad.nonzero()[0].tolist())
        kind = "NaN" if torch.isnan(x).any() else "inf"
        _fail(
            f"{name} contains {kind} ({int(bad.sum())} of {x.numel()} entries, first at {where})",
            hint or "an exp() that overflowed, or a softmax over a row that is entirely masked?",
        )


def expect_rows_sum_to_one(
    weights: torch.Tensor, dim: int = -1, name: str = "weights", atol: float = 1e-3
) -> None:
    """Every slice of ``weights`` along ``dim`` is a probability distribution: entries in [0, 1]
    that sum to one. Rows that are entirely zero (fully masked queries) are allowed."""
    expect_finite(weights, name)
    w = weights.float()
    if (w < -atol).any() or (w > 1 + atol).any():
        _fail(
            f"{name} has entries outside [0, 1] (min {w.min():.3g}, max {w.max():.3g})",
            "are these the scores before the softmax rather than the weights after it?",
        )
    sums = w.sum(dim)
    ok = torch.isclose(sums, torch.ones_like(sums), atol=atol) | (sums.abs() < atol)
    if ok.all():
        return
    bad_sum = sums[~ok].flatten()[0].item()
    other = -2 if dim in (-1, w.ndim - 1) else -1
    other_sums = w.sum(other)
    if w.ndim >= 2 and torch.isclose(other_sums, torch.ones_like(other_sums), atol=atol).all():
        _fail(
            f"the rows of {name} sum to {bad_sum:.4g} over dim {dim}, not 1, but its columns sum "
            f"to 1",
            f"is the sum (or the softmax) over dim {other} instead of dim {dim}? In attention, "
            f"that is a softmax over the queries instead of the keys",
        )
    _fail(
        f"the rows of {name} sum to {bad_sum:.4g} over dim {dim}, not 1",
        "is the sum in the softmax's denominator taken over the right axis, with keepdim=True?",
    )


def expect_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    name: str = "output",
    *,
    rtol: float | None = None,
    atol: float | None = None,
    hint: str | None = None,
    mistakes: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """``actual`` equals ``expected`` to the tolerance of its dtype.

    ``mistakes`` maps a description of a known mistake to the output that mistake produces; when
    ``actual`` matches one of them, the message names it.
    """
    expect_shape(actual, expected.shape, name)
    if actual.dtype != expected.dtype:
        _fail(f"{name} has dtype {actual.dtype}, expected {expected.dtype}",
              hint or "keep the dtype of the inputs: create new tensors with dtype=x.dtype")
    if actual.device != expected.device:
        _fail(f"{name} is on {actual.device}, expected {expected.device}",
              hint or "create new tensors with device=x.device")
    default_rtol, default_atol = _tolerance(expected.dtype)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    a, e = actual.detach().double(), expected.detach().double()
    if torch.allclose(a, e, rtol=rtol, atol=atol, equal_nan=True):
        return
    for mistake, wrong in (mistakes or {}).items():
        if wrong.shape == actual.shape and torch.allclose(
            a, wrong.detach().double(), rtol=rtol, atol=atol, equal_nan=True
        ):
            _fail(f"{name} differs from the expected result", mistake)
    expect_finite(actual, name, hint)
    err = (a - e).abs()
    where = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
    _fail(
        f"{name} differs from the expected result: largest difference {err.max():.3g} at index "
        f"{where} (got {a[where]:.6g}, expected {e[where]:.6g})",
        hint,
    )


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing a result computed in ``dtype`` with a reference."""
    return {
        torch.float16: (1e-2, 2e-3),
        torch.bfloat16: (2e-2, 1e-2),
        torch.float32: (1e-4, 1e-5),
        torch.float64: (1e-7, 1e-9),
    }.get(dtype, (0.0, 0.0))


def expect_causal(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    dim: int = 1,
    atol: float = 1e-6,
    name: str = "output",
) -> None:
    """The output of ``fn`` at position t depends only on inputs at positions up to t.

    For each cut t, the inputs after t are replaced by noise and the outputs up to t must not
    move by more than ``atol`` (a tolerance, because some exact-in-theory operations round).
    """
    with torch.no_grad():
        base = fn(x)
        length = x.shape[dim]
        for t in range(length - 1):
            changed = x.clone()
            future = changed.narrow(dim, t + 1, length - t - 1)
            future.copy_(torch.randn_like(future) * 3)
            moved = (fn(changed) - base).narrow(dim, 0, t + 1).abs().max().item()
            if moved > atol:
                _fail(
                    f"{name} at position {t} or earlier changed by {moved:.3g} when only inputs "
                    f"after position {t} changed",
                    "the causal mask is missing, upside down (triu instead of tril) or "
                    "applied after the softmax",
                )


def expect_finite_grads(
    fn: Callable[..., torch.Tensor], *inputs: torch.Tensor, name: str = "output"
) -> None:
    """Back-propagating through ``fn(*inputs)`` gives every floating input a finite gradient."""
    leaves = [
        t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs
    ]
    out = fn(*leaves)
    if not isinstance(out, torch.Tensor) or not out.requires_grad:
        _fail(f"{name} does not require grad", "is it detached (.detach(), .data, .item(), "
              "torch.no_grad(), or a new tensor built from Python numbers)?")
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out)
    (out * weights).sum().backward()
    for i, leaf in enumerate(leaves):
        if not leaf.is_floating_point():
            continue
        if leaf.grad is None:
            _fail(f"input {i} of {name} received no gradient",
                  "is it detached, or unused in the computation?")
        expect_finite(leaf.grad, f"the gradient of input {i}",
                      "a softmax over a fully masked row, or a mask applied as -inf * 0?")


def expect_device_dtype(
    x: torch.Tensor,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    name: str = "output",
) -> None:
    """``x`` lives on ``device`` and has ``dtype`` (each checked when given)."""
    if device is not None and x.device.type != torch.device(device).type:
        _fail(f"{name} is on {x.device}, expected {device}",
              "create new tensors with device=x.device instead of the default device")
    if dtype is not None and x.dtype != dtype:
        _fail(f"{name} has dtype {x.dtype}, expected {dtype}",
              "create new tensors with dtype=x.dtype, or keep the inputs' dtype")


def expect_on_meta(call: Callable[[], torch.Tensor], name: str, hint: str) -> None:
    """``call()`` computes on tensors of PyTorch's ``meta`` device, which have a device and no
    values, so the device that a function follows is checked without a GPU: what it returns must
    be on ``meta`` too, and a tensor it creates on the default device fails there. An error that
    names a device fails with ``hint``; any other error is an operation that needs the values
    (``.item()``, ``nonzero``), which cannot run on ``meta``, and then the device goes unchecked.
    """
    try:
        result = call()
    except Exception as error:  # noqa: BLE001 - any failure of the learner's code on meta
        if "device" not in str(error):
            return
        _fail(f"{name} fails on the meta device ({str(error).rstrip('!.')})", hint)
    expect_device_dtype(result, "meta", None, name)


@contextlib.contextmanager
def forbid(*targets: str, task: str = "this exercise") -> Iterator[None]:
    """Within the block, calling any of ``targets`` raises :class:`ContractError`.

    A target is a dotted path: a module attribute (``"torch.nn.functional.softmax"``) or an
    attribute of a class (``"torch.Tensor.softmax"``, ``"tfcourse.MultiHeadAttention.forward"``).
    The call is blocked whatever name or reference it goes through: every alias that a loaded
    module holds is replaced (``from torch.nn.functional import softmax as sm``,
    ``tfcourse.causal_mask`` beside ``tfcourse.masks.causal_mask``); PyTorch's functions and
    methods are also stopped by a ``TorchFunctionMode``, and a Python function's code is swapped,
    so that a reference kept elsewhere (a default argument, a closure, a list) is blocked too.
    Everything is restored on leaving the block.

    Graders use it so that a shortcut through a ready-made implementation earns no points.
    """
    patches: list[tuple[object, str, object]] = []
    try:
        resolved = [(target, *_resolve(target)) for target in targets]  # before any patching
        originals: dict[int, tuple[object, Callable[..., object]]] = {}  # keeps each id valid
        for target, owner, attr in resolved:
            blocked = _blocker(target, task)
            original = getattr(owner, attr)
            originals[id(original)] = (original, blocked)
            patches.append(_patch(owner, attr, blocked))
        for module in list(sys.modules.values()):  # aliases: the same object under other names
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for name, value in list(namespace.items()):
                if id(value) in originals and value is originals[id(value)][0]:
                    patches.append(_patch(module, name, originals[id(value)][1]))
        for index, (original, blocked) in enumerate(list(originals.values())):
            patches += _redirect(original, blocked, index)
        with _ForbiddenCalls(list(originals.values())):
            yield
    finally:
        for owner, attr, original in reversed(patches):
            if original is _ABSENT:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)


class _ForbiddenCalls(torch.overrides.TorchFunctionMode):
    """Stops a forbidden PyTorch function or method reached through any reference."""

    def __init__(self, pairs: list[tuple[object, Callable[..., object]]]) -> None:
        super().__init__()
        # PyTorch reports a method by its current attribute, which is the blocker in the block
        self.blocked = {id(f): (f, blocked) for original, blocked in pairs
                        for f in (original, blocked)}

    def __torch_function__(self, func: Callable[..., object], types: object,
                           args: tuple = (), kwargs: dict | None = None) -> object:
        entry = self.blocked.get(id(func))
        if entry is not None and entry[0] is func:
            entry[1]()
        return func(*args, **(kwargs or {}))


def _redirect(original: object, blocked: Callable[..., object], index: int
              ) -> list[tuple[object, str, object]]:
    """Make a plain Python function call ``blocked`` instead, through its code object."""
    code = getattr(original, "__code__", None)
    module = sys.modules.get(getattr(original, "__module__", None) or "")
    if code is None or code.co_freevars or module is None \
            or getattr(original, "__globals__", None) is not vars(module):
        return []
    name = f"__tfcourse_forbidden_{index}__"
    namespace: dict[str, object] = {}
    exec(f"def redirect(*args, **kwargs):\n    return {name}(*args, **kwargs)\n", namespace)
    saved = [_patch(module, name, blocked), (original, "__code__", code)]
    original.__code__ = namespace["redirect"].__code__
    return saved


_ABSENT = object()


def _resolve(target: str) -> tuple[object, str]:
    """``"pkg.module.Class.attr"`` -> (the object that holds ``attr``, ``"attr"``)."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:-1]:
            owner = getattr(owner, part)
        if not hasattr(owner, parts[-1]):
            raise AttributeError(f"forbid: {target} does not exist")
        return owner, parts[-1]
    raise ImportError(f"forbid: no module to import in {target!r}")


def _patch(owner: object, attr: str, value: object) -> tuple[object, str, object]:
    """Set ``owner.attr = value``; return what restores it (a class attribute that was only
    inherited is deleted again rather than copied into the subclass)."""
    own = vars(owner) if isinstance(owner, type) else getattr(owner, "__dict__", {})
    saved = (owner, attr, own[attr] if attr in own else _ABSENT)
    setattr(owner, attr, value)
    return saved


def _blocker(target: str, task: str) -> Callable[..., object]:
    def blocked(*args: object, **kwargs: object) -> None:
        raise ContractError(
            f"{task} asks you to write this yourself; calling {target} does not count"
        )

    return blocked
