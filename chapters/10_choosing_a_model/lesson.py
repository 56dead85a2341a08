# %% [markdown]
# # Choosing a model, and the Mixture of Embedding Experts
#
# Chapters 1 to 9 taught one architecture at a time. This chapter asks the question a practitioner
# starts from: **which model for which job?** It answers from measurements, with every model of
# the course measured side by side at one size and by one recipe, and it sets the answers
# beside the summaries these models are usually given. Then it adds the last system of the
# course: the **Mixture of Embedding Experts** (MEE; Miech, Laptev and Sivic, 2018), a
# retrieval model that matches text against video described by several streams of features,
# any of which may be missing.
#
# The chapter goes:
#
# 1. four sequence models (attention, Hyena, Mamba, Jamba) built at one parameter count;
# 2. their cost against the sequence length: a training step and the decoding of one token;
# 3. what they can learn: associative recall, by one recipe for all;
# 4. the vision models (ViT, ToMe, Activator, a ConvNet) on the digits;
# 5. which model when: a decision table, each row backed by a figure, and the usual summaries
#    checked claim by claim;
# 6. the Mixture of Embedding Experts, equation by equation;
# 7. a retrieval task with missing streams, generated from real digits;
# 8. MEE against single streams and against concatenation, with and without extra images.
#
# The code is `tfcourse.bench.compare` (the side-by-side measurements; `python -m
# tfcourse.bench compare` runs them at full size), `tfcourse.mee` (the model),
# `tfcourse.data.clips` (the task), `tfcourse.retrieval` (the metrics) and `tfcourse.bench.mee`
# (the retrieval comparison; `python -m tfcourse.bench mee`). Letters are those of the
# [notation page](../appendices/notation.md); section 6 adds `Bt` captions, `Bv` clips, `M`
# streams and `E` the embedding width. The [exercise notebook](exercises.ipynb) asks you to write
# the gated embedding unit, the MEE similarity with missing streams, the ranking loss, the
# retrieval metrics and a cost model of a Transformer block.

# %%
import textwrap
import time

import matplotlib.pyplot as plt
import torch

import tfcourse as tc
from tfcourse.bench import compare
from tfcourse.bench.mee import retrieval_comparison
from tfcourse.data.clips import STREAMS, clip_task, stream_widths
from tfcourse.mee import (
    GatedEmbeddingUnit,
    MixtureOfEmbeddingExperts,
    mixture_weights,
    ranking_loss,
)

lesson_start = time.perf_counter()
tc.pin_threads()  # a fixed number of CPU threads: steadier timings
tc.seed_everything(0)  # the same random numbers and figures at every run
device = tc.default_device()  # CUDA on a GPU (Colab), else the CPU (Binder)
plt.rcParams.update({"figure.dpi": 100, "grid.alpha": 0.3})
print(f"torch {torch.__version__}, tfcourse {tc.__version__}, "
      f"device: {device}, {torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## 1. Four sequence models at one size
#
# A fair comparison holds the size fixed. `compare.build_models` builds chapter 3's decoder-only
# Transformer (called *attention* below) at width $C = 64$ with 4 layers, and sizes the other
# three to the same parameter count, leaving out the token and position tables as Kaplan et al.
# (2020) count model size: Hyena's feed-forward width, Mamba's number of blocks and Jamba's
# expert width are solved for it.

# %%
models = compare.build_models(32, max_len=64, d_model=64, num_layers=4)
for name, model in models.items():
    blocks = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList))  # its stack
    print(f"{name:10s} {compare.counted_parameters(model):8,} parameters in {len(blocks)} "
          f"blocks of {type(blocks[0]).__name__}")

# %% [markdown]
# ## 2. Cost against length
#
# `compare.cost_sweep` measures, at each length $T$, one training step (forward, backward and
# an AdamW step on a batch of random tokens) and the decoding of one token after $T$ tokens of
# context. The models take turns, round after round, so that a change in the machine's load
# reaches all of them alike. Attention decodes with its KV cache (chapter 3), Mamba with its
# fixed-size state (chapter 8); the course gives Hyena and Jamba no recurrent decoding, so they
# decode a token by running the whole prefix again.
#
# The lengths are those of the benchmark, 256 to 4,096 tokens (batch 1, float32); a first
# sweep at 64 tokens, thrown away, takes the one-off costs of the first calls (the allocator,
# the thread pool) out of the first measured length:

# %%
LENGTHS = [256, 512, 1024, 2048, 4096]
compare.cost_sweep([64], repeats=1, device=device)  # warm-up, discarded
start = time.perf_counter()
cost = compare.cost_sweep(LENGTHS, repeats=3, device=device)
cost_seconds = time.perf_counter() - start
panels = (("train_s", 1e3, "ms", "one training step"),
          ("train_mib", 1, "MiB", "peak memory of a training step"),
          ("decode_s", 1e3, "ms", "decoding one token after T"))
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for ax, (key, scale, unit, title) in zip(axes, panels, strict=True):
    for name in compare.MODELS:
        rows = [r for r in cost if r["model"] == name and r[key] is not None]
        ax.loglog([r["length"] for r in rows], [r[key] * scale for r in rows], "o-", label=name)
    ax.set(xlabel="context length T", ylabel=unit, title=title)
    ax.set_xticks(LENGTHS, [str(T) for T in LENGTHS])
    ax.set_xticks([], minor=True)
    ax.grid(True, which="both")
axes[0].legend()
plt.tight_layout()
plt.show()
for key in ("train_s", "decode_s"):
    exponents = compare.growth_exponents(cost, key, fit_from=1024)
    print(f"{key[:-2]:6s} growth exponent p of time ∝ T^p, 1,024 to 4,096: "
          + ", ".join(f"{n} {p:.2f}" for n, p in exponents.items()))
crossing = compare.crossovers(cost, "train_s")
for fast in ("Hyena", "Mamba", "Jamba"):
    T = crossing[fast, "attention"]
    print(f"{fast}'s training step faster than attention's "
          + (f"from T = {T}" if T else "at no measured length"))
print(f"(measured in {cost_seconds:.0f} s)")

# %% [markdown]
# Read the exponents with the sizes in mind. The forward pass of an attention block costs
# $2BTC(4C + 2F)$ floating-point operations in the projections and the feed-forward network,
# which grow as $T$, and $4BT^2C$ in the scores and the weighted sum, which grow as $T^2$
# (exercise 5 derives both); a training step costs about three times its forward pass, in the
# same proportions. With $F = 4C$ the quadratic part overtakes the rest at
# $T = 2C + F = 6C$, here 384 tokens: below that attention grows almost linearly, above it
# towards $T^2$, and between 1,024 and 4,096 its fitted exponent sits between the two. Hyena's
# FFT convolutions cost $O(T \log T)$ and Mamba's scan $O(T)$; exponents below 1 mean that
# fixed costs per call still weigh at these lengths on a small model.
#
# The memory tells another story. Mamba's training step needs the most: its scan keeps the
# states of every position, $T \cdot C_i \cdot N$ numbers a layer, for the backward pass
# (chapter 8, section 4), against attention's $T^2$ scores per head, which PyTorch's fused
# kernel does not even store. A GPU kernel that recomputes the states in the backward pass,
# as the Mamba paper's does (section 3.3), is what removes this cost; the course's scan is
# written in PyTorch and does not.
#
# For decoding the picture flips. Attention's KV cache (chapter 3) makes a token cost a
# read of $T$ cached keys and values; Mamba's state is the same size at any length, and its
# decoding time is flat (exponent near 0; chapter 8, section 6, measured the memory). Hyena
# and Jamba here recompute the prefix, so theirs grow with $T$: a cached decoder for them
# (a convolution cache for Hyena, states and a KV cache for Jamba) is not in the course.
#
# The benchmark measures the same with one thread, and prints the crossovers for every pair:
#
# ```
# python -m tfcourse.bench compare --parts cost
# ```
#
# On this course's 2-core CPU machine (1 thread, float32), from 1,024 to 4,096 tokens:
#
# | | attention | Hyena | Mamba | Jamba |
# |---|---|---|---|---|
# | training step at $T$ = 4,096 | 1,186 ms | 403 ms | 1,092 ms | 737 ms |
# | its peak memory | 326 MiB | 173 MiB | 552 MiB | 308 MiB |
# | growth exponent of the step | **1.74** | 0.93 | 0.95 | 1.00 |
# | faster than attention from | | $T$ = 2,048 | 4,096 | 4,096 |
# | decoding one token at 4,096 | 4.7 ms | 125 ms (recompute) | **1.2 ms** | 304 ms (recompute) |
# | growth exponent of decoding | 0.54 | 0.98 | **−0.04** | 0.99 |
# | kept between tokens at 4,096 | 8 MiB (KV cache) | — | 0.06 MiB (state) | — |
#
# The run above, with two threads, measures the same shapes: its exponents came out lower by up
# to 0.15 (fixed costs weigh more when two threads share each call), and a crossover can move
# by one measured length.

# %% [markdown]
# ## 3. What they learn: recall
#
# Cost says nothing of what a model can do. Chapters 7 to 9 trained the models on
# **multi-query associative recall** (key-value pairs, then keys asked again), the task on
# which Arora et al. (2023) found efficient models weakest:
#
# * **chapter 7, section 6:** Hyena and attention (with learned positions) both reached 90% on
#   32 positions and 4 pairs; attention in fewer steps;
# * **chapter 8, section 7:** on selective copying, Mamba's selective scan succeeded where a
#   time-invariant SSM of the same size failed;
# * **chapter 9, section 5:** a 4-layer Jamba with one attention layer reached 90% where pure
#   Mamba and attention without positions, at the same size and budget, did not.
#
# The benchmark trains the four models of section 1 (about 200,000 parameters each) by one
# recipe (AdamW, 10% warm-up then cosine decay, weight decay 0.1, clipping at 1, seed 0) on
# 4 pairs in sequences of 32 and 64 tokens, and reports the held-out accuracy and the steps and
# seconds of training to 90%. Training 8 models takes minutes each on a CPU, too long for this
# page, so here are its figures, from this course's 2-core machine (2 threads):
#
# ```
# python -m tfcourse.bench compare --parts recall --recall-lengths 32 64 --steps 800 --batch 64 --lr 1e-3
# python -m tfcourse.bench compare --parts recall --recall-lengths 32 64   # 400 steps, batch 32, lr 3e-3
# ```
#
# | recipe | $T$ | attention | Hyena | Mamba | Jamba |
# |---|---|---|---|---|---|
# | 800 steps of 64, lr $10^{-3}$ | 32 | **100%** (90% at step 500, 16 s) | 34% | 34% | **100%** (step 150, 19 s) |
# | | 64 | 34% | 35% | 34% | **100%** (step 150, 35 s) |
# | 400 steps of 32, lr $3 \cdot 10^{-3}$ | 32 | 32% | 34% | 33% | **100%** (step 100, 11 s) |
# | | 64 | 33% | 32% | 33% | **100%** (step 150, 18 s) |
#
# The models near a third had not learned the task. Three things stand out:
#
# * **The hybrid learned fastest, at both lengths and under both recipes**: its Mamba layers
#   mark each value with the key before it, and its one attention layer looks the key up
#   (chapter 9, section 5).
# * **Attention learned it at 32 tokens and not yet at 64** within 800 steps: the same
#   ability, found more slowly as the sequence grows.
# * **Hyena and pure Mamba did not learn it at this size under one recipe.** Chapter 7's Hyena
#   did, at width 128 and its own learning rate; one recipe for all is a fair comparison of
#   recipes, not of the best each model can do. Pure Mamba at small width failed in chapter 9
#   too: its fixed-size state must hold every pair.
#
# A toy task at 200,000 parameters says which mechanisms learn recall easily, not which model
# wins at scale. There, Arora et al. (2023) found attention ahead of gated-convolution models
# on associative recall, and Lieber et al. (2024, section 6.2) found that a few attention
# layers gave a Mamba model the in-context learning it lacked.

# %% [markdown]
# ## 4. The vision models on the digits
#
# Chapters 4 to 6 trained a ViT, an Activator and a ConvNet on the scikit-learn digits, all
# at about 200,000 parameters. `compare.vision_sweep` takes them from the model cache
# (`tfcourse.classification`; the ViT and the Activator as chapters 4 and 6 trained them, the
# ConvNet by chapter 4's recipe: the ViT's, in a quarter of the steps, trained here the first
# time) and adds Token Merging on the ViT (chapter 5): held-out accuracy, floating-point
# operations per image and throughput, the models timed in turns.

# %%
start = time.perf_counter()
vision = compare.vision_sweep(tome_r=(2, 4), repeats=3, device=device)
vision_seconds = time.perf_counter() - start
print(f"{'model':>16} {'parameters':>11} {'accuracy':>9} {'errors':>7} {'MFLOP':>7} "
      f"{'images/s':>9}")
for r in vision:
    errors = round((1 - r["accuracy"]) * 359)
    print(f"{r['model']:>16} {r['parameters']:>11,} {r['accuracy']:>9.1%} {errors:>7} "
          f"{r['mflop']:>7.2f} {r['images_per_s']:>9.0f}")
print(f"(trained or loaded, and measured, in {vision_seconds:.0f} s)")

# %% [markdown]
# On 16×16 digits every model is within a few test images of the others (each error is 0.28
# points on 359 images), and the ConvNet, the oldest design, is as good as any with a quarter
# of the training, for five times the FLOPs of the ViT. A ViT has 17 tokens here: merging two
# tokens per block removes a third of its FLOPs but much less of its time, since the matching
# costs time of its own and small matrices do not run a CPU at full speed. Chapter 5 measured
# where merging pays: at 65 tokens, 2.43× the throughput for 0.56 points (`python -m
# tfcourse.bench tome`). Activator's saving, the attention products it drops, is small at this
# length.
#
# The benchmark's run of the same, on a quiet machine with 1 thread (`python -m tfcourse.bench
# compare --parts vision`):
#
# | model | accuracy | MFLOP per image | images/s |
# |---|---|---|---|
# | ViT | 99.4% | 7.16 | 8,031 |
# | ViT + ToMe, r = 2 | 98.6% | 4.67 | 9,200 (1.15×) |
# | ViT + ToMe, r = 4 | 95.3% | 2.96 | 13,552 (1.69×) |
# | Activator | 98.3% | 6.36 | 9,876 (1.23×) |
# | ConvNet (a quarter of the training) | 99.7% | 36.4 | 2,277 (0.28×) |

# %% [markdown]
# ## 5. Which model when
#
# The measurements above and in earlier chapters, as a decision table. Each row names the
# figure that supports it; the figures come from small models on a CPU, so they say how costs
# *scale* and what the architectures *can* learn, not which model wins at scale.
#
# | the job | choose | why, as measured |
# |---|---|---|
# | short sequences (up to about $6C$ tokens) | attention | the fastest training step up to 1,024 tokens, where Hyena draws level (section 2); it learned recall at 32 tokens (section 3) |
# | training on long sequences | Hyena | training-step exponent 0.93 against attention's 1.74; faster than attention from $T$ = 2,048, 2.9× at 4,096, in half the memory (section 2) |
# | generating long outputs, memory-bound decoding | Mamba | decoding one token took 1.2 ms at every length from 256 to 4,096 (exponent −0.04), with 0.06 MiB of state against an 8 MiB KV cache (section 2; chapter 8, section 6) |
# | recall from the context, and long context | Jamba (a few attention layers among Mamba layers) | the only model to reach 90% recall at 64 tokens, in 150 steps under both recipes (section 3); its KV cache is an eighth of an all-attention model's (chapter 9, section 4: 4 GiB against 32 GiB at 256K tokens, the paper's Table 1) |
# | training Mamba at length on a CPU, or without a fused scan | think twice | its step needed the most memory, 552 MiB at 4,096 tokens, because the course's scan stores every state (section 2) |
# | small images, little data | a ConvNet, or a ViT | 99.7% and 99.4% on the digits at 200k parameters, the ConvNet with a quarter of the training (section 4); the ConvNet kept its accuracy under shifts that broke the ViT (chapter 4), but costs 5× the FLOPs and 3.5× the time here |
# | a trained ViT made faster without retraining | ViT + ToMe | pays with many tokens: 2.43× at 65 tokens for 0.56 points (chapter 5, section 9); at 17 tokens, r = 2 gave 1.15× for 0.8 points (section 4) |
# | images where patches must be related to one another | not released Activator | it mixes nothing across patches (chapter 6, section 3, tested); at equal parameters it saved 11% of the ViT's FLOPs (1.23× the throughput) and lost 1.1 points on the digits (section 4) |
# | retrieval over several streams, some missing | MEE | sections 6 to 8: lower median rank than concatenating the streams, more so with extra images |
#
# **The usual summaries, claim by claim.** These models are often summed up in a line each.
# Set against the measurements:
#
# | the summary says | what the course measured | verdict |
# |---|---|---|
# | Hyena has "linear complexity" | its cost is $O(T \log T)$ through the FFT (chapter 7, section 2); fitted exponent 0.93 at these lengths, where fixed costs still weigh (section 2) | sub-quadratic, and close to linear in practice; not linear |
# | Hyena uses "convolutional layers instead of attention" | long implicit convolutions, as long as the input, interleaved with data-controlled gates (chapter 7, sections 3 and 4) | incomplete: the gates make its mixing depend on the data, as attention's does |
# | Activator is for "reducing noise and computational costs" | no operation across patches (chapter 6, section 3); at equal parameters 11% fewer FLOPs than the ViT at 17 tokens and 1.23× its throughput, for 1.1 points less accuracy (section 4) | the saving is real but small at these sizes, and bought by dropping all mixing between patches; nothing here measures "noise" |
# | Jamba is for "long documents" | a KV cache an eighth of attention's; Mamba states of fixed size; recall kept by its attention layers (chapter 9, sections 4 and 5) | agrees, for the memory of a long context; the course's Jamba decodes by recomputing, so its decoding speed is not what the paper's is |
# | Token Merging removes 98% of the tokens | at most half the tokens of a layer; about 2× the throughput for a small drop where tokens are many (chapter 5) | wrong by a factor of 25 in the tokens removed |
# | Mamba is linear in time | training exponent 0.95, decoding −0.04 (section 2) | agrees; and its memory in training grows linearly too, from a high base |

# %% [markdown]
# ## 6. The Mixture of Embedding Experts
#
# Text-to-video retrieval ranks the clips of a collection by how well they match a caption
# ("a 7 moving left while a high tone beeps"). A clip comes as several **streams** of features
# computed by separate extractors: appearance, motion, audio. Some are missing for some clips
# (a silent clip has no audio stream), and a still image with a caption has appearance only.
# Miech, Laptev and Sivic (2018) learn a joint embedding from such incomplete data with one
# **expert** per stream (section 3 of the paper).
#
# **Gated embedding units.** Each expert $m$ maps its stream $v_m$ and the caption's features
# $t$ into a shared space of width $E$ with a gated embedding unit, a linear map, *context
# gating* and an L2 normalisation:
#
# $$\begin{aligned}
# z &= W_1 x + b_1, \cr
# y &= z \circ \sigma(W_2 z + b_2), \cr
# \mathrm{GEU}(x) &= y / \lVert y \rVert_2 .
# \end{aligned}
# \tag{6.1}$$
#
# The gate re-weights each feature by a function of all of them, as a GLU does (chapter 6).
# Call $f_m$ the text's unit for expert $m$ and $g_m$ the stream's; both outputs have unit
# length, so their dot product is a cosine.

# %%
Bt, Bv, E = 3, 5, 8
unit = GatedEmbeddingUnit(stream_widths()[1], E)  # the motion stream's g_m
x = torch.randn(Bv, stream_widths()[1])
print(f"{tuple(x.shape)} -> {tuple(unit(x).shape)}, norms {unit(x).norm(dim=-1).tolist()}")
assert torch.allclose(unit(x).norm(dim=-1), torch.ones(Bv))

# %% [markdown]
# **The similarity.** Caption $t$ and clip $v$ score a weighted sum of the experts' cosines,
# with weights computed from the caption alone and renormalised over the streams the clip has
# ($\delta_m(v) = 1$ where clip $v$ has stream $m$):
#
# $$\begin{aligned}
# s(t, v) &= \sum_{m=1}^{M} w_m(t, v)\, \langle f_m(t), g_m(v_m) \rangle, \cr
# w_m(t, v) &= \frac{\delta_m(v)\, e^{a_m^\top t}}{\sum_{j} \delta_j(v)\, e^{a_j^\top t}} .
# \end{aligned}
# \tag{6.2}$$
#
# A caption about a sound can lean on the audio expert; a clip without audio is then compared
# on the streams it has, with their weights scaled up to sum to one, not on a row of zeros.
# `mixture_weights` computes $w$, shape (Bt, Bv, M):

# %%
logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])  # (Bt, M)
present = torch.tensor([[True, True, True], [True, True, False], [True, False, False],
                        [True, True, True], [False, True, True]])  # (Bv, M)
weights = mixture_weights(logits, present)  # (Bt, Bv, M)
print("caption 1 (its logits favour audio), against clips 0 (all streams) and 1 (no audio):")
print(weights[1, :2])
assert torch.allclose(weights.sum(-1), torch.ones(Bt, Bv))  # for every pair
assert (weights[:, ~present] == 0).all()  # missing streams get no weight

# %% [markdown]
# The whole model, `MixtureOfEmbeddingExperts`, holds an $f_m$ and a $g_m$ per stream and the
# $a_m$; it returns the (Bt, Bv) similarities. A missing stream's row may hold anything: it is
# zeroed before its expert sees it, since its weight is zero and a NaN there would still give
# NaN gradients ($0 \cdot \mathrm{NaN}$):

# %%
mee = MixtureOfEmbeddingExperts(text_features=10, stream_features=stream_widths(), width=E)
text = torch.randn(Bt, 10)
streams = [torch.randn(Bv, d) for d in stream_widths()]
streams[2][~present[:, 2]] = float("nan")  # clips 1 and 2 have no audio
similarity = mee(text, streams, present)
print(f"similarities {tuple(similarity.shape)}, finite: {bool(similarity.isfinite().all())}")
similarity.sum().backward()
assert all(p.grad.isfinite().all() for p in mee.parameters())

# %% [markdown]
# **The loss.** A batch holds $B$ matching pairs: caption $i$ belongs to clip $i$, the diagonal
# of the (B, B) similarity matrix. The bidirectional max-margin ranking loss asks every wrong
# clip to score at least a margin $\mu$ below the right one for each caption, and every wrong
# caption likewise for each clip:
#
# $$
# \mathcal{L} = \frac{1}{B} \sum_{i} \sum_{j \ne i}
# \big[\mu + s_{ij} - s_{ii}\big]_+ + \big[\mu + s_{ji} - s_{ii}\big]_+ .
# \tag{6.3}
# $$

# %%
perfect = torch.eye(4)  # each caption scores 1 with its clip, 0 with the others
print(f"loss of a perfect ranking: {ranking_loss(perfect):.2f}; "
      f"of a constant one: {ranking_loss(torch.zeros(4, 4)):.2f} = 2 (B-1) μ")
assert ranking_loss(perfect) == 0

# %% [markdown]
# ## 7. A retrieval task with missing streams
#
# The paper trains on movie and web clips (MPII Movie Description, MSR-VTT) with features from
# pretrained networks. Nothing here is downloaded, so `tfcourse.data.clips` makes a small task
# of the same shape from the real handwritten digits of scikit-learn. A **clip** is a digit
# moving across a 20×20 canvas for 5 frames (right, left, up or down; slowly or fast) with a
# sound (a low, middle or high tone, steady or beeping, over noise and a hum). Three streams
# are computed from the rendering, as feature extractors would: **appearance** (the window
# around the tracked digit, averaged over the frames), **motion** (the tracked displacement
# and the frame differences) and **audio** (band energies and the spectrum of the loudness).
# Motion is missing for 20% of the clips and audio for 40%. A **caption** mentions a random
# non-empty subset of the digit, the motion and the sound, in words drawn from templates and
# synonyms. The **extra images** are still digits captioned by their digit alone: appearance
# only, as the paper adds COCO images to its videos. The held-out clips use digit images that
# no training item uses.

# %%
task = clip_task(seed=0)
print(task)
print(f"held out: {task.test}")
for i in range(4):
    have = ", ".join(s for s, p in zip(STREAMS, task.test.present[i].tolist(), strict=True) if p)
    print(f"  clip {i} ({have}): {task.test.captions[i]!r}")
print(f"extra image: {task.extra.captions[0]!r}")

# %% [markdown]
# What the experts see, for four held-out clips: the appearance window (10×10), the motion
# stream's frame differences pooled to 5×5, and the 16 audio band energies (blank where the
# stream is missing):

# %%
fig, axes = plt.subplots(3, 4, figsize=(11, 6.2))
for i in range(4):
    appearance, motion, audio = (s[i] for s in task.test.streams)
    axes[0, i].imshow(appearance.reshape(10, 10), cmap="gray_r")
    axes[0, i].set_title("\n".join(textwrap.wrap(task.test.captions[i], 36)), fontsize=8)
    if task.test.present[i, 1]:
        axes[1, i].imshow(motion[-25:].reshape(5, 5), cmap="viridis")
    else:
        axes[1, i].text(0.5, 0.5, "missing", ha="center", va="center")
    if task.test.present[i, 2]:
        axes[2, i].bar(range(16), audio[:16])
    else:
        axes[2, i].text(0.5, 0.5, "missing", ha="center", va="center")
    for row, name in enumerate(STREAMS):
        axes[row, i].set(xticks=[], yticks=[])
        axes[row, 0].set_ylabel(name)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 8. MEE against one stream and against concatenation
#
# `retrieval_comparison` trains seven models on the same task with one recipe (width $E = 32$,
# Adam, margin 0.2, the same epochs, batch and seed) and ranks the 1,000 held-out clips for
# each held-out caption (text→clip) and the captions for each clip (clip→text):
#
# * **one stream only**, for each stream: one gated embedding unit for the stream, one for the
#   text;
# * **concatenation**: all streams in one vector, missing ones filled with zeros, into one unit;
# * **MEE** (Eq. 6.2);
# * concatenation and MEE again, trained on the clips **and the 1,000 extra images**.
#
# R@K is the percentage of queries whose right item ranks in the first K; the median rank (MdR)
# is where the right item lands for half the queries. Ties count against the model
# (`tfcourse.retrieval`). Chance is R@10 = 1% and MdR ≈ 500.

# %%
EPOCHS = 30
start = time.perf_counter()
comparison = retrieval_comparison(seed=0, epochs=EPOCHS)
retrieval_seconds = time.perf_counter() - start
print(f"{'':<23} {'text→clip':^23}   {'clip→text':^23}")
head = "   R@1   R@5  R@10   MdR"
print(f"{'model':<23}{head}  {head}")
for row in comparison["rows"]:
    cells = "  ".join("".join(f"{row[d][m]:6.1f}" for m in ("R@1", "R@5", "R@10", "median_rank"))
                      for d in ("text_to_clip", "clip_to_text"))
    print(f"{row['model']:<23}{cells}")
print(f"(7 models trained in {retrieval_seconds:.0f} s)")
by_name = {row["model"]: row for row in comparison["rows"]}
assert (by_name["MEE"]["text_to_clip"]["median_rank"]
        < by_name["concatenation"]["text_to_clip"]["median_rank"])

# %% [markdown]
# Where does MEE gain? Split the text→clip queries by whether the clip has every stream that
# its caption speaks of. On a caption about a sound whose clip has no audio, concatenation
# compares the caption with a row of zeros; MEE renormalises its weights over the streams the
# clip has:

# %%
print(f"{'model':<23} {'complete':>18} {'lacking a stream':>20}")
for row in comparison["rows"]:
    cells = [row["by_completeness"][k] for k in ("complete", "incomplete")]
    print(f"{row['model']:<23} " + "  ".join(
        f"R@10 {c['R@10']:4.1f} MdR {c['median_rank']:5.0f}" for c in cells))
print("queries: " + ", ".join(f"{k} {v['queries']}"
                               for k, v in comparison["rows"][0]["by_completeness"].items()))

# %% [markdown]
# **The mixture weights follow the caption.** The mean weights $w_m$ of MEE + images on the
# held-out captions, for a clip with every stream, grouped by what the caption mentions:

# %%
table = comparison["weights"]
fig, ax = plt.subplots(figsize=(9, 3.4))
names = list(table)
for m, stream in enumerate(STREAMS):
    ax.bar([i + 0.27 * (m - 1) for i in range(len(names))], [table[n][m] for n in names],
           width=0.27, label=stream)
ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
ax.set(ylabel="mean weight", ylim=(0, 0.75),
       title="MEE's mixture weights by what the caption mentions")
ax.legend(loc="upper left", ncols=3)
ax.grid(True, axis="y")
plt.show()
assert table["motion"][1] == max(table["motion"])  # a caption about motion: the motion expert
assert table["sound"][2] == max(table["sound"])  # about the sound: the audio expert

# %% [markdown]
# **One seed is one draw.** The table above is one task and one training per model; the
# benchmark repeats it for five seeds (a new task and new initial weights each):
#
# ```
# python -m tfcourse.bench mee
# ```
#
# Its means over seeds 0 to 4, text→clip, on this course's 2-core machine (2,000 training clips
# of 300 digit images, 1,000 held-out clips of 449 unseen images, 1,000 extra images, 30 epochs):
#
# | model | R@1 | R@5 | R@10 | MdR |
# |---|---|---|---|---|
# | best single stream (appearance) | 0.6 | 2.6 | 4.9 | 202 |
# | concatenation | 2.5 | 9.8 | 15.9 | 70 |
# | MEE | 2.3 | 9.1 | **16.8** | **53** |
# | concatenation + images | 3.0 | 10.6 | 17.3 | 62 |
# | MEE + images | 2.7 | 11.1 | **19.3** | **47** |
#
# * **Against one stream**, every model that combines the streams is three times better on
#   R@10: no stream alone tells a caption's digit, motion and sound.
# * **Against concatenation**, MEE's median rank is lower in every seed (by 13.5 to 21 places)
#   and in both directions. Its R@10 is higher on average (16.8 against 15.9; in three seeds
#   of five). At R@1 and R@5 concatenation is as good or better. The split above shows why:
#   MEE gains on the clips that lack a stream their caption mentions (R@10 12.4 against 6.8),
#   and is a little behind on the complete ones (18.8 against 20.2), though ahead there on
#   median rank (42 against 50).
# * **The extra images help MEE more** (R@10 16.8 to 19.3, MdR 53 to 47; in every seed MEE +
#   images beat concatenation + images). An image has no motion and no audio: MEE learns from
#   it through the appearance expert alone, while concatenation must learn that zeros in two
#   thirds of its input mean "missing" for images and not for clips.
# * **The weights are soft.** A caption about motion gives the motion expert about 0.56, not
#   1: the other experts add their cosines as noise, which costs precision at the very top of
#   the ranking and is one reason R@1 does not improve.
#
# **The paper's figures, as the paper's.** On MSR-VTT (1,000 test clips; appearance, motion,
# audio and face streams from pretrained networks, text from word2vec), Miech, Laptev and
# Sivic report text→video R@10 of 51.0% and a median rank of 10 for MEE, and 53.8% and 9 for
# MEE trained with COCO images added. The task here is far smaller and synthetic, and its
# captions often say less (a caption about the digit alone fits a tenth of the clips), so
# the absolute figures are not comparable; the direction of the two effects is what carries
# over.

# %% [markdown]
# ## Summary
#
# * At one parameter count, a training step of attention grew with an exponent of 1.79 from
#   1,024 to 4,096 tokens; Hyena, Mamba and Jamba near 1. Attention's quadratic part overtakes
#   the rest at $T = 2C + F$; below that it is as cheap as the others.
# * Decoding a token costs Mamba the same at any length (exponent 0.04); attention's cache
#   grows with the context.
# * On associative recall at one size and one recipe, the hybrid (Jamba) learned fastest at
#   32 and 64 tokens; attention learned it at 32; Hyena and pure Mamba did not (section 3).
# * On small images all the course's vision models are within a few test images of each
#   other; ToMe pays only with many tokens; released Activator cannot relate patches.
# * The Mixture of Embedding Experts embeds each stream with its own gated unit (Eq. 6.1),
#   weighs the experts by the caption and renormalises over the streams a clip has (Eq. 6.2),
#   and trains with a bidirectional ranking loss (Eq. 6.3).
# * On captioned clips of real digits with 20% of the motion and 40% of the audio missing, MEE
#   beat concatenation with zero-filled streams on median rank (53 against 70) and on R@10
#   (16.8 against 15.9, mean of five seeds), and gained more from extra captioned images (19.3
#   and 47); the mixture weights follow what the caption mentions.
#
# **Exercises.** The [exercise notebook](exercises.ipynb) asks you to write the gated embedding
# unit, the MEE similarity with missing streams, the ranking loss, the retrieval metrics and a
# cost model of a Transformer block, checked against a measurement.
#
# ## References
#
# * Arora, S. et al. (2023). Zoology: Measuring and improving recall in efficient language
#   models. arXiv:2312.04927.
# * Bolya, D. et al. (2023). Token Merging: Your ViT but faster. *ICLR*. arXiv:2210.09461.
# * Gu, A., Dao, T. (2023). Mamba: Linear-time sequence modeling with selective state spaces.
#   arXiv:2312.00752.
# * Kaplan, J. et al. (2020). Scaling laws for neural language models. arXiv:2001.08361.
# * Lieber, O., Lenz, B. et al. (2024). Jamba: A hybrid Transformer-Mamba language model.
#   arXiv:2403.19887.
# * Miech, A., Laptev, I., Sivic, J. (2018). Learning a text-video embedding from incomplete
#   and heterogeneous data. arXiv:1804.02516.
# * Poli, M. et al. (2023). Hyena hierarchy: Towards larger convolutional language models.
#   *ICML*. arXiv:2302.10866.

# %%
lesson_seconds = time.perf_counter() - lesson_start
print(f"this page ran in {lesson_seconds:.0f} s: cost {cost_seconds:.0f} s, vision "
      f"{vision_seconds:.0f} s, retrieval {retrieval_seconds:.0f} s")
