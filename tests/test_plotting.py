"""tfcourse.plotting: attention heat maps and training histories."""

import matplotlib
import pytest
import torch

from tfcourse.plotting import plot_attention, plot_attention_heads, plot_history
from tfcourse.training import History

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


def history(scale: float = 1.0) -> History:
    train = [{"step": s, "loss": scale / s, "lr": 1e-3} for s in (10, 20, 30)]
    return History(train=train, eval=[{"step": 15, "accuracy": 0.5}, {"step": 30, "accuracy": 0.9}])


def test_plot_history_draws_training_and_eval_series() -> None:
    ax = plot_history(history(), metrics=["loss", "accuracy"], title="run")
    loss, accuracy = ax.get_lines()
    assert list(loss.get_xdata()) == [10, 20, 30] and list(loss.get_ydata())[0] == 0.1
    assert list(accuracy.get_xdata()) == [15, 30] and accuracy.get_marker() == "o"
    assert loss.get_marker() in ("None", None)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss", "accuracy"]
    assert ax.get_xlabel() == "step" and ax.get_title() == "run"


def test_plot_history_compares_runs_on_one_axes() -> None:
    ax = plot_history({"post-LN": history(), "pre-LN": history(0.5)}, logy=True)
    assert [line.get_label() for line in ax.get_lines()] == ["post-LN", "pre-LN"]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss"


def test_plot_history_rejects_unknown_metrics() -> None:
    with pytest.raises(ValueError, match="metrics: no series 'bleu'"):
        plot_history(history(), metrics="bleu")
    with pytest.raises(TypeError, match="history: expected a History"):
        plot_history([history()])
