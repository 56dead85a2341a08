"""Scaling out: torch.compile, activation checkpointing and data parallelism (book: chapter 11).

    python -m tfcourse.bench scaling [--parts compile checkpointing ddp] [--models GPT Mamba]
        [--backend inductor]
        [--width 64] [--layers 4] [--length 256] [--batch 8] [--checkpoint-lengths 512 1024]
        [--steps 4] [--repeats 3] [--device cuda] [--quick]

measures, each side by side in one run, on chapter 3's decoder-only GPT
(:class:`tfcourse.language_models.DecoderOnlyLM`, pre-LN blocks) and chapter 8's Mamba
(:class:`tfcourse.mamba.MambaLM`, its selective scan in :mod:`tfcourse.ssm`), the two matched in
parameters as chapter 10 matches them, at chapter 10's size by default (width 64, 4 layers;
:func:`build_model`), on random tokens of a 64-symbol vocabulary:

* ``compile`` (:func:`compile_timings`): a training step (forward and backward of the
  next-token loss) of the model as it is (eager) and of ``torch.compile(model)``: the time of the
  compiled model's first step (which compiles the forward and the backward graph), the step time
  before and after, the graphs Dynamo captured and why it broke the graph between them
  (``torch._dynamo.explain``), and the difference of loss and gradients between the two.
  Inductor (the default backend) generates C++ (or, on a GPU, Triton) kernels: its first step
  takes tens of seconds on a CPU; it is measured with an empty cache, as a first run finds it.
  ``aot_eager`` traces the same graphs, forward and backward, but runs them with PyTorch's own
  operators: it measures what capture costs and saves, without code generation.
  (PyTorch: https://pytorch.org/docs/stable/torch.compiler.html)
* ``checkpointing`` (:func:`checkpointing_costs`): the peak memory and the time of a training
  step of the GPT with and without :func:`tfcourse.training.checkpoint_blocks` at lengths where
  activations dominate: a checkpointed block keeps only its input and recomputes its activations
  in the backward pass (Chen et al. 2016, "Training deep nets with sublinear memory cost",
  arXiv:1604.06174), so the activation memory of all blocks becomes that of one block plus the
  blocks' inputs, for about one more forward pass of compute.
* ``ddp`` (:func:`data_parallel_rates`): steps per second of one process training on a batch of
  2b against two processes (``DistributedDataParallel`` over gloo, started by
  :func:`tfcourse.distributed.run_local_group`) training on b rows each, the same step; and of one
  process with 1 thread and with 2 threads, for reference; plus a check that both ranks end with
  the same parameters, equal to those of the single process to rounding
  (PyTorch: https://pytorch.org/docs/stable/notes/ddp.html).

The three parts at the defaults take about 3 to 5 minutes on 2 busy CPU cores (most of it
Inductor compiling Mamba); ``--quick`` runs tiny sizes with the ``aot_eager`` backend in well
under a minute. The checkpointing part and each round of the ddp part run in fresh Python
processes (:func:`tfcourse.bench.in_fresh_process`; see each function for why). The figures
are printed with the machine's load average: on a shared machine, other work slows some steps
far more than others (many small operations on two threads suffer most), and the rounds in
turn spread that over the two sides of each comparison, not away.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate
from tfcourse.runtime import default_device

PARTS = ("compile", "checkpointing", "ddp")
MODELS = ("GPT", "Mamba")
VOCAB_SIZE = 64  # a character-level vocabulary
DEFAULT_BACKEND = "inductor"
DEFAULT_CHECKPOINT_LENGTHS = [512, 1024]
LEARNING_RATE = 1e-3  # the AdamW steps of the ddp part


# --- the models and the step ---


def build_model(name: str, *, d_model: int = 64, num_layers: int = 4, max_len: int = 256,
                seed: int = 0) -> nn.Module:
    """Model ``name`` of :data:`MODELS` in float32 on the CPU, vocabulary :data:`VOCAB_SIZE`:
    "GPT", chapter 3's decoder-only Transformer (width ``d_model``, ``num_layers`` pre-LN layers,
    4 heads, feed-forward 4C), or "Mamba" (chapter 8, expand 2, state size 16) with as many
    blocks as match the GPT's parameters without the embeddings
    (:func:`tfcourse.bench.compare.counted_parameters`), as chapter 10 matches them."""
    from tfcourse.bench.compare import counted_parameters
    from tfcourse.language_models import DecoderOnlyLM
    from tfcourse.mamba import MambaLM

    if name not in MODELS:
        raise ValueError(f"name: expected one of {MODELS}, got {name!r}")
    _validate.integer(num_layers, "num_layers", 1)
    _validate.integer(d_model, "d_model", 4)
    if d_model % 4:
        raise ValueError(f"d_model: expected a multiple of 4 (the heads), got {d_model}")
    _validate.integer(max_len, "max_len", 1)

    def gpt() -> nn.Module:
        return DecoderOnlyLM(VOCAB_SIZE, max_len=max_len, d_model=d_model, num_heads=4,
                             num_layers=num_layers)

    if name == "GPT":
        torch.manual_seed(seed)
        return gpt()
    # the count is linear in the number of blocks: two counts give it
    one, two = (counted_parameters(MambaLM(VOCAB_SIZE, d_model=d_model, num_layers=n))
                for n in (1, 2))
    layers = max(1, round((counted_parameters(gpt()) - one) / (two - one)) + 1)
    torch.manual_seed(seed)
    return MambaLM(VOCAB_SIZE, d_model=d_model, num_layers=layers)


def random_tokens(batch: int, length: int, *, steps: int = 1, seed: int = 0) -> torch.Tensor:
    """(``steps``, ``batch``, ``length`` + 1) random token ids: each row is a sequence and its
    next-token targets."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(VOCAB_SIZE, (steps, batch, length + 1), generator=gen)


def next_token_loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``model(tokens[:, :-1])`` against ``tokens[:, 1:]``, the loss of
    chapter 3."""
    logits = model(tokens[:, :-1])  # (B, T, V)
    return F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())


def _forward_backward(model: nn.Module, params: list[nn.Parameter],
                      tokens: torch.Tensor) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        for p in params:
            p.grad = None
        loss = next_token_loss(model, tokens)
        loss.backward()
        return loss.detach()

    return step


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - start


def _gradients(params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]


def _relative_difference(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> float:
    """max |a - b| over all elements, divided by max |b|: 0 when equal, about 1e-7 for float32
    rounding."""
    scale = max(float(t.abs().max()) for t in b) or 1.0
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True)) / scale


def _device(device: torch.device | str | None) -> torch.device:
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda asked for, but CUDA sees no GPU")
    return device


def _check_sizes(d_model: int, num_layers: int, batch: int, length: int, repeats: int) -> None:
    _validate.integer(d_model, "d_model", 4)
    if d_model % 4:
        raise ValueError(f"d_model: expected a multiple of 4 (the heads), got {d_model}")
    _validate.integer(num_layers, "num_layers", 2)
    _validate.integer(batch, "batch", 1)
    _validate.integer(length, "length", 2)
    _validate.integer(repeats, "repeats", 1)


# --- torch.compile ---


@dataclasses.dataclass
class CompileTiming:
    """One model's training step, eager and through ``torch.compile`` (see
    :func:`compile_timings`)."""

    model: str
    parameters: int
    backend: str
    eager_s: float  # median time of a step of the model as it is
    compile_s: float  # the compiled model's first step: compiling forward and backward
    compiled_s: float  # median time of a step of the compiled model, after the first
    graphs: int  # graphs Dynamo captured in one forward pass
    graph_breaks: int
    break_reasons: list[str]  # each distinct reason once, with where in the code it happened
    loss_difference: float  # |compiled loss - eager loss| / |eager loss|, the same batch
    grad_difference: float  # max |compiled - eager gradient| / max |eager gradient|

    @property
    def speedup(self) -> float:
        """eager step time / compiled step time (above 1: the compiled step is faster)."""
        return self.eager_s / self.compiled_s


def graph_breaks(model: nn.Module, tokens: torch.Tensor) -> tuple[int, int, list[str]]:
    """(graphs, graph breaks, distinct break reasons with their file:line) of Dynamo tracing
    ``model(tokens)`` (``torch._dynamo.explain``). Dynamo's caches are reset afterwards."""
    import torch._dynamo

    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(model)(tokens)
    finally:
        torch._dynamo.reset()
    reasons: list[str] = []
    for brk in explained.break_reasons:
        frames = [f for f in brk.user_stack if "/torch/" not in f.filename] or brk.user_stack
        where = ""
        if frames:
            frame = frames[-1]
            path = frame.filename.replace("\\", "/")
            short = path.split("/tfcourse/", 1)[-1] if "/tfcourse/" in path else path
            where = f" at {'tfcourse/' if '/tfcourse/' in path else ''}{short}:{frame.lineno}"
            if frame.line:
                where += f" ({frame.line.strip()})"
        reason = f"{brk.reason.splitlines()[0]}{where}"
        if reason not in reasons:
            reasons.append(reason)
    return explained.graph_count, explained.graph_break_count, reasons


@contextlib.contextmanager
def _fresh_inductor_cache() -> Iterator[None]:
    """Inductor compiling into an empty cache folder, as on a first run (its on-disk caches
    would otherwise make a second run's compile time a fraction of the first's)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    except ImportError:  # older PyTorch: the usual cache
        yield
        return
    with tempfile.TemporaryDirectory(prefix="tfcourse-inductor-") as folder:
        with temporary_cache_dir(folder):
            yield


def check_backend(backend: str) -> str:
    """``backend`` if it is one of ``torch.compiler.list_backends()``, else a ValueError naming
    them."""
    backends = torch.compiler.list_backends(exclude_tags=())
    if backend not in backends:
        raise ValueError(f"backend: expected one of torch.compiler.list_backends() {backends}, "
                         f"got {backend!r}")
    return backend


def compile_timings(
    models: Sequence[str] = MODELS, *, backend: str = DEFAULT_BACKEND, d_model: int = 64,
    num_layers: int = 4, batch: int = 8, length: int = 256, repeats: int = 3,
    device: torch.device | str | None = None, fresh_cache: bool = True, seed: int = 0,
) -> list[CompileTiming]:
    """For each model of ``models`` (names of :data:`MODELS`, built by :func:`build_model`), a
    :class:`CompileTiming`: a training step (forward and backward of :func:`next_token_loss` on
    (``batch``, ``length``) random tokens, float32) of the model and of
    ``torch.compile(model, backend=backend)``.

    The compiled model's first step is timed on its own (``compile_s``: Dynamo traces the
    forward, AOTAutograd derives the backward graph, the backend compiles both; Inductor into an
    empty cache when ``fresh_cache``). Then ``repeats`` rounds each time one eager and one
    compiled step, in turn, so that a change in the machine's load reaches both; the medians are
    ``eager_s`` and ``compiled_s``. Both share the parameters; the loss and the gradients of one
    step of each on the same batch are compared (``*_difference``). The graph counts are those
    of :func:`graph_breaks` on the same input.
    """
    if not models:
        raise ValueError("models: expected at least one model name, got none")
    for name in models:
        if name not in MODELS:
            raise ValueError(f"models: expected names from {MODELS}, got {name!r}")
    check_backend(backend)
    _check_sizes(d_model, num_layers, batch, length, repeats)
    device = _device(device)
    tokens = random_tokens(batch, length, seed=seed)[0].to(device)
    rows = []
    for name in models:
        model = build_model(name, d_model=d_model, num_layers=num_layers, max_len=length,
                            seed=seed).to(device).train()
        params = list(model.parameters())
        graphs, breaks, reasons = graph_breaks(model, tokens[:, :-1])
        eager = _forward_backward(model, params, tokens)
        eager_loss = eager()  # also the warm-up of the eager step
        eager_grads = _gradients(params)

        compiled_model = torch.compile(model, backend=backend)
        compiled = _forward_backward(compiled_model, params, tokens)
        with _fresh_inductor_cache() if fresh_cache and backend == "inductor" else (
                contextlib.nullcontext()):
            _synchronize(device)
            start = time.perf_counter()
            compiled_loss = compiled()
            _synchronize(device)
            compile_s = time.perf_counter() - start
        compiled_grads = _gradients(params)
        compiled()  # a second untimed step: any lazy work left after the first is done

        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(repeats):
            times["eager"].append(_timed(eager, device))
            times["compiled"].append(_timed(compiled, device))
        rows.append(CompileTiming(
            model=name, parameters=sum(p.numel() for p in params), backend=backend,
            eager_s=statistics.median(times["eager"]), compile_s=compile_s,
            compiled_s=statistics.median(times["compiled"]), graphs=graphs,
            graph_breaks=breaks, break_reasons=reasons,
            loss_difference=float((compiled_loss - eager_loss).abs() / eager_loss.abs()),
            grad_difference=_relative_difference(compiled_grads, eager_grads)))
        torch._dynamo.reset()  # the next model compiles from nothing too
    return rows


# --- activation checkpointing ---


@dataclasses.dataclass
class CheckpointingCost:
    """A GPT training step at one length with and without activation checkpointing (see
    :func:`checkpointing_costs`)."""

    length: int
    batch: int
    blocks: int  # blocks checkpointed
    weights_mib: float  # parameters and their gradients, for scale
    plain_mib: float | None  # peak memory of the step beyond what was in use before
    checkpointed_mib: float | None
    plain_s: float  # median step time
    checkpointed_s: float
    grad_difference: float  # max |checkpointed - plain gradient| / max |plain gradient|

    @property
    def memory_ratio(self) -> float | None:
        """checkpointed / plain peak memory (below 1: checkpointing saves memory)."""
        if self.plain_mib is None or self.checkpointed_mib is None or not self.plain_mib:
            return None
        return self.checkpointed_mib / self.plain_mib

    @property
    def time_ratio(self) -> float:
        """checkpointed / plain step time (above 1: the recomputation's cost)."""
        return self.checkpointed_s / self.plain_s


def checkpointing_costs(
    lengths: Sequence[int] = tuple(DEFAULT_CHECKPOINT_LENGTHS), *, d_model: int = 64,
    num_layers: int = 4, batch: int = 8, repeats: int = 3,
    device: torch.device | str | None = None, seed: int = 0, fresh_process: bool = True,
) -> list[CheckpointingCost]:
    """A :class:`CheckpointingCost` at each length (shortest first): a training step (forward
    and backward of :func:`next_token_loss` on (``batch``, T) random tokens) of the GPT of
    :func:`build_model`, and of a copy with the same weights whose blocks are checkpointed
    (:func:`tfcourse.training.checkpoint_blocks`).

    Memory: :func:`tfcourse.bench.measure.peak_memory_mib` (CUDA: the allocator's peak; a Linux
    CPU: the rise of the resident-memory high-water mark, with glibc returning freed blocks to
    the system). Times: the medians of ``repeats`` rounds in which the two take turns. The
    gradients of the two on the same batch are compared (``grad_difference``: 0 or float32
    rounding). With ``fresh_process`` (on the CPU) all of it runs in a new Python process
    (:func:`tfcourse.bench.in_fresh_process`) with this process's number of threads: memory
    that this process freed earlier, and reuses unseen, would hide part of the peak, and the
    malloc setting the figures need would slow this process's later work.
    """
    if not lengths:
        raise ValueError("lengths: expected at least one length, got none")
    lengths = sorted({_validate.integer(T, "lengths", 2) for T in lengths})
    _check_sizes(d_model, num_layers, batch, lengths[0], repeats)
    _validate.integer(seed, "seed")
    device = _device(device)
    args = (lengths, d_model, num_layers, batch, repeats, str(device), seed,
            torch.get_num_threads())
    if fresh_process and device.type == "cpu":
        from tfcourse.bench import in_fresh_process

        return in_fresh_process(_checkpointing_costs, *args)
    return _checkpointing_costs(*args)


def _checkpointing_costs(lengths: list[int], d_model: int, num_layers: int, batch: int,
                         repeats: int, device_name: str, seed: int,
                         threads: int) -> list[CheckpointingCost]:
    """:func:`checkpointing_costs` after its checks, in this process."""
    # first: it sets malloc for the whole process, and memory freed before would be reused unseen
    from tfcourse.bench.measure import peak_memory_mib
    from tfcourse.training import checkpoint_blocks

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    plain = build_model("GPT", d_model=d_model, num_layers=num_layers, max_len=lengths[-1],
                        seed=seed).to(device).train()
    checkpointed = copy.deepcopy(plain)
    blocks = len(checkpoint_blocks(checkpointed))
    models = {"plain": plain, "checkpointed": checkpointed}
    params = {key: list(m.parameters()) for key, m in models.items()}
    weights_mib = 2 * sum(p.numel() * p.element_size() for p in params["plain"]) / 2**20
    rows = []
    for T in lengths:
        tokens = random_tokens(batch, T, seed=seed)[0].to(device)
        steps = {key: _forward_backward(m, params[key], tokens) for key, m in models.items()}
        peaks = {key: peak_memory_mib(step, device) for key, step in steps.items()}
        grads = {}
        for key, step in steps.items():
            step()
            grads[key] = _gradients(params[key])
        times: dict[str, list[float]] = {key: [] for key in models}
        for _ in range(repeats):
            for key, step in steps.items():
                times[key].append(_timed(step, device))
        rows.append(CheckpointingCost(
            length=T, batch=batch, blocks=blocks, weights_mib=weights_mib,
            plain_mib=peaks["plain"], checkpointed_mib=peaks["checkpointed"],
            plain_s=statistics.median(times["plain"]),
            checkpointed_s=statistics.median(times["checkpointed"]),
            grad_difference=_relative_difference(grads["checkpointed"], grads["plain"])))
        del steps  # with the gradients below: nothing of this length is held at the next
        for group in params.values():
            for p in group:
                p.grad = None
    return rows


# --- data parallelism ---


@dataclasses.dataclass
class DataParallelRates:
    """Steps per second of one training step on the same 2b rows, four ways (see
    :func:`data_parallel_rates`)."""

    batch: int  # b: rows per process in the two-process run; the step trains on 2b
    length: int
    steps: int  # timed steps per run
    rates: dict[str, float]  # setup (a key of SETUPS) -> steps per second, the median run
    rank_difference: float  # max |rank 1 - rank 0 parameter| at the end: 0 when in sync
    gradient_difference: float  # first step: max |DDP - one-process gradient| / max |gradient|
    single_difference: float  # max |two-process - one-process parameter| at the end

    def speedup(self, setup: str, over: str) -> float:
        """``rates[setup] / rates[over]``."""
        return self.rates[setup] / self.rates[over]


SETUPS = {"1 process, 1 thread": (1, 1), "1 process, 2 threads": (1, 2),
          "2 processes, 1 thread each (DDP)": (2, 1)}  # (processes, threads per process)


def _train_steps(model: nn.Module, tokens: torch.Tensor, threads: int,
                 warmup: int) -> dict[str, Any]:
    """Train a copy of ``model`` with ``threads`` threads, one AdamW step on each
    ``tokens[i]``, on this rank's share of the rows (all of them outside a process group);
    return the seconds of the steps after the first ``warmup`` (at least 1), the gradients of
    the first step and the final parameters."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(threads)
    model = copy.deepcopy(model)
    group = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if group else (0, 1)
    net = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    rows = tokens.shape[1] // world

    def step(i: int) -> None:
        optimizer.zero_grad(set_to_none=True)
        next_token_loss(net, tokens[i, rank * rows:(rank + 1) * rows]).backward()
        optimizer.step()

    for i in range(warmup):
        step(i)
        if i == 0:  # the first step's gradients: averaged over the ranks, under DDP
            first = torch.cat([p.grad.flatten() for p in model.parameters()])
    if group:
        dist.barrier()
    start = time.perf_counter()
    for i in range(warmup, tokens.shape[0]):
        step(i)
    if group:
        dist.barrier()  # the slower rank's time: the group moves at its pace
    return {"seconds": time.perf_counter() - start, "gradients": first,
            "parameters": torch.cat([p.detach().flatten() for p in model.parameters()])}


def _data_parallel_round(model: nn.Module, tokens: torch.Tensor,
                         timeout: float) -> dict[str, list[dict[str, Any]]]:
    """One round of :func:`data_parallel_rates`, run in a fresh process: the two-process group
    first (forked from this process before it has computed anything), then the one-process
    setups here; for each setup of :data:`SETUPS` what each process returned."""
    from tfcourse.distributed import run_local_group

    results = {}
    for setup, (processes, threads) in SETUPS.items():
        if processes > 1:
            results[setup] = run_local_group(_train_steps, processes,
                                             (model, tokens, threads, 1),
                                             timeout=timeout)
    for setup, (processes, threads) in SETUPS.items():
        if processes == 1:
            results[setup] = [_train_steps(model, tokens, threads, 1)]
    return results


def data_parallel_rates(
    *, d_model: int = 64, num_layers: int = 4, batch: int = 4, length: int = 256,
    steps: int = 4, repeats: int = 3, timeout: float = 600.0, seed: int = 0,
) -> DataParallelRates:
    """The GPT of :func:`build_model` trained for 1 + ``steps`` AdamW steps (lr 1e-3), each on
    its own 2 × ``batch`` random sequences of ``length`` tokens, on the CPU, in each setup of
    :data:`SETUPS`: one process with 1 thread and with 2, and two processes of 1 thread each that
    form a gloo group (:func:`tfcourse.distributed.run_local_group`), each training on
    ``batch`` of the rows with ``DistributedDataParallel`` averaging the gradients in the
    backward pass. All start from the same weights; the first step is a warm-up and the other
    ``steps`` are timed.

    Each of the ``repeats`` rounds runs in a fresh Python process
    (:func:`tfcourse.bench.in_fresh_process`): the two-process group is forked from it before it
    computes anything, then the one-process setups run in it. (Children forked from a process
    that had run ``torch.compile`` hung in their first indexing operation here, torch 2.13 on
    the CPU, so the group is never forked from the caller.)

    ``rates``: steps per second, the median of the rounds. ``rank_difference``: the largest
    difference between the two ranks' final parameters (0: DDP kept them in sync).
    ``gradient_difference``: between the gradients of the first step that DDP averaged and those
    of the one-process step on all the rows, relative to the largest (float32 rounding: the two
    add the gradients in another order). ``single_difference``: the largest between the final
    parameters of the two-process and the one-process (2 threads) run: that rounding, which
    AdamW can magnify for a parameter whose gradient is near 0 (its update is about lr whatever
    the gradient's size), so it stays well below lr = 1e-3. ``timeout``: seconds the group may
    take before its processes are killed.
    """
    from tfcourse.bench import in_fresh_process

    _check_sizes(d_model, num_layers, batch, length, repeats)
    _validate.integer(steps, "steps", 1)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"timeout: expected a number of seconds > 0, got {timeout!r}")
    model = build_model("GPT", d_model=d_model, num_layers=num_layers, max_len=length,
                        seed=seed).train()
    tokens = random_tokens(2 * batch, length, steps=1 + steps, seed=seed)
    times: dict[str, list[float]] = {setup: [] for setup in SETUPS}
    last: dict[str, list[dict[str, Any]]] = {}
    for _ in range(repeats):
        last = in_fresh_process(_data_parallel_round, model, tokens, timeout)
        for setup, per_process in last.items():
            times[setup].append(max(r["seconds"] for r in per_process))
    ddp = last["2 processes, 1 thread each (DDP)"]
    single = last["1 process, 2 threads"][0]
    return DataParallelRates(
        batch=batch, length=length, steps=steps,
        rates={setup: steps / statistics.median(t) for setup, t in times.items()},
        rank_difference=float((ddp[1]["parameters"] - ddp[0]["parameters"]).abs().max()),
        gradient_difference=_relative_difference([ddp[0]["gradients"]], [single["gradients"]]),
        single_difference=float((ddp[0]["parameters"] - single["parameters"]).abs().max()))


# --- the command line ---



def _load() -> str:
    """The machine's load average over the last minute: on a shared machine, what else ran."""
    try:
        return f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    except OSError:
        return "load average n/a"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _print_compile(rows: list[CompileTiming]) -> None:
    print(f"{'model':>6} {'parameters':>11} {'eager ms':>9} {'first step s':>13} "
          f"{'compiled ms':>12} {'speedup':>8} {'graphs':>7} {'breaks':>7} {'loss diff':>10} "
          f"{'grad diff':>10}")
    for r in rows:
        print(f"{r.model:>6} {r.parameters:>11,} {r.eager_s * 1e3:>9.1f} {r.compile_s:>13.1f} "
              f"{r.compiled_s * 1e3:>12.1f} {r.speedup:>7.2f}x {r.graphs:>7} "
              f"{r.graph_breaks:>7} {r.loss_difference:>10.1e} {r.grad_difference:>10.1e}")
    for r in rows:
        for reason in r.break_reasons:
            print(f"  {r.model} graph break: {reason}")
    compile_ratio = ", ".join(f"{r.model} {r.compile_s / r.compiled_s:.0f}" for r in rows)
    print(f"the first step costs as much as this many compiled steps: {compile_ratio}")


def _print_checkpointing(rows: list[CheckpointingCost]) -> None:
    print(f"{'T':>6} {'plain MiB':>10} {'ckpt MiB':>9} {'memory':>7} {'plain ms':>9} "
          f"{'ckpt ms':>9} {'time':>6} {'grad diff':>10}")
    for r in rows:
        memory = "n/a" if r.memory_ratio is None else f"{r.memory_ratio:.2f}x"
        print(f"{r.length:>6} {_mib(r.plain_mib):>10} {_mib(r.checkpointed_mib):>9} "
              f"{memory:>7} {r.plain_s * 1e3:>9.1f} {r.checkpointed_s * 1e3:>9.1f} "
              f"{r.time_ratio:>5.2f}x {r.grad_difference:>10.1e}")
    r = rows[-1]
    if r.memory_ratio is not None:
        print(f"at T = {r.length}: checkpointing the {r.blocks} blocks needs "
              f"{r.memory_ratio:.0%} of the memory of the plain step for {r.time_ratio:.2f}x its "
              f"time (weights and gradients: {r.weights_mib:.1f} MiB, held before the step)")


def _print_ddp(result: DataParallelRates) -> None:
    base = "1 process, 2 threads"
    print(f"{'setup':>34} {'steps/s':>8} {'sequences/s':>12} {'vs 2 threads':>13}")
    for setup, rate in result.rates.items():
        print(f"{setup:>34} {rate:>8.2f} {2 * result.batch * rate:>12.1f} "
              f"{result.speedup(setup, base):>12.2f}x")
    print(f"the first step's gradients, averaged over the two processes against one process's "
          f"on all the rows: {result.gradient_difference:.1e} of the largest")
    print(f"parameters after {result.steps + 1} steps: the two ranks differ by at most "
          f"{result.rank_difference:.1e} (in sync); two processes against one by "
          f"{result.single_difference:.1e}\n(float32 rounding: the gradients are added in "
          f"another order; an AdamW step moves a parameter by about lr = {LEARNING_RATE:g})")
    print("why two processes on two cores gain little: they share the same two cores that one "
          "process with\n2 threads already uses; each step adds an all-reduce of every gradient "
          "(here through the\nloopback interface); and each process runs its own Python, "
          "optimizer step and small kernels.\nData parallelism pays when each process has a "
          "device of its own (one GPU per process, chapter 11).")


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from tfcourse.bench.compare import _machine, _positive_int  # the same checks and header

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench scaling")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="models of the compile part")
    parser.add_argument("--backend", default=None,
                        help=f"of torch.compile (default {DEFAULT_BACKEND}; aot_eager with "
                             "--quick): one of torch.compiler.list_backends()")
    parser.add_argument("--device", default=None,
                        help="cpu or cuda, of the compile and checkpointing parts (default: cuda "
                             "if present); the ddp part runs on the CPU")
    parser.add_argument("--width", type=_positive_int, default=None, help="d_model (default 64)")
    parser.add_argument("--layers", type=_positive_int, default=None,
                        help="GPT layers, at least 2 (default 4)")
    parser.add_argument("--length", type=_positive_int, default=None,
                        help="tokens per sequence of the compile and ddp parts (default 256)")
    parser.add_argument("--batch", type=_positive_int, default=None,
                        help="sequences per step (default 8); the ddp part gives each of its "
                             "two processes half, so it must be even")
    parser.add_argument("--checkpoint-lengths", type=_positive_int, nargs="+", default=None,
                        help="lengths of the checkpointing part (default 512 1024)")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help="timed steps of each ddp run (default 4)")
    parser.add_argument("--repeats", type=_positive_int, default=None,
                        help="rounds of each measurement (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and the aot_eager backend: a check that all runs, "
                             "in well under a minute; its figures mean little")
    args = parser.parse_args(argv)
    quick = {"backend": "aot_eager", "width": 32, "layers": 2, "length": 64, "batch": 4,
             "checkpoint_lengths": [128, 256], "steps": 2, "repeats": 1}
    full = {"backend": DEFAULT_BACKEND, "width": 64, "layers": 4, "length": 256, "batch": 8,
            "checkpoint_lengths": DEFAULT_CHECKPOINT_LENGTHS, "steps": 4, "repeats": 3}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        check_backend(args.backend)
    except ValueError as error:
        parser.error(f"argument --backend: {str(error).removeprefix('backend: ')}")
    if args.width % 4:
        parser.error(f"argument --width: expected a multiple of 4 (the heads), got {args.width}")
    if args.layers < 2:
        parser.error(f"argument --layers: expected at least 2, got {args.layers}")
    if args.length < 2:
        parser.error(f"argument --length: expected at least 2, got {args.length}")
    if min(args.checkpoint_lengths) < 2:
        parser.error(f"argument --checkpoint-lengths: expected lengths of at least 2, got "
                     f"{min(args.checkpoint_lengths)}")
    if "ddp" in args.parts and args.batch % 2:
        parser.error(f"argument --batch: expected an even number (the ddp part gives each of "
                     f"its two processes half), got {args.batch}")
    try:
        device = torch.device(args.device) if args.device else default_device()
    except RuntimeError:
        device = torch.device("meta")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"argument --device: expected cpu or cuda, got {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("argument --device: cuda asked for, but CUDA sees no GPU")

    print(f"python -m tfcourse.bench scaling {' '.join(sys.argv[2:] if argv is None else argv)}")
    print(f"on {device} ({_machine(device)}), torch {torch.__version__}; {_load()}")
    gpt = build_model("GPT", d_model=args.width, num_layers=args.layers, max_len=args.length)
    mamba = build_model("Mamba", d_model=args.width, num_layers=args.layers, max_len=args.length)
    print(f"models: chapter 3's GPT (width {args.width}, {args.layers} pre-LN layers, 4 heads) and "
          f"a Mamba of {len(mamba.blocks)} blocks, {sum(p.numel() for p in gpt.parameters()):,} "
          f"and {sum(p.numel() for p in mamba.parameters()):,} parameters; vocabulary "
          f"{VOCAB_SIZE}, random tokens, float32")
    started = time.perf_counter()
    if "compile" in args.parts:
        print(f"\ntorch.compile, backend {args.backend}: a training step (forward and backward) "
              f"on {args.batch} x {args.length} tokens; median of {args.repeats} rounds, eager "
              f"and compiled in turn; the first step compiles"
              + (" (into an empty cache)" if args.backend == "inductor" else ""))
        _print_compile(compile_timings(args.models, backend=args.backend, d_model=args.width,
                                       num_layers=args.layers, batch=args.batch,
                                       length=args.length, repeats=args.repeats, device=device))
    if "ddp" in args.parts:
        b = args.batch // 2
        print(f"\ndata parallel on the CPU: the GPT's training step (forward, backward, AdamW) "
              f"on {args.batch} x {args.length} tokens; 2 processes take {b} rows each; "
              f"{args.steps} timed steps after 1 of warm-up, median of {args.repeats} rounds, "
              f"the setups in turn")
        _print_ddp(data_parallel_rates(d_model=args.width, num_layers=args.layers, batch=b,
                                       length=args.length, steps=args.steps,
                                       repeats=args.repeats))
    if "checkpointing" in args.parts:  # last: it sets malloc for the process (see the top)
        print(f"\nactivation checkpointing: the GPT's training step (forward and backward) on "
              f"{args.batch} sequences of T tokens, without and with checkpoint_blocks; peak MiB "
              f"beyond what was held before; median of {args.repeats} rounds in turn")
        _print_checkpointing(checkpointing_costs(
            args.checkpoint_lengths, d_model=args.width, num_layers=args.layers,
            batch=args.batch, repeats=args.repeats, device=device))
    print(f"\ntotal {time.perf_counter() - started:.0f} s; {_load()}")
