"""Plots of attention weights (book: chapter 1, and every chapter that shows attention maps)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tfcourse import _validate


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
