"""tfcourse.embeddings, feedforward, transformer: the encoder-decoder equals nn.Transformer, the
decoder is causal, padding changes nothing, and bad input gets a clear error."""

import math

import pytest
import torch
from torch import nn

import tfcourse as tc
from tfcourse import checks

B, S, T, C, H = 3, 11, 8, 32, 4


def small_transformer(**kwargs) -> tc.Transformer:
    options = dict(d_model=C, num_heads=H, num_encoder_layers=2, num_decoder_layers=2,
                   d_ff=64, dropout=0.0)
    return tc.Transformer(30, 20, **{**options, **kwargs}).eval()


def test_sinusoidal_encoding_follows_the_paper_and_shifts_are_rotations() -> None:
    pe = tc.sinusoidal_encoding(50, 16, dtype=torch.float64)
    pos, i = 37, 3
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos / 10000 ** (2 * i / 16)))
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos / 10000 ** (2 * i / 16)))
    assert tc.sinusoidal_encoding(4, 8).dtype == torch.float32
    for k in (1, 5, 20):
        rotation = tc.shift_rotation(k, 16)
        checks.expect_close(pe[:-k] @ rotation.T, pe[k:], name=f"R_{k}", atol=1e-12)


def test_positional_modules_add_the_right_rows_at_an_offset() -> None:
    x = torch.zeros(2, 5, 8)
    sinusoidal = tc.SinusoidalPositionalEncoding(8)
    checks.expect_close(sinusoidal(x, offset=3), tc.sinusoidal_encoding(8, 8)[3:].expand(2, 5, 8))
    learned = tc.LearnedPositionalEmbedding(10, 8)
    checks.expect_close(learned(x, offset=2), learned.weight[2:7].expand(2, 5, 8))
    with pytest.raises(ValueError, match="max_len=10"):
        learned(x, offset=6)


def test_token_embedding_scales_by_sqrt_c_and_starts_at_std_one_over_sqrt_c() -> None:
    torch.manual_seed(0)
    embedding = tc.TokenEmbedding(1000, 64)
    assert abs(embedding.weight.std().item() * 8 - 1) < 0.05
    tokens = torch.tensor([[3, 7]])
    checks.expect_close(embedding(tokens), embedding.weight[tokens] * 8)
    unscaled = tc.TokenEmbedding(1000, 64, scale=False)
    checks.expect_close(unscaled(tokens), unscaled.weight[tokens])


def test_feed_forward_is_position_wise_with_eight_c_squared_weights() -> None:
    ffn = tc.FeedForward(C, 4 * C)
    x = torch.randn(2, 7, C)
    perm = torch.randperm(7)
    checks.expect_close(ffn(x[:, perm]), ffn(x)[:, perm])
    assert sum(p.numel() for p in ffn.parameters()) == 8 * C * C + 5 * C


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_decoder_equals_nn_transformer(norm_first: bool) -> None:
    torch.manual_seed(0)
    reference = nn.Transformer(d_model=C, nhead=H, num_encoder_layers=2, num_decoder_layers=2,
                               dim_feedforward=64, dropout=0.0, batch_first=True,
                               norm_first=norm_first).eval()
    reference.encoder.use_nested_tensor = False
    ours = small_transformer(norm_first=norm_first).load_core_from_torch(reference)
    src_x, tgt_x = torch.randn(B, S, C), torch.randn(B, T, C)
    padding = torch.arange(S) >= torch.tensor([11, 7, 4])[:, None]  # (B, S), True = pad
    with torch.no_grad():
        expected = reference(src_x, tgt_x, tgt_mask=~tc.causal_mask(T),
                             src_key_padding_mask=padding, memory_key_padding_mask=padding)
        memory = ours.encoder(src_x, mask=~padding[:, None, None, :])
        got = ours.decoder(tgt_x, memory, memory_mask=~padding[:, None, None, :])
    checks.expect_close(got, expected, name="decoder output", atol=1e-5)


def test_decoder_output_at_t_does_not_depend_on_later_targets() -> None:
    torch.manual_seed(1)
    model = small_transformer(norm_first=True)
    src = torch.randint(1, 30, (B, S))
    tgt = torch.randint(1, 20, (B, T))
    with torch.no_grad():
        logits = model(src, tgt)
        for t in range(T - 1):
            changed = tgt.clone()
            changed[:, t + 1:] = torch.randint(1, 20, changed[:, t + 1:].shape)
            checks.expect_close(model(src, changed)[:, :t + 1], logits[:, :t + 1],
                                name=f"logits up to {t}")


def test_padded_source_positions_change_no_output() -> None:
    torch.manual_seed(2)
    model = small_transformer()
    src = torch.randint(1, 30, (1, 6))
    tgt = torch.randint(1, 20, (1, T))
    padded = torch.cat([src, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        checks.expect_close(model(padded, tgt), model(src, tgt), name="padded source")
        weights = model.cross_attention_weights(padded, tgt)  # (1, H, T, S)
    assert weights.shape == (1, H, T, 11)
    assert weights[..., 6:].abs().max() == 0
    checks.expect_rows_sum_to_one(weights)


def test_weight_tying_shares_one_table() -> None:
    tied = small_transformer(tie_weights=True)
    assert tied.head.weight is tied.tgt_embed.weight
    untied = small_transformer()
    assert untied.head.weight is not untied.tgt_embed.weight
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(untied) - count(tied) == 20 * C


def test_greedy_decode_with_cache_equals_recomputing_the_prefix() -> None:
    torch.manual_seed(3)
    model = small_transformer(norm_first=True)
    src = torch.randint(1, 30, (B, S))
    src[1, 5:] = 0
    out = model.greedy_decode(src, bos_id=1, eos_id=2, max_len=12)
    tokens = torch.ones(B, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(out.shape[1]):
            step = model(src, tokens)[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, step], dim=1)
    finished = (tokens[:, 1:] == 2).cumsum(1) - (tokens[:, 1:] == 2).long() > 0  # after EOS
    assert torch.equal(out, tokens[:, 1:].masked_fill(finished, 0))


def test_shift_right() -> None:
    tgt = torch.tensor([[7, 5, 2], [8, 2, 0]])
    assert torch.equal(tc.shift_right(tgt, 1), torch.tensor([[1, 7, 5], [1, 8, 2]]))


def test_bad_input_names_the_argument() -> None:
    model = small_transformer()
    with pytest.raises(ValueError, match="src"):
        model.encode(torch.ones(5, dtype=torch.long))
    with pytest.raises(TypeError, match="tgt_in"):
        model(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3))
    with pytest.raises(ValueError, match="vocab_size=30"):
        model.encode(torch.full((1, 3), 30))
    with pytest.raises(ValueError, match="d_model"):
        tc.sinusoidal_encoding(4, 7)
    with pytest.raises(ValueError, match="memory"):
        tc.DecoderLayer(C, H, 64)(torch.randn(1, 2, C))
    with pytest.raises(ValueError, match="num_layers"):
        tc.Encoder(0, C, H, 64)
    with pytest.raises(ValueError, match="activation"):
        tc.FeedForward(C, 64, activation="tanh")
    with pytest.raises(TypeError, match="reference"):
        model.load_core_from_torch(nn.Linear(2, 2))
