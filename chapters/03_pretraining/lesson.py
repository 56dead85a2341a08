# %% [markdown]
# # Three branches and pre-training
#
# Chapter 2 trained an encoder-decoder Transformer on one task, from random weights, with
# labelled pairs. The models that made the architecture famous are trained differently: first
# on raw text, with an objective that needs no labels (**pre-training**), then briefly on the
# task at hand (**fine-tuning**). And most of them keep only one half of the Transformer. This
# chapter covers:
#
# 1. the three branches of the family (encoder-only, decoder-only, encoder-decoder), their
#    attention masks and their objectives, and which tasks each fits;
# 2. the corpus, and the loss of a model that knows nothing about order (the baseline);
# 3. pre-training a tiny GPT, a decoder-only model, on characters;
# 4. sampling from it: greedy decoding, temperature and top-$k$;
# 5. the KV cache: why it is exact, and how much time it saves;
# 6. pre-training a tiny BERT, an encoder-only model, with masked language modelling;
# 7. fine-tuning it to tell English word order from a scramble, against the same model trained
#    from scratch on the same labelled examples, over several seeds.
#
# The code comes from `tfcourse` (`DecoderOnlyLM`, `EncoderOnlyLM`, `SequenceClassifier`,
# `next_token_loss`, `mask_tokens`, the `Trainer` of chapter 2). The dimension letters are those
# of the [notation page](../appendices/notation.md), with `V` the vocabulary size. The
# [exercise notebook](exercises.ipynb) asks you to write the next-token loss, greedy decoding
# with a KV cache, BERT's masking and the mean pooling of a classifier yourself.

# %%
import collections
import copy
import math
import statistics
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

import tfcourse as tc
from tfcourse import checks
from tfcourse.data import (
    batches_from_tensors,
    corpus_stats,
    lm_batches,
    python_docs,
    sentences,
    step_generator,
    train_val_split,
    word_order_task,
)
from tfcourse.plotting import plot_history

lesson_start = time.perf_counter()
tc.pin_threads()  # a fixed number of CPU threads: steadier timings
tc.seed_everything(0)  # the same random numbers and figures at every run
device = tc.default_device()  # CUDA on a GPU (Colab), else the CPU (Binder)
plt.rcParams.update({"figure.dpi": 100, "grid.alpha": 0.3})
print(f"torch {torch.__version__}, tfcourse {tc.__version__}, "
      f"device: {device}, {torch.get_num_threads()} CPU threads")

# %% [markdown]
# ## 1. Encoder-only, decoder-only, encoder-decoder
#
# The Transformer of Vaswani et al. (2017) has an encoder, which reads the whole input with
# bidirectional self-attention, and a decoder, which writes the output one token at a time with
# causal self-attention and cross-attention to the encoder. Each half makes a model of its own.
#
# * **Decoder-only** (GPT: Radford et al., 2018, 2019). The decoder without cross-attention. Every
#   position sees itself and the positions before it, so the model assigns a probability to a
#   sequence one token at a time, and is pre-trained to predict the next token of raw text:
#
# $$
# \mathcal{L}_\text{causal} = -\frac{1}{T-1}\sum_{t=0}^{T-2}
# \log p_\theta(x_{t+1} \mid x_0, \dots, x_t) . \tag{1.1}
# $$
#
#   It generates text by itself, so it fits open-ended generation, and any task that can be
#   written as text to be continued (Radford et al., 2019, showed that a large enough model does
#   several tasks "zero-shot", from a prompt alone).
# * **Encoder-only** (BERT: Devlin et al., 2019). The encoder alone: every position sees every
#   other, left and right. That makes next-token prediction trivial (the answer is visible), so
#   BERT is pre-trained to recover tokens hidden in its input, **masked language modelling**
#   (MLM): with $\mathcal{M}$ the set of corrupted positions and $\tilde{x}$ the corrupted input,
#
# $$
# \mathcal{L}_\text{MLM} = -\frac{1}{|\mathcal{M}|}\sum_{t \in \mathcal{M}}
# \log p_\theta(x_t \mid \tilde{x}) . \tag{1.2}
# $$
#
#   It produces one contextual vector per token and does not generate text; it fits tasks that
#   read a whole input and label it, or label its tokens: classification, tagging, extractive
#   question answering.
# * **Encoder-decoder** (the original Transformer; T5: Raffel et al., 2020). Bidirectional over
#   the input, causal over the output: tasks that map one sequence to another, such as
#   translation or summarisation (chapter 2's dates). T5 casts every task as text to text and
#   pre-trains by having the decoder write spans that were removed from the encoder's input.
#
# Raffel et al. (2020, Figure 3) draw the difference as three attention masks. Below, for a
# sequence of 6 input and 6 output positions laid end to end, row $i$ shows which positions
# position $i$ may attend to (white: allowed). For the encoder-decoder the matrix holds the
# encoder's self-attention (top left), the decoder's cross-attention (bottom left) and the
# decoder's causal self-attention (bottom right).

# %%
S = T = 6
n = S + T
full = torch.ones(n, n, dtype=torch.bool)  # encoder-only: everyone sees everyone
causal = tc.causal_mask(n)  # decoder-only: position i sees 0..i (True = may attend)
encoder_decoder = torch.zeros(n, n, dtype=torch.bool)
encoder_decoder[:S, :S] = True  # encoder self-attention: the whole input
encoder_decoder[S:, :S] = True  # cross-attention: every output position sees the whole input
encoder_decoder[S:, S:] = tc.causal_mask(T)  # decoder self-attention: causal
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
titles = ("Encoder-only (BERT)\nbidirectional", "Decoder-only (GPT)\ncausal",
          "Encoder-decoder (T5)\ninput: bidirectional, output: causal")
for ax, mask, title in zip(axes, (full, causal, encoder_decoder), titles, strict=True):
    ax.imshow(mask, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("key position (may be attended to)")
    ax.set_xticks(range(n), [f"x{i}" for i in range(S)] + [f"y{i}" for i in range(T)],
                  fontsize=7)
    ax.set_yticks(range(n), [f"x{i}" for i in range(S)] + [f"y{i}" for i in range(T)],
                  fontsize=7)
axes[0].set_ylabel("query position")
for ax in axes:
    ax.axhline(S - 0.5, color="tab:red", lw=0.8)
    ax.axvline(S - 0.5, color="tab:red", lw=0.8)
fig.tight_layout()
plt.show()
print(f"attended pairs out of {n * n}: bidirectional {int(full.sum())}, causal "
      f"{int(causal.sum())}, encoder-decoder {int(encoder_decoder.sum())}")

# %% [markdown]
# The two models of this chapter implement the first two masks. A check of what each mask
# promises, on untrained models: in `tc.DecoderOnlyLM` the logits at position $t$ do not move
# when the tokens after $t$ change; in `tc.EncoderOnlyLM` changing the *last* token changes the
# output at the *first* position.

# %%
tc.seed_everything(0)
gpt = tc.DecoderOnlyLM(50, max_len=16, d_model=32, num_heads=4, num_layers=2).to(device).eval()
bert = tc.EncoderOnlyLM(50, max_len=16, d_model=32, num_heads=4, num_layers=2).to(device).eval()
tokens = torch.randint(6, 50, (2, 10), device=device)  # (B, T); ids 0-5 are special
changed = tokens.clone()
changed[:, -1] = (changed[:, -1] + 1 - 6) % 44 + 6  # another ordinary token at the end
with torch.no_grad():
    logits = gpt(tokens)  # (B, T, V)
    moved_gpt = (gpt(changed) - logits).abs().amax(dim=(0, 2))  # (T,): change per position
    moved_bert = (bert(changed) - bert(tokens)).abs().amax(dim=(0, 2))
print(f"DecoderOnlyLM: tokens {tuple(tokens.shape)} -> logits {tuple(logits.shape)}")
print("change of the logits per position when the last token changes:")
print("  decoder-only:", " ".join(f"{v:.0e}" for v in moved_gpt.tolist()))
print("  encoder-only:", " ".join(f"{v:.0e}" for v in moved_bert.tolist()))
assert moved_gpt[:-1].max() < 1e-6 and moved_gpt[-1] > 1e-3  # causal: only the last position moves
assert moved_bert.min() > 1e-3  # bidirectional: every position moves

# %% [markdown]
# ## 2. The corpus, and a baseline that ignores order
#
# Pre-training needs raw text, and this course downloads nothing: CPython ships the text of its
# `help()` topics, and `tfcourse.data.python_docs()` keeps its prose (about 300,000 characters of
# English about Python). `train_val_split` cuts it in two at a line break: the first 90% to train
# on, the last 10% to validate on. Every model of this chapter is pre-trained on the first part
# only.
#
# The GPT of section 3 reads **characters**: a vocabulary of about 100 symbols, built from the
# training text (a character of the validation text that never appears in it becomes
# `<unk>`). To know what its loss means we need a baseline. The simplest model that has learned
# something is the **unigram** model: it predicts every character with its frequency in the
# training text, whatever came before. Its cross-entropy on the validation text is
#
# $$
# H_\text{unigram} = -\frac{1}{N}\sum_{i=1}^{N} \log \hat{p}(x_i), \qquad
# \hat{p}(c) = \frac{\text{count}(c) + 1}{N_\text{train} + V}, \tag{2.1}
# $$
#
# (add-one smoothing, so that no character has probability 0), and its **perplexity**
# $e^{H}$ is the number of equally likely choices that would be as uncertain. A uniform guess over
# $V$ symbols has perplexity $V$. A language model is worth something to the extent that its
# loss is below the unigram's: that part comes from reading the context.

# %%
text = python_docs()
train_text, val_text = train_val_split(text)
print(f"corpus: {corpus_stats(text)}")
print(f"train: {len(train_text):,} characters, validation: {len(val_text):,} characters\n")
print(val_text[:400], "...\n")

chars = tc.CharTokenizer.from_text(train_text)
train_ids = torch.tensor(chars.encode(train_text))  # (N_train,)
val_ids = torch.tensor(chars.encode(val_text))  # (N_val,)
counts = torch.bincount(train_ids, minlength=chars.vocab_size).double() + 1  # add-one
unigram_loss = -counts.div(counts.sum()).log()[val_ids].mean().item()  # Eq. (2.1)
uniform_loss = math.log(chars.vocab_size)
print(f"{chars}: {chars.vocab_size - len(chars.specials)} characters and "
      f"{len(chars.specials)} special tokens; <unk> in the validation text: "
      f"{int((val_ids == chars.unk_id).sum())}")
print(f"validation cross-entropy (nats per character): uniform {uniform_loss:.3f} "
      f"(perplexity {chars.vocab_size}), unigram {unigram_loss:.3f} "
      f"(perplexity {math.exp(unigram_loss):.1f})")

# %% [markdown]
# ## 3. Pre-training a tiny GPT
#
# `tc.DecoderOnlyLM` is GPT-2's recipe at a toy size (Radford et al., 2019, section 2.3): token
# embeddings and *learned* position embeddings, a stack of pre-LN decoder layers without
# cross-attention (chapter 2, section 9), a final LayerNorm, and an output layer that shares
# its weights with the token embeddings (weight tying). Ours has $C = 128$, 4 heads, 2 layers
# and $F = 512$; it reads windows of 256 characters. One choice for a short run, here and for
# the BERT of section 6: the table of learned positions starts from the sinusoids of chapter 2
# (it is still trained; it just starts with a notion of "nearby", which a randomly initialised
# table has to learn from the data first).
#
# The data are windows of 257 characters drawn at random offsets of the training text
# (`lm_batches`, a deterministic function of the step). The model reads a whole window, and
# `next_token_loss` scores the logits at position $t$ on the character at $t + 1$, Eq. (1.1):
# one forward pass trains all 256 predictions of a window at once, and the causal mask keeps
# each of them from seeing its answer. The validation loss is measured on 64 fixed windows of
# the validation text.

# %%
BLOCK = 256  # characters per training window
MAX_LEN = BLOCK + 64  # room for a prompt and 256 generated characters in section 5


def build_gpt():
    model = tc.DecoderOnlyLM(chars.vocab_size, max_len=MAX_LEN, d_model=128, num_heads=4,
                             num_layers=2, d_ff=512, dropout=0.0)
    with torch.no_grad():
        model.positions.weight.copy_(tc.sinusoidal_encoding(MAX_LEN, 128))  # (T, C)
    return model


def causal_lm_loss(model, window):
    return tc.next_token_loss(model(window), window)  # Eq. (1.1), on (B, BLOCK + 1) windows


starts = torch.linspace(0, len(val_ids) - BLOCK - 2, 64).long()
val_windows = torch.stack([val_ids[s:s + BLOCK + 1] for s in starts.tolist()])  # (64, T + 1)


def validation_loss(model):
    windows = val_windows.to(device)
    return {"val_loss": tc.next_token_loss(model(windows), windows).item()}


tc.seed_everything(0)
gpt = build_gpt()
print(f"{sum(p.numel() for p in gpt.parameters()):,} parameters")
gpt_config = tc.TrainConfig(steps=400, lr=5e-3, warmup_steps=40, schedule="cosine",
                            weight_decay=0.01, log_every=10, eval_every=100, seed=0,
                            device=device)
batches = lm_batches(train_ids, batch_size=8, block_size=BLOCK, seed=0)
start = time.perf_counter()
gpt_history = tc.Trainer(gpt, causal_lm_loss, batches, gpt_config, eval_fn=validation_loss).fit()
gpt_seconds = time.perf_counter() - start
gpt_val_loss = gpt_history.last("val_loss")

fig, ax = plt.subplots(figsize=(7, 3.8))
plot_history(gpt_history, ax=ax, metrics=["loss", "val_loss"], title="Character-level GPT")
ax.axhline(unigram_loss, color="grey", linestyle="--", label="unigram (validation)")
ax.set_ylabel("cross-entropy (nats per character)")
ax.grid(True)
ax.legend()
plt.show()
print(f"{gpt_config.steps} steps in {gpt_seconds:.0f} s")
print(f"validation loss {gpt_val_loss:.3f} nats per character (perplexity "
      f"{math.exp(gpt_val_loss):.1f}) against the unigram's {unigram_loss:.3f} (perplexity "
      f"{math.exp(unigram_loss):.1f})")
assert gpt_val_loss < unigram_loss - 0.5, "the GPT should beat the unigram model clearly"

# %% [markdown]
# The model has learned something the unigram model cannot: which character is likely *here*,
# after these ones. Its perplexity is still high: most of the gain comes in the first hundred
# steps, where the model learns which characters follow which, and going much further takes
# thousands of steps. A real GPT is trained on billions of tokens
# (GPT-2: about 40 GB of web text, and 1.5 billion parameters for the largest model; Radford et
# al., 2019) for days; ours saw about a million characters for well under a minute. The
# samples below show what that buys.
#
# ## 4. Sampling: greedy, temperature and top-$k$
#
# To generate, feed a prompt, take the logits $z$ of the last position, choose a token, append
# it, repeat. **Greedy** decoding takes $\arg\max_i z_i$. **Sampling** draws from the softmax of
# the logits divided by a **temperature** $\tau$, optionally restricted to the $k$ most probable
# tokens (**top-$k$**, Fan et al., 2018):
#
# $$
# \begin{aligned}
# p_i &= \frac{\exp(z_i / \tau)}{\sum_{j \in \mathcal{K}} \exp(z_j / \tau)} \text{ for }
# i \in \mathcal{K},\ 0 \text{ otherwise}, \cr
# \mathcal{K} &= \text{the } k \text{ largest } z_i .
# \end{aligned}
# \tag{4.1}
# $$
#
# $\tau < 1$ sharpens the distribution towards greedy, $\tau > 1$ flattens it towards uniform;
# top-$k$ removes the long tail of unlikely tokens, whose total probability is what makes
# samples go off the rails. The next-character distribution after a prompt, at three
# temperatures:

# %%
prompt_text = "The value of the "
prompt = torch.tensor([chars.encode(prompt_text)], device=device)  # (1, T0)
with torch.no_grad():
    gpt.eval()
    last = gpt(prompt)[0, -1].float().cpu()  # (V,): logits of the next character
top = last.topk(12).indices
fig, ax = plt.subplots(figsize=(9, 3.2))
for offset, tau in zip((-0.27, 0, 0.27), (0.5, 1.0, 2.0), strict=True):
    probs = (last / tau).softmax(-1)[top]
    ax.bar(torch.arange(12) + offset, probs, width=0.27, label=f"temperature {tau}")
ax.set_xticks(range(12), [repr(chars.tokens[i]) for i in top.tolist()])
ax.set_ylabel("probability")
ax.set_title(f"Next character after {prompt_text!r}")
ax.grid(True, axis="y")
ax.legend()
plt.show()

# %%
def show(label, ids):
    print(f"--- {label}:\n{chars.decode(ids[0].cpu(), stop_at_eos=False)!r}\n")


show("greedy", gpt.generate(prompt, 200, greedy=True))
for tau, k in ((0.8, 10), (1.0, None), (1.5, None)):
    generator = torch.Generator(device=device).manual_seed(0)
    sample = gpt.generate(prompt, 200, temperature=tau, top_k=k, generator=generator)
    show(f"temperature {tau}, top-k {k}", sample)

# %% [markdown]
# Greedy decoding soon repeats itself: once the most probable continuation returns to a string
# the model has already produced, it loops forever. Holtzman et al. (2020) document the same
# degeneration in large models. Sampling gives varied text, and at this size shows what the
# model knows: the lengths of words, the spaces between them, and frequent short words ("the",
# "is", "in") among made-up ones; at $\tau = 1.5$ the tail takes over and punctuation, digits and
# capitals appear at random. A model this small, trained this briefly, does not write English;
# the point of this section is the mechanics, which are those of every GPT.
#
# ## 5. The KV cache
#
# Generating $N$ tokens one at a time with the code above would run the model on the whole
# prefix at every step: step $t$ processes $P + t$ positions (with $P$ the prompt's length), in
# all about $NP + N^2/2$ positions instead of $P + N$. Most of that work is repeated.
#
# **Why the cache is exact.** In a decoder layer, position $s$'s key and value,
# $k_s = x_s W_K$ and $v_s = x_s W_V$, depend on $x_s$, the layer's input at position $s$. With
# the causal mask, $x_s$ depends only on the tokens $0, \dots, s$, in every layer by induction.
# So appending token $t$ changes no key and no value of positions $s < t$. Step $t$ needs only
#
# $$
# \begin{aligned}
# q_t &= x_t W_Q,\quad K_{\le t} = [K_{<t};\ x_t W_K],\quad V_{\le t} = [V_{<t};\ x_t W_V], \cr
# o_t &= \operatorname{softmax}\!\Big(\frac{q_t K_{\le t}^\top}{\sqrt{D}}\Big) V_{\le t},
# \end{aligned}
# \tag{5.1}
# $$
#
# where $K_{<t}$ and $V_{<t}$ were computed at earlier steps: keep them, per layer, and each step
# runs the model on one new position. That is the **KV cache** (`tc.KVCache`;
# `model.new_cache()` makes one empty cache per layer). It costs memory: $2 \times L \times B
# \times T \times C$ numbers (keys and values, every layer, every position so far), which for
# large models and long contexts becomes the main limit of inference (Pope et al., 2023). In an
# encoder-only model there is no such saving: every position attends to every other, so a new
# token changes all of them.
#
# The cache after reading the prompt, and one step:

# %%
cache = gpt.new_cache()
with torch.no_grad():
    full_logits = gpt(prompt)  # (1, T0, V), no cache
    cached_logits = gpt(prompt, cache=cache)  # fills the cache with the prompt's keys, values
    layer0 = cache[0].self_attn
    print(f"prompt {tuple(prompt.shape)}: {len(cache)} layers, each with keys and values "
          f"{tuple(layer0.keys.shape)} (B, H, S, D)")
    next_token = full_logits[:, -1:].argmax(-1)  # (1, 1)
    step_logits = gpt(next_token, cache=cache)  # (1, 1, V): one new position
    reference = gpt(torch.cat([prompt, next_token], dim=1))[:, -1:]  # the whole prefix again
print(f"after one step: keys {tuple(cache[0].self_attn.keys.shape)}; largest difference "
      f"between the cached step and a full forward pass: "
      f"{(step_logits - reference).abs().max():.1e}")
checks.expect_close(step_logits, reference, name="one cached step")
checks.expect_close(cached_logits, full_logits, name="the prompt with a cache")

# %% [markdown]
# Now the whole generation of 256 characters, with and without the cache, token for token the
# same: greedily, and by sampling with the same random generator.

# %%
NEW = 256


def generate(use_cache, greedy=True, prompts=prompt):
    generator = torch.Generator(device=device).manual_seed(1)
    return gpt.generate(prompts, NEW, greedy=greedy, temperature=0.8, top_k=10,
                        use_cache=use_cache, generator=generator)


for greedy in (True, False):
    with_cache, without_cache = generate(True, greedy), generate(False, greedy)
    assert torch.equal(with_cache, without_cache), "the cache changed the generated tokens"
    print(f"{'greedy' if greedy else 'sampled'}: the {NEW} tokens generated with and without "
          f"the cache are identical")


def timed(fn):
    """The time of ``fn()`` in seconds (synchronised on a GPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


batch_prompts = prompt.repeat(8, 1)  # (8, T0): eight sequences generated together
print(f"\n{NEW} tokens after a {prompt.shape[1]}-token prompt, on {device.type.upper()} "
      "(the fastest of 2 runs each, alternated):")
speedups = {}
for label, prompts in (("batch of 1", prompt), ("batch of 8", batch_prompts)):
    cached, uncached = [], []
    for _ in range(2):
        cached.append(timed(lambda p=prompts: generate(True, prompts=p)))
        uncached.append(timed(lambda p=prompts: generate(False, prompts=p)))
    speedups[label] = min(uncached) / min(cached)
    print(f"  {label}: with the cache {min(cached) * 1000:.0f} ms, without "
          f"{min(uncached) * 1000:.0f} ms: {speedups[label]:.1f}x faster")
if device.type == "cpu":  # on a GPU a model this small is bound by kernel launches, cached or not
    assert speedups["batch of 1"] > 1.2 and speedups["batch of 8"] > 2, speedups

# %% [markdown]
# Where the time goes: the cost of each step, generated by hand with the model's forward pass
# (what `generate` does inside). Without the cache a step reruns the whole prefix, so its cost
# grows with the position; with the cache it stays flat.

# %%
@torch.no_grad()
def step_times(use_cache):
    gpt.eval()
    cache = gpt.new_cache() if use_cache else None
    tokens, new, times = prompt, prompt, []
    for _ in range(NEW):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        token = gpt(new, cache=cache)[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        tokens = torch.cat([tokens, token], dim=1)
        new = token if use_cache else tokens
    return tokens, times


tokens_cached, times_cached = step_times(True)
tokens_uncached, times_uncached = step_times(False)
assert torch.equal(tokens_cached, generate(True))  # the same loop as generate's
positions = torch.arange(NEW) + prompt.shape[1]
median = lambda xs: torch.tensor(xs).median().item() * 1000  # noqa: E731
fig, ax = plt.subplots(figsize=(7, 3.6))
ax.plot(positions, [t * 1000 for t in times_uncached], ".", ms=3, label="without cache")
ax.plot(positions, [t * 1000 for t in times_cached], ".", ms=3, label="with KV cache")
ax.set_xlabel("position of the generated token")
ax.set_ylabel("time of the step (ms)")
ax.set_title("Cost of each generation step")
ax.set_ylim(0, 1.2 * max(t * 1000 for t in times_uncached[-20:]))
ax.grid(True)
ax.legend()
plt.show()
print(f"median step: first 32 tokens {median(times_uncached[:32]):.2f} ms without cache, "
      f"{median(times_cached[:32]):.2f} ms with; last 32 tokens "
      f"{median(times_uncached[-32:]):.2f} ms without, {median(times_cached[-32:]):.2f} ms with")

# %% [markdown]
# The saving grows with the length of the prefix and with the batch. For one sequence, on a
# model this small, a cached step is dominated by fixed costs (a few dozen small operations
# launched one after the other), so the gain at 256 tokens is modest; with eight sequences the
# uncached steps have eight times the work to redo and the gain is larger. (On a GPU, a model
# this small spends each step launching kernels, one per operation whether the step reads one
# position or three hundred, so there the two take about the same time; the cache pays off on a
# GPU for large models, long prefixes and large batches.) The benchmark
# `python -m tfcourse.bench kv_cache` measures it for more lengths and batch sizes.
#
# ## 6. A tiny BERT: masked language modelling
#
# BERT reads **words**. `tc.WordTokenizer.from_text` keeps the 994 most frequent lower-cased
# words and punctuation marks of the training text (1000 ids with the six special tokens);
# every other word becomes `<unk>`. Each training sequence is one sentence of the training text,
# after a `<cls>` token, cut at 40 tokens and padded.
#
# **The corruption** (Devlin et al., 2019, section 3.1). A fraction of the ordinary tokens is
# selected; of those, 80% become `<mask>`, 10% a random token, 10% stay as they are; the loss,
# Eq. (1.2), is computed at the selected positions only. The random and unchanged 10% matter:
# `<mask>` never occurs in fine-tuning, and without them the model could learn that only
# `<mask>` positions need any work. BERT selects 15% of the tokens; Wettig et al. (2023) found
# that higher rates (up to 40%) train as well or better, and we select 25%, to get more signal
# from each of our few steps. `tc.mask_tokens` does it; the proportions, measured on the whole
# pre-training set:

# %%
words = tc.WordTokenizer.from_text(train_text, max_vocab=1000)
train_sentences, val_sentences = sentences(train_text), sentences(val_text)
SEQ_LEN = 40  # <cls> and up to 39 tokens


def encode_sentences(texts):
    ids = words.encode_batch(texts, max_len=SEQ_LEN - 1)  # (B, T - 1), padded with 0
    return torch.cat([torch.full((len(texts), 1), words.cls_id), ids], dim=1)  # (B, T)


pretrain = encode_sentences([s for s in train_sentences if len(s.split()) >= 3])  # (N, T)
real = pretrain != words.pad_id
print(f"{words}; {len(pretrain)} training sentences, {int(real.sum()):,} tokens; "
      f"<unk>: {(pretrain[real] == words.unk_id).float().mean():.1%} of the tokens")

MASK_PROB = 0.25
inputs, labels = tc.mask_tokens(pretrain, mask_id=words.mask_id, vocab_size=words.vocab_size,
                                special_ids=words.special_ids, mask_prob=MASK_PROB,
                                generator=torch.Generator().manual_seed(0))
selected = labels != -100
ordinary = ~torch.isin(pretrain, torch.tensor(words.special_ids))  # not <pad>, <cls>, <unk>
shares = {"<mask>": (inputs[selected] == words.mask_id).float().mean().item(),
          "unchanged": (inputs[selected] == pretrain[selected]).float().mean().item()}
shares["random"] = 1 - shares["<mask>"] - shares["unchanged"]
print(f"selected: {selected.sum() / ordinary.sum():.1%} of the ordinary tokens; of those "
      + ", ".join(f"{name} {share:.1%}" for name, share in shares.items()))
assert abs(selected.sum() / ordinary.sum() - MASK_PROB) < 0.01
assert abs(shares["<mask>"] - 0.8) < 0.01 and abs(shares["random"] - 0.1) < 0.01
assert not (selected & ~ordinary).any(), "special tokens and padding are never selected"
print("\noriginal: ", words.decode(pretrain[1]))
print("corrupted:", " ".join(words.tokens[i] for i in inputs[1].tolist() if i != words.pad_id))
print("labels:   ", " ".join(words.tokens[t] if t != -100 else "_" for t, i
                            in zip(labels[1].tolist(), pretrain[1].tolist(), strict=True)
                            if i != words.pad_id))

# %% [markdown]
# The model: `tc.EncoderOnlyLM` with $C = 64$, 4 heads, 2 layers, $F = 256$: pre-LN, GELU,
# learned positions, the output layer tied to the token embeddings. As for the GPT, the table of
# learned positions starts from the sinusoids of chapter 2, for every model of sections 6 and 7
# alike. The output layer is computed at the selected positions only (as BERT's own code does:
# the other positions have no label, so their logits would be wasted work, and with 1000 words
# they are most of the cost). A fresh random corruption at every step
# (`mask_tokens` with the step's generator), 64 sentences per step, 1200 steps.

# %%
def build_bert(seed):
    tc.seed_everything(seed)
    model = tc.EncoderOnlyLM(words.vocab_size, max_len=SEQ_LEN, d_model=64, num_heads=4,
                             num_layers=2, d_ff=256, dropout=0.0, pad_id=words.pad_id)
    with torch.no_grad():
        model.positions.weight.copy_(tc.sinusoidal_encoding(SEQ_LEN, 64))  # (T, C)
    return model


def mlm_batches(step):
    generator = step_generator(0, step)
    rows = pretrain[torch.randint(len(pretrain), (64,), generator=generator)]  # (B, T)
    rows = rows[:, :int((rows != words.pad_id).sum(1).max())]  # drop columns of padding only
    return tc.mask_tokens(rows, mask_id=words.mask_id, vocab_size=words.vocab_size,
                          special_ids=words.special_ids, mask_prob=MASK_PROB,
                          generator=generator)


def mlm_loss(model, batch):
    inputs, labels = batch  # (B, T) each
    selected = labels != -100  # (B, T)
    logits = model.head(model.encode(inputs)[selected])  # (M, V): selected positions only
    loss = F.cross_entropy(logits, labels[selected])  # Eq. (1.2)
    return loss, {"masked_accuracy": (logits.argmax(-1) == labels[selected]).float().mean()}


bert = build_bert(0)
mlm_config = tc.TrainConfig(steps=1200, lr=3e-3, warmup_steps=120, schedule="cosine",
                            weight_decay=0.01, log_every=20, seed=0, device=device)
start = time.perf_counter()
mlm_history = tc.Trainer(bert, mlm_loss, mlm_batches, mlm_config).fit()
mlm_seconds = time.perf_counter() - start

word_counts = collections.Counter(pretrain[ordinary].tolist())
most_frequent_share = max(word_counts.values()) / sum(word_counts.values())
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.6))
plot_history(mlm_history, ax=ax_loss, metrics="loss", title="MLM loss")
plot_history(mlm_history, ax=ax_acc, metrics="masked_accuracy",
             title="Accuracy at the selected positions")
ax_acc.axhline(most_frequent_share, color="grey", linestyle="--",
               label="always the most frequent word")
ax_acc.legend()
for ax in (ax_loss, ax_acc):
    ax.grid(True)
fig.tight_layout()
plt.show()
print(f"{mlm_config.steps} steps in {mlm_seconds:.0f} s; last 20 steps: loss "
      f"{mlm_history.last('loss'):.3f}, accuracy at the selected positions "
      f"{mlm_history.last('masked_accuracy'):.1%} (the most frequent word, "
      f"{words.tokens[max(word_counts, key=word_counts.get)]!r}, is "
      f"{most_frequent_share:.1%} of the tokens)")

# %% [markdown]
# What the model fills in, on sentences written for this page (the five most probable words at
# the `<mask>`). With a third of the masked tokens right, expect guesses of the right kind (a
# keyword between the quotes) more often than the right word:

# %%
probes = ['The "<mask>" statement is used to raise an exception.',
          "If the name is not found, a <mask> exception is raised.",
          "The <mask> of a function call is the value returned by it."]
bert.eval()
for probe in probes:
    left, right = probe.split("<mask>")
    ids = [words.cls_id, *words.encode(left), words.mask_id, *words.encode(right)]
    at = len(words.encode(left)) + 1  # the position of <mask>
    with torch.no_grad():
        probs = bert(torch.tensor([ids], device=device))[0, at].softmax(-1).cpu()  # (V,)
    best = probs.topk(5)
    print(f"{probe:<56} " + ", ".join(f"{words.tokens[i]} {p:.2f}"
                                      for p, i in zip(best.values, best.indices, strict=True)))

# %% [markdown]
# ## 7. Fine-tuning against training from scratch
#
# **The task.** `word_order_task` turns sentences into labelled examples: a sentence as written
# (label 1) or with its words shuffled (label 0; the capital letter stays at the start and the
# final full stop at the end, so neither gives the answer away, and the tokenizer lower-cases
# anyway). Telling the two apart needs knowledge of English word order, which is what a
# language model picks up from raw text, and little else. The **labelled** training set: 1024
# training sentences (each used once, half of them scrambled). The **test** set: 240 sentences
# of the *validation* text, minus any sentence that also occurs in the training text, so no test
# sentence was seen in pre-training or fine-tuning.
#
# **The comparison.** The same classifier, `tc.SequenceClassifier` (an `EncoderOnlyLM`, mean
# pooling over the non-padding positions, a new linear layer to two classes), trained on the
# same labelled examples with the same settings (AdamW, learning rate $10^{-3}$ with warm-up,
# 150 steps of 32 examples, about 5 epochs), from two starting points: the pre-trained BERT of
# section 6 (**fine-tuning**: all weights are trained), and random weights (**from scratch**).
# Three seeds each: the seed sets the new layer (and, from scratch, the whole model) and the
# order of the batches. Only the pre-trained starting point differs.

# %%
labelled = word_order_task(train_sentences, 1024, seed=0)
test_set = word_order_task(val_sentences, 240, seed=1, exclude=train_sentences)
for sentence, label in labelled[:4]:
    print(f"{label}  {sentence}")
x_train = encode_sentences([s for s, _ in labelled])  # (1024, T)
y_train = torch.tensor([label for _, label in labelled])  # (1024,)
x_test = encode_sentences([s for s, _ in test_set]).to(device)  # (240, T)
y_test = torch.tensor([label for _, label in test_set], device=device)
assert not {s for s, _ in test_set} & set(train_sentences)
print(f"\n{len(labelled)} labelled training examples, {len(test_set)} test examples "
      f"({y_test.float().mean():.0%} written as is)")


def classification_loss(model, batch):
    x, y = batch
    logits = model(x)  # (B, 2)
    return F.cross_entropy(logits, y), {"accuracy": (logits.argmax(-1) == y).float().mean()}


def train_classifier(start_from, seed):
    encoder = copy.deepcopy(bert) if start_from == "pre-trained" else build_bert(100 + seed)
    tc.seed_everything(seed)
    classifier = tc.SequenceClassifier(encoder, 2, pooling="mean")
    config = tc.TrainConfig(steps=150, lr=1e-3, warmup_steps=15, schedule="cosine",
                            weight_decay=0.01, log_every=10, seed=seed, device=device,
                            progress=False)
    history = tc.Trainer(classifier, classification_loss,
                         batches_from_tensors(x_train, y_train, batch_size=32, seed=seed),
                         config).fit()
    classifier.eval()
    with torch.no_grad():
        accuracy = (classifier(x_test).argmax(-1) == y_test).float().mean().item()
    return accuracy, history


SEEDS = (0, 1, 2)
results, histories = {"pre-trained": [], "from scratch": []}, {}
start = time.perf_counter()
for seed in SEEDS:
    for start_from in results:
        accuracy, histories[start_from, seed] = train_classifier(start_from, seed)
        results[start_from].append(accuracy)
finetune_seconds = time.perf_counter() - start

print(f"test accuracy ({len(SEEDS)} seeds, {finetune_seconds:.0f} s for the {2 * len(SEEDS)} "
      f"runs)\n")
print(f"{'seed':>6} {'fine-tuned':>11} {'from scratch':>13}")
for i, seed in enumerate(SEEDS):
    print(f"{seed:>6} {results['pre-trained'][i]:>11.1%} {results['from scratch'][i]:>13.1%}")
summary = {name: (statistics.mean(accs), max(accs) - min(accs), statistics.stdev(accs))
           for name, accs in results.items()}
print(f"{'mean':>6} {summary['pre-trained'][0]:>11.1%} {summary['from scratch'][0]:>13.1%}")
print(f"{'spread':>6} {summary['pre-trained'][1]:>11.1%} {summary['from scratch'][1]:>13.1%}"
      "   (max - min)")
print(f"{'std':>6} {summary['pre-trained'][2]:>11.1%} {summary['from scratch'][2]:>13.1%}")
gain = summary["pre-trained"][0] - summary["from scratch"][0]
largest_spread = max(summary["pre-trained"][1], summary["from scratch"][1])
print(f"\nfine-tuning gains {gain:.1%} on average; the largest run-to-run spread is "
      f"{largest_spread:.1%}")
assert gain > largest_spread, "pre-training should help by more than the noise between seeds"
assert min(results["pre-trained"]) > max(results["from scratch"])

# %%
fig, (ax_curves, ax_bars) = plt.subplots(1, 2, figsize=(12, 3.8),
                                         gridspec_kw={"width_ratios": [3, 2]})
for (start_from, seed), history in histories.items():
    ax_curves.plot(history.steps, history.series("accuracy")[1],
                   color="tab:blue" if start_from == "pre-trained" else "tab:orange",
                   alpha=0.8, label=start_from if seed == 0 else None)
ax_curves.set_xlabel("step")
ax_curves.set_ylabel("training accuracy (mean of 10 steps)")
ax_curves.set_title("Training on 1024 labelled sentences")
ax_curves.grid(True)
ax_curves.legend()
for i, accs in enumerate(results.values()):
    ax_bars.bar(i, statistics.mean(accs), color="tab:blue" if i == 0 else "tab:orange",
                alpha=0.5)
    ax_bars.plot([i] * len(accs), accs, "ko", ms=4)
ax_bars.axhline(0.5, color="grey", linestyle="--", label="chance")
ax_bars.set_xticks([0, 1], ["fine-tuned", "from scratch"])
ax_bars.set_ylim(0.4, 0.8)
ax_bars.set_ylabel("test accuracy")
ax_bars.set_title("Held-out sentences (dots: seeds)")
ax_bars.legend()
fig.tight_layout()
plt.show()
lesson_seconds = time.perf_counter() - lesson_start
print(f"this page ran in {lesson_seconds:.0f} s: GPT pre-training {gpt_seconds:.0f} s, BERT "
      f"pre-training {mlm_seconds:.0f} s, the six classifiers {finetune_seconds:.0f} s")

# %% [markdown]
# The pre-trained model learns the task in fewer steps, and what it learns carries over to
# sentences it has never seen. From scratch, the training accuracy climbs too, but the test
# accuracy stays near chance: 1024 labelled sentences are too few to learn what English word
# order looks like, so the model learns the examples instead. The pre-trained model brought that
# knowledge from about 57,000 tokens of unlabelled text. The gain is far larger than the spread
# between seeds. So yes: these models are pre-trained, in the sense of BERT and GPT
# (self-supervised, on raw text only, the training part of it), and they can be fine-tuned, with
# a measurable benefit, even at this toy scale. At full scale the same recipe set the state of
# the art on eleven language-understanding tasks (Devlin et al., 2019); with a decoder-only
# model, GPT improved it on 9 of the 12 tasks it was evaluated on (Radford et al., 2018).
#
# The absolute accuracy is modest, and honest about the scale: a larger model pre-trained for
# longer on more text would do much better, and the same comparison then says the same thing
# more loudly.
#
# ## Summary
#
# * The Transformer's halves make three branches: **decoder-only** (causal, next-token
#   prediction, Eq. 1.1, generation: GPT), **encoder-only** (bidirectional, masked language
#   modelling, Eq. 1.2, understanding: BERT) and **encoder-decoder** (bidirectional input,
#   causal output, sequence to sequence: T5, the original Transformer). Their masks differ as in
#   the first figure, and the two models of this chapter pass the checks of those masks.
# * Pre-training needs only raw text. A 2-layer character-level GPT trained for a few hundred
#   steps on the prose of Python's help pages beats the unigram baseline of Eq. (2.1) on
#   held-out text by the margin printed in section 3.
# * Greedy decoding loops; temperature and top-$k$ (Eq. 4.1) trade fidelity for variety.
# * The **KV cache** stores each layer's keys and values; causality makes it exact (Eq. 5.1),
#   checked token for token over 256 generated characters, and it makes each step cost one
#   position instead of the whole prefix, measured above.
# * A 2-layer BERT pre-trained with BERT's 80/10/10 corruption and then fine-tuned to detect
#   scrambled word order beats the same model trained from scratch on the same 1024 labelled
#   sentences, at every seed, by more than the spread between seeds.
#
# **Exercises.** The [exercise notebook](exercises.ipynb) asks you to write the next-token loss,
# greedy decoding with a KV cache, BERT's masking and the mean pooling of the classifier.
#
# ## References
#
# * Devlin, J., Chang, M.-W., Lee, K., Toutanova, K. (2019). BERT: pre-training of deep
#   bidirectional Transformers for language understanding. *NAACL-HLT*.
# * Fan, A., Lewis, M., Dauphin, Y. (2018). Hierarchical neural story generation. *ACL*.
# * Holtzman, A., Buys, J., Du, L., Forbes, M., Choi, Y. (2020). The curious case of neural text
#   degeneration. *ICLR*.
# * Pope, R. et al. (2023). Efficiently scaling Transformer inference. *MLSys*.
# * Radford, A., Narasimhan, K., Salimans, T., Sutskever, I. (2018). Improving language
#   understanding by generative pre-training. OpenAI technical report.
# * Radford, A., Wu, J., Child, R., Luan, D., Amodei, D., Sutskever, I. (2019). Language models
#   are unsupervised multitask learners. OpenAI technical report.
# * Raffel, C. et al. (2020). Exploring the limits of transfer learning with a unified
#   text-to-text Transformer. *JMLR* 21(140).
# * Vaswani, A. et al. (2017). Attention is all you need. *NeurIPS*.
# * Wettig, A., Gao, T., Zhong, Z., Chen, D. (2023). Should you mask 15% in masked language
#   modeling? *EACL*.
