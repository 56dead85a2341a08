"""tfcourse.moe (chapter 9): the mixture-of-experts feed-forward layer, its routing and the
load-balancing loss (Fedus et al., 2022; Jiang et al., 2024; Lieber et al., 2024)."""

import itertools

import pytest
import torch

from tfcourse import checks
from tfcourse.feedforward import FeedForward
from tfcourse.moe import GatedFeedForward, MoEFeedForward, expert_load, load_balancing_loss

C, F_, B, T = 8, 16, 2, 5


def layer(num_experts: int, top_k: int, **kwargs) -> MoEFeedForward:
    torch.manual_seed(0)
    return MoEFeedForward(C, F_, num_experts, top_k, **kwargs).double()


def inputs(seed: int = 1) -> torch.Tensor:
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def token_by_token(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """y(x) = Σ_{i in TopK} w_i(x) E_i(x), one token at a time, every step written out."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            logits = moe.router(x[b, t])  # (X,)
            p = torch.exp(logits - logits.max())
            p = p / p.sum()  # softmax over the experts
            chosen = torch.argsort(p, descending=True)[: moe.top_k]
            w = p[chosen] / p[chosen].sum() if moe.renormalize else p[chosen]
            out[b, t] = sum(w_i * moe.experts[int(i)](x[b, t])
                            for w_i, i in zip(w, chosen, strict=True))
    return out


# --- the layer against dense references ---


@pytest.mark.parametrize("gated", [True, False])
def test_one_expert_with_top_1_is_the_dense_feed_forward_with_the_same_weights(gated):
    moe = layer(1, 1, gated=gated)
    dense = (GatedFeedForward(C, F_) if gated else FeedForward(C, F_, activation="gelu")).double()
    dense.load_state_dict(moe.experts[0].state_dict())
    x = inputs()
    checks.expect_close(moe(x), dense(x), rtol=0, atol=1e-12)


def test_gated_expert_is_swiglu_written_out():
    torch.manual_seed(0)
    ffn = GatedFeedForward(C, F_).double()
    x = inputs()
    W, V, W2 = ffn.glu.value.weight, ffn.glu.gate.weight, ffn.down.weight
    expected = (torch.nn.functional.silu(x @ V.T) * (x @ W.T)) @ W2.T
    checks.expect_close(ffn(x), expected, rtol=0, atol=1e-12)


def test_all_experts_chosen_gives_the_softmax_weighted_mixture_over_the_experts_axis():
    moe = layer(4, 4)
    x = inputs()
    logits = moe.router(x)  # (B, T, X)
    outputs = torch.stack([e(x) for e in moe.experts], dim=-1)  # (B, T, C, X)
    expected = (outputs * torch.softmax(logits, dim=-1)[..., None, :]).sum(-1)
    # the same mixture with the softmax taken over the tokens instead of the experts
    wrong = (outputs * torch.softmax(logits.reshape(B * T, 4), dim=0)
             .view(B, T, 1, 4)).sum(-1)
    assert not torch.allclose(wrong, expected, atol=1e-3)
    checks.expect_close(moe(x), expected, rtol=0, atol=1e-12,
                        mistakes={"the routing softmax runs over the tokens, not the experts":
                                  wrong})


@pytest.mark.parametrize("renormalize", [False, True])
@pytest.mark.parametrize("num_experts, top_k", [(4, 1), (4, 2), (5, 3)])
def test_sparse_routing_matches_the_token_by_token_reference(num_experts, top_k, renormalize):
    moe = layer(num_experts, top_k, renormalize=renormalize)
    x = inputs()
    checks.expect_close(moe(x), token_by_token(moe, x), rtol=0, atol=1e-12)


def test_jamba_weights_are_the_probabilities_and_mixtral_weights_a_softmax_over_the_top_k():
    moe = layer(6, 2)
    x = inputs().reshape(B * T, C)
    logits, chosen, weights = moe.routing(x)
    p = torch.softmax(logits, dim=-1)
    checks.expect_close(weights, p.gather(-1, chosen))  # not renormalised: sums below 1
    assert (weights.sum(-1) < 1).all()
    moe.renormalize = True
    _, chosen_m, weights_m = moe.routing(x)
    assert torch.equal(chosen_m, chosen)
    checks.expect_close(weights_m, torch.softmax(logits.gather(-1, chosen), dim=-1))


def test_every_token_is_dispatched_to_exactly_its_top_k_experts():
    moe = layer(5, 2)
    x = inputs()
    tokens = x.reshape(B * T, C)
    seen: list[list[int]] = [[] for _ in range(B * T)]  # the experts each token went to
    hooks = []
    for i, expert in enumerate(moe.experts):
        def record(module, args, output, i=i):
            for row in args[0]:  # the rows are distinct tokens: find each one's index
                match = (tokens == row).all(dim=-1).nonzero().flatten()
                assert match.numel() == 1
                seen[int(match)].append(i)
        hooks.append(expert.register_forward_hook(record))
    moe(x)
    for hook in hooks:
        hook.remove()
    assert sum(len(s) for s in seen) == B * T * 2  # k expert runs per token, not X
    top2 = moe.last_router_logits.topk(2, dim=-1).indices
    for n, experts in enumerate(seen):
        assert sorted(experts) == sorted(top2[n].tolist())


def test_an_expert_no_token_chose_is_not_run():
    moe = layer(3, 1)
    x = inputs().abs()
    with torch.no_grad():  # positive inputs score positive on experts 0, 1, negative on 2
        w = moe.router.weight
        w[:2] = w[:2].abs()
        w[2] = -w[:2].sum(0)
    calls = []
    moe.experts[2].register_forward_hook(lambda *_: calls.append(1))
    out = moe(x)
    assert expert_load(moe.last_router_logits, 1)[2] == 0 and not calls
    checks.expect_close(out, token_by_token(moe, x), rtol=0, atol=1e-12)


def test_router_logits_of_the_last_call_are_kept_with_their_gradient():
    moe = layer(4, 2)
    assert moe.last_router_logits is None
    moe(inputs())
    checks.expect_shape(moe.last_router_logits, (B * T, 4), "last_router_logits")
    assert moe.last_router_logits.requires_grad


def test_gradients_reach_the_router_and_the_chosen_experts():
    moe = layer(4, 2)
    x = inputs()
    moe(x).pow(2).sum().backward()
    grad = moe.router.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    used = expert_load(moe.last_router_logits, 2) > 0
    for i, expert in enumerate(moe.experts):
        g = expert.down.weight.grad
        assert (g is not None and g.abs().sum() > 0) == bool(used[i])
    checks.expect_finite_grads(moe, x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_the_dtype_with_float32_routing(dtype):
    torch.manual_seed(0)
    moe = MoEFeedForward(C, F_, 4, 2)
    x = torch.randn(B, T, C)
    out = moe.to(dtype)(x.to(dtype))
    checks.expect_device_dtype(out, "cpu", dtype)
    _, _, weights = moe.routing(x.to(dtype))
    assert weights.dtype == torch.float32  # not rounded to the half type
    checks.expect_close(out.float(), moe.float()(x.to(dtype).float()), rtol=5e-2, atol=5e-2)


# --- load balancing ---


def switch_loss_written_out(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """X Σ_i f_i P_i with f_i and P_i counted token by token (Fedus et al., 2022, Eqs. 4–6)."""
    n, X = logits.shape
    f, P = torch.zeros(X), torch.zeros(X)
    for row in logits:
        p = torch.softmax(row.float(), dim=0)
        for i in torch.argsort(p, descending=True)[:top_k]:
            f[i] += 1 / n
        P += p / n
    return X * (f * P).sum()


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_balancing_loss_is_switch_transformers_equation_with_top_k_counted(top_k):
    logits = torch.randn(40, 6, generator=torch.Generator().manual_seed(top_k))
    checks.expect_close(load_balancing_loss(logits, top_k, 6),
                        switch_loss_written_out(logits, top_k), rtol=1e-6, atol=1e-6)
    load = expert_load(logits.view(4, 10, 6), top_k)  # leading dims are flattened
    checks.expect_close(load.sum(), torch.tensor(float(top_k)))


@pytest.mark.parametrize("X, top_k", [(4, 1), (4, 2), (8, 2), (16, 2)])
def test_balancing_loss_is_k_under_balanced_routing(X, top_k):
    # token n prefers experts n, n+1, ... (mod X): every expert gets k/X of the tokens and,
    # by symmetry, a mean probability of 1/X
    n = torch.arange(4 * X)
    logits = torch.zeros(4 * X, X)
    for j in range(top_k):
        logits[n, (n + j) % X] = 3.0 - j
    checks.expect_close(expert_load(logits, top_k), torch.full((X,), top_k / X))
    checks.expect_close(load_balancing_loss(logits, top_k, X), torch.tensor(float(top_k)))
    # uniform probabilities give k too, whatever the (tied) choices
    checks.expect_close(load_balancing_loss(torch.zeros(10, X), top_k, X),
                        torch.tensor(float(top_k)))


def test_balancing_loss_grows_with_imbalance_up_to_the_number_of_experts():
    X, top_k = 8, 2
    noise = torch.randn(64, X, generator=torch.Generator().manual_seed(0))
    favour = torch.zeros(X)
    favour[:top_k] = 1.0  # every token leans towards experts 0 and 1
    losses = [load_balancing_loss(noise + s * favour, top_k, X).item()
              for s in (0.0, 1.0, 2.0, 4.0, 8.0, 30.0)]
    assert all(a < b for a, b in itertools.pairwise(losses)), losses
    assert losses[0] < 1.2 * top_k
    assert losses[-1] == pytest.approx(X, rel=1e-3)  # all tokens, all probability, 2 experts


def test_balancing_loss_trains_the_router_through_the_mean_probabilities():
    moe = layer(4, 2)
    moe(inputs())
    loss = load_balancing_loss(moe.last_router_logits, 2, 4)
    assert loss.ndim == 0
    half = load_balancing_loss(moe.last_router_logits.detach().half(), 2, 4)
    assert half.dtype == torch.float32
    loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0
    assert not expert_load(moe.last_router_logits, 2).requires_grad


# --- input errors ---


@pytest.mark.parametrize("args, kwargs, match", [
    ((C, F_, 4, 5), {}, "top_k"),
    ((C, F_, 4, 0), {}, "top_k"),
    ((C, F_, 0, 1), {}, "num_experts"),
    ((0, F_, 4, 2), {}, "d_model"),
    ((C, F_, 4, 2), {"activation": "tanh"}, "activation"),
    ((C, F_, 4, 2), {"activation": "silu", "gated": False}, "activation"),
])
def test_bad_constructor_arguments_are_named(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        MoEFeedForward(*args, **kwargs)


def test_bad_inputs_are_named():
    moe = layer(4, 2)
    with pytest.raises(ValueError, match=r"x: expected 3 dimensions \(B, T, C\)"):
        moe(torch.randn(T, C, dtype=torch.float64))
    with pytest.raises(ValueError, match="C, the model width"):
        moe(torch.randn(B, T, C + 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        moe(torch.ones(B, T, C, dtype=torch.long))
    logits = torch.randn(10, 4)
    with pytest.raises(ValueError, match="X, the number of experts"):
        load_balancing_loss(logits, 2, 5)
    with pytest.raises(ValueError, match="top_k: expected at most X = 4"):
        expert_load(logits, 5)
    with pytest.raises(ValueError, match="router_logits: expected at least one token"):
        expert_load(torch.randn(0, 4), 1)
    with pytest.raises(TypeError, match="router_logits"):
        load_balancing_loss([[0.0, 1.0]], 1, 2)
