"""Batches as a function of the step: ``batches(step) -> batch``.

The trainer asks for the batch of step ``step``, and the answer depends only on the data, the
seed and the step. A run resumed from a checkpoint at step k therefore sees exactly the batches
that the uninterrupted run saw after step k (book: chapter 2, the training loop).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from tfcourse import _validate


def step_seed(seed: int, step: int) -> int:
    """A 64-bit seed mixed from ``(seed, step)`` by NumPy's ``SeedSequence`` (a hash, the same on
    every machine and version), for a generator private to one step."""
    _validate.integer(seed, "seed")
    _validate.integer(step, "step")
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0])


def step_generator(seed: int, step: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`step_seed`."""
    return torch.Generator().manual_seed(step_seed(seed, step))


def batches_from_tensors(
    *tensors: torch.Tensor, batch_size: int, seed: int = 0
) -> Callable[[int], torch.Tensor | tuple[torch.Tensor, ...]]:
    """Mini-batches of rows of ``tensors`` (same first dimension N), reshuffled every epoch.

    Epoch ``e`` visits the rows in a permutation drawn from ``(seed, e)``; each epoch has
    ``N // batch_size`` steps (the incomplete last batch is dropped). ``batches(step)`` returns
    the rows of every tensor (a tuple), or the one tensor when only one was given.
    """
    if not tensors:
        raise ValueError("tensors: expected at least one tensor, got none")
    for i, t in enumerate(tensors):
        _validate.rank(t, f"tensors[{i}]", (1,), "(N, ...)")
        _validate.size(t, f"tensors[{i}]", 0, len(tensors[0]), "N, like tensors[0]")
    _validate.integer(batch_size, "batch_size", 1)
    _validate.integer(seed, "seed")
    n = len(tensors[0])
    if batch_size > n:
        raise ValueError(f"batch_size: expected at most the {n} rows of the tensors, "
                         f"got {batch_size}")
    steps_per_epoch = n // batch_size

    def batches(step: int) -> torch.Tensor | tuple[torch.Tensor, ...]:
        _validate.integer(step, "step")
        epoch, i = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=step_generator(seed, epoch))
        rows = order[i * batch_size : (i + 1) * batch_size].to(tensors[0].device)
        picked = tuple(t[rows] for t in tensors)
        return picked if len(picked) > 1 else picked[0]

    return batches
