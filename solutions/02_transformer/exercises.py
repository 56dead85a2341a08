# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 2 exercises: the Transformer, piece by piece
#
# Five graded exercises build the parts of the encoder-decoder Transformer around attention, in
# the order of the lesson:
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `sinusoidal_encoding`, the positions of the paper | 3 |
# | 2 | `EncoderLayer.forward`, with post-LN and pre-LN | 4 |
# | 3 | `DecoderLayer.forward`: masked self-attention, cross-attention | 5 |
# | 4 | `shift_right`, the decoder's input in teacher forcing | 2 |
# | 5 | `teacher_forcing_loss`: scaled embeddings, decoder, cross-entropy | 4 |
# | | **total** | **18** |
#
# Attention itself is given: `tfcourse.MultiHeadAttention` is the layer you wrote in chapter 1,
# and `tfcourse.FeedForward` the position-wise feed-forward network. Its call
# `attn(query, key, value, mask=None, *, is_causal=False)` attends from `query` (B, T, C) to
# `key` and `value` (B, S, C); with only `query` given it is self-attention, `mask` is a boolean
# mask that broadcasts to (B, H, T, S) (True = may attend), and `is_causal=True` adds the causal
# mask.
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
# Shapes use the course's letters: `B` batch, `T` target (decoder) positions, `S` source
# (memory) positions, `C` model width ($d_\text{model}$), `H` heads, `F` feed-forward width
# ($d_\text{ff}$), `V` vocabulary size.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
import torch.nn.functional as F
from torch import nn

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "pe_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: the sinusoidal position encoding (3 points)
#
# Attention treats its keys as a set: permute the positions of the input and the outputs are
# permuted the same way. The order of the tokens reaches the model only through what is added to
# the embeddings. Vaswani et al. (2017, section 3.5) add a fixed table of sines and cosines: for
# position $\text{pos}$ and channel pair $i = 0, 1, \dots, C/2 - 1$,
#
# $$PE_{(\text{pos},\, 2i)} = \sin\!\left(\frac{\text{pos}}{\text{base}^{2i/C}}\right), \qquad
# PE_{(\text{pos},\, 2i+1)} = \cos\!\left(\frac{\text{pos}}{\text{base}^{2i/C}}\right),$$
#
# with $\text{base} = 10000$ in the paper. Each pair of channels $(2i, 2i+1)$ is a point turning
# on a circle, at its own angular frequency $\omega_i = \text{base}^{-2i/C}$: from one turn per
# $2\pi$ positions for $i = 0$ down to one turn per about $2\pi \cdot \text{base}$ positions. The
# sine goes to the **even** channel and the cosine to the **odd** channel of the **same** pair,
# and both channels of a pair share the exponent $2i/C$.
#
# **Write** `sinusoidal_encoding(num_positions, d_model, *, base=10000.0, dtype=torch.float32)`:
# return the (T, C) table for positions $0, \dots, T-1$ ($T$ = `num_positions`), in `dtype`.
# `d_model` is even.
#
# - **Allowed:** `torch.arange`, arithmetic, `sin`, `cos`, `exp`, `log`, indexing with steps
#   (`pe[:, 0::2]`), `torch.stack`, `torch.cat`.
# - **Not allowed:** `tfcourse.sinusoidal_encoding` and the `tfcourse` position modules (the
#   hidden tests check).
# - **Pitfalls:** positions start at 0; the exponent is $2i/C$ with $i$ the index of the *pair*
#   (so `torch.arange(0, C, 2) / C`), not the index of the channel; interleave sines and cosines
#   (channels 0, 2, 4, ... and 1, 3, 5, ...) rather than putting all the sines first.
#
# **Points:** self-check 1, hidden tests 2 (other sizes, `base`, float64, one position, one pair).

# %% nbgrader={"grade": false, "grade_id": "pe", "locked": false, "schema_version": 3, "solution": true, "task": false}
def sinusoidal_encoding(
    num_positions: int, d_model: int, *, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The (T, C) table PE[pos, 2i] = sin(pos / base^(2i/C)), PE[pos, 2i+1] = cos(same)."""
    ### BEGIN SOLUTION
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (C/2,): 2i for each pair
    angle = pos * base ** (-two_i / d_model)  # (T, C/2): pos * omega_i
    table = torch.empty(num_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = angle.sin()  # the even channel of each pair
    table[:, 1::2] = angle.cos()  # the odd channel, same frequency
    return table.to(dtype)  # computed in float64, returned in the dtype asked for
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "pe_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
T, C = 6, 8
with checks.forbid("tfcourse.embeddings.sinusoidal_encoding", task="Exercise 1"):
    got = sinusoidal_encoding(T, C)


def table(first=math.sin, second=math.cos, exponent=lambda j: 2 * (j // 2) / C,
          position=lambda p: p, interleaved=True):
    """A (T, C) table built entry by entry: the formula, or a variant of it."""
    rows = []
    for p in range(T):
        row = []
        for j in range(C):
            pair = j // 2 if interleaved else j % (C // 2)
            use_first = j % 2 == 0 if interleaved else j < C // 2
            angle = position(p) / 10000 ** exponent(2 * pair)
            row.append((first if use_first else second)(angle))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


checks.expect_shape(got, (T, C), "sinusoidal_encoding(6, 8)")
assert got.dtype == torch.float32, (
    f"sinusoidal_encoding(6, 8) has dtype {got.dtype}: return the dtype asked for (float32 by "
    "default)")
checks.expect_close(got, table(), "sinusoidal_encoding(6, 8)", atol=1e-5, mistakes={
    "sine and cosine are swapped: the even channel 2i takes the sine, the odd channel 2i+1 the "
    "cosine": table(first=math.cos, second=math.sin),
    "the exponent is i/C (the index of the pair, without the factor 2): it is 2i/C":
        table(exponent=lambda two_i: two_i / 2 / C),
    "the odd channels use the exponent (2i+1)/C: both channels of a pair share 2i/C, so the "
    "exponent is built from arange(0, C, 2), not from the channel index":
        torch.tensor([[(math.sin if j % 2 == 0 else math.cos)(p / 10000 ** (j / C))
                       for j in range(C)] for p in range(T)]),
    "the position is multiplied by base^(2i/C) instead of divided by it":
        table(exponent=lambda two_i: -two_i / C),
    "the sines fill the first C/2 channels and the cosines the last C/2: interleave them "
    "(sines in channels 0, 2, 4, ..., cosines in 1, 3, 5, ...)": table(interleaved=False),
    "positions start at 1: the first position is 0, where every sine is 0 and every cosine 1":
        table(position=lambda p: p + 1),
})
assert torch.equal(got[0, 0::2], torch.zeros(C // 2))

# %% nbgrader={"grade": true, "grade_id": "pe_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (2 points) run when the notebook is graded. Here this cell only
# checks that sinusoidal_encoding runs.
assert sinusoidal_encoding(3, 4).shape == (3, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points

    def reference(T, C, base=10000.0):
        angle = torch.arange(T, dtype=torch.float64)[:, None] / base ** (
            torch.arange(0, C, 2, dtype=torch.float64) / C)  # (T, C/2)
        return torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(T, C)  # interleaved

    cases = [  # (T, C, base, dtype)
        (50, 64, 10000.0, torch.float32), (17, 6, 10000.0, torch.float32),
        (1, 8, 10000.0, torch.float32), (9, 2, 10000.0, torch.float32),
        (40, 16, 100.0, torch.float32), (33, 12, 10000.0, torch.float64),
        (20, 10, 7.0, torch.float64),
    ]
    forbidden = ["tfcourse.embeddings.sinusoidal_encoding"]
    for module in ("SinusoidalPositionalEncoding", "LearnedPositionalEmbedding"):
        forbidden.append(f"tfcourse.embeddings.{module}.forward")
    with checks.forbid(*forbidden, task="Exercise 1"):
        results = [sinusoidal_encoding(T, C, base=base, dtype=dtype) for T, C, base, dtype in cases]
        default = sinusoidal_encoding(12, 8)
    for (T, C, base, dtype), got in zip(cases, results, strict=True):
        name = f"sinusoidal_encoding({T}, {C}, base={base}, dtype={dtype})"
        assert got.dtype == dtype, f"{name} has dtype {got.dtype}"
        checks.expect_close(got, reference(T, C, base).to(dtype), name, atol=1e-5, rtol=1e-5)
    checks.expect_close(default, reference(12, 8).float(), "sinusoidal_encoding(12, 8)",
                        atol=1e-5)
    assert default.dtype == torch.float32 and not default.requires_grad
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "encoder_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: an encoder layer, post-LN and pre-LN (4 points)
#
# An encoder layer has two sublayers, each wrapped in a residual connection and a layer
# normalisation: multi-head self-attention, then the position-wise feed-forward network
# $\operatorname{FFN}(x) = \max(0, xW_1 + b_1)W_2 + b_2$ (Vaswani et al., 2017, section 3.3). Where
# the normalisation goes is a choice with consequences (the lesson trains both):
#
# * **post-LN**, the paper's (section 3.1): $x \leftarrow \operatorname{LayerNorm}(x +
#   \operatorname{Sublayer}(x))$, the normalisation *after* the residual sum;
# * **pre-LN** (Xiong et al., 2020), used by most models since: $x \leftarrow x +
#   \operatorname{Sublayer}(\operatorname{LayerNorm}(x))$, the normalisation *inside* the
#   residual branch, so the residual path itself is never normalised.
#
# With both sublayers, `norm1` belongs to the attention and `norm2` to the feed-forward network:
#
# | `norm_first` | self-attention sublayer | feed-forward sublayer |
# |---|---|---|
# | `False` (post-LN) | `x = norm1(x + self_attn(x, mask=mask))` | `x = norm2(x + feed_forward(x))` |
# | `True` (pre-LN) | `x = x + self_attn(norm1(x), mask=mask)` | `x = x + feed_forward(norm2(x))` |
#
# The constructor is written for you. The tests copy the weights of a
# `torch.nn.TransformerEncoderLayer` (with `dropout=0`, `batch_first=True` and the same
# `norm_first`) into these four modules and compare the outputs.
#
# **Write** `forward(x, mask=None)`: `x` is (B, T, C); `mask` an optional boolean mask for the
# self-attention that broadcasts to (B, H, T, T), True = may attend (for example a (B, 1, 1, T)
# padding mask). Return a (B, T, C) tensor.
#
# - **Allowed:** the four modules of the layer (`self.self_attn`, `self.feed_forward`,
#   `self.norm1`, `self.norm2`), `+`.
# - **Not allowed:** `nn.TransformerEncoderLayer`, `tfcourse.EncoderLayer` (the hidden tests
#   check).
# - **Pitfalls:** in pre-LN the residual adds the *input* of the sublayer, not its normalised
#   version (`h = norm1(x); x = h + self_attn(h)` normalises the residual path too); read
#   `self.norm_first` inside `forward`, and keep the two placements apart (swapping them is the
#   classic mistake); pass the mask to the attention.
#
# **Points:** self-check 2, hidden tests 2 (both placements, other widths and head counts, padding
# masks and (T, T) masks, float64, gradients reaching every parameter, no ready-made layer).

# %% nbgrader={"grade": false, "grade_id": "encoder", "locked": false, "schema_version": 3, "solution": true, "task": false}
class EncoderLayer(nn.Module):
    """One encoder layer: self-attention, then feed-forward, each with a residual and a norm."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, norm_first: bool = False
                 ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = tfcourse.MultiHeadAttention(d_model, num_heads)
        self.feed_forward = tfcourse.FeedForward(d_model, d_ff)  # linear1 -> ReLU -> linear2
        self.norm1 = nn.LayerNorm(d_model)  # around the self-attention
        self.norm2 = nn.LayerNorm(d_model)  # around the feed-forward network

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        ### BEGIN SOLUTION
        if self.norm_first:  # pre-LN: normalise the sublayer's input, keep the residual raw
            x = x + self.self_attn(self.norm1(x), mask=mask)
            return x + self.feed_forward(self.norm2(x))
        x = self.norm1(x + self.self_attn(x, mask=mask))  # post-LN: normalise the sum
        return self.norm2(x + self.feed_forward(x))
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "encoder_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (2 points).
import warnings

import torch
from torch import nn

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
B, T, C, H, F_ = 2, 5, 8, 2, 16
x = torch.randn(B, T, C)
keep = torch.arange(T) < torch.tensor([5, 3])[:, None]  # (B, T): the second row has 2 pads
mask = keep[:, None, None, :]  # (B, 1, 1, T), True = may attend


def copy_weights(layer, ref):
    """Load the weights of an nn.TransformerEncoderLayer into the exercise's layer."""
    layer.self_attn.load_from_torch(ref.self_attn)
    layer.feed_forward.linear1.load_state_dict(ref.linear1.state_dict())
    layer.feed_forward.linear2.load_state_dict(ref.linear2.state_dict())
    layer.norm1.load_state_dict(ref.norm1.state_dict())
    layer.norm2.load_state_dict(ref.norm2.state_dict())


for norm_first in (False, True):
    name = f"EncoderLayer(norm_first={norm_first})(x, mask)"
    ref = nn.TransformerEncoderLayer(C, H, F_, dropout=0.0, batch_first=True,
                                     norm_first=norm_first)
    layer = EncoderLayer(C, H, F_, norm_first=norm_first)
    copy_weights(layer, ref)
    attn, ff, n1, n2 = layer.self_attn, layer.feed_forward, layer.norm1, layer.norm2
    with torch.no_grad():
        want = ref(x, src_key_padding_mask=~keep)  # PyTorch's mask: True = blocked
        ref.norm_first = not norm_first
        other = ref(x, src_key_padding_mask=~keep)  # the other placement, same weights
        if norm_first:
            h = n1(x)
            h = n2(h + attn(h, mask=mask))
            mistakes = {
                "for norm_first=True you computed post-LN: pre-LN is x + self_attn(norm1(x)), "
                "then x + feed_forward(norm2(x))": other,
                "the residual adds the normalised input: pre-LN adds the sublayer's output to "
                "x itself, x + self_attn(norm1(x))": h + ff(h),
                "the mask is not passed to the self-attention":
                    (lambda y: y + ff(n2(y)))(x + attn(n1(x))),
            }
        else:
            mistakes = {
                "for norm_first=False you computed pre-LN: post-LN is norm1(x + self_attn(x)), "
                "then norm2(x + feed_forward(x))": other,
                "the residual connections are missing: post-LN is norm1(x + self_attn(x))":
                    n2(ff(n1(attn(x, mask=mask)))),
                "the mask is not passed to the self-attention":
                    (lambda y: n2(y + ff(y)))(n1(x + attn(x))),
            }
    with checks.forbid("torch.nn.TransformerEncoderLayer.forward",
                       "tfcourse.transformer.EncoderLayer.forward", task="Exercise 2"):
        got = layer(x, mask)
    checks.expect_shape(got, (B, T, C), name)
    checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "encoder_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (2 points) run when the notebook is graded. Here this cell only
# checks that EncoderLayer runs.
import torch

assert EncoderLayer(4, 2, 8)(torch.zeros(1, 3, 4)).shape == (1, 3, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch
from torch import nn

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    torch.manual_seed(22)
    forbidden = ("torch.nn.TransformerEncoderLayer.forward",
                 "torch.nn.TransformerEncoder.forward",
                 "tfcourse.transformer.EncoderLayer.forward",
                 "tfcourse.transformer.Encoder.forward")
    for B, T, C, H, F_ in [(3, 7, 12, 3, 24), (1, 1, 4, 1, 8), (2, 6, 16, 4, 8)]:
        for norm_first in (False, True):
            ref = nn.TransformerEncoderLayer(C, H, F_, dropout=0.0, batch_first=True,
                                             norm_first=norm_first).double()
            with torch.no_grad():  # a non-trivial affine part in both norms
                for norm in (ref.norm1, ref.norm2):
                    norm.weight.uniform_(0.5, 1.5)
                    norm.bias.normal_()
            layer = EncoderLayer(C, H, F_, norm_first=norm_first).double()
            layer.self_attn.load_from_torch(ref.self_attn)
            layer.feed_forward.linear1.load_state_dict(ref.linear1.state_dict())
            layer.feed_forward.linear2.load_state_dict(ref.linear2.state_dict())
            layer.norm1.load_state_dict(ref.norm1.state_dict())
            layer.norm2.load_state_dict(ref.norm2.state_dict())
            x = 2 * torch.randn(B, T, C, dtype=torch.float64) + 1
            keep = torch.arange(T) < torch.randint(1, T + 1, (B,))[:, None]  # (B, T)
            causal = torch.ones(T, T, dtype=torch.bool).tril()  # (T, T): another mask shape
            with torch.no_grad():
                want = ref(x)
                want_masked = ref(x, src_key_padding_mask=~keep)
                want_causal = ref(x, src_mask=~causal)
            x_before = x.clone()
            name = f"EncoderLayer({C}, {H}, {F_}, norm_first={norm_first}) on {(B, T, C)}"
            with checks.forbid(*forbidden, task="Exercise 2"):
                got = layer(x)
                got_masked = layer(x, keep[:, None, None, :])
                try:
                    got_causal = layer(x, causal)
                except (RuntimeError, ValueError, IndexError) as error:
                    raise checks.ContractError(
                        f"{name} fails with a (T, T) mask ({error}): the mask is any boolean "
                        "mask that broadcasts to (B, H, T, T), not only a (B, 1, 1, T) padding "
                        "mask; pass it to the self-attention as it is") from None
                if (B, T) == (3, 7):
                    out = layer(x, keep[:, None, None, :])
                    (out * torch.randn_like(out)).sum().backward()
            checks.expect_close(got, want, name)
            checks.expect_close(got_masked, want_masked, name + " with a padding mask")
            checks.expect_close(got_causal, want_causal, name + " with a (T, T) causal mask")
            assert torch.equal(x, x_before), "forward must not change its input x in place"
            if (B, T) == (3, 7):
                for pname, p in layer.named_parameters():
                    assert p.grad is not None and bool(torch.isfinite(p.grad).all()), (
                        f"{pname} received no finite gradient")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "decoder_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: the decoder layer (5 points)
#
# A decoder layer has three sublayers (Vaswani et al., 2017, section 3.1), here with the paper's
# post-LN placement (LN is LayerNorm):
#
# $$\begin{aligned}
# x &\leftarrow \operatorname{LN}_1\big(x + \operatorname{SelfAttn}(x;\ \text{causal})\big)\\
# x &\leftarrow \operatorname{LN}_2\big(x + \operatorname{CrossAttn}(Q = x,\ K = V =
# \text{memory};\ \text{memory mask})\big)\\
# x &\leftarrow \operatorname{LN}_3\big(x + \operatorname{FFN}(x)\big)
# \end{aligned}$$
#
# * **Masked self-attention.** The decoder is trained on a whole target sequence at once, so
#   position $t$ must not see positions after $t$ (it is learning to predict them): the causal
#   mask, on the self-attention only.
# * **Cross-attention.** Each decoder position asks the encoder's output, the *memory* (B, S, C),
#   for what it needs: the **queries come from the decoder** ($x$, $T$ positions) and the **keys
#   and values from the memory** ($S$ positions), so the weights are (B, H, T, S) and the output
#   has the decoder's $T$ positions. Every target position may look at every source position: no
#   causal mask here (the whole source is known before decoding starts). Only the source's
#   padding is masked, by `memory_mask`.
#
# The constructor is written for you; the tests copy the weights of a
# `torch.nn.TransformerDecoderLayer` (`dropout=0`, `batch_first=True`) into its modules
# (`self_attn`, `cross_attn`, `feed_forward`, `norm1`, `norm2`, `norm3`) and compare the outputs.
#
# **Write** `forward(x, memory, memory_mask=None)`: `x` is (B, T, C), `memory` is (B, S, C), and
# `memory_mask` an optional boolean mask over the memory positions that broadcasts to
# (B, H, T, S), True = may attend (for example a (B, 1, 1, S) padding mask of the source).
# Return a (B, T, C) tensor. $T$ and $S$ differ in general.
#
# - **Allowed:** the six modules of the layer, `is_causal=True` or a causal mask you build
#   (`tfcourse.causal_mask(T, device=x.device)` is allowed here), `+`.
# - **Not allowed:** `nn.TransformerDecoderLayer`, `tfcourse.DecoderLayer` (the hidden tests
#   check).
# - **Pitfalls:** the causal mask belongs to the self-attention only; in cross-attention the
#   first argument (the queries) is `x`, and the memory is the keys and the values
#   (`self.cross_attn(x, memory, memory, ...)`); the memory mask goes on the cross-attention,
#   not on the self-attention.
#
# **Points:** self-check 2, hidden tests 3 (T < S and T > S, padding of the memory, (T, S) memory
# masks, causality, float64, gradients reaching every parameter and the memory, no ready-made
# layer).

# %% nbgrader={"grade": false, "grade_id": "decoder", "locked": false, "schema_version": 3, "solution": true, "task": false}
class DecoderLayer(nn.Module):
    """One post-LN decoder layer: causal self-attention, cross-attention, feed-forward."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int) -> None:
        super().__init__()
        self.self_attn = tfcourse.MultiHeadAttention(d_model, num_heads)
        self.cross_attn = tfcourse.MultiHeadAttention(d_model, num_heads)
        self.feed_forward = tfcourse.FeedForward(d_model, d_ff)
        self.norm1 = nn.LayerNorm(d_model)  # around the self-attention
        self.norm2 = nn.LayerNorm(d_model)  # around the cross-attention
        self.norm3 = nn.LayerNorm(d_model)  # around the feed-forward network

    def forward(self, x: torch.Tensor, memory: torch.Tensor,
                memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        ### BEGIN SOLUTION
        x = self.norm1(x + self.self_attn(x, is_causal=True))  # no peeking at later targets
        attended = self.cross_attn(x, memory, memory, mask=memory_mask)  # Q: x; K, V: memory
        x = self.norm2(x + attended)  # (B, T, C): one output per decoder position
        return self.norm3(x + self.feed_forward(x))
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "decoder_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (2 points).
import warnings

import torch
from torch import nn

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
B, C, H, F_ = 2, 8, 2, 16
ref = nn.TransformerDecoderLayer(C, H, F_, dropout=0.0, batch_first=True)
layer = DecoderLayer(C, H, F_)
layer.self_attn.load_from_torch(ref.self_attn)
layer.cross_attn.load_from_torch(ref.multihead_attn)
layer.feed_forward.linear1.load_state_dict(ref.linear1.state_dict())
layer.feed_forward.linear2.load_state_dict(ref.linear2.state_dict())
for i in (1, 2, 3):
    getattr(layer, f"norm{i}").load_state_dict(getattr(ref, f"norm{i}").state_dict())
forbidden = ("torch.nn.TransformerDecoderLayer.forward", "tfcourse.transformer.DecoderLayer.forward")


def variant(x, memory, *, self_causal=True, cross_causal=False, queries_from_memory=False):
    """The layer's output, right or with one of the classic mistakes."""
    sa, ca, ff = layer.self_attn, layer.cross_attn, layer.feed_forward
    x = layer.norm1(x + sa(x, is_causal=self_causal))
    if queries_from_memory:
        attended = ca(memory, x, x)
    else:
        attended = ca(x, memory, memory, is_causal=cross_causal)
    x = layer.norm2(x + attended)
    return layer.norm3(x + ff(x))


# 1. T = S = 5, no padding: the classic mistakes give outputs of the right shape
x, memory = torch.randn(B, 5, C), torch.randn(B, 5, C)
causal = torch.ones(5, 5, dtype=torch.bool).tril()
with torch.no_grad():
    want = ref(x, memory, tgt_mask=~causal)  # PyTorch's masks: True = blocked
    mistakes = {
        "the self-attention has no causal mask: position t sees the targets after t":
            variant(x, memory, self_causal=False),
        "the causal mask is on the cross-attention as well: it belongs to the self-attention "
        "only (every target position may look at the whole source)":
            variant(x, memory, cross_causal=True),
        "the causal mask is on the cross-attention instead of the self-attention":
            variant(x, memory, self_causal=False, cross_causal=True),
        "the cross-attention takes its queries from memory: the queries come from the decoder, "
        "self.cross_attn(x, memory, memory)": variant(x, memory, queries_from_memory=True),
    }
with checks.forbid(*forbidden, task="Exercise 3"):
    got = layer(x, memory)
checks.expect_shape(got, (B, 5, C), "DecoderLayer(8, 2, 16)(x, memory)")
checks.expect_close(got, want, "DecoderLayer(8, 2, 16)(x, memory) with T = S = 5",
                    mistakes=mistakes)

# 2. T = 4 target positions, S = 6 memory positions, the second source padded
x, memory = torch.randn(B, 4, C), torch.randn(B, 6, C)
keep = torch.arange(6) < torch.tensor([6, 4])[:, None]  # (B, S)
with torch.no_grad():
    want = ref(x, memory, tgt_mask=~torch.ones(4, 4, dtype=torch.bool).tril(),
               memory_key_padding_mask=~keep)
with checks.forbid(*forbidden, task="Exercise 3"):
    try:
        got = layer(x, memory, keep[:, None, None, :])
    except (RuntimeError, ValueError) as error:
        raise checks.ContractError(
            f"DecoderLayer fails with T = 4 decoder positions and S = 6 memory positions: "
            f"{error}. In cross-attention the queries come from x and the keys and values from "
            "memory; the causal (T, T) mask belongs to the self-attention only") from None
checks.expect_shape(got, (B, 4, C), "DecoderLayer(x (2, 4, 8), memory (2, 6, 8))",
                    hint="the output has the decoder's T positions: are the cross-attention's "
                         "queries taken from memory?")
checks.expect_close(got, want, "DecoderLayer with T = 4, S = 6 and a memory padding mask",
                    mistakes={"the memory mask is ignored":
                              variant(x, memory).detach()})
with checks.forbid(*forbidden, task="Exercise 3"):
    checks.expect_causal(lambda t: layer(t, memory), x, name="DecoderLayer(x, memory)")

# %% nbgrader={"grade": true, "grade_id": "decoder_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (3 points) run when the notebook is graded. Here this cell only
# checks that DecoderLayer runs.
import torch

assert DecoderLayer(4, 2, 8)(torch.zeros(1, 3, 4), torch.zeros(1, 5, 4)).shape == (1, 3, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch
from torch import nn

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    torch.manual_seed(33)
    forbidden = ("torch.nn.TransformerDecoderLayer.forward",
                 "torch.nn.TransformerDecoder.forward",
                 "torch.nn.Transformer.forward",
                 "tfcourse.transformer.DecoderLayer.forward",
                 "tfcourse.transformer.Decoder.forward")
    for B, T, S, C, H, F_ in [(3, 5, 9, 12, 3, 24), (2, 7, 3, 8, 2, 16), (1, 1, 4, 4, 1, 8),
                              (2, 6, 6, 16, 4, 8)]:
        ref = nn.TransformerDecoderLayer(C, H, F_, dropout=0.0, batch_first=True).double()
        with torch.no_grad():
            for i in (1, 2, 3):
                getattr(ref, f"norm{i}").weight.uniform_(0.5, 1.5)
                getattr(ref, f"norm{i}").bias.normal_()
        layer = DecoderLayer(C, H, F_).double()
        layer.self_attn.load_from_torch(ref.self_attn)
        layer.cross_attn.load_from_torch(ref.multihead_attn)
        layer.feed_forward.linear1.load_state_dict(ref.linear1.state_dict())
        layer.feed_forward.linear2.load_state_dict(ref.linear2.state_dict())
        for i in (1, 2, 3):
            getattr(layer, f"norm{i}").load_state_dict(getattr(ref, f"norm{i}").state_dict())
        x = torch.randn(B, T, C, dtype=torch.float64)
        memory = 2 * torch.randn(B, S, C, dtype=torch.float64)
        keep = torch.arange(S) < torch.randint(1, S + 1, (B,))[:, None]  # (B, S)
        per_query = torch.rand(T, S) < 0.6  # (T, S): another mask shape, each row keeps a key
        per_query[:, 0] = True
        blocked_future = ~torch.ones(T, T, dtype=torch.bool).tril()  # PyTorch: True = blocked
        with torch.no_grad():
            want = ref(x, memory, tgt_mask=blocked_future)
            want_masked = ref(x, memory, tgt_mask=blocked_future, memory_key_padding_mask=~keep)
            want_per_query = ref(x, memory, tgt_mask=blocked_future, memory_mask=~per_query)
        noisy = memory.masked_fill(~keep[..., None], 0.0) + 5 * torch.randn_like(memory) * (
            ~keep[..., None])  # other values at the padded memory positions
        name = f"DecoderLayer({C}, {H}, {F_}) on x {(B, T, C)}, memory {(B, S, C)}"
        with checks.forbid(*forbidden, task="Exercise 3"):
            got = layer(x, memory)
            got_masked = layer(x, memory, keep[:, None, None, :])
            got_noisy = layer(x, noisy, keep[:, None, None, :])
            try:
                got_per_query = layer(x, memory, per_query)
            except (RuntimeError, ValueError, IndexError) as error:
                raise checks.ContractError(
                    f"{name} fails with a (T, S) memory mask ({error}): memory_mask is any "
                    "boolean mask that broadcasts to (B, H, T, S), not only a (B, 1, 1, S) "
                    "padding mask; pass it to the cross-attention as it is") from None
            checks.expect_causal(lambda t, m=memory, f=layer: f(t, m), x, atol=1e-9,
                                 name=name + ", self-attention")
            if (B, T, S) == (3, 5, 9):
                mem = memory.clone().requires_grad_(True)
                out = layer(x, mem, keep[:, None, None, :])
                (out * torch.randn_like(out)).sum().backward()
        checks.expect_close(got, want, name)
        checks.expect_close(got_masked, want_masked, name + " with a memory padding mask")
        checks.expect_close(got_noisy, got_masked, name + ": padded memory positions matter",
                            hint="the memory mask must hide the padded source positions")
        checks.expect_close(got_per_query, want_per_query, name + " with a (T, S) memory mask")
        if (B, T, S) == (3, 5, 9):
            for pname, p in layer.named_parameters():
                assert p.grad is not None and bool(torch.isfinite(p.grad).all()), (
                    f"{pname} received no finite gradient")
            assert mem.grad is not None and bool(mem.grad.abs().sum() > 0), (
                "no gradient reaches the memory: the cross-attention must attend to it")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "shift_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: the decoder's input in teacher forcing (2 points)
#
# The decoder predicts the target one token at a time: $p(y_t \mid y_{<t}, \text{source})$. In
# training, all $T$ predictions are made at once (*teacher forcing*): the decoder is fed the
# **true** previous tokens, and position $t$ of its input must hold $y_{t-1}$, so that, with the
# causal mask, the prediction at position $t$ has seen $y_0, \dots, y_{t-1}$ and not $y_t$ itself.
# The first position has no previous token; it gets the beginning-of-sequence token BOS. So the
# decoder's input is the target **shifted right by one**, with BOS in front and the last token
# dropped:
#
# ```
# target  y:        2   0   2   1   <eos>
# decoder input:  <bos> 2   0   2   1
# ```
#
# **Write** `shift_right(tgt, bos_id)`: `tgt` is a (B, T) tensor of token ids; return a new
# (B, T) tensor of the same dtype and device whose column 0 is `bos_id` and whose columns
# $1, \dots, T-1$ are the columns $0, \dots, T-2$ of `tgt`. Do not change `tgt`.
#
# - **Allowed:** `torch.cat`, `torch.full`, `new_full`, indexing, `clone`.
# - **Not allowed:** `tfcourse.shift_right` (the hidden tests check).
# - **Pitfalls:** drop the *last* column, not the first; `torch.roll` moves the last token to the
#   front instead of dropping it; writing into `tgt` (or a view of it) changes the caller's
#   target; `torch.full((B, 1), bos_id)` makes the BOS column on the default device (the CPU)
#   and in int64, whatever `tgt` is: pass `dtype=tgt.dtype, device=tgt.device`, or use
#   `tgt.new_full`.
#
# **Points:** self-check 1, hidden tests 1 (other sizes, T = 1, other dtypes, the device of `tgt`,
# the input unchanged).

# %% nbgrader={"grade": false, "grade_id": "shift", "locked": false, "schema_version": 3, "solution": true, "task": false}
def shift_right(tgt: torch.Tensor, bos_id: int) -> torch.Tensor:
    """(B, T) -> (B, T): BOS, then tgt[:, :-1] (the decoder input for teacher forcing)."""
    ### BEGIN SOLUTION
    bos = tgt.new_full((tgt.shape[0], 1), bos_id)  # (B, 1), same dtype and device
    return torch.cat([bos, tgt[:, :-1]], dim=1)  # (B, 1) + (B, T - 1) -> (B, T)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "shift_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
tgt = torch.tensor([[7, 5, 7, 6, 2], [8, 9, 2, 0, 0]])  # BOS = 1, EOS = 2, padding = 0
before = tgt.clone()
with checks.forbid("tfcourse.transformer.shift_right", task="Exercise 4"):
    got = shift_right(tgt, bos_id=1)
want = torch.tensor([[1, 7, 5, 7, 6], [1, 8, 9, 2, 0]])
checks.expect_shape(got, (2, 5), "shift_right(tgt, 1)",
                    hint="keep T columns: put BOS in front and drop the last column")
assert torch.equal(tgt, before), (
    "shift_right changed its input tgt: build a new tensor (torch.cat, or clone before writing)")
assert got.dtype == tgt.dtype, f"shift_right returned dtype {got.dtype}, not {tgt.dtype}"
checks.expect_close(got, want, "shift_right(tgt, 1)", mistakes={
    "the first column of the target is dropped: drop the last one, tgt[:, :-1]":
        torch.tensor([[1, 5, 7, 6, 2], [1, 9, 2, 0, 0]]),
    "the last token wraps round to the front (torch.roll): the first column is BOS":
        torch.roll(tgt, 1, dims=1),
    "BOS is added at the end: it goes in front, column 0":
        torch.tensor([[5, 7, 6, 2, 1], [9, 2, 0, 0, 1]]),
    "this is the target itself: the decoder input is the target shifted right by one": tgt,
})

# %% nbgrader={"grade": true, "grade_id": "shift_hidden", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (1 point) run when the notebook is graded. Here this cell only
# checks that shift_right runs.
import torch

assert shift_right(torch.zeros(1, 2, dtype=torch.long), 1).shape == (1, 2)
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(44)
    cases = [  # (tgt, bos_id)
        (torch.randint(3, 50, (4, 9), generator=gen), 1),
        (torch.randint(3, 50, (3, 1), generator=gen), 2),
        (torch.randint(3, 50, (1, 6), generator=gen).int(), 0),
        (torch.randint(3, 50, (2, 2), generator=gen), 49),
        (torch.randint(3, 50, (5, 12), generator=gen)[:, ::2], 7),  # not contiguous
    ]
    copies = [t.clone() for t, _ in cases]
    # The device of tgt, without a GPU. PyTorch's "meta" device holds shapes without data. With
    # meta as the default device, a target on the CPU must give a result on the CPU: a BOS column
    # made on the default device lands on meta. When that does not settle it (a column made on
    # the default device, then moved), a target on meta must give a result there.
    elsewhere = torch.randint(3, 50, (3, 6), generator=gen).int()
    with checks.forbid("tfcourse.transformer.shift_right", task="Exercise 4"):
        results = [shift_right(t, bos) for t, bos in cases]
        with torch.device("meta"):
            try:
                kept_on_cpu = shift_right(elsewhere, 1)
            except (RuntimeError, NotImplementedError):
                kept_on_cpu = None
        got_meta = None
        if not (isinstance(kept_on_cpu, torch.Tensor) and kept_on_cpu.device.type == "cpu"):
            try:
                got_meta = shift_right(elsewhere.to("meta"), 1)
            except (RuntimeError, NotImplementedError) as error:
                raise checks.ContractError(
                    f"shift_right of a (3, 6) int32 target on the meta device fails ({error}): "
                    "is the BOS column created on the default device? Create it on tgt's "
                    "device, e.g. with tgt.new_full((B, 1), bos_id)") from None
    for (tgt, bos), copy, got in zip(cases, copies, results, strict=True):
        want = torch.cat([torch.full_like(tgt[:, :1], bos), tgt[:, :-1]], dim=1)
        name = f"shift_right of a {tuple(tgt.shape)} {tgt.dtype} target, bos_id={bos}"
        assert got.dtype == tgt.dtype, f"{name} has dtype {got.dtype}"
        assert torch.equal(tgt, copy), f"{name} changed its input"
        checks.expect_shape(got, tuple(tgt.shape), name)
        assert torch.equal(got, want), f"{name} is not BOS followed by tgt[:, :-1]"
    if got_meta is None:  # settled on the CPU
        want = torch.cat([torch.ones_like(elsewhere[:, :1]), elsewhere[:, :-1]], dim=1)
        assert torch.equal(kept_on_cpu, want), (
            "shift_right(tgt, 1) is wrong when the default device is another one")
    else:
        assert isinstance(got_meta, torch.Tensor) and got_meta.device.type == "meta", (
            f"shift_right of a target on the meta device returned a tensor on "
            f"{getattr(got_meta, 'device', None)}: the result must be on the device of tgt "
            "(create new tensors with device=tgt.device, or with tgt.new_full)")
        assert got_meta.dtype == torch.int32, f"shift_right of an int32 target: {got_meta.dtype}"
        checks.expect_shape(got_meta, (3, 6), "shift_right of a (3, 6) target on the meta device")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "teacher_forcing_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 5: the teacher-forcing loss (4 points)
#
# One training step of the decoder side, given the encoder's output `memory` (B, S, C):
#
# 1. the decoder input is `shift_right(tgt, bos_id)` (Exercise 4);
# 2. it is embedded, and the embeddings are **multiplied by $\sqrt{C}$** (Vaswani et al., 2017,
#    section 3.4: "we multiply those weights by $\sqrt{d_\text{model}}$"): an embedding table is
#    typically initialised with entries of size about 1 (`nn.Embedding`: N(0, 1)) or, when tied to
#    the output layer, about $1/\sqrt{C}$, and the scale sets the size of the token's signal
#    against the position encoding, whose entries lie in [-1, 1];
# 3. the sinusoidal position encoding of positions $0, \dots, T-1$ is added;
# 4. the decoder runs, `decoder(x, memory)` -> (B, T, C) (it applies the causal mask itself), and
#    the linear `head` turns each position into (B, T, V) logits;
# 5. the loss is the mean cross-entropy of the logits against the **unshifted** target `tgt`:
#    position $t$, which has seen $y_0, \dots, y_{t-1}$, is scored on $y_t$. Padding positions
#    (`tgt == pad_id`) are left out of the mean.
#
# $$\begin{aligned}
# \mathcal{L} &= -\frac{1}{N}\sum_{b,\,t:\ y_{bt} \ne \text{pad}} \log p_\theta\big(y_{bt} \mid
# \text{BOS}, y_{b0}, \dots, y_{b,t-1}, \text{source}_b\big), \\
# N &= \#\{(b, t): y_{bt} \ne \text{pad}\}.
# \end{aligned}$$
#
# **Write** `teacher_forcing_loss(tgt, memory, *, embedding, decoder, head, bos_id, pad_id)`:
# `tgt` (B, T) long, each row a target ending in EOS and padded with `pad_id`; `embedding` an
# `nn.Embedding(V, C)`; `decoder` a module called as `decoder(x, memory)`; `head` an
# `nn.Linear(C, V)`. Return the loss, a scalar tensor through which gradients flow.
#
# - **Allowed:** your `shift_right`, `math.sqrt`, `tfcourse.sinusoidal_encoding(T, C,
#   dtype=..., device=...)` (or your own from Exercise 1), `F.cross_entropy` (its `ignore_index`
#   argument), `reshape`.
# - **Not allowed:** `tfcourse.TokenEmbedding` (it applies the scale for you),
#   `tfcourse.shift_right` (the hidden tests check).
# - **Pitfalls:** feeding the target itself to the decoder lets position $t$ copy $y_t$ (the loss
#   falls to zero in training and the model cannot decode); the loss is against `tgt`, not
#   against the shifted input; `F.cross_entropy` wants the classes in dimension 1, so flatten to
#   (B·T, V) and (B·T,); make the position table in the embeddings' dtype.
#
# **Points:** self-check 2, hidden tests 2 (other sizes and token ids, float64, float16 and
# bfloat16 (the position table in the embeddings' dtype), rows without padding, T = 1, gradients
# reaching the embedding, the decoder and the head).

# %% nbgrader={"grade": false, "grade_id": "teacher_forcing", "locked": false, "schema_version": 3, "solution": true, "task": false}
def teacher_forcing_loss(
    tgt: torch.Tensor, memory: torch.Tensor, *, embedding: nn.Embedding, decoder: nn.Module,
    head: nn.Linear, bos_id: int, pad_id: int,
) -> torch.Tensor:
    """Mean cross-entropy of predicting tgt (B, T) from BOS + tgt[:, :-1], padding left out."""
    ### BEGIN SOLUTION
    B, T = tgt.shape
    C = embedding.embedding_dim
    tgt_in = shift_right(tgt, bos_id)  # (B, T): position t holds y_{t-1}
    weight = embedding.weight
    positions = tfcourse.sinusoidal_encoding(T, C, dtype=weight.dtype, device=weight.device)
    x = embedding(tgt_in) * math.sqrt(C) + positions  # (B, T, C) + (T, C)
    logits = head(decoder(x, memory))  # (B, T, V)
    return F.cross_entropy(logits.reshape(B * T, -1), tgt.reshape(B * T), ignore_index=pad_id)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "teacher_forcing_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 5 (2 points).
import warnings

import torch
from torch import nn

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
V, C, B, T, S = 11, 8, 2, 6, 4
PAD, BOS, EOS = 0, 1, 2
embedding, head = nn.Embedding(V, C), nn.Linear(C, V)
decoder = tfcourse.DecoderLayer(C, 2, 16).eval()
memory = torch.randn(B, S, C)
tgt = torch.tensor([[5, 3, 9, 4, 7, EOS], [6, 8, EOS, PAD, PAD, PAD]])


def loss_of(*, shifted=True, scaled=True, positions=True, ignore_pad=True, against_input=False):
    """The loss, right or with one of the classic mistakes."""
    tgt_in = torch.cat([torch.full((B, 1), BOS), tgt[:, :-1]], dim=1) if shifted else tgt
    x = embedding(tgt_in) * (math.sqrt(C) if scaled else 1.0)
    if positions:
        angle = torch.arange(T)[:, None] / 10000 ** (torch.arange(0, C, 2) / C)  # (T, C/2)
        x = x + torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(T, C)
    logits = head(decoder(x, memory))  # (B, T, V)
    labels = tgt_in if against_input else tgt
    return F.cross_entropy(logits.reshape(B * T, V), labels.reshape(B * T),
                           ignore_index=PAD if ignore_pad else -100)


with torch.no_grad():
    want = loss_of()
    mistakes = {
        "the decoder input is the target itself: shift it right (BOS, then tgt[:, :-1]), or "
        "position t sees the token it must predict": loss_of(shifted=False),
        "the embeddings are not multiplied by sqrt(C) = sqrt(d_model)": loss_of(scaled=False),
        "the position encoding is missing: add sinusoidal_encoding(T, C) to the embeddings":
            loss_of(positions=False),
        "the padding is counted in the loss: pass ignore_index=pad_id to F.cross_entropy":
            loss_of(ignore_pad=False),
        "the loss compares the logits with the shifted decoder input: the labels are the "
        "unshifted target tgt": loss_of(against_input=True),
    }
before = tgt.clone()
with checks.forbid("tfcourse.embeddings.TokenEmbedding.forward",
                   "tfcourse.transformer.shift_right", task="Exercise 5"):
    got = teacher_forcing_loss(tgt, memory, embedding=embedding, decoder=decoder, head=head,
                               bos_id=BOS, pad_id=PAD)
assert torch.equal(tgt, before), (
    "teacher_forcing_loss changed tgt: does your shift_right write into its input (Exercise 4)?")
checks.expect_shape(got, (), "teacher_forcing_loss(...)",
                    hint="return the mean over the (non-padding) positions, a scalar")
checks.expect_close(got, want, "teacher_forcing_loss(...)", mistakes=mistakes,
                    hint="if your shift_right is used, make its self-check (Exercise 4) pass first")
assert got.requires_grad, "the loss does not require grad: is something detached?"

# %% nbgrader={"grade": true, "grade_id": "teacher_forcing_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 5 (2 points) run when the notebook is graded. Here this cell only
# checks that teacher_forcing_loss runs.
import torch
from torch import nn

import tfcourse

assert teacher_forcing_loss(
    torch.tensor([[3, 2]]), torch.zeros(1, 1, 4), embedding=nn.Embedding(4, 4),
    decoder=tfcourse.DecoderLayer(4, 1, 8), head=nn.Linear(4, 4), bos_id=1, pad_id=0,
).shape == ()
### BEGIN HIDDEN TESTS
import math
import warnings

import torch
from torch import nn

import tfcourse
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    torch.manual_seed(55)
    forbidden = ("tfcourse.embeddings.TokenEmbedding.forward", "tfcourse.transformer.shift_right")
    low = {torch.float16: (2e-2, 2e-2), torch.bfloat16: (5e-2, 5e-2)}  # (rtol, atol)
    for B, T, S, C, V, pad, bos, dtype in [
        (3, 7, 5, 12, 20, 3, 5, torch.float64), (2, 1, 3, 8, 9, 0, 1, torch.float32),
        (4, 5, 6, 16, 13, 12, 0, torch.float64), (2, 6, 4, 8, 11, 0, 1, torch.float16),
        (3, 5, 3, 8, 10, 2, 4, torch.bfloat16),
    ]:
        embedding = nn.Embedding(V, C).to(dtype)
        head = nn.Linear(C, V).to(dtype)
        decoder = tfcourse.DecoderLayer(C, 2, 2 * C, norm_first=True).to(dtype)
        memory = torch.randn(B, S, C, dtype=dtype)
        tgt = torch.randint(0, V, (B, T))
        tgt[tgt == pad] = (pad + 1) % V  # no padding inside the targets
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T  # one row without padding
        tgt = tgt.masked_fill(torch.arange(T) >= lengths[:, None], pad)

        tgt_in = torch.cat([torch.full((B, 1), bos), tgt[:, :-1]], dim=1)  # (B, T)
        angle = torch.arange(T, dtype=torch.float64)[:, None] / 10000 ** (
            torch.arange(0, C, 2, dtype=torch.float64) / C)
        pe = torch.stack([angle.sin(), angle.cos()], dim=-1).reshape(T, C).to(dtype)
        with torch.no_grad():
            logits = head(decoder(embedding(tgt_in) * math.sqrt(C) + pe, memory))
            log_p = logits.double().log_softmax(-1).gather(-1, tgt[..., None])[..., 0]  # (B, T)
            real = tgt != pad
            want = (-(log_p * real).sum() / real.sum()).to(dtype)
        before = tgt.clone()
        name = (f"teacher_forcing_loss on a {(B, T)} target, V={V}, pad_id={pad}, bos_id={bos}, "
                f"with a {dtype} embedding, decoder and head")
        with checks.forbid(*forbidden, task="Exercise 5"):
            try:
                got = teacher_forcing_loss(tgt, memory, embedding=embedding, decoder=decoder,
                                           head=head, bos_id=bos, pad_id=pad)
            except RuntimeError as error:
                if dtype not in low:
                    raise
                raise checks.ContractError(
                    f"{name} fails ({error}): is the position table made in float32? Make it "
                    "in the embeddings' dtype (dtype=embedding.weight.dtype): a float32 table "
                    f"turns x into float32, which the {dtype} decoder cannot take") from None
            got.backward()
        if dtype in low and got.dtype == torch.float32:
            got = got.to(dtype)  # a loss computed in float32 from low-precision logits is right
        checks.expect_close(got, want, name, rtol=low.get(dtype, (None, None))[0],
                            atol=low.get(dtype, (None, None))[1])
        assert torch.equal(tgt, before), "teacher_forcing_loss changed tgt"
        for module_name, module in (("embedding", embedding), ("head", head),
                                    ("decoder", decoder)):
            grads = [p.grad for p in module.parameters()]
            assert all(g is not None for g in grads), f"no gradient reaches the {module_name}"
        assert embedding.weight.grad[bos].abs().sum() > 0, "the BOS embedding gets no gradient"
    return True


assert _hidden_tests()
### END HIDDEN TESTS
