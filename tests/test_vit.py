"""The Vision Transformer, the digits and the classification helpers (chapter 4)."""

import pytest
import torch
from torch import nn

from tfcourse.classification import accuracy, classification_loss, throughput
from tfcourse.convnet import ConvNet
from tfcourse.data.digits import digit_batches, load_digit_images, random_shift
from tfcourse.tome import ToMeViT
from tfcourse.vit import PatchEmbedding, VisionTransformer, attention_rollout, patchify


def small_vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    config = dict(image_size=16, patch_size=4, d_model=32, num_heads=4, num_layers=2, d_ff=64)
    return VisionTransformer(**{**config, **kwargs})


def test_patchify_order_and_count():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    patches = patchify(images, 4)
    assert patches.shape == (2, (8 * 8) // 4**2, 3 * 4 * 4)  # N = (H·W)/P², K·P·P
    # patch 1 is the top row's second patch: channel 0, its first row is pixels (0, 4..7)
    assert torch.equal(patches[0, 1, :4], images[0, 0, 0, 4:8])
    # patch 2 starts the second grid row; channel 1 follows channel 0 within a patch
    assert torch.equal(patches[1, 2, :4], images[1, 0, 4, 0:4])
    assert torch.equal(patches[0, 0, 16:20], images[0, 1, 0, 0:4])


@pytest.mark.parametrize("channels", [1, 3])
def test_convolution_equals_linear_map_on_patches(channels):
    torch.manual_seed(0)
    embed = PatchEmbedding(image_size=12, patch_size=3, in_channels=channels, d_model=16)
    images = torch.randn(4, channels, 12, 12)
    linear = embed.as_linear()
    torch.testing.assert_close(embed(images), linear(patchify(images, 3)), rtol=1e-5, atol=1e-5)
    # another flatten order (row, column, channel) is not the convolution
    wrong = patchify(images, 3).reshape(4, 16, channels, 9).transpose(-1, -2).reshape(4, 16, -1)
    if channels > 1:
        assert not torch.allclose(embed(images), linear(wrong), atol=1e-3)


def test_image_size_not_divisible_by_patch_size_is_a_clear_error():
    with pytest.raises(ValueError, match="patch_size: expected a divisor of image_size=16"):
        VisionTransformer(image_size=16, patch_size=5)
    with pytest.raises(ValueError, match="images: expected height and width divisible by"):
        patchify(torch.zeros(1, 1, 10, 12), 4)
    with pytest.raises(ValueError, match=r"images: expected 16x16 pixels, got 20x20"):
        small_vit()(torch.zeros(1, 1, 20, 20))
    with pytest.raises(ValueError, match="images: expected 4 dimensions"):
        small_vit()(torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="pool: expected one of"):
        small_vit(pool="max")


def test_vit_tokens_class_token_and_positions():
    model = small_vit()
    images = torch.rand(3, 1, 16, 16)
    tokens = model.embed(images)
    assert tokens.shape == (3, 16 + 1, 32)  # N + 1 positions
    assert model.pos_embed.shape == (1, 17, 32)
    # the class token is the same learned vector for every image, plus position 0
    expected_first = model.cls_token[0, 0] + model.pos_embed[0, 0]
    torch.testing.assert_close(tokens[:, 0], expected_first.expand(3, -1))
    torch.testing.assert_close(tokens[:, 1:], model.patch_embed(images) + model.pos_embed[:, 1:])
    assert model(images).shape == (3, 10)


def test_vit_classifies_from_the_class_token_only():
    model = small_vit().eval()
    images = torch.rand(2, 1, 16, 16)
    logits = model(images)
    # the head reads position 0 after the final norm: a change of the head's input elsewhere is
    # invisible, so recomputing from the blocks' output at position 0 gives the logits
    x = model.embed(images)
    for block in model.blocks:
        x = block(x)
    torch.testing.assert_close(logits, model.head(model.norm(x)[:, 0]))


def test_mean_pooling_has_no_class_token():
    model = small_vit(pool="mean")
    assert model.cls_token is None
    assert model.pos_embed.shape == (1, 16, 32)
    images = torch.rand(2, 1, 16, 16)
    x = model.embed(images)
    for block in model.blocks:
        x = block(x)
    torch.testing.assert_close(model(images), model.head(model.norm(x).mean(dim=1)))


def test_attention_maps_and_rollout():
    model = small_vit()
    images = torch.rand(2, 1, 16, 16)
    maps = model.attention_maps(images)
    assert maps.shape == (2, 2, 4, 17, 17)  # (L, B, H, T, T)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 4, 17))
    rollout = attention_rollout(maps)
    assert rollout.shape == (2, 17, 17)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(2, 17))
    # one layer without the residual term is that layer's head-averaged attention
    torch.testing.assert_close(attention_rollout(maps[:1], residual=False), maps[0].mean(1))
    with pytest.raises(ValueError, match="maps: expected 5 dimensions"):
        attention_rollout(maps[0])


def test_vit_gradients_reach_every_parameter():
    model = small_vit()
    loss, metrics = classification_loss(model, (torch.rand(4, 1, 16, 16), torch.arange(4)))
    loss.backward()
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_digits_are_real_split_and_stratified():
    data = load_digit_images(16)
    assert data.train_images.shape == (1438, 1, 16, 16)
    assert data.test_images.shape == (359, 1, 16, 16)
    assert data.train_images.min() >= 0 and data.train_images.max() <= 1
    assert torch.bincount(data.test_labels).min() >= 35  # every class in the test set
    # the same split every call, and no image in both sets
    assert torch.equal(load_digit_images(16).test_labels, data.test_labels)
    train = {tuple(x.flatten().tolist()) for x in load_digit_images(8).train_images}
    assert not any(tuple(x.flatten().tolist()) in train for x in load_digit_images(8).test_images)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digit_images(16, test_fraction=1.5)


def test_random_shift_moves_whole_images():
    images = torch.zeros(50, 1, 6, 6)
    images[:, :, 2:4, 2:4] = 1.0
    shifted = random_shift(images, 1, torch.Generator().manual_seed(0))
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), images.sum(dim=(1, 2, 3)))  # nothing cut off
    assert not torch.equal(shifted, images)
    for image in shifted[:, 0]:
        rows, cols = image.nonzero().unbind(1)
        assert rows.min() in (1, 2, 3) and cols.min() in (1, 2, 3)
    assert torch.equal(random_shift(images, 0), images)


def test_digit_batches_are_a_function_of_the_step():
    data = load_digit_images(16)
    batches = digit_batches(data, 32, seed=3)
    first, again = batches(5), batches(5)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[0].shape == (32, 1, 16, 16)


def test_accuracy_and_throughput_helpers():
    class Oracle(nn.Module):  # reads the label off pixel (0, 0)
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, images):
            return nn.functional.one_hot(images[:, 0, 0, 0].long(), 10).float() * self.scale

    labels = torch.arange(20) % 10
    images = torch.zeros(20, 1, 4, 4)
    images[:, 0, 0, 0] = labels.float()
    images[:5, 0, 0, 0] = 0.0  # five wrong, except label 0 itself
    assert accuracy(Oracle(), images, labels, batch_size=7) == pytest.approx(16 / 20)
    assert throughput(Oracle(), images, repeats=2) > 0
    with pytest.raises(ValueError, match="labels: expected size 20"):
        accuracy(Oracle(), images, labels[:3])


def test_convnet_shapes_and_errors():
    model = ConvNet(width=8)
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match="images: expected size 1 in dimension 1"):
        model(torch.rand(2, 3, 16, 16))


def test_trained_digits_vit_is_cached_with_its_history(tmp_path, monkeypatch):
    from tfcourse import classification

    monkeypatch.setenv("TFCOURSE_CACHE", str(tmp_path))
    monkeypatch.setitem(classification.DIGITS_TRAINING, "steps", 3)
    monkeypatch.setitem(classification.DIGITS_TRAINING, "warmup_steps", 1)
    data = load_digit_images(16)
    trained, history = classification.train_digits_vit(data, device="cpu", progress=False)
    assert len(list(tmp_path.glob("tfcourse/digits_vit_*.pt"))) == 1
    loaded, loaded_history = classification.train_digits_vit(data, device="cpu")
    assert not loaded.training
    assert loaded_history.as_dict() == history.as_dict()
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # another recipe is another file
    monkeypatch.setitem(classification.DIGITS_TRAINING, "steps", 2)
    classification.train_digits_vit(data, device="cpu", progress=False)
    paths = sorted(tmp_path.glob("tfcourse/digits_vit_*.pt"), key=lambda p: p.stat().st_mtime)
    assert len(paths) == 2
    # a saved model is loaded as it is, unless retrain trains again and replaces it
    saved = torch.load(paths[-1], weights_only=True)
    saved["model"] = {name: torch.zeros_like(w) for name, w in saved["model"].items()}
    torch.save(saved, paths[-1])
    zeros, _ = classification.train_digits_vit(data, device="cpu")
    assert all(w.abs().sum() == 0 for w in zeros.state_dict().values())
    retrained, _ = classification.train_digits_vit(data, device="cpu", progress=False, retrain=True)
    assert retrained.head.weight.abs().sum() > 0
    reloaded, _ = classification.train_digits_vit(data, device="cpu")
    assert torch.equal(reloaded.head.weight, retrained.head.weight)


def test_flops_per_image_counts_the_attention_products_whatever_the_kernel():
    from torch.utils.flop_counter import FlopCounterMode

    from tfcourse.classification import flops_per_image

    model = small_vit()  # T = 17, C = 32, 2 blocks
    image = torch.rand(1, 1, 16, 16)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(image)  # the fused kernel: on a CPU the counter misses its two products
    assert flops_per_image(model, image) == counter.get_total_flops() + 2 * 2 * 2 * 17**2 * 32
    assert all(block.attn.fused for block in model.blocks)  # put back as it was
    # ToMe: the products of each block at the tokens that enter it, 17 then 17 - 4 queries,
    # against keys padded to a multiple of 8 once tokens have sizes (tfcourse.tome._attend)
    merged = ToMeViT(model, 4)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        merged(image)
    products = 2 * 2 * 32 * (17 * 17 + 13 * 16)
    assert flops_per_image(merged, image) == counter.get_total_flops() + products
    assert flops_per_image(ConvNet(width=8), image) > 0
    with pytest.raises(ValueError, match="image: expected size 1 in dimension 0"):
        flops_per_image(model, torch.rand(2, 1, 16, 16))


def test_interleaved_throughput_times_each_model_on_its_batch():
    from tfcourse.classification import interleaved_throughput

    models = [small_vit(), ConvNet(width=8)]
    rates = interleaved_throughput(models, torch.rand(8, 1, 16, 16), repeats=2)
    assert len(rates) == 2 and all(rate > 0 for rate in rates)
    with pytest.raises(ValueError, match="images: expected one batch per model"):
        interleaved_throughput(models, [torch.rand(8, 1, 16, 16)])
