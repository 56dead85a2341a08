"""tfcourse.data: the date task, step-deterministic batches and the text corpus."""

import datetime
import re

import pytest
import torch

from tfcourse.data import (
    DATE_FORMATS,
    DateTask,
    batches_from_tensors,
    date_pairs,
    format_date,
    random_dates,
    split_of,
)
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
