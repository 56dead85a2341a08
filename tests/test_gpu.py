"""On CUDA: attention in float16 and bfloat16 agrees with float32, and nothing leaves the device.

Marked ``gpu``: skipped where no GPU is present (CI), run on a GPU machine with
``pytest -m gpu``."""

import pytest
import torch
from torch import nn

import tfcourse as tc
from tfcourse import checks
from tfcourse.bench.attention import attention_cost

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding"])
def test_half_precision_attention_matches_float32(dtype: torch.dtype, mask_kind: str) -> None:
    gen = torch.Generator(device=CUDA).manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 128, 64, device=CUDA, generator=gen).unbind()
    mask = {"none": None, "causal": tc.causal_mask(128, device=CUDA),
            "padding": tc.padding_mask(torch.tensor([128, 37], device=CUDA), 128)}[mask_kind]
    reference, _ = tc.scaled_dot_product_attention(q, k, v, mask)
    half = [t.to(dtype) for t in (q, k, v)]
    explicit, weights = tc.scaled_dot_product_attention(*half, mask)
    fused = tc.fused_scaled_dot_product_attention(*half, mask)
    for name, out in (("explicit", explicit), ("fused", fused)):
        checks.expect_device_dtype(out, "cuda", dtype, name)
        checks.expect_close(out.float(), reference, name, rtol=2e-2, atol=2e-2)
    checks.expect_rows_sum_to_one(weights, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_multihead_on_cuda_matches_torch_in_float32(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(64, 8, batch_first=True).to(CUDA).eval()
    ours = tc.MultiHeadAttention(64, 8).to(CUDA).eval().load_from_torch(reference)
    x = torch.randn(4, 50, 64, device=CUDA)
    expected = reference(x, x, x, attn_mask=~tc.causal_mask(50, device=CUDA))[0]
    with torch.autocast("cuda", dtype=dtype):
        out = ours(x, is_causal=True)
    checks.expect_device_dtype(out, "cuda", dtype)
    checks.expect_close(out.float(), expected, rtol=3e-2, atol=3e-2)
    checks.expect_finite_grads(lambda x: ours.to(dtype)(x, is_causal=True), x.to(dtype))


def test_benchmark_measures_cuda_memory() -> None:
    rows = attention_cost([1024, 2048], device=CUDA, repeats=2)
    peak = {(r["length"], r["path"]): r["peak_mib"] for r in rows}
    assert peak[(2048, "explicit")] >= 8 * 2048**2 * 4 / 2**20  # the (H, T, T) weights
    assert peak[(2048, "fused")] < peak[(2048, "explicit")] / 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_transformer_on_cuda_matches_the_cpu(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = tc.Transformer(30, 20, d_model=64, num_heads=4, num_encoder_layers=2,
                           num_decoder_layers=2, d_ff=128, dropout=0.0).eval()
    src, tgt = torch.randint(1, 30, (4, 13)), torch.randint(1, 20, (4, 9))
    src[2, 7:] = 0
    with torch.no_grad():
        expected = model(src, tgt)
        model.to(CUDA)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            got = model(src.to(CUDA), tgt.to(CUDA))
        out = model.greedy_decode(src.to(CUDA), bos_id=1, eos_id=2, max_len=8)
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2
    checks.expect_close(got.float().cpu(), expected, rtol=tolerance, atol=tolerance)
    assert out.device.type == "cuda" and out.shape[0] == 4


def test_kv_cache_generation_on_cuda_equals_recomputation() -> None:
    torch.manual_seed(0)
    model = tc.DecoderOnlyLM(64, max_len=128, d_model=64, num_heads=4, num_layers=2).to(CUDA)
    prompt = torch.randint(64, (3, 8), device=CUDA)
    cached = model.generate(prompt, 100, greedy=True)
    recomputed = model.generate(prompt, 100, greedy=True, use_cache=False)
    assert cached.device.type == "cuda"
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_token_merging_on_cuda_in_bfloat16_matches_float32(pool: str) -> None:
    from tfcourse.tome import ToMeViT
    from tfcourse.vit import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=16, patch_size=4, d_model=32, num_heads=4, num_layers=3,
                              d_ff=64, pool=pool).to(CUDA).eval()
    images = torch.rand(64, 1, 16, 16, device=CUDA)
    T0 = model.pos_embed.shape[1]
    with torch.no_grad():
        plain = model(images)
        exact = ToMeViT(model, 0)(images)
        tome = ToMeViT(model, 3)
        expected = tome(images)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = tome.forward_merged(images)
    checks.expect_close(exact, plain, rtol=0, atol=1e-6)
    assert out.logits.device.type == "cuda" and torch.isfinite(out.logits).all()
    assert out.size.shape[1] == tome.token_counts[-1]
    assert torch.equal(out.size.sum(dim=1), torch.full_like(out.size.sum(dim=1), T0))
    assert torch.equal(out.source.sum(dim=1), torch.ones_like(out.source.sum(dim=1)))
    # bf16 may tip a near tie between two matches: compare on average, not element by element
    assert (out.logits.float() - expected).abs().mean() < 0.05 * expected.abs().mean() + 0.02
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ToMeViT(model, 3)(images).float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("token_mixing", [False, True])
def test_activator_on_cuda_matches_the_cpu_and_trains_in_bfloat16(token_mixing: bool) -> None:
    torch.manual_seed(0)
    model = tc.ActivatorClassifier(image_size=32, patch_size=4, in_channels=3, d_model=64,
                                   d_hidden=128, num_layers=2, dropout=0.0,
                                   token_mixing=token_mixing).eval()
    images = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        expected = model(images)
        model.to(CUDA)
        out = model(images.to(CUDA))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(images.to(CUDA))
    checks.expect_device_dtype(out, "cuda", torch.float32)
    checks.expect_close(out.cpu(), expected, rtol=1e-4, atol=1e-4)
    assert (half.float() - out).abs().mean() < 0.05 * out.abs().mean() + 0.02
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(images.to(CUDA)).float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_hyena_on_cuda_matches_the_cpu_and_trains_under_bfloat16_autocast() -> None:
    from tfcourse.hyena import fft_causal_conv

    gen = torch.Generator().manual_seed(0)
    u, k = torch.randn(2, 8, 1000, generator=gen), torch.randn(8, 1000, generator=gen)
    expected = fft_causal_conv(u, k)
    out = fft_causal_conv(u.to(CUDA), k.to(CUDA))
    checks.expect_device_dtype(out, "cuda", torch.float32)
    checks.expect_close(out.cpu(), expected, rtol=1e-4, atol=1e-4)
    half = fft_causal_conv(u.to(CUDA, torch.bfloat16), k.to(CUDA, torch.bfloat16))
    checks.expect_device_dtype(half, "cuda", torch.bfloat16)
    assert (half.float() - out).abs().max() < 0.02 * out.abs().max()
    torch.manual_seed(0)
    model = tc.HyenaLM(50, max_len=256, d_model=64, num_layers=2).to(CUDA)
    tokens = torch.randint(50, (4, 256), device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(tokens)
    assert logits.device.type == "cuda" and torch.isfinite(logits).all()
    logits.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_selective_scans_on_cuda_match_the_cpu_in_float32_and_bfloat16() -> None:
    from tfcourse.bench.scan import scan_inputs

    inputs = [t.requires_grad_() for t in scan_inputs(2, 333, 16, 8)]
    expected = tc.selective_scan_sequential(*inputs)
    expected_grads = torch.autograd.grad(expected.square().sum(), inputs)
    on_cuda = [t.detach().to(CUDA).requires_grad_() for t in inputs]
    for scan in (tc.selective_scan_sequential, tc.selective_scan_parallel):
        y = scan(*on_cuda)
        checks.expect_device_dtype(y, "cuda", torch.float32)
        checks.expect_close(y.cpu(), expected, rtol=1e-4, atol=1e-4)
        grads = torch.autograd.grad(y.square().sum(), on_cuda)
        for got, want in zip(grads, expected_grads, strict=True):
            assert (got.cpu() - want).abs().max() <= 1e-3 * want.abs().max()
    half = tc.selective_scan_parallel(*[t.detach().to(CUDA, torch.bfloat16) for t in inputs])
    checks.expect_device_dtype(half, "cuda", torch.bfloat16)
    assert (half.float().cpu() - expected).abs().max() < 0.05 * expected.abs().max()


def test_mamba_on_cuda_decodes_step_by_step_and_trains_under_bfloat16_autocast() -> None:
    torch.manual_seed(0)
    model = tc.MambaLM(50, d_model=32, num_layers=2).to(CUDA).eval()
    tokens = torch.randint(50, (2, 40), device=CUDA)
    with torch.no_grad():
        full = model(tokens)
        state = model.new_state(2)
        stepped = []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            stepped.append(logits)
    checks.expect_device_dtype(state[0].ssm, "cuda", torch.float32)
    checks.expect_close(torch.stack(stepped, 1), full, rtol=1e-4, atol=1e-4)
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(tokens)
    assert torch.isfinite(logits).all()
    logits.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_tiny_jamba_on_cuda_matches_the_cpu_and_keeps_its_decoding_state_constant() -> None:
    from tfcourse.bench.decoding import decoding_memory

    torch.manual_seed(0)
    model = tc.JambaLM(tc.JambaConfig(vocab_size=40, max_len=64))
    tokens = torch.randint(40, (2, 48))
    expected = model(tokens)
    logits = model.to(CUDA)(tokens.to(CUDA))
    checks.expect_close(logits.cpu(), expected, rtol=1e-4, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(tokens.to(CUDA)).float().square().mean() + 0.01 * model.aux_loss()
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    rows = decoding_memory([1024, 4096], device="cuda")
    state = {(r["model"], r["length"]): r["state_mib"] for r in rows}
    assert state[("Mamba", 1024)] == state[("Mamba", 4096)]
    assert state[("attention", 4096)] == 4 * state[("attention", 1024)]
