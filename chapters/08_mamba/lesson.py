# %% [markdown]
# # State spaces and Mamba
#
# A recurrent network keeps a state of fixed size and updates it once per token: decoding costs
# the same at the millionth token as at the first, and needs no KV cache. It lost to attention
# for two reasons (chapter 1): its training is a loop over positions, and what it keeps is
# squeezed through the same update whatever the token. **State space models** (SSMs) fixed the
# first: a linear, time-invariant recurrence is also a convolution, which trains over all
# positions at once. **Mamba** (Gu and Dao, 2023) fixes the second: its *selective* SSM computes
# its step size and its input and output maps from the token it reads, so it can choose what to
# keep. That costs the convolution, and a *scan* takes its place.
#
# The chapter goes:
#
# 1. from a continuous system to a recurrence: the zero-order hold;
# 2. the two views of a time-invariant SSM, recurrence and convolution, shown equal;
# 3. selectivity, and why it breaks the convolution (the mixing matrices drawn);
# 4. the scan, sequential and parallel, with their measured cost;
# 5. the Mamba block, checked for causality and for decoding step by step;
# 6. decoding memory as the context grows, Mamba against attention's KV cache;
# 7. a Mamba model and a time-invariant SSM trained side by side on selective copying.
#
# The code is `tfcourse.ssm` (`discretize`, `ssm_recurrent`, `ssm_kernel`, `ssm_convolution`,
# `selective_scan_sequential`, `selective_scan_parallel`, `selective_scan_step`) and
# `tfcourse.mamba` (`MambaMixer`, `MambaBlock`, `MambaLM`). Letters are those of the
# [notation page](../appendices/notation.md): `B` batch, `T` positions (the paper's $L$), `C` the
# model width (the paper's $D$), `Cᵢ` the inner width of a Mamba block ($ED$), `N` the state size
# per channel (the paper's $N$). In equations, $A$, $B$, $C$ are the SSM's matrices. The
# [exercise notebook](exercises.ipynb) asks you to write the discretisation, the selective
# parameters, the sequential scan, a parallel scan and one step of decoding yourself.

# %%
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import tfcourse as tc
from tfcourse import checks
from tfcourse.bench import in_fresh_process
from tfcourse.bench.decoding import decoding_memory
from tfcourse.bench.scan import scan_inputs, scan_speed
from tfcourse.data import recall_accuracy, recall_batches, selective_copying
from tfcourse.data.recall import recall_loss
from tfcourse.plotting import plot_history

lesson_start = time.perf_counter()
tc.pin_threads()  # a fixed number of CPU threads: steadier timings
tc.seed_everything(0)  # the same random numbers and figures at every run
device = tc.default_device()  # CUDA on a GPU (Colab), else the CPU (Binder)
plt.rcParams.update({"figure.dpi": 100, "grid.alpha": 0.3})
print(f"torch {torch.__version__}, tfcourse {tc.__version__}, "
      f"device: {device}, {torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## 1. From a continuous system to a recurrence
#
# A state space model maps an input signal $x(t)$ to an output $y(t)$ through a state $h(t)$
# of $N$ numbers (Gu and Dao, Eq. 1):
#
# $$h'(t) = A\,h(t) + B\,x(t), \qquad y(t) = C\,h(t). \tag{1.1}$$
#
# A token sequence is not a signal in continuous time, so the model picks a **step size**
# $\Delta$ and asks what the state does over one step if the input is held constant during it
# (the *zero-order hold*, ZOH). Solving Eq. 1.1 exactly over the step gives a recurrence
# (Eq. 2 and 4 of the paper):
#
# $$\begin{aligned}
# h_t &= \bar A\,h_{t-1} + \bar B\,x_t, & y_t &= C\,h_t, \cr
# \bar A &= \exp(\Delta A), & \bar B &= (\Delta A)^{-1}(\exp(\Delta A) - I)\,\Delta B.
# \end{aligned}
# \tag{1.2}$$
#
# Mamba, like S4D (Gu et al., 2022), takes $A$ **diagonal**: each of the $N$ state entries
# decays on its own, $\exp(\Delta A)$ is an elementwise exponential, and the model keeps one
# such SSM per channel. $A$ must be **negative** for the state to decay ($\bar A < 1$); Mamba
# stores $A = -\exp(A_{\log})$ so that it stays negative whatever training does. Its released
# code simplifies $\bar B$ to the first-order $\Delta B$ (Euler), which differs by
# $O(\Delta^2)$.
#
# The check below holds a step input $x(t) = 1$: the exact solution of Eq. 1.1 with $A = -1$,
# $B = C = 1$ is $y(t) = 1 - e^{-t}$. The ZOH recurrence lands on it exactly at every step
# size; Euler's $\bar B = \Delta B$ is off by an amount that grows with $\Delta$.

# %%
A1, B1 = torch.tensor([[-1.0]], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
print(" step Δ   steps to t=4   error of ZOH   error of Euler's B̄ = ΔB")
for step in (0.5, 0.1, 0.01):
    T_steps = round(4 / step)
    exact = 1 - torch.exp(-step * torch.arange(1, T_steps + 1, dtype=torch.float64))
    errors = []
    for method in ("zoh", "euler"):
        A_bar, B_bar = tc.discretize(torch.tensor([step], dtype=torch.float64), A1, B1, method)
        y = tc.ssm_recurrent(torch.ones(1, T_steps, 1, dtype=torch.float64), A_bar, B_bar,
                             torch.ones(1, 1, dtype=torch.float64))[0, :, 0]
        errors.append((y - exact).abs().max().item())
    print(f"{step:6}   {T_steps:12d}   {errors[0]:12.1e}   {errors[1]:12.1e}")

# %% [markdown]
# ZOH is exact to rounding; Euler's error shrinks with the step, as $O(\Delta)$ in the state it
# settles to. Mamba's trained step sizes are small (they start between 0.001 and 0.1), and it
# learns $B$ anyway, so the difference does not matter there; the exercises ask for the ZOH.
#
# ## 2. Two views of a time-invariant SSM
#
# When $\bar A$, $\bar B$ and $C$ are the same at every position (a *linear time-invariant*,
# LTI, SSM such as S4), unrolling Eq. 1.2 from $h_{-1} = 0$ gives
# $y_t = \sum_{s \le t} C \bar A^{t-s} \bar B\, x_s$: a causal convolution of $x$ with the
# kernel (Eq. 3 of the paper)
#
# $$\bar K = (C\bar B,\; C\bar A\bar B,\; C\bar A^2\bar B,\; \dots), \qquad y = x * \bar K.
# \tag{2.1}$$
#
# The same model runs two ways: as a **recurrence**, one position at a time with a state of
# fixed size (how it decodes), and as a **convolution**, every position at once by FFT (how it
# trains: chapter 7's `fft_causal_conv`). Below, 8 channels with $N = 16$ and S4D's
# initialisation $A = -(1, 2, \dots, N)$, each channel with its own step size.

# %%
Ci, N, T = 8, 16, 256
A = -torch.arange(1.0, N + 1).repeat(Ci, 1)  # (Cᵢ, N): S4D-real
delta = torch.logspace(-3, -1, Ci)  # (Cᵢ,): one step size per channel, 0.001 … 0.1
A_bar, B_bar = tc.discretize(delta, A, torch.ones(N))  # (Cᵢ, N) each
C_lti = torch.randn(Ci, N)
x = torch.randn(2, T, Ci)
y_recurrent = tc.ssm_recurrent(x, A_bar, B_bar, C_lti)  # T steps
y_convolution = tc.ssm_convolution(x, A_bar, B_bar, C_lti)  # one FFT convolution
checks.expect_close(y_convolution, y_recurrent, "convolution view", atol=1e-4)
print(f"recurrence and convolution agree to {(y_convolution - y_recurrent).abs().max():.1e} "
      f"(float32), output {tuple(y_recurrent.shape)}")

kernel = tc.ssm_kernel(A_bar, B_bar, torch.ones(Ci, N), T)  # (Cᵢ, T), C = 1: the decay alone
fig, ax = plt.subplots(figsize=(7, 3))
for c in (0, 3, 5, 7):
    ax.plot(kernel[c] / kernel[c, 0], label=f"Δ = {delta[c]:.3f}")
ax.set(xlabel="distance t − s (positions)", ylabel="K̄ / K̄₀", title="LTI kernels (C = 1)")
ax.legend()
ax.grid()
plt.show()

# %% [markdown]
# The step size sets the memory: with $\Delta = 0.001$ the kernel has barely decayed after 256
# positions, with $\Delta = 0.1$ it is gone after a few dozen. But within a channel the weight
# given to "$k$ positions back" is the same in every sequence and at every position, whatever
# the tokens are.
#
# ## 3. Selectivity, and why it breaks the convolution
#
# Mamba's SSM is **selective** (section 3.2, Algorithm 2): for each position, it computes the
# step size and the input and output maps from the input itself,
#
# $$\begin{aligned}
# \Delta_t &= \operatorname{softplus}(\mathrm{Linear}(x_t)), \cr
# B_t &= \mathrm{Linear}(x_t), \quad C_t = \mathrm{Linear}(x_t), \cr
# h_t &= e^{\Delta_t A} h_{t-1} + \Delta_t B_t\, x_t, \quad y_t = C_t h_t + D x_t.
# \end{aligned}
# \tag{3.1}$$
#
# The softplus keeps each $\Delta_t$ positive. A large $\Delta_t$ resets the state and takes in
# $x_t$; a $\Delta_t$ near 0 leaves the state as it is and ignores $x_t$ (section 3.5.2). With
# one state entry, $A = -1$ and $B = 1$, Eq. 3.1 under the ZOH *is* a gated RNN (Theorem 1):
# $\bar A = e^{-\operatorname{softplus}(z)} = 1 - \sigma(z)$ and $\bar B = \sigma(z)$, so
# $h_t = (1 - g_t) h_{t-1} + g_t x_t$ with the gate $g_t = \sigma(z_t)$:

# %%
z = torch.linspace(-4, 4, 9, dtype=torch.float64)
A_bar1, B_bar1 = tc.discretize(F.softplus(z)[:, None], A1, torch.ones(9, 1, dtype=torch.float64))
print(f"|Ā − (1 − σ(z))| = {(A_bar1[:, 0, 0] - (1 - torch.sigmoid(z))).abs().max():.1e}, "
      f"|B̄ − σ(z)| = {(B_bar1[:, 0, 0] - torch.sigmoid(z)).abs().max():.1e}")

# %% [markdown]
# Now every position has its own $\bar A_t$, $\bar B_t$, $C_t$, and the output
#
# $$y_t = \sum_{s \le t} C_t \Big(\prod_{r=s+1}^{t} \bar A_r\Big) \bar B_s\, x_s \tag{3.2}$$
#
# weighs the input at $s$ by something that depends on $t$, on $s$ and on everything between
# them, not on $t - s$ alone: there is no kernel $\bar K$, and no FFT. Given $\Delta$, $B$, $C$,
# the SSM is still linear in $x$, so its mixing matrix $M_{ts}$ can be read off by feeding unit
# inputs. Below, one channel on a 24-token sequence in which the step size is large at four
# "data" positions and tiny elsewhere (what a trained Mamba learns to do on selective copying,
# section 7), against the LTI SSM with one fixed step.

# %%
def mixing_matrix(delta_1: torch.Tensor, B_1: torch.Tensor, C_1: torch.Tensor) -> torch.Tensor:
    """M (T, T) of one channel: column s is the output for a unit input at s (Eq. 3.2)."""
    T_ = delta_1.shape[0]
    unit = torch.eye(T_)[:, :, None]  # (T, T, 1): T sequences, one unit input each
    expand = [t.expand(T_, *t.shape) for t in (delta_1[:, None], B_1, C_1)]
    y = tc.selective_scan_sequential(unit, expand[0], -torch.ones(1, 1), expand[1], expand[2])
    return y[:, :, 0].T  # (T out, T in)


T_demo = 24
data_positions = torch.tensor([2, 7, 8, 15])
delta_sel = torch.full((T_demo,), 0.02)
delta_sel[data_positions] = 3.0  # take these tokens in, let the others pass
M_lti = mixing_matrix(torch.full((T_demo,), 0.3), torch.ones(T_demo, 1), torch.ones(T_demo, 1))
M_sel = mixing_matrix(delta_sel, torch.ones(T_demo, 1), torch.ones(T_demo, 1))
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, M, title in ((axes[0], M_lti, "LTI: Δ = 0.3 everywhere (Toeplitz)"),
                     (axes[1], M_sel, "selective: Δ large at 2, 7, 8, 15")):
    ax.imshow(M, cmap="magma")
    ax.set(title=title, xlabel="input position s", ylabel="output position t")
plt.tight_layout()
plt.show()


def is_toeplitz(M: torch.Tensor) -> bool:
    """Constant along every diagonal: a convolution."""
    return all(torch.allclose(M.diagonal(-k), M.diagonal(-k)[0]) for k in range(M.shape[0]))


print(f"Toeplitz (a convolution): LTI {is_toeplitz(M_lti)}, selective {is_toeplitz(M_sel)}")

# %% [markdown]
# Both matrices are lower triangular (causal). The LTI one is **Toeplitz**: it forgets every
# token at the same rate, data or not. The selective one keeps a data token until the next data
# token replaces it, however many positions lie between: its memory is counted in tokens that
# matter, not in positions. The price: $M$ depends on the input, so it cannot be precomputed
# as a kernel; the recurrence must be run.
#
# ## 4. The scan, sequential and parallel
#
# The **sequential scan** runs Eq. 3.1 position by position: $T$ steps in Python, each on
# tensors of shape $(B, C_i, N)$, and as many again in the backward pass. It is the readable
# reference (`selective_scan_sequential`). The recurrence $h_t = \bar A_t h_{t-1} + \bar B_t x_t$
# is linear in $h$, which gives the parallel versions: what a stretch of positions adds to the
# state does not depend on the state it starts from. `selective_scan_parallel` cuts the
# sequence into chunks of $L \approx \sqrt{T}$ positions, runs the recurrence inside all chunks
# at once from a zero state, carries the state across the chunks, and runs the chunks again
# from the states entering them: about $3\sqrt T$ steps instead of $T$, with a backward pass
# written out the same way (the gradient with respect to the state obeys the same recurrence,
# backwards). Mamba's CUDA kernel goes further (section 3.3.2): it keeps the states in on-chip
# memory and recomputes them in the backward pass; on a CPU, fewer Python steps is what
# counts.
#
# First, the two agree, in values and in the gradients of all six inputs, at a length that is
# not a multiple of the chunk:

# %%
inputs = [t.requires_grad_() for t in scan_inputs(2, 1000, 64, 16)]  # x, Δ, A, B, C, D
names = ("x", "Δ", "A", "B", "C", "D")
outputs = {}
for scan in (tc.selective_scan_sequential, tc.selective_scan_parallel):
    y = scan(*inputs)
    outputs[scan.__name__] = (y, torch.autograd.grad(y.square().sum(), inputs))
(y_seq, g_seq), (y_par, g_par) = outputs.values()
print(f"y: largest difference relative to the largest value "
      f"{(y_par - y_seq).abs().max() / y_seq.abs().max():.1e}")
for name, a, b in zip(names, g_seq, g_par, strict=True):
    print(f"∂/∂{name}: {(a - b).abs().max() / a.abs().max():.1e}")

# %% [markdown]
# Then their cost, forward and backward at $C_i = 64$, $N = 16$, batch 2, the two scans timed
# alternately so that a change of load on the machine reaches both:

# %%
scan_rows = scan_speed([128, 256, 512, 1024], d_inner=64, d_state=16, batch=2, device=device)
lengths = sorted({r["length"] for r in scan_rows})
seconds = {m: [r["seconds"] for r in scan_rows if r["method"] == m] for m in
           ("sequential", "parallel")}
for T_, s, p in zip(lengths, seconds["sequential"], seconds["parallel"], strict=True):
    print(f"T = {T_:5d}: sequential {s * 1e3:7.1f} ms, parallel {p * 1e3:6.1f} ms, "
          f"{s / p:5.1f}x faster")
fig, ax = plt.subplots(figsize=(6, 3.2))
for method, values in seconds.items():
    ax.loglog(lengths, values, "o-", label=method, base=2)
ax.set(xlabel="T", ylabel="seconds, forward + backward", title="selective scan on " + str(device))
ax.legend()
ax.grid(which="both")
plt.show()

# %% [markdown]
# The loop grows linearly with $T$ (each step costs the same), and the chunked scan too, but
# with about $3\sqrt T$ Python steps instead of $T$ its time per position falls as $T$ grows:
# the ratio widens with length. Both still do $O(T)$ arithmetic; the scan is **linear** in the
# length, where attention is quadratic (chapter 7 measured that). Two textbook alternatives were
# slower than the loop on this CPU and are not used: a log-depth scan (Hillis and Steele, 1986;
# Blelloch, 1990) that rewrites the whole $(B, T, C_i, N)$ tensor in each of its $\log_2 T$
# rounds, and chunks computed from exponentials of differences of cumulative sums, which hold an
# $(L, L)$ matrix per channel and state entry.
#
# ## 5. The Mamba block
#
# The selective SSM sits inside a block that also does the work of a Transformer's
# feed-forward network (Figure 3 of the paper): there is no separate MLP.
#
# ```
# x (B, T, C) ─ in_proj ─┬─ u (B, T, Cᵢ) ─ causal depthwise conv (K = 4) ─ SiLU ─┬─ Δ, B, C ─┐
#                        │                                                      └─ selective SSM ─ y
#                        └─ z (B, T, Cᵢ) ─ SiLU ──────────────────────────────────────── ⊙ ─┘
#                                                                                       out_proj ─ (B, T, C)
# ```
#
# * `in_proj` widens to $C_i = E \cdot C$ ($E = 2$) twice: the SSM branch $u$ and the gate $z$;
# * a **causal** depthwise convolution over the last $K = 4$ positions (padded on the left
#   only, as chapter 7's short convolution), then SiLU;
# * $\Delta$ from a projection of rank $R = \lceil C / 16 \rceil$ and a softplus, $B$ and $C$ of
#   size $N$ (Eq. 3.1), $A = -\exp(A_{\log})$ and the skip $D$;
# * the SSM output, gated by $\operatorname{SiLU}(z)$, projected back to $C$.

# %%
mixer = tc.MambaMixer(64, d_state=16)
print(mixer)
for name, p in mixer.named_parameters():
    print(f"  {name:16s} {str(tuple(p.shape)):12s} {p.numel():6,d}")
print(f"total {sum(p.numel() for p in mixer.parameters()):,} parameters for C = 64; "
      f"A starts at −(1 … N) in every channel: "
      f"{torch.allclose(mixer.A, -torch.arange(1.0, 17).expand(128, 16))}")
x = torch.randn(2, 40, 64)
checks.expect_shape(mixer(x), (2, 40, 64), "Mamba mixer")
checks.expect_causal(mixer, x, atol=1e-5, name="Mamba mixer")

# decoding: one position at a time from a state of fixed size gives the same outputs
with torch.no_grad():
    full = mixer(x)
    state = mixer.new_state(batch_size=2)
    stepped = []
    for x_t in x.unbind(1):  # (B, C), one position after another
        y_t, state = mixer.step(x_t, state)
        stepped.append(y_t)
checks.expect_close(torch.stack(stepped, 1), full, "step by step", atol=1e-5)
print(f"causal; step by step equals the parallel forward to "
      f"{(torch.stack(stepped, 1) - full).abs().max():.1e}; the state: conv "
      f"{tuple(state.conv.shape)} + SSM {tuple(state.ssm.shape)}")

# %% [markdown]
# The state that decoding carries is the convolution's last $K - 1$ inputs and the SSM state,
# $(B, C_i, K - 1)$ and $(B, C_i, N)$ per layer, whatever the number of tokens read.
#
# ## 6. Decoding memory as the context grows
#
# An attention decoder keeps the keys and values of every position it has read (chapter 3's KV
# cache): $2 \cdot L \cdot T \cdot C$ numbers for $L$ layers, growing with $T$. A Mamba decoder
# keeps its state. Below, a 2-layer Mamba model and a 2-layer attention model of the same width
# ($C = 64$) read contexts of 1K to 16K tokens and then generate 8 more, one at a time. For each,
# what the decoder holds between tokens, counted from its tensors, and the memory that the
# 8 decoding steps take beyond what was in use before, measured (the rise of the process's
# peak resident memory). The context is read in one pass (Mamba) or in chunks through the cache
# (attention), which leaves the same state as decoding those tokens one by one (the test suite
# checks both). The measurement runs in a fresh process: the memory measurement changes how
# the process allocates, which would slow the training of section 7.

# %%
decode_start = time.perf_counter()
decode_rows = in_fresh_process(decoding_memory, [1024, 2048, 4096, 8192, 16384], device="cpu")
decode_seconds = time.perf_counter() - decode_start
contexts = sorted({r["length"] for r in decode_rows})
table = {(r["model"], r["length"]): r for r in decode_rows}
print("context    Mamba state   Mamba steps    attention state (KV cache)   attention steps")
for T_ in contexts:
    m, a = table[("Mamba", T_)], table[("attention", T_)]
    print(f"{T_:7d}   {m['state_mib'] * 1024:8.1f} KiB   {m['step_peak_mib']:7.2f} MiB   "
          f"{a['state_mib']:17.1f} MiB   {a['step_peak_mib']:18.1f} MiB")
fig, ax = plt.subplots(figsize=(6.5, 3.4))
for model, style in (("Mamba", "o-"), ("attention", "s-")):
    ax.loglog(contexts, [table[(model, T_)]["state_mib"] for T_ in contexts], style, base=2,
              label=f"{model}: state kept")
    ax.loglog(contexts, [max(table[(model, T_)]["step_peak_mib"], 1e-3) for T_ in contexts],
              style, base=2, alpha=0.5, label=f"{model}: 8 decoding steps")
ax.set(xlabel="tokens read", ylabel="MiB", title="decoding memory, batch 1, C = 64, 2 layers")
ax.legend(fontsize=8)
ax.grid(which="both")
plt.show()
growth = table[("attention", 16384)]["state_mib"] / table[("attention", 1024)]["state_mib"]
print(f"from 1K to 16K tokens the KV cache grew {growth:.0f}x; the Mamba state "
      f"{table[('Mamba', 16384)]['state_mib'] / table[('Mamba', 1024)]['state_mib']:.0f}x")

# %% [markdown]
# The Mamba state is the same 19 KiB at every length; the KV cache doubles with each doubling
# of the context (16 MiB at 16K tokens for this small model). The decoding steps' own memory
# tells the same story: an attention step reads the whole cache, and in this implementation
# copies it to append one position (`torch.cat`), so its peak grows with the context, here to
# about four times the cache; a Mamba step replaces its state by one of the same size (drawn at
# $10^{-3}$ MiB on the plot where nothing was measured). Chapter 9 puts numbers on this at the
# size of a released model: at 256K tokens, the KV cache of a 7B-parameter Transformer takes
# 128 GiB.
#
# ## 7. Selective copying: Mamba against a time-invariant SSM
#
# The **selective copying** task (section 4.1.1 of the paper) scatters a few data tokens among
# blanks at random positions and asks for them back, in order, after the input:

# %%
TASK = dict(seq_len=32, num_tokens=4, vocab_size=10)  # data tokens 2 … 9, blank 0, marker 1
tokens, targets = selective_copying(1, **TASK, generator=torch.Generator().manual_seed(1))
print("tokens: ", tokens[0].tolist())
print("targets:", ["·" if t < 0 else t for t in targets[0].tolist()])

# %% [markdown]
# Where the data tokens stand changes from sequence to sequence. An LTI SSM weighs "$k$
# positions back" the same in every sequence (section 2), so it cannot keep the four data
# tokens and skip the blanks between them; a selective one can make $\Delta$ large at a data
# token and small at a blank (section 3). Two 2-layer models of width 64 train on the same
# fresh batches for the same number of steps: `MambaLM` and the same model with
# `selective=False`, whose $\Delta$, $B$ and $C$ are parameters shared by every position (an
# S4D-like SSM in the same block, with the same convolution and gate). The score is the share
# of data tokens copied right, on 512 held-out sequences.

# %%
STEPS, BATCH, LR = 400, 64, 3e-3
test_tokens, test_targets = recall_batches("selective_copy", 512, seed=123, **TASK)(0)


def loss_fn(model, batch):
    tokens, targets = batch
    return recall_loss(model(tokens), targets)


def eval_fn(model):
    logits = model(test_tokens.to(device))
    return {"accuracy": recall_accuracy(logits, test_targets.to(device))}


def train(model):
    config = tc.TrainConfig(steps=STEPS, lr=LR, warmup_steps=50, weight_decay=0.1,
                            eval_every=50, seed=0, progress=False)
    trainer = tc.Trainer(model, loss_fn, recall_batches("selective_copy", BATCH, seed=0, **TASK),
                         config, eval_fn=eval_fn)
    start = time.perf_counter()
    history = trainer.fit()
    return history, time.perf_counter() - start


runs, results, train_seconds = {}, {}, {}
for name, selective in (("Mamba (selective)", True), ("time-invariant SSM", False)):
    tc.seed_everything(0)
    model = tc.MambaLM(TASK["vocab_size"], d_model=64, num_layers=2, selective=selective)
    runs[name], train_seconds[name] = train(model.to(device))
    with torch.no_grad():
        results[name] = eval_fn(model.eval())["accuracy"]
    params = sum(p.numel() for p in model.parameters())
    print(f"{name:19s}: {results[name]:6.1%} of held-out data tokens copied, {params:,} "
          f"parameters, {STEPS} steps in {train_seconds[name]:.0f} s")
    if selective:
        mamba = model
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
plot_history(runs, axes[0], logy=True, title="training loss")
plot_history(runs, axes[1], metrics="accuracy", title="held-out accuracy")
axes[1].axhline(0.9, color="grey", linestyle=":")
plt.show()

# %% [markdown]
# What did the selective model do with $\Delta$? Below, the step sizes of its first layer on the
# held-out sequences: for each of the $C_i = 128$ channels, the mean $\Delta$ at data tokens
# over the mean at blanks, and, for one sequence, $\Delta$ along the positions in the eight
# channels where that ratio is largest.

# %%
captured = {}
hook = mamba.blocks[0].mixer.dt_proj.register_forward_hook(
    lambda module, args, out: captured.update(delta=F.softplus(out)))
with torch.no_grad():
    predicted = mamba(test_tokens.to(device)).argmax(-1)
hook.remove()
delta_0 = captured["delta"].cpu()  # (B, T, Cᵢ): Δ of every position and channel, layer 0
is_data, is_blank = test_tokens > 1, test_tokens == 0  # (B, T)
ratio = delta_0[is_data].mean(0) / delta_0[is_blank].mean(0)  # (Cᵢ,)
print(f"channels whose Δ is over 2x larger at data tokens than at blanks: "
      f"{int((ratio > 2).sum())} of {ratio.numel()}; over 2x smaller: {int((ratio < 0.5).sum())}")
top = ratio.argsort(descending=True)[:8]
fig, ax = plt.subplots(figsize=(9, 2.8))
image = ax.imshow(delta_0[0][:, top].T, cmap="viridis", aspect="auto")
ax.set_xticks(range(TASK["seq_len"]), [str(t) for t in test_tokens[0].tolist()], fontsize=7)
ax.set_yticks(range(8), [f"ch {c}" for c in top.tolist()], fontsize=7)
ax.set(xlabel="input token (0 blank, 1 marker, others data)",
       title="Δ in the 8 most data-selective channels of layer 0, one held-out sequence")
fig.colorbar(image, ax=ax, label="Δ")
plt.show()
print(f"copied: {predicted[0, -TASK['num_tokens']:].tolist()}, expected: "
      f"{test_targets[0, -TASK['num_tokens']:].tolist()}")

# %% [markdown]
# The selective model copies the data tokens (the target was 90% within this page's budget of
# about three minutes on two CPU cores; its figure is printed above). The time-invariant SSM,
# with the same block, width and training, stays far below: it can keep what came a fixed
# distance back, not what came at positions that change from one sequence to the next. The
# paper's Table 1 shows the same contrast at a larger scale, between S4 layers and the
# selective S6. The learned step sizes show the mechanism of section 3: in a share of the
# channels of the first layer (counted above), $\Delta$ jumps at the data tokens, which writes
# them into the state, and stays small at the blanks, which the state then lets pass. Other
# channels do the opposite; what they track (the count of blanks, the markers) is left to the
# curious reader.
#
# Selection is not free of limits: the state still has a fixed size, so a task that must keep
# many facts at once (multi-query associative recall with many pairs, chapter 7) eventually
# outgrows it, where attention's cache, which keeps everything, does not. Chapter 9 combines
# the two.
#
# ## Summary
#
# * A continuous SSM (Eq. 1.1) becomes a recurrence by the zero-order hold (Eq. 1.2):
#   $\bar A = \exp(\Delta A)$, with $A$ negative so that the state decays.
# * A time-invariant SSM is both a recurrence and a convolution with the kernel
#   $(C\bar B, C\bar A\bar B, \dots)$ (Eq. 2.1): it trains in parallel and decodes with a
#   fixed state.
# * Mamba makes $\Delta$, $B$, $C$ functions of the token (Eq. 3.1): its mixing matrix is no
#   longer Toeplitz, so there is no kernel, and a scan computes it. With $N = 1$ it is a gated
#   RNN.
# * A chunked scan computes the recurrence in about $3\sqrt T$ steps instead of $T$; measured
#   above, forward and backward, against the loop.
# * The Mamba block: projection, causal convolution, SiLU, selective SSM, SiLU gate,
#   projection; causal, and decoded step by step with the same outputs.
# * Decoding memory: the Mamba state is constant in the context; the KV cache grows linearly
#   (measured from 1K to 16K tokens above).
# * On selective copying, the selective model solves what the time-invariant one cannot.
#
# **Exercises.** The [exercise notebook](exercises.ipynb) asks you to write the discretisation,
# the selective parameters, the sequential scan, a parallel scan and one step of decoding.
#
# ## References
#
# * Gu, A., Dao, T. (2023). Mamba: Linear-time sequence modeling with selective state spaces.
#   arXiv:2312.00752.
# * Gu, A., Goel, K., Ré, C. (2022). Efficiently modeling long sequences with structured state
#   spaces (S4). *ICLR*. arXiv:2111.00396.
# * Gu, A., Gupta, A., Goel, K., Ré, C. (2022). On the parameterization and initialization of
#   diagonal state space models (S4D). *NeurIPS*. arXiv:2206.11893.
# * Blelloch, G. E. (1990). Prefix sums and their applications. Technical report
#   CMU-CS-90-190.
# * Hillis, W. D., Steele, G. L. (1986). Data parallel algorithms. *Communications of the ACM*
#   29(12).

# %%
lesson_seconds = time.perf_counter() - lesson_start
print(f"this page ran in {lesson_seconds:.0f} s: the two models trained in "
      f"{sum(train_seconds.values()):.0f} s, the decoding measurement took {decode_seconds:.0f} s")
