"""tfcourse.language_models and kv_cache: cached decoding is exact, the decoder-only model is
causal, the MLM corruption follows 80/10/10, and bad input gets a clear error."""

import pytest
import torch
import torch.nn.functional as F

import tfcourse as tc
from tfcourse import checks
from tfcourse.kv_cache import KVCache

V = 40


def tiny_lm(**kwargs) -> tc.DecoderOnlyLM:
    torch.manual_seed(0)
    options = dict(max_len=64, d_model=32, num_heads=4, num_layers=2)
    return tc.DecoderOnlyLM(V, **{**options, **kwargs}).eval()


def test_cached_forward_equals_the_full_forward_position_by_position() -> None:
    model = tiny_lm().double()
    tokens = torch.randint(V, (3, 20))
    with torch.no_grad():
        full = model(tokens)  # (B, T, V)
        cache = model.new_cache()
        pieces = [model(tokens[:, :7], cache=cache)]  # a prompt, then one token at a time
        pieces += [model(tokens[:, t:t + 1], cache=cache) for t in range(7, 20)]
    checks.expect_close(torch.cat(pieces, dim=1), full, name="cached logits", atol=1e-10)
    assert len(cache[0].self_attn) == 20


@pytest.mark.parametrize("greedy", [True, False])
def test_generate_with_the_cache_gives_the_tokens_of_recomputation(greedy: bool) -> None:
    model = tiny_lm().double()
    prompt = torch.randint(V, (4, 5))
    runs = [model.generate(prompt, 40, greedy=greedy, top_k=10, use_cache=use_cache,
                           generator=torch.Generator().manual_seed(7))
            for use_cache in (True, False)]
    assert runs[0].shape == (4, 45)
    assert torch.equal(runs[0][:, :5], prompt)
    assert torch.equal(runs[0], runs[1])


def test_generate_leaves_the_training_mode_as_it_was() -> None:
    model = tiny_lm(dropout=0.1).train()
    model.generate(torch.zeros(1, 2, dtype=torch.long), 3)
    assert model.training


def test_top_k_one_is_greedy_and_temperature_sharpens() -> None:
    model = tiny_lm()
    prompt = torch.randint(V, (2, 3))
    greedy = model.generate(prompt, 10, greedy=True)
    assert torch.equal(model.generate(prompt, 10, top_k=1), greedy)
    assert torch.equal(model.generate(prompt, 10, temperature=1e-4), greedy)


def test_decoder_only_model_is_causal() -> None:
    model = tiny_lm()
    tokens = torch.randint(V, (2, 12))
    changed = tokens.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % V
    with torch.no_grad():
        checks.expect_close(model(changed)[:, :6], model(tokens)[:, :6])


def test_encoder_only_model_sees_both_directions_and_ignores_padding() -> None:
    torch.manual_seed(0)
    model = tc.EncoderOnlyLM(V, max_len=32, d_model=32, num_heads=4, num_layers=2).eval()
    tokens = torch.randint(6, V, (1, 10))
    changed = tokens.clone()
    changed[0, -1] = (changed[0, -1] + 1 - 6) % (V - 6) + 6
    padded = torch.cat([tokens, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert (model(changed)[:, 0] - model(tokens)[:, 0]).abs().max() > 1e-4  # sees later
        checks.expect_close(model(padded)[:, :10], model(tokens), name="padded input")
    assert model.head.weight is model.embed.weight


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_sequence_classifier_fine_tunes_the_encoder(pooling: str) -> None:
    torch.manual_seed(0)
    encoder = tc.EncoderOnlyLM(V, max_len=32, d_model=32, num_heads=4, num_layers=1)
    classifier = tc.SequenceClassifier(encoder, 3, pooling=pooling)
    tokens = torch.randint(6, V, (5, 9))
    tokens[0, 4:] = 0
    logits = classifier(tokens)
    assert logits.shape == (5, 3)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1])).backward()
    assert encoder.embed.weight.grad is not None and classifier.classifier.weight.grad is not None
    if pooling == "mean":  # padding does not count in the mean
        with torch.no_grad():
            checks.expect_close(classifier.eval()(tokens[:1, :4]), classifier(tokens[:1]))


def test_next_token_loss_scores_each_position_on_the_next_token() -> None:
    logits = torch.randn(2, 5, V)
    tokens = torch.randint(1, V, (2, 5))
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    checks.expect_close(tc.next_token_loss(logits, tokens), expected)
    tokens[1, 3:] = 0
    real = tokens[:, 1:] != 0
    log_p = logits[:, :-1].log_softmax(-1).gather(-1, tokens[:, 1:, None])[..., 0]
    checks.expect_close(tc.next_token_loss(logits, tokens, ignore_index=0),
                        -(log_p * real).sum() / real.sum())
    with pytest.raises(ValueError, match="logits"):
        tc.next_token_loss(logits[:, :4], tokens)


def test_mask_tokens_follows_the_80_10_10_rule() -> None:
    specials = range(6)
    tokens = torch.randint(6, 1000, (200, 500))
    tokens[:, :3] = 5  # special tokens are never selected
    before = tokens.clone()
    inputs, labels = tc.mask_tokens(tokens, mask_id=4, vocab_size=1000, special_ids=specials,
                                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, before)
    selected = labels != -100
    assert not selected[:, :3].any()
    assert torch.equal(labels[selected], tokens[selected])
    assert torch.equal(inputs[~selected], tokens[~selected])
    n = selected.sum().item()
    assert abs(n / (200 * 497) - 0.15) < 0.005
    masked = (inputs[selected] == 4).sum().item() / n
    kept = (inputs[selected] == tokens[selected]).sum().item() / n
    assert abs(masked - 0.8) < 0.01 and abs(kept - 0.1) < 0.01  # the rest: random tokens
    assert inputs[selected & (inputs != 4)].min() >= 6  # random tokens are never special


def test_kv_cache_appends_and_a_static_cache_is_filled_once() -> None:
    cache = KVCache()
    k = torch.randn(2, 4, 3, 8)
    cache.append(k, k)
    keys, _ = cache.append(k[:, :, :1], k[:, :, :1])
    assert keys.shape == (2, 4, 4, 8) and len(cache) == 4
    with pytest.raises(ValueError, match="keys"):
        cache.append(torch.randn(3, 4, 1, 8), torch.randn(3, 4, 1, 8))
    static = KVCache(static=True)
    static.append(k, k)
    with pytest.raises(RuntimeError, match="static"):
        static.append(k, k)


def test_bad_input_names_the_argument() -> None:
    model = tiny_lm()
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.zeros(1, 60, dtype=torch.long), 10)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 3, temperature=0)
    with pytest.raises(TypeError, match="tokens"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="mask_prob"):
        tc.mask_tokens(torch.ones(2, 3, dtype=torch.long), mask_id=4, vocab_size=10,
                       mask_prob=0)
    with pytest.raises(TypeError, match="encoder"):
        tc.SequenceClassifier(model, 2)
