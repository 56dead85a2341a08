"""tfcourse.data.recall: associative recall, MQAR, induction heads and selective copying, their
batches and scores."""

import pytest
import torch
import torch.nn.functional as F

from tfcourse.data import (
    RECALL_TASKS,
    associative_recall,
    induction_heads,
    multi_query_associative_recall,
    recall_accuracy,
    recall_batches,
    recall_loss,
    selective_copying,
)
from tfcourse.data.recall import IGNORE_INDEX, MARKER

SIZES = {
    "ar": {"num_pairs": 6, "vocab_size": 20},
    "mqar": {"seq_len": 40, "num_pairs": 8, "vocab_size": 30},
    "induction": {"seq_len": 24, "vocab_size": 10},
    "selective_copy": {"seq_len": 24, "num_tokens": 5, "vocab_size": 10},
}
LOOKUP_TASKS = ["ar", "mqar", "induction"]  # a query token recalls what followed it earlier


def draw(task: str, batch_size: int = 64, seed: int = 0, **sizes: int):
    generator = torch.Generator().manual_seed(seed)
    return RECALL_TASKS[task](batch_size, generator=generator, **(sizes or SIZES[task]))


def answer_by_lookup(sequence: list[int], t: int) -> int:
    """The token after the one earlier occurrence of ``sequence[t]`` (the reference answer)."""
    earlier = [j for j in range(t) if sequence[j] == sequence[t]]
    assert len(earlier) == 1, f"token {sequence[t]} occurs {len(earlier)} times before {t}"
    return sequence[earlier[0] + 1]


@pytest.mark.parametrize("task", LOOKUP_TASKS)
def test_every_label_is_the_token_after_the_earlier_occurrence_of_the_query(task: str) -> None:
    tokens, targets = draw(task)
    assert tokens.dtype == targets.dtype == torch.int64
    assert tokens.shape == targets.shape
    vocab_size = SIZES[task]["vocab_size"]
    assert 0 <= tokens.min() and tokens.max() < vocab_size
    for sequence, labels in zip(tokens.tolist(), targets.tolist(), strict=True):
        labelled = [t for t, label in enumerate(labels) if label != IGNORE_INDEX]
        assert labelled, "a sequence without a label"
        for t in labelled:
            assert labels[t] == answer_by_lookup(sequence, t)
            assert 0 < labels[t] < vocab_size


def test_associative_recall_layout() -> None:
    num_pairs, vocab_size = 6, 20
    num_keys = (vocab_size - 1) // 2
    tokens, targets = associative_recall(200, num_pairs=num_pairs, vocab_size=vocab_size,
                                         generator=torch.Generator().manual_seed(1))
    assert tokens.shape == (200, 2 * num_pairs + 1)
    keys, values = tokens[:, 0:-1:2], tokens[:, 1:-1:2]
    assert ((1 <= keys) & (keys <= num_keys)).all()
    assert ((num_keys < values) & (values < vocab_size)).all()
    assert all(len(set(row)) == num_pairs for row in keys.tolist())  # distinct keys
    assert (targets[:, :-1] == IGNORE_INDEX).all() and (targets[:, -1] != IGNORE_INDEX).all()
    # The query asks for every pair, not always the same one (the last, say).
    asked = (keys == tokens[:, -1:]).float().argmax(-1)
    assert set(asked.tolist()) == set(range(num_pairs))


def test_mqar_asks_for_every_key_once_at_random_positions_after_the_pairs() -> None:
    seq_len, num_pairs = 40, 8
    tokens, targets = multi_query_associative_recall(
        300, seq_len=seq_len, num_pairs=num_pairs, vocab_size=30,
        generator=torch.Generator().manual_seed(2))
    assert tokens.shape == (300, seq_len)
    pairs = 2 * num_pairs
    assert (targets[:, :pairs] == IGNORE_INDEX).all()
    labelled = targets != IGNORE_INDEX
    assert (labelled.sum(1) == num_pairs).all()
    for sequence, is_query in zip(tokens.tolist(), labelled.tolist(), strict=True):
        keys = sequence[0:pairs:2]
        assert len(set(keys)) == num_pairs
        queries = [token for token, q in zip(sequence, is_query, strict=True) if q]
        assert sorted(queries) == sorted(keys)  # every key asked exactly once
        rest = [token for token, q in zip(sequence[pairs:], is_query[pairs:], strict=True)
                if not q]
        assert set(rest) <= {0}  # blanks between the queries
    # Queries fill every free position over the batch, and not in the order of the pairs.
    assert labelled[:, pairs:].any(0).all()
    first_query = tokens.gather(1, labelled.int().argmax(1, keepdim=True))
    assert (first_query != tokens[:, :1]).any()


def test_induction_trigger_occurs_exactly_twice() -> None:
    seq_len = 24
    tokens, targets = draw("induction", batch_size=500, seq_len=seq_len, vocab_size=10)
    assert tokens.shape == (500, seq_len)
    assert ((tokens == 1).sum(1) == 2).all()
    assert (tokens[:, -1] == 1).all()
    assert (tokens >= 1).all()  # the blank 0 does not occur
    assert (targets[:, :-1] == IGNORE_INDEX).all()
    first = (tokens == 1).int().argmax(1)
    assert set(first.tolist()) == set(range(seq_len - 2))  # every position 0..T-3
    assert (targets[:, -1] == tokens.gather(1, (first + 1)[:, None])[:, 0]).all()


def copy_by_reading(sequence: list[int], num_tokens: int) -> list[int]:
    """The reference targets of selective copying: ignored up to the markers, then the tokens
    that are not blank, in the order they occur."""
    start = len(sequence) - num_tokens
    data = [token for token in sequence[:start] if token != 0]
    return [IGNORE_INDEX] * start + data


def test_selective_copying_asks_for_the_scattered_tokens_in_order_at_the_markers() -> None:
    seq_len, num_tokens, vocab_size = 24, 5, 10
    tokens, targets = draw("selective_copy", batch_size=400, seed=3)
    assert tokens.shape == targets.shape == (400, seq_len)
    assert tokens.dtype == targets.dtype == torch.int64
    start = seq_len - num_tokens
    assert (tokens[:, start:] == MARKER).all()
    for sequence, labels in zip(tokens.tolist(), targets.tolist(), strict=True):
        assert labels == copy_by_reading(sequence, num_tokens)
        data = [token for token in sequence[:start] if token != 0]
        assert len(data) == num_tokens and all(2 <= token < vocab_size for token in data)
    # the data go anywhere before the markers, with gaps that differ between sequences
    placed = tokens[:, :start] != 0
    assert placed.any(0).all()
    gaps = {tuple(row.nonzero()[:, 0].diff().tolist()) for row in placed}
    assert len(gaps) > 300
    assert set(targets[:, start:].flatten().tolist()) == set(range(2, vocab_size))


def test_selective_copying_can_fill_every_position_before_the_markers() -> None:
    tokens, targets = selective_copying(50, seq_len=8, num_tokens=4, vocab_size=3,
                                        generator=torch.Generator().manual_seed(0))
    assert (tokens[:, :4] == 2).all() and (tokens[:, 4:] == MARKER).all()  # no blank left
    assert (targets[:, 4:] == 2).all()


@pytest.mark.parametrize("task", list(RECALL_TASKS))
def test_batches_depend_on_seed_and_step_only(task: str) -> None:
    batches = recall_batches(task, 16, seed=3, **SIZES[task])
    again = recall_batches(RECALL_TASKS[task], 16, seed=3, device="cpu", **SIZES[task])
    for step in (0, 1, 7):
        assert all(torch.equal(a, b) for a, b in zip(batches(step), again(step), strict=True))
    assert not torch.equal(batches(0)[0], batches(1)[0])
    other_seed = recall_batches(task, 16, seed=4, **SIZES[task])
    assert not torch.equal(batches(0)[0], other_seed(0)[0])


def test_tasks_use_the_given_generator_and_device() -> None:
    a = draw("mqar", seed=5)
    b = draw("mqar", seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    tokens, targets = induction_heads(2, seq_len=5, vocab_size=3, device=torch.device("cpu"))
    assert tokens.device.type == targets.device.type == "cpu"


@pytest.mark.parametrize(("task", "sizes", "argument"), [
    ("ar", {"num_pairs": 5, "vocab_size": 9}, "num_pairs"),  # only 4 keys
    ("ar", {"num_pairs": 0, "vocab_size": 9}, "num_pairs"),
    ("ar", {"num_pairs": 1, "vocab_size": 2}, "vocab_size"),
    ("mqar", {"seq_len": 11, "num_pairs": 4, "vocab_size": 30}, "num_pairs"),  # 3 * 4 > 11
    ("mqar", {"seq_len": 12, "num_pairs": 4, "vocab_size": 8}, "num_pairs"),  # only 3 keys
    ("mqar", {"seq_len": 2, "num_pairs": 1, "vocab_size": 8}, "seq_len"),
    ("induction", {"seq_len": 2, "vocab_size": 8}, "seq_len"),
    ("induction", {"seq_len": 8, "vocab_size": 2}, "vocab_size"),
    ("selective_copy", {"seq_len": 9, "num_tokens": 5, "vocab_size": 10}, "num_tokens"),
    ("selective_copy", {"seq_len": 9, "num_tokens": 0, "vocab_size": 10}, "num_tokens"),
    ("selective_copy", {"seq_len": 1, "num_tokens": 1, "vocab_size": 10}, "seq_len"),
    ("selective_copy", {"seq_len": 9, "num_tokens": 2, "vocab_size": 2}, "vocab_size"),
])
def test_bad_sizes_fail_at_construction_naming_the_argument(
    task: str, sizes: dict[str, int], argument: str
) -> None:
    with pytest.raises(ValueError, match=f"^{argument}:"):
        recall_batches(task, 4, **sizes)
    with pytest.raises(ValueError, match=f"^{argument}:"):
        RECALL_TASKS[task](4, **sizes)


def test_bad_task_batch_size_or_seed() -> None:
    with pytest.raises(ValueError, match="^task:.*'ar', 'mqar', 'induction'"):
        recall_batches("nope", 4, **SIZES["ar"])
    with pytest.raises(TypeError, match="^task:"):
        recall_batches(3, 4, **SIZES["ar"])
    with pytest.raises(ValueError, match="^batch_size:"):
        recall_batches("ar", 0, **SIZES["ar"])
    with pytest.raises(ValueError, match="^seed:"):
        recall_batches("ar", 4, seed=-1, **SIZES["ar"])
    with pytest.raises(TypeError, match="num_pairs"):
        recall_batches("ar", 4, vocab_size=20)  # a size is missing


def test_accuracy_is_one_for_the_answers_and_chance_for_a_constant() -> None:
    vocab_size = 11  # keys 1..5, values 6..10
    _, targets = draw("ar", batch_size=4000, num_pairs=3, vocab_size=vocab_size)
    perfect = F.one_hot(targets.clamp(min=0), vocab_size).float()
    assert recall_accuracy(perfect, targets) == 1.0
    constant = torch.zeros(*targets.shape, vocab_size)
    constant[..., 6] = 1.0
    assert recall_accuracy(constant, targets) == pytest.approx(1 / 5, abs=0.03)
    constant[..., 0] = 2.0  # the blank is never an answer
    assert recall_accuracy(constant, targets) == 0.0


def test_loss_scores_the_labelled_positions_only() -> None:
    _, targets = draw("mqar", batch_size=8)
    logits = torch.randn(*targets.shape, 30, generator=torch.Generator().manual_seed(0))
    labelled = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[labelled], targets[labelled])
    assert torch.allclose(recall_loss(logits, targets), expected)
    changed = logits.clone()
    changed[~labelled] = torch.randn(int((~labelled).sum()), 30)
    assert torch.equal(recall_loss(changed, targets), recall_loss(logits, targets))
    half = recall_loss(logits.bfloat16(), targets)
    assert half.dtype == torch.float32
    assert torch.allclose(half, recall_loss(logits.bfloat16().float(), targets))


def test_loss_and_accuracy_check_their_inputs() -> None:
    _, targets = draw("ar", batch_size=4)
    logits = torch.zeros(*targets.shape, 20)
    with pytest.raises(ValueError, match="^logits:"):
        recall_loss(logits[:, 1:], targets)
    with pytest.raises(ValueError, match="^logits:"):
        recall_accuracy(logits[0], targets)
    with pytest.raises(TypeError, match="^logits:"):
        recall_loss(logits.long(), targets)
    with pytest.raises(TypeError, match="^targets:"):
        recall_loss(logits, targets.float())
    with pytest.raises(ValueError, match="^targets:"):
        recall_accuracy(logits, torch.full_like(targets, IGNORE_INDEX))
