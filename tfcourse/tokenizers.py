"""Tokenizers: text to integer ids and back (book: chapters 2 and 3).

A model sees integers, not text. A tokenizer fixes the vocabulary (V entries: a few special
tokens, then the characters or the words) and maps text to ids and ids back to text. Two are
enough for this course:

* :class:`CharTokenizer`, one id per character: the date-translation task of chapter 2 and the
  character-level language model of chapter 3;
* :class:`WordTokenizer`, one id per lower-cased word or punctuation mark, with the most frequent
  words of a training text as its vocabulary: the masked language model and the fine-tuning task
  of chapter 3.

The special tokens come first, so ``pad_id == 0``: ``<pad>`` fills batches up to a common length,
``<bos>``/``<eos>`` mark the beginning and the end of a sequence, ``<unk>`` stands for anything
outside the vocabulary, ``<mask>`` is BERT's mask token (Devlin et al. 2019, §3.1) and ``<cls>``
(words only) the token whose output a classifier may read.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Sequence

import torch

CHAR_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>", "<mask>")
WORD_SPECIALS = (*CHAR_SPECIALS, "<cls>")

# A word (letters, digits, underscores, with an inner apostrophe: "don't") or one punctuation mark.
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")
# Word-level decoding: no space before closing punctuation, none after an opening bracket.
_SPACE_BEFORE = re.compile(r" ([.,;:!?)\]}])")
_SPACE_AFTER = re.compile(r"([(\[{]) ")


class _Tokenizer:
    """What both tokenizers share: the vocabulary, the special ids, encoding and decoding."""

    def __init__(self, tokens: Sequence[str], specials: Sequence[str]) -> None:
        specials = tuple(specials)
        if not specials or specials[0] != "<pad>" or "<unk>" not in specials:
            raise ValueError(
                f"specials: expected '<pad>' first and '<unk>' among them, got {specials!r}"
            )
        if len(set(specials)) != len(specials):
            raise ValueError(f"specials: expected distinct tokens, got {specials!r}")
        clash = sorted(set(specials) & set(tokens))
        if clash:
            raise ValueError(f"specials: {clash} are also in the vocabulary")
        self.specials = specials
        self.tokens: list[str] = [*specials, *tokens]  # id -> token
        self.token_to_id = {token: i for i, token in enumerate(self.tokens)}

    # ids of the special tokens (None when a special is not in this vocabulary)
    def _special(self, token: str) -> int | None:
        return self.token_to_id.get(token) if token in self.specials else None

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return self.token_to_id["<unk>"]

    @property
    def bos_id(self) -> int | None:
        return self._special("<bos>")

    @property
    def eos_id(self) -> int | None:
        return self._special("<eos>")

    @property
    def mask_id(self) -> int | None:
        return self._special("<mask>")

    @property
    def cls_id(self) -> int | None:
        return self._special("<cls>")

    @property
    def special_ids(self) -> tuple[int, ...]:
        """The ids of every special token (for ``mask_tokens(..., special_ids=...)``)."""
        return tuple(range(len(self.specials)))

    @property
    def vocab_size(self) -> int:
        """V, the number of ids (specials included)."""
        return len(self.tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"

    # --- subclasses say how text splits into tokens and how tokens join back into text ---
    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def join(self, tokens: list[str]) -> str:
        raise NotImplementedError

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """The ids of ``text``; tokens outside the vocabulary become ``unk_id``."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        ids = [self.token_to_id.get(token, self.unk_id) for token in self.split(text)]
        for flag, name, token in ((add_bos, "add_bos", "<bos>"), (add_eos, "add_eos", "<eos>")):
            if flag and token not in self.specials:
                raise ValueError(f"{name}: this tokenizer has no {token} token")
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(
        self, ids: Iterable[int] | torch.Tensor, *, skip_specials: bool = True,
        stop_at_eos: bool = True,
    ) -> str:
        """The text of ``ids`` (a list or a 1-D tensor). Reading stops at the first ``<eos>``
        when ``stop_at_eos`` (what a decoder generated after it is not part of the output);
        special tokens are left out when ``skip_specials``."""
        if isinstance(ids, torch.Tensor):
            if ids.ndim != 1:
                raise ValueError(f"ids: expected 1 dimension (T,), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if not 0 <= int(i) < self.vocab_size:
                raise ValueError(f"ids: expected ids in [0, {self.vocab_size}), got {int(i)}")
            if stop_at_eos and int(i) == self.eos_id:
                break
            if skip_specials and int(i) < len(self.specials):
                continue
            tokens.append(self.tokens[int(i)])
        return self.join(tokens)

    def decode_batch(self, ids: torch.Tensor, **kwargs: bool) -> list[str]:
        """``decode`` for each row of a (B, T) tensor."""
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
            got = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"ids: expected a 2-D tensor (B, T), got {got}")
        return [self.decode(row, **kwargs) for row in ids]

    def encode_batch(
        self, texts: Sequence[str], *, add_bos: bool = False, add_eos: bool = False,
        max_len: int | None = None,
    ) -> torch.Tensor:
        """A (B, T) LongTensor of ids, each row padded with ``pad_id`` at the end. T is the length
        of the longest row, or ``max_len`` when given: longer rows are then cut to ``max_len``
        (the cut row loses its ``<eos>``)."""
        if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
            got = "a str" if isinstance(texts, str) else f"{type(texts).__name__} {texts!r:.40}"
            raise TypeError(f"texts: expected a non-empty list of str, got {got}")
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"max_len: expected a positive int or None, got {max_len!r}")
        rows = [self.encode(t, add_bos=add_bos, add_eos=add_eos) for t in texts]
        width = max_len if max_len is not None else max(len(r) for r in rows)
        out = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (B, T)
        for b, row in enumerate(rows):
            row = row[:width]
            out[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out


class CharTokenizer(_Tokenizer):
    """One id per character of ``alphabet`` (after the specials, in the alphabet's order).

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.encode("hole", add_eos=True)
    [6, 8, 7, 5, 2]
    >>> tok.decode([6, 8, 7, 5, 2])
    'hole'
    """

    def __init__(self, alphabet: str | Iterable[str], *,
                 specials: Sequence[str] = CHAR_SPECIALS) -> None:
        chars = list(dict.fromkeys(alphabet))  # duplicates dropped, first occurrence kept
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"alphabet: expected single characters, got {bad[:5]!r}")
        if not chars:
            raise ValueError("alphabet: expected at least one character, got none")
        super().__init__(chars, specials)

    @classmethod
    def from_text(cls, text: str, *, specials: Sequence[str] = CHAR_SPECIALS) -> CharTokenizer:
        """The alphabet is the sorted set of the characters of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        return cls(sorted(set(text)), specials=specials)

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, tokens: list[str]) -> str:
        return "".join(tokens)


def split_words(text: str) -> list[str]:
    """The lower-cased words and punctuation marks of ``text``, as :class:`WordTokenizer` sees
    them: ``"Don't panic, Arthur."`` -> ``["don't", "panic", ",", "arthur", "."]``."""
    return _WORD.findall(text.lower())


class WordTokenizer(_Tokenizer):
    """One id per lower-cased word or punctuation mark of ``vocabulary`` (after the specials).

    Build it from a training text with :meth:`from_text`, which keeps the most frequent words;
    any other word encodes to ``unk_id``. Decoding joins words with spaces (none before closing
    punctuation), so it returns the lower-cased, re-spaced text.
    """

    def __init__(self, vocabulary: Iterable[str], *,
                 specials: Sequence[str] = WORD_SPECIALS) -> None:
        words = list(dict.fromkeys(vocabulary))
        bad = [w for w in words if not isinstance(w, str) or split_words(w) != [w]]
        if bad:
            raise ValueError(f"vocabulary: expected lower-cased single words, got {bad[:5]!r}")
        if not words:
            raise ValueError("vocabulary: expected at least one word, got none")
        super().__init__(words, specials)

    @classmethod
    def from_text(cls, text: str, *, max_vocab: int = 5000, min_count: int = 1,
                  specials: Sequence[str] = WORD_SPECIALS) -> WordTokenizer:
        """The vocabulary of ``text``: its words seen at least ``min_count`` times, most frequent
        first (ties in alphabetical order), so that ``vocab_size <= max_vocab`` (specials
        included)."""
        if not isinstance(text, str):
            raise TypeError(f"text: expected a str, got {type(text).__name__}")
        if not isinstance(max_vocab, int) or max_vocab <= len(specials):
            raise ValueError(
                f"max_vocab: expected an int larger than the {len(specials)} specials, "
                f"got {max_vocab!r}"
            )
        if not isinstance(min_count, int) or min_count < 1:
            raise ValueError(f"min_count: expected a positive int, got {min_count!r}")
        counts = collections.Counter(split_words(text))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        words = [w for w, n in ranked if n >= min_count][: max_vocab - len(specials)]
        return cls(words, specials=specials)

    def split(self, text: str) -> list[str]:
        return split_words(text)

    def join(self, tokens: list[str]) -> str:
        return _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", " ".join(tokens)))
