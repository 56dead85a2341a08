"""The translation task of chapter 2: dates written by people -> ISO 8601 dates.

``"Friday, March 5 2021"``, ``"5.3.21"`` or ``"the 5th of March 2021"`` -> ``"2021-03-05"``.
A small sequence-to-sequence task with the structure of translation: the source comes in many
surface forms, the output tokens must be reordered (the year first), some source tokens must be
ignored (the weekday) and some must be rewritten (month names into numbers), so cross-attention
has an alignment to learn. The data are generated, deterministic for a seed, and the test dates
never appear in training: a date belongs to the test split when a hash of it falls in a held-out
bucket (about 10% of the dates), the same split for every seed.
"""

from __future__ import annotations

import datetime
import functools
import random
import zlib
from collections.abc import Callable, Sequence

import torch

from tfcourse import _validate
from tfcourse.data.batching import step_seed
from tfcourse.tokenizers import CharTokenizer

FIRST_DATE = datetime.date(1950, 1, 1)
LAST_DATE = datetime.date(2049, 12, 31)  # with 1950..2049, a two-digit year names one date
TEST_BUCKETS = 10  # one bucket of ten is held out: about 10% of the dates are test dates

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _ordinal(day: int) -> str:
    """1 -> '1st', 2 -> '2nd', 11 -> '11th', 23 -> '23rd'."""
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


# The human formats, each named by how it writes 2021-03-05 (English names, whatever the locale).
DATE_FORMATS: dict[str, Callable[[datetime.date], str]] = {
    "5 March 2021": lambda d: f"{d.day} {MONTHS[d.month - 1]} {d.year}",
    "March 5, 2021": lambda d: f"{MONTHS[d.month - 1]} {d.day}, {d.year}",
    "Mar 5, 2021": lambda d: f"{MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    "Friday, March 5 2021": lambda d: f"{WEEKDAYS[d.weekday()]}, {MONTHS[d.month - 1]} "
                                      f"{d.day} {d.year}",
    "the 5th of March 2021": lambda d: f"the {_ordinal(d.day)} of {MONTHS[d.month - 1]} {d.year}",
    "05/03/2021": lambda d: f"{d.day:02d}/{d.month:02d}/{d.year}",  # day first
    "5.3.21": lambda d: f"{d.day}.{d.month}.{d.year % 100:02d}",
    "05-MAR-2021": lambda d: f"{d.day:02d}-{MONTHS[d.month - 1][:3].upper()}-{d.year}",
}
SPLITS = ("train", "test")


def format_date(date: datetime.date, fmt: str) -> str:
    """``date`` written in the format named ``fmt`` (a key of :data:`DATE_FORMATS`)."""
    if fmt not in DATE_FORMATS:
        raise ValueError(f"fmt: expected one of {list(DATE_FORMATS)}, got {fmt!r}")
    return DATE_FORMATS[fmt](date)


def split_of(date: datetime.date) -> str:
    """'test' for the held-out dates (a CRC-32 of the ISO date in the held-out bucket), else
    'train'. The same on every machine, for every seed."""
    return "test" if zlib.crc32(date.isoformat().encode()) % TEST_BUCKETS == 0 else "train"


@functools.lru_cache(maxsize=3)
def _pool(split: str | None) -> tuple[datetime.date, ...]:
    days = (LAST_DATE - FIRST_DATE).days + 1
    dates = (FIRST_DATE + datetime.timedelta(days=i) for i in range(days))
    return tuple(d for d in dates if split is None or split_of(d) == split)


def _check_split(split: str | None, allow_none: bool) -> None:
    if split not in SPLITS and not (allow_none and split is None):
        raise ValueError(f"split: expected one of {SPLITS}{' or None' * allow_none}, "
                         f"got {split!r}")


def random_dates(n: int, *, seed: int, split: str | None = None) -> list[datetime.date]:
    """``n`` distinct dates between 1950-01-01 and 2049-12-31 drawn with ``seed``, from one
    ``split`` ('train' or 'test') or from all dates (None)."""
    _validate.integer(n, "n")
    _validate.integer(seed, "seed")
    _check_split(split, allow_none=True)
    pool = _pool(split)
    if n > len(pool):
        raise ValueError(f"n: expected at most {len(pool)} (the {split or 'all'} dates), got {n}")
    return random.Random(seed).sample(pool, n)


def date_pairs(n: int, *, seed: int, split: str = "train") -> list[tuple[str, str]]:
    """``n`` (source, target) pairs of distinct dates of ``split``: the source in a format drawn at
    random, the target in ISO 8601 (``"2021-03-05"``). Deterministic in ``seed``."""
    _check_split(split, allow_none=False)
    dates = random_dates(n, seed=seed, split=split)
    rng = random.Random(step_seed(seed, 1))  # the formats: a stream separate from the dates'
    names = list(DATE_FORMATS)
    return [(format_date(d, rng.choice(names)), d.isoformat()) for d in dates]


class DateTask:
    """Tokenizers, tensors and batches for the date-translation task.

    ``source_tokenizer`` knows every character of every format; ``target_tokenizer`` the digits
    and '-'. Sources are padded with ``<pad>`` (id 0) at the end; targets are
    ``<bos> 2021-03-05 <eos>``, so a target row has ``target_len == 12`` tokens and the decoder
    is fed ``tgt[:, :-1]`` to predict ``tgt[:, 1:]`` (teacher forcing).
    """

    def __init__(self) -> None:
        year = [FIRST_DATE.replace(year=2000) + datetime.timedelta(days=i) for i in range(366)]
        sources = [fmt(d) for d in year for fmt in DATE_FORMATS.values()]
        self.source_tokenizer = CharTokenizer.from_text("".join(sources))
        self.target_tokenizer = CharTokenizer("0123456789-")
        self.max_source_len = max(len(s) for s in sources)  # the year 2000 has every longest case
        self.target_len = len("2021-03-05") + 2

    def __repr__(self) -> str:
        return (f"DateTask(source vocab {self.source_tokenizer.vocab_size}, target vocab "
                f"{self.target_tokenizer.vocab_size}, max_source_len {self.max_source_len}, "
                f"target_len {self.target_len})")

    def tensors(self, pairs: Sequence[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(src (B, S), tgt (B, T))`` LongTensors for a list of (source, target) pairs; S is the
        longest source of the list, T is ``target_len``."""
        if not pairs or any(not isinstance(p, tuple) or len(p) != 2 for p in pairs):
            raise ValueError("pairs: expected a non-empty list of (source, target) tuples")
        sources, targets = zip(*pairs, strict=True)
        src = self.source_tokenizer.encode_batch(list(sources))  # (B, S)
        tgt = self.target_tokenizer.encode_batch(list(targets), add_bos=True, add_eos=True)
        return src, tgt

    def batches(
        self, batch_size: int, *, seed: int = 0, split: str = "train"
    ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
        """``batches(step) -> (src (B, S), tgt (B, T))``: ``batch_size`` fresh pairs of ``split``
        per step (dates drawn with replacement, random formats), deterministic in
        ``(seed, step)``."""
        _validate.integer(batch_size, "batch_size", 1)
        _validate.integer(seed, "seed")
        _check_split(split, allow_none=False)
        pool, names = _pool(split), list(DATE_FORMATS)

        def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            rng = random.Random(step_seed(seed, step))
            dates = rng.choices(pool, k=batch_size)
            return self.tensors([(format_date(d, rng.choice(names)), d.isoformat())
                                 for d in dates])

        return batches
