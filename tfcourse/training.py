"""The training loop every chapter uses (book: chapter 2, "Training"; chapter 11 scales it out).

A :class:`Trainer` runs ``config.steps`` optimizer steps of AdamW (Loshchilov & Hutter 2019) on
``loss_fn(model, batches(step))``, with

* a learning-rate schedule: linear warm-up, then cosine, linear, constant or inverse-square-root
  decay (:func:`lr_schedule`; the inverse square root is the schedule of Vaswani et al. 2017,
  §5.3, Eq. 3);
* gradient clipping by global norm, and bf16 autocast on a GPU (``precision``);
* seeded, reproducible runs, and checkpoints that resume exactly: model, optimizer, step, history
  and every random-number generator are saved, and ``batches`` is a function of the step, so a run
  stopped at step k and resumed gives the parameters of the uninterrupted run bit for bit (on the
  CPU; on a GPU, only with ``torch.use_deterministic_algorithms(True)``);
* a one-line progress display and a :class:`History` that the lessons plot
  (:func:`tfcourse.plotting.plot_history`).

A minimal run::

    trainer = Trainer(model, loss_fn, task.batches(64, seed=0), TrainConfig(steps=2000, lr=3e-4,
                      warmup_steps=100))
    history = trainer.fit()
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tfcourse import _validate
from tfcourse.runtime import default_device, seed_everything

SCHEDULES = ("cosine", "linear", "constant", "inverse_sqrt")
PRECISIONS = ("fp32", "bf16", "auto")
TRAIN_KEYS = ("step", "loss", "lr", "grad_norm", "seconds", "examples_per_s", "tokens_per_s")


def lr_schedule(
    step: int, *, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
) -> float:
    """The learning-rate multiplier of optimizer step ``step`` (0-based), in (0, 1].

    Warm-up: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, a line from
    almost 0 to 1. Then, with ``p`` the fraction of the remaining steps done (0 -> 1 at
    ``total_steps``): ``cosine`` ``m + (1 - m)(1 + cos(pi p)) / 2``, ``linear`` ``m + (1 - m)(1 -
    p)``, ``constant`` 1, and ``inverse_sqrt`` ``sqrt(warmup_steps / (step + 1))``, Vaswani et
    al.'s Eq. 3 scaled to peak at 1, where ``m = min_lr_ratio`` is the floor of every decay.
    """
    _validate.integer(step, "step")
    _validate.integer(total_steps, "total_steps", 1)
    _validate.integer(warmup_steps, "warmup_steps")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio: expected a number in [0, 1], got {min_lr_ratio!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    p = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    m = min_lr_ratio
    if schedule == "cosine":
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * p))
    if schedule == "linear":
        return m + (1 - m) * (1 - p)
    if schedule == "inverse_sqrt":
        return max(m, math.sqrt(max(1, warmup_steps) / (step + 1)))
    return 1.0


def _number(value: object, name: str, wanted: str, ok: Callable[[float], bool]) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or not ok(value):
        raise ValueError(f"{name}: expected a number {wanted}, got {value!r}")


@dataclasses.dataclass
class TrainConfig:
    """Everything a run depends on besides the model, the loss and the data.

    ``precision``: "fp32"; "bf16" (autocast to bfloat16: on a GPU, faster and as stable as fp32
    for these models; on the CPU it is allowed but usually slower, useful only to test); "auto"
    (bf16 on a GPU that supports it, fp32 elsewhere). ``device`` None picks
    :func:`tfcourse.runtime.default_device`. ``log_every``: steps per :class:`History` record (its
    loss is the mean over those steps). ``eval_every``: steps between calls of ``eval_fn`` (it
    also runs when training reaches ``steps``). ``checkpoint_path``: where :meth:`Trainer.fit`
    saves a checkpoint every ``checkpoint_every`` steps and when it returns.
    """

    steps: int
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    precision: str = "fp32"
    device: str | torch.device | None = None
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None
    progress: bool = True
    checkpoint_path: str | Path | None = None
    checkpoint_every: int | None = None

    def __post_init__(self) -> None:
        _validate.integer(self.steps, "steps", 1)
        _validate.integer(self.warmup_steps, "warmup_steps")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps: expected at most steps={self.steps}, "
                             f"got {self.warmup_steps}")
        _number(self.lr, "lr", "> 0", lambda x: x > 0)
        _number(self.weight_decay, "weight_decay", ">= 0", lambda x: x >= 0)
        _number(self.min_lr_ratio, "min_lr_ratio", "in [0, 1]", lambda x: 0 <= x <= 1)
        if not isinstance(self.betas, tuple | list) or len(self.betas) != 2 or not all(
                isinstance(b, int | float) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {self.betas!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        if self.grad_clip is not None:
            _number(self.grad_clip, "grad_clip", "> 0 or None", lambda x: x > 0)
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as error:
                raise ValueError(f"device: expected a torch device, got {self.device!r}") from error
        _validate.integer(self.seed, "seed")
        _validate.integer(self.log_every, "log_every", 1)
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                _validate.integer(getattr(self, name), name, 1)
        if self.checkpoint_every is not None and self.checkpoint_path is None:
            raise ValueError("checkpoint_every: needs checkpoint_path, which is None")
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress: expected True or False, got {self.progress!r}")


class History:
    """What a run recorded: one training record every ``log_every`` steps (``step``, mean ``loss``,
    ``lr``, mean pre-clipping ``grad_norm``, ``seconds`` since the start, ``examples_per_s``,
    ``tokens_per_s`` when the batch holds token ids, and the means of any metrics ``loss_fn``
    returned) and one evaluation record per call of ``eval_fn`` (``step`` and its metrics).

    ``history.steps``, ``history.loss`` ... are lists; ``history.series(name)`` gives ``(steps,
    values)`` of a training or an evaluation metric; ``history.last(name)`` its latest value.
    """

    def __init__(self, train: list[dict] | None = None, eval: list[dict] | None = None) -> None:
        self.train: list[dict[str, float]] = list(train or [])
        self.eval: list[dict[str, float]] = list(eval or [])

    def _records(self, name: str) -> list[dict[str, float]]:
        for records in (self.train, self.eval):
            if any(name in r for r in records) and name != "step":
                return [r for r in records if name in r]
        known = sorted({k for r in self.train + self.eval for k in r})
        raise KeyError(f"no series {name!r} in this history; it has {known}")

    def series(self, name: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of a training series or an evaluation metric."""
        records = self._records(name)
        return [int(r["step"]) for r in records], [r[name] for r in records]

    def last(self, name: str) -> float:
        """The latest value of a training series or an evaluation metric."""
        return self._records(name)[-1][name]

    @property
    def steps(self) -> list[int]:
        return [int(r["step"]) for r in self.train]

    @property
    def loss(self) -> list[float]:
        return [r["loss"] for r in self.train]

    @property
    def lr(self) -> list[float]:
        return [r["lr"] for r in self.train]

    @property
    def grad_norm(self) -> list[float]:
        return [r["grad_norm"] for r in self.train]

    @property
    def seconds(self) -> list[float]:
        return [r["seconds"] for r in self.train]

    def as_dict(self) -> dict[str, list[dict[str, float]]]:
        """Plain lists and dicts (what a checkpoint stores; ``History(**d)`` rebuilds it)."""
        return {"train": [dict(r) for r in self.train], "eval": [dict(r) for r in self.eval]}

    def __repr__(self) -> str:
        return f"History({len(self.train)} training records, {len(self.eval)} evaluations)"


class _Progress:
    """One line: step/total, loss, lr, elapsed time and rate, at most ``per_second`` updates per
    second. In a terminal it is rewritten in place with '\\r'; in a notebook it is a display that
    is updated (so the saved notebook keeps only its last state); elsewhere (a log file) only the
    final line is written. All to stdout."""

    def __init__(self, enabled: bool, per_second: float = 4.0) -> None:
        self.enabled, self.interval, self.last = enabled, 1.0 / per_second, -math.inf
        self.handle = None
        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
        self.notebook = enabled and shell is not None and hasattr(shell, "kernel")
        self.terminal = enabled and not self.notebook and sys.stdout.isatty()

    def update(self, line: str, *, force: bool = False) -> None:
        now = time.perf_counter()
        if not (self.notebook or self.terminal) or (not force and now - self.last < self.interval):
            return
        self.last = now
        if self.notebook:
            from IPython.display import display

            if self.handle is None:
                self.handle = display({"text/plain": line}, raw=True, display_id=True)
            else:
                self.handle.update({"text/plain": line}, raw=True)
        else:
            sys.stdout.write(f"\r{line}\x1b[K")
            sys.stdout.flush()

    def close(self, line: str) -> None:
        if not self.enabled:
            return
        if self.notebook:
            self.update(line, force=True)
            return
        if self.terminal:
            sys.stdout.write("\r\x1b[K")
        print(line, flush=True)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batch_sizes(batch: Any) -> tuple[int | None, int | None]:
    """(examples, tokens) of a batch, read from its first tensor: B, and B*T for token ids."""
    first = batch
    while isinstance(first, tuple | list | Mapping) and len(first):
        first = next(iter(first.values())) if isinstance(first, Mapping) else first[0]
    if not isinstance(first, torch.Tensor) or first.ndim == 0:
        return None, None
    tokens = first.numel() if first.ndim == 2 and not first.is_floating_point() else None
    return first.shape[0], tokens


def _rate(count: float, seconds: float, unit: str) -> str:
    rate = count / max(seconds, 1e-9)
    return f"{rate / 1000:.1f}k {unit}/s" if rate >= 1000 else f"{rate:.1f} {unit}/s"


class Trainer:
    """Trains ``model`` on ``loss_fn(model, batches(step))`` as ``config`` says.

    ``loss_fn(model, batch)`` returns the loss (a scalar tensor), or ``(loss, {name: value})``
    with metrics to log. ``batches(step)`` returns the batch of step ``step`` (tensors, or tuples,
    lists or dicts of them, moved to the device here), always the same for the same step.
    ``eval_fn(model) -> {name: value}`` runs in eval mode without gradients. ``optimizer``: your
    own, over ``model.parameters()`` (``lr``, ``betas`` and ``weight_decay`` of the config are
    then unused; the schedule scales each group's own learning rate); by default AdamW, without
    weight decay on biases and norm weights (tensors of one dimension).

    Building a trainer seeds Python, NumPy and torch with ``config.seed`` (dropout draws from
    torch's generator), so two trainers built alike train alike.
    """

    def __init__(
        self, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any],
        batches: Callable[[int], Any], config: TrainConfig, *,
        eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        for name, fn in (("loss_fn", loss_fn), ("batches", batches), ("eval_fn", eval_fn)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name}: expected a callable, got {type(fn).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
        self.config = config
        self.device = torch.device(config.device) if config.device else default_device()
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {config.device!r} asks for a GPU, but CUDA sees none; "
                             "use None (the default device) or 'cpu'")
        self.autocast_dtype = self._autocast_dtype()
        seed_everything(config.seed)
        self.model = model.to(self.device)
        self.loss_fn, self.batches, self.eval_fn = loss_fn, batches, eval_fn
        self.optimizer = optimizer if optimizer is not None else self._adamw()
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # the schedule scales this
        self.step = 0
        self.history = History()
        self._window: dict[str, list[float]] = {}  # per-step values since the last record

    def _autocast_dtype(self) -> torch.dtype | None:
        cuda = self.device.type == "cuda"
        bf16_ok = cuda and torch.cuda.is_bf16_supported()
        if self.config.precision == "bf16" and cuda and not bf16_ok:
            raise ValueError("precision: this GPU has no bfloat16 support; use 'fp32'")
        if self.config.precision == "bf16" or (self.config.precision == "auto" and bf16_ok):
            return torch.bfloat16
        return None

    def _adamw(self) -> torch.optim.AdamW:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model: it has no trainable parameters")
        decay = [p for p in params if p.ndim >= 2]
        rest = [p for p in params if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.config.weight_decay},
                  {"params": rest, "weight_decay": 0.0}]
        return torch.optim.AdamW([g for g in groups if g["params"]], lr=self.config.lr,
                                 betas=self.config.betas)

    def _lr_factor(self, step: int) -> float:
        c = self.config
        return lr_schedule(step, total_steps=c.steps, warmup_steps=c.warmup_steps,
                           schedule=c.schedule, min_lr_ratio=c.min_lr_ratio)

    def _train_step(self) -> tuple[float, float, dict[str, float], Any]:
        """One optimizer step: returns (loss, pre-clipping gradient norm, metrics, batch)."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self._lr_factor(self.step)
        batch = _to_device(self.batches(self.step), self.device)
        self.model.train()
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype else contextlib.nullcontext())
        with autocast:
            out = self.loss_fn(self.model, batch)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("loss_fn: expected a scalar tensor (or (loss, metrics)), got "
                            f"{type(loss).__name__} {getattr(loss, 'shape', '')}")
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"step {self.step}: the loss is {value}; training stopped. Lower the learning "
                "rate, add warm-up or gradient clipping, or look for a log of 0 in the loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).item()  # the norm before
        self.optimizer.step()
        self.step += 1
        metrics = {k: float(v.detach() if isinstance(v, torch.Tensor) else v)
                   for k, v in metrics.items()}
        return value, grad_norm, metrics, batch

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Run ``eval_fn`` (eval mode, no gradients), record and return its metrics."""
        if self.eval_fn is None:
            raise ValueError("eval_fn: this trainer has none")
        self.model.eval()
        metrics = {k: float(v) for k, v in self.eval_fn(self.model).items()}
        self.model.train()
        clash = sorted(set(metrics) & set(TRAIN_KEYS))
        if clash:
            raise ValueError(f"eval_fn: returned {clash}, names of training series; rename them "
                             "(for example 'val_loss')")
        self.history.eval.append({"step": self.step, **metrics})
        return metrics

    def fit(self, steps: int | None = None) -> History:
        """Train until step ``config.steps``, or for ``steps`` more steps; return the history.

        A record is written every ``log_every`` steps and at ``config.steps``; steps after the
        last record wait in the next one (and in a checkpoint saved meanwhile)."""
        c = self.config
        end = c.steps if steps is None else self.step + _validate.integer(steps, "steps")
        if end > c.steps:
            raise ValueError(f"steps: {steps} more steps would end at step {end}, after "
                             f"config.steps={c.steps} (the schedule's end)")
        progress = _Progress(c.progress)
        first_step, start = self.step, time.perf_counter()
        offset = self.history.train[-1]["seconds"] if self.history.train else 0.0
        window_start, sizes = start, (None, None)
        try:
            while self.step < end:
                loss, grad_norm, metrics, batch = self._train_step()
                if self.step == first_step + 1:
                    sizes = _batch_sizes(batch)
                for name, value in {"loss": loss, "grad_norm": grad_norm, **metrics}.items():
                    self._window.setdefault(name, []).append(value)
                now = time.perf_counter()
                if self.step % c.log_every == 0 or self.step == c.steps:
                    # the steps of this window run since `window_start` (a window can span a
                    # resume: only those of this call were timed)
                    timed = min(len(self._window["loss"]), self.step - first_step)
                    self._record(offset + now - start, timed / max(now - window_start, 1e-9),
                                 sizes)
                    window_start = now
                if self.eval_fn is not None and (
                        (c.eval_every and self.step % c.eval_every == 0) or self.step == c.steps):
                    self.evaluate()
                if c.checkpoint_every and self.step % c.checkpoint_every == 0:
                    self.save(c.checkpoint_path)
                progress.update(self._line(first_step, end, now - start, sizes))
        finally:
            if self.step > first_step:
                elapsed = time.perf_counter() - start
                progress.close(self._line(first_step, end, elapsed, sizes, done=True))
        if c.checkpoint_path is not None:
            self.save(c.checkpoint_path)
        return self.history

    def _record(self, seconds: float, steps_per_s: float, sizes: tuple) -> None:
        """Append the means of the current window to the history."""
        record = {"step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                  "seconds": seconds, **{k: sum(v) / len(v) for k, v in self._window.items()}}
        for key, size in zip(("examples_per_s", "tokens_per_s"), sizes, strict=True):
            if size is not None:
                record[key] = size * steps_per_s
        self.history.train.append(record)
        self._window = {}

    def _line(self, start: int, end: int, elapsed: float, sizes: tuple, done: bool = False) -> str:
        done_steps = self.step - start
        record = self.history.train[-1] if self.history.train else {}
        parts = [f"{'trained ' if done else 'step '}{self.step}/{end}"]
        if "loss" in record:
            parts.append(f"loss {record['loss']:.4f}")
        parts += [f"lr {self.optimizer.param_groups[0]['lr']:.2e}", f"{elapsed:.1f} s",
                  _rate(done_steps, elapsed, "steps")]
        if sizes[1] is not None:
            parts.append(_rate(sizes[1] * done_steps, elapsed, "tok"))
        if done and self.history.eval:
            parts += [f"{k} {v:.4g}" for k, v in self.history.eval[-1].items() if k != "step"]
        return " | ".join(parts)

    # --- checkpoints ---

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (plain tensors, lists and numbers)."""
        np_state = np.random.get_state()
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
               "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        config = dataclasses.asdict(self.config)
        config["device"] = None if self.config.device is None else str(self.config.device)
        if config["checkpoint_path"] is not None:
            config["checkpoint_path"] = str(config["checkpoint_path"])
        return {"format": 1, "step": self.step, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "history": self.history.as_dict(),
                "window": self._window, "rng": rng, "config": config}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history = History(**state["history"])
        self._window = {k: list(v) for k, v in state["window"].items()}
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in rng["python"]))
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def save(self, path: str | Path) -> None:
        """Write a checkpoint to ``path`` (atomically: a crash never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save` into this trainer."""
        self.load_state_dict(torch.load(Path(path), map_location="cpu", weights_only=True))

    @classmethod
    def resume(
        cls, path: str | Path, model: nn.Module, loss_fn: Callable[[nn.Module, Any], Any],
        batches: Callable[[int], Any], config: TrainConfig | None = None, *,
        eval_fn: Callable[[nn.Module], Mapping[str, float]] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> Trainer:
        """A trainer that continues the run saved at ``path`` (with its saved config unless
        ``config`` is given); ``model`` is a freshly built model of the same architecture."""
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if config is None:
            saved = dict(state["config"])
            saved["betas"] = tuple(saved["betas"])
            config = TrainConfig(**saved)
        trainer = cls(model, loss_fn, batches, config, eval_fn=eval_fn, optimizer=optimizer)
        trainer.load_state_dict(state)
        return trainer
