"""tfcourse.data: the date task, step-deterministic batches and the text corpus."""

import datetime
import random
import re

import pytest
import torch

from tfcourse.data import (
    DATE_FORMATS,
    DateTask,
    batches_from_tensors,
    corpus_stats,
    date_pairs,
    format_date,
    lm_batches,
    python_docs,
    random_dates,
    scramble,
    sentences,
    split_of,
    train_val_split,
    word_order_task,
)
from tfcourse.data import text as text_module
from tfcourse.data.dates import FIRST_DATE, LAST_DATE

# How the standard library reads each format back (strptime, in the C locale's English names).
PARSERS = {
    "5 March 2021": "%d %B %Y",
    "March 5, 2021": "%B %d, %Y",
    "Mar 5, 2021": "%b %d, %Y",
    "Friday, March 5 2021": "%A, %B %d %Y",
    "the 5th of March 2021": "the %d of %B %Y",
    "05/03/2021": "%d/%m/%Y",
    "5.3.21": "%d.%m.%y",
    "05-MAR-2021": "%d-%b-%Y",
}


def parse(text: str, fmt: str) -> datetime.date:
    if fmt == "the 5th of March 2021":
        text = re.sub(r"(\d+)(st|nd|rd|th)", r"\1", text)
    date = datetime.datetime.strptime(text, PARSERS[fmt]).date()
    if fmt == "5.3.21" and date > LAST_DATE:  # strptime reads 50..68 as 2050..2068
        date = date.replace(year=date.year - 100)
    return date


def test_every_format_parses_back_to_the_same_date() -> None:
    assert set(PARSERS) == set(DATE_FORMATS)
    dates = random_dates(2000, seed=3) + [FIRST_DATE, LAST_DATE, datetime.date(2000, 2, 29)]
    for fmt in DATE_FORMATS:
        for date in dates:
            assert parse(format_date(date, fmt), fmt) == date, (fmt, date)
    example = datetime.date(2021, 3, 5)
    assert all(format_date(example, fmt) == fmt for fmt in DATE_FORMATS)  # names are examples
    assert format_date(datetime.date(2011, 1, 11), "the 5th of March 2021").startswith("the 11th")
    assert format_date(datetime.date(2011, 1, 22), "the 5th of March 2021").startswith("the 22nd")


def test_date_pairs_are_deterministic_per_seed() -> None:
    assert date_pairs(50, seed=1) == date_pairs(50, seed=1)
    assert date_pairs(50, seed=1) != date_pairs(50, seed=2)
    pairs = date_pairs(300, seed=0, split="test")
    assert len({target for _, target in pairs}) == 300  # distinct dates
    for source, target in pairs:
        assert datetime.date.fromisoformat(target) >= FIRST_DATE
        assert any(format_date(datetime.date.fromisoformat(target), f) == source
                   for f in DATE_FORMATS)
    assert len({source for source, _ in pairs}) > 250  # the formats vary


def test_train_and_test_dates_are_disjoint() -> None:
    train = {t for _, t in date_pairs(5000, seed=0, split="train")}
    test = {t for _, t in date_pairs(3000, seed=0, split="test")}
    assert not train & test
    assert all(split_of(datetime.date.fromisoformat(t)) == "test" for t in test)
    all_dates = random_dates(3000, seed=5)
    fraction = sum(split_of(d) == "test" for d in all_dates) / len(all_dates)
    assert 0.07 < fraction < 0.13
    batch_targets = DateTask().target_tokenizer.decode_batch(DateTask().batches(256, seed=4)(7)[1])
    assert not set(batch_targets) & test


def test_date_task_tensors() -> None:
    task = DateTask()
    pairs = [("5.3.21", "2021-03-05"), ("Wednesday, September 30 2020", "2020-09-30")]
    src, tgt = task.tensors(pairs)
    assert src.shape == (2, 28) and tgt.shape == (2, task.target_len) == (2, 12)
    assert src.dtype == tgt.dtype == torch.long
    assert task.max_source_len == 28
    assert (tgt[:, 0] == task.target_tokenizer.bos_id).all()
    assert (tgt[:, -1] == task.target_tokenizer.eos_id).all()
    assert (src[0, 6:] == task.source_tokenizer.pad_id).all()
    assert task.source_tokenizer.decode_batch(src) == [p[0] for p in pairs]
    assert task.target_tokenizer.decode_batch(tgt) == [p[1] for p in pairs]
    assert task.source_tokenizer.unk_id not in src  # the source alphabet covers every format


def test_date_batches_are_deterministic_in_step() -> None:
    task = DateTask()
    batches = task.batches(32, seed=0)
    src, tgt = batches(5)
    assert src.shape[0] == tgt.shape[0] == 32 and tgt.shape[1] == 12
    again = task.batches(32, seed=0)(5)
    assert torch.equal(src, again[0]) and torch.equal(tgt, again[1])
    assert not torch.equal(tgt, batches(6)[1])
    assert not torch.equal(tgt, task.batches(32, seed=1)(5)[1])


def test_batches_from_tensors_shuffle_each_epoch_deterministically() -> None:
    x = torch.arange(10)
    y = x * 10
    batches = batches_from_tensors(x, y, batch_size=3, seed=0)
    epoch0 = torch.cat([batches(s)[0] for s in range(3)])
    assert len(set(epoch0.tolist())) == 9  # 3 steps per epoch, no row twice
    bx, by = batches(4)
    assert torch.equal(by, bx * 10)  # rows stay aligned
    again = batches_from_tensors(x, y, batch_size=3, seed=0)
    assert all(torch.equal(batches(s)[0], again(s)[0]) for s in range(7))
    epoch1 = torch.cat([batches(s)[0] for s in range(3, 6)])
    assert not torch.equal(epoch0, epoch1)
    assert isinstance(batches_from_tensors(x, batch_size=2)(0), torch.Tensor)


def test_bad_data_arguments_get_clear_errors() -> None:
    with pytest.raises(ValueError, match="split: expected one of"):
        date_pairs(3, seed=0, split="valid")
    with pytest.raises(ValueError, match=r"n: expected at most \d+ \(the test dates\)"):
        random_dates(10**6, seed=0, split="test")
    with pytest.raises(ValueError, match="seed: expected an int >= 0, got -1"):
        date_pairs(3, seed=-1)
    with pytest.raises(ValueError, match="fmt: expected one of"):
        format_date(FIRST_DATE, "%Y")
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1, got 0"):
        DateTask().batches(0)
    with pytest.raises(ValueError, match="step: expected an int >= 0"):
        DateTask().batches(2)(-1)
    with pytest.raises(ValueError, match=r"tensors\[1\]: expected size 4 in dimension 0"):
        batches_from_tensors(torch.zeros(4), torch.zeros(5), batch_size=2)
    with pytest.raises(ValueError, match="batch_size: expected at most the 4 rows"):
        batches_from_tensors(torch.zeros(4), batch_size=5)


# --- the text corpus ---


def test_python_docs_is_prose_and_deterministic() -> None:
    text = python_docs()
    stats = corpus_stats(text)
    print(f"corpus: {stats}")
    assert stats["characters"] > 200_000 and stats["words"] > 40_000
    assert text == python_docs.__wrapped__()  # the same text when built again
    assert not re.search(r"::=|>>>|\n\n|  |\*{3,}|={3,}", text)  # no code, headings
    assert '"x and y" first evaluates x; if x is false' in text  # *emphasis* reduced
    assert 'it should yield an iterable object.' in text
    assert "CPython implementation detail: " in text  # **strong** reduced
    assert all(ord(c) < 128 for c in text)
    assert "Assert statements are a convenient way to insert debugging assertions into a " \
           "program:" in text
    lines = text.split("\n")
    assert all(line == line.strip() and line for line in lines)


def test_python_docs_explains_a_missing_topics_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydoc_data.topics

    monkeypatch.setattr(pydoc_data.topics, "topics", ["moved"])
    with pytest.raises(RuntimeError, match="pydoc_data.topics.topics is no longer a dict of str"):
        text_module._topics()
    monkeypatch.delattr(pydoc_data.topics, "topics")
    with pytest.raises(RuntimeError, match="this Python has no pydoc_data.topics.topics"):
        text_module._topics()


def test_train_val_split_cuts_at_a_line_break() -> None:
    text = python_docs()
    train, val = train_val_split(text, 0.1)
    assert train + val == text and train.endswith("\n")
    assert 0.09 < len(val) / len(text) < 0.11
    with pytest.raises(ValueError, match=r"val_fraction: expected a number in \(0, 1\), got 1"):
        train_val_split(text, 1)


def test_sentences() -> None:
    text = 'One sentence, e.g. this one. Another in 3.11? "Quoted" text!\nA new line'
    assert sentences(text) == ["One sentence, e.g. this one.", "Another in 3.11?",
                               '"Quoted" text!', "A new line"]
    assert len(sentences(python_docs())) > 2000


def test_lm_batches_are_random_windows_deterministic_in_step() -> None:
    ids = torch.arange(1000)
    batches = lm_batches(ids, batch_size=8, block_size=16, seed=0)
    windows = batches(3)
    assert windows.shape == (8, 17) and windows.dtype == torch.long
    assert torch.equal(windows[:, 1:] - windows[:, :-1], torch.ones(8, 16, dtype=torch.long))
    assert torch.equal(windows, lm_batches(ids, batch_size=8, block_size=16, seed=0)(3))
    assert not torch.equal(windows, batches(4))
    assert not torch.equal(windows, lm_batches(ids, batch_size=8, block_size=16, seed=1)(3))
    last = lm_batches(torch.arange(5), batch_size=64, block_size=4)(0)
    assert (last == torch.arange(5)).all()  # the only window of a text of block_size + 1 ids
    with pytest.raises(ValueError, match="block_size: expected at most 4 for 5 ids, got 5"):
        lm_batches(torch.arange(5), batch_size=1, block_size=5)
    with pytest.raises(TypeError, match="ids: expected a LongTensor"):
        lm_batches(torch.zeros(10), batch_size=1, block_size=2)


def test_scramble_never_returns_the_sentence() -> None:
    rng = random.Random(0)
    for _ in range(200):
        for swaps in (None, 1, 3):
            assert scramble("It is so.", rng, swaps) != "It is so."
            assert scramble("a a b", rng, swaps) != "a a b"
    out = scramble("The cat sat on the mat.", random.Random(1))
    assert out[0].isupper() and out.endswith(".") and out.count(".") == 1
    assert sorted(out.lower().rstrip(".").split()) == sorted("the cat sat on the mat".split())


def test_word_order_task_is_balanced_and_disjoint() -> None:
    train_text, val_text = train_val_split(python_docs())
    train = word_order_task(sentences(train_text), 256, seed=0)
    test = word_order_task(sentences(val_text), 200, seed=1, exclude=sentences(train_text))
    assert train == word_order_task(sentences(train_text), 256, seed=0)
    for examples in (train, test):
        labels = [label for _, label in examples]
        assert sorted(set(labels)) == [0, 1] and labels.count(0) == len(labels) // 2
        assert all(6 <= len(s.split()) <= 30 for s, _ in examples)
    originals = set(sentences(train_text))
    assert all((s in originals) == bool(label) for s, label in train)  # 0: never as written
    words = {" ".join(sorted(s.lower().split())) for s, _ in train}
    assert not words & {" ".join(sorted(s.lower().split())) for s, _ in test}
    swapped = word_order_task(sentences(train_text), 64, seed=0, swaps=1)
    for (s, label), (original, _) in zip(swapped, word_order_task(sentences(train_text), 64,
                                                                   seed=0), strict=True):
        differ = sum(a != b for a, b in zip(s.split(), original.split(), strict=True))
        assert differ == (0 if label else 2) or not label and s.lower() != original.lower()
    with pytest.raises(ValueError, match="n: expected at most the 1 usable sentences"):
        word_order_task(["one two three four five six."], 2)
