"""Key-value caches for autoregressive decoding (book: chapter 3, *Decoding with a KV cache*).

When a decoder generates token t it needs the keys and values of positions 0..t. Recomputing
them at every step costs a full forward pass over the prefix: O(t) work per layer for a token whose
own computation is O(1) positions. A cache keeps each layer's keys and values, (B, H, S, D), and
every step appends those of the new position only. Causality makes this exact: earlier positions
never see later ones, so their keys and values do not change when the sequence grows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class KVCache:
    """The keys and values, (B, H, S, D) each, that one attention layer has computed so far.

    A ``static`` cache is filled once and then reused as is: cross-attention attends to the same
    encoder output at every step, so its keys and values are projected only on the first step.
    """

    def __init__(self, *, static: bool = False) -> None:
        self.static = static
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.keys is None else self.keys.shape[-2]

    def __repr__(self) -> str:
        shape = None if self.keys is None else tuple(self.keys.shape)
        return f"KVCache(static={self.static}, keys={shape})"

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the keys and values (B, H, T, D) of T new positions; return all of them so far."""
        if self.static and self.keys is not None:
            raise RuntimeError("a static cache is filled once; make a new one for new inputs")
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            if keys.shape[:2] != self.keys.shape[:2]:
                raise ValueError(
                    f"keys: expected (B, H) = {tuple(self.keys.shape[:2])} like the cached keys, "
                    f"got shape {tuple(keys.shape)}"
                )
            self.keys = torch.cat([self.keys, keys], dim=-2)  # (B, H, S + T, D)
            self.values = torch.cat([self.values, values], dim=-2)
        return self.keys, self.values


@dataclass
class LayerCache:
    """The caches of one decoder layer: its self-attention, and its cross-attention (static)."""

    self_attn: KVCache = field(default_factory=KVCache)
    cross_attn: KVCache = field(default_factory=lambda: KVCache(static=True))


def new_cache(num_layers: int) -> list[LayerCache]:
    """An empty cache for a decoder of ``num_layers`` layers."""
    return [LayerCache() for _ in range(num_layers)]


def cache_length(cache: list[LayerCache] | None) -> int:
    """The number of positions already in ``cache`` (0 for ``None``): the next position."""
    return 0 if not cache else len(cache[0].self_attn)
