"""tfcourse.jamba (chapter 9): the layer schedule, the published configuration, the memory of the
KV cache against the Mamba state, grouped-query attention and the hybrid language model
(Lieber et al., 2024, arXiv:2403.19887)."""

import dataclasses

import pytest
import torch

from tfcourse import checks
from tfcourse.attention import scaled_dot_product_attention
from tfcourse.jamba import (
    JAMBA_V0_1,
    GroupedQueryAttention,
    JambaConfig,
    JambaLayer,
    JambaLM,
    kv_cache_bytes,
    mamba_state_bytes,
    parameter_counts,
)
from tfcourse.language_models import next_token_loss
from tfcourse.masks import causal_mask
from tfcourse.moe import MoEFeedForward, load_balancing_loss

GiB = 2**30
CONTEXT_256K = 256 * 1024

# 4 layers: Mamba, MoE | attention | Mamba, MoE | Mamba; widths small enough for fast tests
TINY = JambaConfig(vocab_size=32, d_model=16, num_layers=4, num_heads=4, num_kv_heads=2,
                   d_ff=32, num_experts=4, top_k=2, attn_layer_period=4, attn_layer_offset=1,
                   expert_layer_period=2, expert_layer_offset=0, d_state=4, d_conv=3, expand=2,
                   max_len=64)


def tiny_model(**changes) -> JambaLM:
    torch.manual_seed(0)
    return JambaLM(dataclasses.replace(TINY, **changes))


def tokens(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


# --- the configuration and its schedule ---


def test_published_schedule_has_attention_at_layers_4_12_20_28_and_experts_on_odd_layers():
    types = JAMBA_V0_1.layer_types()
    assert [i for i, kind in enumerate(types) if kind == "attention"] == [4, 12, 20, 28]
    assert types.count("mamba") == 28  # a : m = 1 : 7 in each block of l = 8 layers
    assert JAMBA_V0_1.uses_experts() == [i % 2 == 1 for i in range(32)]  # e = 2


def test_published_configuration_figures():
    c = JAMBA_V0_1
    assert (c.num_layers, c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.d_ff) == \
        (32, 4096, 32, 8, 128, 14336)
    assert (c.num_experts, c.top_k, c.d_state, c.d_conv, c.expand, c.dt_rank) == \
        (16, 2, 16, 4, 2, 256)
    assert (c.vocab_size, c.max_len, c.tie_embeddings) == (65536, 262144, False)


def test_published_configuration_has_52B_parameters_of_which_12B_active():
    total, active = parameter_counts(JAMBA_V0_1)  # built on the meta device: no memory
    assert round(total / 1e9) == 52 and round(active / 1e9) == 12  # the paper's Table 1


def test_parameter_counts_match_a_real_model():
    model = tiny_model()
    total, active = parameter_counts(TINY)
    assert total == sum(p.numel() for p in model.parameters())
    expert = sum(p.numel() for p in model.layers[0].ffn.experts[0].parameters())
    assert total - active == 2 * (4 - 2) * expert  # two MoE layers, each skipping 2 experts


@pytest.mark.parametrize("changes, types, experts", [
    ({}, ["mamba", "attention", "mamba", "mamba"], [True, False, True, False]),
    ({"num_layers": 6, "attn_layer_period": 3, "attn_layer_offset": 0,
      "expert_layer_period": 3, "expert_layer_offset": 2},
     ["attention", "mamba", "mamba"] * 2, [False, False, True] * 2),
    ({"attn_layer_period": 1, "attn_layer_offset": 0, "expert_layer_period": 1,
      "expert_layer_offset": 0}, ["attention"] * 4, [True] * 4),
    ({"num_layers": 3, "attn_layer_period": 8, "attn_layer_offset": 4,
      "expert_layer_period": 4, "expert_layer_offset": 3}, ["mamba"] * 3, [False] * 3),
])
def test_schedule_of_small_configurations(changes, types, experts):
    config = dataclasses.replace(TINY, **changes)
    assert config.layer_types() == types
    assert config.uses_experts() == experts
    model = JambaLM(config)
    assert [layer.kind for layer in model.layers] == types
    assert [isinstance(layer.ffn, MoEFeedForward) for layer in model.layers] == experts


@pytest.mark.parametrize("changes, error, match", [
    ({"attn_layer_offset": 4}, ValueError, "attn_layer_offset: expected an int below "
                                           "attn_layer_period = 4"),
    ({"attn_layer_offset": -1}, ValueError, "attn_layer_offset: expected an int >= 0"),
    ({"expert_layer_offset": 2}, ValueError, "expert_layer_offset: expected an int below "
                                             "expert_layer_period = 2"),
    ({"attn_layer_period": 0}, ValueError, "attn_layer_period: expected an int >= 1"),
    ({"expert_layer_period": 1.5}, ValueError, "expert_layer_period"),
    ({"num_heads": 3}, ValueError, "num_heads: expected a divisor of d_model = 16"),
    ({"num_kv_heads": 3}, ValueError, "num_kv_heads: expected a divisor of num_heads = 4"),
    ({"top_k": 5}, ValueError, "top_k: expected at most num_experts = 4"),
    ({"dt_rank": 0}, ValueError, "dt_rank"),
    ({"rms_norm_eps": 0.0}, ValueError, "rms_norm_eps"),
])
def test_bad_configurations_are_named(changes, error, match):
    with pytest.raises(error, match=match):
        dataclasses.replace(TINY, **changes)


def test_bad_model_arguments_are_named():
    with pytest.raises(TypeError, match="config: expected a JambaConfig"):
        JambaLM({"d_model": 16})
    with pytest.raises(ValueError, match="index: expected a layer below num_layers = 4"):
        JambaLayer(TINY, 4)
    with pytest.raises(TypeError, match="config"):
        kv_cache_bytes(None, 10)


# --- memory: the KV cache against the Mamba state ---


def test_kv_cache_grows_linearly_with_context_and_the_mamba_state_does_not_depend_on_it():
    sizes = [kv_cache_bytes(JAMBA_V0_1, T) for T in (0, 1024, 2048, 4096)]
    assert sizes[0] == 0 and sizes[2] == 2 * sizes[1] and sizes[3] == 4 * sizes[1]
    per_token = 2 * 4 * 8 * 128 * 2  # K and V, 4 attention layers, G = 8 heads of D = 128
    assert sizes[1] == 1024 * per_token
    assert kv_cache_bytes(JAMBA_V0_1, 1024, batch=3) == 3 * sizes[1]
    assert kv_cache_bytes(JAMBA_V0_1, 1024, dtype_bytes=1) == sizes[1] // 2
    # the Mamba state takes no context: the same bytes for every length
    state = mamba_state_bytes(JAMBA_V0_1)
    assert state == 28 * 8192 * (3 + 16) * 2
    assert mamba_state_bytes(JAMBA_V0_1, batch=4, dtype_bytes=4) == 8 * state


def test_mamba_state_bytes_is_the_size_of_the_state_the_mamba_layers_decode_with():
    model = tiny_model()  # float32: dtype_bytes = 4 for both parts of the state
    states = [layer.mixer.new_state(3) for layer in model.layers if layer.kind == "mamba"]
    assert len(states) == 3
    held = sum(t.numel() * t.element_size() for s in states for t in (s.conv, s.ssm))
    assert held == mamba_state_bytes(TINY, batch=3, dtype_bytes=4)


def test_published_kv_cache_figures_at_256k_tokens():
    # the paper's Table 1, 16-bit, 256K context: Jamba 4GB, Mixtral 32GB, Llama-2 7B 128GB
    assert kv_cache_bytes(JAMBA_V0_1, CONTEXT_256K) == 4 * GiB
    all_attention = dataclasses.replace(JAMBA_V0_1, attn_layer_period=1, attn_layer_offset=0)
    assert kv_cache_bytes(all_attention, CONTEXT_256K) == 32 * GiB  # Mixtral's shape
    llama2_7b = dataclasses.replace(all_attention, num_kv_heads=32)  # no grouping
    assert kv_cache_bytes(llama2_7b, CONTEXT_256K) == 128 * GiB
    # the 28 Mamba layers hold under 9 MiB, as much as the cache of 532 tokens
    assert mamba_state_bytes(JAMBA_V0_1) < 9 * 2**20
    assert mamba_state_bytes(JAMBA_V0_1) == kv_cache_bytes(JAMBA_V0_1, 532)


def test_bad_memory_arguments_are_named():
    with pytest.raises(ValueError, match="context: expected an int >= 0"):
        kv_cache_bytes(JAMBA_V0_1, -1)
    with pytest.raises(ValueError, match="batch: expected an int >= 1"):
        mamba_state_bytes(JAMBA_V0_1, batch=0)
    with pytest.raises(ValueError, match="dtype_bytes"):
        kv_cache_bytes(JAMBA_V0_1, 8, dtype_bytes=0.5)


# --- grouped-query attention ---


def explicit_gqa(attn: GroupedQueryAttention, x: torch.Tensor, *,
                 tiled: bool = False) -> torch.Tensor:
    """Each query head h with the keys and values of its group g = h // (H/G), head by head,
    with the course's written-out attention and an explicit causal mask. ``tiled`` pairs them
    wrongly, g = h mod G (``repeat`` instead of ``repeat_interleave``)."""
    B, T, C = x.shape
    H, G, D = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q = attn.q_proj(x).view(B, T, H, D)
    k = attn.k_proj(x).view(B, T, G, D)
    v = attn.v_proj(x).view(B, T, G, D)
    heads = []
    for h in range(H):
        g = h % G if tiled else h // (H // G)
        out, _ = scaled_dot_product_attention(q[:, :, h], k[:, :, g], v[:, :, g], causal_mask(T))
        heads.append(out)  # (B, T, D)
    return attn.o_proj(torch.cat(heads, dim=-1))  # heads side by side: (B, T, C)


@pytest.mark.parametrize("num_heads, num_kv_heads", [(4, 1), (4, 2), (4, 4), (6, 3)])
def test_grouped_query_attention_equals_the_explicit_repeated_kv_computation(num_heads,
                                                                              num_kv_heads):
    torch.manual_seed(0)
    attn = GroupedQueryAttention(24, num_heads, num_kv_heads).double()
    x = torch.randn(2, 7, 24, dtype=torch.float64)
    expected = explicit_gqa(attn, x)
    mistakes = {}
    if 1 < num_kv_heads < num_heads:  # the pairing of heads only matters here
        tiled = explicit_gqa(attn, x, tiled=True)
        assert not torch.allclose(tiled, expected)
        mistakes["query head h used K/V head h mod G (repeat, not repeat_interleave)"] = tiled
    checks.expect_close(attn(x), expected, rtol=0, atol=1e-10, mistakes=mistakes)
    checks.expect_causal(attn, x, atol=1e-10)


def test_grouped_query_attention_keeps_fewer_key_value_weights_and_checks_its_input():
    attn = GroupedQueryAttention(32, 8, 2)
    assert attn.k_proj.weight.shape == (2 * 4, 32) and attn.q_proj.weight.shape == (32, 32)
    with pytest.raises(ValueError, match="num_kv_heads: expected a divisor of num_heads = 8"):
        GroupedQueryAttention(32, 8, 3)
    with pytest.raises(ValueError, match="num_heads: expected a divisor of d_model = 32"):
        GroupedQueryAttention(32, 5, 1)
    with pytest.raises(ValueError, match="C, the model width"):
        attn(torch.randn(1, 3, 16))
    with pytest.raises(ValueError, match=r"x: expected 3 dimensions \(B, T, C\)"):
        attn(torch.randn(3, 32))


# --- the language model ---


def test_forward_gives_logits_for_every_position():
    model = tiny_model()
    logits = model(tokens(2, 12))
    checks.expect_shape(logits, (2, 12, TINY.vocab_size), "logits")
    checks.expect_finite(logits, "logits")
    assert model.head.weight is model.embed.weight  # tied
    untied = tiny_model(tie_embeddings=False)
    assert untied.head.weight is not untied.embed.weight


def test_the_whole_stack_is_causal():
    model = tiny_model().eval()
    x = tokens(1, 12)
    with torch.no_grad():
        base = model(x)
        for t in range(x.shape[1] - 1):
            changed = x.clone()
            changed[:, t + 1:] = tokens(1, x.shape[1] - t - 1, seed=t + 1)
            assert not torch.equal(changed, x)
            moved = (model(changed) - base)[:, : t + 1].abs().max().item()
            assert moved < 1e-5, f"logits up to position {t} moved by {moved:.3g}"


def test_aux_loss_sums_the_balancing_loss_of_each_moe_layer():
    model = tiny_model()
    with pytest.raises(RuntimeError, match="run the model forward first"):
        model.aux_loss()
    model(tokens(2, 8))
    moe = [layer.ffn for layer in model.layers if isinstance(layer.ffn, MoEFeedForward)]
    assert len(moe) == 2
    expected = sum(load_balancing_loss(f.last_router_logits, 2, 4) for f in moe)
    checks.expect_close(model.aux_loss(), expected)
    dense = tiny_model(num_layers=1, expert_layer_offset=1)  # its only layer is dense
    dense(tokens(1, 4))
    assert dense.aux_loss().item() == 0.0


def test_gradients_reach_every_parameter_including_the_routers():
    model = tiny_model()
    x = tokens(4, 16)
    loss = next_token_loss(model(x), x) + 0.01 * model.aux_loss()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    routers = [n for n, _ in model.named_parameters() if n.endswith("router.weight")]
    assert len(routers) == 2


def test_a_tiny_jamba_learns_a_repeating_sequence():
    model = tiny_model()
    pattern = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    x = torch.stack([pattern.roll(-s).repeat(3) for s in range(4)])  # (4, 24)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = next_token_loss(model(x), x)
        optimizer.zero_grad()
        (loss + 0.001 * model.aux_loss()).backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_tokens_are_named():
    model = tiny_model()
    with pytest.raises(TypeError, match="tokens: expected integer token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="tokens: expected at most max_len = 64"):
        model(tokens(1, 65))
    with pytest.raises(ValueError, match=r"vocab_size=32"):
        model(torch.full((1, 4), 32))
