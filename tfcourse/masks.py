"""Attention masks (book: chapter 1, section *Masks*).

Convention throughout the course, the same as
:func:`torch.nn.functional.scaled_dot_product_attention`: a boolean mask is ``True`` where a query
**may attend** to a key. (``nn.MultiheadAttention`` uses the opposite convention, ``True`` =
blocked; :mod:`tfcourse` never does.) An additive mask is a float
tensor added to the scores: ``0`` keeps a score, ``-inf`` removes it.
"""

from __future__ import annotations

import torch

from tfcourse import _validate


def causal_mask(
    num_queries: int, num_keys: int | None = None, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """Boolean (T, S) mask that lets query i attend to keys 0..i and none after.

    With ``num_keys`` S larger than ``num_queries`` T the queries are taken as the *last* T
    positions of the sequence (the case of decoding with a cache): query i sees keys up to
    ``i + S - T``.
    """
    num_keys = num_queries if num_keys is None else num_keys
    for name, value in (("num_queries", num_queries), ("num_keys", num_keys)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if num_keys < num_queries:
        raise ValueError(
            f"num_keys: expected at least num_queries={num_queries} keys, got {num_keys}"
        )
    ones = torch.ones(num_queries, num_keys, dtype=torch.bool, device=device)
    return ones.tril(diagonal=num_keys - num_queries)  # (T, S)


def padding_mask(lengths: torch.Tensor, num_keys: int) -> torch.Tensor:
    """Boolean (B, 1, 1, S) mask that is True on the first ``lengths[b]`` keys of sequence b.

    The two singleton axes broadcast over heads and queries, so the mask can be passed as is to
    attention over (B, H, T, S) scores.
    """
    lengths = _validate.rank(lengths, "lengths", 1, "(B,)")
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer tensor, got dtype {lengths.dtype}")
    if not isinstance(num_keys, int) or num_keys < 1:
        raise ValueError(f"num_keys: expected a positive int, got {num_keys!r}")
    if lengths.numel() and (lengths.min() < 0 or lengths.max() > num_keys):
        raise ValueError(
            f"lengths: expected values in [0, num_keys={num_keys}], got {lengths.tolist()}"
        )
    positions = torch.arange(num_keys, device=lengths.device)  # (S,)
    return (positions < lengths[:, None])[:, None, None, :]  # (B, 1, 1, S)


def combine_masks(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """One mask that allows what every mask allows (``None`` entries are skipped), broadcast
    together: the logical AND of boolean masks, or, when any mask is additive, the sum of the
    additive forms (a blocked boolean entry becomes ``-inf``)."""
    given = [(i, m) for i, m in enumerate(masks) if m is not None]
    for i, m in given:
        if _validate.tensor(m, f"masks[{i}]").dtype != torch.bool and not m.is_floating_point():
            raise TypeError(
                f"masks[{i}]: expected a bool mask (True = attend) or a float additive mask, "
                f"got dtype {m.dtype}"
            )
    if not given:
        return None
    additive = [m for _, m in given if m.is_floating_point()]
    result = None
    for _, m in given:
        if additive and m.dtype == torch.bool:
            m = to_additive_mask(m, additive[0].dtype)
        result = m if result is None else (result + m if additive else result & m)
    return result


def to_additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a boolean mask into an additive one: 0 where True, ``-inf`` where False.

    ``-inf`` rather than a large negative number such as ``-1e9``, which overflows in float16.
    """
    if _validate.tensor(mask, "mask").dtype != torch.bool:
        raise TypeError(f"mask: expected a bool mask, got dtype {mask.dtype}")
    additive = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return additive.masked_fill(~mask, float("-inf"))
