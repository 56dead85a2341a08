"""The two branches of pre-training (book: chapter 3).

* :class:`DecoderOnlyLM` (GPT, Radford et al., 2018): causal self-attention, trained to predict
  the next token (:func:`next_token_loss`); generates text with a KV cache.
* :class:`EncoderOnlyLM` (BERT, Devlin et al., 2019): bidirectional self-attention, trained to
  recover masked tokens (:func:`mask_tokens`); fine-tuned with :class:`SequenceClassifier`.

Glossary: B batch, T positions, C = d_model, H heads, F = d_ff, V vocabulary size, L layers.
Both models are pre-LN with GELU, learned positions and an output layer tied to the token
embeddings, the choices of GPT-2 and BERT.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate
from tfcourse.embeddings import LearnedPositionalEmbedding, TokenEmbedding
from tfcourse.kv_cache import LayerCache, cache_length
from tfcourse.transformer import Decoder, Encoder

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: positions without a label


class _LanguageModel(nn.Module):
    """Embeddings, a stack of pre-LN layers, and the tied output layer."""

    def __init__(self, vocab_size: int, max_len: int, d_model: int, tie_weights: bool,
                 dropout: float) -> None:
        super().__init__()
        self.max_len = _validate.integer(max_len, "max_len", 1)
        self.embed = TokenEmbedding(vocab_size, d_model)
        self.positions = LearnedPositionalEmbedding(max_len, d_model)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.embed.weight  # (V, C)

    def _embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        x = self.embed(_validate.token_ids(tokens, "tokens"))  # (B, T, C)
        return self.dropout(self.positions(x, offset))


class DecoderOnlyLM(_LanguageModel):
    """A GPT-style causal language model: tokens (B, T) -> next-token logits (B, T, V), where the
    logits at position t depend on tokens 0..t only."""

    def __init__(
        self, vocab_size: int, *, max_len: int, d_model: int = 128, num_heads: int = 4,
        num_layers: int = 4, d_ff: int | None = None, dropout: float = 0.0,
        tie_weights: bool = True,
    ) -> None:
        super().__init__(vocab_size, max_len, d_model, tie_weights, dropout)
        self.decoder = Decoder(num_layers, d_model, num_heads, d_ff or 4 * d_model,
                               dropout=dropout, norm_first=True, activation="gelu",
                               cross_attention=False)

    def new_cache(self) -> list[LayerCache]:
        """An empty KV cache for :meth:`forward`."""
        return self.decoder.new_cache()

    def forward(
        self, tokens: torch.Tensor, *, cache: list[LayerCache] | None = None
    ) -> torch.Tensor:
        """Logits (B, T, V). With a ``cache``, ``tokens`` are the newest tokens only; they are
        placed after the cached positions and their keys and values are added to the cache."""
        x = self._embed(tokens, cache_length(cache))  # (B, T, C)
        return self.head(self.decoder(x, cache=cache))

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, *, greedy: bool = False,
        temperature: float = 1.0, top_k: int | None = None, use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt`` (B, T0) by ``max_new_tokens`` tokens: (B, T0 + max_new_tokens).

        Each token is the most probable one (``greedy``) or drawn from the softmax of the logits
        divided by ``temperature``, restricted to the ``top_k`` most probable. With ``use_cache``
        each step runs the newest token only; without, it reruns the whole prefix (the same
        tokens, more work: chapter 3 measures the difference). Runs in eval mode.
        """
        prompt = _validate.token_ids(prompt, "prompt")
        _validate.integer(max_new_tokens, "max_new_tokens", 1)
        if prompt.shape[1] + max_new_tokens > self.max_len:
            raise ValueError(f"max_new_tokens: the prompt's {prompt.shape[1]} tokens plus "
                             f"{max_new_tokens} go past max_len={self.max_len}")
        if not temperature > 0:
            raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
        if top_k is not None:
            _validate.integer(top_k, "top_k", 1)
        was_training = self.training
        self.eval()
        cache = self.new_cache() if use_cache else None
        tokens, new = prompt, prompt
        for _ in range(max_new_tokens):
            logits = self(new, cache=cache)[:, -1].float()  # (B, V): the last position
            if greedy:
                token = logits.argmax(-1, keepdim=True)  # (B, 1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                token = torch.multinomial(logits.softmax(-1), 1, generator=generator)
            tokens = torch.cat([tokens, token], dim=1)
            new = token if use_cache else tokens
        self.train(was_training)
        return tokens


class EncoderOnlyLM(_LanguageModel):
    """A BERT-style masked language model: tokens (B, T) -> logits (B, T, V) from bidirectional
    attention; ``pad_id`` positions are never attended to."""

    def __init__(
        self, vocab_size: int, *, max_len: int, d_model: int = 128, num_heads: int = 4,
        num_layers: int = 4, d_ff: int | None = None, dropout: float = 0.0, pad_id: int = 0,
        tie_weights: bool = True,
    ) -> None:
        super().__init__(vocab_size, max_len, d_model, tie_weights, dropout)
        self.pad_id = _validate.integer(pad_id, "pad_id")
        self.encoder = Encoder(num_layers, d_model, num_heads, d_ff or 4 * d_model,
                               dropout=dropout, norm_first=True, activation="gelu")

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, T) -> contextual vectors (B, T, C)."""
        tokens = _validate.token_ids(tokens, "tokens")
        mask = (tokens != self.pad_id)[:, None, None, :]  # (B, 1, 1, T)
        return self.encoder(self._embed(tokens), mask)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(tokens))  # (B, T, V)


class SequenceClassifier(nn.Module):
    """A pre-trained :class:`EncoderOnlyLM` with a new linear layer on one vector per sequence:
    tokens (B, T) -> class logits (B, num_classes) (Devlin et al., 2019, section 3.2).

    ``pooling="first"`` takes the vector of the first position (BERT's ``[CLS]``), ``"mean"``
    the mean over the positions that are not padding.
    """

    def __init__(self, encoder: EncoderOnlyLM, num_classes: int, *, pooling: str = "first",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(encoder, EncoderOnlyLM):
            raise TypeError(f"encoder: expected an EncoderOnlyLM, got {type(encoder).__name__}")
        _validate.integer(num_classes, "num_classes", 2)
        if pooling not in ("first", "mean"):
            raise ValueError(f"pooling: expected 'first' or 'mean', got {pooling!r}")
        self.encoder, self.pooling = encoder, pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.embed.d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.encoder.encode(tokens)  # (B, T, C)
        if self.pooling == "first":
            pooled = h[:, 0]  # (B, C)
        else:
            real = (tokens != self.encoder.pad_id).unsqueeze(-1).to(h.dtype)  # (B, T, 1)
            pooled = (h * real).sum(1) / real.sum(1).clamp(min=1)  # (B, C)
        return self.classifier(self.dropout(pooled))  # (B, num_classes)


def next_token_loss(
    logits: torch.Tensor, tokens: torch.Tensor, *, ignore_index: int | None = None
) -> torch.Tensor:
    r"""The causal language-modelling loss (Radford et al., 2018, Eq. 1): the logits at position
    t, computed from ``tokens[:, :t+1]``, are scored on the next token ``tokens[:, t+1]``:

    .. math:: \mathcal{L} = -\frac{1}{B(T-1)} \sum_{b} \sum_{t=0}^{T-2}
              \log p_\theta(x_{b,t+1} \mid x_{b,0}, \dots, x_{b,t})

    ``logits`` (B, T, V) from a model run on ``tokens`` (B, T); targets equal to
    ``ignore_index`` (padding) are left out of the mean.
    """
    logits = _validate.rank(_validate.floating(logits, "logits"), "logits", 3, "(B, T, V)")
    tokens = _validate.token_ids(tokens, "tokens")
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits: expected (B, T) = {tuple(tokens.shape)} like tokens, got "
                         f"shape {tuple(logits.shape)}")
    if tokens.shape[1] < 2:
        raise ValueError("tokens: expected at least 2 positions (one input, one next token)")
    predictions = logits[:, :-1]  # (B, T - 1, V): positions that have a next token
    targets = tokens[:, 1:]  # (B, T - 1)
    return F.cross_entropy(predictions.flatten(0, 1), targets.flatten(),
                           ignore_index=IGNORE_INDEX if ignore_index is None else ignore_index)


def mask_tokens(
    tokens: torch.Tensor, *, mask_id: int, vocab_size: int, special_ids: Iterable[int] = (),
    mask_prob: float = 0.15, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption for masked language modelling (Devlin et al., 2019, section 3.1).

    Each token that is not special is selected with probability ``mask_prob``. A selected token
    becomes ``mask_id`` with probability 0.8, a random non-special token with probability 0.1,
    and stays as it is with probability 0.1. Returns ``(inputs, labels)``, both (B, T): the
    corrupted tokens, and the original token at selected positions and ``-100`` (ignored by
    ``F.cross_entropy``) elsewhere. ``tokens`` is not changed.
    """
    tokens = _validate.token_ids(tokens, "tokens")
    _validate.integer(mask_id, "mask_id")
    _validate.integer(vocab_size, "vocab_size", 1)
    if not 0.0 < mask_prob <= 1.0:
        raise ValueError(f"mask_prob: expected a probability in (0, 1], got {mask_prob!r}")
    special = torch.tensor(sorted(set(special_ids) | {mask_id}), dtype=tokens.dtype)
    ordinary = torch.tensor([i for i in range(vocab_size) if i not in set(special.tolist())])
    if not len(ordinary):
        raise ValueError("special_ids: every id of the vocabulary is special; nothing to draw")
    draw = torch.rand((2, *tokens.shape), generator=generator).to(tokens.device)  # (2, B, T)
    selected = (draw[0] < mask_prob) & ~torch.isin(tokens, special.to(tokens.device))
    labels = tokens.masked_fill(~selected, IGNORE_INDEX)
    replacement = ordinary[torch.randint(len(ordinary), tokens.shape, generator=generator)]
    inputs = torch.where(selected & (draw[1] < 0.8), mask_id, tokens)  # 80%: <mask>
    random_token = selected & (draw[1] >= 0.8) & (draw[1] < 0.9)  # 10%: a random token
    inputs = torch.where(random_token, replacement.to(tokens), inputs)  # 10%: unchanged
    return inputs, labels
