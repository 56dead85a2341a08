"""Submissions that tests/test_grading.py grades for the assignment 08_mamba.

The mistakes are the classic ones of chapter 8: a discretisation with exp(A) instead of exp(ΔA),
ΔA or 1 + ΔA for Ā, Euler's B̄ = ΔB where the zero-order hold is asked, B̄ without its Δ, Δ
broadcast along the state instead of the channels, two named leading dimensions, or no
gradients; Δ without its softplus, with the softplus before the bias, without the bias, or with
exp for the softplus, A = exp(A_log) or −A_log, B and C swapped, x_proj's outputs split in the
wrong order, an nn.Linear weight not transposed, a fixed (B, T) layout; a selective scan that
reads the state before updating it, drops D x, decays by exp(A), negates A again, forgets Δ on B
x, takes the zero-order hold's B̄, sums over the channels, updates the state in place, or starts
from a state made in float32 or on the default device; a parallel scan that never updates a,
uses the new a in the same round, composes in the wrong order, stops one round short, loops over
the positions, divides by cumulative products, writes into its inputs, or pads with ones and
zeros in float32 or on the default device (float16 comes back as float32; inputs on a GPU fail);
a decoding step that reads the SSM state before updating it, keeps the oldest convolution inputs
or puts the newest first, centres the convolution (padding="same"), flips the weight, drops the
convolution's bias or its SiLU, the gate or its SiLU, swaps u and z, drops D, writes into the
caller's states, detaches them, or assumes K > 1; and calls to the reference.
"""

from grading_cases import edit, exercises, function

NOTEBOOK = "exercises"

EXERCISES = exercises("discretize", "params", "selective", "parallel", "step")

DISCRETIZE = EXERCISES["discretize"][1]
PARAMS = EXERCISES["params"][1]
SELECTIVE = EXERCISES["selective"][1]
PARALLEL = EXERCISES["parallel"][1]
STEP = EXERCISES["step"][1]


def discretize(body: str) -> str:
    return function("discretize(delta, A, B)", body)


def params(body: str) -> str:
    return function("ssm_parameters(x, x_proj_weight, dt_proj_weight, dt_proj_bias, A_log)", body)


def selective(body: str) -> str:
    return function("selective_scan(x, delta, A, B, C, D)", body)


def parallel(body: str) -> str:
    return function("linear_recurrence_scan(a, b)", body)


def step(body: str) -> str:
    return function("mamba_step(mixer, x_t, conv_state, ssm_state)", body)


# The right implementations, written plainly; each mistake below edits one or a few lines.
DISCRETIZE_RIGHT = '''
dA = delta[..., :, None] * A
dB = delta[..., :, None] * B[..., None, :]
A_bar = torch.exp(dA)
B_bar = torch.expm1(dA) / dA * dB
return A_bar, B_bar
'''

PARAMS_RIGHT = '''
N, R = A_log.shape[1], dt_proj_weight.shape[1]
d, B, C = (x @ x_proj_weight.T).split([R, N, N], dim=-1)
delta = F.softplus(d @ dt_proj_weight.T + dt_proj_bias)
A = -torch.exp(A_log)
return delta, A, B, C
'''

SELECTIVE_RIGHT = '''
h = x.new_zeros(x.shape[0], *A.shape)
ys = []
for t in range(x.shape[1]):
    A_bar = torch.exp(delta[:, t, :, None] * A)
    Bx = (delta[:, t] * x[:, t])[..., None] * B[:, t, None, :]
    h = A_bar * h + Bx
    ys.append((h * C[:, t, None, :]).sum(-1))
return torch.stack(ys, dim=1) + D * x
'''

PARALLEL_RIGHT = '''
T = a.shape[1]
d = 1
while d < T:
    new_a = torch.cat([a[:, :d], a[:, :-d] * a[:, d:]], dim=1)
    new_b = torch.cat([b[:, :d], a[:, d:] * b[:, :-d] + b[:, d:]], dim=1)
    a, b = new_a, new_b
    d *= 2
return b
'''

STEP_RIGHT = '''
u, z = mixer.in_proj(x_t).chunk(2, dim=-1)
window = torch.cat([conv_state, u[..., None]], dim=-1)
v = F.silu((window * mixer.conv.weight[:, 0]).sum(-1) + mixer.conv.bias)
delta, B, C = mixer.ssm_parameters(v)
h = torch.exp(delta[..., None] * mixer.A) * ssm_state + (delta * v)[..., None] * B[:, None, :]
y = (h * C[:, None, :]).sum(-1) + mixer.D * v
return mixer.out_proj(y * F.silu(z)), window[..., 1:], h
'''

# Hillis–Steele against a copy shifted by d, padded with the identity step (1, 0), made with
# some of the options that the inputs' dtype and device need
PARALLEL_PADDED = '''
T = a.shape[1]
d = 1
while d < T:
    pad = (a.shape[0], d, *a.shape[2:])
    prev_a = torch.cat([torch.ones(pad, {options}), a[:, :-d]], dim=1)
    prev_b = torch.cat([torch.zeros(pad, {options}), b[:, :-d]], dim=1)
    a, b = prev_a * a, a * prev_b + b
    d *= 2
return b
'''


# Correct code written differently from the solution: every exercise at once, three times.
ALTERNATIVE = {
    "discretize": discretize('''
# delta cancels: (exp(ΔA) - 1) / (ΔA) · ΔB = (exp(ΔA) - 1) / A · B
dA = delta.unsqueeze(-1) * A
A_bar = dA.exp()
B_bar = (A_bar - 1) / A * B.unsqueeze(-2)
return A_bar, B_bar
'''),
    "params": params('''
N = A_log.shape[-1]
R = dt_proj_weight.shape[-1]
d, B, C = torch.split(F.linear(x, x_proj_weight), [R, N, N], dim=-1)
delta = F.softplus(F.linear(d, dt_proj_weight, dt_proj_bias))
return delta, -A_log.exp(), B, C
'''),
    "selective": selective('''
# einsum for every product; the skip added at each position
batch, T, width = x.shape
h = torch.zeros(batch, width, A.shape[1], dtype=x.dtype, device=x.device)
outs = []
for t in range(T):
    decay = torch.exp(torch.einsum("bc,cn->bcn", delta[:, t], A))
    h = decay * h + torch.einsum("bc,bn->bcn", delta[:, t] * x[:, t], B[:, t])
    outs.append(torch.einsum("bcn,bn->bc", h, C[:, t]) + D * x[:, t])
return torch.stack(outs, 1)
'''),
    "parallel": parallel('''
# chunks of about √T positions: a loop inside the chunks (all chunks at once), then one across
batch, T = a.shape[:2]
rest = a.shape[2:]
L = max(1, math.isqrt(T))
n = -(-T // L)
pad = n * L - T
a_p = torch.cat([a, a.new_ones(batch, pad, *rest)], dim=1).reshape(batch, n, L, *rest)
b_p = torch.cat([b, b.new_zeros(batch, pad, *rest)], dim=1).reshape(batch, n, L, *rest)
h = torch.zeros_like(b_p[:, :, 0])
prod = torch.ones_like(a_p[:, :, 0])
local, decay = [], []
for i in range(L):
    h = a_p[:, :, i] * h + b_p[:, :, i]
    prod = prod * a_p[:, :, i]
    local.append(h)
    decay.append(prod)
local = torch.stack(local, dim=2)  # each chunk from a zero state
decay = torch.stack(decay, dim=2)  # the product of a since the chunk began
carry = torch.zeros_like(b_p[:, 0, 0])
starts = []
for k in range(n):
    starts.append(carry)
    carry = decay[:, k, -1] * carry + local[:, k, -1]
start = torch.stack(starts, dim=1)  # the state entering each chunk
h = local + decay * start.unsqueeze(2)
return h.reshape(batch, n * L, *rest)[:, :T]
'''),
    "step": step('''
# the module's own convolution on the window: no padding, one output position
u, z = torch.chunk(mixer.in_proj(x_t), 2, dim=-1)
window = torch.cat((conv_state, u.unsqueeze(-1)), dim=-1)
v = F.silu(mixer.conv(window).squeeze(-1))
delta, B, C = mixer.ssm_parameters(v)
decay = torch.exp(delta.unsqueeze(-1) * mixer.A)
h = decay * ssm_state + (delta * v).unsqueeze(-1) * B.unsqueeze(1)
y = torch.einsum("bcn,bn->bc", h, C) + mixer.D * v
return mixer.out_proj(y * F.silu(z)), window[:, :, 1:], h
'''),
}

ALTERNATIVE_2 = {
    "discretize": discretize('''
dA = delta.unsqueeze(-1) * A
A_bar = torch.exp(dA)
ratio = torch.where(dA == 0, torch.ones_like(dA), torch.expm1(dA) / dA)
B_bar = ratio * delta.unsqueeze(-1) * B.unsqueeze(-2)
return (A_bar, B_bar)
'''),
    "params": params('''
N = A_log.size(1)
R = dt_proj_weight.size(1)
proj = torch.matmul(x, x_proj_weight.t())
d = proj[..., :R]
B = proj[..., R:R + N]
C = proj[..., R + N:]
z = torch.matmul(d, dt_proj_weight.t()) + dt_proj_bias
delta = torch.logaddexp(torch.zeros_like(z), z)  # softplus: log(1 + e^z)
A = torch.exp(A_log).neg()
return delta, A, B, C
'''),
    "selective": selective('''
# every position discretised at once (B̄ = ΔB), then the loop
A_bar, B_bar = tfcourse.discretize(delta, A, B, method="euler")  # (B, T, Cᵢ, N) each
h = 0
ys = []
for A_t, B_t, C_t, x_t in zip(A_bar.unbind(1), B_bar.unbind(1), C.unbind(1), x.unbind(1)):
    h = A_t * h + B_t * x_t[..., None]
    ys.append((h @ C_t[..., None]).squeeze(-1))
return torch.stack(ys, dim=1) + x * D
'''),
    "parallel": parallel('''
# every h_t at once: h_t = Σ_{s ≤ t} exp(S_t − S_s) b_s, S the cumulative sum of log a, in
# float64 (the differences of large sums lose digits in float32)
T = a.shape[1]
S = torch.cumsum(torch.log(a.double()), dim=1)
gap = S.unsqueeze(2) - S.unsqueeze(1)  # (B, T, T, ...): t on dim 1, s on dim 2
causal = torch.ones(T, T, dtype=torch.bool, device=a.device).tril()
causal = causal.reshape(T, T, *[1] * (a.dim() - 2))
weights = torch.exp(gap.masked_fill(~causal, float("-inf")))
return (weights * b.double().unsqueeze(1)).sum(dim=2).to(b.dtype)
'''),
    "step": step('''
# Δ, B and C written out from the mixer's projections; the convolution by einsum
u, z = mixer.in_proj(x_t).chunk(2, dim=-1)
window = torch.cat([conv_state, u[:, :, None]], dim=2)
v = F.silu(torch.einsum("bck,ck->bc", window, mixer.conv.weight.squeeze(1)) + mixer.conv.bias)
N = mixer.A_log.shape[1]
d, B, C = mixer.x_proj(v).split([mixer.dt_rank, N, N], dim=-1)
delta = F.softplus(mixer.dt_proj(d))
A = -torch.exp(mixer.A_log)
h = (torch.exp(delta[:, :, None] * A) * ssm_state
     + delta[:, :, None] * B[:, None, :] * v[:, :, None])
y = torch.einsum("bcn,bn->bc", h, C) + mixer.D * v
return mixer.out_proj(y * F.silu(z)), window[:, :, 1:].clone(), h
'''),
}

ALTERNATIVE_3 = {
    "discretize": discretize('''
# the leading dimensions flattened into one, and restored at the end
lead = delta.shape[:-1]
width, state = A.shape
flat_delta = delta.reshape(-1, width, 1)
flat_B = B.reshape(-1, 1, state)
dA = flat_delta * A
A_bar = torch.exp(dA)
B_bar = torch.special.expm1(dA) / dA * flat_delta * flat_B
return A_bar.reshape(*lead, width, state), B_bar.reshape(*lead, width, state)
'''),
    "params": params('''
R = dt_proj_weight.shape[1]
N = A_log.shape[1]
d, B, C = torch.tensor_split(x @ x_proj_weight.mT, (R, R + N), dim=-1)
flat = torch.addmm(dt_proj_bias, d.reshape(-1, R), dt_proj_weight.T)
delta = F.softplus(flat).reshape(*x.shape[:-1], -1)
return delta, -(A_log.exp()), B, C
'''),
    "selective": selective('''
# no zero state: the first position starts from its own input
steps = []
state = None
for t in range(x.shape[1]):
    decay = (delta[:, t].unsqueeze(-1) * A).exp()
    drive = torch.einsum("bc,bn->bcn", delta[:, t] * x[:, t], B[:, t])
    state = drive if state is None else torch.addcmul(drive, decay, state)
    steps.append((state * C[:, t].unsqueeze(1)).sum(dim=2) + D * x[:, t])
return torch.stack(steps, dim=1)
'''),
    "parallel": parallel('''
# Hillis–Steele against a copy shifted by d, padded with the identity step (1, 0)
T = a.shape[1]
h_a, h_b = a, b
offset = 1
while offset < T:
    prev_a = torch.cat([torch.ones_like(h_a[:, :offset]), h_a[:, :-offset]], dim=1)
    prev_b = torch.cat([torch.zeros_like(h_b[:, :offset]), h_b[:, :-offset]], dim=1)
    h_a, h_b = prev_a * h_a, h_a * prev_b + h_b
    offset <<= 1
return h_b
'''),
    "step": step('''
u, z = mixer.in_proj(x_t).split(mixer.d_inner, dim=-1)
window = torch.cat([conv_state, u.unsqueeze(2)], 2)
v = F.conv1d(window, mixer.conv.weight, mixer.conv.bias, groups=mixer.d_inner)[..., 0]
v = v * torch.sigmoid(v)  # SiLU
delta, B, C = mixer.ssm_parameters(v)
drive = torch.einsum("bc,bn->bcn", delta * v, B)
h = torch.addcmul(drive, torch.exp(delta.unsqueeze(2) * mixer.A), ssm_state)
y = torch.bmm(h, C.unsqueeze(2)).squeeze(2) + v * mixer.D
return mixer.out_proj(F.silu(z) * y), window.narrow(2, 1, window.shape[2] - 1), h
'''),
}

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    "alternative_2": {"replace": ALTERNATIVE_2, "loses": None, "fails": ()},
    "alternative_3": {"replace": ALTERNATIVE_3, "loses": None, "fails": ()},
    # ---- exercise 1, the zero-order hold
    "discretize_exp_A": {  # the step size forgotten in the decay
        "replace": {"discretize": edit(DISCRETIZE_RIGHT, discretize, (
            "A_bar = torch.exp(dA)", "A_bar = torch.exp(A).expand_as(dA)"))},
        "loses": "discretize", "fails": DISCRETIZE,
    },
    "discretize_without_exp": {  # Ā = ΔA
        "replace": {"discretize": edit(DISCRETIZE_RIGHT, discretize, (
            "A_bar = torch.exp(dA)", "A_bar = dA"))},
        "loses": "discretize", "fails": DISCRETIZE,
    },
    "discretize_euler_A": {  # Ā = 1 + ΔA, the first-order step
        "replace": {"discretize": edit(DISCRETIZE_RIGHT, discretize, (
            "A_bar = torch.exp(dA)", "A_bar = 1 + dA"))},
        "loses": "discretize", "fails": DISCRETIZE,
    },
    "discretize_euler_B": {  # B̄ = ΔB where the zero-order hold is asked
        "replace": {"discretize": edit(DISCRETIZE_RIGHT, discretize, (
            "B_bar = torch.expm1(dA) / dA * dB", "B_bar = dB"))},
        "loses": "discretize", "fails": DISCRETIZE,
    },
    "discretize_B_without_delta": {  # (exp(ΔA) − 1)/(ΔA) · B
        "replace": {"discretize": edit(DISCRETIZE_RIGHT, discretize, (
            "torch.expm1(dA) / dA * dB", "torch.expm1(dA) / dA * B[..., None, :]"))},
        "loses": "discretize", "fails": DISCRETIZE,
    },
    "discretize_delta_along_the_state": {  # Δ broadcast over the columns of A
        "replace": {"discretize": edit(DISCRETIZE_RIGHT, discretize, (
            "dA = delta[..., :, None] * A", "dA = delta[..., None, :] * A"))},
        "loses": "discretize", "fails": DISCRETIZE,
    },
    "discretize_assumes_B_T": {  # right for (B, T, Cᵢ) only; an LTI SSM has no leading dims
        "replace": {"discretize": discretize('''
dA = delta[:, :, :, None] * A
dB = delta[:, :, :, None] * B[:, :, None, :]
return torch.exp(dA), torch.expm1(dA) / dA * dB
''')},
        "loses": "discretize", "fails": ("discretize_hidden",),
    },
    "discretize_without_gradients": {
        "replace": {"discretize": edit(DISCRETIZE_RIGHT, discretize, (
            "dA = delta[..., :, None] * A\ndB = delta[..., :, None] * B[..., None, :]",
            "with torch.no_grad():\n    dA = delta[..., :, None] * A\n"
            "    dB = delta[..., :, None] * B[..., None, :]"))},
        "loses": "discretize", "fails": ("discretize_hidden",),
    },
    "discretize_calls_tfcourse": {
        "replace": {"discretize": discretize("return tfcourse.discretize(delta, A, B)")},
        "loses": "discretize", "fails": DISCRETIZE,
    },
    # ---- exercise 2, Δ, A, B and C
    "params_without_softplus": {  # Δ can be negative
        "replace": {"params": edit(PARAMS_RIGHT, params, (
            "F.softplus(d @ dt_proj_weight.T + dt_proj_bias)",
            "d @ dt_proj_weight.T + dt_proj_bias"))},
        "loses": "params", "fails": PARAMS,
    },
    "params_softplus_before_bias": {
        "replace": {"params": edit(PARAMS_RIGHT, params, (
            "F.softplus(d @ dt_proj_weight.T + dt_proj_bias)",
            "F.softplus(d @ dt_proj_weight.T) + dt_proj_bias"))},
        "loses": "params", "fails": PARAMS,
    },
    "params_without_dt_bias": {
        "replace": {"params": edit(PARAMS_RIGHT, params, (
            "F.softplus(d @ dt_proj_weight.T + dt_proj_bias)",
            "F.softplus(d @ dt_proj_weight.T)"))},
        "loses": "params", "fails": PARAMS,
    },
    "params_exp_for_softplus": {  # positive, but not the softplus
        "replace": {"params": edit(PARAMS_RIGHT, params, (
            "F.softplus(d @ dt_proj_weight.T + dt_proj_bias)",
            "torch.exp(d @ dt_proj_weight.T + dt_proj_bias)"))},
        "loses": "params", "fails": PARAMS,
    },
    "params_A_positive": {  # A = exp(A_log): the state explodes
        "replace": {"params": edit(PARAMS_RIGHT, params, ("A = -torch.exp(A_log)",
                                                          "A = torch.exp(A_log)"))},
        "loses": "params", "fails": PARAMS,
    },
    "params_A_minus_A_log": {
        "replace": {"params": edit(PARAMS_RIGHT, params, ("A = -torch.exp(A_log)",
                                                          "A = -A_log"))},
        "loses": "params", "fails": PARAMS,
    },
    "params_B_C_swapped": {
        "replace": {"params": edit(PARAMS_RIGHT, params, ("d, B, C =", "d, C, B ="))},
        "loses": "params", "fails": PARAMS,
    },
    "params_split_in_the_wrong_order": {  # B and C first, then Δ's input
        "replace": {"params": edit(PARAMS_RIGHT, params, (
            "d, B, C = (x @ x_proj_weight.T).split([R, N, N], dim=-1)",
            "B, C, d = (x @ x_proj_weight.T).split([N, N, R], dim=-1)"))},
        "loses": "params", "fails": PARAMS,
    },
    "params_weight_not_transposed": {  # an nn.Linear weight is (out, in)
        "replace": {"params": edit(PARAMS_RIGHT, params, ("(x @ x_proj_weight.T)",
                                                          "(x @ x_proj_weight)"))},
        "loses": "params", "fails": PARAMS,
    },
    "params_assumes_B_T": {  # right for (B, T, Cᵢ) only
        "replace": {"params": params('''
batch, T, width = x.shape
N, R = A_log.shape[1], dt_proj_weight.shape[1]
flat = x.reshape(batch * T, width) @ x_proj_weight.T
d, B, C = flat.reshape(batch, T, R + 2 * N).split([R, N, N], dim=-1)
delta = F.softplus(d @ dt_proj_weight.T + dt_proj_bias)
return delta, -torch.exp(A_log), B, C
''')},
        "loses": "params", "fails": ("params_hidden",),
    },
    "params_calls_tfcourse": {  # a mixer with the given weights
        "replace": {"params": params('''
N, R = A_log.shape[1], dt_proj_weight.shape[1]
mixer = tfcourse.MambaMixer(x.shape[-1] // 2, d_state=N, dt_rank=R).to(x.dtype)
mixer.x_proj.weight = nn.Parameter(x_proj_weight)
mixer.dt_proj.weight = nn.Parameter(dt_proj_weight)
mixer.dt_proj.bias = nn.Parameter(dt_proj_bias)
delta, B, C = mixer.ssm_parameters(x)
return delta, -torch.exp(A_log), B, C
''')},
        "loses": "params", "fails": PARAMS,
    },
    # ---- exercise 3, the selective scan
    "selective_output_before_update": {  # y_t = C_t h_(t-1)
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (
            "    h = A_bar * h + Bx\n    ys.append((h * C[:, t, None, :]).sum(-1))",
            "    ys.append((h * C[:, t, None, :]).sum(-1))\n    h = A_bar * h + Bx"))},
        "loses": "selective", "fails": SELECTIVE,
    },
    "selective_without_D": {
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (
            "return torch.stack(ys, dim=1) + D * x", "return torch.stack(ys, dim=1)"))},
        "loses": "selective", "fails": SELECTIVE,
    },
    "selective_exp_A": {  # the decay forgets Δ
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (
            "torch.exp(delta[:, t, :, None] * A)", "torch.exp(A)"))},
        "loses": "selective", "fails": SELECTIVE,
    },
    "selective_A_negated_again": {  # exp(−ΔA) > 1: the state grows
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (
            "torch.exp(delta[:, t, :, None] * A)", "torch.exp(-delta[:, t, :, None] * A)"))},
        "loses": "selective", "fails": SELECTIVE,
    },
    "selective_without_delta_on_B": {  # B̄ x = B x
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (
            "(delta[:, t] * x[:, t])[..., None]", "x[:, t, :, None]"))},
        "loses": "selective", "fails": SELECTIVE,
    },
    "selective_zoh_B": {  # Exercise 1's B̄, where the statement asks for Δ B
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (
            "Bx = (delta[:, t] * x[:, t])[..., None] * B[:, t, None, :]",
            "Bx = torch.expm1(delta[:, t, :, None] * A) / A * B[:, t, None, :] "
            "* x[:, t, :, None]"))},
        "loses": "selective", "fails": SELECTIVE,
    },
    "selective_sum_over_channels": {
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (".sum(-1))", ".sum(1))"))},
        "loses": "selective", "fails": SELECTIVE,
    },
    "selective_state_in_place": {  # right values; the backward pass needs the old states
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (
            "h = A_bar * h + Bx", "h.mul_(A_bar).add_(Bx)"))},
        "loses": "selective", "fails": ("selective_hidden",),
    },
    "selective_state_on_the_default_device": {  # right on the CPU; inputs on a GPU fail
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (
            "h = x.new_zeros(x.shape[0], *A.shape)",
            "h = torch.zeros(x.shape[0], *A.shape, dtype=x.dtype)"))},
        "loses": "selective", "fails": ("selective_hidden",),
    },
    "selective_state_in_float32": {  # float64 promotes it; float16 inputs give a float32 y
        "replace": {"selective": edit(SELECTIVE_RIGHT, selective, (
            "h = x.new_zeros(x.shape[0], *A.shape)",
            "h = torch.zeros(x.shape[0], *A.shape, device=x.device)"))},
        "loses": "selective", "fails": ("selective_hidden",),
    },
    "selective_calls_tfcourse": {
        "replace": {"selective": selective(
            "return tfcourse.selective_scan_sequential(x, delta, A, B, C, D)")},
        "loses": "selective", "fails": SELECTIVE,
    },
    # ---- exercise 4, the parallel scan
    "parallel_a_not_updated": {
        "replace": {"parallel": edit(PARALLEL_RIGHT, parallel, ("a, b = new_a, new_b",
                                                                "b = new_b"))},
        "loses": "parallel", "fails": PARALLEL,
    },
    "parallel_new_a_in_b": {  # a updated first, then used in the same round
        "replace": {"parallel": edit(PARALLEL_RIGHT, parallel, ("a[:, d:] * b[:, :-d]",
                                                                "new_a[:, d:] * b[:, :-d]"))},
        "loses": "parallel", "fails": PARALLEL,
    },
    "parallel_composition_reversed": {  # a_(t-d) b_t + b_(t-d)
        "replace": {"parallel": edit(PARALLEL_RIGHT, parallel, (
            "a[:, d:] * b[:, :-d] + b[:, d:]", "a[:, :-d] * b[:, d:] + b[:, :-d]"))},
        "loses": "parallel", "fails": PARALLEL,
    },
    "parallel_one_round_short": {  # floor(log2 T) rounds: right for powers of two only
        "replace": {"parallel": parallel('''
T = a.shape[1]
for k in range(int(math.log2(T))):
    d = 2 ** k
    a, b = (torch.cat([a[:, :d], a[:, :-d] * a[:, d:]], dim=1),
            torch.cat([b[:, :d], a[:, d:] * b[:, :-d] + b[:, d:]], dim=1))
return b
''')},
        "loses": "parallel", "fails": PARALLEL,
    },
    "parallel_loop_over_positions": {  # right values, T steps
        "replace": {"parallel": parallel('''
h = torch.zeros_like(b[:, 0])
out = []
for t in range(a.shape[1]):
    h = a[:, t] * h + b[:, t]
    out.append(h)
return torch.stack(out, dim=1)
''')},
        "loses": "parallel", "fails": ("parallel_hidden",),
    },
    "parallel_cumprod_divide": {  # exact in theory; P_t underflows when the a_t are small
        "replace": {"parallel": parallel('''
P = torch.cumprod(a, dim=1)
return P * torch.cumsum(b / P, dim=1)
''')},
        "loses": "parallel", "fails": ("parallel_hidden",),
    },
    "parallel_in_place": {  # right values, written into the caller's a and b
        "replace": {"parallel": parallel('''
T = a.shape[1]
d = 1
while d < T:
    b[:, d:] = a[:, d:] * b[:, :-d] + b[:, d:]
    a[:, d:] = a[:, :-d] * a[:, d:]
    d *= 2
return b
''')},
        "loses": "parallel", "fails": PARALLEL,
    },
    "parallel_padding_on_the_default_device": {  # the identity step (1, 0) made on the CPU
        "replace": {"parallel": parallel(PARALLEL_PADDED.format(options="dtype=a.dtype"))},
        "loses": "parallel", "fails": ("parallel_hidden",),
    },
    "parallel_padding_in_float32": {  # torch.cat promotes float16 to float32 (float64 stays)
        "replace": {"parallel": parallel(PARALLEL_PADDED.format(options="device=a.device"))},
        "loses": "parallel", "fails": ("parallel_hidden",),
    },
    "parallel_calls_tfcourse": {  # the selective scan with Δ = −log a, A = −1, B = C = 1
        "replace": {"parallel": parallel('''
shape = a.shape
flat_a = a.reshape(shape[0], shape[1], -1)
flat_b = b.reshape(shape[0], shape[1], -1)
delta = -torch.log(flat_a)
ones = flat_a.new_ones(shape[0], shape[1], 1)
A = -flat_a.new_ones(flat_a.shape[-1], 1)
h = tfcourse.selective_scan_parallel(flat_b / delta, delta, A, ones, ones)
return h.reshape(shape)
''')},
        "loses": "parallel", "fails": PARALLEL,
    },
    # ---- exercise 5, one decoding step
    "step_output_before_update": {  # y_t = C_t h_(t-1)
        "replace": {"step": edit(STEP_RIGHT, step, ("y = (h * C", "y = (ssm_state * C"))},
        "loses": "step", "fails": STEP,
    },
    "step_conv_state_keeps_the_oldest": {  # window[..., :-1]: the new input never enters
        "replace": {"step": edit(STEP_RIGHT, step, ("window[..., 1:], h",
                                                    "window[..., :-1], h"))},
        "loses": "step", "fails": STEP,
    },
    "step_conv_state_newest_first": {  # rolled the wrong way
        "replace": {"step": edit(STEP_RIGHT, step, (
            "window[..., 1:], h",
            "torch.cat([u[..., None], conv_state[..., :-1]], dim=-1), h"))},
        "loses": "step", "fails": STEP,
    },
    "step_weight_flipped": {
        "replace": {"step": edit(STEP_RIGHT, step, ("mixer.conv.weight[:, 0]",
                                                    "mixer.conv.weight[:, 0].flip(-1)"))},
        "loses": "step", "fails": STEP,
    },
    "step_centred_convolution": {  # padding="same": the middle tap meets u_t (right for K = 1)
        "replace": {"step": edit(STEP_RIGHT, step, (
            "v = F.silu((window * mixer.conv.weight[:, 0]).sum(-1) + mixer.conv.bias)",
            "v = F.silu(F.conv1d(window, mixer.conv.weight, mixer.conv.bias, padding=\"same\", "
            "groups=window.shape[1])[..., -1])"))},
        "loses": "step", "fails": STEP,
    },
    "step_without_conv_bias": {
        "replace": {"step": edit(STEP_RIGHT, step, (".sum(-1) + mixer.conv.bias)", ".sum(-1))"))},
        "loses": "step", "fails": STEP,
    },
    "step_without_silu_after_conv": {
        "replace": {"step": edit(STEP_RIGHT, step, (
            "v = F.silu((window * mixer.conv.weight[:, 0]).sum(-1) + mixer.conv.bias)",
            "v = (window * mixer.conv.weight[:, 0]).sum(-1) + mixer.conv.bias"))},
        "loses": "step", "fails": STEP,
    },
    "step_without_gate": {
        "replace": {"step": edit(STEP_RIGHT, step, ("mixer.out_proj(y * F.silu(z))",
                                                    "mixer.out_proj(y)"))},
        "loses": "step", "fails": STEP,
    },
    "step_gate_without_silu": {
        "replace": {"step": edit(STEP_RIGHT, step, ("y * F.silu(z)", "y * z"))},
        "loses": "step", "fails": STEP,
    },
    "step_u_and_z_swapped": {
        "replace": {"step": edit(STEP_RIGHT, step, ("u, z = mixer", "z, u = mixer"))},
        "loses": "step", "fails": STEP,
    },
    "step_without_D": {
        "replace": {"step": edit(STEP_RIGHT, step, (" + mixer.D * v", ""))},
        "loses": "step", "fails": STEP,
    },
    "step_writes_into_the_states": {  # right values; the caller's states are overwritten
        "replace": {"step": edit(STEP_RIGHT, step, (
            "return mixer.out_proj(y * F.silu(z)), window[..., 1:], h",
            "conv_state.copy_(window[..., 1:])\nssm_state.copy_(h)\n"
            "return mixer.out_proj(y * F.silu(z)), conv_state, ssm_state"))},
        "loses": "step", "fails": ("step_hidden",),
    },
    "step_assumes_K_above_1": {  # the state rolled and its last entry set: K = 1 has none
        "replace": {"step": edit(STEP_RIGHT, step, (
            "return mixer.out_proj(y * F.silu(z)), window[..., 1:], h",
            "new_conv = torch.roll(conv_state, -1, dims=-1)\nnew_conv[..., -1] = u\n"
            "return mixer.out_proj(y * F.silu(z)), new_conv, h"))},
        "loses": "step", "fails": ("step_hidden",),
    },
    "step_states_detached": {  # the states unchanged, but no gradient reaches them
        "replace": {"step": edit(STEP_RIGHT, step, (
            "window = torch.cat([conv_state, u[..., None]], dim=-1)",
            "window = torch.cat([conv_state.detach(), u[..., None]], dim=-1)"), (
            "* ssm_state +", "* ssm_state.detach() +"))},
        "loses": "step", "fails": ("step_hidden",),
    },
    "step_calls_tfcourse": {
        "replace": {"step": step('''
out, state = mixer.step(x_t, tfcourse.MambaState(conv_state, ssm_state))
return out, state.conv, state.ssm
''')},
        "loses": "step", "fails": STEP,
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"step": '''
while True:
    pass
'''},
        "loses": "step", "fails": STEP, "times_out": True,
    },
    "kernel_exits": {"replace": {"params": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
