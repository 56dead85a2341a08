"""Submissions that tests/test_grading.py grades for the assignment 11_scaling_out.

The mistakes are the classic ones of chapter 11: gradient accumulation that weights each
micro-batch by 1/k instead of its share of the rows, does not weight at all, keeps the stale
gradients, discards them inside the loop, adds the parts' losses and calls backward once (the
right numbers, every part's activations alive), returns a float, an attached loss or the plain
mean of the parts' losses, or steps; loss scaling that checks the first parameter only, skips
without backing off, grows the scale at every step, steps with the scaled gradient, keeps the
count after growing or after an overflow, misses NaN (isinf), trips on a parameter without
gradient, rebinds the parameters instead of changing them, or unscales a copy of the gradients;
gradient averaging that sums without dividing, divides by 2, reduces a copy, reduces the first
parameter only, makes new .grad tensors or trips on a parameter without gradient; sharding that
seeds with the rank, ignores the epoch, draws from the global generator (unseeded, or seeded with
torch.manual_seed), drops or repeats the examples left over, cuts blocks of N // W, or shuffles
within fixed blocks; rounding to bfloat16 that truncates, rounds ties away from or toward zero,
reads bit 15, converts with .to instead of .view, loses NaNs, goes through float16, or makes its
mask on the default device; and calls to the references (tfcourse's shard_batch and
all_reduce_mean, GradScaler, DistributedSampler, Tensor.to(torch.bfloat16)).
"""

from grading_cases import edit, exercises, function

NOTEBOOK = "exercises"

EXERCISES = exercises("accumulate", "scaling", "average", "shard", "bfloat16")

ACCUMULATE = EXERCISES["accumulate"][1]
SCALING = EXERCISES["scaling"][1]
AVERAGE = EXERCISES["average"][1]
SHARD = EXERCISES["shard"][1]
BFLOAT16 = EXERCISES["bfloat16"][1]


def accumulate(body: str) -> str:
    return function("accumulate_gradients(model, loss_fn, inputs, targets, micro_batches)", body)


def scaling(body: str) -> str:
    return function("scaled_sgd_step(params, lr, scale, good_steps, growth_interval=2000, "
                    "growth_factor=2.0, backoff_factor=0.5)", body)


def average(body: str) -> str:
    return function("average_gradients(model)", body)


def shard(body: str) -> str:
    return function("shard_indices(num_examples, rank, world_size, epoch, seed=0)", body)


def bfloat16(body: str) -> str:
    return function("round_to_bfloat16(x)", body)


# The right implementations, written plainly; each mistake below edits one or a few lines.
ACCUMULATE_RIGHT = '''
model.zero_grad()
B = inputs.shape[0]
total = 0
for x, y in zip(torch.tensor_split(inputs, micro_batches),
                torch.tensor_split(targets, micro_batches)):
    loss = loss_fn(model(x), y)
    (loss * len(x) / B).backward()
    total = total + loss.detach() * len(x) / B
return total
'''

SCALING_RIGHT = '''
found_inf = False
with torch.no_grad():
    for p in params:
        if p.grad is not None:
            p.grad /= scale
            if not torch.isfinite(p.grad).all():
                found_inf = True
    if found_inf:
        return scale * backoff_factor, 0, False
    for p in params:
        if p.grad is not None:
            p -= lr * p.grad
good_steps = good_steps + 1
if good_steps == growth_interval:
    return scale * growth_factor, 0, True
return scale, good_steps, True
'''

AVERAGE_RIGHT = '''
size = dist.get_world_size()
for p in model.parameters():
    if p.grad is not None:
        dist.all_reduce(p.grad)
        p.grad /= size
'''

SHARD_RIGHT = '''
g = torch.Generator()
g.manual_seed(1000 * seed + epoch)
order = torch.randperm(num_examples, generator=g)
return torch.tensor_split(order, world_size)[rank]
'''

BFLOAT16_RIGHT = '''
bits = x.view(torch.int32)
lsb = (bits >> 16) & 1
rounded = ((bits + 0x7FFF + lsb) >> 16) << 16
out = rounded.view(torch.float32)
return torch.where(x != x, x, out)
'''


# Correct code written differently from the solution: every exercise at once, twice.
ALTERNATIVE = {
    "accumulate": accumulate('''
# the old gradients set to None by hand; the parts cut by slicing, the losses stacked
for p in model.parameters():
    p.grad = None
n = len(inputs)
sizes = [len(part) for part in torch.arange(n).tensor_split(micro_batches)]
start, losses = 0, []
for size in sizes:
    out = model(inputs[start:start + size])
    loss = loss_fn(out, targets[start:start + size]) * (size / n)
    loss.backward()
    losses.append(loss.detach())
    start += size
return torch.stack(losses).sum()
'''),
    "scaling": scaling('''
# multiply by the inverse scale; one flag for all the gradients; sub_ with alpha
grads = [p.grad for p in params if p.grad is not None]
inverse = 1.0 / scale
for g in grads:
    g.mul_(inverse)
overflow = bool(torch.stack([(~torch.isfinite(g)).any() for g in grads]).any()) if grads \\
    else False
if overflow:
    return scale * backoff_factor, 0, False
with torch.no_grad():
    for p in params:
        if p.grad is not None:
            p.sub_(p.grad, alpha=lr)
count = good_steps + 1
return (scale * growth_factor, 0, True) if count == growth_interval else (scale, count, True)
'''),
    "average": average('''
# one flat buffer for all the gradients, one all_reduce, then copied back (DDP's buckets)
grads = [p.grad for p in model.parameters() if p.grad is not None]
if not grads:
    return
flat = torch.cat([g.reshape(-1) for g in grads])
dist.all_reduce(flat, op=dist.ReduceOp.SUM)
flat /= dist.get_world_size()
offset = 0
for g in grads:
    g.copy_(flat[offset:offset + g.numel()].view_as(g))
    offset += g.numel()
'''),
    "shard": shard('''
# NumPy's generator seeded with (seed, epoch), and contiguous blocks of the order
import numpy as np

order = np.random.default_rng([seed, epoch]).permutation(num_examples)
return torch.from_numpy(np.array_split(order, world_size)[rank].copy())
'''),
    "bfloat16": bfloat16('''
# in float64: count steps of the bfloat16 spacing near x, round half to even, scale back
x64 = x.double()
_, e = torch.frexp(x64)  # |x| = m 2**e with 0.5 <= m < 1
step = torch.exp2((e - 8).clamp(min=-133).double())  # 8 significant bits; 2**-133 below
return (torch.round(x64 / step) * step).float()
'''),
}

ALTERNATIVE_2 = {
    "accumulate": accumulate('''
# zeroed gradients kept as tensors; torch.split with the sizes worked out by divmod
model.zero_grad(set_to_none=False)
B = len(inputs)
q, r = divmod(B, micro_batches)
sizes = [q + 1] * r + [q] * (micro_batches - r)
result = 0
for x, y in zip(inputs.split(sizes), targets.split(sizes)):
    weight = x.shape[0] / B
    part = weight * loss_fn(model(x), y)
    part.backward()
    result = result + part.detach()
return result
'''),
    "scaling": scaling('''
# torch.optim.SGD for the step, isnan | isinf for the check
live = [p for p in params if p.grad is not None]
bad = False
for p in live:
    p.grad.div_(scale)
    bad = bad or bool((torch.isnan(p.grad) | torch.isinf(p.grad)).any())
if bad:
    return float(scale * backoff_factor), 0, False
torch.optim.SGD(live, lr=lr).step()
good_steps += 1
if good_steps < growth_interval:
    return float(scale), good_steps, True
return float(scale * growth_factor), 0, True
'''),
    "average": average('''
# the mean by ReduceOp.AVG, which gloo supports in recent PyTorch
with torch.no_grad():
    for _, p in model.named_parameters():
        if p.grad is None:
            continue
        dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
'''),
    "shard": shard('''
# tfcourse's generator of (seed, step), and the positions rank, rank + W, ... by a mask
from tfcourse.data.batching import step_generator

order = torch.randperm(num_examples, generator=step_generator(seed, epoch))
return order[torch.arange(num_examples) % world_size == rank]
'''),
    "bfloat16": bfloat16('''
# unsigned arithmetic in int64: the 16 high bits, plus one when the low half says so
bits = x.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
high, low = bits >> 16, bits & 0xFFFF
up = (low > 0x8000) | ((low == 0x8000) & ((high & 1) == 1))
rounded = ((high + up.long()) << 16).to(torch.int32).view(torch.float32)
return torch.where(torch.isnan(x), x, rounded)
'''),
}

ZERO = "model.zero_grad()\n"
WEIGHTED = "(loss * len(x) / B).backward()"
TOTAL = "total = total + loss.detach() * len(x) / B"
CHECK = "if not torch.isfinite(p.grad).all():"
BACKOFF = "return scale * backoff_factor, 0, False"
SPLIT = "return torch.tensor_split(order, world_size)[rank]"
SEED = "g.manual_seed(1000 * seed + epoch)"
ROUND = "rounded = ((bits + 0x7FFF + lsb) >> 16) << 16"

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    "alternative_2": {"replace": ALTERNATIVE_2, "loses": None, "fails": ()},
    # ---- exercise 1, gradient accumulation
    "accumulate_divided_by_k": {  # right for equal parts only
        "replace": {"accumulate": edit(ACCUMULATE_RIGHT, accumulate, (
            WEIGHTED, "(loss / micro_batches).backward()"))},
        "loses": "accumulate", "fails": ACCUMULATE,
    },
    "accumulate_not_weighted": {  # the sum of the parts' gradients
        "replace": {"accumulate": edit(ACCUMULATE_RIGHT, accumulate, (WEIGHTED,
                                                                      "loss.backward()"))},
        "loses": "accumulate", "fails": ACCUMULATE,
    },
    "accumulate_stale_gradients": {  # what .grad held before is added in
        "replace": {"accumulate": edit(ACCUMULATE_RIGHT, accumulate, (ZERO, ""))},
        "loses": "accumulate", "fails": ACCUMULATE,
    },
    "accumulate_zeroed_in_the_loop": {  # the last part's gradient alone
        "replace": {"accumulate": edit(ACCUMULATE_RIGHT, accumulate, (ZERO, ""), (
            "    loss = loss_fn(model(x), y)", "    model.zero_grad()\n"
                                              "    loss = loss_fn(model(x), y)"))},
        "loses": "accumulate", "fails": ACCUMULATE,
    },
    "accumulate_summed_backward_once": {  # the right numbers; every part's graph alive
        "replace": {"accumulate": edit(ACCUMULATE_RIGHT, accumulate, (
            "    loss = loss_fn(model(x), y)\n    " + WEIGHTED + "\n    " + TOTAL
            + "\nreturn total",
            "    total = total + loss_fn(model(x), y) * len(x) / B\n"
            "total.backward()\nreturn total.detach()"))},
        "loses": "accumulate", "fails": ("accumulate_hidden",),
    },
    "accumulate_returns_a_float": {
        "replace": {"accumulate": edit(ACCUMULATE_RIGHT, accumulate, ("return total",
                                                                      "return total.item()"))},
        "loses": "accumulate", "fails": ACCUMULATE,
    },
    "accumulate_returns_an_attached_loss": {  # keeps every part's graph alive
        "replace": {"accumulate": edit(ACCUMULATE_RIGHT, accumulate, (
            TOTAL, "total = total + loss * len(x) / B"))},
        "loses": "accumulate", "fails": ("accumulate_hidden",),
    },
    "accumulate_returns_the_plain_mean": {  # the parts' losses weighted 1/k
        "replace": {"accumulate": edit(ACCUMULATE_RIGHT, accumulate, (
            TOTAL, "total = total + loss.detach() / micro_batches"))},
        "loses": "accumulate", "fails": ACCUMULATE,
    },
    "accumulate_steps": {  # an SGD step after the gradients
        "replace": {"accumulate": edit(ACCUMULATE_RIGHT, accumulate, (
            "return total",
            "with torch.no_grad():\n"
            "    for p in model.parameters():\n"
            "        p -= 0.1 * p.grad\n"
            "return total"))},
        "loses": "accumulate", "fails": ACCUMULATE,
    },
    "accumulate_calls_shard_batch": {  # tfcourse's split, equal parts only
        "replace": {"accumulate": accumulate('''
from tfcourse.training import shard_batch

model.zero_grad()
total = 0
for x, y in shard_batch((inputs, targets), 0, 1, micro_batches):
    loss = loss_fn(model(x), y) / micro_batches
    loss.backward()
    total = total + loss.detach()
return total
''')},
        "loses": "accumulate", "fails": ACCUMULATE,
    },
    # ---- exercise 2, loss scaling
    "scaling_first_parameter_only": {  # an inf in a later parameter is missed
        "replace": {"scaling": edit(SCALING_RIGHT, scaling, (
            CHECK, "if p is params[0] and not torch.isfinite(p.grad).all():"))},
        "loses": "scaling", "fails": SCALING,
    },
    "scaling_no_backoff": {  # skips, keeps the scale
        "replace": {"scaling": edit(SCALING_RIGHT, scaling, (BACKOFF, "return scale, 0, False"))},
        "loses": "scaling", "fails": SCALING,
    },
    "scaling_grows_every_step": {
        "replace": {"scaling": edit(SCALING_RIGHT, scaling, (
            "if good_steps == growth_interval:", "if good_steps >= 1:"))},
        "loses": "scaling", "fails": SCALING,
    },
    "scaling_steps_with_the_scaled_gradient": {  # unscaled after the step
        "replace": {"scaling": edit(SCALING_RIGHT, scaling, (
            "            p.grad /= scale\n", ""), (
            "            p -= lr * p.grad", "            p -= lr * p.grad\n"
                                            "            p.grad /= scale"))},
        "loses": "scaling", "fails": SCALING,
    },
    "scaling_count_kept_after_growth": {
        "replace": {"scaling": edit(SCALING_RIGHT, scaling, (
            "return scale * growth_factor, 0, True",
            "return scale * growth_factor, good_steps, True"))},
        "loses": "scaling", "fails": SCALING,
    },
    "scaling_count_kept_after_overflow": {
        "replace": {"scaling": edit(SCALING_RIGHT, scaling, (
            BACKOFF, "return scale * backoff_factor, good_steps, False"))},
        "loses": "scaling", "fails": SCALING,
    },
    "scaling_misses_nan": {  # isinf: a NaN gradient is stepped with
        "replace": {"scaling": edit(SCALING_RIGHT, scaling, (
            CHECK, "if torch.isinf(p.grad).any():"))},
        "loses": "scaling", "fails": ("scaling_hidden",),
    },
    "scaling_trips_on_none": {  # a parameter without gradient raises
        "replace": {"scaling": edit(SCALING_RIGHT, scaling, (
            "        if p.grad is not None:\n            p.grad /= scale\n"
            "            if not torch.isfinite(p.grad).all():\n"
            "                found_inf = True",
            "        p.grad /= scale\n"
            "        if not torch.isfinite(p.grad).all():\n"
            "            found_inf = True"))},
        "loses": "scaling", "fails": ("scaling_hidden",),
    },
    "scaling_rebinds_the_parameters": {  # p = p - ..., the model unchanged
        "replace": {"scaling": edit(SCALING_RIGHT, scaling, ("p -= lr * p.grad",
                                                             "p = p - lr * p.grad"))},
        "loses": "scaling", "fails": SCALING,
    },
    "scaling_unscales_a_copy": {  # the right step; .grad left scaled
        "replace": {"scaling": scaling('''
grads = [None if p.grad is None else p.grad / scale for p in params]
if not all(torch.isfinite(g).all() for g in grads if g is not None):
    return scale * backoff_factor, 0, False
with torch.no_grad():
    for p, g in zip(params, grads):
        if g is not None:
            p -= lr * g
good_steps = good_steps + 1
if good_steps == growth_interval:
    return scale * growth_factor, 0, True
return scale, good_steps, True
''')},
        "loses": "scaling", "fails": ("scaling_hidden",),
    },
    "scaling_calls_grad_scaler": {
        "replace": {"scaling": scaling('''
optimizer = torch.optim.SGD(params, lr=lr)
scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_factor=growth_factor,
                              backoff_factor=backoff_factor, growth_interval=growth_interval)
scaler.scale(torch.ones(()))
scaler._growth_tracker.fill_(good_steps)
scaler.unscale_(optimizer)
found = sum(v.item() for v in scaler._found_inf_per_device(optimizer).values())
scaler.step(optimizer)
scaler.update()
return scaler.get_scale(), scaler._get_growth_tracker(), found == 0
''')},
        "loses": "scaling", "fails": SCALING,
    },
    # ---- exercise 3, averaging the gradients over the ranks
    "average_sum_not_divided": {
        "replace": {"average": edit(AVERAGE_RIGHT, average, ("        p.grad /= size\n", ""))},
        "loses": "average", "fails": AVERAGE,
    },
    "average_divided_by_two": {  # right for the self-check's two ranks only
        "replace": {"average": edit(AVERAGE_RIGHT, average, ("p.grad /= size", "p.grad /= 2"))},
        "loses": "average", "fails": ("average_hidden",),
    },
    "average_reduces_a_copy": {  # .grad unchanged
        "replace": {"average": edit(AVERAGE_RIGHT, average, (
            "dist.all_reduce(p.grad)\n        p.grad /= size",
            "g = p.grad.clone()\n        dist.all_reduce(g)\n        g /= size"))},
        "loses": "average", "fails": AVERAGE,
    },
    "average_first_parameter_only": {
        "replace": {"average": average('''
size = dist.get_world_size()
p = next(model.parameters())
dist.all_reduce(p.grad)
p.grad /= size
''')},
        "loses": "average", "fails": AVERAGE,
    },
    "average_new_tensors": {  # the right values in new .grad tensors
        "replace": {"average": edit(AVERAGE_RIGHT, average, ("p.grad /= size",
                                                             "p.grad = p.grad / size"))},
        "loses": "average", "fails": ("average_hidden",),
    },
    "average_trips_on_none": {  # all_reduce(None) raises on every rank
        "replace": {"average": average('''
size = dist.get_world_size()
for p in model.parameters():
    dist.all_reduce(p.grad)
    p.grad /= size
''')},
        "loses": "average", "fails": ("average_hidden",),
    },
    "average_calls_all_reduce_mean": {
        "replace": {"average": average('''
import tfcourse.distributed

for p in model.parameters():
    if p.grad is not None:
        p.grad.copy_(tfcourse.distributed.all_reduce_mean(p.grad))
''')},
        "loses": "average", "fails": AVERAGE,
    },
    # ---- exercise 4, each rank's share of an epoch
    "shard_seeded_with_the_rank": {  # the ranks' orders differ: overlaps, gaps
        "replace": {"shard": edit(SHARD_RIGHT, shard, (
            SEED, "g.manual_seed(1000 * seed + epoch + rank)"))},
        "loses": "shard", "fails": SHARD,
    },
    "shard_ignores_the_epoch": {
        "replace": {"shard": edit(SHARD_RIGHT, shard, (SEED, "g.manual_seed(1000 * seed)"))},
        "loses": "shard", "fails": SHARD,
    },
    "shard_global_randperm": {  # each call draws another order
        "replace": {"shard": edit(SHARD_RIGHT, shard, (
            "order = torch.randperm(num_examples, generator=g)",
            "order = torch.randperm(num_examples)"))},
        "loses": "shard", "fails": SHARD,
    },
    "shard_global_manual_seed": {  # right shards; the global random state reset
        "replace": {"shard": edit(SHARD_RIGHT, shard, (
            "order = torch.randperm(num_examples, generator=g)",
            "torch.manual_seed(1000 * seed + epoch)\norder = torch.randperm(num_examples)"))},
        "loses": "shard", "fails": ("shard_hidden",),
    },
    "shard_drops_the_remainder": {  # drop_last
        "replace": {"shard": edit(SHARD_RIGHT, shard, (
            SPLIT, "order = order[:num_examples // world_size * world_size]\n" + SPLIT))},
        "loses": "shard", "fails": SHARD,
    },
    "shard_floor_blocks": {  # blocks of N // W lose the tail
        "replace": {"shard": edit(SHARD_RIGHT, shard, (
            SPLIT, "size = num_examples // world_size\n"
                   "return order[rank * size:(rank + 1) * size]"))},
        "loses": "shard", "fails": SHARD,
    },
    "shard_pads_with_repeats": {  # DistributedSampler's default: some examples twice
        "replace": {"shard": edit(SHARD_RIGHT, shard, (
            SPLIT, "order = torch.cat([order, order[:(-num_examples) % world_size]])\n"
                   + SPLIT))},
        "loses": "shard", "fails": SHARD,
    },
    "shard_shuffles_within_fixed_blocks": {  # a rank sees the same examples every epoch
        "replace": {"shard": edit(SHARD_RIGHT, shard, (
            "order = torch.randperm(num_examples, generator=g)\n" + SPLIT,
            "block = torch.tensor_split(torch.arange(num_examples), world_size)[rank]\n"
            "return block[torch.randperm(len(block), generator=g)]"))},
        "loses": "shard", "fails": ("shard_hidden",),
    },
    "shard_calls_distributed_sampler": {
        "replace": {"shard": shard('''
from torch.utils.data import DistributedSampler

sampler = DistributedSampler(range(num_examples), num_replicas=world_size, rank=rank,
                             shuffle=True, seed=seed)
sampler.set_epoch(epoch)
return torch.tensor(list(sampler), dtype=torch.int64)
''')},
        "loses": "shard", "fails": SHARD,
    },
    # ---- exercise 5, rounding to bfloat16
    "bfloat16_truncates": {
        "replace": {"bfloat16": edit(BFLOAT16_RIGHT, bfloat16, (
            ROUND, "rounded = (bits >> 16) << 16"))},
        "loses": "bfloat16", "fails": BFLOAT16,
    },
    "bfloat16_ties_away_from_zero": {
        "replace": {"bfloat16": edit(BFLOAT16_RIGHT, bfloat16, ("+ 0x7FFF + lsb", "+ 0x8000"))},
        "loses": "bfloat16", "fails": BFLOAT16,
    },
    "bfloat16_ties_toward_zero": {
        "replace": {"bfloat16": edit(BFLOAT16_RIGHT, bfloat16, ("+ 0x7FFF + lsb", "+ 0x7FFF"))},
        "loses": "bfloat16", "fails": BFLOAT16,
    },
    "bfloat16_bit_15": {
        "replace": {"bfloat16": edit(BFLOAT16_RIGHT, bfloat16, ("lsb = (bits >> 16) & 1",
                                                               "lsb = (bits >> 15) & 1"))},
        "loses": "bfloat16", "fails": BFLOAT16,
    },
    "bfloat16_converts_with_to": {  # x.to(torch.int32): the values, not the bits
        "replace": {"bfloat16": edit(BFLOAT16_RIGHT, bfloat16, ("bits = x.view(torch.int32)",
                                                               "bits = x.to(torch.int32)"))},
        "loses": "bfloat16", "fails": BFLOAT16,
    },
    "bfloat16_loses_nan": {  # a NaN of all-ones mantissa carries into the sign
        "replace": {"bfloat16": edit(BFLOAT16_RIGHT, bfloat16, (
            "return torch.where(x != x, x, out)", "return out"))},
        "loses": "bfloat16", "fails": ("bfloat16_hidden",),
    },
    "bfloat16_through_float16": {  # 5 bits of exponent, not 8
        "replace": {"bfloat16": bfloat16("return x.half().float()")},
        "loses": "bfloat16", "fails": BFLOAT16,
    },
    "bfloat16_mask_on_the_default_device": {  # right on the CPU; x on a GPU fails
        "replace": {"bfloat16": edit(BFLOAT16_RIGHT, bfloat16, (
            ROUND, "mask = torch.full(x.shape, -65536, dtype=torch.int32)\n"
                   "rounded = (bits + 0x7FFF + lsb) & mask"))},
        "loses": "bfloat16", "fails": ("bfloat16_hidden",),
    },
    "bfloat16_calls_to": {  # PyTorch's own conversion
        "replace": {"bfloat16": bfloat16("return x.to(torch.bfloat16).to(torch.float32)")},
        "loses": "bfloat16", "fails": BFLOAT16,
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"shard": '''
while True:
    pass
'''},
        "loses": "shard", "fails": SHARD, "times_out": True,
    },
    "kernel_exits": {"replace": {"scaling": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
