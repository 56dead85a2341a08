"""Submissions that tests/test_grading.py grades for the assignment 03_pretraining.

The mistakes are the classic ones of chapter 3: the next-token loss not shifted or shifted the
wrong way, padding counted, the classes not in dimension 1, ``pad_id=None`` taken as padding id
0; greedy decoding that feeds the whole sequence again with the cache, takes the wrong position's
logits or does not use the cache; BERT masking that masks every chosen token, chooses special
tokens, labels every position, writes into its input, draws special ids as random tokens, draws
them as if the special ids were the lowest ones, or lets its random cases overlap; mean pooling
that averages the padding in, averages the first n positions (right for right padding only) or
makes its mask in float32 whatever the dtype of ``h``.
"""

from grading_cases import edit, exercises, function

NOTEBOOK = "exercises"

EXERCISES = exercises("loss", "generate", "mask", "pool")

LOSS = EXERCISES["loss"][1]
GENERATE = EXERCISES["generate"][1]
MASK = EXERCISES["mask"][1]
POOL = EXERCISES["pool"][1]


def loss(body: str) -> str:
    return function("next_token_loss(logits, tokens, pad_id=None)", body)


def generate(body: str) -> str:
    return function("greedy_generate(model, prompt, max_new_tokens)", body)


def mask(body: str) -> str:
    return function("mask_tokens(tokens, *, mask_id, vocab_size, special_ids, mask_prob=0.15, "
                    "generator=None)", body)


def pool(body: str) -> str:
    return function("mean_pool(h, tokens, *, pad_id)", body)


# The right implementations, written plainly; each mistake below edits one or two lines.
LOSS_RIGHT = '''
V = logits.shape[-1]
predictions = logits[:, :-1].reshape(-1, V)
targets = tokens[:, 1:].reshape(-1)
ignore = -100 if pad_id is None else pad_id
return F.cross_entropy(predictions, targets, ignore_index=ignore)
'''

GENERATE_RIGHT = '''
with torch.no_grad():
    cache = model.new_cache()
    tokens, new = prompt, prompt
    for _ in range(max_new_tokens):
        logits = model(new, cache=cache)
        new = logits[:, -1].argmax(dim=-1, keepdim=True)
        tokens = torch.cat([tokens, new], dim=1)
return tokens
'''

MASK_RIGHT = '''
is_special = torch.isin(tokens, torch.tensor(list(special_ids)))
ordinary = torch.tensor([i for i in range(vocab_size) if i not in special_ids])
chosen = (torch.rand(tokens.shape, generator=generator) < mask_prob) & ~is_special
case = torch.rand(tokens.shape, generator=generator)
random_tokens = ordinary[torch.randint(len(ordinary), tokens.shape, generator=generator)]
inputs = tokens.clone()
inputs[chosen & (case < 0.8)] = mask_id
random = chosen & (case >= 0.8) & (case < 0.9)
inputs[random] = random_tokens[random]
labels = torch.where(chosen, tokens, -100)
return inputs, labels
'''

POOL_RIGHT = '''
real = (tokens != pad_id).unsqueeze(-1).to(h.dtype)
return (h * real).sum(dim=1) / real.sum(dim=1)
'''


# Correct code written differently from the solution: every exercise at once.
ALTERNATIVE = {
    "loss": loss('''
# log-probabilities of the next tokens, picked with gather, averaged over the real targets
log_p = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V)
targets = tokens[:, 1:]  # (B, T-1)
picked = log_p.gather(2, targets.unsqueeze(2)).squeeze(2)  # (B, T-1)
if pad_id is None:
    return -picked.mean()
keep = targets.ne(pad_id)
return -picked[keep].sum() / keep.sum()
'''),
    "generate": generate('''
# the prompt first, then one token per step; the newest token is fed back after it is chosen,
# one call more than needed (the last one's logits are never used)
model.eval()
cache = model.new_cache()
with torch.no_grad():
    last = model.forward(prompt, cache=cache)[:, prompt.shape[1] - 1]  # (B, V)
    out = [prompt]
    for _ in range(max_new_tokens):
        token = torch.argmax(last, dim=1).unsqueeze(1)  # (B, 1)
        out.append(token)
        last = model.forward(token, cache=cache)[:, 0]
return torch.cat(out, dim=1)
'''),
    "mask": mask('''
# choose with bernoulli, then deal out the three cases among the chosen positions only
special = torch.tensor(sorted(set(special_ids)))
allowed = ~torch.isin(torch.arange(vocab_size), special)  # (V,)
probs = torch.full(tokens.shape, float(mask_prob))
chosen = torch.bernoulli(probs, generator=generator).bool() & ~torch.isin(tokens, special)
n = int(chosen.sum())
kind = torch.multinomial(torch.tensor([0.8, 0.1, 0.1]), n, replacement=True,
                         generator=generator) if n else torch.zeros(0, dtype=torch.long)
picks = torch.multinomial(allowed.float(), max(n, 1), replacement=True, generator=generator)[:n]
values = tokens[chosen]
values = torch.where(kind == 0, torch.full_like(values, mask_id), values)
values = torch.where(kind == 1, picks, values)
inputs = tokens.masked_scatter(chosen, values)
labels = torch.full_like(tokens, -100)
labels[chosen] = tokens[chosen]
return inputs, labels
'''),
    "pool": pool('''
weights = (tokens != pad_id).to(h.dtype)  # (B, T)
weights = weights / weights.sum(dim=1, keepdim=True)  # each row sums to 1
return torch.einsum("bt,btc->bc", weights, h)
'''),
}

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    # ---- exercise 1, the next-token loss
    "loss_not_shifted": {  # position t scored on token t
        "replace": {"loss": edit(LOSS_RIGHT, loss, ("logits[:, :-1]", "logits"),
                                 ("tokens[:, 1:]", "tokens"))},
        "loses": "loss", "fails": LOSS,
    },
    "loss_shifted_the_wrong_way": {
        "replace": {"loss": edit(LOSS_RIGHT, loss, ("logits[:, :-1]", "logits[:, 1:]"),
                                 ("tokens[:, 1:]", "tokens[:, :-1]"))},
        "loses": "loss", "fails": LOSS,
    },
    "loss_counts_padding": {
        "replace": {"loss": edit(LOSS_RIGHT, loss, (", ignore_index=ignore)", ")"))},
        "loses": "loss", "fails": LOSS,
    },
    "loss_padding_in_the_denominator": {  # padding left out of the sum, not of the count
        "replace": {"loss": edit(LOSS_RIGHT, loss, (
            "return F.cross_entropy(predictions, targets, ignore_index=ignore)",
            "each = F.cross_entropy(predictions, targets, reduction='none')\n"
            "return (each * (targets != ignore)).sum() / targets.numel()"))},
        "loses": "loss", "fails": LOSS,
    },
    "loss_classes_reshaped_into_dim_1": {  # a reshape to (B, V, T-1) scrambles the classes
        "replace": {"loss": loss('''
B, T, V = logits.shape
ignore = -100 if pad_id is None else pad_id
return F.cross_entropy(logits[:, :-1].reshape(B, V, T - 1), tokens[:, 1:], ignore_index=ignore)
''')},
        "loses": "loss", "fails": LOSS,
    },
    "loss_classes_in_the_last_dim": {  # F.cross_entropy on (B, T-1, V): an error
        "replace": {"loss": loss('''
ignore = -100 if pad_id is None else pad_id
return F.cross_entropy(logits[:, :-1], tokens[:, 1:], ignore_index=ignore)
''')},
        "loses": "loss", "fails": LOSS,
    },
    "loss_pad_id_none_not_handled": {  # ignore_index=None raises: only the hidden tests try it
        "replace": {"loss": edit(LOSS_RIGHT, loss, ("-100 if pad_id is None else pad_id",
                                                    "pad_id"))},
        "loses": "loss", "fails": ("loss_hidden",),
    },
    "loss_pad_id_none_as_0": {  # with no padding, the targets that are id 0 are left out
        "replace": {"loss": edit(LOSS_RIGHT, loss, ("-100 if pad_id is None else pad_id",
                                                    "0 if pad_id is None else pad_id"))},
        "loses": "loss", "fails": ("loss_hidden",),
    },
    "loss_calls_tfcourse": {
        "replace": {"loss": loss('''
return tfcourse.next_token_loss(logits, tokens, ignore_index=pad_id)
''')},
        "loses": "loss", "fails": LOSS,
    },
    # ---- exercise 2, greedy decoding with a KV cache
    "generate_whole_sequence_with_the_cache": {  # positions wrong, then past max_len
        "replace": {"generate": edit(GENERATE_RIGHT, generate,
                                     ("tokens = torch.cat([tokens, new], dim=1)",
                                      "tokens = torch.cat([tokens, new], dim=1)\n"
                                      "        new = tokens"))},
        "loses": "generate", "fails": GENERATE,
    },
    "generate_first_position": {  # logits[:, 0]: right after the prompt only when T0 = 1
        "replace": {"generate": edit(GENERATE_RIGHT, generate, ("logits[:, -1]",
                                                                "logits[:, 0]"))},
        "loses": "generate", "fails": GENERATE,
    },
    "generate_every_position": {  # the argmax of every position appended
        "replace": {"generate": edit(GENERATE_RIGHT, generate, (
            "new = logits[:, -1].argmax(dim=-1, keepdim=True)", "new = logits.argmax(dim=-1)"))},
        "loses": "generate", "fails": GENERATE,
    },
    "generate_without_the_cache": {  # the right tokens, the whole prefix at every step
        "replace": {"generate": generate('''
tokens = prompt
with torch.no_grad():
    for _ in range(max_new_tokens):
        new = model(tokens)[:, -1].argmax(dim=-1, keepdim=True)
        tokens = torch.cat([tokens, new], dim=1)
return tokens
''')},
        "loses": "generate", "fails": GENERATE,
    },
    "generate_new_cache_each_step": {  # a cache, but a fresh one every step: no reuse
        "replace": {"generate": generate('''
tokens = prompt
with torch.no_grad():
    for _ in range(max_new_tokens):
        new = model(tokens, cache=model.new_cache())[:, -1].argmax(dim=-1, keepdim=True)
        tokens = torch.cat([tokens, new], dim=1)
return tokens
''')},
        "loses": "generate", "fails": GENERATE,
    },
    "generate_calls_model_generate": {
        "replace": {"generate": generate('''
return model.generate(prompt, max_new_tokens, greedy=True)
''')},
        "loses": "generate", "fails": GENERATE,
    },
    # ---- exercise 3, BERT's masking
    "mask_every_chosen_token_masked": {
        "replace": {"mask": edit(MASK_RIGHT, mask,
                                 ("inputs[chosen & (case < 0.8)] = mask_id",
                                  "inputs[chosen] = mask_id"),
                                 ("inputs[random] = random_tokens[random]\n", ""))},
        "loses": "mask", "fails": MASK,
    },
    "mask_chooses_special_tokens": {
        "replace": {"mask": edit(MASK_RIGHT, mask, (" & ~is_special", ""))},
        "loses": "mask", "fails": MASK,
    },
    "mask_labels_everywhere": {
        "replace": {"mask": edit(MASK_RIGHT, mask, ("torch.where(chosen, tokens, -100)",
                                                    "tokens.clone()"))},
        "loses": "mask", "fails": MASK,
    },
    "mask_in_place": {  # right statistics, but the caller's tokens are overwritten
        "replace": {"mask": edit(MASK_RIGHT, mask,
                                 ("labels = torch.where(chosen, tokens, -100)\n", ""),
                                 ("inputs = tokens.clone()",
                                  "labels = torch.where(chosen, tokens, -100)\ninputs = tokens"))},
        "loses": "mask", "fails": MASK,
    },
    "mask_random_tokens_include_special_ids": {
        "replace": {"mask": edit(MASK_RIGHT, mask, (
            "ordinary[torch.randint(len(ordinary), tokens.shape, generator=generator)]",
            "torch.randint(vocab_size, tokens.shape, generator=generator)"))},
        "loses": "mask", "fails": MASK,
    },
    "mask_overlapping_draws": {  # two independent draws: 72% masked, 18% unchanged
        "replace": {"mask": edit(MASK_RIGHT, mask, (
            "random = chosen & (case >= 0.8) & (case < 0.9)",
            "random = chosen & (torch.rand(tokens.shape, generator=generator) < 0.1)"))},
        "loses": "mask", "fails": MASK,
    },
    "mask_ignores_the_generator": {  # the global generator: not reproducible from a seed
        "replace": {"mask": mask(MASK_RIGHT.replace(", generator=generator)", ")"))},
        "loses": "mask", "fails": ("mask_hidden",),
    },
    "mask_prob_fixed_at_15_percent": {  # right for the self-check's default only
        "replace": {"mask": edit(MASK_RIGHT, mask, ("< mask_prob)", "< 0.15)"))},
        "loses": "mask", "fails": ("mask_hidden",),
    },
    "mask_random_ids_after_the_special_ids": {  # as if the special ids were 0, ..., k - 1
        "replace": {"mask": edit(MASK_RIGHT, mask, (
            "ordinary[torch.randint(len(ordinary), tokens.shape, generator=generator)]",
            "torch.randint(len(special_ids), vocab_size, tokens.shape, generator=generator)"))},
        "loses": "mask", "fails": ("mask_hidden",),
    },
    "mask_calls_tfcourse": {
        "replace": {"mask": mask('''
return tfcourse.mask_tokens(tokens, mask_id=mask_id, vocab_size=vocab_size,
                            special_ids=special_ids, mask_prob=mask_prob, generator=generator)
''')},
        "loses": "mask", "fails": MASK,
    },
    # ---- exercise 4, mean pooling
    "pool_averages_the_padding_in": {
        "replace": {"pool": pool("return h.mean(dim=1)")},
        "loses": "pool", "fails": POOL,
    },
    "pool_divides_by_T": {
        "replace": {"pool": edit(POOL_RIGHT, pool, ("/ real.sum(dim=1)", "/ h.shape[1]"))},
        "loses": "pool", "fails": POOL,
    },
    "pool_padding_id_fixed_at_0": {  # right for the self-check's padding id only
        "replace": {"pool": edit(POOL_RIGHT, pool, ("tokens != pad_id", "tokens != 0"))},
        "loses": "pool", "fails": ("pool_hidden",),
    },
    "pool_first_length_positions": {  # the mean of the first n positions: right padding only
        "replace": {"pool": pool('''
n = (tokens != pad_id).sum(dim=1, keepdim=True)  # (B, 1): real tokens per row
first = (torch.arange(tokens.shape[1]) < n).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
return (h * first).sum(dim=1) / n.to(h.dtype)
''')},
        "loses": "pool", "fails": ("pool_hidden",),
    },
    "pool_mask_in_float32": {  # float64 h promotes silently; a float16 or bfloat16 h does not
        "replace": {"pool": edit(POOL_RIGHT, pool, (".to(h.dtype)", ".float()"))},
        "loses": "pool", "fails": ("pool_hidden",),
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"pool": '''
while True:
    pass
'''},
        "loses": "pool", "fails": POOL, "times_out": True,
    },
    "kernel_exits": {"replace": {"loss": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
