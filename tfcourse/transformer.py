"""The encoder-decoder Transformer of Vaswani et al. (2017) (book: chapter 2).

Glossary: B batch, S source positions, T target positions, C = d_model, H heads, F = d_ff (the
feed-forward width), V vocabulary size, L layers. Masks are boolean, True = may attend
(:mod:`tfcourse.masks`).

Each sublayer is wrapped in a residual connection and a LayerNorm, placed as ``norm_first`` says
(chapter 2, Eq. 3.2):

* post-LN (``norm_first=False``, the paper's): ``x = norm(x + sublayer(x))``;
* pre-LN (``norm_first=True``, Xiong et al., 2020): ``x = x + sublayer(norm(x))``.

Like ``nn.Transformer``, each stack ends with one more LayerNorm; for pre-LN it is needed (the
residual path is never normalised otherwise), for post-LN it makes the stacks equal
``nn.Transformer`` loaded with the same weights (:meth:`Transformer.load_core_from_torch`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tfcourse import _validate
from tfcourse.attention import MultiHeadAttention
from tfcourse.embeddings import SinusoidalPositionalEncoding, TokenEmbedding
from tfcourse.feedforward import FeedForward
from tfcourse.kv_cache import LayerCache, cache_length, new_cache


def shift_right(tgt: torch.Tensor, bos_id: int) -> torch.Tensor:
    """(B, T) -> (B, T): ``bos_id``, then ``tgt[:, :-1]``: the decoder's input in teacher forcing
    (chapter 2, section 7), so that position t sees the target tokens before t only."""
    tgt = _validate.rank(tgt, "tgt", 2, "(B, T) token ids")
    _validate.integer(bos_id, "bos_id")
    bos = tgt.new_full((tgt.shape[0], 1), bos_id)  # (B, 1)
    return torch.cat([bos, tgt[:, :-1]], dim=1)  # (B, 1) + (B, T - 1) -> (B, T)


class EncoderLayer(nn.Module):
    """Self-attention, then the feed-forward network, each with a residual and a LayerNorm
    (Vaswani et al., 2017, section 3.1). (B, S, C) -> (B, S, C)."""

    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, *, dropout: float = 0.0,
        norm_first: bool = False, activation: str = "relu",
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm1 = nn.LayerNorm(d_model)  # around the self-attention
        self.norm2 = nn.LayerNorm(d_model)  # around the feed-forward network
        self.dropout = nn.Dropout(dropout)  # on each sublayer's output (section 5.4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``mask`` broadcasts to (B, H, S, S), for example a (B, 1, 1, S) padding mask."""
        if self.norm_first:
            x = x + self.dropout(self.self_attn(self.norm1(x), mask=mask))
            return x + self.dropout(self.feed_forward(self.norm2(x)))
        x = self.norm1(x + self.dropout(self.self_attn(x, mask=mask)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder's output (the *memory*), then the
    feed-forward network (Vaswani et al., 2017, section 3.1). (B, T, C) -> (B, T, C).

    With ``cross_attention=False`` it is the layer of a decoder-only language model (chapter 3):
    no memory, no ``cross_attn`` and no ``norm2``.
    """

    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, *, dropout: float = 0.0,
        norm_first: bool = False, activation: str = "relu", cross_attention: bool = True,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_model)  # around the self-attention
        self.cross_attn = (MultiHeadAttention(d_model, num_heads, dropout=dropout)
                           if cross_attention else None)
        self.norm2 = nn.LayerNorm(d_model) if cross_attention else None  # around cross_attn
        self.feed_forward = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm3 = nn.LayerNorm(d_model)  # around the feed-forward network
        self.dropout = nn.Dropout(dropout)

    def _check_memory(self, memory: torch.Tensor | None) -> None:
        if self.cross_attn is not None and memory is None:
            raise ValueError("memory: expected the encoder output (B, S, C), got None")
        if self.cross_attn is None and memory is not None:
            raise ValueError("memory: this layer has no cross-attention (cross_attention=False); "
                             "pass memory=None")

    def _sublayer(
        self, x: torch.Tensor, norm: nn.LayerNorm, sublayer: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    def _attend(self, x: torch.Tensor, cache: LayerCache | None) -> torch.Tensor:
        """The self-attention sublayer; returns the input of the cross-attention sublayer."""
        self_cache = cache.self_attn if cache is not None else None
        return self._sublayer(
            x, self.norm1, lambda h: self.self_attn(h, is_causal=True, cache=self_cache))

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None, *, cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """``memory`` (B, S, C); ``memory_mask`` broadcasts to (B, H, T, S), for example the
        (B, 1, 1, S) padding mask of the source. With a ``cache``, ``x`` holds the newest
        positions only and the keys and values of earlier ones come from the cache."""
        self._check_memory(memory)
        x = self._attend(x, cache)
        if self.cross_attn is not None:
            cross_cache = cache.cross_attn if cache is not None else None
            x = self._sublayer(x, self.norm2, lambda h: self.cross_attn(
                h, memory, memory, mask=memory_mask, cache=cross_cache))  # Q: x; K, V: memory
        return self._sublayer(x, self.norm3, self.feed_forward)

    @torch.no_grad()
    def cross_attention_weights(
        self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The (B, H, T, S) weights of the cross-attention, for plots (chapter 2, section 10)."""
        if self.cross_attn is None:
            raise ValueError("this layer has no cross-attention (cross_attention=False)")
        self._check_memory(memory)
        h = self._attend(x, None)
        query = self.norm2(h) if self.norm_first else h
        return self.cross_attn.attention_weights(query, memory, mask=memory_mask)


def _check_embedded(x: object, name: str, d_model: int) -> torch.Tensor:
    x = _validate.rank(_validate.floating(x, name), name, 3, "(B, T, C)")
    _validate.size(x, name, -1, d_model, "C = d_model")
    return x


class Encoder(nn.Module):
    """L :class:`EncoderLayer` and a final LayerNorm. (B, S, C) -> (B, S, C)."""

    def __init__(
        self, num_layers: int, d_model: int, num_heads: int, d_ff: int, *, dropout: float = 0.0,
        norm_first: bool = False, activation: str = "relu",
    ) -> None:
        super().__init__()
        _validate.integer(num_layers, "num_layers", 1)
        self.d_model = d_model
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout=dropout, norm_first=norm_first,
                         activation=activation) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = _check_embedded(x, "x", self.d_model)
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class Decoder(nn.Module):
    """L :class:`DecoderLayer` and a final LayerNorm. (B, T, C) -> (B, T, C)."""

    def __init__(
        self, num_layers: int, d_model: int, num_heads: int, d_ff: int, *, dropout: float = 0.0,
        norm_first: bool = False, activation: str = "relu", cross_attention: bool = True,
    ) -> None:
        super().__init__()
        _validate.integer(num_layers, "num_layers", 1)
        self.d_model = d_model
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, d_ff, dropout=dropout, norm_first=norm_first,
                         activation=activation, cross_attention=cross_attention)
            for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def new_cache(self) -> list[LayerCache]:
        """An empty KV cache for :meth:`forward`, one entry per layer."""
        return new_cache(len(self.layers))

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None, *, cache: list[LayerCache] | None = None,
    ) -> torch.Tensor:
        x = _check_embedded(x, "x", self.d_model)
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(f"cache: expected {len(self.layers)} layer caches (new_cache()), "
                             f"got {len(cache)}")
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, memory_mask, cache=cache[i] if cache is not None else None)
        return self.norm(x)

    @torch.no_grad()
    def cross_attention_weights(
        self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
        layer: int = -1,
    ) -> torch.Tensor:
        """The (B, H, T, S) cross-attention weights of layer ``layer`` (the last by default)."""
        index = range(len(self.layers))[layer]  # IndexError for a layer that does not exist
        for earlier in self.layers[:index]:
            x = earlier(x, memory, memory_mask)
        return self.layers[index].cross_attention_weights(x, memory, memory_mask)


class Transformer(nn.Module):
    r"""The encoder-decoder of Vaswani et al. (2017): token embeddings scaled by
    :math:`\sqrt{C}` plus sinusoidal positions on both sides, an :class:`Encoder`, a
    :class:`Decoder`, and a linear layer to the target vocabulary.

    ``src`` (B, S) and ``tgt_in`` (B, T) are token ids; ``pad_id`` marks padding in ``src``,
    which no position attends to. ``tie_weights`` shares the target embedding table with the
    output layer (Press and Wolf, 2017; the paper's section 3.4).
    """

    def __init__(
        self, src_vocab_size: int, tgt_vocab_size: int, *, d_model: int = 512,
        num_heads: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
        d_ff: int = 2048, dropout: float = 0.1, norm_first: bool = False, pad_id: int = 0,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        self.pad_id = _validate.integer(pad_id, "pad_id")
        self.src_embed = TokenEmbedding(src_vocab_size, d_model)
        self.tgt_embed = TokenEmbedding(tgt_vocab_size, d_model)
        self.positions = SinusoidalPositionalEncoding(d_model)
        self.dropout = nn.Dropout(dropout)  # on the sums of embeddings and positions
        layers = dict(d_model=d_model, num_heads=num_heads, d_ff=d_ff, dropout=dropout,
                      norm_first=norm_first)
        self.encoder = Encoder(num_encoder_layers, **layers)
        self.decoder = Decoder(num_decoder_layers, **layers)
        self.head = nn.Linear(d_model, tgt_vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.tgt_embed.weight  # (V, C): one table, two uses

    def source_mask(self, src: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, S) boolean mask, False at the padded source positions."""
        return (_validate.token_ids(src, "src") != self.pad_id)[:, None, None, :]

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """Source ids (B, S) -> memory (B, S, C)."""
        x = self.dropout(self.positions(self.src_embed(_validate.token_ids(src, "src"))))
        return self.encoder(x, self.source_mask(src))

    def _embed_target(self, tgt_in: torch.Tensor, offset: int = 0) -> torch.Tensor:
        tgt_in = _validate.token_ids(tgt_in, "tgt_in")
        return self.dropout(self.positions(self.tgt_embed(tgt_in), offset))  # (B, T, C)

    def decode(
        self, tgt_in: torch.Tensor, memory: torch.Tensor, src: torch.Tensor, *,
        cache: list[LayerCache] | None = None,
    ) -> torch.Tensor:
        """Decoder input ids (B, T) and memory (B, S, C) -> logits (B, T, V). With a ``cache``,
        ``tgt_in`` holds the newest tokens only, at the positions after those cached."""
        x = self._embed_target(tgt_in, cache_length(cache))
        return self.head(self.decoder(x, memory, self.source_mask(src), cache=cache))

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (B, T, V) for every position of ``tgt_in`` at once."""
        return self.decode(tgt_in, self.encode(src), src)

    @torch.no_grad()
    def greedy_decode(
        self, src: torch.Tensor, *, bos_id: int, eos_id: int, max_len: int
    ) -> torch.Tensor:
        """Generate up to ``max_len`` tokens (B, <= max_len), each the most probable given the
        ones before, with a KV cache; a row that has produced ``eos_id`` continues with
        ``pad_id``, and decoding stops when every row has."""
        _validate.integer(max_len, "max_len", 1)
        memory = self.encode(src)
        cache = self.decoder.new_cache()
        token = src.new_full((src.shape[0], 1), bos_id)  # (B, 1)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        out = []
        for _ in range(max_len):
            logits = self.decode(token, memory, src, cache=cache)[:, -1]  # (B, V)
            token = logits.argmax(-1, keepdim=True).masked_fill(done[:, None], self.pad_id)
            out.append(token)
            done |= token[:, 0] == eos_id
            if done.all():
                break
        return torch.cat(out, dim=1)  # (B, steps)

    @torch.no_grad()
    def cross_attention_weights(
        self, src: torch.Tensor, tgt_in: torch.Tensor, layer: int = -1
    ) -> torch.Tensor:
        """The (B, H, T, S) cross-attention weights of decoder layer ``layer``."""
        return self.decoder.cross_attention_weights(
            self._embed_target(tgt_in), self.encode(src), self.source_mask(src), layer)

    @torch.no_grad()
    def load_core_from_torch(self, reference: nn.Transformer) -> Transformer:
        """Copy the weights of an ``nn.Transformer`` (``batch_first=True``, ReLU, the same sizes
        and ``norm_first``) into :attr:`encoder` and :attr:`decoder`. Returns ``self``."""
        if not isinstance(reference, nn.Transformer):
            raise TypeError(f"reference: expected nn.Transformer, got {type(reference).__name__}")
        pairs = ((self.encoder, reference.encoder), (self.decoder, reference.decoder))
        for ours, theirs in pairs:
            if len(ours.layers) != len(theirs.layers):
                raise ValueError(f"reference: expected {len(ours.layers)} layers per stack like "
                                 f"this model, got {len(theirs.layers)}")
            for layer, ref in zip(ours.layers, theirs.layers, strict=True):
                if ref.norm_first != layer.norm_first:
                    raise ValueError(f"reference: norm_first={ref.norm_first}, this model has "
                                     f"norm_first={layer.norm_first}")
                layer.self_attn.load_from_torch(ref.self_attn)
                if isinstance(layer, DecoderLayer):
                    layer.cross_attn.load_from_torch(ref.multihead_attn)
                    layer.norm3.load_state_dict(ref.norm3.state_dict())
                layer.feed_forward.linear1.load_state_dict(ref.linear1.state_dict())
                layer.feed_forward.linear2.load_state_dict(ref.linear2.state_dict())
                layer.norm1.load_state_dict(ref.norm1.state_dict())
                layer.norm2.load_state_dict(ref.norm2.state_dict())
            ours.norm.load_state_dict(theirs.norm.state_dict())
        return self
