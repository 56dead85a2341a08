# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 9 exercises: Jamba
#
# Five graded exercises write the parts that Jamba (Lieber et al., 2024, "Jamba: A Hybrid
# Transformer-Mamba Language Model", arXiv:2403.19887) puts around the Mamba layers of
# chapter 8: the schedule that places a few attention layers and mixtures of experts among the
# Mamba layers, with the memory that the attention layers' cache costs; the router that sends
# each token to its best k experts; the mixture-of-experts layer itself; the load-balancing loss
# that keeps the router from favouring a few experts; and the grouped-query attention of Jamba's
# attention layers.
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `layer_schedule` and `kv_cache_bytes`, the layer schedule and its cache | 4 |
# | 2 | `top_k_routing`, the router's choices and their weights | 3 |
# | 3 | `moe_forward`, a mixture-of-experts layer | 4 |
# | 4 | `load_balancing_loss`, the auxiliary loss of the router | 3 |
# | 5 | `grouped_query_attention`, causal attention with shared keys and values | 4 |
# | | **total** | **18** |
#
# The reference implementation is `tfcourse.jamba` (`JambaConfig` with its `layer_types` and
# `uses_experts`, `kv_cache_bytes`, `GroupedQueryAttention`) and `tfcourse.moe`
# (`MoEFeedForward`, `load_balancing_loss`, `expert_load`); the exercises write its parts
# yourself, on small tensors and untrained modules.
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
# Shapes use the course's letters: `B` batch, `T` positions, `C` model width, `H` query heads,
# `G` key/value heads, `D` = C / H the width of a head, `L` layers, `X` experts, `k` experts
# chosen per token, and `N` = B·T the tokens that a router sees, flattened. The paper writes
# $n$ for the number of experts and $K$ for the experts chosen per token.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
import torch.nn.functional as F
from torch import nn

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "schedule_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: the layer schedule and its cache (4 points)
#
# A Jamba model is a stack of $L$ layers, each a pair of pre-norm residual steps (section 2,
# Figure 1):
#
# $$x \leftarrow x + \operatorname{Mixer}(\operatorname{RMSNorm}(x)), \qquad
# x \leftarrow x + \operatorname{FFN}(\operatorname{RMSNorm}(x)).$$
#
# The mixer is **attention** or **Mamba**, and the feed-forward network is a dense one or a
# **mixture of experts** (Exercises 2 to 4). Two periods place them. Counting the layers from 0,
# layer $i$ is an attention layer when $i \bmod$ `attn_layer_period` $=$ `attn_layer_offset`,
# and a Mamba layer otherwise; its feed-forward network is a mixture of experts when
# $i \bmod$ `expert_layer_period` $=$ `expert_layer_offset`, and dense otherwise (the names are
# those of the released configuration, and of `tfcourse.JambaConfig`). The paper's Jamba block
# has $l = 8$ layers, attention to Mamba in the ratio $a : m = 1 : 7$, and a mixture of experts
# every $e = 2$ layers (section 3.1); the released model puts the attention layer at offset 4
# and the experts at offset 1, and stacks 4 such blocks, 32 layers:
#
# ```
# layer i         0     1     2     3     4     5     6     7       then again from 8
# mixer           Mamba Mamba Mamba Mamba attn  Mamba Mamba Mamba   i % 8 == 4
# feed-forward    dense MoE   dense MoE   dense MoE   dense MoE     i % 2 == 1
# ```
#
# **What the schedule saves.** When a model generates text, each attention layer keeps the key
# and the value of every past token, for each of its key/value heads: its cache grows with the
# context. A Mamba layer keeps a state of fixed size whatever the context (chapter 8), which is
# not counted here. With $G$ key/value heads of width $D = C / H$ (Jamba's attention shares each
# key/value head among $H / G$ query heads: Exercise 5), the cache takes
#
# $$\text{bytes} = 2 \cdot L_\text{attention} \cdot G \cdot D \cdot \text{context} \cdot
# \text{batch} \cdot \text{bytes per number},$$
#
# the 2 for a key and a value (`dtype_bytes` is the bytes per number: 2 for float16 and
# bfloat16). Jamba-v0.1 ($C = 4096$, $H = 32$, $G = 8$, so $D = 128$; 4
# attention layers) at a context of 256K = 262144 tokens in 16-bit numbers: $2 \cdot 4 \cdot 8
# \cdot 128 \cdot 262144 \cdot 2$ bytes = 4 GiB, the "4GB" of the paper's Table 1; the same
# shape with attention in all 32 layers, as Mixtral has, needs 32 GiB.
#
# **Write** two functions:
#
# - `layer_schedule(num_layers, attn_layer_period, attn_layer_offset, expert_layer_period,
#   expert_layer_offset)`: ints, the periods at least 1 and each offset below its period;
#   `num_layers` need not be a multiple of a period. Return a list of `num_layers` pairs
#   `(mixer, uses_experts)`, layer 0 first: `mixer` the string `"attention"` or `"mamba"`,
#   `uses_experts` a Python bool. The first pair of the Jamba block is `("mamba", False)`.
# - `kv_cache_bytes(schedule, d_model, num_heads, num_kv_heads, context, batch=1,
#   dtype_bytes=2)`: `schedule` a list of pairs as `layer_schedule` returns; the width $C$, the
#   heads $H$ and $G$, the context, the batch and the bytes per number, ints. Return the bytes of
#   the cache, an int.
#
# - **Allowed:** `range`, `%`, `//`, comparisons, loops, list comprehensions, `sum`, `len`.
# - **Not allowed:** `tfcourse.JambaConfig` (its `layer_types` and `uses_experts`) and
#   `tfcourse.kv_cache_bytes` (the hidden tests check).
# - **Pitfalls:** the layers count from 0, so offset 4 is the fifth layer; the offset counts:
#   `i % period == 0` puts attention in layer 0; the experts go to the odd layers 1, 3, 5, 7 of the
#   Jamba block, not the even ones; period and offset are not interchangeable; only attention
#   layers keep a cache; a key **and** a value; $G$ heads, not $H$, each of width $D = C / H$
#   (the width of a query head), not $C / G$; use `//`, so that the bytes stay an int; the
#   schedule follows the rule in every layer, also when `num_layers` is not a whole number of
#   blocks.
#
# **Points:** self-check 2 (the Jamba block of 8 layers, the cache of Jamba-v0.1 at 256K
# tokens), hidden tests 2 (other periods and offsets, a period of 1, `num_layers` not a multiple
# of the periods or shorter than them, Jamba-v0.1's 32 layers, multi-head and multi-query
# attention, a schedule without attention, another batch and number size).

# %% nbgrader={"grade": false, "grade_id": "schedule", "locked": false, "schema_version": 3, "solution": true, "task": false}
def layer_schedule(num_layers: int, attn_layer_period: int, attn_layer_offset: int,
                   expert_layer_period: int, expert_layer_offset: int) -> list:
    """[(mixer, uses_experts)] for the layers i = 0 … L − 1: "attention" when
    i % attn_layer_period == attn_layer_offset, else "mamba"; experts when
    i % expert_layer_period == expert_layer_offset."""
    ### BEGIN SOLUTION
    schedule = []
    for i in range(num_layers):  # layer 0 first
        mixer = "attention" if i % attn_layer_period == attn_layer_offset else "mamba"
        schedule.append((mixer, i % expert_layer_period == expert_layer_offset))
    return schedule
    ### END SOLUTION


def kv_cache_bytes(schedule: list, d_model: int, num_heads: int, num_kv_heads: int,
                   context: int, batch: int = 1, dtype_bytes: int = 2) -> int:
    """Bytes of the key/value cache: 2 · L_attention · G · D · context · batch · dtype_bytes,
    with D = C / H."""
    ### BEGIN SOLUTION
    attention_layers = sum(mixer == "attention" for mixer, _ in schedule)  # Mamba keeps none
    head_dim = d_model // num_heads  # D = C / H
    per_token = 2 * attention_layers * num_kv_heads * head_dim  # a key and a value per K/V head
    return per_token * context * batch * dtype_bytes
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "schedule_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (2 points).
import warnings

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.jamba.JambaConfig.layer_types", "tfcourse.jamba.JambaConfig.uses_experts",
             "tfcourse.jamba.kv_cache_bytes")
block = [("mamba", False), ("mamba", True), ("mamba", False), ("mamba", True),
         ("attention", False), ("mamba", True), ("mamba", False), ("mamba", True)]
name = "layer_schedule(8, 8, 4, 2, 1), the Jamba block"
with checks.forbid(*forbidden, task="Exercise 1"):
    try:
        got = layer_schedule(8, 8, 4, 2, 1)
    except NotImplementedError:
        raise
    except (TypeError, ValueError, IndexError, ZeroDivisionError) as error:
        raise checks.ContractError(
            f"{name} fails: {error!r}. Layer i is attention when i % attn_layer_period == "
            "attn_layer_offset, and uses experts when i % expert_layer_period == "
            "expert_layer_offset") from None
assert isinstance(got, list) and len(got) == 8, (
    f"{name} returned {got!r}: expected a list of 8 pairs (mixer, uses_experts), one per layer")
for i, pair in enumerate(got):
    assert isinstance(pair, tuple | list) and len(pair) == 2, (
        f"layer {i} of {name} is {pair!r}: expected a pair (mixer, uses_experts), such as "
        "('mamba', True)")
    assert pair[0] in ("attention", "mamba"), (
        f"the mixer of layer {i} of {name} is {pair[0]!r}: expected 'attention' or 'mamba'")
    assert type(pair[1]) is bool, (
        f"uses_experts of layer {i} of {name} is {pair[1]!r}, a {type(pair[1]).__name__}: "
        "expected True or False, the result of a comparison such as i % period == offset")


def layers_with(schedule, which):
    return [i for i, pair in enumerate(schedule) if which(pair)]


attention = layers_with(got, lambda pair: pair[0] == "attention")
hints = {
    (3,): "the layers count from 0 (range(num_layers)), so offset 4 is layer 4, the fifth",
    (0,): "the offset is missing: layer i is attention when i % attn_layer_period == "
          "attn_layer_offset, not == 0",
    (): "no layer is attention: compare i % attn_layer_period with attn_layer_offset (are the "
        "period and the offset swapped?)",
}
assert attention == [4], (
    f"{name} puts attention in the layers {attention}, expected [4]: "
    + hints.get(tuple(attention), "layer i is attention when i % attn_layer_period == "
                                   "attn_layer_offset"))
experts = layers_with(got, lambda pair: pair[1])
hints = {
    (0, 2, 4, 6): "the experts are on the even layers: layer i uses experts when "
                  "i % expert_layer_period == expert_layer_offset, so the odd layers here (is "
                  "the offset missing, or counted from 1?)",
    (): "no layer uses experts: compare i % expert_layer_period with expert_layer_offset (are "
        "the period and the offset swapped?)",
}
assert experts == [1, 3, 5, 7], (
    f"{name} puts experts in the layers {experts}, expected [1, 3, 5, 7]: "
    + hints.get(tuple(experts), "layer i uses experts when i % expert_layer_period == "
                                "expert_layer_offset"))

GiB = 2**30
jamba = block * 4  # Jamba-v0.1: 32 layers, 4 of them attention
name = "kv_cache_bytes(Jamba-v0.1's 32 layers, C = 4096, H = 32, G = 8, context = 262144)"
with checks.forbid(*forbidden, task="Exercise 1"):
    try:
        size = kv_cache_bytes(jamba, 4096, 32, 8, 262144)
    except NotImplementedError:
        raise
    except (TypeError, ValueError, ZeroDivisionError) as error:
        raise checks.ContractError(
            f"{name} fails: {error!r}. Count the layers whose mixer is 'attention'") from None
assert isinstance(size, int) and not isinstance(size, bool), (
    f"{name} returned {size!r}, a {type(size).__name__}: expected an int number of bytes (use "
    "// for D = C // H)")
hints = {
    32: "every layer is counted: only the 4 attention layers keep a cache, the 28 Mamba layers "
        "keep a state of fixed size",
    28: "the 28 Mamba layers are counted: count the 4 attention layers instead",
    16: "4 times too much: the cache holds G = 8 key/value heads (not H = 32) of width "
        "D = C / H = 128 (not C / G = 512)",
    2: "half of it: each attention layer keeps a key and a value (the factor 2) per head and "
       "token, at dtype_bytes = 2 bytes per number",
    1: "a quarter of it: a key and a value (the factor 2) per head and token, and dtype_bytes = "
       "2 bytes per number",
}
assert size == 4 * GiB, (
    f"{name} is {size / GiB:g} GiB, expected 4 GiB (the paper's Table 1): "
    + hints.get(size / GiB, "2 · L_attention · G · (C // H) · context · batch · dtype_bytes"))
with checks.forbid(*forbidden, task="Exercise 1"):
    size = kv_cache_bytes([("attention", True)] * 32, 4096, 32, 8, 262144)
assert size == 32 * GiB, (
    f"with attention in all 32 layers (Mixtral's shape), kv_cache_bytes is {size / GiB:g} GiB, "
    "expected 32 GiB")

# %% nbgrader={"grade": true, "grade_id": "schedule_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (2 points) run when the notebook is graded. Here this cell only
# checks that layer_schedule and kv_cache_bytes run.
assert len(layer_schedule(3, 2, 1, 2, 0)) == 3
assert kv_cache_bytes([("attention", False)], 8, 2, 1, 1) == 16
### BEGIN HIDDEN TESTS
import dataclasses
import warnings

import tfcourse.jamba
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    blocked = ("tfcourse.jamba.JambaConfig.layer_types",
               "tfcourse.jamba.JambaConfig.uses_experts", "tfcourse.jamba.kv_cache_bytes")
    for layers, attn_period, attn_offset, expert_period, expert_offset in [
        (32, 8, 4, 2, 1), (10, 4, 0, 3, 2), (5, 1, 0, 1, 0), (7, 3, 2, 5, 4), (3, 8, 4, 2, 1),
        (1, 2, 1, 2, 0), (12, 6, 5, 4, 3), (9, 2, 1, 3, 0),
    ]:
        config = tfcourse.jamba.JambaConfig(
            num_layers=layers, attn_layer_period=attn_period, attn_layer_offset=attn_offset,
            expert_layer_period=expert_period, expert_layer_offset=expert_offset)
        expected = list(zip(config.layer_types(), config.uses_experts(), strict=True))
        label = (f"layer_schedule({layers}, {attn_period}, {attn_offset}, {expert_period}, "
                 f"{expert_offset})")
        with checks.forbid(*blocked, task="Exercise 1"):
            result = layer_schedule(layers, attn_period, attn_offset, expert_period,
                                    expert_offset)
        assert isinstance(result, list), f"{label} is a {type(result).__name__}, not a list"
        assert [tuple(pair) for pair in result] == expected, (
            f"{label}: {result}, expected {expected}")
        assert all(type(pair[1]) is bool for pair in result), (
            f"{label}: uses_experts must be a bool")

    jamba = tfcourse.jamba.JAMBA_V0_1
    tiny = tfcourse.jamba.JambaConfig
    for config, context, batch, dtype_bytes in [
        (jamba, 262144, 1, 2), (jamba, 1000, 3, 4),
        (dataclasses.replace(jamba, num_kv_heads=32), 4096, 1, 2),  # multi-head: G = H
        (tiny(d_model=48, num_heads=6, num_kv_heads=1, num_layers=10, attn_layer_period=3,
              attn_layer_offset=1), 17, 2, 2),  # multi-query: G = 1
        (tiny(num_layers=3), 64, 1, 2),  # no attention layer at all
        (tiny(d_model=64, num_heads=8, num_kv_heads=2, num_layers=6, attn_layer_period=1,
              attn_layer_offset=0), 5, 2, 1),  # attention everywhere
    ]:
        schedule = list(zip(config.layer_types(), config.uses_experts(), strict=True))
        expected = tfcourse.jamba.kv_cache_bytes(config, context, batch, dtype_bytes)
        label = (f"kv_cache_bytes(a schedule with {config.layer_types().count('attention')} "
                 f"attention layers of {config.num_layers}, C={config.d_model}, "
                 f"H={config.num_heads}, G={config.num_kv_heads}, context={context}, "
                 f"batch={batch}, dtype_bytes={dtype_bytes})")
        with checks.forbid(*blocked, task="Exercise 1"):
            result = kv_cache_bytes(schedule, config.d_model, config.num_heads,
                                    config.num_kv_heads, context, batch=batch,
                                    dtype_bytes=dtype_bytes)
        assert isinstance(result, int) and not isinstance(result, bool), (
            f"{label} is a {type(result).__name__}, not an int")
        assert result == expected, f"{label}: {result}, expected {expected}"
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "routing_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: the router's choices (3 points)
#
# A mixture of experts replaces one feed-forward network with $X$ of them, the **experts**, and a
# **router**: a linear map $W_r$ from $C$ to $X$ numbers, without bias, that scores the experts
# for each token, $s = x W_r$ (Shazeer et al., 2017, "Outrageously Large Neural Networks",
# arXiv:1701.06538, section 2). In Jamba the scores become probabilities by a softmax over the
# $X$ experts, $p = \operatorname{softmax}(s)$; each token goes to its $k$ experts of highest
# probability, and each chosen expert's output is weighted by its probability $p_i$ **as it
# is**: the $k$ weights of a token are not renormalised, and sum to less than 1 (AI21's released
# code; Jamba-v0.1 has $X = 16$ experts and $k = 2$). Mixtral renormalises them to sum to 1,
# which is the same as a softmax over the $k$ chosen scores only (Jiang et al., 2024,
# arXiv:2401.04088, section 2.1): that is not what is asked here.
#
# ```
# s (…, X) ─ softmax over the experts ─ p (…, X) ─ the k largest ─ weights (…, k), indices (…, k)
#
# p = (0.1, 0.5, 0.1, 0.3), k = 2   →   weights (0.5, 0.3), indices (1, 3): best first
# ```
#
# **Write** `top_k_routing(router_logits, k)`: `router_logits` (…, X), the scores $s$ of each
# token, floating point, with any number of leading axes, none included ((X,): one token;
# usually (N, X)); $1 \le k \le X$.
# Return `(weights, indices)`, both (…, k): `indices` (int64) the $k$ experts of highest
# probability, best first, and `weights` their probabilities $p_i$, through which gradients flow
# to the logits. Compute the softmax in float32 for float16 and bfloat16 logits, and in float64
# for float64 (`torch.promote_types(router_logits.dtype, torch.float32)`), and return the
# weights in that dtype: rounded to half precision, probabilities that differ would tie. Where
# two experts tie, either may be chosen.
#
# - **Allowed:** `torch.softmax`, `torch.topk`, `torch.sort`, `torch.argsort`, `gather`,
#   `.to`, indexing.
# - **Not allowed:** `tfcourse.MoEFeedForward` (its `routing`; the hidden tests check).
# - **Pitfalls:** the softmax runs over the experts, the last axis, not over the tokens; take it
#   over all $X$ experts, then the top $k$: a softmax over the $k$ chosen scores renormalises;
#   do not divide the weights by their sum; return the weights first and the best expert first;
#   choose $k$ different experts; do not detach the weights; work on the last axis (`dim=-1`),
#   whatever the leading axes: `flatten(0, -2)` needs at least one.
#
# **Points:** self-check 1, hidden tests 2 ($k = 1$ and $k = X$, one expert, (B, T, X) logits,
# logits (X,) without a leading axis, float64, float16 and bfloat16, ties, gradients).

# %% nbgrader={"grade": false, "grade_id": "routing", "locked": false, "schema_version": 3, "solution": true, "task": false}
def top_k_routing(router_logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(…, X) -> weights (…, k), indices (…, k): the k experts of highest probability
    p = softmax(router_logits) over the experts, best first, and their probabilities."""
    ### BEGIN SOLUTION
    work = torch.promote_types(router_logits.dtype, torch.float32)
    probs = torch.softmax(router_logits.to(work), dim=-1)  # (…, X): over the experts
    weights, indices = probs.topk(k, dim=-1)  # (…, k), (…, k): best first
    return weights, indices  # not renormalised: Jamba's weights
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "routing_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (1 point).
import warnings

import torch

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.moe.MoEFeedForward.routing", "tfcourse.moe.MoEFeedForward.forward")
torch.manual_seed(2)
moe = tfcourse.MoEFeedForward(8, 16, 4, top_k=2)  # C = 8, F = 16, X = 4 experts, k = 2
tokens = torch.randn(6, 8)  # (N, C): six tokens
with torch.no_grad():
    logits, want_indices, want_weights = moe.routing(tokens)  # (6, 4), (6, 2), (6, 2)
    mistakes = {
        "the weights of each token sum to 1: that is Mixtral's routing (the top k "
        "renormalised, or a softmax over the k chosen scores). Jamba keeps the probabilities of "
        "the softmax over all X experts as they are":
            want_weights / want_weights.sum(-1, keepdim=True),
        "the softmax runs over the tokens (dim=0): it runs over the experts, the last axis, so "
        "that the probabilities of each token sum to 1":
            torch.softmax(logits, dim=0).topk(2, dim=-1).values,
        "these are the scores of the chosen experts, not their probabilities: take the softmax "
        "over the X experts": logits.topk(2, dim=-1).values,
        "the weights are worst first: return the best expert first, as torch.topk does":
            want_weights.flip(-1),
        "every token gets its best expert twice: take k different experts (after the best, "
        "leave it out before taking the next; torch.topk does both)":
            want_weights[:, :1].expand(6, 2),
    }
name = "top_k_routing(router_logits (6, 4), k=2)"
with checks.forbid(*forbidden, task="Exercise 2"):
    try:
        result = top_k_routing(logits, 2)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. The logits are (N, X): softmax and top k over the experts, "
            "the last axis (dim=-1)") from None
assert isinstance(result, tuple) and len(result) == 2, (
    f"{name} returned a {type(result).__name__}: expected a pair (weights, indices)")
weights, indices = result
assert isinstance(weights, torch.Tensor) and weights.is_floating_point(), (
    f"the first tensor of {name} is not floating point: return (weights, indices), the weights "
    "first")
checks.expect_shape(weights, (6, 2), f"weights = {name}[0]",
                    hint="k = 2 weights per token: the top k over the experts, the last axis")
checks.expect_close(weights, want_weights, f"weights = {name}[0]", mistakes=mistakes)
assert isinstance(indices, torch.Tensor) and indices.dtype == torch.int64, (
    f"the indices of {name} are not int64 (torch.long), as torch.topk returns them")
assert torch.equal(indices, want_indices), (
    f"the indices of {name} are {indices.tolist()}, expected {want_indices.tolist()}: the "
    "experts whose probabilities the weights are, best first")

# %% nbgrader={"grade": true, "grade_id": "routing_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (2 points) run when the notebook is graded. Here this cell only
# checks that top_k_routing runs.
import torch

assert len(top_k_routing(torch.zeros(3, 4), 2)) == 2
### BEGIN HIDDEN TESTS
import warnings

import torch

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(92)
    blocked = ("tfcourse.moe.MoEFeedForward.routing", "tfcourse.moe.MoEFeedForward.forward")
    tied = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    cases = [  # (label, logits, k, whether the choice is unique)
        ("(5, 4), k=1", torch.randn(5, 4, generator=gen) * 2, 1, True),
        ("(6,), one token without a leading axis, k=2", torch.randn(6, generator=gen) * 2, 2,
         True),
        ("(2, 3, 6), float64, k=3", torch.randn(2, 3, 6, generator=gen, dtype=torch.float64),
         3, True),
        ("(4, 5), float64, k = X = 5", torch.randn(4, 5, generator=gen, dtype=torch.float64), 5,
         True),
        ("(3, 1), one expert, k=1", torch.randn(3, 1, generator=gen), 1, True),
        ("(1, 16), Jamba's X = 16, k=2", torch.randn(1, 16, generator=gen) * 3, 2, True),
        ("(7, 8), float16, k=2", (torch.randn(7, 8, generator=gen) * 2).half(), 2, True),
        ("(4, 6), bfloat16, k=2", (torch.randn(4, 6, generator=gen) * 2).bfloat16(), 2, True),
        ("(3, 4) with ties, k=2", tied, 2, False),
        ("(3, 4) with ties, k=1", tied, 1, False),
    ]
    for label, logits, k, unique in cases:
        work = torch.promote_types(logits.dtype, torch.float32)
        leaf = logits.to(work).clone().requires_grad_()
        probs = torch.softmax(leaf, dim=-1)
        expected = probs.topk(k, dim=-1).values
        name = f"top_k_routing(router_logits {label})"
        given = logits.clone().requires_grad_(logits.dtype in (torch.float32, torch.float64))
        with checks.forbid(*blocked, task="Exercise 2"):
            try:
                result = top_k_routing(given, k)
            except (IndexError, RuntimeError) as error:
                if logits.dim() > 1:
                    raise
                raise checks.ContractError(
                    f"{name} fails ({error}): work on the last axis, dim=-1, whatever the "
                    "leading axes, none included (flatten(0, -2) needs at least one)") from None
        assert isinstance(result, tuple) and len(result) == 2, f"{name}: not a pair"
        weights, indices = result
        checks.expect_close(weights, expected.detach(), f"the weights of {name}")
        assert isinstance(indices, torch.Tensor) and indices.dtype == torch.int64, (
            f"the indices of {name} are not int64")
        assert indices.shape == expected.shape, f"the indices of {name}: shape {indices.shape}"
        assert ((indices >= 0) & (indices < logits.shape[-1])).all(), (
            f"the indices of {name} are not experts")
        ordered = indices.sort(dim=-1).values
        assert (ordered[..., 1:] != ordered[..., :-1]).all(), (
            f"{name} chooses an expert twice for some token")
        checks.expect_close(probs.detach().gather(-1, indices), weights.detach(),
                            f"the probabilities of the indices of {name}, against its weights")
        if unique and given.requires_grad:
            upstream = torch.randn(expected.shape, generator=gen, dtype=expected.dtype)
            (want_grad,) = torch.autograd.grad((expected * upstream).sum(), leaf)
            assert weights.requires_grad, f"{name}: no gradient reaches the logits"
            (got_grad,) = torch.autograd.grad((weights * upstream).sum(), given)
            checks.expect_close(got_grad, want_grad, f"the gradient of the logits in {name}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "moe_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: a mixture-of-experts layer (4 points)
#
# With the routing of Exercise 2, the layer's output for a token $x$ is the weighted sum of its
# $k$ chosen experts' outputs (Shazeer et al., 2017, Eq. 1):
#
# $$y(x) = \sum_{i \in \operatorname{TopK}(p(x),\, k)} p_i(x)\, E_i(x),
# \qquad p(x) = \operatorname{softmax}(x W_r).$$
#
# The point of the layer is its cost: it holds the parameters of $X$ feed-forward networks but
# computes only $k$ of them for each token, so **each expert runs only on the tokens that chose
# it**. Jamba-v0.1's 16 experts, 2 per token, make a model of 52B parameters of which 12B are
# active for a token (Table 1). The tokens of a batch are routed independently: flatten (B, T, C)
# to $N = B T$ rows, gather the rows that chose each expert, run the expert once on them, weight
# its outputs and add them back at those rows.
#
# ```
# x (B, T, C) ─ view ─ tokens (N, C) ─ router ─ weights (N, k), indices (N, k)
# for each expert i:   rows = the tokens that have i among their k choices, and its slot there
#                      expert i on tokens[rows] (n_i, C) ─ × its weight ─ added to out[rows]
# out (N, C) ─ view ─ y (B, T, C)
# ```
#
# **Write** `moe_forward(x, router_weight, experts, k)`: `x` (B, T, C), float32 or float64;
# `router_weight` (X, C), laid out as the weight of `nn.Linear(C, X, bias=False)`, so that the
# scores are `tokens @ router_weight.T`, (N, X); `experts` a list of $X$ modules, each mapping
# (n, C) to (n, C) for any number of rows n; $1 \le k \le X$. Return $y$, (B, T, C), in the
# dtype of `x`, with Jamba's weights (the probabilities, not renormalised), through which
# gradients flow to `x`, `router_weight` and the experts' parameters. Call each expert on the rows
# of the tokens that chose it only: in all, the experts see $N k$ rows, not $N X$ (the tests
# count them).
#
# - **Allowed:** the routing of Exercise 2, written again here (two lines) or as a call to your
#   `top_k_routing` (then a mistake there costs points here too); `torch.where`, `nonzero`,
#   `index_add`, indexing, `zeros_like`, loops over the experts or over the $k$ choices.
# - **Not allowed:** `tfcourse.MoEFeedForward` (its `forward` and `routing`; the hidden tests
#   check).
# - **Pitfalls:** `router_weight` is (X, C): transpose it; weight each output by its probability,
#   once; add the outputs, do not assign them: `out[rows] = …` overwrites what the token's other
#   expert gave; the weight of expert $i$ for a token sits in the slot where $i$ appears among its
#   $k$ choices, not in column $i$; do not renormalise; do not run every expert on every token;
#   use the `k` you are given.
#
# **Points:** self-check 2 ($X = 4$, $k = 2$, against `tfcourse.MoEFeedForward`, and the rows
# that each expert sees), hidden tests 2 ($k = 1$; $k = X$, the softmax-weighted mixture of all
# the experts; one expert, the expert itself; $C = X$; float64; one token; an expert that no
# token chooses; experts without gates; gradients to `x`, the router and the experts).

# %% nbgrader={"grade": false, "grade_id": "moe", "locked": false, "schema_version": 3, "solution": true, "task": false}
def moe_forward(x: torch.Tensor, router_weight: torch.Tensor, experts: list[nn.Module],
                k: int) -> torch.Tensor:
    """(B, T, C) -> (B, T, C): y = Σ over the k chosen experts of p_i E_i(x), each expert run on
    the tokens that chose it only."""
    ### BEGIN SOLUTION
    B, T, C = x.shape
    tokens = x.reshape(B * T, C)  # (N, C): each token is routed on its own
    probs = torch.softmax(tokens @ router_weight.T, dim=-1)  # (N, X)
    weights, indices = probs.topk(k, dim=-1)  # (N, k), (N, k)
    out = torch.zeros_like(tokens)  # (N, C)
    for i, expert in enumerate(experts):
        rows, slot = torch.where(indices == i)  # the tokens that chose expert i, and the slot
        if rows.numel() == 0:  # no token chose it
            continue
        w = weights[rows, slot][:, None]  # (n_i, 1)
        out = out.index_add(0, rows, w * expert(tokens[rows]))  # (n_i, C) added at their rows
    return out.view(B, T, C)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "moe_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (2 points).
import warnings

import torch
from torch.nn.functional import one_hot

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.moe.MoEFeedForward.forward", "tfcourse.moe.MoEFeedForward.routing")


class Counted(torch.nn.Module):
    """An expert that counts the token rows it is given."""

    def __init__(self, expert: torch.nn.Module) -> None:
        super().__init__()
        self.expert, self.rows = expert, 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.rows += h.numel() // h.shape[-1]
        return self.expert(h)


torch.manual_seed(3)
moe = tfcourse.MoEFeedForward(8, 16, 4, top_k=2)  # C = 8, F = 16, X = 4 experts, k = 2
x = torch.randn(2, 5, 8)  # (B, T, C): N = 10 tokens
with torch.no_grad():
    want = moe(x)
    tokens = x.reshape(10, 8)
    probs = torch.softmax(tokens @ moe.router.weight.T, dim=-1)  # (N, X)
    top, chosen = probs.topk(2, dim=-1)  # (N, k), (N, k)
    outputs = torch.stack([expert(tokens) for expert in moe.experts], dim=1)  # (N, X, C)
    picked = outputs.gather(1, chosen[..., None].expand(10, 2, 8))  # (N, k, C)

    def mix(w):
        return (w[..., None] * picked).sum(1).view(2, 5, 8)

    mistakes = {
        "the outputs of the chosen experts are summed without their weights: multiply each by "
        "its probability": mix(torch.ones_like(top)),
        "the weights are applied twice (p_i² E_i): multiply each output by its probability "
        "once": mix(top**2),
        "every expert counts, weighted by its probability: only the k chosen experts of each "
        "token do": (probs[..., None] * outputs).sum(1).view(2, 5, 8),
        "the weights of each token sum to 1: that is Mixtral's routing; Jamba's weights are the "
        "probabilities as they are": mix(top / top.sum(-1, keepdim=True)),
        "each token keeps the output of one of its experts only: out[rows] = ... overwrites "
        "what its other expert gave; add (out[rows] += ..., or index_add)":
            mix(top * one_hot(chosen.argmax(-1), 2)),
    }
want_rows = [int((chosen == i).sum()) for i in range(4)]
experts = [Counted(expert) for expert in moe.experts]
name = "moe_forward(x (2, 5, 8), router_weight (4, 8), 4 experts, k=2)"
with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 3"):
    try:
        got = moe_forward(x, moe.router.weight, experts, 2)
    except NotImplementedError:
        raise
    except (RuntimeError, IndexError) as error:
        raise checks.ContractError(
            f"{name} fails: {error}. router_weight is (X, C): the scores are tokens @ "
            "router_weight.T, (N, X); weights and indices are (N, k): the weight of expert i "
            "for a token sits in the slot where i appears among its k choices") from None
checks.expect_shape(got, (2, 5, 8), name, hint="y has the shape of x, (B, T, C)")
checks.expect_close(got, want, name, mistakes=mistakes)
seen = [expert.rows for expert in experts]
assert seen == want_rows, (
    f"the 4 experts saw {seen} token rows, expected {want_rows}, the tokens that chose each: "
    "run each expert once on the tokens that chose it only (N k = 20 rows in all), not on every "
    "token (N X = 40 rows)")

# %% nbgrader={"grade": true, "grade_id": "moe_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (2 points) run when the notebook is graded. Here this cell only
# checks that moe_forward runs.
import torch

assert moe_forward(torch.zeros(1, 3, 4), torch.zeros(2, 4),
                   [torch.nn.Identity(), torch.nn.Identity()], 1).shape == (1, 3, 4)
### BEGIN HIDDEN TESTS
import copy
import warnings

import torch

import tfcourse.moe
from tfcourse import checks


class _Counted(torch.nn.Module):
    def __init__(self, expert: torch.nn.Module) -> None:
        super().__init__()
        self.expert, self.rows = expert, 0

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        self.rows += h.numel() // h.shape[-1]
        return self.expert(h)


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(93)
    blocked = ("tfcourse.moe.MoEFeedForward.forward", "tfcourse.moe.MoEFeedForward.routing")
    for batch, length, width, count, hidden, k, dtype, gated, idle in [
        (1, 7, 6, 3, 8, 1, torch.float64, True, False),  # k = 1
        (2, 3, 5, 4, 6, 4, torch.float64, False, False),  # k = X: every expert, weighted
        (2, 4, 6, 1, 8, 1, torch.float32, True, False),  # one expert, of weight 1
        (2, 3, 4, 4, 8, 2, torch.float32, True, False),  # C = X
        (2, 5, 6, 5, 4, 2, torch.float64, True, True),  # no token chooses expert 0
        (1, 1, 8, 16, 4, 2, torch.float32, False, False),  # one token, Jamba's X and k
    ]:
        torch.manual_seed(int(torch.randint(1000, (1,), generator=gen)))
        reference = tfcourse.moe.MoEFeedForward(width, hidden, count, k, gated=gated).to(dtype)
        x = torch.randn(batch, length, width, generator=gen, dtype=dtype)
        if idle:
            x = x.abs()
            with torch.no_grad():
                reference.router.weight[0] = -3.0  # expert 0 scores -3 Σ_c x_c: never chosen
        with torch.no_grad():
            chosen = reference.routing(x.reshape(-1, width))[1]  # (N, k)
        expected_rows = [int((chosen == i).sum()) for i in range(count)]
        assert not idle or expected_rows[0] == 0
        twin = copy.deepcopy(reference)
        x_ref = x.clone().requires_grad_()
        expected = reference(x_ref)
        upstream = torch.randn(expected.shape, generator=gen, dtype=dtype)
        ref_leaves = [x_ref, reference.router.weight, *reference.experts.parameters()]
        ref_grads = torch.autograd.grad((expected * upstream).sum(), ref_leaves,
                                        allow_unused=True)
        counted = [_Counted(expert) for expert in twin.experts]
        x_in = x.clone().requires_grad_()
        label = (f"moe_forward(x ({batch}, {length}, {width}), {count} experts"
                 f"{'' if gated else ' without gates'}, k={k}), {dtype}")
        with checks.forbid(*blocked, task="Exercise 3"):
            result = moe_forward(x_in, twin.router.weight, counted, k)
        checks.expect_close(result, expected.detach(), label)
        with torch.no_grad():
            if count == 1:  # one expert, of weight 1: the layer is that expert
                checks.expect_close(result.detach(), reference.experts[0](x), label)
            if k == count:  # every expert, weighted by its probability
                probs = torch.softmax(x @ reference.router.weight.T, dim=-1)  # (B, T, X)
                mixture = sum(probs[..., i, None] * expert(x)
                              for i, expert in enumerate(reference.experts))
                checks.expect_close(result.detach(), mixture, f"{label}, the mixture of all")
        seen = [expert.rows for expert in counted]
        assert seen == expected_rows, (
            f"{label}: the experts saw {seen} token rows, expected {expected_rows}")
        leaves = [x_in, twin.router.weight, *twin.experts.parameters()]
        names = ["x", "router_weight", *(f"the experts' {n}" for n, _ in
                                         twin.experts.named_parameters())]
        got_grads = torch.autograd.grad((result * upstream).sum(), leaves, allow_unused=True)
        for part, leaf, got_grad, want_grad in zip(names, leaves, got_grads, ref_grads,
                                                   strict=True):
            if part in ("x", "router_weight"):
                assert got_grad is not None, f"{label}: no gradient reaches {part}"
            got_grad = torch.zeros_like(leaf) if got_grad is None else got_grad
            want_grad = torch.zeros_like(leaf) if want_grad is None else want_grad
            checks.expect_close(got_grad, want_grad, f"the gradient of {part} in {label}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "balance_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: the load-balancing loss (3 points)
#
# Left alone, a router feeds on its own choices: the experts that receive many tokens are
# trained more, score better and receive more tokens, while the others idle. Switch Transformers
# (Fedus et al., 2022, "Switch Transformers", arXiv:2101.03961, section 2.2, Eqs. 4–6) add an
# auxiliary loss that is smallest when the tokens are spread evenly. Over $N$ tokens and $X$
# experts,
#
# $$\begin{aligned}
# \mathcal{L}_\text{aux} &= X \sum_{i=1}^{X} f_i\, P_i, \\
# f_i &= \frac{\#\{\text{tokens that have expert } i \text{ among their } k \text{ choices}\}}{N},
# \\
# P_i &= \frac{1}{N} \sum_{\text{tokens } x} p_i(x).
# \end{aligned}$$
#
# $f_i$ counts choices: it is a fraction of the tokens, has no gradient, and $\sum_i f_i = k$
# since each token makes $k$ choices. $P_i$ is the mean probability of expert $i$ over all the
# tokens, and carries the gradient: the loss lowers the probability of the experts that receive
# many tokens. Switch Transformers choose one expert per token ($k = 1$); counting the $k$
# choices of each token, as Mixtral's and Jamba's training code does (and `tfcourse`), makes
# balanced routing ($f_i = k / X$ for every expert) give exactly $\mathcal{L}_\text{aux} = X
# \sum_i (k/X) P_i = k$, and the loss rises to $X$ when every token puts all its probability on
# the same $k$ experts. The model adds the loss, times a small coefficient (0.001 for
# Jamba-v0.1, `router_aux_loss_coef` in its released configuration), to the next-token loss.
#
# ```
# logits (…, X) ─ flatten ─ (N, X) ─ softmax ─ p (N, X) ─┬─ top k ─ count per expert / N ─ f (X,)
#                                                         └─ mean over the tokens ──────── P (X,)
# loss = X · Σ_i f_i P_i
# ```
#
# **Write** `load_balancing_loss(router_logits, k, num_experts)`: `router_logits` (…, X),
# float32 or float64, the scores of the tokens, with any number of leading axes, none included
# ((X,) is one token; flatten them: every token counts once); $1 \le k \le X$ and
# `num_experts` $= X$, ints. Return $\mathcal{L}_\text{aux}$, a 0-dimensional tensor in the dtype
# and on the device of the logits, through which the gradient reaches the logits.
#
# - **Allowed:** `torch.softmax`, `topk`, `F.one_hot`, `torch.bincount`, `scatter_add`, `mean`,
#   `sum`.
# - **Not allowed:** `tfcourse.load_balancing_loss` and `tfcourse.expert_load` (the hidden tests
#   check).
# - **Pitfalls:** count all $k$ choices of each token, not only its best expert (`argmax`);
#   divide the counts by the number of tokens $N$, not by $N k$; $P_i$ is a mean over the tokens,
#   not a sum; do not forget the factor $X$; $P$ averages the probabilities (the softmax over
#   the experts), not the scores; $P_i$ averages over all the tokens, not only those that chose
#   $i$; $f$ counts the choices, it is not the probabilities; where experts tie, count $k$ choices
#   per token all the same; keep the gradient (no `.item()`, no `torch.no_grad()`); count on the
#   device of the logits: a `torch.zeros(X)` to count into is on the CPU, where logits on a GPU
#   cannot meet it (`torch.zeros_like`, `F.one_hot` and `torch.bincount` stay on their device);
#   `reshape(-1, X)` flattens any leading axes, `flatten(0, -2)` needs at least one.
#
# **Points:** self-check 1 ($X = 4$, $k = 2$, against `tfcourse.load_balancing_loss`), hidden
# tests 2 (balanced routing gives exactly $k$, also when every expert ties; collapsed routing
# gives about $X$; $k = 1$ and $k = X$; one expert; (B, T, X) logits; logits (X,) without a
# leading axis; float64; logits on another device (PyTorch's `meta` device); the gradient to the
# logits).

# %% nbgrader={"grade": false, "grade_id": "balance", "locked": false, "schema_version": 3, "solution": true, "task": false}
def load_balancing_loss(router_logits: torch.Tensor, k: int, num_experts: int) -> torch.Tensor:
    """X · Σ_i f_i P_i: f_i the fraction of the tokens that chose expert i among their k,
    P_i the mean probability of expert i over the tokens."""
    ### BEGIN SOLUTION
    logits = router_logits.reshape(-1, num_experts)  # (N, X): every token once
    probs = torch.softmax(logits, dim=-1)  # (N, X)
    chosen = probs.topk(k, dim=-1).indices  # (N, k)
    counts = F.one_hot(chosen, num_experts).sum(dim=(0, 1))  # (X,): tokens per expert
    f = counts.to(probs.dtype) / logits.shape[0]  # (X,): sums to k, no gradient
    P = probs.mean(dim=0)  # (X,): the mean probability of each expert
    return num_experts * (f * P).sum()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "balance_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (1 point).
import warnings

import torch
from torch.nn.functional import one_hot

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.moe.load_balancing_loss", "tfcourse.moe.expert_load")
torch.manual_seed(4)
logits = torch.randn(8, 4) * 2  # (N, X): 8 tokens, X = 4 experts
want = tfcourse.load_balancing_loss(logits, 2, 4)  # k = 2
probs = torch.softmax(logits, dim=-1)  # (N, X)
picks = one_hot(probs.topk(2, dim=-1).indices, 4).sum(1).float()  # (N, X): 1 where chosen
f, P = picks.mean(0), probs.mean(0)  # (X,), (X,)
best = one_hot(probs.argmax(-1), 4).float().mean(0)  # (X,): the best expert only
mistakes = {
    "only the best expert of each token is counted (argmax): f_i counts the tokens that have "
    "expert i among their k choices (topk)": 4 * (best * P).sum(),
    "half the loss: the counts are divided by N k, so that f sums to 1. Divide them by the "
    "number of tokens N: f sums to k, and balanced routing gives exactly k": 4 * (f / 2 * P).sum(),
    "N = 8 times too large: P_i is the mean of the probabilities over the tokens, not their sum":
        4 * (f * P * 8).sum(),
    "X = 4 times too small: the loss is X · Σ f_i P_i": (f * P).sum(),
    "f is taken from the probabilities: f_i counts the tokens that chose expert i (a fraction "
    "of the tokens, without gradient); only P_i averages the probabilities": 4 * (P * P).sum(),
    "P averages the scores: it averages the probabilities, the softmax over the experts":
        4 * (f * logits.mean(0)).sum(),
    "P_i averages the probabilities of the tokens that chose expert i only: it averages over "
    "all the tokens": 4 * (f * (probs * picks).mean(0)).sum(),
}
name = "load_balancing_loss(router_logits (8, 4), k=2, num_experts=4)"
with checks.forbid(*forbidden, task="Exercise 4"):
    try:
        got = load_balancing_loss(logits, 2, 4)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. f and P are (X,): count the choices per expert, and "
            "average the probabilities over the tokens (dim=0)") from None
assert isinstance(got, torch.Tensor), (
    f"{name} returned a {type(got).__name__}: return a tensor (no .item()), through which the "
    "gradient reaches the logits")
checks.expect_shape(got, (), name, hint="the loss is one number: sum f_i P_i over the experts")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "balance_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (2 points) run when the notebook is graded. Here this cell only
# checks that load_balancing_loss runs.
import torch

assert load_balancing_loss(torch.zeros(4, 2), 1, 2).shape == ()
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.moe
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(94)
    blocked = ("tfcourse.moe.load_balancing_loss", "tfcourse.moe.expert_load")
    balanced = torch.zeros(6, 6, dtype=torch.float64)  # token t prefers experts t and t + 1
    for t in range(6):
        balanced[t, [t, (t + 1) % 6]] = 5.0
    collapsed = torch.randn(10, 8, generator=gen)
    collapsed[:, :2] += 40.0  # every token puts all its probability on experts 0 and 1
    cases = [  # (label, logits, k, X, the loss it must be, whether the choice is unique)
        ("(6, 5), float64, k=2", torch.randn(6, 5, generator=gen, dtype=torch.float64) * 2, 2,
         5, None, True),
        ("(2, 7, 4), k=1", torch.randn(2, 7, 4, generator=gen), 1, 4, None, True),
        ("(5,), one token without a leading axis, k=2", torch.randn(5, generator=gen), 2, 5,
         None, True),
        ("(5, 3), float64, k = X = 3", torch.randn(5, 3, generator=gen, dtype=torch.float64),
         3, 3, 3.0, True),
        ("(4, 1), one expert", torch.randn(4, 1, generator=gen), 1, 1, 1.0, True),
        ("(12, 16), Jamba's X = 16, k=2", torch.randn(12, 16, generator=gen) * 2, 2, 16, None,
         True),
        ("balanced (6, 6), float64, k=2", balanced, 2, 6, 2.0, True),
        ("all equal (5, 4), k=2", torch.zeros(5, 4), 2, 4, 2.0, False),
        ("collapsed on two experts (10, 8), k=2", collapsed, 2, 8, 8.0, True),
    ]
    for label, logits, k, count, exact, unique in cases:
        leaf = logits.clone().requires_grad_()
        expected = tfcourse.moe.load_balancing_loss(leaf, k, count)
        (want_grad,) = torch.autograd.grad(expected, leaf)
        name = f"load_balancing_loss(router_logits {label})"
        given = logits.clone().requires_grad_()
        with checks.forbid(*blocked, task="Exercise 4"):
            try:
                result = load_balancing_loss(given, k, count)
            except (IndexError, RuntimeError) as error:
                if logits.dim() > 1:
                    raise
                raise checks.ContractError(
                    f"{name} fails ({error}): reshape(-1, X) flattens any leading axes, none "
                    "included; flatten(0, -2) needs at least one") from None
        assert isinstance(result, torch.Tensor), f"{name} is not a tensor"
        # tfcourse counts f in float32 (expert_load), so float64 agrees to about 1e-8
        tolerance = {"rtol": 1e-6, "atol": 1e-9} if logits.dtype == torch.float64 else {}
        checks.expect_close(result, expected.detach(), name, **tolerance)
        if exact is not None:
            assert abs(result.item() - exact) < 1e-3, f"{name} is {result.item()}, not {exact}"
        if unique:
            assert result.requires_grad, f"{name}: no gradient reaches the logits"
            (got_grad,) = torch.autograd.grad(result, given)
            checks.expect_close(got_grad, want_grad, f"the gradient of the logits in {name}",
                                **tolerance)
    with checks.forbid(*blocked, task="Exercise 4"):  # the device of the logits
        checks.expect_on_meta(lambda: load_balancing_loss(torch.empty(6, 4, device="meta"), 2, 4),
                 "load_balancing_loss(router_logits (6, 4) on the meta device, k=2)",
                 "count on the device of the logits: F.one_hot, torch.zeros_like, or "
                 "torch.zeros(..., device=router_logits.device)")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "gqa_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 5: grouped-query attention (4 points)
#
# Jamba's attention layers use grouped-query attention (Ainslie et al., 2023, "GQA",
# arXiv:2305.13245, section 2.2): $H$ query heads, but only $G$ key/value heads, $G$ a divisor
# of $H$. The query heads form $G$ groups of $H / G$ consecutive heads, and the heads of group
# $g$ share the key and the value of head $g$: query head $h$ reads key/value head
# $g(h) = \lfloor h / (H/G) \rfloor$. $G = H$ is multi-head attention, $G = 1$ multi-query
# attention. The cache of Exercise 1 keeps $G$ heads, $H/G$ times fewer than multi-head
# attention (Jamba-v0.1: $H = 32$, $G = 8$). Each head is causal attention,
#
# $$\text{head}_h = \operatorname{softmax}\!\left(\frac{Q_h K_{g(h)}^\top}{\sqrt{D}} + M\right)
# V_{g(h)}, \qquad M_{ts} = \begin{cases} 0 & s \le t \cr -\infty & s > t, \end{cases}$$
#
# and Jamba's attention has **no positional encoding** at all: the Mamba layers carry the order
# of the tokens (section 6.5), so nothing is added to the queries or the keys, and the causal
# mask alone keeps each token from reading the future.
#
# ```
# H = 4, G = 2:   query heads     0   1 | 2   3
#                 key/value head    0   |   1        repeat_interleave(2, dim=1): 0 0 1 1
#                                                    (repeat gives 0 1 0 1: the wrong groups)
# ```
#
# **Write** `grouped_query_attention(q, k, v)`: `q` (B, H, T, D); `k` and `v` (B, G, T, D), $G$ a
# divisor of $H$, all three in one floating dtype (float32 or float64) and on one device. Return
# the heads, (B, H, T, D), in that dtype and on that device, through which gradients flow to `q`,
# `k` and `v`.
#
# - **Allowed:** `repeat_interleave`, `expand` and `reshape`, a view of the query heads by
#   groups, `@`, `torch.matmul`, `torch.einsum`, `torch.softmax`, `masked_fill`,
#   `torch.ones(..., device=q.device).tril()`; or chapter 1's
#   `tfcourse.scaled_dot_product_attention` with `tfcourse.causal_mask(..., device=q.device)`.
# - **Not allowed:** `F.scaled_dot_product_attention` (its `enable_gqa=True` does the grouping),
#   `tfcourse.fused_scaled_dot_product_attention` and `tfcourse.GroupedQueryAttention` (its
#   `forward`; the hidden tests check).
# - **Pitfalls:** `repeat_interleave`, not `repeat`, which gives query head $h$ the key/value
#   head $h \bmod G$; the mask is causal, query $t$ reads keys $0, \dots, t$ (`tril`, not
#   `triu`); fill the blocked scores with $-\infty$ before the softmax, rather than zeroing the
#   weights after it; the softmax runs over the keys, the last axis; divide by $\sqrt{D}$, with
#   $D$ the width of a head; a mask made without `device=q.device` is on the CPU, where queries
#   on a GPU cannot meet it.
#
# **Points:** self-check 2 ($H = 4$, $G = 2$, against `tfcourse.GroupedQueryAttention`), hidden
# tests 2 ($G = H$, $G = 1$, groups of 2 and 3, $T = 1$, a batch of one, float64, gradients to
# `q`, `k` and `v`, inputs on another device (PyTorch's `meta` device), a whole
# `GroupedQueryAttention` layer).

# %% nbgrader={"grade": false, "grade_id": "gqa", "locked": false, "schema_version": 3, "solution": true, "task": false}
def grouped_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D), (B, G, T, D), (B, G, T, D) -> (B, H, T, D): causal attention in which query
    head h reads key/value head h // (H / G); no positional encoding."""
    ### BEGIN SOLUTION
    H, T, D = q.shape[1], q.shape[2], q.shape[3]
    group = H // k.shape[1]  # H / G query heads share each key/value head
    k = k.repeat_interleave(group, dim=1)  # (B, H, T, D): heads 0 … H/G − 1 read head 0
    v = v.repeat_interleave(group, dim=1)  # (B, H, T, D)
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)  # key after query
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # over the keys
    return weights @ v  # (B, H, T, D)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "gqa_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 5 (2 points).
import warnings

import torch

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("torch.nn.functional.scaled_dot_product_attention",
             "tfcourse.attention.fused_scaled_dot_product_attention",
             "tfcourse.jamba.GroupedQueryAttention.forward")
torch.manual_seed(5)
layer = tfcourse.GroupedQueryAttention(32, 4, 2)  # C = 32, H = 4, G = 2, D = 8
x = torch.randn(2, 6, 32)  # (B, T, C)
seen = []
hook = layer.o_proj.register_forward_hook(lambda module, args, out: seen.append(args[0]))
with torch.no_grad():
    layer(x)  # records the heads, merged to (B, T, C), on their way into o_proj
    hook.remove()
    q = tfcourse.split_heads(layer.q_proj(x), 4)  # (B, H, T, D)
    k = tfcourse.split_heads(layer.k_proj(x), 2)  # (B, G, T, D)
    v = tfcourse.split_heads(layer.v_proj(x), 2)  # (B, G, T, D)
    want = tfcourse.split_heads(seen[0], 4)  # (B, H, T, D)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()  # (T, T): key s ≤ query t

    def attend(kk, vv, allowed=causal, scale=8**0.5, dim=-1, after=False, fill=float("-inf")):
        scores = q @ kk.transpose(-2, -1) / scale  # (B, H, T, T)
        if after:
            return torch.softmax(scores, dim=dim) * allowed @ vv
        return torch.softmax(scores.masked_fill(~allowed, fill), dim=dim) @ vv

    grouped = (k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1))
    mistakes = {
        "query head h reads key/value head h % G (repeat): it reads head h // (H / G), so "
        "that consecutive query heads share one (repeat_interleave(H // G, dim=1))":
            attend(k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1)),
        "the causal mask is missing: query t must not read the keys after t":
            attend(*grouped, allowed=torch.ones(6, 6, dtype=torch.bool)),
        "the mask is upside down: query t reads the keys 0 … t (tril), not t … T - 1 (triu)":
            attend(*grouped, allowed=causal.T),
        "the mask is applied after the softmax: fill the blocked scores with -inf before it, "
        "so that each row of weights still sums to 1": attend(*grouped, after=True),
        "the blocked scores are set to 0: a score of 0 still gets a weight after the softmax; "
        "fill them with -inf": attend(*grouped, fill=0.0),
        "the scores are not divided by sqrt(D)": attend(*grouped, scale=1.0),
        "the scores are divided by D instead of sqrt(D)": attend(*grouped, scale=8.0),
        "the softmax runs over the queries (dim=-2): it runs over the keys, the last axis":
            attend(*grouped, dim=-2),
    }
name = "grouped_query_attention(q (2, 4, 6, 8), k (2, 2, 6, 8), v (2, 2, 6, 8))"
with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 5"):
    try:
        got = grouped_query_attention(q, k, v)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. Repeat each of the G = 2 key/value heads H / G = 2 times "
            "along the head axis (dim=1), so that k and v have H = 4 heads like q") from None
checks.expect_shape(got, (2, 4, 6, 8), name, hint="one output per query head: (B, H, T, D)")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "gqa_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 5 (2 points) run when the notebook is graded. Here this cell only
# checks that grouped_query_attention runs.
import torch

assert grouped_query_attention(torch.zeros(1, 2, 3, 4), torch.zeros(1, 1, 3, 4),
                               torch.zeros(1, 1, 3, 4)).shape == (1, 2, 3, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.jamba
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(95)
    blocked = ("torch.nn.functional.scaled_dot_product_attention",
               "tfcourse.attention.fused_scaled_dot_product_attention",
               "tfcourse.jamba.GroupedQueryAttention.forward")

    def _one_head_at_a_time(q, k, v):  # float64
        heads, groups, length, width = q.shape[1], k.shape[1], q.shape[2], q.shape[3]
        future = torch.ones(length, length, dtype=torch.bool).triu(1)
        out = []
        for h in range(heads):
            g = h // (heads // groups)
            scores = q[:, h] @ k[:, g].transpose(-2, -1) / width**0.5
            out.append(torch.softmax(scores.masked_fill(future, float("-inf")), -1) @ v[:, g])
        return torch.stack(out, dim=1)

    for batch, heads, groups, length, width, dtype in [
        (1, 4, 4, 5, 8, torch.float64),  # G = H: multi-head attention
        (2, 3, 1, 6, 4, torch.float32),  # G = 1: multi-query attention
        (2, 6, 3, 4, 5, torch.float64),  # groups of 2
        (1, 6, 2, 7, 4, torch.float32),  # groups of 3
        (2, 8, 2, 1, 8, torch.float32),  # T = 1
    ]:
        parts = [torch.randn(batch, n, length, width, generator=gen, dtype=dtype)
                 for n in (heads, groups, groups)]
        leaves = [p.double().requires_grad_() for p in parts]
        expected = _one_head_at_a_time(*leaves)
        upstream = torch.randn(expected.shape, generator=gen, dtype=torch.float64)
        want_grads = torch.autograd.grad((expected * upstream).sum(), leaves)
        inputs = [p.clone().requires_grad_() for p in parts]
        label = (f"grouped_query_attention(H={heads}, G={groups}, q ({batch}, {heads}, "
                 f"{length}, {width})), {dtype}")
        with checks.forbid(*blocked, task="Exercise 5"):
            result = grouped_query_attention(*inputs)
        checks.expect_close(result, expected.detach().to(dtype), label)
        got_grads = torch.autograd.grad((result * upstream.to(dtype)).sum(), inputs,
                                        allow_unused=True)
        for part, got_grad, want_grad in zip("qkv", got_grads, want_grads, strict=True):
            assert got_grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(got_grad, want_grad.to(dtype), f"the gradient of {part} in {label}")

    torch.manual_seed(96)
    layer = tfcourse.jamba.GroupedQueryAttention(24, 6, 2).double()
    x = torch.randn(2, 5, 24, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        expected = layer(x)
        q = tfcourse.split_heads(layer.q_proj(x), 6)  # (B, H, T, D)
        k = tfcourse.split_heads(layer.k_proj(x), 2)  # (B, G, T, D)
        v = tfcourse.split_heads(layer.v_proj(x), 2)
        with checks.forbid(*blocked, task="Exercise 5"):
            heads = grouped_query_attention(q, k, v)
        result = layer.o_proj(tfcourse.merge_heads(heads))
    checks.expect_close(result, expected, "GroupedQueryAttention(24, 6, 2) with your heads")
    with checks.forbid(*blocked, task="Exercise 5"):  # the device of q, k and v
        checks.expect_on_meta(lambda: grouped_query_attention(*[torch.empty(2, n, 5, 4, device="meta")
                                                   for n in (4, 2, 2)]),
                 "grouped_query_attention(q (2, 4, 5, 4), k, v (2, 2, 5, 4) on the meta device)",
                 "make the causal mask on the device of q: torch.ones(T, T, dtype=torch.bool, "
                 "device=q.device)")
    return True


assert _hidden_tests()
### END HIDDEN TESTS
