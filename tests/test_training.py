"""tfcourse.training: schedules, reproducibility, exact resume, clipping, errors, progress,
gradient accumulation, fp16 with a GradScaler, torch.compile and activation checkpointing (the
data-parallel side is in test_distributed.py)."""

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tfcourse.data import batches_from_tensors, recall_batches
from tfcourse.language_models import DecoderOnlyLM, next_token_loss
from tfcourse.training import History, TrainConfig, Trainer, checkpoint_blocks, lr_schedule


def make_model(seed: int = 0, dropout: float = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 32), nn.Dropout(dropout), nn.ReLU(), nn.Linear(32, 1))


def regression_batches(batch_size: int = 16):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    return batches_from_tensors(x, y, batch_size=batch_size, seed=0)


def mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def mse_with_metric(model, batch):
    x, y = batch
    error = model(x) - y
    return (error**2).mean(), {"mae": error.abs().mean()}


def config(**overrides) -> TrainConfig:
    settings = dict(steps=30, lr=1e-2, warmup_steps=5, weight_decay=0.01, log_every=3,
                    device="cpu", progress=False)
    return TrainConfig(**{**settings, **overrides})


def parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def without_timings(history: History) -> dict:
    timed = {"seconds", "examples_per_s", "tokens_per_s"}
    d = history.as_dict()
    return {part: [{k: v for k, v in r.items() if k not in timed} for r in records]
            for part, records in d.items()}


# --- schedules ---


def test_warmup_is_linear_from_almost_zero_to_one() -> None:
    factors = [lr_schedule(s, total_steps=100, warmup_steps=10) for s in range(10)]
    assert factors == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert lr_schedule(10, total_steps=100, warmup_steps=10) == 1.0  # the peak, after warm-up


@pytest.mark.parametrize("min_lr_ratio", [0.0, 0.1])
def test_cosine_and_linear_decay_to_min_lr_ratio(min_lr_ratio: float) -> None:
    kw = dict(total_steps=110, warmup_steps=10, min_lr_ratio=min_lr_ratio)
    cosine = [lr_schedule(s, schedule="cosine", **kw) for s in range(10, 111)]
    linear = [lr_schedule(s, schedule="linear", **kw) for s in range(10, 111)]
    assert cosine[0] == linear[0] == 1.0
    assert cosine[-1] == pytest.approx(min_lr_ratio) and linear[-1] == pytest.approx(min_lr_ratio)
    assert cosine[50] == pytest.approx((1 + min_lr_ratio) / 2)  # half-way
    assert linear[25] == pytest.approx(min_lr_ratio + (1 - min_lr_ratio) * 0.75)
    assert all(a >= b for a, b in zip(cosine, cosine[1:], strict=False))
    assert cosine[10] > linear[10]  # cosine stays high longer
    assert lr_schedule(500, schedule="cosine", **kw) == pytest.approx(min_lr_ratio)  # no rebound


def test_constant_and_inverse_sqrt() -> None:
    assert {lr_schedule(s, total_steps=50, schedule="constant") for s in range(50)} == {1.0}
    factors = [lr_schedule(s, total_steps=1000, warmup_steps=16, schedule="inverse_sqrt")
               for s in range(1000)]
    assert max(factors) == factors[15] == 1.0
    assert factors[63] == pytest.approx(0.5) and factors[255] == pytest.approx(0.25)
    # Vaswani et al. (2017), Eq. 3, up to its constant: min(s^-0.5, s * warmup^-1.5), s = step + 1
    vaswani = [min((s + 1) ** -0.5, (s + 1) * 16**-1.5) for s in range(1000)]
    assert factors == pytest.approx([v / max(vaswani) for v in vaswani])


def test_the_trainer_follows_the_schedule() -> None:
    trainer = Trainer(make_model(), mse, regression_batches(), config(log_every=1, steps=20))
    history = trainer.fit()
    expected = [1e-2 * lr_schedule(s, total_steps=20, warmup_steps=5) for s in range(20)]
    assert history.lr == pytest.approx(expected)
    assert history.steps == list(range(1, 21))


# --- reproducibility and resume ---


def test_a_seeded_run_is_reproducible() -> None:
    runs = []
    for _ in range(2):
        trainer = Trainer(make_model(), mse, regression_batches(), config(seed=3))
        history = trainer.fit()
        runs.append((parameters(trainer.model), without_timings(history)))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0], strict=True))
    assert runs[0][1] == runs[1][1]
    other = Trainer(make_model(), mse, regression_batches(), config(seed=4))
    other.fit()
    assert not torch.equal(parameters(other.model)[0], runs[0][0][0])  # dropout drew otherwise


def test_resume_continues_bit_for_bit(tmp_path: Path) -> None:
    evals = []

    def eval_fn(model: nn.Module) -> dict[str, float]:
        evals.append(model.training)
        return {"noise": torch.rand(()).item()}  # draws from the generator that dropout uses

    cfg = config(eval_every=7)
    full = Trainer(make_model(), mse_with_metric, regression_batches(), cfg, eval_fn=eval_fn)
    full.fit()

    first = Trainer(make_model(), mse_with_metric, regression_batches(), cfg, eval_fn=eval_fn)
    first.fit(steps=14)
    first.save(tmp_path / "run.pt")
    del first
    torch.manual_seed(123)  # whatever happens in between
    resumed = Trainer.resume(tmp_path / "run.pt", make_model(seed=9), mse_with_metric,
                             regression_batches(), eval_fn=eval_fn)
    assert resumed.step == 14 and resumed.config == cfg
    resumed.fit()

    assert all(torch.equal(a, b) for a, b in zip(parameters(full.model),
                                                 parameters(resumed.model), strict=True))
    assert without_timings(full.history) == without_timings(resumed.history)
    assert [r["step"] for r in full.history.eval] == [7, 14, 21, 28, 30]
    assert not any(evals)  # eval_fn ran in eval mode
    full_state = full.optimizer.state_dict()["state"]
    resumed_state = resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(full_state[i]["exp_avg_sq"], resumed_state[i]["exp_avg_sq"])
               for i in full_state)


def test_load_into_an_existing_trainer_and_checkpoint_every(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ckpt.pt"
    trainer = Trainer(make_model(), mse, regression_batches(),
                      config(checkpoint_path=path, checkpoint_every=10))
    trainer.fit(steps=12)
    assert path.is_file() and not path.with_name("ckpt.pt.tmp").exists()
    other = Trainer(make_model(seed=5), mse, regression_batches(), config())
    other.load(path)
    assert other.step == 12  # fit() saved again when it returned
    assert all(torch.equal(a, b) for a, b in zip(parameters(trainer.model),
                                                 parameters(other.model), strict=True))


# --- what a step does ---


def test_grad_clip_bounds_the_applied_update() -> None:
    model = make_model(dropout=0.0)
    big = lambda model, batch: 100.0 * mse(model, batch)  # noqa: E731  (large gradients)
    sgd = torch.optim.SGD(model.parameters(), lr=1.0)
    trainer = Trainer(model, big, regression_batches(), config(grad_clip=0.5, warmup_steps=0,
                      schedule="constant", log_every=1, steps=5), optimizer=sgd)
    before = parameters(model)
    trainer.fit(steps=1)
    update = torch.cat([(a - b).flatten() for a, b in zip(parameters(model), before,
                                                          strict=True)])
    assert trainer.history.grad_norm[0] > 10  # recorded: the norm before clipping
    assert update.norm().item() == pytest.approx(0.5, rel=1e-4)  # applied: clipped to 0.5

    model = make_model(dropout=0.0)
    before = parameters(model)
    unclipped = Trainer(model, big, regression_batches(), config(grad_clip=None, warmup_steps=0,
                        schedule="constant", log_every=1, steps=5),
                        optimizer=torch.optim.SGD(model.parameters(), lr=1.0))
    unclipped.fit(steps=1)
    update = torch.cat([(a - b).flatten() for a, b in zip(parameters(model), before,
                                                          strict=True)])
    assert update.norm().item() == pytest.approx(unclipped.history.grad_norm[0], rel=1e-4)


def test_a_nan_loss_stops_training_naming_the_step() -> None:
    def loss_fn(model, batch):
        loss = mse(model, batch)
        return loss * (math.nan if trainer.step == 4 else 1.0)

    trainer = Trainer(make_model(), loss_fn, regression_batches(), config())
    with pytest.raises(FloatingPointError, match="step 4: the loss is nan"):
        trainer.fit()
    assert trainer.step == 4


def test_eval_and_loss_fn_metrics_land_in_the_history() -> None:
    calls = []

    def eval_fn(model: nn.Module) -> dict[str, float]:
        calls.append(torch.is_grad_enabled())
        return {"val_mse": 1.0 / (len(calls)), "accuracy": torch.tensor(0.5)}

    trainer = Trainer(make_model(), mse_with_metric, regression_batches(),
                      config(eval_every=10, steps=25), eval_fn=eval_fn)
    history = trainer.fit()
    assert history.series("val_mse") == ([10, 20, 25], [1.0, 0.5, 1 / 3])
    assert history.last("accuracy") == 0.5 and not any(calls)
    assert len(history.series("mae")[1]) == len(history.steps) == 9
    assert history.last("examples_per_s") > 0
    assert set(history.as_dict()) == {"train", "eval"}
    assert History().loss == [] and History().steps == []
    with pytest.raises(KeyError, match="no series 'bleu'"):
        history.last("bleu")

    clash = Trainer(make_model(), mse, regression_batches(), config(steps=3, warmup_steps=0),
                    eval_fn=lambda model: {"loss": 0.0})
    with pytest.raises(ValueError, match=r"eval_fn: returned \['loss'\].*val_loss"):
        clash.fit()


def test_bf16_autocast_on_the_cpu_is_allowed() -> None:
    trainer = Trainer(make_model(), mse, regression_batches(), config(precision="bf16"))
    assert trainer.autocast_dtype == torch.bfloat16
    history = trainer.fit()
    assert all(math.isfinite(v) for v in history.loss)
    assert Trainer(make_model(), mse, regression_batches(),
                   config(precision="auto")).autocast_dtype is None  # fp32 on the CPU


def test_training_a_tiny_model_lowers_the_loss() -> None:
    trainer = Trainer(make_model(dropout=0.0), mse, regression_batches(),
                      config(steps=150, lr=3e-2, log_every=10))
    history = trainer.fit()
    assert history.loss[-1] < 0.05 * history.loss[0]


def test_batches_of_tuples_lists_and_dicts_reach_the_loss() -> None:
    seen = []

    def loss_fn(model, batch):
        seen.append(type(batch))
        return mse(model, (batch["x"], batch["y"][0]))

    inner = regression_batches()
    trainer = Trainer(make_model(), loss_fn, lambda s: {"x": inner(s)[0], "y": [inner(s)[1]]},
                      config(steps=2, warmup_steps=0))
    trainer.fit()
    assert seen == [dict, dict]


# --- gradient accumulation, fp16, torch.compile, activation checkpointing ---


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_accumulation_makes_the_update_of_the_whole_batch(optimizer: str) -> None:
    runs = []
    for k in (1, 4):
        model = make_model(dropout=0.0)
        opt = torch.optim.SGD(model.parameters(), lr=0.1) if optimizer == "sgd" else None
        trainer = Trainer(model, mse_with_metric, regression_batches(),
                          config(steps=6, log_every=1, accumulation_steps=k), optimizer=opt)
        runs.append((trainer.fit(), parameters(model)))
    (whole, p1), (accumulated, p4) = runs
    # 4 micro-batches of 4 rows: the mean of their means is the mean of 16 rows, summed in
    # another order, so equal to float32 rounding
    assert accumulated.loss == pytest.approx(whole.loss, rel=1e-6)
    assert accumulated.series("mae")[1] == pytest.approx(whole.series("mae")[1], rel=1e-6)
    assert accumulated.grad_norm == pytest.approx(whole.grad_norm, rel=1e-5)
    for a, b in zip(p1, p4, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_accumulation_needs_a_batch_that_splits_evenly() -> None:
    trainer = Trainer(make_model(), mse, regression_batches(), config(accumulation_steps=3))
    with pytest.raises(ValueError, match=r"batches: a batch of 16 rows does not split into "
                                         r"world_size=1 x accumulation_steps=3 = 3 equal parts"):
        trainer.fit()


def test_fp16_runs_with_a_grad_scaler_that_skips_overflowing_steps() -> None:
    model = make_model(dropout=0.0)
    huge = lambda model, batch: 1e3 * mse(model, batch)  # noqa: E731  (fp16 gradients overflow)
    trainer = Trainer(model, huge, regression_batches(),
                      config(precision="fp16", log_every=1, steps=30, warmup_steps=0))
    assert trainer.autocast_dtype == torch.float16 and trainer.scaler is not None
    before = parameters(model)
    trainer.fit(steps=1)
    assert trainer.history.grad_norm[0] == math.inf  # scaled by 2^16, the gradients overflowed,
    assert trainer.history.last("loss_scale") == 2.0**15  # so the scale was halved
    assert all(torch.equal(a, b) for a, b in zip(before, parameters(model), strict=True))
    history = trainer.fit()  # the step was skipped; with a smaller scale the steps go through
    skipped = [g == math.inf for g in history.grad_norm]
    assert 1 < sum(skipped) < 25 and not skipped[-1]
    scales = [2.0**16, *history.series("loss_scale")[1]]
    # halved after each overflow, kept otherwise (it grows only after 2000 clean steps)
    assert all(new == (old / 2 if skip else old)
               for old, new, skip in zip(scales, scales[1:], skipped, strict=False))
    assert not torch.equal(before[0], parameters(model)[0])


def test_fp16_on_the_cpu_learns_and_resumes_exactly(tmp_path: Path) -> None:
    cfg = config(precision="fp16", steps=40, lr=3e-2, log_every=10)
    full = Trainer(make_model(), mse, regression_batches(), cfg)
    full.fit()
    assert full.history.loss[-1] < 0.2 * full.history.loss[0]
    first = Trainer(make_model(), mse, regression_batches(), cfg)
    first.fit(steps=17)
    first.save(tmp_path / "fp16.pt")
    resumed = Trainer.resume(tmp_path / "fp16.pt", make_model(seed=3), mse, regression_batches())
    assert resumed.scaler.get_scale() == first.scaler.get_scale()  # the scaler came back too
    resumed.fit()
    assert without_timings(resumed.history) == without_timings(full.history)
    with pytest.raises(ValueError, match=r"state: expected a checkpoint of format \(1, 2\)"):
        resumed.load_state_dict({**resumed.state_dict(), "format": 7})


def tiny_gpt() -> nn.Module:
    torch.manual_seed(0)
    return DecoderOnlyLM(16, max_len=16, d_model=32, num_heads=2, num_layers=2, dropout=0.1)


def lm_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    tokens, _ = batch
    return next_token_loss(model(tokens), tokens)


def induction_batches():
    return recall_batches("induction", 8, seed=0, seq_len=16, vocab_size=16)


def test_compile_trains_like_eager_and_keeps_the_parameter_names(tmp_path: Path) -> None:
    runs = []
    for compile in (False, "aot_eager"):  # AOTAutograd without Inductor: seconds, not minutes
        trainer = Trainer(tiny_gpt(), lm_loss, induction_batches(),
                          config(steps=4, log_every=1, warmup_steps=0, compile=compile))
        runs.append((trainer.fit(), trainer))
    (eager, _), (compiled, trainer) = runs
    assert compiled.loss == pytest.approx(eager.loss, rel=1e-5)
    assert trainer.train_model is not trainer.model  # compiled for training ...
    assert list(trainer.state_dict()["model"]) == list(tiny_gpt().state_dict())  # ... same names
    trainer.save(tmp_path / "compiled.pt")
    Trainer(tiny_gpt(), lm_loss, induction_batches(), config(steps=4, warmup_steps=0)).load(
        tmp_path / "compiled.pt")


def test_activation_checkpointing_recomputes_the_blocks_and_changes_nothing_else() -> None:
    runs = []
    for on in (False, True):
        model = tiny_gpt()
        calls = []
        model.decoder.layers[0].feed_forward.register_forward_hook(
            lambda *args, calls=calls: calls.append(torch.is_grad_enabled()))
        trainer = Trainer(model, lm_loss, induction_batches(),
                          config(steps=3, log_every=1, warmup_steps=0,
                                 activation_checkpointing=on))
        runs.append((trainer.fit(), parameters(model), len(calls)))
    (plain, p_plain, n_plain), (checkpointed, p_checkpointed, n_checkpointed) = runs
    assert n_plain == 3 and n_checkpointed == 6  # each block ran again in the backward pass
    # recomputed with the same random state (dropout masks) and the same kernels: bit for bit
    assert checkpointed.loss == plain.loss
    assert all(torch.equal(a, b) for a, b in zip(p_plain, p_checkpointed, strict=True))

    model = tiny_gpt()
    assert checkpoint_blocks(model) == ["decoder.layers.0", "decoder.layers.1"]
    assert checkpoint_blocks(model) == ["decoder.layers.0", "decoder.layers.1"]  # idempotent
    assert list(model.state_dict()) == list(tiny_gpt().state_dict())
    with torch.no_grad():  # no gradients, nothing to recompute: a plain forward
        torch.testing.assert_close(model.eval()(torch.ones(1, 4, dtype=torch.long)),
                                   tiny_gpt().eval()(torch.ones(1, 4, dtype=torch.long)))
    with pytest.raises(ValueError, match="activation_checkpointing: the model has no "
                                         "nn.ModuleList of blocks"):
        Trainer(make_model(), mse, regression_batches(), config(activation_checkpointing=True))


def test_activation_checkpointing_of_a_mamba_model_keeps_its_gradients() -> None:
    from tfcourse.mamba import MambaLM

    torch.manual_seed(0)
    plain = MambaLM(16, d_model=32, num_layers=2)
    checkpointed = copy.deepcopy(plain)
    assert checkpoint_blocks(checkpointed) == ["blocks.0", "blocks.1"]
    tokens = torch.randint(16, (2, 64))
    for model in (plain, checkpointed):
        model(tokens).logsumexp(-1).mean().backward()
    assert all(torch.equal(a.grad, b.grad) for a, b in
               zip(plain.parameters(), checkpointed.parameters(), strict=True))


# --- progress display ---


def test_progress_false_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    Trainer(make_model(), mse, regression_batches(), config(progress=False)).fit()
    assert capsys.readouterr() == ("", "")


def test_progress_ends_with_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    token_batches = lambda step: (torch.zeros(8, 5, dtype=torch.long), torch.zeros(8, 1))  # noqa
    model = nn.Sequential(nn.Embedding(3, 4), nn.Flatten(), nn.Linear(20, 1))
    trainer = Trainer(model, mse, token_batches, config(progress=True, steps=12))
    trainer.fit()
    out, err = capsys.readouterr()
    assert err == "" and out.count("\n") == 1  # not a terminal: the summary only
    assert out.startswith("trained 12/12 | loss ") and "steps/s" in out and "tok/s" in out
    assert trainer.history.last("tokens_per_s") > trainer.history.last("examples_per_s")


def test_progress_rewrites_one_line_on_a_terminal(monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    Trainer(make_model(), mse, regression_batches(), config(progress=True, steps=5)).fit()
    out = capsys.readouterr().out
    assert out.startswith("\rstep 1/5 | ") and out.endswith("\n") and out.count("\n") == 1
    assert "\r\x1b[Ktrained 5/5" in out


# --- bad configurations ---


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(steps=0), "steps: expected an int >= 1, got 0"),
    (dict(steps=2.5), "steps: expected an int >= 1, got 2.5"),
    (dict(schedule="step"), "schedule: expected one of"),
    (dict(precision="fp8"), "precision: expected one of"),
    (dict(warmup_steps=31), "warmup_steps: expected at most steps=30, got 31"),
    (dict(lr=0), "lr: expected a number > 0, got 0"),
    (dict(weight_decay=-1), "weight_decay: expected a number >= 0"),
    (dict(min_lr_ratio=2), r"min_lr_ratio: expected a number in \[0, 1\]"),
    (dict(betas=(0.9, 1.0)), r"betas: expected two numbers in \[0, 1\)"),
    (dict(betas=0.9), r"betas: expected two numbers in \[0, 1\)"),
    (dict(lr="1e-3"), "lr: expected a number > 0, got '1e-3'"),
    (dict(grad_clip=0), "grad_clip: expected a number > 0 or None"),
    (dict(device="gpu:0"), "device: expected a torch device"),
    (dict(log_every=0), "log_every: expected an int >= 1"),
    (dict(eval_every=0), "eval_every: expected an int >= 1"),
    (dict(checkpoint_every=5), "checkpoint_every: needs checkpoint_path"),
    (dict(seed=-2), "seed: expected an int >= 0"),
    (dict(progress="yes"), "progress: expected True or False"),
    (dict(accumulation_steps=0), "accumulation_steps: expected an int >= 1, got 0"),
    (dict(compile="fastest"), r"compile: expected True, False or a backend of .*'fastest'"),
    (dict(compile=1), "compile: expected True, False or a backend name, got 1"),
    (dict(activation_checkpointing="yes"), "activation_checkpointing: expected True or False"),
    (dict(find_unused_parameters=1), "find_unused_parameters: expected True or False"),
])
def test_bad_config_values_get_clear_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_bad_trainer_arguments_get_clear_errors() -> None:
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module, got str"):
        Trainer("model", mse, regression_batches(), config())
    with pytest.raises(TypeError, match="config: expected a TrainConfig, got dict"):
        Trainer(make_model(), mse, regression_batches(), {"steps": 3})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: 'cuda' asks for a GPU, but CUDA sees none"):
            Trainer(make_model(), mse, regression_batches(), config(device="cuda"))
    with pytest.raises(TypeError, match="batches: expected a callable"):
        Trainer(make_model(), mse, [1, 2], config())
    trainer = Trainer(make_model(), mse, regression_batches(), config(steps=10))
    with pytest.raises(ValueError, match="steps: 11 more steps would end at step 11, after "
                                         "config.steps=10"):
        trainer.fit(steps=11)
    with pytest.raises(ValueError, match="eval_fn: this trainer has none"):
        trainer.evaluate()
    with pytest.raises(TypeError, match="loss_fn: expected a scalar tensor"):
        Trainer(make_model(), lambda m, b: m(b[0]), regression_batches(), config()).fit()


# --- GPU ---


@pytest.mark.gpu
def test_bf16_on_cuda_trains_and_the_history_is_finite() -> None:
    trainer = Trainer(make_model(), mse, regression_batches(),
                      config(device="cuda", precision="bf16", steps=60))
    assert trainer.autocast_dtype == torch.bfloat16
    seen = []
    inner = trainer.loss_fn

    def loss_fn(model, batch):
        out = model[0](batch[0])
        seen.append(out.dtype)
        return inner(model, batch)

    trainer.loss_fn = loss_fn
    history = trainer.fit()
    assert seen[0] == torch.bfloat16  # autocast ran the linear layers in bf16
    assert all(math.isfinite(v) for v in history.loss + history.grad_norm)
    assert history.loss[-1] < history.loss[0]
    assert next(trainer.model.parameters()).device.type == "cuda"
    auto = Trainer(make_model(), mse, regression_batches(), config(device="cuda",
                                                                    precision="auto"))
    assert auto.autocast_dtype == torch.bfloat16
