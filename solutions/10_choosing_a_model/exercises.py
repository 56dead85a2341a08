# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 10 exercises: choosing a model, and the Mixture of Embedding Experts
#
# Five graded exercises write the parts of the chapter's multimodal model and of the cost model
# with which the chapter compares the course's models. The first four build the Mixture of
# Embedding Experts (Miech, Laptev and Sivic, 2018, "Learning a Text-Video Embedding from
# Incomplete and Heterogeneous Data", arXiv:1804.02516, section 3) and score it: the gated
# embedding unit of each expert; the similarity of a caption and a clip, mixed over the streams
# that the clip has; the ranking loss that trains it; and the ranks, recall and median rank with
# which retrieval is measured. The fifth counts the floating-point operations of a Transformer
# block, and finds the length from which its attention costs more than the rest.
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `gated_embedding_unit`, an expert's map into the shared space | 3 |
# | 2 | `mixture_similarity`, the similarity mixed over the streams a clip has | 4 |
# | 3 | `bidirectional_ranking_loss`, the loss that trains the embedding | 3 |
# | 4 | `text_to_clip_ranks`, `recall_at` and `median_rank`, the retrieval metrics | 3 |
# | 5 | `block_forward_flops` and `quadratic_from`, the cost of a Transformer block | 3 |
# | | **total** | **16** |
#
# The reference implementation is `tfcourse.mee` (`GatedEmbeddingUnit`, `ContextGating`,
# `mixture_weights`, `MixtureOfEmbeddingExperts`, `ranking_loss`) and `tfcourse.retrieval`
# (`text_to_clip_ranks`, `recall_at`, `median_rank`); the cost model is checked against PyTorch's
# own count of the operations of the course's Transformer block. The exercises write these parts
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
# Shapes use the course's letters: `Bt` captions, `Bv` clips, `M` streams of a clip (appearance,
# motion, audio, ...), one expert each, `Dt` the width of a caption's text features, `D` the
# width of a stream's features, `E` the width of the shared embedding space, `K` a cut-off of a
# ranked list (R@K); and, for the cost of a Transformer block, `B` batch, `T` positions, `C`
# model width, `F` feed-forward width.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import torch
import torch.nn.functional as F

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "gated_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: a gated embedding unit (3 points)
#
# The Mixture of Embedding Experts compares a caption with a clip stream by stream: each stream
# $m$ of a clip (its appearance, its motion, its audio, ...) has an **expert**, a pair of gated
# embedding units that map the caption's text features and the clip's stream into one shared
# space of width $E$. A gated embedding unit is a linear map, then *context gating*, then a
# normalisation to unit length (section 3, Eqs. 1–3):
#
# $$\begin{aligned}
# z &= W_1 x + b_1, \cr
# y &= z \circ \sigma(W_2 z + b_2), \cr
# \operatorname{GEU}(x) &= \frac{y}{\max(\lVert y \rVert_2,\ \epsilon)},
# \qquad \epsilon = 10^{-12},
# \end{aligned}$$
#
# with $\sigma$ the logistic sigmoid and $\circ$ the product element by element. The gate
# $\sigma(W_2 z + b_2)$, between 0 and 1, is computed from **all** the features of $z$, through
# its own weights $W_2, b_2$, and scales each of them: it lets the features interact and
# recalibrates their strengths. The normalisation comes **last**, so that every embedding has
# unit length and the dot product of two embeddings is their cosine (Exercise 2). The
# $\max(\cdot, \epsilon)$ is that of `F.normalize`: a $y$ that is zero stays zero instead of
# becoming $0 / 0$ = NaN.
#
# ```
# x (…, D) ─ W1, b1 ─ z (…, E) ─┬─────────────────┐
#                               └ W2, b2 ─ sigmoid ┴─ × ─ y (…, E) ─ ÷ max(‖y‖, ε) ─ (…, E)
# ```
#
# **Write** `gated_embedding_unit(x, w1, b1, w2, b2)`: `x` (…, D), floating point, with any
# number of leading axes, none included ((D,): one vector); `w1` (E, D), `b1` (E,), `w2` (E, E),
# `b2` (E,), in the dtype of `x` and laid out as the weights of `nn.Linear(D, E)` and
# `nn.Linear(E, E)`, so that $W_1 x$ is `x @ w1.T` (or `F.linear(x, w1, b1)` with the bias).
# Return the (…, E) embeddings in the dtype of `x`, each of unit length along the last axis (or
# zero), through which gradients flow to `x` and to the four parameters.
#
# - **Allowed:** `@`, `F.linear`, `torch.sigmoid`, `*`, `F.normalize`,
#   `torch.linalg.vector_norm`, `clamp_min`.
# - **Not allowed:** `tfcourse.mee.GatedEmbeddingUnit` and `tfcourse.mee.ContextGating` (their
#   `forward`; the hidden tests check).
# - **Pitfalls:** the weights are (E, D), as `nn.Linear` stores them: transpose them (`x @
#   w1.T`); the gate reads $z$, not $x$, through $W_2$ and $b_2$: $\sigma(z)$ alone is not the
#   gate; normalise last, after the gate, not $z$ before it; normalise each vector, over the last
#   axis (`dim=-1`): `F.normalize`'s default `dim=1` is the last axis of a 2-D `x` only; divide by
#   $\max(\lVert y \rVert, \epsilon)$, not by $\lVert y \rVert$, which makes a zero row NaN; do
#   not detach the norm.
#
# **Points:** self-check 1 (`x` (3, 6), $D = 6$, $E = 4$, against
# `tfcourse.mee.GatedEmbeddingUnit`), hidden tests 2 (one vector without a leading axis, two and
# three leading axes, $D = E$, float64, a zero row, gradients to `x` and to each parameter, inputs
# on another device (PyTorch's `meta` device)).

# %% nbgrader={"grade": false, "grade_id": "gated", "locked": false, "schema_version": 3, "solution": true, "task": false}
def gated_embedding_unit(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                         b2: torch.Tensor) -> torch.Tensor:
    """(…, D) -> (…, E) of unit length: z = W1 x + b1, y = z ∘ σ(W2 z + b2), y / max(‖y‖, ε)."""
    ### BEGIN SOLUTION
    z = F.linear(x, w1, b1)  # (…, E)
    y = z * torch.sigmoid(F.linear(z, w2, b2))  # (…, E): context gating, a gate from all of z
    return F.normalize(y, dim=-1)  # (…, E): y / max(‖y‖, 1e-12), each vector on its own
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "gated_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (1 point).
import warnings

import torch

import tfcourse.mee
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.mee.GatedEmbeddingUnit.forward", "tfcourse.mee.ContextGating.forward")
torch.manual_seed(1)
unit = tfcourse.mee.GatedEmbeddingUnit(6, 4)  # D = 6, E = 4
x = torch.randn(3, 6)  # (3, D): three feature vectors
w1, b1 = unit.linear.weight.detach(), unit.linear.bias.detach()  # (E, D), (E,)
w2, b2 = unit.gating.gate.weight.detach(), unit.gating.gate.bias.detach()  # (E, E), (E,)
with torch.no_grad():
    want = unit(x)  # (3, E)
    z = x @ w1.T + b1
    mistakes = {
        "the gate is sigmoid(z): it is sigmoid(W2 z + b2), with the gate's own weights w2 and b2":
            F.normalize(z * torch.sigmoid(z), dim=-1),
        "w2 is not transposed: W2 z is z @ w2.T (w2 is laid out as nn.Linear's weight)":
            F.normalize(z * torch.sigmoid(z @ w2 + b2), dim=-1),
        "b2 is added after the sigmoid: the gate is sigmoid(W2 z + b2)":
            F.normalize(z * (torch.sigmoid(z @ w2.T) + b2), dim=-1),
        "the gate is missing: y = z * sigmoid(W2 z + b2), then normalise y":
            F.normalize(z, dim=-1),
        "b1 is missing: z = W1 x + b1": F.normalize(
            x @ w1.T * torch.sigmoid(x @ w1.T @ w2.T + b2), dim=-1),
    }
name = "gated_embedding_unit(x (3, 6), w1 (4, 6), b1 (4,), w2 (4, 4), b2 (4,))"
with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 1"):
    try:
        got = gated_embedding_unit(x, w1, b1, w2, b2)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. The weights are laid out as nn.Linear's: w1 is (E, D) = "
            "(4, 6), so W1 x is x @ w1.T (or F.linear(x, w1, b1)); the gate reads z, of width "
            "E = 4, not x") from None
checks.expect_shape(got, (3, 4), name, hint="one embedding of width E = 4 per vector: (…, E)")
checks.expect_finite(got, name)
lengths = got.norm(dim=-1)  # (3,)
if not torch.allclose(lengths, torch.ones(3), atol=1e-4):
    columns = got.norm(dim=0)
    hint = ("each column has unit length, not each vector: normalise over the last axis "
            "(dim=-1), not over the vectors (dim=0)"
            if torch.allclose(columns, torch.ones_like(columns), atol=1e-4) else
            "divide y = z * sigmoid(W2 z + b2) by its Euclidean length over the last axis, as "
            "the last step: normalising z before the gate leaves y shorter than 1")
    raise checks.ContractError(
        f"the vectors of {name} have lengths {[round(v, 4) for v in lengths.tolist()]}, not 1: "
        + hint)
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "gated_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (2 points) run when the notebook is graded. Here this cell only
# checks that gated_embedding_unit runs.
import torch

assert gated_embedding_unit(torch.ones(2, 3), torch.ones(4, 3), torch.zeros(4), torch.eye(4),
                            torch.zeros(4)).shape == (2, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.mee
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(101)
    blocked = ("tfcourse.mee.GatedEmbeddingUnit.forward", "tfcourse.mee.ContextGating.forward")
    parts = ("x", "w1", "b1", "w2", "b2")
    for lead, width_in, width, dtype in [
        ((), 5, 3, torch.float64),  # one vector, no leading axis
        ((2, 3), 4, 6, torch.float32),  # two leading axes
        ((4,), 5, 5, torch.float64),  # D = E
        ((2, 1, 3), 3, 2, torch.float64),  # three leading axes
        ((7,), 8, 8, torch.float32),  # D = E
    ]:
        unit = tfcourse.mee.GatedEmbeddingUnit(width_in, width).to(dtype)
        with torch.no_grad():
            for parameter in unit.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=gen, dtype=dtype))
        params = [unit.linear.weight, unit.linear.bias, unit.gating.gate.weight,
                  unit.gating.gate.bias]
        x_ref = torch.randn(*lead, width_in, generator=gen, dtype=dtype).requires_grad_()
        expected = unit(x_ref)
        upstream = torch.randn(expected.shape, generator=gen, dtype=dtype)
        want_grads = torch.autograd.grad((expected * upstream).sum(), [x_ref, *params])
        leaves = [t.detach().clone().requires_grad_() for t in (x_ref, *params)]
        label = (f"gated_embedding_unit(x {(*lead, width_in)} {dtype}, D={width_in}, "
                 f"E={width})")
        with checks.forbid(*blocked, task="Exercise 1"):
            try:
                result = gated_embedding_unit(*leaves)
            except (IndexError, RuntimeError) as error:
                if lead:
                    raise
                raise checks.ContractError(
                    f"{label} fails ({error}): work on the last axis, dim=-1, whatever the "
                    "leading axes, none included (F.normalize's default dim=1 needs two "
                    "axes)") from None
        checks.expect_close(result, expected.detach(), label)
        got_grads = torch.autograd.grad((result * upstream).sum(), leaves, allow_unused=True)
        for part, got_grad, want_grad in zip(parts, got_grads, want_grads, strict=True):
            assert got_grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(got_grad, want_grad, f"the gradient of {part} in {label}")

    # a zero vector: z = 0 where x = 0 and b1 = 0, so y = 0, whose embedding is 0, not NaN
    x = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    x[1] = 0.0
    w1, w2 = (torch.randn(5, n, generator=gen, dtype=torch.float64) for n in (4, 5))
    b1, b2 = torch.zeros(5, dtype=torch.float64), torch.randn(5, generator=gen,
                                                              dtype=torch.float64)
    label = "gated_embedding_unit(x (3, 4) whose row 1 is 0, b1 = 0)"
    with checks.forbid(*blocked, task="Exercise 1"):
        result = gated_embedding_unit(x, w1, b1, w2, b2)
    checks.expect_finite(result, label, hint="row 1 has y = 0: divide by max(‖y‖, 1e-12), as "
                         "F.normalize does, so that 0 / 0 never happens")
    z = x @ w1.T + b1
    expected = torch.nn.functional.normalize(z * torch.sigmoid(z @ w2.T + b2), dim=-1)
    checks.expect_close(result, expected, label)
    assert (result[1] == 0).all(), f"{label}: row 1 is {result[1].tolist()}, expected zeros"

    with checks.forbid(*blocked, task="Exercise 1"):  # the device of x and of the weights
        checks.expect_on_meta(
            lambda: gated_embedding_unit(*[torch.empty(shape, device="meta")
                                           for shape in ((2, 5), (3, 5), (3,), (3, 3), (3,))]),
            "gated_embedding_unit(x (2, 5), weights on the meta device)",
            "make any new tensor on the device of x (device=x.device), or use F.normalize")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "mixture_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: the similarity of a caption and a clip, over the streams it has (4 points)
#
# A caption $t$ and a clip $v$ are compared by every expert: expert $m$ embeds the caption as
# $f_m(t)$ and the clip's stream $m$ as $g_m(v_m)$, both of unit length (Exercise 1), and their
# dot product is their cosine. The similarity is a weighted sum of these cosines, with weights
# that the **caption** chooses: a caption about a motion can lean on the motion expert, one
# about a scene on the appearance expert. Each stream $m$ has a vector $a_m$, and the caption's
# logit for it is $a_m^\top t$ (section 3):
#
# $$\begin{aligned}
# s(t, v) &= \sum_{m=1}^{M} w_m(t, v)\, \langle f_m(t), g_m(v_m) \rangle, \cr
# w_m(t, v) &= \frac{\delta_m(v)\, e^{a_m^\top t}}{\sum_{j=1}^{M} \delta_j(v)\, e^{a_j^\top t}},
# \end{aligned}$$
#
# with $\delta_m(v) = 1$ when clip $v$ has stream $m$ and 0 when it is **missing** (a still image
# has no motion and no audio; a clip without sound has no audio). The weights are a softmax of
# the caption's logits over the streams that the clip has: they sum to 1 for every pair of a
# caption and a clip, and a clip is compared on the streams it has, not on zeros. That is what
# lets the model learn from images and videos at once. Every clip has at least one stream.
#
# The rows of a missing stream hold no data: they may hold **anything**, NaN or infinity
# included, and must change neither the similarity nor its gradients. Their weight is 0, but
# $0 \cdot \text{NaN}$ is NaN, in the result and in the gradients: set those rows to zero (or
# leave them out) **before** they enter any product.
#
# ```
# text_embeddings[m] (Bt, E) ─┐
# clip_embeddings[m] (Bv, E) ─┴─ rows of missing streams set to 0 ─ cosines (Bt, Bv), one per m
# logits (Bt, M), present (Bv, M) ─ softmax over the streams each clip has ─ w (Bt, Bv, M)
# s = Σ_m w[..., m] · cosines of m ─ (Bt, Bv): row i scores caption i against every clip
# ```
#
# **Write** `mixture_similarity(text_embeddings, clip_embeddings, logits, present)`:
# `text_embeddings` a list of $M$ tensors (Bt, E), the $f_m(t)$ of the captions;
# `clip_embeddings` a list of $M$ tensors (Bv, E), the $g_m(v_m)$ of the clips, whose rows are
# anything where the clip lacks the stream; `logits` (Bt, M), the $a_m^\top t$ of the captions;
# `present` (Bv, M) bool, True where the clip has the stream, at least one True per row. All are
# in one floating dtype and on one device; Bt and Bv need not be equal. Return the (Bt, Bv)
# similarities in that dtype and on that device, through which gradients flow to the logits and
# the embeddings.
#
# - **Allowed:** `@`, `torch.stack`, `torch.where`, `masked_fill`, `torch.softmax`, `torch.exp`,
#   indexing, loops over the streams, broadcasting.
# - **Not allowed:** `tfcourse.mee.mixture_weights` and `tfcourse.mee.MixtureOfEmbeddingExperts`
#   (its `forward`; the hidden tests check).
# - **Pitfalls:** the weights are renormalised for every (caption, clip) pair over the streams
#   of that clip: a softmax over all $M$ streams whose missing weights are then set to 0 sums to
#   less than 1; the weights are (Bt, Bv, M), not (Bt, M): caption $i$'s weights for clip $j$
#   depend on clip $j$'s streams, not on clip $i$'s; set the missing rows to zero before the
#   products (multiplying them by a weight 0 afterwards, or by `present`, keeps the NaN; so does
#   `nansum` in the gradients); do not write into the inputs (`g[...] = 0` changes the
#   caller's tensors, and fails on tensors that require gradients: `torch.where` makes a new
#   one); the result is (Bt, Bv), captions along the rows; make new tensors on the device of the
#   inputs.
#
# **Points:** self-check 2 (an untrained `tfcourse.mee.MixtureOfEmbeddingExperts` with $M = 3$
# streams, 4 captions and 5 clips, some streams missing and holding NaN), hidden tests 2 (NaN,
# infinite and huge values in missing rows, clips with one stream, the weights summing to 1,
# $M = 1$, Bt = Bv, float64, gradients to the logits and the embeddings, inputs on another
# device (PyTorch's `meta` device)).

# %% nbgrader={"grade": false, "grade_id": "mixture", "locked": false, "schema_version": 3, "solution": true, "task": false}
def mixture_similarity(text_embeddings: list[torch.Tensor], clip_embeddings: list[torch.Tensor],
                       logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """M × (Bt, E), M × (Bv, E), (Bt, M), (Bv, M) bool -> (Bt, Bv): Σ_m w_m(t, v) ⟨f_m, g_m⟩,
    the weights a softmax of the logits over the streams each clip has."""
    ### BEGIN SOLUTION
    blocked = logits[:, None, :].masked_fill(~present[None], float("-inf"))  # (Bt, Bv, M)
    weights = torch.softmax(blocked, dim=-1)  # (Bt, Bv, M): over the streams each clip has
    cosines = torch.stack([
        f @ torch.where(present[:, m, None], g, 0).T  # (Bt, E) @ (E, Bv): missing rows are 0
        for m, (f, g) in enumerate(zip(text_embeddings, clip_embeddings, strict=True))
    ], dim=-1)  # (Bt, Bv, M)
    return (weights * cosines).sum(dim=-1)  # (Bt, Bv)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "mixture_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (2 points).
import warnings

import torch

import tfcourse.mee
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.mee.mixture_weights", "tfcourse.mee.MixtureOfEmbeddingExperts.forward")
torch.manual_seed(2)
model = tfcourse.mee.MixtureOfEmbeddingExperts(6, [5, 4, 3], 8)  # Dt = 6, M = 3 streams, E = 8
text = torch.randn(4, 6)  # (Bt, Dt): four captions
streams = [torch.randn(5, d) for d in (5, 4, 3)]  # M × (Bv, D): five clips
present = torch.tensor([[True, True, True], [True, False, True], [False, True, False],
                        [True, True, False], [False, False, True]])  # (Bv, M)
with torch.no_grad():
    want = model(text, streams, present)  # (Bt, Bv)
    f = [unit(text) for unit in model.text_units]  # M × (Bt, E)
    g = [unit(x) for unit, x in zip(model.stream_units, streams, strict=True)]  # M × (Bv, E)
    logits = model.mixture(text)  # (Bt, M)
    g_given = [torch.where(present[:, m, None], gm, float("nan"))  # missing rows: NaN
               for m, gm in enumerate(g)]
    cosines = torch.stack([fm @ gm.T for fm, gm in zip(f, g, strict=True)], dim=-1)  # (Bt, Bv, M)
    softmax = torch.softmax(logits, dim=-1)[:, None, :]  # (Bt, 1, M): over all M streams
    mistakes = {
        "the weights are a softmax over all M streams whose missing streams are then set to 0: "
        "for a clip that misses a stream they sum to less than 1. Renormalise over the streams "
        "the clip has: fill the missing streams' logits with -inf before the softmax, for each "
        "(caption, clip) pair": (softmax * present[None] * cosines).sum(-1),
        "the missing streams are weighted too: a clip is compared on the streams it has only":
            (softmax * cosines).sum(-1),
        "the weights do not depend on the caption: they are a softmax of its logits over the "
        "clip's streams, not equal weights": (present[None] * cosines).sum(-1)
            / present.sum(-1)[None],
        "the weights are the logits themselves: take their softmax over the clip's streams":
            (logits[:, None, :] * present[None] * cosines).sum(-1),
    }
name = "mixture_similarity(M = 3 streams, 4 captions, 5 clips, some streams missing)"
with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 2"):
    try:
        got = mixture_similarity(f, g_given, logits, present)
    except NotImplementedError:
        raise
    except (RuntimeError, IndexError) as error:
        raise checks.ContractError(
            f"{name} fails: {error}. logits is (Bt, M) = (4, 3) and present (Bv, M) = (5, 3): "
            "the weights of caption i for clip j use the logits of caption i and the streams of "
            "clip j, so they are (Bt, Bv, M) = (4, 5, 3): logits[:, None, :] against "
            "present[None]") from None
checks.expect_shape(got, (4, 5), name,
                    hint="row i scores caption i against every clip: (Bt, Bv) = (4, 5)")
checks.expect_finite(
    got, name, hint="the rows of a missing stream hold NaN here, as the statement allows, and "
    "0 * NaN is NaN: set those rows to zero (torch.where(present[:, m, None], g, 0)) before the "
    "product, rather than giving their cosine a weight of 0 afterwards")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "mixture_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (2 points) run when the notebook is graded. Here this cell only
# checks that mixture_similarity runs.
import torch

assert mixture_similarity([torch.ones(2, 3)], [torch.ones(4, 3)], torch.zeros(2, 1),
                          torch.ones(4, 1, dtype=torch.bool)).shape == (2, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch
import torch.nn.functional as F

import tfcourse.mee
from tfcourse import checks


def _reference_similarity(f, g, logits, present):
    mixed = tfcourse.mee.mixture_weights(logits, present)  # (Bt, Bv, M)
    per_stream = torch.stack([fm @ torch.where(present[:, m, None], gm, 0).T
                              for m, (fm, gm) in enumerate(zip(f, g, strict=True))], dim=-1)
    return (mixed * per_stream).sum(dim=-1)


def _random_present(count, streams, gen):
    present = torch.rand(count, streams, generator=gen) < 0.6
    present[torch.arange(count), torch.randint(streams, (count,), generator=gen)] = True
    return present  # (Bv, M), at least one stream per clip


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(102)
    blocked = ("tfcourse.mee.mixture_weights", "tfcourse.mee.MixtureOfEmbeddingExperts.forward")
    one_each = torch.tensor([[True, False, False], [False, False, True], [False, True, False],
                             [False, False, True]])  # (4, 3): one stream per clip
    cases = [  # (label, Bt, Bv, M, E, dtype, present or None for random, fill of missing rows)
        ("3 captions, 6 clips, M = 3, float64, NaN", 3, 6, 3, 5, torch.float64, None, "nan"),
        ("5 captions, 2 clips, M = 4, inf", 5, 2, 4, 6, torch.float32, None, "inf"),
        ("4 captions, 4 clips, M = 3, float64, -inf", 4, 4, 3, 4, torch.float64, None, "-inf"),
        ("6 captions, 6 clips, M = 2, float64, 1e30", 6, 6, 2, 3, torch.float64, None, "1e30"),
        ("2 captions, 4 clips of one stream each, M = 3, NaN", 2, 4, 3, 5, torch.float32,
         one_each, "nan"),
        ("3 captions, 5 clips, M = 1", 3, 5, 1, 4, torch.float64, None, "nan"),
        ("4 captions, 3 clips, all streams present, M = 3", 4, 3, 3, 4, torch.float32,
         torch.ones(3, 3, dtype=torch.bool), "nan"),
    ]
    for label, Bt, Bv, M, E, dtype, present, fill in cases:
        if present is None:
            present = _random_present(Bv, M, gen)
        f = [F.normalize(torch.randn(Bt, E, generator=gen, dtype=dtype), dim=-1)
             for _ in range(M)]
        g = [torch.where(present[:, m, None],
                         F.normalize(torch.randn(Bv, E, generator=gen, dtype=dtype), dim=-1),
                         float(fill)) for m in range(M)]
        logits = torch.randn(Bt, M, generator=gen, dtype=dtype) * 3
        ref_leaves = [t.clone().requires_grad_() for t in (logits, *f, *g)]
        expected = _reference_similarity(ref_leaves[1:M + 1], ref_leaves[M + 1:],
                                         ref_leaves[0], present)
        upstream = torch.randn(Bt, Bv, generator=gen, dtype=dtype)
        want_grads = torch.autograd.grad((expected * upstream).sum(), ref_leaves)
        leaves = [t.clone().requires_grad_() for t in (logits, *f, *g)]
        name = f"mixture_similarity({label})"
        with checks.forbid(*blocked, task="Exercise 2"):
            result = mixture_similarity(leaves[1:M + 1], leaves[M + 1:], leaves[0], present)
        checks.expect_shape(result, (Bt, Bv), name, hint="(Bt, Bv): captions along the rows")
        checks.expect_finite(result, name, hint=f"the rows of the missing streams hold {fill}: "
                             "set them to zero before the products")
        checks.expect_close(result, expected.detach(), name)
        assert result.requires_grad, f"{name}: no gradient reaches the logits"
        got_grads = torch.autograd.grad((result * upstream).sum(), leaves, allow_unused=True)
        parts = ["logits", *(f"text_embeddings[{m}]" for m in range(M)),
                 *(f"clip_embeddings[{m}]" for m in range(M))]
        for part, got_grad, want_grad in zip(parts, got_grads, want_grads, strict=True):
            assert got_grad is not None, f"{name}: no gradient reaches {part}"
            checks.expect_finite(got_grad, f"the gradient of {part} in {name}",
                                 hint=f"the missing rows hold {fill}: a product that meets them "
                                 "gives NaN gradients even when its result is weighted by 0 or "
                                 "skipped by nansum; set them to zero before any product")
            checks.expect_close(got_grad, want_grad, f"the gradient of {part} in {name}")

    # every cosine 1: the similarity is the sum of the weights, which is 1 for every pair
    present = _random_present(5, 3, gen)
    ones = [torch.eye(4)[:1].repeat(n, 1) for n in (3, 5)]  # the same unit vector everywhere
    name = "mixture_similarity(every cosine 1, 3 captions, 5 clips, M = 3)"
    with checks.forbid(*blocked, task="Exercise 2"):
        result = mixture_similarity([ones[0]] * 3, [ones[1]] * 3, torch.randn(3, 3, generator=gen),
                                    present)
    checks.expect_close(
        result, torch.ones(3, 5), name,
        hint="with every cosine 1, each similarity is the sum of the weights of its pair: "
        "they must sum to 1 over the streams of that clip (renormalise after leaving out the "
        "missing streams)")

    with checks.forbid(*blocked, task="Exercise 2"):  # the device of the inputs
        checks.expect_on_meta(
            lambda: mixture_similarity(
                [torch.empty(3, 4, device="meta") for _ in range(2)],
                [torch.empty(5, 4, device="meta") for _ in range(2)],
                torch.empty(3, 2, device="meta"),
                torch.ones(5, 2, dtype=torch.bool, device="meta")),
            "mixture_similarity(inputs on the meta device)",
            "make new tensors on the device of the inputs (device=logits.device), or build the "
            "result from the inputs (torch.where, masked_fill, torch.stack)")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "ranking_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: the bidirectional ranking loss (3 points)
#
# The model is trained on batches of $B$ matching pairs: caption $i$ describes clip $i$. In the
# (B, B) matrix of similarities $s_{ij}$, caption $i$ against clip $j$, the **diagonal** holds the
# matching pairs and every other entry a wrong one. The loss asks each matching pair to score at
# least a margin $m$ above every wrong pair that shares its caption (its row: the caption
# against the other clips) and above every wrong pair that shares its clip (its column: the clip
# against the other captions), so that retrieval works in both directions, text to clip and
# clip to text (section 3):
#
# $$\begin{aligned}
# \mathcal{L} &= \frac{1}{B} \sum_{i=1}^{B} \sum_{j \ne i}
# \Big( \big[\, m + s_{ij} - s_{ii} \,\big]_+ + \big[\, m + s_{ji} - s_{ii} \,\big]_+ \Big),
# \cr
# [a]_+ &= \max(a, 0).
# \end{aligned}$$
#
# A wrong pair costs nothing once it scores at least $m$ below the matching pair of its row or
# column; the diagonal itself is never a wrong pair. The sum is divided by the $B$ matching
# pairs, not by the $B(B-1)$ wrong ones.
#
# ```
#             clip 0   clip 1   clip 2
# caption 0   s00 ✓    s01      s02       row 0: s01, s02 against s00 (caption 0's clips)
# caption 1   s10      s11 ✓    s12       column 0: s10, s20 against s00 (clip 0's captions)
# caption 2   s20      s21      s22 ✓
# ```
#
# **Write** `bidirectional_ranking_loss(similarity, margin=0.2)`: `similarity` (B, B), floating
# point, $B \ge 2$, its diagonal the matching pairs; `margin` a float $\ge 0$. Return the loss, a
# 0-dimensional tensor in the dtype of `similarity`, through which gradients flow to it.
#
# - **Allowed:** `diagonal`, broadcasting, `clamp`, `F.relu`, `torch.eye(…,
#   device=similarity.device)`, `masked_fill`, indexing, `sum`.
# - **Not allowed:** `tfcourse.mee.ranking_loss` (the hidden tests check).
# - **Pitfalls:** both directions, the rows and the columns; in the second term the matching
#   pair is $s_{ii}$, the diagonal entry of column $i$: broadcast the diagonal along the rows
#   (`positive[None, :]`) for the columns, along the columns (`positive[:, None]`) for the rows;
#   leave the diagonal out (it adds $2m$ per pair: $[m + s_{ii} - s_{ii}]_+ = m$, twice); divide
#   by $B$; the hinge $[\cdot]_+$ on each term, before summing; use the `margin` you are given;
#   make the mask on the device of `similarity`.
#
# **Points:** self-check 1 (a (5, 5) matrix, the default margin, against
# `tfcourse.mee.ranking_loss`), hidden tests 2 ($B = 2$, other margins, 0 included, a matrix
# whose loss is 0, float64, gradients, inputs on another device (PyTorch's `meta` device)).

# %% nbgrader={"grade": false, "grade_id": "ranking", "locked": false, "schema_version": 3, "solution": true, "task": false}
def bidirectional_ranking_loss(similarity: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """(B, B) -> (): (1/B) Σ_i Σ_{j≠i} [m + s_ij − s_ii]₊ + [m + s_ji − s_ii]₊."""
    ### BEGIN SOLUTION
    B = similarity.shape[0]
    positive = similarity.diagonal()  # (B,): s_ii
    wrong = ~torch.eye(B, dtype=torch.bool, device=similarity.device)  # (B, B): j ≠ i
    to_clips = (margin + similarity - positive[:, None]).clamp(min=0)  # caption i, clip j
    to_captions = (margin + similarity - positive[None, :]).clamp(min=0)  # clip j, caption i
    return (to_clips + to_captions)[wrong].sum() / B
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ranking_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (1 point).
import warnings

import torch

import tfcourse.mee
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.mee.ranking_loss",)
noise = torch.Generator().manual_seed(3)
similarity = torch.randn(5, 5, generator=noise) * 0.3 + torch.eye(5) * 0.4  # not symmetric
want = tfcourse.mee.ranking_loss(similarity)
positive = similarity.diagonal()
off = ~torch.eye(5, dtype=torch.bool)
rows = 0.2 + similarity - positive[:, None]  # caption i against clip j
columns = 0.2 + similarity - positive[None, :]  # clip j against caption i
mistakes = {
    "only the rows count (each caption against the other clips): add the columns, each clip "
    "against the other captions": rows.clamp(min=0)[off].sum() / 5,
    "only the columns count (each clip against the other captions): add the rows, each caption "
    "against the other clips": columns.clamp(min=0)[off].sum() / 5,
    "both terms compare with the diagonal of the row (positive[:, None] twice): the second term "
    "compares s_ji with s_ii, the diagonal entry of the column (positive[None, :] against "
    "the matrix)": 2 * rows.clamp(min=0)[off].sum() / 5,
    "the diagonal is counted as a wrong pair: it adds [m + s_ii - s_ii]+ = m twice per pair; "
    "leave out j = i": want + 2 * 0.2,
    "the loss is the mean over the B (B - 1) wrong pairs: divide the sum by B, the matching "
    "pairs": want / 4,
    "the sum is not divided by B": want * 5,
    "the hinge is missing: each term is max(m + s_ij - s_ii, 0), so that a wrong pair far "
    "enough below costs nothing": (rows + columns)[off].sum() / 5,
    "the margin is subtracted: each term is [m + s_ij - s_ii]+": (
        (rows - 0.4).clamp(min=0) + (columns - 0.4).clamp(min=0))[off].sum() / 5,
}
name = "bidirectional_ranking_loss(similarity (5, 5))"
with checks.forbid(*forbidden, task="Exercise 3"):
    try:
        got = bidirectional_ranking_loss(similarity)
    except NotImplementedError:
        raise
    except (RuntimeError, IndexError) as error:
        raise checks.ContractError(
            f"{name} fails: {error}. The diagonal is similarity.diagonal(), (B,); compare it "
            "with the rows as positive[:, None] and with the columns as positive[None, :]"
        ) from None
assert isinstance(got, torch.Tensor), (
    f"{name} is a {type(got).__name__}: return a tensor, through which the loss can be "
    "back-propagated (no .item())")
checks.expect_shape(got, (), name, hint="the loss is one number, a 0-dimensional tensor: sum "
                    "over all the terms")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "ranking_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (2 points) run when the notebook is graded. Here this cell only
# checks that bidirectional_ranking_loss runs.
import torch

assert bidirectional_ranking_loss(torch.eye(3)).shape == ()
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.mee
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(103)
    blocked = ("tfcourse.mee.ranking_loss",)
    separated = torch.eye(4, dtype=torch.float64) + torch.rand(4, 4, generator=gen,
                                                               dtype=torch.float64) * 0.1
    cases = [  # (label, similarity, margin or None for the default)
        ("(2, 2)", torch.randn(2, 2, generator=gen), None),
        ("(6, 6), float64, margin=0.5", torch.randn(6, 6, generator=gen, dtype=torch.float64),
         0.5),
        ("(4, 4), margin=0", torch.randn(4, 4, generator=gen), 0.0),
        ("(7, 7), float64, margin=1", torch.randn(7, 7, generator=gen, dtype=torch.float64)
         * 0.5, 1.0),
        ("(3, 3) upper triangle large, margin=0.3",
         torch.randn(3, 3, generator=gen).triu(1) * 4 + torch.eye(3), 0.3),
        ("(4, 4), float64, every wrong pair 0.8 below its match, margin=0.5", separated, 0.5),
    ]
    for label, similarity, margin in cases:
        leaf = similarity.clone().requires_grad_()
        expected = (tfcourse.mee.ranking_loss(leaf) if margin is None
                    else tfcourse.mee.ranking_loss(leaf, margin))
        (want_grad,) = torch.autograd.grad(expected, leaf)
        given = similarity.clone().requires_grad_()
        name = f"bidirectional_ranking_loss(similarity {label})"
        with checks.forbid(*blocked, task="Exercise 3"):
            if margin is None:
                result = bidirectional_ranking_loss(given)
            elif margin == 0.5:
                result = bidirectional_ranking_loss(given, margin=margin)
            else:
                result = bidirectional_ranking_loss(given, margin)
        assert isinstance(result, torch.Tensor), f"{name} is not a tensor"
        checks.expect_shape(result, (), name)
        checks.expect_close(result, expected.detach(), name,
                            hint="use the margin you are given" if margin is not None else None)
        if "below its match" in label:
            assert result.item() == 0.0, f"{name} is {result.item()}, expected 0"
        assert result.requires_grad, f"{name}: no gradient reaches the similarities"
        (got_grad,) = torch.autograd.grad(result, given)
        checks.expect_close(got_grad, want_grad, f"the gradient of the similarities in {name}")

    with checks.forbid(*blocked, task="Exercise 3"):  # the device of the similarities
        checks.expect_on_meta(
            lambda: bidirectional_ranking_loss(torch.empty(4, 4, device="meta")),
            "bidirectional_ranking_loss(similarity (4, 4) on the meta device)",
            "make the mask on the device of the similarities: torch.eye(B, dtype=torch.bool, "
            "device=similarity.device)")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "ranks_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: ranks, recall at K and the median rank (3 points)
#
# A retrieval model is scored by where the right item lands when a query ranks every candidate.
# With $B$ captions and $B$ clips, caption $i$ describing clip $i$, caption $i$ ranks all $B$
# clips by its similarities $s_{ij}$, highest first, and the **rank** of its clip, counted from
# 1, is
#
# $$r_i = 1 + \#\{\, j \ne i : s_{ij} \ge s_{ii} \,\}.$$
#
# Ties are broken **pessimistically**: every wrong clip that scores at least as high as the
# right one is counted ahead of it. The reason is a model that knows nothing and gives every
# pair the same score: it must rank the right clip last ($r_i = B$), not first. Counting only
# the clips that score strictly higher ($>$) would rank every clip first and give such a model a
# perfect R@1 of 100 %. Two figures summarise the ranks, as the paper reports them:
#
# - **R@K**, the recall at $K$: the percentage of queries whose right item has a rank of at most
#   $K$, $\ \text{R@}K = 100 \cdot \#\{i : r_i \le K\} / B$;
# - the **median rank** of $r_1, \dots, r_B$: for an even count, the mean of the two middle ranks,
#   as NumPy's `median` gives it; 1 is perfect, and lower is better.
#
# ```
#             clip 0  clip 1  clip 2  clip 3    rank
# caption 0    0.9     0.1     0.3     0.2       1
# caption 1    0.5     0.4     0.4     0.7       4    0.5, 0.4 (a tie) and 0.7 are counted ahead
# caption 2    0.2     0.3     0.6     0.1       1
# caption 3    0.8     0.2     0.1     0.3       2
# R@1 = 50.0, R@2 = 75.0, median rank = (1 + 2) / 2 = 1.5
# ```
#
# **Write** three functions:
#
# - `text_to_clip_ranks(similarity)`: `similarity` (B, B), floating point, caption $i$ against
#   clip $j$, the right clip of caption $i$ on the diagonal. Return the ranks $r_i$, (B,) int64,
#   on the device of `similarity`.
# - `recall_at(ranks, k)`: `ranks` (Q,) an integer tensor of ranks counted from 1, $Q \ge 1$;
#   `k` an int $\ge 1$. Return R@K in percent, a Python float.
# - `median_rank(ranks)`: `ranks` as above. Return their median, a Python float.
#
# - **Allowed:** comparisons, `sum`, `diagonal`, indexing, `float`, `.item()`, `torch.sort`,
#   `torch.quantile`, `numpy.median`.
# - **Not allowed:** `tfcourse.retrieval` (`text_to_clip_ranks`, `clip_to_text_ranks`,
#   `recall_at`, `median_rank`, `retrieval_metrics`; the hidden tests check).
# - **Pitfalls:** $\ge$, not $>$: ties count against the model; count from 1: the right clip
#   counts itself, so a perfect model has ranks 1, not 0; a caption ranks the clips of its row
#   (`dim=1`), not the captions of its column; R@K is a percentage, 50.0, not the fraction 0.5;
#   rank $\le K$, not $< K$; `torch.median` returns the lower of the two middle values for an even
#   count, not their mean; `torch.quantile` needs floating point; return Python floats, not
#   tensors, and int64 ranks.
#
# **Points:** self-check 1 (the matrix above, a constant one, the recall and the median of its
# ranks), hidden tests 2 (random and tied matrices, float64, $B = 1$, odd and even counts, $K$
# beyond the last rank, the types, inputs on another device (PyTorch's `meta` device)).

# %% nbgrader={"grade": false, "grade_id": "ranks", "locked": false, "schema_version": 3, "solution": true, "task": false}
def text_to_clip_ranks(similarity: torch.Tensor) -> torch.Tensor:
    """(B, B) -> (B,) int64: 1 + the wrong clips scoring at least as high as the right one."""
    ### BEGIN SOLUTION
    right = similarity.diagonal()[:, None]  # (B, 1): s_ii
    return (similarity >= right).sum(dim=1)  # the right clip counts itself: 1 + the wrong ones
    ### END SOLUTION


def recall_at(ranks: torch.Tensor, k: int) -> float:
    """R@K: the percentage of ranks at most k."""
    ### BEGIN SOLUTION
    return 100.0 * (ranks <= k).double().mean().item()
    ### END SOLUTION


def median_rank(ranks: torch.Tensor) -> float:
    """The median of the ranks; for an even count, the mean of the two middle ones."""
    ### BEGIN SOLUTION
    return torch.quantile(ranks.double(), 0.5).item()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ranks_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (1 point).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.retrieval.text_to_clip_ranks", "tfcourse.retrieval.clip_to_text_ranks",
             "tfcourse.retrieval.recall_at", "tfcourse.retrieval.median_rank",
             "tfcourse.retrieval.retrieval_metrics")
similarity = torch.tensor([[0.9, 0.1, 0.3, 0.2], [0.5, 0.4, 0.4, 0.7], [0.2, 0.3, 0.6, 0.1],
                           [0.8, 0.2, 0.1, 0.3]])
name = "text_to_clip_ranks(the (4, 4) matrix of the statement)"
with checks.forbid(*forbidden, task="Exercise 4"):
    try:
        ranks = text_to_clip_ranks(similarity)
    except NotImplementedError:
        raise
    except (RuntimeError, IndexError) as error:
        raise checks.ContractError(
            f"{name} fails: {error}. Compare each row with its diagonal entry, "
            "similarity.diagonal()[:, None], and count along the row (dim=1)") from None
assert isinstance(ranks, torch.Tensor) and ranks.shape == (4,), (
    f"{name} returned {ranks!r}: expected a tensor (B,) = (4,), one rank per caption")
assert ranks.dtype == torch.int64, (
    f"{name} has dtype {ranks.dtype}: ranks are counts, int64 (the sum of a boolean tensor)")
hints = {
    (1, 3, 1, 2): "caption 1's clip ties with clip 2 (0.4 and 0.4): ties are pessimistic, so "
                  "count the wrong clips scoring at least as high (>=), not strictly higher",
    (0, 3, 0, 1): "the ranks count from 1: the right clip counts itself, so a perfect caption "
                  "has rank 1",
    (1, 1, 1, 2): "these are the ranks of the clips among the captions of their column (dim=0): "
                  "a caption ranks the clips of its row (dim=1)",
}
got = tuple(ranks.tolist())
assert got == (1, 4, 1, 2), (
    f"{name} is {list(got)}, expected [1, 4, 1, 2]: "
    + hints.get(got, "r_i = 1 + the wrong clips j with s_ij >= s_ii, in row i"))
with checks.forbid(*forbidden, task="Exercise 4"):
    constant = text_to_clip_ranks(torch.full((3, 3), 0.5))
assert constant.tolist() == [3, 3, 3], (
    f"text_to_clip_ranks of a constant (3, 3) matrix is {constant.tolist()}, expected [3, 3, 3]:"
    " a model that scores every pair the same ranks the right clip last, not first (>=, not >)")

given = torch.tensor([1, 4, 1, 2])  # int64, the ranks of the statement's example
for k, expected in ((1, 50.0), (2, 75.0), (3, 75.0), (4, 100.0)):
    with checks.forbid(*forbidden, task="Exercise 4"):
        recall = recall_at(given, k)
    assert isinstance(recall, float), (
        f"recall_at(ranks [1, 4, 1, 2], k={k}) is a {type(recall).__name__}: return a Python "
        "float (.item(), or float(...))")
    hints = {expected / 100: "this is a fraction: R@K is a percentage, 100 times the fraction",
             100.0 * float((given < k).double().mean()):
                 "a rank equal to K counts: rank <= K, not < K"}
    assert abs(recall - expected) < 1e-4, (
        f"recall_at(ranks [1, 4, 1, 2], k={k}) is {recall}, expected {expected}: "
        + hints.get(recall, "100 times the fraction of the ranks that are at most k"))
for values, expected in (([1, 4, 1, 2], 1.5), ([3, 1, 2], 2.0), ([5, 1, 9, 2, 2, 7], 3.5)):
    with checks.forbid(*forbidden, task="Exercise 4"):
        median = median_rank(torch.tensor(values))
    assert isinstance(median, float), (
        f"median_rank(ranks {values}) is a {type(median).__name__}: return a Python float "
        "(.item(), or float(...))")
    ordered = sorted(values)
    hints = {float(ordered[(len(values) - 1) // 2]):
             "this is the lower of the two middle ranks, as torch.median gives it: for an even "
             "count the median is the mean of the two middle ranks, as NumPy's median",
             float(ordered[len(values) // 2]): "this is the upper of the two middle ranks: for "
             "an even count the median is their mean"}
    assert abs(median - expected) < 1e-9, (
        f"median_rank(ranks {values}) is {median}, expected {expected}: "
        + hints.get(median, "sort the ranks and take the middle one, or the mean of the two "
                            "middle ones"))

# %% nbgrader={"grade": true, "grade_id": "ranks_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (2 points) run when the notebook is graded. Here this cell only
# checks that the three functions run.
import torch

assert text_to_clip_ranks(torch.eye(3)).shape == (3,)
assert recall_at(torch.tensor([1, 2]), 1) == 50.0
assert median_rank(torch.tensor([1, 3])) == 2.0
### BEGIN HIDDEN TESTS
import warnings

import numpy
import torch

import tfcourse.retrieval
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(104)
    blocked = ("tfcourse.retrieval.text_to_clip_ranks", "tfcourse.retrieval.clip_to_text_ranks",
               "tfcourse.retrieval.recall_at", "tfcourse.retrieval.median_rank",
               "tfcourse.retrieval.retrieval_metrics")
    tied = torch.randint(3, (8, 8), generator=gen).double()  # many ties, in float64
    matrices = [
        ("random (6, 6)", torch.randn(6, 6, generator=gen)),
        ("random (9, 9), float64", torch.randn(9, 9, generator=gen, dtype=torch.float64)),
        ("(8, 8) of small integers, many ties, float64", tied),
        ("constant (5, 5)", torch.zeros(5, 5)),
        ("(1, 1), one caption", torch.randn(1, 1, generator=gen)),
        ("the identity (4, 4), a perfect model", torch.eye(4)),
        ("(5, 5) whose diagonal is the lowest of its row", torch.rand(5, 5, generator=gen)
         - 2 * torch.eye(5)),
    ]
    for label, similarity in matrices:
        expected = tfcourse.retrieval.text_to_clip_ranks(similarity)
        name = f"text_to_clip_ranks({label})"
        with checks.forbid(*blocked, task="Exercise 4"):
            result = text_to_clip_ranks(similarity.clone())
        assert isinstance(result, torch.Tensor), f"{name} is not a tensor"
        assert result.dtype == torch.int64, f"{name} has dtype {result.dtype}, not int64"
        assert result.tolist() == expected.tolist(), (
            f"{name} is {result.tolist()}, expected {expected.tolist()}")

    rank_sets = [
        ("[1]", torch.tensor([1])),
        ("[2, 1]", torch.tensor([2, 1])),
        ("7 random ranks", torch.randint(1, 8, (7,), generator=gen)),
        ("10 random ranks", torch.randint(1, 30, (10,), generator=gen)),
        ("[4, 4, 1, 9, 2, 6, 3, 8]", torch.tensor([4, 4, 1, 9, 2, 6, 3, 8])),
        ("[1, 1, 1, 1]", torch.tensor([1, 1, 1, 1])),
    ]
    for label, ranks in rank_sets:
        for k in (1, 2, 5, 10, 100):
            expected = tfcourse.retrieval.recall_at(ranks, k)
            name = f"recall_at(ranks {label}, k={k})"
            with checks.forbid(*blocked, task="Exercise 4"):
                result = recall_at(ranks.clone(), k)
            assert isinstance(result, float), f"{name} is a {type(result).__name__}, not a float"
            assert abs(result - expected) < 1e-4, f"{name} is {result}, expected {expected}"
        expected = float(numpy.median(ranks.numpy()))
        name = f"median_rank(ranks {label})"
        with checks.forbid(*blocked, task="Exercise 4"):
            result = median_rank(ranks.clone())
        assert isinstance(result, float), f"{name} is a {type(result).__name__}, not a float"
        assert abs(result - expected) < 1e-9, (
            f"{name} is {result}, expected {expected} (for an even count, the mean of the two "
            "middle ranks)")

    with checks.forbid(*blocked, task="Exercise 4"):  # the device of the similarities
        checks.expect_on_meta(
            lambda: text_to_clip_ranks(torch.empty(4, 4, device="meta")),
            "text_to_clip_ranks(similarity (4, 4) on the meta device)",
            "make new tensors on the device of the similarities (device=similarity.device)")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "flops_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 5: the cost of a Transformer block (3 points)
#
# To choose a model for a task, the lesson measures the course's models side by side; one of
# the measures is the number of floating-point operations (FLOPs) of a forward pass. Most of them
# are in matrix products, and PyTorch counts these: `torch.utils.flop_counter.FlopCounterMode`
# counts the matrix products that run inside it, a product of an (a, b) and a (b, c) matrix as
# $2abc$ (each of its $abc$ multiply-adds is a multiplication and an addition), and nothing
# else: normalisations, softmax, activations, biases and residual additions are not counted
# (each costs a few operations per number it touches, little beside the products).
#
# One forward pass of a pre-norm Transformer block (chapter 2, `tfcourse.EncoderLayer` with
# `norm_first=True`) on a batch of $B$ sequences of $T$ positions, with width $C$, $H$ heads and a
# feed-forward network of width $F$, multiplies:
#
# | step | matrix products | FLOPs |
# |---|---|---|
# | the projections $Q$, $K$, $V$ | three of (BT, C) by (C, C) | $3 \cdot 2BTC^2$ |
# | the scores $Q K^\top$ | per sequence and head, (T, C/H) by (C/H, T) | $2BT^2C$ |
# | the weighted sum of the values | per sequence and head, (T, T) by (T, C/H) | $2BT^2C$ |
# | the output projection | (BT, C) by (C, C) | $2BTC^2$ |
# | the feed-forward network | (BT, C) by (C, F), then (BT, F) by (F, C) | $2 \cdot 2BTCF$ |
#
# In all, $\ 2BTC\,(4C + 2F) + 4BT^2C$. The number of heads does not change it. The first part
# grows with the length $T$, the second with $T^2$: for short sequences the projections and the
# feed-forward network cost the most, and attention takes over only from a length of the order of
# the width. (A causal mask does not halve the count here: the equation computes every score,
# then masks those above the diagonal.)
#
# **Write** two functions:
#
# - `block_forward_flops(B, T, C, F)`: ints $\ge 1$. Return the FLOPs of one forward pass of the
#   block, an int: $2BTC(4C + 2F) + 4BT^2C$.
# - `quadratic_from(C, F)`: ints $\ge 1$. Return the smallest length $T$, an int, from which the
#   $T^2$ part, $4BT^2C$, is at least the rest, $2BTC(4C + 2F)$, whatever $B$. For $F = 4C$, the
#   usual width, it is $6C$: for GPT-2 small, $C = 768$, that is 4608 positions.
#
# The self-check compares your count with FlopCounterMode's, measured on `tfcourse.EncoderLayer`
# itself. It runs the block on PyTorch's `meta` device, whose tensors have shapes but no values,
# so that even a long sequence costs nothing to count; and with its attention written out
# (`self_attn.fused = False`), because FlopCounterMode does not see inside PyTorch's fused
# attention kernel on a CPU.
#
# - **Allowed:** Python's integer arithmetic (`+`, `*`, `**`, `//`).
# - **Not allowed:** measuring with `FlopCounterMode` (the hidden tests check).
# - **Pitfalls:** a multiply-add is 2 FLOPs; three projections before attention ($Q$, $K$ and
#   $V$) and one after it; two products of $T^2$ in attention (the scores and the weighted sum of
#   the values); two in the feed-forward network; keep to integers (`/` gives a float);
#   "at least": a length at which the two parts are equal counts.
#
# **Points:** self-check 1 (three shapes, against FlopCounterMode, and $F = 4C$), hidden tests 2
# (more shapes, odd sizes and $T = 1$, counts beyond $2^{53}$ that a float would round,
# `quadratic_from` with $F \ne 4C$, the types).

# %% nbgrader={"grade": false, "grade_id": "flops", "locked": false, "schema_version": 3, "solution": true, "task": false}
def block_forward_flops(B: int, T: int, C: int, F: int) -> int:
    """FLOPs of a forward pass of a pre-norm Transformer block: 2BTC(4C + 2F) + 4BT²C."""
    ### BEGIN SOLUTION
    projections = 4 * 2 * B * T * C * C  # Q, K, V and the output projection
    attention = 2 * 2 * B * T * T * C  # the scores and the weighted sum of the values
    feed_forward = 2 * 2 * B * T * C * F  # C -> F -> C
    return projections + attention + feed_forward
    ### END SOLUTION


def quadratic_from(C: int, F: int) -> int:
    """The smallest T from which the T² part, 4BT²C, is at least the rest, 2BTC(4C + 2F)."""
    ### BEGIN SOLUTION
    return 2 * C + F
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "flops_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 5 (1 point).
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("torch.utils.flop_counter.FlopCounterMode.__enter__",)


def measured_flops(B: int, T: int, C: int, F: int, heads: int = 2) -> int:
    """FlopCounterMode's count of a forward pass of tfcourse's pre-norm block, on `meta`."""
    with torch.device("meta"):
        block = tfcourse.EncoderLayer(C, heads, F, norm_first=True)
        block.self_attn.fused = False  # attention written out, so that its products are seen
        x = torch.empty(B, T, C)  # (B, T, C), shapes without values
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        block(x)
    return counter.get_total_flops()


for batch, length, width, hidden in [(1, 8, 16, 64), (2, 5, 12, 20), (3, 100, 32, 128)]:
    want = measured_flops(batch, length, width, hidden)
    name = f"block_forward_flops(B={batch}, T={length}, C={width}, F={hidden})"
    with checks.forbid(*forbidden, task="Exercise 5"):
        got = block_forward_flops(batch, length, width, hidden)
    assert isinstance(got, int) and not isinstance(got, bool), (
        f"{name} is {got!r}, a {type(got).__name__}: return an int (keep to integer arithmetic: "
        "/ gives a float)")
    tokens = batch * length  # B T
    hints = {
        want // 2: "half of it: a multiply-add counts as 2 operations, so an (a, b) by (b, c) "
                   "product costs 2abc",
        want - 2 * tokens * length * width: "one T² product is missing: the scores Q Kᵀ and "
                                            "the weighted sum of the values cost 2BT²C each",
        want - 4 * tokens * length * width: "attention's two T² products (2BT²C each) are "
                                            "missing",
        want - 4 * tokens * width * width: "the projections of K and V are missing: Q, K and V "
                                           "are three (C, C) products, and the output "
                                           "projection a fourth",
        want - 2 * tokens * width * width: "one (C, C) projection is missing: Q, K, V, and the "
                                           "output projection, four in all",
        want - 2 * tokens * width * hidden: "one product of the feed-forward network is "
                                            "missing: (C, F), then (F, C)",
    }
    assert got == want, (
        f"{name} is {got}, but FlopCounterMode counts {want} in tfcourse.EncoderLayer: "
        + hints.get(got, "2BTC(4C + 2F) + 4BT²C"))

for width in (16, 768):
    name = f"quadratic_from(C={width}, F={4 * width})"
    with checks.forbid(*forbidden, task="Exercise 5"):
        got = quadratic_from(width, 4 * width)
    assert isinstance(got, int) and not isinstance(got, bool), (
        f"{name} is {got!r}, a {type(got).__name__}: return an int (// keeps to integers)")
    hints = {6 * width + 1: "at T = 2C + F the T² part equals the rest, and the length asked "
                            "for is the smallest at which it is at least the rest (>=, not >)",
             6 * width - 1: "at T = 2C + F - 1 the T² part is still below the rest"}
    assert got == 6 * width, (
        f"{name} is {got}, expected 6C = {6 * width}: "
        + hints.get(got, "solve 4BT²C >= 2BTC(4C + 2F) for T"))

# %% nbgrader={"grade": true, "grade_id": "flops_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 5 (2 points) run when the notebook is graded. Here this cell only
# checks that block_forward_flops and quadratic_from run.
assert block_forward_flops(1, 1, 1, 1) > 0
assert quadratic_from(1, 4) > 0
### BEGIN HIDDEN TESTS
import warnings

import torch
import torch.utils.flop_counter

import tfcourse
from tfcourse import checks


def _measured_flops(batch, length, width, hidden, heads):
    with torch.device("meta"):
        block = tfcourse.EncoderLayer(width, heads, hidden, norm_first=True)
        block.self_attn.fused = False
        x = torch.empty(batch, length, width)
    with torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        block(x)
    return counter.get_total_flops()


def _quadratic_part_wins(length, width, hidden, batch=2):
    return (4 * batch * length * length * width
            >= 2 * batch * length * width * (4 * width + 2 * hidden))


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    blocked = ("torch.utils.flop_counter.FlopCounterMode.__enter__",)
    for batch, length, width, hidden, heads in [
        (1, 1, 4, 4, 1),  # T = 1
        (5, 7, 6, 10, 3),  # odd sizes
        (2, 33, 7, 9, 1),  # C odd, F < 2C
        (4, 512, 64, 256, 4),  # T > 6C: attention dominates
        (1, 3, 40, 160, 8),  # T much smaller than C
    ]:
        want = _measured_flops(batch, length, width, hidden, heads)
        name = f"block_forward_flops(B={batch}, T={length}, C={width}, F={hidden})"
        with checks.forbid(*blocked, task="Exercise 5"):
            got = block_forward_flops(batch, length, width, hidden)
        assert isinstance(got, int) and not isinstance(got, bool), (
            f"{name} is a {type(got).__name__}, not an int")
        assert got == want, f"{name} is {got}, but FlopCounterMode counts {want}"

    # counts beyond 2**53, where a float would round: integer arithmetic only
    for batch, length, width, hidden in [(256, 131072, 8192, 28672), (7, 1048583, 12289, 49157)]:
        want = (2 * batch * length * width * (4 * width + 2 * hidden)
                + 4 * batch * length * length * width)
        assert want > 2**53
        name = f"block_forward_flops(B={batch}, T={length}, C={width}, F={hidden})"
        with checks.forbid(*blocked, task="Exercise 5"):
            got = block_forward_flops(batch, length, width, hidden)
        assert isinstance(got, int) and not isinstance(got, bool), (
            f"{name} is a {type(got).__name__}, not an int")
        assert got == want, f"{name} is {got}, expected {want} (keep to integers)"

    for width, hidden in [(16, 16), (7, 3), (1024, 2816), (512, 2048), (5, 1), (3, 100)]:
        name = f"quadratic_from(C={width}, F={hidden})"
        with checks.forbid(*blocked, task="Exercise 5"):
            got = quadratic_from(width, hidden)
        assert isinstance(got, int) and not isinstance(got, bool), (
            f"{name} is a {type(got).__name__}, not an int")
        wins = _quadratic_part_wins
        assert wins(got, width, hidden) and not wins(got - 1, width, hidden), (
            f"{name} is {got}, expected {2 * width + hidden}: the smallest T with 4BT²C >= "
            "2BTC(4C + 2F)")
    return True


assert _hidden_tests()
### END HIDDEN TESTS
