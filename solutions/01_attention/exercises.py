# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 1 exercises: attention from scratch
#
# Five graded exercises build multi-head attention from its parts, in the order of the lesson:
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `softmax`, numerically stable | 3 |
# | 2 | `causal_mask` | 2 |
# | 3 | `scaled_dot_product_attention` | 5 |
# | 4 | `split_heads` and `merge_heads` | 3 |
# | 5 | `MultiHeadAttention.forward` | 5 |
# | | **total** | **18** |
#
# **How to work.** Write your code between the function's first lines and the end of its cell,
# replacing `raise NotImplementedError()`. Under each exercise, a *self-check* cell tests the main
# contract: run it, and when it fails, read the message, which names the most likely mistake.
# A second cell holds the *hidden tests*: when your notebook is graded they probe what the
# self-check does not (other shapes, masks, dtypes and devices, edge cases, gradients) and make
# sure the work is your own, so a call to a ready-made implementation (PyTorch's or `tfcourse`'s)
# earns no points. Each exercise says what you may use.
#
# Do not rename the functions or delete cells; if you delete a test cell it is put back and run
# when your notebook is graded. Grading runs every cell from the top in a fresh kernel, and a cell
# that runs longer than 20 seconds is stopped (a test cell stopped so scores zero). Before you
# submit, choose *Restart kernel and run all cells* and check that every self-check passes.
#
# Shapes use the course's letters: `B` batch, `T` queries, `S` keys, `C` model width, `H` heads,
# `D = C / H` width of one head ($d_k$ in the paper).

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
from torch import nn

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "softmax_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: a numerically stable softmax (3 points)
#
# The softmax turns a row of real numbers into a probability distribution:
#
# $$\operatorname{softmax}(x)_i = \frac{e^{x_i}}{\sum_j e^{x_j}}.$$
#
# Written as it stands it breaks on large inputs: $e^{x}$ overflows to `inf` for $x > 88.7$ in
# float32 ($x > 11.1$ in float16), and `inf / inf` is `nan`; very negative inputs underflow to
# `0 / 0`, also `nan`. The cure costs one subtraction. Because
# $e^{x_i - m} / \sum_j e^{x_j - m} = e^{x_i} / \sum_j e^{x_j}$ for any constant $m$, take the
# row's maximum $m = \max_j x_j$:
#
# $$\operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \qquad m = \max_j x_j .$$
#
# Every exponent is now $\le 0$, so nothing overflows, and the largest term is exactly $e^0 = 1$,
# so the denominator is at least 1.
#
# **Write** `softmax(x, dim=-1)`: `x` is a floating-point tensor of any shape; return a tensor of
# the same shape and dtype whose slices along `dim` are probability distributions.
#
# - **Allowed:** element-wise arithmetic, `exp`, `amax` / `max`, `sum`.
# - **Not allowed:** `torch.softmax`, `torch.nn.functional.softmax`, `Tensor.softmax`,
#   `log_softmax` and their relatives (the hidden tests check).
# - **Pitfalls:** pass `keepdim=True` to the max and to the sum, so that a (4, 6) input gives a
#   (4, 1) maximum that broadcasts back over the row; without it the division fails or, worse,
#   silently broadcasts the wrong way. `x.max(dim)` returns `(values, indices)`; `x.amax(dim)`
#   returns the values only. An entry equal to `-inf` (a masked score) must get probability 0.
#
# **Points:** self-check 1, hidden tests 2 (other shapes and `dim`s, float64, float16 and bfloat16,
# very large inputs, `-inf` entries, gradients).

# %% nbgrader={"grade": false, "grade_id": "softmax", "locked": false, "schema_version": 3, "solution": true, "task": false}
def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``x`` along ``dim``, computed without overflow."""
    ### BEGIN SOLUTION
    shifted = x - x.amax(dim=dim, keepdim=True)  # every exponent <= 0: exp cannot overflow
    exp = shifted.exp()
    return exp / exp.sum(dim=dim, keepdim=True)  # the maximum contributes exp(0) = 1
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "softmax_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
x = torch.randn(4, 6)
with checks.forbid("torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax",
                   task="Exercise 1"):
    got = softmax(x)
    got_dim0 = softmax(x, dim=0)
    big = torch.tensor([[1000.0, 1001.0, 1002.0], [-1000.0, -1001.0, -1002.0]])
    got_big = softmax(big)
e = x.exp()
checks.expect_rows_sum_to_one(got, dim=-1, name="softmax(x)")
checks.expect_close(got, e / e.sum(-1, keepdim=True), "softmax(x)", mistakes={
    "the sum runs over the wrong axis: sum over dim, with keepdim=True":
        e / e.sum(0, keepdim=True),
    "the sum runs over every entry of x: sum over dim only": e / e.sum(),
    "this is x / sum(x): take the exponential first": x / x.sum(-1, keepdim=True),
})
checks.expect_close(got_dim0, e / e.sum(0, keepdim=True), "softmax(x, dim=0)", mistakes={
    "softmax(x, dim=0) normalised the last axis: use the dim argument, not -1":
        e / e.sum(-1, keepdim=True),
})
checks.expect_finite(got_big, "softmax of [[1000, 1001, 1002], [-1000, -1001, -1002]]",
                     hint="exp(1000) overflows to inf and exp(-1000) underflows to 0: subtract "
                          "the row's maximum before the exponential")
expected_big = torch.tensor([[0.09003057, 0.24472847, 0.66524096],
                             [0.66524096, 0.24472847, 0.09003057]])
checks.expect_close(got_big, expected_big, "softmax of large logits",
                    hint="subtract each row's own maximum (amax(dim, keepdim=True))")
assert got.shape == x.shape

# %% nbgrader={"grade": true, "grade_id": "softmax_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (2 points) run when the notebook is graded. Here this cell only
# checks that softmax runs.
import torch

assert softmax(torch.zeros(3)).shape == (3,)
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(11)
    cases = [  # (input, dim): other shapes and axes, large values, every floating dtype
        (torch.randn(2, 3, 5, generator=gen), -1),
        (torch.randn(2, 3, 5, generator=gen), 1),
        (torch.randn(2, 3, 5, generator=gen) * 40, 0),
        (torch.randn(7, generator=gen) * 500, 0),
        (torch.randn(3, 4, generator=gen, dtype=torch.float64) * 300, -1),
        (torch.randn(3, 4, generator=gen, dtype=torch.float64), -2),
        ((torch.randn(3, 8, generator=gen) * 30).half(), -1),
        ((torch.randn(3, 8, generator=gen) * 30).bfloat16(), -1),
        (torch.randn(4, 1, generator=gen), -1),
    ]
    masked = torch.randn(3, 6, generator=gen)
    masked[0, 2:] = float("-inf")
    masked[1, 0] = float("-inf")
    cases.append((masked, -1))
    expected = [torch.softmax(x.double(), dim).to(x.dtype) for x, dim in cases]
    xg = torch.randn(3, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    (grad_expected,) = torch.autograd.grad((torch.softmax(xg, -1) * weights).sum(), xg)
    forbidden = (
        "torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax",
        "torch.special.softmax", "torch._softmax", "torch.log_softmax",
        "torch.nn.functional.log_softmax", "torch.Tensor.log_softmax", "torch.special.log_softmax",
        "torch._log_softmax", "torch.nn.functional.softmin", "torch.nn.functional.gumbel_softmax",
    )
    with checks.forbid(*forbidden, task="Exercise 1"):
        results = [softmax(x, dim) for x, dim in cases]
        (grad,) = torch.autograd.grad((softmax(xg, -1) * weights).sum(), xg)
        checks.expect_finite_grads(lambda t: softmax(t * 1000, -1),
                                   torch.randn(2, 5, generator=gen), name="softmax of large inputs")
    for (x, dim), got, want in zip(cases, results, expected, strict=True):
        checks.expect_close(got, want, f"softmax of a {x.dtype} {tuple(x.shape)} tensor, dim={dim}")
    checks.expect_close(grad, grad_expected, "the gradient of softmax")
    assert all(got.dtype == x.dtype for (x, _), got in zip(cases, results, strict=True))
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "causal_mask_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: the causal mask (2 points)
#
# A decoder predicts token $t+1$ from tokens $0, \dots, t$, so when it is trained on a whole
# sequence at once, query $t$ must not see any key after position $t$. The causal mask says which
# (query, key) pairs are allowed:
#
# $$M_{ts} = \begin{cases} \text{True} & s \le t \quad\text{(query } t \text{ may attend to key } s\text{)}\\
# \text{False} & s > t \quad\text{(key } s \text{ is in the future of query } t\text{)}\end{cases}$$
#
# Rows are queries, columns keys; for $T = 4$:
#
# ```
#            key s:  0      1      2      3
# query t = 0     True   False  False  False
# query t = 1     True   True   False  False
# query t = 2     True   True   True   False
# query t = 3     True   True   True   True
# ```
#
# The course's convention is PyTorch's `F.scaled_dot_product_attention`'s: **True = may attend**.
# (`nn.MultiheadAttention` uses the opposite, True = blocked; we never do.)
#
# **Write** `causal_mask(T, device=None)`: return a `torch.bool` tensor of shape (T, T) on
# `device`.
#
# - **Allowed:** `torch.ones`, `torch.tril` / `torch.triu`, `torch.arange` and comparisons.
# - **Not allowed:** `tfcourse.causal_mask` (the hidden tests check).
# - **Pitfalls:** `triu` keeps the *upper* triangle, the future; `tril(diagonal=-1)` drops the
#   diagonal, so a token cannot attend to itself and query 0 has no key at all; a float mask of
#   0s and 1s is not a boolean mask (an attention function would add it to the scores).
#
# **Points:** self-check 1, hidden tests 1 (other sizes, `T = 1`, the `device` argument,
# as a string or a `torch.device`: the mask is created there).

# %% nbgrader={"grade": false, "grade_id": "causal_mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def causal_mask(T: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (T, T) mask, True where query t may attend to key s (s <= t)."""
    ### BEGIN SOLUTION
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()  # (T, T): s <= t
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "causal_mask_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
with checks.forbid("tfcourse.masks.causal_mask", task="Exercise 2"):
    got = causal_mask(4)
checks.expect_shape(got, (4, 4), "causal_mask(4)")
assert got.dtype == torch.bool, (
    f"causal_mask(4) has dtype {got.dtype}: return a bool mask (True = may attend), for example "
    "with torch.ones(T, T, dtype=torch.bool, device=device)"
)
lower = torch.ones(4, 4, dtype=torch.bool).tril()
checks.expect_close(got, lower, "causal_mask(4)", mistakes={
    "True above the diagonal lets each query see the future: keep the lower triangle (tril), "
    "not the upper one (triu)": torch.ones(4, 4, dtype=torch.bool).triu(),
    "the mask is inverted: True must mean 'may attend' (nn.MultiheadAttention's True = blocked "
    "is the opposite convention)": ~lower,
    "the diagonal is False: a position must be able to attend to itself (tril(), not "
    "tril(diagonal=-1))": lower.tril(diagonal=-1),
    "the diagonal is missing and the mask is upside down: use tril()":
        lower.tril(diagonal=-1).T,
})
assert bool(got[3].all()) and not bool(got[0, 1:].any())

# %% nbgrader={"grade": true, "grade_id": "causal_mask_hidden", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (1 point) run when the notebook is graded. Here this cell only
# checks that causal_mask runs.
assert causal_mask(2).shape == (2, 2)
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    sizes = (1, 2, 7, 33)
    with checks.forbid("tfcourse.masks.causal_mask", task="Exercise 2"):
        results = [causal_mask(T) for T in sizes]
        on_cpu = causal_mask(3, device=torch.device("cpu"))
        on_cpu_str = causal_mask(3, device="cpu")
        # The device argument, without a GPU. PyTorch's "meta" device holds shapes without data.
        # With meta as the default device, a mask asked for on the CPU must be on the CPU: a mask
        # made on the default device lands on meta. When that does not settle it (a mask made on
        # the default device, then moved), the mask asked for on meta must be there.
        with torch.device("meta"):
            try:
                asked_cpu = causal_mask(5, device="cpu")
            except (RuntimeError, NotImplementedError):
                asked_cpu = None
        on_meta = None
        if not (isinstance(asked_cpu, torch.Tensor) and asked_cpu.device.type == "cpu"):
            try:
                on_meta = causal_mask(5, device=torch.device("meta"))
            except (RuntimeError, NotImplementedError, TypeError) as error:
                raise checks.ContractError(
                    f"causal_mask(5, device=torch.device('meta')) fails ({error}): create the "
                    "mask on the device it is given, e.g. torch.ones(T, T, dtype=torch.bool, "
                    "device=device).tril()") from None
    for T, got in zip(sizes, results, strict=True):
        checks.expect_shape(got, (T, T), f"causal_mask({T})")
        assert got.dtype == torch.bool, f"causal_mask({T}) has dtype {got.dtype}, not torch.bool"
        rows, cols = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
        assert torch.equal(got, cols <= rows), f"causal_mask({T}) is not True exactly where s <= t"
    assert torch.equal(on_cpu, on_cpu_str) and on_cpu.shape == (3, 3)
    assert on_cpu.device.type == "cpu" and not on_cpu.requires_grad
    if on_meta is None:  # settled on the CPU
        assert torch.equal(asked_cpu, torch.ones(5, 5, dtype=torch.bool).tril()), (
            "causal_mask(5, device='cpu') is wrong when the default device is another one")
    else:
        assert isinstance(on_meta, torch.Tensor) and on_meta.device.type == "meta", (
            f"causal_mask(5, device=torch.device('meta')) returned a mask on "
            f"{getattr(on_meta, 'device', None)}: the device argument is ignored, so the mask "
            "stays on the CPU while the model runs on a GPU; pass device=device to the "
            "function that creates the mask")
        checks.expect_shape(on_meta, (5, 5), "causal_mask(5, device=torch.device('meta'))")
        assert on_meta.dtype == torch.bool, "causal_mask(5, device=...) is not torch.bool"
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "attention_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: scaled dot-product attention (5 points)
#
# Each query $q_t$ scores every key $k_s$ by a dot product, the scores become weights through a
# softmax over the keys, and the output is the weighted mean of the values (Vaswani et al., 2017,
# Eq. 1):
#
# $$\begin{aligned}
# \operatorname{Attention}(Q, K, V) &= \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}
# + M\right) V, \\
# M_{ts} &= \begin{cases} 0 & \text{mask}_{ts} = \text{True}\\ -\infty &
# \text{mask}_{ts} = \text{False} \end{cases}
# \end{aligned}$$
#
# **Why $\sqrt{d_k}$.** If the entries of $q$ and $k$ are independent with mean 0 and variance 1,
# then $q \cdot k = \sum_{i=1}^{d_k} q_i k_i$ has variance $d_k$. Without the division, wide
# heads give scores of size $\sqrt{d_k}$, the softmax saturates (one weight near 1, the others
# near 0) and its gradients vanish; dividing by $\sqrt{d_k}$ brings the scores back to variance 1.
#
# **Write** `scaled_dot_product_attention(q, k, v, mask=None)` returning `(output, weights)`:
#
# | argument | shape | |
# |---|---|---|
# | `q` | (..., T, D) | queries; `...` is any number of leading axes, e.g. (B, H) |
# | `k` | (..., S, D) | keys |
# | `v` | (..., S, D_v) | values |
# | `mask` | broadcasts to (..., T, S) | optional, `torch.bool`, True = may attend; e.g. (T, S) or (B, 1, 1, S) |
# | `weights` (returned) | (..., T, S) | each row sums to 1 over the keys |
# | `output` (returned) | (..., T, D_v) | `weights @ v` |
#
# Both results have the dtype of `q` (float32, float64, float16 or bfloat16). A query whose keys
# are **all** blocked (a row of the mask that is all False) gets a row of zero weights and a zero
# output, as PyTorch's `F.scaled_dot_product_attention` gives, not `nan`.
#
# - **Allowed:** `@` / `torch.matmul` / `torch.einsum`, `transpose`, `masked_fill`,
#   `torch.where`, `math.sqrt`, your `softmax` from Exercise 1 or `torch.softmax`.
# - **Not allowed:** `torch.nn.functional.scaled_dot_product_attention`, `nn.MultiheadAttention`,
#   the attention functions of `tfcourse` (the hidden tests check).
# - **Pitfalls:** the softmax runs over the keys, the last axis (`dim=-1`); the mask goes on the
#   scores *before* the softmax (zeroing weights after it leaves rows that no longer sum to 1);
#   fill blocked scores with `float("-inf")`, not `-1e9`, which does not fit in float16 (PyTorch
#   raises an error); a fully blocked row is then $e^{-\infty} / \sum e^{-\infty} = 0/0$ = `nan`,
#   so set such rows to zero after the softmax (`mask.any(dim=-1, keepdim=True)` tells which rows
#   have at least one key).
#
# **Points:** self-check 2, hidden tests 3 (heads and batches, T ≠ S, D_v ≠ D, broadcast masks,
# fully blocked rows, float64, float16, bfloat16, gradients, no ready-made attention).

# %% nbgrader={"grade": false, "grade_id": "attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(D) + M) v; returns (output (..., T, D_v), weights (..., T, S))."""
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T, S), of variance ~1
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # + M: blocked keys get exp(-inf) = 0
    weights = torch.softmax(scores, dim=-1)  # (..., T, S): a distribution over the keys
    if mask is not None:
        has_key = mask.any(dim=-1, keepdim=True)  # (..., T, 1): False for a fully blocked query
        weights = weights.masked_fill(~has_key, 0.0)  # its row was 0/0 = nan: make it 0
    return weights @ v, weights  # output (..., T, D_v) and weights (..., T, S)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "attention_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (2 points).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
B, T, S, D = 2, 3, 4, 8
q, k, v = torch.randn(B, T, D), torch.randn(B, S, D), torch.randn(B, S, D)
mask = torch.tensor([[True, True, False, False],
                     [True, True, True, False],
                     [False, True, True, True]])  # (T, S), True = may attend
forbidden = ("torch.nn.functional.scaled_dot_product_attention",
             "tfcourse.attention.scaled_dot_product_attention",
             "tfcourse.attention.fused_scaled_dot_product_attention")
with checks.forbid(*forbidden, task="Exercise 3"):
    out, weights = scaled_dot_product_attention(q, k, v)
    out_m, weights_m = scaled_dot_product_attention(q, k, v, mask)
checks.expect_shape(out, (B, T, D), "output",
                    hint="the output is weights @ v, of shape (B, T, D_v)")
checks.expect_shape(weights, (B, T, S), "weights",
                    hint="the weights are softmax(q @ k.transpose(-2, -1) / sqrt(D)), (B, T, S)")
scores = q @ k.transpose(-2, -1)  # (B, T, S), before scaling
want = torch.softmax(scores / D**0.5, dim=-1)
checks.expect_close(weights, want, "weights", mistakes={
    "you did not divide the scores by sqrt(d_k)": torch.softmax(scores, dim=-1),
    "you divided the scores by d_k instead of sqrt(d_k)": torch.softmax(scores / D, dim=-1),
    "the softmax runs over the query axis (dim=-2); it must run over the keys (dim=-1)":
        torch.softmax(scores / D**0.5, dim=-2),
})
checks.expect_rows_sum_to_one(weights, name="weights")
checks.expect_close(out, want @ v, "output", hint="the output is weights @ v")
blocked = scores.masked_fill(~mask, float("-inf")) / D**0.5
want_m = torch.softmax(blocked, dim=-1)
checks.expect_close(weights_m, want_m, "weights with a mask", mistakes={
    "the mask is applied after the softmax: fill the blocked scores with -inf, then take the "
    "softmax, so that each row still sums to 1":
        torch.softmax(scores / D**0.5, dim=-1).masked_fill(~mask, 0.0),
    "the mask is inverted: True means 'may attend', so fill the scores where the mask is False":
        torch.softmax(scores.masked_fill(mask, float("-inf")) / D**0.5, dim=-1),
    "the mask is ignored": want,
})
checks.expect_close(out_m, want_m @ v, "output with a mask", hint="the output is weights @ v")
assert out_m.dtype == q.dtype and weights_m.dtype == q.dtype

# %% nbgrader={"grade": true, "grade_id": "attention_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (3 points) run when the notebook is graded. Here this cell only
# checks that scaled_dot_product_attention runs.
import torch

assert len(scaled_dot_product_attention(*torch.ones(3, 1, 2, 4))) == 2
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.attention
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(33)

    def randn(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=dtype)

    B, H, T, S, D, Dv = 2, 3, 5, 7, 16, 6
    q, k, v = randn(B, H, T, D), randn(B, H, S, D), randn(B, H, S, Dv)
    padding = (torch.arange(S) < torch.tensor([4, 7])[:, None])[:, None, None, :]  # (B, 1, 1, S)
    cross = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)  # (T, S)
    full = torch.rand(B, H, T, S, generator=gen) < 0.6  # (B, H, T, S), random
    full[0, 1, 2] = False  # a query with no key at all
    full[1, 0, 4] = False
    cases = [(q, k, v, None), (q, k, v, padding), (q, k, v, cross), (q, k, v, full),
             (q[0, 0], k[0, 0], v[0, 0], cross),  # no leading axes: (T, D)
             (q.double(), k.double(), v.double(), full)]
    for dtype in (torch.float16, torch.bfloat16):
        scale = torch.tensor(3.0)  # larger scores, closer to what trained models produce
        cases.append(((q * scale).to(dtype), (k * scale).to(dtype), v.to(dtype), full))
    expected = []
    for qq, kk, vv, mm in cases:
        o, w = tfcourse.attention.scaled_dot_product_attention(
            qq.double(), kk.double(), vv.double(), mm)
        expected.append((o.to(qq.dtype), w.to(qq.dtype)))
    qg, kg, vg = (t.double().requires_grad_() for t in (q, k, v))
    grads_expected = torch.autograd.grad(
        tfcourse.attention.scaled_dot_product_attention(qg, kg, vg, full)[0].sum(), (qg, kg, vg))
    forbidden = (
        "torch.nn.functional.scaled_dot_product_attention",
        "torch.nn.functional.multi_head_attention_forward",
        "torch.nn.MultiheadAttention.forward",
        "tfcourse.attention.scaled_dot_product_attention",
        "tfcourse.attention.fused_scaled_dot_product_attention",
        "tfcourse.attention.MultiHeadAttention.forward",
    )
    with checks.forbid(*forbidden, task="Exercise 3"):
        results = [scaled_dot_product_attention(*case) for case in cases]
        out = scaled_dot_product_attention(qg, kg, vg, full)[0]
        grads = torch.autograd.grad(out.sum(), (qg, kg, vg))
    tolerance = {torch.float16: (2e-2, 2e-2), torch.bfloat16: (5e-2, 5e-2)}
    for (qq, _, _, mm), (o, w), (o_want, w_want) in zip(cases, results, expected, strict=True):
        rtol, atol = tolerance.get(qq.dtype, (None, None))
        where = f"q {tuple(qq.shape)} {qq.dtype}, mask {None if mm is None else tuple(mm.shape)}"
        checks.expect_finite(w, f"weights ({where})",
                             hint="a fully blocked query must get zero weights, not nan")
        checks.expect_close(w, w_want, f"weights ({where})", rtol=rtol, atol=atol)
        checks.expect_close(o, o_want, f"output ({where})", rtol=rtol, atol=atol)
    for name, g, g_want in zip("qkv", grads, grads_expected, strict=True):
        checks.expect_close(g, g_want, f"the gradient of q, k, v: d/d{name}",
                            hint="a fully blocked row must not give nan gradients")
    assert all(o.dtype == case[0].dtype for case, (o, _) in zip(cases, results, strict=True))
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "heads_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: splitting and merging heads (3 points)
#
# Multi-head attention runs $H$ attentions side by side, each on its own slice of the $C$
# channels: head $h$ uses channels $hD, \dots, (h+1)D - 1$ of every position, with
# $D = C / H$. In tensors, (B, T, C) becomes (B, H, T, D), so that one batched matrix product
# computes every head at once, and back:
#
# $$x_{b,t,\,hD + d} \;=\; \text{heads}_{b,h,t,d}, \qquad 0 \le h < H,\; 0 \le d < D .$$
#
# **Write** `split_heads(x, num_heads)`: (B, T, C) → (B, H, T, D), and `merge_heads(x)`:
# (B, H, T, D) → (B, T, C), its inverse. Do it in two steps each: cut the channel axis C into
# (H, D) with `view` or `reshape`, giving (B, T, H, D), then swap the T and H axes with
# `transpose(1, 2)`; merging undoes them in the opposite order.
#
# - **Allowed:** `view`, `reshape`, `transpose`, `permute`, `contiguous`.
# - **Not allowed:** `tfcourse.split_heads`, `tfcourse.merge_heads` (the hidden tests check).
# - **Pitfalls:** `x.view(B, H, T, D)` has the right shape and the wrong content: it cuts the
#   *sequence* into pieces rather than the channels of each position. After a `transpose` the
#   tensor is no longer contiguous in memory, so `view` raises an error there: use `reshape`
#   (or `.contiguous().view(...)`).
#
# **Points:** self-check 1, hidden tests 2 (other sizes, `H = 1` and `H = C`, inputs that are not
# contiguous, float64, gradients).

# %% nbgrader={"grade": false, "grade_id": "heads", "locked": false, "schema_version": 3, "solution": true, "task": false}
def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, D) with D = C / H."""
    ### BEGIN SOLUTION
    B, T, C = x.shape
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)  # (B,T,H,D) -> (B,H,T,D)
    ### END SOLUTION


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, C) with C = H * D: the inverse of split_heads."""
    ### BEGIN SOLUTION
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)  # back to (B, T, H, D), then (B, T, C)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "heads_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
B, T, C, H = 2, 3, 8, 2
D = C // H
x = torch.arange(B * T * C, dtype=torch.float32).reshape(B, T, C)
with checks.forbid("tfcourse.attention.split_heads", "tfcourse.attention.merge_heads",
                   task="Exercise 4"):
    heads = split_heads(x, H)
    merged = merge_heads(heads)
    want = torch.stack([x[:, :, h * D:(h + 1) * D] for h in range(H)], dim=1)  # (B, H, T, D)
    try:
        merged_contiguous = merge_heads(want)  # contiguous, like the output of attention
    except RuntimeError as error:
        raise checks.ContractError(
            f"merge_heads fails on a contiguous (B, H, T, D) tensor: {error}. After "
            "transpose(1, 2) the tensor is not contiguous in memory: use reshape, not view"
        ) from None
checks.expect_shape(heads, (B, H, T, D), "split_heads(x, 2)")
checks.expect_close(heads, want, "split_heads(x, 2)", mistakes={
    "x.view(B, H, T, D) cuts the sequence, not the channels: view as (B, T, H, D), then "
    "transpose(1, 2)": x.view(B, H, T, D),
    "the channels are cut as (D, H) instead of (H, D): head h must hold channels h*D to "
    "(h+1)*D - 1": x.view(B, T, D, H).permute(0, 3, 1, 2),
})
checks.expect_shape(merged, (B, T, C), "merge_heads(split_heads(x, 2))")
checks.expect_close(merged, x, "merge_heads(split_heads(x, 2))", mistakes={
    "merge_heads must undo split_heads: transpose(1, 2) back to (B, T, H, D) before the "
    "reshape to (B, T, C)": want.reshape(B, T, C),
})
checks.expect_close(merged_contiguous, x, "merge_heads of a contiguous (B, H, T, D) tensor")
assert torch.equal(merged, x)

# %% nbgrader={"grade": true, "grade_id": "heads_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (2 points) run when the notebook is graded. Here this cell only
# checks that split_heads and merge_heads run.
import torch

assert merge_heads(split_heads(torch.zeros(1, 2, 4), 2)).shape == (1, 2, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(44)
    cases = [(3, 5, 12, 3), (2, 7, 6, 1), (2, 4, 6, 6), (1, 1, 4, 2)]  # (B, T, C, H)
    with checks.forbid("tfcourse.attention.split_heads", "tfcourse.attention.merge_heads",
                       task="Exercise 4"):
        for B, T, C, H in cases:
            D = C // H
            x = torch.randn(B, T, C, generator=gen, dtype=torch.float64)
            want = x.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
            heads = split_heads(x, H)
            checks.expect_close(heads, want, f"split_heads of a {(B, T, C)} tensor, H={H}")
            checks.expect_close(merge_heads(heads), x, f"merge_heads(split_heads(x, {H}))")
            checks.expect_close(merge_heads(want.contiguous()), x, f"merge_heads, H={H}")
        x = torch.randn(5, 3, 8, generator=gen).transpose(0, 1)  # (3, 5, 8), not contiguous
        checks.expect_close(split_heads(x, 4), x.reshape(3, 5, 4, 2).transpose(1, 2),
                            "split_heads of a tensor that is not contiguous",
                            hint="view() needs a contiguous tensor: use reshape()")
        y = torch.randn(2, 4, 3, 5, generator=gen).transpose(1, 2)  # (B, H, T, D), not contiguous
        checks.expect_close(merge_heads(y), y.transpose(1, 2).reshape(2, 4, 15),
                            "merge_heads of a tensor that is not contiguous",
                            hint="view() needs a contiguous tensor: use reshape()")
        checks.expect_finite_grads(lambda t: merge_heads(split_heads(t, 2) * 2.0),
                                   torch.randn(2, 3, 4, generator=gen), name="split then merge")
    assert heads.dtype == torch.float64
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "mha_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 5: multi-head attention (5 points)
#
# Multi-head attention (Vaswani et al., 2017, section 3.2.2) projects the input $X$ (B, T, C)
# into queries, keys and values, runs one attention per head, concatenates the heads and mixes
# them with an output projection:
#
# $$\begin{aligned}
# \operatorname{MultiHead}(X) &= \operatorname{Concat}(\text{head}_1, \dots, \text{head}_H)\,
# W^O, \\
# \text{head}_h &= \operatorname{Attention}(XW_h^Q, XW_h^K, XW_h^V).
# \end{aligned}$$
#
# The $H$ matrices $W_h^Q$ (each $C \times D$) sit side by side in one $C \times C$ linear layer
# `q_proj`, so one matrix product projects every head at once and `split_heads` separates them;
# likewise `k_proj`, `v_proj`, and `out_proj` for $W^O$. The constructor is written for you; the
# tests copy the weights of a `torch.nn.MultiheadAttention` into these four layers and compare
# the outputs.
#
# **Write** `forward(x, mask=None)`: `x` is (B, T, C) and `mask` an optional `torch.bool` mask
# that broadcasts to (B, H, T, T), True = may attend (for example `causal_mask(T)`, or a padding
# mask of shape (B, 1, 1, T)). Return a (B, T, C) tensor. In four lines:
# project and split (B, T, C) → (B, H, T, D); attend, per head; merge (B, H, T, D) → (B, T, C);
# project with `out_proj`.
#
# - **Allowed:** the four layers, your `split_heads`, `merge_heads` (Exercise 4) and
#   `scaled_dot_product_attention` (Exercise 3), or the same computations written out.
# - **Not allowed:** `nn.MultiheadAttention`, `F.multi_head_attention_forward`,
#   `F.scaled_dot_product_attention`, the attention code of `tfcourse` (the hidden tests check).
# - **Pitfalls:** queries, keys and values each have their own projection; the output
#   projection $W^O$ is part of the layer, do not forget it; the scaling uses the width of one
#   head, $\sqrt{D}$, not $\sqrt{C}$ (your Exercise 3 function gets it right when it receives
#   (B, H, T, D) tensors).
#
# **Points:** self-check 2, hidden tests 3 (other widths and head counts, padding and causal
# masks, float64, causality, gradients, no ready-made attention). These tests pass only when your
# Exercises 3 and 4 are right too, if you use them.

# %% nbgrader={"grade": false, "grade_id": "mha", "locked": false, "schema_version": 3, "solution": true, "task": false}
class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: (B, T, C) -> (B, T, C)."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        assert d_model % num_heads == 0, "num_heads must divide d_model"
        self.d_model, self.num_heads = d_model, num_heads
        self.q_proj = nn.Linear(d_model, d_model)  # W^Q of all heads, side by side
        self.k_proj = nn.Linear(d_model, d_model)  # W^K
        self.v_proj = nn.Linear(d_model, d_model)  # W^V
        self.out_proj = nn.Linear(d_model, d_model)  # W^O

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        ### BEGIN SOLUTION
        q = split_heads(self.q_proj(x), self.num_heads)  # (B, H, T, D)
        k = split_heads(self.k_proj(x), self.num_heads)  # (B, H, T, D)
        v = split_heads(self.v_proj(x), self.num_heads)  # (B, H, T, D)
        out, _ = scaled_dot_product_attention(q, k, v, mask)  # (B, H, T, D)
        return self.out_proj(merge_heads(out))  # heads side by side, mixed by W^O: (B, T, C)
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "mha_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 5 (2 points).
import warnings

import torch
from torch import nn

from tfcourse import attention as reference
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
B, T, C, H = 2, 5, 8, 2
x = torch.randn(B, T, C)
causal = torch.ones(T, T, dtype=torch.bool).tril()
torch_mha = nn.MultiheadAttention(C, H, batch_first=True).eval()
model = MultiHeadAttention(C, H)
with torch.no_grad():  # copy nn.MultiheadAttention's weights into the four layers
    weights, biases = torch_mha.in_proj_weight.chunk(3), torch_mha.in_proj_bias.chunk(3)
    for proj, w, b in zip((model.q_proj, model.k_proj, model.v_proj), weights, biases,
                          strict=True):
        proj.weight.copy_(w)
        proj.bias.copy_(b)
    model.out_proj.load_state_dict(torch_mha.out_proj.state_dict())
    want = torch_mha(x, x, x, need_weights=False)[0]
    want_causal = torch_mha(x, x, x, attn_mask=~causal, need_weights=False)[0]  # True = blocked
    ref = reference.MultiHeadAttention(C, H, fused=False)
    ref.load_state_dict(model.state_dict())
    q, k, v = (reference.split_heads(p(x), H) for p in (ref.q_proj, ref.k_proj, ref.v_proj))
    attended = reference.scaled_dot_product_attention(q, k, v)[0]  # (B, H, T, D)
    mistakes = {
        "the output projection out_proj (W^O) is missing": reference.merge_heads(attended),
        "the heads are split with view(B, H, T, D), which cuts the sequence instead of the "
        "channels: see Exercise 4": ref.out_proj(reference.merge_heads(
            reference.scaled_dot_product_attention(
                *(p(x).view(B, H, T, C // H) for p in (ref.q_proj, ref.k_proj, ref.v_proj))
            )[0])),
        "the scores are divided by sqrt(C) instead of sqrt(D), the width of one head":
            ref.out_proj(reference.merge_heads(
                reference.scaled_dot_product_attention(q * (C // H / C) ** 0.5, k, v)[0])),
    }
with checks.forbid("torch.nn.functional.scaled_dot_product_attention",
                   "torch.nn.functional.multi_head_attention_forward",
                   "torch.nn.MultiheadAttention.forward",
                   "tfcourse.attention.MultiHeadAttention.forward",
                   "tfcourse.attention.scaled_dot_product_attention",
                   "tfcourse.attention.fused_scaled_dot_product_attention", task="Exercise 5"):
    got = model(x)
    got_causal = model(x, causal)
depends = ("forward uses your scaled_dot_product_attention, split_heads and merge_heads: "
           "make their self-checks (Exercises 3 and 4) pass first")
checks.expect_close(got, want, "MultiHeadAttention(8, 2)(x)", mistakes=mistakes, hint=depends)
checks.expect_close(got_causal, want_causal, "MultiHeadAttention(8, 2)(x, causal_mask)",
                    mistakes={"the mask is ignored": want,
                              "the mask is inverted: True means 'may attend'":
                                  ref(x, mask=~causal).detach()}, hint=depends)
assert got.shape == (B, T, C)

# %% nbgrader={"grade": true, "grade_id": "mha_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 5 (3 points) run when the notebook is graded. Here this cell only
# checks that MultiHeadAttention runs.
import torch

assert MultiHeadAttention(4, 2)(torch.zeros(1, 3, 4)).shape == (1, 3, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import attention as reference
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    torch.manual_seed(55)
    forbidden = (
        "torch.nn.functional.scaled_dot_product_attention",
        "torch.nn.functional.multi_head_attention_forward",
        "torch.nn.MultiheadAttention.forward",
        "tfcourse.attention.MultiHeadAttention.forward",
        "tfcourse.attention.scaled_dot_product_attention",
        "tfcourse.attention.fused_scaled_dot_product_attention",
    )
    for B, T, C, H in [(3, 7, 12, 3), (2, 4, 6, 1), (1, 6, 8, 8)]:
        model = MultiHeadAttention(C, H).double()
        ref = reference.MultiHeadAttention(C, H, fused=False).double()
        ref.load_state_dict(model.state_dict())
        x = torch.randn(B, T, C, dtype=torch.float64)
        padding = (torch.arange(T) < torch.randint(1, T + 1, (B,))[:, None])[:, None, None, :]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        masks = {"no mask": None, "a (B, 1, 1, T) padding mask": padding, "a causal mask": causal}
        with torch.no_grad():
            expected = {name: ref(x, mask=m) for name, m in masks.items()}
        with checks.forbid(*forbidden, task="Exercise 5"):
            results = {name: model(x, m) for name, m in masks.items()}
            if H == 3:
                checks.expect_causal(lambda t, m=model, c=causal: m(t, c), x, dim=1, atol=1e-9,
                                     name="MultiHeadAttention with a causal mask")
                out = model(x, padding)
                (out * torch.randn_like(out)).sum().backward()
                trained = model
        for name, got in results.items():
            checks.expect_close(got, expected[name],
                                f"MultiHeadAttention({C}, {H}) on {(B, T, C)} float64, {name}")
    for name, p in trained.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), (
            f"{name} received no finite gradient: is a projection unused or detached?")
    return True


assert _hidden_tests()
### END HIDDEN TESTS
