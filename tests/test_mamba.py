"""tfcourse.mamba and tfcourse.norms (chapter 8): the Mamba block against Figure 3, its decoding
step, the time-invariant variant, Jamba's inner norms, the language model and RMSNorm (Gu and
Dao, 2023, arXiv:2312.00752)."""

import math

import pytest
import torch
import torch.nn.functional as F

from tfcourse import checks
from tfcourse.mamba import MambaLM, MambaMixer, MambaState
from tfcourse.norms import RMSNorm
from tfcourse.ssm import discretize, selective_scan_sequential, ssm_convolution

VARIANTS = [{}, {"inner_norms": True}, {"selective": False}, {"d_conv": 1}, {"scan": "sequential"}]


def small_mixer(dtype: torch.dtype = torch.float64, **kwargs) -> MambaMixer:
    torch.manual_seed(0)
    return MambaMixer(8, d_state=4, **kwargs).to(dtype)  # Cᵢ = 16, R = 1, K = 4


def small_lm(**kwargs) -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(30, d_model=16, num_layers=2, d_state=4, **kwargs)


def inputs(B: int = 2, T: int = 12, C: int = 8, dtype: torch.dtype = torch.float64, seed: int = 0):
    return torch.randn(B, T, C, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- RMSNorm ---


def test_rmsnorm_divides_by_the_root_mean_square_and_scales():
    norm = RMSNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 6))
    x = torch.randn(3, 5, 6) * 4 + 1
    rms = torch.sqrt(x.square().mean(-1, keepdim=True) + 1e-6)
    out = norm(x)
    checks.expect_close(out, x / rms * norm.weight, mistakes={
        "centred, as LayerNorm": F.layer_norm(x, (6,), norm.weight, eps=1e-6)})
    checks.expect_close((out / norm.weight).square().mean(-1), torch.ones(3, 5), rtol=1e-5,
                        atol=1e-5)  # unit root mean square before the gain


def test_rmsnorm_of_half_precision_is_computed_in_float32():
    norm = RMSNorm(64)
    x = torch.randn(4, 64).to(torch.bfloat16) * 30
    out = norm(x)
    checks.expect_device_dtype(out, "cpu", torch.bfloat16)
    expected = x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + 1e-6)
    assert torch.equal(out, expected.to(torch.bfloat16))


# --- the mixer ---


def test_mixer_parameters_have_the_papers_shapes():
    mixer = small_mixer()
    C, Ci, N, R, K = 8, 16, 4, 1, 4
    shapes = {name: tuple(p.shape) for name, p in mixer.named_parameters()}
    assert shapes == {"in_proj.weight": (2 * Ci, C), "conv.weight": (Ci, 1, K), "conv.bias": (Ci,),
                      "x_proj.weight": (R + 2 * N, Ci), "dt_proj.weight": (Ci, R),
                      "dt_proj.bias": (Ci,), "A_log": (Ci, N), "D": (Ci,),
                      "out_proj.weight": (C, Ci)}
    assert mixer(inputs()).shape == (2, 12, 8)
    assert MambaMixer(16, expand=3, dt_rank=5).x_proj.weight.shape == (5 + 32, 48)


def test_mixer_starts_with_s4d_real_A_unit_D_and_log_uniform_steps():
    torch.manual_seed(0)
    mixer = MambaMixer(256, d_state=16)  # 512 channels
    expected_A = -torch.arange(1.0, 17.0).expand(512, 16)
    checks.expect_close(mixer.A, expected_A, mistakes={"A = exp(A_log), positive": -expected_A})
    checks.expect_close(mixer.D.detach(), torch.ones(512))
    dt = F.softplus(mixer.dt_proj.bias.detach())  # Δ for a zero input
    assert 0.001 <= dt.min() and dt.max() <= 0.1
    assert 0.4 < (dt < 0.01).float().mean() < 0.6  # 0.01 is the geometric middle of the range
    assert dt.min() < 0.0015 and dt.max() > 0.07  # spread over the whole range


def test_step_sizes_are_the_softplus_of_the_rank_R_projection():
    mixer = small_mixer()
    u = inputs(2, 5, 16) * 10  # large inputs: Δ must stay positive
    delta, B, C = mixer.ssm_parameters(u)
    dt, B_expected, C_expected = mixer.x_proj(u).split([1, 4, 4], dim=-1)
    checks.expect_close(delta, F.softplus(mixer.dt_proj(dt)))
    checks.expect_close(B, B_expected)
    checks.expect_close(C, C_expected)
    assert (delta > 0).all()
    zero = mixer.ssm_parameters(torch.zeros(1, 16, dtype=torch.float64))[0][0]
    bias = mixer.dt_proj.bias
    checks.expect_close(zero, F.softplus(bias), mistakes={"Δ without the softplus": bias})


def causal_depthwise_conv(u: torch.Tensor, conv: torch.nn.Conv1d) -> torch.Tensor:
    """Σ_{s<K} w_s u_{t−s} + b per channel, term by term: (B, T, Cᵢ) → (B, T, Cᵢ)."""
    w, K, T = conv.weight[:, 0], conv.weight.shape[-1], u.shape[1]  # (Cᵢ, K)
    return torch.stack([sum(w[:, K - 1 - s] * u[:, t - s] for s in range(K) if t - s >= 0)
                        + conv.bias for t in range(T)], dim=1)


@pytest.mark.parametrize("kwargs", [{}, {"inner_norms": True}])
def test_mixer_is_the_block_of_figure_3(kwargs):
    mixer = small_mixer(**kwargs)
    x = inputs()
    with torch.no_grad():
        u, z = mixer.in_proj(x).split(16, dim=-1)
        u = F.silu(causal_depthwise_conv(u, mixer.conv))
        dt, B, C = mixer.x_proj(u).split([1, 4, 4], dim=-1)
        if kwargs:
            dt, B, C = mixer.dt_norm(dt), mixer.B_norm(B), mixer.C_norm(C)
        delta = F.softplus(mixer.dt_proj(dt))
        A = -torch.exp(mixer.A_log)
        y = selective_scan_sequential(u, delta, A, B, C, mixer.D) * F.silu(z)
        checks.expect_close(mixer(x), mixer.out_proj(y))


def test_inner_norms_give_B_C_and_deltas_input_unit_root_mean_square():
    mixer = small_mixer(inner_norms=True)
    u = inputs(2, 5, 16) * 7
    delta, B, C = mixer.ssm_parameters(u)
    ones = torch.ones(2, 5, dtype=torch.float64)
    checks.expect_close(B.square().mean(-1), ones, rtol=1e-5, atol=1e-5)
    checks.expect_close(C.square().mean(-1), ones, rtol=1e-5, atol=1e-5)
    dt = mixer.x_proj(u)[..., :1]  # R = 1: its RMSNorm is its sign times the gain
    checks.expect_close(delta, F.softplus(mixer.dt_proj(torch.sign(dt))), rtol=1e-5, atol=1e-6)
    plain = small_mixer()
    assert not torch.allclose(plain.ssm_parameters(u)[1].square().mean(-1), ones, rtol=0.1)


@pytest.mark.parametrize("kwargs", VARIANTS)
def test_step_gives_the_forward_output_at_every_position(kwargs):
    mixer = small_mixer(**kwargs)
    x = inputs()
    with torch.no_grad():
        expected = mixer(x)
        state = mixer.new_state(2)
        for t in range(12):
            y_t, state = mixer.step(x[:, t], state)
            checks.expect_close(y_t, expected[:, t], rtol=1e-10, atol=1e-12)
            # the state has one size whatever the position
            assert state.conv.shape == (2, 16, mixer.d_conv - 1) and state.ssm.shape == (2, 16, 4)


@pytest.mark.parametrize("prompt_len", [2, 7])  # shorter and longer than the K − 1 = 3 window
def test_step_continues_from_the_state_of_a_forward_pass(prompt_len):
    mixer = small_mixer()
    x = inputs()
    with torch.no_grad():
        expected = mixer(x)
        _, state = mixer(x[:, :prompt_len], return_state=True)
        assert isinstance(state, MambaState) and state.conv.shape == (2, 16, 3)
        for t in range(prompt_len, 12):
            y_t, state = mixer.step(x[:, t], state)
            checks.expect_close(y_t, expected[:, t], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"selective": False}])
def test_mixer_is_causal(kwargs):
    checks.expect_causal(small_mixer(torch.float32, **kwargs), inputs(dtype=torch.float32),
                         dim=1, atol=1e-5)


def test_parallel_and_sequential_scans_give_the_same_mixer():
    parallel, sequential = small_mixer(), small_mixer(scan="sequential")
    sequential.load_state_dict(parallel.state_dict())
    x = inputs(2, 40)
    checks.expect_close(parallel(x), sequential(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"inner_norms": True}, {"selective": False}])
def test_gradients_reach_every_mixer_parameter(kwargs):
    mixer = small_mixer(torch.float32, **kwargs)
    mixer(inputs(dtype=torch.float32)).square().sum().backward()
    for name, p in mixer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_time_invariant_mixer_has_one_ssm_for_every_position_a_convolution():
    mixer = small_mixer(selective=False)
    assert {"dt_bias", "B", "C"} <= dict(mixer.named_parameters()).keys()
    assert not hasattr(mixer, "x_proj")
    u = inputs(2, 20, 16)
    delta, B, C = mixer.ssm_parameters(u)
    other = mixer.ssm_parameters(u * 5 + 1)
    for a, b in zip((delta, B, C), other, strict=True):
        assert torch.equal(a, b)  # nothing depends on the input
    with torch.no_grad():
        scanned = selective_scan_sequential(u, delta, mixer.A, B, C, mixer.D)
        A_bar, B_bar = discretize(F.softplus(mixer.dt_bias), mixer.A, mixer.B, method="euler")
        convolved = ssm_convolution(u, A_bar, B_bar, mixer.C.expand(16, 4)) + mixer.D * u
    checks.expect_close(scanned, convolved, rtol=1e-9, atol=1e-10)


# --- the language model ---


def test_lm_gives_logits_with_the_output_layer_tied_to_the_embeddings():
    lm = small_lm()
    assert lm(torch.randint(30, (3, 20))).shape == (3, 20, 30)
    assert lm.head.weight is lm.embed.weight
    assert not any("pos" in name for name, _ in lm.named_parameters())


def test_lm_is_causal():
    lm = small_lm().eval()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(30, (2, 12), generator=gen)
    with torch.no_grad():
        base = lm(tokens)
        for t in range(11):
            changed = tokens.clone()
            changed[:, t + 1:] = torch.randint(30, (2, 11 - t), generator=gen)
            moved = (lm(changed) - base)[:, : t + 1].abs().max().item()
            assert moved < 1e-4, f"logits up to {t} moved by {moved:.3g}"


@pytest.mark.parametrize("kwargs", [{}, {"selective": False, "d_conv": 2}])
def test_lm_step_gives_the_forward_logits_at_every_position(kwargs):
    lm = small_lm(**kwargs).double()
    tokens = torch.randint(30, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = lm(tokens)
        state = lm.new_state(2)
        for t in range(10):
            logits, state = lm.step(tokens[:, t], state)
            checks.expect_close(logits, expected[:, t], rtol=1e-10, atol=1e-10)


def test_greedy_generation_is_the_argmax_of_the_full_forward_pass():
    lm = small_lm()
    prompt = torch.randint(30, (2, 5), generator=torch.Generator().manual_seed(2))
    lm.train()
    out = lm.generate(prompt, 6, greedy=True)
    assert lm.training  # the mode is restored
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    lm.eval()
    with torch.no_grad():
        expected = prompt
        for _ in range(6):  # rerun the whole sequence for every token
            expected = torch.cat([expected, lm(expected)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, expected)


def test_sampling_draws_from_the_softmax_of_the_full_forward_pass():
    lm = small_lm().double()  # float64: the step's and the forward's logits agree to ~1e-15
    prompt = torch.randint(30, (3, 4), generator=torch.Generator().manual_seed(3))
    out = lm.generate(prompt, 8, temperature=2.0, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    expected = prompt
    with torch.no_grad():
        for _ in range(8):  # the same draws, from the logits of the whole sequence
            probs = (lm(expected)[:, -1] / 2.0).softmax(-1)
            expected = torch.cat([expected, torch.multinomial(probs, 1, generator=gen)], dim=1)
    assert torch.equal(out, expected)
    assert len(set(out[:, 4:].flatten().tolist())) > 3  # the draws vary: a test with teeth
    top1 = lm.generate(prompt, 8, top_k=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(top1, lm.generate(prompt, 8, greedy=True))


def test_lm_trains_under_bfloat16_autocast():
    lm = small_lm()
    tokens = torch.randint(30, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lm(tokens)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
    loss.backward()
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    for name, p in lm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


# --- bad input ---

MIXER = small_mixer(torch.float32)
STATE = MIXER.new_state(2)


@pytest.mark.parametrize("call, error, match", [
    (lambda: MambaMixer(0), ValueError, "d_model: expected an int >= 1"),
    (lambda: MambaMixer(8, d_state=0), ValueError, "d_state: expected an int >= 1"),
    (lambda: MambaMixer(8, dt_rank=0), ValueError, "dt_rank: expected an int >= 1"),
    (lambda: MambaMixer(8, scan="fast"), ValueError, r"scan: expected one of \['parallel'"),
    (lambda: MambaMixer(8, dt_min=0.2), ValueError, "dt_min, dt_max: expected 0 < dt_min"),
    (lambda: MambaMixer(8, selective=False, inner_norms=True), ValueError, "inner_norms:"),
    (lambda: MIXER(torch.randn(2, 5, 7)), ValueError, r"x: expected size 8 .*C, the model width"),
    (lambda: MIXER(torch.randn(5, 8)), ValueError, r"x: expected 3 dimensions \(B, T, C\)"),
    (lambda: MIXER(torch.ones(2, 5, 8, dtype=torch.long)), TypeError,
     "x: expected a floating-point tensor"),
    (lambda: MIXER.step(torch.randn(2, 5, 8), STATE), ValueError,
     r"x_t: expected 2 dimensions \(B, C\)"),
    (lambda: MIXER.step(torch.randn(2, 8), (STATE.conv, STATE.ssm)), TypeError,
     "state: expected a MambaState"),
    (lambda: MIXER.step(torch.randn(3, 8), STATE), ValueError,
     r"state.conv: expected shape \(3, 16, 3\) for a batch of 3"),
    (lambda: MIXER.new_state(0), ValueError, "batch_size: expected an int >= 1"),
    (lambda: RMSNorm(4)(torch.randn(2, 5)), ValueError, r"x: expected size 4 .*normalised width"),
    (lambda: RMSNorm(4, eps=0), ValueError, "eps: expected a number > 0"),
    (lambda: small_lm()(torch.randn(2, 5)), TypeError, "tokens: expected integer token ids"),
    (lambda: small_lm().step(torch.zeros(2, 1, dtype=torch.long), small_lm().new_state(2)),
     ValueError, r"token: expected 1 dimension \(B,\)"),
    (lambda: small_lm().step(torch.zeros(2, dtype=torch.long), []), ValueError,
     "state: expected a list of 2 MambaState"),
    (lambda: small_lm().generate(torch.zeros(1, 3, dtype=torch.long), 0), ValueError,
     "max_new_tokens: expected an int >= 1"),
    (lambda: small_lm().generate(torch.zeros(1, 3, dtype=torch.long), 2, temperature=0),
     ValueError, "temperature: expected a number > 0"),
])
def test_bad_input_is_rejected_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_dt_rank_default_is_a_sixteenth_of_the_width_rounded_up():
    for C in (1, 16, 17, 64, 100):
        assert MambaMixer(C, d_state=2).dt_rank == math.ceil(C / 16)
