"""tfcourse.retrieval (ranks, R@K, median rank) and the retrieval models of tfcourse.mee: the
single-stream and zero-filled concatenation baselines and the training loop (chapter 10)."""

import pytest
import torch

from tfcourse.data.clips import VOCABULARY, clip_task, stream_widths
from tfcourse.mee import (
    ConcatenatedEmbedding,
    MixtureOfEmbeddingExperts,
    SingleStreamEmbedding,
    train_retrieval,
)
from tfcourse.retrieval import (
    clip_to_text_ranks,
    median_rank,
    recall_at,
    retrieval_metrics,
    text_to_clip_ranks,
)

# ---------------------------------------------------------------- metrics on hand-made matrices


def test_a_perfect_ranking_puts_every_right_item_first() -> None:
    similarity = torch.eye(5) + 0.01 * torch.rand(5, 5)
    assert text_to_clip_ranks(similarity).tolist() == [1] * 5
    assert clip_to_text_ranks(similarity).tolist() == [1] * 5
    metrics = retrieval_metrics(similarity)
    assert metrics["text_to_clip"] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0,
                                       "median_rank": 1.0}
    assert metrics["clip_to_text"] == metrics["text_to_clip"]


def test_a_reversed_ranking_puts_every_right_item_last() -> None:
    similarity = 1 - torch.eye(12)
    assert text_to_clip_ranks(similarity).tolist() == [12] * 12
    assert clip_to_text_ranks(similarity).tolist() == [12] * 12
    metrics = retrieval_metrics(similarity)["text_to_clip"]
    assert metrics == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "median_rank": 12.0}


def test_ranks_count_the_wrong_items_scoring_at_least_as_high() -> None:
    s = torch.tensor([[0.9, 0.5, 0.1],  # caption 0: its clip first
                      [0.8, 0.7, 0.2],  # caption 1: clip 0 ahead of clip 1
                      [0.6, 0.9, 0.1]])  # caption 2: its clip last
    assert text_to_clip_ranks(s).tolist() == [1, 2, 3]
    # column j ranks the captions of clip j: 0.9 beats all; 0.7 trails caption 2's 0.9; 0.1
    # trails caption 1's 0.2 and ties with caption 0's 0.1
    assert clip_to_text_ranks(s).tolist() == [1, 2, 3]
    metrics = retrieval_metrics(s, ks=(1, 2))
    assert metrics["text_to_clip"]["R@1"] == pytest.approx(100 / 3)
    assert metrics["text_to_clip"]["R@2"] == pytest.approx(200 / 3)
    assert metrics["clip_to_text"]["median_rank"] == 2.0


def test_ties_count_against_the_model() -> None:
    constant = torch.zeros(6, 6)
    assert text_to_clip_ranks(constant).tolist() == [6] * 6  # not 1: a constant scorer is last
    assert clip_to_text_ranks(constant).tolist() == [6] * 6
    assert retrieval_metrics(constant)["text_to_clip"]["R@1"] == 0.0
    s = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.4, 0.4], [0.3, 0.0, 0.3]])
    assert text_to_clip_ranks(s).tolist() == [2, 2, 2]  # one wrong clip tied with the right one
    assert clip_to_text_ranks(s).tolist() == [1, 2, 2]  # 0.4 trails 0.5; 0.3 trails 0.4


def test_several_captions_for_a_clip_are_ranked_by_the_best_of_them() -> None:
    s = torch.tensor([[0.9, 0.1],
                      [0.3, 0.2],
                      [0.5, 0.8],
                      [0.4, 0.6]])
    targets = torch.tensor([0, 0, 1, 1])  # captions 0 and 1 describe clip 0, 2 and 3 clip 1
    assert text_to_clip_ranks(s, targets).tolist() == [1, 1, 1, 1]
    # clip 0: its best caption (0.9) beats every other; clip 1: its best (0.8) beats every other
    assert clip_to_text_ranks(s, targets).tolist() == [1, 1]
    s[3, 0] = 0.95  # a caption of clip 1 now outscores clip 0's best caption
    assert clip_to_text_ranks(s, targets).tolist() == [2, 1]
    assert text_to_clip_ranks(s, targets).tolist() == [1, 1, 1, 2]


def test_recall_and_median_rank() -> None:
    ranks = torch.tensor([1, 3, 8, 20])
    assert [recall_at(ranks, k) for k in (1, 5, 10)] == [25.0, 50.0, 75.0]
    assert median_rank(ranks) == 5.5  # the mean of the two middle ranks, as numpy.median
    assert median_rank(torch.tensor([4, 1, 9])) == 4.0


@pytest.mark.parametrize("call, error, message", [
    (lambda: text_to_clip_ranks(torch.zeros(2, 3)), ValueError,
     r"similarity: without targets, expected a square"),
    (lambda: text_to_clip_ranks(torch.zeros(3)), ValueError, "similarity: expected 2 dim"),
    (lambda: text_to_clip_ranks(torch.zeros(2, 2, dtype=torch.long)), TypeError,
     "similarity: expected a floating-point tensor"),
    (lambda: clip_to_text_ranks(torch.tensor([[0.0, float("nan")], [0.0, 0.0]])), ValueError,
     "similarity: expected finite scores"),
    (lambda: text_to_clip_ranks(torch.zeros(3, 2), torch.tensor([0, 1, 2])), ValueError,
     r"targets: expected clip indices in \[0, 2\)"),
    (lambda: text_to_clip_ranks(torch.zeros(3, 2), torch.tensor([0, 0, 0])), ValueError,
     "targets: expected at least one caption for each of the 2 clips"),
    (lambda: text_to_clip_ranks(torch.zeros(3, 2), torch.tensor([0, 1])), ValueError,
     "targets: expected size 3 in dimension 0"),
    (lambda: text_to_clip_ranks(torch.zeros(2, 2), torch.tensor([0.0, 1.0])), TypeError,
     "targets: expected integer clip indices"),
    (lambda: recall_at(torch.tensor([1, 2]), 0), ValueError, "k: expected an int >= 1"),
    (lambda: recall_at(torch.tensor([], dtype=torch.long), 1), ValueError,
     "ranks: expected at least one rank"),
    (lambda: median_rank(torch.ones(2, 2)), ValueError, "ranks: expected 1 dimension"),
])
def test_arguments_are_checked_by_name(call, error, message) -> None:
    with pytest.raises(error, match=message):
        call()


# ---------------------------------------------------------------- baselines and training


def _inputs(seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = torch.rand(4, 7, generator=g)
    streams = [torch.randn(5, 3, generator=g), torch.randn(5, 2, generator=g)]
    present = torch.tensor([[True, True], [True, False], [False, True], [True, True],
                            [False, True]])
    return text, streams, present


def test_a_single_stream_model_sees_its_stream_only_and_zeros_where_it_is_missing() -> None:
    torch.manual_seed(0)
    model = SingleStreamEmbedding(7, [3, 2], width=6, stream=0)
    text, streams, present = _inputs()
    s = model(text, streams, present)
    assert s.shape == (4, 5)
    other = [streams[0], torch.randn(5, 2)]  # the unused stream changes: nothing does
    torch.testing.assert_close(model(text, other, present), s)
    zeros = [torch.where(present[:, 0, None], streams[0], 0), streams[1]]
    torch.testing.assert_close(s, model.text_unit(text) @ model.stream_unit(zeros[0]).T)
    with pytest.raises(ValueError, match=r"stream: expected an index in \[0, 2\)"):
        SingleStreamEmbedding(7, [3, 2], width=6, stream=2)


def test_concatenation_zero_fills_the_missing_streams() -> None:
    torch.manual_seed(0)
    model = ConcatenatedEmbedding(7, [3, 2], width=6)
    text, streams, present = _inputs()
    garbage = [x.clone() for x in streams]
    garbage[0][~present[:, 0]] = float("nan")
    garbage[1][~present[:, 1]] = 1e6
    s = model(text, garbage, present)
    zero_filled = torch.cat([torch.where(present[:, m, None], x, 0)
                             for m, x in enumerate(streams)], dim=1)
    torch.testing.assert_close(s, model.text_unit(text) @ model.stream_unit(zero_filled).T)


def test_training_lowers_the_loss_and_repeats_from_the_seed() -> None:
    g = torch.Generator().manual_seed(0)
    text = torch.rand(64, 7, generator=g)
    streams = [text @ torch.randn(7, 3, generator=g), torch.randn(64, 2, generator=g)]
    present = torch.ones(64, 2, dtype=torch.bool)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = MixtureOfEmbeddingExperts(7, [3, 2], width=8)
        runs.append(train_retrieval(model, text, streams, present, epochs=15, batch_size=16,
                                    lr=1e-2, seed=3))
    assert runs[0] == runs[1] and len(runs[0]) == 15
    assert runs[0][-1] < 0.5 * runs[0][0]
    assert not model.training  # left in evaluation mode
    with pytest.raises(ValueError, match="streams\\[1\\]: expected size 64 in dimension 0"):
        train_retrieval(model, text, [streams[0], streams[1][:10]], present)
    with pytest.raises(ValueError, match="batch_size: expected an int >= 2"):
        train_retrieval(model, text, streams, present, batch_size=1)


def test_mee_trained_briefly_on_the_clips_beats_chance_by_far() -> None:
    task = clip_task(train_clips=800, train_images=200, test_clips=200, extra_images=0, seed=0)
    torch.manual_seed(0)
    model = MixtureOfEmbeddingExperts(len(VOCABULARY), stream_widths(), width=32)
    train_retrieval(model, task.train.text, task.train.streams, task.train.present, epochs=10,
                    batch_size=128, lr=2e-3)
    with torch.no_grad():
        metrics = retrieval_metrics(model(task.test.text, task.test.streams, task.test.present))
    # chance: R@10 = 5 %, median rank ≈ 100; seeds 0 to 2 give R@10 20-26 %, median rank 31-36
    for direction in ("text_to_clip", "clip_to_text"):
        assert metrics[direction]["R@10"] > 15, metrics
        assert metrics[direction]["median_rank"] < 50, metrics


def test_the_benchmark_compares_the_models_and_groups_the_weights(capsys) -> None:
    from tfcourse.bench import mee as bench

    run = bench.retrieval_comparison(0, epochs=1, models=["audio only", "MEE + images"],
                                     train_clips=100, train_images=50, test_clips=50,
                                     extra_images=20)
    assert [row["model"] for row in run["rows"]] == ["audio only", "MEE + images"]
    assert all(row["seconds"] > 0 and row["text_to_clip"]["median_rank"] >= 1
               for row in run["rows"])
    assert set(run["weights"]) == {"digit + motion + sound", "digit + motion", "digit + sound",
                                   "digit", "motion + sound", "motion", "sound"}
    assert all(sum(w) == pytest.approx(1) for w in run["weights"].values())
    with pytest.raises(ValueError, match="models: expected names from"):
        bench.retrieval_comparison(0, models=["nope"], train_clips=10, train_images=10,
                                   test_clips=10, extra_images=0)
