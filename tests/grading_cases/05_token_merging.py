"""Submissions that tests/test_grading.py grades for the assignment 05_token_merging.

The mistakes are the classic ones of chapter 5: a matching by the plain dot product instead of
the cosine similarity, that keeps the least similar edges, splits the tokens into halves instead
of alternately, merges the class token, protects it with 0 instead of −∞ (a kept edge can have a
negative cosine), draws the edges from B to A, takes the best pairs of the whole similarity
matrix (one A token twice), returns positions instead of indices, shifts the A indices by one,
merges more than half the tokens (r not cut, or cut to ⌊T/2⌋), normalises its input in place or
matches the first image only; a merge by a plain mean, by the count instead of the sizes, not
divided, with the sizes not added, with several A tokens into one B token that overwrite each
other, the B tokens first, the merged A tokens left in, writing into its input, accumulating in
float32 or weighting in float32 (a float16 merge comes out float32); proportional attention with
s instead of log s, log s along the queries or before the scaling, no sizes at all, sizes on the
values or after the softmax, the first image's sizes for all, a wrong scale, or each key
repeated s times (right for whole sizes only); token counts without the cut, cut against the
first layer only or to ⌊T/2⌋, without T_0, or returned as a tensor instead of a list of ints; and
calls to the reference or to PyTorch's fused attention.
"""

from grading_cases import edit, exercises, function

NOTEBOOK = "exercises"

EXERCISES = exercises("match", "merge", "attention", "counts")

MATCH = EXERCISES["match"][1]
MERGE = EXERCISES["merge"][1]
ATTENTION = EXERCISES["attention"][1]
COUNTS = EXERCISES["counts"][1]


def match(body: str) -> str:
    return function("bipartite_match(metric, r)", body)


def merge(body: str) -> str:
    return function("merge_weighted(x, size, src, dst)", body)


def attention(body: str) -> str:
    return function("proportional_attention(q, k, v, size)", body)


def counts(body: str) -> str:
    return function("token_counts(num_tokens, schedule)", body)


# The right implementations, written plainly; each mistake below edits one or a few lines.
MATCH_RIGHT = '''
T = metric.shape[1]
r = min(r, (T - 1) // 2)
unit = metric / metric.norm(dim=-1, keepdim=True)
scores = unit[:, ::2] @ unit[:, 1::2].transpose(1, 2)
scores[:, 0] = float("-inf")
best, nearest = scores.max(dim=-1)
src = best.argsort(dim=-1, descending=True)[:, :r]
return src, nearest.gather(1, src)
'''

MERGE_RIGHT = '''
B, T, C = x.shape
r = src.shape[1]
if r == 0:
    return x, size
rows = torch.arange(B).unsqueeze(1).expand(B, r)
weight = size
a_x, b_x = (x * weight)[:, ::2], (x * weight)[:, 1::2]
a_s, b_s = size[:, ::2], size[:, 1::2]
a_w, b_w = weight[:, ::2], weight[:, 1::2]
b_x = b_x.index_put((rows, dst), a_x[rows, src], accumulate=True)
b_s = b_s.index_put((rows, dst), a_s[rows, src], accumulate=True)
b_w = b_w.index_put((rows, dst), a_w[rows, src], accumulate=True)
keep = torch.ones(B, a_x.shape[1], dtype=torch.bool)
keep[rows, src] = False
merged_x = torch.cat([a_x[keep].view(B, -1, C), b_x], dim=1)
merged_s = torch.cat([a_s[keep].view(B, -1, 1), b_s], dim=1)
merged_w = torch.cat([a_w[keep].view(B, -1, 1), b_w], dim=1)
return merged_x / merged_w, merged_s
'''

ATTENTION_RIGHT = '''
scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
bias = size.log().squeeze(-1)[:, None, None, :]
return torch.softmax(scores + bias, dim=-1) @ v
'''

COUNTS_RIGHT = '''
counts = [num_tokens]
for r in schedule:
    counts.append(counts[-1] - min(r, (counts[-1] - 1) // 2))
return counts
'''


# Correct code written differently from the solution: every exercise at once.
ALTERNATIVE = {
    "match": match('''
# the class token left out by slicing (A tokens 1, 2, ...), cosines by F.cosine_similarity, the
# best edges by topk; 1 added back to the A indices
tokens = metric.shape[1]
count = min(r, (tokens - 1) // 2)
patches_a = metric[:, 2::2]  # (B, T_A - 1, D')
set_b = metric[:, 1::2]  # (B, T_B, D')
sim = F.cosine_similarity(patches_a.unsqueeze(2), set_b.unsqueeze(1), dim=-1)
edge_value, edge_end = sim.max(dim=2)  # (B, T_A - 1)
chosen = edge_value.topk(count, dim=1).indices  # (B, r')
return chosen + 1, torch.gather(edge_end, 1, chosen)
'''),
    "merge": merge('''
# one image at a time: the list of input positions of each output token, then a weighted mean
if src.shape[1] == 0:
    return x, size
out_x, out_s = [], []
for b in range(x.shape[0]):
    gone = set(src[b].tolist())
    groups = [[p] for p in range(0, x.shape[1], 2) if p // 2 not in gone]
    first_b = len(groups)
    groups += [[p] for p in range(1, x.shape[1], 2)]
    for i, j in zip(src[b].tolist(), dst[b].tolist()):
        groups[first_b + j].append(2 * i)
    s = torch.stack([size[b, g].sum(dim=0) for g in groups])  # (T - r, 1)
    total = torch.stack([(size[b, g] * x[b, g]).sum(dim=0) for g in groups])  # (T - r, C)
    out_x.append(total / s)
    out_s.append(s)
return torch.stack(out_x), torch.stack(out_s)
'''),
    "attention": attention('''
# e^(z + log s) = s e^z: the softmax written out, each key's weight multiplied by its size
logits = torch.einsum("bhtd,bhsd->bhts", q, k) / q.shape[-1] ** 0.5
stable = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
w = stable * size.transpose(1, 2).unsqueeze(1)  # (B, 1, 1, S)
w = w / w.sum(dim=-1, keepdim=True)
return torch.einsum("bhts,bhsd->bhtd", w, v)
'''),
    "counts": counts('''
import itertools

step = lambda left, r: left - min(r, (left - 1) // 2)  # noqa: E731
return list(itertools.accumulate(schedule, step, initial=num_tokens))
'''),
}

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    # ---- exercise 1, bipartite soft matching
    "match_dot_product": {  # long vectors win
        "replace": {"match": edit(MATCH_RIGHT, match, (
            "unit = metric / metric.norm(dim=-1, keepdim=True)", "unit = metric"))},
        "loses": "match", "fails": MATCH,
    },
    "match_least_similar": {
        "replace": {"match": edit(MATCH_RIGHT, match, ("descending=True", "descending=False"))},
        "loses": "match", "fails": MATCH,
    },
    "match_halves": {  # A the first half of the tokens, B the second
        "replace": {"match": edit(MATCH_RIGHT, match, (
            "unit[:, ::2] @ unit[:, 1::2]", "unit[:, :(T + 1) // 2] @ unit[:, (T + 1) // 2:]"))},
        "loses": "match", "fails": MATCH,
    },
    "match_class_token_merged": {
        "replace": {"match": edit(MATCH_RIGHT, match, ('scores[:, 0] = float("-inf")\n', ""))},
        "loses": "match", "fails": MATCH,
    },
    "match_edges_from_b": {  # each B token's best A token
        "replace": {"match": edit(MATCH_RIGHT, match, (
            "best, nearest = scores.max(dim=-1)\n"
            "src = best.argsort(dim=-1, descending=True)[:, :r]\n"
            "return src, nearest.gather(1, src)",
            "best, nearest = scores.max(dim=1)\n"
            "dst = best.argsort(dim=-1, descending=True)[:, :r]\n"
            "return nearest.gather(1, dst), dst"))},
        "loses": "match", "fails": MATCH,
    },
    "match_best_pairs_overall": {  # the r largest similarities: an A token can merge twice
        "replace": {"match": edit(MATCH_RIGHT, match, (
            "best, nearest = scores.max(dim=-1)\n"
            "src = best.argsort(dim=-1, descending=True)[:, :r]\n"
            "return src, nearest.gather(1, src)",
            "top = scores.flatten(1).topk(r, dim=-1).indices\n"
            "return top // scores.shape[2], top % scores.shape[2]"))},
        "loses": "match", "fails": MATCH,
    },
    "match_positions_not_indices": {
        "replace": {"match": edit(MATCH_RIGHT, match, (
            "return src, nearest.gather(1, src)",
            "return 2 * src, 2 * nearest.gather(1, src) + 1"))},
        "loses": "match", "fails": MATCH,
    },
    "match_class_token_sliced_off_without_the_shift": {  # A indices one too small
        "replace": {"match": edit(MATCH_RIGHT, match, (
            "unit[:, ::2] @", "unit[:, 2::2] @"), ('scores[:, 0] = float("-inf")\n', ""))},
        "loses": "match", "fails": MATCH,
    },
    "match_class_token_protected_with_zero": {  # 0 is not -inf: cosines can be negative
        "replace": {"match": edit(MATCH_RIGHT, match, ('scores[:, 0] = float("-inf")',
                                                       "scores[:, 0] = 0"))},
        "loses": "match", "fails": ("match_hidden",),
    },
    "match_r_not_cut": {  # r = 100 takes the class token's -inf edge too
        "replace": {"match": edit(MATCH_RIGHT, match, ("r = min(r, (T - 1) // 2)\n", ""))},
        "loses": "match", "fails": MATCH,
    },
    "match_r_cut_to_half_of_all_tokens": {  # ⌊T/2⌋: the class token merges when T is even
        "replace": {"match": edit(MATCH_RIGHT, match, ("(T - 1) // 2", "T // 2"))},
        "loses": "match", "fails": ("match_hidden",),
    },
    "match_normalises_in_place": {  # the caller's metric changes
        "replace": {"match": edit(MATCH_RIGHT, match, (
            "unit = metric / metric.norm(dim=-1, keepdim=True)",
            "metric /= metric.norm(dim=-1, keepdim=True)\nunit = metric"))},
        "loses": "match", "fails": MATCH,
    },
    "match_first_image_for_all": {  # the edges of batch element 0 for every element
        "replace": {"match": edit(MATCH_RIGHT, match, (
            "best, nearest = scores.max(dim=-1)\n"
            "src = best.argsort(dim=-1, descending=True)[:, :r]\n"
            "return src, nearest.gather(1, src)",
            "best, nearest = scores[0].max(dim=-1)\n"
            "src = best.argsort(descending=True)[:r]\n"
            "B = metric.shape[0]\n"
            "return src.expand(B, -1), nearest[src].expand(B, -1)"))},
        "loses": "match", "fails": MATCH,
    },
    "match_calls_tfcourse": {
        "replace": {"match": match('''
import tfcourse.tome

found = tfcourse.tome.bipartite_soft_matching(metric, r)
return found.src // 2, found.dst // 2
''')},
        "loses": "match", "fails": MATCH,
    },
    # ---- exercise 2, size-weighted merging
    "merge_plain_mean": {  # right only while every size is 1
        "replace": {"merge": edit(MERGE_RIGHT, merge, ("weight = size",
                                                       "weight = torch.ones_like(size)"))},
        "loses": "merge", "fails": MERGE,
    },
    "merge_divided_by_the_count": {  # Σ s_i x_i / n
        "replace": {"merge": edit(MERGE_RIGHT, merge, (
            "weight = size", "weight = torch.ones_like(size)"), (
            "(x * weight)[:, ::2], (x * weight)[:, 1::2]", "(x * size)[:, ::2], (x * size)[:, 1::2]"
        ))},
        "loses": "merge", "fails": MERGE,
    },
    "merge_not_divided": {  # Σ s_i x_i
        "replace": {"merge": edit(MERGE_RIGHT, merge, ("return merged_x / merged_w, merged_s",
                                                       "return merged_x, merged_s"))},
        "loses": "merge", "fails": MERGE,
    },
    "merge_sizes_not_added": {  # each B token keeps its own size
        "replace": {"merge": edit(MERGE_RIGHT, merge, (
            "b_s = b_s.index_put((rows, dst), a_s[rows, src], accumulate=True)\n", ""))},
        "loses": "merge", "fails": MERGE,
    },
    "merge_duplicates_overwrite": {  # += through an index: one A token per B token survives
        "replace": {"merge": edit(MERGE_RIGHT, merge, (
            "b_x = b_x.index_put((rows, dst), a_x[rows, src], accumulate=True)",
            "b_x[rows, dst] += a_x[rows, src]"), (
            "b_s = b_s.index_put((rows, dst), a_s[rows, src], accumulate=True)",
            "b_s = b_s.clone()\nb_s[rows, dst] += a_s[rows, src]"), (
            "b_w = b_w.index_put((rows, dst), a_w[rows, src], accumulate=True)",
            "b_w = b_w.clone()\nb_w[rows, dst] += a_w[rows, src]"))},
        "loses": "merge", "fails": MERGE,
    },
    "merge_b_tokens_first": {  # the class token is no longer first
        "replace": {"merge": edit(MERGE_RIGHT, merge, (
            "torch.cat([a_x[keep].view(B, -1, C), b_x], dim=1)",
            "torch.cat([b_x, a_x[keep].view(B, -1, C)], dim=1)"), (
            "torch.cat([a_s[keep].view(B, -1, 1), b_s], dim=1)",
            "torch.cat([b_s, a_s[keep].view(B, -1, 1)], dim=1)"), (
            "torch.cat([a_w[keep].view(B, -1, 1), b_w], dim=1)",
            "torch.cat([b_w, a_w[keep].view(B, -1, 1)], dim=1)"))},
        "loses": "merge", "fails": MERGE,
    },
    "merge_merged_a_tokens_kept": {  # T tokens out: nothing removed
        "replace": {"merge": edit(MERGE_RIGHT, merge, ("keep[rows, src] = False\n", ""))},
        "loses": "merge", "fails": MERGE,
    },
    "merge_writes_into_x": {  # the caller's tokens are multiplied by their sizes
        "replace": {"merge": edit(MERGE_RIGHT, merge, (
            "a_x, b_x = (x * weight)[:, ::2], (x * weight)[:, 1::2]",
            "x.mul_(weight)\na_x, b_x = x[:, ::2], x[:, 1::2]"))},
        "loses": "merge", "fails": MERGE,
    },
    "merge_accumulates_in_float32": {  # right in float32; index_put of float64 into float32 raises
        "replace": {"merge": edit(MERGE_RIGHT, merge, (
            "b_s = b_s.index_put((rows, dst), a_s[rows, src], accumulate=True)",
            "b_s = b_s + torch.zeros(B, b_s.shape[1], 1).index_put((rows, dst), a_s[rows, src], "
            "accumulate=True)"))},
        "loses": "merge", "fails": ("merge_hidden",),
    },
    "merge_weights_in_float32": {  # right in float32 and float64; float16 comes out float32
        "replace": {"merge": edit(MERGE_RIGHT, merge, ("weight = size", "weight = size.float()"))},
        "loses": "merge", "fails": ("merge_hidden",),
    },
    "merge_calls_tfcourse": {
        "replace": {"merge": merge('''
import tfcourse.tome

B, T, _ = x.shape
r = src.shape[1]
half = (T + 1) // 2
rows = torch.arange(B).unsqueeze(1)
keep = torch.ones(B, half, dtype=torch.bool)
keep[rows, src] = False
slot_a = torch.zeros(B, half, dtype=torch.long)
slot_a[keep] = torch.arange(half - r).repeat(B)
slot_a[rows, src] = dst + half - r
dest = torch.empty(B, T, dtype=torch.long)
dest[:, ::2] = slot_a
dest[:, 1::2] = torch.arange(half - r, T - r)
found = tfcourse.tome.Matching(dest, 2 * src, 2 * dst + 1)
return tfcourse.tome.merge_tokens(x, size, found)
''')},
        "loses": "merge", "fails": MERGE,
    },
    # ---- exercise 3, proportional attention
    "attention_s_not_log_s": {
        "replace": {"attention": edit(ATTENTION_RIGHT, attention, ("size.log()", "size"))},
        "loses": "attention", "fails": ATTENTION,
    },
    "attention_log_s_along_the_queries": {  # (B, 1, S, 1): a shape error, or no effect if T = S
        "replace": {"attention": edit(ATTENTION_RIGHT, attention, (
            "size.log().squeeze(-1)[:, None, None, :]", "size.log()[:, None, :, :]"))},
        "loses": "attention", "fails": ATTENTION,
    },
    "attention_sizes_ignored": {  # plain attention
        "replace": {"attention": edit(ATTENTION_RIGHT, attention, ("scores + bias", "scores"))},
        "loses": "attention", "fails": ATTENTION,
    },
    "attention_log_s_before_the_scaling": {  # softmax((QKᵀ + log s) / √D)
        "replace": {"attention": edit(ATTENTION_RIGHT, attention, (
            "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
            "bias = size.log().squeeze(-1)[:, None, None, :]\n"
            "return torch.softmax(scores + bias, dim=-1) @ v",
            "bias = size.log().squeeze(-1)[:, None, None, :]\n"
            "scores = (q @ k.transpose(-2, -1) + bias) / math.sqrt(q.shape[-1])\n"
            "return torch.softmax(scores, dim=-1) @ v"))},
        "loses": "attention", "fails": ATTENTION,
    },
    "attention_sizes_on_the_values": {
        "replace": {"attention": edit(ATTENTION_RIGHT, attention, (
            "torch.softmax(scores + bias, dim=-1) @ v",
            "torch.softmax(scores, dim=-1) @ (v * size[:, None])"))},
        "loses": "attention", "fails": ATTENTION,
    },
    "attention_sizes_after_the_softmax": {  # weights times s, no longer summing to 1
        "replace": {"attention": edit(ATTENTION_RIGHT, attention, (
            "torch.softmax(scores + bias, dim=-1) @ v",
            "(torch.softmax(scores, dim=-1) * bias.exp()) @ v"))},
        "loses": "attention", "fails": ATTENTION,
    },
    "attention_first_images_sizes_for_all": {
        "replace": {"attention": edit(ATTENTION_RIGHT, attention, (
            "size.log().squeeze(-1)", "size[:1].log().squeeze(-1)"))},
        "loses": "attention", "fails": ATTENTION,
    },
    "attention_scaled_by_d": {  # 1/D instead of 1/√D
        "replace": {"attention": edit(ATTENTION_RIGHT, attention, (
            "math.sqrt(q.shape[-1])", "q.shape[-1]"))},
        "loses": "attention", "fails": ATTENTION,
    },
    "attention_sizes_as_repeat_counts": {  # each key repeated s times: whole sizes only
        "replace": {"attention": attention('''
outputs = []
for b in range(q.shape[0]):
    repeats = size[b, :, 0].long()
    keys = k[b].repeat_interleave(repeats, dim=1)
    values = v[b].repeat_interleave(repeats, dim=1)
    scores = q[b] @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])
    outputs.append(torch.softmax(scores, dim=-1) @ values)
return torch.stack(outputs)
''')},
        "loses": "attention", "fails": ("attention_hidden",),
    },
    "attention_calls_sdpa": {
        "replace": {"attention": attention('''
mask = size.log().squeeze(-1)[:, None, None, :]
return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
''')},
        "loses": "attention", "fails": ATTENTION,
    },
    "attention_calls_tfcourse": {
        "replace": {"attention": attention('''
import tfcourse.tome

return tfcourse.tome.proportional_attention(q, k, v, size)
''')},
        "loses": "attention", "fails": ATTENTION,
    },
    # ---- exercise 4, tokens per layer
    "counts_not_cut": {  # the last layers merge more than half
        "replace": {"counts": edit(COUNTS_RIGHT, counts, ("min(r, (counts[-1] - 1) // 2)", "r"))},
        "loses": "counts", "fails": COUNTS,
    },
    "counts_cut_against_the_first_layer": {
        "replace": {"counts": edit(COUNTS_RIGHT, counts, ("(counts[-1] - 1) // 2",
                                                          "(num_tokens - 1) // 2"))},
        "loses": "counts", "fails": COUNTS,
    },
    "counts_cut_to_half_of_all_tokens": {  # ⌊T/2⌋ counts the class token as mergeable
        "replace": {"counts": edit(COUNTS_RIGHT, counts, ("(counts[-1] - 1) // 2",
                                                          "counts[-1] // 2"))},
        "loses": "counts", "fails": COUNTS,
    },
    "counts_without_t0": {
        "replace": {"counts": edit(COUNTS_RIGHT, counts, ("return counts", "return counts[1:]"))},
        "loses": "counts", "fails": COUNTS,
    },
    "counts_returns_a_tensor": {  # equal element by element, but not the list of ints asked for
        "replace": {"counts": edit(COUNTS_RIGHT, counts, ("return counts",
                                                          "return torch.tensor(counts)"))},
        "loses": "counts", "fails": ("counts_hidden",),
    },
    "counts_calls_tfcourse": {
        "replace": {"counts": counts('''
import tfcourse.tome

result = [num_tokens]
for r in tfcourse.tome.clamp_schedule(list(schedule), num_tokens):
    result.append(result[-1] - r)
return result
''')},
        "loses": "counts", "fails": COUNTS,
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"counts": '''
while True:
    pass
'''},
        "loses": "counts", "fails": COUNTS, "times_out": True,
    },
    "kernel_exits": {"replace": {"match": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
