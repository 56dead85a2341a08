"""The training loop every chapter uses (book: chapter 2, "Training"; chapter 11 scales it out).

A :class:`Trainer` runs ``config.steps`` optimizer steps of AdamW (Loshchilov & Hutter 2019) on
``loss_fn(model, batches(step))``, with

* a learning-rate schedule: linear warm-up, then cosine, linear, constant or inverse-square-root
  decay (:func:`lr_schedule`; the inverse square root is the schedule of Vaswani et al. 2017,
  §5.3, Eq. 3);
* gradient clipping by global norm; bf16 autocast, or fp16 autocast with a ``GradScaler``
  (``precision``); gradient accumulation (``accumulation_steps``); ``torch.compile``
  (``compile``); activation checkpointing (``activation_checkpointing``, :func:`checkpoint_blocks`);
* data-parallel training: run the same script under ``torchrun --nproc_per_node=W``, and each of
  the W processes trains on its share of every step's batch, with ``DistributedDataParallel``
  averaging the gradients (:mod:`tfcourse.distributed`; book: chapter 11);
* seeded, reproducible runs, and checkpoints that resume exactly: model, optimizer, gradient
  scaler, step, history and every random-number generator (of every rank) are saved, and
  ``batches`` is a function of the step, so a run stopped at step k and resumed gives the
  parameters of the uninterrupted run bit for bit (on the CPU; on a GPU, only with
  ``torch.use_deterministic_algorithms(True)``);
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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from tfcourse import _validate, distributed
from tfcourse.runtime import default_device, has_native_bf16, seed_everything

SCHEDULES = ("cosine", "linear", "constant", "inverse_sqrt")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
TRAIN_KEYS = ("step", "loss", "lr", "grad_norm", "seconds", "examples_per_s", "tokens_per_s",
              "loss_scale")
CHECKPOINT_FORMATS = (1, 2)  # 2 added the gradient scaler and the random states of every rank


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
    for these models; on the CPU it is allowed but usually slower, useful only to test); "fp16"
    (autocast to float16 with dynamic loss scaling by ``torch.amp.GradScaler``, for GPUs without
    bfloat16 such as Colab's T4: float16 is more precise than bfloat16 (10 bits of mantissa, not
    7), but its range ends at 65504, and small gradients underflow to 0 unless the loss is scaled
    up first; on the CPU it runs, CPU autocast and ``GradScaler("cpu")`` included, slowly: useful
    to test the mechanics only); "auto" (bf16 on a GPU with bfloat16 units,
    :func:`tfcourse.runtime.has_native_bf16`; fp32 elsewhere, a T4 included: ask for "fp16"
    there). See PyTorch's "Automatic Mixed Precision" page
    (https://pytorch.org/docs/stable/amp.html).
    ``device`` None picks :func:`tfcourse.runtime.default_device`. ``log_every``: steps per
    :class:`History` record (its loss is the mean over those steps). ``eval_every``: steps
    between calls of ``eval_fn`` (it also runs when training reaches ``steps``).
    ``checkpoint_path``: where :meth:`Trainer.fit` saves a checkpoint every ``checkpoint_every``
    steps and when it returns.

    ``accumulation_steps`` k: each step's batch is cut into k micro-batches whose gradients add up
    before the one optimizer step: the update of the whole batch with the activation memory of one
    k-th of it. ``compile``: run the training forward and backward through ``torch.compile``
    (True: the default backend, Inductor; or the name of a backend of
    ``torch.compiler.list_backends()``, e.g. "aot_eager"). ``activation_checkpointing``: keep only
    the inputs of each block of the model's layer stacks and recompute the rest during the backward
    pass (:func:`checkpoint_blocks`). ``find_unused_parameters``: passed to
    ``DistributedDataParallel`` under torchrun; True for a model whose forward may leave some
    parameters without a gradient (a mixture of experts whose router skips an expert).
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
    accumulation_steps: int = 1
    compile: bool | str = False
    activation_checkpointing: bool = False
    find_unused_parameters: bool = False

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
        _validate.integer(self.accumulation_steps, "accumulation_steps", 1)
        for name in ("progress", "activation_checkpointing", "find_unused_parameters"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        if isinstance(self.compile, str):
            backends = torch.compiler.list_backends(exclude_tags=())
            if self.compile not in backends:
                raise ValueError(f"compile: expected True, False or a backend of "
                                 f"torch.compiler.list_backends() {backends}, got "
                                 f"{self.compile!r}")
        elif not isinstance(self.compile, bool):
            raise ValueError(f"compile: expected True, False or a backend name, got "
                             f"{self.compile!r}")


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


def _tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [t for v in batch.values() for t in _tensors(v)]
    if isinstance(batch, tuple | list):
        return [t for v in batch for t in _tensors(v)]
    return []


def _rows(batch: Any, start: int, count: int) -> Any:
    """Rows ``start … start + count - 1`` of every tensor of ``batch`` (views, no copy)."""
    if isinstance(batch, torch.Tensor):
        return batch.narrow(0, start, count) if batch.ndim else batch
    if isinstance(batch, Mapping):
        return {k: _rows(v, start, count) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(_rows(v, start, count) for v in batch)
    return batch


def shard_batch(batch: Any, rank: int, world_size: int, accumulation_steps: int = 1) -> list[Any]:
    """The micro-batches that rank ``rank`` of ``world_size`` trains on, in order.

    The batch (its tensors share their first dimension, B) is cut into ``world_size *
    accumulation_steps`` equal parts of contiguous rows; rank r gets parts ``r * k … r * k + k -
    1`` (k = ``accumulation_steps``). Every row is used once, by one rank, and which rows a rank
    gets depends only on the batch, so on the step. When ``loss_fn`` is a mean over rows that
    count alike (next-token, classification and recall losses are), the mean of the parts' losses
    is the loss of the whole batch, and so are the averaged gradients, to rounding.
    """
    parts = world_size * accumulation_steps
    if parts == 1:
        return [batch]
    tensors = [t for t in _tensors(batch) if t.ndim]
    if not tensors:
        raise ValueError("batches: to split a batch across processes or micro-batches it must "
                         "hold tensors with a batch dimension; this one holds none")
    rows = tensors[0].shape[0]
    for t in tensors:
        if t.shape[0] != rows:
            raise ValueError(f"batches: every tensor of a batch must have its B rows first to be "
                             f"split across processes or micro-batches; got first dimensions "
                             f"{[t.shape[0] for t in tensors]}")
    if rows % parts:
        raise ValueError(
            f"batches: a batch of {rows} rows does not split into world_size={world_size} x "
            f"accumulation_steps={accumulation_steps} = {parts} equal parts; use a batch size "
            f"divisible by {parts}")
    size = rows // parts
    return [_rows(batch, (rank * accumulation_steps + j) * size, size)
            for j in range(accumulation_steps)]


class _CheckpointedForward:
    """A block's forward that, when gradients are recorded, keeps only its inputs and recomputes
    its activations during the backward pass (``torch.utils.checkpoint.checkpoint``,
    non-reentrant, random states preserved so dropout draws the same masks again)."""

    def __init__(self, forward: Callable[..., Any]) -> None:
        self.forward = forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():  # evaluation, generation: nothing to save memory on
            return self.forward(*args, **kwargs)
        return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)


def checkpoint_blocks(model: nn.Module) -> list[str]:
    """Turn on activation checkpointing for every block of ``model``'s layer stacks; return the
    names of the blocks.

    The blocks are the elements of the outermost ``nn.ModuleList``s (a ModuleList inside a block,
    such as a mixture of experts' experts, is left alone). Checked, with gradients equal to those
    without checkpointing: the layers of ``Encoder``/``Decoder`` (so ``DecoderOnlyLM``,
    ``EncoderOnlyLM``, ``Transformer``) and the blocks of ``VisionTransformer``,
    ``ActivatorClassifier``, ``HyenaLM`` and ``MambaLM``. Not covered: ``ToMeViT`` calls the
    parts of its blocks itself, so nothing of it is recomputed (it is applied without training
    anyway). In ``MambaLM`` and ``JambaLM`` the chunked scan (``tfcourse.ssm``) keeps its
    states on its autograd context, outside the hooks that checkpointing uses, so the scan's
    own memory is not freed; the rest of each block's is.

    Each block's ``forward`` is wrapped in place, so parameter names and checkpoints do not
    change; calling it again does nothing more. While gradients are recorded, a block then stores
    only its input and recomputes its activations in the backward pass: activation memory of one
    block instead of all, for about one more forward pass of compute (PyTorch:
    https://pytorch.org/docs/stable/checkpoint.html).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    names: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.ModuleList):
                for i, block in enumerate(child):
                    if not isinstance(block.__dict__.get("forward"), _CheckpointedForward):
                        block.forward = _CheckpointedForward(block.forward)
                    names.append(f"{prefix}{name}.{i}")
            else:
                visit(child, f"{prefix}{name}.")

    visit(model, "")
    return names


class _DistributedDataParallel(DistributedDataParallel):
    """DistributedDataParallel that passes the attributes it lacks to the model it wraps, so that
    a ``loss_fn`` can still call ``model.aux_loss()`` under torchrun."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if name == "module" or "module" not in modules:
                raise
            return getattr(modules["module"], name)


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

    **Under torchrun** (book: chapter 11) the same code trains data-parallel. Building the trainer
    joins the process group (:func:`tfcourse.distributed.init_from_env`: gloo on the CPU, nccl on
    GPUs, one GPU per process) and wraps the model in ``DistributedDataParallel``
    (https://pytorch.org/docs/stable/notes/ddp.html), which averages the gradients of the ranks
    during the backward pass. ``batches(step)`` is still the *whole* batch of the step: every rank
    draws it and trains on its own share (:func:`shard_batch`: rank r of W takes the r-th of W
    equal blocks of rows), so W processes train on the batch that one process would, and the loss
    curve is that of one process, to rounding. Hence the batch size must be divisible by W (times
    ``accumulation_steps``). The loss and the metrics of the history are averaged over the ranks
    (every rank holds the same history); ``eval_fn`` runs on every rank and its metrics are
    averaged too; only rank 0 shows progress and writes checkpoints. Rank r seeds its generators
    with ``config.seed + r`` (each rank draws its own dropout masks; rank 0 is the single-process
    run). ``loss_fn`` must call the model (``model(x)``): that call is where
    ``DistributedDataParallel`` prepares the averaging, and calling a submodule or a method
    instead (``model.encode(x)``) is refused with an error; other attributes (``model.aux_loss()``)
    reach the model. :attr:`model` stays your model, unwrapped; :attr:`train_model` is what
    ``loss_fn`` receives (your model, or its DDP and ``torch.compile`` wrappers).
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
        device = torch.device(config.device) if config.device else default_device()
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device: {config.device!r} asks for a GPU, but CUDA sees none; "
                             "use None (the default device) or 'cpu'")
        self.device = distributed.rank_device(device)  # under torchrun: cuda:LOCAL_RANK
        distributed.init_from_env(self.device)  # nothing outside torchrun
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.autocast_dtype = self._autocast_dtype()
        seed_everything(config.seed + self.rank)
        self.model = model.to(self.device)
        if config.activation_checkpointing and not checkpoint_blocks(self.model):
            raise ValueError("activation_checkpointing: the model has no nn.ModuleList of "
                             "blocks to checkpoint (see tfcourse.training.checkpoint_blocks)")
        self.loss_fn, self.batches, self.eval_fn = loss_fn, batches, eval_fn
        self.optimizer = optimizer if optimizer is not None else self._adamw()
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # the schedule scales this
        # fp16 needs loss scaling (its smallest normal number is 6e-5); bf16 has fp32's range
        self.scaler = (torch.amp.GradScaler(self.device.type) if config.precision == "fp16"
                       else None)
        self._ddp: DistributedDataParallel | None = None
        self.train_model: nn.Module = self.model
        if distributed.is_initialized():
            self._ddp = _DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.find_unused_parameters)
            self.train_model = self._ddp
        if config.compile:
            # DDP first, then compile: Dynamo then splits the graph at DDP's gradient buckets
            # (PyTorch's DDP notes, "TorchDynamo DDPOptimizer")
            backend = {} if config.compile is True else {"backend": config.compile}
            self.train_model = torch.compile(self.train_model, **backend)
        self._model_called = False
        if self._ddp is not None:
            self.train_model.register_forward_pre_hook(self._mark_called)
        self.step = 0
        self.history = History()
        self._window: dict[str, list[float]] = {}  # per-step values since the last record

    def _mark_called(self, module: nn.Module, args: Any) -> None:
        self._model_called = True

    def _autocast_dtype(self) -> torch.dtype | None:
        cuda = self.device.type == "cuda"
        bf16_ok = has_native_bf16(self.device)
        if self.config.precision == "bf16" and cuda and not torch.cuda.is_bf16_supported():
            raise ValueError("precision: this GPU has no bfloat16 support; use 'fp16' or 'fp32'")
        if self.config.precision == "fp16":
            return torch.float16
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

    def _forward(self, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
        """``loss_fn`` on one micro-batch, under autocast: (loss, metrics)."""
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype)
                    if self.autocast_dtype else contextlib.nullcontext())
        self._model_called = False
        with autocast:
            out = self.loss_fn(self.train_model, batch)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise TypeError("loss_fn: expected a scalar tensor (or (loss, metrics)), got "
                            f"{type(loss).__name__} {getattr(loss, 'shape', '')}")
        if self._ddp is not None and not self._model_called:
            raise RuntimeError(
                "loss_fn: under torchrun it must call the model it is given (model(x)); "
                "calling a submodule or a method (model.encode(x)) bypasses "
                "DistributedDataParallel, and the ranks' gradients would not be averaged")
        return loss, metrics

    def _train_step(self) -> tuple[dict[str, float], Any]:
        """One optimizer step: returns the step's values (loss, pre-clipping gradient norm,
        metrics; averaged over micro-batches and ranks) and the whole batch of the step."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self._lr_factor(self.step)
        batch = self.batches(self.step)
        parts = shard_batch(batch, self.rank, self.world_size, self.config.accumulation_steps)
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses: list[float] = []
        metrics: dict[str, list[float]] = {}
        for i, part in enumerate(parts):
            # DDP averages the gradients in the backward pass of the last micro-batch only; the
            # others just add into .grad (no_sync; https://pytorch.org/docs/stable/generated/
            # torch.nn.parallel.DistributedDataParallel.html)
            last = i == len(parts) - 1
            sync = (self._ddp.no_sync() if self._ddp is not None and not last
                    else contextlib.nullcontext())
            with sync:
                loss, part_metrics = self._forward(_to_device(part, self.device))
                # the mean over k equal micro-batches: each one's loss counts 1/k
                scaled = loss / len(parts) if len(parts) > 1 else loss
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            losses.append(loss.item())
            for name, value in part_metrics.items():
                metrics.setdefault(name, []).append(
                    float(value.detach() if isinstance(value, torch.Tensor) else value))
        # float64 so that one process, one micro-batch records exactly loss.item(), as before
        local = torch.tensor([sum(losses) / len(losses)]
                             + [sum(v) / len(v) for v in metrics.values()], dtype=torch.float64)
        averaged = distributed.all_reduce_mean(local).tolist()  # the same on every rank
        value, metric_values = averaged[0], dict(zip(metrics, averaged[1:], strict=True))
        if not math.isfinite(value):  # every rank sees the mean, so every rank stops here
            raise FloatingPointError(
                f"step {self.step}: the loss is {value}; training stopped. Lower the learning "
                "rate, add warm-up or gradient clipping, or look for a log of 0 in the loss")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip and measure the true gradients
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        clip = self.config.grad_clip if self.config.grad_clip is not None else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip).item()  # the norm before
        if self.scaler is not None:
            if not math.isfinite(grad_norm):
                grad_norm = math.inf  # overflowed (inf or nan): recorded as inf, step skipped
            self.scaler.step(self.optimizer)  # skipped when a gradient overflowed
            self.scaler.update()  # halve the scale after an overflow, grow it after a while
            metric_values["loss_scale"] = self.scaler.get_scale()
        else:
            self.optimizer.step()
        self.step += 1
        return {"loss": value, "grad_norm": grad_norm, **metric_values}, batch

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Run ``eval_fn`` (eval mode, no gradients), record and return its metrics (under
        torchrun: on every rank, averaged over the ranks)."""
        if self.eval_fn is None:
            raise ValueError("eval_fn: this trainer has none")
        self.model.eval()
        metrics = {k: float(v) for k, v in self.eval_fn(self.model).items()}
        self.model.train()
        if self.world_size > 1 and metrics:
            averaged = distributed.all_reduce_mean(
                torch.tensor(list(metrics.values()), dtype=torch.float64)).tolist()
            metrics = dict(zip(metrics, averaged, strict=True))
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
        progress = _Progress(c.progress and distributed.is_main())
        first_step, start = self.step, time.perf_counter()
        offset = self.history.train[-1]["seconds"] if self.history.train else 0.0
        window_start, sizes = start, (None, None)
        try:
            while self.step < end:
                values, batch = self._train_step()
                if self.step == first_step + 1:
                    sizes = _batch_sizes(batch)  # of the whole batch: rates count all ranks
                for name, value in values.items():
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
        """Everything a resumed run needs (plain tensors, lists and numbers).

        Under torchrun this is a collective (it gathers the random states of every rank): call it
        on every rank, as :meth:`save` does."""
        np_state = np.random.get_state()
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
               "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        config = dataclasses.asdict(self.config)
        config["device"] = None if self.config.device is None else str(self.config.device)
        if config["checkpoint_path"] is not None:
            config["checkpoint_path"] = str(config["checkpoint_path"])
        state = {"format": 2, "step": self.step, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "history": self.history.as_dict(),
                 "window": self._window, "rng": rng, "config": config,
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                 "world_size": self.world_size}
        if self.world_size > 1:
            # ranks draw dropout from generators of their own: all of them are needed to resume
            state["rng_per_rank"] = distributed.all_gather_object(rng)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`. Every rank loads the same checkpoint; each takes its own
        random states back (a run resumed on another number of processes gets everything else
        back, and ranks without saved states keep their fresh ones)."""
        if state.get("format") not in CHECKPOINT_FORMATS:
            raise ValueError(f"state: expected a checkpoint of format {CHECKPOINT_FORMATS}, got "
                             f"format {state.get('format')!r}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.history = History(**state["history"])
        self._window = {k: list(v) for k, v in state["window"].items()}
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        if self.rank < len(per_rank):
            self._set_rng(per_rank[self.rank])

    @staticmethod
    def _set_rng(rng: Mapping[str, Any]) -> None:
        torch.set_rng_state(rng["torch"])
        random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in rng["python"]))
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])

    def save(self, path: str | Path) -> None:
        """Write a checkpoint to ``path`` (atomically: a crash never leaves half a file).

        Under torchrun every rank calls it (it is a collective); rank 0 writes the file, and no
        rank returns before the file is complete."""
        path = Path(path)
        state = self.state_dict()
        if distributed.is_main():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)
        distributed.barrier()

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
