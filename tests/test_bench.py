"""tfcourse.bench: each benchmark runs and measures what it claims.

These tests check that the figures exist and that the memory figure tells the two paths apart;
speed targets are read from the printed figures, not asserted (the machines are noisy)."""

import os
import re
import subprocess
import sys

import pytest
import torch

from tfcourse.bench import decoding, hyena, in_fresh_process, scan
from tfcourse.bench.attention import attention_cost, mha_comparison
from tfcourse.bench.kv_cache import kv_cache_speedup


def test_explicit_attention_needs_memory_quadratic_in_length_and_fused_does_not() -> None:
    rows = attention_cost([512, 1024], device="cpu", repeats=1)
    peak = {(r["length"], r["path"]): r["peak_mib"] for r in rows}
    assert all(r["seconds"] > 0 for r in rows)
    # the explicit path stores (H, T, T) float32 weights: 8 * 1024**2 * 4 bytes = 32 MiB
    assert peak[(1024, "explicit")] >= 32
    assert peak[(1024, "explicit")] > 3 * peak[(512, "explicit")]
    assert peak[(1024, "fused")] < peak[(1024, "explicit")] / 4


def test_mha_comparison_times_both_modules() -> None:
    rows = mha_comparison(64, batch=2, d_model=32, heads=4, device="cpu", repeats=2)
    assert [r["module"] for r in rows] == ["tfcourse", "torch"]
    assert all(r["seconds"] > 0 for r in rows)


def test_command_line_prints_the_table_and_the_ratio() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tfcourse.bench", "attention", "--lengths", "64", "128",
         "--repeats", "1"],
        capture_output=True, text=True, check=True, env={**os.environ, "TFCOURSE_THREADS": "1"},
    )
    assert "explicit ms" in result.stdout and "fused MiB" in result.stdout
    assert "the speed of nn.MultiheadAttention" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "tfcourse.bench", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode != 0
    names = "attention, kv_cache, tome, activator, hyena, scan, decoding, mee, compare"
    assert f"NAME is one of: {names}" in bad.stderr


def test_kv_cache_benchmark_generates_the_same_tokens_both_ways() -> None:
    row = kv_cache_speedup(24, prompt_len=4, batch=2, d_model=32, num_heads=4, num_layers=2,
                           vocab_size=50, device="cpu", repeats=1)
    assert row["same_tokens"]
    assert row["cached_s"] > 0 and row["recomputed_s"] > 0
    assert row["speedup"] == row["recomputed_s"] / row["cached_s"]


def test_activator_benchmark_compares_matched_models() -> None:
    from tfcourse.bench.activator import activator_vs_vit

    rows = activator_vs_vit(batch_size=4, repeats=1, device="cpu")
    assert [(r["setting"], r["model"]) for r in rows] == [
        ("digits", "VisionTransformer"), ("digits", "ActivatorClassifier"),
        ("cifar", "VisionTransformer"), ("cifar", "ActivatorClassifier")]
    for vit, activator in (rows[:2], rows[2:]):
        assert abs(activator["parameters"] / vit["parameters"] - 1) < 0.01
        assert 0 < activator["mflop"] < vit["mflop"]  # no attention products
        assert vit["ratio"] == 1.0
        assert activator["ratio"] == activator["images_per_s"] / vit["images_per_s"]


def test_hyena_benchmark_prints_the_table_the_exponents_and_the_crossovers(capsys) -> None:
    hyena.main(["--lengths", "32", "64", "128", "--device", "cpu", "--repeats", "1",
                "--fit-from", "32"])
    out = capsys.readouterr().out
    assert all(method in out for method in hyena.METHODS)
    table = {int(line.split()[0]): line.split()[1:] for line in out.splitlines()
             if re.match(r"\s*\d+\s", line)}
    assert sorted(table) == [32, 64, 128]
    assert all(len(cells) == 8 and float(cells[0]) > 0 for cells in table.values())  # ms, MiB
    exponents = re.findall(r"^  (.+?)\s+T = 32\.\.128: p = (-?\d+\.\d+)$", out, re.M)
    assert [method for method, _ in exponents] == list(reversed(hyena.METHODS))
    assert "Hyena operator faster than attention (fused):" in out
    assert "Hyena operator faster than attention (explicit):" in out


def test_hyena_benchmark_skips_what_passes_its_limits() -> None:
    rows = hyena.hyena_vs_attention([16, 32, 64], d_model=8, heads=2, device="cpu", repeats=1,
                                    max_call_seconds=0.0, max_scores_mib=2 * 32**2 * 4 / 2**20)
    measured = {(r["method"], r["length"]) for r in rows}
    # every call takes more than 0 s, so each method stops after its first length
    assert measured == {(method, 16) for method in hyena.METHODS}
    rows = hyena.hyena_vs_attention([16, 32, 64], d_model=8, heads=2, device="cpu", repeats=1,
                                    max_scores_mib=2 * 32**2 * 4 / 2**20)
    lengths = {m: [r["length"] for r in rows if r["method"] == m] for m in hyena.METHODS}
    assert lengths["attention (explicit)"] == [16, 32]  # the (2, 64, 64) scores pass the limit
    assert lengths["FFT convolution"] == [16, 32, 64]
    assert all(r["seconds"] > 0 for r in rows)


def test_growth_exponent_and_crossover_read_the_rows() -> None:
    rows = [{"method": "quadratic", "length": T, "seconds": 1e-9 * T**2} for T in (64, 128, 256)]
    rows += [{"method": "linear", "length": T, "seconds": 1e-7 * T} for T in (64, 128, 256, 512)]
    assert abs(hyena.growth_exponent(rows, "quadratic", 64, 256) - 2) < 1e-9
    assert abs(hyena.growth_exponent(rows, "linear", 100, 1000) - 1) < 1e-9
    with pytest.raises(ValueError, match="method: expected at least two rows of 'linear'"):
        hyena.growth_exponent(rows, "linear", 500, 1000)
    # 1e-7 T < 1e-9 T² from T = 100: the linear method is faster from 128 on, where both ran
    assert hyena.crossover_length(rows, "linear", "quadratic") == 128
    assert hyena.crossover_length(rows, "quadratic", "linear") is None
    rows.append({"method": "quadratic", "length": 512, "seconds": 1e-9})  # ahead again at 512
    assert hyena.crossover_length(rows, "linear", "quadratic") is None


def test_scan_benchmark_prints_both_scans_and_their_ratio(capsys) -> None:
    scan.main(["--lengths", "20", "8", "--device", "cpu", "--repeats", "1", "--d-inner", "4",
               "--d-state", "2"])
    out = capsys.readouterr().out
    table = {int(line.split()[0]): [float(cell.rstrip("x")) for cell in line.split()[1:]]
             for line in out.splitlines() if re.match(r"\s*\d+\s", line)}
    assert sorted(table) == [8, 20]
    for sequential, parallel, ratio in table.values():
        assert sequential > 0 and parallel > 0
        assert ratio == pytest.approx(sequential / parallel, rel=0.05, abs=0.05)
    assert re.search(r"at T = 20: the parallel scan is \d+\.\dx faster", out)


def test_scan_speed_times_both_scans_at_every_length() -> None:
    rows = scan.scan_speed([5, 3, 5], d_inner=3, d_state=2, batch=1, device="cpu", repeats=2)
    assert [(r["length"], r["method"]) for r in rows] == [
        (3, "sequential"), (3, "parallel"), (5, "sequential"), (5, "parallel")]
    assert all(r["seconds"] > 0 for r in rows)
    with pytest.raises(ValueError, match="lengths: expected at least one length"):
        scan.scan_speed([])


def test_decoding_state_is_constant_for_mamba_and_linear_for_the_kv_cache() -> None:
    C, L, T = 16, 2, (256, 1024)
    rows = decoding.decoding_memory(T, d_model=C, num_layers=L, num_heads=2, new_tokens=4,
                                    device="cpu")
    state = {(r["model"], r["length"]): r["state_mib"] * 2**20 for r in rows}
    peak = {(r["model"], r["length"]): r["step_peak_mib"] for r in rows}
    Ci, K, N = 2 * C, 4, 16  # MambaLM's defaults: expand 2, d_conv 4, d_state 16
    for length in T:
        # per layer: the last K - 1 inputs of the convolution and the (Cᵢ, N) SSM state
        assert state[("Mamba", length)] == L * (Ci * (K - 1) + Ci * N) * 4
        # per layer: keys and values, (1, H, T, D) each, one per position read
        assert state[("attention", length)] == L * 2 * length * C * 4
    assert peak[("attention", 1024)] > 2 * peak[("attention", 256)]
    assert peak[("Mamba", 1024)] < peak[("attention", 1024)] / 4
    with pytest.raises(ValueError, match="lengths: expected at least one length"):
        decoding.decoding_memory([])


def test_in_fresh_process_returns_the_result_from_another_process() -> None:
    assert in_fresh_process(os.getpid) != os.getpid()
    assert in_fresh_process(torch.get_num_threads) == torch.get_num_threads()  # pinned alike
    assert torch.equal(in_fresh_process(torch.arange, 5), torch.arange(5))
    assert in_fresh_process(print, "noise") is None  # printing does not spoil the result
    with pytest.raises(RuntimeError, match="fn: int failed in the child process"):
        in_fresh_process(int, "not a number")


@pytest.fixture
def short_sweep_training(tmp_path, monkeypatch):
    """The sweep's models, and the chapter-4 ViT, trained for 2 steps into an empty cache."""
    from tfcourse import classification

    monkeypatch.setenv("TFCOURSE_CACHE", str(tmp_path))
    for recipe in (classification.TOKEN_SWEEP_TRAINING, classification.DIGITS_TRAINING):
        monkeypatch.setitem(recipe, "steps", 2)
        monkeypatch.setitem(recipe, "warmup_steps", 1)
    return tmp_path / "tfcourse"


def test_token_sweep_measures_tome_at_each_image_size(short_sweep_training) -> None:
    from tfcourse.bench.tome import sweep_rs, token_sweep

    assert sweep_rs(65) == [4, 8, 12, 16, 24, 32]  # shares of max_merges(65) = 32
    assert sweep_rs(17, [0.01, 0.5, 1.0]) == [1, 4, 8]
    rows = token_sweep([8, 16], shares=[0.5, 1.0], batch_size=16, repeats=1, device="cpu")
    assert [(r["image_size"], r["num_tokens"], r["r"]) for r in rows] == [
        (8, 5, None), (8, 5, 1), (8, 5, 2), (16, 17, None), (16, 17, 4), (16, 17, 8)]
    assert len(list(short_sweep_training.glob("digits_vit_tokens_*.pt"))) == 2
    for row in rows:
        assert row["tokens"][0] == row["num_tokens"] and len(row["tokens"]) == 7  # L = 6
        assert row["images_per_s"] > 0 and 0 <= row["accuracy"] <= 1
        assert row["test_digits"] == 359
    assert [r["speedup"] for r in rows if r["r"] is None] == [1.0, 1.0]  # over its own size
    assert rows[-1]["tokens"] == [17, 9, 5, 3, 2, 2, 2]  # r = 8, clamped to half
    with pytest.raises(ValueError, match="image_sizes: expected at least one size"):
        token_sweep([])
    with pytest.raises(ValueError, match=r"shares: expected numbers in \(0, 1\]"):
        sweep_rs(17, [0.5, 1.5])
    with pytest.raises(ValueError, match="num_tokens: expected at least 3 tokens"):
        sweep_rs(2)


def test_sweep_model_rejects_a_size_the_patches_do_not_divide() -> None:
    from tfcourse.classification import train_token_sweep_vit
    from tfcourse.data.digits import load_digit_images

    with pytest.raises(ValueError, match="image_size: expected a multiple of the patch size 4"):
        train_token_sweep_vit(18)
    with pytest.raises(ValueError, match="data: expected digits of 24x24 pixels, got 16x16"):
        train_token_sweep_vit(24, load_digit_images(16))


def test_most_merging_within_is_chosen_by_accuracy_not_by_the_clock() -> None:
    from tfcourse.bench.tome import most_merging_within

    def row(r, accuracy, speedup, kind="constant"):
        tokens = [17] + [17 - r * (i + 1) for i in range(3)] if r else [17] * 4
        return {"r": r, "kind": kind, "accuracy": accuracy, "speedup": speedup,
                "tokens": tokens}

    plain = {**row(0, 0.99, 1.0), "r": None, "kind": None}
    rows = [plain, row(1, 0.985, 0.9), row(2, 0.97, 3.0), row(3, 0.985, 1.5),
            {**row(1, 0.99, 1.1, "decreasing"), "tokens": [17, 17, 16, 16]}]
    # r = 2 loses 2 points, so r = 3 does not count although it is back within 1 point
    assert most_merging_within(rows) == rows[1]
    assert most_merging_within(rows, max_drop=2.0) == rows[3]
    assert most_merging_within([plain, row(1, 0.9, 2.0)]) is None
    with pytest.raises(ValueError, match="rows: expected the rows of tome_tradeoff"):
        most_merging_within(rows[1:])


def test_tome_benchmark_prints_the_sweep_over_tokens(short_sweep_training, capsys) -> None:
    from tfcourse.bench import tome

    common = ["--r", "1", "--kinds", "constant", "--batch-size", "8", "--repeats", "1",
              "--device", "cpu"]
    tome.main([*common, "--image-sizes", "8", "16", "--shares", "1"])
    out = capsys.readouterr().out
    assert "ToMe on the chapter-4 ViT (17 tokens" in out
    assert "ToMe against the number of tokens" in out and "one digit is 0.28 points" in out
    sweep = [line.split() for line in out.splitlines() if re.match(r"\s+(8|16)\s+(5|17)\s", line)]
    assert [(cells[0], cells[1], cells[2]) for cells in sweep] == [
        ("8", "5", "ViT"), ("8", "5", "ToMe"), ("16", "17", "ViT"), ("16", "17", "ToMe")]
    assert re.search(r"^  +(5|17) tokens \((8|16) px\): ", out, re.M)
    assert "the course's target, at least 1.8x at a drop of at most 1 point: " in out
    tome.main([*common, "--image-sizes"])  # no size: the sweep is skipped
    assert "against the number of tokens" not in capsys.readouterr().out


# --- python -m tfcourse.bench scaling (chapter 11): tiny sizes, the aot_eager backend ---


def test_compiled_training_steps_give_the_eager_loss_and_gradients() -> None:
    from tfcourse.bench.scaling import MODELS, compile_timings

    rows = compile_timings(backend="aot_eager", d_model=16, num_layers=2, batch=2, length=16,
                           repeats=1)
    assert [r.model for r in rows] == list(MODELS)
    for r in rows:
        assert r.backend == "aot_eager" and r.parameters > 0
        # the same operators in the same order: equal, or float32 rounding at most
        assert r.loss_difference < 1e-6 and r.grad_difference < 1e-5
        assert r.compile_s > 0 and r.eager_s > 0 and r.compiled_s > 0
        assert r.speedup == r.eager_s / r.compiled_s
        assert r.graphs >= 1 and (r.graph_breaks == 0) == (not r.break_reasons)


def test_graph_breaks_names_the_line_that_breaks_the_graph() -> None:
    from tfcourse.bench.scaling import graph_breaks

    class Branchy(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x * 2
            if x.sum() > 0:  # a Python branch on a tensor's value: Dynamo must stop here
                x = x + 1
            return x.relu()

    graphs, breaks, reasons = graph_breaks(Branchy(), torch.ones(3))
    assert breaks >= 1 and graphs >= 2
    assert any("if x.sum() > 0" in reason and ":" in reason for reason in reasons)
    assert graph_breaks(torch.nn.Linear(3, 3), torch.ones(2, 3))[1:] == (0, [])


def test_compile_timings_rejects_an_unknown_backend_and_model() -> None:
    from tfcourse.bench.scaling import compile_timings

    with pytest.raises(ValueError, match=r"backend: expected one of torch.compiler.list_backe"):
        compile_timings(backend="nope")
    with pytest.raises(ValueError, match=r"models: expected names from \('GPT', 'Mamba'\)"):
        compile_timings(["BERT"], backend="aot_eager")


def test_activation_checkpointing_needs_less_memory_for_the_same_gradients() -> None:
    from tfcourse.bench.scaling import checkpointing_costs

    (row,) = checkpointing_costs([256], d_model=32, num_layers=4, batch=4, repeats=1,
                                 device="cpu")
    assert row.blocks == 4 and row.length == 256
    assert row.grad_difference < 1e-6  # the same computation, done again in the backward pass
    # 4 blocks keep 4 blocks' activations without, their 4 inputs and 1 block's with (~9 and
    # ~3 MiB here)
    assert row.plain_mib > 4 and row.checkpointed_mib < 0.7 * row.plain_mib
    assert row.memory_ratio == row.checkpointed_mib / row.plain_mib
    assert row.plain_s > 0 and row.checkpointed_s > 0


def test_two_ddp_processes_end_with_the_parameters_of_one_process_on_the_doubled_batch() -> None:
    from tfcourse.bench.scaling import SETUPS, data_parallel_rates

    result = data_parallel_rates(d_model=16, num_layers=2, batch=2, length=16, steps=2,
                                 repeats=1, timeout=120)
    assert set(result.rates) == set(SETUPS) and all(r > 0 for r in result.rates.values())
    assert result.rank_difference == 0  # DDP keeps the ranks in sync, bit for bit
    # the averaged gradients are those of the doubled batch, to float32 rounding
    assert result.gradient_difference < 1e-5
    # that rounding, grown by AdamW where a gradient is near 0 (about 1e-4 here); a rank that
    # trains on the wrong rows moves parameters by about lr = 1e-3 a step (6e-3 here)
    assert result.single_difference < 5e-4


@pytest.mark.parametrize(("args", "message"), [
    (["--backend", "nope"], "argument --backend: expected one of torch.compiler.list_backends"),
    (["--width", "30"], "argument --width: expected a multiple of 4 (the heads), got 30"),
    (["--batch", "3"], "argument --batch: expected an even number"),
    (["--layers", "1"], "argument --layers: expected at least 2, got 1"),
    (["--checkpoint-lengths", "64", "1"], "argument --checkpoint-lengths: expected lengths of "
                                          "at least 2, got 1"),
    (["--steps", "0"], "argument --steps: expected a positive int, got '0'"),
    (["--parts", "fsdp"], "argument --parts: invalid choice: 'fsdp'"),
    (["--models", "BERT"], "argument --models: invalid choice: 'BERT'"),
    (["--device", "tpu"], "argument --device: expected cpu or cuda, got 'tpu'"),
])
def test_scaling_command_line_rejects_bad_options(args, message, capsys) -> None:
    from tfcourse.bench import scaling

    with pytest.raises(SystemExit) as exited:
        scaling.main(args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_scaling_command_line_prints_the_three_parts(capsys) -> None:
    from tfcourse.bench import scaling
    from tfcourse.bench.__main__ import BENCHMARKS

    assert BENCHMARKS["scaling"] == "tfcourse.bench.scaling"
    scaling.main(["--quick", "--models", "GPT", "--width", "16", "--length", "16",
                  "--checkpoint-lengths", "64", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "torch.compile, backend aot_eager" in out
    assert re.search(r"^\s+GPT\s+[\d,]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+x\s", out, re.M)
    for setup in scaling.SETUPS:
        assert re.search(rf"^\s*{re.escape(setup)}\s+[\d.]+\s", out, re.M)
    assert "why two processes on two cores gain little" in out
    assert re.search(r"^\s+64\s+[\d.]+\s+[\d.]+\s", out, re.M)  # the checkpointing row
    assert "load average" in out
