"""tfcourse.tokenizers: round trips, specials, padding, unknown tokens, bad input."""

import pytest
import torch

from tfcourse.tokenizers import CharTokenizer, WordTokenizer, split_words


def test_char_tokenizer_specials_come_first_and_pad_is_zero() -> None:
    tok = CharTokenizer("abc")
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.cls_id is None
    assert tok.vocab_size == len(tok) == 5 + 3
    assert tok.special_ids == (0, 1, 2, 3, 4)
    assert tok.encode("cab") == [7, 5, 6]


def test_char_round_trip_with_bos_and_eos() -> None:
    text = "The 5th of March, 2021!"
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and len(ids) == len(text) + 2
    assert tok.decode(ids) == text
    assert tok.decode(torch.tensor(ids)) == text
    assert tok.decode(ids, skip_specials=False) == "<bos>" + text  # reading stops at <eos>
    assert tok.decode(ids, skip_specials=False, stop_at_eos=False) == f"<bos>{text}<eos>"


def test_from_text_uses_the_sorted_set_of_characters() -> None:
    tok = CharTokenizer.from_text("banana")
    assert tok.tokens[len(tok.specials):] == ["a", "b", "n"]
    assert CharTokenizer("aab").vocab_size == 5 + 2  # duplicates dropped


def test_unknown_characters_become_unk() -> None:
    tok = CharTokenizer("ab")
    assert tok.encode("abz") == [5, 6, tok.unk_id]
    assert tok.decode(tok.encode("abz")) == "ab"
    assert tok.decode(tok.encode("abz"), skip_specials=False) == "ab<unk>"


def test_decode_stops_at_eos() -> None:
    tok = CharTokenizer("ab")
    ids = [tok.bos_id, 5, 6, tok.eos_id, 5, 5, tok.pad_id]
    assert tok.decode(ids) == "ab"
    assert tok.decode(ids, stop_at_eos=False) == "abaa"


def test_encode_batch_pads_at_the_end_with_pad_id() -> None:
    tok = CharTokenizer("abc")
    batch = tok.encode_batch(["a", "abc", ""], add_eos=True)
    assert batch.dtype == torch.long and batch.shape == (3, 4)
    assert batch.tolist() == [[5, 2, 0, 0], [5, 6, 7, 2], [2, 0, 0, 0]]
    assert tok.decode_batch(batch) == ["a", "abc", ""]
    fixed = tok.encode_batch(["a", "abcabc"], max_len=5)
    assert fixed.tolist() == [[5, 0, 0, 0, 0], [5, 6, 7, 5, 6]]  # padded, or cut, to max_len


def test_word_tokenizer_keeps_the_most_frequent_words() -> None:
    text = "The cat sat. The cat ran. The dog sat, and the bird flew away!"
    tok = WordTokenizer.from_text(text, max_vocab=6 + 4)
    words = tok.tokens[len(tok.specials):]
    assert words == ["the", ".", "cat", "sat"]  # by count, ties alphabetical
    assert (tok.pad_id, tok.mask_id, tok.cls_id) == (0, 4, 5)
    assert tok.encode("The dog sat.") == [6, tok.unk_id, 9, 7]
    assert tok.vocab_size == 10


def test_word_round_trip_lower_cases_and_respaces() -> None:
    text = "Assert statements (see below) are a convenient way to insert debugging assertions."
    tok = WordTokenizer.from_text(text)
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert tok.decode(ids) == text.lower()
    assert split_words("Don't panic, Arthur.") == ["don't", "panic", ",", "arthur", "."]
    batch = tok.encode_batch([text, "see below"])
    assert tok.decode_batch(batch) == [text.lower(), "see below"]


def test_bad_input_gets_clear_errors() -> None:
    with pytest.raises(ValueError, match="alphabet: expected single characters"):
        CharTokenizer(["ab", "c"])
    with pytest.raises(ValueError, match="alphabet: expected at least one character"):
        CharTokenizer("")
    with pytest.raises(ValueError, match="specials: expected '<pad>' first"):
        CharTokenizer("ab", specials=("<bos>", "<pad>", "<unk>"))
    with pytest.raises(ValueError, match=r"specials: \['a'\] are also in the vocabulary"):
        CharTokenizer("ab", specials=("<pad>", "<unk>", "a"))
    with pytest.raises(ValueError, match="vocabulary: expected lower-cased single words"):
        WordTokenizer(["<cls>", "a"])
    with pytest.raises(ValueError, match="add_bos: this tokenizer has no <bos> token"):
        CharTokenizer("ab", specials=("<pad>", "<unk>")).encode("a", add_bos=True)
    tok = CharTokenizer("ab")
    with pytest.raises(TypeError, match="text: expected a str, got list"):
        tok.encode(["a"])
    with pytest.raises(TypeError, match="texts: expected a non-empty list of str, got a str"):
        tok.encode_batch("ab")
    with pytest.raises(ValueError, match="max_len: expected a positive int"):
        tok.encode_batch(["ab"], max_len=0)
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, 7\), got 9"):
        tok.decode([9])
    with pytest.raises(ValueError, match=r"ids: expected a 2-D tensor \(B, T\), got \(3,\)"):
        tok.decode_batch(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_vocab: expected an int larger than the 6 specials"):
        WordTokenizer.from_text("a b", max_vocab=6)
