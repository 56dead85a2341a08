"""Plots of attention weights (book: chapter 1, and every chapter that shows attention maps) and
of training histories (every chapter that trains)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from tfcourse import _validate

if TYPE_CHECKING:
    from tfcourse.training import History


def plot_attention(
    weights: torch.Tensor,
    *,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    ax: object | None = None,
    title: str | None = None,
    colorbar: bool = True,
) -> object:
    """Heat map of one (T, S) weight matrix: row t shows how query t spreads its attention over
    the keys. Returns the matplotlib ``Axes``."""
    import matplotlib.pyplot as plt

    weights = _validate.rank(weights, "weights", 2, "(T, S)").detach().float().cpu()
    T, S = weights.shape
    for name, labels, n in (("query_labels", query_labels, T), ("key_labels", key_labels, S)):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name}: expected {n} labels, got {len(labels)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(0.35 * S + 2, 0.35 * T + 1.5))
    vmax = max(weights.max().item(), 1e-9)
    image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=vmax)
    ax.set_xlabel("key position" if key_labels is None else "key")
    ax.set_ylabel("query position" if query_labels is None else "query")
    if key_labels is not None:
        ax.set_xticks(range(S), key_labels, rotation=90)
    if query_labels is not None:
        ax.set_yticks(range(T), query_labels)
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_attention_heads(
    weights: torch.Tensor,
    *,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
    ncols: int = 4,
    title: str | None = None,
) -> object:
    """One heat map per head of (H, T, S) weights, on a shared colour scale. Returns the
    matplotlib ``Figure``."""
    import matplotlib.pyplot as plt

    weights = _validate.rank(weights, "weights", 3, "(H, T, S)").detach().float().cpu()
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected a positive int, got {ncols!r}")
    H, T, S = weights.shape
    ncols = min(ncols, H)
    nrows = -(-H // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(ncols * (0.25 * S + 1.2), nrows * (0.25 * T + 1.2)), squeeze=False
    )
    for h, ax in enumerate(axes.flat):
        if h >= H:
            ax.axis("off")
            continue
        plot_attention(weights[h], query_labels=query_labels, key_labels=key_labels, ax=ax,
                       title=f"head {h}", colorbar=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_history(
    history: History | Mapping[str, History],
    ax: object | None = None,
    metrics: str | Sequence[str] = "loss",
    *,
    logy: bool = False,
    title: str | None = None,
) -> object:
    """Curves of a :class:`~tfcourse.training.History` against the step: training series (loss,
    lr, grad_norm, a metric of ``loss_fn``) as lines, evaluation metrics as lines with markers.
    Give a dict ``{label: history}`` to compare runs on one plot. Returns the matplotlib
    ``Axes``."""
    import matplotlib.pyplot as plt

    from tfcourse.training import History

    runs = {"": history} if isinstance(history, History) else history
    if not isinstance(runs, Mapping) or not runs or not all(
            isinstance(h, History) for h in runs.values()):
        raise TypeError("history: expected a History or a non-empty dict of them, got "
                        f"{type(history).__name__}")
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    if not names:
        raise ValueError("metrics: expected at least one name, got none")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for label, run in runs.items():
        for name in names:
            try:
                steps, values = run.series(name)
            except KeyError as error:
                raise ValueError(f"metrics: {error.args[0]}") from None
            is_eval = not any(name in r for r in run.train)
            text = " ".join(part for part in (label, name if len(names) > 1 or not label else "")
                            if part)
            ax.plot(steps, values, marker="o" if is_eval else None, markersize=3, label=text)
    ax.set_xlabel("step")
    ax.set_ylabel(names[0] if len(names) == 1 else "value")
    if logy:
        ax.set_yscale("log")
    if len(runs) > 1 or len(names) > 1:
        ax.legend()
    if title:
        ax.set_title(title)
    return ax
