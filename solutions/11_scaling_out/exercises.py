# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 11 exercises: scaling out
#
# Five graded exercises write by hand the pieces of PyTorch's machinery with which the chapter
# trains a model that outgrows one device: gradient accumulation, which trains on a batch too
# large for memory in several passes; loss scaling, which keeps float16 gradients from vanishing
# (what `torch.amp.GradScaler` does); the averaging of the gradients over the processes of a
# data-parallel run (what `DistributedDataParallel` does in the backward pass); the share of the
# dataset that each process trains on (what `DistributedSampler` gives it); and the rounding of
# float32 to bfloat16, the 16-bit format that needs no loss scaling.
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `accumulate_gradients`, a large batch's gradient in micro-batches | 3 |
# | 2 | `scaled_sgd_step`, an optimizer step with dynamic loss scaling | 3 |
# | 3 | `average_gradients`, the mean of the gradients over the ranks | 4 |
# | 4 | `shard_indices`, each rank's share of an epoch | 3 |
# | 5 | `round_to_bfloat16`, float32 rounded to bfloat16 with integer operations | 3 |
# | | **total** | **16** |
#
# The references are PyTorch's own: `torch.amp.GradScaler`, `torch.distributed.all_reduce` (which
# `DistributedDataParallel` calls), `torch.utils.data.DistributedSampler` and
# `Tensor.to(torch.bfloat16)`; and `tfcourse.Trainer`, which accumulates gradients, scales the
# loss and runs unchanged under `torchrun`. Exercise 3 runs in a real process group: its
# self-check and its hidden tests start two to four processes on this machine with
# `tfcourse.distributed.run_local_group`, each of which calls your function, as `torchrun`'s
# processes would.
#
# **How to work.** Write your code between the function's first lines and the end of its cell,
# replacing `raise NotImplementedError()`. Under each exercise, a *self-check* cell tests the main
# contract: run it, and when it fails, read the message, which names the most likely mistake.
# A second cell holds the *hidden tests*: when your notebook is graded they probe what the
# self-check does not (other shapes and dtypes, edge cases, gradients) and make sure the work is
# your own, so a call to a ready-made implementation (PyTorch's or `tfcourse`'s) earns no points.
# Each exercise says what you may use.
#
# Do not rename the functions or delete cells; if you delete a test cell it is put back and run
# when your notebook is graded. Grading runs every cell from the top in a fresh kernel, and a cell
# that runs longer than 20 seconds is stopped (a test cell stopped so scores zero). Before you
# submit, choose *Restart kernel and run all cells* and check that every self-check passes.
#
# Shapes and sizes use the course's letters: `B` the rows of a batch, `k` micro-batches, `W` the
# processes of a data-parallel run (the *world size*), `r` the rank of one of them, 0 … W − 1,
# `N` the examples of a dataset, and `S` the loss scale.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import tfcourse
import tfcourse.distributed

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "accumulate_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: gradient accumulation (3 points)
#
# A batch of $B$ rows whose activations do not fit in memory can still be trained on: cut it
# into $k$ **micro-batches**, run the forward and the backward pass of each in turn, and let
# PyTorch *add* each one's gradient into `.grad` (a backward pass accumulates into `.grad`; it
# does not overwrite it). Only one micro-batch's activations are alive at a time, because its
# backward pass frees them before the next forward pass. The optimizer then steps once, with the
# gradient of the whole batch: the step that one pass on the whole batch would take, to rounding
# (for a model that treats its rows independently, as the course's models do; batch
# normalisation, which mixes the rows, would differ).
#
# For that, each micro-batch's loss must be weighted. With a loss that is a mean over rows, the
# batch's loss is the mean of the rows' losses $\ell_i$, and micro-batch $j$ of $B_j$ rows, with
# its own mean loss $L_j$, holds the share $B_j / B$ of it:
#
# $$\begin{aligned}
# L_j &= \frac{1}{B_j} \sum_{i \in \text{part } j} \ell_i, \cr
# L &= \frac{1}{B} \sum_{i=1}^{B} \ell_i = \sum_{j=1}^{k} \frac{B_j}{B}\, L_j, \cr
# \nabla L &= \sum_{j=1}^{k} \nabla\Big(\frac{B_j}{B}\, L_j\Big).
# \end{aligned}$$
#
# So the backward pass of $\frac{B_j}{B} L_j$, for each $j$ in turn, leaves $\nabla L$ in
# `.grad`. When $k$ divides $B$ every share is $1/k$; when it does not, the parts differ in size:
# `torch.tensor_split(x, k)` makes the first $B \bmod k$ parts one row longer (10 rows in 3 parts
# are 4, 3 and 3 rows), and a weight of $1/k$ would count each row of the shorter parts more.
#
# ```
# inputs (B, …), targets (B, …) ─ tensor_split along the rows ─ k parts of B_j rows
# for j = 1 … k:   forward ─ L_j = loss_fn(model(x_j), y_j) ─ backward of (B_j / B) · L_j
#                  (adds into .grad; frees part j's activations before part j + 1)
# afterwards:      p.grad = ∇L for every parameter p;  return L = Σ_j (B_j / B) · L_j
# ```
#
# **Write** `accumulate_gradients(model, loss_fn, inputs, targets, micro_batches)`: `model` an
# `nn.Module` that treats the rows of its input independently; `loss_fn(outputs, targets)` a
# 0-dimensional mean over the rows it is given; `inputs` (B, …) and `targets` (B, …), rows along
# the first axis; `micro_batches` an int $k$, $1 \le k \le B$. Split `inputs` and `targets` along
# the first axis into $k$ consecutive parts, as `torch.tensor_split` does, and for each part run
# the forward pass and the backward pass of its weighted loss, before the next part's forward
# pass. Start from no gradient: whatever `.grad` held before the call is discarded
# (`model.zero_grad()`). Do not step: the parameters are unchanged. Afterwards every parameter's
# `.grad` is the gradient of the whole batch's mean loss. Return that loss, $L$, as a
# 0-dimensional tensor detached from the graph, in the dtype and on the device of the losses.
#
# - **Allowed:** `torch.tensor_split`, slicing, `model.zero_grad()`, `.backward()`,
#   `.detach()`, loops.
# - **Not allowed:** `tfcourse.training.shard_batch` and the training step of `tfcourse.Trainer`
#   (the hidden tests check).
# - **Pitfalls:** weight each part by its share $B_j / B$, not by $1/k$: they differ when $k$
#   does not divide $B$; without a weight the gradient is the sum of the parts' mean gradients,
#   $k$ times too large for equal parts; discard the old gradients once, before the first part,
#   not in the loop, which would leave the last part's gradient alone; run each part's backward
#   pass before the next part's forward pass: adding the parts' losses and calling `backward`
#   once gives the same numbers but keeps every part's activations alive, which is what
#   accumulation avoids; the loss returned is the weighted sum $\sum_j (B_j/B) L_j$, not the
#   plain mean of the $L_j$; return a tensor, detached (`.detach()`), not a float (`.item()`,
#   which on a GPU also waits for the device at every part).
#
# **Points:** self-check 1 (a small network, 10 rows in 3 micro-batches, stale gradients before
# the call), hidden tests 2 (one micro-batch, one row per micro-batch, 6 rows in 4 parts,
# float64, a loss over (B, T, C) rows, parameters with and without stale gradients, forward and
# backward part by part, the parameters unchanged, the loss detached, the `meta` device).

# %% nbgrader={"grade": false, "grade_id": "accumulate", "locked": false, "schema_version": 3, "solution": true, "task": false}
def accumulate_gradients(model: nn.Module, loss_fn, inputs: torch.Tensor, targets: torch.Tensor,
                         micro_batches: int) -> torch.Tensor:
    """Leave the gradient of the whole batch's mean loss in every parameter's .grad, computed in
    `micro_batches` parts of the rows, each weighted by its share; return that loss, detached."""
    ### BEGIN SOLUTION
    model.zero_grad(set_to_none=True)  # start from no gradient
    rows = inputs.shape[0]  # B
    total = None
    for x, y in zip(inputs.tensor_split(micro_batches), targets.tensor_split(micro_batches),
                    strict=True):  # k parts of B_j rows: (B_j, …)
        loss = loss_fn(model(x), y) * (x.shape[0] / rows)  # (B_j / B) · L_j
        loss.backward()  # adds into .grad and frees this part's activations
        total = loss.detach() if total is None else total + loss.detach()
    return total
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "accumulate_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (1 point).
import warnings

import torch
from torch import nn

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.training.shard_batch", "tfcourse.training.Trainer._train_step")
torch.manual_seed(11)
network = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))  # 4 features, 3 classes
inputs, labels = torch.randn(10, 4), torch.randint(3, (10,))  # B = 10 rows
parts = list(zip(inputs.tensor_split(3), labels.tensor_split(3), strict=True))  # 4, 3, 3 rows


def gradients_of(loss: torch.Tensor) -> torch.Tensor:
    """All the parameters' gradients of `loss`, flattened into one vector."""
    grads = torch.autograd.grad(loss, list(network.parameters()))
    return torch.cat([g.flatten() for g in grads])


whole = F.cross_entropy(network(inputs), labels)  # L, the mean over the 10 rows
want = gradients_of(whole)
part_losses = [F.cross_entropy(network(x), y) for x, y in parts]  # L_1, L_2, L_3
part_grads = [gradients_of(loss) for loss in part_losses]
stale = torch.ones_like(want)  # what .grad holds before the call
mistakes = {
    "each part is weighted by 1/k = 1/3, not by its share B_j / B: with 10 rows in parts of 4, "
    "3 and 3 the shares are 0.4, 0.3 and 0.3": sum(part_grads) / 3,
    "the parts' losses are not weighted: the gradient is the sum of the parts' gradients; "
    "weight part j by its share B_j / B": sum(part_grads),
    "this is the gradient of the last part alone: are the gradients discarded inside the loop? "
    "Discard them once, before the first part": part_grads[-1] * 0.3,
    "this is the last part's own gradient: the gradients are discarded inside the loop, and the "
    "last part is not weighted": part_grads[-1],
    "the gradients that .grad held before the call are still in it: discard them first "
    "(model.zero_grad())": want + stale,
    "the gradients that .grad held before the call are still in it, and each part is weighted "
    "1/k, not B_j / B: discard them first (model.zero_grad())": sum(part_grads) / 3 + stale,
}
for p in network.parameters():
    p.grad = torch.ones_like(p)  # stale gradients, as an earlier step leaves them
before = [p.detach().clone() for p in network.parameters()]
name = "accumulate_gradients(network, F.cross_entropy, inputs (10, 4), labels (10,), 3)"
with checks.forbid(*forbidden, task="Exercise 1"):
    got = accumulate_gradients(network, F.cross_entropy, inputs, labels, 3)
moved = [not torch.equal(p, b) for p, b in zip(network.parameters(), before, strict=True)]
assert not any(moved), (
    f"{name} changed the parameters: it computes the gradients only; the optimizer takes the "
    "step afterwards")
assert isinstance(got, torch.Tensor), (
    f"{name} returned a {type(got).__name__}: return the loss as a 0-dimensional tensor "
    "(loss.detach(), not loss.item())")
checks.expect_shape(got, (), name, hint="the whole batch's mean loss is one number")
shares = sum(loss * share for loss, share in zip(part_losses, (0.4, 0.3, 0.3), strict=True))
checks.expect_close(got, whole.detach(), f"the loss returned by {name}", mistakes={
    "this is the plain mean of the parts' losses: weight each by its share B_j / B, as the "
    "gradients": sum(part_losses).detach() / 3,
    "this is the sum of the parts' losses: weight each by its share B_j / B":
        sum(part_losses).detach(),
    "this is the last part's loss: add the parts' weighted losses": part_losses[-1].detach(),
    "this is the last part's weighted loss: add all the parts' weighted losses":
        (part_losses[-1] * 0.3).detach(),
})
assert abs(shares.item() - whole.item()) < 1e-5
missing = [n for n, p in network.named_parameters() if p.grad is None]
assert not missing, f"after {name}, the parameters {missing} have no gradient"
got_grads = torch.cat([p.grad.flatten() for p in network.parameters()])
checks.expect_close(got_grads, want, f"the gradients left in .grad by {name}", mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "accumulate_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (2 points) run when the notebook is graded. Here this cell only
# checks that accumulate_gradients runs.
import torch
import torch.nn.functional as F
from torch import nn

assert accumulate_gradients(nn.Linear(2, 1), F.mse_loss, torch.ones(4, 2), torch.ones(4, 1),
                            2).shape == ()
### BEGIN HIDDEN TESTS
import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import checks


class _Recorder:
    """Records the model's forward passes (their rows) and the backward passes through them."""

    def __init__(self, model):
        self.events = []
        self.handle = model.register_forward_hook(self.forward)

    def forward(self, module, args, output):
        self.events.append(("forward", args[0].shape[0]))
        if output.requires_grad:
            output.register_hook(lambda grad: self.events.append(("backward", None)))


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(111)
    blocked = ("tfcourse.training.shard_batch", "tfcourse.training.Trainer._train_step")

    def labels(rows, classes):
        return torch.randint(classes, (rows,), generator=gen)

    cases = [  # (label, rows B, micro-batches k, dtype, loss, targets, row shape)
        ("7 rows in 3 parts, float64, cross-entropy", 7, 3, torch.float64, F.cross_entropy,
         labels(7, 3), ()),
        ("5 rows in 1 part", 5, 1, torch.float32, F.cross_entropy, labels(5, 3), ()),
        ("5 rows in 5 parts of one row", 5, 5, torch.float64, F.cross_entropy, labels(5, 3), ()),
        ("6 rows in 4 parts, mean squared error", 6, 4, torch.float32, F.mse_loss,
         torch.randn(6, 3, generator=gen), ()),
        ("(B, T, C) = (5, 4, 5) in 2 parts, float64, mean squared error", 5, 2, torch.float64,
         F.mse_loss, torch.randn(5, 4, 3, dtype=torch.float64, generator=gen), (4,)),
        ("12 rows in 5 parts, float64, cross-entropy", 12, 5, torch.float64, F.cross_entropy,
         labels(12, 3), ()),
    ]
    for label, rows, parts, dtype, loss_fn, targets, middle in cases:
        model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(dtype)
        with torch.no_grad():  # random weights, whatever the dtype
            for parameter in model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=gen, dtype=dtype))
        inputs = torch.randn(rows, *middle, 5, generator=gen, dtype=dtype)
        targets = targets.to(dtype) if targets.is_floating_point() else targets
        reference = copy.deepcopy(model)
        expected = loss_fn(reference(inputs), targets)
        want = torch.autograd.grad(expected, list(reference.parameters()))
        stale = [torch.randn(p.shape, generator=gen, dtype=dtype) if i % 2 == 0 else None
                 for i, p in enumerate(model.parameters())]  # some stale, some None
        for p, g in zip(model.parameters(), stale, strict=True):
            p.grad = g
        before = [p.detach().clone() for p in model.parameters()]
        recorder = _Recorder(model)
        name = f"accumulate_gradients({label})"
        try:
            with checks.forbid(*blocked, task="Exercise 1"):
                result = accumulate_gradients(model, loss_fn, inputs, targets, parts)
        finally:
            recorder.handle.remove()
        assert isinstance(result, torch.Tensor), f"{name} returned a {type(result).__name__}"
        checks.expect_shape(result, (), name)
        assert not result.requires_grad, (
            f"{name} returned a loss attached to the graph: return loss.detach(), which keeps "
            "no part's graph alive")
        checks.expect_close(result, expected.detach(), f"the loss returned by {name}")
        for p, b in zip(model.parameters(), before, strict=True):
            assert torch.equal(p.detach(), b), f"{name} changed the parameters"
        for (n, p), w in zip(model.named_parameters(), want, strict=True):
            assert p.grad is not None, f"after {name}, {n} has no gradient"
            checks.expect_close(p.grad, w, f"the gradient of {n} after {name}")
        events = recorder.events
        forwards = sorted(size for kind, size in events if kind == "forward")
        split = sorted(len(x) for x in torch.arange(rows).tensor_split(parts))
        assert forwards == split, (
            f"{name} ran forward passes on {forwards} rows, expected {parts} parts of {split} "
            "rows (torch.tensor_split), one forward pass each")
        kinds = [kind for kind, _ in events]
        assert kinds == ["forward", "backward"] * parts, (
            f"{name} ran {' '.join(kinds)}: run each part's backward pass before the next "
            "part's forward pass, so that only one part's activations are alive at a time")

    with checks.forbid(*blocked, task="Exercise 1"):  # the device of the model and the data
        checks.expect_on_meta(
            lambda: accumulate_gradients(
                nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to("meta"),
                F.mse_loss, torch.empty(6, 3, device="meta"), torch.empty(6, 2, device="meta"),
                4),
            "accumulate_gradients(a model and data on the meta device)",
            "build the loss from the parts' losses (loss.detach() + ...), not from a tensor "
            "made on the default device")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "scaling_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: loss scaling by hand (3 points)
#
# Training with float16 (autocast with `dtype=torch.float16` on a GPU) halves the memory of the
# activations and runs on the fast 16-bit units, but float16 has a narrow range: its largest
# number is 65504, its smallest normal number $2^{-14} \approx 6.1 \cdot 10^{-5}$, and below that
# its subnormal numbers go down in steps of $2^{-24} \approx 6.0 \cdot 10^{-8}$: a number below
# half a step rounds to 0. Gradients are often that small: a gradient of $10^{-8}$ is 0 in
# float16, and a layer whose gradients all round to 0 stops learning.
#
# **Loss scaling** multiplies the loss by a large factor $S$ before the backward pass. By the
# chain rule every gradient is then $S$ times larger too, and
# $10^{-8} \cdot 65536 \approx 6.6 \cdot 10^{-4}$ is a float16 number. Before the optimizer step
# the gradients, which are kept in float32 as the parameters are, are divided by $S$ again. Too
# large a factor makes some gradients overflow to infinity, or NaN ($\infty - \infty$): that step
# is skipped, and $S$ is made smaller. `torch.amp.GradScaler` chooses $S$ as it goes, and counts
# the good steps since the scale last changed:
#
# - **unscale:** divide every parameter's gradient by $S$;
# - if **any** gradient of **any** parameter holds an inf or a NaN: skip the step (the
#   parameters do not change), multiply $S$ by `backoff_factor` (0.5), and set the count of good
#   steps back to 0;
# - otherwise: take the step, count one more good step, and when the count reaches
#   `growth_interval` (2000), multiply $S$ by `growth_factor` (2.0) and set the count back to 0:
#   after a long run without an overflow it tries a larger scale.
#
# With `growth_interval=3`:
#
# ```
# step   S      good steps   the gradients           stepped   S after   good steps after
#  1     1024   0            finite                  yes       1024      1
#  2     1024   1            an inf in one of them   no         512      0     backed off
#  3      512   0            finite                  yes        512      1
#  4      512   1            finite                  yes        512      2
#  5      512   2            finite                  yes       1024      0     3 good steps: grown
# ```
#
# **Write** `scaled_sgd_step(params, lr, scale, good_steps, growth_interval=2000,
# growth_factor=2.0, backoff_factor=0.5)`: `params` a list of floating-point leaf tensors (the
# parameters, which require gradients), whose `.grad` holds the gradient of the loss times
# `scale`, or is `None` (a parameter that the loss does not reach, which the step leaves alone);
# `lr`, `scale`, `growth_factor` and `backoff_factor` Python floats; `good_steps` and
# `growth_interval` ints. Unscale every gradient in place, so that afterwards `.grad` holds the
# gradient of the loss itself (as after `GradScaler.unscale_`); then, if every gradient is
# finite, take the SGD step $p \leftarrow p - \text{lr} \cdot g$ on every parameter, in place
# (under `torch.no_grad()`), with the unscaled $g$; and update the scale and the count as above.
# Return `(new_scale, new_good_steps, stepped)`: a float, an int, and a bool that is True when
# the parameters were updated.
#
# - **Allowed:** `torch.isfinite`, `torch.isinf`, `torch.isnan`, `.all()`, `.any()`, `bool`, `/=`
#   and the in-place methods (`div_`, `sub_`, `add_`), `torch.no_grad()`, loops, `all`, `any`.
# - **Not allowed:** `torch.amp.GradScaler` (its `unscale_`, `step` and `update`), and the
#   kernels it calls, `torch._amp_foreach_non_finite_check_and_unscale_` and
#   `torch._amp_update_scale_` (the hidden tests check).
# - **Pitfalls:** check every parameter's gradient before stepping any: one inf anywhere skips
#   the whole step; a NaN is an overflow too (`torch.isinf` misses it: `torch.isfinite` sees
#   both); step with the unscaled gradient $g / S$, not the scaled one; after an overflow, back
#   off **and** set the count to 0; the scale grows when the count reaches `growth_interval`,
#   not at every step, and the count starts again from 0; leave out the parameters whose `.grad`
#   is `None`; change the parameters in place (`p -= …` or `p.sub_(…)` under `torch.no_grad()`):
#   `p = p - …` makes a new tensor and leaves the model as it was; unscale `.grad` itself
#   (`p.grad /= scale`), not a copy.
#
# **Points:** self-check 1 (the five steps of the table, on two parameters), hidden tests 2
# (against `torch.amp.GradScaler` driving `torch.optim.SGD` over a dozen steps with infinities
# and NaNs in different parameters, the last one included, other growth and backoff factors and
# intervals, a parameter without gradient, float64 parameters, the gradients unscaled, the types
# returned).

# %% nbgrader={"grade": false, "grade_id": "scaling", "locked": false, "schema_version": 3, "solution": true, "task": false}
def scaled_sgd_step(params: list, lr: float, scale: float, good_steps: int,
                    growth_interval: int = 2000, growth_factor: float = 2.0,
                    backoff_factor: float = 0.5) -> tuple:
    """Unscale the gradients; step p -= lr * g unless one of them is inf or NaN; return
    (new_scale, new_good_steps, stepped), the scale backed off or grown as GradScaler does."""
    ### BEGIN SOLUTION
    grads = [p.grad for p in params if p.grad is not None]
    with torch.no_grad():
        for g in grads:
            g.div_(scale)  # in place: .grad now holds the true gradient
        if not all(bool(torch.isfinite(g).all()) for g in grads):  # inf or NaN anywhere
            return scale * backoff_factor, 0, False  # skip the step, back off
        for p in params:
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)  # p <- p - lr * g
    good_steps += 1
    if good_steps >= growth_interval:
        return scale * growth_factor, 0, True
    return scale, good_steps, True
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "scaling_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("torch.amp.GradScaler.unscale_", "torch.amp.GradScaler.step",
             "torch.amp.GradScaler.update", "torch._amp_foreach_non_finite_check_and_unscale_",
             "torch._amp_update_scale_")
noise = torch.Generator().manual_seed(12)
weight = torch.randn(3, 2, generator=noise).requires_grad_()
bias = torch.randn(2, generator=noise).requires_grad_()
lr = 0.1
steps = [  # (scale, good steps, an inf in the bias's gradient, the outcome of the table)
    (1024.0, 0, False, (1024.0, 1, True)),
    (1024.0, 1, True, (512.0, 0, False)),
    (512.0, 0, False, (512.0, 1, True)),
    (512.0, 1, False, (512.0, 2, True)),
    (512.0, 2, False, (1024.0, 0, True)),
]
for number, (scale, good, overflow, outcome) in enumerate(steps, start=1):
    true_grads = [torch.randn(p.shape, generator=noise) for p in (weight, bias)]
    weight.grad, bias.grad = (g * scale for g in true_grads)  # what backward leaves
    if overflow:
        bias.grad[1] = float("inf")  # the second parameter overflowed, the first did not
    before = [weight.detach().clone(), bias.detach().clone()]
    name = (f"step {number} of the table: scaled_sgd_step([weight, bias], lr={lr}, "
            f"scale={scale}, good_steps={good}, growth_interval=3)")
    with checks.forbid(*forbidden, task="Exercise 2"):
        got = scaled_sgd_step([weight, bias], lr, scale, good, growth_interval=3)
    assert isinstance(got, tuple) and len(got) == 3, (
        f"{name} returned {got!r}: return a tuple (new_scale, new_good_steps, stepped)")
    new_scale, new_good, stepped = got
    assert isinstance(stepped, bool), (
        f"{name}: stepped is a {type(stepped).__name__}, not a bool (bool(...) of a tensor)")
    moved = not (torch.equal(weight.detach(), before[0]) and torch.equal(bias.detach(), before[1]))
    if overflow:
        assert not moved and not stepped, (
            f"{name} stepped, but the bias's gradient holds an inf: look at every parameter's "
            "gradient before stepping any, and skip the step when one is not finite")
        assert new_scale == outcome[0], (
            f"{name} returned the scale {new_scale}, expected {outcome[0]}: after an overflow "
            "the scale is multiplied by backoff_factor (0.5)")
        assert new_good == 0, (
            f"{name} returned {new_good} good steps, expected 0: an overflow sets the count back "
            "to 0")
        continue
    assert stepped, f"{name} returned stepped=False, but every gradient is finite"
    for p, b, g, part in zip((weight, bias), before, true_grads, ("weight", "bias"),
                             strict=True):
        expected = b - lr * g
        checks.expect_close(p.detach(), expected, f"the {part} after {name}", mistakes={
            "the step used the scaled gradient: divide .grad by the scale first":
                b - lr * g * scale,
            "the parameters did not change: update them in place (p -= lr * p.grad, or "
            "p.sub_(...), under torch.no_grad()); p = p - ... makes a new tensor": b,
            "the step went uphill: p <- p - lr * g": b + lr * g,
        })
    assert (new_scale, new_good) == outcome[:2], (
        f"{name} returned (scale, good steps) = ({new_scale}, {new_good}), expected "
        f"{outcome[:2]}: "
        + ("when the count reaches growth_interval (3), the scale is multiplied by "
           "growth_factor (2.0) and the count starts again from 0" if good + 1 == 3 else
           "the scale grows only when the count of good steps reaches growth_interval, not at "
           "every step" if new_scale > scale else
           "a good step adds one to the count, and the scale stays"))

# %% nbgrader={"grade": true, "grade_id": "scaling_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (2 points) run when the notebook is graded. Here this cell only
# checks that scaled_sgd_step runs.
import torch

_p = torch.zeros(2, requires_grad=True)
_p.grad = torch.ones(2)
assert scaled_sgd_step([_p], 0.1, 2.0, 0)[2] is True
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _against_grad_scaler(label, shapes, dtype, lr, init_scale, growth_interval, growth_factor,
                         backoff_factor, overflows, steps, gen, first_good=0):
    """Drive torch.amp.GradScaler and scaled_sgd_step side by side over `steps` steps;
    overflows: step -> (parameter index, value) to plant in that step's gradient."""
    blocked = ("torch.amp.GradScaler.unscale_", "torch.amp.GradScaler.step",
               "torch.amp.GradScaler.update",
               "torch._amp_foreach_non_finite_check_and_unscale_", "torch._amp_update_scale_")
    values = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    ours = [v.clone().requires_grad_() for v in values]
    theirs = [v.clone().requires_grad_() for v in values]
    sgd = torch.optim.SGD(theirs, lr=lr)
    settings = {"init_scale": init_scale, "growth_factor": growth_factor,
                "backoff_factor": backoff_factor, "growth_interval": growth_interval}
    reference = torch.amp.GradScaler("cpu", **settings)
    reference.scale(torch.ones(()))  # creates the scale and the count
    if first_good:  # a run that has already counted good steps
        reference._growth_tracker.fill_(first_good)
    scale, good = float(init_scale), first_good
    for step in range(steps):
        true_grads = [torch.randn(s, generator=gen, dtype=dtype) if s != (1, 5) else None
                      for s in shapes]  # the parameter of shape (1, 5) gets no gradient
        scaled = [None if g is None else g * scale for g in true_grads]
        if step in overflows:
            index, value = overflows[step]
            scaled[index].view(-1)[step % scaled[index].numel()] = value
        for p, q, g in zip(ours, theirs, scaled, strict=True):
            p.grad = None if g is None else g.clone()
            q.grad = None if g is None else g.clone()
        name = (f"scaled_sgd_step at step {step} of {label} (scale={scale}, good_steps={good}, "
                f"growth_interval={growth_interval}, growth_factor={growth_factor}, "
                f"backoff_factor={backoff_factor}, {dtype})")
        with checks.forbid(*blocked, task="Exercise 2"):
            got = scaled_sgd_step(ours, lr, scale, good, growth_interval, growth_factor,
                                  backoff_factor)
        reference.step(sgd)
        reference.update()
        assert isinstance(got, tuple) and len(got) == 3, f"{name} returned {got!r}"
        new_scale, new_good, stepped = got
        assert isinstance(new_scale, float), f"{name}: the scale is a {type(new_scale).__name__}"
        assert isinstance(new_good, int) and not isinstance(new_good, bool), (
            f"{name}: the good steps are a {type(new_good).__name__}, not an int")
        assert isinstance(stepped, bool), f"{name}: stepped is a {type(stepped).__name__}"
        overflowed = step in overflows
        assert stepped is not overflowed, (
            f"{name} returned stepped={stepped}"
            + (f": the gradient of parameter {overflows[step][0]} holds {overflows[step][1]}"
               if overflowed else ": every gradient is finite"))
        assert new_scale == reference.get_scale(), (
            f"{name} returned the scale {new_scale}, expected {reference.get_scale()}")
        assert new_good == reference._get_growth_tracker(), (
            f"{name} returned {new_good} good steps, expected {reference._get_growth_tracker()}")
        for i, (mine, ref) in enumerate(zip(ours, theirs, strict=True)):
            checks.expect_close(mine.detach(), ref.detach(), f"parameter {i} after {name}")
            if mine.grad is None:
                assert ref.grad is None, f"{name} gave parameter {i} a gradient"
            elif not overflowed:
                checks.expect_close(mine.grad, ref.grad, f"the gradient of parameter {i} after "
                                    f"{name}", hint="unscale .grad itself, in place")
        scale, good = new_scale, new_good


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(112)
    inf, nan = float("inf"), float("nan")
    _against_grad_scaler(
        "a run of 12 steps", [(4, 3), (3,), (1, 5), (2, 2)], torch.float32, 0.05, 2.0**16, 3,
        2.0, 0.5, {2: (3, inf), 3: (0, -inf), 6: (1, nan), 10: (3, nan)}, 12, gen)
    _against_grad_scaler(
        "a run of 10 steps", [(5,), (2, 3), (1, 5)], torch.float64, 0.2, 256.0, 1, 4.0, 0.25,
        {1: (1, nan), 5: (0, inf), 6: (1, inf)}, 10, gen)
    _against_grad_scaler(
        "a run of 6 steps", [(3, 3), (3,)], torch.float32, 0.01, 2.0**20, 2, 8.0, 0.125,
        {0: (1, -inf), 4: (0, nan)}, 6, gen)
    _against_grad_scaler(
        "a run with the default interval of 2000, at 1998 good steps", [(2, 2), (1, 5)],
        torch.float32, 0.1, 1024.0, 2000, 2.0, 0.5, {3: (0, inf)}, 5, gen, first_good=1998)
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "average_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: averaging the gradients over the ranks (4 points)
#
# A data-parallel run starts $W$ copies of one program (`torchrun --nproc_per_node=W
# train.py`), the **ranks** $0 \dots W - 1$, each with a whole copy of the model. At every step
# each rank takes its own shard of the batch (different rows: Exercise 4), computes the gradient
# of its shard's mean loss, and then the ranks average their gradients. Every rank then holds
# the same gradient, that of the whole batch (with equal shards, the mean of the shards' mean
# losses is the batch's mean loss), and takes the same step: the copies of the model stay equal
# without ever being sent.
#
# The averaging is a **collective** operation:
# `torch.distributed.all_reduce(t, op=dist.ReduceOp.SUM)` replaces the tensor `t` of every rank,
# in place, by the sum of the $W$ ranks' tensors, and dividing by $W$ (`dist.get_world_size()`)
# makes it the mean. Every rank must call the same collectives in the same order, on tensors of
# the same shape: a rank that skips one leaves the others waiting for it. `DistributedDataParallel`
# does this for you, in buckets of gradients during the backward pass, so that the communication
# overlaps with the computation; here you write the plain version, which runs after the backward
# pass.
#
# ```
# rank 0: shard 0 ─ forward, backward ─ g₀ ─┐
# rank 1: shard 1 ─ forward, backward ─ g₁ ─┼─ all_reduce(SUM): g₀ + g₁ + g₂ on every rank ─ ÷ W
# rank 2: shard 2 ─ forward, backward ─ g₂ ─┘                          the same step on every rank
# ```
#
# **Write** `average_gradients(model)`, which every rank of a process group calls after its
# backward pass (`torch.distributed` is initialised, with the `gloo` backend, which reduces
# tensors on the CPU; every rank has a model of the same structure). Replace each parameter's
# `.grad` by its mean over the ranks, **in place**: `.grad` stays the same tensor, in the same
# memory, and holds the mean (no second copy of the gradients is made, and whatever refers to
# `.grad` sees the mean). Leave out the parameters whose `.grad` is `None` (parameters that the
# loss does not reach, the same on every rank). Return nothing.
#
# The self-check and the hidden tests start a real process group on this machine:
# `tfcourse.distributed.run_local_group(fn, W)` forks $W$ processes, which join a `gloo` group
# through a file and the loopback network interface, and each runs `fn` and sends back what it
# returns; there, each rank computes its gradients and calls your function. An error on a rank is
# raised in the notebook with its rank, and a group whose ranks wait for each other for more than
# a few seconds is stopped.
#
# - **Allowed:** `dist.all_reduce` (with any operation that `gloo` supports),
#   `dist.get_world_size()`, `dist.get_rank()`, the in-place methods (`div_`, `mul_`, `copy_`),
#   `/=`, `torch.no_grad()`, flattening the gradients into one buffer and back.
# - **Not allowed:** `tfcourse.distributed.all_reduce_mean` (the hidden tests check).
# - **Pitfalls:** `ReduceOp.SUM` adds: divide by the number of ranks, `dist.get_world_size()`,
#   not by the 2 of the self-check; `all_reduce` reduces the tensor you give it, in place: on a
#   copy (`p.grad.clone()`) it leaves `.grad` as it was, unless you copy the mean back;
#   `p.grad = p.grad / W` makes a new tensor: divide `.grad` itself (`p.grad /= W`,
#   `p.grad.div_(W)`); every parameter, not only the first; `None` gradients have nothing to
#   reduce; the same calls on every rank: no `if dist.get_rank() == 0:` around a collective.
#
# **Points:** self-check 1 (two ranks, a small network, each rank's gradient on its half of a
# batch, against the gradient of the whole batch), hidden tests 3 (three and four ranks, one
# rank, float64, a parameter without gradient, a 0-dimensional parameter, gradients that differ
# from rank to rank in every parameter, the gradients changed in place).

# %% nbgrader={"grade": false, "grade_id": "average", "locked": false, "schema_version": 3, "solution": true, "task": false}
def average_gradients(model: nn.Module) -> None:
    """Replace every parameter's .grad, in place, by its mean over the ranks of the process
    group (all_reduce SUM, then divide by the world size); skip the gradients that are None."""
    ### BEGIN SOLUTION
    world_size = dist.get_world_size()  # W
    for p in model.parameters():
        if p.grad is None:  # the loss does not reach it, on any rank
            continue
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # in place: the sum over the ranks
        p.grad.div_(world_size)  # in place: the mean
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "average_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (1 point).
import warnings

import torch
import torch.distributed
import torch.nn.functional as F
from torch import nn

import tfcourse.distributed
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.distributed.all_reduce_mean",)
torch.manual_seed(13)
network = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))  # the same on every rank
inputs, targets = torch.randn(8, 4), torch.randn(8, 2)  # B = 8 rows, a half for each rank


def rank_gradients() -> list:
    """On each rank: the gradient of its half of the batch, then average_gradients."""
    rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    model = network  # this process's own copy: the processes are forked
    x, y = inputs.tensor_split(size)[rank], targets.tensor_split(size)[rank]  # this rank's rows
    F.mse_loss(model(x), y).backward()
    with checks.forbid(*forbidden, task="Exercise 3"):
        average_gradients(model)
    return [p.grad for p in model.parameters()]


def flat(grads: list) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


try:
    ranks = tfcourse.distributed.run_local_group(rank_gradients, 2, timeout=10)
except TimeoutError:
    raise checks.ContractError(
        "average_gradients did not finish on both ranks in 10 s: a rank waits in a collective "
        "that the other rank never calls. Every rank must call all_reduce for the same "
        "parameters, in the same order (no `if dist.get_rank() == 0:` around it)") from None
whole = torch.autograd.grad(F.mse_loss(network(inputs), targets), list(network.parameters()))
want = flat(whole)
halves = [torch.autograd.grad(F.mse_loss(network(x), y), list(network.parameters()))
          for x, y in zip(inputs.tensor_split(2), targets.tensor_split(2), strict=True)]
for rank, grads in enumerate(ranks):
    name = f"the gradients of rank {rank} of 2 after average_gradients"
    assert all(g is not None for g in grads), f"{name}: some gradients are None"
    first = [halves[0][0] + halves[1][0]] + list(halves[rank][1:])
    checks.expect_close(flat(grads), want, name, mistakes={
        "they are the sum over the ranks, not the mean: all_reduce(SUM) adds; divide by "
        "dist.get_world_size()": 2 * want,
        "they are this rank's own gradients, unchanged: all_reduce works in place on the tensor "
        "it is given: on a copy (p.grad.clone()), .grad is not changed": flat(halves[rank]),
        "only the first parameter is averaged (and not divided): reduce every parameter's "
        "gradient": flat(first),
        "only the first parameter is averaged: reduce every parameter's gradient":
            flat([whole[0]] + list(halves[rank][1:])),
    })

# %% nbgrader={"grade": true, "grade_id": "average_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (3 points) run when the notebook is graded. Here this cell only
# checks that average_gradients runs, in a group of one process.
from torch import nn

import tfcourse.distributed

assert tfcourse.distributed.run_local_group(lambda: average_gradients(nn.Linear(2, 1)), 1,
                                            timeout=10) == [None]
### BEGIN HIDDEN TESTS
import warnings

import torch
import torch.distributed
from torch import nn

import tfcourse.distributed
from tfcourse import checks


class _Net(nn.Module):
    """Parameters of several shapes, a 0-d one, and one that the loss does not reach."""

    def __init__(self, dtype):
        super().__init__()
        self.first = nn.Linear(3, 4, dtype=dtype)
        self.unused = nn.Linear(2, 2, dtype=dtype)  # no gradient
        self.gain = nn.Parameter(torch.tensor(1.5, dtype=dtype))  # 0-dimensional
        self.second = nn.Linear(4, 2, bias=False, dtype=dtype)


def _rank_grads(model, rank):
    """Rank `rank`'s own gradients: different on every rank, in every parameter."""
    gen = torch.Generator().manual_seed(1130 + rank)
    return {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) * (rank + 1)
            for n, p in model.named_parameters() if not n.startswith("unused")}


def _on_each_rank(dtype):
    rank = torch.distributed.get_rank()
    model = _Net(dtype)
    own = _rank_grads(model, rank)
    for n, p in model.named_parameters():
        p.grad = own[n].clone() if n in own else None
    before = {n: (p.grad, p.grad.data_ptr()) for n, p in model.named_parameters()
              if p.grad is not None}
    with checks.forbid("tfcourse.distributed.all_reduce_mean", task="Exercise 3"):
        returned = average_gradients(model)
    kept = {n: p.grad is before[n][0] and p.grad.data_ptr() == before[n][1]
            for n, p in model.named_parameters() if n in before}
    return ({n: p.grad for n, p in model.named_parameters()}, kept, returned)


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    for size, dtype in [(3, torch.float64), (4, torch.float32), (1, torch.float64)]:
        label = f"average_gradients on {size} rank(s), {dtype}"
        try:
            results = tfcourse.distributed.run_local_group(_on_each_rank, size, (dtype,),
                                                           timeout=8)
        except TimeoutError:
            raise checks.ContractError(
                f"{label} did not finish: a rank waits in a collective that another rank never "
                "calls (the same calls on every rank, in the same order)") from None
        model = _Net(dtype)
        per_rank = [_rank_grads(model, r) for r in range(size)]
        for rank, (grads, kept, returned) in enumerate(results):
            assert returned is None, f"{label}: rank {rank} returned {returned!r}, not None"
            for n, g in grads.items():
                name = f"the gradient of {n} on rank {rank} after {label}"
                if n.startswith("unused"):
                    assert g is None, f"{name} is not None: leave the None gradients alone"
                    continue
                want = sum(own[n] for own in per_rank) / size
                checks.expect_close(g, want, name, hint=(
                    "the mean over the ranks: all_reduce(SUM), then divide by "
                    "dist.get_world_size()"))
            changed = [n for n, same in kept.items() if not same]
            assert not changed, (
                f"{label}: on rank {rank} the .grad of {changed} is a new tensor: write the mean "
                "into .grad itself, in place (p.grad /= W, p.grad.div_(W))")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "shard_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: each rank's share of an epoch (3 points)
#
# With $W$ ranks, each epoch's $N$ examples are divided among them: each rank trains on its own
# share, about $N / W$ examples, and together they see every example once. The ranks agree on
# this without talking to each other: every rank draws the **same** random order of the $N$
# examples, from a random generator seeded with the same numbers, and takes its share of that
# order. A seed that changes with the epoch gives each epoch a new order, and so gives each rank
# other examples; a generator of its own (`torch.Generator`) leaves the global random state
# (`torch.manual_seed`, which dropout's masks and the model's initialisation draw from) as it
# was. This is what `torch.utils.data.DistributedSampler` does, with `sampler.set_epoch(epoch)`
# called at the start of each epoch.
#
# ```
# N = 10, W = 3, epoch 0:  the order, the same on every rank:  7 2 9 0 4 1 8 5 3 6
#                          rank 0: 7 0 8 6    rank 1: 2 4 5    rank 2: 9 1 3
#                          (rank r takes the positions r, r + W, r + 2W, …: shares of 4, 3, 3)
# epoch 1:                 another order, so other shares
# ```
#
# **Write** `shard_indices(num_examples, rank, world_size, epoch, seed=0)`: ints, $N \ge 0$,
# $0 \le r < W$, `epoch` $\ge 0$, `seed` $\ge 0$. Return the indices of the examples that rank $r$
# trains on in epoch `epoch`, a 1-dimensional int64 tensor on the CPU, such that
#
# - over the ranks $0 \dots W - 1$ of one epoch, every index $0 \dots N - 1$ appears exactly once:
#   no example is left out or repeated;
# - the ranks' shares differ in size by one at most ($N < W$ leaves some of them empty);
# - the answer depends on the arguments only: the same call gives the same indices whatever the
#   global random state, and leaves that state as it found it;
# - the order changes from epoch to epoch and from seed to seed, and so does the set of examples
#   that a rank gets (the whole dataset is shuffled, not each rank's part of it).
#
# Any design that keeps these promises is right: the tests check the promises, not one
# particular order.
#
# - **Allowed:** `torch.Generator().manual_seed(...)`, `torch.randperm(n, generator=g)`,
#   slicing with a step, `torch.tensor_split`, arithmetic on the seed.
# - **Not allowed:** `DistributedSampler` (the hidden tests check).
# - **Pitfalls:** seed the generator with the seed and the epoch, never with the rank: ranks that
#   draw different orders share some examples and miss others; use a generator of your own:
#   `torch.randperm(n)` without one draws from the global generator and changes it, and so does
#   `torch.manual_seed(...)`, which also resets it for the whole program; the epoch must change
#   the seed; keep the $N \bmod W$ examples left over (`DistributedSampler` drops them with
#   `drop_last=True`, and repeats some with the default `drop_last=False`, to even the shares):
#   blocks of $N // W$ positions lose them, and positions $r, r + W, \dots$ or
#   `torch.tensor_split(order, W)[r]` keep them.
#
# **Points:** self-check 1 ($N = 10$, $W = 3$, two epochs), hidden tests 2 (other $N$ and $W$,
# $N < W$, $N = 0$, $W = 1$, the global random state, the seed, the epoch, the examples of a rank,
# the dtype, a large $N$).

# %% nbgrader={"grade": false, "grade_id": "shard", "locked": false, "schema_version": 3, "solution": true, "task": false}
def shard_indices(num_examples: int, rank: int, world_size: int, epoch: int,
                  seed: int = 0) -> torch.Tensor:
    """The indices of the examples of rank `rank` of `world_size` in epoch `epoch`: a shuffle of
    range(num_examples) that every rank draws alike from (seed, epoch), positions rank, rank + W,
    …"""
    ### BEGIN SOLUTION
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # the same on every rank
    order = torch.randperm(num_examples, generator=generator)  # (N,) int64
    return order[rank::world_size]  # shares of ⌈N / W⌉ or ⌊N / W⌋
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "shard_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("torch.utils.data.DistributedSampler.__iter__",)


def shards(epoch: int) -> list:
    with checks.forbid(*forbidden, task="Exercise 4"):
        return [shard_indices(10, rank, 3, epoch) for rank in range(3)]


torch.manual_seed(0)
epoch0 = shards(0)
for rank, got in enumerate(epoch0):
    name = f"shard_indices(10, rank={rank}, world_size=3, epoch=0)"
    assert isinstance(got, torch.Tensor), (
        f"{name} is a {type(got).__name__}: return a tensor (torch.randperm gives one)")
    assert got.ndim == 1 and got.dtype == torch.int64, (
        f"{name} is a {got.ndim}-dimensional {got.dtype} tensor: return a 1-dimensional int64 "
        "tensor of indices")
every = torch.cat(epoch0).tolist()
assert len(every) == len(set(every)), (
    f"the shards of epoch 0 are {[s.tolist() for s in epoch0]}: some examples are on two ranks. "
    "Every rank must draw the same order: seed the generator with the seed and the epoch, not "
    "with the rank, and do not draw from the global generator (torch.randperm(n) without "
    "generator=), which gives each call another order")
assert sorted(every) == list(range(10)), (
    f"the shards of epoch 0 are {[s.tolist() for s in epoch0]}: the examples "
    f"{sorted(set(range(10)) - set(every))} are on no rank. Keep the N mod W examples left over: "
    "take the positions rank, rank + W, … of the order (order[rank::world_size]), not blocks of "
    "N // W positions")
sizes = [len(s) for s in epoch0]
assert max(sizes) - min(sizes) <= 1, (
    f"the shards of epoch 0 have {sizes} examples: the shares differ by one at most (4, 3, 3)")
torch.manual_seed(1)  # another global random state: the same answer
again = shards(0)
assert all(torch.equal(a, b) for a, b in zip(epoch0, again, strict=True)), (
    "shard_indices(10, rank, 3, epoch=0) gives another answer when called again: draw the order "
    "from a torch.Generator of your own, seeded with the seed and the epoch, not from the "
    "global generator")
epoch1 = shards(1)
assert not all(torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True)), (
    "epochs 0 and 1 give the same shards: make the epoch change the seed of the generator, so "
    "that every epoch has a new order")

# %% nbgrader={"grade": true, "grade_id": "shard_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (2 points) run when the notebook is graded. Here this cell only
# checks that shard_indices runs.
import torch

assert isinstance(shard_indices(4, 0, 2, 0), torch.Tensor)
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _shards(n, size, epoch, seed):
    return [shard_indices(n, rank, size, epoch, seed) for rank in range(size)]


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    with checks.forbid("torch.utils.data.DistributedSampler.__iter__", task="Exercise 4"):
        return _contract()


def _contract() -> bool:
    for n, size in [(10, 3), (7, 7), (3, 5), (0, 2), (1, 1), (17, 1), (100, 8), (1001, 4),
                    (64, 16), (2, 3)]:
        for epoch, seed in [(0, 0), (1, 0), (5, 12345), (2, 7)]:
            label = f"shard_indices({n}, rank, world_size={size}, epoch={epoch}, seed={seed})"
            state = torch.random.get_rng_state()
            got = _shards(n, size, epoch, seed)
            assert torch.equal(torch.random.get_rng_state(), state), (
                f"{label} changed the global random state: draw from a torch.Generator of your "
                "own (no torch.manual_seed, no torch.randperm without generator=)")
            for rank, shard in enumerate(got):
                assert isinstance(shard, torch.Tensor) and shard.ndim == 1, (
                    f"{label}, rank {rank}: not a 1-dimensional tensor")
                assert shard.dtype == torch.int64, f"{label}, rank {rank}: dtype {shard.dtype}"
                assert shard.device.type == "cpu", f"{label}, rank {rank}: on {shard.device}"
            every = torch.cat(got).tolist()
            assert sorted(every) == list(range(n)), (
                f"{label}: over the ranks the indices are not 0 … {n - 1} once each")
            sizes = [len(s) for s in got]
            assert max(sizes) - min(sizes) <= 1, f"{label}: shares of {sizes} examples"
            torch.manual_seed(epoch + 99)
            again = _shards(n, size, epoch, seed)
            assert all(torch.equal(a, b) for a, b in zip(got, again, strict=True)), (
                f"{label} is not the same when called again")

    def order(epoch, seed, n=60, size=3):
        return torch.cat(_shards(n, size, epoch, seed))

    for a, b, what in [((0, 0), (1, 0), "epochs 0 and 1"), ((1, 0), (2, 0), "epochs 1 and 2"),
                       ((4, 3), (5, 3), "epochs 4 and 5 with seed 3"),
                       ((3, 0), (3, 1), "seeds 0 and 1 in epoch 3"),
                       ((0, 5), (0, 6), "seeds 5 and 6 in epoch 0")]:
        assert not torch.equal(order(*a), order(*b)), f"{what} give the same order of 60 examples"
    for rank in range(3):  # the examples of a rank change from epoch to epoch
        first, second = (set(shard_indices(60, rank, 3, e).tolist()) for e in (0, 1))
        assert first != second, (
            f"rank {rank} of 3 trains on the same 20 of 60 examples in epochs 0 and 1: shuffle "
            "the whole dataset and then take the rank's share, not the rank's part of it")
    big = _shards(100_003, 3, 2, 1)
    assert sorted(torch.cat(big).tolist()) == list(range(100_003)), "N = 100003, W = 3"
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "bfloat16_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 5: rounding to bfloat16, bit by bit (3 points)
#
# **bfloat16** ("brain floating point") is the 16-bit format in which most large models are
# trained today, usually under `torch.autocast(device, dtype=torch.bfloat16)`, and it needs no
# loss scaling: it is float32 with the last 16 bits cut off. A float32 number has a sign bit, 8
# bits of exponent and 23 bits of mantissa; bfloat16 keeps the sign, all 8 bits of exponent, and
# 7 bits of mantissa:
#
# ```
# float32    s eeeeeeee mmmmmmm mmmmmmmmmmmmmmmm    1 + 8 + 23 bits
# bfloat16   s eeeeeeee mmmmmmm                     1 + 8 + 7 bits: the top 16 bits of float32
# float16    s eeeee mmmmmmmmmm                     1 + 5 + 10 bits
# ```
#
# With float32's exponent, bfloat16 has float32's range: up to about $3.39 \cdot 10^{38}$ and
# down to $2^{-133} \approx 9.2 \cdot 10^{-41}$, its smallest subnormal number, so a gradient of
# $10^{-8}$ is no problem (float16 ends at 65504 and $6.0 \cdot 10^{-8}$: Exercise 2). It pays in
# precision: 8 significant bits (the 7 stored and the leading 1), so that between 1 and 2 the
# numbers are $2^{-7} \approx 0.0078$ apart, and rounding moves a number by up to $2^{-8}
# \approx 0.4\,\%$ of it.
#
# **Rounding to nearest, ties to even.** The 16 bits cut off are compared with half of the last
# kept bit, `0x8000`: below it the number rounds down (the kept bits as they are), above it up
# (one more in the kept bits; a carry may run into the exponent, which is right: the float32
# just below 2 rounds to 2, and the largest float32 numbers round to infinity, as PyTorch's
# conversion does); at exactly half, a **tie**, to the neighbour whose last kept bit is 0, the
# even one, so that ties do not drift upward on average. With 8 significant bits, $1 + 2^{-8}$
# is a tie between 1 and $1 + 2^{-7}$ and rounds to 1; $1 + 3 \cdot 2^{-8}$ is a tie between
# $1 + 2^{-7}$ and $1 + 2^{-6}$ and rounds to $1 + 2^{-6}$.
#
# Work on the bits: `x.view(torch.int32)` reads the 32 bits of each number as an int32, without
# converting anything (1.0 is `0x3F800000` = 1065353216), and `.view(torch.float32)` reads them
# back. Rounding to bfloat16 is then rounding this integer to a multiple of $2^{16}$ =
# `0x10000`: add a number that carries into bit 16 exactly when the rule says up, then clear
# the 16 low bits (`& -65536`, which is `0xFFFF0000` as an int32). The sign bit is the top bit
# of the int32, and in two's complement an addition and a mask act on the bits in the same way
# whatever the sign, so this works for negative numbers too.
#
# **Write** `round_to_bfloat16(x)`: `x` a float32 tensor of any shape, on any device. Return a
# float32 tensor of its shape, on its device, that holds `x` rounded to the nearest bfloat16
# number, ties to even: bit for bit `x.to(torch.bfloat16).to(torch.float32)`, for every finite and
# infinite number (infinities stay infinite, and the largest finite numbers become infinite), and
# a NaN where `x` is NaN. Do not change `x`.
#
# - **Allowed:** `x.view(torch.int32)`, `.view(torch.float32)`, `+`, `-`, `&`, `|`, `>>`, `<<`,
#   integer constants, `torch.where`, `torch.isnan`; any arithmetic on float32 and float64.
# - **Not allowed:** making a bfloat16 tensor, in any way (`.to(torch.bfloat16)`,
#   `.bfloat16()`, `.type(...)`, `.view(torch.bfloat16)`, `torch.autocast`: the hidden tests
#   check every operation).
# - **Pitfalls:** `view`, not `to`: `x.to(torch.int32)` converts the values (1.5 becomes 1), where
#   `x.view(torch.int32)` keeps the bits; round, do not truncate: clearing the 16 low bits alone
#   rounds toward zero; ties go to even, not away from zero: adding `0x8000` rounds every tie
#   up; the last kept bit is bit 16, `(bits >> 16) & 1`, not bit 15; a NaN must stay NaN: a NaN
#   whose mantissa bits are all ones carries into the sign bit and comes out as $-0$; the result
#   is float32: view the integer back.
#
# **Points:** self-check 1 (a dozen numbers around ties, negative numbers, large and small),
# hidden tests 2 (random bit patterns, subnormal numbers, $\pm 0$, $\pm\infty$, the largest
# float32 numbers, NaNs with any bits, shapes with no or three axes, an empty tensor, the input
# unchanged, the `meta` device).

# %% nbgrader={"grade": false, "grade_id": "bfloat16", "locked": false, "schema_version": 3, "solution": true, "task": false}
def round_to_bfloat16(x: torch.Tensor) -> torch.Tensor:
    """float32 -> float32: x rounded to the nearest bfloat16 number (its top 16 bits), ties to
    even, with integer operations on its bits; NaN stays NaN."""
    ### BEGIN SOLUTION
    bits = x.view(torch.int32)  # the same 32 bits, read as an integer
    last_kept = (bits >> 16) & 1  # bit 16, the lowest bit that bfloat16 keeps
    rounded = (bits + (0x7FFF + last_kept)) & -65536  # carries into bit 16 above half, or at a
    # tie when the last kept bit is 1 (which makes it even); then the 16 low bits are cleared
    return torch.where(torch.isnan(x), x, rounded.view(torch.float32))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "bfloat16_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 5 (1 point).
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points


class NoBfloat16(TorchDispatchMode):
    """Stops every PyTorch operation that makes a bfloat16 tensor."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16
               for t in (out if isinstance(out, tuple | list) else [out])):
            raise checks.ContractError(
                f"Exercise 5 asks you to round with integer operations on the bits of float32; "
                f"making a bfloat16 tensor ({func}) does not count")
        return out


values = torch.tensor([
    1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -(1 + 3 * 2**-8), 3.14159265, -2.71828183,
    1e-3, 65504.0, 1e-8, 3.0e38, -1.7e-39,
])
want = values.to(torch.bfloat16).to(torch.float32)
bits = values.view(torch.int32)
mistakes = {
    "the numbers are truncated, not rounded: clearing the 16 low bits alone rounds toward zero; "
    "add a number that carries into bit 16 when the rule says up, first":
        (bits & -65536).view(torch.float32),
    "ties are rounded away from zero (as adding 0x8000 does, or 0x7FFF plus bit 15): at a tie, "
    "round to the neighbour whose last kept bit, bit 16, is 0":
        ((bits + 0x8000) & -65536).view(torch.float32),
    "ties are rounded toward zero (adding 0x7FFF): at a tie, round to the neighbour whose last "
    "kept bit, bit 16, is 0; add 0x7FFF + that bit": ((bits + 0x7FFF) & -65536).view(
        torch.float32),
    "this is float16, not bfloat16: bfloat16 keeps float32's 8 bits of exponent":
        values.half().float(),
}
name = "round_to_bfloat16(twelve float32 numbers)"
with NoBfloat16(), checks.forbid("torch.Tensor.bfloat16", task="Exercise 5"):
    got = round_to_bfloat16(values.clone())
checks.expect_shape(got, (12,), name)
assert got.dtype == torch.float32, (
    f"{name} has dtype {got.dtype}: view the integer bits back as float32 "
    "(.view(torch.float32))")
same = got.view(torch.int32) == want.view(torch.int32)
if not same.all():
    for mistake, wrong in mistakes.items():
        if torch.equal(got.view(torch.int32), wrong.view(torch.int32)):
            raise checks.ContractError(f"{name} differs from PyTorch's bfloat16: {mistake}")
    i = int((~same).nonzero()[0])
    raise checks.ContractError(
        f"{name}: {values[i].item()!r} became {got[i].item()!r}, expected {want[i].item()!r} "
        f"(bits 0x{got.view(torch.int32)[i].item() & 0xFFFFFFFF:08X}, expected "
        f"0x{want.view(torch.int32)[i].item() & 0xFFFFFFFF:08X}): round the integer of the bits "
        "to a multiple of 0x10000, to nearest, ties to even (x.view(torch.int32), not "
        "x.to(torch.int32))")

# %% nbgrader={"grade": true, "grade_id": "bfloat16_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 5 (2 points) run when the notebook is graded. Here this cell only
# checks that round_to_bfloat16 runs.
import torch

assert round_to_bfloat16(torch.ones(3)).shape == (3,)
### BEGIN HIDDEN TESTS
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tfcourse import checks


class _NoHalfPrecision(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if kwargs.get("dtype") is torch.bfloat16:
            raise checks.ContractError(f"Exercise 5: making a bfloat16 tensor ({func}) does "
                                       "not count")
        out = func(*args, **kwargs)
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16
               for t in (out if isinstance(out, tuple | list) else [out])):
            raise checks.ContractError(f"Exercise 5: making a bfloat16 tensor ({func}) does "
                                       "not count")
        return out


def _from_bits(values):
    return torch.tensor(values, dtype=torch.int64).to(torch.int32).view(torch.float32)


def _check(x, label):
    given = x.clone()
    with _NoHalfPrecision(), checks.forbid("torch.Tensor.bfloat16", task="Exercise 5"):
        got = round_to_bfloat16(x)
    name = f"round_to_bfloat16({label})"
    assert torch.equal(x.view(torch.int32), given.view(torch.int32)), f"{name} changed x"
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32, (
        f"{name} is not a float32 tensor")
    checks.expect_shape(got, x.shape, name)
    want = x.to(torch.bfloat16).to(torch.float32)
    nan = torch.isnan(x)
    assert torch.equal(torch.isnan(got), nan), (
        f"{name}: a NaN became a number, or a number a NaN: keep NaN where x is NaN")
    got_bits, want_bits = got.view(torch.int32)[~nan], want.view(torch.int32)[~nan]
    wrong = (got_bits != want_bits).nonzero().flatten()
    if len(wrong):
        i = int(wrong[0])
        raise checks.ContractError(
            f"{name}: {x[~nan][i].item()!r} became {got[~nan][i].item()!r}, expected "
            f"{want[~nan][i].item()!r} ({len(wrong)} of {len(got_bits)} numbers differ)")


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(115)
    patterns = torch.randint(-2**31, 2**31, (200_000,), generator=gen, dtype=torch.int64)
    _check(patterns.to(torch.int32).view(torch.float32), "200000 random bit patterns, NaNs too")
    def field(low, high):
        return torch.randint(low, high, (4000,), generator=gen, dtype=torch.int64)

    # exactly half of the last kept bit, with that bit 0 or 1, any sign, exponent and mantissa
    ties = (field(0, 2) << 31) | (field(1, 255) << 23) | (field(0, 64) << 17) \
        | (field(0, 2) << 16) | 0x8000
    _check(_from_bits(ties.tolist()), "4000 ties")
    _check(_from_bits([0x00000001, 0x00008000, 0x00018000, 0x0000FFFF, 0x007FFFFF, 0x80008001,
                       0x807F8000, 0x00800000, 0x80000001]), "subnormal numbers")
    _check(torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 3.4028235e38, -3.4028235e38,
                         3.3961776e38, 3.3961778e38, 1.1754944e-38]),
           "zeros, infinities and the largest and smallest normal numbers")
    _check(_from_bits([0x7FFFFFFF, 0xFFFFFFFF, 0x7FFF8000, 0x7FC00000, 0x7F800001, 0xFFC00001,
                       0x7FFF7FFF]), "NaNs with all kinds of bits")
    _check(torch.tensor(1 + 2**-8 + 2**-9), "a 0-dimensional tensor")
    _check(torch.randn(2, 3, 4, generator=gen) * 1000, "(2, 3, 4)")
    _check(torch.empty(0, 3), "an empty (0, 3) tensor")
    with _NoHalfPrecision(), checks.forbid("torch.Tensor.bfloat16", task="Exercise 5"):
        checks.expect_on_meta(lambda: round_to_bfloat16(torch.empty(4, 5, device="meta")),
                              "round_to_bfloat16(x (4, 5) on the meta device)",
                              "make new tensors on the device of x, or build the result from x")
    return True


assert _hidden_tests()
### END HIDDEN TESTS
