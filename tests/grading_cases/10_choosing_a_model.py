"""Submissions that tests/test_grading.py grades for the assignment 10_choosing_a_model.

The mistakes are the classic ones of chapter 10: a gated embedding unit that normalises before
the gate, gates with sigmoid(z) alone or with x, normalises over the vectors or with
F.normalize's default axis, divides by a norm without epsilon or detaches it, or forgets to
transpose its weights; a mixture of the experts' similarities whose weights are not
renormalised over the streams a clip has, are equal, or come from the clip of the caption's own
row; whose missing rows leak NaN (left as they are, multiplied by the mask, masked after the
product or skipped by nansum), are zeroed in place, or whose result is transposed or made on the
default device; a ranking loss in one direction only, with the diagonal counted, the mean over
the wrong pairs, the row's match in both terms, no hinge, a fixed margin, a mask on the default
device or a float returned; ranks with optimistic ties, from 0, by column, as floats or on the
default device, a recall as a fraction, strict or a tensor, the lower middle as the median; a
cost model with one T² product, multiply-adds counted once, no K and V projections, one product
of the feed-forward network, or a length from which attention dominates that is a float, one too
far or 6C whatever F; and calls to the references (tfcourse's, and PyTorch's FlopCounterMode).
"""

from grading_cases import edit, exercises, function

NOTEBOOK = "exercises"

EXERCISES = exercises("gated", "mixture", "ranking", "ranks", "flops")

GATED = EXERCISES["gated"][1]
MIXTURE = EXERCISES["mixture"][1]
RANKING = EXERCISES["ranking"][1]
RANKS = EXERCISES["ranks"][1]
FLOPS = EXERCISES["flops"][1]


def cell(source: str) -> str:
    """A whole cell, given as it is (the cells of Exercises 4 and 5 hold several functions)."""
    return source.strip("\n")


def gated(body: str) -> str:
    return function("gated_embedding_unit(x, w1, b1, w2, b2)", body)


def mixture(body: str) -> str:
    return function("mixture_similarity(text_embeddings, clip_embeddings, logits, present)",
                    body)


def ranking(body: str) -> str:
    return function("bidirectional_ranking_loss(similarity, margin=0.2)", body)


# The right implementations, written plainly; each mistake below edits one or a few lines.
GATED_RIGHT = '''
z = x @ w1.T + b1
y = z * torch.sigmoid(z @ w2.T + b2)
return y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)
'''

MIXTURE_RIGHT = '''
blocked = logits[:, None, :].masked_fill(~present[None], float("-inf"))
weights = torch.softmax(blocked, dim=-1)
cosines = []
for m in range(len(text_embeddings)):
    g = torch.where(present[:, m, None], clip_embeddings[m], 0)
    cosines.append(text_embeddings[m] @ g.T)
cosines = torch.stack(cosines, dim=-1)
return (weights * cosines).sum(dim=-1)
'''

RANKING_RIGHT = '''
B = similarity.shape[0]
positive = similarity.diagonal()
wrong = ~torch.eye(B, dtype=torch.bool, device=similarity.device)
to_clips = (margin + similarity - positive[:, None]).clamp(min=0)
to_captions = (margin + similarity - positive[None, :]).clamp(min=0)
return (to_clips + to_captions)[wrong].sum() / B
'''

RANKS_RIGHT = '''
def text_to_clip_ranks(similarity):
    right = similarity.diagonal()[:, None]
    return (similarity >= right).sum(dim=1)


def recall_at(ranks, k):
    return 100.0 * (ranks <= k).double().mean().item()


def median_rank(ranks):
    return torch.quantile(ranks.double(), 0.5).item()
'''

FLOPS_RIGHT = '''
def block_forward_flops(B, T, C, F):
    projections = 4 * 2 * B * T * C * C
    attention = 2 * 2 * B * T * T * C
    feed_forward = 2 * 2 * B * T * C * F
    return projections + attention + feed_forward


def quadratic_from(C, F):
    return 2 * C + F
'''


# Correct code written differently from the solution: every exercise at once, three times.
ALTERNATIVE = {
    "gated": gated('''
# F.linear, and the norm clamped as F.normalize clamps it
z = F.linear(x, w1, b1)
gate = torch.sigmoid(F.linear(z, w2, b2))
y = z * gate
norm = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
return y / norm.clamp_min(1e-12)
'''),
    "mixture": mixture('''
# exp and an explicit normalisation, the largest present logit subtracted first
masked = logits[:, None, :].masked_fill(~present[None], float("-inf"))  # (Bt, Bv, M)
e = (masked - masked.amax(dim=-1, keepdim=True)).exp()  # 0 where a stream is missing
weights = e / e.sum(dim=-1, keepdim=True)
total = 0
for m, (f, g) in enumerate(zip(text_embeddings, clip_embeddings)):
    g = g.masked_fill(~present[:, m, None], 0.0)
    total = total + weights[..., m] * (f @ g.T)
return total
'''),
    "ranking": ranking('''
# F.relu, and the diagonal's terms set to 0 by masked_fill
B = similarity.shape[0]
s_ii = similarity.diagonal()
rows = F.relu(margin - s_ii[:, None] + similarity)
columns = F.relu(margin - s_ii[None, :] + similarity)
diagonal = torch.eye(B, dtype=torch.bool, device=similarity.device)
return (rows + columns).masked_fill(diagonal, 0.0).sum() / B
'''),
    "ranks": cell('''
import numpy as np


def text_to_clip_ranks(similarity):
    # caption by caption: the clips scoring at least as high as the right one, itself included
    return torch.stack([(similarity[i] >= similarity[i, i]).sum()
                        for i in range(similarity.shape[0])])


def recall_at(ranks, k):
    hits = int((ranks <= k).sum())
    return 100.0 * hits / len(ranks)


def median_rank(ranks):
    return float(np.median(ranks.cpu().numpy()))
'''),
    "flops": cell('''
def block_forward_flops(B, T, C, F):
    tokens = B * T
    return 2 * tokens * C * (4 * C + 2 * F) + 4 * tokens * T * C


def quadratic_from(C, F):
    # the first length at which the T² part catches up, found by counting
    T = 1
    while 4 * T * T * C < 2 * T * C * (4 * C + 2 * F):
        T += 1
    return T
'''),
}

ALTERNATIVE_2 = {
    "gated": gated('''
# einsum, and the length compared with a tensor of epsilons
z = torch.einsum("...d,ed->...e", x, w1) + b1
y = z * torch.sigmoid(torch.einsum("...d,ed->...e", z, w2) + b2)
length = y.pow(2).sum(dim=-1, keepdim=True).sqrt()
return y / torch.maximum(length, torch.full_like(length, 1e-12))
'''),
    "mixture": mixture('''
# each stream added at the clips that have it only (index_add), the weights by torch.where
Bt, Bv = logits.shape[0], present.shape[0]
weights = torch.where(present[None], logits[:, None, :], float("-inf")).softmax(dim=-1)
out = logits.new_zeros(Bt, Bv)
for m in range(logits.shape[1]):
    rows = present[:, m].nonzero().flatten()  # the clips that have stream m
    if rows.numel() == 0:
        continue
    cos = text_embeddings[m] @ clip_embeddings[m][rows].T  # (Bt, n_m)
    out = out.index_add(1, rows, weights[:, rows, m] * cos)
return out
'''),
    "ranking": ranking('''
# the columns as the rows of the transpose; the diagonal zeroed by a float mask
B = len(similarity)
diag = torch.diagonal(similarity)
off = 1 - torch.eye(B, dtype=similarity.dtype, device=similarity.device)
captions = torch.clamp(margin + similarity - diag.unsqueeze(1), min=0)
clips = torch.clamp(margin + similarity.T - diag.unsqueeze(1), min=0)
return ((captions + clips) * off).sum() / B
'''),
    "ranks": cell('''
def text_to_clip_ranks(similarity):
    behind = similarity - similarity.diagonal()[:, None]  # >= 0: at least as high
    return (behind >= 0).long().sum(dim=-1)


def recall_at(ranks, k):
    return torch.mean((ranks <= k).float()).item() * 100


def median_rank(ranks):
    ordered = ranks.sort().values
    n = len(ordered)
    return (ordered[(n - 1) // 2].item() + ordered[n // 2].item()) / 2
'''),
    "flops": cell('''
def block_forward_flops(B, T, C, F):
    def matmul(a, b, c):  # (a, b) @ (b, c)
        return 2 * a * b * c

    tokens = B * T
    total = 3 * matmul(tokens, C, C)  # Q, K, V
    total += B * matmul(T, C, T)  # the scores, all heads together
    total += B * matmul(T, T, C)  # the weighted sum of the values
    total += matmul(tokens, C, C)  # the output projection
    total += matmul(tokens, C, F) + matmul(tokens, F, C)  # the feed-forward network
    return total


def quadratic_from(C, F):
    return -(-(4 * C + 2 * F) // 2)  # the ceiling of (4C + 2F) / 2
'''),
}

MISSING_ROWS = "g = torch.where(present[:, m, None], clip_embeddings[m], 0)"
RANKS_BODY = "right = similarity.diagonal()[:, None]\n    return (similarity >= right).sum(dim=1)"

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    "alternative_2": {"replace": ALTERNATIVE_2, "loses": None, "fails": ()},
    # ---- exercise 1, the gated embedding unit
    "gated_normalised_before_gate": {  # y is no longer of unit length
        "replace": {"gated": edit(GATED_RIGHT, gated, (
            "z = x @ w1.T + b1", "z = F.normalize(x @ w1.T + b1, dim=-1)"), (
            "return y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)", "return y"))},
        "loses": "gated", "fails": GATED,
    },
    "gated_gate_without_w2": {  # sigmoid(z) * z, a SiLU
        "replace": {"gated": edit(GATED_RIGHT, gated, ("torch.sigmoid(z @ w2.T + b2)",
                                                       "torch.sigmoid(z)"))},
        "loses": "gated", "fails": GATED,
    },
    "gated_gate_from_x": {  # fails when D != E, wrong when D == E
        "replace": {"gated": edit(GATED_RIGHT, gated, ("torch.sigmoid(z @ w2.T + b2)",
                                                       "torch.sigmoid(x @ w2.T + b2)"))},
        "loses": "gated", "fails": GATED,
    },
    "gated_normalised_over_vectors": {
        "replace": {"gated": edit(GATED_RIGHT, gated, ("y.norm(dim=-1, keepdim=True)",
                                                       "y.norm(dim=0, keepdim=True)"))},
        "loses": "gated", "fails": GATED,
    },
    "gated_normalize_default_dim": {  # dim=1: right for (N, D) only
        "replace": {"gated": edit(GATED_RIGHT, gated, (
            "return y / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)",
            "return F.normalize(y)"))},
        "loses": "gated", "fails": ("gated_hidden",),
    },
    "gated_without_epsilon": {  # a zero row becomes NaN
        "replace": {"gated": edit(GATED_RIGHT, gated, (
            "y.norm(dim=-1, keepdim=True).clamp_min(1e-12)", "y.norm(dim=-1, keepdim=True)"))},
        "loses": "gated", "fails": ("gated_hidden",),
    },
    "gated_norm_detached": {  # the right values, the wrong gradients
        "replace": {"gated": edit(GATED_RIGHT, gated, (
            "y.norm(dim=-1, keepdim=True)", "y.norm(dim=-1, keepdim=True).detach()"))},
        "loses": "gated", "fails": ("gated_hidden",),
    },
    "gated_weights_not_transposed": {  # x @ w1 with w1 (E, D)
        "replace": {"gated": edit(GATED_RIGHT, gated, ("z = x @ w1.T + b1", "z = x @ w1 + b1"),
                                  ("z @ w2.T", "z @ w2"))},
        "loses": "gated", "fails": GATED,
    },
    "gated_calls_tfcourse": {
        "replace": {"gated": gated('''
import tfcourse.mee

unit = tfcourse.mee.GatedEmbeddingUnit(w1.shape[1], w1.shape[0]).to(x.dtype)
with torch.no_grad():
    unit.linear.weight.copy_(w1)
    unit.linear.bias.copy_(b1)
    unit.gating.gate.weight.copy_(w2)
    unit.gating.gate.bias.copy_(b2)
return unit(x)
''')},
        "loses": "gated", "fails": GATED,
    },
    # ---- exercise 2, the similarity mixed over the streams
    "mixture_not_renormalised": {  # a softmax over all streams, the missing ones set to 0
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            "blocked = logits[:, None, :].masked_fill(~present[None], float(\"-inf\"))\n"
            "weights = torch.softmax(blocked, dim=-1)",
            "weights = torch.softmax(logits, dim=-1)[:, None, :] * present[None]"))},
        "loses": "mixture", "fails": MIXTURE,
    },
    "mixture_uniform_weights": {  # the caption's logits unused
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            "blocked = logits[:, None, :].masked_fill(~present[None], float(\"-inf\"))\n"
            "weights = torch.softmax(blocked, dim=-1)",
            "weights = (present / present.sum(dim=-1, keepdim=True)).to(logits.dtype)[None]"))},
        "loses": "mixture", "fails": MIXTURE,
    },
    "mixture_weights_of_the_diagonal_clip": {  # caption i weighted by clip i's streams
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            "blocked = logits[:, None, :].masked_fill(~present[None], float(\"-inf\"))",
            "blocked = logits.masked_fill(~present, float(\"-inf\"))[:, None, :]"))},
        "loses": "mixture", "fails": MIXTURE,
    },
    "mixture_nan_leaks": {  # the missing rows as they are: 0 * NaN
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (MISSING_ROWS,
                                                             "g = clip_embeddings[m]"))},
        "loses": "mixture", "fails": MIXTURE,
    },
    "mixture_rows_multiplied_by_mask": {  # NaN * 0 is NaN
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            MISSING_ROWS, "g = clip_embeddings[m] * present[:, m, None]"))},
        "loses": "mixture", "fails": MIXTURE,
    },
    "mixture_masked_after_product": {  # the right values; NaN gradients to the captions
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            MISSING_ROWS + "\n    cosines.append(text_embeddings[m] @ g.T)",
            "cos = text_embeddings[m] @ clip_embeddings[m].T\n"
            "    cosines.append(torch.where(present[None, :, m], cos, 0))"))},
        "loses": "mixture", "fails": ("mixture_hidden",),
    },
    "mixture_nansum": {  # the right values; NaN gradients to the logits
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            MISSING_ROWS, "g = clip_embeddings[m]"), (
            "return (weights * cosines).sum(dim=-1)",
            "return (weights * cosines).nansum(dim=-1)"))},
        "loses": "mixture", "fails": ("mixture_hidden",),
    },
    "mixture_zeroed_in_place": {  # writes into the caller's tensors; fails on leaves
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            MISSING_ROWS, "g = clip_embeddings[m]\n    g[~present[:, m]] = 0.0"))},
        "loses": "mixture", "fails": ("mixture_hidden",),
    },
    "mixture_transposed": {  # (Bv, Bt)
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            "return (weights * cosines).sum(dim=-1)", "return (weights * cosines).sum(dim=-1).T"))},
        "loses": "mixture", "fails": MIXTURE,
    },
    "mixture_on_the_default_device": {  # right on the CPU; inputs on a GPU fail
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            "cosines = []\n"
            "for m in range(len(text_embeddings)):\n"
            "    " + MISSING_ROWS + "\n"
            "    cosines.append(text_embeddings[m] @ g.T)\n"
            "cosines = torch.stack(cosines, dim=-1)\n"
            "return (weights * cosines).sum(dim=-1)",
            "out = torch.zeros(logits.shape[0], present.shape[0], dtype=logits.dtype)\n"
            "for m in range(len(text_embeddings)):\n"
            "    " + MISSING_ROWS + "\n"
            "    out = out + weights[..., m] * (text_embeddings[m] @ g.T)\n"
            "return out"))},
        "loses": "mixture", "fails": ("mixture_hidden",),
    },
    "mixture_calls_tfcourse": {
        "replace": {"mixture": edit(MIXTURE_RIGHT, mixture, (
            "blocked = logits[:, None, :].masked_fill(~present[None], float(\"-inf\"))\n"
            "weights = torch.softmax(blocked, dim=-1)",
            "import tfcourse.mee\n"
            "weights = tfcourse.mee.mixture_weights(logits, present)"))},
        "loses": "mixture", "fails": MIXTURE,
    },
    # ---- exercise 3, the bidirectional ranking loss
    "ranking_one_direction": {  # the captions against the clips only
        "replace": {"ranking": edit(RANKING_RIGHT, ranking, (
            "return (to_clips + to_captions)[wrong].sum() / B",
            "return to_clips[wrong].sum() / B"))},
        "loses": "ranking", "fails": RANKING,
    },
    "ranking_diagonal_included": {  # 2m more per pair
        "replace": {"ranking": edit(RANKING_RIGHT, ranking, (
            "return (to_clips + to_captions)[wrong].sum() / B",
            "return (to_clips + to_captions).sum() / B"))},
        "loses": "ranking", "fails": RANKING,
    },
    "ranking_mean_over_wrong_pairs": {
        "replace": {"ranking": edit(RANKING_RIGHT, ranking, (
            "[wrong].sum() / B", "[wrong].sum() / (B * (B - 1))"))},
        "loses": "ranking", "fails": RANKING,
    },
    "ranking_row_match_twice": {  # positive[:, None] in both terms
        "replace": {"ranking": edit(RANKING_RIGHT, ranking, (
            "to_captions = (margin + similarity - positive[None, :])",
            "to_captions = (margin + similarity - positive[:, None])"))},
        "loses": "ranking", "fails": RANKING,
    },
    "ranking_without_hinge": {
        "replace": {"ranking": edit(RANKING_RIGHT, ranking, (
            "to_clips = (margin + similarity - positive[:, None]).clamp(min=0)",
            "to_clips = margin + similarity - positive[:, None]"), (
            "to_captions = (margin + similarity - positive[None, :]).clamp(min=0)",
            "to_captions = margin + similarity - positive[None, :]"))},
        "loses": "ranking", "fails": RANKING,
    },
    "ranking_margin_fixed": {  # right for the default margin only
        "replace": {"ranking": edit(RANKING_RIGHT, ranking, (
            "to_clips = (margin +", "to_clips = (0.2 +"), (
            "to_captions = (margin +", "to_captions = (0.2 +"))},
        "loses": "ranking", "fails": ("ranking_hidden",),
    },
    "ranking_mask_on_the_default_device": {  # right on the CPU; similarities on a GPU fail
        "replace": {"ranking": edit(RANKING_RIGHT, ranking, (
            "return (to_clips + to_captions)[wrong].sum() / B",
            "return ((to_clips + to_captions) * (1 - torch.eye(B))).sum() / B"))},
        "loses": "ranking", "fails": ("ranking_hidden",),
    },
    "ranking_returns_a_float": {
        "replace": {"ranking": edit(RANKING_RIGHT, ranking, (
            "return (to_clips + to_captions)[wrong].sum() / B",
            "return (to_clips + to_captions)[wrong].sum().item() / B"))},
        "loses": "ranking", "fails": RANKING,
    },
    "ranking_calls_tfcourse": {
        "replace": {"ranking": ranking('''
import tfcourse.mee

return tfcourse.mee.ranking_loss(similarity, margin)
''')},
        "loses": "ranking", "fails": RANKING,
    },
    # ---- exercise 4, ranks, recall and the median rank
    "ranks_optimistic_ties": {  # a constant model ranks every clip first
        "replace": {"ranks": edit(RANKS_RIGHT, cell, (
            "return (similarity >= right).sum(dim=1)",
            "return 1 + (similarity > right).sum(dim=1)"))},
        "loses": "ranks", "fails": RANKS,
    },
    "ranks_from_zero": {
        "replace": {"ranks": edit(RANKS_RIGHT, cell, (
            "return (similarity >= right).sum(dim=1)",
            "return (similarity >= right).sum(dim=1) - 1"))},
        "loses": "ranks", "fails": RANKS,
    },
    "ranks_by_column": {  # the clips ranking the captions
        "replace": {"ranks": edit(RANKS_RIGHT, cell, (
            RANKS_BODY,
            "right = similarity.diagonal()[None, :]\n"
            "    return (similarity >= right).sum(dim=0)"))},
        "loses": "ranks", "fails": RANKS,
    },
    "ranks_as_floats": {
        "replace": {"ranks": edit(RANKS_RIGHT, cell, (
            "return (similarity >= right).sum(dim=1)",
            "return (similarity >= right).sum(dim=1).float()"))},
        "loses": "ranks", "fails": RANKS,
    },
    "ranks_on_the_default_device": {  # right on the CPU; similarities on a GPU fail
        "replace": {"ranks": edit(RANKS_RIGHT, cell, (
            RANKS_BODY,
            "B = similarity.shape[0]\n"
            "    ranks = torch.ones(B, dtype=torch.int64)\n"
            "    for j in range(B):\n"
            "        wrong = torch.arange(B) != j\n"
            "        ranks += (similarity[:, j] >= similarity.diagonal()) & wrong\n"
            "    return ranks"))},
        "loses": "ranks", "fails": ("ranks_hidden",),
    },
    "recall_as_fraction": {
        "replace": {"ranks": edit(RANKS_RIGHT, cell, (
            "return 100.0 * (ranks <= k).double().mean().item()",
            "return (ranks <= k).double().mean().item()"))},
        "loses": "ranks", "fails": RANKS,
    },
    "recall_strict": {  # rank < K
        "replace": {"ranks": edit(RANKS_RIGHT, cell, ("(ranks <= k)", "(ranks < k)"))},
        "loses": "ranks", "fails": RANKS,
    },
    "recall_returns_a_tensor": {
        "replace": {"ranks": edit(RANKS_RIGHT, cell, (
            "return 100.0 * (ranks <= k).double().mean().item()",
            "return 100.0 * (ranks <= k).double().mean()"))},
        "loses": "ranks", "fails": RANKS,
    },
    "median_lower_middle": {  # torch.median for an even count
        "replace": {"ranks": edit(RANKS_RIGHT, cell, (
            "return torch.quantile(ranks.double(), 0.5).item()",
            "return float(ranks.median())"))},
        "loses": "ranks", "fails": RANKS,
    },
    "ranks_call_tfcourse": {
        "replace": {"ranks": edit(RANKS_RIGHT, cell, (
            RANKS_BODY,
            "from tfcourse import retrieval\n\n"
            "    return retrieval.text_to_clip_ranks(similarity)"))},
        "loses": "ranks", "fails": RANKS,
    },
    # ---- exercise 5, the cost of a Transformer block
    "flops_one_square_product": {  # the scores only, not the weighted sum of the values
        "replace": {"flops": edit(FLOPS_RIGHT, cell, ("attention = 2 * 2 * B * T * T * C",
                                                      "attention = 2 * B * T * T * C"))},
        "loses": "flops", "fails": FLOPS,
    },
    "flops_multiply_add_as_one": {
        "replace": {"flops": edit(FLOPS_RIGHT, cell, (
            "projections = 4 * 2 * B * T * C * C", "projections = 4 * B * T * C * C"), (
            "attention = 2 * 2 * B * T * T * C", "attention = 2 * B * T * T * C"), (
            "feed_forward = 2 * 2 * B * T * C * F", "feed_forward = 2 * B * T * C * F"))},
        "loses": "flops", "fails": FLOPS,
    },
    "flops_without_k_and_v": {  # Q and the output projection only
        "replace": {"flops": edit(FLOPS_RIGHT, cell, ("projections = 4 * 2 * B * T * C * C",
                                                      "projections = 2 * 2 * B * T * C * C"))},
        "loses": "flops", "fails": FLOPS,
    },
    "flops_one_feed_forward_product": {
        "replace": {"flops": edit(FLOPS_RIGHT, cell, ("feed_forward = 2 * 2 * B * T * C * F",
                                                      "feed_forward = 2 * B * T * C * F"))},
        "loses": "flops", "fails": FLOPS,
    },
    "quadratic_true_division": {  # (4C + 2F) / 2, a float
        "replace": {"flops": edit(FLOPS_RIGHT, cell, ("return 2 * C + F",
                                                      "return (4 * C + 2 * F) / 2"))},
        "loses": "flops", "fails": FLOPS,
    },
    "quadratic_one_too_far": {  # the T² part strictly above the rest
        "replace": {"flops": edit(FLOPS_RIGHT, cell, ("return 2 * C + F",
                                                      "return 2 * C + F + 1"))},
        "loses": "flops", "fails": FLOPS,
    },
    "quadratic_six_C": {  # right for F = 4C only
        "replace": {"flops": edit(FLOPS_RIGHT, cell, ("return 2 * C + F", "return 6 * C"))},
        "loses": "flops", "fails": ("flops_hidden",),
    },
    "flops_measured": {  # PyTorch's count of tfcourse's block, not a formula
        "replace": {"flops": edit(FLOPS_RIGHT, cell, (
            "    projections = 4 * 2 * B * T * C * C\n"
            "    attention = 2 * 2 * B * T * T * C\n"
            "    feed_forward = 2 * 2 * B * T * C * F\n"
            "    return projections + attention + feed_forward",
            "    from torch.utils.flop_counter import FlopCounterMode\n\n"
            "    with torch.device(\"meta\"):\n"
            "        block = tfcourse.EncoderLayer(C, 1, F, norm_first=True)\n"
            "        block.self_attn.fused = False\n"
            "        x = torch.empty(B, T, C)\n"
            "    with torch.no_grad(), FlopCounterMode(display=False) as counter:\n"
            "        block(x)\n"
            "    return counter.get_total_flops()"))},
        "loses": "flops", "fails": FLOPS,
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"ranking": '''
while True:
    pass
'''},
        "loses": "ranking", "fails": RANKING, "times_out": True,
    },
    "kernel_exits": {"replace": {"mixture": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
