"""Submissions that tests/test_grading.py grades for the assignment 09_jamba.

The mistakes are the classic ones of chapter 9: a layer schedule that counts the layers from 1,
ignores the offset of the attention layers, puts the experts on the even layers, swaps period
and offset or repeats whole blocks only; a key/value cache that counts every layer or the Mamba
layers, forgets the factor 2 for keys and values, counts H heads instead of G, takes heads of
width C / G, divides with /, ignores the batch or assumes 2 bytes per number; a router whose
softmax runs over the tokens or over the k chosen scores (Mixtral's weights), that renormalises,
weights by the raw scores, puts the worst expert first, returns the indices first, picks the
same expert k times, rounds its probabilities to half precision, detaches its weights, knows k =
2 only or needs a leading axis (flatten(0, -2)); a mixture of experts that forgets the weights
or applies them twice, mixes every expert, runs every expert on every token, overwrites instead
of adding, reads the weight of expert i from column i, renormalises, forgets to transpose the
router, knows k = 2 only or cuts the router's gradient; a load-balancing loss that counts the
best expert only, makes f sum to 1, sums P, drops the factor X, takes f from the probabilities,
P from the scores or from the choosing tokens only, counts tied experts by a threshold, has no
gradient, returns a float, needs a leading axis or counts on the default device; grouped-query
attention with repeat instead of repeat_interleave, without a causal mask, with the mask upside
down, after the softmax or as zeros, without the 1/√D scale or with 1/D, with the softmax over
the queries, or with its mask on the default device; and calls to the references (tfcourse's and
PyTorch's fused attention).
"""

from grading_cases import edit, exercises, function

NOTEBOOK = "exercises"

EXERCISES = exercises("schedule", "routing", "moe", "balance", "gqa")

SCHEDULE = EXERCISES["schedule"][1]
ROUTING = EXERCISES["routing"][1]
MOE = EXERCISES["moe"][1]
BALANCE = EXERCISES["balance"][1]
GQA = EXERCISES["gqa"][1]


def cell(source: str) -> str:
    """A whole cell, given as it is (the schedule's cell holds two functions)."""
    return source.strip("\n")


def routing(body: str) -> str:
    return function("top_k_routing(router_logits, k)", body)


def moe(body: str) -> str:
    return function("moe_forward(x, router_weight, experts, k)", body)


def balance(body: str) -> str:
    return function("load_balancing_loss(router_logits, k, num_experts)", body)


def gqa(body: str) -> str:
    return function("grouped_query_attention(q, k, v)", body)


# The right implementations, written plainly; each mistake below edits one or a few lines.
SCHEDULE_RIGHT = '''
def layer_schedule(num_layers, attn_layer_period, attn_layer_offset, expert_layer_period,
                   expert_layer_offset):
    schedule = []
    for i in range(num_layers):
        mixer = "attention" if i % attn_layer_period == attn_layer_offset else "mamba"
        schedule.append((mixer, i % expert_layer_period == expert_layer_offset))
    return schedule


def kv_cache_bytes(schedule, d_model, num_heads, num_kv_heads, context, batch=1, dtype_bytes=2):
    attention_layers = sum(mixer == "attention" for mixer, _ in schedule)
    head_dim = d_model // num_heads
    per_token = 2 * attention_layers * num_kv_heads * head_dim
    return per_token * context * batch * dtype_bytes
'''

ROUTING_RIGHT = '''
work = torch.promote_types(router_logits.dtype, torch.float32)
probs = torch.softmax(router_logits.to(work), dim=-1)
weights, indices = probs.topk(k, dim=-1)
return weights, indices
'''

MOE_RIGHT = '''
B, T, C = x.shape
tokens = x.reshape(B * T, C)
probs = torch.softmax(tokens @ router_weight.T, dim=-1)
weights, indices = probs.topk(k, dim=-1)
out = torch.zeros_like(tokens)
for i, expert in enumerate(experts):
    rows, slot = torch.where(indices == i)
    if rows.numel() == 0:
        continue
    w = weights[rows, slot][:, None]
    out = out.index_add(0, rows, w * expert(tokens[rows]))
return out.view(B, T, C)
'''

BALANCE_RIGHT = '''
logits = router_logits.reshape(-1, num_experts)
probs = torch.softmax(logits, dim=-1)
chosen = probs.topk(k, dim=-1).indices
counts = F.one_hot(chosen, num_experts).sum(dim=(0, 1))
f = counts.to(probs.dtype) / logits.shape[0]
P = probs.mean(dim=0)
return num_experts * (f * P).sum()
'''

GQA_RIGHT = '''
H, T, D = q.shape[1], q.shape[2], q.shape[3]
group = H // k.shape[1]
k = k.repeat_interleave(group, dim=1)
v = v.repeat_interleave(group, dim=1)
scores = q @ k.transpose(-2, -1) / math.sqrt(D)
future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
return weights @ v
'''


# Correct code written differently from the solution: every exercise at once, three times.
ALTERNATIVE = {
    "schedule": cell('''
def layer_schedule(num_layers, attn_layer_period, attn_layer_offset, expert_layer_period,
                   expert_layer_offset):
    # the two columns of the schedule, zipped
    mixers = ["attention" if i % attn_layer_period == attn_layer_offset else "mamba"
              for i in range(num_layers)]
    moe = [i % expert_layer_period == expert_layer_offset for i in range(num_layers)]
    return list(zip(mixers, moe))


def kv_cache_bytes(schedule, d_model, num_heads, num_kv_heads, context, batch=1, dtype_bytes=2):
    total = 0
    for mixer, _uses_experts in schedule:  # layer by layer
        if mixer == "attention":
            total += 2 * num_kv_heads * (d_model // num_heads) * context * batch * dtype_bytes
    return total
'''),
    "routing": routing('''
# all the experts sorted, best first, then the first k
work = torch.promote_types(router_logits.dtype, torch.float32)
ordered = torch.softmax(router_logits.to(work), dim=-1).sort(dim=-1, descending=True)
return ordered.values[..., :k], ordered.indices[..., :k]
'''),
    "moe": moe('''
# token by token, choice by choice: N k calls of one row each
B, T, C = x.shape
tokens = x.reshape(-1, C)
probs = torch.softmax(tokens @ router_weight.T, dim=-1)
weights, indices = probs.topk(k, dim=-1)
rows = []
for n in range(tokens.shape[0]):
    y = torch.zeros_like(tokens[n])
    for j in range(k):
        expert = experts[int(indices[n, j])]
        y = y + weights[n, j] * expert(tokens[n:n + 1])[0]
    rows.append(y)
return torch.stack(rows).reshape(B, T, C)
'''),
    "balance": balance('''
# counts by bincount; f in float32, as tfcourse keeps it
flat = router_logits.reshape(-1, router_logits.shape[-1])
probs = flat.softmax(-1)
counts = torch.bincount(probs.topk(k).indices.flatten(), minlength=num_experts)
f = counts / flat.shape[0]
P = probs.mean(0)
return num_experts * torch.dot(f.to(P.dtype), P)
'''),
    "gqa": gqa('''
# each key/value head expanded over its group, then attention written out
B, H, T, D = q.shape
G = k.shape[1]
k = k[:, :, None].expand(B, G, H // G, T, D).reshape(B, H, T, D)
v = v[:, :, None].expand(B, G, H // G, T, D).reshape(B, H, T, D)
scores = torch.matmul(q, k.transpose(2, 3)) * D ** -0.5
allowed = torch.tril(torch.ones(T, T, dtype=torch.bool, device=q.device))
scores = scores.masked_fill(~allowed, float("-inf"))
return scores.softmax(dim=-1).matmul(v)
'''),
}

ALTERNATIVE_2 = {
    "schedule": cell('''
def layer_schedule(num_layers, attn_layer_period, attn_layer_offset, expert_layer_period,
                   expert_layer_offset):
    # from the offset on, one period apart
    schedule = [["mamba", False] for _ in range(num_layers)]
    for i in range(attn_layer_offset, num_layers, attn_layer_period):
        schedule[i][0] = "attention"
    for i in range(expert_layer_offset, num_layers, expert_layer_period):
        schedule[i][1] = True
    return [tuple(pair) for pair in schedule]


def kv_cache_bytes(schedule, d_model, num_heads, num_kv_heads, context, batch=1, dtype_bytes=2):
    layers = [mixer for mixer, _ in schedule].count("attention")
    key_or_value = num_kv_heads * d_model // num_heads  # G · D numbers
    return 2 * layers * key_or_value * context * batch * dtype_bytes
'''),
    "routing": routing('''
# the best expert k times, each left out once taken; no topk
work = torch.float64 if router_logits.dtype == torch.float64 else torch.float32
probs = torch.softmax(router_logits.to(work), dim=-1)
remaining = probs.detach().clone()
picks = []
for _ in range(k):
    best = remaining.argmax(dim=-1, keepdim=True)
    picks.append(best)
    remaining.scatter_(-1, best, -1.0)
indices = torch.cat(picks, dim=-1)
return probs.gather(-1, indices), indices
'''),
    "moe": moe('''
# the routing of Exercise 2; a boolean mask per choice and expert
tokens = x.flatten(0, 1)  # (N, C)
weights, indices = top_k_routing(tokens @ router_weight.T, k)
out = torch.zeros_like(tokens)
for j in range(k):
    for i, expert in enumerate(experts):
        mask = indices[:, j] == i
        if mask.any():
            out[mask] += weights[mask, j, None] * expert(tokens[mask])
return out.view_as(x)
'''),
    "balance": balance('''
# counts by scatter_add, P as a sum divided by N
N = router_logits.numel() // num_experts
probs = torch.softmax(router_logits.reshape(N, num_experts), dim=1)
idx = probs.topk(k, dim=1).indices
ones = probs.new_ones(N * k)
f = probs.new_zeros(num_experts).scatter_add_(0, idx.reshape(-1), ones) / N
return num_experts * torch.einsum("i,i->", f, probs.sum(0) / N)
'''),
    "gqa": gqa('''
# the query heads viewed by group, broadcast against their key/value head
B, H, T, D = q.shape
G = k.shape[1]
qg = q.reshape(B, G, H // G, T, D)
scores = torch.einsum("bgrtd,bgsd->bgrts", qg, k) / math.sqrt(D)
position = torch.arange(T, device=q.device)
blocked = position[None, :] > position[:, None]  # key s after query t
w = torch.softmax(scores.masked_fill(blocked, -torch.inf), dim=-1)
return torch.einsum("bgrts,bgsd->bgrtd", w, v).reshape(B, H, T, D)
'''),
}

ALTERNATIVE_3 = {
    "schedule": cell('''
import math


def layer_schedule(num_layers, attn_layer_period, attn_layer_offset, expert_layer_period,
                   expert_layer_offset):
    # i at or after the offset, and a whole number of periods after it
    def placed(i, period, offset):
        return i >= offset and (i - offset) % period == 0

    return [("attention" if placed(i, attn_layer_period, attn_layer_offset) else "mamba",
             placed(i, expert_layer_period, expert_layer_offset)) for i in range(num_layers)]


def kv_cache_bytes(schedule, d_model, num_heads, num_kv_heads, context, batch=1, dtype_bytes=2):
    layers = len([1 for mixer, _ in schedule if mixer == "attention"])
    return math.prod([2, layers, num_kv_heads, d_model // num_heads, context, batch,
                      dtype_bytes])
'''),
    "routing": routing('''
# softmax keeps the order of the scores: choose on the logits, then read the probabilities
indices = router_logits.topk(k, dim=-1).indices
work = torch.promote_types(router_logits.dtype, torch.float32)
log_p = torch.log_softmax(router_logits.to(work), dim=-1)
return log_p.gather(-1, indices).exp(), indices
'''),
    "moe": moe('''
# the choices sorted by expert, cut into one block per expert
B, T, C = x.shape
tokens = x.reshape(B * T, C)
probs = (tokens @ router_weight.T).softmax(dim=-1)
weights, indices = probs.topk(k)
flat = indices.reshape(-1)  # (N k,): the expert of each (token, choice)
order = flat.argsort()
token_of = order // k  # the token of each sorted choice
counts = torch.bincount(flat, minlength=len(experts)).tolist()
outputs = [expert(tokens[rows]) for expert, rows in zip(experts, token_of.split(counts))]
gathered = torch.cat(outputs) * weights.reshape(-1)[order, None]
return torch.zeros_like(tokens).index_add(0, token_of, gathered).view(B, T, C)
'''),
    "balance": balance('''
# a boolean mask of the choices
p = torch.softmax(router_logits, dim=-1).reshape(-1, num_experts)
chosen = torch.zeros_like(p, dtype=torch.bool).scatter(-1, p.topk(k, dim=-1).indices, True)
f = chosen.to(p.dtype).mean(dim=0)
return (f * p.mean(dim=0)).sum() * num_experts
'''),
    "gqa": gqa('''
# chapter 1's attention, with the course's causal mask
group = q.shape[1] // k.shape[1]
mask = tfcourse.causal_mask(q.shape[2], device=q.device)
out, _ = tfcourse.scaled_dot_product_attention(
    q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), mask)
return out
'''),
}

ATTENTION_RULE = "i % attn_layer_period == attn_layer_offset"
EXPERT_RULE = "i % expert_layer_period == expert_layer_offset"

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    "alternative_2": {"replace": ALTERNATIVE_2, "loses": None, "fails": ()},
    "alternative_3": {"replace": ALTERNATIVE_3, "loses": None, "fails": ()},
    # ---- exercise 1, the layer schedule and the cache
    "schedule_counted_from_one": {  # attention in layer 3, experts in the even layers
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, (
            ATTENTION_RULE, "(i + 1) % attn_layer_period == attn_layer_offset"), (
            EXPERT_RULE, "(i + 1) % expert_layer_period == expert_layer_offset"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "schedule_attention_first": {  # the offset ignored: attention in layer 0
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, (
            ATTENTION_RULE, "i % attn_layer_period == 0"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "schedule_experts_on_even_layers": {
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, (EXPERT_RULE,
                                                            "i % expert_layer_period == 0"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "schedule_period_and_offset_swapped": {  # no attention, no experts (or a division by 0)
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, (
            ATTENTION_RULE, "i % attn_layer_offset == attn_layer_period"), (
            EXPERT_RULE, "i % expert_layer_offset == expert_layer_period"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "schedule_whole_blocks_only": {  # right for 8 layers of period 8; drops the rest
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, (
            "    schedule = []\n    for i in range(num_layers):\n        mixer = \"attention\" "
            "if i % attn_layer_period == attn_layer_offset else \"mamba\"\n        "
            "schedule.append((mixer, i % expert_layer_period == expert_layer_offset))\n    "
            "return schedule",
            "    block = [(\"attention\" if i == attn_layer_offset else \"mamba\",\n"
            "              i % expert_layer_period == expert_layer_offset)\n"
            "             for i in range(attn_layer_period)]\n"
            "    return block * (num_layers // attn_layer_period)"))},
        "loses": "schedule", "fails": ("schedule_hidden",),
    },
    "schedule_calls_tfcourse": {
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, (
            "    schedule = []\n    for i in range(num_layers):\n        mixer = \"attention\" "
            "if i % attn_layer_period == attn_layer_offset else \"mamba\"\n        "
            "schedule.append((mixer, i % expert_layer_period == expert_layer_offset))\n    "
            "return schedule",
            "    config = tfcourse.JambaConfig(\n"
            "        num_layers=num_layers, attn_layer_period=attn_layer_period,\n"
            "        attn_layer_offset=attn_layer_offset,\n"
            "        expert_layer_period=expert_layer_period,\n"
            "        expert_layer_offset=expert_layer_offset)\n"
            "    return list(zip(config.layer_types(), config.uses_experts()))"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "kv_every_layer": {  # the Mamba layers keep no cache
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, (
            "attention_layers = sum(mixer == \"attention\" for mixer, _ in schedule)",
            "attention_layers = len(schedule)"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "kv_mamba_layers": {
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, ("mixer == \"attention\" for",
                                                            "mixer == \"mamba\" for"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "kv_without_factor_two": {  # the keys only
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, ("per_token = 2 * attention_layers",
                                                            "per_token = attention_layers"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "kv_query_heads": {  # the cache of multi-head attention
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, ("* num_kv_heads * head_dim",
                                                            "* num_heads * head_dim"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "kv_head_width_over_kv_heads": {  # D = C / G
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, ("head_dim = d_model // num_heads",
                                                            "head_dim = d_model // num_kv_heads"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "kv_true_division": {  # a float number of bytes
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, ("head_dim = d_model // num_heads",
                                                            "head_dim = d_model / num_heads"))},
        "loses": "schedule", "fails": SCHEDULE,
    },
    "kv_batch_ignored": {
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, (
            "return per_token * context * batch * dtype_bytes",
            "return per_token * context * dtype_bytes"))},
        "loses": "schedule", "fails": ("schedule_hidden",),
    },
    "kv_dtype_bytes_ignored": {  # 16-bit numbers assumed: right for the default only
        "replace": {"schedule": edit(SCHEDULE_RIGHT, cell, (
            "return per_token * context * batch * dtype_bytes",
            "return per_token * context * batch * 2"))},
        "loses": "schedule", "fails": ("schedule_hidden",),
    },
    # ---- exercise 2, the router's choices
    "routing_softmax_over_tokens": {
        "replace": {"routing": edit(ROUTING_RIGHT, routing, (
            "torch.softmax(router_logits.to(work), dim=-1)",
            "torch.softmax(router_logits.to(work), dim=0)"))},
        "loses": "routing", "fails": ROUTING,
    },
    "routing_softmax_of_the_chosen": {  # Mixtral's weights: they sum to 1
        "replace": {"routing": edit(ROUTING_RIGHT, routing, (
            "probs = torch.softmax(router_logits.to(work), dim=-1)\n"
            "weights, indices = probs.topk(k, dim=-1)",
            "top, indices = router_logits.topk(k, dim=-1)\n"
            "weights = torch.softmax(top.to(work), dim=-1)"))},
        "loses": "routing", "fails": ROUTING,
    },
    "routing_renormalised": {
        "replace": {"routing": edit(ROUTING_RIGHT, routing, (
            "return weights, indices",
            "return weights / weights.sum(dim=-1, keepdim=True), indices"))},
        "loses": "routing", "fails": ROUTING,
    },
    "routing_scores_as_weights": {  # no softmax at all
        "replace": {"routing": edit(ROUTING_RIGHT, routing, (
            "weights, indices = probs.topk(k, dim=-1)",
            "weights, indices = router_logits.to(work).topk(k, dim=-1)"))},
        "loses": "routing", "fails": ROUTING,
    },
    "routing_worst_first": {  # an ascending sort, the last k
        "replace": {"routing": edit(ROUTING_RIGHT, routing, (
            "weights, indices = probs.topk(k, dim=-1)",
            "ordered = probs.sort(dim=-1)\n"
            "weights, indices = ordered.values[..., -k:], ordered.indices[..., -k:]"))},
        "loses": "routing", "fails": ROUTING,
    },
    "routing_indices_first": {
        "replace": {"routing": edit(ROUTING_RIGHT, routing, ("return weights, indices",
                                                             "return indices, weights"))},
        "loses": "routing", "fails": ROUTING,
    },
    "routing_same_expert_k_times": {  # argmax k times without leaving the best out
        "replace": {"routing": edit(ROUTING_RIGHT, routing, (
            "weights, indices = probs.topk(k, dim=-1)",
            "picks = []\nfor _ in range(k):\n    picks.append(probs.argmax(dim=-1))\n"
            "indices = torch.stack(picks, dim=-1)\nweights = probs.gather(-1, indices)"))},
        "loses": "routing", "fails": ROUTING,
    },
    "routing_half_precision_softmax": {  # float16 weights, and probabilities that tie
        "replace": {"routing": edit(ROUTING_RIGHT, routing, (
            "work = torch.promote_types(router_logits.dtype, torch.float32)",
            "work = router_logits.dtype"))},
        "loses": "routing", "fails": ("routing_hidden",),
    },
    "routing_detached": {
        "replace": {"routing": edit(ROUTING_RIGHT, routing, ("return weights, indices",
                                                             "return weights.detach(), indices"))},
        "loses": "routing", "fails": ("routing_hidden",),
    },
    "routing_k_fixed_at_two": {  # Jamba's k, whatever k is given
        "replace": {"routing": edit(ROUTING_RIGHT, routing, ("probs.topk(k, dim=-1)",
                                                             "probs.topk(2, dim=-1)"))},
        "loses": "routing", "fails": ("routing_hidden",),
    },
    "routing_needs_a_leading_axis": {  # right for (N, X) and (B, T, X); (X,) raises
        "replace": {"routing": edit(ROUTING_RIGHT, routing, (
            "probs = torch.softmax(router_logits.to(work), dim=-1)\n"
            "weights, indices = probs.topk(k, dim=-1)\n"
            "return weights, indices",
            "probs = torch.softmax(router_logits.flatten(0, -2).to(work), dim=-1)  # (N, X)\n"
            "weights, indices = probs.topk(k, dim=-1)\n"
            "lead = router_logits.shape[:-1]\n"
            "return weights.reshape(*lead, k), indices.reshape(*lead, k)"))},
        "loses": "routing", "fails": ("routing_hidden",),
    },
    "routing_calls_tfcourse": {  # the router of MoEFeedForward, made the identity
        "replace": {"routing": routing('''
X = router_logits.shape[-1]
layer = tfcourse.MoEFeedForward(X, 1, X, k)
layer.router.weight = torch.nn.Parameter(torch.eye(X, dtype=router_logits.dtype))
_, indices, weights = layer.routing(router_logits)
return weights, indices
''')},
        "loses": "routing", "fails": ROUTING,
    },
    # ---- exercise 3, the mixture of experts
    "moe_unweighted": {
        "replace": {"moe": edit(MOE_RIGHT, moe, ("out.index_add(0, rows, w * expert(",
                                                 "out.index_add(0, rows, expert("))},
        "loses": "moe", "fails": MOE,
    },
    "moe_weighted_twice": {
        "replace": {"moe": edit(MOE_RIGHT, moe, ("w = weights[rows, slot][:, None]",
                                                 "w = weights[rows, slot][:, None] ** 2"))},
        "loses": "moe", "fails": MOE,
    },
    "moe_every_expert_weighted": {  # a dense mixture of all X experts
        "replace": {"moe": moe('''
B, T, C = x.shape
tokens = x.reshape(B * T, C)
probs = torch.softmax(tokens @ router_weight.T, dim=-1)
out = sum(probs[:, i, None] * expert(tokens) for i, expert in enumerate(experts))
return out.view(B, T, C)
''')},
        "loses": "moe", "fails": MOE,
    },
    "moe_every_expert_on_every_token": {  # the right values, at the cost of N X expert rows
        "replace": {"moe": moe('''
B, T, C = x.shape
tokens = x.reshape(B * T, C)
probs = torch.softmax(tokens @ router_weight.T, dim=-1)
weights, indices = probs.topk(k, dim=-1)
gates = torch.zeros_like(probs).scatter(-1, indices, weights)  # (N, X), zero where not chosen
outputs = torch.stack([expert(tokens) for expert in experts], dim=1)  # (N, X, C)
return (gates[..., None] * outputs).sum(1).view(B, T, C)
''')},
        "loses": "moe", "fails": MOE,
    },
    "moe_assigned_not_added": {  # a token keeps the output of its last expert only
        "replace": {"moe": edit(MOE_RIGHT, moe, (
            "out = out.index_add(0, rows, w * expert(tokens[rows]))",
            "out[rows] = w * expert(tokens[rows])"))},
        "loses": "moe", "fails": MOE,
    },
    "moe_weight_from_expert_column": {  # weights[:, i] is the i-th choice, not expert i
        "replace": {"moe": edit(MOE_RIGHT, moe, ("w = weights[rows, slot][:, None]",
                                                 "w = weights[rows, i][:, None]"))},
        "loses": "moe", "fails": MOE,
    },
    "moe_renormalised": {  # Mixtral's weights
        "replace": {"moe": edit(MOE_RIGHT, moe, (
            "weights, indices = probs.topk(k, dim=-1)",
            "weights, indices = probs.topk(k, dim=-1)\n"
            "weights = weights / weights.sum(dim=-1, keepdim=True)"))},
        "loses": "moe", "fails": MOE,
    },
    "moe_router_not_transposed": {  # wrong shapes, or wrong values when C = X
        "replace": {"moe": edit(MOE_RIGHT, moe, ("tokens @ router_weight.T",
                                                 "tokens @ router_weight"))},
        "loses": "moe", "fails": MOE,
    },
    "moe_k_fixed_at_two": {
        "replace": {"moe": edit(MOE_RIGHT, moe, ("probs.topk(k, dim=-1)",
                                                 "probs.topk(2, dim=-1)"))},
        "loses": "moe", "fails": ("moe_hidden",),
    },
    "moe_router_detached": {  # the router would never learn
        "replace": {"moe": edit(MOE_RIGHT, moe, (
            "probs = torch.softmax(tokens @ router_weight.T, dim=-1)",
            "probs = torch.softmax(tokens @ router_weight.T, dim=-1).detach()"))},
        "loses": "moe", "fails": ("moe_hidden",),
    },
    "moe_calls_tfcourse": {
        "replace": {"moe": moe('''
layer = tfcourse.MoEFeedForward(x.shape[-1], 1, len(experts), k)
layer.router.weight = torch.nn.Parameter(router_weight)
layer.experts = torch.nn.ModuleList(experts)
return layer(x)
''')},
        "loses": "moe", "fails": MOE,
    },
    # ---- exercise 4, the load-balancing loss
    "balance_best_expert_only": {  # Switch Transformers' top-1 count with k > 1
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "chosen = probs.topk(k, dim=-1).indices",
            "chosen = probs.argmax(dim=-1, keepdim=True)"))},
        "loses": "balance", "fails": BALANCE,
    },
    "balance_fractions_sum_to_one": {  # divided by N k: balance gives 1, not k
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "/ logits.shape[0]", "/ (logits.shape[0] * k)"))},
        "loses": "balance", "fails": BALANCE,
    },
    "balance_probabilities_summed": {
        "replace": {"balance": edit(BALANCE_RIGHT, balance, ("P = probs.mean(dim=0)",
                                                             "P = probs.sum(dim=0)"))},
        "loses": "balance", "fails": BALANCE,
    },
    "balance_without_X": {
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "return num_experts * (f * P).sum()", "return (f * P).sum()"))},
        "loses": "balance", "fails": BALANCE,
    },
    "balance_f_from_probabilities": {  # X Σ P_i²
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "f = counts.to(probs.dtype) / logits.shape[0]", "f = probs.mean(dim=0)"))},
        "loses": "balance", "fails": BALANCE,
    },
    "balance_P_from_scores": {
        "replace": {"balance": edit(BALANCE_RIGHT, balance, ("P = probs.mean(dim=0)",
                                                             "P = logits.mean(dim=0)"))},
        "loses": "balance", "fails": BALANCE,
    },
    "balance_P_over_the_choosing_tokens": {
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "P = probs.mean(dim=0)",
            "P = (probs * F.one_hot(chosen, num_experts).sum(1)).mean(dim=0)"))},
        "loses": "balance", "fails": BALANCE,
    },
    "balance_threshold_counts_ties": {  # tied experts all counted: more than k per token
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "f = counts.to(probs.dtype) / logits.shape[0]",
            "kth = probs.topk(k, dim=-1).values[..., -1:]\n"
            "f = (probs >= kth).to(probs.dtype).mean(dim=0)"))},
        "loses": "balance", "fails": ("balance_hidden",),
    },
    "balance_without_gradient": {
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "return num_experts * (f * P).sum()",
            "with torch.no_grad():\n    return num_experts * (f * P).sum()"))},
        "loses": "balance", "fails": ("balance_hidden",),
    },
    "balance_returns_a_float": {
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "return num_experts * (f * P).sum()", "return num_experts * (f * P).sum().item()"))},
        "loses": "balance", "fails": BALANCE,
    },
    "balance_needs_a_leading_axis": {  # right for (N, X) and (B, T, X); (X,) raises
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "router_logits.reshape(-1, num_experts)", "router_logits.flatten(0, -2)"))},
        "loses": "balance", "fails": ("balance_hidden",),
    },
    "balance_counts_on_the_default_device": {  # right on the CPU; logits on a GPU fail
        "replace": {"balance": edit(BALANCE_RIGHT, balance, (
            "counts = F.one_hot(chosen, num_experts).sum(dim=(0, 1))",
            "ones = torch.ones(chosen.numel(), dtype=probs.dtype)\n"
            "counts = torch.zeros(num_experts, dtype=probs.dtype).scatter_add(\n"
            "    0, chosen.flatten(), ones)"))},
        "loses": "balance", "fails": ("balance_hidden",),
    },
    "balance_calls_tfcourse": {
        "replace": {"balance": balance(
            "return tfcourse.load_balancing_loss(router_logits, k, num_experts)")},
        "loses": "balance", "fails": BALANCE,
    },
    # ---- exercise 5, grouped-query attention
    "gqa_repeat_not_interleave": {  # query head h reads key/value head h % G
        "replace": {"gqa": edit(GQA_RIGHT, gqa, (
            "k = k.repeat_interleave(group, dim=1)", "k = k.repeat(1, group, 1, 1)"), (
            "v = v.repeat_interleave(group, dim=1)", "v = v.repeat(1, group, 1, 1)"))},
        "loses": "gqa", "fails": GQA,
    },
    "gqa_without_causal_mask": {
        "replace": {"gqa": edit(GQA_RIGHT, gqa, (
            "torch.softmax(scores.masked_fill(future, float(\"-inf\")), dim=-1)",
            "torch.softmax(scores, dim=-1)"))},
        "loses": "gqa", "fails": GQA,
    },
    "gqa_mask_upside_down": {  # query t reads keys t … T - 1
        "replace": {"gqa": edit(GQA_RIGHT, gqa, (".triu(1)", ".tril(-1)"))},
        "loses": "gqa", "fails": GQA,
    },
    "gqa_mask_after_softmax": {  # rows that no longer sum to 1
        "replace": {"gqa": edit(GQA_RIGHT, gqa, (
            "torch.softmax(scores.masked_fill(future, float(\"-inf\")), dim=-1)",
            "torch.softmax(scores, dim=-1) * ~future"))},
        "loses": "gqa", "fails": GQA,
    },
    "gqa_blocked_scores_zeroed": {  # a score of 0 still gets weight
        "replace": {"gqa": edit(GQA_RIGHT, gqa, ("masked_fill(future, float(\"-inf\"))",
                                                 "masked_fill(future, 0.0)"))},
        "loses": "gqa", "fails": GQA,
    },
    "gqa_without_scale": {
        "replace": {"gqa": edit(GQA_RIGHT, gqa, (" / math.sqrt(D)", ""))},
        "loses": "gqa", "fails": GQA,
    },
    "gqa_scaled_by_D": {
        "replace": {"gqa": edit(GQA_RIGHT, gqa, (" / math.sqrt(D)", " / D"))},
        "loses": "gqa", "fails": GQA,
    },
    "gqa_softmax_over_queries": {
        "replace": {"gqa": edit(GQA_RIGHT, gqa, ("float(\"-inf\")), dim=-1)",
                                                 "float(\"-inf\")), dim=-2)"))},
        "loses": "gqa", "fails": GQA,
    },
    "gqa_mask_on_the_default_device": {  # right on the CPU; queries on a GPU fail
        "replace": {"gqa": edit(GQA_RIGHT, gqa, (
            "torch.ones(T, T, dtype=torch.bool, device=q.device)",
            "torch.ones(T, T, dtype=torch.bool)"))},
        "loses": "gqa", "fails": ("gqa_hidden",),
    },
    "gqa_fused_attention": {  # PyTorch's kernel does the grouping itself
        "replace": {"gqa": gqa(
            "return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)")},
        "loses": "gqa", "fails": GQA,
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"routing": '''
while True:
    pass
'''},
        "loses": "routing", "fails": ROUTING, "times_out": True,
    },
    "kernel_exits": {"replace": {"moe": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
