"""Input checks shared by the public functions: each error names the argument, what was expected
and what was given."""

from __future__ import annotations

import torch


def tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def floating(x: object, name: str) -> torch.Tensor:
    x = tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")
    return x


def rank(x: object, name: str, ndim: int | tuple[int, ...], layout: str) -> torch.Tensor:
    """``x`` must have ``ndim`` dimensions (or at least ``ndim[0]`` when ``ndim`` is a 1-tuple)."""
    x = tensor(x, name)
    if isinstance(ndim, tuple):
        ok, wanted = x.ndim >= ndim[0], f"at least {ndim[0]} dimensions"
    else:
        ok, wanted = x.ndim == ndim, f"{ndim} dimension{'s' if ndim != 1 else ''}"
    if not ok:
        raise ValueError(
            f"{name}: expected {wanted} {layout}, got {x.ndim} with shape {tuple(x.shape)}"
        )
    return x


def size(x: torch.Tensor, name: str, dim: int, expected: int, what: str) -> None:
    if x.shape[dim] != expected:
        raise ValueError(
            f"{name}: expected size {expected} in dimension {dim} ({what}), "
            f"got shape {tuple(x.shape)}"
        )


def same_device(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if x.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device} like {ref_name}, got {x.device}")


def mask(m: object, name: str, scores_shape: tuple[int, ...], layout: str) -> torch.Tensor:
    """A boolean (True = attend) or additive float mask that broadcasts to ``scores_shape``."""
    m = tensor(m, name)
    if m.dtype != torch.bool and not m.is_floating_point():
        raise TypeError(
            f"{name}: expected a bool mask (True = attend) or a float additive mask, "
            f"got dtype {m.dtype}"
        )
    try:
        broadcast = torch.broadcast_shapes(m.shape, scores_shape)
    except RuntimeError:
        broadcast = None
    if m.ndim > len(scores_shape) or broadcast != torch.Size(scores_shape):
        raise ValueError(
            f"{name}: expected a shape that broadcasts to the scores {tuple(scores_shape)} "
            f"{layout}, got {tuple(m.shape)}"
        )
    return m


def integer(x: object, name: str, minimum: int = 0) -> int:
    """``x`` is an int (not a bool) at least ``minimum``."""
    if not isinstance(x, int) or isinstance(x, bool) or x < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {x!r}")
    return x


def token_ids(x: object, name: str) -> torch.Tensor:
    """``x`` is a (B, T) tensor of integer token ids."""
    x = rank(x, name, 2, "(B, T) token ids")
    if x.is_floating_point() or x.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer token ids, got dtype {x.dtype}")
    return x
