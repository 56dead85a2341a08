"""tfcourse.masks: causal and padding masks, their combination and additive form."""

import pytest
import torch

import tfcourse as tc


def test_causal_mask_lets_each_query_see_itself_and_the_past() -> None:
    mask = tc.causal_mask(4)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]],
                                          dtype=torch.bool))


def test_causal_mask_with_more_keys_aligns_queries_to_the_end() -> None:
    mask = tc.causal_mask(2, 5)  # the last 2 of 5 positions
    assert mask.tolist() == [[True, True, True, True, False], [True] * 5]


def test_padding_mask_marks_real_tokens_and_broadcasts_over_heads_and_queries() -> None:
    mask = tc.padding_mask(torch.tensor([2, 4, 0]), 4)
    assert mask.shape == (3, 1, 1, 4)
    assert mask[:, 0, 0].tolist() == [[True, True, False, False], [True] * 4, [False] * 4]


def test_combine_and_additive() -> None:
    both = tc.combine_masks(tc.causal_mask(3), None, tc.padding_mask(torch.tensor([2]), 3))
    assert both.shape == (1, 1, 3, 3)
    assert both[0, 0].tolist() == [[True, False, False], [True, True, False], [True, True, False]]
    additive = tc.to_additive_mask(tc.causal_mask(2), torch.float16)
    assert additive.dtype == torch.float16
    assert additive.tolist() == [[0.0, float("-inf")], [0.0, 0.0]]
    assert tc.combine_masks(None) is None
    mixed = tc.combine_masks(torch.tensor([[0.5, -1.0]]), tc.causal_mask(2))
    assert mixed.dtype == torch.float32
    assert mixed.tolist() == [[0.5, float("-inf")], [0.5, -1.0]]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: tc.causal_mask(0), "num_queries: expected a positive int, got 0"),
        (lambda: tc.causal_mask(3, 2), "num_keys: expected at least num_queries=3"),
        (lambda: tc.padding_mask(torch.tensor([[1, 2]]), 3), "lengths: expected 1 dimension (B,)"),
        (lambda: tc.padding_mask(torch.tensor([1.0]), 3), "lengths: expected an integer tensor"),
        (lambda: tc.padding_mask(torch.tensor([4]), 3),
         "lengths: expected values in [0, num_keys=3]"),
        (lambda: tc.combine_masks(torch.ones(2, dtype=torch.int64)),
         "masks[0]: expected a bool mask (True = attend) or a float additive mask"),
        (lambda: tc.to_additive_mask(torch.zeros(2)), "mask: expected a bool mask"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(call, message: str) -> None:
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    assert message in str(error.value)
