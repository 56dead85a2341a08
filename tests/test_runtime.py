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
