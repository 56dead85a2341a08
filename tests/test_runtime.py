"""tfcourse.runtime: device and dtype defaults, seeding, thread pinning."""

import random

import numpy as np
import pytest
import torch

import tfcourse as tc


def test_default_device_and_dtype_follow_the_hardware() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert tc.default_device().type == expected
    assert tc.autocast_dtype("cpu") == torch.float32


def test_seed_everything_makes_runs_repeatable() -> None:
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    tc.seed_everything(123)
    first = draw()
    tc.seed_everything(123)
    second = draw()
    assert first[:2] == second[:2] and torch.equal(first[2], second[2])
    with pytest.raises(ValueError, match="seed: expected a non-negative int"):
        tc.seed_everything(-1)


def test_pin_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        assert tc.pin_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("TFCOURSE_THREADS", "2")
        assert tc.pin_threads() == 2 and torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="num_threads: expected a positive int"):
            tc.pin_threads(0)
    finally:
        torch.set_num_threads(before)


def test_native_bf16_is_never_claimed_for_the_cpu_or_an_emulating_gpu(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert not tc.runtime.has_native_bf16("cpu")
    assert tc.autocast_dtype("cpu") == torch.float32
    # a T4 (compute capability 7.5): PyTorch emulates bfloat16 there, and says it "supports" it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.version, "hip", None)
    assert not tc.runtime.has_native_bf16("cuda")
    assert tc.autocast_dtype("cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # A100
    assert tc.runtime.has_native_bf16("cuda")
    assert tc.autocast_dtype("cuda") == torch.bfloat16
