# %% [markdown]
# # Activator: gating in place of attention
#
# Chapters 4 and 5 built a Vision Transformer and made it cheaper by merging tokens. Abdullah
# and Aydin (2024) go further: **Activator** removes the attention from the ViT block and puts a
# *gated* MLP in its place, built on the gated linear unit (GLU). Gates are learned
# multiplicative switches: one branch of the network decides, feature by feature, how much of
# another branch gets through. This chapter builds Activator as its authors released it and
# tests it on the digits of chapter 4:
#
# 1. gated linear units: Dauphin's GLU, the simplified form $\sigma(Wx + b) \odot x$ as a special
#    case, GEGLU and SwiGLU, and what a gate learns on a task that needs one;
# 2. the Activator gating unit, block and classifier, equation by equation, with the parameter
#    count of the released model;
# 3. what the released model does **not** do: it mixes nothing across patches. Checked in code:
#    permuting the patches permutes the outputs, and changing one patch changes no other patch's
#    representation. Its prediction is the average of sixteen per-patch predictions;
# 4. Activator and the chapter-4 ViT trained with the same recipe at the same parameter count:
#    accuracy, parameters, FLOPs per image and measured throughput;
# 5. what the paper claims, against what this comparison shows;
# 6. a variant with a token-mixing step in each block, and whether it helps on this data.
#
# The code comes from `tfcourse.glu` (`GLU`, `simplified_glu`), `tfcourse.activator`
# (`ActivatorGatingUnit`, `ActivatorBlock`, `ActivatorClassifier`) and chapter 4's digits,
# trainer and ViT. The letters are those of the [notation page](../appendices/notation.md):
# `N` patches, `C` the model width, `F` the hidden width of the gating unit and of the
# feed-forward network. The [exercise notebook](exercises.ipynb) asks you to write a GLU
# variant, the gating unit, the block and a test for token mixing yourself.

# %%
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import tfcourse as tc
from tfcourse import checks
from tfcourse.activator import block_parameters
from tfcourse.bench.activator import activator_vs_vit
from tfcourse.classification import (
    DIGITS_ACTIVATOR,
    DIGITS_VIT,
    accuracy,
    flops_per_image,
    interleaved_throughput,
    train_digits_activator,
    train_digits_vit,
)
from tfcourse.data import load_digit_images
from tfcourse.plotting import plot_history

lesson_start = time.perf_counter()
tc.pin_threads()  # a fixed number of CPU threads: steadier timings
tc.seed_everything(0)  # the same random numbers and figures at every run
device = tc.default_device()  # CUDA on a GPU (Colab), else the CPU (Binder)
plt.rcParams.update({"figure.dpi": 100, "grid.alpha": 0.3})
print(f"torch {torch.__version__}, tfcourse {tc.__version__}, "
      f"device: {device}, {torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## 1. Gated linear units
#
# A **gated linear unit** computes two linear maps of the same input and multiplies them
# element by element, one of them through a squashing function (Dauphin et al., 2017, Eq. 1):
#
# $$
# h(x) = (x W + b) \otimes \sigma(x V + c) . \tag{1.1}
# $$
#
# The first factor is the **value**, what could be passed on; the second is the **gate**, a
# number between 0 and 1 for each feature that says how much of it is. Both are learned, and
# the gate depends on the input: the same unit lets a feature through for one input and blocks
# it for another. That is the difference with an activation such as ReLU, which decides from
# the feature's own sign; a gate decides from anything in the input.
#
# **The simplified form.** One often reads the GLU written as $\sigma(W x + b) \odot x$: the
# input itself, gated. It is the special case of Eq. 1.1 in which the value map is the identity
# ($W = I$, $b = 0$), so it keeps the width of its input; the GLU of Eq. 1.1 has its own value
# map and any output width. `simplified_glu` computes the special form; a `GLU` whose value
# weights are set to the identity gives the same numbers:

# %%
C_in = 6
glu = tc.GLU(C_in, C_in, variant="glu")  # value W, b and gate V, c: C -> C
x = torch.randn(4, C_in)
with torch.no_grad():
    glu.value.weight.copy_(torch.eye(C_in))  # W = I
    glu.value.bias.zero_()  # b = 0
checks.expect_close(tc.simplified_glu(x, glu.gate), glu(x), "sigma(Vx + c) * x")
checks.expect_close(glu(x), F.glu(torch.cat([glu.value(x), glu.gate(x)], dim=-1)), "torch's glu")
print("sigma(Wx + b) * x is the GLU with an identity value map; F.glu is Eq. 1.1 on a split input")

# %% [markdown]
# **The variants.** Shazeer (2020, Eqs. 1 to 5) keeps the product and changes the gate's
# function: GELU gives **GEGLU**, Swish ($x\,\sigma(x)$, PyTorch's SiLU) gives **SwiGLU**, ReLU
# gives ReGLU, and no function at all the bilinear unit. The feed-forward network of a
# Transformer becomes $(\operatorname{act}(x W_1) \otimes x V) W_2$, and in his experiments these
# variants train to a lower perplexity than the ReLU or GELU network of the same size. SwiGLU
# is the feed-forward of LLaMA and most recent language models; GEGLU is the one Activator
# uses. Unlike the sigmoid, GELU and Swish are not bounded by 1 and go slightly negative: they
# are gates that can also amplify and flip.

# %%
z = torch.linspace(-4, 4, 401)
fig, ax = plt.subplots(figsize=(6, 3.2))
for name in ("glu", "geglu", "swiglu", "reglu"):
    label = {"glu": "sigmoid (GLU)", "geglu": "GELU (GEGLU)", "swiglu": "SiLU (SwiGLU)",
             "reglu": "ReLU (ReGLU)"}[name]
    ax.plot(z, tc.GLU(1, 1, variant=name).activation(z), label=label)
ax.set(xlabel="gate pre-activation  x V + c", ylabel="gate value", ylim=(-0.5, 4),
       title="The gate's function in each GLU variant")
ax.legend()
ax.grid(True)
plt.show()

# %% [markdown]
# **What a gate learns.** A task that needs a gate: from an input $(a, b, s)$, output $a$ when
# the switch $s$ is $+1$ and $b$ when it is $-1$ ($a$ and $b$ are random numbers). No sum of
# functions of single inputs can do it: which input matters depends on another input. A GLU with two hidden units and a
# linear read-out solves it exactly when one gate opens for $s > 0$ over the value $a$, and the
# other for $s < 0$ over $b$. We train one for 600 steps and look at its two gates:

# %%
def switch_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, 3) = (a, b, s), s = +1 or -1, and targets (n, 1): a if s > 0, else b."""
    x = torch.randn(n, 3, generator=generator)
    x[:, 2] = x[:, 2].sign()  # the switch
    return x, torch.where(x[:, 2:] > 0, x[:, :1], x[:, 1:2])


generator = torch.Generator().manual_seed(0)
switch = nn.Sequential(tc.GLU(3, 2, variant="glu"), nn.Linear(2, 1))
optimizer = torch.optim.Adam(switch.parameters(), lr=0.03)
for _ in range(600):
    inputs, targets = switch_batch(256, generator)
    loss = F.mse_loss(switch(inputs), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
test_inputs, test_targets = switch_batch(2000, generator)
with torch.no_grad():
    switch_error = F.mse_loss(switch(test_inputs), test_targets).item()
    probe = torch.zeros(201, 3)
    probe[:, 2] = torch.linspace(-1.5, 1.5, 201)  # only the switch varies, between and beyond ±1
    gates = switch[0].gate_values(probe)  # (201, 2)
print(f"mean squared error on new inputs: {switch_error:.4f} (targets have variance 1)")

fig, ax = plt.subplots(figsize=(6, 3))
for unit in range(2):
    weights = switch[0].value.weight[unit].detach()
    reads = "a" if weights[0].abs() > weights[1].abs() else "b"
    ax.plot(probe[:, 2], gates[:, unit], label=f"gate of unit {unit} (its value reads {reads})")
ax.set(xlabel="switch s", ylabel="gate value sigma(xV + c)",
       title="Learned gates: each opens on one side of the switch")
ax.legend()
ax.grid(True)
plt.show()
assert switch_error < 0.01, "the GLU should learn the switch"

# %% [markdown]
# Each gate became a step in $s$, near 0 on one side of the switch and near 1 on the other: a
# multiplicative switch, learned from examples, that routes one input to the output and blocks
# the other. This is the sense in which a GLU
# "controls the flow of information". Note what it controls: features **of the same input
# vector**. A GLU applied to each token of a sequence gates each token's features by that same
# token's features; it does not bring anything from another token. Section 3 returns to this.
#
# ## 2. The Activator block, equation by equation
#
# Activator replaces the attention of a ViT block with a **gating unit** and keeps the
# block's feed-forward network. The structure below is that of the authors' released model
# (the code published with the paper); `tfcourse.activator` follows it.
#
# **The gating unit.** Two up-projections of the (normalised) token $x \in \mathbb{R}^C$ to
# width $F$, GELU on the first, **one** layer norm over $F$, the same instance for both
# branches, applied after the GELU; the product is projected back to $C$:
#
# $$
# \begin{aligned}
# u &= \operatorname{LN}_F\!\big(\operatorname{GELU}(x W_1 + b_1)\big), \cr
# v &= \operatorname{LN}_F(x W_2 + b_2), \cr
# \operatorname{AGU}(x) &= (u \odot v)\, W_3 + b_3 .
# \end{aligned}
# \tag{2.1}
# $$
#
# It is the GEGLU feed-forward of section 1 with a layer norm on each branch before the
# product.
#
# **The block.** A residual gating unit, then a residual feed-forward (GELU, hidden width $F$),
# with **one** layer norm instance used before both, where a ViT block has two:
#
# $$
# x' = x + \operatorname{AGU}(\operatorname{LN}(x)), \qquad
# y = x' + \operatorname{FFN}(\operatorname{LN}(x')) . \tag{2.2}
# $$
#
# The **reduced** block drops the feed-forward, $y = x'$; the paper's second model.
#
# **The classifier.** A convolution with kernel and stride $P$ cuts and embeds the patches, as
# in chapter 4; then $L$ blocks, the mean over the $N$ patches and a linear head. There is no
# class token, no position embedding and no final norm:
#
# $$
# \begin{aligned}
# z_0 &= [x_p^1 E;\ \dots;\ x_p^N E], \qquad z_\ell = \operatorname{Block}(z_{\ell-1}), \cr
# y &= \Big(\frac{1}{N} \sum_{i=1}^{N} z_L^i\Big) W_\text{head} + b_\text{head} .
# \end{aligned}
# \tag{2.3}
# $$
#
# Each equation, computed by hand on one batch of digits and compared with the module:

# %%
data = load_digit_images(16)
images = data.test_images[:8].to(device)  # (B, K, I, I)
tc.seed_everything(0)
model = tc.ActivatorClassifier(**DIGITS_ACTIVATOR).to(device).eval()
B, N, C = len(images), model.patch_embed.num_patches, DIGITS_ACTIVATOR["d_model"]
Fh = DIGITS_ACTIVATOR["d_hidden"]  # F (the name F is torch.nn.functional here)
print(f"B={B}, N={N} patches, C={C}, F={Fh}, L={DIGITS_ACTIVATOR['num_layers']} blocks")

with torch.no_grad():
    z = model.patch_embed(images)  # Eq. 2.3: z_0, (B, N, C); no class token, no positions
    checks.expect_shape(z, (B, N, C), "z_0")
    block = model.blocks[0]
    unit = block.gating
    h = block.norm(z)  # LN(x): the block's one norm
    u = unit.norm(F.gelu(unit.gate_proj(h)))  # Eq. 2.1: GELU, then the shared LN_F
    v = unit.norm(unit.value_proj(h))  # the same LN_F instance
    checks.expect_shape(u, (B, N, Fh), "u")
    agu = unit.out_proj(u * v)  # (B, N, F) -> (B, N, C)
    checks.expect_close(agu, unit(h), "AGU(LN(x))")
    x_mid = z + agu  # Eq. 2.2, first residual
    y = x_mid + block.ffn(block.norm(x_mid))  # the same norm again, second residual
    checks.expect_close(y, block(z), "block output")
    for block in model.blocks:
        z = block(z)
    logits = model.head(z.mean(dim=1))  # Eq. 2.3: the mean over the N patches, then the head
    checks.expect_close(logits, model(images), "logits")
print("Eqs. 2.1 to 2.3 by hand equal ActivatorGatingUnit, ActivatorBlock, ActivatorClassifier")

# %% [markdown]
# **Parameters.** With the norms shared, one block holds the block's norm ($2C$), the gating
# unit's two up-projections ($2(CF + F)$), its down-projection ($FC + C$) and its norm ($2F$),
# and the feed-forward ($CF + F + FC + C$). For the released CIFAR-10 model, $C = 256$,
# $F = 512$, four blocks and $P = 4$ on $32 \times 32 \times 3$ images:

# %%
released = tc.ActivatorClassifier()  # the released defaults
for reduced in (False, True):
    counted = sum(p.numel() for p in tc.ActivatorBlock(256, 512, reduced=reduced).parameters())
    closed = block_parameters(256, 512, reduced=reduced)
    print(f"{'reduced' if reduced else 'full':>8} block, C=256, F=512: {counted:,} parameters "
          f"(closed form {closed:,})")
    assert counted == closed
assert block_parameters(256, 512) == 658_944
print(f"released classifier: {sum(p.numel() for p in released.parameters()):,} parameters")

# %% [markdown]
# A ViT block of the same width, with $F = 512$, has $4C^2 + 4C$ in its attention,
# $2CF + F + C$ in its MLP and two norms: 527,104. The Activator block is 25% larger: its
# gating unit, with three $C \times F$ matrices, is a feed-forward network one matrix bigger,
# where attention has four $C \times C$ matrices.
#
# **Our model.** For the digits we keep chapter 4's width and depth, $C = 64$ and $L = 6$,
# and choose $F = 103$ so that Activator has as many parameters as the chapter-4 ViT (which
# spends them on attention, a class token and position embeddings), with no dropout, like the
# ViT. The released model's dropout of 0.5 is for CIFAR-10 with 100 epochs.

# %%
vit_parameters = sum(p.numel() for p in tc.VisionTransformer(**DIGITS_VIT).parameters())
activator_parameters = sum(p.numel() for p in model.parameters())
print(f"ViT {vit_parameters:,} parameters, Activator {activator_parameters:,} "
      f"({activator_parameters / vit_parameters - 1:+.1%})")

# %% [markdown]
# ## 3. Nothing mixes the patches
#
# Read Eqs. 2.1 to 2.3 again with the sequence in mind: every linear map, every norm and every
# GELU acts on **one token at a time**. A token's representation after any number of blocks
# depends on its own patch and on nothing else; the only place where patches meet is the mean
# before the head. Two consequences, each a test that a model either passes or fails:
#
# * **Permutation equivariance.** Shuffle the patches of an image (move whole $4 \times 4$
#   squares around); the token representations come out shuffled in the same way, and the
#   prediction does not change at all.
# * **No token mixing.** Change one patch; no other patch's representation changes.
#
# The ViT of chapter 4 fails both: its attention mixes all tokens in every block, and its
# position embeddings tell it where each patch is. We run both tests on the two models (the
# Activator untrained for now; the tests hold for any weights):

# %%
def shuffle_patches(images: torch.Tensor, order: torch.Tensor, P: int) -> torch.Tensor:
    """(B, K, I, I) with grid patch order[i] moved to position i (row-major patch order)."""
    B, K, size, _ = images.shape
    g = size // P  # patches per row
    patches = images.reshape(B, K, g, P, g, P).permute(0, 2, 4, 1, 3, 5)  # (B, g, g, K, P, P)
    patches = patches.reshape(B, g * g, K, P, P)[:, order]  # (B, N, K, P, P), reordered
    patches = patches.reshape(B, g, g, K, P, P).permute(0, 3, 1, 4, 2, 5)  # (B, K, g, P, g, P)
    return patches.reshape(B, K, size, size)


def token_states(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, N, C): each patch's representation after the last block (the ViT's class token
    dropped)."""
    if isinstance(model, tc.ActivatorClassifier):
        return model.features(images)
    x = model.embed(images)
    for block in model.blocks:
        x = block(x)
    return x[:, 1:]  # (B, N + 1, C) -> (B, N, C)


P = DIGITS_ACTIVATOR["patch_size"]
order = torch.randperm(N, generator=torch.Generator().manual_seed(1))
changed = images.clone()
changed[:, :, 4:8, 8:12] = torch.rand(B, 1, 4, 4, generator=torch.Generator().manual_seed(2))
changed_patch = 1 * (16 // P) + 2  # grid row 1, column 2: patch 6
others = torch.arange(N) != changed_patch

tc.seed_everything(0)
vit_untrained = tc.VisionTransformer(**DIGITS_VIT).to(device).eval()
print(f"{'model':<10} {'shuffle: states':>16} {'shuffle: logits':>16} "
      f"{'one patch: others':>18} {'one patch: itself':>18}")
with torch.no_grad():
    for name, net in (("Activator", model), ("ViT", vit_untrained)):
        states = token_states(net, images)
        shuffled = shuffle_patches(images, order, P)
        state_gap = (token_states(net, shuffled) - states[:, order]).abs().max().item()
        logit_gap = (net(shuffled) - net(images)).abs().max().item()
        moved = (token_states(net, changed) - states).abs().amax(dim=(0, 2))  # (N,)
        print(f"{name:<10} {state_gap:>16.1e} {logit_gap:>16.1e} {moved[others].max():>18.1e} "
              f"{moved[changed_patch]:>18.1e}")
        if name == "Activator":
            activator_gaps = (state_gap, logit_gap, moved[others].max().item())
assert max(activator_gaps[:2]) < 1e-4 and activator_gaps[2] == 0.0

# %% [markdown]
# For Activator the differences under shuffling are rounding (about $10^{-6}$: the mean adds
# the same numbers in another order), and the other patches' states do not move by a single
# bit when one patch changes. For the ViT both are of the order of the states themselves.
#
# **The prediction is a vote of the patches.** Because the head is linear, the head of the
# mean is the mean of the heads:
# $\big(\frac1N \sum_i z_L^i\big) W + b = \frac1N \sum_i (z_L^i W + b)$. Activator's logits are
# the average of $N$ per-patch logits, each computed from one $4 \times 4$ patch that does not
# know where it is in the image. The model is a bag-of-patches classifier, in the line of
# BagNet (Brendel and Bethge, 2019), which classifies ImageNet from local patches in the same
# way. We show the per-patch votes once the model is trained (section 4).
#
# ## 4. Activator against the ViT, trained the same way
#
# `train_digits_activator` trains the model above with chapter 4's recipe, unchanged: 1200
# steps of 128 digits, AdamW with the same learning rate, warm-up, decay and weight decay, and
# the same random shifts of up to one pixel. The trained model is cached like the ViT.
# `train_digits_vit` loads chapter 4's ViT from the cache (and trains it, about a minute and a
# half, if chapter 4 has not run on this machine).

# %%
start = time.perf_counter()
vit, vit_history = train_digits_vit(data, device=device)
vit_seconds = time.perf_counter() - start
start = time.perf_counter()
activator, activator_history = train_digits_activator(data, device=device)
activator_seconds = time.perf_counter() - start
vit_accuracy = accuracy(vit, data.test_images, data.test_labels)
activator_accuracy = accuracy(activator, data.test_images, data.test_labels)
print(f"ViT: {vit_accuracy:.1%} on {len(data.test_labels)} test digits "
      f"({vit_seconds:.0f} s to {'train' if vit_seconds > 20 else 'load'})")
print(f"Activator: {activator_accuracy:.1%} "
      f"({activator_seconds:.0f} s to {'train' if activator_seconds > 20 else 'load'})")
assert activator_accuracy >= 0.95, "Activator should reach 95% on the digits"
plot_history({"ViT": vit_history, "Activator": activator_history}, metrics="loss", logy=True,
             title="Training loss, same recipe")
plt.show()

# %% [markdown]
# **Cost.** FLOPs per image are counted by PyTorch's `FlopCounterMode`, with the ViT's
# attention run as the explicit equation while counting, so that its two products $QK^\top$
# and $AV$, $2 \cdot 2 T^2 C$ per block, are counted (the counter does not see inside the fused
# kernel on a CPU). Throughput is measured on the 359 test digits as
# one batch, the two models timed in alternation in the same run, best of five rounds, so
# that the machine's load falls on both alike (`interleaved_throughput`).

# %%
vit_flops = flops_per_image(vit, data.test_images[:1].to(device))
activator_flops = flops_per_image(activator, data.test_images[:1].to(device))
test_batch = data.test_images.to(device)
vit_rate, activator_rate = interleaved_throughput([vit, activator], test_batch, repeats=5)
speed_ratio = activator_rate / vit_rate
rows = [("ViT (chapter 4)", vit_accuracy, vit_parameters, vit_flops, vit_rate),
        ("Activator", activator_accuracy, activator_parameters, activator_flops, activator_rate)]
print(f"{'model':<16} {'accuracy':>9} {'errors':>7} {'parameters':>11} {'MFLOP/image':>12} "
      f"{'images/s':>9}")
for name, acc, params, flops, rate in rows:
    errors = round((1 - acc) * len(data.test_labels))
    print(f"{name:<16} {acc:>9.1%} {errors:>7} {params:>11,} {flops / 1e6:>12.2f} "
          f"{rate:>9.0f}")
print(f"\nthroughput Activator / ViT: {speed_ratio:.2f}x; "
      f"FLOPs Activator / ViT: {activator_flops / vit_flops:.2f}")

# %% [markdown]
# At equal parameters the two models cost about the same. Activator saves the attention
# products, but with 17 tokens these are a small share of the ViT's work (about 6%; chapter 5
# met the same fact); its gating unit is a feed-forward network one matrix larger, and the
# parameters it does not spend on attention it spends on $F$. What it saves grows with the
# number of tokens, since attention grows as $T^2$ and Activator as $N$; at the released model's
# CIFAR-10 size ($N = 64$) the benchmark `python -m tfcourse.bench activator` measures the pair,
# against a ViT of the same width with five blocks (as many parameters). A short run of it on
# a batch of 64:

# %%
for row in activator_vs_vit(settings=("cifar",), batch_size=64, repeats=3, device=device):
    print(f"{row['model']:<20} {row['parameters']:>10,} parameters {row['mflop']:>7.1f} MFLOP "
          f"{row['images_per_s']:>7.0f} images/s  {row['ratio']:.2f}x")

# %% [markdown]
# On a CPU the two are again close in time, and Activator is not always the faster: its
# FLOPs are fewer, but it runs more element-wise work (two layer norms and a product on the
# wide $F$ features) for each matrix product, and on a CPU element-wise work over large tensors
# is limited by memory, not by arithmetic.
#
# **The votes of the patches.** Section 3 showed that the logits are the mean of per-patch
# logits. Here are the per-patch predictions of the trained Activator on test digits: each
# square is coloured by the class its patch alone votes for (its argmax), and the title gives
# the averaged prediction.

# %%
with torch.no_grad():
    votes = activator.head(activator.features(test_batch[:6]))  # (6, N, classes): per patch
    side = 16 // P
fig, axes = plt.subplots(2, 6, figsize=(11, 4))
for i in range(6):
    axes[0, i].imshow(data.test_images[i, 0], cmap="gray_r")
    axes[0, i].set_title(f"label {data.test_labels[i].item()}, "
                         f"says {votes[i].mean(0).argmax().item()}")
    per_patch = votes[i].argmax(-1).reshape(side, side).cpu()
    axes[1, i].imshow(per_patch, cmap="tab10", vmin=0, vmax=9)
    for r in range(side):
        for c in range(side):
            axes[1, i].text(c, r, str(per_patch[r, c].item()), ha="center", va="center",
                            fontsize=9, color="white")
    for ax in axes[:, i]:
        ax.set_xticks([])
        ax.set_yticks([])
axes[1, 0].set_ylabel("each patch's vote")
plt.tight_layout()
plt.show()
checks.expect_close(votes.mean(dim=1), activator(test_batch[:6]), "mean of the patch votes")

# %% [markdown]
# Many single patches already vote for the right digit: a $4 \times 4$ patch of a $16 \times 16$
# digit (a $2 \times 2$ block of the original $8 \times 8$ scan) carries a piece of stroke whose
# shape says a lot, and the blank patches vote weakly. The average is the model's answer.
# This is why a model that never relates two patches still reads these digits well: they are
# small, centred and drawn by the same 13 writers in train and test (chapter 4).
#
# ## 5. The paper's claim and what this comparison shows
#
# Abdullah and Aydin (2024) propose the GLU-based MLP as "the core component" of a vision
# transformer in place of attention, and report that Activator, and its reduced form without
# the second MLP, are competitive with their baselines at lower cost. The latest version of
# the paper, with settings equalised across models, reports on CIFAR-10 and CIFAR-100, trained
# from scratch, 73.2% and 46.1% for Activator against 65.7% and 34.9% for a ViT and 70.1% and
# 39.2% for MLP-Mixer (arXiv:2405.15953; the figures changed between versions of the paper). They argue that a gated MLP can take over the roles that
# attention plays: mapping keys to values and gating the flow of information.
#
# What the released model computes, and what we measured:
#
# * **Gating is not mixing.** The gate multiplies a token's features by a function of the same
#   token's features (section 1). Released Activator has no operation across tokens before the
#   final mean (section 3, tested). It does not replace attention's role of moving information
#   between tokens; it removes it, and the model becomes an average of per-patch classifiers.
#   What "key-value mapping" it does is within a token, as any MLP's does (Geva et al., 2021).
# * **It can still work well.** On the digits it reaches the accuracy printed above, a little
#   below the ViT: bags of local features are strong on small, centred images, and from-scratch
#   ViTs on small data sets are weak (chapter 4; Dosovitskiy et al., 2021, section 4.3). A
#   higher CIFAR score for Activator than for a small ViT trained from scratch is evidence
#   about that regime, not that gating substitutes for attention.
# * **The savings are small at these sizes.** At equal parameters the FLOPs differ by the
#   attention products, which are a small share when $T$ is in the tens (section 4); the
#   measured throughputs are within a few tens of per cent of each other, in either direction.
#   The saving would grow with the number of tokens, quadratically, but so would the cost of
#   having no global interaction at all: a task that needs two distant patches related (a
#   "same or different" question, counting, reading a word) cannot be learned by this model at
#   any size.
#
# ## 6. Adding a token-mixing step
#
# The smallest change that lets patches talk: before each block's gating unit, add a linear map
# **across the patches**, the token-mixing step of MLP-Mixer (Tolstikhin et al., 2021), with its
# own norm and a residual:
#
# $$
# x \leftarrow x + W_\text{tok}\, \operatorname{LN}_\text{tok}(x), \qquad
# W_\text{tok} \in \mathbb{R}^{N \times N} . \tag{6.1}
# $$
#
# It costs $N^2 + N + 2C = 400$ parameters per block here. Like a learned position embedding,
# $W_\text{tok}$ is tied to the grid positions: the model is no longer permutation-equivariant.
# The same tests as in section 3, then the same training recipe:

# %%
with torch.no_grad():
    tc.seed_everything(0)
    mixer = tc.ActivatorClassifier(**DIGITS_ACTIVATOR, token_mixing=True).to(device).eval()
    moved = (mixer.features(changed) - mixer.features(images)).abs().amax(dim=(0, 2))
print(f"one patch changed: the other patches' states move by up to {moved[others].max():.1e}")
assert moved[others].min() > 0

start = time.perf_counter()
mixing, mixing_history = train_digits_activator(data, token_mixing=True, device=device)
mixing_seconds = time.perf_counter() - start
mixing_accuracy = accuracy(mixing, data.test_images, data.test_labels)
mixing_parameters = sum(p.numel() for p in mixing.parameters())
mixing_flops = flops_per_image(mixing, data.test_images[:1].to(device))
print(f"\n{'model':<26} {'accuracy':>9} {'errors':>7} {'parameters':>11} {'MFLOP/image':>12}")
for name, acc, params, flops in (
        ("ViT (chapter 4)", vit_accuracy, vit_parameters, vit_flops),
        ("Activator (released form)", activator_accuracy, activator_parameters, activator_flops),
        ("Activator + token mixing", mixing_accuracy, mixing_parameters, mixing_flops)):
    errors = round((1 - acc) * len(data.test_labels))
    print(f"{name:<26} {acc:>9.1%} {errors:>7} {params:>11,} {flops / 1e6:>12.2f}")
print(f"(token-mixing model {'trained' if mixing_seconds > 20 else 'loaded'} in "
      f"{mixing_seconds:.0f} s)")

# %% [markdown]
# On these digits the mixing step closes part of the gap to the ViT, for 1% more parameters.
# Read the difference with its size in mind: each test error is 0.28 points of accuracy, and
# one training run per model is one draw; a difference of two or three errors between two
# models is within what another seed could change. What the step changes for certain is what
# the model *can* represent: relations between patches, which the released form cannot learn
# from any amount of data.

# %%
lesson_seconds = time.perf_counter() - lesson_start
print(f"this page ran in {lesson_seconds:.0f} s: Activator {activator_seconds:.0f} s and the "
      f"token-mixing variant {mixing_seconds:.0f} s (trained, or loaded from the cache), "
      f"the ViT {vit_seconds:.0f} s")

# %% [markdown]
# ## Summary
#
# * A gated linear unit multiplies a value map of its input by a learned, input-dependent gate
#   (Eq. 1.1). $\sigma(Wx + b) \odot x$ is its special case with the identity as the value
#   map; GEGLU and SwiGLU put GELU or Swish on the gate. Trained on a switching task, the gates
#   become steep steps that route one input and block another.
# * Activator's gating unit is a GEGLU feed-forward with one layer norm, shared by both
#   branches, after the GELU (Eq. 2.1); its block puts one shared norm before a residual gating
#   unit and a residual feed-forward (Eq. 2.2); its classifier has a convolutional patcher, no
#   class token, no positions, and a mean over the patches (Eq. 2.3). A released block with
#   $C = 256$ and $F = 512$ has 658,944 parameters.
# * Nothing in it mixes patches: permuting the patches permutes the states, and changing one
#   patch changes no other (both tested). Its prediction is the mean of per-patch predictions.
# * Trained with chapter 4's recipe at the ViT's parameter count, it reaches at least 95% on the
#   digits (the figure is printed in section 4) at about the ViT's cost: the attention it
#   removes is a small share of the work for 17 tokens.
# * The paper's reported CIFAR gains over a from-scratch ViT do not show that gating replaces
#   attention: the released model has no token interaction at all. A token-mixing step
#   (Eq. 6.1) restores it for 400 parameters per block.
#
# **Exercises.** The [exercise notebook](exercises.ipynb) asks you to write a GLU variant, the
# gating unit with its shared norm, the block, and a test that tells whether a model mixes
# tokens.
#
# ## References
#
# * Abdullah, A. N., Aydin, T. (2024). Activator: GLU activation function as the core component
#   of a vision transformer. arXiv:2405.15953.
# * Brendel, W., Bethge, M. (2019). Approximating CNNs with bag-of-local-features models works
#   surprisingly well on ImageNet. *ICLR*.
# * Dauphin, Y. N., Fan, A., Auli, M., Grangier, D. (2017). Language modeling with gated
#   convolutional networks. *ICML*.
# * Dosovitskiy, A. et al. (2021). An image is worth 16x16 words: Transformers for image
#   recognition at scale. *ICLR*.
# * Geva, M., Schuster, R., Berant, J., Levy, O. (2021). Transformer feed-forward layers are
#   key-value memories. *EMNLP*.
# * Shazeer, N. (2020). GLU variants improve Transformer. arXiv:2002.05202.
# * Tolstikhin, I. et al. (2021). MLP-Mixer: An all-MLP architecture for vision. *NeurIPS*.
