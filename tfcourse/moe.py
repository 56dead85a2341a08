r"""The mixture-of-experts feed-forward layer (book: chapter 9, Jamba).

A mixture of experts keeps X feed-forward networks (the experts) and a router, a linear map that
scores the experts for each token; each token goes to its k best-scored experts only, and its
output is their outputs, weighted (Shazeer et al., 2017, "Outrageously Large Neural Networks",
arXiv:1701.06538, section 2, Eq. 1):

.. math:: y(x) = \sum_{i \in \operatorname{TopK}(x W_r,\, k)} w_i(x)\, E_i(x)

Jamba (Lieber et al., 2024, arXiv:2403.19887) weighs each chosen expert by its router
probability p(x) = softmax(x W_r), taken over all X experts; Mixtral (Jiang et al., 2024,
arXiv:2401.04088, section 2.1) by a softmax over the k chosen logits only (see
:class:`MoEFeedForward`). The layer holds X times the parameters of one feed-forward network but
spends the compute of k of them per token. Left alone, a router tends to send most tokens to a
few experts, which then get all the training; the auxiliary loss of :func:`load_balancing_loss`
(Fedus et al., 2022, "Switch Transformers", arXiv:2101.03961, section 2.2, Eqs. 4–6) pushes it to
spread them.

Glossary (the papers' symbols in brackets): B batch, T positions, C model width [d_model],
F hidden width of one expert [d_ff], X experts [n in Jamba, N in Switch Transformers], k experts
chosen per token [K in Jamba]. The B·T tokens are routed independently: the layer flattens them to
(B·T, C).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate
from tfcourse.feedforward import ACTIVATIONS, FeedForward
from tfcourse.glu import GLU

# the gated linear unit (tfcourse.glu) named by the activation of its gate
GATED_VARIANTS = {"silu": "swiglu", "gelu": "geglu", "relu": "reglu"}


class GatedFeedForward(nn.Module):
    r"""The gated feed-forward network of Mixtral and Jamba, (..., C) -> (..., C):

    .. math:: \operatorname{FFN}(x) = \big(\operatorname{act}(x V) \otimes x W\big)\, W_2

    with act = SiLU (SwiGLU; Shazeer, 2020, "GLU Variants Improve Transformer", Eq. 6) and no
    biases. ``glu`` is :class:`tfcourse.glu.GLU` (``glu.gate`` is V, ``glu.value`` is W) and
    ``down`` is W_2.
    """

    def __init__(self, d_model: int, d_ff: int, *, activation: str = "silu") -> None:
        super().__init__()
        if activation not in GATED_VARIANTS:
            raise ValueError(f"activation: expected one of {sorted(GATED_VARIANTS)} for a gated "
                             f"feed-forward network, got {activation!r}")
        self.glu = GLU(d_model, d_ff, variant=GATED_VARIANTS[activation], bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)  # W_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.glu(x))  # (..., F) -> (..., C)


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """softmax over the experts (the last axis), in float32 for half-precision logits: rounding
    them would tie experts whose scores differ."""
    return torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


def _router_logits(router_logits: object, top_k: object) -> tuple[torch.Tensor, int]:
    logits = _validate.rank(_validate.floating(router_logits, "router_logits"), "router_logits",
                            (1,), "(..., X)")
    _validate.integer(top_k, "top_k", 1)
    if top_k > logits.shape[-1]:
        raise ValueError(f"top_k: expected at most X = {logits.shape[-1]} (the experts in the "
                         f"last dimension of router_logits), got {top_k}")
    if logits[..., 0].numel() == 0:
        raise ValueError(f"router_logits: expected at least one token, got shape "
                         f"{tuple(logits.shape)}")
    return logits.reshape(-1, logits.shape[-1]), top_k  # (B·T, X)


def expert_load(router_logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """f_i, the fraction of the tokens sent to expert i (as one of their top-k choices): (X,).

    ``router_logits`` (..., X), as :class:`MoEFeedForward` keeps them. The fractions sum to k;
    divide by k for each expert's share of the work. Perfect balance is k / X for every expert.
    This is Switch Transformers' f_i (Eq. 5) with the top-1 choice replaced by the top-k ones.
    """
    logits, top_k = _router_logits(router_logits, top_k)
    probs = _probabilities(logits)  # (B·T, X): the choices MoEFeedForward.routing makes
    chosen = probs.topk(top_k, dim=-1).indices  # (B·T, k)
    # each token picks k distinct experts, so counting its one-hot rows counts tokens
    counts = F.one_hot(chosen, logits.shape[-1]).sum(dim=(0, 1))  # (X,)
    return counts.to(probs.dtype) / logits.shape[0]  # float64 logits keep float64


def load_balancing_loss(router_logits: torch.Tensor, top_k: int, num_experts: int) -> torch.Tensor:
    r"""The auxiliary load-balancing loss of Switch Transformers (Fedus et al., 2022, Eqs. 4–6),
    with the top-k choices counted as Mixtral's and Jamba's training code counts them:

    .. math:: \mathcal{L}_\text{aux} = X \sum_{i=1}^{X} f_i\, P_i, \qquad
              P_i = \frac{1}{B T} \sum_{\text{tokens } x} p_i(x)

    f_i is :func:`expert_load` (the fraction of tokens that chose expert i among their k, so
    Σ f_i = k) and P_i the mean router probability of expert i. f_i counts choices and has no
    gradient; the loss trains the router through P_i, lowering the probability of the experts
    that receive many tokens. A scalar, in float32 at least; the model adds it times a small
    coefficient (0.001 in Jamba-v0.1's released configuration, ``router_aux_loss_coef``).

    Its scale: under balanced routing (f_i = k/X for every expert, or P_i = 1/X) the loss is
    exactly k; it rises to X when every token gives all its probability to the same k experts.
    Switch Transformers route each token to one expert (k = 1), where balance gives 1 (section
    2.2); counting k choices per token multiplies that by k, and Mixtral's and Jamba's code
    (``load_balancing_loss_func`` in Hugging Face ``transformers``) keeps that scale, as this
    function does.
    """
    logits, top_k = _router_logits(router_logits, top_k)
    _validate.integer(num_experts, "num_experts", 1)
    _validate.size(logits, "router_logits", -1, num_experts, "X, the number of experts")
    probs = _probabilities(logits)  # (B·T, X)
    f = expert_load(logits, top_k)  # (X,)
    P = probs.mean(dim=0)  # (X,)
    return num_experts * (f * P).sum()


class MoEFeedForward(nn.Module):
    r"""A sparse mixture-of-experts feed-forward layer, (B, T, C) -> (B, T, C).

    The router, a linear map C -> X without bias, scores the experts; the probabilities are a
    softmax over the experts axis, in float32 for half-precision inputs; each token keeps its
    top k experts and sums their outputs weighted by their probabilities:

    .. math:: y(x) = \sum_{i \in \operatorname{TopK}(p(x), k)} w_i(x)\, E_i(x)

    **The weights w_i.** Jamba uses the probabilities p_i(x) themselves, a softmax over all X
    experts, without renormalising the k chosen ones (``JambaSparseMoeBlock.forward`` in
    AI21's released code, in Hugging Face ``transformers``: softmax, ``topk``, and no division),
    so the k weights of a token sum to less than 1. Mixtral renormalises them to sum to 1,
    which equals a softmax over the k chosen logits (Jiang et al., 2024, section 2.1:
    G(x) = Softmax(TopK(x · W_g))). ``renormalize=True`` gives Mixtral's weights; the default
    is Jamba's.

    **Dispatch.** Each expert runs on the tokens that chose it, gathered by index, and its
    weighted outputs are added back at those tokens' rows (``index_add_``): the layer computes
    k expert outputs per token, not X. No token is dropped (no capacity limit).

    Experts are :class:`GatedFeedForward` (SwiGLU, ``activation="silu"``, as in Mixtral and
    Jamba) or, with ``gated=False``, :class:`tfcourse.feedforward.FeedForward` (two linear maps
    with biases; ``activation`` ``"gelu"`` or ``"relu"``). ``activation=None`` picks SiLU for
    gated experts and GELU for the others.

    The router logits of the last call stay in ``last_router_logits`` (B·T, X), with their
    gradient, for :func:`load_balancing_loss` and :func:`expert_load`.
    """

    def __init__(
        self, d_model: int, d_ff: int, num_experts: int, top_k: int = 2, *,
        activation: str | None = None, gated: bool = True, renormalize: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = _validate.integer(d_model, "d_model", 1)
        _validate.integer(d_ff, "d_ff", 1)
        self.num_experts = _validate.integer(num_experts, "num_experts", 1)
        self.top_k = _validate.integer(top_k, "top_k", 1)
        if top_k > num_experts:
            raise ValueError(f"top_k: expected at most num_experts = {num_experts}, got {top_k}")
        if gated:
            activation = activation or "silu"
            experts = [GatedFeedForward(d_model, d_ff, activation=activation)
                       for _ in range(num_experts)]
        else:
            activation = activation or "gelu"
            if activation not in ACTIVATIONS:
                raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)} for "
                                 f"experts with gated=False, got {activation!r}")
            experts = [FeedForward(d_model, d_ff, activation=activation)
                       for _ in range(num_experts)]
        self.activation, self.gated, self.renormalize = activation, gated, renormalize
        self.router = nn.Linear(d_model, num_experts, bias=False)  # W_r
        self.experts = nn.ModuleList(experts)
        self.last_router_logits: torch.Tensor | None = None

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The router's decisions for the tokens ``x`` (..., C): the logits (..., X), the
        chosen experts (..., k), best first, and their weights (..., k) in at least
        float32."""
        logits = self.router(x)  # (..., X)
        probs = _probabilities(logits)  # (..., X): over the experts axis
        weights, chosen = probs.topk(self.top_k, dim=-1)  # (..., k), (..., k)
        if self.renormalize:  # Mixtral: the k weights sum to 1
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, chosen, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _validate.rank(_validate.floating(x, "x"), "x", 3, "(B, T, C)")
        _validate.size(x, "x", 2, self.d_model, "C, the model width")
        B, T, C = x.shape
        tokens = x.reshape(B * T, C)  # (B·T, C): routing is per token
        logits, chosen, weights = self.routing(tokens)  # (B·T, X), (B·T, k), (B·T, k)
        self.last_router_logits = logits
        out = torch.zeros_like(tokens)  # (B·T, C)
        for i, expert in enumerate(self.experts):
            rows, slot = torch.where(chosen == i)  # the tokens that chose expert i, and which
            if rows.numel() == 0:  # of their k choices it was; an idle expert costs nothing
                continue
            w = weights[rows, slot, None].to(x.dtype)  # (n_i, 1), n_i tokens chose expert i
            out.index_add_(0, rows, w * expert(tokens[rows]))  # (n_i, C) back to their rows
        return out.view(B, T, C)

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, top_k={self.top_k}, "
                f"activation={self.activation!r}, gated={self.gated}, "
                f"renormalize={self.renormalize}")
