"""tfcourse.tome: Token Merging keeps its invariants (counts, sizes, conserved sums, the class
token), proportional attention means what Eq. 1 says, and r = 0 is the plain model."""

import pytest
import torch

from tfcourse import checks
from tfcourse.attention import fused_scaled_dot_product_attention
from tfcourse.tome import (
    Matching,
    ToMeViT,
    bipartite_soft_matching,
    clamp_schedule,
    max_merges,
    merge_schedule,
    merge_tokens,
    merged_patch_groups,
    proportional_attention,
)
from tfcourse.vit import VisionTransformer

TINY = dict(image_size=16, patch_size=4, d_model=32, num_heads=4, num_layers=3, d_ff=64)


def tiny_vit(pool: str = "cls", dtype: torch.dtype = torch.float32, seed: int = 0):
    torch.manual_seed(seed)
    return VisionTransformer(**TINY, pool=pool).to(dtype).eval()


def images(batch: int = 4, dtype: torch.dtype = torch.float32, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 1, 16, 16, generator=torch.Generator().manual_seed(seed)).to(dtype)


# --- the wrapper ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("fused", [True, False])
def test_r_zero_gives_the_plain_models_logits(pool: str, fused: bool) -> None:
    model = tiny_vit(pool)
    for block in model.blocks:
        block.attn.fused = fused
    x = images()
    with torch.no_grad():
        expected = model(x)
        got = ToMeViT(model, 0)(x)
    checks.expect_close(got, expected, rtol=0, atol=1e-6)


def test_wrapper_shares_the_weights_and_leaves_the_model_unchanged() -> None:
    model = tiny_vit()
    before = {name: p.clone() for name, p in model.state_dict().items()}
    tome = ToMeViT(model, 2)
    with torch.no_grad():
        tome(images())
    assert all(p is q for p, q in zip(tome.parameters(), model.parameters(), strict=True))
    assert all(torch.equal(before[name], p) for name, p in model.state_dict().items())


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_each_layer_removes_r_tokens_and_sizes_add_up(pool: str) -> None:
    model = tiny_vit(pool)
    T0 = 17 if pool == "cls" else 16
    for r, expected in [(1, [1, 1, 1]), (3, [3, 3, 3]), (8, [8, 4, 2]), (100, [8, 4, 2])]:
        tome = ToMeViT(model, r)
        assert tome.schedule == expected, (r, tome.schedule)
        assert tome.token_counts == [T0 - sum(expected[:i]) for i in range(4)]
        with torch.no_grad():
            out = tome.forward_merged(images())
        assert out.size.shape == (4, tome.token_counts[-1], 1)
        assert torch.equal(out.size.sum(dim=1), torch.full((4, 1), float(T0)))
        assert out.token_counts == tome.token_counts


def test_mean_pool_is_the_mean_over_the_original_patches() -> None:
    model = tiny_vit("mean")
    captured = {}
    hooks = [model.norm.register_forward_hook(lambda m, i, o: captured.update(normed=o)),
             model.head.register_forward_pre_hook(lambda m, i: captured.update(pooled=i[0]))]
    try:
        with torch.no_grad():
            out = ToMeViT(model, 4).forward_merged(images())
    finally:
        for hook in hooks:
            hook.remove()
    # every original patch takes the value of the final token it is in: (B, N, C)
    per_patch = torch.einsum("bin,bic->bnc", out.source, captured["normed"])
    checks.expect_close(captured["pooled"], per_patch.mean(dim=1), rtol=1e-5, atol=1e-6)
    assert out.logits.shape == (4, 10) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_source_puts_every_patch_in_exactly_one_final_token(pool: str) -> None:
    tome = ToMeViT(tiny_vit(pool), 3)
    with torch.no_grad():
        out = tome.forward_merged(images(), trace_source=True)
    T0 = 17 if pool == "cls" else 16
    assert out.source.shape == (4, tome.token_counts[-1], T0)
    assert torch.equal(out.source.sum(dim=1), torch.ones(4, T0))  # one final token per original
    assert torch.equal(out.source.sum(dim=2, keepdim=True), out.size)  # size = patches (+ cls)
    groups = merged_patch_groups(out.source, class_token=pool == "cls")
    assert groups.shape == (4, 16)
    for b in range(4):
        counts = torch.bincount(groups[b], minlength=out.size.shape[1]).float()
        if pool == "cls":
            assert out.source[b, 0, 0] == 1 and out.size[b, 0, 0] == 1  # the class token alone
            counts[0] += 1
        assert torch.equal(counts, out.size[b, :, 0])
    assert tome.forward_merged(images(), trace_source=False).source is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_flow_through_merging(dtype: torch.dtype) -> None:
    model = tiny_vit(dtype=dtype).train()
    tome = ToMeViT(model, 3)
    logits = tome(images(dtype=dtype))
    assert logits.dtype == dtype
    logits.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_proportional_attention_switch_changes_the_result_only_after_a_merge() -> None:
    model, x = tiny_vit(), images()
    with torch.no_grad():
        on, off = ToMeViT(model, 4)(x), ToMeViT(model, 4, proportional_attention=False)(x)
        # merging only in the last block, after its attention: no attention sees a size
        late_on = ToMeViT(model, [0, 0, 4])(x)
        late_off = ToMeViT(model, [0, 0, 4], proportional_attention=False)(x)
    assert not torch.allclose(on, off)
    assert torch.equal(late_on, late_off)
    assert ToMeViT(model, [4, 0, 0]).token_counts == [17, 13, 13, 13]


def test_wrapper_rejects_bad_arguments() -> None:
    model = tiny_vit()
    with pytest.raises(TypeError, match="model: expected a tfcourse.vit.VisionTransformer"):
        ToMeViT(torch.nn.Linear(2, 2), 1)
    with pytest.raises(ValueError, match="r: expected an int >= 0, got -1"):
        ToMeViT(model, -1)
    with pytest.raises(ValueError, match="r: expected an int >= 0 or a sequence of 3 ints"):
        ToMeViT(model, [1, 1])
    with pytest.raises(ValueError, match="r: expected an int >= 0 or a sequence"):
        ToMeViT(model, 1.5)
    with pytest.raises(ValueError, match="kind: expected one of"):
        ToMeViT(model, 2, kind="fast")


# --- bipartite soft matching and merging -------------------------------------------------------


def test_matching_merges_the_most_similar_pair_and_orders_the_output() -> None:
    # 5 tokens: A = positions 0, 2, 4 and B = positions 1, 3. Token 2 equals token 3; token 4 is
    # close to token 1; the class token equals token 1 but is protected.
    metric = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0],
                            [0.0, 0.0, 1.0], [1.0, 0.3, 0.0]]])
    matching = bipartite_soft_matching(metric, 1)
    assert matching.r == 1 and matching.num_tokens == 5
    assert matching.src.tolist() == [[2]] and matching.dst.tolist() == [[3]]  # token 2 -> 3
    assert matching.dest.tolist() == [[0, 2, 3, 3, 1]]  # [cls, token 4, token 1, tokens 3 + 2]
    x = torch.arange(5.0).reshape(1, 5, 1)
    assert matching.merge(x).flatten().tolist() == [0.0, 4.0, 1.0, 5.0]
    assert matching.merge(x, "mean").flatten().tolist() == [0.0, 4.0, 1.0, 2.5]
    merged, size = merge_tokens(x, None, matching)
    assert merged.flatten().tolist() == [0.0, 4.0, 1.0, 2.5]
    assert size.flatten().tolist() == [1.0, 1.0, 1.0, 2.0]
    # two merges: token 4 goes into token 1 as well; the class token never does
    two = bipartite_soft_matching(metric, 2)
    assert sorted(two.src.flatten().tolist()) == [2, 4] and two.dest.tolist() == [[0, 1, 2, 2, 1]]
    assert two.merge(x).flatten().tolist() == [0.0, 5.0, 5.0]
    unprotected = bipartite_soft_matching(metric, 2, protect_first=False)
    assert 0 in unprotected.src.flatten().tolist()  # unprotected, the class token merges first


@pytest.mark.parametrize("protect_first", [True, False])
@pytest.mark.parametrize("T", [2, 3, 16, 17])
def test_a_merge_removes_exactly_r_tokens_clamped_to_half(T: int, protect_first: bool) -> None:
    metric, x = torch.randn(3, T, 8), torch.randn(3, T, 5)
    limit = (T - protect_first) // 2
    assert max_merges(T, protect_first=protect_first) == limit
    assert limit <= T // 2 and T - limit >= (2 if protect_first else 1)
    for r in (0, 1, limit, limit + 1, 100):
        merged, size = merge_tokens(x, None, bipartite_soft_matching(metric, r,
                                                                     protect_first=protect_first))
        assert merged.shape == (3, T - min(r, limit), 5), (r, merged.shape)
        assert torch.equal(size.sum(dim=1), torch.full((3, 1), float(T)))


def test_r_zero_matching_is_the_identity() -> None:
    x = torch.randn(2, 9, 4)
    matching = bipartite_soft_matching(torch.randn(2, 9, 6), 0)
    merged, size = merge_tokens(x, None, matching)
    assert matching.r == 0 and torch.equal(merged, x) and torch.equal(size, torch.ones(2, 9, 1))


def test_repeated_merges_conserve_sizes_and_the_size_weighted_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 17, 6, generator=gen, dtype=torch.float64)
    cls = x[:, 0].clone()
    size, total = None, x.sum(dim=1)
    for r in (4, 4, 3, 100, 100, 100):
        matching = bipartite_soft_matching(torch.randn(*x.shape[:2], 5, generator=gen,
                                                       dtype=torch.float64), r)
        x, size = merge_tokens(x, size, matching)
        assert torch.equal(size.sum(dim=1), torch.full((3, 1), 17.0, dtype=torch.float64))
        checks.expect_close((size * x).sum(dim=1), total, rtol=1e-12, atol=1e-12)
        assert torch.equal(x[:, 0], cls) and torch.equal(size[:, 0], torch.ones(3, 1,
                                                                               dtype=size.dtype))
    assert x.shape[1] == 2  # 17 13 9 6, then capped: 4 3 2, the class token and one more


def test_the_class_token_is_never_merged_even_when_it_is_the_best_match() -> None:
    metric = torch.randn(4, 17, 8)
    metric[:, 0] = metric[:, 1]  # the class token duplicates a B token
    matching = bipartite_soft_matching(metric, 8)
    assert (matching.dest[:, 0] == 0).all() and not (matching.src == 0).any()
    assert ((matching.dest == 0).sum(dim=1) == 1).all()  # nothing else lands on it


def test_matching_and_merging_reject_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"metric: expected 3 dimensions \(B, T, D'\)"):
        bipartite_soft_matching(torch.randn(17, 8), 1)
    with pytest.raises(TypeError, match="metric: expected a floating-point tensor"):
        bipartite_soft_matching(torch.ones(1, 17, 8, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="r: expected an int >= 0, got -1"):
        bipartite_soft_matching(torch.randn(1, 17, 8), -1)
    with pytest.raises(ValueError, match="r: expected an int >= 0, got 1.5"):
        bipartite_soft_matching(torch.randn(1, 17, 8), 1.5)
    matching = bipartite_soft_matching(torch.randn(2, 17, 8), 3)
    with pytest.raises(ValueError, match=r"x: expected size 17 in dimension 1 \(T"):
        merge_tokens(torch.randn(2, 16, 4), None, matching)
    with pytest.raises(ValueError, match=r"size: expected size 1 in dimension 2"):
        merge_tokens(torch.randn(2, 17, 4), torch.ones(2, 17, 4), matching)
    with pytest.raises(TypeError, match="matching: expected a Matching"):
        merge_tokens(torch.randn(2, 17, 4), None, "nope")
    with pytest.raises(ValueError, match="reduce: expected one of"):
        matching.merge(torch.randn(2, 17, 4), "max")
    assert isinstance(matching, Matching)


# --- proportional attention (Eq. 1) -------------------------------------------------------------


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("S", [3, 7, 16, 17, 24])  # key counts padded to 16 or 32, or not
def test_proportional_attention_with_unit_sizes_is_plain_attention(fused: bool, S: int) -> None:
    q, k, v = torch.randn(3, 2, 4, S, 8, dtype=torch.float64).unbind()
    expected = fused_scaled_dot_product_attention(q, k, v)
    for size in (None, torch.ones(2, S, 1, dtype=torch.float64)):
        got = proportional_attention(q, k, v, size, fused=fused)
        checks.expect_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fused", [True, False])
def test_a_merged_duplicate_attends_like_the_duplicated_sequence(fused: bool) -> None:
    # Eq. 1's purpose: a key of size 2 weighs as two copies of itself.
    q, k, v = torch.randn(3, 2, 4, 6, 8, dtype=torch.float64).unbind()
    keep = torch.tensor([0, 1, 2, 3, 4, 5, 2, 2])  # token 2 three times over
    expected = proportional_attention(q, k[:, :, keep], v[:, :, keep], None, fused=fused)
    size = torch.ones(2, 6, 1, dtype=torch.float64)
    size[:, 2] = 3
    got = proportional_attention(q, k, v, size, fused=fused)
    checks.expect_close(got, expected, rtol=1e-12, atol=1e-12)
    plain = proportional_attention(q, k, v, None, fused=fused)
    assert not torch.allclose(plain, expected)


def test_proportional_attention_rejects_a_bad_size() -> None:
    q, k, v = torch.randn(3, 2, 4, 6, 8).unbind()
    with pytest.raises(ValueError, match=r"size: expected size 6 in dimension 1 \(T, one size"):
        proportional_attention(q, k, v, torch.ones(2, 5, 1))
    with pytest.raises(ValueError, match=r"size: expected 3 dimensions \(B, T, 1\)"):
        proportional_attention(q, k, v, torch.ones(2, 6))


# --- schedules ---------------------------------------------------------------------------------


def test_constant_and_decreasing_schedules() -> None:
    assert merge_schedule(3, 6) == [3] * 6
    assert merge_schedule(2, 6, kind="decreasing") == [4, 3, 2, 2, 1, 0]
    for r in range(6):
        for layers in range(1, 13):
            decreasing = merge_schedule(r, layers, kind="decreasing")
            assert len(decreasing) == layers and sum(decreasing) == r * layers, (r, layers)
            assert decreasing == sorted(decreasing, reverse=True)
            if layers > 1:
                assert decreasing[0] == 2 * r and decreasing[-1] == 0
    assert merge_schedule(4, 1, kind="decreasing") == [4]


def test_schedules_are_clamped_to_what_the_tokens_allow() -> None:
    assert merge_schedule(8, 6, num_tokens=17) == [8, 4, 2, 1, 0, 0]  # 17 9 5 3 2 2 2
    assert merge_schedule(4, 6, num_tokens=17) == [4, 4, 4, 2, 1, 0]  # 17 13 9 5 3 2 2
    assert merge_schedule(4, 6, kind="decreasing", num_tokens=17) == [8, 4, 2, 1, 0, 0]
    assert merge_schedule(8, 6, num_tokens=16, protect_first=False) == [8, 4, 2, 1, 0, 0]
    assert merge_schedule(2, 3, num_tokens=100) == [2, 2, 2]
    for r in range(10):
        for T in range(1, 40):
            schedule = merge_schedule(r, 8, num_tokens=T)
            tokens = T
            for merged in schedule:
                assert merged <= (tokens - 1) // 2
                tokens -= merged
            assert tokens >= min(T, 2)
    assert clamp_schedule([9, 0, 9], 17) == [8, 0, 4]


def test_schedules_reject_bad_arguments() -> None:
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="r: expected an int >= 0"):
            merge_schedule(bad, 6)
    with pytest.raises(ValueError, match="kind: expected one of .'constant', 'decreasing'., "
                                         "got 'linear'"):
        merge_schedule(2, 6, kind="linear")
    with pytest.raises(ValueError, match="num_layers: expected an int >= 1, got 0"):
        merge_schedule(2, 0)
    with pytest.raises(ValueError, match="num_tokens: expected an int >= 1, got 0"):
        merge_schedule(2, 6, num_tokens=0)
    with pytest.raises(ValueError, match=r"schedule\[1\]: expected an int >= 0, got -2"):
        clamp_schedule([1, -2], 17)
    with pytest.raises(ValueError, match="source: expected 3 dimensions"):
        merged_patch_groups(torch.ones(4, 17))


# --- the benchmark -----------------------------------------------------------------------------


def test_benchmark_rows_measure_accuracy_and_speed_of_each_schedule() -> None:
    from tfcourse.bench.tome import tome_tradeoff

    model = tiny_vit()
    x, labels = images(12), torch.arange(12) % 10
    rows = tome_tradeoff(model, x, labels, rs=[0, 3], kinds=["constant", "decreasing"],
                         batch_size=16, repeats=1)
    assert [(row["r"], row["kind"]) for row in rows] == [
        (None, None), (0, "constant"), (3, "constant"), (3, "decreasing")]
    assert rows[0]["speedup"] == 1.0 and rows[0]["tokens"] == [17, 17, 17, 17]
    assert rows[2]["tokens"] == [17, 14, 11, 8]
    assert rows[1]["accuracy"] == rows[0]["accuracy"]
    assert all(row["images_per_s"] > 0 and 0 <= row["accuracy"] <= 1 for row in rows)
