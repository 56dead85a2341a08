# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 3 exercises: pre-training, decoder-only and encoder-only
#
# Four graded exercises write the pieces that make the two branches of pre-training work, in the
# order of the lesson: the loss and the decoding loop of a decoder-only (GPT-style) model, the
# corruption that trains an encoder-only (BERT-style) model, and the pooling that turns an encoder
# into a classifier.
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `next_token_loss`, the causal language-modelling loss | 4 |
# | 2 | `greedy_generate`, decoding with a KV cache | 5 |
# | 3 | `mask_tokens`, BERT's 80/10/10 corruption | 5 |
# | 4 | `mean_pool`, one vector per sequence for a classifier | 2 |
# | | **total** | **16** |
#
# The models are given: `tfcourse.DecoderOnlyLM` is a stack of pre-LN decoder layers with causal
# self-attention (Radford et al., 2018), and `tfcourse.EncoderOnlyLM` the same with bidirectional
# self-attention (Devlin et al., 2019). Both map token ids (B, T) to logits (B, T, V).
#
# **How to work.** Write your code between the function's first lines and the end of its cell,
# replacing `raise NotImplementedError()`. Under each exercise, a *self-check* cell tests the main
# contract: run it, and when it fails, read the message, which names the most likely mistake.
# A second cell holds the *hidden tests*: when your notebook is graded they probe what the
# self-check does not (other shapes, dtypes and token ids, edge cases, gradients) and make sure
# the work is your own, so a call to a ready-made implementation (PyTorch's or `tfcourse`'s) earns
# no points. Each exercise says what you may use.
#
# Do not rename the functions or delete cells; if you delete a test cell it is put back and run
# when your notebook is graded. Grading runs every cell from the top in a fresh kernel, and a cell
# that runs longer than 20 seconds is stopped (a test cell stopped so scores zero). Before you
# submit, choose *Restart kernel and run all cells* and check that every self-check passes.
#
# Shapes use the course's letters: `B` batch, `T` positions (tokens of a sequence), `C` model
# width ($d_\text{model}$), `V` vocabulary size; $T_0$ is the length of a prompt.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import torch
import torch.nn.functional as F

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "loss_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: the next-token loss (4 points)
#
# A decoder-only model is pre-trained to predict each token from the ones before it (Radford et
# al., 2018, section 3.1, Eq. 1: maximise $\sum_i \log P(u_i \mid u_{i-k}, \dots, u_{i-1})$).
# Run on a sequence $x_0, \dots, x_{T-1}$, the model returns logits $z_t \in \mathbb{R}^V$ at every
# position $t$, and causal attention makes $z_t$ depend on $x_0, \dots, x_t$ only. So $z_t$ is
# the model's guess for the **next** token, $x_{t+1}$: every position is a training example, and
# one forward pass scores all of them at once. The last position has no next token and is not
# scored. Sequences in a batch are padded to the same length with `pad_id`; a target that is
# padding is left out:
#
# $$\begin{aligned}
# \mathcal{L} &= -\frac{1}{N} \sum_{b} \sum_{t=0}^{T-2} m_{b,t+1}\, \log
# \operatorname{softmax}(z_{b,t})_{x_{b,t+1}}, \\
# m_{b,t+1} &= [x_{b,t+1} \ne \text{pad}], \quad N = \sum_b \sum_{t=0}^{T-2} m_{b,t+1}.
# \end{aligned}$$
#
# ```
# tokens   x:   The  cat  sat  on   <pad>
# logits   z:   z0   z1   z2   z3   z4
# scored on:    cat  sat  on   (pad: left out)   (z4: no next token)
# ```
#
# **Write** `next_token_loss(logits, tokens, pad_id=None)`: `logits` (B, T, V) floating point,
# computed by a causal model from `tokens` (B, T) long, $T \ge 2$; `pad_id` the padding id, or
# `None` when there is no padding (then every target counts, whatever its id). Return the mean
# above, a scalar tensor in the dtype of `logits` through which gradients flow.
#
# - **Allowed:** slicing, `reshape`/`flatten`, `F.cross_entropy` (and its `ignore_index`
#   argument), `log_softmax`, `gather`.
# - **Not allowed:** `tfcourse.next_token_loss` (the hidden tests check).
# - **Pitfalls:** score $z_t$ on $x_{t+1}$: the logits without their **last** position against
#   the tokens without their **first** (not the other way round, and not $z_t$ on $x_t$, which
#   the model sees); `F.cross_entropy` wants the classes in dimension 1, so flatten to
#   (B·(T-1), V) and (B·(T-1),) (a `reshape` to (B, V, T-1) does not move the classes there, it
#   scrambles them); padding is left out of the mean's denominator too; `ignore_index=None` is
#   not allowed by `F.cross_entropy`: with `pad_id=None` use its default, -100, which is never a
#   token id.
#
# **Points:** self-check 2, hidden tests 2 (other sizes, `pad_id=None` with targets of every id,
# 0 included, other padding ids, left padding, T = 2, float64, gradients).

# %% nbgrader={"grade": false, "grade_id": "loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, pad_id: int | None = None
                    ) -> torch.Tensor:
    """Mean cross-entropy of logits[:, t] (B, T, V) against tokens[:, t + 1], padding left out."""
    ### BEGIN SOLUTION
    V = logits.shape[-1]
    predictions = logits[:, :-1].reshape(-1, V)  # (B·(T-1), V): positions with a next token
    targets = tokens[:, 1:].reshape(-1)  # (B·(T-1),): the next tokens
    ignore = -100 if pad_id is None else pad_id  # -100: F.cross_entropy's default, no token id
    return F.cross_entropy(predictions, targets, ignore_index=ignore)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "loss_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (2 points).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
B, T, V, PAD = 2, 6, 7, 0
logits = torch.randn(B, T, V)
tokens = torch.tensor([[4, 2, 6, 3, 5, 1], [3, 6, 2, 5, PAD, PAD]])  # the second row padded


def cross_entropy(z, y, ignore_index=PAD):
    """Mean of -log softmax(z)[y] over the targets that are not ignore_index (z is (N, V))."""
    return F.cross_entropy(z.reshape(-1, V), y.reshape(-1), ignore_index=ignore_index)


with torch.no_grad():
    want = cross_entropy(logits[:, :-1], tokens[:, 1:])
    per_target = F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1),
                                 reduction="none")
    mistakes = {
        "position t is scored on token t, which the model has already seen: score the logits "
        "at t on the next token, logits[:, :-1] against tokens[:, 1:]":
            cross_entropy(logits, tokens),
        "the shift goes the wrong way: the logits at t predict token t + 1, so drop the last "
        "position of the logits and the first of the tokens, logits[:, :-1] and tokens[:, 1:]":
            cross_entropy(logits[:, 1:], tokens[:, :-1]),
        "the padding targets are counted: leave them out (ignore_index=pad_id)":
            cross_entropy(logits[:, :-1], tokens[:, 1:], ignore_index=-100),
        "the padding targets are left out of the sum but not of the count: divide by the number "
        "of real targets, not by B·(T-1)":
            (per_target * (tokens[:, 1:].reshape(-1) != PAD)).sum() / (B * (T - 1)),
        "the classes are not in dimension 1: a reshape of (B, T-1, V) to (B, V, T-1) scrambles "
        "them; flatten to (B·(T-1), V) and (B·(T-1),) instead":
            F.cross_entropy(logits[:, :-1].reshape(B, V, T - 1), tokens[:, 1:],
                            ignore_index=PAD),
    }
logits_before, tokens_before = logits.clone(), tokens.clone()
logits.requires_grad_(True)
with checks.forbid("tfcourse.language_models.next_token_loss", task="Exercise 1"):
    try:
        got = next_token_loss(logits, tokens, pad_id=PAD)
    except (RuntimeError, ValueError, IndexError) as error:
        raise checks.ContractError(
            f"next_token_loss fails on logits (2, 6, 7) and tokens (2, 6): {error}. If the "
            "message is about the target's size: F.cross_entropy wants the classes in "
            "dimension 1, so flatten the logits to (B·(T-1), V) and the targets to "
            "(B·(T-1),)") from None
checks.expect_shape(got, (), "next_token_loss(logits, tokens, pad_id=0)",
                    hint="return the mean over the scored positions, a scalar")
checks.expect_close(got, want, "next_token_loss(logits, tokens, pad_id=0)", mistakes=mistakes)
assert got.requires_grad, "the loss does not require grad: is something detached?"
assert torch.equal(logits.detach(), logits_before) and torch.equal(tokens, tokens_before), (
    "next_token_loss changed its inputs")

# %% nbgrader={"grade": true, "grade_id": "loss_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (2 points) run when the notebook is graded. Here this cell only
# checks that next_token_loss runs.
import torch

assert next_token_loss(torch.zeros(1, 2, 3), torch.tensor([[0, 1]])).shape == ()
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(11)
    cases = []  # (logits, tokens, pad_id)
    for B, T, V, pad, dtype in [(3, 9, 11, 0, torch.float32), (1, 2, 5, None, torch.float32),
                                (4, 7, 20, 19, torch.float64), (2, 5, 6, None, torch.float64),
                                (3, 8, 10, 3, torch.float32)]:
        logits = 3 * torch.randn(B, T, V, generator=gen, dtype=dtype)
        tokens = torch.randint(0, V, (B, T), generator=gen)
        tokens[:, 1] = 0  # id 0 is a target in every row: with pad_id=None it counts too
        if pad is not None:
            tokens[tokens == pad] = (pad + 1) % V  # padding only where it is put below
            lengths = torch.randint(2, T + 1, (B,), generator=gen)
            lengths[0] = T  # one row without padding
            padded = torch.arange(T) >= lengths[:, None]  # (B, T)
            if pad == 3:  # left padding: the padding comes first
                padded = padded.flip(1)
            tokens = tokens.masked_fill(padded, pad)
        cases.append((logits.requires_grad_(True), tokens, pad))
    copies = [(z.detach().clone(), x.clone()) for z, x, _ in cases]
    with checks.forbid("tfcourse.language_models.next_token_loss", task="Exercise 1"):
        results = [next_token_loss(z, x, pad) for z, x, pad in cases[:-1]]
        results.append(next_token_loss(*cases[-1][:2], pad_id=cases[-1][2]))
        for got in results:
            got.backward()
    for (logits, tokens, pad), (z0, x0), got in zip(cases, copies, results, strict=True):
        B, T, V = tuple(logits.shape)
        name = f"next_token_loss on logits {(B, T, V)} {logits.dtype}, pad_id={pad}"
        log_p = logits.detach().double().log_softmax(-1)[:, :-1]  # (B, T-1, V)
        picked = log_p.gather(-1, tokens[:, 1:, None])[..., 0]  # (B, T-1)
        real = torch.ones_like(picked) if pad is None else (tokens[:, 1:] != pad).double()
        want = (-(picked * real).sum() / real.sum()).to(logits.dtype)
        mistakes = {}
        if pad is None:
            not_0 = (tokens[:, 1:] != 0).double()
            mistakes["with pad_id=None every target counts, id 0 too: the targets that are 0 "
                     "were left out (pass ignore_index=-100, F.cross_entropy's default, not 0)"
                     ] = (-(picked * not_0).sum() / not_0.sum()).to(logits.dtype)
        checks.expect_close(got, want, name, mistakes=mistakes)
        assert torch.equal(logits.detach(), z0) and torch.equal(tokens, x0), (
            f"{name} changed its inputs")
        grad = logits.grad
        assert grad is not None and bool(torch.isfinite(grad).all()), f"{name}: no gradient"
        assert grad[:, -1].abs().max() == 0, f"{name}: the last position got a gradient"
        if pad is not None:
            target_is_pad = tokens[:, 1:] == pad  # (B, T-1)
            assert grad[:, :-1][target_is_pad].abs().sum() == 0, (
                f"{name}: a position whose next token is padding got a gradient")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "generate_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: greedy decoding with a KV cache (5 points)
#
# A decoder-only model writes text one token at a time. Greedy decoding takes, at each step, the
# most probable next token after everything so far: with $z_t$ the logits at the last position,
# computed from $x_0, \dots, x_t$, it takes
#
# $$x_{t+1} = \arg\max_{v}\ z_{t,v}$$
#
# and appends it. Done naively, step $t$ runs the model on the whole prefix $x_0, \dots, x_t$
# again, although the keys and values of positions $0, \dots, t-1$ are the same as at the previous
# step: with causal attention an earlier position never sees a later one, so nothing about it
# changes when the sequence grows. A **KV cache** keeps each layer's keys and values; each step
# then runs the model on the **newest token only**, whose query attends to the cached keys and
# its own. Generating $n$ tokens after a prompt of $T_0$ tokens processes
# $T_0 + (T_0 + 1) + \dots + (T_0 + n - 1)$ positions without a cache, and $T_0 + n - 1$ with one.
#
# `tfcourse.DecoderOnlyLM` supports this. `cache = model.new_cache()` makes an empty cache (one
# entry per layer); `model(tokens, cache=cache)` with `tokens` (B, T) returns the logits (B, T, V)
# of those tokens, **placed after the positions already in the cache** (position embeddings
# included), and adds their keys and values to the cache. So:
#
# 1. run the prompt (B, $T_0$) once with a new cache: (B, $T_0$, V) logits;
# 2. the next token is the argmax of the **last** position's logits, (B, 1);
# 3. append it, and run the model on that one token (B, 1) with the **same** cache; repeat from 2
#    until `max_new_tokens` tokens are generated.
#
# **Write** `greedy_generate(model, prompt, max_new_tokens)`: `model` a `tfcourse.DecoderOnlyLM`
# in eval mode, `prompt` (B, $T_0$) long, `max_new_tokens` $\ge 1$, with
# $T_0$ + `max_new_tokens` $\le$ `model.max_len`. Return the (B, $T_0$ + `max_new_tokens`) long
# tensor: the prompt followed by the generated tokens. Do not change `prompt`.
#
# - **Allowed:** `model.new_cache()`, `model(tokens, cache=cache)`, `argmax`, `torch.cat`,
#   `torch.no_grad()` (nothing here needs gradients, and without it the cache holds on to the
#   whole graph).
# - **Not allowed:** `model.generate` (the hidden tests check), and running the model on the whole
#   prefix at every step (the tests count the positions the model processes: the prompt once,
#   then one position per step).
# - **Pitfalls:** with a cache, feed only the newest token: feeding the whole sequence again
#   adds its keys a second time and places it after itself, at the wrong positions (and soon past
#   `max_len`); the prompt's logits are (B, $T_0$, V), and the next token comes from the last
#   position, `logits[:, -1]`, not the first, nor from every position; keep the new token's
#   shape (B, 1) (`keepdim=True`) so that it can be concatenated and fed back.
#
# **Points:** self-check 2, hidden tests 3 (other models and batch sizes, a prompt of one token,
# one new token, up to `max_len`, float64, the cache used, the prompt unchanged).

# %% nbgrader={"grade": false, "grade_id": "generate", "locked": false, "schema_version": 3, "solution": true, "task": false}
def greedy_generate(model: tfcourse.DecoderOnlyLM, prompt: torch.Tensor, max_new_tokens: int
                    ) -> torch.Tensor:
    """(B, T0) prompt -> (B, T0 + max_new_tokens): greedy decoding, one new token per step."""
    ### BEGIN SOLUTION
    with torch.no_grad():
        cache = model.new_cache()
        tokens, new = prompt, prompt  # new: the tokens the model has not seen yet
        for _ in range(max_new_tokens):
            logits = model(new, cache=cache)  # (B, T_new, V): T0 on the first step, then 1
            new = logits[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1): the last position's
            tokens = torch.cat([tokens, new], dim=1)  # (B, T + 1)
    return tokens
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "generate_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (2 points).
import warnings

import torch

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(4)
model = tfcourse.DecoderOnlyLM(13, max_len=16, d_model=16, num_heads=2, num_layers=2,
                               tie_weights=False).eval()
prompt = torch.tensor([[3, 7, 1, 9, 4], [5, 5, 2, 8, 11]])  # (B, T0) = (2, 5)
N = 6  # new tokens


def decode(position=-1):
    """Greedy decoding the slow way: the whole prefix at every step, no cache."""
    tokens = prompt
    with torch.no_grad():
        for step in range(N):
            logits = model(tokens)[:, position if step == 0 else -1]  # (B, V)
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens


want = decode()
fed = []  # positions processed by each call: the keys the first layer computes
counter = model.decoder.layers[0].self_attn.k_proj.register_forward_pre_hook(
    lambda module, args: fed.append(args[0].shape[1]))
before = prompt.clone()
try:
    with checks.forbid("tfcourse.language_models.DecoderOnlyLM.generate", task="Exercise 2"):
        got = greedy_generate(model, prompt, N)
except (RuntimeError, ValueError) as error:
    raise checks.ContractError(
        f"greedy_generate fails on a (2, 5) prompt with max_new_tokens=6 (max_len=16): {error}. "
        "With a cache, each step feeds one token, (B, 1): the argmax of the last position, "
        "logits[:, -1].argmax(-1, keepdim=True), not the argmax of every position, nor the whole "
        "sequence (the model places what it is fed after the cached positions, and soon past "
        "max_len)") from None
finally:
    counter.remove()
checks.expect_shape(got, (2, 5 + N), "greedy_generate(model, prompt (2, 5), 6)",
                    hint="return the prompt followed by one token per step, (B, T0 + "
                         "max_new_tokens): each step adds the argmax of the last position only, "
                         "logits[:, -1].argmax(-1, keepdim=True)")
assert torch.equal(prompt, before), "greedy_generate changed its prompt"
assert got.dtype == torch.long, f"greedy_generate returned dtype {got.dtype}, not torch.long"
if not torch.equal(got, want):  # name the mistake (decoding again costs time: only if wrong)
    checks.expect_close(got, want, "greedy_generate(model, prompt (2, 5), 6)", mistakes={
        "the first new token comes from the first position of the prompt's logits: take the "
        "last, logits[:, -1]": decode(position=0),
    }, hint="the tokens differ from greedy decoding: does every step take the argmax of the "
            "last position and feed that token back with the same cache?")
assert fed[:1] == [5] and fed[1:] in ([1] * (N - 1), [1] * N), (
    f"the model processed {fed} positions call by call; with a cache it processes the prompt "
    f"once, [5], then the newest token only, 1 per step: "
    + ("it looks as if the whole prefix is fed again at every step (is the cache passed, and "
       "is only the newest token fed?)" if len(fed) > 1 and fed[1] > 1 else
       "is the prompt run once, with cache=model.new_cache()?"))

# %% nbgrader={"grade": true, "grade_id": "generate_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (3 points) run when the notebook is graded. Here this cell only
# checks that greedy_generate runs.
import torch

import tfcourse

assert greedy_generate(tfcourse.DecoderOnlyLM(5, max_len=4, d_model=8, num_heads=2,
                                              num_layers=1).eval(),
                       torch.tensor([[1, 2]]), 2).shape == (1, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(22)
    for seed, V, C, H, L, max_len, dtype, B, T0, n in [
        (1, 17, 24, 3, 3, 20, torch.float64, 3, 4, 5),
        (2, 9, 8, 2, 1, 8, torch.float32, 1, 1, 7),  # a one-token prompt, up to max_len
        (3, 11, 16, 4, 2, 12, torch.float32, 2, 6, 1),  # one new token
        (5, 23, 16, 2, 2, 16, torch.float64, 4, 9, 5),
    ]:
        torch.manual_seed(seed)
        model = tfcourse.DecoderOnlyLM(V, max_len=max_len, d_model=C, num_heads=H,
                                       num_layers=L, tie_weights=seed == 5).to(dtype).eval()
        prompt = torch.randint(0, V, (B, T0), generator=gen)
        want = prompt
        with torch.no_grad():
            for _ in range(n):  # the whole prefix at every step, no cache
                nxt = model(want)[:, -1].argmax(-1, keepdim=True)
                want = torch.cat([want, nxt], dim=1)
        fed = []  # positions processed per call: the keys the first layer computes
        counter = model.decoder.layers[0].self_attn.k_proj.register_forward_pre_hook(
            lambda module, args, seen=fed: seen.append(args[0].shape[1]))
        before = prompt.clone()
        try:
            with checks.forbid("tfcourse.language_models.DecoderOnlyLM.generate",
                               task="Exercise 2"):
                got = greedy_generate(model, prompt, n)
        finally:
            counter.remove()
        name = (f"greedy_generate with a {dtype} model (V={V}, C={C}, {L} layers, max_len="
                f"{max_len}) on a {(B, T0)} prompt, max_new_tokens={n}")
        assert torch.equal(prompt, before), f"{name} changed the prompt"
        checks.expect_shape(got, (B, T0 + n), name)
        assert got.dtype == torch.long, f"{name} returned dtype {got.dtype}"
        assert torch.equal(got, want), f"{name} differs from greedy decoding"
        assert fed[:1] == [T0] and fed[1:] in ([1] * (n - 1), [1] * n), (
            f"{name}: the model processed {fed} positions call by call, not the prompt once and "
            "then one token per step")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "mask_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: BERT's masking (5 points)
#
# An encoder-only model sees the whole sequence in both directions, so "predict the next token"
# would be trivial for it. BERT is pre-trained instead to recover tokens that were hidden: the
# *masked language model* (Devlin et al., 2019, section 3.1, "Task #1"). The paper chooses 15% of
# the token positions at random, and a chosen token is
#
# * replaced by the `[MASK]` token 80% of the time,
# * replaced by a random token 10% of the time,
# * left unchanged 10% of the time;
#
# the model is then trained to predict the original token at the chosen positions only. The
# random and unchanged cases exist because `[MASK]` never occurs when the model is fine-tuned:
# the model cannot tell which tokens were chosen, and must keep a good representation of every
# input token. Here, as in the usual implementations, special tokens (padding, `[CLS]`, `[SEP]`,
# `[MASK]` itself) are never chosen and never drawn as the random token.
#
# For each token $x_i$ that is not special, with independent draws:
#
# $$\begin{aligned}
# \text{chosen}_i &\sim \operatorname{Bernoulli}(p), \qquad
# r_i \sim \operatorname{Uniform}(\text{the non-special ids}), \\
# \tilde x_i &= \begin{cases} \mathtt{mask\_id} & \text{with probability } 0.8\\
# r_i & \text{with probability } 0.1\\ x_i & \text{with probability } 0.1
# \end{cases} \ \text{ if chosen}_i, \\
# \tilde x_i &= x_i \text{ otherwise},
# \end{aligned}$$
#
# with $p$ = `mask_prob` (0.15 in the paper). The labels are $x_i$ where chosen and -100
# elsewhere: -100 is `F.cross_entropy`'s default `ignore_index`, so the loss
# `F.cross_entropy(logits.flatten(0, 1), labels.flatten())` scores the chosen positions only.
#
# **Write** `mask_tokens(tokens, *, mask_id, vocab_size, special_ids, mask_prob=0.15,
# generator=None)`: `tokens` (B, T) long, with ids in $[0, V)$ ($V$ = `vocab_size`);
# `special_ids` a tuple or list of ints that includes `mask_id`. Return `(inputs, labels)`, two
# new (B, T) long tensors: the corrupted tokens $\tilde x$ and the labels. Take every random
# draw from `generator` (pass `generator=generator` to `torch.rand`, `torch.randint`, ...), so
# that the same seed gives the same result.
#
# - **Allowed:** `torch.rand`, `torch.randint`, `torch.bernoulli`, `torch.isin`, `torch.where`,
#   `masked_fill`, comparisons, `clone`.
# - **Not allowed:** `tfcourse.mask_tokens` (the hidden tests check).
# - **Pitfalls:** the three cases are exclusive: draw **one** uniform number per token and
#   split it (below 0.8: mask; from 0.8 to 0.9: random; else unchanged), because two
#   independent draws, one for the mask and one for the random token, overlap; the random token
#   comes from the non-special ids only (`torch.randint(vocab_size, ...)` can draw `[MASK]` or
#   padding); labels are -100 wherever the token was not chosen; `tokens[...] = mask_id`
#   changes the caller's tensor: work on a copy.
#
# **Points:** self-check 2, hidden tests 3 (other vocabularies, special ids and `mask_prob`,
# `mask_prob=1`, only special tokens, the random tokens spread over every non-special id, with
# special ids that are not the lowest ones, the same generator seed giving the same result). The tests measure proportions over $10^5$ tokens
# or more, with margins wide enough that a correct implementation always passes.

# %% nbgrader={"grade": false, "grade_id": "mask", "locked": false, "schema_version": 3, "solution": true, "task": false}
def mask_tokens(
    tokens: torch.Tensor, *, mask_id: int, vocab_size: int,
    special_ids: tuple[int, ...] | list[int], mask_prob: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption: (inputs, labels), both (B, T), labels -100 where not chosen."""
    ### BEGIN SOLUTION
    special = torch.tensor(list(special_ids), dtype=tokens.dtype)
    is_special = torch.isin(tokens, special)  # (B, T)
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in set(special_ids)])
    chosen = (torch.rand(tokens.shape, generator=generator) < mask_prob) & ~is_special
    case = torch.rand(tokens.shape, generator=generator)  # one draw per token: 80 / 10 / 10
    random_tokens = ordinary[torch.randint(len(ordinary), tokens.shape, generator=generator)]
    inputs = torch.where(chosen & (case < 0.8), mask_id, tokens)  # a new tensor
    inputs = torch.where(chosen & (case >= 0.8) & (case < 0.9), random_tokens, inputs)
    labels = tokens.masked_fill(~chosen, -100)  # the original token where chosen
    return inputs, labels
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "mask_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (2 points).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
V, MASK = 30, 3
SPECIAL = (0, 1, 2, MASK)  # padding, [CLS], [SEP], [MASK]
tokens = torch.randint(0, V, (200, 500), generator=torch.Generator().manual_seed(0))  # 10^5
before = tokens.clone()
with checks.forbid("tfcourse.language_models.mask_tokens", task="Exercise 3"):
    inputs, labels = mask_tokens(tokens, mask_id=MASK, vocab_size=V, special_ids=SPECIAL,
                                 generator=torch.Generator().manual_seed(1))
assert torch.equal(tokens, before), (
    "mask_tokens changed its input tokens: build new tensors (torch.where, masked_fill, or "
    "clone before writing)")
for name, t in (("inputs", inputs), ("labels", labels)):
    checks.expect_shape(t, (200, 500), f"{name} of mask_tokens on (200, 500) tokens")
    assert t.dtype == torch.long, f"{name} has dtype {t.dtype}, expected torch.long"
special = torch.isin(tokens, torch.tensor(SPECIAL))
chosen = labels != -100
assert not chosen.all(), (
    "every position has a label: the labels are -100 where the token was not chosen")
assert torch.equal(labels[chosen], tokens[chosen]), (
    "at the chosen positions (label not -100) the label is not the original token: labels are "
    "the original tokens, not the corrupted inputs")
assert not (chosen & special).any(), (
    f"{int((chosen & special).sum())} special tokens were chosen: special ids are never chosen")
assert torch.equal(inputs[~chosen], tokens[~chosen]), (
    "tokens that were not chosen (label -100) were changed: only chosen tokens are corrupted, "
    "and every corrupted position needs its label")
rate = chosen.sum().item() / (~special).sum().item()
assert abs(rate - 0.15) < 0.01, (
    f"{rate:.1%} of the non-special tokens were chosen, expected about mask_prob = 15%")
became_mask = (inputs[chosen] == MASK).double().mean().item()
unchanged = (inputs[chosen] == tokens[chosen]).double().mean().item()
replaced = inputs[chosen & (inputs != MASK) & (inputs != tokens)]
random_share = replaced.numel() / chosen.sum().item()
assert became_mask < 0.97, (
    f"{became_mask:.1%} of the chosen tokens became mask_id: only 80% do; 10% become a random "
    "token and 10% stay as they are")
assert not torch.isin(replaced, torch.tensor(SPECIAL)).any(), (
    "some chosen tokens were replaced by a special id: draw the random tokens from the "
    "non-special ids only")
ordinary = V - len(SPECIAL)
assert (abs(became_mask - 0.8) < 0.03 and 0.08 - 0.1 / ordinary < random_share < 0.12
        and 0.08 < unchanged < 0.12 + 0.1 / ordinary), (
    f"of the chosen tokens {became_mask:.1%} became mask_id, {random_share:.1%} a random token "
    f"and {unchanged:.1%} stayed, expected about 80%, 10% and 10%: are the three cases "
    "exclusive (one uniform draw u per token: u < 0.8 mask, 0.8 <= u < 0.9 random, else "
    "unchanged)?")

# %% nbgrader={"grade": true, "grade_id": "mask_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (3 points) run when the notebook is graded. Here this cell only
# checks that mask_tokens runs.
import torch

assert mask_tokens(torch.tensor([[5, 6, 7]]), mask_id=1, vocab_size=8,
                   special_ids=(0, 1))[0].shape == (1, 3)
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _corruption_checks(name, tokens, inputs, labels, special_ids, mask_id, vocab_size, p):
    """Exact rules, then proportions with margins of five standard deviations or more."""
    never_chosen = torch.isin(tokens, torch.tensor(list(special_ids)))
    for part, t in (("inputs", inputs), ("labels", labels)):
        checks.expect_shape(t, tuple(tokens.shape), f"{part} of {name}")
        assert t.dtype == torch.long, f"{part} of {name} has dtype {t.dtype}"
    chosen = labels != -100
    assert torch.equal(labels[chosen], tokens[chosen]), f"{name}: labels are not the originals"
    assert not (chosen & never_chosen).any(), (
        f"{name}: special tokens have labels: were they chosen, or is every position labelled? "
        "Special tokens are never chosen, and the labels are -100 wherever nothing was chosen")
    assert torch.equal(inputs[~chosen], tokens[~chosen]), f"{name}: unchosen tokens changed"
    n_ordinary = int((~never_chosen).sum())
    if n_ordinary == 0:
        return
    rate = chosen.sum().item() / n_ordinary
    std = (p * (1 - p) / n_ordinary) ** 0.5
    assert abs(rate - p) < max(6 * std, 1e-9), f"{name}: {rate:.3f} chosen, expected {p}"
    n_chosen = int(chosen.sum())
    masked = (inputs[chosen] == mask_id).double().mean().item()
    same = (inputs[chosen] == tokens[chosen]).double().mean().item()
    replaced = inputs[chosen & (inputs != mask_id) & (inputs != tokens)]
    assert not torch.isin(replaced, torch.tensor(list(special_ids))).any(), (
        f"{name}: a random token is a special id")
    assert bool(((replaced >= 0) & (replaced < vocab_size)).all()), f"{name}: ids out of range"
    ordinary = vocab_size - len(set(special_ids))
    margin = 6 * (0.8 * 0.2 / n_chosen) ** 0.5
    assert abs(masked - 0.8) < margin, f"{name}: {masked:.3f} of the chosen tokens masked"
    share = replaced.numel() / n_chosen  # 0.1, or a little less when r_i may equal x_i
    assert 0.1 - 0.1 / ordinary - margin < share < 0.1 + margin, f"{name}: random share"
    assert 0.1 - margin < same < 0.1 + 0.1 / ordinary + margin, f"{name}: unchanged share"
    return replaced


def _spread_checks(name, replaced, special_ids, vocab_size):
    """The random tokens are spread evenly over the non-special ids (each drawn 100+ times)."""
    allowed = [i for i in range(vocab_size) if i not in set(special_ids)]
    counts = torch.bincount(replaced, minlength=vocab_size)[allowed].double()
    expected = replaced.numel() / len(allowed)
    worst = int((counts - expected).abs().argmax())
    assert bool(((counts > 0.4 * expected) & (counts < 1.6 * expected)).all()), (
        f"{name}: the random tokens are not spread evenly over the non-special ids: id "
        f"{allowed[worst]} was drawn {int(counts[worst])} times, about {expected:.0f} expected. "
        f"With special ids {list(special_ids)}, draw from the ids that are not special, wherever "
        "they lie (the special ids are not always the lowest ones)")


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(33)
    forbidden = "tfcourse.language_models.mask_tokens"
    # 1. a larger vocabulary, mask_id the last special id, 4 * 10^5 tokens
    V, special_ids, mask_id = 50, (0, 1, 2, 3, 4), 4
    tokens = torch.randint(0, V, (400, 1000), generator=gen)
    before = tokens.clone()
    with checks.forbid(forbidden, task="Exercise 3"):
        inputs, labels = mask_tokens(tokens, special_ids=special_ids, mask_id=mask_id,
                                     vocab_size=V, generator=torch.Generator().manual_seed(5))
    assert torch.equal(tokens, before), "mask_tokens changed its input tokens"
    replaced = _corruption_checks("mask_tokens, V=50", tokens, inputs, labels, special_ids,
                                  mask_id, V, 0.15)
    _spread_checks("mask_tokens, V=50", replaced, special_ids, V)
    # 2. mask_id the highest id, special ids as a list, mask_prob 0.3
    V, special_ids = 12, [11, 0]
    tokens = torch.randint(0, V, (1000, 100), generator=gen)
    with checks.forbid(forbidden, task="Exercise 3"):
        inputs, labels = mask_tokens(tokens, mask_id=11, vocab_size=V, special_ids=special_ids,
                                     mask_prob=0.3, generator=torch.Generator().manual_seed(6))
    replaced = _corruption_checks("mask_tokens, V=12, mask_prob=0.3", tokens, inputs, labels,
                                  special_ids, 11, V, 0.3)
    _spread_checks("mask_tokens, V=12, special ids [11, 0]", replaced, special_ids, V)
    # 3. mask_prob = 1: every non-special token is chosen
    tokens = torch.randint(0, 20, (100, 200), generator=gen)
    with checks.forbid(forbidden, task="Exercise 3"):
        inputs, labels = mask_tokens(tokens, mask_id=1, vocab_size=20, special_ids=(0, 1),
                                     mask_prob=1.0, generator=torch.Generator().manual_seed(7))
    special = tokens <= 1
    assert torch.equal(labels[~special], tokens[~special]), "mask_prob=1: not every token chosen"
    _corruption_checks("mask_tokens, mask_prob=1", tokens, inputs, labels, (0, 1), 1, 20, 1.0)
    # 4. nothing but special tokens: nothing to choose
    tokens = torch.tensor([[0, 1, 2, 2], [2, 0, 0, 0]])
    with checks.forbid(forbidden, task="Exercise 3"):
        inputs, labels = mask_tokens(tokens, mask_id=2, vocab_size=6, special_ids=(0, 1, 2),
                                     mask_prob=0.9, generator=torch.Generator().manual_seed(8))
    assert torch.equal(inputs, tokens) and bool((labels == -100).all()), (
        "mask_tokens chose special tokens")
    # 5. the generator: the same seed gives the same result, another seed another one
    tokens = torch.randint(0, 40, (8, 64), generator=gen)
    runs = []
    with checks.forbid(forbidden, task="Exercise 3"):
        for seed in (9, 9, 10):
            runs.append(mask_tokens(tokens, mask_id=3, vocab_size=40, special_ids=(0, 3),
                                    generator=torch.Generator().manual_seed(seed)))
        no_generator = mask_tokens(tokens, mask_id=3, vocab_size=40, special_ids=(0, 3))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1]), (
        "two calls with generators seeded alike give different results: take every random "
        "draw from generator")
    assert not torch.equal(runs[0][1], runs[2][1]), "the seed of the generator has no effect"
    assert no_generator[0].shape == tokens.shape, "generator=None does not work"
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "pool_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: mean pooling for a classifier (2 points)
#
# To fine-tune a pre-trained encoder on a classification task, a linear layer is put on **one**
# vector per sequence. BERT takes the output at the first position, the `[CLS]` token (Devlin et
# al., 2019, section 3); the other common choice is the mean of the outputs over the sequence's
# real tokens, the default pooling of Sentence-BERT (Reimers and Gurevych, 2019). Padding
# positions carry no content and must not enter the mean: with $m_{b,t} = [x_{b,t} \ne
# \text{pad}]$ and encoder outputs $h_{b,t} \in \mathbb{R}^C$,
#
# $$\bar h_b = \frac{\sum_{t} m_{b,t}\, h_{b,t}}{\sum_{t} m_{b,t}} .$$
#
# **Write** `mean_pool(h, tokens, *, pad_id)`: `h` (B, T, C) floating point, the encoder's
# outputs; `tokens` (B, T) long, the ids they were computed from, each row with at least one
# token that is not `pad_id`. Return the (B, C) means, in the dtype of `h`.
#
# - **Allowed:** comparisons, `unsqueeze`, `sum`, division, `to(h.dtype)`.
# - **Not allowed:** `tfcourse.SequenceClassifier` (it pools for you; the hidden tests check).
# - **Pitfalls:** `h.mean(1)` averages the padding in; dividing the masked sum by $T$ does too,
#   in effect; the mask (B, T) needs a last axis, (B, T, 1), to broadcast against (B, T, C);
#   the padding id is not always 0.
#
# **Points:** self-check 1, hidden tests 1 (other sizes and padding ids, rows without padding,
# rows padded on the left, float64 and bfloat16, no gradient reaching the padding).

# %% nbgrader={"grade": false, "grade_id": "pool", "locked": false, "schema_version": 3, "solution": true, "task": false}
def mean_pool(h: torch.Tensor, tokens: torch.Tensor, *, pad_id: int) -> torch.Tensor:
    """(B, T, C) -> (B, C): the mean of h over the positions whose token is not pad_id."""
    ### BEGIN SOLUTION
    real = (tokens != pad_id).unsqueeze(-1).to(h.dtype)  # (B, T, 1): 1 for a real token
    return (h * real).sum(dim=1) / real.sum(dim=1)  # (B, C) / (B, 1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "pool_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
h = torch.randn(2, 5, 3)  # (B, T, C)
tokens = torch.tensor([[5, 6, 7, 8, 9], [4, 3, 0, 0, 0]])  # padding id 0
real = (tokens != 0).float()[..., None]  # (B, T, 1)
want = torch.stack([h[0].mean(0), h[1, :2].mean(0)])  # (B, C)
with checks.forbid("tfcourse.language_models.SequenceClassifier.forward", task="Exercise 4"):
    got = mean_pool(h, tokens, pad_id=0)
checks.expect_shape(got, (2, 3), "mean_pool(h (2, 5, 3), tokens, pad_id=0)",
                    hint="average over the positions, dim 1, which leaves (B, C)")
checks.expect_close(got, want, "mean_pool(h, tokens, pad_id=0)", mistakes={
    "the padding positions are averaged in: the mean is over the real tokens only":
        h.mean(1),
    "the masked sum is divided by T: divide by the number of real tokens of each row":
        (h * real).sum(1) / 5,
    "this is the masked sum: divide it by the number of real tokens": (h * real).sum(1),
    "this is the first position (BERT's [CLS]): the exercise asks for the mean": h[:, 0],
})

# %% nbgrader={"grade": true, "grade_id": "pool_hidden", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (1 point) run when the notebook is graded. Here this cell only
# checks that mean_pool runs.
import torch

assert mean_pool(torch.zeros(1, 2, 4), torch.tensor([[1, 0]]), pad_id=0).shape == (1, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(44)
    for B, T, C, pad, dtype, side in [
        (3, 7, 4, 0, torch.float64, "right"), (1, 1, 6, 2, torch.float32, "right"),
        (4, 9, 5, 7, torch.float32, "left"), (2, 3, 8, 1, torch.float64, "right"),
        (4, 6, 5, 4, torch.bfloat16, "left and right"),
    ]:
        h = torch.randn(B, T, C, generator=gen, dtype=dtype).requires_grad_(True)
        tokens = torch.randint(0, 10, (B, T), generator=gen)
        tokens[tokens == pad] = (pad + 1) % 10
        tokens[:, 0] = 0 if pad != 0 else 5  # id 0 is a real token unless it is the padding
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[0] = T  # one row without padding
        padded = torch.arange(T) >= lengths[:, None]  # (B, T), right padding
        if side == "left":
            padded = padded.flip(1)
        elif side == "left and right":
            padded[1::2] = padded[1::2].flip(1)  # rows 1, 3, ... padded on the left
        tokens = tokens.masked_fill(padded, pad)
        h64 = h.detach().double()
        want = torch.stack([h64[b, ~padded[b]].mean(0) for b in range(B)]).to(dtype)
        n = (~padded).sum(1, keepdim=True)  # (B, 1): the real tokens of each row
        first_n = (torch.arange(T) < n)[..., None]  # (B, T, 1): the first n positions
        mistakes = {"the mean is over the first n positions of each row, n the number of real "
                    "tokens: the padding is not always at the end (some rows here are padded on "
                    "the left); average where tokens != pad_id":
                    ((h64 * first_n).sum(1) / n).to(dtype)}
        h_before = h.detach().clone()
        with checks.forbid("tfcourse.language_models.SequenceClassifier.forward",
                           task="Exercise 4"):
            got = mean_pool(h, tokens, pad_id=pad)
            (got * torch.randn(got.shape, generator=gen, dtype=dtype)).sum().backward()
        name = f"mean_pool on h {(B, T, C)} {dtype}, pad_id={pad}, padded on the {side}"
        assert got.dtype == dtype, (
            f"{name} returned {got.dtype}: return the means in the dtype of h (make the mask with "
            ".to(h.dtype), not .float())")
        checks.expect_close(got, want, name, mistakes=mistakes, hint="the mean over the "
                            "positions whose token is not pad_id, divided by their number")
        assert torch.equal(h.detach(), h_before), f"{name} changed h"
        assert h.grad is not None and h.grad[padded].abs().sum() == 0, (
            f"{name}: a gradient reaches the padding positions")
    return True


assert _hidden_tests()
### END HIDDEN TESTS
