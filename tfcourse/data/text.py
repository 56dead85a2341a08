"""A real English corpus on every machine: the prose of Python's own help pages.

CPython ships the text of ``help("for")``, ``help("assert")`` and the other help topics in the
module ``pydoc_data.topics`` (a dict ``topics``: topic -> plain text rendered from the language
reference; about 465 kB). :func:`python_docs` keeps its prose: headings, grammar rules, code
examples and tables are dropped, inline markup is reduced and whitespace normalised, one
paragraph per line. The text is deterministic for a given Python version (it changes a little
between versions). Chapter 3 pre-trains its tiny language models on it.
"""

from __future__ import annotations

import functools
import importlib
import random
import re
from collections.abc import Callable, Iterable, Sequence

import torch

from tfcourse import _validate
from tfcourse.data.batching import step_generator, step_seed
from tfcourse.tokenizers import split_words

_UNDERLINE = re.compile(r"^\s*([*=\-~^\"'#+])\1{2,}\s*$")  # a heading's underline
_MARKUP = [
    (re.compile(r"\*\*([^\s*\"](?:[^*\"]*?[^\s*\"])?)\*\*"), r"\1"),  # **strong**
    (re.compile(r"(?<![\w*])\*([^\s*\"](?:[^*\"]*?[^\s*\"])?)\*(?![\w*])"), r"\1"),  # *emphasis*
    (re.compile(r"\[\d+\]"), ""),  # footnote references
    (re.compile(r"[‘’]"), "'"),
    (re.compile(r"[“”]"), '"'),
    (re.compile(r"[–—]"), "-"),
    (re.compile(r"[^\x00-\x7f]"), ""),  # a few other symbols (arrows, accents)
    (re.compile(r"\s+"), " "),
]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"(])")
_CODE_HINTS = ("::=", ">>>", "...", "==", "{", "}", " = ", "+--", "|")


def _topics() -> dict[str, str]:
    try:
        topics = importlib.import_module("pydoc_data.topics").topics
    except (ImportError, AttributeError) as error:
        raise RuntimeError(
            "python_docs: this Python has no pydoc_data.topics.topics (the help topics that "
            "CPython ships since 2.x); the corpus needs a standard CPython"
        ) from error
    if not isinstance(topics, dict) or not all(isinstance(v, str) for v in topics.values()):
        raise RuntimeError(
            "python_docs: pydoc_data.topics.topics is no longer a dict of str on this Python; "
            "tfcourse.data.text needs updating"
        )
    return topics


def _is_prose(paragraph: str) -> bool:
    """Running text: words and punctuation, ending like a sentence, with no sign of code."""
    if any(hint in paragraph for hint in _CODE_HINTS) or len(paragraph.split()) < 4:
        return False
    letters = sum(c.isalpha() or c.isspace() for c in paragraph)
    ends_like_a_sentence = paragraph.rstrip(')"')[-1:] in (".", ":", "?", "!")
    return ends_like_a_sentence and letters >= 0.8 * len(paragraph)


def _paragraphs(page: str) -> list[str]:
    """The blank-line separated blocks of one help page, lines joined, markup reduced."""
    out = []
    for block in re.split(r"\n\s*\n", page):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines or any(_UNDERLINE.match(line) for line in lines):
            continue  # a heading (or a table border)
        text = " ".join(line.strip() for line in lines)
        text = re.sub(r"^[*-] ", "", text)  # a bullet
        for pattern, replacement in _MARKUP:
            text = pattern.sub(replacement, text)
        text = text.strip()
        if text and _is_prose(text):
            out.append(text)
    return out


@functools.lru_cache(maxsize=1)
def python_docs() -> str:
    """The prose of Python's help topics (``pydoc_data.topics``, shipped with CPython), one
    paragraph per line, topics in alphabetical order."""
    topics = _topics()
    return "\n".join(p for name in sorted(topics) for p in _paragraphs(topics[name]))


def train_val_split(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """The text cut in two at a line break: the first ``1 - val_fraction`` to train on, the rest
    to validate on (contiguous, so no paragraph is in both)."""
    if not isinstance(text, str) or not text:
        raise ValueError("text: expected a non-empty str")
    if not isinstance(val_fraction, float | int) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    cut = int(len(text) * (1 - val_fraction))
    newline = text.rfind("\n", 0, cut)
    cut = newline + 1 if newline > 0 else cut
    return text[:cut], text[cut:]


def sentences(text: str) -> list[str]:
    """The sentences of ``text``: each line split after '.', '!' or '?' followed by a space and a
    capital letter, a quote or a bracket (so 'e.g. the' and '3.11' stay whole)."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected a str, got {type(text).__name__}")
    return [s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line)
            if s.strip()]


def lm_batches(
    ids: torch.Tensor, *, batch_size: int, block_size: int, seed: int = 0
) -> Callable[[int], torch.Tensor]:
    """``batches(step) -> (B, block_size + 1)`` windows of ``ids`` (N,) at random offsets,
    deterministic in ``(seed, step)``: inputs are ``w[:, :-1]``, next-token targets ``w[:, 1:]``
    (Radford et al. 2018, §3.1)."""
    ids = _validate.rank(ids, "ids", 1, "(N,)")
    if ids.dtype != torch.long:
        raise TypeError(f"ids: expected a LongTensor, got dtype {ids.dtype}")
    _validate.integer(batch_size, "batch_size", 1)
    _validate.integer(block_size, "block_size", 1)
    _validate.integer(seed, "seed")
    if len(ids) < block_size + 1:
        raise ValueError(f"block_size: expected at most {len(ids) - 1} for {len(ids)} ids, "
                         f"got {block_size}")
    offsets = torch.arange(block_size + 1)

    def batches(step: int) -> torch.Tensor:
        starts = torch.randint(0, len(ids) - block_size, (batch_size, 1),
                               generator=step_generator(seed, step))
        return ids[(starts + offsets).to(ids.device)]  # (B, T + 1)

    return batches


_END = re.compile(r"[.!?:]+$")


def scramble(sentence: str, rng: random.Random, swaps: int | None = None) -> str:
    """``sentence`` with its words out of order, never equal to it: all the words shuffled
    (``swaps=None``) or ``swaps`` random swaps of adjacent words. The final punctuation stays at
    the end and the capital letter at the start, so neither gives the answer away."""
    words = sentence.split()
    end = _END.search(words[-1])
    if end and len(words[-1]) > len(end.group()):
        words[-1] = words[-1][: end.start()]
    capital = words[0][:1].isupper() and words[0][1:].islower()
    if capital:
        words[0] = words[0].lower()
    result = sentence
    while result == sentence:
        shuffled = words[:]
        if swaps is None:
            rng.shuffle(shuffled)
        else:
            for _ in range(swaps):
                i = rng.randrange(len(words) - 1)
                shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
        if capital:
            shuffled[0] = shuffled[0][:1].upper() + shuffled[0][1:]
        result = " ".join(shuffled) + (end.group() if end else "")
    return result


def word_order_task(
    sentences: Sequence[str], n: int, *, seed: int = 0, swaps: int | None = None,
    min_words: int = 6, max_words: int = 30, exclude: Iterable[str] = (),
) -> list[tuple[str, int]]:
    """``n`` labelled examples for fine-tuning: ``(sentence, 1)`` for a sentence as written,
    ``(scrambled sentence, 0)`` for one with its words out of order (see :func:`scramble`).

    Distinct sentences of ``min_words`` to ``max_words`` words, not in ``exclude``, are drawn
    without replacement; each is used once, as written or scrambled; exactly ``n // 2`` are
    scrambled. For a held-out test set, draw it from other sentences::

        train_text, val_text = train_val_split(python_docs())
        train = word_order_task(sentences(train_text), 256, seed=0)
        test = word_order_task(sentences(val_text), 200, seed=1, exclude=sentences(train_text))

    Telling English word order from a scramble is what a language model learns in
    pre-training and little else, which makes the task a fair test of what pre-training brings.
    """
    _validate.integer(n, "n", 2)
    _validate.integer(seed, "seed")
    _validate.integer(min_words, "min_words", 2)
    _validate.integer(max_words, "max_words", min_words)
    if swaps is not None:
        _validate.integer(swaps, "swaps", 1)
    excluded = set(exclude)
    pool = sorted({s for s in sentences if min_words <= len(s.split()) <= max_words
                   and len(set(s.split())) > 1 and s not in excluded})
    if len(pool) < n:
        raise ValueError(f"n: expected at most the {len(pool)} usable sentences ({min_words} to "
                         f"{max_words} words), got {n}")
    rng = random.Random(step_seed(seed, 0))
    chosen = rng.sample(pool, n)
    labels = [1] * (n - n // 2) + [0] * (n // 2)
    rng.shuffle(labels)
    return [(s if label else scramble(s, rng, swaps), label)
            for s, label in zip(chosen, labels, strict=True)]


def corpus_stats(text: str) -> dict[str, int]:
    """Characters, words (as :class:`~tfcourse.tokenizers.WordTokenizer` splits them), lines."""
    return {"characters": len(text), "words": len(split_words(text)),
            "lines": text.count("\n") + 1}
