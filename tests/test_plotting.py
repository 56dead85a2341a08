"""tfcourse.plotting: attention heat maps."""

import matplotlib
import pytest
import torch

from tfcourse.plotting import plot_attention, plot_attention_heads

matplotlib.use("Agg")


def test_plot_attention_draws_the_weights_with_labels() -> None:
    weights = torch.softmax(torch.randn(3, 4), dim=-1)
    ax = plot_attention(weights, query_labels=list("abc"), key_labels=list("wxyz"), title="t")
    image = ax.get_images()[0]
    assert image.get_array().shape == (3, 4)
    assert [t.get_text() for t in ax.get_xticklabels()] == list("wxyz")
    assert ax.get_title() == "t"


def test_plot_attention_heads_draws_one_map_per_head() -> None:
    fig = plot_attention_heads(torch.softmax(torch.randn(5, 3, 3), dim=-1), ncols=2)
    drawn = [ax for ax in fig.axes if ax.get_images()]
    assert len(drawn) == 5
    assert [ax.get_title() for ax in drawn] == [f"head {h}" for h in range(5)]


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"weights: expected 2 dimensions \(T, S\), got 3"):
        plot_attention(torch.rand(1, 2, 2))
    with pytest.raises(ValueError, match="key_labels: expected 2 labels, got 3"):
        plot_attention(torch.rand(2, 2), key_labels=list("abc"))
