# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 6 exercises: Activator and gated linear units
#
# Four graded exercises write the parts of Activator (Abdullah and Aydin, 2024, "Activator: GLU
# Activation Function as the Core Component of a Vision Transformer", arXiv:2405.15953) in the
# order of the lesson: a gated linear unit, the gating unit that takes the place of attention in
# an Activator block, the classifier as its authors released it, and a test that tells whether a
# model mixes information across the patches of an image at all.
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `glu`, a gated linear unit from its weights | 3 |
# | 2 | `gating_unit`, the Activator gating unit | 4 |
# | 3 | `Activator`: patcher, blocks, mean over the patches, head | 5 |
# | 4 | `mixes_tokens`, does a patch's output depend on the other patches? | 4 |
# | | **total** | **16** |
#
# The reference implementation is `tfcourse.glu` (`GLU`, `simplified_glu`) and
# `tfcourse.activator` (`ActivatorGatingUnit`, `ActivatorBlock`, `ActivatorClassifier`); the
# exercises write its parts yourself, on small tensors and untrained models.
#
# **How to work.** Write your code between the function's first lines and the end of its cell,
# replacing `raise NotImplementedError()`. Under each exercise, a *self-check* cell tests the main
# contract: run it, and when it fails, read the message, which names the most likely mistake.
# A second cell holds the *hidden tests*: when your notebook is graded they probe what the
# self-check does not (other shapes and dtypes, edge cases, gradients) and make sure the work is
# your own, so a call to a ready-made implementation (PyTorch's or `tfcourse`'s) earns no points.
# Each exercise says what you may use.
#
# Do not rename the functions or delete cells; if you delete a test cell it is put back and run
# when your notebook is graded. Grading runs every cell from the top in a fresh kernel, and a cell
# that runs longer than 20 seconds is stopped (a test cell stopped so scores zero). Before you
# submit, choose *Restart kernel and run all cells* and check that every self-check passes.
#
# Shapes use the course's letters: `B` batch, `K` image channels, `I` image height and width in
# pixels, `P` patch height and width, `N` = (I / P)² patches, `C` model width, `F` hidden width
# (of a gated unit or a feed-forward network), `L` layers. A token of Activator is a patch: there
# is no class token, so the tokens are the `N` patches.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import torch
import torch.nn.functional as F
from torch import nn

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "glu_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: a gated linear unit (3 points)
#
# A gated linear unit computes two linear maps of the same input and multiplies them element by
# element: one, the **value**, carries the information; the other, passed through a
# non-linearity, is the **gate** that says how much of each value feature gets through (Dauphin
# et al., 2017, "Language Modeling with Gated Convolutional Networks", Eq. 1, with a sigmoid
# gate). Shazeer (2020, "GLU Variants Improve Transformer", section 2) swaps the sigmoid for other
# functions: GELU gives GEGLU, the gate of Activator; Swish (SiLU) gives SwiGLU; ReLU gives
# ReGLU; no function at all gives the bilinear unit. With the activation $\phi$,
#
# $$\operatorname{GLU}_\phi(x) = \phi(x W_g + b_g) \odot (x W_v + b_v),
# \qquad W_g, W_v \in \mathbb{R}^{C \times F},\ b_g, b_v \in \mathbb{R}^{F}.$$
#
# The activation acts on the **gate** only: the value stays linear, and $\odot$ multiplies the
# two element by element. (Papers name the two maps differently: Dauphin et al. write
# $(XW + b) \otimes \sigma(XV + c)$, Shazeer $\sigma(xW + b) \otimes (xV + c)$; here the names
# say which is which.) With $W_v$ the identity and $b_v = 0$ the value is the input itself:
# $\sigma(x W_g + b_g) \odot x$, the simplified GLU, which gates the input directly.
#
# **Write** `glu(x, w_gate, b_gate, w_value, b_value, activation=F.gelu)`: `x` (..., C) floating
# point, with any number of leading axes; `w_gate` and `w_value` (C, F), `b_gate` and `b_value`
# (F,), in the dtype of `x`; `activation` a function of one tensor (`F.gelu`, `torch.sigmoid`,
# `F.silu`, ...). Return the (..., F) output, through which gradients flow to `x` and to the
# weights.
#
# - **Allowed:** `@`, `torch.matmul`, `torch.einsum`, `F.linear` (note: it takes a weight of
#   shape (F, C)), `*`, calling `activation`.
# - **Not allowed:** `tfcourse.GLU`, `tfcourse.simplified_glu` and `F.glu` (the hidden tests
#   check).
# - **Pitfalls:** the weights are (C, F), so $xW$ is `x @ w`, not `x @ w.T`; the activation goes
#   on the gate, not on the value and not on the product; the bias goes inside the activation,
#   $\phi(xW_g + b_g)$; call the `activation` you are given, do not hard-code GELU; the default
#   `F.gelu` is the exact GELU (with $\Phi$ the normal distribution), not its tanh
#   approximation.
#
# **Points:** self-check 1, hidden tests 2 (one, two and four axes, C = F, float64, the sigmoid,
# SiLU, ReLU and identity gates, the default activation, gradients to `x`, the weights and the
# biases).

# %% nbgrader={"grade": false, "grade_id": "glu", "locked": false, "schema_version": 3, "solution": true, "task": false}
def glu(x: torch.Tensor, w_gate: torch.Tensor, b_gate: torch.Tensor, w_value: torch.Tensor,
        b_value: torch.Tensor, activation=F.gelu) -> torch.Tensor:
    """(..., C) -> (..., F): activation(x W_g + b_g) ⊙ (x W_v + b_v), weights (C, F)."""
    ### BEGIN SOLUTION
    gate = activation(x @ w_gate + b_gate)  # (..., F): how far each feature gets through
    value = x @ w_value + b_value  # (..., F): linear
    return gate * value
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "glu_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (1 point).
import warnings

import torch
import torch.nn.functional as F

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.glu.GLU.forward", "tfcourse.glu.GLU.gate_values",
             "tfcourse.glu.simplified_glu", "torch.nn.functional.glu")
noise = torch.Generator().manual_seed(6)
x = torch.randn(2, 5, 3, generator=noise)  # (B, N, C) with C = 3
wg, wv = torch.randn(3, 4, generator=noise), torch.randn(3, 4, generator=noise)  # (C, F), F = 4
bg, bv = torch.randn(4, generator=noise), torch.randn(4, generator=noise)  # (F,)
gate_in, value = torch.einsum("bnc,cf->bnf", x, wg) + bg, torch.einsum("bnc,cf->bnf", x, wv) + bv
want = F.gelu(gate_in) * value
mistakes = {
    "GELU is on the value: the activation goes on the gate, activation(x @ w_gate + b_gate), "
    "and the value stays linear": gate_in * F.gelu(value),
    "GELU is on the product: activate the gate alone, then multiply": F.gelu(gate_in * value),
    "the gate's bias is added after the activation: activation(x @ w_gate + b_gate)":
        (F.gelu(gate_in - bg) + bg) * value,
    "this is a sigmoid gate: use the activation you are given (here F.gelu)":
        torch.sigmoid(gate_in) * value,
    "this is the tanh approximation of GELU: F.gelu's default is the exact GELU":
        F.gelu(gate_in, approximate="tanh") * value,
}
name = "glu(x (2, 5, 3), weights (3, 4), activation=F.gelu)"
with checks.forbid(*forbidden, task="Exercise 1"):
    try:
        got = glu(x, wg, bg, wv, bv, F.gelu)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. The weights are (C, F) = (3, 4): x W is x @ w, without "
            "transposing w") from None
checks.expect_shape(got, (2, 5, 4), name, hint="one output of width F = 4 per position")
checks.expect_close(got, want, name, mistakes=mistakes)
with checks.forbid(*forbidden, task="Exercise 1"):
    got = glu(x, wg, bg, wv, bv, torch.sigmoid)
checks.expect_close(got, torch.sigmoid(gate_in) * value,
                    "glu(x (2, 5, 3), weights (3, 4), activation=torch.sigmoid)",
                    mistakes={"this is a GELU gate: call the activation that glu is given, do "
                              "not hard-code F.gelu": want})
# the simplified GLU, sigma(x W + b) * x: the value map is the identity
eye, zero = torch.eye(3), torch.zeros(3)
with checks.forbid(*forbidden, task="Exercise 1"):
    got = glu(x, wg[:, :3], bg[:3], eye, zero, torch.sigmoid)
checks.expect_close(got, torch.sigmoid(gate_in[..., :3]) * x,
                    "glu with w_value = I, b_value = 0: sigmoid(x W + b) * x")

# %% nbgrader={"grade": true, "grade_id": "glu_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (2 points) run when the notebook is graded. Here this cell only
# checks that glu runs.
import torch

assert glu(torch.zeros(2, 3), torch.zeros(3, 4), torch.zeros(4), torch.zeros(3, 4),
           torch.zeros(4)).shape == (2, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.glu
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(61)
    blocked = ("tfcourse.glu.GLU.forward", "tfcourse.glu.GLU.gate_values",
               "tfcourse.glu.simplified_glu", "torch.nn.functional.glu")
    for lead, width_in, width_out, variant, dtype in [
        ((7,), 4, 6, "glu", torch.float64), ((2, 3, 2), 5, 3, "swiglu", torch.float32),
        ((3, 4), 4, 4, "reglu", torch.float64), ((1, 6), 2, 8, "bilinear", torch.float32),
        ((2, 2, 3), 4, 4, "geglu", torch.float64), ((), 3, 5, "swiglu", torch.float64),
    ]:
        unit_ref = tfcourse.glu.GLU(width_in, width_out, variant=variant).to(dtype)
        with torch.no_grad():
            for lin in (unit_ref.gate, unit_ref.value):
                lin.weight.normal_(generator=gen)
                lin.bias.normal_(generator=gen)
        inputs_ref = torch.randn(*lead, width_in, generator=gen, dtype=dtype).requires_grad_()
        expected_out = unit_ref(inputs_ref)
        upstream = torch.randn(expected_out.shape, generator=gen, dtype=dtype)
        expected_grads = torch.autograd.grad((expected_out * upstream).sum(),
                                             [inputs_ref, unit_ref.gate.weight,
                                              unit_ref.gate.bias, unit_ref.value.weight,
                                              unit_ref.value.bias])
        leaves = [inputs_ref.detach().clone().requires_grad_(),
                  unit_ref.gate.weight.detach().T.clone().requires_grad_(),
                  unit_ref.gate.bias.detach().clone().requires_grad_(),
                  unit_ref.value.weight.detach().T.clone().requires_grad_(),
                  unit_ref.value.bias.detach().clone().requires_grad_()]
        with checks.forbid(*blocked, task="Exercise 1"):
            result = glu(*leaves, tfcourse.glu.GATES[variant])
        label = (f"glu on x {(*lead, width_in)} {dtype}, weights ({width_in}, {width_out}), "
                 f"the {variant} gate")
        checks.expect_close(result, expected_out.detach(), label)
        (result * upstream).sum().backward()
        for part, leaf, grad_ref in zip(("x", "w_gate", "b_gate", "w_value", "b_value"), leaves,
                                        (expected_grads[0], expected_grads[1].T,
                                         expected_grads[2], expected_grads[3].T,
                                         expected_grads[4]), strict=True):
            assert leaf.grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(leaf.grad, grad_ref, f"the gradient of {part} in {label}")
    # called without an activation: the default, F.gelu, the exact GELU
    x, w_gate, w_value = (torch.randn(*shape, generator=gen, dtype=torch.float64)
                          for shape in ((3, 5), (5, 4), (5, 4)))
    b_gate, b_value = (torch.randn(4, generator=gen, dtype=torch.float64) for _ in range(2))
    with checks.forbid(*blocked, task="Exercise 1"):
        result = glu(x, w_gate, b_gate, w_value, b_value)
    checks.expect_close(
        result, torch.nn.functional.gelu(x @ w_gate + b_gate) * (x @ w_value + b_value),
        "glu(x (3, 5), weights (5, 4)) called without an activation, float64",
        hint="without an activation, glu uses its default, activation=F.gelu (the exact GELU): "
             "keep that default in the signature")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "gating_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: the Activator gating unit (4 points)
#
# Activator takes the attention out of a ViT block and puts a gating unit built on GEGLU in its
# place. In the authors' released model, both up-projections of the (already normalised) input
# are normalised again, over the hidden width F, by **one** layer norm that the two branches
# share, applied to the gate **after** its GELU; the product is projected back down to C:
#
# $$\begin{aligned}
# u &= \operatorname{LN}_F\!\big(\operatorname{GELU}(x W_1 + b_1)\big), \\
# v &= \operatorname{LN}_F(x W_2 + b_2), \\
# y &= (u \odot v)\, W_3 + b_3 .
# \end{aligned}$$
#
# ```
# x (…, C) ─ gate_proj ─ GELU ─ norm ─ u (…, F) ─┐
#          └ value_proj ──────── norm ─ v (…, F) ─┴─ u ⊙ v ─ out_proj ─ y (…, C)
#                                  ↑ one module, the same scale and shift on both branches
# ```
#
# Each position is computed on its own: nothing here looks at another patch.
#
# **Write** `gating_unit(x, unit)`: `x` (..., C) floating point; `unit` holds the four modules
# of the unit, with the names of `tfcourse.ActivatorGatingUnit` (the tests pass one):
# `unit.gate_proj` ($W_1, b_1$, an `nn.Linear` from C to F), `unit.value_proj` ($W_2, b_2$,
# C to F), `unit.norm` (the one `nn.LayerNorm(F)`, with its learned scale and shift) and
# `unit.out_proj` ($W_3, b_3$, F to C). Return $y$, (..., C), through which gradients flow to
# `x` and to every parameter of the unit.
#
# - **Allowed:** calling the four modules, `F.gelu`, `*`.
# - **Not allowed:** calling `unit` itself, `unit.forward` or `unit.branches` (the methods of
#   `tfcourse.ActivatorGatingUnit`; the hidden tests check).
# - **Pitfalls:** GELU goes on the gate branch (`gate_proj`), not on the value; the norm comes
#   after the GELU, not before it; both branches are normalised, by the same `unit.norm`: a
#   second norm (`nn.LayerNorm(F)` made inside the function, or `F.layer_norm` without the
#   module's weight and bias) loses the learned scale and shift; normalise the branches, not
#   their product.
#
# **Points:** self-check 2, hidden tests 2 (other widths, inputs of one, two and four axes,
# float64, gradients to the input and to every parameter of the unit, the shared norm's
# included).

# %% nbgrader={"grade": false, "grade_id": "gating", "locked": false, "schema_version": 3, "solution": true, "task": false}
def gating_unit(x: torch.Tensor, unit: nn.Module) -> torch.Tensor:
    """(..., C) -> (..., C): out_proj(LN_F(GELU(gate_proj(x))) ⊙ LN_F(value_proj(x))), the
    layer norm LN_F = unit.norm shared by both branches."""
    ### BEGIN SOLUTION
    u = unit.norm(F.gelu(unit.gate_proj(x)))  # (..., F): the gate, normalised after GELU
    v = unit.norm(unit.value_proj(x))  # (..., F): the value, by the same norm
    return unit.out_proj(u * v)  # (..., C)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "gating_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (2 points).
import warnings

import torch
import torch.nn.functional as F

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.activator.ActivatorGatingUnit.forward",
             "tfcourse.activator.ActivatorGatingUnit.branches")
torch.manual_seed(6)
unit = tfcourse.ActivatorGatingUnit(4, 6)  # C = 4, F = 6
with torch.no_grad():  # a learned scale and shift, as after training
    unit.norm.weight.uniform_(0.5, 1.5)
    unit.norm.bias.normal_()
x = torch.randn(2, 3, 4)  # (B, N, C)
with torch.no_grad():
    want = unit(x)
    g, val = unit.gate_proj(x), unit.value_proj(x)  # (B, N, F)
    plain = F.layer_norm(val, (6,))  # normalised without the scale and shift of unit.norm
    mistakes = {
        "GELU is on the value branch: it goes on the gate, norm(GELU(gate_proj(x))), and the "
        "value is norm(value_proj(x))": unit.out_proj(unit.norm(g) * unit.norm(F.gelu(val))),
        "the norm comes before the GELU: the released unit normalises after it, "
        "norm(GELU(gate_proj(x)))": unit.out_proj(F.gelu(unit.norm(g)) * unit.norm(val)),
        "the value branch is normalised by a second norm, without unit.norm's learned scale and "
        "shift: one norm, unit.norm, serves both branches":
            unit.out_proj(unit.norm(F.gelu(g)) * plain),
        "the gate branch is normalised by a second norm, without unit.norm's learned scale and "
        "shift: one norm, unit.norm, serves both branches":
            unit.out_proj(F.layer_norm(F.gelu(g), (6,)) * unit.norm(val)),
        "the value branch is not normalised: v = norm(value_proj(x))":
            unit.out_proj(unit.norm(F.gelu(g)) * val),
        "the gate branch is not normalised: u = norm(GELU(gate_proj(x)))":
            unit.out_proj(F.gelu(g) * unit.norm(val)),
        "the product is normalised instead of the branches: normalise u and v, then multiply":
            unit.out_proj(unit.norm(F.gelu(g) * val)),
    }
name = "gating_unit(x (2, 3, 4), ActivatorGatingUnit(4, 6))"
with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 2"):
    got = gating_unit(x, unit)
checks.expect_shape(got, (2, 3, 4), name, hint="out_proj maps the F = 6 features back to C = 4")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "gating_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (2 points) run when the notebook is graded. Here this cell only
# checks that gating_unit runs.
import torch

import tfcourse

assert gating_unit(torch.zeros(1, 2, 3), tfcourse.ActivatorGatingUnit(3, 5)).shape == (1, 2, 3)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.activator
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(62)
    blocked = ("tfcourse.activator.ActivatorGatingUnit.forward",
               "tfcourse.activator.ActivatorGatingUnit.branches")
    for lead, width, hidden_width, dtype in [
        ((5,), 3, 7, torch.float64), ((2, 4), 8, 4, torch.float32),
        ((2, 3, 2), 5, 5, torch.float64), ((1, 9), 6, 12, torch.float32),
        ((), 4, 6, torch.float64),
    ]:
        torch.manual_seed(int(torch.randint(1000, (1,), generator=gen)))
        module_ref = tfcourse.activator.ActivatorGatingUnit(width, hidden_width).to(dtype)
        with torch.no_grad():
            module_ref.norm.weight.normal_(generator=gen)
            module_ref.norm.bias.normal_(generator=gen)
        sample = torch.randn(*lead, width, generator=gen, dtype=dtype)
        sample_ref = sample.clone().requires_grad_()
        expected_out = module_ref(sample_ref)
        upstream = torch.randn(expected_out.shape, generator=gen, dtype=dtype)
        names, params = zip(*module_ref.named_parameters(), strict=True)
        expected_grads = torch.autograd.grad((expected_out * upstream).sum(),
                                             [sample_ref, *params])
        sample_leaf = sample.clone().requires_grad_()
        with checks.forbid(*blocked, task="Exercise 2"):
            result = gating_unit(sample_leaf, module_ref)
        label = (f"gating_unit on x {(*lead, width)} {dtype}, ActivatorGatingUnit({width}, "
                 f"{hidden_width}) with a learned norm")
        checks.expect_close(result, expected_out.detach(), label)
        result_grads = torch.autograd.grad((result * upstream).sum(), [sample_leaf, *params],
                                           allow_unused=True)
        for part, got_grad, want_grad in zip(("x", *(f"unit.{n}" for n in names)),
                                             result_grads, expected_grads, strict=True):
            assert got_grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(got_grad, want_grad, f"the gradient of {part} in {label}",
                                hint="the norm is shared: unit.norm serves both branches"
                                if part.startswith("unit.norm") else None)
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "activator_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: the Activator classifier (5 points)
#
# An Activator block (the released one, `tfcourse.ActivatorBlock`) is a pre-LN block with the
# gating unit of Exercise 2 in the place of attention, and one layer norm instance before both
# of its sub-layers: $x' = x + \operatorname{AGU}(\operatorname{LN}(x))$, then
# $y = x' + \operatorname{FFN}(\operatorname{LN}(x'))$; the reduced block keeps only the first
# residual, $y = x'$. The classifier around the blocks is simpler than a ViT's:
#
# $$\begin{aligned}
# z_0 &= [\,x_p^1 E;\ x_p^2 E;\ \dots;\ x_p^N E\,], \qquad
# z_\ell = \operatorname{block}_\ell(z_{\ell-1}), \\
# \text{logits} &= \operatorname{head}\Big(\frac1N \sum_{i=1}^{N} z_L^i\Big).
# \end{aligned}$$
#
# * **The patcher** is the convolution of chapter 4, `tfcourse.PatchEmbedding`: (B, K, I, I)
#   images to (B, N, C) patch vectors.
# * **No class token and no position embedding**: the blocks receive the N patch vectors as
#   they come out of the patcher.
# * **Mean pooling**: the head reads the mean of the last block's output over the N patches,
#   not one token. There is no final layer norm.
#
# **Write** the class `Activator`: its constructor and two methods.
#
# * `__init__`: make exactly these three attributes, with these names, so that the tests can
#   copy the weights of a `tfcourse.ActivatorClassifier` into your model with `load_state_dict`:
#   `self.patch_embed = tfcourse.PatchEmbedding(image_size, patch_size, in_channels, d_model)`,
#   `self.blocks`, an `nn.ModuleList` of `num_layers` blocks
#   `tfcourse.ActivatorBlock(d_model, d_hidden, reduced=reduced)`, and `self.head`, an
#   `nn.Linear(d_model, num_classes)`. No other parameters.
# * `features(images)`: `images` (B, K, I, I) floating point; return $z_L$, (B, N, C), the
#   output of the last block at every patch.
# * `forward(images)`: return the (B, num_classes) logits.
#
# Gradients flow to every parameter.
#
# - **Allowed:** `tfcourse.PatchEmbedding`, `tfcourse.ActivatorBlock` (calling a block is
#   calling its forward), `nn.ModuleList`, `nn.Linear`, `mean`, a loop over `self.blocks`.
# - **Not allowed:** `tfcourse.ActivatorClassifier`, as a model, a base class or through its
#   methods (the hidden tests check).
# - **Pitfalls:** this is not the ViT of chapter 4: no class token, no position embedding, no
#   final norm; the head reads the mean over the patches, axis 1 of (B, N, C), not token 0 and
#   not a mean over the C features; apply every block, each to the output of the one before;
#   pass `reduced` on to the blocks.
#
# **Points:** self-check 2, hidden tests 3 (other image, patch and model sizes, three channels,
# one patch, reduced blocks, a batch of one, float64, gradients reaching every parameter, no
# ready-made model).

# %% nbgrader={"grade": false, "grade_id": "activator", "locked": false, "schema_version": 3, "solution": true, "task": false}
class Activator(nn.Module):
    """The released Activator: a conv patcher, L blocks, the mean over the N patches, a head."""

    def __init__(self, *, image_size: int, patch_size: int, in_channels: int = 1,
                 num_classes: int = 10, d_model: int = 32, d_hidden: int = 64,
                 num_layers: int = 2, reduced: bool = False) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.patch_embed = tfcourse.PatchEmbedding(image_size, patch_size, in_channels, d_model)
        self.blocks = nn.ModuleList(
            tfcourse.ActivatorBlock(d_model, d_hidden, reduced=reduced)
            for _ in range(num_layers))
        self.head = nn.Linear(d_model, num_classes)
        ### END SOLUTION

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, I, I) -> z_L, (B, N, C)."""
        ### BEGIN SOLUTION
        z = self.patch_embed(images)  # (B, N, C): no class token, no position embedding
        for block in self.blocks:
            z = block(z)
        return z
        ### END SOLUTION

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, I, I) -> (B, num_classes)."""
        ### BEGIN SOLUTION
        return self.head(self.features(images).mean(dim=1))  # the mean over the N patches
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "activator_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (2 points).
import warnings

import torch

import tfcourse
from tfcourse import checks
from tfcourse.data import load_digit_images

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
forbidden = ("tfcourse.activator.ActivatorClassifier.__init__",
             "tfcourse.activator.ActivatorClassifier.forward",
             "tfcourse.activator.ActivatorClassifier.features")
config = dict(image_size=16, patch_size=4, num_classes=10, d_model=12, d_hidden=24,
              num_layers=2)
torch.manual_seed(0)
reference = tfcourse.ActivatorClassifier(**config, in_channels=1, dropout=0.0).eval()
with checks.forbid(*forbidden, task="Exercise 3"):
    model = Activator(**config).eval()
names, want_names = set(model.state_dict()), set(reference.state_dict())
extra, missing = sorted(names - want_names), sorted(want_names - names)
if extra:
    top = sorted({n.split(".")[0] for n in extra})
    raise checks.ContractError(
        f"Activator has parameters that the released model does not: {top}. There is no class "
        "token, no position embedding and no final norm: only patch_embed, blocks and head")
if missing:
    raise checks.ContractError(
        f"Activator lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}: make "
        "self.patch_embed (tfcourse.PatchEmbedding), self.blocks (an nn.ModuleList of "
        "num_layers tfcourse.ActivatorBlock) and self.head (nn.Linear), with these names")
model.load_state_dict(reference.state_dict())
images = load_digit_images(16).test_images[:3]  # three real digits, (3, 1, 16, 16): N = 16
with torch.no_grad():
    z = reference.patch_embed(images)  # (B, N, C)
    outs = [z]
    for blk in reference.blocks:
        outs.append(blk(outs[-1]))
    want_features = outs[-1]
    want = reference.head(want_features.mean(dim=1))
    feature_mistakes = {
        "these are the patch vectors before the blocks: apply every block, in order":
            outs[0],
        "only the last block is applied, to the patch vectors: each block takes the output of "
        "the one before": reference.blocks[-1](outs[0]),
    }
    logit_mistakes = {
        "the head reads token 0: Activator has no class token, the head reads the mean over "
        "the N patches, features(images).mean(dim=1)": reference.head(want_features[:, 0]),
        "the head reads the last token: it reads the mean over the N patches":
            reference.head(want_features[:, -1]),
        "the head reads the sum over the patches: take the mean, .mean(dim=1)":
            reference.head(want_features.sum(dim=1)),
        "the head reads the largest value over the patches: take the mean, .mean(dim=1)":
            reference.head(want_features.amax(dim=1)),
    }
name = "Activator(image_size=16, patch_size=4, d_model=12, num_layers=2)"
with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 3"):
    try:
        got_features = model.features(images)
        got = model(images)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails on three digits (3, 1, 16, 16): {error}. features returns (B, N, C) "
            "= (3, 16, 12); the mean over the patches, dim 1, gives (B, C) = (3, 12)") from None
checks.expect_shape(got_features, (3, 16, 12), f"{name}.features(three digits)",
                    hint="N = 16 patches of width C = 12, no class token")
checks.expect_close(got_features, want_features, f"{name}.features(three digits)",
                    mistakes=feature_mistakes)
checks.expect_shape(got, (3, 10), f"{name}(three digits)",
                    hint="one row of logits per image: mean over the patches (dim 1), then head")
checks.expect_close(got, want, f"{name}(three digits)", mistakes=logit_mistakes)

# %% nbgrader={"grade": true, "grade_id": "activator_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (3 points) run when the notebook is graded. Here this cell only
# checks that Activator runs.
import torch

assert Activator(image_size=4, patch_size=2, d_model=8, d_hidden=8,
                 num_layers=1)(torch.zeros(2, 1, 4, 4)).shape == (2, 10)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.activator
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    blocked = [f"tfcourse.activator.ActivatorClassifier.{m}"
               for m in ("__init__", "forward", "features")]
    for seed, side, size, nk, width, hidden_width, depth, classes, nb, short, dtype in [
        (1, 12, 4, 3, 8, 12, 3, 5, 2, True, torch.float64),
        (2, 8, 2, 1, 16, 8, 1, 3, 1, False, torch.float32),
        (3, 6, 6, 2, 8, 16, 2, 2, 3, False, torch.float32),  # one patch
        (4, 10, 5, 1, 12, 6, 2, 4, 2, True, torch.float32),
    ]:
        torch.manual_seed(seed)
        sizes = dict(image_size=side, patch_size=size, in_channels=nk, num_classes=classes,
                     d_model=width, d_hidden=hidden_width, num_layers=depth, reduced=short)
        original = tfcourse.activator.ActivatorClassifier(**sizes, dropout=0.0).to(dtype).eval()
        with checks.forbid(*blocked, task="Exercise 3"):
            student_model = Activator(**sizes).to(dtype).eval()
        label = (f"Activator({side}x{side} images, {nk} channel(s), patch_size={size}, "
                 f"d_model={width}, {depth} {'reduced ' if short else ''}block(s), "
                 f"{classes} classes) on {nb} image(s), {dtype}")
        assert sorted(student_model.state_dict()) == sorted(original.state_dict()), (
            f"{label}: its parameters are not those of the released model")
        student_model.load_state_dict(original.state_dict())
        pixels = torch.rand(nb, nk, side, side, dtype=dtype)
        with torch.no_grad():
            expected_logits = original(pixels)
            expected_features = original.features(pixels)
        with checks.forbid(*blocked, task="Exercise 3"):
            result_features = student_model.features(pixels)
            result = student_model(pixels)
        checks.expect_close(result_features.detach(), expected_features,
                            f"the features of {label}")
        checks.expect_close(result, expected_logits, label)
        upstream = torch.randn(result.shape, dtype=dtype)
        (result * upstream).sum().backward()
        for pname, p in student_model.named_parameters():
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), (
                f"{label}: {pname} received no finite gradient")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "mixing_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: does a model mix its tokens? (4 points)
#
# In a ViT, attention lets every patch's representation draw on every other patch. In the
# released Activator, every layer acts on each patch on its own: the patcher, the gating unit,
# the feed-forward network and the norms see one patch at a time, and the patches meet only in
# the mean before the head. So a patch's features $z_L^i$ depend on patch $i$ of the image and on
# nothing else. This can be tested without reading the code: change one patch of the image and
# see which patches' features move.
#
# ```
# change patch n of the input  →  features(changed) − features(images), (B, N, C)
#                                  patch n moves, of course; does any OTHER patch move?
# ```
#
# Two things make the test honest. **A tolerance**: computations that are equal in mathematics
# can differ in the last bits of a float (about $10^{-7}$ in float32) when they are computed in
# another order: a batch of another size, another device, or a layer that subtracts the mean
# over the patches and adds it back. Such rounding is not mixing, so count a patch as moved only
# when a feature changed by more than `atol`. **Every patch**: a model may mix in one direction
# only (patch $i$ sees the patches before it, as in a causal model), so change each patch in
# turn, not only the first.
#
# **Write** `mixes_tokens(features, images, patch_size, atol=1e-5)`: `features` a function that
# maps (B, K, I, I) images to (B, N, C) features, one row per patch in row-major order (patch
# $n$ covers the pixel rows $rP$ to $rP + P - 1$ and columns $cP$ to $cP + P - 1$, with
# $r = \lfloor n / (I/P) \rfloor$, $c = n \bmod (I/P)$, the order of `tfcourse.patchify` and of
# the patcher); `images` (B, K, I, I) floating point; `patch_size` the P of the model. For each
# patch $n = 0, \dots, N - 1$: change the pixels of patch $n$ (in every channel and every image,
# for example by adding 1 to them) and leave every other pixel as it is, compute the features,
# and compare them with the features of the unchanged images. Return the Python bool `True` when,
# for some $n$, a feature of a patch **other than** $n$ changed by more than `atol` (absolute
# difference); otherwise `False`. Do not change `images`.
#
# For the released Activator, `features` is `model.features` (Exercise 3, or
# `tfcourse.ActivatorClassifier.features`); for a ViT, `vit_patch_features` below gives the
# output of its last block at the N patch tokens (the class token left out).
#
# - **Allowed:** `clone`, slicing, `torch.no_grad`, `abs`, `max`, comparisons, loops, `bool`.
# - **Pitfalls:** `torch.equal` or `==` report rounding as mixing: compare with the tolerance;
#   compare the patches other than the one you changed (the changed patch's own features move
#   in every model); change one patch at a time: `changed = images` is not a copy, and adding
#   into it changes `images` and piles up the changes of earlier patches: clone first; patch $n$
#   is at row $n$ // (I/P) and column $n$ % (I/P) of the grid, in units of P pixels; change every
#   patch, not only the first; return a Python bool (`bool(...)`), not a tensor.
#
# **Points:** self-check 2, hidden tests 2 (models that mix in one direction only, only through
# patch 0, only through one faint feature of one patch, only through one channel, only in one
# image of the batch, or by features that move down; other patch sizes, three channels, a batch
# of one, float64, a tiny cross-patch term below the tolerance and a small one above it, another
# `atol`, the images unchanged).

# %% nbgrader={"grade": false, "grade_id": "vit_features", "locked": true, "schema_version": 3, "solution": false, "task": false}
def vit_patch_features(model: tfcourse.VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """(B, K, I, I) -> (B, N, C): a ViT's last block output at the patch tokens."""
    z = model.embed(images)  # (B, T, C), the class token first when the model has one
    for vit_block in model.blocks:
        z = vit_block(z)
    return z[:, 1:] if model.cls_token is not None else z  # (B, N, C)


# %% nbgrader={"grade": false, "grade_id": "mixing", "locked": false, "schema_version": 3, "solution": true, "task": false}
def mixes_tokens(features, images: torch.Tensor, patch_size: int, atol: float = 1e-5) -> bool:
    """True when changing one patch of the images moves the features of another patch by more
    than atol, for some patch; False otherwise."""
    ### BEGIN SOLUTION
    P = patch_size
    per_row = images.shape[-1] // P  # patches per row of the grid, I / P
    with torch.no_grad():
        base = features(images)  # (B, N, C)
        for n in range(base.shape[1]):
            r, c = divmod(n, per_row)
            changed = images.clone()
            changed[..., r * P:(r + 1) * P, c * P:(c + 1) * P] += 1.0  # patch n, nothing else
            moved = (features(changed) - base).abs()  # (B, N, C)
            moved[:, n] = 0  # patch n's own features move in any model
            if moved.max() > atol:
                return True
    return False
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "mixing_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (2 points).
import warnings

import torch

import tfcourse
from tfcourse import checks
from tfcourse.data import load_digit_images

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
sizes = dict(image_size=16, patch_size=4, in_channels=1, d_model=16, d_hidden=32,
             num_layers=2, dropout=0.0)
released = tfcourse.ActivatorClassifier(**sizes).eval()
with_mixing = tfcourse.ActivatorClassifier(**sizes, token_mixing=True).eval()
vit = tfcourse.VisionTransformer(image_size=16, patch_size=4, d_model=16, num_heads=2,
                                 num_layers=2, d_ff=32).eval()
images = load_digit_images(16).test_images[:2]  # two real digits, (2, 1, 16, 16): N = 16
saved = images.clone()
calls = []


def spy(batch):
    """The pixels of every batch that mixes_tokens asks for, and a model that mixes nothing:
    each patch's features are its own pixels."""
    calls.append(batch.detach().clone())
    return tfcourse.patchify(batch, 4)  # (B, N, K·P·P)


def recentred(batch):
    """The released model, its features recentred over the patches and shifted back: the same
    numbers in mathematics, different in the last bits."""
    z = released.features(batch)
    return (z - z.mean(dim=1, keepdim=True)) + z.mean(dim=1, keepdim=True)


def changed_patches(batch):
    """The patches in which batch differs from the images."""
    moved = (tfcourse.patchify(batch, 4) != tfcourse.patchify(saved, 4)).any(dim=-1).any(dim=0)
    return moved.nonzero().flatten().tolist()


got = mixes_tokens(spy, images, 4)
assert torch.equal(images, saved), (
    "mixes_tokens changed images: changed = images is not a copy; clone before changing a patch")
assert isinstance(got, bool), (
    f"mixes_tokens returned a {type(got).__name__}, expected a Python bool: return bool(...)")
if got:
    several = [changed_patches(c) for c in calls if c.shape == saved.shape]
    several = [p for p in several if len(p) > 1]
    if several:
        raise checks.ContractError(
            f"mixes_tokens(features, images, 4) changed the patches {several[0]} of the image "
            "at once: change one patch at a time, each time starting again from a copy of "
            "images")
    raise checks.ContractError(
        "mixes_tokens says that a model whose features of each patch are that patch's pixels "
        "mixes its tokens: compare only the patches other than the one you changed (patch n "
        "itself always moves), and check that the patch you change is patch n: row n // (I/P), "
        "column n % (I/P) of the grid")
assert not mixes_tokens(released.features, images, 4), (
    "mixes_tokens says that the released Activator mixes its tokens: it does not. Compare only "
    "the patches other than the one you changed, and change one patch at a time")
if mixes_tokens(recentred, images, 4):
    raise checks.ContractError(
        "mixes_tokens says that the released Activator mixes its tokens when its features are "
        "recentred and shifted back, which only rounds differently (about 1e-7): compare with "
        "the tolerance, (new - old).abs().max() > atol, not with torch.equal or ==")
for label, fn in [("a ViT (vit_patch_features)", lambda batch: vit_patch_features(vit, batch)),
                  ("ActivatorClassifier(token_mixing=True)", with_mixing.features)]:
    assert mixes_tokens(fn, images, 4), (
        f"mixes_tokens says that {label} mixes nothing, but it does: is each patch changed "
        "(its pixels, in every channel, by adding 1), and are the features of the changed "
        "images compared with those of the unchanged ones?")
assert torch.equal(images, saved), "mixes_tokens changed images: clone before changing a patch"

# %% nbgrader={"grade": true, "grade_id": "mixing_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (2 points) run when the notebook is graded. Here this cell only
# checks that mixes_tokens runs.
import torch

import tfcourse

assert mixes_tokens(lambda b: tfcourse.patchify(b, 2), torch.zeros(1, 1, 4, 4), 2) is False
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.activator
import tfcourse.vit


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(64)

    def _forward_only(pix, step):  # patch i sees the patches before it: a causal running sum
        return tfcourse.vit.patchify(pix, step).cumsum(dim=1)

    def _backward_only(pix, step):  # patch i sees the patches after it
        return tfcourse.vit.patchify(pix, step).flip(1).cumsum(dim=1).flip(1)

    def _one_pair(pix, step):  # only the second-to-last patch reads the last one
        own = tfcourse.vit.patchify(pix, step)
        return torch.cat([own[:, :-2], own[:, -2:-1] + own[:, -1:], own[:, -1:]], dim=1)

    def _recentred(pix, step):  # no mixing in mathematics; rounding leaves about 1e-7
        own = tfcourse.vit.patchify(pix, step) * 3.7
        centre = own.mean(dim=1, keepdim=True)
        return (own - centre) + centre

    def _faint(pix, step, scale):  # each patch plus a multiple of the mean over all patches
        own = tfcourse.vit.patchify(pix, step)
        return own + scale * own.mean(dim=1, keepdim=True)

    def _reads_patch_0(pix, step):  # only patch 1 reads another patch, patch 0
        own = tfcourse.vit.patchify(pix, step)
        return torch.cat([own[:, :1], own[:, 1:2] + 0.5 * own[:, :1], own[:, 2:]], dim=1)

    def _faint_pair(pix, step):  # only patch 9 reads another patch, patch 10, by 1e-4
        own = tfcourse.vit.patchify(pix, step)
        return torch.cat([own[:, :9], own[:, 9:10] + 1e-4 * own[:, 10:11], own[:, 10:]], dim=1)

    def _last_channel(pix, step):  # each patch, and the mean of the last channel's patches
        own = tfcourse.vit.patchify(pix, step)  # (B, N, K·P·P)
        shared = tfcourse.vit.patchify(pix[:, -1:], step).mean(dim=1, keepdim=True)  # (B, 1, P·P)
        return torch.cat([own, 0.1 * shared.expand(-1, own.shape[1], -1)], dim=-1)

    def _bright_only(pix, step):  # mixes in the images whose mean pixel exceeds 5 only
        bright = (pix.mean(dim=(1, 2, 3)) > 5).to(pix.dtype)[:, None, None]  # (B, 1, 1)
        return _faint(pix, step, 0.1 * bright)

    def _downwards(pix, step):  # each patch minus half the patch before it
        own = tfcourse.vit.patchify(pix, step)
        return torch.cat([own[:, :1], own[:, 1:] - 0.5 * own[:, :-1]], dim=1)

    def _second_bright(pix):  # the second image's pixels in [10, 11): it alone mixes
        return pix + torch.tensor([0.0, 10.0], dtype=pix.dtype)[:, None, None, None]

    torch.manual_seed(65)
    act_rgb = tfcourse.activator.ActivatorClassifier(
        image_size=6, patch_size=2, in_channels=3, d_model=8, d_hidden=8, num_layers=1,
        dropout=0.0, reduced=True).double().eval()
    vit_mean = tfcourse.vit.VisionTransformer(
        image_size=6, patch_size=3, in_channels=3, d_model=8, num_heads=2, num_layers=1,
        d_ff=8, pool="mean").eval()
    float32, float64 = torch.float32, torch.float64
    # label, features, image side, patch size, channels, dtype, atol, batch sizes, expected
    cases_mixing = [
        ("a running sum over the patches", lambda pix: _forward_only(pix, 2), 8, 2, 1,
         float32, 1e-5, (1, 2), True),
        ("a running sum from the last patch back", lambda pix: _backward_only(pix, 2), 8, 2,
         1, float32, 1e-5, (1, 2), True),
        ("a model in which only the last patch is read by another",
         lambda pix: _one_pair(pix, 3), 9, 3, 1, float32, 1e-5, (1, 2), True),
        ("each patch plus 0.01 x the mean over the patches",
         lambda pix: _faint(pix, 2, 1e-2), 4, 2, 1, float32, 1e-5, (1, 2), True),
        ("each patch plus 1e-9 x the mean over the patches (below the tolerance)",
         lambda pix: _faint(pix, 2, 1e-9), 4, 2, 1, float32, 1e-5, (1, 2), False),
        ("patch vectors recentred over the patches and shifted back",
         lambda pix: _recentred(pix, 2), 12, 2, 1, float32, 1e-5, (1, 2), False),
        ("a reduced Activator on RGB images, float64", act_rgb.features, 6, 2, 3, float64,
         1e-5, (1, 2), False),
        ("a mean-pooled ViT with no class token",
         lambda pix: vit_patch_features(vit_mean, pix), 6, 3, 3, float32, 1e-5, (1, 2), True),
        ("a model in which only patch 0 is read by another (patch 1)",
         lambda pix: _reads_patch_0(pix, 2), 6, 2, 1, float32, 1e-5, (2,), True),
        ("a model in which one patch of 64 reads one other, by 1e-4 x its features",
         lambda pix: _faint_pair(pix, 2), 16, 2, 1, float32, 1e-5, (2,), True),
        ("a model that mixes the patches through the last of three channels only",
         lambda pix: _last_channel(pix, 2), 6, 2, 3, float32, 1e-5, (2,), True),
        ("a model that mixes in its second image only (the brighter one)",
         lambda pix: _bright_only(pix, 2), 6, 2, 1, float32, 1e-5, (2,), True),
        ("each patch minus half the patch before it (features that move down)",
         lambda pix: _downwards(pix, 2), 4, 2, 1, float64, 1e-5, (1,), True),
        ("each patch plus 0.01 x the mean over the patches, atol = 1",
         lambda pix: _faint(pix, 2, 1e-2), 4, 2, 1, float32, 1.0, (2,), False),
    ]
    hints = {
        "only patch 0": "change every patch, patch 0 included: for n in range(N)",
        "by 1e-4": "compare the largest change of a feature with atol: a mean over the features "
                   "and patches averages a faint change away",
        "last of three": "change patch n in every channel, images[:, :, rows, columns], not in "
                         "one channel only",
        "second image": "change patch n in every image of the batch, and compare every image",
        "move down": "compare the absolute change, (new - old).abs(): a feature that moves down "
                     "moves too",
        "atol = 1": "use the atol you are given",
    }
    for label, fn, side, step, channels, kind, tolerance, batches, expected_answer in (
            cases_mixing):
        for nb in batches:
            pixels = torch.rand(nb, channels, side, side, generator=gen, dtype=kind)
            if "second image" in label:
                pixels = _second_bright(pixels)
            untouched = pixels.clone()
            answer = mixes_tokens(fn, pixels, step, tolerance)
            assert torch.equal(pixels, untouched), f"mixes_tokens changed the images ({label})"
            assert isinstance(answer, bool), (
                f"mixes_tokens returned a {type(answer).__name__} for {label}, not a bool")
            hint = next((h for key, h in hints.items() if key in label), None)
            assert answer is expected_answer, (
                f"mixes_tokens on {label}, {nb} image(s) of {side}x{side} pixels, patch size "
                f"{step}, atol={tolerance}: {answer}, expected {expected_answer}"
                + (f": {hint}" if hint else ""))
    return True


assert _hidden_tests()
### END HIDDEN TESTS
