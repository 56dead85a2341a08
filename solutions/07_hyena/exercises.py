# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 7 exercises: Hyena
#
# Five graded exercises write the parts of a Hyena operator (Poli et al., 2023, "Hyena
# Hierarchy: Towards Larger Convolutional Language Models", arXiv:2302.10866): the long causal
# convolution computed by the FFT, the short convolution that comes before it, the implicit
# filter that a small network generates from the positions, the recurrence that alternates
# convolutions and gates, and a test that tells whether an operator reads the future.
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `fft_causal_conv`, a causal convolution by FFT | 4 |
# | 2 | `short_causal_conv`, the short depthwise convolution | 3 |
# | 3 | `implicit_filter`, a long filter from the positions | 4 |
# | 4 | `hyena_operator`, the order-N recurrence | 4 |
# | 5 | `leaks_future`, does an operator read the future? | 3 |
# | | **total** | **18** |
#
# The reference implementation is `tfcourse.hyena` (`fft_causal_conv`, `ShortConv`,
# `ImplicitFilter`, `HyenaOperator`); the exercises write its parts yourself, on small tensors
# and untrained modules.
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
# Shapes use the course's letters: `B` batch, `C` channels (the model width), `T` positions,
# `N` order of the operator, `K` taps of the short convolution, `E` positional features of the
# filter network. The paper writes $L$ for the sequence length and $D$ for the width. Every
# convolution here is channels-first, (B, C, T), as `torch.nn.Conv1d` is: position is the last
# axis.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
import torch.nn.functional as F
from torch import nn

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "fft_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: a causal convolution by FFT (4 points)
#
# A Hyena filter is as long as the sequence. In each channel $c$, the causal convolution of the
# input $u$ with the filter $k$ is
#
# $$y_{c,t} = \sum_{s=0}^{t} k_{c,s}\, u_{c,t-s}, \qquad t = 0, \dots, T - 1:$$
#
# the output at $t$ reads the inputs at $t$ and before, tap $s$ reaching $s$ positions back.
# Summed term by term it costs $O(T^2)$ per channel; the convolution theorem brings it down to
# $O(T \log T)$ (section 3.3): the discrete Fourier transform of $n$ points turns a convolution
# into a product, element by element,
#
# $$y = \operatorname{IDFT}_n\big(\operatorname{DFT}_n(u) \odot \operatorname{DFT}_n(k)\big).$$
#
# But the convolution it multiplies is **circular**: $\sum_{s=0}^{n-1} k_s\, u_{(t-s) \bmod n}$.
# With $n = T$, the taps that reach back past position 0 wrap around to the end of the sequence,
# and $y_t$ reads inputs **after** $t$. The full (linear) convolution of two sequences of $T$
# points has $2T - 1$ points; padding both with zeros to $n \ge 2T - 1$ points (the usual choice
# is $n = 2T$) leaves room for all of it, so nothing wraps, and its first $T$ points are the
# causal convolution above.
#
# ```
# u (B, C, T) ─ pad to n = 2T ─ rfft ─┐
#                                      ├─ ⊙ ─ irfft (n points) ─ keep [..., :T] ─ y (B, C, T)
# k (C, T')   ─ pad to n = 2T ─ rfft ─┘
# ```
#
# **Write** `fft_causal_conv(u, k)`: `u` (B, C, T) floating point; `k` (C, T') with
# $1 \le T' \le T$ taps, in the dtype of `u` (a filter shorter than the sequence is one whose
# later taps are zero). Return $y$, (B, C, T), in the dtype of `u`, through which gradients flow
# to `u` and `k`. float64 stays float64; float32, float16 and bfloat16 are transformed in float32
# and the result is cast back (CPU FFTs have no half-precision kernels, and a half-precision sum
# of $T$ terms would lose most of its digits): `torch.promote_types(u.dtype, torch.float32)` is
# that working dtype.
#
# - **Allowed:** `torch.fft.rfft` and `torch.fft.irfft` (their `n=` pads with zeros), or
#   `torch.fft.fft` and `torch.fft.ifft` (then keep the real part), `F.pad`, slicing, `.to`.
# - **Not allowed:** `tfcourse.fft_causal_conv`, `tfcourse.direct_causal_conv`, `F.conv1d`
#   (and `nn.Conv1d`), and a sum over the taps: the work is done by the FFT (the hidden tests
#   check).
# - **Pitfalls:** $n = T$ gives the circular convolution; keep the first $T$ outputs, not $n$;
#   with the default normalisation `rfft` does not scale and `irfft` divides by $n$ once: do not
#   divide again, and use the same `norm` in both directions; pass `n` to `irfft` as well
#   (without it, `irfft` returns $2(m - 1)$ points for $m$ frequencies, which is $n$ only when
#   $n$ is even); transform `k` with the same $n$ as `u`, whatever its length; the transform of
#   `k`, (C, m), broadcasts against that of `u`, (B, C, m).
#
# **Points:** self-check 2 (float64, against the sum term by term, to 1e-10), hidden tests 2
# (shorter filters, a batch of one, one channel, odd $T$, $T = 1$, float32, float16 and
# bfloat16, gradients, the FFT doing the work).

# %% nbgrader={"grade": false, "grade_id": "fft", "locked": false, "schema_version": 3, "solution": true, "task": false}
def fft_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(B, C, T), (C, T') -> (B, C, T): y_t = Σ_{s≤t} k_s u_{t−s} in each channel, by FFT."""
    ### BEGIN SOLUTION
    T = u.shape[-1]
    n = 2 * T  # room for the whole linear convolution: nothing wraps around
    work = torch.promote_types(u.dtype, torch.float32)  # float32, or float64 for float64
    u_f = torch.fft.rfft(u.to(work), n=n)  # (B, C, n/2 + 1)
    k_f = torch.fft.rfft(k.to(work), n=n)  # (C, n/2 + 1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :T]  # (B, C, T): irfft divides by n, once
    return y.to(u.dtype)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "fft_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (2 points).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.hyena.fft_causal_conv", "tfcourse.hyena.direct_causal_conv",
             "torch.nn.functional.conv1d")
noise = torch.Generator().manual_seed(7)
u = torch.randn(2, 3, 8, generator=noise, dtype=torch.float64)  # (B, C, T) with T = 8
k = torch.randn(3, 8, generator=noise, dtype=torch.float64)  # (C, T)
want = torch.zeros_like(u)
for t in range(8):  # the causal convolution, term by term
    for s in range(t + 1):
        want[..., t] += k[:, s] * u[..., t - s]


def circular(n: int) -> torch.Tensor:
    """The first T outputs of the circular convolution of n points."""
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :8]


mistakes = {
    "this is the circular convolution of n = T = 8 points: the taps that reach back past "
    "position 0 wrap around to the end of the sequence, so y_t reads the future. Pad to "
    "n = 2T points, rfft(u, n=2 * T)": circular(8),
    "the result is n = 2T = 16 times too small: it is divided by n twice. With the default "
    "normalisation irfft divides by n once and rfft not at all: do not divide again, and use "
    "the same norm in both directions": want / 16,
    "the result is n = 2T = 16 times too large: nothing divides by n (norm='forward' in the "
    "inverse only?); use the default normalisation in both directions": want * 16,
    "the result is divided by sqrt(n) = 4: norm='ortho' in both directions divides by n once "
    "and by sqrt(n) again; use the default normalisation": want / 4,
    "with n = 2T - 1 = 15 points, pass n=n to irfft as well: without it, irfft returns "
    "2(m - 1) = 14 points of another signal": torch.fft.irfft(
        torch.fft.rfft(u, n=15) * torch.fft.rfft(k, n=15))[..., :8],
}
name = "fft_causal_conv(u (2, 3, 8), k (3, 8)), float64"
with checks.forbid(*forbidden, task="Exercise 1"):
    try:
        got = fft_causal_conv(u, k)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. Transform u and k with the same n = 2T (rfft(k, n=2 * T) "
            "pads k itself); the transform of k, (C, n/2 + 1), broadcasts against that of u, "
            "(B, C, n/2 + 1)") from None
if isinstance(got, torch.Tensor) and got.is_complex():
    raise checks.ContractError(
        f"{name} is complex: after ifft keep the real part (.real), or use rfft and irfft")
checks.expect_shape(got, (2, 3, 8), name,
                    hint="keep the first T = 8 outputs, y[..., :T]: the rest is the tail of the "
                         "linear convolution, past the end of the sequence")
error = (got.detach().double() - want).abs().max().item()
precision = ("the error is that of float32 arithmetic: transform float64 inputs in float64 "
             "(torch.promote_types(u.dtype, torch.float32)) and only the others in float32"
             if 1e-10 < error < 1e-4 else None)
checks.expect_close(got, want, name, rtol=0.0, atol=1e-10, mistakes=mistakes, hint=precision)

# %% nbgrader={"grade": true, "grade_id": "fft_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (2 points) run when the notebook is graded. Here this cell only
# checks that fft_causal_conv runs.
import torch

assert fft_causal_conv(torch.zeros(1, 2, 4), torch.zeros(2, 4)).shape == (1, 2, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch
from torch.overrides import TorchFunctionMode

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(71)
    blocked = ("tfcourse.hyena.fft_causal_conv", "tfcourse.hyena.direct_causal_conv",
               "torch.nn.functional.conv1d")

    class _Calls(TorchFunctionMode):  # the names of the torch functions that are called
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.names.add(getattr(func, "__name__", ""))
            return func(*args, **(kwargs or {}))

    def _term_by_term(signal, taps):  # float64
        out = torch.zeros_like(signal)
        for s in range(taps.shape[-1]):
            out[..., s:] += taps[:, s, None] * signal[..., :signal.shape[-1] - s]
        return out

    for batch, width, length, ntaps, dtype in [
        (2, 3, 7, 7, torch.float32), (1, 1, 5, 3, torch.float64), (3, 2, 1, 1, torch.float64),
        (2, 4, 16, 16, torch.float16), (1, 3, 9, 4, torch.bfloat16),
        (2, 2, 6, 1, torch.float32), (1, 2, 11, 6, torch.float64),
    ]:
        signal = torch.randn(batch, width, length, generator=gen).to(dtype)
        taps = (torch.randn(width, ntaps, generator=gen) / ntaps ** 0.5).to(dtype)
        leaves = [signal.double().requires_grad_(), taps.double().requires_grad_()]
        expected = _term_by_term(*leaves)
        upstream = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
        expected_grads = torch.autograd.grad((expected * upstream).sum(), leaves)
        label = (f"fft_causal_conv(u ({batch}, {width}, {length}), k ({width}, {ntaps})), "
                 f"{dtype}")
        inputs = [signal.clone().requires_grad_(dtype in (torch.float32, torch.float64)),
                  taps.clone().requires_grad_(dtype in (torch.float32, torch.float64))]
        with checks.forbid(*blocked, task="Exercise 1"), _Calls() as calls:
            result = fft_causal_conv(*inputs)
        assert any(n.startswith("fft_") for n in calls.names), (
            f"{label} calls no function of torch.fft: compute the convolution by FFT")
        assert isinstance(result, torch.Tensor) and not result.is_complex(), (
            f"{label} is not a real tensor: keep the real part after ifft")
        checks.expect_close(result, expected.detach().to(dtype), label)
        if dtype in (torch.float32, torch.float64):
            result_grads = torch.autograd.grad((result * upstream.to(dtype)).sum(), inputs,
                                               allow_unused=True)
            for part, got_grad, want_grad in zip(("u", "k"), result_grads, expected_grads,
                                                 strict=True):
                assert got_grad is not None, f"{label}: no gradient reaches {part}"
                checks.expect_close(got_grad, want_grad.to(dtype),
                                    f"the gradient of {part} in {label}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "short_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: the short causal convolution (3 points)
#
# Before the long convolutions, each projection goes through a short convolution of $K$ taps
# ($K = 3$ in the paper, section 3.3), **depthwise**: each channel has its own $K$ taps and
# reads no other channel. It is what `nn.Conv1d(C, C, K, groups=C)` computes, with a weight $w$
# of shape (C, 1, K) and a bias $b$ of shape (C,). PyTorch's convolution does not flip its
# weight (it is a cross-correlation): on an input padded with $K - 1$ zeros on the **left**,
#
# $$y_{c,t} = b_c + \sum_{j=0}^{K-1} w_{c,0,j}\; x_{c,\,t-(K-1)+j}, \qquad
# x_{c,t} = 0 \text{ for } t < 0,$$
#
# so the output at $t$ reads the positions $t - K + 1, \dots, t$: the last tap $w_{c,0,K-1}$
# multiplies the current position, and nothing reads the future. Padding on both sides, as
# `padding=K // 2` or `padding="same"` do, centres the window on $t$: it then reads $t + 1$.
#
# ```
#  x:   0   0  x0  x1  x2  x3 …          K = 3: two zeros on the left, none on the right
#      [w0  w1  w2]                   →  y0 = w2·x0 + b
#          [w0  w1  w2]               →  y1 = w1·x0 + w2·x1 + b
# ```
#
# **Write** `short_causal_conv(x, weight, bias)`: `x` (B, C, T) floating point; `weight`
# (C, 1, K) and `bias` (C,), in the dtype of `x`, laid out as in `nn.Conv1d(C, C, K, groups=C)`.
# Return $y$, (B, C, T), through which gradients flow to `x`, `weight` and `bias`. $K$ may be
# larger than $T$.
#
# - **Allowed:** `F.conv1d` (with `groups`), `F.pad`, `torch.cat`, slicing, a loop over the
#   $K$ taps.
# - **Not allowed:** `tfcourse.ShortConv` (the hidden tests check).
# - **Pitfalls:** pad $K - 1$ zeros on the left only, not `padding=K // 2` or `"same"` (both
#   sides) and not on the right; `groups=C`: a weight of shape (C, 1, K) is depthwise, one
#   input channel per filter; the output has $T$ positions, not $T + K - 1$; do not flip the
#   weight: `conv1d` applies $w_{c,0,K-1}$ to the current position; add the bias.
#
# **Points:** self-check 1, hidden tests 2 ($K$ = 1, 2, 4 and 5, $K > T$, one channel, a batch of
# one, float64, gradients to the input, the weight and the bias).

# %% nbgrader={"grade": false, "grade_id": "short", "locked": false, "schema_version": 3, "solution": true, "task": false}
def short_causal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(B, C, T) -> (B, C, T): a causal depthwise convolution, weight (C, 1, K), bias (C,)."""
    ### BEGIN SOLUTION
    K = weight.shape[-1]
    padded = F.pad(x, (K - 1, 0))  # (B, C, T + K − 1): zeros on the left only
    return F.conv1d(padded, weight, bias, groups=x.shape[1])  # (B, C, T)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "short_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (1 point).
import warnings

import torch

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.hyena.ShortConv.forward",)
torch.manual_seed(2)
module = tfcourse.ShortConv(3, kernel_size=3)  # C = 3, K = 3
x = torch.randn(2, 3, 10)  # (B, C, T)
w, b = module.conv.weight.detach(), module.conv.bias.detach()  # (C, 1, K), (C,)
with torch.no_grad():
    want = module(x)
    mistakes = {
        "the padding is on both sides (padding=K // 2 or padding='same'): position t reads "
        "t + 1. Pad K - 1 zeros on the left only, F.pad(x, (K - 1, 0))":
            F.conv1d(x, w, b, padding=1, groups=3),
        "the padding is on the right: position t reads t + 1 and t + 2. Pad K - 1 zeros on the "
        "left, F.pad(x, (K - 1, 0))": F.conv1d(F.pad(x, (0, 2)), w, b, groups=3),
        "the weight is flipped: conv1d does not flip it, w[..., K - 1] multiplies the current "
        "position": F.conv1d(F.pad(x, (2, 0)), w.flip(-1), b, groups=3),
        "the bias is missing": F.conv1d(F.pad(x, (2, 0)), w, None, groups=3),
    }
name = "short_causal_conv(x (2, 3, 10), weight (3, 1, 3), bias (3,))"
with checks.forbid(*forbidden, task="Exercise 2"):
    try:
        got = short_causal_conv(x, w, b)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. A weight of shape (C, 1, K) is depthwise: call conv1d "
            "with groups=C, one input channel per filter") from None
checks.expect_shape(got, (2, 3, 10), name,
                    hint="T = 10 positions: pad K - 1 = 2 zeros on the left and none on the "
                         "right, and give conv1d no padding of its own")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "short_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (2 points) run when the notebook is graded. Here this cell only
# checks that short_causal_conv runs.
import torch

assert short_causal_conv(torch.zeros(1, 2, 5), torch.zeros(2, 1, 3),
                         torch.zeros(2)).shape == (1, 2, 5)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.hyena
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(72)
    blocked = ("tfcourse.hyena.ShortConv.forward",)
    for batch, width, length, ntaps, dtype in [
        (1, 1, 5, 1, torch.float64), (2, 4, 9, 2, torch.float32),
        (3, 2, 3, 5, torch.float64), (1, 5, 12, 4, torch.float32),
    ]:
        module_ref = tfcourse.hyena.ShortConv(width, ntaps).to(dtype)
        with torch.no_grad():
            module_ref.conv.weight.normal_(generator=gen)
            module_ref.conv.bias.normal_(generator=gen)
        signal = torch.randn(batch, width, length, generator=gen, dtype=dtype)
        leaves = [signal.clone().requires_grad_(), module_ref.conv.weight, module_ref.conv.bias]
        expected = module_ref(leaves[0])
        upstream = torch.randn(expected.shape, generator=gen, dtype=dtype)
        expected_grads = torch.autograd.grad((expected * upstream).sum(), leaves)
        inputs = [t.detach().clone().requires_grad_() for t in leaves]
        label = (f"short_causal_conv(x ({batch}, {width}, {length}), weight ({width}, 1, "
                 f"{ntaps})), {dtype}")
        with checks.forbid(*blocked, task="Exercise 2"):
            result = short_causal_conv(*inputs)
        checks.expect_close(result, expected.detach(), label)
        result_grads = torch.autograd.grad((result * upstream).sum(), inputs, allow_unused=True)
        for part, got_grad, want_grad in zip(("x", "weight", "bias"), result_grads,
                                             expected_grads, strict=True):
            assert got_grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(got_grad, want_grad, f"the gradient of {part} in {label}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "filter_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: the implicit filter (4 points)
#
# A filter of $T$ taps stored tap by tap would need as many parameters as the sequence is long,
# and a fixed length. Hyena's filters are **implicit**: a small network generates tap $t$ from
# the position $t$ (section 3.2, Eq. 7),
#
# $$h_t = \operatorname{Window}(t) \cdot
# \operatorname{FFN}\big(\operatorname{PositionalEncoding}(t)\big),
# \qquad t = 0, \dots, T - 1,$$
#
# and its parameter count does not depend on $T$. With $T_{\max}$ the longest sequence the model
# is built for (`max_len`) and $E'$ frequencies $f_1, \dots, f_{E'}$:
#
# * **positional features**, $E = 1 + 2E'$ of them: the position and the real and imaginary
#   parts of $e^{-i 2\pi f t / T_{\max}}$,
#
#   $$z_t = \Big(\tfrac{t}{T_{\max}},\ \cos\tfrac{2\pi f_1 t}{T_{\max}}, \dots,
#   \cos\tfrac{2\pi f_{E'} t}{T_{\max}},\ -\sin\tfrac{2\pi f_1 t}{T_{\max}}, \dots,
#   -\sin\tfrac{2\pi f_{E'} t}{T_{\max}}\Big) \in \mathbb{R}^{E},$$
#
#   in this order: the first layer of the network expects them so. The positions are divided by
#   $T_{\max}$, not by $T$: the features of position $t$ are the same whatever the length of the
#   sequence, so the filter of a shorter sequence is the **prefix** of the filter of a longer
#   one;
# * **the network** maps each $z_t$ to $C$ values, one per channel: applied to the (T, E)
#   features it gives (T, C), to transpose into one filter per row, (C, T);
# * **the window** $\exp(-\alpha_c\, t / T_{\max})$, with a decay rate $\alpha_c$ per channel,
#   multiplies channel $c$: a fast decay keeps the channel on the recent past, a slow one lets it
#   reach far back.
#
# ```
# t = 0 … T−1 ─ z (T, E) ─ ffn ─ (T, C) ─ transpose ─ (C, T) ─ ⊙ exp(−α_c t / T_max) ─ h (C, T)
# ```
#
# **Write** `implicit_filter(ffn, T, max_len, frequencies, alpha)`: `ffn` a module that maps
# (..., E) to (..., C) (call it on the features); `T` and `max_len` ints, $1 \le T \le T_{\max}$;
# `frequencies` (E',) and `alpha` (C,), in the dtype of the network, float32 or float64. Make the
# positions in that dtype (`torch.arange(T, dtype=alpha.dtype)`). Return $h$, (C, T), in that
# dtype, through which gradients flow to the parameters of `ffn`.
#
# `tfcourse.ImplicitFilter(C, max_len, num_features=E)` computes the same filters with its own
# network `.ffn`, its rates `.alpha` and the frequencies `torch.linspace(1e-4, E' - 1, E')`.
#
# - **Allowed:** `torch.arange`, `torch.cos`, `torch.sin`, `torch.exp`, `torch.cat`,
#   `torch.stack`, calling `ffn`, `.transpose`, `.T`, broadcasting.
# - **Not allowed:** `tfcourse.ImplicitFilter` (its `forward` and `window`) and
#   `tfcourse.hyena.positional_features` (the hidden tests check, with other frequencies).
# - **Pitfalls:** divide the positions by `max_len`, not by `T`, in the features and in the
#   window; the first feature is $t / T_{\max}$, not $t$; the sines carry a minus sign and come
#   after all the cosines; the window is $\exp(-\alpha_c t / T_{\max})$, not
#   $\exp(-\alpha_c t)$; `alpha` (C,) goes along the channel axis of the (C, T) filter,
#   `alpha[:, None]`; turn (T, C) into (C, T) with a transpose: a `reshape` or `view` to (C, T)
#   has the right shape and scrambles the taps.
#
# **Points:** self-check 2, hidden tests 2 (other widths and depths, one tap, $T = T_{\max}$,
# $C = T$, other frequencies, a shorter filter as the prefix of a longer one, float64, gradients
# to the network).

# %% nbgrader={"grade": false, "grade_id": "filter", "locked": false, "schema_version": 3, "solution": true, "task": false}
def implicit_filter(ffn: nn.Module, T: int, max_len: int, frequencies: torch.Tensor,
                    alpha: torch.Tensor) -> torch.Tensor:
    """(C, T): tap t of channel c is exp(−α_c t / max_len) · ffn(z_t)_c, with z_t the positional
    features (t/max_len, cos 2πft/max_len, −sin 2πft/max_len)."""
    ### BEGIN SOLUTION
    pos = torch.arange(T, dtype=alpha.dtype) / max_len  # (T,): t / max_len, not t / T
    angle = 2 * math.pi * pos[:, None] * frequencies[None, :]  # (T, E')
    z = torch.cat([pos[:, None], torch.cos(angle), -torch.sin(angle)], dim=-1)  # (T, E)
    h = ffn(z).transpose(0, 1)  # (T, C) -> (C, T)
    return h * torch.exp(-alpha[:, None] * pos[None, :])  # the window, one rate per channel
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "filter_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (2 points).
import warnings

import torch

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.hyena.ImplicitFilter.forward", "tfcourse.hyena.ImplicitFilter.window",
             "tfcourse.hyena.positional_features")
torch.manual_seed(3)
filt = tfcourse.ImplicitFilter(4, 32, num_features=9, width=16)  # C = 4, max_len = 32, E = 9
freqs = torch.linspace(1e-4, 3, 4)  # E' = 4 frequencies, those of ImplicitFilter
with torch.no_grad():
    want = filt(20)  # (C, T) = (4, 20): the first 20 taps of the filter of 32
    window = filt.window(20)  # (4, 20)
    per_t = tfcourse.ImplicitFilter(4, 20, num_features=9, width=16)  # max_len = T = 20
    per_t.ffn.load_state_dict(filt.ffn.state_dict())
    feats = filt.z[:20]  # (T, E): the positional features of ImplicitFilter
    plus_sin = torch.cat([feats[:, :5], -feats[:, 5:]], dim=-1)
    interleaved = torch.cat([feats[:, :1], torch.stack([feats[:, 1:5], feats[:, 5:]], dim=-1)
                             .flatten(1)], dim=-1)
    unscaled = torch.cat([feats[:, :1] * 32, feats[:, 1:]], dim=-1)
    mistakes = {
        "the positions are divided by T = 20 instead of max_len = 32: the filter of a shorter "
        "sequence must be the prefix of the longer one, so the features and the window use "
        "t / max_len": per_t(20),
        "the window is exp(-alpha t): it decays over t / max_len, exp(-alpha t / max_len)":
            want / window * torch.exp(-filt.alpha[:, None] * torch.arange(20.0)),
        "the window is missing: multiply channel c by exp(-alpha_c t / max_len)": want / window,
        "the sines have the wrong sign: the features are the real and imaginary parts of "
        "exp(-i 2 pi f t / max_len), so cos and then -sin":
            filt.ffn(plus_sin).T * window,
        "the features are interleaved (cos f1, -sin f1, cos f2, ...): the network expects the "
        "position, then all the cosines, then all the sines": filt.ffn(interleaved).T * window,
        "the first feature is the position t: it is t / max_len":
            filt.ffn(unscaled).T * window,
        "the (T, C) output of the network is reshaped to (C, T): that scrambles the taps, "
        "transpose it instead": filt.ffn(feats).reshape(4, 20) * window,
    }
name = "implicit_filter(ImplicitFilter(4, 32).ffn, T=20, max_len=32, 4 frequencies, alpha)"
with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 3"):
    try:
        got = implicit_filter(filt.ffn, 20, 32, freqs, filt.alpha)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. The features are (T, E) = (20, 9): the position, then the "
            "4 cosines, then the 4 sines; the network maps them to (T, C) = (20, 4); alpha "
            "(C,) goes along the channel axis of the (C, T) filter, alpha[:, None]") from None
checks.expect_shape(got, (4, 20), name,
                    hint="one filter of T = 20 taps per channel: transpose the network's (T, C) "
                         "output to (C, T)")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "filter_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (2 points) run when the notebook is graded. Here this cell only
# checks that implicit_filter runs.
import torch

import tfcourse

assert implicit_filter(tfcourse.ImplicitFilter(2, 8, num_features=5).ffn, 6, 8,
                       torch.linspace(1e-4, 1, 2), torch.ones(2)).shape == (2, 6)
### BEGIN HIDDEN TESTS
import copy
import warnings

import torch

import tfcourse.hyena
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(73)
    blocked = ("tfcourse.hyena.ImplicitFilter.forward", "tfcourse.hyena.ImplicitFilter.window",
               "tfcourse.hyena.positional_features")

    def _expected(network, length, longest, freq, rates):  # float64
        step = torch.arange(length, dtype=torch.float64) / longest
        phase = 2 * torch.pi * step[:, None] * freq.double()[None, :]
        feats = torch.cat([step[:, None], torch.cos(phase), -torch.sin(phase)], dim=-1)
        return network(feats).T * torch.exp(-rates.double()[:, None] * step)

    for width, longest, bands, hidden_width, depth, length, dtype, default_freqs in [
        (3, 16, 2, 8, 1, 16, torch.float32, True), (5, 40, 5, 8, 2, 1, torch.float64, False),
        (2, 24, 3, 12, 2, 9, torch.float64, False), (6, 12, 3, 4, 1, 6, torch.float32, False),
    ]:
        torch.manual_seed(int(torch.randint(1000, (1,), generator=gen)))
        module_ref = tfcourse.hyena.ImplicitFilter(width, longest, num_features=2 * bands + 1,
                                                   width=hidden_width, depth=depth).to(dtype)
        network = module_ref.ffn
        if default_freqs:
            freq = torch.linspace(1e-4, bands - 1, bands, dtype=dtype)
            rates = module_ref.alpha
        else:
            freq = (torch.rand(bands, generator=gen) * 3).to(dtype)
            rates = (torch.rand(width, generator=gen) * 8 + 1).to(dtype)
        twin = copy.deepcopy(network).double()
        expected = _expected(twin, length, longest, freq, rates)
        upstream = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
        expected_grads = torch.autograd.grad((expected * upstream).sum(),
                                             list(twin.parameters()))
        label = (f"implicit_filter(ffn to C = {width}, T={length}, max_len={longest}, "
                 f"{bands} frequencies), {dtype}")
        with checks.forbid(*blocked, task="Exercise 3"):
            result = implicit_filter(network, length, longest, freq, rates)
        checks.expect_close(result, expected.detach().to(dtype), label)
        result_grads = torch.autograd.grad((result * upstream.to(dtype)).sum(),
                                           list(network.parameters()), allow_unused=True)
        for (pname, _), got_grad, want_grad in zip(network.named_parameters(), result_grads,
                                                    expected_grads, strict=True):
            assert got_grad is not None, f"{label}: no gradient reaches the network's {pname}"
            checks.expect_close(got_grad, want_grad.to(dtype),
                                f"the gradient of the network's {pname} in {label}")
        if length < longest:  # the shorter filter is the prefix of the longer one
            with torch.no_grad(), checks.forbid(*blocked, task="Exercise 3"):
                full = implicit_filter(network, longest, longest, freq, rates)
            checks.expect_close(result.detach(), full[:, :length],
                                f"{label} against the first {length} taps of T = {longest}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "operator_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: the Hyena recurrence (4 points)
#
# A Hyena operator of order $N$ (section 3.1, Definition 3.1) turns its input into $N + 1$
# projections of shape (B, C, T), each a linear map followed by a short convolution
# (Exercise 2): a value $v$ and gates $x^1, \dots, x^N$. Then it alternates a long causal
# convolution, which mixes the positions with a filter that does not depend on the data, and a
# gate, which multiplies element by element with a projection of the data:
#
# $$\begin{aligned}
# z^1 &= v, \\
# z^{n+1} &= x^n \odot \big(h^n * z^n + b^n \odot z^n\big) \quad (n = 1, \dots, N), \\
# y &= z^{N+1}.
# \end{aligned}$$
#
# $h^n * z^n$ is the causal convolution of Exercise 1 with the long filter $h^n$ (C, T) of
# Exercise 3, each channel with its own filter; $b^n \in \mathbb{R}^C$ is a learned skip, one
# number per channel, broadcast over the batch and the positions (the released code adds it
# inside its FFT convolution: a tap at lag 0 that the filter network does not generate). The
# gate multiplies **after** the convolution and the skip, and the gates come in order: $x^1$
# gates the first convolution. For $N = 2$ this is the operator that the paper uses for
# language.
#
# ```
# v ─ conv h¹ (+ b¹ v) ─ ⊙ x¹ ─ z² ─ conv h² (+ b² z²) ─ ⊙ x² ─ z³ … ─ ⊙ x^N ─ y
# ```
#
# **Write** `hyena_operator(v, gates, filters, skips)`: `v` (B, C, T) floating point; `gates`
# a list (or tuple) of $N \ge 1$ tensors (B, C, T), $x^1$ first; `filters` (N, C, T), `filters[n]`
# the filter of step $n$; `skips` (N, C). Return $y = z^{N+1}$, (B, C, T), through which
# gradients flow to every input.
#
# - **Allowed:** a causal convolution by FFT: your `fft_causal_conv` of Exercise 1, or
#   `tfcourse.fft_causal_conv`. With the second, this exercise is graded on its own: a mistake
#   in Exercise 1 then costs no points here. Loops, `*`, `+`, indexing.
# - **Not allowed:** `tfcourse.HyenaOperator` (its `forward`; the hidden tests check).
# - **Pitfalls:** the gate multiplies the convolution's output, not its input; take the gates in
#   order, `gates[0]` first, with `filters[0]` and `skips[0]`; the skip is inside the gate,
#   $x^n \odot (h^n * z^n + b^n \odot z^n)$; `skips[n]` is (C,): `skips[n, :, None]` broadcasts it
#   along the positions of (B, C, T); the convolution is causal, not circular; write the loop for
#   any $N$, not two named gates.
#
# **Points:** self-check 2 (order 2, against `tfcourse.HyenaOperator`), hidden tests 2 (orders 1
# and 3, a batch of one, $T = 1$, float32, gradients to the value, the gates, the filters and the
# skips).

# %% nbgrader={"grade": false, "grade_id": "operator", "locked": false, "schema_version": 3, "solution": true, "task": false}
def hyena_operator(v: torch.Tensor, gates, filters: torch.Tensor,
                   skips: torch.Tensor) -> torch.Tensor:
    """z¹ = v, z^{n+1} = x^n ⊙ (h^n ∗ z^n + b^n ⊙ z^n); returns z^{N+1}, (B, C, T)."""
    ### BEGIN SOLUTION
    z = v  # (B, C, T)
    for n, gate in enumerate(gates):
        long = tfcourse.fft_causal_conv(z, filters[n])  # (B, C, T), causal
        z = gate * (long + skips[n, :, None] * z)  # the gate after the convolution
    return z
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "operator_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (2 points).
import warnings

import torch

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.hyena.HyenaOperator.forward",)
torch.manual_seed(4)
op = tfcourse.HyenaOperator(4, 16, order=2, filter_width=8, filter_features=5).double()
with torch.no_grad():
    op.skip.normal_()  # b¹, b² (N, C): large enough to matter
x = torch.randn(2, 12, 4, dtype=torch.float64)  # (B, T, C), the operator's own layout
seen = []
hook = op.out_proj.register_forward_hook(lambda module, args, out: seen.append(args[0]))
with torch.no_grad():
    op(x)  # records z³, transposed to (B, T, C), on its way into out_proj
    hook.remove()
    projections = op.short_conv(op.in_proj(x).transpose(1, 2))  # (B, 3C, T)
    v, *gates = projections.split(4, dim=1)  # v, x¹, x²: (B, C, T) each
    filters, skips = op.filters(12), op.skip  # (N, C, T), (N, C)
    want = seen[0].transpose(1, 2)  # z³, (B, C, T)


def steps(order, gate_first=False, skip=True, skip_inside=True, n_fft=24):
    z = v
    for gate, h, b in order:
        inner = gate * z if gate_first else z
        spectrum = torch.fft.rfft(inner, n=n_fft) * torch.fft.rfft(h, n=n_fft)
        long = torch.fft.irfft(spectrum, n=n_fft)[..., :12]
        lag0 = b[:, None] * inner if skip else 0
        z = (long + lag0 if gate_first else gate * (long + lag0)) if skip_inside else (
            gate * long + lag0)
    return z


with torch.no_grad():
    forward = list(zip(gates, filters, skips, strict=True))
    mistakes = {
        "the gate multiplies the input of the convolution: it multiplies its output, "
        "z = gate * (conv(z, h) + b * z)": steps(forward, gate_first=True),
        "the gates are taken in the reverse order: gates[0] gates the first convolution":
            steps(list(zip(gates[::-1], filters, skips, strict=True))),
        "the filters are taken in the reverse order: filters[0] is the filter of the first "
        "convolution": steps(list(zip(gates, filters.flip(0), skips, strict=True))),
        "the skip b^n * z^n is missing: z = gate * (conv(z, h) + skips[n, :, None] * z)":
            steps(forward, skip=False),
        "the skip is outside the gate: z = gate * (conv(z, h) + b * z), not "
        "gate * conv(z, h) + b * z": steps(forward, skip_inside=False),
        "the convolution is circular (an FFT of n = T points): it must be causal, "
        "fft_causal_conv": steps(forward, n_fft=12),
    }
name = "hyena_operator(v (2, 4, 12), 2 gates, filters (2, 4, 12), skips (2, 4)), float64"
with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 4"):
    try:
        got = hyena_operator(v, gates, filters, skips)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. filters[n] is (C, T) and skips[n] is (C,): skips[n, :, "
            "None] broadcasts along the positions of (B, C, T)") from None
checks.expect_shape(got, (2, 4, 12), name, hint="z has the shape of v, (B, C, T)")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "operator_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (2 points) run when the notebook is graded. Here this cell only
# checks that hyena_operator runs.
import torch

assert hyena_operator(torch.zeros(1, 2, 5), [torch.zeros(1, 2, 5)] * 2, torch.zeros(2, 2, 5),
                      torch.zeros(2, 2)).shape == (1, 2, 5)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.hyena
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(74)
    blocked = ("tfcourse.hyena.HyenaOperator.forward",)
    for order, batch, width, length, dtype, as_tuple in [
        (1, 1, 3, 7, torch.float64, False), (3, 2, 2, 9, torch.float32, True),
        (3, 1, 4, 1, torch.float64, False), (2, 2, 3, 10, torch.float64, True),
    ]:
        value = torch.randn(batch, width, length, generator=gen, dtype=dtype)
        gate_list = [torch.randn(batch, width, length, generator=gen, dtype=dtype)
                     for _ in range(order)]
        decay = torch.exp(-0.3 * torch.arange(length, dtype=dtype))
        taps = torch.randn(order, width, length, generator=gen, dtype=dtype) * decay
        lag0 = torch.randn(order, width, generator=gen, dtype=dtype)
        leaves = [t.double().requires_grad_() for t in (value, *gate_list, taps, lag0)]
        z = leaves[0]
        for n in range(order):
            conv = tfcourse.hyena.direct_causal_conv(z, leaves[-2][n])
            z = leaves[1 + n] * (conv + leaves[-1][n, :, None] * z)
        upstream = torch.randn(z.shape, generator=gen, dtype=torch.float64)
        expected_grads = torch.autograd.grad((z * upstream).sum(), leaves)
        inputs = [t.clone().requires_grad_() for t in (value, *gate_list, taps, lag0)]
        given = tuple(inputs[1:1 + order]) if as_tuple else list(inputs[1:1 + order])
        label = (f"hyena_operator of order {order}, v ({batch}, {width}, {length}), {dtype}")
        with checks.forbid(*blocked, task="Exercise 4"):
            result = hyena_operator(inputs[0], given, inputs[-2], inputs[-1])
        checks.expect_close(result, z.detach().to(dtype), label)
        result_grads = torch.autograd.grad((result * upstream.to(dtype)).sum(), inputs,
                                           allow_unused=True)
        parts = ["v", *(f"gates[{n}]" for n in range(order)), "filters", "skips"]
        for part, got_grad, want_grad in zip(parts, result_grads, expected_grads, strict=True):
            assert got_grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(got_grad, want_grad.to(dtype),
                                f"the gradient of {part} in {label}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "leak_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 5: does an operator read the future? (3 points)
#
# A language model predicts the token at $t + 1$ from the tokens up to $t$, so every layer must
# be **causal**: its output at $t$ depends on its inputs at $t$ and before, and on nothing after.
# The exercises above show how easily that breaks: an FFT of $T$ points wraps the end of the
# sequence around to its start, symmetric padding lets position $t$ read $t + 1$. It can be
# tested without reading the code: change the inputs after $t$ and see whether an output at or
# before $t$ moves.
#
# ```
# cut t:  x[..., :t+1] kept, x[..., t+1:] changed  →  op(changed) − op(x) at positions 0 … t
#         moved by more than atol?  then op reads the future
# ```
#
# Two things make the test honest. **A tolerance**: an FFT mixes every position in its
# arithmetic, so even a causal convolution by FFT moves its early outputs by about $10^{-7}$ in
# float32 when the late inputs change. Such rounding is not a leak, so count an output as moved
# only when it changed by more than `atol`. **Every cut**: a leak may be at one position only
# (the second-to-last output reading the last input), so try each cut $t$, not only the middle
# of the sequence.
#
# **Write** `leaks_future(op, x, atol=1e-5)`: `op` a function that maps (B, C, T) inputs to
# (B, C, T) outputs, position on the last axis; `x` (B, C, T) floating point, the input to test
# at. For each cut $t = 0, \dots, T - 2$: change the inputs at the positions $t + 1, \dots, T - 1$
# (in every channel and every batch row, by an amount of order one: add 1, or draw standard
# normal noise) and leave the positions $0, \dots, t$ as they are, compute `op`, and compare its
# outputs at positions $0, \dots, t$ with those of `op(x)`. Return the Python bool `True` when,
# for some cut, an output changed by more than `atol` (absolute difference); otherwise `False`.
# Do not change `x`.
#
# - **Allowed:** `clone`, slicing, `torch.no_grad`, `torch.randn_like`, `abs`, `max`,
#   comparisons, loops, `bool`.
# - **Not allowed:** `tfcourse.checks.expect_causal` (the hidden tests check).
# - **Pitfalls:** `torch.equal`, `==` or `> 0` report rounding as a leak: compare with the
#   tolerance; change the inputs **after** $t$, not from $t$ on (the output at $t$ may read the
#   input at $t$); compare the outputs up to $t$, not all of them (the later ones may read the
#   changed inputs); try every cut, not only the middle; `changed = x` is not a copy: clone
#   first; use the `atol` you are given; return a Python bool (`bool(...)`), not a tensor.
#
# **Points:** self-check 1, hidden tests 2 (a leak at one cut only, a leak from the far end, a
# leak of either sign, a tiny leak below the tolerance and a small one above it, a faint leak at
# one position of a long sequence, a small leak on large outputs, a leak in one channel only or
# in one batch row only, another `atol`, float64, a batch of one, $T = 1$ and $T = 2$, `x`
# unchanged).

# %% nbgrader={"grade": false, "grade_id": "leak", "locked": false, "schema_version": 3, "solution": true, "task": false}
def leaks_future(op, x: torch.Tensor, atol: float = 1e-5) -> bool:
    """True when changing the inputs after some position t moves an output at or before t by
    more than atol; False otherwise."""
    ### BEGIN SOLUTION
    T = x.shape[-1]
    with torch.no_grad():
        base = op(x)  # (B, C, T)
        for t in range(T - 1):
            changed = x.clone()
            changed[..., t + 1:] = torch.randn_like(changed[..., t + 1:])  # the future only
            moved = (op(changed) - base)[..., :t + 1].abs()  # positions 0 … t
            if moved.max() > atol:
                return True
    return False
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "leak_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 5 (1 point).
import warnings

import torch
import torch.nn.functional as F

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.checks.expect_causal",)
torch.manual_seed(5)
x = torch.randn(2, 3, 12)  # (B, C, T), float32
saved = x.clone()
k = torch.randn(3, 12) * torch.exp(-0.3 * torch.arange(12.0))  # (C, T), a decaying filter
w = torch.randn(3, 1, 3)  # (C, 1, K), a short filter
short = tfcourse.ShortConv(3)
operator = tfcourse.HyenaOperator(3, 12)


def circular(u):
    """The circular convolution of T points: its wrapped taps read the end of the sequence."""
    return torch.fft.irfft(torch.fft.rfft(u) * torch.fft.rfft(k), n=12)


def check(op, label, expected, hint):
    with checks.forbid(*forbidden, task="Exercise 5"):
        got = leaks_future(op, x)
    assert torch.equal(x, saved), (
        "leaks_future changed x: changed = x is not a copy; clone before changing the future")
    assert isinstance(got, bool), (
        f"leaks_future returned a {type(got).__name__}, expected a Python bool: return bool(...)")
    assert got is expected, f"leaks_future on {label}: {got}, expected {expected}. {hint}"


def twice(u):
    return 2 * u


def delay(u):
    return F.pad(u, (1, 0))[..., :-1]


check(twice, "u -> 2u", False,
      "The output at t reads the input at t, which must stay as it is: change the inputs "
      "after t (x[..., t + 1:]) and compare the outputs up to t (x[..., :t + 1]) only")
check(delay, "a delay by one position, y_t = u_{t-1}", False,
      "Compare the outputs at positions 0 to t only: the later ones may read the inputs that "
      "you changed")
check(lambda u: tfcourse.fft_causal_conv(u, k), "tfcourse.fft_causal_conv in float32", False,
      "Its early outputs move by about 1e-7 when the late inputs change: that is rounding, not "
      "a leak. Compare with the tolerance, (new - old).abs().max() > atol, not with "
      "torch.equal, == or > 0")
check(circular, "a circular convolution of T points", True,
      "Its wrapped taps read the end of the sequence: change every input after t, and try "
      "every cut t")
check(lambda u: F.conv1d(u, w, padding=1, groups=3), "a short convolution padded on both sides",
      True, "Its output at t reads t + 1: try every cut t = 0 ... T - 2")
check(short, "tfcourse.ShortConv", False, "It is causal")
check(lambda u: operator(u.transpose(1, 2)).transpose(1, 2), "tfcourse.HyenaOperator", False,
      "It is causal")

# %% nbgrader={"grade": true, "grade_id": "leak_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 5 (2 points) run when the notebook is graded. Here this cell only
# checks that leaks_future runs.
import torch

assert leaks_future(lambda u: u.cumsum(-1), torch.zeros(1, 2, 4)) is False
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.hyena
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(75)
    torch.manual_seed(76)
    blocked = ("tfcourse.checks.expect_causal",)

    def _last_cut_only(u):  # the second-to-last output reads the last input
        out = u.clone()
        out[..., -2] = out[..., -2] + 0.5 * u[..., -1]
        return out

    def _far_end(u):  # the first output reads the last input
        out = u.cumsum(-1)
        out[..., 0] = out[..., 0] + 0.5 * u[..., -1]
        return out

    def _next_negative(u):  # y_t = u_t − 0.1 u_{t+1}: the change can be negative
        return u - 0.1 * torch.nn.functional.pad(u[..., 1:], (0, 1))

    def _faint(u, scale):  # every output plus a multiple of the sum over all positions
        return u + scale * u.sum(-1, keepdim=True)

    def _recentred(u):  # causal in mathematics; the mean over the positions rounds
        y = u.cumsum(-1) * 1.7
        centre = y.mean(-1, keepdim=True)
        return (y - centre) + centre

    taps = torch.randn(2, 10, generator=gen) * torch.exp(-0.3 * torch.arange(10.0))

    def _circular(u):
        n = u.shape[-1]
        return torch.fft.irfft(torch.fft.rfft(u) * torch.fft.rfft(taps[:, :n].to(u.dtype)), n=n)

    def _fft(u):
        return tfcourse.hyena.fft_causal_conv(u, taps[:, :u.shape[-1]].to(u.dtype))

    def _faint_one_position(u):  # of 32 positions, only the second-to-last reads the last, by 1e-4
        out = u.clone()
        out[..., -2] = out[..., -2] + 1e-4 * u[..., -1]
        return out

    def _large(u):  # 1000 + u_t + 1e-3 u_(t+1): a leak far below 1e-5 of the outputs' size
        return 1000 + u + 1e-3 * torch.nn.functional.pad(u[..., 1:], (0, 1))

    def _second_channel(u):  # only channel 1 reads its next position
        out = u.clone()
        out[:, 1, :-1] = out[:, 1, :-1] + 0.5 * u[:, 1, 1:]
        return out

    def _bright_rows(u):  # leaks in the batch rows whose mean exceeds 5 only
        bright = (u.mean(dim=(1, 2)) > 5).to(u.dtype)[:, None, None]  # (B, 1, 1)
        return u + 0.5 * bright * torch.nn.functional.pad(u[..., 1:], (0, 1))

    def _second_row_bright(u):  # the second batch row's inputs around 10: it alone leaks
        return u + torch.tensor([0.0, 10.0], dtype=u.dtype)[:, None, None]

    cases = [
        ("a leak at the last cut only", _last_cut_only, (2, 2, 10), torch.float32, 1e-5, True),
        ("a leak from the last position to the first", _far_end, (1, 2, 8), torch.float64,
         1e-5, True),
        ("y_t = u_t - 0.1 u_(t+1)", _next_negative, (1, 2, 6), torch.float32, 1e-5, True),
        ("every output plus 1e-3 x the sum over the positions", lambda u: _faint(u, 1e-3),
         (2, 2, 6), torch.float32, 1e-5, True),
        ("every output plus 1e-9 x the sum over the positions (below the tolerance)",
         lambda u: _faint(u, 1e-9), (2, 2, 6), torch.float32, 1e-5, False),
        ("every output plus 1e-3 x the sum over the positions, atol = 0.1",
         lambda u: _faint(u, 1e-3), (1, 2, 6), torch.float32, 0.1, False),
        ("a running sum recentred over the positions and shifted back", _recentred, (2, 2, 10),
         torch.float32, 1e-5, False),
        ("a circular convolution, float64", _circular, (1, 2, 10), torch.float64, 1e-5, True),
        ("a circular convolution of two positions", _circular, (2, 2, 2), torch.float32, 1e-5,
         True),
        ("a causal convolution by FFT, float64", _fft, (1, 2, 10), torch.float64, 1e-9, False),
        ("a causal convolution by FFT, one position", _fft, (2, 2, 1), torch.float32, 1e-5,
         False),
        ("an operator whose second-to-last output reads the last input by 1e-4, of 32 "
         "positions", _faint_one_position, (2, 4, 32), torch.float32, 1e-5, True),
        ("y_t = 1000 + u_t + 1e-3 u_(t+1), large outputs", _large, (2, 3, 8), torch.float64,
         1e-5, True),
        ("an operator whose channel 1 alone reads the future, of 3 channels", _second_channel,
         (2, 3, 6), torch.float32, 1e-5, True),
        ("an operator that leaks in its second batch row only (the larger inputs)", _bright_rows,
         (2, 2, 6), torch.float32, 1e-5, True),
    ]
    hints = {
        "by 1e-4": "compare the largest change of an output with atol: a mean over the outputs "
                   "averages a faint leak away",
        "large outputs": "compare the absolute difference with atol alone: torch.allclose adds "
                         "rtol * |b| (1e-5 of 1000 is 0.01), pass rtol=0",
        "channel 1": "change the inputs after t in every channel, x[..., t + 1:], not in one",
        "second batch row": "change the inputs after t in every batch row, and compare every "
                            "row",
        "u_t - 0.1": "compare the absolute change, (new - old).abs(): an output that moves down "
                     "moves too",
        "atol = 0.1": "use the atol you are given",
        "two positions": "with T = 2 there is one cut, t = 0: try every cut t = 0, ..., T - 2",
    }
    for label, fn, shape, dtype, tolerance, expected_answer in cases:
        signal = torch.randn(*shape, generator=gen, dtype=dtype)
        if "second batch row" in label:
            signal = _second_row_bright(signal)
        untouched = signal.clone()
        with checks.forbid(*blocked, task="Exercise 5"):
            answer = leaks_future(fn, signal, tolerance)
        assert torch.equal(signal, untouched), f"leaks_future changed x ({label})"
        assert isinstance(answer, bool), (
            f"leaks_future returned a {type(answer).__name__} for {label}, not a bool")
        hint = next((h for key, h in hints.items() if key in label), None)
        assert answer is expected_answer, (
            f"leaks_future on {label}, x {shape} {dtype}, atol={tolerance}: {answer}, "
            f"expected {expected_answer}" + (f": {hint}" if hint else ""))
    return True


assert _hidden_tests()
### END HIDDEN TESTS
