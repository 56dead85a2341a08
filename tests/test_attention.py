"""tfcourse.attention: the explicit and fused paths agree with each other and with PyTorch."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tfcourse as tc
from tfcourse import checks

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


def random_mask(kind: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor | None:
    """A mask of the given kind that broadcasts to scores of ``shape`` (..., T, S)."""
    *batch, T, S = shape
    if kind == "none":
        return None
    if kind == "bool":
        mask = torch.rand(shape, generator=gen) > 0.3
        mask[..., 0] = True  # every query keeps one key: no fully masked row here
        return mask
    if kind == "causal":
        return tc.causal_mask(T, S)
    if kind == "padding":
        lengths = torch.randint(1, S + 1, (batch[0],), generator=gen)
        return tc.padding_mask(lengths, S)  # (B, 1, 1, S)
    if kind == "additive":
        return torch.randn(shape, generator=gen)
    raise ValueError(kind)


CASES = list(itertools.product(
    [(1, 1, 1, 1), (2, 3, 5, 7), (3, 2, 9, 4), (1, 4, 16, 16)],  # (B, H, T, S)
    [4, 8, 32],  # D
    ["none", "bool", "causal", "padding", "additive"],
))


@pytest.mark.parametrize("dtype", DTYPES)
def test_explicit_fused_and_torch_agree(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    for (B, H, T, S), D, kind in CASES:
        if kind == "causal" and S < T:
            continue
        q = torch.randn(B, H, T, D, generator=gen).to(dtype)
        k = torch.randn(B, H, S, D, generator=gen).to(dtype)
        v = torch.randn(B, H, S, D, generator=gen).to(dtype)
        mask = random_mask(kind, (B, H, T, S), gen)
        explicit, weights = tc.scaled_dot_product_attention(q, k, v, mask)
        fused = tc.fused_scaled_dot_product_attention(q, k, v, mask)
        torch_mask = mask if mask is None or mask.dtype == torch.bool else mask.to(dtype)
        reference = F.scaled_dot_product_attention(q, k, v, attn_mask=torch_mask)
        where = f"shape {(B, H, T, S, D)}, mask {kind}, {dtype}"
        checks.expect_close(explicit, reference, f"explicit ({where})")
        checks.expect_close(fused, reference, f"fused ({where})")
        checks.expect_shape(weights, (B, H, T, S), "weights")
        checks.expect_rows_sum_to_one(weights, atol=1e-2)


def test_fully_masked_query_gives_zeros_like_pytorch() -> None:
    q, k, v = torch.randn(3, 2, 4, 5, 8).unbind()
    mask = torch.ones(2, 4, 5, 5, dtype=torch.bool)
    mask[:, :, 2] = False  # query 2 may attend to nothing
    out, weights = tc.scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(out[:, :, 2], torch.zeros_like(out[:, :, 2]))
    assert torch.equal(weights[:, :, 2], torch.zeros_like(weights[:, :, 2]))
    checks.expect_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    checks.expect_close(out, tc.fused_scaled_dot_product_attention(q, k, v, mask))
    checks.expect_finite_grads(lambda q, k, v: tc.scaled_dot_product_attention(q, k, v, mask)[0],
                               q, k, v)


def test_gradients_match_pytorch() -> None:
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 6, 8, generator=gen, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    mask = tc.causal_mask(6)
    ours = tc.scaled_dot_product_attention(q, k, v, mask)[0]
    grads = torch.autograd.grad(ours.sum(), (q, k, v))
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    expected = torch.autograd.grad(theirs.sum(), (q, k, v))
    for g, e, name in zip(grads, expected, "qkv", strict=True):
        checks.expect_close(g, e, f"gradient of {name}")


def test_scaling_is_by_sqrt_of_key_width() -> None:
    q = torch.ones(1, 1, 16)
    k = torch.cat([torch.ones(1, 1, 16), torch.zeros(1, 1, 16)], dim=1)  # scores 16 and 0
    _, weights = tc.scaled_dot_product_attention(q, k, torch.randn(1, 2, 4))
    expected = torch.softmax(torch.tensor([16.0, 0.0]) / 4.0, dim=0)  # sqrt(16) = 4
    checks.expect_close(weights[0, 0], expected)


def test_causal_attention_is_causal() -> None:
    k = torch.randn(1, 2, 7, 8)
    mask = tc.causal_mask(7)
    checks.expect_causal(lambda x: tc.scaled_dot_product_attention(x, x, x, mask)[0], k, dim=2)
    checks.expect_causal(lambda x: tc.fused_scaled_dot_product_attention(x, x, x, is_causal=True),
                         k, dim=2)


def torch_mha(d_model: int, heads: int, bias: bool = True) -> nn.MultiheadAttention:
    return nn.MultiheadAttention(d_model, heads, bias=bias, batch_first=True).eval()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_multihead_equals_torch_module(fused: bool, bias: bool) -> None:
    torch.manual_seed(0)
    for B, T, S, C, H in [(2, 5, 5, 16, 4), (3, 4, 9, 24, 3), (1, 1, 1, 8, 1), (2, 7, 7, 32, 8)]:
        reference = torch_mha(C, H, bias)
        ours = tc.MultiHeadAttention(C, H, bias=bias, fused=fused).eval()
        ours.load_from_torch(reference)
        x, memory = torch.randn(B, T, C), torch.randn(B, S, C)
        # self-attention
        checks.expect_close(ours(x), reference(x, x, x)[0], "self-attention")
        # cross-attention, with a padding mask: torch's key_padding_mask is True = ignore
        lengths = torch.randint(1, S + 1, (B,))
        mask = tc.padding_mask(lengths, S)
        expected = reference(x, memory, memory, key_padding_mask=~mask[:, 0, 0])[0]
        checks.expect_close(ours(x, memory, memory, mask), expected, "cross-attention")
        # causal self-attention: torch's attn_mask is True = blocked
        causal = tc.causal_mask(T)
        expected = reference(x, x, x, attn_mask=~causal)[0]
        checks.expect_close(ours(x, is_causal=True), expected, "causal self-attention")
        # the weights, averaged over heads, are what torch reports
        _, torch_weights = reference(x, memory, memory, key_padding_mask=~mask[:, 0, 0])
        checks.expect_close(ours.attention_weights(x, memory, mask).mean(1), torch_weights)


def test_multihead_gradients_equal_torch_module() -> None:
    torch.manual_seed(0)
    reference = torch_mha(16, 4).double()
    ours = tc.MultiHeadAttention(16, 4).double().load_from_torch(reference)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    ours(x, is_causal=True).pow(2).sum().backward()
    reference(x, x, x, attn_mask=~tc.causal_mask(6))[0].pow(2).sum().backward()
    checks.expect_close(ours.q_proj.weight.grad, reference.in_proj_weight.grad[:16])
    checks.expect_close(ours.v_proj.weight.grad, reference.in_proj_weight.grad[32:])
    checks.expect_close(ours.out_proj.weight.grad, reference.out_proj.weight.grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multihead_keeps_dtype(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    reference = torch_mha(16, 2)
    ours = tc.MultiHeadAttention(16, 2).load_from_torch(reference)
    x = torch.randn(2, 5, 16)
    out = ours.to(dtype)(x.to(dtype), is_causal=True)
    checks.expect_device_dtype(out, "cpu", dtype)
    expected = reference(x, x, x, attn_mask=~tc.causal_mask(5))[0].to(dtype)
    checks.expect_close(out, expected, rtol=5e-2, atol=5e-2)


def test_split_and_merge_heads() -> None:
    x = torch.arange(2 * 3 * 8.0).reshape(2, 3, 8)
    heads = tc.split_heads(x, 4)
    checks.expect_shape(heads, (2, 4, 3, 2))
    # head h of position t holds channels 2h, 2h+1 of position t: positions are never mixed
    assert torch.equal(heads[1, 2, 0], x[1, 0, 4:6])
    assert torch.equal(tc.merge_heads(heads), x)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: tc.scaled_dot_product_attention(torch.randn(4), torch.randn(4, 4),
                                                 torch.randn(4, 4)), "q: expected at least 2"),
        (lambda: tc.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 6),
                                                 torch.randn(2, 5, 4)), "k: expected size 4"),
        (lambda: tc.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 4),
                                                 torch.randn(2, 6, 4)), "v: expected size 5"),
        (lambda: tc.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(3, 5, 4),
                                                 torch.randn(3, 5, 4)), "do not broadcast"),
        (lambda: tc.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 4),
                                                 torch.randn(2, 5, 4), torch.ones(3, 4).bool()),
         "mask: expected a shape that broadcasts to the scores (2, 3, 5)"),
        (lambda: tc.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 4),
                                                 torch.randn(2, 5, 4), torch.ones(3, 5).int()),
         "mask: expected a bool mask"),
        (lambda: tc.scaled_dot_product_attention(torch.randn(2, 3, 4).long(),
                                                 torch.randn(2, 5, 4), torch.randn(2, 5, 4)),
         "q: expected a floating-point tensor"),
        (lambda: tc.scaled_dot_product_attention(torch.randn(2, 3, 4), torch.randn(2, 5, 4),
                                                 torch.randn(2, 5, 4).double()),
         "v: expected dtype torch.float32"),
        (lambda: tc.fused_scaled_dot_product_attention(
            torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4),
            tc.causal_mask(3), is_causal=True), "mask: pass either"),
        (lambda: tc.MultiHeadAttention(10, 3), "num_heads: expected a positive divisor"),
        (lambda: tc.MultiHeadAttention(8, 2)(torch.randn(2, 3, 6)), "query: expected size 8"),
        (lambda: tc.MultiHeadAttention(8, 2)(torch.randn(3, 8)), "query: expected 3 dimensions"),
        (lambda: tc.MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), torch.randn(2, 4, 8),
                                             torch.randn(2, 5, 8)), "key, value: expected"),
        (lambda: tc.MultiHeadAttention(8, 2)(torch.randn(2, 3, 8), mask=torch.ones(2, 3, 4) > 0),
         "mask: expected a shape"),
        (lambda: tc.MultiHeadAttention(8, 2).load_from_torch(torch_mha(8, 4)),
         "reference: expected embed_dim=8, num_heads=2"),
        (lambda: tc.split_heads(torch.randn(2, 3, 8), 3), "num_heads: expected a positive divisor"),
        (lambda: tc.merge_heads(torch.randn(2, 3, 8)), "x: expected 4 dimensions"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(call, message: str) -> None:
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    assert message in str(error.value)


def test_multihead_combines_an_additive_mask_with_causality() -> None:
    torch.manual_seed(0)
    reference = torch_mha(16, 4)
    ours = tc.MultiHeadAttention(16, 4).eval().load_from_torch(reference)
    x, bias = torch.randn(2, 5, 16), torch.randn(5, 5)
    expected = reference(x, x, x, attn_mask=bias.masked_fill(~tc.causal_mask(5), float("-inf")))[0]
    for fused in (True, False):
        ours.fused = fused
        checks.expect_close(ours(x, mask=bias, is_causal=True), expected, f"fused={fused}")
