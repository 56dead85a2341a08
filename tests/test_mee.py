"""tfcourse.mee: the Mixture of Embedding Experts (chapter 10)."""

import pytest
import torch

from tfcourse.mee import (
    GatedEmbeddingUnit,
    MixtureOfEmbeddingExperts,
    mixture_weights,
    ranking_loss,
)


def test_gated_embedding_unit_is_a_gated_linear_map_of_unit_length() -> None:
    torch.manual_seed(0)
    unit = GatedEmbeddingUnit(5, 7)
    x = torch.randn(3, 5)
    z = x @ unit.linear.weight.T + unit.linear.bias
    gated = z * torch.sigmoid(z @ unit.gating.gate.weight.T + unit.gating.gate.bias)
    torch.testing.assert_close(unit(x), gated / gated.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(unit(x).norm(dim=-1), torch.ones(3))


def test_mixture_weights_are_renormalised_over_the_streams_a_clip_has() -> None:
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    present = torch.tensor([[True, True, True], [True, False, True], [False, True, False]])
    w = mixture_weights(logits, present)  # (1, 3, 3)
    torch.testing.assert_close(w[0, 0], logits[0].softmax(-1))
    two = logits[0, [0, 2]].softmax(-1)  # clip 1 lacks stream 1: the rest share the weight
    torch.testing.assert_close(w[0, 1], torch.tensor([two[0], 0.0, two[1]]))
    torch.testing.assert_close(w[0, 2], torch.tensor([0.0, 1.0, 0.0]))


def test_mixture_weights_reject_a_clip_without_streams() -> None:
    with pytest.raises(ValueError, match="present: every clip needs at least one stream"):
        mixture_weights(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ValueError, match="present: expected a bool tensor"):
        mixture_weights(torch.zeros(2, 2), torch.ones(3, 2))


def test_similarity_is_the_weighted_sum_of_per_stream_cosines_and_ignores_missing_rows() -> None:
    torch.manual_seed(0)
    mee = MixtureOfEmbeddingExperts(6, [4, 3], width=5)
    text = torch.randn(2, 6)
    streams = [torch.randn(3, 4), torch.randn(3, 3)]
    present = torch.tensor([[True, True], [True, False], [False, True]])
    s = mee(text, streams, present)
    assert s.shape == (2, 3)
    w = mixture_weights(mee.mixture(text), present)
    for i in range(2):
        for j in range(3):
            cosines = [mee.text_units[m](text[i]) @ mee.stream_units[m](streams[m][j])
                       for m in range(2)]
            want = sum(w[i, j, m] * cosines[m] for m in range(2) if present[j, m])
            torch.testing.assert_close(s[i, j], want)
    garbage = [streams[0].clone(), streams[1].clone()]
    garbage[1][1] = float("nan")  # clip 1 has no stream 1: what its row holds must not matter
    garbage[0][2] = 1e6
    torch.testing.assert_close(mee(text, garbage, present), s)
    mee(text, garbage, present).sum().backward()  # ... nor the gradients (no 0 * NaN)
    assert all(p.grad.isfinite().all() for p in mee.parameters())


def test_ranking_loss_is_the_bidirectional_hinge_over_the_wrong_pairs() -> None:
    s = torch.tensor([[0.9, 0.8, 0.1], [0.0, 0.5, 0.6], [0.2, 0.1, 0.3]])
    m, B = 0.2, 3
    want = sum(max(0.0, m + s[i, j] - s[i, i]) + max(0.0, m + s[j, i] - s[i, i])
               for i in range(B) for j in range(B) if j != i) / B
    torch.testing.assert_close(ranking_loss(s, margin=m), torch.tensor(float(want)))
    assert ranking_loss(torch.eye(4) * 10).item() == 0.0
    with pytest.raises(ValueError, match="similarity: expected a square"):
        ranking_loss(torch.zeros(2, 3))
