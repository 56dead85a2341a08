# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 5 exercises: Token Merging
#
# Four graded exercises write the parts of Token Merging, ToMe (Bolya et al., 2023, "Token
# Merging: Your ViT But Faster", ICLR), in the order of the lesson: choosing which tokens to
# merge, merging them, the attention that takes the merged tokens' sizes into account, and the
# number of tokens each layer is left with. With them, a trained Vision Transformer runs on fewer
# tokens in every block, without retraining: the paper reports twice the throughput of
# off-the-shelf ViT-L and ViT-H models for a drop of 0.2 to 0.3 points of accuracy (abstract).
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `bipartite_match`, which tokens merge into which | 5 |
# | 2 | `merge_weighted`, merging by a size-weighted average | 5 |
# | 3 | `proportional_attention`, attention that counts each token's size | 4 |
# | 4 | `token_counts`, the tokens left after each layer | 2 |
# | | **total** | **16** |
#
# The reference implementation is `tfcourse.tome` (`ToMeViT` applies it to the Vision
# Transformer of chapter 4); the exercises write its parts yourself, on small tensors.
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
# Shapes use the course's letters: `B` batch, `T` tokens (the class token first, at position 0),
# `C` model width, `H` heads, `D` the width of one head, `S` keys, `L` layers, `r` the tokens one
# layer merges away. ToMe adds three: `D'` the width of the vectors that tokens are compared by,
# and $T_A = \lceil T/2 \rceil$, $T_B = \lfloor T/2 \rfloor$ the sizes of the two sets of
# Exercise 1.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import math

import torch
import torch.nn.functional as F

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "match_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: bipartite soft matching (5 points)
#
# ToMe merges tokens that hold nearly the same information. To say which, it compares the keys
# of attention, which already summarise each token for the dot products of attention, averaged
# over the heads, by their **cosine similarity**: the dot product of the two vectors scaled to
# unit length, so that it measures their direction and not their length (Bolya et al., 2023,
# section 3, *Token Similarity*). Comparing every token with every other and merging clusters
# would be slow; ToMe matches the tokens in a few parallel steps instead (section 3, *Bipartite
# Soft Matching*):
#
# 1. split the tokens **alternately** into two sets: $\mathbb{A}$, the tokens at the even
#    positions 0, 2, 4, …, and $\mathbb{B}$, the tokens at the odd positions 1, 3, 5, …;
# 2. draw **one edge from each token of A** to its most similar token of B;
# 3. keep the $r$ edges of **largest** similarity;
# 4. merge the two tokens of each kept edge (Exercise 2);
# 5. concatenate the two sets back together (Exercise 2).
#
# ```
# T = 9 tokens:  position   0    1    2    3    4    5    6    7    8
#                set        A0   B0   A1   B1   A2   B2   A3   B3   A4
#                           class token
# A token i is at position 2i, B token j at position 2j + 1
# ```
#
# The class token, A token 0, is never merged: give its edges the similarity $-\infty$, so that
# its edge is never among the $r$ best. A token of A merges at most once, into one token of B,
# while a token of B can receive several tokens of A, or none. So one layer can merge away at
# most the $T_A - 1$ tokens of A other than the class token, never more than half of the tokens:
#
# $$r' = \min\left(r, \left\lfloor \frac{T - 1}{2} \right\rfloor\right).$$
#
# A larger $r$ is cut to this bound (not an error): that is how the schedule of Exercise 4 treats
# the last layers, where few tokens are left.
#
# **Write** `bipartite_match(metric, r)`: `metric` (B, T, D') floating point, the vector each
# token is compared by (in ToMe, its key averaged over the heads), token 0 the class token,
# $T \ge 2$; `r` an int $\ge 0$. Match each batch element on its own and return `(src, dst)`, two
# long tensors of shape (B, r'): column $k$ is one kept edge, from the A token `src[b, k]` (an
# index into A, so never 0) to the B token `dst[b, k]` (an index into B) that is its most similar,
# and the $r'$ edges are those of largest similarity. The columns may come in any order (the
# tests sort them), but `src[b, k]` and `dst[b, k]` must belong to the same edge. Do not change
# `metric`. (The tests use vectors in general position: no two similarities are equal.)
#
# - **Allowed:** slicing with a step (`metric[:, ::2]`), `F.normalize` or `norm`, `@`,
#   `transpose`, `max`/`argmax`, `sort`/`argsort`/`topk`, `gather`, `torch.no_grad`.
# - **Not allowed:** `tfcourse.tome.bipartite_soft_matching` and `tfcourse.tome.max_merges` (the
#   hidden tests check).
# - **Pitfalls:** the plain dot product favours long vectors: scale each vector to unit length
#   first; A and B alternate, they are not the first and the second half of the tokens; keep the
#   most similar edges, not the least (`descending=True`); one edge per token of A: the $r$
#   largest entries of the whole (T_A, T_B) similarity matrix can take two edges of one A token;
#   return indices into A and into B, not positions in the sequence; if you leave the class token
#   out by slicing (`metric[:, 2::2]`), add 1 back to the A indices; `topk` raises when $r$
#   exceeds the number of A tokens, and `[:, :r]` quietly takes the class token's edge: cut $r$
#   first; the (B, T_A) edges of every batch element are sorted on their own.
#
# **Points:** self-check 2, hidden tests 3 (other batch sizes, token counts and widths, an even
# number of tokens, float64, $r = 0$, an $r$ larger than allowed, two tokens, vectors of
# different lengths, a class token very similar to a patch, kept edges whose similarity is
# negative, the input unchanged).

# %% nbgrader={"grade": false, "grade_id": "match", "locked": false, "schema_version": 3, "solution": true, "task": false}
def bipartite_match(metric: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D') -> src, dst (B, r'): the r' = min(r, ⌊(T − 1)/2⌋) most similar edges, each
    from an A token (index into A, never the class token) to its most similar B token."""
    ### BEGIN SOLUTION
    r = min(r, (metric.shape[1] - 1) // 2)  # at most the A tokens other than the class token
    with torch.no_grad():
        unit = F.normalize(metric, dim=-1)  # (B, T, D'): dot products are now cosines
        a, b = unit[:, ::2], unit[:, 1::2]  # step 1: (B, T_A, D'), (B, T_B, D')
        scores = a @ b.transpose(1, 2)  # (B, T_A, T_B): each A token against each B token
        scores[:, 0] = float("-inf")  # the class token, A token 0, is never merged
        best, nearest = scores.max(dim=-1)  # step 2: (B, T_A), each A token's one edge
        src = best.argsort(dim=-1, descending=True)[:, :r]  # step 3: (B, r), the best edges
        dst = nearest.gather(1, src)  # (B, r): the B token each of them merges into
    return src, dst
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "match_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (2 points).
import warnings

import torch

import tfcourse.tome
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.tome.bipartite_soft_matching", "tfcourse.tome.max_merges")
# One image of T = 9 tokens compared by vectors of D' = 3 numbers: A is positions 0, 2, 4, 6, 8,
# B is positions 1, 3, 5, 7. The class token (position 0) points the way B2 (position 5) points:
# unprotected, it would have the best edge of all.
metric = torch.tensor([[[2., 2., -4.], [1., -1., 2.], [-1., 3., 0.], [-1., -1., 0.],
                        [1., -2., -1.], [1., 1., -2.], [0., 1., 3.], [0., 3., 1.],
                        [2., -2., 0.]]])  # (1, 9, 3)


def edges(src, dst, b=0):
    """The (A index, B index) edges of batch element b, sorted."""
    return sorted(zip(src[b].tolist(), dst[b].tolist(), strict=True))


want = [(1, 3), (3, 0), (4, 0)]  # A1 -> B3, A3 -> B0, A4 -> B0: two A tokens merge into B0
mistakes = {
    "these are the edges of the plain dot product, which favours long vectors: scale each "
    "vector to unit length first (F.normalize), so that the dot products are cosine "
    "similarities": [(1, 3), (3, 3), (4, 0)],
    "these are the 3 least similar edges: keep the most similar, argsort(descending=True)":
        [(0, 0), (2, 1), (4, 0)],
    "these edges come from cutting the tokens into a first and a second half: A is the even "
    "positions, metric[:, ::2], and B the odd ones, metric[:, 1::2]": [(1, 1), (2, 2), (4, 3)],
    "the class token, A token 0, is merged: set its similarities to -inf (its row of the "
    "(T_A, T_B) scores) before choosing the edges": [(0, 2), (1, 3), (3, 0)],
    "these edges go from each B token to its most similar A token: draw one edge from each A "
    "token, the max over the B axis (the last one)": [(1, 3), (2, 1), (3, 0)],
    "A token 3 merges twice: these are the 3 largest entries of the whole similarity matrix; "
    "keep one edge per A token (its best), then the 3 best of those edges":
        [(1, 3), (3, 0), (3, 3)],
    "these are positions in the sequence (2i for A token i, 2j + 1 for B token j): return "
    "indices into A and into B": [(2, 7), (6, 1), (8, 1)],
    "your A indices are one too small: index 0 of A is the class token; if you leave it out by "
    "slicing, add 1 back": [(0, 3), (2, 0), (3, 0)],
}
before = metric.clone()
name = "bipartite_match(metric (1, 9, 3), r=3)"
with checks.forbid(*forbidden, task="Exercise 1"):
    src, dst = bipartite_match(metric, 3)
assert torch.equal(metric, before), (
    "bipartite_match changed metric: normalise a copy (F.normalize, or metric / norm), not "
    "metric itself in place")
for part, index in (("src", src), ("dst", dst)):
    checks.expect_shape(index, (1, 3), f"{part} of {name}",
                        hint="one column per kept edge: (B, r)")
    assert index.dtype == torch.long, f"{part} of {name} has dtype {index.dtype}, expected long"
got = edges(src, dst)
if got != want:
    for mistake, wrong in mistakes.items():
        if got == wrong:
            raise checks.ContractError(f"{name} gives the edges {got}, expected {want}: "
                                       f"{mistake}")
    raise checks.ContractError(f"{name} gives the (A index, B index) edges {got}, expected "
                               f"{want}")
try:
    with checks.forbid(*forbidden, task="Exercise 1"):
        src, dst = bipartite_match(metric, 100)
except NotImplementedError:
    raise
except RuntimeError as error:
    raise checks.ContractError(
        f"bipartite_match(metric (1, 9, 3), r=100) fails: {error}. Cut r to (T - 1) // 2 = 4, "
        "the A tokens other than the class token, before choosing the edges") from None
with torch.no_grad():
    matching = tfcourse.tome.bipartite_soft_matching(metric, 100)
want = edges(matching.src // 2, matching.dst // 2)
if 0 in src.tolist()[0]:
    raise checks.ContractError(
        "bipartite_match(metric (1, 9, 3), r=100) merges the class token: r is cut to "
        "(T - 1) // 2 = 4, so that only the A tokens other than the class token can merge")
checks.expect_shape(src, (1, 4), "src of bipartite_match(metric (1, 9, 3), r=100)",
                    hint="r = 100 is cut to (T - 1) // 2 = 4: never more than half the tokens")
assert edges(src, dst) == want, (
    f"bipartite_match(metric (1, 9, 3), r=100) gives the edges {edges(src, dst)}, expected "
    f"{want}: every A token but the class token, each with its most similar B token")
# a batch of three, each matched on its own
noise = torch.Generator().manual_seed(1)
metric = torch.randn(3, 11, 8, generator=noise) * torch.randn(3, 11, 1, generator=noise).exp()
with torch.no_grad():
    matching = tfcourse.tome.bipartite_soft_matching(metric, 3)
with checks.forbid(*forbidden, task="Exercise 1"):
    src, dst = bipartite_match(metric, 3)
checks.expect_shape(src, (3, 3), "src of bipartite_match(metric (3, 11, 8), r=3)")
for b in range(3):
    assert edges(src, dst, b) == edges(matching.src // 2, matching.dst // 2, b), (
        f"bipartite_match(metric (3, 11, 8), r=3) is right on one image but not on batch "
        f"element {b}: match every batch element on its own (sort each row of the (B, T_A) "
        f"best similarities, and gather along dim 1)")

# %% nbgrader={"grade": true, "grade_id": "match_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (3 points) run when the notebook is graded. Here this cell only
# checks that bipartite_match runs.
import torch

assert bipartite_match(torch.randn(1, 5, 2), 1)[0].shape == (1, 1)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.tome
from tfcourse import checks


def _clear_margins(candidate: torch.Tensor, gap: float = 1e-3) -> bool:
    """No two similarities that decide the matching are closer than gap."""
    lengths = candidate.double().norm(dim=-1, keepdim=True)
    cosines = (candidate.double() / lengths)[:, 2::2] @ (
        candidate.double() / lengths)[:, 1::2].transpose(1, 2)  # the A tokens but the class's
    ranked = cosines.sort(dim=-1, descending=True).values
    if ranked.shape[-1] > 1 and bool((ranked[..., 0] - ranked[..., 1] < gap).any()):
        return False
    tops = ranked[..., 0].sort(dim=-1).values
    return bool((tops[:, 1:] - tops[:, :-1] >= gap).all())


def _negative_kept_edge(candidate: torch.Tensor, merges: int) -> bool:
    """In every batch element, a kept edge has a negative best cosine."""
    unit = candidate.double() / candidate.double().norm(dim=-1, keepdim=True)
    best = (unit[:, 2::2] @ unit[:, 1::2].transpose(1, 2)).amax(dim=-1)  # (B, T_A - 1)
    kept = best.sort(dim=-1, descending=True).values[:, :merges]
    return bool((kept[:, -1] < 0).all())


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(51)
    for nb, tokens, width, merges, dtype, twin, negative in [
        (3, 17, 8, 5, torch.float32, 3, False), (2, 10, 6, 3, torch.float64, 1, False),
        (2, 11, 4, 100, torch.float32, 2, False), (2, 10, 5, 100, torch.float64, 4, False),
        (1, 2, 4, 1, torch.float32, 0, False), (4, 8, 5, 0, torch.float32, 1, False),
        (2, 9, 2, 4, torch.float64, 2, False), (5, 13, 16, 2, torch.float32, 5, False),
        (3, 13, 3, 100, torch.float32, 0, True), (2, 12, 4, 3, torch.float64, 2, True),
    ]:
        while True:
            candidate = torch.randn(nb, tokens, width, generator=gen, dtype=dtype)
            if twin:  # the class token points almost the way the token at 2 twin - 1 does
                candidate[:, 0] = 3 * candidate[:, 2 * twin - 1] + 0.01 * candidate[:, 0]
            if negative:  # the B tokens one way, A tokens 1, 3, 5... the other: best cosine < 0
                candidate[:, 1::2, 0] = candidate[:, 1::2, 0].abs() + 3
                candidate[:, 2::4, 0] = -candidate[:, 2::4, 0].abs() - 3
            candidate = candidate * (1.5 * torch.randn(nb, tokens, 1, generator=gen,
                                                       dtype=dtype)).exp()
            if _clear_margins(candidate) and (not negative or _negative_kept_edge(
                    candidate, min(merges, (tokens - 1) // 2))):
                break
        kept = candidate.clone()
        with torch.no_grad():
            reference = tfcourse.tome.bipartite_soft_matching(candidate, merges)
        with checks.forbid("tfcourse.tome.bipartite_soft_matching", "tfcourse.tome.max_merges",
                           task="Exercise 1"):
            result_src, result_dst = bipartite_match(candidate, merges)
        label = f"bipartite_match on metric {(nb, tokens, width)} {dtype}, r={merges}"
        assert torch.equal(candidate, kept), f"{label} changed its input"
        count = min(merges, (tokens - 1) // 2)
        for part, index in (("src", result_src), ("dst", result_dst)):
            checks.expect_shape(index, (nb, count), f"{part} of {label}")
            assert index.dtype == torch.long, f"{part} of {label} is not a long tensor"
        if negative and bool((result_src == 0).any()):
            raise checks.ContractError(
                f"{label} merges the class token, A token 0, where some kept edges have a "
                "negative cosine similarity: cosines go down to -1, so a class token protected "
                "with 0 (or any number above -1) outranks them. Give its edges -inf")
        for b in range(nb):
            expected_edges = sorted(zip((reference.src[b] // 2).tolist(),
                                        (reference.dst[b] // 2).tolist(), strict=True))
            result_edges = sorted(zip(result_src[b].tolist(), result_dst[b].tolist(),
                                      strict=True))
            assert result_edges == expected_edges, (
                f"{label}, batch element {b}: edges {result_edges}, expected {expected_edges}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "merge_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: size-weighted merging (5 points)
#
# Once merged, a token no longer stands for one patch of the image but for several: its **size**
# $s$ is the number of patches it holds (1 for every token before the first merge). ToMe keeps
# track of it and weights each token by its size whenever tokens are combined (section 3,
# *Tracking Token Size*), so a merged token is the **size-weighted average** of what it merges, and
# the sizes **add**:
#
# $$x_\text{merged} = \frac{\sum_i s_i\, x_i}{\sum_i s_i}, \qquad
# s_\text{merged} = \sum_i s_i .$$
#
# The sum runs over a B token and every A token whose kept edge ends in it (often one, sometimes
# several). With the weights, a token is the mean of the patches it holds, whatever the order in
# which they were merged over the layers; a plain mean would let a token of one patch count as
# much as one that holds ten. The merged sequence is the two sets concatenated back together
# (step 5), in this order:
#
# * first the tokens of A that were **not** merged, in their original order (so the class token
#   stays first),
# * then **all** $T_B$ tokens of B in their original order, each with the A tokens merged into it.
#
# A layer that merges nothing ($r = 0$) leaves its tokens as they are, in their original order,
# as ToMe's own code does.
# ```
# the edges of Exercise 1's example: A1 -> B3, A3 -> B0, A4 -> B0   (T = 9, r = 3)
# position:  0   1   2   3   4   5   6   7   8
# token:     A0  B0  A1  B1  A2  B2  A3  B3  A4
# goes to:   0   2   5   3   1   4   2   5   2     merged: [A0, A2, B0+A3+A4, B1, B2, B3+A1]
# ```
#
# **Write** `merge_weighted(x, size, src, dst)`: `x` (B, T, C) floating point, the tokens; `size`
# (B, T, 1) in the dtype of `x`, positive, their sizes; `src` and `dst` (B, r) long, the edges
# as Exercise 1 returns them (indices into A and into B; no `src` is 0 and none repeats in a
# row; a `dst` may repeat; the columns in any order). Return `(x_merged, size_merged)`,
# (B, T − r, C) and (B, T − r, 1), in the dtype of `x`, in the order above, through which
# gradients flow to `x`. Do not change `x` or `size`.
#
# - **Allowed:** slicing, boolean masks, `gather`, `scatter_add`, `index_add`,
#   `scatter_reduce(..., "sum")`, `torch.cat`, a loop over the batch.
# - **Not allowed:** `tfcourse.tome.merge_tokens` and the `merge` of `tfcourse.tome.Matching` (the
#   hidden tests check).
# - **Pitfalls:** weight by the sizes: a plain mean is right only while every size is 1; add the
#   sizes (the merged token holds all their patches); divide by the sum of the sizes, not by the
#   number of tokens; several A tokens can merge into one B token: `scatter` and an assignment
#   through an index tensor (`t[:, dst] += ...`) keep only one of them, `scatter_add` adds them
#   all; `x[:, 1::2]` is a view of `x`, so adding into it in place changes the caller's tokens:
#   use the out-of-place `scatter_add`, or clone; remove the merged A tokens; the kept A tokens
#   come first; with $r = 0$, return `x` and `size` in their order; new tensors take the dtype
#   of `x` (`dtype=x.dtype`, `new_zeros`).
#
# **Points:** self-check 2, hidden tests 3 (other batch sizes, token counts and widths, an even
# number of tokens, $C = 1$, $r = 0$, every A token merged, the edges in another order, float64,
# float16 (the results stay in the dtype of `x`), gradients, the inputs unchanged).

# %% nbgrader={"grade": false, "grade_id": "merge", "locked": false, "schema_version": 3, "solution": true, "task": false}
def merge_weighted(x: torch.Tensor, size: torch.Tensor, src: torch.Tensor, dst: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C), (B, T, 1) -> (B, T − r, C), (B, T − r, 1): each A token of an edge merged into
    its B token by a size-weighted mean, the sizes added; the kept A tokens first, then B."""
    ### BEGIN SOLUTION
    B, T, C = x.shape
    r = src.shape[1]
    if r == 0:  # nothing merged: the tokens keep their order
        return x, size
    weighted = x * size  # (B, T, C): s_i x_i, so that merging is a sum
    a, b = weighted[:, ::2], weighted[:, 1::2]  # (B, T_A, C), (B, T_B, C)
    a_size, b_size = size[:, ::2], size[:, 1::2]  # (B, T_A, 1), (B, T_B, 1)
    T_A = a.shape[1]
    keep = torch.ones(B, T_A, dtype=torch.bool, device=x.device)
    keep[torch.arange(B, device=x.device).unsqueeze(1), src] = False  # (B, T_A)
    kept = torch.arange(T_A, device=x.device).expand(B, T_A)[keep].view(B, T_A - r)  # in order
    b = b.scatter_add(1, dst.unsqueeze(-1).expand(B, r, C),
                      a.gather(1, src.unsqueeze(-1).expand(B, r, C)))  # (B, T_B, C): Σ s_i x_i
    b_size = b_size.scatter_add(1, dst.unsqueeze(-1), a_size.gather(1, src.unsqueeze(-1)))
    total = torch.cat([a.gather(1, kept.unsqueeze(-1).expand(B, T_A - r, C)), b], dim=1)
    merged_size = torch.cat([a_size.gather(1, kept.unsqueeze(-1)), b_size], dim=1)
    return total / merged_size, merged_size  # (B, T − r, C), (B, T − r, 1)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "merge_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (2 points).
import warnings

import torch

import tfcourse.tome
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.tome.merge_tokens", "tfcourse.tome._merge_weighted",
             "tfcourse.tome.Matching.merge", "tfcourse.tome.Matching._merge")
# The example above: A1 -> B3, A3 -> B0, A4 -> B0 on T = 9 tokens of C = 2 numbers
src, dst = torch.tensor([[1, 3, 4]]), torch.tensor([[3, 0, 0]])
x = torch.tensor([[[0., 1.], [2., 0.], [4., 4.], [6., -2.], [-4., 2.], [1., 1.], [8., 2.],
                   [3., 3.], [-2., 5.]]])  # (1, 9, 2)
size = torch.tensor([[[1.], [2.], [1.], [1.], [3.], [1.], [2.], [1.], [1.]]])  # (1, 9, 1)
goes_to = torch.tensor([[0, 2, 5, 3, 1, 4, 2, 5, 2]])  # where each token ends up
matching = tfcourse.tome.Matching(goes_to, 2 * src, 2 * dst + 1)
with torch.no_grad():
    want_x, want_size = tfcourse.tome.merge_tokens(x, size, matching)  # B0: (2·x1 + 2·x6 + x8) / 5
    x_mistakes = {
        "this is a plain mean of the merged tokens: weight each token by its size, "
        "Σ s_i x_i / Σ s_i": matching.merge(x, reduce="mean"),
        "this is Σ s_i x_i: divide it by the merged size, Σ s_i": matching.merge(x * size),
        "this is Σ s_i x_i divided by the number of tokens merged: divide by the sum of their "
        "sizes, Σ s_i": matching.merge(x * size, reduce="mean"),
        "the B tokens come first: the kept A tokens go first (the class token stays at 0), "
        "then the B tokens": torch.cat([want_x[:, 2:], want_x[:, :2]], dim=1),
    }
    size_mistakes = {
        "the sizes are not added: a merged token's size is the sum of the sizes it merges":
            torch.cat([size[:, [0, 4]], size[:, 1::2]], dim=1),
        "the merged sizes count tokens, not patches: add the sizes themselves (a token may "
        "already hold several patches)": matching.merge(torch.ones_like(size)),
        "the B tokens come first: the kept A tokens go first (the class token stays at 0), "
        "then the B tokens": torch.cat([want_size[:, 2:], want_size[:, :2]], dim=1),
    }
saved = x.clone(), size.clone()
name = "merge_weighted on the example above"
with checks.forbid(*forbidden, task="Exercise 2"):
    try:
        got_x, got_size = merge_weighted(x, size, src, dst)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. src and dst are (B, r); to gather or scatter rows of "
            "(B, T_A, C) tokens, expand them to (B, r, C) (for the sizes, (B, r, 1))") from None
assert torch.equal(x, saved[0]) and torch.equal(size, saved[1]), (
    "merge_weighted changed its inputs x or size: x[:, 1::2] is a view of x, so an in-place "
    "add into it changes x; use scatter_add (not scatter_add_) or clone first")
checks.expect_shape(got_x, (1, 6, 2), f"the tokens of {name}",
                    hint="T - r = 9 - 3 = 6 tokens: remove the merged A tokens")
checks.expect_shape(got_size, (1, 6, 1), f"the sizes of {name}",
                    hint="one size per merged token: (B, T - r, 1)")


def only_b0_wrong(got, want):
    """Merged token 2 (B0, into which two A tokens merge) is wrong and no other token is."""
    others = [0, 1, 3, 4, 5]
    return not torch.allclose(got[:, 2], want[:, 2]) and torch.allclose(got[:, others],
                                                                         want[:, others])


overwritten = ("only B0, merged token 2, is wrong, and two A tokens merge into it: are both "
               "added (scatter_add, index_add), or does one overwrite the other (scatter, or "
               "t[:, dst] += ... through an index)?")
checks.expect_close(got_size, want_size, f"the sizes of {name}", mistakes=size_mistakes,
                    hint=overwritten if only_b0_wrong(got_size, want_size) else None)
checks.expect_close(got_x, want_x, f"the tokens of {name}", mistakes=x_mistakes,
                    hint=overwritten if only_b0_wrong(got_x, want_x) else None)
# a batch of three with random sizes, the edges of bipartite soft matching
noise = torch.Generator().manual_seed(2)
x = torch.randn(3, 11, 4, generator=noise)
size = torch.randint(1, 5, (3, 11, 1), generator=noise).float()
with torch.no_grad():
    matching = tfcourse.tome.bipartite_soft_matching(torch.randn(3, 11, 2, generator=noise), 4)
    want_x, want_size = tfcourse.tome.merge_tokens(x, size, matching)
with checks.forbid(*forbidden, task="Exercise 2"):
    got_x, got_size = merge_weighted(x, size, matching.src // 2, matching.dst // 2)
name = "merge_weighted on a batch of three, x (3, 11, 4), r = 4"
checks.expect_close(got_size, want_size, f"the sizes of {name}",
                    hint="right on one image: is each batch element merged with its own edges?")
checks.expect_close(got_x, want_x, f"the tokens of {name}",
                    hint="right on one image: is each batch element merged with its own edges?")

# %% nbgrader={"grade": true, "grade_id": "merge_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (3 points) run when the notebook is graded. Here this cell only
# checks that merge_weighted runs.
import torch

assert merge_weighted(torch.zeros(1, 3, 2), torch.ones(1, 3, 1), torch.tensor([[1]]),
                      torch.tensor([[0]]))[0].shape == (1, 2, 2)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.tome
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(52)
    blocked = ("tfcourse.tome.merge_tokens", "tfcourse.tome._merge_weighted",
               "tfcourse.tome.Matching.merge", "tfcourse.tome.Matching._merge")
    for nb, tokens, width, merges, dtype in [
        (3, 17, 6, 5, torch.float32), (2, 10, 1, 3, torch.float64),
        (2, 9, 4, 4, torch.float64), (2, 7, 3, 0, torch.float32),
        (1, 2, 3, 0, torch.float32), (4, 12, 5, 5, torch.float32),
        (2, 11, 4, 4, torch.float16),
    ]:
        tokens_in = torch.randn(nb, tokens, width, generator=gen).to(dtype)
        sizes_in = torch.randint(1, 9, (nb, tokens, 1), generator=gen).to(dtype)
        with torch.no_grad():
            reference = tfcourse.tome.bipartite_soft_matching(
                torch.randn(nb, tokens, 2, generator=gen), merges)
        leaf = tokens_in.to(torch.float64, copy=True).requires_grad_()  # the reference's
        expected_tokens, expected_sizes = tfcourse.tome.merge_tokens(leaf, sizes_in.double(),
                                                                     reference)
        upstream = torch.randn(expected_tokens.shape, generator=gen, dtype=torch.float64)
        (expected_tokens * upstream).sum().backward()
        shuffle = torch.rand(nb, reference.r, generator=gen).argsort(dim=1)  # edges reordered
        edge_src = (reference.src // 2).gather(1, shuffle)
        edge_dst = (reference.dst // 2).gather(1, shuffle)
        student_leaf = tokens_in.clone().requires_grad_(True)
        sizes_copy = sizes_in.clone()
        with checks.forbid(*blocked, task="Exercise 2"):
            result_tokens, result_sizes = merge_weighted(student_leaf, sizes_copy, edge_src,
                                                         edge_dst)
        label = f"merge_weighted on x {(nb, tokens, width)} {dtype}, r={merges}"
        for part, result in (("tokens", result_tokens), ("sizes", result_sizes)):
            if isinstance(result, torch.Tensor) and result.dtype != dtype:
                raise checks.ContractError(
                    f"the merged {part} of {label} are {result.dtype}, expected {dtype}, the "
                    "dtype of x: a size, weight or buffer made in float32 (size.float(), "
                    "torch.zeros without dtype=x.dtype) promotes the result")
        tolerance = {"atol": 1e-2} if dtype == torch.float16 else {}  # sums of up to 8 x 3
        checks.expect_close(result_sizes, expected_sizes.to(dtype), f"the sizes of {label}")
        checks.expect_close(result_tokens, expected_tokens.detach().to(dtype),
                            f"the tokens of {label}", **tolerance)
        assert torch.equal(student_leaf.detach(), tokens_in), f"{label} changed x"
        assert torch.equal(sizes_copy, sizes_in), f"{label} changed size"
        assert result_tokens.requires_grad, f"{label}: the merged tokens do not require grad"
        (result_tokens * upstream.to(dtype)).sum().backward()
        assert student_leaf.grad is not None, f"{label}: no gradient reaches x"
        checks.expect_close(student_leaf.grad, leaf.grad.to(dtype), f"the gradient of x in {label}",
                            **tolerance)
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "attention_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: proportional attention (4 points)
#
# Merging changes what attention computes. If two tokens with the same key are merged into one,
# that key now gets one share of the softmax instead of two: the merged token is heard less than
# the tokens it stands for were. ToMe gives each key its size back in the softmax (Bolya et al.,
# 2023, section 3, *Tracking Token Size*, Eq. 1):
#
# $$A = \operatorname{softmax}\left(\frac{Q K^\top}{\sqrt{D}} + \log s\right),$$
#
# with $s$ the **row** vector of the sizes of the keys: $\log s_j$ is added to every score in the
# **column** of key $j$, whatever the query. Since $e^{z + \log s} = s\, e^{z}$, a key of size
# $s$ gets the weight of $s$ copies of itself: attention over merged tokens is exactly attention
# over the sequence in which each token appears $s$ times (when the tokens merged into one were
# equal; otherwise this is the approximation ToMe makes). The output is $A V$, as in plain
# attention.
#
# ```
# keys k0 k1 k2, sizes 1 3 2       attends like       k0 k1 k1 k1 k2 k2, all of size 1
# ```
#
# **Write** `proportional_attention(q, k, v, size)`: `q` (B, H, T, D) floating point, `k` and `v`
# (B, H, S, D) in the same dtype, `size` (B, S, 1) in the same dtype, positive (not necessarily
# whole numbers): one size per key, shared by every head and every query of its batch element.
# Return the (B, H, T, D) output $AV$, through which gradients flow to `q`, `k` and `v`. The
# number of queries $T$ may differ from the number of keys $S$.
#
# - **Allowed:** `@`, `transpose`, `math.sqrt`, `log`, `softmax`, `exp`, `sum`, `reshape`,
#   `unsqueeze`, indexing, `torch.einsum`.
# - **Not allowed:** `F.scaled_dot_product_attention`, `tfcourse.scaled_dot_product_attention`
#   and the attention functions of `tfcourse.tome` (the hidden tests check).
# - **Pitfalls:** add $\log s$, not $s$; the scores are (B, H, T, S), the keys on the last axis:
#   `size` (B, S, 1) must become (B, 1, 1, S); along the queries, $\log s$ would add the same
#   number to a whole row, which the softmax cancels: the sizes would change nothing; add it
#   after the division by $\sqrt{D}$ (Eq. 1), not before; the sizes enter the softmax, they do
#   not multiply the values, and weights multiplied by $s$ after the softmax no longer sum to 1.
#
# **Points:** self-check 2, hidden tests 2 (more queries than keys and fewer, one head, sizes
# all 1 (plain attention), sizes that are not whole numbers, float64, gradients to `q`, `k` and
# `v`).

# %% nbgrader={"grade": false, "grade_id": "attention", "locked": false, "schema_version": 3, "solution": true, "task": false}
def proportional_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           size: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D), (B, H, S, D), (B, H, S, D), (B, S, 1) -> (B, H, T, D):
    softmax(QKᵀ/√D + log s) V, log s_j added to the column of key j (Eq. 1)."""
    ### BEGIN SOLUTION
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    log_size = size.log().transpose(1, 2).unsqueeze(1)  # (B, S, 1) -> (B, 1, 1, S): a row
    return (scores + log_size).softmax(dim=-1) @ v  # (B, H, T, D)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "attention_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (2 points).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("torch.nn.functional.scaled_dot_product_attention",
             "tfcourse.attention.scaled_dot_product_attention",
             "tfcourse.attention.fused_scaled_dot_product_attention",
             "tfcourse.tome.proportional_attention", "tfcourse.tome._attend")
noise = torch.Generator().manual_seed(3)
B, H, T, S, D = 2, 2, 3, 4, 8
q = torch.randn(B, H, T, D, generator=noise)
k, v = torch.randn(B, H, S, D, generator=noise), torch.randn(B, H, S, D, generator=noise)
counts = [[1, 3, 1, 2], [2, 1, 1, 4]]  # the size of each key, per batch element
size = torch.tensor(counts, dtype=torch.float32).unsqueeze(-1)  # (B, S, 1)


def attend(scores, values):
    """Plain attention: softmax over the keys, the last axis."""
    return scores.softmax(dim=-1) @ values


with torch.no_grad():
    # plain attention over the sequence in which key j appears size[j] times
    repeats = [torch.tensor(c) for c in counts]
    want = torch.stack([attend(q[b] @ k[b].repeat_interleave(repeats[b], dim=1).mT / D ** 0.5,
                               v[b].repeat_interleave(repeats[b], dim=1))
                        for b in range(B)])  # (B, H, T, D)
    scores = q @ k.mT / D ** 0.5  # (B, H, T, S)
    column = size.mT.unsqueeze(1)  # (B, 1, 1, S): s as a row, over heads and queries
    mistakes = {
        "this is plain attention: the sizes change nothing. Is log s added along the queries? "
        "A number added to a whole row cancels in the softmax: add log s to the column of "
        "each key, size (B, S, 1) made (B, 1, 1, S)": attend(scores, v),
        "this is softmax(QK^T/sqrt(D) + s): add log s, so that a key of size s weighs as s "
        "copies of it": attend(scores + column, v),
        "log s is divided by sqrt(D) with the scores: add it after the scaling, "
        "QK^T/sqrt(D) + log s": attend((q @ k.mT + column.log()) / D ** 0.5, v),
        "the sizes multiply the values, or the weights after the softmax (the same thing), "
        "which then no longer sum to 1: the sizes belong inside the softmax, as + log s on the "
        "scores": attend(scores, v * column.mT),
        "the scores are divided by D: divide them by sqrt(D), then add log s":
            attend(q @ k.mT / D + column.log(), v),
    }
name = "proportional_attention(q (2, 2, 3, 8), k, v (2, 2, 4, 8), size (2, 4, 1))"
with checks.forbid(*forbidden, task="Exercise 3"):
    try:
        got = proportional_attention(q, k, v, size)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. The scores are (B, H, T, S) = (2, 2, 3, 4): log s, from "
            "size (B, S, 1), must be shaped (B, 1, 1, S) to be added to the column of each "
            "key") from None
checks.expect_shape(got, (B, H, T, D), name, hint="one output of width D per head and query")
checks.expect_close(got, want, name, mistakes=mistakes,
                    hint="proportional attention over the merged keys should equal plain "
                         "attention over the keys repeated s times")

# %% nbgrader={"grade": true, "grade_id": "attention_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (2 points) run when the notebook is graded. Here this cell only
# checks that proportional_attention runs.
import torch

assert proportional_attention(torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 3, 4),
                              torch.zeros(1, 1, 3, 4), torch.ones(1, 3, 1)).shape == (1, 1, 2, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.tome
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(53)
    attention_functions = (
        "torch.nn.functional.scaled_dot_product_attention",
        "tfcourse.attention.scaled_dot_product_attention",
        "tfcourse.attention.fused_scaled_dot_product_attention",
        "tfcourse.tome.proportional_attention", "tfcourse.tome._attend")
    for nb, heads, queries, keys, width, dtype, sizes in [
        (2, 3, 5, 7, 4, torch.float64, "whole"), (1, 1, 6, 6, 8, torch.float32, "whole"),
        (3, 2, 9, 4, 16, torch.float32, "whole"), (2, 4, 5, 5, 2, torch.float64, "one"),
        (4, 2, 1, 3, 8, torch.float32, "whole"), (2, 2, 4, 6, 8, torch.float64, "fractional"),
    ]:
        leaves = [torch.randn(nb, heads, n, width, generator=gen, dtype=dtype).requires_grad_()
                  for n in (queries, keys, keys)]
        if sizes == "one":
            key_sizes = torch.ones(nb, keys, 1, dtype=dtype)
        elif sizes == "whole":
            key_sizes = torch.randint(1, 12, (nb, keys, 1), generator=gen).to(dtype)
        else:  # positive, not whole numbers: 0.3, 2.5...
            key_sizes = (torch.rand(nb, keys, 1, generator=gen, dtype=dtype) * 5 + 0.1)
        expected_output = tfcourse.tome.proportional_attention(*leaves, key_sizes, fused=False)
        upstream = torch.randn(expected_output.shape, generator=gen, dtype=dtype)
        expected_grads = torch.autograd.grad((expected_output * upstream).sum(), leaves)
        inputs = [t.detach().clone().requires_grad_() for t in leaves]
        with checks.forbid(*attention_functions, task="Exercise 3"):
            result = proportional_attention(*inputs, key_sizes)
        label = (f"proportional_attention with {heads} head(s), {queries} queries, {keys} keys "
                 f"of width {width}, batch {nb}, {dtype}"
                 f"{', every size 1' if sizes == 'one' else ''}"
                 f"{', sizes that are not whole numbers' if sizes == 'fractional' else ''}")
        checks.expect_close(
            result, expected_output.detach(), label,
            hint="a size need not be a whole number (sizes of 0.3 or 2.5 are positive too): are "
                 "the keys repeated s times? Add log s to the scores, which works for any "
                 "positive size" if sizes == "fractional" else None)
        (result * upstream).sum().backward()
        for part, leaf, expected_grad in zip("qkv", inputs, expected_grads, strict=True):
            assert leaf.grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(leaf.grad, expected_grad, f"the gradient of {part} in {label}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "counts_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: the tokens left after each layer (2 points)
#
# ToMe merges in every block, between the attention and the MLP, so that each layer works on
# fewer tokens than the one before (Bolya et al., 2023, section 3, *Strategy*). The number merged
# is fixed in advance, not decided by the image: $r$ tokens per layer by default, $rL$ over $L$
# layers, which keeps the cost the same for every image and lets images of one batch stay in one
# tensor. A schedule may also vary from layer to layer (the paper compares a constant and a
# decreasing schedule in section 4.1): $r_1, \dots, r_L$.
#
# A layer cannot merge more than Exercise 1 allows: one that receives $T_{\ell-1}$ tokens merges
# $\min(r_\ell, \lfloor (T_{\ell-1} - 1)/2 \rfloor)$ of them, never more than half, never the class
# token. So the tokens after each layer are
#
# $$T_0 = \mathtt{num\_tokens}, \qquad T_\ell = T_{\ell-1} - \min\left(r_\ell,
# \left\lfloor \frac{T_{\ell-1} - 1}{2} \right\rfloor\right), \quad \ell = 1, \dots, L.$$
#
# For example, a ViT-B/16 on images of 224 × 224 pixels has 196 patches and a class token,
# $T_0 = 197$, and 12 layers; with $r = 16$ in every layer the counts fall by 16 per layer to 21
# after layer 11, and layer 12 can merge only 10 of its 21 tokens: 11 are left.
#
# **Write** `token_counts(num_tokens, schedule)`: `num_tokens` an int $\ge 2$, the tokens entering
# the first layer, the class token included; `schedule` a sequence (list or tuple) of $L \ge 0$
# ints $\ge 0$, the $r_\ell$ of each layer. Return the list of the $L + 1$ ints
# $[T_0, T_1, \dots, T_L]$.
#
# - **Allowed:** Python integers, a loop.
# - **Not allowed:** `tfcourse.tome.clamp_schedule`, `tfcourse.tome.merge_schedule` and
#   `tfcourse.tome.max_merges` (the hidden tests check).
# - **Pitfalls:** the bound depends on the tokens the layer *receives*: cut each $r_\ell$ layer
#   by layer, not once against $T_0$; the class token never merges: $\lfloor (T-1)/2 \rfloor$, not
#   $\lfloor T/2 \rfloor$ (they differ when $T$ is even); the list starts with $T_0$.
#
# **Points:** self-check 1, hidden test 1 (a decreasing schedule, an even number of tokens, $r$
# larger than any layer allows, two tokens, no layer at all, a tuple, a list of Python ints
# returned).

# %% nbgrader={"grade": false, "grade_id": "counts", "locked": false, "schema_version": 3, "solution": true, "task": false}
def token_counts(num_tokens: int, schedule) -> list[int]:
    """[T_0, T_1, ..., T_L]: the tokens before the first layer and after each layer's merge, each
    layer merging min(r_l, ⌊(T_{l-1} − 1)/2⌋)."""
    ### BEGIN SOLUTION
    counts = [num_tokens]
    for r in schedule:
        tokens = counts[-1]
        counts.append(tokens - min(r, (tokens - 1) // 2))  # never more than half, nor the class
    return counts
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "counts_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (1 point).
import warnings

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.tome.clamp_schedule", "tfcourse.tome.merge_schedule",
             "tfcourse.tome.max_merges")
with checks.forbid(*forbidden, task="Exercise 4"):
    got = token_counts(197, [16] * 12)
want = [197, 181, 165, 149, 133, 117, 101, 85, 69, 53, 37, 21, 11]
name = "token_counts(197, [16] * 12)"
assert len(got) == 13, (
    f"{name} returned {len(got)} counts, expected 13: T_0 = 197 first, then one count after "
    "each of the 12 layers")
if list(got) != want:
    if list(got)[-1] == 5:
        raise checks.ContractError(
            f"{name} gives {list(got)}, expected {want}: the last layer merges 16 of its 21 "
            "tokens, more than half. Cut each layer's r to (T - 1) // 2 of the tokens that layer "
            "receives, layer by layer (not once against T_0)")
    raise checks.ContractError(f"{name} gives {list(got)}, expected {want}")
with checks.forbid(*forbidden, task="Exercise 4"):
    got = token_counts(16, [8, 8])
assert list(got) == [16, 9, 5], (
    f"token_counts(16, [8, 8]) gives {list(got)}, expected [16, 9, 5]: of 16 tokens, one is the "
    "class token, which never merges, so at most (16 - 1) // 2 = 7 merge, not 16 // 2 = 8")

# %% nbgrader={"grade": true, "grade_id": "counts_hidden", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (1 point) run when the notebook is graded. Here this cell only
# checks that token_counts runs.
assert len(token_counts(5, [1])) == 2
### BEGIN HIDDEN TESTS
import warnings

import tfcourse.tome
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    for first, plan in [
        (17, [4, 4, 4, 4]), (17, [100] * 5), (2, [1, 1]), (10, []), (65, [8, 6, 4, 2, 0]),
        (16, [8, 8, 8]), (198, (16,) * 12), (50, (0, 30, 1)), (3, [5]),
    ]:
        clamped = tfcourse.tome.clamp_schedule(list(plan), first)
        expected_counts = [first]
        for merged in clamped:
            expected_counts.append(expected_counts[-1] - merged)
        with checks.forbid("tfcourse.tome.clamp_schedule", "tfcourse.tome.merge_schedule",
                           "tfcourse.tome.max_merges", task="Exercise 4"):
            result = token_counts(first, plan)
        assert isinstance(result, list) and all(
            isinstance(c, int) and not isinstance(c, bool) for c in result), (
            f"token_counts({first}, {plan!r}) returned {result!r}: return a Python list of "
            "Python ints (counts.append(...) of int arithmetic, //, min), not a tensor, a tuple "
            "or floats")
        assert [int(c) for c in result] == expected_counts, (
            f"token_counts({first}, {plan!r}) gives {list(result)}, expected {expected_counts}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS
