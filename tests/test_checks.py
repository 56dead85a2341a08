"""tfcourse.checks: each contract check passes correct code and names the mistake in wrong code."""

import math
import sys

import pytest
import torch
import torch.nn.functional as F

import tfcourse as tc
from tfcourse import checks


def fails_with(fragment: str):
    return pytest.raises(checks.ContractError, match=fragment)


def test_contract_error_fails_a_test_cell() -> None:
    assert issubclass(checks.ContractError, AssertionError)


def test_expect_shape() -> None:
    checks.expect_shape(torch.zeros(2, 3), (2, None))
    with fails_with(r"shape \(3, 2\), expected \(2, 3\): two axes are swapped"):
        checks.expect_shape(torch.zeros(3, 2), (2, 3))
    with fails_with("a dimension is missing or extra"):
        checks.expect_shape(torch.zeros(2), (2, 1))
    with fails_with("is a list, expected a torch.Tensor"):
        checks.expect_shape([1, 2], (2,))


def test_expect_rows_sum_to_one_names_the_wrong_axis() -> None:
    scores = torch.randn(2, 3, 4)
    checks.expect_rows_sum_to_one(torch.softmax(scores, dim=-1))
    with fails_with("over dim -2 instead of dim -1.* a softmax over the queries instead"):
        checks.expect_rows_sum_to_one(torch.softmax(scores, dim=-2))
    with fails_with("scores before the softmax"):
        checks.expect_rows_sum_to_one(scores * 10)
    with fails_with("contains NaN"):
        checks.expect_rows_sum_to_one(torch.full((2, 2), float("nan")))
    checks.expect_rows_sum_to_one(torch.zeros(2, 3))  # fully masked rows are allowed


def test_expect_close_names_a_known_mistake() -> None:
    q, k, v = torch.randn(3, 2, 5, 16).unbind()
    right = tc.scaled_dot_product_attention(q, k, v)[0]
    unscaled = tc.scaled_dot_product_attention(q * math.sqrt(16), k, v)[0]
    checks.expect_close(right, F.scaled_dot_product_attention(q, k, v))
    with fails_with("did not divide by"):
        checks.expect_close(unscaled, right, mistakes={"you did not divide by √d_k": unscaled})
    with fails_with(r"largest difference .* at index"):
        checks.expect_close(right + 1, right)
    with fails_with("dtype torch.float64, expected torch.float32"):
        checks.expect_close(right.double(), right)
    with fails_with("contains inf"):
        checks.expect_close(right / 0, right)


def test_expect_causal_catches_a_missing_or_upside_down_mask() -> None:
    x = torch.randn(1, 6, 8)

    def attend(mask):
        return lambda x: tc.scaled_dot_product_attention(x, x, x, mask)[0]

    checks.expect_causal(attend(tc.causal_mask(6)), x)
    with fails_with("causal mask is missing, upside down"):
        checks.expect_causal(attend(None), x)
    with fails_with("position 0 or earlier changed"):
        checks.expect_causal(attend(tc.causal_mask(6).T), x)


def test_expect_finite_grads() -> None:
    x = torch.randn(4, 3)
    checks.expect_finite_grads(lambda x: x.softmax(-1), x)
    with fails_with("does not require grad: is it detached"):
        checks.expect_finite_grads(lambda x: x.detach().softmax(-1), x)
    with fails_with("gradient of input 0 contains NaN"):
        checks.expect_finite_grads(lambda x: (x * 0).sqrt(), x)  # 0 * inf


def test_expect_device_dtype() -> None:
    checks.expect_device_dtype(torch.zeros(2), "cpu", torch.float32)
    with fails_with("has dtype torch.float32, expected torch.float16: create new tensors with"):
        checks.expect_device_dtype(torch.zeros(2), "cpu", torch.float16)
    with fails_with("is on cpu, expected cuda"):
        checks.expect_device_dtype(torch.zeros(2), "cuda")


def test_expect_on_meta_checks_the_device_a_function_follows() -> None:
    x = torch.zeros(2, 3, device="meta")
    checks.expect_on_meta(lambda: torch.ones_like(x).cumsum(-1), "follows", "unused")
    with fails_with("made_here is on cpu, expected meta"):  # created on the default device
        checks.expect_on_meta(lambda: torch.ones(2, 3), "made_here", "unused")
    with fails_with(r"mixed fails on the meta device \(.*device.*\): put it on x.device"):
        checks.expect_on_meta(lambda: torch.cat([x, torch.ones(1, 3)]), "mixed",
                              "put it on x.device")
    # an operation that needs the values cannot run on meta: the device is left unchecked
    checks.expect_on_meta(lambda: torch.ones(int(x.sum().item())), "values", "unused")


def test_forbid_blocks_a_shortcut_and_restores_it() -> None:
    q = torch.randn(1, 3, 4)
    original = F.scaled_dot_product_attention
    with checks.forbid("torch.nn.functional.scaled_dot_product_attention", task="exercise 3"):
        with fails_with("exercise 3 asks you to write this yourself"):
            F.scaled_dot_product_attention(q, q, q)
        tc.scaled_dot_product_attention(q, q, q)  # the explicit path does not call it
    assert F.scaled_dot_product_attention is original


def test_forbid_blocks_tensor_methods_and_aliases_and_restores_them() -> None:
    import tfcourse.masks

    x = torch.randn(2, 3)
    alias = {"sm": F.softmax}  # a learner's `from torch.nn.functional import softmax as sm`
    module = type(sys)("learner_namespace")
    module.sm = F.softmax
    sys.modules["learner_namespace"] = module
    try:
        with checks.forbid("torch.Tensor.softmax", "torch.nn.functional.softmax",
                           "tfcourse.masks.causal_mask"):
            with fails_with("calling torch.Tensor.softmax does not count"):
                x.softmax(-1)
            with fails_with("calling torch.nn.functional.softmax does not count"):
                module.sm(x, dim=-1)
            with fails_with("calling tfcourse.masks.causal_mask does not count"):
                tc.causal_mask(3)  # the package-level name is the same function
            x.exp()  # everything else still works
        assert module.sm is alias["sm"] and tc.causal_mask is tfcourse.masks.causal_mask
        checks.expect_close(x.softmax(-1), F.softmax(x, dim=-1))
        assert "softmax" not in vars(torch.Tensor)  # inherited from TensorBase: not copied down
    finally:
        del sys.modules["learner_namespace"]


def test_forbid_blocks_references_kept_where_no_module_holds_them() -> None:
    """A learner's default argument, closure or container keeps the original object: the call
    is blocked all the same, and works again after the block."""
    import tfcourse.masks

    def softmax(x: torch.Tensor, dim: int = -1, _impl=F.softmax) -> torch.Tensor:
        return _impl(x, dim=dim)

    kept = [torch.Tensor.softmax, tfcourse.masks.causal_mask,
            F.scaled_dot_product_attention]
    x = torch.randn(2, 3)
    with checks.forbid("torch.nn.functional.softmax", "torch.Tensor.softmax",
                       "tfcourse.masks.causal_mask",
                       "torch.nn.functional.scaled_dot_product_attention", task="Exercise 1"):
        with fails_with("calling torch.nn.functional.softmax does not count"):
            softmax(x)
        with fails_with("calling torch.Tensor.softmax does not count"):
            kept[0](x, -1)
        with fails_with("calling tfcourse.masks.causal_mask does not count"):
            kept[1](3)
        with fails_with("calling torch.nn.functional.scaled_dot_product_attention"):
            kept[2](x[None], x[None], x[None])
        x.exp().sum()  # everything else still works
    checks.expect_close(softmax(x), torch.softmax(x, -1))
    assert kept[1](3).tolist() == tc.causal_mask(3).tolist()


def test_forbid_rejects_a_target_that_does_not_exist() -> None:
    with pytest.raises(AttributeError, match="forbid: torch.nn.functional.nope does not exist"):
        with checks.forbid("torch.nn.functional.nope"):
            pass
