"""Jamba: attention and Mamba layers interleaved, with a mixture of experts (book: chapter 9).

Lieber et al. (2024), "Jamba: A Hybrid Transformer-Mamba Language Model" (arXiv:2403.19887).
Jamba stacks layers of two kinds: a few attention layers, which recall any earlier token exactly
but keep a key/value cache that grows with the context, and many Mamba layers (chapter 8), whose
state has a fixed size. Every layer is a pre-norm residual pair (section 2, Figure 1):

    x ← x + Mixer(RMSNorm(x)),   x ← x + FFN(RMSNorm(x))

where the mixer is attention or Mamba and the feed-forward network is a dense SwiGLU network or
a mixture of experts (:mod:`tfcourse.moe`). The paper's design parameters (section 2) map to
:class:`JambaConfig` as: l layers per Jamba block and the attention-to-Mamba ratio a : m, one
attention layer in every ``attn_layer_period`` = a + m layers; an MoE layer every e =
``expert_layer_period`` layers; n = ``num_experts`` experts, K = ``top_k`` of them per token.
The released Jamba-v0.1 (:data:`JAMBA_V0_1`) has 4 blocks of l = 8 layers with a : m = 1 : 7,
e = 2, n = 16, K = 2 (section 3.1).

Attention in Jamba has no positional encoding: the Mamba layers already carry order
(section 6.5), and the released code applies none. Its keys and values are shared by groups of
query heads (grouped-query attention; Ainslie et al., 2023, arXiv:2305.13245), which shrinks the
cache H/G times.

Glossary (the papers' symbols in brackets): B batch, T positions, C model width [d_model,
``hidden_size`` in the released configuration], H query heads, G key/value heads (groups of H/G
query heads), D head width C/H, F hidden width of a feed-forward network or expert
[``intermediate_size``], V vocabulary, L layers, X experts [n], k experts per token [K]. The
Mamba layers' inner width is ``expand`` · C and their state has ``d_state`` entries per channel
[N in the Mamba paper].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate
from tfcourse.attention import merge_heads, split_heads
from tfcourse.embeddings import TokenEmbedding
from tfcourse.mamba import MambaMixer
from tfcourse.moe import GatedFeedForward, MoEFeedForward, load_balancing_loss
from tfcourse.norms import RMSNorm


@dataclass(frozen=True)
class JambaConfig:
    """The sizes and the layer schedule of a Jamba model; the defaults make a tiny one.

    Layer i (counting from 0) is an attention layer when i % ``attn_layer_period`` ==
    ``attn_layer_offset`` and a Mamba layer otherwise; its feed-forward network is a mixture of
    experts when i % ``expert_layer_period`` == ``expert_layer_offset`` and a dense one
    otherwise (the rule of the released configuration: ``layers_block_type`` and
    ``layers_num_experts``). ``dt_rank`` None means ⌈C / 16⌉, Mamba's default. ``max_len`` is
    the longest input the model accepts (Jamba-v0.1: ``max_position_embeddings``); with no
    positional encoding, no weight depends on it.
    """

    vocab_size: int = 256
    d_model: int = 64
    num_layers: int = 8
    num_heads: int = 4
    num_kv_heads: int = 2
    d_ff: int = 128
    num_experts: int = 4
    top_k: int = 2
    attn_layer_period: int = 8
    attn_layer_offset: int = 4
    expert_layer_period: int = 2
    expert_layer_offset: int = 1
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    max_len: int = 1024
    rms_norm_eps: float = 1e-6
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "d_ff",
                     "num_experts", "top_k", "attn_layer_period", "expert_layer_period",
                     "d_state", "d_conv", "expand", "max_len"):
            _validate.integer(getattr(self, name), name, 1)
        for kind in ("attn", "expert"):
            period = getattr(self, f"{kind}_layer_period")
            offset = _validate.integer(getattr(self, f"{kind}_layer_offset"),
                                       f"{kind}_layer_offset")
            if offset >= period:
                raise ValueError(f"{kind}_layer_offset: expected an int below "
                                 f"{kind}_layer_period = {period} (the position of the layer "
                                 f"within each period), got {offset}")
        if self.dt_rank is not None:
            _validate.integer(self.dt_rank, "dt_rank", 1)
        if self.d_model % self.num_heads:
            raise ValueError(f"num_heads: expected a divisor of d_model = {self.d_model}, got "
                             f"{self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads: expected a divisor of num_heads = {self.num_heads} "
                             f"(each key/value head serves a group of query heads), got "
                             f"{self.num_kv_heads}")
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k: expected at most num_experts = {self.num_experts}, got "
                             f"{self.top_k}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps: expected a positive number, got {self.rms_norm_eps}")

    @property
    def head_dim(self) -> int:
        """D = C / H."""
        return self.d_model // self.num_heads

    def layer_types(self) -> list[str]:
        """``"attention"`` or ``"mamba"`` for each of the L layers."""
        return ["attention" if i % self.attn_layer_period == self.attn_layer_offset else "mamba"
                for i in range(self.num_layers)]

    def uses_experts(self) -> list[bool]:
        """For each of the L layers, whether its feed-forward network is a mixture of experts."""
        return [i % self.expert_layer_period == self.expert_layer_offset
                for i in range(self.num_layers)]


# Jamba-v0.1 as released: the paper's section 3.1 (4 blocks of 8 layers, a : m = 1 : 7, e = 2,
# n = 16, K = 2) and the released configuration (ai21labs/Jamba-v0.1 on the Hugging Face Hub,
# the defaults of ``JambaConfig`` in ``transformers``): hidden_size 4096, intermediate_size
# 14336, 32 attention heads, 8 key/value heads, attention layers at i % 8 == 4, experts at
# i % 2 == 1, mamba_d_state 16, mamba_d_conv 4, mamba_expand 2, mamba_dt_rank ⌈4096/16⌉ = 256,
# vocabulary 65536, max_position_embeddings 262144, untied embeddings. The paper's Table 1 gives
# 52B parameters of which 12B active; see :func:`parameter_counts`.
JAMBA_V0_1 = JambaConfig(
    vocab_size=65536, d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8, d_ff=14336,
    num_experts=16, top_k=2, attn_layer_period=8, attn_layer_offset=4, expert_layer_period=2,
    expert_layer_offset=1, d_state=16, d_conv=4, expand=2, dt_rank=256, max_len=262144,
    rms_norm_eps=1e-6, tie_embeddings=False,
)


def _check_config(config: object) -> JambaConfig:
    if not isinstance(config, JambaConfig):
        raise TypeError(f"config: expected a JambaConfig, got {type(config).__name__}")
    return config


def kv_cache_bytes(config: JambaConfig, context: int, batch: int = 1,
                   dtype_bytes: int = 2) -> int:
    """Bytes of the key/value cache of the attention layers after ``context`` tokens:

        2 · L_attention · G · D · context · batch · dtype_bytes

    (a key and a value of G heads of width D, per attention layer and token). It grows linearly
    with the context. The paper's Table 1 (KV cache at 256K = 262144 tokens, 16-bit): Jamba
    4GB, Mixtral and Mistral 32GB, Llama-2 7B 128GB; for :data:`JAMBA_V0_1` this gives
    2 · 4 · 8 · 128 · 262144 · 2 bytes = 4 GiB, and the same model with attention in all 32
    layers, Mixtral's shape, 32 GiB.
    """
    config = _check_config(config)
    _validate.integer(context, "context")
    _validate.integer(batch, "batch", 1)
    _validate.integer(dtype_bytes, "dtype_bytes", 1)
    attention_layers = config.layer_types().count("attention")
    per_token = 2 * attention_layers * config.num_kv_heads * config.head_dim  # K and V entries
    return per_token * context * batch * dtype_bytes


def mamba_state_bytes(config: JambaConfig, batch: int = 1, dtype_bytes: int = 2) -> int:
    """Bytes of the recurrent state of the Mamba layers, whatever the context:

        L_mamba · batch · expand · C · ((d_conv − 1) + d_state) · dtype_bytes

    Per layer and channel of the inner width expand · C, the state is the d_conv − 1 previous
    inputs of the causal convolution and the d_state entries of the SSM state h_t, as
    :class:`tfcourse.mamba.MambaState` holds them. (The released kernels keep a convolution
    window of d_conv inputs, one more; :class:`~tfcourse.mamba.MambaMixer` keeps h_t in float32
    even for 16-bit weights, which ``dtype_bytes`` = 4 counts.) For :data:`JAMBA_V0_1`:
    28 · 8192 · 19 · 2 bytes ≈ 8.3 MiB, as much as the KV cache of 532 tokens.
    """
    config = _check_config(config)
    _validate.integer(batch, "batch", 1)
    _validate.integer(dtype_bytes, "dtype_bytes", 1)
    mamba_layers = config.layer_types().count("mamba")
    per_channel = (config.d_conv - 1) + config.d_state
    return mamba_layers * batch * config.expand * config.d_model * per_channel * dtype_bytes


class GroupedQueryAttention(nn.Module):
    r"""Causal grouped-query attention without positional encoding, (B, T, C) -> (B, T, C)
    (Ainslie et al., 2023, section 2.2; Jamba's attention layers).

    H query heads, G ≤ H key/value heads; query head h attends with the keys and values of
    group ⌊h / (H/G)⌋:

    .. math:: \text{head}_h = \operatorname{softmax}\!\left(\frac{Q_h K_{g(h)}^\top}
              {\sqrt{D}} + M\right) V_{g(h)}

    with M the causal mask. G = H is multi-head attention, G = 1 multi-query attention. The
    projections have no biases, as in Jamba. The G key/value heads are repeated to H just
    before PyTorch's fused kernel (``scaled_dot_product_attention(is_causal=True)``): the copies
    live only during the call, and a cache of keys and values would keep G heads.
    """

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int) -> None:
        super().__init__()
        self.d_model = _validate.integer(d_model, "d_model", 1)
        self.num_heads = _validate.integer(num_heads, "num_heads", 1)
        self.num_kv_heads = _validate.integer(num_kv_heads, "num_kv_heads", 1)
        if d_model % num_heads:
            raise ValueError(f"num_heads: expected a divisor of d_model = {d_model}, got "
                             f"{num_heads}")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads: expected a divisor of num_heads = {num_heads}, got "
                             f"{num_kv_heads}")
        self.head_dim = d_model // num_heads
        kv_width = num_kv_heads * self.head_dim  # G · D
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, kv_width, bias=False)
        self.v_proj = nn.Linear(d_model, kv_width, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _validate.rank(_validate.floating(x, "x"), "x", 3, "(B, T, C)")
        _validate.size(x, "x", 2, self.d_model, "C, the model width")
        group = self.num_heads // self.num_kv_heads  # H / G query heads per K/V head
        q = split_heads(self.q_proj(x), self.num_heads)  # (B, H, T, D)
        k = split_heads(self.k_proj(x), self.num_kv_heads)  # (B, G, T, D)
        v = split_heads(self.v_proj(x), self.num_kv_heads)  # (B, G, T, D)
        # heads g·(H/G) … (g+1)·(H/G) − 1 share K/V head g
        k = k.repeat_interleave(group, dim=1)  # (B, H, T, D)
        v = v.repeat_interleave(group, dim=1)  # (B, H, T, D)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        return self.o_proj(merge_heads(out))  # (B, T, C)

    def extra_repr(self) -> str:
        return f"{self.d_model}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}"


class JambaLayer(nn.Module):
    """Layer ``index`` of a Jamba model, (B, T, C) -> (B, T, C) (section 2, Figure 1):

        x ← x + Mixer(RMSNorm(x)),   x ← x + FFN(RMSNorm(x))

    The mixer is :class:`GroupedQueryAttention` or :class:`tfcourse.mamba.MambaMixer` with
    RMSNorm inside (``inner_norms=True``: the paper's section 6.4 adds it to stabilise training
    at scale); the feed-forward network is a :class:`tfcourse.moe.MoEFeedForward` or a dense
    :class:`tfcourse.moe.GatedFeedForward`, as ``config`` schedules. (The paper's "Jamba block"
    is a group of l such layers.)
    """

    def __init__(self, config: JambaConfig, index: int) -> None:
        super().__init__()
        config = _check_config(config)
        _validate.integer(index, "index")
        if index >= config.num_layers:
            raise ValueError(f"index: expected a layer below num_layers = {config.num_layers}, "
                             f"got {index}")
        C = config.d_model
        self.kind = config.layer_types()[index]
        self.norm1 = RMSNorm(C, eps=config.rms_norm_eps)
        if self.kind == "attention":
            self.mixer = GroupedQueryAttention(C, config.num_heads, config.num_kv_heads)
        else:
            self.mixer = MambaMixer(C, d_state=config.d_state, d_conv=config.d_conv,
                                    expand=config.expand, dt_rank=config.dt_rank,
                                    inner_norms=True)
        self.norm2 = RMSNorm(C, eps=config.rms_norm_eps)
        if config.uses_experts()[index]:
            self.ffn = MoEFeedForward(C, config.d_ff, config.num_experts, config.top_k)
        else:
            self.ffn = GatedFeedForward(C, config.d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class JambaLM(nn.Module):
    """A Jamba language model: tokens (B, T) -> next-token logits (B, T, V).

    Token embeddings (:class:`tfcourse.embeddings.TokenEmbedding`, unscaled), the L
    :class:`JambaLayer` of ``config``, a final RMSNorm and an output layer, tied to the
    embeddings when ``config.tie_embeddings`` (Jamba-v0.1 does not tie them). No positional
    embedding. :meth:`aux_loss` gives the load-balancing loss of the last forward pass.
    """

    def __init__(self, config: JambaConfig) -> None:
        super().__init__()
        self.config = _check_config(config)
        self.embed = TokenEmbedding(config.vocab_size, config.d_model, scale=False)
        self.layers = nn.ModuleList(JambaLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.d_model, eps=config.rms_norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight  # (V, C)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = _validate.token_ids(tokens, "tokens")
        if tokens.shape[1] > self.config.max_len:
            raise ValueError(f"tokens: expected at most max_len = {self.config.max_len} "
                             f"positions, got {tokens.shape[1]}")
        x = self.embed(tokens)  # (B, T, C)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))  # (B, T, V)

    def aux_loss(self) -> torch.Tensor:
        """The load-balancing losses (:func:`tfcourse.moe.load_balancing_loss`) of the MoE
        layers in the last forward pass, summed: one per router, as in Switch Transformers.
        Training minimises ``next_token_loss + coefficient · aux_loss()``; Jamba-v0.1's
        coefficient is 0.001 (``router_aux_loss_coef``). (The released training code pools the
        router logits of all layers into one loss instead of summing per-layer losses.) Zero
        when the model has no MoE layer.
        """
        moe = [layer.ffn for layer in self.layers if isinstance(layer.ffn, MoEFeedForward)]
        if any(ffn.last_router_logits is None for ffn in moe):
            raise RuntimeError("aux_loss: no router logits yet; run the model forward first")
        total = torch.zeros((), device=self.embed.weight.device)
        for ffn in moe:
            total = total + load_balancing_loss(ffn.last_router_logits, ffn.top_k,
                                                ffn.num_experts)
        return total


def parameter_counts(config: JambaConfig) -> tuple[int, int]:
    """(total, active) parameters of ``JambaLM(config)``: all of them, and those one token
    uses, i.e. without the X − k experts it skips in each MoE layer. Counted on a model built on
    PyTorch's meta device, which has shapes and no storage, so the published configuration
    costs no memory. Jamba-v0.1 (paper, Table 1): 52B total, 12B active.
    """
    config = _check_config(config)
    with torch.device("meta"):
        model = JambaLM(config)
    total = sum(p.numel() for p in model.parameters())  # tied weights count once
    idle = 0
    for layer in model.layers:
        if isinstance(layer.ffn, MoEFeedForward):
            expert = sum(p.numel() for p in layer.ffn.experts[0].parameters())
            idle += (config.num_experts - config.top_k) * expert
    return total, total - idle

