"""tfcourse.hyena (chapter 7): causal convolution by FFT, the implicit filter, the Hyena operator
and language model (Poli et al., 2023, arXiv:2302.10866)."""

import math

import pytest
import torch
from torch import nn

from tfcourse import checks
from tfcourse.checks import ContractError
from tfcourse.hyena import (
    HyenaLM,
    HyenaOperator,
    ImplicitFilter,
    ShortConv,
    direct_causal_conv,
    fft_causal_conv,
    positional_features,
)

# (B, C, T, taps): odd T, T = 1, B = 1, filters shorter than the sequence
SHAPES = [(2, 3, 17, 17), (1, 4, 1, 1), (1, 2, 16, 5), (3, 1, 31, 31), (2, 3, 64, 10)]


def signal_and_filter(B: int, C: int, T: int, taps: int, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(B * 1000 + T)
    u = torch.randn(B, C, T, generator=gen, dtype=dtype)
    k = torch.randn(C, taps, generator=gen, dtype=dtype)
    return u, k


def circular_conv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The FFT convolution without padding (n = T): taps that reach back past 0 wrap around."""
    T = u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u, n=T) * torch.fft.rfft(k, n=T), n=T)


def small_operator(order: int = 2, d_model: int = 8, max_len: int = 32) -> HyenaOperator:
    torch.manual_seed(0)
    return HyenaOperator(d_model, max_len, order=order, filter_width=16, filter_features=9)


def small_lm(**kwargs) -> HyenaLM:
    torch.manual_seed(0)
    config = dict(max_len=32, d_model=16, num_layers=2, filter_width=16, filter_features=9)
    return HyenaLM(40, **{**config, **kwargs})


# --- causal convolution ---


@pytest.mark.parametrize("B, C, T, taps", SHAPES)
def test_fft_convolution_equals_the_direct_sum_in_float64(B, C, T, taps):
    u, k = signal_and_filter(B, C, T, taps)
    expected = direct_causal_conv(u, k)
    checks.expect_close(fft_causal_conv(u, k), expected, rtol=0, atol=1e-10)
    # y_t = Σ_{s ≤ t} k_s u_{t−s}, written out at the last position
    t = T - 1
    last = sum(k[:, s] * u[..., t - s] for s in range(taps))
    checks.expect_close(expected[..., t], last, rtol=0, atol=1e-12)


@pytest.mark.parametrize("B, C, T, taps", SHAPES)
def test_fft_convolution_equals_the_direct_sum_in_float32(B, C, T, taps):
    u, k = signal_and_filter(B, C, T, taps)
    out = fft_causal_conv(u.float(), k.float())
    checks.expect_device_dtype(out, "cpu", torch.float32)
    checks.expect_close(out, direct_causal_conv(u, k).float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fft_convolution_in_half_precision_keeps_the_dtype_and_matches_float32(dtype):
    u, k = signal_and_filter(2, 3, 64, 64, torch.float32)
    u, k = u.to(dtype), k.to(dtype)
    out = fft_causal_conv(u, k)
    checks.expect_device_dtype(out, "cpu", dtype)
    # same rounded inputs in float32: only the output's rounding to the half type differs
    expected = fft_causal_conv(u.float(), k.float())
    checks.expect_close(out.float(), expected, rtol=1e-2, atol=1e-2)


def test_fft_convolution_is_causal_and_the_unpadded_circular_one_is_not():
    u, k = signal_and_filter(2, 3, 16, 16, torch.float32)
    # float32 FFT rounding moves earlier outputs by about 1e-7, far below the tolerance
    checks.expect_causal(lambda u: fft_causal_conv(u, k), u, dim=2, atol=1e-5)
    with pytest.raises(ContractError, match="changed by"):
        checks.expect_causal(lambda u: circular_conv(u, k), u, dim=2, atol=1e-5)


# --- short convolution ---


def test_short_conv_is_the_causal_sum_over_its_taps():
    torch.manual_seed(0)
    conv = ShortConv(3, kernel_size=4)
    x = torch.randn(2, 3, 11)
    # Conv1d cross-correlates: after the left padding, weight[..., K − 1] meets x_t, so tap s
    # (the weight of x_{t−s}) is weight[..., K − 1 − s]
    w, b, K = conv.conv.weight[:, 0], conv.conv.bias, 4  # (C, K), (C,)
    expected = torch.stack([
        sum(w[:, K - 1 - s] * x[..., t - s] for s in range(K) if t - s >= 0) + b
        for t in range(11)], dim=-1)  # (B, C, T)
    checks.expect_close(conv(x), expected)
    checks.expect_causal(conv, x, dim=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_short_conv_in_half_precision_keeps_the_dtype(dtype):
    torch.manual_seed(0)
    conv, x = ShortConv(4), torch.randn(2, 4, 9)
    expected = conv(x)
    out = conv.to(dtype)(x.to(dtype))
    checks.expect_device_dtype(out, "cpu", dtype)
    checks.expect_close(out.float(), expected, rtol=3e-2, atol=3e-2)


# --- implicit filter ---


def test_positional_features_are_the_position_and_its_complex_exponentials():
    z = positional_features(5, 7, 20)  # E = 7: t / max_len, then 3 cosines and 3 sines
    assert z.shape == (5, 7)
    t = torch.arange(5.0)
    checks.expect_close(z[:, 0], t / 20)
    f = torch.linspace(1e-4, 2, 3)
    checks.expect_close(z[:, 1:4], torch.cos(2 * math.pi * f * t[:, None] / 20))
    checks.expect_close(z[:, 4:], -torch.sin(2 * math.pi * f * t[:, None] / 20))
    checks.expect_close(positional_features(20, 7, 20)[:5], z)


def test_implicit_filter_shape_and_a_shorter_filter_is_a_prefix():
    torch.manual_seed(0)
    filt = ImplicitFilter(6, 40, num_features=9, width=16)
    h = filt(40)
    assert h.shape == (6, 40)
    assert filt(1).shape == (6, 1)
    checks.expect_close(filt(13), h[:, :13], rtol=1e-6, atol=1e-7)


def test_implicit_filter_window_reaches_the_target_at_each_channels_decay():
    max_len, target = 100, 1e-2
    filt = ImplicitFilter(5, max_len, fast_decay=0.3, slow_decay=1.5, target=target)
    window = filt.window(151)  # (5, 151): long enough for the slowest channel's 1.5 × max_len
    assert window.shape == (5, 151)
    checks.expect_close(window[:, 0], torch.ones(5))
    for c, decay in enumerate([0.3, 0.6, 0.9, 1.2, 1.5]):  # spread from fast to slow
        t = round(decay * max_len)
        checks.expect_close(window[c, t], torch.tensor(target), rtol=1e-5, atol=0)
        alpha = -math.log(target) / decay
        checks.expect_close(window[c], torch.exp(-alpha * torch.arange(151.0) / max_len))


def test_implicit_filter_is_the_network_output_times_the_window():
    torch.manual_seed(0)
    filt = ImplicitFilter(4, 30, num_features=5, width=8, depth=3)
    z = positional_features(30, 5, 30)
    network = filt.ffn(z).T  # (channels, T): FFN(PositionalEncoding(t))
    checks.expect_close(filt(30) / filt.window(30), network, rtol=1e-4, atol=1e-6)
    # the windowed magnitude decays: the late taps are smaller than the network's output
    assert (filt(30)[:, -1].abs() < network[:, -1].abs()).all()


def test_implicit_filter_rejects_more_positions_than_max_len():
    filt = ImplicitFilter(2, 10)
    with pytest.raises(ValueError, match="T: expected at most max_len = 10"):
        filt(11)


def test_filter_network_size_does_not_grow_with_max_len():
    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(HyenaOperator(16, 64)) == count(HyenaOperator(16, 4096))
    assert count(ImplicitFilter(8, 64)) == count(ImplicitFilter(8, 4096))


# --- Hyena operator ---


@pytest.mark.parametrize("order", [1, 2, 3])
def test_operator_keeps_the_shape_for_each_order(order):
    op = small_operator(order)
    assert op(torch.randn(3, 20, 8)).shape == (3, 20, 8)
    assert op.filters(20).shape == (order, 8, 20)
    assert op.in_proj.out_features == (order + 1) * 8  # v, x¹ … x^N


def toeplitz(h: torch.Tensor) -> torch.Tensor:
    """(C, T) filters -> (C, T, T) matrices with H[c, t, s] = h[c, t − s] for s ≤ t, else 0."""
    T = h.shape[-1]
    lag = torch.arange(T)[:, None] - torch.arange(T)[None]  # (T, T): t − s
    return torch.where(lag >= 0, h[:, lag.clamp(min=0)], 0.0)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_operator_is_the_gated_recurrence_of_definition_3_1(order):
    op = small_operator(order)
    x = torch.randn(2, 12, 8)
    with torch.no_grad():
        projections = op.short_conv(op.in_proj(x).transpose(1, 2))  # (B, (N+1)C, T)
        v, *gates = projections.split(8, dim=1)
        h = op.filter(12).reshape(order, 8, 12)
        z = v
        for n in range(order):  # z^{n+1}_t = x^n_t (Σ_{s ≤ t} h^n_{t−s} z^n_s + b^n z^n_t)
            conv = torch.einsum("cts,bcs->bct", toeplitz(h[n]), z)
            z = gates[n] * (conv + op.skip[n, :, None] * z)
        expected = op.out_proj(z.transpose(1, 2))
        checks.expect_close(op(x), expected, rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_operator_parameter():
    op = small_operator(3)
    op(torch.randn(2, 10, 8)).square().sum().backward()
    for name, p in op.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_operator_is_causal():
    op = small_operator(2)
    checks.expect_causal(op, torch.randn(2, 16, 8), dim=1, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_operator_in_half_precision_keeps_the_dtype_and_matches_float32(dtype):
    op = small_operator(2)
    x = torch.randn(2, 16, 8)
    with torch.no_grad():
        expected = op(x)
        out = op.to(dtype)(x.to(dtype))
    checks.expect_device_dtype(out, "cpu", dtype)
    assert (out.float() - expected).abs().max() < 0.05 * expected.abs().max()


# --- language model ---


def test_lm_gives_logits_with_the_output_layer_tied_to_the_embeddings():
    lm = small_lm()
    assert lm(torch.randint(40, (3, 20))).shape == (3, 20, 40)
    assert lm.head.weight is lm.embed.weight
    with pytest.raises(ValueError, match="tokens: expected at most max_len = 32"):
        lm(torch.randint(40, (1, 33)))


def test_lm_is_causal():
    lm = small_lm().eval()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(40, (2, 12), generator=gen)
    with torch.no_grad():
        base = lm(tokens)
        for t in range(11):
            changed = tokens.clone()
            changed[:, t + 1:] = torch.randint(40, (2, 11 - t), generator=gen)
            moved = (lm(changed) - base)[:, : t + 1].abs().max().item()
            assert moved < 1e-4, f"logits up to {t} moved by {moved:.3g}"


def test_lm_trains_under_bfloat16_autocast():
    lm = small_lm()
    tokens = torch.randint(40, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lm(tokens)
        loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    for name, p in lm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# --- bad input ---

U, K = torch.randn(2, 3, 8), torch.randn(3, 8)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fft_causal_conv(U[0], K), ValueError, r"u: expected 3 dimensions \(B, C, T\)"),
    (lambda: fft_causal_conv(U, K[0]), ValueError, r"k: expected 2 dimensions \(C, T\)"),
    (lambda: fft_causal_conv(U.long(), K), TypeError, "u: expected a floating-point tensor"),
    (lambda: direct_causal_conv(U, K.int()), TypeError, "k: expected a floating-point tensor"),
    (lambda: fft_causal_conv(U, torch.randn(3, 9)), ValueError, "k: expected at most T = 8"),
    (lambda: fft_causal_conv(U, torch.randn(4, 8)), ValueError, r"k: expected size 3 .*channels"),
    (lambda: fft_causal_conv(U, K.to("meta")), ValueError, "k: expected device cpu like u"),
    (lambda: ShortConv(3)(torch.randn(2, 4, 8)), ValueError, r"x: expected size 3 .*channels"),
    (lambda: ShortConv(3)(U.long()), TypeError, "x: expected a floating-point tensor"),
    (lambda: ShortConv(3)(U[0]), ValueError, r"x: expected 3 dimensions \(B, C, T\)"),
    (lambda: positional_features(8, 8, 8), ValueError, "num_features: expected an odd int"),
    (lambda: ImplicitFilter(2, 8, num_features=4), ValueError, "num_features: expected an odd"),
    (lambda: ImplicitFilter(2, 8, fast_decay=2.0), ValueError, "fast_decay, slow_decay"),
    (lambda: ImplicitFilter(2, 8, target=1.5), ValueError, "target: expected a number"),
    (lambda: small_operator()(torch.randn(2, 5, 7)), ValueError, r"x: expected size 8 .*width"),
    (lambda: small_operator()(torch.randn(5, 8)), ValueError, r"x: expected 3 dimensions"),
    (lambda: small_operator()(torch.ones(2, 5, 8, dtype=torch.long)), TypeError,
     "x: expected a floating-point tensor"),
    (lambda: small_operator()(torch.randn(1, 33, 8)), ValueError, "x: expected at most max_len"),
    (lambda: HyenaOperator(8, 32, order=0), ValueError, "order: expected an int >= 1"),
    (lambda: small_lm()(torch.randn(2, 5)), TypeError, "tokens: expected integer token ids"),
])
def test_bad_input_is_rejected_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
