"""Synthetic in-context recall tasks, the benchmarks of sub-quadratic sequence models (book:
chapters 7 to 9, Hyena, Mamba and Jamba).

* Associative recall (Ba et al., 2016, "Using Fast Weights to Attend to the Recent Past"), as
  used by H3 (Fu et al., 2023, section 3.1) and Hyena (Poli et al., 2023, "Hyena Hierarchy",
  section 4.1): key-value pairs, then one key as a query, whose value is the answer.
* Multi-query associative recall, MQAR (Arora et al., 2023, "Zoology: Measuring and Improving
  Recall in Efficient Language Models", section 3): many queries per sequence, on which gated
  convolutions that solve single-query recall fall behind attention, as they do on real text.
* Induction heads (Olsson et al., 2022, "In-context Learning and Induction Heads"), as in Hyena
  (section 4.1) and Mamba (Gu and Dao, 2023, section 4.1.2): after a trigger token, recall the
  token that followed the trigger's earlier occurrence.
* Selective copying (Gu and Dao, 2023, section 4.1.1, Figure 2): copy the few data tokens
  scattered among blanks, in order; which positions hold them changes from sequence to sequence.

A batch is ``(tokens, targets)``, both (B, T) int64. A causal model reads ``tokens[:, :t+1]``
and must output ``targets[:, t]`` at position t; ``targets`` is :data:`IGNORE_INDEX` except at
the positions where something must be recalled. Token 0 is reserved as the blank. Everything
is generated: :func:`recall_batches` draws fresh sequences at every step, so a model cannot pass
by memorising a training set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from tfcourse import _validate
from tfcourse.data.batching import step_generator

# F.cross_entropy's default ignore_index, the same value as tfcourse.language_models.IGNORE_INDEX
# (not imported from there, to keep this module light).
IGNORE_INDEX = -100
BLANK = 0
TRIGGER = 1  # the induction-head task's special token
MARKER = 1  # selective copying's "copy now" token: each task reserves token 1 for its own use

Batch = tuple[torch.Tensor, torch.Tensor]


def _distinct(
    batch_size: int, n: int, population: int, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, n): in each row, n distinct ints of 0..population-1 in random order, a uniformly random
    draw without replacement. Floyd's algorithm (Bentley and Floyd, 1987, "A sample of
    brilliance") costs O(n) per row where sorting population random numbers costs O(population),
    which matters for vocabularies of thousands."""
    sample = torch.empty(batch_size, n, dtype=torch.int64)
    for i, top in enumerate(range(population - n, population)):
        # Invariant: sample[:, :i+1] is a uniform (i+1)-subset of 0..top.
        pick = torch.randint(top + 1, (batch_size, 1), generator=generator)
        taken = (sample[:, :i] == pick).any(-1, keepdim=True)
        sample[:, i : i + 1] = torch.where(taken, top, pick)
    # Floyd's subset is uniform but its order is not (a late slot is more often `top`): shuffle.
    return sample.gather(1, torch.rand(batch_size, n, generator=generator).argsort(-1))


def _pairs(
    batch_size: int, num_pairs: int, vocab_size: int, generator: torch.Generator | None
) -> Batch:
    """Distinct keys (B, num_pairs) from 1..K and values (B, num_pairs) from K+1..vocab_size-1,
    with K = (vocab_size - 1) // 2 (so there are at least K values)."""
    _validate.integer(vocab_size, "vocab_size", 3)
    num_keys = (vocab_size - 1) // 2
    if num_pairs > num_keys:
        raise ValueError(f"num_pairs: expected at most {num_keys} (the distinct keys 1..{num_keys} "
                         f"of vocab_size={vocab_size}), got {num_pairs}")
    keys = _distinct(batch_size, num_pairs, num_keys, generator) + 1
    values = torch.randint(num_keys + 1, vocab_size, (batch_size, num_pairs), generator=generator)
    return keys, values


def _interleave(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``k1 v1 k2 v2 ...``: (B, 2 * num_pairs)."""
    return torch.stack((keys, values), dim=-1).flatten(1)


def associative_recall(
    batch_size: int, *, num_pairs: int, vocab_size: int,
    generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> Batch:
    """``k1 v1 k2 v2 ... kn vn q``: ``num_pairs`` key-value pairs and one of the keys as the query
    ``q`` at the last position, whose target is that key's value; T = 2 * num_pairs + 1.

    The keys of a sequence are distinct, drawn from 1..K with K = (vocab_size - 1) // 2; the
    values come from K+1..vocab_size-1 and may repeat. One label per sequence.
    """
    _validate.integer(batch_size, "batch_size", 1)
    _validate.integer(num_pairs, "num_pairs", 1)
    keys, values = _pairs(batch_size, num_pairs, vocab_size, generator)
    query = torch.randint(num_pairs, (batch_size, 1), generator=generator)
    tokens = torch.cat((_interleave(keys, values), keys.gather(1, query)), dim=1)
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, -1:] = values.gather(1, query)
    return tokens.to(device), targets.to(device)


def multi_query_associative_recall(
    batch_size: int, *, seq_len: int, num_pairs: int, vocab_size: int,
    generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> Batch:
    """MQAR: ``num_pairs`` key-value pairs in the first 2 * num_pairs positions, then every key
    once more as a query, at its own random position in the rest of the sequence; the other
    positions hold the blank 0. The target at each query is that key's value: ``num_pairs``
    labels per sequence.

    Keys and values are drawn as in :func:`associative_recall`. The query positions are uniform
    over positions 2 * num_pairs..seq_len-1, without replacement. Zoology draws them instead so
    that the distance back to the pair follows a power law (most queries come soon after the
    pairs); the uniform choice is simpler and asks for recall over the whole sequence.
    """
    _validate.integer(batch_size, "batch_size", 1)
    _validate.integer(seq_len, "seq_len", 3)
    _validate.integer(num_pairs, "num_pairs", 1)
    if 3 * num_pairs > seq_len:
        raise ValueError(f"num_pairs: expected at most seq_len // 3 = {seq_len // 3} (2 positions "
                         f"per pair and 1 per query), got {num_pairs}")
    keys, values = _pairs(batch_size, num_pairs, vocab_size, generator)
    start = 2 * num_pairs
    # Key i is asked at positions[:, i], a random order unrelated to the order of the pairs.
    positions = _distinct(batch_size, num_pairs, seq_len - start, generator) + start
    tokens = torch.full((batch_size, seq_len), BLANK, dtype=torch.int64)
    tokens[:, :start] = _interleave(keys, values)
    tokens.scatter_(1, positions, keys)
    targets = torch.full_like(tokens, IGNORE_INDEX).scatter_(1, positions, values)
    return tokens.to(device), targets.to(device)


def induction_heads(
    batch_size: int, *, seq_len: int, vocab_size: int,
    generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> Batch:
    """Random tokens from 2..vocab_size-1, with the trigger token 1 exactly twice: once at a
    random position p in 0..seq_len-3, followed by a token x, and again at the last position,
    whose target is x. One label per sequence."""
    _validate.integer(batch_size, "batch_size", 1)
    _validate.integer(seq_len, "seq_len", 3)
    _validate.integer(vocab_size, "vocab_size", 3)
    tokens = torch.randint(TRIGGER + 1, vocab_size, (batch_size, seq_len), generator=generator)
    trigger = torch.randint(seq_len - 2, (batch_size, 1), generator=generator)
    tokens.scatter_(1, trigger, TRIGGER)
    tokens[:, -1] = TRIGGER
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, -1:] = tokens.gather(1, trigger + 1)
    return tokens.to(device), targets.to(device)


def selective_copying(
    batch_size: int, *, seq_len: int, num_tokens: int, vocab_size: int,
    generator: torch.Generator | None = None, device: torch.device | str | None = None,
) -> Batch:
    """``num_tokens`` data tokens at random positions among blanks in the first
    seq_len - num_tokens positions, then ``num_tokens`` copies of the marker 1; the targets at
    the markers are the data tokens in the order they came:

        tokens   7 0 0 4 0 9 0 0 1 1 1
        targets  · · · · · · · · 7 4 9      (· = IGNORE_INDEX)

    The data tokens come from 2..vocab_size-1 and may repeat; their positions are uniform
    without replacement, so the gaps between them differ in every sequence. A model must keep
    the tokens for their content, not for where they stand: a time-invariant SSM, whose
    convolution kernel weighs each distance the same way in every sequence, does poorly; the
    selective SSM can ignore the blanks (Gu and Dao, 2023, section 3.1). ``num_tokens`` labels
    per sequence.
    """
    _validate.integer(batch_size, "batch_size", 1)
    _validate.integer(seq_len, "seq_len", 2)
    _validate.integer(num_tokens, "num_tokens", 1)
    _validate.integer(vocab_size, "vocab_size", 3)
    if 2 * num_tokens > seq_len:
        raise ValueError(f"num_tokens: expected at most seq_len // 2 = {seq_len // 2} (a position "
                         f"among the blanks and a marker for each), got {num_tokens}")
    start = seq_len - num_tokens  # the first marker
    positions = _distinct(batch_size, num_tokens, start, generator).sort(dim=1).values  # (B, n)
    data = torch.randint(MARKER + 1, vocab_size, (batch_size, num_tokens), generator=generator)
    tokens = torch.full((batch_size, seq_len), BLANK, dtype=torch.int64)
    tokens.scatter_(1, positions, data)
    tokens[:, start:] = MARKER
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[:, start:] = data
    return tokens.to(device), targets.to(device)


RECALL_TASKS: dict[str, Callable[..., Batch]] = {
    "ar": associative_recall,
    "mqar": multi_query_associative_recall,
    "induction": induction_heads,
    "selective_copy": selective_copying,
}


def recall_batches(
    task: str | Callable[..., Batch], batch_size: int, *, seed: int = 0,
    device: torch.device | str | None = None, **task_kwargs: int,
) -> Callable[[int], Batch]:
    """``batches(step) -> (tokens, targets)``: a fresh batch of ``task`` (a name of
    :data:`RECALL_TASKS` or a function with their signature) drawn from ``(seed, step)``, so every
    step sees new sequences and the same step always gives the same batch (for
    :class:`tfcourse.Trainer`). ``task_kwargs`` are the task's sizes, e.g. ``num_pairs=8,
    vocab_size=64``; they are checked here, by drawing one batch."""
    if isinstance(task, str) and task not in RECALL_TASKS:
        raise ValueError(f"task: expected one of {list(RECALL_TASKS)} or a task function, "
                         f"got {task!r}")
    if not isinstance(task, str) and not callable(task):
        raise TypeError(f"task: expected a name of {list(RECALL_TASKS)} or a task function, "
                        f"got {type(task).__name__}")
    make_batch = RECALL_TASKS[task] if isinstance(task, str) else task
    _validate.integer(batch_size, "batch_size", 1)

    def batches(step: int) -> Batch:
        return make_batch(batch_size, generator=step_generator(seed, step), device=device,
                          **task_kwargs)

    batches(0)  # bad task_kwargs fail here rather than at the first training step
    return batches


def _labelled(logits: torch.Tensor, targets: torch.Tensor) -> Batch:
    """The logits (N, V) and targets (N,) of the N labelled positions."""
    logits = _validate.rank(_validate.floating(logits, "logits"), "logits", 3, "(B, T, V)")
    targets = _validate.token_ids(targets, "targets")
    if logits.shape[:2] != targets.shape:
        raise ValueError(f"logits: expected (B, T) = {tuple(targets.shape)} like targets, got "
                         f"shape {tuple(logits.shape)}")
    labelled = targets != IGNORE_INDEX
    rows, wanted = logits[labelled], targets[labelled]
    if not len(wanted):
        raise ValueError(f"targets: expected at least one position that is not IGNORE_INDEX "
                         f"({IGNORE_INDEX}), got none")
    return rows, wanted


def recall_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy of ``logits`` (B, T, V) over the positions where ``targets`` (B, T)
    is labelled, in float32 (the logits may be bfloat16)."""
    rows, wanted = _labelled(logits, targets)
    return F.cross_entropy(rows.float(), wanted)


def recall_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The fraction of labelled positions of ``targets`` (B, T) where the argmax of ``logits``
    (B, T, V) is the target."""
    rows, wanted = _labelled(logits, targets)
    return (rows.argmax(-1) == wanted).float().mean().item()
