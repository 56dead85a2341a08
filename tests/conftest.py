"""Shared test setup: every test runs with a fixed number of torch threads."""

import pytest
import torch

from tfcourse.runtime import pin_threads


@pytest.fixture(autouse=True, scope="session")
def _pinned_threads() -> None:
    pin_threads()


def cuda_only() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
