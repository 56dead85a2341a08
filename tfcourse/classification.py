"""Training and measuring image classifiers (book: chapters 4 to 6).

The loss and the accuracy that every vision chapter uses, a throughput measurement, and the
recipes of the chapter-4 ViT, of the same ViT on larger digits (more tokens, for chapter 5), of
the chapter-6 Activator and of chapter 4's ConvNet on the digits (for chapter 10). A trained model
is kept in a cache folder, keyed by its recipe, so that later chapters load it without retraining.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tfcourse import _validate
from tfcourse.activator import ActivatorClassifier
from tfcourse.attention import MultiHeadAttention
from tfcourse.convnet import ConvNet
from tfcourse.data.digits import DigitImages, digit_batches, load_digit_images
from tfcourse.runtime import default_device
from tfcourse.training import History, TrainConfig, Trainer
from tfcourse.vit import VisionTransformer

# The chapter-4 model and its training (book: chapter 4, "Training"): 16x16 digits, 4x4 patches.
DIGITS_VIT = dict(image_size=16, patch_size=4, in_channels=1, num_classes=10, d_model=64,
                  num_heads=4, num_layers=6, d_ff=128)
# Chapter 6: Activator at the ViT's width and depth, F chosen so that the parameters match the
# ViT's (204,124 against 203,850); no dropout, as the ViT.
DIGITS_ACTIVATOR = dict(image_size=16, patch_size=4, in_channels=1, num_classes=10, d_model=64,
                        d_hidden=103, num_layers=6, dropout=0.0)
DIGITS_TRAINING = dict(steps=1200, batch_size=128, lr=2e-3, warmup_steps=100,
                       weight_decay=0.05, max_shift=1, seed=0)
# Chapter 4's ConvNet at the width whose parameters come closest to the ViT's (199,874 at width 56;
# chapter 4 picks it the same way), trained as chapter 4 trains it: the ViT's recipe compressed
# to a quarter of its steps, which favours the ViT (the full 1200 steps take about 5 minutes on
# 2 CPU cores). Chapter 10 compares it with the ViT and the Activator.
DIGITS_CONVNET = dict(image_size=16, width=56)
CONVNET_TRAINING = {**DIGITS_TRAINING, "steps": 300, "warmup_steps": 25}
# Chapter 5, "Where ToMe pays": the chapter-4 ViT on the digits resized to more pixels, with the
# same 4x4 patches, so with more tokens (16, 24, 32 px: T = 17, 37, 65). One recipe for every size,
# shorter than chapter 4's because a step on 65 tokens costs about four times one on 17 (400 steps
# left the 65-token model at 96.7% and its ToMe drops at the noise level; 800 reached 98.9% and
# 99.2% in two trainings). The shift, 1 px at 16 px in chapter 4, grows with the image
# (image_size // 16 pixels) so that it moves the digit by the same fraction of its size.
TOKEN_SWEEP_SIZES = (16, 24, 32)
TOKEN_SWEEP_TRAINING = dict(steps=800, batch_size=128, lr=2e-3, warmup_steps=80,
                            weight_decay=0.05, seed=0)


def classification_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of ``model(images)`` against ``labels``, and the batch accuracy, in the form
    :class:`tfcourse.Trainer` takes."""
    images, labels = batch
    logits = model(images)  # (B, classes)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean().item()
    return F.cross_entropy(logits, labels), {"accuracy": accuracy}


@torch.no_grad()
def accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 512
) -> float:
    """The fraction of ``images`` (N, K, I, I) that ``model`` labels right, in eval mode."""
    images = _validate.rank(_validate.floating(images, "images"), "images", 4, "(N, K, I, I)")
    labels = _validate.rank(labels, "labels", 1, "(N,)")
    _validate.size(labels, "labels", 0, len(images), "N, the number of images")
    _validate.integer(batch_size, "batch_size", 1)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size].to(device))
        correct += (logits.argmax(dim=-1).cpu() == labels[start : start + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(images)


@torch.no_grad()
def throughput(
    model: nn.Module, images: torch.Tensor, *, repeats: int = 5, warmup: int = 1,
    dtype: torch.dtype | None = None,
) -> float:
    """Images per second of ``model`` in eval mode on the batch ``images``: the best of
    ``repeats`` timed passes after ``warmup`` untimed ones (the best, because a busy machine only
    ever slows a pass down). ``dtype`` runs under autocast to it (bf16 on a GPU)."""
    images = _validate.rank(_validate.floating(images, "images"), "images", 4, "(B, K, I, I)")
    _validate.integer(repeats, "repeats", 1)
    _validate.integer(warmup, "warmup")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    images = images.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    best = float("inf")
    with autocast:
        for i in range(warmup + repeats):
            sync()
            start = time.perf_counter()
            model(images)
            sync()
            if i >= warmup:
                best = min(best, time.perf_counter() - start)
    model.train(was_training)
    return len(images) / best


def interleaved_throughput(
    models: Sequence[nn.Module], images: torch.Tensor | Sequence[torch.Tensor], *,
    repeats: int = 5, dtype: torch.dtype | None = None,
) -> list[float]:
    """Images per second of each of ``models`` (on ``images``, or on its own batch when
    ``images`` is a sequence), timed in alternation: each of ``repeats`` rounds times every model
    once, after one warm-up pass each, so that the machine's load falls on all of them alike.
    Each figure is the model's best round."""
    batches = [images] * len(models) if isinstance(images, torch.Tensor) else list(images)
    if len(batches) != len(models):
        raise ValueError(f"images: expected one batch per model ({len(models)}), "
                         f"got {len(batches)}")
    _validate.integer(repeats, "repeats", 1)
    for model, batch in zip(models, batches, strict=True):
        throughput(model, batch, repeats=1, warmup=1, dtype=dtype)
    best = [0.0] * len(models)
    for _ in range(repeats):
        for i, (model, batch) in enumerate(zip(models, batches, strict=True)):
            best[i] = max(best[i], throughput(model, batch, repeats=1, warmup=0, dtype=dtype))
    return best


@torch.no_grad()
def flops_per_image(model: nn.Module, image: torch.Tensor) -> int:
    """Floating-point operations of ``model`` on one image (1, K, I, I), counted by PyTorch's
    ``FlopCounterMode``. Its attention layers run the explicit equation while counting: the
    counter does not see inside the fused kernel on a CPU, and the explicit products are the
    same on any device."""
    image = _validate.rank(_validate.floating(image, "image"), "image", 4, "(1, K, I, I)")
    _validate.size(image, "image", 0, 1, "one image")
    attentions = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    fused, was_training = [m.fused for m in attentions], model.training
    try:
        for m in attentions:
            m.fused = False
        model.eval()
        with FlopCounterMode(display=False) as counter:
            model(image)
    finally:
        for m, flag in zip(attentions, fused, strict=True):
            m.fused = flag
        model.train(was_training)
    return counter.get_total_flops()


def _cache_dir() -> Path:
    root = os.environ.get("TFCOURSE_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root or Path.home() / ".cache") / "tfcourse"


def _train_cached(
    name: str, model: nn.Module, model_recipe: dict, data: DigitImages | None,
    device: str | torch.device | None, progress: bool, retrain: bool,
    training: dict | None = None,
) -> tuple[nn.Module, History]:
    """Train ``model`` by ``training`` (default :data:`DIGITS_TRAINING`), or load it from the cache
    (see :func:`train_digits_vit`)."""
    t = DIGITS_TRAINING if training is None else training
    recipe = {"model": model_recipe, "training": t, "torch": torch.__version__,
              "file": 2}  # "file": the layout of the saved file, {"model", "history"}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_dir() / f"{name}_{key}.pt"
    if path.exists() and not retrain:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        return model.to(device or default_device()).eval(), History(**saved["history"])
    data = data if data is not None else load_digit_images(model_recipe["image_size"])
    config = TrainConfig(steps=t["steps"], lr=t["lr"], warmup_steps=t["warmup_steps"],
                         weight_decay=t["weight_decay"], seed=t["seed"], device=device,
                         progress=progress)
    batches = digit_batches(data, t["batch_size"], seed=t["seed"], max_shift=t["max_shift"])
    history = Trainer(model, classification_loss, batches, config).fit()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"model": model.state_dict(), "history": history.as_dict()}, partial)
    partial.replace(path)  # atomic: a reader never sees half a file
    return model.eval(), history


def train_digits_vit(
    data: DigitImages | None = None, *, device: str | torch.device | None = None,
    progress: bool = True, retrain: bool = False,
) -> tuple[VisionTransformer, History]:
    """The chapter-4 ViT (:data:`DIGITS_VIT`) trained on the digits by :data:`DIGITS_TRAINING`.

    The trained model and its history are saved in ``$TFCOURSE_CACHE`` (default
    ``~/.cache/tfcourse``), keyed by the recipe and the torch version; a later call loads them
    instead of training again, unless ``retrain``. Returns the model, in eval mode, and the
    history of its training.
    """
    return _train_cached("digits_vit", VisionTransformer(**DIGITS_VIT), DIGITS_VIT, data, device,
                         progress, retrain)


def train_token_sweep_vit(
    image_size: int, data: DigitImages | None = None, *, device: str | torch.device | None = None,
    progress: bool = True, retrain: bool = False,
) -> tuple[VisionTransformer, History]:
    """The chapter-4 ViT (:data:`DIGITS_VIT`, 4x4 patches) on digits of ``image_size`` pixels,
    T = (image_size / 4)² + 1 tokens, trained by :data:`TOKEN_SWEEP_TRAINING` with a shift of up
    to ``image_size // 16`` pixels; cached as :func:`train_digits_vit` is. ``data``, if given,
    must hold digits of ``image_size`` pixels."""
    patch = DIGITS_VIT["patch_size"]
    _validate.integer(image_size, "image_size", 8)
    if image_size % patch:
        raise ValueError(f"image_size: expected a multiple of the patch size {patch}, got "
                         f"{image_size}")
    if data is not None and data.train_images.shape[-1] != image_size:
        raise ValueError(f"data: expected digits of {image_size}x{image_size} pixels, got "
                         f"{data.train_images.shape[-1]}x{data.train_images.shape[-1]}")
    recipe = {**DIGITS_VIT, "image_size": image_size}
    training = {**TOKEN_SWEEP_TRAINING, "max_shift": image_size // 16}
    torch.manual_seed(training["seed"])  # the initial weights do not depend on the caller
    return _train_cached("digits_vit_tokens", VisionTransformer(**recipe), recipe, data, device,
                         progress, retrain, training)


def train_digits_activator(
    data: DigitImages | None = None, *, token_mixing: bool = False,
    device: str | torch.device | None = None, progress: bool = True, retrain: bool = False,
) -> tuple[ActivatorClassifier, History]:
    """The chapter-6 Activator (:data:`DIGITS_ACTIVATOR`, with a token-mixing step in each block
    if ``token_mixing``) trained by the ViT's recipe, :data:`DIGITS_TRAINING`; cached as
    :func:`train_digits_vit` is."""
    recipe = {**DIGITS_ACTIVATOR, "token_mixing": token_mixing}
    torch.manual_seed(DIGITS_TRAINING["seed"])  # the initial weights do not depend on the caller
    return _train_cached("digits_activator", ActivatorClassifier(**recipe), recipe, data, device,
                         progress, retrain)


def train_digits_convnet(
    data: DigitImages | None = None, *, device: str | torch.device | None = None,
    progress: bool = True, retrain: bool = False,
) -> tuple[ConvNet, History]:
    """Chapter 4's ConvNet (:data:`DIGITS_CONVNET`) trained by :data:`CONVNET_TRAINING`, the
    ViT's recipe in a quarter of its steps; cached as :func:`train_digits_vit` is."""
    torch.manual_seed(CONVNET_TRAINING["seed"])  # the initial weights do not depend on the caller
    model = ConvNet(width=DIGITS_CONVNET["width"])
    return _train_cached("digits_convnet", model, DIGITS_CONVNET, data, device, progress, retrain,
                         CONVNET_TRAINING)
