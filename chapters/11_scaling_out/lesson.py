# %% [markdown]
# # Scaling out: where time goes, mixed precision, compilation, and data-parallel training
#
# Every model of this course trains on a laptop's CPU in minutes. Real models do not: they are
# trained on GPUs, in reduced precision, compiled, and spread over many processes and machines.
# This last chapter teaches what changes when a model outgrows one device, with PyTorch's own
# machinery, never a home-made substitute:
#
# 1. **where the time goes**: `torch.profiler` on one training step, and the step's FLOPs
#    against the machine's best matrix-multiply rate;
# 2. **mixed precision**: bfloat16 autocast; float16 with `GradScaler`, and why float16 needs
#    loss scaling (a gradient that underflows to zero, shown);
# 3. **compilation**: `torch.compile` on a Transformer block and a Mamba block, timed, and the
#    graph breaks that stop it from seeing a whole model;
# 4. **memory**: activation checkpointing (memory against time) and gradient accumulation (a
#    large batch in small pieces);
# 5. **data-parallel training**: the all-reduce, `DistributedDataParallel`, `torchrun` on one
#    machine and as two "machines", checkpoints that resume exactly, and FSDP;
# 6. **the course's models on a GPU**: the Colab path.
#
# Everything here runs on a 2-core CPU (processes talk through the `gloo` backend) and unchanged
# on a GPU (`nccl`). The code is `tfcourse.training` (the `Trainer`, with `precision`,
# `accumulation_steps`, `compile` and `activation_checkpointing`), `tfcourse.distributed` (the
# process group) and `tfcourse.train` (`python -m tfcourse.train`, the script that `torchrun`
# launches); `python -m tfcourse.bench scaling` measures compilation, checkpointing and
# data parallelism at full size. Letters are those of the
# [notation page](../appendices/notation.md); this chapter adds `W`, the number of processes
# (the *world size*), and `r`, a process's *rank*. The [exercise notebook](exercises.ipynb) asks
# you to accumulate gradients, scale a loss by hand, average gradients across real processes,
# shard a dataset across ranks and round to bfloat16 yourself.

# %%
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.distributed as dist
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

import tfcourse as tc
from tfcourse import distributed
from tfcourse.bench import scaling
from tfcourse.plotting import plot_history
from tfcourse.train import gpt_task

lesson_start = time.perf_counter()
threads = tc.pin_threads()  # a fixed number of CPU threads: steadier timings
tc.seed_everything(0)  # the same random numbers and figures at every run
device = tc.default_device()  # CUDA on a GPU (Colab), else the CPU (Binder)
plt.rcParams.update({"figure.dpi": 100, "grid.alpha": 0.3})
on_gpu = device.type == "cuda"
where = torch.cuda.get_device_name(device) if on_gpu else f"the CPU, {threads} threads"
print(f"torch {torch.__version__}, tfcourse {tc.__version__}, device: {device} ({where})")

# %% [markdown]
# ## 1. Where the time goes
#
# Before making anything faster, measure where the time goes. The model is chapter 3's
# character-level GPT on the prose of Python's help pages, here with $C = 128$, 4 layers and
# $T = 128$ characters of context, trained on batches of $B = 16$ windows. `gpt_task` is what
# `python -m tfcourse.train --model gpt` trains (section 5 launches it): the model, its loss
# and its batches, a function of the step.
#
# One training step has four parts: get the **data**, run the **forward** pass, the
# **backward** pass, and the **optimizer** step. `torch.profiler.record_function` names a
# stretch of code, and the profiler reports the time of each name beside that of every
# PyTorch operator. Hooks on the modules also name the forward pass of every attention and
# feed-forward sublayer (the backward pass runs in autograd's engine, outside the modules, so
# it is timed as one).

# %%
B, T, C = 16, 128, 128
task = gpt_task(width=C, layers=4, block=T, seed=0)
model = task.model.to(device)
batches = task.batches(B)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
print(f"GPT: {sum(p.numel() for p in model.parameters()):,} parameters, batch {B} x {T}")


def synchronize() -> None:
    """Wait for the GPU: its work is queued, and a clock read too early times only the queue."""
    if on_gpu:
        torch.cuda.synchronize(device)


def median_time(fn, repeats: int = 5) -> float:
    """The median of ``repeats`` timings of ``fn()``, in seconds, after one untimed call (the
    first call allocates memory); the median, because a busy machine adds slow outliers."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        fn()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def name_sublayers(model: nn.Module) -> list:
    """Profile every attention and feed-forward sublayer's forward pass under its kind's name;
    return the hooks' handles (``handle.remove()`` takes them off)."""
    kinds = {tc.MultiHeadAttention: "attention", tc.FeedForward: "feed-forward"}
    handles = []
    for module in model.modules():
        kind = kinds.get(type(module))
        if kind is None:
            continue
        open_ranges = []

        def enter(m, args, kind=kind, open_ranges=open_ranges):
            open_ranges.append(record_function(kind).__enter__())

        def leave(m, args, output, open_ranges=open_ranges):
            synchronize()
            open_ranges.pop().__exit__(None, None, None)

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def train_step(step: int) -> torch.Tensor:
    with record_function("data"):
        batch = batches(step).to(device)  # (B, T + 1) windows of characters
    with record_function("forward"):
        loss = task.loss_fn(model, batch)
        synchronize()
    with record_function("backward"):
        loss.backward()
        synchronize()
    with record_function("optimizer"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
    return loss


# %% [markdown]
# Three steps warm up (the first steps allocate memory and start thread pools), then the
# profiler records five:

# %% tags=["remove-stderr"]
for step in range(3):
    train_step(step)
handles = name_sublayers(model)
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
with profile(activities=activities) as prof:
    for step in range(3, 8):
        train_step(step)
for handle in handles:
    handle.remove()
times = {e.key: e.cpu_time_total / 1e3 for e in prof.key_averages()}  # milliseconds
parts = ["data", "forward", "backward", "optimizer"]
total = sum(times[p] for p in parts)
for part in parts:
    print(f"{part:10s} {times[part] / 5:7.2f} ms per step  {times[part] / total:6.1%}")
for kind in ("attention", "feed-forward"):
    print(f"  of which {kind:12s} {times[kind] / 5:6.2f} ms  {times[kind] / times['forward']:6.1%}"
          f" of the forward pass")

# %% [markdown]
# The forward and backward passes take nearly all of the time; the data (a slice of a
# tensor that is already in memory) takes almost none, and the optimizer a few percent (AdamW
# reads and writes each parameter, its gradient and two moments: work in proportion to the
# parameters, not to $B \times T$). The backward pass takes about twice the forward pass: for
# each matrix product of the forward pass it computes two, the gradient of the input and that
# of the weight. At $T = C = 128$, attention and the feed-forward network take similar shares
# of the forward pass; chapter 10 showed attention's share growing with $T$.
#
# The operators behind these times: the profiler's table, sorted by the time spent in each
# operator itself ("self"), shows which kernels to make faster. On the CPU, matrix products
# (`addmm`, `mm`, `bmm`) and the fused attention lead; on a GPU, the same table has a CUDA
# column.

# %%
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10,
                                max_name_column_width=40))

# %% [markdown]
# ### FLOPs against time
#
# How good are these milliseconds? `torch.utils.flop_counter.FlopCounterMode` counts the
# floating-point operations of every operator it sees (a multiply-add is 2 FLOPs), forward and
# backward, with formulas for matrix products and attention. Divided by the measured time, it
# gives the step's *achieved throughput*, and the best rate the machine reaches on one large
# matrix product stands in for its peak. The ratio is what large-model papers call the *model
# FLOPs utilisation* (MFU, introduced with PaLM by Chowdhery et al. 2022, section 4.1), here
# against a measured peak, not a datasheet's.

# %%
batch = batches(0).to(device)
with FlopCounterMode(display=False) as counter:
    task.loss_fn(model, batch).backward()
model.zero_grad(set_to_none=True)
step_flops = counter.get_total_flops()
step_s = median_time(lambda: train_step(0))
n = 2048 if on_gpu else 1024
a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
peak = 2 * n**3 / median_time(lambda: a @ b)  # FLOP/s of one big matrix product
achieved = step_flops / step_s
print(f"one training step: {step_flops / 1e9:.2f} GFLOP in {step_s * 1e3:.1f} ms = "
      f"{achieved / 1e9:.1f} GFLOP/s")
print(f"a {n} x {n} matrix product on {where}: {peak / 1e9:.1f} GFLOP/s")
print(f"the step reaches {achieved / peak:.0%} of it")

# %% [markdown]
# The step reaches well under the big product's rate. Its matrices are small (128 columns), so
# each product does little work for the memory it reads, and much of the step is not matrix
# products at all: softmax, LayerNorm, GELU, the optimizer and the bookkeeping of autograd,
# whose work the count above ignores but whose time the clock sees. A GPU makes the gap larger,
# not smaller: its peak is far higher, and a small model cannot feed it. Mixed precision and
# compilation, the next two sections, close part of that gap.

# %% [markdown]
# ## 2. Mixed precision
#
# A float32 number has 1 sign bit, 8 exponent bits and 23 mantissa bits. Two 16-bit formats
# halve the memory and the data moved, and GPUs multiply them several times faster:
#
# - **bfloat16** keeps float32's 8 exponent bits (the same range) and keeps 7 bits of mantissa
#   (about 3 significant digits);
# - **float16** has 5 exponent bits and 10 of mantissa: more precise than bfloat16, but its
#   largest number is 65,504 and its smallest positive normal number $6.1 \times 10^{-5}$.

# %%
print(f"{'dtype':10s} {'bits':>4s} {'mantissa':>8s} {'largest':>10s} {'smallest normal':>16s} "
      f"{'smallest >0':>12s}")
for dtype in (torch.float32, torch.bfloat16, torch.float16):
    info = torch.finfo(dtype)
    mantissa = -torch.log2(torch.tensor(info.eps)).int().item()
    print(f"{str(dtype)[6:]:10s} {info.bits:4d} {mantissa:8d} {info.max:10.3g} "
          f"{info.smallest_normal:16.3g} {info.smallest_normal * info.eps:12.3g}")

# %% [markdown]
# **Autocast** runs each operation in the precision that suits it: inside
# `torch.autocast(device_type, dtype)`, matrix products and convolutions take 16-bit inputs,
# while operations that are sensitive to rounding stay in float32. Which ones is a list per
# device type (the "Autocast Op Reference" of PyTorch's AMP page): on CUDA, softmax,
# log-softmax, LayerNorm and the losses run in float32; the CPU's list is shorter, and keeps
# the losses in float32 but softmax and LayerNorm in bfloat16, as the output below shows on
# this page's device. The parameters stay float32 (the *master weights*): an update that is
# small against its weight would round to nothing in 16 bits.

# %%
layer = nn.Linear(8, 8).to(device)
x = torch.randn(4, 8, device=device)
with torch.autocast(device.type, dtype=torch.bfloat16):
    y = layer(x)
    labels = torch.zeros(4, dtype=torch.long, device=device)
    print(f"on {device.type}: weight {layer.weight.dtype}, input {x.dtype} -> linear "
          f"{y.dtype}, log_softmax {torch.log_softmax(y, dim=-1).dtype}, layer_norm "
          f"{nn.functional.layer_norm(y, (8,)).dtype}, cross_entropy "
          f"{nn.functional.cross_entropy(y, labels).dtype}")

# %% [markdown]
# ### Why float16 needs loss scaling
#
# Gradients are often tiny: a weight that affects the loss by $10^{-8}$ per unit has a gradient
# of $10^{-8}$, below float16's smallest positive number ($6 \times 10^{-8}$). In float16 it
# becomes exactly 0, and the weight never learns. Micikevicius et al. (2018, "Mixed Precision
# Training", section 3.2) found such gradients in real networks, and scaled the loss: multiply
# the loss by $S$ (say $2^{16}$) before the backward pass, so that every gradient is $S$ times
# larger and representable, then divide the gradients by $S$, in float32, before the update.

# %%
grad = torch.tensor([1e-8, 3e-7, 1e-3])
S = 2.0**16
print("float32 gradient           ", grad.tolist())
print("in float16                 ", grad.half().float().tolist())
print("x S in float16, then / S   ", ((grad * S).half().float() / S).tolist())

# the same gradient from a backward pass: the weights and products in float16, the loss in
# float32 (as under autocast): loss = 1e-4 (w . c), so dloss/dw = 1e-4 c
c = torch.tensor([1e-4, 3e-3, 10.0], dtype=torch.float16)
w = torch.ones(3, dtype=torch.float16, requires_grad=True)
(1e-4 * (w * c).sum().float()).backward()
print("backward in float16        ", w.grad.float().tolist())
w.grad = None
(1e-4 * (w * c).sum().float() * S).backward()  # the scaled loss
print("backward of S x loss, / S  ", (w.grad.float() / S).tolist())

# %% [markdown]
# Unscaled, the $10^{-8}$ gradient is lost and the $3 \times 10^{-7}$ one keeps only two
# significant bits; scaled, both survive. Too large a scale has the opposite problem: a
# gradient above 65,504 overflows to `inf`. `torch.amp.GradScaler` therefore adjusts $S$ as it
# goes (*dynamic loss scaling*): it starts high ($2^{16}$), and when a gradient is `inf` or
# NaN it skips that step and halves $S$; after 2,000 steps without overflow it doubles $S$.
# bfloat16 needs none of this: its range is float32's.
#
# `tc.TrainConfig(precision=...)` does it for you: `"bf16"` runs the forward pass under
# bfloat16 autocast; `"fp16"` under float16 autocast with a `GradScaler`, which scales the loss,
# unscales the gradients before clipping them, skips steps that overflowed and records the scale
# in the history (`loss_scale`); `"auto"` picks bf16 on a GPU that has it and fp32 elsewhere.
# The same GPT, trained 60 steps three ways from the same start:

# %%
PRECISION_STEPS = 60


def train_gpt(steps: int, batch: int = 16, **config) -> tc.History:
    """A small GPT of chapter 3 (C = 64, 2 layers, T = 64) trained ``steps`` steps by the
    course's Trainer, from the same start every time; ``config``: TrainConfig's settings."""
    tc.seed_everything(0)
    small = gpt_task(width=64, layers=2, block=64, seed=0)
    settings = dict(steps=steps, lr=3e-3, warmup_steps=5, log_every=5, progress=False,
                    device=device) | config
    return tc.Trainer(small.model, small.loss_fn, small.batches(batch),
                      tc.TrainConfig(**settings)).fit()


runs = {}
for precision in ("fp32", "bf16", "fp16"):
    start = time.perf_counter()
    runs[precision] = train_gpt(PRECISION_STEPS, precision=precision)
    print(f"{precision}: final loss {runs[precision].loss[-1]:.4f}, "
          f"{time.perf_counter() - start:.1f} s")
print(f"fp16's loss scale at the end: {runs['fp16'].last('loss_scale'):,.0f}")
fig, (ax_loss, ax_gap) = plt.subplots(1, 2, figsize=(10, 3.5))
plot_history(runs, ax=ax_loss, title="the same GPT in three precisions")
for precision in ("bf16", "fp16"):
    gaps = [abs(u - v) for u, v in zip(runs[precision].loss, runs["fp32"].loss, strict=True)]
    color = {"bf16": "C1", "fp16": "C2"}[precision]  # the colours of the left panel
    ax_gap.plot(runs["fp32"].steps, gaps, marker="o", label=precision, color=color)
ax_gap.set(xlabel="step", ylabel="|loss - fp32 loss|", yscale="log",
           title="how far each is from float32")
ax_gap.grid(True)
ax_gap.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The three curves lie on each other. The right panel shows the rounding: bfloat16, with 7
# bits of mantissa, moves the loss about ten times further from float32's than float16, with
# 10 bits; both stay far below what matters for training. On a CPU the 16-bit runs are
# *slower* than float32 (its matrix kernels are fastest in float32, and autocast adds
# conversions), so here they only show the mechanics; on a GPU with tensor cores, bf16 is the
# fast path (section 6). The loss scale stays at $2^{16}$: the GradScaler halves it only after
# an overflow, and these gradients never overflow.

# %% [markdown]
# ## 3. Compilation
#
# PyTorch runs a model *eagerly*: each operation is a separate call into a kernel that reads
# its inputs from memory and writes its output back. `torch.compile(model)` traces the Python
# code of `forward` into a graph (TorchDynamo), derives the backward graph (AOTAutograd), and
# generates fused kernels for it (Inductor: C++ with OpenMP on a CPU, Triton on a GPU), so that
# a chain of element-wise operations (a bias, a GELU, a dropout, a residual) reads and writes
# memory once. The first call pays for the compilation; later calls with the same shapes run
# the compiled code. A Transformer block of chapter 3 and a Mamba block of chapter 8 (whose
# selective scan is a loop over chunks of the sequence), each timed on a training step
# (forward and backward) before and after:

# %%
x = torch.randn(B, T, C, device=device)  # (B, T, C)
blocks = {
    "Transformer block": tc.DecoderLayer(C, 4, 4 * C, norm_first=True, activation="gelu",
                                         cross_attention=False),
    "Mamba block": tc.MambaBlock(C),
}


def block_step(block: nn.Module) -> None:
    block(x).square().mean().backward()


def compile_and_time(block: nn.Module) -> dict:
    """Compile a copy of ``block``; time the first call and the steps of both."""
    compiled = torch.compile(copy.deepcopy(block))
    start = time.perf_counter()
    # the first call compiles, forward and backward (without the on-disk cache of compiled code
    # that makes a second compilation of the same block, on the same machine, nearly free)
    with torch._inductor.config.patch(force_disable_caches=True), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "caches force disabled" notes
        block_step(compiled)
    compile_s = time.perf_counter() - start
    eager_s = median_time(lambda: block_step(block), repeats=10)
    compiled_s = median_time(lambda: block_step(compiled), repeats=10)
    block.zero_grad(set_to_none=True)
    compiled.zero_grad(set_to_none=True)
    block_step(block)
    block_step(compiled)
    gap = max(((p.grad - q.grad).abs().max() / p.grad.abs().max().clamp_min(1e-6)).item()
              for p, q in zip(block.parameters(), compiled.parameters(), strict=True))
    return dict(compile_s=compile_s, eager_s=eager_s, compiled_s=compiled_s, gap=gap)


print(f"one training step (forward and backward), B = {B}, T = {T}, C = {C}, Inductor:")
for name, block in blocks.items():
    r = compile_and_time(block.to(device))
    pays = (f"pays for itself after {r['compile_s'] / (r['eager_s'] - r['compiled_s']):,.0f} "
            f"steps" if r["compiled_s"] < r["eager_s"] else "not faster here")
    print(f"{name:18s} compiled in {r['compile_s']:5.1f} s; eager {r['eager_s'] * 1e3:6.2f} ms, "
          f"compiled {r['compiled_s'] * 1e3:6.2f} ms: {r['eager_s'] / r['compiled_s']:.2f}x, "
          f"{pays}; gradients equal to {r['gap']:.0e}")
    assert r["gap"] < 1e-3

# %% [markdown]
# Each compilation costs seconds, and on a CPU, at these sizes, the compiled steps gain
# little or nothing; the Mamba block's can even be slower. Most of the Transformer block's time
# is in its matrix products and its fused attention, which compiled code calls in the same
# libraries as eager code: what compilation removes is the separate passes over memory of the
# element-wise operations (bias, GELU, residual, LayerNorm), a small share of a CPU's step. The
# Mamba block's scan is a Python loop over chunks of the sequence, which Dynamo unrolls into
# one long graph: the compilation grows with the length, and the generated code is not
# necessarily faster than PyTorch's own kernels. `python -m tfcourse.bench scaling` compiles
# chapter 10's whole models at $T = 256$, and measured on this machine 1.33x for the GPT (at
# width 64 its many small element-wise operations weigh more) and 0.97x for Mamba, after a
# first step of about two minutes. On a GPU each separate operation is also a kernel launch,
# and compilation gains more: over more than 180 models, Ansel et al. (2024, "PyTorch 2",
# ASPLOS) measured a geometric-mean speed-up of 1.41x for training and 2.27x for inference on
# an A100. Compilation pays for runs of thousands of steps, not for a cell run once, and it is
# worth measuring model by model.
#
# ### Graph breaks
#
# TorchDynamo traces Python, but it cannot trace everything: when the code needs the *value*
# of a tensor to decide what to do (an `if` on a tensor, `.item()`, printing), the graph ends
# there, Python runs that line, and a new graph starts. These **graph breaks** cost fusion
# across them, and on a GPU each one waits for the GPU to finish. `torch._dynamo.explain`
# lists them:

# %%
explanation = torch._dynamo.explain(model)(batch[:, :-1])
print(f"the whole GPT: {explanation.graph_count} graphs, "
      f"{explanation.graph_break_count} graph breaks")
lines = {(Path(r.user_stack[-1].filename).name, r.user_stack[-1].lineno, r.user_stack[-1].line)
         for r in explanation.break_reasons}
for file, lineno, line in sorted(lines):
    print(f"  at {file}:{lineno}  {line}")
one_block = torch._dynamo.explain(blocks["Transformer block"])(x)
print(f"one block: {one_block.graph_count} graph, {one_block.graph_break_count} graph breaks")
torch._dynamo.reset()

# %% [markdown]
# The breaks are the course's own input check: `TokenEmbedding` reads the smallest and largest
# token to raise a clear error for a token outside the vocabulary, and reading a tensor's value
# ends the graph. It is a trade that the course makes on purpose (a clear error for a learner
# is worth a graph break), and the blocks, where the time goes, compile as one graph each. To
# see every break of a model, set `TORCH_LOGS="graph_breaks"` before running it.

# %% [markdown]
# ## 4. Memory
#
# ### Activation checkpointing
#
# The backward pass needs the activations of the forward pass: every block keeps its
# intermediate tensors until the backward pass has used them, so training memory grows with
# $B \times T \times$ layers, and at long contexts it is the activations, not the parameters,
# that fill a GPU. **Activation checkpointing** (Chen et al. 2016, "Training Deep Nets with
# Sublinear Memory Cost") keeps only each block's input, and recomputes the block's forward
# pass during the backward pass: the activation memory of one block instead of all, for about
# one more forward pass of compute. `tc.training.checkpoint_blocks(model)` turns it on for
# every block (it uses `torch.utils.checkpoint.checkpoint`); `TrainConfig(
# activation_checkpointing=True)` calls it. Measured on the GPT at $T = 512$:

# %%
long_batch = gpt_task(width=C, layers=4, block=512, seed=0).batches(8)(0).to(device)  # (8, 513)
plain = gpt_task(width=C, layers=4, block=512, seed=0).model.to(device)
recomputed = copy.deepcopy(plain)  # the same weights
print(f"checkpointed blocks: {tc.training.checkpoint_blocks(recomputed)}")
for m in (plain, recomputed):
    task.loss_fn(m, long_batch).backward()
gap = max((p.grad - q.grad).abs().max().item()
          for p, q in zip(plain.parameters(), recomputed.parameters(), strict=True))
print(f"the gradients of the two differ by at most {gap:.0e}")

# the cost, measured on the same GPT in a fresh process (memory that this one freed earlier
# would be reused unseen and hide part of the peak)
cost = scaling.checkpointing_costs([512], d_model=C, num_layers=4, batch=8)[0]
print(f"a training step on {cost.batch} x {cost.length} tokens: activations stored "
      f"{cost.plain_mib:.0f} MiB and {cost.plain_s * 1e3:.0f} ms; recomputed "
      f"{cost.checkpointed_mib:.0f} MiB and {cost.checkpointed_s * 1e3:.0f} ms")
print(f"checkpointing: {1 - cost.memory_ratio:.0%} less memory, {cost.time_ratio - 1:+.0%} time")

# %% [markdown]
# ### Gradient accumulation
#
# A batch too large for memory can still be the batch of an update: cut it into $k$
# micro-batches, run forward and backward on each, and let the gradients add up in `.grad`
# before the one optimizer step. Since the loss is a mean over the rows, each micro-batch's
# loss is weighted by its share of the rows (here $1/k$), and the sum of the gradients is the
# gradient of the whole batch's mean. `TrainConfig(accumulation_steps=k)` does it. The same
# three steps, batch 32, without and with 4 micro-batches of 8:

# %%
whole = train_gpt(3, batch=32, log_every=1, warmup_steps=1)
pieces = train_gpt(3, batch=32, log_every=1, warmup_steps=1, accumulation_steps=4)
print("losses, one batch of 32:    ", [f"{v:.6f}" for v in whole.loss])
print("losses, 4 micro-batches of 8:", [f"{v:.6f}" for v in pieces.loss])
gap = max(abs(u - v) for u, v in zip(whole.loss, pieces.loss, strict=True))
print(f"largest difference {gap:.1e}: rounding (sums in another order)")
assert gap < 1e-4

# %% [markdown]
# ## 5. Data-parallel training
#
# ### The all-reduce
#
# With $W$ processes, each holding a copy of the model, a step's batch of $B$ rows can be cut
# into $W$ shards of $B / W$ rows, one per process. Each process computes the gradient of the
# mean loss of its own shard; the mean of these $W$ gradients is the gradient of the whole
# batch (the shards are the same size); and if every process applies the same update to the
# same parameters, the copies stay identical. The mean is one **all-reduce**: every process
# gives a tensor, and every process gets back the sum of all of them (then divides by $W$).
#
# `torch.distributed` provides the collectives, over the `gloo` backend for CPU tensors and
# `nccl` for GPU tensors. `tfcourse.distributed.run_local_group(fn, W)` starts $W$ processes on
# this machine that form a `gloo` process group, runs `fn` in each and returns what each
# returned, so the notebook can watch two real processes compute the gradient of one batch:

# %%
def shard_gradient(rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)  # the same model on every rank
    net = nn.Linear(4, 1)
    r, W = dist.get_rank(), dist.get_world_size()
    shard = slice(r * len(rows) // W, (r + 1) * len(rows) // W)  # this rank's rows
    nn.functional.mse_loss(net(rows[shard]), targets[shard]).backward()
    gradient = net.weight.grad.clone()
    dist.all_reduce(net.weight.grad, op=dist.ReduceOp.SUM)  # every rank gets the sum
    net.weight.grad /= W
    return torch.stack([gradient, net.weight.grad])


rows, targets = torch.randn(8, 4), torch.randn(8, 1)
results = distributed.run_local_group(shard_gradient, 2, (rows, targets))
torch.manual_seed(0)
net = nn.Linear(4, 1)
nn.functional.mse_loss(net(rows), targets).backward()
for r, (own, averaged) in enumerate(results):
    print(f"rank {r}: gradient of its shard {own.numpy().round(3)}, after the all-reduce "
          f"{averaged.numpy().round(3)}")
print(f"one process, whole batch:              {net.weight.grad.numpy().round(3)}")
assert all(torch.allclose(averaged, net.weight.grad, atol=1e-6) for _, averaged in results)

# %% [markdown]
# ### DistributedDataParallel
#
# `torch.nn.parallel.DistributedDataParallel` (DDP; Li et al. 2020, "PyTorch Distributed:
# Experiences on Accelerating Data Parallel Training") does this for a whole model. It
# broadcasts rank 0's parameters when it wraps the model (every copy starts equal), and during
# the backward pass it all-reduces the gradients in buckets of about 25 MB as soon as each
# bucket's gradients are ready, so the communication overlaps the rest of the backward pass.
# After `loss.backward()`, every rank holds the averaged gradient, and the optimizer steps
# agree.
#
# `tc.Trainer` wraps the model in DDP by itself when it runs under `torchrun`, and gives each
# rank its own rows of the step's batch (`tc.training.shard_batch`: the step's batch is the same
# on every rank, since `batches(step)` is a function of the step, and rank $r$ takes its $r$-th
# contiguous slice); it averages the logged losses over the ranks, and only rank 0 prints and
# writes files.
#
# ### `torchrun`
#
# `torchrun --nproc_per_node=W script.py` starts $W$ copies of the script and tells each who it
# is through environment variables (`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
# `MASTER_PORT`); `tfcourse.distributed.init_from_env` reads them and joins the process group.
# `python -m tfcourse.train` is such a script: it trains a chapter's model (`--model gpt`,
# `vit` or `mamba`) with `--batch` rows per step over all processes. Two processes with 16 rows
# each against one process with all 32:

# %%
workdir = Path(tempfile.mkdtemp(prefix="chapter11-"))
# on the CPU, also on a one-GPU Colab runtime: two processes need two GPUs to use nccl
TRAIN = ["-m", "tfcourse.train", "--model", "gpt", "--steps", "30", "--batch", "32",
         "--width", "64", "--layers", "2", "--block", "64", "--warmup", "3", "--device", "cpu",
         "--quiet"]
# one thread per process: two processes share this machine's cores
env = {k: v for k, v in os.environ.items() if k not in distributed.TORCHRUN_VARIABLES}
env.update(TFCOURSE_THREADS="1", OMP_NUM_THREADS="1")


def launch(*args: str, wait: bool = True) -> subprocess.Popen:
    """Run ``python args`` as a separate program, as you would in a terminal."""
    process = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if wait:
        finish(process)
    return process


def finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(process.args[1:])} failed:\n{output[-3000:]}")


def losses(name: str) -> list[float]:
    return [r["loss"] for r in json.loads((workdir / name).read_text())["train"]]


TORCHRUN = ["-m", "torch.distributed.run"]  # the `torchrun` command, run by this Python
start = time.perf_counter()
launch(*TORCHRUN, "--standalone", "--nproc_per_node=2", *TRAIN,
       "--history", str(workdir / "two.json"))
two_s = time.perf_counter() - start
launch(*TRAIN, "--history", str(workdir / "one.json"))
one_s = time.perf_counter() - start - two_s
one, two = losses("one.json"), losses("two.json")
print(f"1 process x 32 rows: {one_s:.1f} s;  torchrun, 2 processes x 16 rows: {two_s:.1f} s "
      f"(both including start-up)")
print(f"largest relative difference of the 30 losses: "
      f"{max(abs(u - v) / u for u, v in zip(one, two, strict=True)):.1e}")

# %% [markdown]
# The two curves agree to rounding: float32 sums taken in another order, about $10^{-7}$ of the
# loss at the first step, grown by the training to $10^{-6}$ or so. Two processes on this
# 2-core machine are not faster than one: they share the same two cores that one process
# already uses with two threads, each step adds an all-reduce of every gradient, and each
# process runs its own Python and optimizer. `python -m tfcourse.bench scaling` times the
# training step of chapter 10's GPT on 8 x 256 tokens: 15.0 steps/s for one process with one
# thread, 23.8 with two threads, and 23.3 for two processes of one thread each with DDP (CPU,
# 2 cores, a shared machine: figures within 10% of each other are a tie). On $W$ GPUs each
# process has a whole device to itself, and the step's time falls by nearly $W$.
#
# ### Checkpoints that resume exactly
#
# A long run is interrupted: a machine fails, a job's time runs out. `--checkpoint PATH` makes
# rank 0 write the model, the optimizer, the step, the history and the random-number state of
# every rank; `--resume` makes every rank read it back. The same 2-process run, stopped at step
# 12 and started again with the same command:

# %%
checkpoint = workdir / "run.pt"
for extra in (["--stop-at", "12"], ["--resume"]):
    launch(*TORCHRUN, "--standalone", "--nproc_per_node=2", *TRAIN,
           "--checkpoint", str(checkpoint), "--history", str(workdir / "resumed.json"), *extra)
resumed = losses("resumed.json")
print(f"{len(resumed)} losses after the resume; equal to the uninterrupted run's bit for bit: "
      f"{resumed == two}")
assert resumed == two

# %% [markdown]
# ### Several machines
#
# On several machines, the same command runs once on each, with `--nnodes` (how many machines),
# `--node_rank` (which one this is), and a *rendezvous* endpoint where they meet (the address of
# one of them). Here the two "machines" are two launches on this one, meeting at a port of
# `127.0.0.1`, one process each:

# %%
port = 29400 + os.getpid() % 1000
nodes = [launch(*TORCHRUN, "--nnodes=2", f"--node_rank={node}", "--nproc_per_node=1",
                "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=ch11",
                *TRAIN, "--history", str(workdir / "nodes.json"), wait=False)
         for node in range(2)]
for node in nodes:
    finish(node)
print(f"two nodes of one process: largest relative difference from the 2-process run "
      f"{max(abs(u - v) / u for u, v in zip(losses('nodes.json'), two, strict=True)):.1e}")
fig, ax = plt.subplots(figsize=(6, 3.5))
steps = range(1, len(one) + 1)
ax.plot(steps, one, label="1 process, batch 32", lw=3, alpha=0.4)
ax.plot(steps, two, label="torchrun: 2 processes x 16", ls="--")
ax.plot(steps, losses("nodes.json"), label="2 nodes x 1 process x 16", ls=":")
ax.set(xlabel="step", ylabel="training loss", title="one training, three ways to run it")
ax.grid(True)
ax.legend()
plt.show()

# %% [markdown]
# On real machines, the endpoint is the first machine's address, every machine runs the same
# command with its own `--node_rank` (a cluster's scheduler, such as Slurm, usually provides
# these), and the GPUs use `nccl`, which moves gradients over NVLink inside a machine and over
# InfiniBand or Ethernet between machines.
#
# ### FSDP: when the model does not fit one device
#
# DDP keeps a whole copy of the model on every device: parameters, gradients and AdamW's two
# moments, 16 bytes per parameter in float32, so a 7-billion-parameter model needs 112 GB per
# GPU before a single activation. **Fully Sharded Data Parallel** (FSDP; Zhao et al. 2023,
# following ZeRO, Rajbhandari et al. 2020) shards all of it: each of $W$ ranks stores $1/W$ of
# every parameter, gathers a block's full parameters just before the block runs, frees them
# after, and reduce-scatters the gradients so that each rank keeps only its shard. Memory per
# device falls by about $W$; the price is more communication. In PyTorch it is
# `torch.distributed.fsdp.fully_shard`, applied to each block and then to the model:

# %%
def sharded_gpt() -> tuple[list[tuple[str, tuple[int, ...], tuple[int, ...]]], int, int]:
    from torch.distributed.fsdp import fully_shard

    tc.seed_everything(0)
    gpt = gpt_task(width=64, layers=2, block=64, seed=0)
    for block in gpt.model.decoder.layers:
        fully_shard(block)  # each block's parameters gathered when it runs, freed after
    fully_shard(gpt.model)  # the rest: embeddings, final norm, head
    gpt.loss_fn(gpt.model, gpt.batches(8)(0)).backward()
    shapes = [(name, tuple(p.shape), tuple(p.to_local().shape))  # DTensor: this rank's shard
              for name, p in list(gpt.model.named_parameters())[:3]]
    return (shapes, sum(p.numel() for p in gpt.model.parameters()),
            sum(p.to_local().numel() for p in gpt.model.parameters()))


ranks = distributed.run_local_group(sharded_gpt, 2)
for r, (_, full, stored) in enumerate(ranks):
    print(f"rank {r} stores {stored:,} of the model's {full:,} parameters")
for name, full, local in ranks[0][0]:
    print(f"  {name:40s} full {str(full):10s} on rank 0: {local}")

# %% [markdown]
# FSDP is what DDP becomes when the model does not fit: every model of this course fits one
# device many times over, so it trains with DDP.
#
# ## 6. Running the course's models on a GPU
#
# Everything in `tfcourse` takes its device from the tensors it is given, and the lessons pick
# the device with `tc.default_device()`: CUDA when there is a GPU, the CPU otherwise. On Colab:
#
# 1. open a chapter with the *Colab* button at the top of its page;
# 2. *Runtime → Change runtime type → GPU*, then *Runtime → Run all*: the first cell installs
#    `tfcourse`, keeping Colab's own torch;
# 3. train with `TrainConfig(precision="auto")`: bfloat16 on GPUs that have it (A100, L4,
#    H100), float32 elsewhere; on a T4, which has no bfloat16 units, `precision="fp16"` uses
#    its tensor cores with the GradScaler of section 2.
#
# To train on several GPUs of one machine, run `torchrun --standalone --nproc_per_node=<GPUs>
# -m tfcourse.train --model gpt ...`: each process takes the GPU of its `LOCAL_RANK` and the
# group uses `nccl`. The cell below trains the GPT of section 1 for a few seconds on this
# page's device in the precision `"auto"` picks, and says where its figures come from:

# %%
start = time.perf_counter()
history = train_gpt(40, precision="auto", log_every=10)
seconds = time.perf_counter() - start
precision_used = "bf16" if tc.runtime.has_native_bf16(device) else "fp32"
print(f"measured on {where}, precision {precision_used}: 40 steps in {seconds:.1f} s, "
      f"{history.last('examples_per_s'):,.0f} windows/s, final loss {history.loss[-1]:.3f}")

# %% [markdown]
# This page was built on the machine named in the cell's output: where that is a CPU, every
# figure of the chapter is a CPU figure, and on a GPU the same cells measure the GPU. On a
# GPU, expect the ranking of this chapter's techniques to change: bf16 autocast becomes the
# largest single speed-up (tensor cores), compilation matters more (a GPU's kernel launches
# are the bottleneck of small models), and DDP's 2 processes on 2 GPUs nearly halve a step.
#
# ## Summary
#
# - Measure first: `torch.profiler` splits a step into data, forward, backward and optimizer,
#   and each into operators; FLOPs over time, against the best matrix-product rate, says how
#   far from the machine's peak a model runs.
# - bfloat16 autocast keeps float32's range; float16 needs dynamic loss scaling
#   (`GradScaler`), or small gradients underflow to zero.
# - `torch.compile` fuses operations after a compilation of seconds to minutes; what it gains
#   depends on the model and the device, so measure it (little on this CPU, more on GPUs).
#   Graph breaks (reading a tensor's value in Python) cut the graph.
# - Activation checkpointing trades a forward pass of compute for most of the activation
#   memory; gradient accumulation gives a large batch's update from small micro-batches.
# - Data parallelism is an all-reduce of the gradients; `torchrun` starts the processes,
#   `DistributedDataParallel` averages, and the course's `Trainer` shards the data, logs on rank
#   0 and resumes exactly. FSDP shards the model itself when it does not fit one device.

# %%
shutil.rmtree(workdir)  # the runs' histories and checkpoint
print(f"lesson run time: {time.perf_counter() - lesson_start:.0f} s")
