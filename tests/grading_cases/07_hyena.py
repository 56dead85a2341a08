"""Submissions that tests/test_grading.py grades for the assignment 07_hyena.

The mistakes are the classic ones of chapter 7: a convolution by FFT that is circular (n = T),
keeps 2T outputs, divides by n twice or mixes the normalisations, drops n from an odd-length
irfft, computes float64 in float32, feeds half precision to the CPU FFT or returns float32 for
it, assumes a filter of T taps, returns a complex tensor, sums the taps instead of using the FFT,
or computes without gradients; a short convolution padded on both sides (K // 2, "same") or on
the right, without groups, not cut back to T, with a flipped weight or without its bias; an
implicit filter with positions over T instead of max_len, a window over t instead of t/max_len or
along the wrong axis, +sin instead of -sin, features interleaved, positions not normalised,
without 2π, reshaped instead of transposed, left as (T, C), or made in float32 only; a Hyena
recurrence that gates before the convolution, takes the gates or the filters in reverse, drops
the skip or puts it outside the gate, broadcasts it along the wrong axis, convolves circularly or
knows two gates only; a causality test that compares exactly, changes the input at t too,
compares every output, tries the middle cut only or skips cut 0, changes the caller's tensor,
forgets the absolute value, compares the mean change instead of the largest, uses
torch.allclose with its default rtol (large outputs hide a leak), changes one channel or the
first batch row only, ignores atol or returns a tensor; and calls to the reference.
"""

from grading_cases import edit, exercises, function

NOTEBOOK = "exercises"

EXERCISES = exercises("fft", "short", "filter", "operator", "leak")

FFT = EXERCISES["fft"][1]
SHORT = EXERCISES["short"][1]
FILTER = EXERCISES["filter"][1]
OPERATOR = EXERCISES["operator"][1]
LEAK = EXERCISES["leak"][1]


def fft(body: str) -> str:
    return function("fft_causal_conv(u, k)", body)


def short(body: str) -> str:
    return function("short_causal_conv(x, weight, bias)", body)


def filt(body: str) -> str:
    return function("implicit_filter(ffn, T, max_len, frequencies, alpha)", body)


def operator(body: str) -> str:
    return function("hyena_operator(v, gates, filters, skips)", body)


def leak(body: str) -> str:
    return function("leaks_future(op, x, atol=1e-5)", body)


# The right implementations, written plainly; each mistake below edits one or a few lines.
FFT_RIGHT = '''
T = u.shape[-1]
n = 2 * T
work = torch.promote_types(u.dtype, torch.float32)
u_f = torch.fft.rfft(u.to(work), n=n)
k_f = torch.fft.rfft(k.to(work), n=n)
y = torch.fft.irfft(u_f * k_f, n=n)[..., :T]
return y.to(u.dtype)
'''

SHORT_RIGHT = '''
K = weight.shape[-1]
padded = F.pad(x, (K - 1, 0))
return F.conv1d(padded, weight, bias, groups=x.shape[1])
'''

FILTER_RIGHT = '''
pos = torch.arange(T, dtype=alpha.dtype) / max_len
angle = 2 * math.pi * pos[:, None] * frequencies[None, :]
z = torch.cat([pos[:, None], torch.cos(angle), -torch.sin(angle)], dim=-1)
h = ffn(z).transpose(0, 1)
return h * torch.exp(-alpha[:, None] * pos[None, :])
'''

OPERATOR_RIGHT = '''
z = v
for n, gate in enumerate(gates):
    long = tfcourse.fft_causal_conv(z, filters[n])
    z = gate * (long + skips[n, :, None] * z)
return z
'''

LEAK_RIGHT = '''
T = x.shape[-1]
with torch.no_grad():
    base = op(x)
    for t in range(T - 1):
        changed = x.clone()
        changed[..., t + 1:] += 1.0
        moved = (op(changed) - base)[..., :t + 1].abs()
        if moved.max() > atol:
            return True
return False
'''


# Correct code written differently from the solution: every exercise at once, three times.
ALTERNATIVE = {
    "fft": fft('''
# complex FFTs of n = 2T - 1 points, the least that holds the linear convolution; the real part
T = u.shape[-1]
n = 2 * T - 1
work = torch.float64 if u.dtype == torch.float64 else torch.float32
spectrum = torch.fft.fft(u.to(work), n=n) * torch.fft.fft(k.to(work), n=n)
return torch.fft.ifft(spectrum).real[..., :T].to(u.dtype)
'''),
    "short": short('''
# zeros concatenated on the left, then one shifted copy of x per tap
B, C, T = x.shape
K = weight.shape[-1]
padded = torch.cat([x.new_zeros(B, C, K - 1), x], dim=-1)  # (B, C, T + K - 1)
out = bias[None, :, None].expand(B, C, T)
for j in range(K):
    out = out + weight[None, :, 0, j, None] * padded[..., j:j + T]
return out
'''),
    "filter": filt('''
# the window as (T, C), applied before the transpose
t = torch.arange(T, dtype=alpha.dtype)
pos = t / max_len
phases = pos.unsqueeze(-1) * frequencies * (2 * math.pi)  # (T, E')
features = torch.cat((pos.unsqueeze(-1), phases.cos(), phases.sin().neg()), dim=-1)
windowed = ffn(features) * torch.exp(-torch.outer(pos, alpha))  # (T, C)
return windowed.T
'''),
    "operator": operator('''
# no loop: the steps folded over (gate, filter, skip)
import functools


def step(z, parts):
    gate, h, b = parts
    return gate * (tfcourse.fft_causal_conv(z, h) + b.unsqueeze(-1) * z)


return functools.reduce(step, zip(gates, filters, skips), v)
'''),
    "leak": leak('''
# every cut at once: T - 1 changed copies in one batch, noise after the cut
B, C, T = x.shape
if T < 2:
    return False
future = torch.arange(T)[None, :] > torch.arange(T - 1)[:, None]  # (cuts, T): after the cut
with torch.no_grad():
    base = op(x)
    copies = x.unsqueeze(0).repeat(T - 1, 1, 1, 1)  # (cuts, B, C, T)
    noise = torch.randn_like(copies)
    copies = torch.where(future[:, None, None, :], noise, copies)
    out = op(copies.reshape((T - 1) * B, C, T)).reshape(T - 1, B, C, T)
moved = (out - base).abs()
past = ~future  # (cuts, T): at or before the cut
return bool((moved[past[:, None, None, :].expand_as(moved)] > atol).any())
'''),
}

ALTERNATIVE_2 = {
    "fft": fft('''
# the next power of two, both inputs padded by hand
T = u.shape[-1]
n = 1
while n < 2 * T - 1:
    n *= 2
work = torch.promote_types(u.dtype, torch.float32)
u_pad = F.pad(u.to(work), (0, n - T))
k_pad = F.pad(k.to(work), (0, n - k.shape[-1]))
y = torch.fft.irfft(torch.fft.rfft(u_pad) * torch.fft.rfft(k_pad), n=n)
return y[..., :T].to(dtype=u.dtype)
'''),
    "short": short('''
# conv1d pads K - 1 on both sides; the first T outputs are the causal ones
K = weight.shape[-1]
T = x.shape[-1]
full = F.conv1d(x, weight, bias, padding=K - 1, groups=weight.shape[0])
return full[..., :T]
'''),
    "filter": filt('''
C = alpha.shape[0]
t = torch.arange(T).to(alpha.dtype)
cos = [torch.cos(2 * math.pi * f * t / max_len) for f in frequencies]
sin = [-torch.sin(2 * math.pi * f * t / max_len) for f in frequencies]
z = torch.stack([t / max_len, *cos, *sin], dim=1)  # (T, E)
h = ffn(z).permute(1, 0)  # (C, T)
window = torch.exp(-alpha.view(C, 1) * t.view(1, T) / max_len)
return h * window
'''),
    "operator": operator('''
# the convolution of Exercise 1, the notebook's own
z = v
for gate, h, b in zip(gates, filters, skips):
    z = (fft_causal_conv(z, h) + b[:, None] * z) * gate
return z
'''),
    "leak": leak('''
# noise after each cut; allclose with rtol=0 is |a - b| <= atol
T = x.shape[-1]
reference = op(x.detach()).detach()
for cut in range(1, T):
    probe = x.detach().clone()
    probe[:, :, cut:] = torch.randn(probe[:, :, cut:].shape, dtype=x.dtype)
    out = op(probe).detach()
    if not torch.allclose(out[..., :cut], reference[..., :cut], rtol=0.0, atol=atol):
        return True
return False
'''),
}

ALTERNATIVE_3 = {
    "fft": fft('''
# the normalisations in a matching pair: k's transform divided by n, an inverse that does not
T = u.shape[-1]
n = 2 * T
work = torch.promote_types(u.dtype, torch.float32)
spectrum = torch.fft.rfft(u.to(work), n=n) * torch.fft.rfft(k.to(work), n=n, norm="forward")
return torch.fft.irfft(spectrum, n=n, norm="forward").narrow(-1, 0, T).to(u.dtype)
'''),
    "short": short('''
# the windows of K positions, unfolded, against the taps
K = weight.shape[-1]
windows = F.pad(x, (K - 1, 0)).unfold(-1, K, 1)  # (B, C, T, K)
return torch.einsum("bctk,ck->bct", windows, weight[:, 0]) + bias[:, None]
'''),
    "filter": filt('''
pos = torch.arange(T, dtype=alpha.dtype).unsqueeze(1) / max_len  # (T, 1)
angles = 2 * math.pi * frequencies * pos  # (T, E')
feats = torch.hstack([pos, torch.cos(angles), -torch.sin(angles)])
decay = torch.exp(-alpha.unsqueeze(1) * pos.T)  # (C, T)
return torch.einsum("tc->ct", ffn(feats)) * decay
'''),
    "operator": operator('''
z = v
N = filters.shape[0]
for n in range(N):
    y = tfcourse.fft_causal_conv(z, filters[n])
    y = y + skips[n].view(1, -1, 1) * z
    z = torch.mul(gates[n], y)
return z
'''),
    "leak": leak('''
import torch.nn.functional as F

T = x.shape[-1]
found = False
with torch.no_grad():
    before = op(x)
    for t in range(T - 2, -1, -1):  # the cuts from the end
        head = x[..., :t + 1]
        tail = x[..., t + 1:] * -3.0 + 0.5
        after = op(torch.cat([head, tail], dim=-1))
        if F.l1_loss(after[..., :t + 1], before[..., :t + 1], reduction="none").amax() > atol:
            found = True
            break
return found
'''),
}

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    "alternative_2": {"replace": ALTERNATIVE_2, "loses": None, "fails": ()},
    "alternative_3": {"replace": ALTERNATIVE_3, "loses": None, "fails": ()},
    # ---- exercise 1, the convolution by FFT
    "fft_circular": {  # n = T: the wrapped taps read the future
        "replace": {"fft": edit(FFT_RIGHT, fft, ("n = 2 * T", "n = T"))},
        "loses": "fft", "fails": FFT,
    },
    "fft_not_cut_back": {  # 2T outputs
        "replace": {"fft": edit(FFT_RIGHT, fft, ("irfft(u_f * k_f, n=n)[..., :T]",
                                                 "irfft(u_f * k_f, n=n)"))},
        "loses": "fft", "fails": FFT,
    },
    "fft_divided_by_n_twice": {
        "replace": {"fft": edit(FFT_RIGHT, fft, ("[..., :T]\n", "[..., :T] / n\n"))},
        "loses": "fft", "fails": FFT,
    },
    "fft_forward_norm_both_ways": {  # divides by n on the way in, and never on the way out
        "replace": {"fft": edit(FFT_RIGHT, fft, ("rfft(u.to(work), n=n)",
                                                 "rfft(u.to(work), n=n, norm=\"forward\")"),
                                ("rfft(k.to(work), n=n)",
                                 "rfft(k.to(work), n=n, norm=\"forward\")"),
                                ("irfft(u_f * k_f, n=n)",
                                 "irfft(u_f * k_f, n=n, norm=\"forward\")"))},
        "loses": "fft", "fails": FFT,
    },
    "fft_ortho_forward_only": {  # ortho on both forward transforms, the default inverse
        "replace": {"fft": edit(FFT_RIGHT, fft, ("rfft(u.to(work), n=n)",
                                                 "rfft(u.to(work), n=n, norm=\"ortho\")"),
                                ("rfft(k.to(work), n=n)",
                                 "rfft(k.to(work), n=n, norm=\"ortho\")"))},
        "loses": "fft", "fails": FFT,
    },
    "fft_odd_n_without_n_in_irfft": {  # irfft returns 2(m - 1) = 2T - 2 points, not n
        "replace": {"fft": edit(FFT_RIGHT, fft, ("n = 2 * T", "n = 2 * T - 1"),
                                ("irfft(u_f * k_f, n=n)", "irfft(u_f * k_f)"))},
        "loses": "fft", "fails": FFT,
    },
    "fft_always_float32": {  # float64 loses its digits
        "replace": {"fft": edit(FFT_RIGHT, fft, (
            "work = torch.promote_types(u.dtype, torch.float32)", "work = torch.float32"))},
        "loses": "fft", "fails": FFT,
    },
    "fft_half_precision_as_is": {  # the CPU FFT has no float16 or bfloat16 kernels
        "replace": {"fft": edit(FFT_RIGHT, fft, (
            "work = torch.promote_types(u.dtype, torch.float32)", "work = u.dtype"))},
        "loses": "fft", "fails": ("fft_hidden",),
    },
    "fft_returns_float32_for_half": {
        "replace": {"fft": edit(FFT_RIGHT, fft, ("return y.to(u.dtype)", "return y"))},
        "loses": "fft", "fails": ("fft_hidden",),
    },
    "fft_filter_of_T_taps_assumed": {  # both padded by T by hand: k of T' < T taps breaks
        "replace": {"fft": edit(FFT_RIGHT, fft, (
            "u_f = torch.fft.rfft(u.to(work), n=n)\nk_f = torch.fft.rfft(k.to(work), n=n)",
            "u_f = torch.fft.rfft(F.pad(u.to(work), (0, T)))\n"
            "k_f = torch.fft.rfft(F.pad(k.to(work), (0, T)))"))},
        "loses": "fft", "fails": ("fft_hidden",),
    },
    "fft_complex_output": {  # fft and ifft without the real part
        "replace": {"fft": fft('''
T = u.shape[-1]
n = 2 * T
spectrum = torch.fft.fft(u, n=n) * torch.fft.fft(k, n=n)
return torch.fft.ifft(spectrum)[..., :T]
''')},
        "loses": "fft", "fails": FFT,
    },
    "fft_sum_over_the_taps": {  # right values, O(T²), no FFT
        "replace": {"fft": fft('''
T = u.shape[-1]
y = torch.zeros_like(u)
for s in range(k.shape[-1]):
    y = y + F.pad(u[..., :T - s], (s, 0)) * k[:, s, None]
return y
''')},
        "loses": "fft", "fails": ("fft_hidden",),
    },
    "fft_without_gradients": {
        "replace": {"fft": edit(FFT_RIGHT, fft, (
            "y = torch.fft.irfft(u_f * k_f, n=n)[..., :T]",
            "with torch.no_grad():\n    y = torch.fft.irfft(u_f * k_f, n=n)[..., :T]"))},
        "loses": "fft", "fails": ("fft_hidden",),
    },
    "fft_calls_tfcourse": {
        "replace": {"fft": fft("return tfcourse.fft_causal_conv(u, k)")},
        "loses": "fft", "fails": FFT,
    },
    "fft_conv1d": {  # conv1d with the taps flipped and K - 1 zeros on the left
        "replace": {"fft": fft('''
T = u.shape[-1]
taps = k.shape[-1]
return F.conv1d(F.pad(u, (taps - 1, 0)), k.flip(-1)[:, None], groups=u.shape[1])
''')},
        "loses": "fft", "fails": FFT,
    },
    # ---- exercise 2, the short convolution
    "short_symmetric_padding": {  # padding=K // 2: position t reads t + 1
        "replace": {"short": edit(SHORT_RIGHT, short, (
            "padded = F.pad(x, (K - 1, 0))\nreturn F.conv1d(padded, weight, bias, "
            "groups=x.shape[1])",
            "return F.conv1d(x, weight, bias, padding=K // 2, groups=x.shape[1])"))},
        "loses": "short", "fails": SHORT,
    },
    "short_same_padding": {
        "replace": {"short": edit(SHORT_RIGHT, short, (
            "padded = F.pad(x, (K - 1, 0))\nreturn F.conv1d(padded, weight, bias, "
            "groups=x.shape[1])",
            "return F.conv1d(x, weight, bias, padding=\"same\", groups=x.shape[1])"))},
        "loses": "short", "fails": SHORT,
    },
    "short_padded_on_the_right": {
        "replace": {"short": edit(SHORT_RIGHT, short, ("F.pad(x, (K - 1, 0))",
                                                       "F.pad(x, (0, K - 1))"))},
        "loses": "short", "fails": SHORT,
    },
    "short_without_groups": {  # right with one channel only
        "replace": {"short": edit(SHORT_RIGHT, short, (", groups=x.shape[1])", ")"))},
        "loses": "short", "fails": SHORT,
    },
    "short_not_cut_back": {  # T + K - 1 outputs
        "replace": {"short": edit(SHORT_RIGHT, short, (
            "padded = F.pad(x, (K - 1, 0))\nreturn F.conv1d(padded, weight, bias, "
            "groups=x.shape[1])",
            "return F.conv1d(x, weight, bias, padding=K - 1, groups=x.shape[1])"))},
        "loses": "short", "fails": SHORT,
    },
    "short_weight_flipped": {
        "replace": {"short": edit(SHORT_RIGHT, short, ("F.conv1d(padded, weight,",
                                                       "F.conv1d(padded, weight.flip(-1),"))},
        "loses": "short", "fails": SHORT,
    },
    "short_without_bias": {
        "replace": {"short": edit(SHORT_RIGHT, short, ("F.conv1d(padded, weight, bias,",
                                                       "F.conv1d(padded, weight, None,"))},
        "loses": "short", "fails": SHORT,
    },
    "short_calls_tfcourse": {
        "replace": {"short": short('''
layer = tfcourse.ShortConv(x.shape[1], weight.shape[-1]).to(x.dtype)
layer.conv.weight = torch.nn.Parameter(weight)
layer.conv.bias = torch.nn.Parameter(bias)
return layer(x)
''')},
        "loses": "short", "fails": SHORT,
    },
    # ---- exercise 3, the implicit filter
    "filter_positions_over_T": {  # a shorter filter is no longer a prefix of the longer one
        "replace": {"filter": edit(FILTER_RIGHT, filt, ("/ max_len", "/ T"))},
        "loses": "filter", "fails": FILTER,
    },
    "filter_window_over_t": {  # exp(-alpha t): the window has gone after a few taps
        "replace": {"filter": edit(FILTER_RIGHT, filt, (
            "torch.exp(-alpha[:, None] * pos[None, :])",
            "torch.exp(-alpha[:, None] * (pos * max_len)[None, :])"))},
        "loses": "filter", "fails": FILTER,
    },
    "filter_window_along_the_positions": {  # alpha (C,) against t (T,): wrong unless C = T
        "replace": {"filter": edit(FILTER_RIGHT, filt, (
            "torch.exp(-alpha[:, None] * pos[None, :])", "torch.exp(-alpha * pos)"))},
        "loses": "filter", "fails": FILTER,
    },
    "filter_plus_sin": {
        "replace": {"filter": edit(FILTER_RIGHT, filt, ("-torch.sin(angle)",
                                                        "torch.sin(angle)"))},
        "loses": "filter", "fails": FILTER,
    },
    "filter_features_interleaved": {  # cos f1, -sin f1, cos f2, ...: not the network's order
        "replace": {"filter": edit(FILTER_RIGHT, filt, (
            "torch.cat([pos[:, None], torch.cos(angle), -torch.sin(angle)], dim=-1)",
            "torch.cat([pos[:, None], torch.stack([torch.cos(angle), -torch.sin(angle)], "
            "dim=-1).flatten(1)], dim=-1)"))},
        "loses": "filter", "fails": FILTER,
    },
    "filter_first_feature_not_normalised": {  # t instead of t / max_len
        "replace": {"filter": edit(FILTER_RIGHT, filt, ("torch.cat([pos[:, None],",
                                                        "torch.cat([pos[:, None] * max_len,"))},
        "loses": "filter", "fails": FILTER,
    },
    "filter_without_two_pi": {
        "replace": {"filter": edit(FILTER_RIGHT, filt, ("angle = 2 * math.pi * pos",
                                                        "angle = pos"))},
        "loses": "filter", "fails": FILTER,
    },
    "filter_reshaped_not_transposed": {
        "replace": {"filter": edit(FILTER_RIGHT, filt, ("ffn(z).transpose(0, 1)",
                                                        "ffn(z).reshape(alpha.shape[0], T)"))},
        "loses": "filter", "fails": FILTER,
    },
    "filter_left_as_T_by_C": {  # window as (T, C), never transposed
        "replace": {"filter": edit(FILTER_RIGHT, filt, (
            "h = ffn(z).transpose(0, 1)\nreturn h * torch.exp(-alpha[:, None] * pos[None, :])",
            "return ffn(z) * torch.exp(-pos[:, None] * alpha[None, :])"))},
        "loses": "filter", "fails": FILTER,
    },
    "filter_positions_in_float32": {  # a float64 network meets float32 features
        "replace": {"filter": edit(FILTER_RIGHT, filt, ("torch.arange(T, dtype=alpha.dtype)",
                                                        "torch.arange(T, dtype=torch.float32)"))},
        "loses": "filter", "fails": ("filter_hidden",),
    },
    "filter_without_gradients": {
        "replace": {"filter": edit(FILTER_RIGHT, filt, (
            "h = ffn(z).transpose(0, 1)",
            "with torch.no_grad():\n    h = ffn(z).transpose(0, 1)"))},
        "loses": "filter", "fails": ("filter_hidden",),
    },
    "filter_calls_tfcourse": {  # the features of tfcourse.hyena.positional_features
        "replace": {"filter": edit(FILTER_RIGHT, filt, (
            "z = torch.cat([pos[:, None], torch.cos(angle), -torch.sin(angle)], dim=-1)",
            "z = tfcourse.hyena.positional_features(T, 2 * len(frequencies) + 1, max_len)"
            ".to(alpha.dtype)"))},
        "loses": "filter", "fails": FILTER,
    },
    # ---- exercise 4, the recurrence
    "operator_gate_before_the_convolution": {
        "replace": {"operator": edit(OPERATOR_RIGHT, operator, (
            "long = tfcourse.fft_causal_conv(z, filters[n])\n"
            "    z = gate * (long + skips[n, :, None] * z)",
            "z = gate * z\n    z = tfcourse.fft_causal_conv(z, filters[n]) "
            "+ skips[n, :, None] * z"))},
        "loses": "operator", "fails": OPERATOR,
    },
    "operator_gates_reversed": {  # right for order 1 only
        "replace": {"operator": edit(OPERATOR_RIGHT, operator, ("enumerate(gates)",
                                                                "enumerate(gates[::-1])"))},
        "loses": "operator", "fails": OPERATOR,
    },
    "operator_filters_reversed": {
        "replace": {"operator": edit(OPERATOR_RIGHT, operator, ("filters[n]",
                                                                "filters[-1 - n]"))},
        "loses": "operator", "fails": OPERATOR,
    },
    "operator_without_skip": {
        "replace": {"operator": edit(OPERATOR_RIGHT, operator, (
            "z = gate * (long + skips[n, :, None] * z)", "z = gate * long"))},
        "loses": "operator", "fails": OPERATOR,
    },
    "operator_skip_outside_the_gate": {
        "replace": {"operator": edit(OPERATOR_RIGHT, operator, (
            "z = gate * (long + skips[n, :, None] * z)",
            "z = gate * long + skips[n, :, None] * z"))},
        "loses": "operator", "fails": OPERATOR,
    },
    "operator_skip_along_the_positions": {  # skips[n] (C,) against (B, C, T)
        "replace": {"operator": edit(OPERATOR_RIGHT, operator, ("skips[n, :, None] * z",
                                                                "skips[n] * z"))},
        "loses": "operator", "fails": OPERATOR,
    },
    "operator_circular_convolution": {
        "replace": {"operator": edit(OPERATOR_RIGHT, operator, (
            "long = tfcourse.fft_causal_conv(z, filters[n])",
            "long = torch.fft.irfft(torch.fft.rfft(z) * torch.fft.rfft(filters[n]), "
            "n=z.shape[-1])"))},
        "loses": "operator", "fails": OPERATOR,
    },
    "operator_two_gates_only": {  # the paper's order 2, written out
        "replace": {"operator": operator('''
x1, x2 = gates
z = x1 * (tfcourse.fft_causal_conv(v, filters[0]) + skips[0, :, None] * v)
return x2 * (tfcourse.fft_causal_conv(z, filters[1]) + skips[1, :, None] * z)
''')},
        "loses": "operator", "fails": ("operator_hidden",),
    },
    # ---- exercise 5, the causality test
    "leak_exact_comparison": {  # rounding of about 1e-7 counted as a leak
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("if moved.max() > atol:",
                                                    "if moved.max() > 0:"))},
        "loses": "leak", "fails": LEAK,
    },
    "leak_torch_equal": {
        "replace": {"leak": edit(LEAK_RIGHT, leak, (
            "moved = (op(changed) - base)[..., :t + 1].abs()\n        if moved.max() > atol:",
            "if not torch.equal(op(changed)[..., :t + 1], base[..., :t + 1]):"))},
        "loses": "leak", "fails": LEAK,
    },
    "leak_changes_the_input_at_t": {  # every operator that reads x_t seems to leak
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("changed[..., t + 1:] += 1.0",
                                                    "changed[..., t:] += 1.0"))},
        "loses": "leak", "fails": LEAK,
    },
    "leak_compares_every_output": {
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("(op(changed) - base)[..., :t + 1].abs()",
                                                    "(op(changed) - base).abs()"))},
        "loses": "leak", "fails": LEAK,
    },
    "leak_middle_cut_only": {  # the second half changed, the first half compared
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("for t in range(T - 1):",
                                                    "for t in [T // 2 - 1]:"))},
        "loses": "leak", "fails": ("leak_hidden",),
    },
    "leak_changes_x_in_place": {  # no copy: the changes pile up in x
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("changed = x.clone()", "changed = x"))},
        "loses": "leak", "fails": LEAK,
    },
    "leak_without_abs": {  # a change of the outputs downwards goes unseen
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("[..., :t + 1].abs()", "[..., :t + 1]"))},
        "loses": "leak", "fails": ("leak_hidden",),
    },
    "leak_atol_ignored": {
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("if moved.max() > atol:",
                                                    "if moved.max() > 1e-5:"))},
        "loses": "leak", "fails": ("leak_hidden",),
    },
    "leak_skips_cut_0": {  # misses a leak into position 0 alone (the only cut when T = 2)
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("for t in range(T - 1):",
                                                    "for t in range(1, T - 1):"))},
        "loses": "leak", "fails": ("leak_hidden",),
    },
    "leak_mean_change": {  # a faint leak at one position is averaged away
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("if moved.max() > atol:",
                                                    "if moved.mean() > atol:"))},
        "loses": "leak", "fails": ("leak_hidden",),
    },
    "leak_allclose_default_rtol": {  # |a - b| <= atol + 1e-5 |b|: large outputs hide a leak
        "replace": {"leak": edit(LEAK_RIGHT, leak, (
            "moved = (op(changed) - base)[..., :t + 1].abs()\n        if moved.max() > atol:",
            "if not torch.allclose(op(changed)[..., :t + 1], base[..., :t + 1], atol=atol):"))},
        "loses": "leak", "fails": ("leak_hidden",),
    },
    "leak_one_channel_changed": {  # misses a leak through another channel
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("changed[..., t + 1:] += 1.0",
                                                    "changed[:, 0, t + 1:] += 1.0"))},
        "loses": "leak", "fails": ("leak_hidden",),
    },
    "leak_first_row_only": {  # misses an operator that leaks in some batch rows only
        "replace": {"leak": edit(LEAK_RIGHT, leak, ("changed[..., t + 1:] += 1.0",
                                                    "changed[0, :, t + 1:] += 1.0"))},
        "loses": "leak", "fails": ("leak_hidden",),
    },
    "leak_returns_a_tensor": {
        "replace": {"leak": edit(LEAK_RIGHT, leak, (
            "    base = op(x)", "    base = op(x)\n    found = torch.tensor(False)"), (
            "        if moved.max() > atol:\n            return True\nreturn False",
            "        found = found | (moved.max() > atol)\nreturn found"))},
        "loses": "leak", "fails": LEAK,
    },
    "leak_calls_tfcourse": {  # the contract check of the course, its failure caught
        "replace": {"leak": leak('''
try:
    tfcourse.checks.expect_causal(op, x, dim=-1, atol=atol)
except AssertionError:
    return True
return False
''')},
        "loses": "leak", "fails": LEAK,
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"leak": '''
while True:
    pass
'''},
        "loses": "leak", "fails": LEAK, "times_out": True,
    },
    "kernel_exits": {"replace": {"short": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
