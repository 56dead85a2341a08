"""Hyena: long implicit convolutions interleaved with data-controlled gates (book: chapter 7).

Poli et al. (2023), "Hyena Hierarchy: Towards Larger Convolutional Language Models"
(arXiv:2302.10866). A Hyena operator of order N projects its input into N + 1 sequences
v, x¹ … x^N and alternates a long causal convolution with an element-wise gate (section 3.1):

    z¹ = v,   z^{n+1}_t = x^n_t · (h^n ∗ z^n)_t   (n = 1 … N),   y = z^{N+1}

Each filter h^n is as long as the sequence; a small network generates it from the positions
(section 3.2), so its parameter count does not grow with the length. A convolution over T
positions done directly costs O(T²); through the FFT it costs O(T log T) (section 3.3): Hyena is
sub-quadratic, not linear.

Glossary (the paper's symbols in brackets): B batch, T positions [L], C width [D], N order of the
operator [N], E positional features of the filter network, F hidden width of the filter
network. Convolutions take channels-first tensors (B, C, T), as ``torch.nn.Conv1d`` does; the
modules take and return (B, T, C) like every other layer of the course.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate
from tfcourse.embeddings import TokenEmbedding


def _signal_and_filter(u: object, k: object) -> tuple[torch.Tensor, torch.Tensor]:
    u = _validate.rank(_validate.floating(u, "u"), "u", 3, "(B, C, T)")
    k = _validate.rank(_validate.floating(k, "k"), "k", 2, "(C, T)")
    _validate.size(k, "k", 0, u.shape[1], "C, the channels of u")
    if k.shape[1] > u.shape[2]:
        raise ValueError(f"k: expected at most T = {u.shape[2]} taps (the length of u), got "
                         f"shape {tuple(k.shape)}")
    _validate.same_device("k", k, "u", u)
    return u, k


def direct_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The causal convolution y_t = Σ_{s=0..t} k_s u_{t−s}, summed term by term: O(T²).

    ``u`` (B, C, T), ``k`` (C, T') with T' ≤ T taps; returns (B, C, T). The readable reference
    that :func:`fft_causal_conv` must equal.
    """
    u, k = _signal_and_filter(u, k)
    T = u.shape[-1]
    y = torch.zeros_like(u)
    for s in range(k.shape[-1]):  # tap s reaches s positions back
        y[..., s:] += k[:, s, None] * u[..., : T - s]
    return y


def fft_causal_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal convolution by FFT in O(T log T): equal to :func:`direct_causal_conv`.

    ``u`` (B, C, T), ``k`` (C, T') with T' ≤ T taps; returns (B, C, T) in the dtype of ``u``.

    The FFT multiplies *circular* convolutions: with n = T points, the taps that reach back
    past position 0 wrap around to the end, and the output at t would read inputs after t.
    Zero-padding both to n = 2T makes the circular and the linear convolution equal on the first
    T outputs (the wrapped part lands in the padding), which are kept. ``rfft``/``irfft`` with
    the default normalisation divide by n once, in the inverse. Half-precision inputs are
    transformed in float32: CPU FFTs have no half kernels, and a length-T sum in half precision
    would lose most of its digits.
    """
    u, k = _signal_and_filter(u, k)
    T = u.shape[-1]
    n = 2 * T
    work = torch.promote_types(u.dtype, torch.float32)  # float32, or float64 for float64
    u_f = torch.fft.rfft(u.to(work), n=n)  # (B, C, n/2 + 1)
    k_f = torch.fft.rfft(k.to(work), n=n)  # (C, n/2 + 1)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :T]  # (B, C, T): drop the wrapped half
    return y.to(u.dtype)


class ShortConv(nn.Module):
    """A causal depthwise convolution with a few taps (default 3), applied to each projection
    before the long convolutions (section 3.3, the "short filter"): y_t = Σ_{s<K} w_s x_{t−s},
    where w_s is ``conv.weight[c, 0, K − 1 − s]`` (``nn.Conv1d`` correlates, it does not flip).

    Padding K − 1 on the left only keeps it causal: padding on both sides would let position t
    read t + 1. (B, C, T) → (B, C, T).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = _validate.integer(channels, "channels", 1)
        self.kernel_size = _validate.integer(kernel_size, "kernel_size", 1)
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _validate.rank(_validate.floating(x, "x"), "x", 3, "(B, C, T)")
        _validate.size(x, "x", 1, self.channels, "C, the channels")
        return self.conv(F.pad(x, (self.kernel_size - 1, 0)))  # left padding only


class Sin(nn.Module):
    """sin(ω ⊙ x) with a learned frequency ω per feature: the activation of the filter network
    (section 3.2, "implicit filters with high-frequency content need periodic activations")."""

    def __init__(self, width: int, frequency: float = 1.0) -> None:
        super().__init__()
        self.frequency = nn.Parameter(torch.full((width,), float(frequency)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.frequency * x)


def positional_features(T: int, num_features: int, max_len: int) -> torch.Tensor:
    """The filter network's input at each position t (section 3.2, Eq. 7): the position t/max_len
    and the real and imaginary parts of e^{−i f 2πt / max_len} for (E − 1) / 2 frequencies f.

    Returns (T, E). Features are computed on the grid of ``max_len``, so a shorter sequence gets
    the first T rows of the longer one's features: its filter is the prefix of the longer filter.
    """
    _validate.integer(T, "T", 1)
    _validate.integer(max_len, "max_len", T)
    if not isinstance(num_features, int) or num_features < 3 or num_features % 2 == 0:
        raise ValueError(f"num_features: expected an odd int >= 3 (the position, then pairs of "
                         f"cos and sin), got {num_features!r}")
    t = torch.arange(T, dtype=torch.float32)[:, None]  # (T, 1)
    bands = (num_features - 1) // 2
    f = torch.linspace(1e-4, bands - 1, bands)[None]  # (1, E')
    angle = 2 * math.pi * f * t / max_len  # (T, E')
    return torch.cat([t / max_len, torch.cos(angle), -torch.sin(angle)], dim=-1)  # (T, E)


class ImplicitFilter(nn.Module):
    """Long filters generated from positions (section 3.2, Eq. 7):

        h_t = Window(t) · FFN(PositionalEncoding(t)),   Window(t) = exp(−α_c t / max_len)

    One filter of ``max_len`` taps for each of the ``channels``; ``forward(T)`` returns the first
    T taps, (channels, T). FFN is Linear(E, F), Sin, (Linear(F, F), Sin) × (depth − 1),
    Linear(F, channels) without bias. The decay rates α_c are fixed and spread over the channels
    from slow (the window falls to ``target`` at t = ``slow_decay`` × max_len = 1.5 × max_len,
    past the end of the sequence) to fast (at ``fast_decay`` × max_len = 0.3 × max_len): some
    channels look far back, others only at the recent past.
    """

    def __init__(
        self, channels: int, max_len: int, *, num_features: int = 33, width: int = 64,
        depth: int = 2, frequency: float = 1.0, fast_decay: float = 0.3,
        slow_decay: float = 1.5, target: float = 1e-2,
    ) -> None:
        super().__init__()
        _validate.integer(channels, "channels", 1)
        self.max_len = _validate.integer(max_len, "max_len", 1)
        _validate.integer(width, "width", 1)
        _validate.integer(depth, "depth", 1)
        if not 0 < fast_decay <= slow_decay:
            raise ValueError(f"fast_decay, slow_decay: expected 0 < fast_decay <= slow_decay, "
                             f"got {fast_decay!r}, {slow_decay!r}")
        if not 0 < target < 1:
            raise ValueError(f"target: expected a number in (0, 1), got {target!r}")
        # z and alpha follow from the arguments: not saved, so filters of other lengths can load
        # each other's weights
        z = positional_features(max_len, num_features, max_len)  # (T, E)
        self.register_buffer("z", z, persistent=False)
        layers: list[nn.Module] = [nn.Linear(num_features, width), Sin(width, frequency)]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), Sin(width, frequency)]
        layers.append(nn.Linear(width, channels, bias=False))
        self.ffn = nn.Sequential(*layers)
        # the window exp(−α t / max_len) reaches `target` at t = decay × max_len
        decay = torch.linspace(fast_decay, slow_decay, channels)  # (channels,)
        self.register_buffer("alpha", -math.log(target) / decay, persistent=False)

    def window(self, T: int) -> torch.Tensor:
        """The decay window exp(−α_c t / max_len) of each channel: (channels, T)."""
        t = torch.arange(T, device=self.alpha.device, dtype=self.alpha.dtype) / self.max_len
        return torch.exp(-self.alpha[:, None] * t)

    def forward(self, T: int) -> torch.Tensor:
        _validate.integer(T, "T", 1)
        if T > self.max_len:
            raise ValueError(f"T: expected at most max_len = {self.max_len} positions, got {T}")
        h = self.ffn(self.z[:T]).transpose(0, 1)  # (T, channels) -> (channels, T)
        return h * self.window(T)


class HyenaOperator(nn.Module):
    """The Hyena operator of order N (section 3.1, Definition 3.1): (B, T, C) → (B, T, C),
    causal.

    One linear map gives N + 1 projections, each passed through a short causal convolution
    (:class:`ShortConv`); then z¹ = v and z^{n+1} = x^n ⊙ (h^n ∗ z^n + b^n ⊙ z^n) for
    n = 1 … N, with the long filters h^n from one :class:`ImplicitFilter` and a learned skip b^n
    per channel (the term that the released code adds inside its FFT convolution); y =
    out_proj(z^{N+1}). N = 2 is the paper's default for language.
    """

    def __init__(
        self, d_model: int, max_len: int, *, order: int = 2, short_kernel: int = 3,
        filter_width: int = 64, filter_features: int = 33, filter_depth: int = 2,
        filter_frequency: float = 1.0,
    ) -> None:
        super().__init__()
        self.d_model = _validate.integer(d_model, "d_model", 1)
        self.order = _validate.integer(order, "order", 1)
        self.max_len = _validate.integer(max_len, "max_len", 1)
        self.in_proj = nn.Linear(d_model, (order + 1) * d_model)
        self.short_conv = ShortConv((order + 1) * d_model, short_kernel)
        self.filter = ImplicitFilter(order * d_model, max_len, num_features=filter_features,
                                     width=filter_width, depth=filter_depth,
                                     frequency=filter_frequency)
        self.skip = nn.Parameter(torch.randn(order, d_model) * 0.02)  # b^n, (N, C)
        self.out_proj = nn.Linear(d_model, d_model)

    def filters(self, T: int) -> torch.Tensor:
        """The long filters h¹ … h^N over T positions: (N, C, T)."""
        return self.filter(T).view(self.order, self.d_model, T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _validate.rank(_validate.floating(x, "x"), "x", 3, "(B, T, C)")
        _validate.size(x, "x", 2, self.d_model, "C, the model width")
        B, T, C = x.shape
        if T > self.max_len:
            raise ValueError(f"x: expected at most max_len = {self.max_len} positions, got {T}")
        u = self.in_proj(x).transpose(1, 2)  # (B, (N+1)C, T)
        u = self.short_conv(u)
        v, *gates = u.split(C, dim=1)  # N + 1 tensors (B, C, T)
        h = self.filters(T)  # (N, C, T)
        z = v
        for n, gate in enumerate(gates):
            z = gate * (fft_causal_conv(z, h[n]) + self.skip[n, :, None] * z)  # (B, C, T)
        return self.out_proj(z.transpose(1, 2))  # (B, T, C)


class HyenaBlock(nn.Module):
    """A pre-LN block with a Hyena operator in place of attention (section 4.2):
    x ← x + Hyena(LN(x)), then x ← x + FFN(LN(x)) with a GELU feed-forward of width F."""

    def __init__(self, d_model: int, max_len: int, *, d_ff: int | None = None,
                 order: int = 2, dropout: float = 0.0, **operator_kwargs: object) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.mixer = HyenaOperator(d_model, max_len, order=order, **operator_kwargs)
        self.norm2 = nn.LayerNorm(d_model)
        d_ff = d_ff or 4 * d_model
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.mixer(self.norm1(x)))
        return x + self.dropout(self.ffn(self.norm2(x)))


class HyenaLM(nn.Module):
    """A causal language model of Hyena blocks: tokens (B, T) → next-token logits (B, T, V).

    Token embeddings (:class:`tfcourse.embeddings.TokenEmbedding`), L :class:`HyenaBlock`, a
    final LayerNorm and an output layer tied to the embeddings, as in chapter 3's
    :class:`tfcourse.DecoderOnlyLM`. No positional embedding: the filters and the short
    convolutions know the positions already.
    """

    def __init__(self, vocab_size: int, *, max_len: int, d_model: int = 64, num_layers: int = 2,
                 d_ff: int | None = None, order: int = 2, dropout: float = 0.0,
                 **operator_kwargs: object) -> None:
        super().__init__()
        _validate.integer(vocab_size, "vocab_size", 1)
        self.max_len = _validate.integer(max_len, "max_len", 1)
        _validate.integer(num_layers, "num_layers", 1)
        self.embed = TokenEmbedding(vocab_size, d_model)  # the table of chapter 3's models
        self.blocks = nn.ModuleList(
            HyenaBlock(d_model, max_len, d_ff=d_ff, order=order, dropout=dropout,
                       **operator_kwargs)
            for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.embed.weight  # (V, C)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = _validate.token_ids(tokens, "tokens")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"tokens: expected at most max_len = {self.max_len} positions, "
                             f"got {tokens.shape[1]}")
        x = self.embed(tokens)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))
