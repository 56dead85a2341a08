# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 8 exercises: state spaces and Mamba
#
# Five graded exercises write the parts of a Mamba layer (Gu and Dao, 2023, "Mamba: Linear-Time
# Sequence Modeling with Selective State Spaces", arXiv:2312.00752) in the order of the lesson:
# the discretisation that turns a continuous state space model into a recurrence, the step sizes
# and matrices that a selective SSM computes from its input, the selective scan written as a
# loop, the same kind of recurrence computed in a logarithmic number of rounds, and one step of
# decoding with a state whose size does not grow with the text.
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `discretize`, the zero-order hold of a diagonal SSM | 3 |
# | 2 | `ssm_parameters`, Δ, A, B and C of a selective SSM | 3 |
# | 3 | `selective_scan`, the selective SSM as a loop over positions | 4 |
# | 4 | `linear_recurrence_scan`, a parallel scan | 4 |
# | 5 | `mamba_step`, one decoding step of a Mamba block | 4 |
# | | **total** | **18** |
#
# The reference implementation is `tfcourse.ssm` (`discretize`, `selective_scan_sequential`,
# `selective_scan_parallel`, `selective_scan_step`) and `tfcourse.mamba` (`MambaMixer`, the
# block of the paper's Figure 3); the exercises write its parts yourself, on small tensors and
# untrained blocks.
#
# **How to work.** Write your code between the function's first lines and the end of its cell,
# replacing `raise NotImplementedError()`. Under each exercise, a *self-check* cell tests the main
# contract: run it, and when it fails, read the message, which names the most likely mistake.
# A second cell holds the *hidden tests*: when your notebook is graded they probe what the
# self-check does not (other shapes and dtypes, edge cases, gradients) and make sure the work is
# your own, so a call to a ready-made implementation (`tfcourse`'s) earns no points. Each
# exercise says what you may use.
#
# Do not rename the functions or delete cells; if you delete a test cell it is put back and run
# when your notebook is graded. Grading runs every cell from the top in a fresh kernel, and a cell
# that runs longer than 20 seconds is stopped (a test cell stopped so scores zero). Before you
# submit, choose *Restart kernel and run all cells* and check that every self-check passes.
#
# Shapes use the course's letters: `B` batch, `T` positions, `Cᵢ` channels of the SSM (a Mamba
# block's inner width, `d_inner` in code), `N` size of the state, `R` rank of Δ's projection,
# `K` taps of the block's convolution, `C` model width. The paper writes $L$ for the sequence
# length and $D$ for the channels of the SSM. Sequences are batch-first, position second,
# (B, T, Cᵢ), as in `tfcourse.ssm`; only the convolution's state is channels-first,
# (B, Cᵢ, K − 1), as `nn.Conv1d` lays out its input. In equations $B$ and $C$ are the SSM's
# matrices, as in the paper; in shape tuples they are the batch and the model width.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
import torch.nn.functional as F
from torch import nn

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "discretize_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: the zero-order hold (3 points)
#
# A state space model maps an input signal $x(t)$ to an output $y(t)$ through a state $h(t)$ of
# $N$ numbers (section 2, Eq. 1a and 1b):
#
# $$h'(t) = A\,h(t) + B\,x(t), \qquad y(t) = C\,h(t).$$
#
# A sequence model reads samples, not a signal. The **zero-order hold** holds the input constant
# over each step of length $\Delta$; then the equation can be solved exactly over the step,
# $h(t + \Delta) = e^{\Delta A} h(t) + \int_0^{\Delta} e^{sA}\,ds\; B\,x$, which is a recurrence
# over positions, $h_t = \bar A\, h_{t-1} + \bar B\, x_t$ (Eq. 2a), with (Eq. 4)
#
# $$\bar A = \exp(\Delta A), \qquad \bar B = (\Delta A)^{-1}\big(\exp(\Delta A) - I\big)
# \cdot \Delta B.$$
#
# Mamba, as S4D before it, gives each channel $c$ its own SSM with a **diagonal** $A$, stored as
# the (Cᵢ, N) matrix of the diagonals: the exponential, the inverse and the products are then
# taken entry by entry. Each channel has its own step $\Delta_c$, and $B$, one number per state
# entry, is shared by the channels:
#
# $$\bar A_{c,n} = e^{\Delta_c A_{c,n}}, \qquad
# \bar B_{c,n} = \frac{e^{\Delta_c A_{c,n}} - 1}{\Delta_c A_{c,n}}\; \Delta_c B_n.$$
#
# ```
# delta (..., Cᵢ) ─ [..., :, None] ─┐
#                                   ├─ ΔA (..., Cᵢ, N) ─ exp ─ Ā
# A (Cᵢ, N) ────────────────────────┘
# B (..., N) ─ [..., None, :] ─ ΔB (..., Cᵢ, N) ─ × (e^{ΔA} − 1)/(ΔA) ─ B̄
# ```
#
# **Write** `discretize(delta, A, B)`: `delta` (..., Cᵢ), positive step sizes; `A` (Cᵢ, N), the
# diagonals, negative; `B` (..., N), with the same leading dimensions as `delta`, whatever they
# are: none for a time-invariant SSM (one step per channel), (B, T) for a selective one (one step
# per position). All three share one floating dtype. Return the pair `(A_bar, B_bar)`, each
# (..., Cᵢ, N), in that dtype, through which gradients flow to the three inputs. Do not change
# the inputs.
#
# - **Allowed:** `torch.exp`, `torch.expm1`, indexing with `None` (or `unsqueeze`),
#   broadcasting, `*`, `/`.
# - **Not allowed:** `tfcourse.discretize` (the hidden tests check).
# - **Pitfalls:** $\bar A$ is $\exp(\Delta A)$: not $\exp(A)$, not $\Delta A$, and not
#   $1 + \Delta A$ (Euler's first-order step); $\bar B$ is the zero-order hold's, not $\Delta B$
#   (Euler's, which Exercise 3 uses, not this one); $\Delta$ has one entry per channel, the rows
#   of $A$: `delta[..., :, None]`, not `delta[..., None, :]`; $B$ has one entry per state entry,
#   the columns of $A$: `B[..., None, :]`; write `...` for the leading dimensions rather than
#   naming two of them. `torch.expm1(z)` computes $e^z - 1$ without losing the digits that
#   `torch.exp(z) - 1` loses when $z$ is small.
#
# **Points:** self-check 1 (float64, leading dimensions (B, T), against the formula), hidden
# tests 2 (no leading dimension, one, three, $C_i = N$, float32, small steps, gradients, the inputs
# unchanged).

# %% nbgrader={"grade": false, "grade_id": "discretize", "locked": false, "schema_version": 3, "solution": true, "task": false}
def discretize(delta: torch.Tensor, A: torch.Tensor,
               B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., Cᵢ), (Cᵢ, N), (..., N) -> Ā, B̄ (..., Cᵢ, N): the zero-order hold (Eq. 4) of a
    diagonal A."""
    ### BEGIN SOLUTION
    dA = delta[..., :, None] * A  # (..., Cᵢ, N): row c of A times the step of channel c
    dB = delta[..., :, None] * B[..., None, :]  # (..., Cᵢ, N): B shared by the channels
    A_bar = torch.exp(dA)
    B_bar = torch.expm1(dA) / dA * dB  # (ΔA)⁻¹(exp(ΔA) − I)·ΔB, entry by entry
    return A_bar, B_bar
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "discretize_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.ssm.discretize",)
noise = torch.Generator().manual_seed(1)
delta = torch.nn.functional.softplus(  # (B, T, Cᵢ), positive
    torch.randn(2, 3, 4, generator=noise, dtype=torch.float64))
A = -torch.linspace(0.5, 3.0, 12, dtype=torch.float64).reshape(4, 3)  # (Cᵢ, N) = (4, 3)
B = torch.randn(2, 3, 3, generator=noise, dtype=torch.float64)  # (B, T, N)
saved = [t.clone() for t in (delta, A, B)]
dA = delta[..., None] * A  # (2, 3, 4, 3)
dB = delta[..., None] * B[..., None, :]
want_A, want_B = torch.exp(dA), torch.expm1(dA) / dA * dB
mistakes_A = {
    "A_bar is exp(A): the step size is missing, A_bar = exp(delta A), "
    "torch.exp(delta[..., :, None] * A)": torch.exp(A).expand(2, 3, 4, 3),
    "A_bar is delta A: take its exponential, A_bar = exp(delta A)": dA,
    "A_bar is 1 + delta A, Euler's first-order step: the zero-order hold takes the exponential, "
    "A_bar = exp(delta A)": 1 + dA,
}
mistakes_B = {
    "B_bar is delta B, Euler's rule: the zero-order hold multiplies it by "
    "(exp(delta A) - 1) / (delta A)": dB,
    "B_bar lacks the factor delta of delta B: B_bar = (exp(delta A) - 1) / (delta A) * delta B":
        torch.expm1(dA) / dA * B[..., None, :],
    "B_bar has delta once too often: (exp(delta A) - 1) / (delta A) * delta B, or "
    "(exp(delta A) - 1) / A * B, where delta cancels": torch.expm1(dA) / A * dB,
    "B_bar is not divided by delta A: B_bar = (exp(delta A) - 1) / (delta A) * delta B":
        torch.expm1(dA) * dB,
}
name = "discretize(delta (2, 3, 4), A (4, 3), B (2, 3, 3)), float64"
with checks.forbid(*forbidden, task="Exercise 1"):
    try:
        got = discretize(delta, A, B)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. delta has one entry per channel, the rows of A: "
            "delta[..., :, None] is (..., Ci, 1); B has one per state entry, the columns of A: "
            "B[..., None, :] is (..., 1, N)") from None
assert isinstance(got, tuple) and len(got) == 2, (
    f"{name} returned a {type(got).__name__}, expected the pair (A_bar, B_bar)")
for was, now in zip(saved, (delta, A, B), strict=True):
    assert torch.equal(was, now), "discretize changed its inputs: compute new tensors"
checks.expect_shape(got[0], (2, 3, 4, 3), f"A_bar of {name}",
                    hint="(..., Ci, N): delta[..., :, None] * A")
checks.expect_close(got[0], want_A, f"A_bar of {name}", mistakes=mistakes_A)
checks.expect_shape(got[1], (2, 3, 4, 3), f"B_bar of {name}",
                    hint="(..., Ci, N): delta[..., :, None] * B[..., None, :]")
checks.expect_close(got[1], want_B, f"B_bar of {name}", mistakes=mistakes_B)

# %% nbgrader={"grade": true, "grade_id": "discretize_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (2 points) run when the notebook is graded. Here this cell only
# checks that discretize runs.
import torch

assert discretize(torch.ones(2, 3), -torch.ones(3, 4), torch.ones(2, 4))[0].shape == (2, 3, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.ssm
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(81)
    blocked = ("tfcourse.ssm.discretize",)
    for lead, width, state, shift, dtype in [
        ((), 3, 2, 0.0, torch.float64), ((5,), 4, 4, 0.0, torch.float32),
        ((2, 6), 3, 5, -5.0, torch.float64), ((1, 2, 1), 2, 3, 1.0, torch.float32),
        ((3,), 5, 5, -3.0, torch.float64),
    ]:
        steps = torch.nn.functional.softplus(
            torch.randn(*lead, width, generator=gen, dtype=torch.float64) + shift)
        diag = -torch.exp(torch.randn(width, state, generator=gen, dtype=torch.float64))
        inputs_b = torch.randn(*lead, state, generator=gen, dtype=torch.float64)
        leaves = [t.clone().requires_grad_() for t in (steps, diag, inputs_b)]
        expected = tfcourse.ssm.discretize(*leaves)
        upstream = [torch.randn(e.shape, generator=gen, dtype=torch.float64) for e in expected]
        loss = sum((e * u).sum() for e, u in zip(expected, upstream, strict=True))
        expected_grads = torch.autograd.grad(loss, leaves)
        inputs = [t.to(dtype).requires_grad_() for t in (steps, diag, inputs_b)]
        untouched = [t.detach().clone() for t in inputs]
        label = (f"discretize(delta {(*lead, width)}, A ({width}, {state}), B "
                 f"{(*lead, state)}), {dtype}")
        with checks.forbid(*blocked, task="Exercise 1"):
            result = discretize(*inputs)
        assert isinstance(result, tuple) and len(result) == 2, f"{label}: not a pair"
        for part, got_part, want_part in zip(("A_bar", "B_bar"), result, expected, strict=True):
            checks.expect_close(got_part, want_part.detach().to(dtype), f"{part} of {label}")
        for before, now in zip(untouched, inputs, strict=True):
            assert torch.equal(before, now.detach()), f"{label} changed its inputs"
        loss = sum((r * u.to(dtype)).sum() for r, u in zip(result, upstream, strict=True))
        result_grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        for part, got_grad, want_grad in zip(("delta", "A", "B"), result_grads, expected_grads,
                                             strict=True):
            assert got_grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(got_grad, want_grad.to(dtype), f"the gradient of {part} in {label}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "params_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: a selective SSM's parameters (3 points)
#
# In S4 the step size $\Delta$ and the matrices $B$ and $C$ are parameters: the same at every
# position, whatever the input says. Mamba makes them **functions of the input** (section 3.2,
# Algorithm 2): $B = s_B(x)$ and $C = s_C(x)$ are linear maps of the input at that position,
# and $\Delta = \tau_\Delta(\text{Parameter} + s_\Delta(x))$ with
# $\tau_\Delta = \operatorname{softplus}$. A token can then set a large step, which resets the
# state towards what it reads, or a small one, which lets it pass almost unseen (section 3.5.2).
# The released code, and `tfcourse.MambaMixer`, compute the three with one linear map `x_proj`
# (no bias) of width $R + 2N$, whose outputs are, in this order, a rank-$R$ input for $\Delta$,
# then $B$, then $C$; a second map `dt_proj` (with a bias, the *Parameter* of Algorithm 2) widens
# the first part back to one step per channel:
#
# $$\begin{aligned}
# (d,\ B,\ C) &= x\,W_x^\top \text{ split into } R,\ N,\ N \text{ columns}, \\
# \Delta &= \operatorname{softplus}\big(d\,W_\Delta^\top + b_\Delta\big), \qquad
# A = -\exp(A_{\log}).
# \end{aligned}$$
#
# $\operatorname{softplus}(z) = \log(1 + e^z) > 0$: a step size is positive. $A$ itself does not
# depend on the input; it is stored as its logarithm $A_{\log}$ so that $A = -\exp(A_{\log})$ is
# negative whatever training does to $A_{\log}$: with $\Delta > 0$ and $A < 0$,
# $\bar A = \exp(\Delta A)$ lies in $(0, 1)$, and the state decays instead of exploding. (Mamba
# starts from $A_{\log} = \log(1, \dots, N)$ in every channel, $A = -(1, \dots, N)$: the S4D-Real
# initialisation, section 3.6.)
#
# ```
# x (..., Cᵢ) ─ x_proj ─ (..., R + 2N) ─┬─ d (..., R) ─ dt_proj (+ bias) ─ softplus ─ Δ (..., Cᵢ)
#                                        ├─ B (..., N)
#                                        └─ C (..., N)
# A_log (Cᵢ, N) ─ exp ─ negate ─ A (Cᵢ, N)
# ```
#
# **Write** `ssm_parameters(x, x_proj_weight, dt_proj_weight, dt_proj_bias, A_log)`: `x`
# (..., Cᵢ), any leading dimensions ((B, T) for a sequence, (B,) for one decoding step);
# `x_proj_weight` (R + 2N, Cᵢ), `dt_proj_weight` (Cᵢ, R) and `dt_proj_bias` (Cᵢ,), laid out as
# `nn.Linear` lays out its weight, (out, in); `A_log` (Cᵢ, N). All share one floating dtype; read
# $N$ from `A_log` and $R$ from `dt_proj_weight`. Return `(delta, A, B, C)`: Δ (..., Cᵢ),
# A (Cᵢ, N), B and C (..., N), through which gradients flow to every input.
#
# - **Allowed:** `@` and `.T`, `F.linear`, `F.softplus`, `torch.split` or slicing, `torch.exp`.
# - **Not allowed:** `tfcourse.MambaMixer` (its `ssm_parameters` and `forward`; the hidden tests
#   check).
# - **Pitfalls:** the softplus is not optional: without it Δ can be negative; it comes after the
#   bias, $\operatorname{softplus}(d W_\Delta^\top + b_\Delta)$; $A = -\exp(A_{\log})$, not
#   $\exp(A_{\log})$ (positive: the state explodes) and not $-A_{\log}$; the order of the split is
#   $d$, then $B$, then $C$; an `nn.Linear` weight is (out, in): multiply by its transpose,
#   `x @ W.T`, or call `F.linear(x, W)`; write `...` for the leading dimensions rather than
#   unpacking `B, T, _ = x.shape`.
#
# **Points:** self-check 1 (float64, (B, T) = (2, 5), against `tfcourse.MambaMixer`), hidden
# tests 2 (one, three and four leading dimensions, $C_i = N$, $R = N$, float32, gradients to the
# input and the four weights).

# %% nbgrader={"grade": false, "grade_id": "params", "locked": false, "schema_version": 3, "solution": true, "task": false}
def ssm_parameters(x: torch.Tensor, x_proj_weight: torch.Tensor, dt_proj_weight: torch.Tensor,
                   dt_proj_bias: torch.Tensor, A_log: torch.Tensor):
    """(..., Cᵢ) -> Δ (..., Cᵢ), A (Cᵢ, N), B (..., N), C (..., N) of a selective SSM."""
    ### BEGIN SOLUTION
    N, R = A_log.shape[1], dt_proj_weight.shape[1]
    d, B, C = (x @ x_proj_weight.T).split([R, N, N], dim=-1)  # (..., R), (..., N), (..., N)
    delta = F.softplus(d @ dt_proj_weight.T + dt_proj_bias)  # (..., Cᵢ), positive
    A = -torch.exp(A_log)  # (Cᵢ, N), negative
    return delta, A, B, C
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "params_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (1 point).
import warnings

import torch

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.mamba.MambaMixer.ssm_parameters", "tfcourse.mamba.MambaMixer.forward")
torch.manual_seed(2)
mixer = tfcourse.MambaMixer(8, d_state=4, dt_rank=2).double()  # Cᵢ = 16, N = 4, R = 2
with torch.no_grad():
    mixer.A_log.add_(0.3 * torch.randn(16, 4, dtype=torch.float64))  # rows that differ
weights = (mixer.x_proj.weight, mixer.dt_proj.weight, mixer.dt_proj.bias, mixer.A_log)
x = torch.randn(2, 5, 16, dtype=torch.float64)  # (B, T, Cᵢ)
with torch.no_grad():
    want_delta, want_B, want_C = mixer.ssm_parameters(x)
    want_A = mixer.A
    d = (x @ mixer.x_proj.weight.T)[..., :2]  # (B, T, R): the input of delta
    first = (x @ mixer.x_proj.weight.T)[..., :4]  # the first N columns
    raw = d @ mixer.dt_proj.weight.T + mixer.dt_proj.bias  # before the softplus
    delta_mistakes = {
        "delta is not passed through the softplus, so it can be negative: "
        "delta = F.softplus(d @ dt_proj_weight.T + dt_proj_bias)": raw,
        "the softplus comes before the bias: the bias is added inside, "
        "F.softplus(d @ dt_proj_weight.T + dt_proj_bias)":
            F.softplus(d @ mixer.dt_proj.weight.T) + mixer.dt_proj.bias,
        "the bias dt_proj_bias is missing: "
        "delta = F.softplus(d @ dt_proj_weight.T + dt_proj_bias)":
            F.softplus(d @ mixer.dt_proj.weight.T),
        "delta is exp(...): it is the softplus, log(1 + exp(...)), F.softplus": torch.exp(raw),
        "delta is relu(...): a step of zero freezes the state; it is the softplus, F.softplus":
            F.relu(raw),
    }
    A_mistakes = {
        "A = exp(A_log) is positive: exp(delta A) > 1 then makes the state explode. "
        "A = -torch.exp(A_log)": torch.exp(mixer.A_log),
        "A = -A_log: A_log is the logarithm of -A, so A = -torch.exp(A_log)": -mixer.A_log,
    }
    swapped = "B and C are swapped: x_proj's outputs are d (R), then B (N), then C (N)"
name = "ssm_parameters(x (2, 5, 16), x_proj_weight (10, 16), dt_proj_weight (16, 2), ...)"
with checks.forbid(*forbidden, task="Exercise 2"):
    try:
        got = ssm_parameters(x, *weights)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. An nn.Linear weight is (out, in): x @ x_proj_weight.T is "
            "(..., R + 2N), to split into R, N and N columns; d @ dt_proj_weight.T is "
            "(..., Ci)") from None
assert isinstance(got, tuple) and len(got) == 4, (
    f"{name} returned a {type(got).__name__}, expected the tuple (delta, A, B, C)")
delta, A, B, C = got
checks.expect_shape(A, (16, 4), f"A of {name}", hint="A = -exp(A_log) is (Ci, N)")
checks.expect_close(A, want_A, f"A of {name}", mistakes=A_mistakes)
checks.expect_shape(B, (2, 5, 4), f"B of {name}",
                    hint="split x @ x_proj_weight.T into R = 2, N = 4 and N = 4 columns")
checks.expect_close(B, want_B, f"B of {name}", mistakes={
    swapped: want_C, "B is taken from the first columns of x_proj's output: they are d, the "
    "input of delta (R = 2 columns); then come B (N = 4) and C (N = 4)": first})
checks.expect_close(C, want_C, f"C of {name}", mistakes={swapped: want_B})
checks.expect_shape(delta, (2, 5, 16), f"delta of {name}",
                    hint="one step per channel: d (..., R) @ dt_proj_weight.T is (..., Ci)")
checks.expect_close(delta, want_delta, f"delta of {name}", mistakes=delta_mistakes)

# %% nbgrader={"grade": true, "grade_id": "params_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (2 points) run when the notebook is graded. Here this cell only
# checks that ssm_parameters runs.
import torch

assert ssm_parameters(torch.zeros(2, 4), torch.zeros(7, 4), torch.zeros(4, 1), torch.zeros(4),
                      torch.zeros(4, 3))[0].shape == (2, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.mamba
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(82)
    blocked = ("tfcourse.mamba.MambaMixer.ssm_parameters", "tfcourse.mamba.MambaMixer.forward")
    for width, state, rank, lead, dtype in [
        (4, 3, 1, (3,), torch.float32), (6, 5, 3, (2, 7), torch.float64),
        (2, 4, 4, (2, 3, 2), torch.float32), (8, 2, 1, (1, 1, 1, 2), torch.float64),
    ]:
        torch.manual_seed(int(torch.randint(1000, (1,), generator=gen)))
        ref = tfcourse.mamba.MambaMixer(width, d_state=state, dt_rank=rank).to(dtype)
        inner = ref.d_inner
        with torch.no_grad():
            ref.A_log.add_(0.5 * torch.randn(inner, state, generator=gen).to(dtype))
            ref.dt_proj.bias.add_(torch.randn(inner, generator=gen).to(dtype))
        signal = torch.randn(*lead, inner, generator=gen).to(dtype).requires_grad_()
        params = [ref.x_proj.weight, ref.dt_proj.weight, ref.dt_proj.bias, ref.A_log]
        expected = (*ref.ssm_parameters(signal), ref.A)  # Δ, B, C, A
        upstream = [torch.randn(e.shape, generator=gen).to(dtype) for e in expected]
        expected_grads = torch.autograd.grad(
            sum((e * u).sum() for e, u in zip(expected, upstream, strict=True)),
            [signal, *params])
        label = (f"ssm_parameters(x {(*lead, inner)}, x_proj_weight ({rank + 2 * state}, "
                 f"{inner}), dt_proj_weight ({inner}, {rank}), A_log ({inner}, {state})), {dtype}")
        with checks.forbid(*blocked, task="Exercise 2"):
            result = ssm_parameters(signal, *params)
        assert isinstance(result, tuple) and len(result) == 4, f"{label}: not (delta, A, B, C)"
        delta, A, B, C = result
        reordered = (delta, B, C, A)
        for part, got_part, want_part in zip(("delta", "B", "C", "A"), reordered, expected,
                                             strict=True):
            checks.expect_close(got_part, want_part.detach(), f"{part} of {label}")
        result_grads = torch.autograd.grad(
            sum((r * u).sum() for r, u in zip(reordered, upstream, strict=True)),
            [signal, *params], allow_unused=True)
        parts = ("x", "x_proj_weight", "dt_proj_weight", "dt_proj_bias", "A_log")
        for part, got_grad, want_grad in zip(parts, result_grads, expected_grads, strict=True):
            assert got_grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(got_grad, want_grad, f"the gradient of {part} in {label}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "selective_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: the selective scan, one position after another (4 points)
#
# With $\Delta$, $B$ and $C$ computed from the input (Exercise 2), every position $t$ has its own
# $\bar A_t$, $\bar B_t$ and $C_t$: the SSM is no longer time-invariant, there is no single
# kernel to convolve with, and only the recurrence is left (Algorithm 2, line 6). Each channel
# $c$ of each sequence $b$ carries a state of $N$ numbers, so the state is (B, Cᵢ, N), zero
# before the first position:
#
# $$h_t = \bar A_t \odot h_{t-1} + \bar B_t\, x_t, \qquad y_t = C_t\, h_t + D\, x_t,$$
#
# entry by entry
#
# $$h_{t}[b, c, n] = e^{\Delta[b,t,c]\,A[c,n]}\; h_{t-1}[b, c, n]
#   + \Delta[b,t,c]\; B[b,t,n]\; x[b,t,c],$$
# $$y[b,t,c] = \sum_{n} C[b,t,n]\; h_t[b,c,n] \;+\; D[c]\; x[b,t,c].$$
#
# Two things differ from Exercise 1. $\bar B_t = \Delta_t B_t$: Mamba's released code, and
# `tfcourse.ssm`, take this first-order $\bar B$ instead of the zero-order hold's, from which it
# differs by $O(\Delta^2)$ (`tfcourse.discretize(delta, A, B, method="euler")`); $\bar A_t$ stays
# $\exp(\Delta_t A)$. And $D$, one number per channel, is a skip connection from the input to the
# output, outside the state. The state is updated **before** it is read: $y_t$ sees $x_t$.
#
# ```
# t = 0 … T−1:   h ← exp(Δ_t A) ⊙ h + Δ_t B_t x_t     (B, Cᵢ, N)
#                y_t = Σ_n C_t h + D x_t                (B, Cᵢ)
# ```
#
# **Write** `selective_scan(x, delta, A, B, C, D)`: `x` and `delta` (B, T, Cᵢ), Δ already
# positive; `A` (Cᵢ, N), already negative ($-\exp(A_{\log})$: do not negate it again); `B` and `C`
# (B, T, N); `D` (Cᵢ,); all in one floating dtype and on one device. Return $y$, (B, T, Cᵢ), in
# that dtype (float16 included) and on that device, through which gradients flow to the six
# inputs. Do not change the inputs.
#
# - **Allowed:** a loop over the positions (this is the reference that Exercise 4 speeds up),
#   `torch.exp`, `x.new_zeros` or `torch.zeros` (with `dtype=x.dtype, device=x.device`),
#   indexing, `*`, `+`, `.sum`, `torch.einsum`, `torch.stack`; your
#   `discretize` of Exercise 1 is the zero-order hold, not the $\bar B$ asked here, but
#   `tfcourse.discretize(..., method="euler")` is allowed.
# - **Not allowed:** `tfcourse.selective_scan_sequential`, `tfcourse.selective_scan_parallel`,
#   `tfcourse.selective_scan_step` and `tfcourse.MambaMixer` (the hidden tests check).
# - **Pitfalls:** update the state, then read it: $y_t = C_t h_t$, not $C_t h_{t-1}$; add
#   $D x_t$; the decay is $\exp(\Delta_t A)$, not $\exp(A)$, and $A$ is already negative; $\Delta_t$
#   multiplies $B_t x_t$ as well; the sum in $y_t$ runs over the $N$ state entries, not over the
#   channels; build each new state out of place, `h = a * h + b`: an in-place update such as
#   `h.mul_(a).add_(b)` overwrites the state that the backward pass needs; collect the outputs in
#   a list and `torch.stack` them; a state made by `torch.zeros` alone is float32 on the CPU:
#   float16 inputs would come back as float32, and inputs on a GPU could not meet it.
#
# **Points:** self-check 2 (float64, against `tfcourse.selective_scan_sequential`), hidden tests 2
# (one position, a batch of one, one channel and $N = 1$, $C_i = N$, float32, float16, inputs on
# another device (PyTorch's `meta` device), gradients to the six inputs, the inputs unchanged).

# %% nbgrader={"grade": false, "grade_id": "selective", "locked": false, "schema_version": 3, "solution": true, "task": false}
def selective_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """(B, T, Cᵢ) -> (B, T, Cᵢ): h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t, y_t = C_t h_t + D x_t."""
    ### BEGIN SOLUTION
    h = x.new_zeros(x.shape[0], *A.shape)  # (B, Cᵢ, N)
    ys = []
    for t in range(x.shape[1]):
        A_bar = torch.exp(delta[:, t, :, None] * A)  # (B, Cᵢ, N)
        Bx = (delta[:, t] * x[:, t])[..., None] * B[:, t, None, :]  # (B, Cᵢ, N): Δ_t B_t x_t
        h = A_bar * h + Bx  # update first,
        ys.append((h * C[:, t, None, :]).sum(-1))  # then read: (B, Cᵢ)
    return torch.stack(ys, dim=1) + D * x  # (B, T, Cᵢ)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "selective_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (2 points).
import warnings

import torch
import torch.nn.functional as F

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.ssm.selective_scan_sequential", "tfcourse.ssm.selective_scan_parallel",
             "tfcourse.ssm.selective_scan_step", "tfcourse.ssm._step",
             "tfcourse.mamba.MambaMixer.forward")
noise = torch.Generator().manual_seed(3)
x = torch.randn(2, 7, 4, generator=noise, dtype=torch.float64)  # (B, T, Cᵢ)
delta = F.softplus(torch.randn(2, 7, 4, generator=noise, dtype=torch.float64))  # Δ > 0
A = -torch.linspace(0.2, 2.0, 12, dtype=torch.float64).reshape(4, 3)  # (Cᵢ, N), A < 0
B = torch.randn(2, 7, 3, generator=noise, dtype=torch.float64)  # (B, T, N)
C = torch.randn(2, 7, 3, generator=noise, dtype=torch.float64)
D = torch.randn(4, generator=noise, dtype=torch.float64)  # (Cᵢ,)
want = tfcourse.selective_scan_sequential(x, delta, A, B, C, D)


def scan(decay="exp(delta A)", gain="delta", read_first=False, skip=True):
    """The recurrence with one thing changed: the mistakes the check recognises."""
    h, ys = torch.zeros(2, 4, 3, dtype=torch.float64), []
    for t in range(7):
        dA = delta[:, t, :, None] * A  # (B, Cᵢ, N)
        a = {"exp(delta A)": torch.exp(dA), "exp(A)": torch.exp(A),
             "exp(-delta A)": torch.exp(-dA)}[decay]
        g = {"delta": delta[:, t, :, None], "one": 1.0,
             "zoh": torch.expm1(dA) / A}[gain]  # B̄_t = g · B_t
        new = a * h + g * B[:, t, None, :] * x[:, t, :, None]
        ys.append(((h if read_first else new) * C[:, t, None, :]).sum(-1))
        h = new
    return torch.stack(ys, dim=1) + (D * x if skip else 0)


mistakes = {
    "y_t reads the state before it is updated, C_t h_(t-1): update h first, then read "
    "y_t = C_t h_t": scan(read_first=True),
    "the skip D x_t is missing: y_t = C_t h_t + D x_t": scan(skip=False),
    "the decay is exp(A): it is exp(delta_t A), torch.exp(delta[:, t, :, None] * A)":
        scan(decay="exp(A)"),
    "the decay is exp(-delta_t A): A is already negative, do not negate it again":
        scan(decay="exp(-delta A)"),
    "B_bar x_t lacks delta_t: the input enters as delta_t B_t x_t": scan(gain="one"),
    "B_bar is the zero-order hold's of Exercise 1: this scan takes B_bar_t = delta_t B_t, "
    "as Mamba's code does (tfcourse.discretize(..., method='euler'))": scan(gain="zoh"),
}
saved = [t.clone() for t in (x, delta, A, B, C, D)]
name = "selective_scan(x (2, 7, 4), delta (2, 7, 4), A (4, 3), B (2, 7, 3), C, D (4,)), float64"
with checks.forbid(*forbidden, task="Exercise 3"):
    try:
        got = selective_scan(x, delta, A, B, C, D)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. The state is (B, Ci, N): delta[:, t, :, None] * A is "
            "(B, Ci, N), B[:, t, None, :] is (B, 1, N), x[:, t, :, None] is (B, Ci, 1); "
            "y_t sums over N, the last axis") from None
for was, now in zip(saved, (x, delta, A, B, C, D), strict=True):
    assert torch.equal(was, now), "selective_scan changed its inputs: compute new tensors"
checks.expect_shape(got, (2, 7, 4), name,
                    hint="y is (B, T, Ci): sum C_t h_t over the N state entries, the last axis "
                         "of the state (B, Ci, N), and stack the T outputs along dim 1")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "selective_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (2 points) run when the notebook is graded. Here this cell only
# checks that selective_scan runs.
import torch

assert selective_scan(torch.zeros(1, 3, 2), torch.ones(1, 3, 2), -torch.ones(2, 4),
                      torch.zeros(1, 3, 4), torch.zeros(1, 3, 4), torch.ones(2)).shape == (1, 3, 2)
### BEGIN HIDDEN TESTS
import warnings

import torch
import torch.nn.functional as F

import tfcourse.ssm
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(83)
    blocked = ("tfcourse.ssm.selective_scan_sequential", "tfcourse.ssm.selective_scan_parallel",
               "tfcourse.ssm.selective_scan_step", "tfcourse.ssm._step",
               "tfcourse.mamba.MambaMixer.forward")

    def draw(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    for batch, length, width, state, dtype in [
        (1, 1, 3, 2, torch.float64), (2, 9, 4, 4, torch.float32), (3, 6, 2, 5, torch.float64),
        (1, 12, 1, 1, torch.float32),
    ]:
        tensors = [draw(batch, length, width), F.softplus(draw(batch, length, width)),
                   -torch.exp(draw(width, state)), draw(batch, length, state),
                   draw(batch, length, state), draw(width)]
        leaves = [t.clone().requires_grad_() for t in tensors]
        expected = tfcourse.ssm.selective_scan_sequential(*leaves)
        upstream = draw(batch, length, width)
        expected_grads = torch.autograd.grad((expected * upstream).sum(), leaves)
        inputs = [t.to(dtype).requires_grad_() for t in tensors]
        untouched = [t.detach().clone() for t in inputs]
        label = (f"selective_scan with (B, T, Ci, N) = ({batch}, {length}, {width}, {state}), "
                 f"{dtype}")
        with checks.forbid(*blocked, task="Exercise 3"):
            result = selective_scan(*inputs)
        checks.expect_close(result, expected.detach().to(dtype), label)
        for before, now in zip(untouched, inputs, strict=True):
            assert torch.equal(before, now.detach()), f"{label} changed its inputs"
        result_grads = torch.autograd.grad((result * upstream.to(dtype)).sum(), inputs,
                                           allow_unused=True)
        for part, got_grad, want_grad in zip(("x", "delta", "A", "B", "C", "D"), result_grads,
                                             expected_grads, strict=True):
            if got_grad is None and not want_grad.any():  # T = 1: exp(delta A) meets h = 0
                got_grad = torch.zeros_like(want_grad).to(dtype)
            assert got_grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(got_grad, want_grad.to(dtype), f"the gradient of {part} in {label}")
    # float16: the state keeps the dtype of the inputs (a float32 state would promote y)
    tensors = [draw(2, 6, 3), F.softplus(draw(2, 6, 3)), -torch.exp(draw(3, 2)), draw(2, 6, 2),
               draw(2, 6, 2), draw(3)]
    inputs = [t.half() for t in tensors]
    expected = tfcourse.ssm.selective_scan_sequential(*[t.double() for t in inputs]).half()
    label = "selective_scan with (B, T, Ci, N) = (2, 6, 3, 2), torch.float16"
    with checks.forbid(*blocked, task="Exercise 3"):
        result = selective_scan(*inputs)
    checks.expect_close(result, expected, label, rtol=2e-2, atol=1e-2, hint=(
        "keep the dtype of the inputs: a state made by torch.zeros without dtype=x.dtype is "
        "float32, and float16 times float32 is float32") if result.dtype != torch.float16 else None)
    # the device of the inputs
    shapes = [(2, 4, 3), (2, 4, 3), (3, 2), (2, 4, 2), (2, 4, 2), (3,)]
    with checks.forbid(*blocked, task="Exercise 3"):
        checks.expect_on_meta(lambda: selective_scan(*[torch.empty(s, device="meta") for s in shapes]),
                 "selective_scan on tensors of the meta device",
                 "make the state on the device of the inputs, x.new_zeros(...) or "
                 "torch.zeros(..., dtype=x.dtype, device=x.device)")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "parallel_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: a parallel scan (4 points)
#
# The loop of Exercise 3 takes $T$ steps, one after another, because each state needs the one
# before it. Yet the recurrence is **linear**: with $a_t = \bar A_t$ and $b_t = \bar B_t x_t$,
#
# $$h_t = a_t\, h_{t-1} + b_t, \qquad h_{-1} = 0,$$
#
# and two consecutive steps compose into one step of the same form: applying $(a_1, b_1)$ and then
# $(a_2, b_2)$ to a state $h$ gives $a_2(a_1 h + b_1) + b_2$, that is the step
#
# $$(a_1, b_1) \bullet (a_2, b_2) = (a_1 a_2,\; a_2 b_1 + b_2).$$
#
# This composition is associative (not commutative: the earlier step comes first), so the
# steps can be grouped in any way, and many groups computed at once: a **parallel scan**, which
# Mamba's GPU kernel uses (section 3.3.2). The simplest is Hillis and Steele's (1986): in rounds
# with offsets $d = 1, 2, 4, \dots$, every position $t \ge d$ composes the pair it holds with the
# pair at $t - d$, all positions at once, from the values of the previous round:
#
# $$(a_t,\ b_t) \leftarrow (a_{t-d}\, a_t,\ \ a_t\, b_{t-d} + b_t) \quad (t \ge d), \qquad
# (a_t, b_t) \text{ unchanged for } t < d.$$
#
# After the round of offset $d$, position $t$ holds the composition of the steps
# $\max(0, t - 2d + 1), \dots, t$: once $2d \ge T$ every position reaches back to position 0, and
# then $b_t = h_t$. That is $\lceil \log_2 T \rceil$ rounds, each a few operations on whole tensors,
# instead of $T$ steps.
#
# ```
# T = 6     positions:   0    1    2    3    4    5
# round d = 1: b_t holds 0   0–1  1–2  2–3  3–4  4–5
# round d = 2:           0   0–1  0–2  0–3  1–4  2–5
# round d = 4:           0   0–1  0–2  0–3  0–4  0–5     = h_t    (2d = 8 ≥ T: done)
# ```
#
# **Write** `linear_recurrence_scan(a, b)`: `a` and `b` of one shape (B, T, ...), the positions
# on dim 1 and any number of trailing dimensions (none included; for Mamba they are (Cᵢ, N)), one
# floating dtype, one device, $0 < a_t \le 1$ (as $\exp(\Delta_t A)$ is). Return $h$, of that
# shape and dtype (float16 included) and on that device, with $h_t = a_t h_{t-1} + b_t$ and
# $h_0 = b_0$, for every $T \ge 1$ (not only powers of two), through which gradients flow to `a`
# and `b`. Do not change `a` and `b`.
#
# - **Allowed:** slicing, `torch.cat`, `F.pad`, `torch.ones_like`, `torch.zeros_like`, `*`, `+`,
#   `torch.cumsum`, `torch.log`, `torch.exp`, a loop over the rounds, or any other method whose
#   number of steps grows slower than $T$: chunks of about $\sqrt T$ positions work too.
# - **Not allowed:** a loop over the positions (the hidden tests count the torch operations your
#   function calls at $T = 2048$: they must be fewer than $T$);
#   `tfcourse.selective_scan_sequential`, `tfcourse.selective_scan_parallel`,
#   `tfcourse.selective_scan_step`.
# - **Pitfalls:** compute the new $a$ and the new $b$ of a round from the old ones (updating $a$
#   first and then using it in $b$ composes twice); update $a$ as well as $b$; keep the order of the
#   composition, $a_t b_{t-d} + b_t$, not $a_{t-d} b_t + b_{t-d}$; run the rounds while $d < T$:
#   `range(int(math.log2(T)))` is one round short when $T$ is not a power of two; build new
#   tensors each round (`torch.cat`), rather than assigning into slices of `a` and `b`, which
#   changes the caller's tensors; $h_t = P_t \sum_{s \le t} b_s / P_s$, with $P$ the cumulative
#   product of $a$, is right in exact arithmetic and wrong in floating point: $P_t$ underflows to
#   0 when the $a_t$ are small, as they are when the state forgets fast (the hidden tests use $a_t$
#   down to $10^{-3}$); its stable form, $h_t = \sum_{s \le t} e^{S_t - S_s} b_s$ with $S$ the
#   cumulative sum of $\log a$, loses digits in float32 instead, since $S_t$ grows with $t$ while
#   the differences that matter stay small (compute $S$ in float64 if you take that road); a
#   tensor that you make (a padding of ones or zeros, a mask) goes on the device of `a`, and its
#   numbers in the dtype of `a`: `torch.ones_like`, `a.new_ones`, `dtype=a.dtype, device=a.device`.
#
# **Points:** self-check 2 (float64, $T = 13$, against the loop), hidden tests 2 ($T$ = 1, 2, 7
# and 100, no trailing dimension, one, two, float32, float16, inputs on another device (PyTorch's
# `meta` device), fast decays, gradients, the inputs unchanged, the number of operations at
# $T = 2048$).

# %% nbgrader={"grade": false, "grade_id": "parallel", "locked": false, "schema_version": 3, "solution": true, "task": false}
def linear_recurrence_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) twice -> (B, T, ...): h_t = a_t h_{t−1} + b_t, h_{−1} = 0, in rounds over
    all positions at once, not T steps."""
    ### BEGIN SOLUTION
    T = a.shape[1]
    for k in range(math.ceil(math.log2(T))):  # ⌈log₂ T⌉ rounds (none for T = 1)
        d = 2**k  # Hillis–Steele: round d composes each t ≥ d with t − d
        a, b = (torch.cat([a[:, :d], a[:, :-d] * a[:, d:]], dim=1),
                torch.cat([b[:, :d], a[:, d:] * b[:, :-d] + b[:, d:]], dim=1))  # old a, old b
    return b
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "parallel_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (2 points).
import warnings

import torch
import torch.nn.functional as F

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.ssm.selective_scan_sequential", "tfcourse.ssm.selective_scan_parallel",
             "tfcourse.ssm.selective_scan_step", "tfcourse.ssm._step")
noise = torch.Generator().manual_seed(4)
delta = F.softplus(torch.randn(2, 13, 3, 1, generator=noise, dtype=torch.float64))  # Δ > 0
a = torch.exp(delta * -torch.linspace(0.2, 2.0, 4, dtype=torch.float64))  # (B, T, Cᵢ, N)
b = torch.randn(2, 13, 3, 4, generator=noise, dtype=torch.float64)


def loop(a, b):
    h, out = torch.zeros_like(b[:, 0]), []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


def rounds(a, b, offsets, update_a=True, a_first=False, swapped=False):
    """Hillis–Steele with one thing changed: the mistakes the check recognises."""
    for d in offsets:
        new_a = torch.cat([a[:, :d], a[:, :-d] * a[:, d:]], dim=1) if update_a else a
        gain = new_a if a_first else a
        if swapped:
            new_b = torch.cat([b[:, :d], a[:, :-d] * b[:, d:] + b[:, :-d]], dim=1)
        else:
            new_b = torch.cat([b[:, :d], gain[:, d:] * b[:, :-d] + b[:, d:]], dim=1)
        a, b = new_a, new_b
    return b


want = loop(a, b)
mistakes = {
    "a is never updated: each round composes the pairs, a_t <- a_(t-d) a_t as well as "
    "b_t <- a_t b_(t-d) + b_t": rounds(a, b, [1, 2, 4, 8], update_a=False),
    "the new a is used in the same round's b: compute both from the old values, "
    "a, b = new_a, new_b": rounds(a, b, [1, 2, 4, 8], a_first=True),
    "the composition is in the wrong order: the earlier pair comes first, "
    "b_t <- a_t b_(t-d) + b_t, not a_(t-d) b_t + b_(t-d)": rounds(a, b, [1, 2, 4, 8],
                                                                  swapped=True),
    "one round is missing: T = 13 needs the offsets 1, 2, 4 and 8 (run the rounds while "
    "d < T; int(math.log2(T)) = 3 rounds stop at d = 4)": rounds(a, b, [1, 2, 4]),
    "only the first round ran: keep doubling d while d < T": rounds(a, b, [1]),
}
saved = [a.clone(), b.clone()]
name = "linear_recurrence_scan(a (2, 13, 3, 4), b (2, 13, 3, 4)), float64"
with checks.forbid(*forbidden, task="Exercise 4"):
    try:
        got = linear_recurrence_scan(a, b)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. In a round of offset d, a[:, d:] and b[:, :-d] have "
            "T - d positions each: position t meets t - d; the first d positions stay as they "
            "are") from None
checks.expect_shape(got, (2, 13, 3, 4), name,
                    hint="h has the shape of b: keep the first d positions of each round "
                         "(torch.cat([b[:, :d], ...], dim=1))")
checks.expect_close(got, want, name, mistakes=mistakes)
assert torch.equal(a, saved[0]) and torch.equal(b, saved[1]), (
    "linear_recurrence_scan changed a or b: build new tensors (torch.cat) instead of assigning "
    "into slices of the inputs")

# %% nbgrader={"grade": true, "grade_id": "parallel_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (2 points) run when the notebook is graded. Here this cell only
# checks that linear_recurrence_scan runs.
import torch

assert linear_recurrence_scan(torch.ones(1, 5), torch.ones(1, 5)).shape == (1, 5)
### BEGIN HIDDEN TESTS
import warnings

import torch
from torch.overrides import TorchFunctionMode

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(84)
    blocked = ("tfcourse.ssm.selective_scan_sequential", "tfcourse.ssm.selective_scan_parallel",
               "tfcourse.ssm.selective_scan_step", "tfcourse.ssm._step")

    class _Count(TorchFunctionMode):  # how many torch functions are called
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))

    def _loop(gains, inputs):
        state, out = torch.zeros_like(inputs[:, 0]), []
        for t in range(gains.shape[1]):
            state = gains[:, t] * state + inputs[:, t]
            out.append(state)
        return torch.stack(out, dim=1)

    for shape, low, dtype in [
        ((2, 1), 0.5, torch.float64), ((1, 2, 3), 0.5, torch.float32),
        ((3, 7, 2, 4), 0.1, torch.float64), ((2, 100), 1e-3, torch.float32),
        ((1, 100, 3), 0.9, torch.float64), ((2, 37, 2, 2), 1e-3, torch.float64),
    ]:
        gains = torch.exp(torch.rand(shape, generator=gen, dtype=torch.float64)
                          * torch.log(torch.tensor(low, dtype=torch.float64)))  # in [low, 1]
        inputs = torch.randn(shape, generator=gen, dtype=torch.float64)
        leaves = [gains.clone().requires_grad_(), inputs.clone().requires_grad_()]
        expected = _loop(*leaves)
        upstream = torch.randn(shape, generator=gen, dtype=torch.float64)
        expected_grads = torch.autograd.grad((expected * upstream).sum(), leaves)
        given = [gains.to(dtype).requires_grad_(), inputs.to(dtype).requires_grad_()]
        untouched = [t.detach().clone() for t in given]
        label = f"linear_recurrence_scan(a {shape}, b {shape}) with a in [{low}, 1], {dtype}"
        with checks.forbid(*blocked, task="Exercise 4"):
            result = linear_recurrence_scan(*given)
        checks.expect_close(result, expected.detach().to(dtype), label)
        for before, now in zip(untouched, given, strict=True):
            assert torch.equal(before, now.detach()), f"{label} changed its inputs"
        result_grads = torch.autograd.grad((result * upstream.to(dtype)).sum(), given,
                                           allow_unused=True)
        for part, got_grad, want_grad in zip(("a", "b"), result_grads, expected_grads,
                                             strict=True):
            if got_grad is None and not want_grad.any():  # T = 1: h_0 = b_0 does not read a
                got_grad = torch.zeros_like(want_grad).to(dtype)
            assert got_grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(got_grad, want_grad.to(dtype), f"the gradient of {part} in {label}")
    for shape in [(2, 7, 3), (1, 9, 2, 2)]:  # float16: what a round makes keeps the dtype
        given = [(0.5 + 0.5 * torch.rand(shape, generator=gen, dtype=torch.float64)).half(),
                 torch.randn(shape, generator=gen, dtype=torch.float64).half()]
        expected = _loop(*[t.double() for t in given]).half()
        label = f"linear_recurrence_scan(a {shape}, b {shape}), torch.float16"
        with checks.forbid(*blocked, task="Exercise 4"):
            result = linear_recurrence_scan(*given)
        checks.expect_close(result, expected, label, rtol=2e-2, atol=1e-2, hint=(
            "keep the dtype of a and b: a tensor made by torch.ones or torch.zeros without "
            "dtype= is float32, and torch.cat of float16 and float32 is float32"
            ) if result.dtype != torch.float16 else None)
    with checks.forbid(*blocked, task="Exercise 4"):  # the device of a and b
        checks.expect_on_meta(lambda: linear_recurrence_scan(torch.empty(2, 7, 3, device="meta"),
                                                torch.empty(2, 7, 3, device="meta")),
                 "linear_recurrence_scan on tensors of the meta device",
                 "make new tensors on the device of a and b: torch.ones_like(a[:, :d]), "
                 "a.new_zeros(...), or device=a.device")
    length = 2048
    gains = torch.rand(1, length, generator=gen) * 0.5 + 0.5
    inputs = torch.randn(1, length, generator=gen)
    with torch.no_grad(), checks.forbid(*blocked, task="Exercise 4"), _Count() as counter:
        result = linear_recurrence_scan(gains, inputs)
    checks.expect_shape(result, (1, length), f"linear_recurrence_scan at T = {length}")
    assert counter.calls < length, (
        f"linear_recurrence_scan called {counter.calls} torch functions at T = {length}: "
        "a loop over the positions? Compose the steps in rounds (or chunks)")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "step_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 5: decoding one token at a time (4 points)
#
# A Mamba block (section 3.4, Figure 3) widens its input $x_t$ (width C) into two branches of
# width Cᵢ with one linear map, `in_proj`: the SSM branch $u$ and the gate $z$. The SSM branch
# goes through a short causal depthwise convolution of $K$ taps and a SiLU, then the selective
# SSM, whose $\Delta$, $B$ and $C$ are computed from it (Exercises 2 and 3); the output is gated by
# $\operatorname{SiLU}(z)$ and projected back to width C by `out_proj`.
#
# Training reads all positions at once. Generating text reads **one** token at a time, and a
# recurrent model then needs only what the past left behind: a state of fixed size, however
# long the text before, where attention keeps every key and value. For a Mamba block that state
# is two tensors:
#
# * `conv_state` (B, Cᵢ, K − 1): the last $K - 1$ inputs $u$ of the convolution, **oldest
#   first**. With the new input $u_t$ it makes the window of $K$ positions that the convolution
#   reads at $t$, `window = [conv_state, u_t]`, (B, Cᵢ, K); `nn.Conv1d` does not flip its weight,
#   so tap $j$ of the weight (Cᵢ, 1, K) meets window position $j$, and the last tap meets $u_t$:
#   $v_t[c] = \operatorname{SiLU}\big(\text{bias}[c] + \sum_j w[c, 0, j]\ \text{window}[c, j]\big)$.
#   The next state drops the oldest input and keeps the newest: `window[..., 1:]`.
# * `ssm_state` (B, Cᵢ, N): the state $h$ of Exercise 3, updated with $\Delta_t$, $B_t$, $C_t$
#   computed from $v_t$: $h_t = \exp(\Delta_t A) \odot h_{t-1} + \Delta_t B_t v_t$, then
#   $y_t = C_t h_t + D v_t$.
#
# ```
# x_t (B, C) ─ in_proj ─┬─ u_t ─ window ─ conv, SiLU ─ v_t ─ SSM step ─ y_t ─┐
#                       │   [conv_state, u_t]              (ssm_state)      ⊙ ─ out_proj ─ out_t
#                       └─ z_t ─ SiLU ──────────────────────────────────────┘
# new states:  conv_state ← window[..., 1:],   ssm_state ← h_t
# ```
#
# The states start at zero, as the convolution's zero padding and the scan's $h_{-1} = 0$ do, so
# stepping through a sequence from zero states gives at every position exactly what the whole
# block computes at once, `mixer(x)`.
#
# **Write** `mamba_step(mixer, x_t, conv_state, ssm_state)`: `mixer` a `tfcourse.MambaMixer`,
# whose parts you use: `mixer.in_proj` (its output is $u$ then $z$, `.chunk(2, dim=-1)`),
# `mixer.conv.weight` (Cᵢ, 1, K) and `mixer.conv.bias` (Cᵢ,), `mixer.ssm_parameters(v)`
# (Δ, B, C, as in Exercise 2), `mixer.A` (Cᵢ, N), `mixer.D` (Cᵢ,), `mixer.out_proj`; `x_t` (B, C)
# in the mixer's dtype; `conv_state` (B, Cᵢ, K − 1) and `ssm_state` (B, Cᵢ, N), the states after
# the previous position. Return `(out_t, conv_state, ssm_state)`: the output (B, C) and the two
# new states, for any $K \ge 1$ ($K = 1$: an empty `conv_state`). Leave the states you are given
# as they are (the caller may still need them), and let gradients flow, to `x_t`, to the mixer's
# weights and to the states you are given.
#
# - **Allowed:** the mixer's parts listed above (calling `mixer.conv` on the window, which needs
#   no padding, is fine), `torch.cat`, slicing, `F.silu`, `torch.exp`, `*`, `+`, `.sum`.
# - **Not allowed:** `mixer.step` and `mixer(...)` (`forward`), `tfcourse.selective_scan_step`,
#   `selective_scan_sequential` and `selective_scan_parallel` (the hidden tests check).
# - **Pitfalls:** the newest input goes last in the window and the new `conv_state` is
#   `window[..., 1:]` (dropping the oldest), not `window[..., :-1]` nor the newest first; the
#   window needs no padding: padded on both sides (`padding="same"` or `K // 2`) the convolution
#   is centred, and its last output reads a zero after $u_t$; do not flip the weight; add the
#   convolution's bias and apply the SiLU before the SSM; update $h$
#   before reading $y_t = C_t h_t + D v_t$; the gate is $\operatorname{SiLU}(z_t)$, the second
#   half of `in_proj`'s output; build the new states as new tensors instead of writing into
#   the ones you are given, and without detaching these (`.detach()` would keep them unchanged,
#   but cut the gradient).
#
# **Points:** self-check 2 (float64, $K = 3$, six steps from zero states against `mixer(x)` and
# its final state), hidden tests 2 ($K$ = 1, 2 and 4, float32, a batch of one, decoding on from
# the state `mixer(prompt, return_state=True)` returns, the given states unchanged, gradients to
# `x_t`, to every weight of the mixer and to the given states).

# %% nbgrader={"grade": false, "grade_id": "step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def mamba_step(mixer: nn.Module, x_t: torch.Tensor, conv_state: torch.Tensor,
               ssm_state: torch.Tensor):
    """x_t (B, C) and the states after t − 1 -> (out_t (B, C), conv_state (B, Cᵢ, K − 1),
    ssm_state (B, Cᵢ, N))."""
    ### BEGIN SOLUTION
    u, z = mixer.in_proj(x_t).chunk(2, dim=-1)  # (B, Cᵢ) each
    window = torch.cat([conv_state, u[..., None]], dim=-1)  # (B, Cᵢ, K), oldest first
    v = F.silu((window * mixer.conv.weight[:, 0]).sum(-1) + mixer.conv.bias)  # (B, Cᵢ)
    delta, B, C = mixer.ssm_parameters(v)  # (B, Cᵢ), (B, N), (B, N)
    h = torch.exp(delta[..., None] * mixer.A) * ssm_state \
        + (delta * v)[..., None] * B[:, None, :]  # (B, Cᵢ, N): update first,
    y = (h * C[:, None, :]).sum(-1) + mixer.D * v  # then read: (B, Cᵢ)
    return mixer.out_proj(y * F.silu(z)), window[..., 1:], h
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "step_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 5 (2 points).
import warnings

import torch
import torch.nn.functional as F

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.mamba.MambaMixer.step", "tfcourse.mamba.MambaMixer.forward",
             "tfcourse.ssm.selective_scan_step", "tfcourse.ssm.selective_scan_sequential",
             "tfcourse.ssm.selective_scan_parallel", "tfcourse.ssm._step")
torch.manual_seed(5)
mixer = tfcourse.MambaMixer(4, d_state=3, d_conv=3).double()  # C = 4, Cᵢ = 8, N = 3, K = 3
with torch.no_grad():
    mixer.conv.bias.normal_()  # a bias large enough to matter
    mixer.D.normal_()
x = torch.randn(2, 6, 4, dtype=torch.float64)  # (B, T, C)
with torch.no_grad():
    want, final = mixer(x, return_state=True)  # (B, T, C), the states after position 5


def steps(read_first=False, conv="right", flip=False, bias=True, silu=True, gate="silu(z)",
          skip=True, centred=False):
    """Six steps with one thing changed: the mistakes the check recognises."""
    weight = mixer.conv.weight[:, 0].flip(-1) if flip else mixer.conv.weight[:, 0]  # (Cᵢ, K)
    if centred:  # the window shifted by one: the middle tap meets u_t, the last one a zero
        weight = torch.cat([torch.zeros_like(weight[:, :1]), weight[:, :-1]], dim=-1)
    window_state, h, outs = torch.zeros(2, 8, 2, dtype=torch.float64), 0.0, []
    for t in range(6):
        u, z = mixer.in_proj(x[:, t]).chunk(2, dim=-1)
        if gate == "swapped":
            u, z = z, u
        window = torch.cat([window_state, u[..., None]], dim=-1)
        v = (window * weight).sum(-1) + (mixer.conv.bias if bias else 0.0)
        v = F.silu(v) if silu else v
        delta, B, C = mixer.ssm_parameters(v)
        new = torch.exp(delta[..., None] * mixer.A) * h + (delta * v)[..., None] * B[:, None, :]
        y = ((h if read_first else new) * C[:, None, :]).sum(-1) + (mixer.D * v if skip else 0.0)
        h = new
        gated = {"none": y, "z": y * z}.get(gate, y * F.silu(z))
        outs.append(mixer.out_proj(gated))
        window_state = {"right": window[..., 1:], "stale": window_state,
                        "newest first": torch.cat([u[..., None], window_state[..., :-1]], -1)}[conv]
    return torch.stack(outs, dim=1)


with torch.no_grad():
    mistakes = {
        "y_t reads the SSM state before it is updated: update h first, then read "
        "y_t = C_t h_t + D v_t": steps(read_first=True),
        "the convolution state keeps its oldest entries: the new state is window[..., 1:], the "
        "last K - 1 inputs, oldest first": steps(conv="stale"),
        "the convolution state holds the newest input first: keep the window's order, oldest "
        "first, and drop its first entry, window[..., 1:]": steps(conv="newest first"),
        "the convolution's weight is flipped: nn.Conv1d does not flip it, so its last tap, "
        "weight[:, 0, K - 1], meets the newest input, the last of the window": steps(flip=True),
        "the convolution is centred (padding='same' or K // 2, then the last output): the "
        "middle tap meets u_t and the last one a zero after it. The window holds exactly K "
        "positions, oldest first, without padding, and the last tap meets u_t":
            steps(centred=True),
        "the convolution's bias is missing": steps(bias=False),
        "the SiLU after the convolution is missing: v_t = SiLU(conv(window))": steps(silu=False),
        "the gate is missing: the output is out_proj(y_t * SiLU(z_t))": steps(gate="none"),
        "the gate is z_t: it goes through a SiLU, out_proj(y_t * SiLU(z_t))": steps(gate="z"),
        "u and z are swapped: in_proj's output is u (the SSM branch), then z (the gate)":
            steps(gate="swapped"),
        "the skip D v_t is missing: y_t = C_t h_t + D v_t": steps(skip=False),
    }
name = "mamba_step through 6 positions of x (2, 6, 4), MambaMixer(4, d_state=3, d_conv=3)"
conv_state = torch.zeros(2, 8, 2, dtype=torch.float64)  # (B, Cᵢ, K − 1)
ssm_state = torch.zeros(2, 8, 3, dtype=torch.float64)  # (B, Cᵢ, N)
outs = []
with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 5"):
    for t in range(6):
        try:
            result = mamba_step(mixer, x[:, t], conv_state, ssm_state)
        except NotImplementedError:
            raise
        except RuntimeError as error:
            raise checks.ContractError(
                f"{name} fails at position {t}: {error}. The window is (B, Ci, K) = (2, 8, 3), "
                "torch.cat([conv_state, u[..., None]], dim=-1); mixer.conv.weight[:, 0] is "
                "(Ci, K); the SSM state is (B, Ci, N) = (2, 8, 3)") from None
        assert isinstance(result, tuple) and len(result) == 3, (
            f"mamba_step returned a {type(result).__name__}, expected (out_t, conv_state, "
            "ssm_state)")
        out_t, conv_state, ssm_state = result
        checks.expect_shape(out_t, (2, 4), f"out_t at position {t}",
                            hint="(B, C): out_proj brings Ci = 8 back to C = 4")
        checks.expect_shape(conv_state, (2, 8, 2), f"the new conv_state at position {t}",
                            hint="the last K - 1 = 2 inputs of the convolution, window[..., 1:]")
        checks.expect_shape(ssm_state, (2, 8, 3), f"the new ssm_state at position {t}")
        outs.append(out_t)
checks.expect_close(torch.stack(outs, dim=1), want, f"the outputs of {name}",
                    mistakes=mistakes)
checks.expect_close(conv_state, final.conv, f"conv_state after {name}",
                    hint="the last K - 1 = 2 inputs u, oldest first")
checks.expect_close(ssm_state, final.ssm, f"ssm_state after {name}")

# %% nbgrader={"grade": true, "grade_id": "step_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 5 (2 points) run when the notebook is graded. Here this cell only
# checks that mamba_step runs.
import torch

import tfcourse

assert mamba_step(tfcourse.MambaMixer(2, d_state=3), torch.zeros(1, 2), torch.zeros(1, 4, 3),
                  torch.zeros(1, 4, 3))[0].shape == (1, 2)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.mamba
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(85)
    blocked = ("tfcourse.mamba.MambaMixer.step", "tfcourse.mamba.MambaMixer.forward",
               "tfcourse.ssm.selective_scan_step", "tfcourse.ssm.selective_scan_sequential",
               "tfcourse.ssm.selective_scan_parallel", "tfcourse.ssm._step")
    for width, state, taps, batch, prompt, length, dtype in [
        (3, 2, 1, 2, 0, 4, torch.float64), (4, 3, 2, 1, 3, 5, torch.float32),
        (2, 4, 4, 3, 5, 4, torch.float64), (4, 2, 4, 2, 0, 7, torch.float32),
    ]:
        torch.manual_seed(int(torch.randint(1000, (1,), generator=gen)))
        mixer = tfcourse.mamba.MambaMixer(width, d_state=state, d_conv=taps).to(dtype)
        with torch.no_grad():
            mixer.conv.bias.normal_(generator=gen)
            mixer.D.normal_(generator=gen)
            mixer.A_log.add_(0.3 * torch.randn(mixer.A_log.shape, generator=gen).to(dtype))
        inner = mixer.d_inner
        seq = torch.randn(batch, prompt + length, width, generator=gen).to(dtype)
        label = (f"mamba_step, MambaMixer({width}, d_state={state}, d_conv={taps}), batch "
                 f"{batch}, {length} steps after a prompt of {prompt}, {dtype}")
        with torch.no_grad():
            expected, last = mixer(seq, return_state=True)
            if prompt:
                _, begun = mixer(seq[:, :prompt], return_state=True)
                conv_state, ssm_state = begun.conv, begun.ssm
            else:
                conv_state = torch.zeros(batch, inner, taps - 1, dtype=dtype)
                ssm_state = torch.zeros(batch, inner, state, dtype=dtype)
        outs = []
        for t in range(prompt, prompt + length):
            given = (conv_state.clone(), ssm_state.clone())
            with torch.no_grad(), checks.forbid(*blocked, task="Exercise 5"):
                out_t, conv_state, ssm_state = mamba_step(mixer, seq[:, t], *given)
            outs.append(out_t)
        checks.expect_close(torch.stack(outs, dim=1), expected[:, prompt:], label)
        checks.expect_close(conv_state, last.conv, f"conv_state after {label}")
        checks.expect_close(ssm_state, last.ssm, f"ssm_state after {label}")
        # the states given are left as they are
        before = (last.conv.clone(), last.ssm.clone())
        with torch.no_grad(), checks.forbid(*blocked, task="Exercise 5"):
            mamba_step(mixer, seq[:, -1], last.conv, last.ssm)
        assert torch.equal(before[0], last.conv) and torch.equal(before[1], last.ssm), (
            f"{label}: mamba_step changed the states it was given")
        # gradients, against the reference step: to x_t, to every weight, and to the states
        # given (decoding on from a prompt trains the prompt's states too)
        point = seq[:, -1].clone().requires_grad_()
        params = [mixer.in_proj.weight, mixer.conv.weight, mixer.conv.bias,
                  mixer.x_proj.weight, mixer.dt_proj.weight, mixer.dt_proj.bias, mixer.A_log,
                  mixer.D, mixer.out_proj.weight]
        states = [last.conv.clone().requires_grad_(), last.ssm.clone().requires_grad_()]
        ref_out, ref_state = mixer.step(point, tfcourse.mamba.MambaState(*states))
        upstream = [torch.randn(t.shape, generator=gen).to(dtype)
                    for t in (ref_out, ref_state.conv, ref_state.ssm)]
        expected_grads = torch.autograd.grad(
            sum((t * u).sum() for t, u in zip((ref_out, ref_state.conv, ref_state.ssm), upstream,
                                             strict=True)),
            [point, *params, *states])
        with checks.forbid(*blocked, task="Exercise 5"):
            got = mamba_step(mixer, point, *states)
        result_grads = torch.autograd.grad(
            sum((t * u).sum() for t, u in zip(got, upstream, strict=True)),
            [point, *params, *states], allow_unused=True)
        parts = ("x_t", "in_proj.weight", "conv.weight", "conv.bias", "x_proj.weight",
                 "dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight",
                 "the conv_state given", "the ssm_state given")
        for part, got_grad, want_grad in zip(parts, result_grads, expected_grads, strict=True):
            if got_grad is None and want_grad.numel() == 0:  # K = 1: an empty conv_state
                continue
            assert got_grad is not None, (
                f"{label}: no gradient reaches {part}" + (
                    " (are the states detached? leave them as they are: read them, do not "
                    "write into them)" if part.endswith("given") else ""))
            checks.expect_close(got_grad, want_grad, f"the gradient of {part} in {label}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS
