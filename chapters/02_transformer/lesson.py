# %% [markdown]
# # The Transformer
#
# Chapter 1 built attention. The Transformer of Vaswani et al. (2017) wraps it in a small number
# of other parts, each simple, each there for a reason:
#
# 1. token embeddings, scaled by $\sqrt{d_\text{model}}$;
# 2. sinusoidal position encodings, and why a shift of position is a rotation;
# 3. layer normalisation and residual paths;
# 4. the position-wise feed-forward network;
# 5. the encoder layer, the decoder layer, cross-attention and the masks;
# 6. a check that the course's encoder-decoder computes exactly what `nn.Transformer` computes;
# 7. teacher forcing: training the decoder on a shifted target;
# 8. training a small encoder-decoder to translate dates, and decoding with it;
# 9. post-LN against pre-LN: what the place of the normalisation does to stability and to the
#    learning rates that train at all;
# 10. cross-attention maps: the alignment between output and input that the model learned.
#
# The code comes from `tfcourse`; its docstrings cite the sections of the paper. The dimension
# letters (`B`, `T`, `S`, `C`, `H`, `D`, and here `V` for the vocabulary size, `F` for the width
# of the feed-forward layer, `L` for the number of layers) are listed on the
# [notation page](../appendices/notation.md). The [exercise notebook](exercises.ipynb) asks you
# to write the position encoding, both layers and the teacher-forcing loss yourself.

# %%
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import tfcourse as tc
from tfcourse import checks
from tfcourse.data import DateTask, date_pairs
from tfcourse.plotting import plot_attention, plot_history

lesson_start = time.perf_counter()
tc.pin_threads()  # a fixed number of CPU threads: steadier timings
tc.seed_everything(0)  # the same random numbers and figures at every run
device = tc.default_device()  # CUDA on a GPU (Colab), else the CPU (Binder)
plt.rcParams.update({"figure.dpi": 100, "grid.alpha": 0.3})
print(f"torch {torch.__version__}, tfcourse {tc.__version__}, "
      f"device: {device}, {torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## 1. Token embeddings and the $\sqrt{d_\text{model}}$ scale
#
# A token is an index into a vocabulary of $V$ entries; the model sees it as a row of an
# embedding table $E \in \mathbb{R}^{V \times C}$, learned with the rest of the model. Vaswani et
# al. (2017, section 3.4) multiply that row by $\sqrt{d_\text{model}} = \sqrt{C}$, and then add a
# position encoding $PE_\text{pos}$ (section 2 below):
#
# $$
# x_\text{pos} = \sqrt{C}\; E_{\text{token}(\text{pos})} + PE_\text{pos} . \tag{1.1}
# $$
#
# The scale matters because of the *sum*. Every row of the sinusoidal table has the same norm,
# $\lVert PE_\text{pos} \rVert = \sqrt{C/2}$ (it holds $C/2$ pairs $(\sin, \cos)$, each of norm
# 1). The token's share of $x$ depends on the size of the rows of $E$, that is on how $E$ is
# initialised. When the table is shared with the output layer (weight tying, Press and Wolf,
# 2017, which the paper uses) its entries start with a standard deviation of about $1/\sqrt{C}$,
# so a row has norm about 1, and the position would dominate the sum; the factor $\sqrt{C}$ brings
# the row to norm about $\sqrt{C}$, the size of the position term. With PyTorch's default
# `nn.Embedding` initialisation, $N(0, 1)$, the rows already have norm about $\sqrt{C}$, and the
# same factor makes the token about $\sqrt{2C}$ times *larger* than the position: then the
# position is drowned. `tc.TokenEmbedding` therefore initialises its table with standard
# deviation $1/\sqrt{C}$ (as fairseq's Transformer does) and applies the scale. The table below
# measures the share of the position in $\lVert x \rVert^2$ for the four combinations, with
# $C = 64$:

# %%
C, V, T = 64, 1000, 32
pe = tc.sinusoidal_encoding(T, C)  # (T, C)
tokens = torch.randint(V, (T,))
initial_std = tc.TokenEmbedding(V, C).weight.std().item()
assert abs(initial_std * C**0.5 - 1) < 0.1  # the text below relies on it
print(f"||PE_pos|| = {pe.norm(dim=-1).mean():.3f} for every pos (sqrt(C/2) = "
      f"{math.sqrt(C / 2):.3f}); tc.TokenEmbedding's initial std: "
      f"{initial_std:.4f} (1/sqrt(C) = {C ** -0.5:.4f})\n")
print(f"{'initial std of E':>17} {'scaled':>7} {'||token||':>10} {'position share':>15}")
for std_name, std in (("1 (nn.Embedding)", 1.0), ("1/sqrt(C)", C ** -0.5)):
    for scale in (False, True):
        embedding = tc.TokenEmbedding(V, C, scale=scale)
        nn.init.normal_(embedding.weight, std=std)
        with torch.no_grad():
            e = embedding(tokens[None])[0]  # (T, C)
        share = (pe.norm(dim=-1) ** 2 / ((e + pe).norm(dim=-1) ** 2)).mean()
        print(f"{std_name:>17} {str(scale):>7} {e.norm(dim=-1).mean():>10.2f} {share:>15.2f}")

# %% [markdown]
# With the initialisation of `tc.TokenEmbedding` and the scale, the token vector has norm about
# $\sqrt{C}$ and the position $\sqrt{C/2}$, so the position carries about a third of $x$: both
# signals are there. Without the scale the position carries almost all of it at the start of
# training; with `nn.Embedding`'s $N(0, 1)$ and the scale, the token does, and the model has to
# grow the tiny position signal before it can tell the order of its inputs. In the date task of
# section 8 the order of the digits is everything ("2031" and "2013" use the same characters).
# Try it there: re-initialise the model's two embedding tables with
# `nn.init.normal_(weight, std=1.0)` before training, and look at which output characters go
# wrong.
#
# ## 2. The sinusoidal position encoding
#
# Attention is blind to order: permute the keys and values together and the output does not
# change. Position must therefore be written into the inputs. Vaswani et al. (2017, section 3.5)
# use a fixed table: for position $\text{pos}$ and channel pair $i = 0, \dots, C/2 - 1$,
#
# $$
# \begin{aligned}
# PE_{(\text{pos}, 2i)} &= \sin(\omega_i\, \text{pos}), \cr
# PE_{(\text{pos}, 2i+1)} &= \cos(\omega_i\, \text{pos}), \qquad \omega_i = 10000^{-2i/C} .
# \end{aligned}
# \tag{2.1}
# $$
#
# Each pair of channels is a point going round a circle at its own angular frequency. The
# wavelengths $2\pi / \omega_i$ form a geometric series from $2\pi$ positions (pair 0) to about
# $2\pi \cdot 10000$ (the last pair): the fast pairs tell neighbouring positions apart, the slow
# ones give a coarse position over long ranges, much as the digits of a number do.

# %%
T, C = 100, 64
pe = tc.sinusoidal_encoding(T, C)  # (T, C)
fig, (ax_map, ax_lines) = plt.subplots(1, 2, figsize=(12, 4))
image = ax_map.imshow(pe.T, aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1,
                      interpolation="nearest")
ax_map.set_xlabel("position pos")
ax_map.set_ylabel("channel")
ax_map.set_title(f"Sinusoidal position encoding, C = {C}")
fig.colorbar(image, ax=ax_map)
for channel in (0, 1, 10, 30):
    kind = "sin" if channel % 2 == 0 else "cos"
    ax_lines.plot(pe[:, channel], label=f"channel {channel} ({kind}, pair {channel // 2})")
ax_lines.set_xlabel("position pos")
ax_lines.set_title("A few channels")
ax_lines.grid(True)
ax_lines.legend(loc="lower left", fontsize=8)
fig.tight_layout()
plt.show()
wavelengths = 2 * math.pi * 10000 ** (torch.arange(0, C, 2) / C)
print(f"wavelengths from {wavelengths[0]:.2f} to {wavelengths[-1]:.0f} positions")

# %% [markdown]
# **A shift by $k$ is a rotation.** The paper chose sinusoids because "for any fixed offset $k$,
# $PE_{\text{pos}+k}$ can be represented as a linear function of $PE_\text{pos}$". The angle-sum
# identities give it pair by pair:
#
# $$
# \begin{pmatrix} \sin \omega_i(\text{pos} + k) \cr \cos \omega_i(\text{pos} + k) \end{pmatrix}
# = \begin{pmatrix} \cos \omega_i k & \sin \omega_i k \cr -\sin \omega_i k & \cos \omega_i k
# \end{pmatrix}
# \begin{pmatrix} \sin \omega_i \text{pos} \cr \cos \omega_i \text{pos} \end{pmatrix} ,
# \tag{2.2}
# $$
#
# so $PE_{\text{pos}+k} = R_k\, PE_\text{pos}$ with $R_k$ block-diagonal, one $2 \times 2$
# rotation by the angle $\omega_i k$ per pair. $R_k$ depends on $k$ only, not on $\text{pos}$: a
# layer that applies a linear map to the encodings can move attention "$k$ positions back" the
# same way at every position. `tc.shift_rotation(k, C)` builds $R_k$; the checks below apply it
# to every row of a 200-position table at once (rows are vectors, hence the transpose), in
# float64:

# %%
pe64 = tc.sinusoidal_encoding(200, C, dtype=torch.float64)  # (T, C)
identity = torch.eye(C, dtype=torch.float64)
print(f"{'k':>4} {'max |PE[pos+k] - R_k PE[pos]|':>31} {'max |R_k R_k^T - I|':>21}")
for k in (1, 7, 50, 150):
    R = tc.shift_rotation(k, C)  # (C, C)
    shifted = pe64[:-k] @ R.T  # row pos becomes R_k PE[pos]
    print(f"{k:>4} {(shifted - pe64[k:]).abs().max():>31.1e} "
          f"{(R @ R.T - identity).abs().max():>21.1e}")
R3, R4, R7 = (tc.shift_rotation(k, C) for k in (3, 4, 7))
checks.expect_close(R3 @ R4, R7, name="R_3 R_4")
print("R_3 R_4 = R_7: shifts compose like rotations")

# %% [markdown]
# One consequence: the dot product of two encodings depends only on their distance,
# $PE_\text{pos} \cdot PE_{\text{pos}+k} = \sum_i \cos(\omega_i k)$, whatever $\text{pos}$ is.
# It is largest at $k = 0$ and falls off, with ripples, as $|k|$ grows: the encoding of a position
# resembles that of its neighbours most.

# %%
fig, ax = plt.subplots(figsize=(7, 3.5))
for pos in (0, 40, 90):
    ks = torch.arange(-pos, 200 - pos)
    ax.plot(ks, pe64[pos + ks] @ pe64[pos], label=f"pos = {pos}")
ax.set_xlabel("offset k")
ax.set_ylabel(r"$PE_{pos} \cdot PE_{pos+k}$")
ax.set_title("The dot product depends only on the offset")
ax.grid(True)
ax.legend()
plt.show()

# %% [markdown]
# Learned position embeddings (a table of $T_\text{max} \times C$ parameters,
# `tc.LearnedPositionalEmbedding`) work about as well in the paper's translation experiments
# (Vaswani et al., 2017, Table 3, row E) and are what BERT and GPT use (chapter 3). The sinusoids
# need no parameters and are defined at every position.
#
# **Exercise 1** asks you to write Eq. (2.1).
#
# ## 3. Layer normalisation and residual paths
#
# Each sublayer of a Transformer (attention, feed-forward) is wrapped in two things. A
# **residual connection** adds the sublayer's input to its output, $x + \operatorname{Sublayer}(x)$
# (He et al., 2016): the layer only has to learn a correction to its input, and the gradient has
# a path through the addition that no weight can shrink. **Layer normalisation** (Ba et al., 2016)
# rescales each position's vector to zero mean and unit variance over its $C$ features, then
# applies a learned gain $\gamma$ and bias $\beta$:
#
# $$
# \begin{aligned}
# \operatorname{LayerNorm}(x) &= \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,
# \cr
# \mu &= \frac{1}{C} \sum_{c} x_c,\quad \sigma^2 = \frac{1}{C} \sum_{c} (x_c - \mu)^2 .
# \end{aligned}
# \tag{3.1}
# $$
#
# Unlike batch normalisation it uses no statistics across the batch or across positions, so it
# works the same for any batch size and sequence length, in training and at inference.

# %%
x = 3 * torch.randn(2, 5, 64) + 1  # (B, T, C), mean 1, standard deviation 3
norm = nn.LayerNorm(64)
mu = x.mean(dim=-1, keepdim=True)  # (B, T, 1)
var = x.var(dim=-1, unbiased=False, keepdim=True)  # (B, T, 1), the 1/C variance
checks.expect_close(norm(x), (x - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias,
                    name="Eq. (3.1)")
y = norm(x)
print(f"nn.LayerNorm = Eq. (3.1); after it, each position has mean "
      f"{y.mean(-1).abs().max():.1e} (at most) and standard deviation "
      f"{y.std(-1, unbiased=False).mean():.4f}")

# %% [markdown]
# **Where the normalisation goes.** The paper normalises after the residual sum (**post-LN**);
# most models since normalise the sublayer's input instead and leave the residual path alone
# (**pre-LN**), with one more LayerNorm after the last layer:
#
# $$
# \begin{aligned}
# \text{post-LN:}\quad x_{l+1} &= \operatorname{LN}\big(x_l + \operatorname{F}_l(x_l)\big), \cr
# \text{pre-LN:}\quad x_{l+1} &= x_l + \operatorname{F}_l\big(\operatorname{LN}(x_l)\big) .
# \end{aligned}
# \tag{3.2}
# $$
#
# In pre-LN, unrolling gives $x_L = x_0 + \sum_{l} \operatorname{F}_l(\cdot)$: the input reaches
# the output, and the gradient reaches every layer, through additions only. In post-LN every
# path passes through $L$ normalisations. Xiong et al. (2020) show that at initialisation the
# post-LN gradients of the parameters near the output are large, which is why post-LN needs a
# learning-rate warm-up, while pre-LN's are well behaved (their Theorem 1 and Figure 3).
# Section 9 measures what that means for training.

# %% [markdown]
# ## 4. The position-wise feed-forward network
#
# After attention has mixed information *across* positions, a two-layer network processes each
# position on its own (Vaswani et al., 2017, section 3.3, Eq. 2):
#
# $$
# \operatorname{FFN}(x) = \max(0,\, x W_1 + b_1)\, W_2 + b_2, \tag{4.1}
# $$
#
# with $W_1 \in \mathbb{R}^{C \times F}$, $W_2 \in \mathbb{R}^{F \times C}$ and $F = 4C$ in the
# paper (2048 for $C = 512$). It holds two thirds of the parameters of an
# encoder layer ($8C^2$ against $4C^2$ for attention). "Position-wise" means the same weights at
# every position and no exchange between positions, so permuting the positions of the input
# permutes the output the same way:

# %%
C = 64
ffn = tc.FeedForward(C, 4 * C).to(device)
x = torch.randn(2, 7, C, device=device)  # (B, T, C)
permutation = torch.randperm(7, device=device)
with torch.no_grad():
    checks.expect_close(ffn(x[:, permutation]), ffn(x)[:, permutation], name="FFN")
num_parameters = sum(p.numel() for p in ffn.parameters())
assert num_parameters == 8 * C * C + 5 * C  # W_1, W_2 and the biases b_1 (F), b_2 (C)
print(f"FFN(C={C}, F={4 * C}): {num_parameters} parameters = 8C^2 + 5C; "
      "it commutes with any permutation of the positions")

# %% [markdown]
# ## 5. Encoder, decoder, cross-attention and the masks
#
# An **encoder layer** is self-attention then the feed-forward network, each wrapped as in
# Eq. (3.2). A **decoder layer** has a third sublayer between them, **cross-attention**: its
# queries come from the decoder's own positions, its keys and values from the encoder's output,
# the *memory*. That is where the output looks at the input.
#
# | sublayer | queries | keys, values | mask |
# |---|---|---|---|
# | encoder self-attention | source (S) | source (S) | source padding |
# | decoder self-attention | target (T) | target (T) | causal |
# | decoder cross-attention | target (T) | memory (S) | source padding |
#
# * **Padding.** The sentences of a batch have different lengths and are padded to the longest
#   with a `<pad>` token; no query may attend to a padded key, so padding never changes a real
#   position's output.
# * **Causality.** The decoder is trained on whole target sequences (section 7), but at step $t$ it
#   will have produced only tokens $0, \dots, t-1$: position $t$ must not see later positions.
#   The causal mask goes on the decoder's *self*-attention only: the whole source is known from
#   the start. (Target padding comes after the real tokens, so the causal mask already hides it
#   from them, and the loss leaves padded positions out.)
#
# `tc.Transformer` puts it together: embeddings and positions for both sides, an `Encoder` of
# $L$ layers, a `Decoder` of $L$ layers, a final linear layer to the target vocabulary. The
# shapes, on a batch of two random source and target sequences, the second source padded:

# %%
tc.seed_everything(0)
model = tc.Transformer(30, 20, d_model=32, num_heads=4, num_encoder_layers=2,
                       num_decoder_layers=2, d_ff=64, dropout=0.0).to(device).eval()
src = torch.randint(1, 30, (2, 9), device=device)  # (B, S); 0 is <pad>
src[1, 6:] = 0  # the second source has 6 tokens and 3 pads
tgt_in = torch.randint(1, 20, (2, 7), device=device)  # (B, T)
with torch.no_grad():
    memory = model.encode(src)  # (B, S, C)
    logits = model.decode(tgt_in, memory, src)  # (B, T, V)
    weights = model.cross_attention_weights(src, tgt_in)  # (B, H, T, S), last layer
print(f"src {tuple(src.shape)} -> memory {tuple(memory.shape)}; tgt_in {tuple(tgt_in.shape)} "
      f"-> logits {tuple(logits.shape)}; cross-attention weights {tuple(weights.shape)}")
print(f"cross-attention weight on the padded source positions: "
      f"{weights[1, ..., 6:].abs().max():.1e}")

# %% [markdown]
# Two contracts, checked on this model. The padded second source gives the same logits as the
# same six tokens alone, without padding; and changing the target tokens after position $t$
# changes no logit at positions $\le t$ (the causal mask works through every layer).

# %%
with torch.no_grad():
    alone = model(src[1:, :6], tgt_in[1:])  # (1, T, V): the second source, unpadded
    checks.expect_close(logits[1:], alone, name="logits of a padded source")
    for t in range(tgt_in.shape[1] - 1):
        changed = tgt_in.clone()
        changed[:, t + 1:] = torch.randint(1, 20, changed[:, t + 1:].shape, device=device)
        moved = (model.decode(changed, memory, src) - logits)[:, :t + 1].abs().max()
        assert moved < 1e-5, f"position {t} changed by {moved:.2e}"
print("padding changes no output; the logits at t depend only on target tokens <= t")

# %% [markdown]
# ## 6. The same function as `nn.Transformer`
#
# PyTorch's `nn.Transformer` is the encoder-decoder core of the paper (post-LN, with a final
# LayerNorm after each stack), without embeddings or output layer. `load_core_from_torch` copies its weights into the encoder and decoder stacks of a
# `tc.Transformer` built with `norm_first=False`; both must then compute the same function on the
# same embedded inputs, with the same masks (PyTorch's masks are `True` = blocked, hence the `~`
# and the `padding` as is).

# %%
B, S, T, C = 3, 11, 8, 32
reference = nn.Transformer(d_model=C, nhead=4, num_encoder_layers=2, num_decoder_layers=2,
                           dim_feedforward=64, dropout=0.0, batch_first=True).to(device).eval()
reference.encoder.use_nested_tensor = False  # PyTorch's prototype fast path: a warning, and
# zeros instead of values at padded positions of the memory
ours = tc.Transformer(10, 10, d_model=C, num_heads=4, num_encoder_layers=2,
                      num_decoder_layers=2, d_ff=64, dropout=0.0).to(device).eval()
ours.load_core_from_torch(reference)
src_x = torch.randn(B, S, C, device=device)  # embedded source (B, S, C)
tgt_x = torch.randn(B, T, C, device=device)  # embedded target (B, T, C)
padding = torch.arange(S, device=device) >= torch.tensor([11, 7, 4], device=device)[:, None]
causal = tc.causal_mask(T, device=device)  # (T, T), True = may attend
with torch.no_grad():
    expected = reference(src_x, tgt_x, tgt_mask=~causal, src_key_padding_mask=padding,
                         memory_key_padding_mask=padding)
    memory = ours.encoder(src_x, mask=~padding[:, None, None, :])  # True = may attend
    got = ours.decoder(tgt_x, memory, memory_mask=~padding[:, None, None, :])
checks.expect_close(got, expected, name="tc encoder-decoder against nn.Transformer")
print(f"tc.Transformer's encoder and decoder = nn.Transformer (largest difference "
      f"{(got - expected).abs().max():.1e})")

# %% [markdown]
# ## 7. The task, and teacher forcing
#
# The task: read a date as people write it, in one of several formats, and write it in ISO 8601.
# It has the structure of translation: the output's tokens come from the input in another
# order (the year first), some input tokens must be rewritten ("March" becomes "03"), and some
# ignored (the weekday). `tfcourse.data.DateTask` generates the pairs, character-level
# tokenizers for both sides and batches; a fixed tenth of all dates from 1950 to 2049 is held out
# for testing and never appears in training.

# %%
task = DateTask()
src_tok, tgt_tok = task.source_tokenizer, task.target_tokenizer
print(task)
for source, target in date_pairs(6, seed=3):
    print(f"{source:>28}  ->  {target}")

# %% [markdown]
# The decoder is autoregressive: it predicts $y_t$ from the source and $y_0, \dots, y_{t-1}$. In
# training all $T$ predictions are computed at once, with the true previous tokens as input
# (*teacher forcing*): the decoder input is the target **shifted right** by one position behind a
# `<bos>` token, and position $t$ is scored on the unshifted target $y_t$. The causal mask makes
# sure that position $t$ cannot simply read $y_t$ from its input. `DateTask` returns targets
# with `<bos>` and `<eos>` already in place, `<bos> y_0 ... y_9 <eos>`, so the decoder input is
# `tgt[:, :-1]` and the labels are `tgt[:, 1:]`, which is the same as `shift_right(labels, bos)`:

# %%
src, tgt = task.batches(4, seed=0)(0)  # (B, S), (B, 12)
tgt_in, labels = tgt[:, :-1], tgt[:, 1:]  # (B, 11) each
assert torch.equal(tgt_in, tc.shift_right(labels, tgt_tok.bos_id))
print("source:        ", repr(src_tok.decode(src[0].tolist())))
tokens = lambda ids: " ".join(tgt_tok.tokens[i] for i in ids.tolist())  # noqa: E731
print("decoder input: ", tokens(tgt_in[0]))
print("labels:        ", tokens(labels[0]))

# %% [markdown]
# ## 8. Training the encoder-decoder on dates
#
# The model: $C = 64$, 4 heads, 2 encoder and 2 decoder layers, $F = 256$, the paper's post-LN,
# no dropout (the training data are fresh at every step, so there is nothing to overfit). The
# shared training loop `tc.Trainer` runs AdamW with $\beta = (0.9, 0.98)$ as in the paper, a
# linear warm-up of 50 steps then a cosine decay, gradient clipping at norm 1, on 500 batches of
# 64 fresh training pairs. The loss is the cross-entropy of the next target token (section 7);
# the token accuracy is logged beside it.

# %%
def loss_fn(model, batch):
    src, tgt = batch
    logits = model(src, tgt[:, :-1])  # (B, T, V): teacher forcing
    labels = tgt[:, 1:]  # (B, T)
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=tgt_tok.pad_id)
    accuracy = (logits.argmax(-1) == labels).float().mean()
    return loss, {"token_accuracy": accuracy.item()}


def build_model(norm_first=False, layers=2):
    return tc.Transformer(src_tok.vocab_size, tgt_tok.vocab_size, d_model=64, num_heads=4,
                          num_encoder_layers=layers, num_decoder_layers=layers, d_ff=256,
                          dropout=0.0, norm_first=norm_first, pad_id=src_tok.pad_id)


tc.seed_everything(0)
model = build_model()
config = tc.TrainConfig(steps=500, lr=2e-3, warmup_steps=50, schedule="cosine", log_every=10,
                        seed=0, device=device)
trainer = tc.Trainer(model, loss_fn, task.batches(64, seed=0), config)
start = time.perf_counter()
history = trainer.fit()
train_seconds = time.perf_counter() - start
print(f"{config.steps} steps in {train_seconds:.0f} s; final loss {history.last('loss'):.4f}")

fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.6))
plot_history(history, ax=ax_loss, metrics="loss", logy=True, title="Training loss")
plot_history(history, ax=ax_acc, metrics="token_accuracy", title="Token accuracy")
fig.tight_layout()
plt.show()

# %% [markdown]
# **Decoding.** At inference there is no target to feed. Greedy decoding starts from `<bos>`,
# runs the decoder, appends the most probable token, and repeats until every sequence has produced
# `<eos>` (`model.greedy_decode`, which keeps the keys and values of earlier steps in a cache
# rather than recomputing them; chapter 3 measures what that saves). The measure is the
# **exact-match** accuracy: the fraction of held-out dates whose ten characters all come out right.

# %%
test_pairs = date_pairs(1000, seed=1, split="test")  # dates never seen in training


@torch.no_grad()
def translate(model, sources):
    model.eval()
    src = src_tok.encode_batch(sources).to(device)
    out = model.greedy_decode(src, bos_id=tgt_tok.bos_id, eos_id=tgt_tok.eos_id,
                              max_len=task.target_len - 1)
    return tgt_tok.decode_batch(out.cpu())


predictions = translate(model, [s for s, _ in test_pairs])
correct = [p == t for p, (_, t) in zip(predictions, test_pairs, strict=True)]
exact_match = sum(correct) / len(correct)
print(f"exact match on {len(test_pairs)} held-out dates: {exact_match:.1%} "
      f"(training: {train_seconds:.0f} s on {device.type.upper()})")
assert exact_match >= 0.95, f"exact match {exact_match:.3f} is below the 95% this page promises"

print("\nsome translations:")
for (source, target), prediction in list(zip(test_pairs, predictions, strict=True))[:8]:
    print(f"{source:>28}  ->  {prediction}  {'ok' if prediction == target else 'WRONG: ' + target}")
mistakes = [(s, p, t) for (s, t), p in zip(test_pairs, predictions, strict=True) if p != t]
print(f"\n{len(mistakes)} mistakes" + (":" if mistakes else ""))
for source, prediction, target in mistakes[:6]:
    print(f"{source:>28}  ->  {prediction}  (should be {target})")

# %% [markdown]
# ## 9. Post-LN against pre-LN
#
# Xiong et al. (2020) found that post-LN Transformers need a learning-rate warm-up and are
# sensitive to its length and to the peak rate, while pre-LN ones train without warm-up and
# tolerate larger rates. We measure it on the same task, with a deeper stack, where the effect is
# stronger: 6 encoder and 6 decoder layers, **no warm-up, no gradient clipping**, a constant
# learning rate, three rates, both placements, 80 steps each, on the same batches. The figure
# reported is the mean loss of the last 20 steps. (Short runs, to keep the page fast: they show
# whether training takes off, not where it ends.)

# %%
SWEEP_RATES = (1e-3, 3e-3, 1e-2)
sweep = {}
sweep_start = time.perf_counter()
for norm_first in (False, True):
    for lr in SWEEP_RATES:
        tc.seed_everything(0)
        deep = build_model(norm_first=norm_first, layers=6)
        run_config = tc.TrainConfig(steps=80, lr=lr, warmup_steps=0, schedule="constant",
                                    grad_clip=None, log_every=5, seed=0, device=device,
                                    progress=False)
        name = "pre-LN" if norm_first else "post-LN"
        try:
            run = tc.Trainer(deep, loss_fn, task.batches(16, seed=1), run_config).fit()
            final = sum(run.loss[-4:]) / 4  # the last 4 records of 5 steps: the last 20 steps
        except FloatingPointError:  # the loss became nan or inf
            run, final = None, float("nan")
        sweep[name, lr] = (run, final)
sweep_seconds = time.perf_counter() - sweep_start

uniform = math.log(10)  # the loss of a uniform guess over the 10 digits
fig, (ax_curves, ax_final) = plt.subplots(1, 2, figsize=(12, 4))
for (name, lr), (run, _) in sweep.items():
    if run is not None:
        ax_curves.plot(run.steps, run.loss, linestyle="-" if name == "pre-LN" else "--",
                       label=f"{name}, lr {lr:g}")
ax_curves.axhline(uniform, color="grey", linestyle=":", label="uniform over digits")
ax_curves.set_xlabel("step")
ax_curves.set_ylabel("training loss")
ax_curves.set_title("6 + 6 layers, no warm-up, no clipping")
ax_curves.grid(True)
ax_curves.legend(fontsize=8, ncol=2)
for name, marker in (("post-LN", "o"), ("pre-LN", "s")):
    ax_final.plot(SWEEP_RATES, [sweep[name, lr][1] for lr in SWEEP_RATES], marker=marker,
                  label=name)
ax_final.axhline(uniform, color="grey", linestyle=":")
ax_final.set_xscale("log")
ax_final.set_xlabel("learning rate")
ax_final.set_ylabel("loss, mean of the last 20 steps")
ax_final.set_title("Learning-rate tolerance")
ax_final.grid(True)
ax_final.legend()
fig.tight_layout()
plt.show()

print(f"loss after 80 steps (uniform guess: {uniform:.2f}); {sweep_seconds:.0f} s for the sweep")
print(f"{'learning rate':>14} {'post-LN':>8} {'pre-LN':>8}")
for lr in SWEEP_RATES:
    print(f"{lr:>14g} {sweep['post-LN', lr][1]:>8.3f} {sweep['pre-LN', lr][1]:>8.3f}")
stalled = {key for key, (_, final) in sweep.items() if not final < 0.9 * uniform}  # nan too
print("stalled (loss above 90% of the uniform guess's):",
      ", ".join(f"{name} at lr {lr:g}" for name, lr in sorted(stalled)) or "none")
assert ("post-LN", SWEEP_RATES[-1]) in stalled and not any(n == "pre-LN" for n, _ in stalled)

# %% [markdown]
# At the smallest rate both placements learn at about the same pace. As the rate grows the deep
# post-LN model falls behind, and at the largest it does not learn at all: its loss stays at that
# of a uniform guess over the digits, while the pre-LN model still learns. That is the
# learning-rate tolerance of Xiong et al. (2020), and one reason why pre-LN became the default
# (GPT-2, Radford et al., 2019, moved the normalisation to the input of each sub-block;
# chapter 3's models do the same). Post-LN trains well with a warm-up, as section 8 did with 2+2
# layers; its trouble is getting started without one.
#
# ## 10. Cross-attention: what the decoder looks at
#
# Each row of a cross-attention map shows, for one output position, how its attention spreads
# over the source characters. Below, the last decoder layer's weights, averaged over its 4 heads,
# for three formats; each row is labelled with the character that position writes.

# %%
examples = ["Friday, March 5 2021", "the 23rd of July 1987", "05/11/2043"]
targets = [translate(model, [s])[0] for s in examples]
src = src_tok.encode_batch(examples).to(device)
tgt = tgt_tok.encode_batch(targets, add_bos=True, add_eos=True).to(device)
with torch.no_grad():
    maps = model.cross_attention_weights(src, tgt[:, :-1]).mean(dim=1)  # (B, T, S)
fig, axes = plt.subplots(1, 3, figsize=(15, 4.8),
                         gridspec_kw={"width_ratios": [len(s) for s in examples]})
for b, (ax, source, target) in enumerate(zip(axes, examples, targets, strict=True)):
    outputs = list(target) + ["<eos>"]  # row t writes this token
    plot_attention(maps[b, :, :len(source)], query_labels=outputs, key_labels=list(source),
                   ax=ax, title=f"{source!r} -> {target}", colorbar=False)
fig.tight_layout()
plt.show()

# %% [markdown]
# To put a number on the alignment: for held-out sources that contain a four-digit year, the
# share of the attention of the four rows that write the year which falls on the four characters
# of the year in the source, per decoder layer, against the share that uniform attention would
# give.

# %%
with_year = [(s, t) for s, t in test_pairs if t[:4] in s][:300]
src = src_tok.encode_batch([s for s, _ in with_year]).to(device)
tgt = tgt_tok.encode_batch([t for _, t in with_year], add_bos=True, add_eos=True).to(device)
on_year = torch.zeros(len(with_year), src.shape[1], dtype=torch.bool)  # (B, S)
for b, (source, target) in enumerate(with_year):
    start = source.rfind(target[:4])
    on_year[b, start:start + 4] = True
lengths = (src != src_tok.pad_id).sum(dim=1).cpu()
print(f"{len(with_year)} held-out sources with a four-digit year; uniform attention would put "
      f"{(4 / lengths.float()).mean():.0%} on the year")
with torch.no_grad():
    for layer in range(2):
        w = model.cross_attention_weights(src, tgt[:, :-1], layer=layer).mean(dim=1).cpu()
        share = (w[:, :4] * on_year[:, None, :]).sum(-1).mean()  # rows 0-3 write the year
        print(f"decoder layer {layer}: the year rows put {share:.0%} of their attention on it")
lesson_seconds = time.perf_counter() - lesson_start
print(f"\nthis page ran in {lesson_seconds:.0f} s, of which training {train_seconds:.0f} s and "
      f"the post-LN/pre-LN sweep {sweep_seconds:.0f} s")

# %% [markdown]
# The model was never told which source characters belong to the year; it learned to look there
# when writing it. In the maps above, the rows that write the month look at the month's name or
# digits, and the weekday, which the output does not need, gets little attention.
#
# ## Summary
#
# * Token embeddings are scaled by $\sqrt{d_\text{model}}$ so that, with an initialisation of
#   standard deviation $1/\sqrt{d_\text{model}}$, token and position contribute equally to the
#   input (Eq. 1.1).
# * The sinusoidal encoding gives each channel pair its own frequency (Eq. 2.1); a shift by $k$
#   positions is a fixed rotation $R_k$ (Eq. 2.2), the same at every position, checked above to
#   float64 precision.
# * Residual connections carry the input and the gradient through additions; LayerNorm rescales
#   each position (Eq. 3.1). Post-LN normalises after the sum, pre-LN before the sublayer
#   (Eq. 3.2).
# * The feed-forward network (Eq. 4.1) processes every position on its own.
# * The decoder has causal self-attention and cross-attention (queries from the decoder, keys and
#   values from the memory); padding is masked everywhere. The course's encoder-decoder computes
#   exactly what `nn.Transformer` computes.
# * Teacher forcing trains all positions at once on the target shifted right; greedy decoding
#   generates one token at a time.
# * A 2+2-layer model trained for 500 steps translates held-out dates with the exact-match
#   accuracy printed above, and its cross-attention learned the alignment between output and
#   input. Without warm-up, a deep post-LN model stalls at learning rates where pre-LN trains.
#
# **Exercises.** The [exercise notebook](exercises.ipynb) asks you to write the sinusoidal
# encoding, an encoder layer with both placements of the normalisation, the decoder layer, the
# shifted decoder input and the teacher-forcing loss.
#
# ## References
#
# * Ba, J. L., Kiros, J. R., Hinton, G. E. (2016). Layer normalization. arXiv:1607.06450.
# * He, K., Zhang, X., Ren, S., Sun, J. (2016). Deep residual learning for image recognition.
#   *CVPR*.
# * Ott, M. et al. (2019). fairseq: a fast, extensible toolkit for sequence modeling.
#   *NAACL-HLT (Demonstrations)*.
# * Press, O., Wolf, L. (2017). Using the output embedding to improve language models. *EACL*.
# * Radford, A., Wu, J., Child, R., Luan, D., Amodei, D., Sutskever, I. (2019). Language models
#   are unsupervised multitask learners. OpenAI technical report.
# * Vaswani, A. et al. (2017). Attention is all you need. *NeurIPS*.
# * Xiong, R. et al. (2020). On layer normalization in the Transformer architecture. *ICML*.
