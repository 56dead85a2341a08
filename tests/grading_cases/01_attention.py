"""Submissions that tests/test_grading.py grades for the assignment 01_attention.

The mistakes are the classic ones of chapter 1: a softmax without the maximum subtracted, with the
maximum not kept as an axis, summed over the wrong axis, deaf to ``dim`` or borrowed from PyTorch;
a causal mask upside down, inverted, without its diagonal, of floats, borrowed from ``tfcourse``,
or made on the default device whatever ``device`` it is given; attention without the scaling,
with the keys transposed on fixed axes, the softmax over the queries, the mask after the softmax,
``-1e9`` for blocked scores (an error in float16), ``nan`` on fully blocked rows, or PyTorch's or
``tfcourse``'s attention called; heads cut with a plain ``view``, merged with ``view`` after a
transpose, or counted from a global; multi-head attention without its output projection, with one
projection for queries, keys and values, scaled by the model width, or PyTorch's layer wrapped.
"""

from grading_cases import exercises, indent

NOTEBOOK = "exercises"

EXERCISES = exercises("softmax", "causal_mask", "attention", "heads", "mha")

SOFTMAX = EXERCISES["softmax"][1]
MASK = EXERCISES["causal_mask"][1]
ATTENTION = EXERCISES["attention"][1]
HEADS = EXERCISES["heads"][1]
MHA = EXERCISES["mha"][1]

MHA_CLASS = '''
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, num_heads):
        super().__init__()
        self.d_model, self.num_heads = d_model, num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x, mask=None):
{body}
'''


def mha(body: str) -> str:
    """The exercise-5 class with ``body`` (unindented lines) as its forward."""
    return MHA_CLASS.format(body=indent(body, 8))


# Correct code written differently from the solution: every exercise at once.
ALTERNATIVE = {
    "softmax": '''
def softmax(x, dim=-1):
    # exp(x - logsumexp(x)) is the softmax, and logsumexp is computed stably by PyTorch
    return torch.exp(x - torch.logsumexp(x, dim=dim, keepdim=True))
''',
    "causal_mask": '''
def causal_mask(T, device=None):
    i = torch.arange(T, device=device)
    # torch.tensor(a tensor) works but warns (UserWarning on stderr): no points may be lost
    return torch.tensor(i[:, None] >= i[None, :])
''',
    "attention": '''
def scaled_dot_product_attention(q, k, v, mask=None):
    work = torch.promote_types(q.dtype, torch.float32)  # float16 and bfloat16 -> float32
    scores = torch.einsum("...td,...sd->...ts", q.to(work), k.to(work)) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = torch.where(mask, scores, torch.finfo(scores.dtype).min)
    weights = softmax(scores)  # mine, from exercise 1, in float32
    if mask is not None:
        weights = weights * mask.any(-1, keepdim=True)
    weights = weights.to(q.dtype)
    return torch.matmul(weights, v), weights
''',
    "heads": '''
def split_heads(x, num_heads):
    B, T, C = x.shape
    return x.reshape(B, T, num_heads, -1).permute(0, 2, 1, 3)

def merge_heads(x):
    return torch.cat(x.unbind(dim=1), dim=-1)
''',
    "mha": mha('''
B, T, C = x.shape
H = self.num_heads
D = C // H
q, k, v = (p(x).reshape(B, T, H, D).transpose(1, 2)
           for p in (self.q_proj, self.k_proj, self.v_proj))
scores = q @ k.transpose(-1, -2) / math.sqrt(D)
if mask is not None:
    scores = scores.masked_fill(mask.logical_not(), -torch.inf)
weights = torch.nan_to_num(scores.softmax(dim=-1), nan=0.0)
out = (weights @ v).transpose(1, 2).reshape(B, T, C)
return self.out_proj(out)'''),
}

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    # ---- exercise 1, softmax
    "softmax_without_max": {
        "replace": {"softmax": '''
def softmax(x, dim=-1):
    e = x.exp()
    return e / e.sum(dim=dim, keepdim=True)
'''},
        "loses": "softmax", "fails": SOFTMAX,
    },
    "softmax_max_without_keepdim": {  # (4, 6) minus a (4,) maximum does not broadcast
        "replace": {"softmax": '''
def softmax(x, dim=-1):
    e = (x - x.max(dim=dim).values).exp()
    return e / e.sum(dim=dim, keepdim=True)
'''},
        "loses": "softmax", "fails": SOFTMAX,
    },
    "softmax_sum_over_wrong_axis": {
        "replace": {"softmax": '''
def softmax(x, dim=-1):
    e = (x - x.amax(dim=dim, keepdim=True)).exp()
    return e / e.sum(dim=0, keepdim=True)
'''},
        "loses": "softmax", "fails": SOFTMAX,
    },
    "softmax_ignores_dim": {
        "replace": {"softmax": '''
def softmax(x, dim=-1):
    e = (x - x.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)
'''},
        "loses": "softmax", "fails": SOFTMAX,
    },
    "softmax_calls_torch": {
        "replace": {"softmax": '''
import torch.nn.functional as F

def softmax(x, dim=-1):
    return F.softmax(x, dim=dim)
'''},
        "loses": "softmax", "fails": SOFTMAX,
    },
    "softmax_through_log_softmax": {
        "replace": {"softmax": '''
def softmax(x, dim=-1):
    return x.log_softmax(dim).exp()
'''},
        "loses": "softmax", "fails": ("softmax_hidden",),
    },
    # ---- exercise 2, causal mask
    "mask_triu": {
        "replace": {"causal_mask": '''
def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).triu()
'''},
        "loses": "causal_mask", "fails": MASK,
    },
    "mask_inverted": {
        "replace": {"causal_mask": '''
def causal_mask(T, device=None):
    return ~torch.ones(T, T, dtype=torch.bool, device=device).tril()
'''},
        "loses": "causal_mask", "fails": MASK,
    },
    "mask_without_diagonal": {
        "replace": {"causal_mask": '''
def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril(diagonal=-1)
'''},
        "loses": "causal_mask", "fails": MASK,
    },
    "mask_float": {
        "replace": {"causal_mask": '''
def causal_mask(T, device=None):
    return torch.tril(torch.ones(T, T, device=device))
'''},
        "loses": "causal_mask", "fails": MASK,
    },
    "mask_from_tfcourse": {
        "replace": {"causal_mask": '''
from tfcourse import causal_mask as _reference_mask

def causal_mask(T, device=None):
    return _reference_mask(T, device=device)
'''},
        "loses": "causal_mask", "fails": MASK,
    },
    "mask_ignores_device": {  # right on the CPU only: on a GPU the mask stays on the CPU
        "replace": {"causal_mask": '''
def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool).tril()
'''},
        "loses": "causal_mask", "fails": ("causal_mask_hidden",),
    },
    # ---- exercise 3, scaled dot-product attention (exercise 5 builds on it, so it fails too)
    "attention_without_scaling": {
        "replace": {"attention": '''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return weights @ v, weights
'''},
        "loses": "attention", "fails": ATTENTION + MHA,
    },
    "attention_transpose_1_2": {  # right for (B, S, D) keys, wrong for (B, H, S, D)
        "replace": {"attention": '''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(1, 2) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return weights @ v, weights
'''},
        "loses": "attention", "fails": ("attention_hidden",) + MHA,
    },
    "attention_softmax_over_queries": {
        "replace": {"attention": '''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-2)
    weights = torch.nan_to_num(weights, nan=0.0)
    return weights @ v, weights
'''},
        "loses": "attention", "fails": ATTENTION + MHA,
    },
    "attention_mask_after_softmax": {
        "replace": {"attention": '''
def scaled_dot_product_attention(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights
'''},
        "loses": "attention", "fails": ATTENTION + MHA,
    },
    "attention_fill_minus_1e9": {  # right in float32, an error in float16
        "replace": {"attention": '''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e9)
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(~mask.any(-1, keepdim=True), 0.0)
    return weights @ v, weights
'''},
        "loses": "attention", "fails": ("attention_hidden",),
    },
    "attention_nan_on_fully_masked_rows": {
        "replace": {"attention": '''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights
'''},
        "loses": "attention", "fails": ("attention_hidden",),
    },
    "attention_calls_pytorch": {
        "replace": {"attention": '''
import torch.nn.functional as F

def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask), weights
'''},
        "loses": "attention", "fails": ATTENTION + MHA,
    },
    "attention_calls_tfcourse": {
        "replace": {"attention": '''
import tfcourse

def scaled_dot_product_attention(q, k, v, mask=None):
    return tfcourse.scaled_dot_product_attention(q, k, v, mask)
'''},
        "loses": "attention", "fails": ATTENTION + MHA,
    },
    # ---- exercise 4, heads (exercise 5 builds on it, so it fails too)
    "heads_view_without_transpose": {
        "replace": {"heads": '''
def split_heads(x, num_heads):
    B, T, C = x.shape
    return x.view(B, num_heads, T, C // num_heads)

def merge_heads(x):
    B, H, T, D = x.shape
    return x.view(B, T, H * D)
'''},
        "loses": "heads", "fails": HEADS + MHA,
    },
    "heads_merge_with_view": {  # view after transpose: not contiguous
        "replace": {"heads": '''
def split_heads(x, num_heads):
    B, T, C = x.shape
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)

def merge_heads(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).view(B, T, H * D)
'''},
        "loses": "heads", "fails": HEADS + MHA,
    },
    "heads_use_a_global_head_count": {  # right only for the H of the self-check
        "replace": {"heads": '''
H = 2  # left over from trying things out

def split_heads(x, num_heads):
    B, T, C = x.shape
    return x.view(B, T, H, C // H).transpose(1, 2)

def merge_heads(x):
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)
'''},
        "loses": "heads", "fails": ("heads_hidden", "mha_hidden"),
    },
    # ---- exercise 5, multi-head attention
    "mha_without_output_projection": {
        "replace": {"mha": mha('''
q = split_heads(self.q_proj(x), self.num_heads)
k = split_heads(self.k_proj(x), self.num_heads)
v = split_heads(self.v_proj(x), self.num_heads)
out, _ = scaled_dot_product_attention(q, k, v, mask)
return merge_heads(out)''')},
        "loses": "mha", "fails": MHA,
    },
    "mha_one_projection_for_q_k_v": {
        "replace": {"mha": mha('''
q = k = v = split_heads(self.q_proj(x), self.num_heads)
out, _ = scaled_dot_product_attention(q, k, v, mask)
return self.out_proj(merge_heads(out))''')},
        "loses": "mha", "fails": MHA,
    },
    "mha_scaled_by_model_width": {  # one big head's scaling: sqrt(C) instead of sqrt(D)
        "replace": {"mha": mha('''
q = split_heads(self.q_proj(x), self.num_heads)
k = split_heads(self.k_proj(x), self.num_heads)
v = split_heads(self.v_proj(x), self.num_heads)
scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_model)
if mask is not None:
    scores = scores.masked_fill(~mask, float("-inf"))
out = torch.softmax(scores, dim=-1) @ v
return self.out_proj(merge_heads(out))''')},
        "loses": "mha", "fails": MHA,
    },
    "mha_calls_pytorch": {
        "replace": {"mha": mha('''
q = split_heads(self.q_proj(x), self.num_heads)
k = split_heads(self.k_proj(x), self.num_heads)
v = split_heads(self.v_proj(x), self.num_heads)
out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
return self.out_proj(merge_heads(out))''')},
        "loses": "mha", "fails": MHA,
    },
    "mha_wraps_nn_multiheadattention": {
        "replace": {"mha": mha('''
torch_mha = nn.MultiheadAttention(self.d_model, self.num_heads, batch_first=True)
torch_mha = torch_mha.to(x.dtype)
projections = (self.q_proj, self.k_proj, self.v_proj)
with torch.no_grad():
    torch_mha.in_proj_weight.copy_(torch.cat([p.weight for p in projections]))
    torch_mha.in_proj_bias.copy_(torch.cat([p.bias for p in projections]))
    torch_mha.out_proj.load_state_dict(self.out_proj.state_dict())
B, T, _ = x.shape
blocked = None  # nn.MultiheadAttention: True = blocked, one (T, T) mask per batch and head
if mask is not None:
    blocked = ~mask.expand(B, self.num_heads, T, T).reshape(B * self.num_heads, T, T)
return torch_mha(x, x, x, attn_mask=blocked, need_weights=False)[0]''')},
        "loses": "mha", "fails": MHA,
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"causal_mask": '''
while True:
    pass

def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()
'''},
        "loses": "causal_mask", "fails": MASK, "times_out": True,
    },
    "kernel_exits": {"replace": {"heads": "import os\nos._exit(1)\n"}, "kernel_dies": True},
    "kernel_killed": {
        "replace": {"softmax": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"},
        "kernel_dies": True,
    },
}
