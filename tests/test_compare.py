"""The side-by-side benchmark of chapter 10 (tfcourse.bench.compare), at tiny sizes: structure
and behaviour, not timings."""

from __future__ import annotations

import math
import re

import pytest
import torch

from tfcourse.bench import compare
from tfcourse.hyena import HyenaLM
from tfcourse.jamba import JambaLM
from tfcourse.language_models import DecoderOnlyLM
from tfcourse.mamba import MambaLM

TINY = dict(d_model=48, num_layers=2)  # the smallest width where Hyena's filters fit the count


@pytest.mark.parametrize("d_model, num_layers", [(48, 2), (64, 4)])
def test_models_are_the_course_classes_at_a_matched_parameter_count(d_model, num_layers) -> None:
    models = compare.build_models(32, max_len=64, d_model=d_model, num_layers=num_layers)
    assert list(models) == list(compare.MODELS)
    assert [type(m) for m in models.values()] == [DecoderOnlyLM, HyenaLM, MambaLM, JambaLM]
    counts = {name: compare.counted_parameters(m) for name, m in models.items()}
    for name, count in counts.items():
        assert abs(count / counts["attention"] - 1) < 0.1, (name, counts)
    assert "attention" in models["Jamba"].config.layer_types()  # a hybrid, not pure Mamba


def test_the_count_leaves_out_the_embedding_tables_so_it_does_not_depend_on_max_len() -> None:
    short = compare.build_models(32, max_len=64, **TINY)
    long = compare.build_models(32, max_len=1024, **TINY)
    for name in compare.MODELS:
        assert compare.counted_parameters(short[name]) == compare.counted_parameters(long[name])


def test_a_width_too_small_to_match_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="d_model: the smallest Hyena model has"):
        compare.build_models(32, max_len=64, d_model=16, num_layers=2)
    with pytest.raises(ValueError, match="d_model: expected a multiple of 4"):
        compare.build_models(32, max_len=64, d_model=50, num_layers=2)


def test_cost_sweep_gives_one_row_per_model_and_length() -> None:
    rows = compare.cost_sweep([16, 32, 64], device="cpu", repeats=1, **TINY)
    assert [(r["model"], r["length"]) for r in rows] == [
        (name, T) for T in (16, 32, 64) for name in compare.MODELS]
    for r in rows:
        assert r["train_s"] > 0 and r["decode_s"] > 0
        assert r["decoding"] == compare.DECODING[r["model"]]
    held = {(r["model"], r["length"]): r["state_mib"] for r in rows}
    assert held["Mamba", 16] == held["Mamba", 64] > 0  # a state of fixed size
    assert held["attention", 64] > 2 * held["attention", 16]  # the KV cache grows with T
    assert held["Hyena", 64] == held["Jamba", 64] == 0  # they recompute the prefix
    for key in ("train_s", "decode_s"):
        exponents = compare.growth_exponents(rows, key, fit_from=16)
        assert list(exponents) == list(compare.MODELS)
        assert all(math.isfinite(p) for p in exponents.values())
        pairs = compare.crossovers(rows, key)
        assert len(pairs) == 12 and all(T in (None, 16, 32, 64) for T in pairs.values())


def test_cost_sweep_stops_a_model_after_a_call_over_the_limit() -> None:
    rows = compare.cost_sweep([16, 32], device="cpu", repeats=1, max_call_seconds=0.0, **TINY)
    assert [(r["model"], r["length"]) for r in rows] == [(name, 16) for name in compare.MODELS]
    assert compare.growth_exponents(rows, "train_s", fit_from=16) == dict.fromkeys(
        compare.MODELS)  # one length each: nothing to fit


def test_cost_sweep_runs_in_bfloat16() -> None:
    rows = compare.cost_sweep([16], device="cpu", dtype=torch.bfloat16, repeats=1, **TINY)
    assert len(rows) == len(compare.MODELS)


def test_recall_sweep_trains_every_model_by_the_same_recipe() -> None:
    rows = compare.recall_sweep([12, 24], num_pairs=2, vocab_size=16, steps=4, batch=4,
                                eval_every=2, eval_size=8, target=0.0, device="cpu", **TINY)
    assert [(r["model"], r["length"]) for r in rows] == [
        (name, T) for T in (12, 24) for name in compare.MODELS]
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and r["seconds"] > 0
        assert r["steps_to_target"] == 2  # target 0: reached at the first evaluation
        assert 0 < r["seconds_to_target"] <= r["seconds"]
    unreachable = compare.recall_sweep([12], num_pairs=2, vocab_size=16, steps=2, batch=4,
                                       eval_every=2, eval_size=8, target=1.0, device="cpu",
                                       d_model=48, num_layers=2)
    assert all(r["steps_to_target"] is None or r["accuracy"] == 1.0 for r in unreachable)


@pytest.fixture
def short_digit_training(tmp_path, monkeypatch):
    """The chapter-4 ViT, the Activator and the ConvNet trained for 2 steps, into an empty
    cache."""
    from tfcourse import classification

    monkeypatch.setenv("TFCOURSE_CACHE", str(tmp_path))
    for recipe in (classification.DIGITS_TRAINING, classification.CONVNET_TRAINING):
        monkeypatch.setitem(recipe, "steps", 2)
        monkeypatch.setitem(recipe, "warmup_steps", 1)


def test_vision_sweep_measures_the_digit_classifiers_and_tome(short_digit_training) -> None:
    rows = compare.vision_sweep(tome_r=[2, 4], batch_size=8, repeats=1, device="cpu")
    assert [r["model"] for r in rows] == ["ViT", "ViT + ToMe r=2", "ViT + ToMe r=4",
                                          "Activator", "ConvNet"]
    by_name = {r["model"]: r for r in rows}
    vit = by_name["ViT"]
    for r in rows:
        assert 0 <= r["accuracy"] <= 1 and r["images_per_s"] > 0 and r["mflop"] > 0
        assert abs(r["parameters"] / vit["parameters"] - 1) < 0.1  # ToMe: the ViT's own weights
    # merging tokens removes work, more as r grows
    assert vit["mflop"] > by_name["ViT + ToMe r=2"]["mflop"] > by_name["ViT + ToMe r=4"]["mflop"]


def test_command_line_prints_the_setting_the_tables_and_the_exponents(capsys) -> None:
    compare.main(["--parts", "cost", "--lengths", "16", "32", "--width", "48", "--layers", "2",
                  "--repeats", "1", "--fit-from", "16", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.startswith("python -m tfcourse.bench compare --parts cost")
    assert "torch threads" in out and "fp32" in out
    table = [line.split() for line in out.splitlines() if re.match(r"\s*(16|32)\s", line)]
    assert len(table) == 4  # two lengths, a training table and a decoding table
    assert all(len(cells) >= 1 + 2 * len(compare.MODELS) for cells in table)
    exponents = re.findall(r"^growth exponent .*: (attention .*)$", out, re.M)
    assert len(exponents) == 2
    for line in exponents:
        values = dict(part.rsplit(" ", 1) for part in line.split(", "))
        assert list(values) == list(compare.MODELS)
        assert all(math.isfinite(float(p)) for p in values.values())
    assert "recall" not in out.split("\n", 1)[1]  # only the part asked for


@pytest.mark.parametrize("argv, named", [
    (["--lengths", "0"], "--lengths"),
    (["--lengths", "many"], "--lengths"),
    (["--parts", "speed"], "--parts"),
    (["--parts"], "--parts"),
    (["--dtype", "fp8"], "--dtype"),
    (["--steps", "-3"], "--steps"),
    (["--width", "50"], "--width"),
    (["--width", "16"], "--width"),  # too narrow for Hyena to match attention's count
    (["--layers", "1"], "--layers"),
    (["--device", "tpu"], "--device"),
    (["--pairs", "8", "--recall-lengths", "16"], "--recall-lengths"),
    (["--target", "1.5"], "--target"),
    (["--lr", "0"], "--lr"),
])
def test_command_line_rejects_bad_arguments_naming_the_argument(argv, named, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        compare.main(argv)
    assert exit_info.value.code == 2
    assert f"argument {named}" in capsys.readouterr().err
