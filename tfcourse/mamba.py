"""Mamba: the selective SSM in a gated block, and a language model of such blocks (book: chapter 8).

Gu and Dao (2023), "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"
(arXiv:2312.00752), section 3.4 and Figure 3. A Mamba block (:class:`MambaMixer`) widens its
input E times into two branches: one goes through a short causal convolution, a SiLU and the
selective SSM of :mod:`tfcourse.ssm`, whose Δ, B and C are computed from that branch
(Algorithm 2); the other is a SiLU gate. Their product is projected back to the model width:

    x, z = in_proj(u)                               (B, T, Cᵢ) each
    x = SiLU(conv(x))                               causal, depthwise, K taps
    Δ = softplus(dt_proj(x W_Δ)),  B = x W_B,  C = x W_C       W_Δ of rank R
    y = SSM(A, D)(x; Δ, B, C) ⊙ SiLU(z)
    out = out_proj(y)

Training scans all positions at once (:func:`tfcourse.ssm.selective_scan_parallel`). Decoding
runs one position at a time (:meth:`MambaMixer.step`) with a state of fixed size, the last K − 1
inputs of the convolution and the SSM state (:class:`MambaState`), however long the text before:
nothing like a KV cache grows. There is no attention and no positional embedding; the block is
both the token mixer and the channel mixer, so a Mamba layer has no separate feed-forward network.

Glossary (the paper's symbols in brackets): B batch, T positions [L], C model width [D],
E expansion [E = 2], Cᵢ = E·C inner width [ED] (``d_inner``), N state size [N = 16], R rank of
Δ's projection [dt_rank = ⌈C/16⌉], K taps of the causal convolution [d_conv = 4], V vocabulary
size. In shape tuples B and C stand for the batch and the width; in equations, for the SSM's
matrices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate
from tfcourse.embeddings import TokenEmbedding
from tfcourse.norms import RMSNorm
from tfcourse.ssm import selective_scan_parallel, selective_scan_sequential, selective_scan_step

SCANS = {"parallel": selective_scan_parallel, "sequential": selective_scan_sequential}


@dataclass
class MambaState:
    """What a :class:`MambaMixer` keeps between decoding steps: ``conv`` (B, Cᵢ, K − 1), the last
    K − 1 inputs of its convolution, oldest first, and ``ssm`` (B, Cᵢ, N), the state h of the
    SSM (float32). Neither grows with the number of positions read."""

    conv: torch.Tensor
    ssm: torch.Tensor


class MambaMixer(nn.Module):
    """The Mamba block of Figure 3 around a selective SSM: (B, T, C) → (B, T, C), causal.

    ``d_state`` N, ``d_conv`` K, ``expand`` E and ``dt_rank`` R (default ⌈C/16⌉) as in the
    paper. Initialisation (section 3.6 and the released code): A = −exp(A_log) with
    A_log = log(1 … N) in every channel (S4D-real, A = −(1 … N)), D = 1, and Δ's bias set so that
    softplus(bias), the step size for a zero input, is log-uniform in [``dt_min``, ``dt_max``] =
    [0.001, 0.1] over the channels: some channels start with long memories, some short.

    ``inner_norms`` adds the RMSNorms that Jamba puts inside its Mamba layers (Lieber et al.,
    2024, section 6.4, "added RMSNorm to internal activations" against loss spikes at scale; in
    its released code they act on the three outputs of x_proj): on the rank-R input of
    dt_proj, on B and on C, each with a learned gain.

    ``selective=False`` is the time-invariant variant, an S4D-like SSM in the same block: Δ (one
    per channel, from the same bias initialisation), B and C (N,) are parameters, the same at
    every position, so the SSM cannot choose what to keep or forget from the token it reads.
    ``scan`` is ``"parallel"`` or ``"sequential"``, the two scans of :mod:`tfcourse.ssm`.
    """

    def __init__(
        self, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: int = 2,
        dt_rank: int | None = None, dt_min: float = 0.001, dt_max: float = 0.1,
        inner_norms: bool = False, selective: bool = True, scan: str = "parallel",
    ) -> None:
        super().__init__()
        self.d_model = _validate.integer(d_model, "d_model", 1)
        self.d_state = _validate.integer(d_state, "d_state", 1)
        self.d_conv = _validate.integer(d_conv, "d_conv", 1)
        self.d_inner = _validate.integer(expand, "expand", 1) * d_model
        self.dt_rank = (math.ceil(d_model / 16) if dt_rank is None
                        else _validate.integer(dt_rank, "dt_rank", 1))
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min!r}, "
                             f"{dt_max!r}")
        if scan not in SCANS:
            raise ValueError(f"scan: expected one of {list(SCANS)}, got {scan!r}")
        if inner_norms and not selective:
            raise ValueError("inner_norms: the norms act on x_proj's outputs, which a mixer with "
                             "selective=False does not have")
        self.selective, self.inner_norms, self.scan = selective, inner_norms, scan
        Ci, N, R = self.d_inner, d_state, self.dt_rank
        self.in_proj = nn.Linear(d_model, 2 * Ci, bias=False)  # the SSM branch x and the gate z
        self.conv = nn.Conv1d(Ci, Ci, d_conv, groups=Ci)  # depthwise: weight (Cᵢ, 1, K)
        # step sizes log-uniform in [dt_min, dt_max]; the bias is softplus⁻¹(dt) = log(e^dt − 1)
        dt = torch.exp(torch.rand(Ci) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt_bias = torch.log(torch.expm1(dt))  # (Cᵢ,)
        if selective:
            self.x_proj = nn.Linear(Ci, R + 2 * N, bias=False)  # Δ's rank-R input, B, C
            self.dt_proj = nn.Linear(R, Ci)
            nn.init.uniform_(self.dt_proj.weight, -R**-0.5, R**-0.5)
            with torch.no_grad():
                self.dt_proj.bias.copy_(dt_bias)
            if inner_norms:
                self.dt_norm, self.B_norm, self.C_norm = RMSNorm(R), RMSNorm(N), RMSNorm(N)
        else:
            self.dt_bias = nn.Parameter(dt_bias)  # Δ = softplus(dt_bias), the same everywhere
            self.B = nn.Parameter(torch.ones(N))
            self.C = nn.Parameter(torch.randn(N))
        # A = −exp(A_log) < 0 whatever A_log learns, so exp(ΔA) < 1: the state always decays
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32))
                                  .repeat(Ci, 1))  # (Cᵢ, N)
        self.D = nn.Parameter(torch.ones(Ci))
        self.out_proj = nn.Linear(Ci, d_model, bias=False)

    @property
    def A(self) -> torch.Tensor:
        """A = −exp(A_log), (Cᵢ, N), in float32 at least."""
        return -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))

    def ssm_parameters(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Δ (..., Cᵢ), B and C (..., N) for the SSM input ``x`` (..., Cᵢ), the output of the
        convolution and SiLU, with any leading dimensions: (B, T) in :meth:`forward`, (B,) in
        :meth:`step`.

        Selective: s_B(x) = x W_B, s_C(x) = x W_C and Δ = softplus(dt_proj(x W_Δ)) (Algorithm 2,
        with Δ's projection of rank R); the softplus keeps every step size positive.
        ``selective=False``: the parameters, broadcast to the leading dimensions of ``x``.
        """
        if not self.selective:
            lead = x.shape[:-1]
            delta = F.softplus(self.dt_bias)  # (Cᵢ,)
            return (delta.expand(*lead, self.d_inner), self.B.expand(*lead, self.d_state),
                    self.C.expand(*lead, self.d_state))
        N = self.d_state
        dt, B, C = self.x_proj(x).split([self.dt_rank, N, N], dim=-1)  # (..., R), (..., N) × 2
        if self.inner_norms:
            dt, B, C = self.dt_norm(dt), self.B_norm(B), self.C_norm(C)
        return F.softplus(self.dt_proj(dt)), B, C  # Δ = softplus(dt_proj(x W_Δ)) > 0

    def _check_input(self, x: object, name: str, layout: str) -> torch.Tensor:
        x = _validate.rank(_validate.floating(x, name), name, layout.count(",") + 1, layout)
        _validate.size(x, name, -1, self.d_model, "C, the model width")
        return x

    def forward(
        self, x: torch.Tensor, *, return_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, MambaState]:
        """(B, T, C) → (B, T, C); with ``return_state`` also the :class:`MambaState` after the
        last position, from which :meth:`step` continues (a prompt is read this way, in
        parallel, before decoding)."""
        x = self._check_input(x, "x", "(B, T, C)")
        K = self.d_conv
        u, z = self.in_proj(x).chunk(2, dim=-1)  # (B, T, Cᵢ) each
        window = F.pad(u.transpose(1, 2), (K - 1, 0))  # (B, Cᵢ, K − 1 + T): left padding only
        u = F.silu(self.conv(window)).transpose(1, 2)  # (B, Cᵢ, T) -> (B, T, Cᵢ)
        delta, B, C = self.ssm_parameters(u)
        y, h = SCANS[self.scan](u, delta, self.A, B, C, self.D, return_last_state=True)
        out = self.out_proj(y * F.silu(z))  # the gate, then back to width C
        if not return_state:
            return out
        return out, MambaState(conv=window[..., window.shape[-1] - (K - 1):], ssm=h)

    def new_state(
        self, batch_size: int, device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> MambaState:
        """The state before the first position: zeros, the convolution window in ``dtype``
        (default: the weights' dtype), the SSM state in float32 at least; on ``device`` (default:
        the weights' device)."""
        _validate.integer(batch_size, "batch_size", 1)
        weight = self.in_proj.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        return MambaState(
            conv=torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            ssm=torch.zeros(batch_size, self.d_inner, self.d_state, device=device,
                            dtype=torch.promote_types(dtype, torch.float32)))

    def step(self, x_t: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        """One position: ``x_t`` (B, C) and the state after the previous position → (y_t (B, C),
        the new state). Stepping through x[:, 0], x[:, 1], … from :meth:`new_state` gives the
        outputs of :meth:`forward` at every position; the work per step does not depend on the
        position."""
        x_t = self._check_input(x_t, "x_t", "(B, C)")
        if not isinstance(state, MambaState):
            raise TypeError(f"state: expected a MambaState, got {type(state).__name__}")
        batch = x_t.shape[0]
        for name, t, shape in (("state.conv", state.conv, (batch, self.d_inner, self.d_conv - 1)),
                               ("state.ssm", state.ssm, (batch, self.d_inner, self.d_state))):
            if tuple(t.shape) != shape:
                raise ValueError(f"{name}: expected shape {shape} for a batch of {batch}, got "
                                 f"{tuple(t.shape)}")
        u, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, Cᵢ) each
        window = torch.cat([state.conv, u[..., None]], dim=-1)  # (B, Cᵢ, K): the last K inputs
        # the convolution at one position: Conv1d correlates, so weight[..., K − 1] meets u_t
        u = F.silu((window * self.conv.weight[:, 0]).sum(-1) + self.conv.bias)  # (B, Cᵢ)
        delta, B, C = self.ssm_parameters(u)
        y, h = selective_scan_step(u, delta, self.A, B, C, self.D, state.ssm)
        return self.out_proj(y * F.silu(z)), MambaState(conv=window[..., 1:], ssm=h)


class MambaBlock(nn.Module):
    """x + Mixer(RMSNorm(x)): a pre-norm residual layer around a :class:`MambaMixer`, as in the
    paper's language models; ``mixer_kwargs`` go to the mixer."""

    def __init__(self, d_model: int, **mixer_kwargs: object) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.mixer = MambaMixer(d_model, **mixer_kwargs)

    def forward(
        self, x: torch.Tensor, *, return_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, MambaState]:
        if not return_state:
            return x + self.mixer(self.norm(x))
        y, state = self.mixer(self.norm(x), return_state=True)
        return x + y, state

    def step(self, x_t: torch.Tensor, state: MambaState) -> tuple[torch.Tensor, MambaState]:
        y, state = self.mixer.step(self.norm(x_t), state)
        return x_t + y, state


class MambaLM(nn.Module):
    """A language model of L :class:`MambaBlock`: tokens (B, T) → next-token logits (B, T, V).

    Token embeddings (:class:`tfcourse.embeddings.TokenEmbedding`), the blocks, a final RMSNorm
    and an output layer tied to the embeddings. No positional embedding: the convolutions and
    the recurrence know the order. ``mixer_kwargs`` (``d_conv``, ``expand``, ``dt_rank``,
    ``inner_norms``, ``selective``, ``scan``, …) go to every :class:`MambaMixer`.
    """

    def __init__(self, vocab_size: int, *, d_model: int = 64, num_layers: int = 2,
                 d_state: int = 16, **mixer_kwargs: object) -> None:
        super().__init__()
        _validate.integer(vocab_size, "vocab_size", 1)
        _validate.integer(num_layers, "num_layers", 1)
        self.embed = TokenEmbedding(vocab_size, d_model)  # the table of chapter 3's models
        self.blocks = nn.ModuleList(MambaBlock(d_model, d_state=d_state, **mixer_kwargs)
                                    for _ in range(num_layers))
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.embed.weight  # (V, C)

    def forward(
        self, tokens: torch.Tensor, *, return_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[MambaState]]:
        """Logits (B, T, V); with ``return_state`` also every layer's state after the last
        position, for :meth:`step`."""
        x = self.embed(_validate.token_ids(tokens, "tokens"))  # (B, T, C)
        states = []
        for block in self.blocks:
            if return_state:
                x, state = block(x, return_state=True)
                states.append(state)
            else:
                x = block(x)
        logits = self.head(self.norm(x))
        return (logits, states) if return_state else logits

    def new_state(self, batch_size: int, device: torch.device | str | None = None,
                  dtype: torch.dtype | None = None) -> list[MambaState]:
        """Every layer's state before the first token (see :meth:`MambaMixer.new_state`)."""
        return [block.mixer.new_state(batch_size, device, dtype) for block in self.blocks]

    def step(
        self, token: torch.Tensor, state: list[MambaState]
    ) -> tuple[torch.Tensor, list[MambaState]]:
        """One token per sequence, ``token`` (B,) ids, and the layers' states → (logits (B, V)
        for the next token, the new states)."""
        token = _validate.tensor(token, "token")
        if token.ndim != 1:
            raise ValueError(f"token: expected 1 dimension (B,) token ids, got shape "
                             f"{tuple(token.shape)}")
        if not isinstance(state, list | tuple) or len(state) != len(self.blocks):
            raise ValueError(f"state: expected a list of {len(self.blocks)} MambaState (one per "
                             f"layer), got {type(state).__name__}")
        x = self.embed(token)  # (B, C)
        new_state = []
        for block, layer_state in zip(self.blocks, state, strict=True):
            x, layer_state = block.step(x, layer_state)
            new_state.append(layer_state)
        return self.head(self.norm(x)), new_state

    @torch.no_grad()
    def generate(
        self, prompt: torch.Tensor, max_new_tokens: int, *, greedy: bool = False,
        temperature: float = 1.0, top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue ``prompt`` (B, T0) by ``max_new_tokens`` tokens: (B, T0 + max_new_tokens).

        The prompt is read in parallel (:meth:`forward` with ``return_state``), then each new
        token is one :meth:`step` from the fixed-size state: memory does not grow with the
        number of tokens generated. Each token is the most probable one (``greedy``) or drawn
        from the softmax of the logits divided by ``temperature``, restricted to the ``top_k``
        most probable, as :meth:`tfcourse.DecoderOnlyLM.generate` does. Runs in eval mode.
        """
        prompt = _validate.token_ids(prompt, "prompt")
        _validate.integer(max_new_tokens, "max_new_tokens", 1)
        if not temperature > 0:
            raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
        if top_k is not None:
            _validate.integer(top_k, "top_k", 1)
        was_training = self.training
        self.eval()
        logits, state = self(prompt, return_state=True)
        logits = logits[:, -1]  # (B, V): the next token's
        new_tokens = []
        for i in range(max_new_tokens):
            logits = logits.float()
            if greedy:
                token = logits.argmax(-1)  # (B,)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                token = torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]
            new_tokens.append(token)
            if i + 1 < max_new_tokens:
                logits, state = self.step(token, state)
        self.train(was_training)
        return torch.cat([prompt, torch.stack(new_tokens, dim=1)], dim=1)
