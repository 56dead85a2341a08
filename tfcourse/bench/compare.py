"""The course's sequence models side by side (book: chapter 10).

    python -m tfcourse.bench compare [--parts cost recall vision] [--lengths 256 512 ...]
        [--device cuda] [--dtype bf16] [--steps 400] [--width 64] [--layers 4]

builds the four sequence models of chapters 3 and 7–9 at a matched parameter count
(:func:`build_models`): chapter 3's decoder-only Transformer (``attention``), a Hyena model, a
Mamba model and a Jamba model, and prints, with the machine, threads, dtype and command line:

* ``cost``: at each context length T, the time and peak memory of one training step (forward,
  backward and AdamW step on a batch of random tokens) and of decoding one token after T tokens
  of context, each model timed in turn, round after round, so a change in the machine's load
  reaches all alike; then the growth exponent p of time ∝ T^p of each model and the lengths from
  which one model is faster than another. Attention decodes with its KV cache (it grows with
  T), Mamba with its fixed-size state; the course gives Hyena and Jamba no recurrent decoding,
  so they decode a token by running the whole prefix again (said in the table).
* ``recall``: each model trained with one recipe (same steps, batch, learning rate, schedule
  and seed) on multi-query associative recall (chapters 7 and 9) at a few lengths: held-out
  accuracy, and the steps and training time it took to reach a stated accuracy.
* ``vision``: the digit classifiers of chapters 4–6 (the ViT, ToMe on it, the Activator, the
  ConvNet): parameters, held-out accuracy, FLOPs per image and throughput
  (:func:`vision_sweep`).

The cost part at its default lengths takes about 4 minutes on 2 busy CPU cores; the recall part
trains 12 models (minutes each on a CPU at the defaults: run it on a GPU, or choose
``--recall-lengths``, ``--steps`` and ``--layers`` to fit).
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from tfcourse import _validate
from tfcourse.bench.hyena import crossover_length, growth_exponent
from tfcourse.data.recall import recall_accuracy, recall_batches, recall_loss
from tfcourse.hyena import HyenaLM
from tfcourse.jamba import JambaConfig, JambaLM
from tfcourse.language_models import DecoderOnlyLM
from tfcourse.mamba import MambaLM
from tfcourse.runtime import default_device
from tfcourse.training import TrainConfig, Trainer

MODELS = ("attention", "Hyena", "Mamba", "Jamba")
DECODING = {"attention": "KV cache", "Hyena": "recompute", "Mamba": "state",
            "Jamba": "recompute"}
PARTS = ("cost", "recall", "vision")
DEFAULT_LENGTHS = [256, 512, 1024, 2048, 4096]
DEFAULT_RECALL_LENGTHS = [32, 64, 128]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AUX_LOSS_WEIGHT = 0.01  # Jamba's load-balancing loss, as chapter 9 trains it
_PREFILL_CHUNK = 1024  # attention reads its context in chunks: no T × T score matrix at once


def counted_parameters(model: nn.Module) -> int:
    """Parameters outside the token and position tables (tied weights once). The tables are left
    out, as Kaplan et al. (2020) count model size, because the position table of attention grows
    with ``max_len`` and would make the match depend on the longest length measured."""
    return sum(p.numel() for name, p in model.named_parameters()
               if not name.startswith(("embed.", "positions.")))


def _matched(build: Callable[[int], nn.Module], target: int, name: str) -> int:
    """The size (a feed-forward width or a number of layers) at which ``build(size)`` has
    ``target`` counted parameters, to the nearest int: the count is linear in either, so two
    counts give it."""
    # built on the CPU: at these widths faster than the meta device, whose first use imports
    # PyTorch's reference operators (seconds)
    one, two = (counted_parameters(build(size)) for size in (1, 2))
    size = round((target - one) / (two - one)) + 1
    if size < 1:
        why = " (Hyena's filter network is 64 wide at any d_model)" if name == "Hyena" else ""
        raise ValueError(f"d_model: the smallest {name} model has {one:,} parameters without "
                         f"the embeddings, more than attention's {target:,}; use a larger "
                         f"d_model{why}")
    return size


def build_models(
    vocab_size: int, *, max_len: int, d_model: int = 64, num_layers: int = 4, seed: int = 0,
) -> dict[str, nn.Module]:
    """The four models of :data:`MODELS`, float32 on the CPU, matched in
    :func:`counted_parameters` to the first, chapter 3's decoder-only Transformer of width
    ``d_model``, ``num_layers`` layers, 4 heads and a feed-forward of width 4C (12C² a layer):

    * Hyena: as many blocks (order 2), its feed-forward width solved for the count;
    * Mamba: as many blocks (expand 2, no feed-forward) as match the count, 1.5 to 2 times
      ``num_layers`` at these widths (the Mamba paper pairs two blocks with one Transformer
      layer, section 4.2, counting 6C² a block; the SSM's own projections add up to a third at
      small width);
    * Jamba: ``num_layers`` layers, one attention layer (4 heads, 2 key/value heads) in every
      min(4, L) as in chapter 9's tiny model, mixtures of 4 experts (top 2) in every second
      layer, the SwiGLU width solved for the count (so its *total* parameters match; a token
      uses fewer, see :func:`tfcourse.jamba.parameter_counts`).
    """
    _validate.integer(vocab_size, "vocab_size", 2)
    _validate.integer(max_len, "max_len", 1)
    _validate.integer(num_layers, "num_layers", 2)  # Jamba needs a Mamba and an attention layer
    _validate.integer(d_model, "d_model", 1)
    if d_model % 4:
        raise ValueError(f"d_model: expected a multiple of 4 (the attention heads), got {d_model}")

    def attention(d_ff: int) -> nn.Module:
        return DecoderOnlyLM(vocab_size, max_len=max_len, d_model=d_model, num_heads=4,
                             num_layers=num_layers, d_ff=d_ff)

    def hyena(d_ff: int) -> nn.Module:
        return HyenaLM(vocab_size, max_len=max_len, d_model=d_model, num_layers=num_layers,
                       d_ff=d_ff)

    def mamba(layers: int) -> nn.Module:
        return MambaLM(vocab_size, d_model=d_model, num_layers=layers)

    period = min(4, num_layers)
    jamba_config = JambaConfig(vocab_size=vocab_size, d_model=d_model, num_layers=num_layers,
                               num_heads=4, num_kv_heads=2, d_ff=1, num_experts=4, top_k=2,
                               attn_layer_period=period, attn_layer_offset=period // 2,
                               max_len=max_len)

    def jamba(d_ff: int) -> nn.Module:
        return JambaLM(dataclasses.replace(jamba_config, d_ff=d_ff))

    target = counted_parameters(attention(4 * d_model))
    sizes = {"Hyena": _matched(hyena, target, "Hyena"), "Mamba": _matched(mamba, target, "Mamba"),
             "Jamba": _matched(jamba, target, "Jamba")}
    torch.manual_seed(seed)  # after the counting, which draws weights too
    return {"attention": attention(4 * d_model), "Hyena": hyena(sizes["Hyena"]),
            "Mamba": mamba(sizes["Mamba"]), "Jamba": jamba(sizes["Jamba"])}


def _loss(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The training loss of every part: cross-entropy at the labelled positions, plus Jamba's
    load-balancing loss."""
    loss = recall_loss(model(tokens), targets)
    if isinstance(model, JambaLM):
        loss = loss + AUX_LOSS_WEIGHT * model.aux_loss()
    return loss


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer, tokens: torch.Tensor,
                targets: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        _loss(model, tokens, targets).backward()
        optimizer.step()

    return step


def _mib_of(tensors: Sequence[torch.Tensor]) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


@torch.no_grad()
def _decoder(name: str, model: nn.Module,
             context: torch.Tensor) -> tuple[float, Callable[[], object]]:
    """What decoding keeps between tokens after ``context`` (1, T), in MiB, and a function that
    decodes the next token: from the KV cache or the state that reading ``context`` left, or by
    running the model on the whole prefix (which keeps nothing but the tokens)."""
    if name == "attention":
        cache = model.new_cache()
        for start in range(0, context.shape[1], _PREFILL_CHUNK):
            model(context[:, start:start + _PREFILL_CHUNK], cache=cache)
        token = context[:, -1:]  # (1, 1); each call appends one position to the cache
        held = _mib_of([t for layer in cache for t in (layer.self_attn.keys,
                                                       layer.self_attn.values)])
        return held, torch.no_grad()(lambda: model(token, cache=cache))
    if name == "Mamba":
        _, state = model(context, return_state=True)
        token = context[:, -1]  # (1,)
        held = _mib_of([t for layer in state for t in (layer.conv, layer.ssm)])
        return held, torch.no_grad()(lambda: model.step(token, state))
    return 0.0, torch.no_grad()(lambda: model(context)[:, -1])


def cost_sweep(
    lengths: Sequence[int], *, vocab_size: int = 32, d_model: int = 64, num_layers: int = 4,
    batch: int = 1, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
    repeats: int = 3, max_call_seconds: float = 5.0, seed: int = 0,
) -> list[dict]:
    """Rows ``{"model", "length", "parameters", "train_s", "train_mib", "decode_s",
    "decode_mib", "state_mib", "decoding"}``, one per model of :data:`MODELS` and length,
    shortest first.

    ``train_s``: the time of a training step on (``batch``, T) random tokens; ``decode_s``: of
    decoding one token after a context of T (batch 1; median of 5 calls a round); each the
    median of ``repeats`` rounds in which the models take turns. ``*_mib``: the memory the call
    needs at its peak beyond what was in use before
    (:func:`tfcourse.bench.measure.peak_memory_mib`; weights, optimizer state and the cache or
    state are held before), ``None`` where it cannot be measured. ``state_mib``: what decoding
    keeps between tokens (the KV cache, the Mamba state; nothing where it recomputes). A model
    that took longer than ``max_call_seconds`` for a call is not run at longer lengths: those
    have no row.
    """
    # imported here: measure sets malloc for the whole process (see tfcourse.bench)
    from tfcourse.bench.measure import median_seconds, peak_memory_mib

    if not lengths:
        raise ValueError("lengths: expected at least one length, got none")
    lengths = sorted({_validate.integer(T, "lengths", 2) for T in lengths})
    _validate.integer(repeats, "repeats", 1)
    _validate.integer(batch, "batch", 1)
    device = torch.device(device) if device is not None else default_device()
    decode_calls = 5  # a round: one decoding step of the KV cache or the state takes ~1 ms
    # attention's cache grows by a position at every decoding call: 2 to measure the peak, then
    # decode_calls a round
    models = build_models(vocab_size, max_len=lengths[-1] + 2 + decode_calls * repeats,
                          d_model=d_model, num_layers=num_layers, seed=seed)
    models = {name: model.to(device, dtype).train() for name, model in models.items()}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4)
                  for name, model in models.items()}
    gen = torch.Generator().manual_seed(seed)
    stopped: set[str] = set()
    rows = []
    for T in lengths:
        tokens = torch.randint(vocab_size, (batch, T + 1), generator=gen).to(device)
        running = [name for name in MODELS if name not in stopped]
        calls: dict[tuple[str, str], Callable[[], object]] = {}
        peaks: dict[tuple[str, str], float | None] = {}
        held: dict[str, float] = {}
        for name in running:
            model = models[name]
            calls[name, "train"] = _train_step(model, optimizers[name], tokens[:, :-1],
                                               tokens[:, 1:])
            peaks[name, "train"] = peak_memory_mib(calls[name, "train"], device)
            model.eval()
            held[name], calls[name, "decode"] = _decoder(name, model, tokens[:1, :-1])
            peaks[name, "decode"] = peak_memory_mib(calls[name, "decode"], device)
            model.train()
        times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
        for _ in range(repeats):  # rounds: each model in turn, so load changes reach all
            for key, call in calls.items():
                models[key[0]].train(key[1] == "train")
                calls_in_round = 1 if key[1] == "train" else decode_calls
                times[key].append(median_seconds(call, device, repeats=calls_in_round,
                                                 warmup=0))
        for name in running:
            train_s = statistics.median(times[name, "train"])
            decode_s = statistics.median(times[name, "decode"])
            if max(train_s, decode_s) > max_call_seconds:
                stopped.add(name)
            rows.append({"model": name, "length": T,
                         "parameters": counted_parameters(models[name]),
                         "train_s": train_s, "train_mib": peaks[name, "train"],
                         "decode_s": decode_s, "decode_mib": peaks[name, "decode"],
                         "state_mib": held[name],
                         "decoding": DECODING[name]})
        del calls  # frees the KV cache and states before the next length
    return rows


def growth_exponents(rows: Sequence[dict], key: str, fit_from: int) -> dict[str, float | None]:
    """For each model, the exponent p of ``key`` (``"train_s"`` or ``"decode_s"``) ∝ T^p
    fitted from T = ``fit_from`` (:func:`tfcourse.bench.hyena.growth_exponent`); ``None`` where
    fewer than two lengths were measured there."""
    timed = _as_timings(rows, key)
    exponents: dict[str, float | None] = {}
    for name in MODELS:
        reached = [r["length"] for r in timed if r["method"] == name and r["length"] >= fit_from]
        exponents[name] = (growth_exponent(timed, name, fit_from, max(reached))
                           if len(set(reached)) >= 2 else None)
    return exponents


def crossovers(rows: Sequence[dict], key: str) -> dict[tuple[str, str], int | None]:
    """``{(faster, slower): T}``: the length from which ``faster`` takes less ``key`` time than
    ``slower`` at every longer measured length (:func:`tfcourse.bench.hyena.crossover_length`),
    ``None`` if at no length, for every ordered pair of models."""
    timed = _as_timings(rows, key)
    return {(a, b): crossover_length(timed, a, b) for a in MODELS for b in MODELS if a != b}


def _as_timings(rows: Sequence[dict], key: str) -> list[dict]:
    if key not in ("train_s", "decode_s"):
        raise ValueError(f"key: expected 'train_s' or 'decode_s', got {key!r}")
    return [{"method": r["model"], "length": r["length"], "seconds": r[key]} for r in rows]


def recall_sweep(
    lengths: Sequence[int] = tuple(DEFAULT_RECALL_LENGTHS), *, num_pairs: int = 4,
    vocab_size: int = 32, d_model: int = 64, num_layers: int = 4, steps: int = 400,
    batch: int = 32, lr: float = 3e-3, target: float = 0.9, eval_every: int = 50,
    eval_size: int = 256, device: torch.device | str | None = None, seed: int = 0,
) -> list[dict]:
    """Rows ``{"model", "length", "parameters", "accuracy", "seconds", "steps_to_target",
    "seconds_to_target"}``: each model of :data:`MODELS` trained from seed ``seed`` on
    multi-query associative recall with ``num_pairs`` pairs in sequences of each length, by one
    recipe (AdamW, ``lr``, 10% warm-up then cosine, weight decay 0.1, gradient clipping at 1,
    ``steps`` steps of ``batch`` fresh sequences). ``accuracy``: on ``eval_size`` held-out
    sequences at the end; ``seconds``: training time, evaluation left out; ``*_to_target``: at
    the first evaluation (every ``eval_every`` steps) with accuracy ≥ ``target``, ``None`` if
    none reached it."""
    if not lengths:
        raise ValueError("lengths: expected at least one length, got none")
    lengths = sorted({_validate.integer(T, "lengths", 3 * num_pairs) for T in lengths})
    _validate.integer(steps, "steps", 1)
    _validate.integer(eval_every, "eval_every", 1)
    if not 0 <= target <= 1:
        raise ValueError(f"target: expected an accuracy in [0, 1], got {target!r}")
    device = torch.device(device) if device is not None else default_device()
    rows = []
    for T in lengths:
        task = dict(seq_len=T, num_pairs=num_pairs, vocab_size=vocab_size)
        test_tokens, test_targets = recall_batches("mqar", eval_size, seed=seed + 1, **task,
                                                   device=device)(0)
        for name, model in build_models(vocab_size, max_len=T, d_model=d_model,
                                        num_layers=num_layers, seed=seed).items():
            config = TrainConfig(steps=steps, lr=lr, warmup_steps=steps // 10, weight_decay=0.1,
                                 seed=seed, progress=False, device=device)
            trainer = Trainer(model, lambda m, b: _loss(m, *b),
                              recall_batches("mqar", batch, seed=seed, **task), config)
            seconds, reached = 0.0, None
            while trainer.step < steps:
                start = time.perf_counter()
                trainer.fit(min(eval_every, steps - trainer.step))
                seconds += time.perf_counter() - start
                with torch.no_grad():
                    accuracy = recall_accuracy(model.eval()(test_tokens), test_targets)
                if reached is None and accuracy >= target:
                    reached = (trainer.step, seconds)
            rows.append({"model": name, "length": T, "parameters": counted_parameters(model),
                         "accuracy": accuracy, "seconds": seconds,
                         "steps_to_target": reached and reached[0],
                         "seconds_to_target": reached and reached[1]})
    return rows


def vision_sweep(
    *, tome_r: Sequence[int] = (2, 4), batch_size: int = 256, repeats: int = 5,
    device: torch.device | str | None = None,
) -> list[dict]:
    """Rows ``{"model", "parameters", "accuracy", "mflop", "images_per_s"}`` for the digit
    classifiers of chapters 4–6 at one parameter count, trained once and cached by
    :mod:`tfcourse.classification`: the chapter-4 ViT and the chapter-6 Activator by
    :data:`~tfcourse.classification.DIGITS_TRAINING`, chapter 4's ConvNet by the same recipe in
    a quarter of the steps (:data:`~tfcourse.classification.CONVNET_TRAINING`), and ToMe on
    the ViT with ``r`` tokens merged per block (chapter 5, no retraining). Accuracy on the
    held-out digits; MFLOP per image; images per second on a batch of ``batch_size`` test
    images, the models timed in alternation
    (:func:`tfcourse.classification.interleaved_throughput`)."""
    from tfcourse.classification import (
        accuracy,
        flops_per_image,
        interleaved_throughput,
        train_digits_activator,
        train_digits_convnet,
        train_digits_vit,
    )
    from tfcourse.data.digits import load_digit_images
    from tfcourse.tome import ToMeViT

    for r in tome_r:
        _validate.integer(r, "tome_r", 1)
    _validate.integer(batch_size, "batch_size", 1)
    device = torch.device(device) if device is not None else default_device()
    data = load_digit_images(16)
    vit, _ = train_digits_vit(data, device=device, progress=False)
    activator, _ = train_digits_activator(data, device=device, progress=False)
    convnet, _ = train_digits_convnet(data, device=device, progress=False)
    models: dict[str, nn.Module] = {"ViT": vit}
    models |= {f"ViT + ToMe r={r}": ToMeViT(vit, r) for r in tome_r}
    models |= {"Activator": activator, "ConvNet": convnet}
    images = data.test_images[torch.arange(batch_size) % len(data.test_images)].to(device)
    speeds = interleaved_throughput(list(models.values()), images, repeats=repeats)
    rows = []
    for (name, model), speed in zip(models.items(), speeds, strict=True):
        rows.append({"model": name, "parameters": sum(p.numel() for p in model.parameters()),
                     "accuracy": accuracy(model, data.test_images, data.test_labels),
                     "mflop": flops_per_image(model, images[:1]) / 1e6, "images_per_s": speed})
    return rows


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}")
    return value


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {torch.get_num_threads()} torch threads"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _print_cost(rows: list[dict], fit_from: int) -> None:
    cell = {(r["model"], r["length"]): r for r in rows}
    for key, what in (("train", "one training step (forward, backward, AdamW)"),
                      ("decode", "decoding one token after T tokens of context, by "
                       + ", ".join(f"{name}: {how}" for name, how in DECODING.items()))):
        print(f"\n{what}: ms and peak MiB beyond what was held"
              + (" (held: MiB kept between tokens, in the same order)" if key == "decode" else "")
              + "; — where the model was stopped at a shorter length")
        print(f"{'':>6}" + "".join(f" {name:>17}" for name in MODELS))
        print(f"{'T':>6}" + f" {'ms':>9} {'MiB':>7}" * len(MODELS))
        for T in sorted({r["length"] for r in rows}):
            line = f"{T:>6}"
            for name in MODELS:
                r = cell.get((name, T))
                line += (f" {'—':>9} {'—':>7}" if r is None else
                         f" {r[f'{key}_s'] * 1e3:>9.3f} {_mib(r[f'{key}_mib']):>7}")
            if key == "decode":
                line += "   held: " + ", ".join(
                    f"{cell[name, T]['state_mib']:.2f}" if (name, T) in cell else "—"
                    for name in MODELS)
            print(line)
        exponents = growth_exponents(rows, f"{key}_s", fit_from)
        print(f"growth exponent p of time ∝ T^p, fitted from T = {fit_from}: "
              + ", ".join(f"{name} {'n/a' if p is None else f'{p:.2f}'}"
                          for name, p in exponents.items()))
        print("faster (row) than (column) from T = ... on; — at no measured length")
        pairs = crossovers(rows, f"{key}_s")
        print(f"{'':>10}" + "".join(f"{name:>10}" for name in MODELS))
        for a in MODELS:
            print(f"{a:>10}" + "".join(
                f"{'':>10}" if a == b else f"{str(pairs[a, b] or '—'):>10}" for b in MODELS))


def _print_recall(rows: list[dict], target: float) -> None:
    print(f"multi-query associative recall: held-out accuracy after training, and the steps and "
          f"seconds of training to {target:.0%} (— not reached)")
    print(f"{'T':>6} {'model':>10} {'accuracy':>9} {'train s':>8} {'steps to':>9} {'s to':>7}")
    for r in rows:
        steps, seconds = r["steps_to_target"], r["seconds_to_target"]
        print(f"{r['length']:>6} {r['model']:>10} {r['accuracy']:>9.1%} {r['seconds']:>8.1f} "
              f"{'—' if steps is None else steps:>9} "
              f"{'—' if seconds is None else f'{seconds:.1f}':>7}")


def _print_vision(rows: list[dict]) -> None:
    print(f"{'model':>16} {'parameters':>11} {'accuracy':>9} {'MFLOP':>7} {'images/s':>9}")
    for r in rows:
        print(f"{r['model']:>16} {r['parameters']:>11,} {r['accuracy']:>9.1%} "
              f"{r['mflop']:>7.2f} {r['images_per_s']:>9.0f}")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench compare")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--lengths", type=_positive_int, nargs="+", default=DEFAULT_LENGTHS,
                        help="context lengths of the cost part")
    parser.add_argument("--recall-lengths", type=_positive_int, nargs="+",
                        default=DEFAULT_RECALL_LENGTHS)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                        help="of the cost part; recall trains in fp32")
    parser.add_argument("--width", type=_positive_int, default=64, help="d_model, C")
    parser.add_argument("--layers", type=_positive_int, default=4,
                        help="layers of the attention model, at least 2 (see build_models)")
    parser.add_argument("--repeats", type=_positive_int, default=3)
    parser.add_argument("--steps", type=_positive_int, default=400, help="recall training steps")
    parser.add_argument("--batch", type=_positive_int, default=32, help="recall batch size")
    parser.add_argument("--lr", type=float, default=3e-3, help="recall peak learning rate")
    parser.add_argument("--pairs", type=_positive_int, default=4,
                        help="recall key-value pairs (chapters 7 and 9: 4, vocabulary 32)")
    parser.add_argument("--target", type=float, default=0.9, help="recall accuracy to reach")
    parser.add_argument("--fit-from", type=_positive_int, default=1024,
                        help="shortest length in the exponent fits")
    args = parser.parse_args(argv)
    if args.layers < 2:
        parser.error(f"argument --layers: expected at least 2 (Jamba needs a Mamba and an "
                     f"attention layer), got {args.layers}")
    if args.width % 4:
        parser.error(f"argument --width: expected a multiple of 4 (the heads), got {args.width}")
    if min(args.recall_lengths) < 3 * args.pairs:
        parser.error(f"argument --recall-lengths: expected lengths of at least 3 × --pairs = "
                     f"{3 * args.pairs}, got {min(args.recall_lengths)}")
    if not args.lr > 0:
        parser.error(f"argument --lr: expected a learning rate > 0, got {args.lr}")
    if not 0 <= args.target <= 1:
        parser.error(f"argument --target: expected an accuracy in [0, 1], got {args.target}")
    try:
        device = torch.device(args.device) if args.device else default_device()
    except RuntimeError:
        parser.error(f"argument --device: expected cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: cuda asked for, but CUDA sees no GPU")

    try:
        models = build_models(32, max_len=64, d_model=args.width, num_layers=args.layers)
    except ValueError as error:
        parser.error(f"argument --width: {error}")
    print(f"python -m tfcourse.bench compare {' '.join(sys.argv[2:] if argv is None else argv)}")
    print(f"on {device} ({_machine(device)}), torch {torch.__version__}")
    if {"cost", "recall"} & set(args.parts):
        print(f"sequence models of width {args.width}, parameters without the embeddings: "
              + ", ".join(f"{name} {counted_parameters(m):,}" for name, m in models.items()))
    if "cost" in args.parts:
        print(f"\ncost: {args.dtype}, batch 1 of random tokens, median of {args.repeats} "
              "interleaved rounds")
        rows = cost_sweep(args.lengths, d_model=args.width, num_layers=args.layers,
                          device=device, dtype=DTYPES[args.dtype], repeats=args.repeats)
        lengths = sorted(set(args.lengths))  # fit over two lengths at least, where there are two
        _print_cost(rows, min(args.fit_from, lengths[max(len(lengths) - 2, 0)]))
    if "recall" in args.parts:
        print(f"\nrecall: fp32, {args.steps} steps of batch {args.batch}, {args.pairs} pairs, "
              f"vocabulary 32, lr {args.lr:g}, seed 0")
        rows = recall_sweep(args.recall_lengths, num_pairs=args.pairs, d_model=args.width,
                            num_layers=args.layers, steps=args.steps, batch=args.batch,
                            lr=args.lr, target=args.target, device=device)
        _print_recall(rows, args.target)
    if "vision" in args.parts:
        print(f"\nvision: the digits (16 x 16 px), fp32, throughput on batches of 256, best of "
              f"{args.repeats} interleaved rounds")
        _print_vision(vision_sweep(device=device, repeats=args.repeats))

