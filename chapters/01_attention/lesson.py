# %% [markdown]
# # Attention, the maths
#
# A transformer is built around one operation, *scaled dot-product attention*
# (Vaswani et al., 2017):
#
# $$
# \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V .
# $$
#
# This chapter takes that line apart and puts it back together, measuring each claim as it goes:
#
# 1. why recurrent networks struggle with long sequences, the problem attention was brought in
#    to solve;
# 2. dot products as similarity scores, and the softmax that turns scores into weights;
# 3. scaled dot-product attention, and why the scores are divided by $\sqrt{d_k}$;
# 4. masks: padding and causality;
# 5. multi-head attention;
# 6. what attention costs in time and memory as the sequence grows;
# 7. checks that the course's code computes exactly what PyTorch's own modules compute.
#
# The code comes from `tfcourse`, the course's PyTorch package, whose docstrings cite the same
# equations and papers as this page. The letters for tensor dimensions (`B`, `T`, `S`, `C`,
# `H`, `D`) are listed on the [notation page](../appendices/notation.md). The
# [exercise notebook](exercises.ipynb) of this chapter asks you to write the main pieces yourself.

# %%
import math
import textwrap

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import tfcourse as tc
from tfcourse import checks
from tfcourse.bench.attention import attention_cost, mha_comparison
from tfcourse.bench.measure import median_seconds
from tfcourse.plotting import plot_attention, plot_attention_heads

tc.pin_threads()  # a fixed number of CPU threads: steadier timings
tc.seed_everything(0)  # the same random numbers and figures at every run
device = tc.default_device()  # CUDA on a GPU (Colab), else the CPU (Binder)
plt.rcParams.update({"figure.dpi": 100, "grid.alpha": 0.3})
print(f"torch {torch.__version__}, tfcourse {tc.__version__}, "
      f"device: {device}, {torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## 1. Why recurrent networks struggle with long sequences
#
# A recurrent neural network (RNN) reads a sequence one position at a time and carries everything
# it has seen in a state vector $h_t$. The simplest one, `nn.RNN`, computes
#
# $$
# h_t = \tanh\left(W_{ih} x_t + W_{hh} h_{t-1} + b\right). \tag{1.1}
# $$
#
# Two things follow from the form of Eq. (1.1).
#
# **The gradient has to travel through every step.** How strongly the last state $h_T$ responds to
# the first input $x_1$, and so how much a loss at the end can teach the network about the start,
# is given by the chain rule, a product of $T-1$ Jacobians:
#
# $$
# \frac{\partial h_T}{\partial x_1}
# = \left(\prod_{t=2}^{T} \frac{\partial h_t}{\partial h_{t-1}}\right) \frac{\partial h_1}{\partial x_1},
# \qquad
# \frac{\partial h_t}{\partial h_{t-1}} = \operatorname{diag}\!\left(1 - h_t^2\right) W_{hh}. \tag{1.2}
# $$
#
# Since $|\tanh'| \le 1$, each factor has a norm of at most $\sigma_{\max}(W_{hh})$, the largest
# singular value of $W_{hh}$, so when $\sigma_{\max}(W_{hh}) < 1$ the product is sure to shrink
# exponentially in $T$ (Pascanu et al., 2013, give this sufficient condition as
# $\sigma_{\max} < 1/\gamma$, with $\gamma = 1$ for $\tanh$). Over many steps, what counts is the
# *spectral radius* $\rho(W_{hh})$, the largest $|\lambda|$ over the eigenvalues: the norm of a
# product of $n$ copies of one matrix behaves like $\rho^n$ as $n$ grows. With $\rho < 1$ the
# gradient *vanishes*, and the network cannot learn that an early input matters for a late output
# (Bengio et al., 1994); with factors larger than one it can *explode* instead. Gated cells (the
# LSTM of Hochreiter and Schmidhuber, 1997, and the GRU of Cho et al., 2014) add paths on which
# the state is copied rather than squashed, which helps a great deal, but the signal still has to
# cross every step in between.
#
# **The steps cannot run in parallel.** $h_t$ needs $h_{t-1}$, so a sequence of length $T$ takes
# $T$ steps one after the other, however many processors there are.
#
# Attention first appeared as an addition to recurrent translation models (Bahdanau et al., 2015):
# instead of squeezing the source sentence into one final state, the decoder could look back at
# every encoder state. The Transformer (Vaswani et al., 2017) then dropped the recurrence
# altogether. Attention replaces the chain by a direct connection: the output at position $T$ is a
# weighted average over *all* positions, so the path from $x_1$ to the output at $T$ has length one
# whatever $T$ is. Vaswani et al. (2017, Table 1) sum this up as $O(n)$ sequential operations and a
# maximum path length of $O(n)$ for a recurrent layer, against $O(1)$ and $O(1)$ for
# self-attention. Let us measure both claims rather than take them on trust.
#
# ### 1a. The gradient from the first input, against sequence length
#
# `first_input_gradient` feeds random sequences to a layer, takes the output at the last position,
# projects it on a random unit direction $u$ and back-propagates: `x.grad[:, 0]` is then
# $u^\top \partial h_T / \partial x_1$, the Jacobian of Eq. (1.2) seen along the direction $u$. We compare `nn.RNN`,
# `nn.GRU` and one causal self-attention layer, all freshly initialised and 64 units wide. The
# computation runs in float64, because the RNN's gradients soon fall below the smallest float32
# number (about $10^{-45}$) and would read as exactly zero.
#
# All of section 1 works on small tensors, so it runs on one CPU thread (this changes nothing on a
# GPU). Operations this small gain nothing from being split across cores, and keeping several
# threads in step costs more than it saves, all the more on a machine shared with other programs.

# %%
tc.pin_threads(1)  # section 1: small tensors, one CPU thread
FEATURES, HIDDEN, SAMPLES = 16, 64, 16
GRAD_LENGTHS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


def first_input_gradient(layer, length):
    """Mean norm of d(u . h_T) / d x_1 over SAMPLES random sequences: how
    strongly the output at the last position responds to the first input."""
    f64 = {"device": device, "dtype": torch.float64}
    x = torch.randn(SAMPLES, length, FEATURES, **f64, requires_grad=True)
    u = torch.randn(SAMPLES, HIDDEN, **f64)
    u = u / u.norm(dim=-1, keepdim=True)  # a random unit direction per row
    h_last = layer(x)[:, -1]  # (B, HIDDEN): the output at the last position
    (h_last * u).sum().backward()
    return x.grad[:, 0].norm(dim=-1).mean().item()  # the part that reaches x_1


rnn = nn.RNN(FEATURES, HIDDEN, batch_first=True)
gru = nn.GRU(FEATURES, HIDDEN, batch_first=True)
embed = nn.Linear(FEATURES, HIDDEN)
attention = tc.MultiHeadAttention(HIDDEN, num_heads=1)
for module in (rnn, gru, embed, attention):
    module.to(device, torch.float64)
layers = {
    "nn.RNN (tanh)": lambda x: rnn(x)[0],
    "nn.GRU": lambda x: gru(x)[0],
    "one causal self-attention layer": (
        lambda x: attention(embed(x), is_causal=True)),
}
gradients = {name: [first_input_gradient(layer, T) for T in GRAD_LENGTHS]
             for name, layer in layers.items()}

W_hh = rnn.weight_hh_l0.detach().cpu()  # (HIDDEN, HIDDEN)
sigma_max = torch.linalg.matrix_norm(W_hh, ord=2).item()
rho = torch.linalg.eigvals(W_hh).abs().max().item()
print(f"the RNN's W_hh at initialisation:\n  largest singular value "
      f"{sigma_max:.3f}, spectral radius {rho:.3f}\n")
print(f"{'':>32} {'gradient at T=256':>18} {'factor per step':>16}")
for name, g in gradients.items():
    per_step = (g[-1] / g[-2]) ** (1 / 128)  # from T = 128 to T = 256
    print(f"{name:>32} {g[-1]:>18.2e} {per_step:>16.3f}")

fig, ax = plt.subplots(figsize=(7, 4))
for (name, g), marker in zip(gradients.items(), "osd", strict=True):
    ax.loglog(GRAD_LENGTHS, g, marker=marker, label=name)
ax.set_xscale("log", base=2)
ax.set_xlabel("sequence length T")
ax.set_ylabel(r"mean $\| u^\top \partial h_T / \partial x_1 \|$")
ax.set_title("Gradient reaching the first input, at initialisation")
ax.grid(True)
ax.legend()
plt.show()

# %% [markdown]
# PyTorch initialises $W_{hh}$ with entries drawn uniformly from $\pm 1/\sqrt{64}$. Its largest
# singular value is a little above one, so the sufficient condition does not settle the question,
# but its spectral radius is well below one, and the measurement agrees with it: beyond a few steps
# the RNN's gradient shrinks by a nearly constant factor per step, a little below $\rho(W_{hh})$
# because $\tanh' < 1$ shrinks it further (the curve bends down on these log-log axes because the
# decay is exponential), and reaches around
# $10^{-65}$ at $T = 256$. The GRU decays more slowly, but still exponentially. The attention
# layer's gradient also falls, but only as $1/T$ (it halves each time $T$ doubles): at
# initialisation its weights are spread almost evenly over the $T$ positions, so position 1 gets
# about $1/T$ of them. That is a polynomial decline, not an exponential one, and training can raise
# the weight on a position that matters all the way to 1 (section 1c).
#
# ### 1b. Sequential steps and wall time
#
# Next, the time to process one sequence of length $T$ with a 64-wide `nn.RNN`, a 64-wide `nn.GRU`
# and one call of attention over 64-wide queries, keys and values
# (`tc.fused_scaled_dot_product_attention`, which section 6 explains).
# Each figure is the fastest of seven runs (each timed by `tfcourse.bench.measure.median_seconds`,
# which waits for the GPU to finish where there is one): other programs on a shared machine can
# only add time to a run, so the fastest run is the best estimate of the cost itself.

# %%
TIME_LENGTHS = [16, 64, 256, 1024, 4096]
timing_rnn = nn.RNN(64, 64, batch_first=True).to(device)
timing_gru = nn.GRU(64, 64, batch_first=True).to(device)
timings = {"nn.RNN": [], "nn.GRU": [], "attention (one call)": []}
with torch.no_grad():
    for T in TIME_LENGTHS:
        x = torch.randn(1, T, 64, device=device)  # (B, T, C)
        q = x[:, None]  # (B, H=1, T, D): queries = keys = values = x
        runs = {"nn.RNN": lambda x=x: timing_rnn(x),
                "nn.GRU": lambda x=x: timing_gru(x),
                "attention (one call)":
                    lambda q=q: tc.fused_scaled_dot_product_attention(q, q, q)}
        for name, run in runs.items():
            run()  # warm-up
            seconds = [median_seconds(run, device, repeats=1, warmup=0)
                       for _ in range(7)]
            timings[name].append(min(seconds))

print("        sequential steps         time (ms)")
header = ["T", "RNN", "attention", "RNN", "GRU", "attention"]
print(" ".join(f"{h:>{w}}" for h, w in zip(header, [5, 7, 10, 7, 7, 10],
                                            strict=True)))
for i, T in enumerate(TIME_LENGTHS):
    ms = [t[i] * 1e3 for t in timings.values()]
    print(f"{T:>5} {T:>7} {1:>10} {ms[0]:>7.2f} {ms[1]:>7.2f} {ms[2]:>10.2f}")

fig, ax = plt.subplots(figsize=(7, 4))
for (name, t), marker in zip(timings.items(), "osd", strict=True):
    ax.loglog(TIME_LENGTHS, [s * 1e3 for s in t], marker=marker, label=name)
ax.set_xscale("log", base=2)
ax.set_xlabel("sequence length T")
ax.set_ylabel("time per sequence (ms)")
where = "one CPU thread" if device.type == "cpu" else "GPU"
ax.set_title(f"One sequence through one layer, on {where}")
ax.grid(True)
ax.legend()
plt.show()

# %% [markdown]
# The recurrent layers' time grows in proportion to $T$: each of the $T$ steps is a small
# matrix-vector product that has to wait for the one before, so most of the hardware sits idle.
# Attention does more arithmetic, about $4T^2d$ floating-point operations for two $T \times T$
# matrix products, but as a few large operations with no step waiting on another, which hardware
# runs at full speed: the vector units of a CPU core, all the cores of a CPU, the thousands of
# parallel lanes of a GPU. At short and medium lengths that makes it much faster. On one CPU thread
# the $T^2$ arithmetic catches up by a few thousand positions; a GPU pushes that point much further
# out. The quadratic cost is real, and section 6 measures it; it is also what
# later chapters (Hyena, Mamba) set out to remove.
#
# ### 1c. A small training run: recall the first token
#
# Finally, a task that needs the long path. Each example is a sequence of $T$ random tokens from a
# vocabulary of 8, and the model must output the *first* token after reading the whole sequence.
# The GRU model reads the sequence and classifies its last state; the attention model lets the last
# position attend to all positions (token embeddings plus learned position embeddings) and
# classifies the result. Both are trained with Adam for 250 steps on fresh random batches, so the
# training accuracy is also accuracy on unseen data. Chance is $1/8$.

# %%
VOCAB, WIDTH, STEPS, BATCH = 8, 64, 250, 64


class GRURecall(nn.Module):
    def __init__(self, length):  # a GRU works for any length
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.gru = nn.GRU(WIDTH, WIDTH, batch_first=True)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens):  # (B, T) -> (B, VOCAB)
        states, _ = self.gru(self.embed(tokens))  # (B, T, C)
        return self.head(states[:, -1])


class AttentionRecall(nn.Module):
    def __init__(self, length):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Parameter(0.5 * torch.randn(length, WIDTH))
        self.attention = tc.MultiHeadAttention(WIDTH, num_heads=1)
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens):  # (B, T) -> (B, VOCAB)
        h = self.embed(tokens) + self.position  # (B, T, C)
        last = self.attention(h[:, -1:], h)  # (B, 1, C): last query, all keys
        return self.head(last[:, 0])


def train_recall(model_class, length):
    tc.seed_everything(1)
    model = model_class(length).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    accuracy = []
    for _ in range(STEPS):
        tokens = torch.randint(VOCAB, (BATCH, length), device=device)
        logits = model(tokens)
        loss = F.cross_entropy(logits, tokens[:, 0])  # target: the first token
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        hits = logits.argmax(-1) == tokens[:, 0]
        accuracy.append(hits.float().mean().item())
    return model, accuracy


def smooth(values, width=10):  # running mean over the last `width` values
    windows = (values[max(0, i - width + 1):i + 1] for i in range(len(values)))
    return [sum(w) / len(w) for w in windows]


RECALL_LENGTHS = [8, 32]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
report = ["accuracy over the last 20 steps:"]
for ax, length in zip(axes, RECALL_LENGTHS, strict=True):
    for model_class in (GRURecall, AttentionRecall):
        name = "GRU" if model_class is GRURecall else "attention"
        model, accuracy = train_recall(model_class, length)
        ax.plot(smooth(accuracy), label=name)
        final = sum(accuracy[-20:]) / 20
        report.append(f"  T={length:>3} {name:>9}: {final:.2f}")
    ax.axhline(1 / VOCAB, color="grey", linestyle=":", label="chance")
    ax.set_title(f"Recall the first of T = {length} tokens")
    ax.set_xlabel("training step")
    ax.set_ylim(0, 1.05)
    ax.grid(True)
    ax.legend(loc="center right")
axes[0].set_ylabel("accuracy (10-step average)")
fig.tight_layout()
plt.show()
tc.pin_threads()  # end of section 1: every core for the larger computations
print("\n".join(report))

# `model` is now the attention model trained at T = 32: where does it look?
tokens = torch.randint(VOCAB, (BATCH, 32), device=device)
h = model.embed(tokens) + model.position  # (B, T, C)
weights = model.attention.attention_weights(h[:, -1:], h)  # (B, H=1, 1, S)
print(f"after training, the last position puts on average "
      f"{weights[:, 0, 0, 0].mean():.2f} of its attention\non position 0 "
      f"(uniform weights would put {1 / 32:.3f})")

# %% [markdown]
# Within this budget both models solve the task at $T = 8$, the attention model sooner. At
# $T = 32$ the attention model learns it about as quickly as before and puts almost all the
# attention of the last position on the first token, while the GRU stays at chance. The GRU is not
# incapable: run for longer, the same GRU at $T = 32$ reaches 100% after about 1,500 steps, six
# times this page's budget (measured separately, to keep this page fast). The point is how much
# weaker the training signal is when it has to cross $T$ steps.
#
# ## 2. Similarity and softmax
#
# Attention needs two ingredients: a score that says how well a *query* matches a *key*, and a way
# to turn a row of scores into weights that are positive and sum to one.
#
# **The dot product as similarity.** For vectors $q, k \in \mathbb{R}^d$,
#
# $$
# q \cdot k = \sum_{i=1}^{d} q_i k_i = \lVert q \rVert \, \lVert k \rVert \cos\theta . \tag{2.1}
# $$
#
# It is large when the vectors point the same way, zero when they are orthogonal, negative when they
# point apart, and it grows with their lengths. For many queries and keys at once, all the dot
# products are one matrix product: with queries as the rows of $Q \in \mathbb{R}^{T\times d}$ and
# keys as the rows of $K \in \mathbb{R}^{S\times d}$, the scores are
# $QK^\top \in \mathbb{R}^{T\times S}$.

# %%
query = torch.tensor([1.0, 1.0])
keys = torch.tensor([[1.0, 1.0],     # same direction
                     [2.0, 2.0],     # same direction, twice as long
                     [1.0, -1.0],    # orthogonal
                     [-1.0, -1.0]])  # opposite
scores = keys @ query  # (S,): Eq. (2.1) for every key at once
for key, score in zip(keys.tolist(), scores.tolist(), strict=True):
    print(f"key {key}: score {score:+.1f}")

# %% [markdown]
# **Softmax.** The softmax of a score vector $s \in \mathbb{R}^S$ is
#
# $$
# \operatorname{softmax}(s)_j = \frac{e^{s_j}}{\sum_{i=1}^{S} e^{s_i}}
# = \frac{e^{s_j - m}}{\sum_{i=1}^{S} e^{s_i - m}}, \qquad m = \max_i s_i . \tag{2.2}
# $$
#
# The two forms are equal (multiply numerator and denominator by $e^{-m}$), but only the second is
# safe in floating point: $e^{s}$ overflows float32 for $s > 88.7$, and $\infty / \infty$ is NaN.
# After subtracting the maximum every exponent is $\le 0$, so every term lies in $[0, 1]$, the
# largest is exactly 1 and the denominator is at least 1. `naive_softmax` below is the left-hand
# side of Eq. (2.2), `stable_softmax` the right-hand side; `torch.softmax` does the same internally.

# %%
def naive_softmax(s, dim=-1):  # left-hand side of Eq. (2.2)
    return s.exp() / s.exp().sum(dim, keepdim=True)


def stable_softmax(s, dim=-1):  # right-hand side of Eq. (2.2)
    m = s.amax(dim, keepdim=True)  # m = max_i s_i, kept as (..., 1)
    e = (s - m).exp()  # every exponent <= 0: no overflow
    return e / e.sum(dim, keepdim=True)


large = torch.tensor([1000.0, 1001.0, 1002.0])
print("naive: ", naive_softmax(large))
print("stable:", stable_softmax(large))
checks.expect_close(stable_softmax(large), torch.softmax(large, dim=-1),
                    name="stable_softmax")
checks.expect_close(stable_softmax(large), stable_softmax(large - 1000),
                    name="shifted scores")
print("stable_softmax equals torch.softmax, and subtracting 1000 from every "
      "score changes nothing")

# %% [markdown]
# **Temperature.** Dividing the scores by a temperature $\tau$ before the softmax,
# $\operatorname{softmax}(s/\tau)$, changes how peaked the weights are. As $\tau \to 0$ the weights
# approach a one-hot vector on the largest score (a hard "argmax"); as $\tau \to \infty$ they
# approach the uniform distribution $1/S$. Only *differences* between scores matter (Eq. 2.2), so
# scaling all the scores by a factor is the same as changing the temperature: the $\sqrt{d_k}$ of
# the next section is a temperature.

# %%
scores = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
positions = torch.arange(len(scores))
fig, ax = plt.subplots(figsize=(7, 3.5))
for i, tau in enumerate([0.25, 1.0, 4.0]):
    ax.bar(positions + (i - 1) * 0.27, stable_softmax(scores / tau), 0.27,
           label=rf"$\tau$ = {tau}")
ax.set_xticks(positions, [f"key {j}\ns = {s:g}" for j, s in enumerate(scores)])
ax.set_ylabel("softmax weight")
ax.set_title(r"softmax$(s / \tau)$: low $\tau$ sharpens, high $\tau$ flattens")
ax.grid(True, axis="y")
ax.legend()
plt.show()

# %% [markdown]
# **Exercise 1** of the [exercise notebook](exercises.ipynb) asks you to write this stable softmax
# yourself, for any shape, axis and dtype, with `-inf` entries (the masked scores of section 4).
#
# ## 3. Scaled dot-product attention
#
# Stack $T$ queries, $S$ keys and $S$ values as the rows of $Q \in \mathbb{R}^{T\times d_k}$,
# $K \in \mathbb{R}^{S\times d_k}$ and $V \in \mathbb{R}^{S\times d_v}$. Scaled dot-product
# attention (Vaswani et al., 2017, Eq. 1) is
#
# $$
# \operatorname{Attention}(Q, K, V) = \underbrace{\operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right)}_{A \,\in\, \mathbb{R}^{T\times S}} V
# \;\in\; \mathbb{R}^{T\times d_v}. \tag{3.1}
# $$
#
# Row $t$ of the weights $A$ is a probability distribution over the $S$ keys (the softmax runs
# along each row), and row $t$ of the output is the average of the value vectors under it: query
# $t$ retrieves a blend of the values whose keys match it best. The next cell writes Eq. (3.1) out
# in three lines and checks it against `tc.scaled_dot_product_attention`. That function's body has
# the same three steps (`scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))`, then
# `torch.softmax(scores, dim=-1)`, then `weights @ v`), plus the mask of section 4, and returns both
# the output and the weights $A$.

# %%
T, S, d_k, d_v = 4, 6, 8, 5
Q = torch.randn(T, d_k, device=device)
K = torch.randn(S, d_k, device=device)
V = torch.randn(S, d_v, device=device)

scores = Q @ K.T / math.sqrt(d_k)  # (T, S): inside the softmax of Eq. (3.1)
A = stable_softmax(scores, dim=-1)  # (T, S): each row sums to 1 over the keys
out = A @ V  # (T, d_v): each row a weighted average of the rows of V
assert scores.shape == (T, S) and A.shape == (T, S) and out.shape == (T, d_v)

tc_out, tc_weights = tc.scaled_dot_product_attention(Q, K, V)
checks.expect_close(tc_out, out, name="tfcourse output")
checks.expect_close(tc_weights, A, name="tfcourse weights")
checks.expect_rows_sum_to_one(tc_weights)
print("Eq. (3.1) by hand equals tc.scaled_dot_product_attention")
row_sums = tc_weights.sum(-1).tolist()
print("row sums of the weights:", [round(x, 5) for x in row_sums])

# %% [markdown]
# The contract checks of `tfcourse.checks` say what is wrong when something is. A classic mistake
# is a softmax over the wrong axis, so that the *columns* of $A$ sum to one:

# %%
square_scores = torch.randn(5, 5)
try:
    checks.expect_rows_sum_to_one(torch.softmax(square_scores, dim=-2))
except checks.ContractError as error:
    print(textwrap.fill(f"ContractError: {error}", 78))

# %% [markdown]
# **Exercise 3** asks you to write scaled dot-product attention, with masks; its self-checks use
# these same checks.
#
# ### Why divide by $\sqrt{d_k}$?
#
# Suppose the components of $q$ and $k$ are independent, with mean 0 and variance 1. Each product
# $q_i k_i$ then has mean 0 and variance $\mathbb{E}[q_i^2]\,\mathbb{E}[k_i^2] = 1$, and a sum of
# $d_k$ independent terms adds their variances:
#
# $$
# \operatorname{Var}(q \cdot k) = \sum_{i=1}^{d_k} \operatorname{Var}(q_i k_i) = d_k,
# \qquad
# \operatorname{Var}\!\left(\frac{q \cdot k}{\sqrt{d_k}}\right) = 1 . \tag{3.2}
# $$
#
# (This is the argument of Vaswani et al., 2017, footnote 4.) Without the scale, the scores spread
# out as $\sqrt{d_k}$, which by section 2 is a softmax at temperature $1/\sqrt{d_k}$: for a wide
# head the weights become nearly one-hot. That *saturation* stalls learning, because the softmax's
# Jacobian
#
# $$
# \frac{\partial a_i}{\partial s_j} = a_i\,(\delta_{ij} - a_j), \qquad
# J = \operatorname{diag}(a) - a a^\top , \tag{3.3}
# $$
#
# vanishes when $a$ is one-hot: if $a = e_m$, every row $i \ne m$ is zero because $a_i = 0$, and
# row $m$ is $\delta_{mj} - a_j = 0$ for every $j$. The
# next cell measures Eq. (3.2), and the effects of saturation for $S = 32$ keys and growing $d_k$:
# the largest weight of each row, the entropy of each row (at most $\ln S \approx 3.47$ nats, for
# uniform weights) and the Frobenius norm of $J$, which `softmax_jacobian` computes from Eq. (3.3)
# (and which we first check against autograd).

# %%
def softmax_jacobian(a):  # (..., S) weights -> (..., S, S), Eq. (3.3)
    return torch.diag_embed(a) - a[..., :, None] * a[..., None, :]


s = torch.randn(6, dtype=torch.float64)
autograd_jacobian = torch.autograd.functional.jacobian(
    lambda z: torch.softmax(z, -1), s)
checks.expect_close(softmax_jacobian(torch.softmax(s, -1)), autograd_jacobian,
                    name="Eq. (3.3)")

HEAD_WIDTHS, NUM_KEYS, TRIALS = [4, 16, 64, 256, 1024], 32, 256
stats = {"scaled": {}, "unscaled": {}}
table = [f"{'d_k':>5} {'Var(q.k)':>9} {'Var(q.k / sqrt(d_k))':>21}"]
for d in HEAD_WIDTHS:
    q = torch.randn(TRIALS, 1, d, device=device)  # one query per trial
    k = torch.randn(TRIALS, NUM_KEYS, d, device=device)  # and its 32 keys
    raw = (q * k).sum(-1)  # (TRIALS, S): the dot products q . k
    scaled = raw / math.sqrt(d)
    table.append(f"{d:>5} {raw.var().item():>9.1f} {scaled.var().item():>21.3f}")
    for kind, s in (("scaled", scaled), ("unscaled", raw)):
        a = torch.softmax(s, dim=-1)  # (TRIALS, S)
        measured = {
            "largest weight in a row": a.amax(-1),
            "entropy of a row (nats)": -(a * a.clamp_min(1e-30).log()).sum(-1),
            "Frobenius norm of J": softmax_jacobian(a).flatten(1).norm(dim=1),
        }
        for name, value in measured.items():
            stats[kind].setdefault(name, []).append(value.mean().item())
print("\n".join(table))

labels = {"scaled": r"softmax$(q\cdot k/\sqrt{d_k})$",
          "unscaled": r"softmax$(q\cdot k)$"}
fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
for ax, name in zip(axes, stats["scaled"], strict=True):
    for kind, marker in (("scaled", "o"), ("unscaled", "s")):
        ax.plot(HEAD_WIDTHS, stats[kind][name], marker=marker,
                label=labels[kind])
    ax.set_xscale("log", base=2)
    ax.set_xlabel(r"head width $d_k$")
    ax.set_title(name)
    ax.grid(True)
axes[1].axhline(math.log(NUM_KEYS), color="grey", linestyle=":",
                label=r"uniform weights: $\ln S$")
axes[0].set_ylabel(f"mean over {TRIALS} rows of {NUM_KEYS} keys")
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The table confirms Eq. (3.2): the variance of $q\cdot k$ is close to $d_k$, and close to 1 after
# the scale. In the figure, the scaled softmax behaves the same at every width. Without the scale,
# by $d_k = 256$ the largest weight of a row is typically above 0.9, the entropy has collapsed
# towards 0 (one key takes everything), and the norm of the Jacobian, which scales every gradient
# that flows back through the softmax, is about half the scaled value at $d_k = 256$ and a quarter
# at $d_k = 1024$, still falling. Here is what attention weights look like at $d_k = 256$, with and
# without the scale:

# %%
d = 256
Q = torch.randn(8, d, device=device)
K = torch.randn(8, d, device=device)
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
plot_attention(torch.softmax(Q @ K.T / math.sqrt(d), -1), ax=axes[0],
               title=r"softmax$(QK^\top/\sqrt{d_k})$, $d_k$ = 256")
plot_attention(torch.softmax(Q @ K.T, -1), ax=axes[1],
               title=r"softmax$(QK^\top)$, $d_k$ = 256")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. Masks
#
# Often a query must not see some keys. Two cases come up all the time:
#
# * **Padding.** Sequences in a batch have different lengths, so the short ones are padded to the
#   longest. No query should attend to a padding position.
# * **Causality.** A model that predicts the next token must not look at the future: query $t$ may
#   only attend to keys $s \le t$.
#
# Both are applied by adding a matrix $M$ to the scores before the softmax,
#
# $$
# \begin{aligned}
# A &= \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right), \cr
# M_{ts} &= 0 \text{ if query } t \text{ may attend to key } s, \text{ else } -\infty,
# \end{aligned}
# \tag{4.1}
# $$
#
# so that $e^{-\infty} = 0$ removes the blocked keys and the softmax renormalises over the rest. In
# `tc.scaled_dot_product_attention` this is the line
# `scores = scores.masked_fill(~mask, float("-inf"))`.
#
# **Convention.** In `tfcourse` a boolean mask is `True` where a query **may attend**, as in
# `torch.nn.functional.scaled_dot_product_attention`. Careful: `torch.nn.MultiheadAttention` uses
# the **opposite** convention for its `attn_mask` and `key_padding_mask` (`True` = blocked), so a
# `tfcourse` mask goes into it as `~mask` (section 7 does exactly that).
#
# `tc.padding_mask(lengths, S)` has shape (B, 1, 1, S), which broadcasts over heads and queries;
# `tc.causal_mask(T)` is lower-triangular with shape (T, T); `tc.combine_masks` takes the logical
# AND of masks.

# %%
sentences = [["the", "cat", "sat", "on", "the", "mat"],
             ["a", "dog", "ran", "<pad>", "<pad>", "<pad>"]]
lengths = torch.tensor([6, 3], device=device)
B, T, d = len(sentences), len(sentences[0]), 16

padding = tc.padding_mask(lengths, T)  # (B, 1, 1, S)
causal = tc.causal_mask(T, device=device)  # (T, S)
both = tc.combine_masks(padding, causal)  # (B, 1, T, S)
assert padding.shape == (B, 1, 1, T)
assert causal.shape == (T, T)
assert both.shape == (B, 1, T, T)
print("padding mask of sentence 2:", padding[1, 0, 0].tolist())
print("causal mask:\n", causal.int())

x = torch.randn(B, 1, T, d, device=device)  # (B, H=1, T, D): token vectors
W_q, W_k = torch.randn(2, d, d, device=device) / math.sqrt(d)
q, k = x @ W_q, x @ W_k  # (B, 1, T, D): a random query and key projection
masks = {"padding mask": padding, "causal mask": causal,
         "padding and causal": both}
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, (name, mask) in zip(axes, masks.items(), strict=True):
    _, weights = tc.scaled_dot_product_attention(q, k, x, mask)  # (B, 1, T, S)
    plot_attention(weights[1, 0], query_labels=sentences[1],
                   key_labels=sentences[1], ax=ax, title=f"sentence 2, {name}")
fig.tight_layout()
plt.show()

# %% [markdown]
# With the padding mask, no query of sentence 2 puts any weight on the `<pad>` columns. (The rows
# of the padding *queries* are still computed; their outputs are simply ignored later, for instance
# by the loss.) With the causal mask, the weights are lower-triangular: the first token can only
# attend to itself. With both, the two patterns combine.
#
# Causality is a property we can test rather than eyeball: `checks.expect_causal` changes the
# inputs after each position and checks that no output up to that position moves. It passes with
# the mask, and without it names the likely mistake:

# %%
def causal_self_attention(x):  # (B, T, D) -> (B, T, D)
    mask = tc.causal_mask(x.shape[1], device=x.device)
    return tc.scaled_dot_product_attention(x, x, x, mask)[0]


def unmasked_self_attention(x):
    return tc.scaled_dot_product_attention(x, x, x)[0]


x = torch.randn(2, 7, 16, device=device)
checks.expect_causal(causal_self_attention, x, dim=1)
print("with the causal mask: causal")
try:
    checks.expect_causal(unmasked_self_attention, x, dim=1)
except checks.ContractError as error:
    print(textwrap.fill(f"without it: ContractError: {error}", 78))

# %% [markdown]
# **Exercise 2** asks you to build the causal mask.
#
# ## 5. Multi-head attention
#
# One attention gives each query one weighted average. Multi-head attention runs $h$ attentions in
# parallel, each on its own learned projection of the inputs, and concatenates the results
# (Vaswani et al., 2017, section 3.2.2):
#
# $$
# \operatorname{MultiHead}(Q, K, V) = \operatorname{Concat}(\text{head}_1, \dots, \text{head}_h)\, W^O,
# \tag{5.1}
# $$
#
# $$
# \text{head}_i = \operatorname{Attention}(Q W_i^Q,\; K W_i^K,\; V W_i^V), \tag{5.2}
# $$
#
# with $W_i^Q, W_i^K, W_i^V \in \mathbb{R}^{d_\text{model} \times d_k}$,
# $W^O \in \mathbb{R}^{h d_k \times d_\text{model}}$ and $d_k = d_v = d_\text{model}/h$; the paper
# uses $d_\text{model} = 512$, $h = 8$, $d_k = 64$. Each head can attend to something different
# (one to the previous token, another to a matching word far away), for about the cost of one head
# of full width.
#
# **Heads are a reshape.** `tc.MultiHeadAttention` stores the $h$ matrices $W_i^Q$ side by side as
# one $C \times C$ linear layer (`q_proj`), so one matrix product projects all heads at once. The
# output channels of that product are then cut into $H$ groups of $D = C/H$: `tc.split_heads` turns
# (B, T, C) into (B, H, T, D), attention runs over the last two axes for every (batch, head) pair at
# once, and `tc.merge_heads` is the inverse (the Concat of Eq. 5.1). The assertions below are the
# contract of those two functions:

# %%
B, T, C, H = 2, 5, 12, 3
D = C // H
x = torch.randn(B, T, C, device=device)
heads = tc.split_heads(x, H)  # (B, T, C) -> (B, H, T, D)
assert heads.shape == (B, H, T, D)
assert torch.equal(heads[:, 1], x[..., D:2 * D])  # head 1: channels D..2D-1
assert torch.equal(tc.merge_heads(heads), x)  # merge_heads undoes split_heads

wrong = x.view(B, H, T, D)  # a classic mistake: right shape, wrong content
assert wrong.shape == heads.shape and not torch.equal(wrong, heads)
print("x.view(B, H, T, D) has the right shape but cuts the sequence, not the "
      "channels:\nits head 0, position 1 is channels 4..7 of position 0:",
      torch.equal(wrong[0, 0, 1], x[0, 0, 4:8]))

mha = tc.MultiHeadAttention(C, H).to(device)
assert mha(x).shape == (B, T, C)
num_parameters = sum(p.numel() for p in mha.parameters())
assert num_parameters == 4 * C * C + 4 * C  # W^Q, W^K, W^V, W^O, biases; any H
print(f"MultiHeadAttention(d_model={C}, num_heads={H}): "
      f"{num_parameters} parameters = 4C^2 + 4C")

# %% [markdown]
# **What heads can do.** A freshly initialised layer attends almost uniformly, so to *see* heads
# doing different things we set the weights of a 4-head layer by hand. Each token is a one-hot
# code of its position. Head $h$ gets the query $20\,e_t$ at position $t$ and the key $e_{s+h}$ at
# position $s$, so $q_t \cdot k_s = 20$ exactly when $s = t - h$, and 0 otherwise: head 0 attends to
# the token itself, head 1 to the previous token, head 2 two back, head 3 three back. (A trained
# model finds such patterns itself; chapter 4 plots the heads of a trained Vision Transformer.)
# `attention_weights` returns the (B, H, T, S) weights and `plot_attention_heads` draws one map
# per head.

# %%
C, H, T = 32, 4, 8
D = C // H
x = torch.zeros(1, T, C, device=device)  # (B, T, C)
x[0, torch.arange(T), torch.arange(T)] = 1.0  # token t: one-hot code of t
shifter = tc.MultiHeadAttention(C, H, bias=False).to(device)
with torch.no_grad():
    shifter.q_proj.weight.zero_()
    shifter.k_proj.weight.zero_()
    for h in range(H):  # rows h*D .. h*D+D-1 of a projection belong to head h
        for t in range(T):
            shifter.q_proj.weight[h * D + t, t] = 20.0  # query of t: 20 e_t
            if t + h < D:
                shifter.k_proj.weight[h * D + t + h, t] = 1.0  # key: e_{t+h}
weights = shifter.attention_weights(x, is_causal=True)  # (B, H, T, S)
assert weights.shape == (1, H, T, T)
labels = [f"x{t}" for t in range(T)]
plot_attention_heads(weights[0], query_labels=labels, key_labels=labels,
                     title="Four heads of one layer, weights set by hand "
                           "(causal mask)")
plt.show()

# %% [markdown]
# In the first rows of heads 1 to 3 there is no key $h$ steps back; there all allowed scores are
# equal and the weights are uniform over the allowed keys.
#
# **Exercises 4 and 5** ask you to write `split_heads`, `merge_heads` and the forward pass of
# multi-head attention.
#
# ## 6. The cost of attention
#
# For self-attention over $T$ positions with $H$ heads of width $D$, the two matrix products
# $QK^\top$ and $AV$ take about $4 H T^2 D$ floating-point operations per sequence: the time grows
# as $T^2$. Memory depends on how the equation is computed:
#
# * the **explicit** path (`tc.scaled_dot_product_attention`) stores the scores and the weights,
#   two $H \times T \times T$ arrays, so its memory grows as $T^2$;
# * the **fused** path (`tc.fused_scaled_dot_product_attention`, which calls PyTorch's
#   `F.scaled_dot_product_attention`) processes the keys block by block and keeps, for each query,
#   a running maximum and a running sum for the softmax of Eq. (2.2) (the "online softmax" of
#   Milakov and Gimelshein, 2018; Rabe and Staats, 2021; FlashAttention, Dao et al., 2022). It
#   never stores a $T \times T$ array, so its memory grows as $T$, and it moves far fewer bytes
#   through memory, which also makes it faster.
#
# `tfcourse.bench.attention.attention_cost` measures both on (B=1, H=8, T, D=64) inputs in
# float32: the median time, and the peak memory each call needs beyond its inputs (on a GPU the
# CUDA allocator's exact peak; on a CPU the rise in the process's resident memory). The same
# figures are printed by `python -m tfcourse.bench attention`. We stop at $T = 2048$: the explicit
# path would need about 1 GiB at $T = 4096$, more than a Binder session can spare.

# %%
COST_LENGTHS = [128, 256, 512, 1024, 2048]
HEADS, HEAD_DIM = 8, 64
rows = attention_cost(COST_LENGTHS, batch=1, heads=HEADS, head_dim=HEAD_DIM,
                      device=device, repeats=3)
cost = {(r["path"], r["length"]): r for r in rows}


def scores_mib(T):  # the explicit path's scores and weights: 2 H T^2 floats
    return 2 * HEADS * T * T * 4 / 2**20


def output_mib(T):  # the output, which any path must hold: H T D floats
    return HEADS * T * HEAD_DIM * 4 / 2**20


def mib(value):
    return "n/a" if value is None else f"{value:.1f}"


print("        time (ms)        peak memory (MiB)   2HT^2 floats  HTD floats")
print(f"{'T':>5} {'explicit':>9} {'fused':>7} {'explicit':>10} {'fused':>7}"
      f" {'(MiB)':>14} {'(MiB)':>11}")
for T in COST_LENGTHS:
    e, f = cost["explicit", T], cost["fused", T]
    print(f"{T:>5} {e['seconds'] * 1e3:>9.2f} {f['seconds'] * 1e3:>7.2f} "
          f"{mib(e['peak_mib']):>10} {mib(f['peak_mib']):>7} "
          f"{scores_mib(T):>14.1f} {output_mib(T):>11.1f}")

fig, (ax_time, ax_memory) = plt.subplots(1, 2, figsize=(11, 4))
for path, marker in (("explicit", "o"), ("fused", "s")):
    ms = [cost[path, T]["seconds"] * 1e3 for T in COST_LENGTHS]
    ax_time.plot(COST_LENGTHS, ms, marker=marker, label=f"{path} path")
    # peak_mib is None where it cannot be measured, 0 below the resolution
    measured = [(T, cost[path, T]["peak_mib"]) for T in COST_LENGTHS
                if cost[path, T]["peak_mib"]]
    if measured:
        ax_memory.plot(*zip(*measured, strict=True), marker=marker,
                       label=f"{path} path, measured")
last = COST_LENGTHS[-1]
top = cost["explicit", last]["seconds"] * 1e3
ax_time.plot(COST_LENGTHS, [top * (T / last) ** 2 for T in COST_LENGTHS], "k:",
             label=r"$\propto T^2$")
ax_memory.plot(COST_LENGTHS, [scores_mib(T) for T in COST_LENGTHS], "k:",
               label=r"$2 H T^2$ floats (scores, weights)")
ax_memory.plot(COST_LENGTHS, [output_mib(T) for T in COST_LENGTHS], "k--",
               label=r"$H T D$ floats (the output)")
for ax in (ax_time, ax_memory):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.grid(True)
    ax.legend()
ax_time.set_ylabel("time (ms)")
ax_time.set_title(f"Time, H={HEADS}, D={HEAD_DIM}, float32, "
                  f"on {device.type.upper()}")
ax_memory.set_ylabel("peak memory beyond the inputs (MiB)")
ax_memory.set_title("Memory")
fig.tight_layout()
plt.show()

e, f = cost["explicit", last], cost["fused", last]
speedup = e["seconds"] / f["seconds"]
print(f"at T={last}: the fused path is {speedup:.1f}x faster")
if e["peak_mib"] and f["peak_mib"]:
    print(f"and needs {e['peak_mib'] / f['peak_mib']:.0f}x less memory "
          f"({f['peak_mib']:.1f} MiB against {e['peak_mib']:.1f} MiB)")

# %% [markdown]
# The explicit path's memory follows the $2HT^2$ float32 numbers of its scores and weights closely,
# fourfold for each doubling of $T$. The fused path needs little more than its output, $HTD$
# numbers, which grows linearly (at short lengths its figure can fall below what the measurement
# resolves, and such a point is left out of the plot). Both paths still do $O(T^2)$ arithmetic, so
# the time of both grows roughly as $T^2$ at long lengths: the fused kernel removes the quadratic
# *memory*, not the quadratic *work*. Avoiding the quadratic work needs a different operator, which
# is the subject of chapters 7 to 9.
#
# This is why `tc.MultiHeadAttention` uses the fused path by default (`fused=True`) and computes
# the explicit weights only when they are asked for (`attention_weights`, for plots). The same
# benchmark times it against `nn.MultiheadAttention` with the same weights on the same input,
# alternating the two so that both see the same machine load. The point of the comparison: a
# module written to be read, line by line against Eq. (5.1), need not be slower than PyTorch's own.

# %%
rows = mha_comparison(512, batch=2, d_model=256, heads=8, device=device,
                      repeats=5)
seconds = {r["module"]: r["seconds"] for r in rows}
print(f"self-attention, B=2, T=512, C=256, H=8, on {device.type.upper()}:")
print(f"  tc.MultiHeadAttention  {seconds['tfcourse'] * 1e3:7.2f} ms")
print(f"  nn.MultiheadAttention  {seconds['torch'] * 1e3:7.2f} ms")

# %% [markdown]
# ## 7. The same function as PyTorch's
#
# Finally, the course's code must compute *exactly* what PyTorch's own operators compute, so that
# what you learn here carries over. `checks.expect_close` compares two tensors to the tolerance of
# their dtype (for float32, a relative error of $10^{-4}$) and, if they differ, reports where and
# by how much. First the two attention functions against `F.scaled_dot_product_attention`, without
# a mask, with a causal mask and with a padding mask, and `checks.expect_finite_grads` on the
# gradients:

# %%
B, H, T, D = 2, 4, 10, 16
q, k, v = torch.randn(3, B, H, T, D, device=device)
lengths = torch.tensor([10, 6], device=device)
masks = {"no mask": None, "causal": tc.causal_mask(T, device=device),
         "padding": tc.padding_mask(lengths, T)}
report = []
for name, mask in masks.items():
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    explicit, _ = tc.scaled_dot_product_attention(q, k, v, mask)
    fused = tc.fused_scaled_dot_product_attention(q, k, v, mask)
    checks.expect_close(explicit, reference, name=f"explicit path, {name}")
    checks.expect_close(fused, reference, name=f"fused path, {name}")

    def explicit_output(q, k, v, mask=mask):
        return tc.scaled_dot_product_attention(q, k, v, mask)[0]

    checks.expect_finite_grads(explicit_output, q, k, v, name=name)
    report.append(f"{name:>8}: explicit = fused = "
                  "F.scaled_dot_product_attention; gradients finite")
print("\n".join(report))

# %% [markdown]
# Then the whole layer. `load_from_torch` copies the weights of an `nn.MultiheadAttention` into a
# `tc.MultiHeadAttention` (PyTorch stacks $W^Q, W^K, W^V$ in one `in_proj_weight` of shape
# $(3C, C)$). The two must then give the same outputs and, head by head, the same weights. Note the
# `~`: PyTorch's module takes masks with `True` = blocked.

# %%
B, T, C, H = 2, 10, 32, 4
reference = nn.MultiheadAttention(C, H, batch_first=True).to(device).eval()
ours = tc.MultiHeadAttention(C, H).to(device).eval()
ours.load_from_torch(reference)
x = torch.randn(B, T, C, device=device)
causal = tc.causal_mask(T, device=device)  # (T, S), True = may attend
padding = tc.padding_mask(lengths, T)  # (B, 1, 1, S), True = may attend
blocked_keys = ~padding[:, 0, 0]  # (B, S), True = blocked, for PyTorch

with torch.no_grad():
    expected, _ = reference(x, x, x, need_weights=False)
    checks.expect_close(ours(x), expected, name="no mask")

    expected, _ = reference(x, x, x, attn_mask=~causal, need_weights=False)
    checks.expect_close(ours(x, is_causal=True), expected, name="causal")

    expected, expected_weights = reference(
        x, x, x, key_padding_mask=blocked_keys,
        average_attn_weights=False)  # weights (B, H, T, S), one map per head
    checks.expect_close(ours(x, mask=padding), expected, name="padding")
    checks.expect_close(ours.attention_weights(x, mask=padding),
                        expected_weights, name="per-head weights")

    ours.fused = False  # the explicit path inside the module agrees too
    checks.expect_close(ours(x, mask=padding), expected, name="explicit path")
print("tc.MultiHeadAttention loaded from nn.MultiheadAttention computes the "
      "same outputs\nand per-head weights, with and without masks, "
      "on both paths")

# %% [markdown]
# ## Summary
#
# * Recurrent networks pass information, and gradients, through $T$ dependent steps. At
#   initialisation we measured the gradient from the first input of an RNN and a GRU falling
#   exponentially with $T$, and saw a GRU fail to learn to recall the first of 32 tokens in a
#   budget where attention succeeds.
# * Attention scores every key against every query with a dot product, turns each row of scores
#   into weights with a numerically stable softmax, and averages the values with them: Eq. (3.1).
# * Dividing by $\sqrt{d_k}$ keeps the variance of the scores at 1 whatever the head width
#   (Eq. 3.2), which keeps the softmax out of saturation and its gradients alive (Eq. 3.3).
# * Masks add $-\infty$ to the scores of blocked keys (Eq. 4.1). In `tfcourse`, as in
#   `F.scaled_dot_product_attention`, `True` means *may attend*; `nn.MultiheadAttention` uses the
#   opposite.
# * Multi-head attention is $h$ attentions on learned projections, implemented as one projection,
#   a reshape to (B, H, T, D), attention, and the reverse reshape (Eq. 5.1).
# * Attention costs $O(T^2)$ time. The explicit computation also needs $O(T^2)$ memory; the fused
#   kernel needs $O(T)$ and is faster.
#
# **Exercises.** The [exercise notebook](exercises.ipynb) asks you to write these pieces yourself:
# the stable softmax, the causal mask, scaled dot-product attention, the head split and merge, and
# multi-head attention. Its self-checks are the contract checks you saw above.
#
# ## References
#
# * Bahdanau, D., Cho, K., Bengio, Y. (2015). Neural machine translation by jointly learning to
#   align and translate. *ICLR*.
# * Bengio, Y., Simard, P., Frasconi, P. (1994). Learning long-term dependencies with gradient
#   descent is difficult. *IEEE Transactions on Neural Networks* 5(2), 157–166.
# * Cho, K. et al. (2014). Learning phrase representations using RNN encoder-decoder for
#   statistical machine translation. *EMNLP*.
# * Dao, T., Fu, D. Y., Ermon, S., Rudra, A., Ré, C. (2022). FlashAttention: fast and
#   memory-efficient exact attention with IO-awareness. *NeurIPS*.
# * Hochreiter, S., Schmidhuber, J. (1997). Long short-term memory. *Neural Computation* 9(8),
#   1735–1780.
# * Milakov, M., Gimelshein, N. (2018). Online normalizer calculation for softmax.
#   arXiv:1805.02867.
# * Pascanu, R., Mikolov, T., Bengio, Y. (2013). On the difficulty of training recurrent neural
#   networks. *ICML*.
# * Rabe, M. N., Staats, C. (2021). Self-attention does not need $O(n^2)$ memory.
#   arXiv:2112.05682.
# * Vaswani, A. et al. (2017). Attention is all you need. *NeurIPS*.
