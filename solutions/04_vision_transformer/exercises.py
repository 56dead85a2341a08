# %% [markdown] nbgrader={"grade": false, "grade_id": "intro", "locked": true, "schema_version": 3, "solution": false, "task": false}
# # Chapter 4 exercises: the Vision Transformer
#
# Four graded exercises write the parts that turn a Transformer encoder into an image classifier,
# in the order of the lesson: cutting an image into a sequence of patches, embedding the patches,
# the forward pass with its class token and position embeddings, and the attention rollout that
# shows which patches the class token draws on.
#
# | exercise | you write | points |
# |---|---|---|
# | 1 | `patchify`, an image cut into a sequence of flattened patches | 5 |
# | 2 | `embed_patches`, the patch embedding as a linear map | 3 |
# | 3 | `ViT.forward`: class token, positions, encoder, head | 5 |
# | 4 | `attention_rollout`, attention traced through every layer | 3 |
# | | **total** | **16** |
#
# The building blocks are given: `tfcourse.PatchEmbedding` is the patch embedding as a
# convolution, and `tfcourse.ViTBlock` one pre-LN encoder block (Dosovitskiy et al., 2021, "An
# Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", ICLR, Eqs. 2 and 3).
# The images of the lesson, real handwritten digits shipped with scikit-learn, come from
# `tfcourse.data.load_digit_images`.
#
# **How to work.** Write your code between the function's first lines and the end of its cell,
# replacing `raise NotImplementedError()`. Under each exercise, a *self-check* cell tests the main
# contract: run it, and when it fails, read the message, which names the most likely mistake.
# A second cell holds the *hidden tests*: when your notebook is graded they probe what the
# self-check does not (other shapes, channels and dtypes, edge cases, gradients) and make sure the
# work is your own, so a call to a ready-made implementation (PyTorch's or `tfcourse`'s) earns no
# points. Each exercise says what you may use.
#
# Do not rename the functions or delete cells; if you delete a test cell it is put back and run
# when your notebook is graded. Grading runs every cell from the top in a fresh kernel, and a cell
# that runs longer than 20 seconds is stopped (a test cell stopped so scores zero). Before you
# submit, choose *Restart kernel and run all cells* and check that every self-check passes.
#
# Shapes use the course's letters: `B` batch, `K` image channels, `P` patch height and width in
# pixels, `N` number of patches, `C` model width ($d_\text{model}$, the paper's $D$), `H` heads,
# `T` tokens (`N + 1` with the class token), `L` layers. The rest of the course uses square
# images of `I` × `I` pixels; Exercises 1 and 2 also take images of $I_h \times I_w$ pixels, with
# a different height and width.

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false, "task": false}
import torch
import torch.nn.functional as F
from torch import nn

import tfcourse

tfcourse.pin_threads()

# %% [markdown] nbgrader={"grade": false, "grade_id": "patchify_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 1: an image as a sequence of patches (5 points)
#
# A Transformer reads a sequence of vectors. The Vision Transformer makes one from an image by
# cutting it into square patches of $P \times P$ pixels, with no overlap, and flattening each
# patch into one vector (Dosovitskiy et al., 2021, section 3.1): an image of $K$ channels and
# $I_h \times I_w$ pixels becomes $N = (I_h / P)(I_w / P)$ vectors $x_p^1, \dots, x_p^N$ of
# $K P^2$ numbers each. Attention itself does not care about the order of the sequence, but the
# model does, through its position embeddings (Exercise 3), and so do the next exercise and
# every `tfcourse` model. The order is the one of a convolution with kernel size and stride $P$:
#
# * **the patches** in row-major order over the grid: left to right along the top row of the
#   grid, then the next row down, and so on (the order of `conv(images).flatten(2)`);
# * **inside a patch**, the channel first, then the pixel row, then the pixel column (the order
#   of a `Conv2d` weight (C, K, P, P) reshaped to (C, K·P·P)).
#
# ```
# an 8 x 12 image, P = 4:       patch n = (grid row) * 3 + (grid column)
#   +----+----+----+            each patch: channel 0 rows 0..3, then channel 1 rows 0..3, ...
#   | 0  | 1  | 2  |            each row:   pixel columns 0..3
#   +----+----+----+
#   | 3  | 4  | 5  |
#   +----+----+----+
# ```
#
# **Write** `patchify(images, patch_size)`: `images` (B, K, $I_h$, $I_w$) floating point, with any
# number of channels $K$ and any height and width (they may differ); $P$ = `patch_size`. Return
# the (B, N, K·P·P) tensor of patches, in the dtype of `images`, through which gradients flow.
# When $I_h$ or $I_w$ is not a multiple of $P$, raise a `ValueError` whose message names the
# argument `images` (for example "images: expected height and width divisible by 4, got 10x12").
# Do not change `images`.
#
# - **Allowed:** `reshape`, `permute`, `transpose`, `flatten`, `contiguous`, `Tensor.unfold`,
#   `F.unfold`.
# - **Not allowed:** `tfcourse.patchify` (the hidden tests check).
# - **Pitfalls:** a `reshape` alone cuts the image into strips of consecutive pixels, not into
#   $P \times P$ blocks: split each axis into (grid index, pixel index), `reshape` to
#   (B, K, $I_h/P$, P, $I_w/P$, P), move the two grid axes to the front with `permute`, then
#   flatten; `view` fails after a `permute` (the tensor is no longer contiguous), `reshape` does
#   not; the channel axis goes before the pixel axes inside a patch (channel last is the layout
#   of an image file, not of a convolution weight); height and width may differ; `unfold` drops
#   the pixels that do not fill a patch without a word: check the sizes yourself.
#
# **Points:** self-check 2, hidden tests 3 (three channels, height and width that differ, one
# channel, $P = 1$, one patch per image, a batch of one, float64, an input that is not
# contiguous, gradients, the input unchanged, the error for each axis).

# %% nbgrader={"grade": false, "grade_id": "patchify", "locked": false, "schema_version": 3, "solution": true, "task": false}
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, K, Ih, Iw) -> (B, N, K·P·P): the patches in row-major grid order, each flattened
    channel first, then pixel row, then pixel column."""
    ### BEGIN SOLUTION
    B, K, height, width = images.shape
    P = patch_size
    if height % P or width % P:
        raise ValueError(f"images: expected height and width divisible by patch_size={P}, "
                         f"got {height}x{width}")
    rows, cols = height // P, width // P
    grid = images.reshape(B, K, rows, P, cols, P)  # (B, K, rows, P, cols, P)
    grid = grid.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, K, P, P): the grid axes first
    return grid.reshape(B, rows * cols, K * P * P)  # (B, N, K·P·P)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "patchify_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 1 (2 points).
import warnings

import torch

from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
B, K, P = 2, 2, 4
images = torch.arange(B * K * 12 * 12, dtype=torch.float32).reshape(B, K, 12, 12)
grid = [(r, c) for r in range(3) for c in range(3)]  # a 3 x 3 grid, row-major: N = 9


def block(b, r, c):
    """The pixels of image b in grid row r, grid column c: (K, P, P)."""
    return images[b, :, P * r:P * (r + 1), P * c:P * (c + 1)]


def patches(flatten):
    """(B, N, K·P·P): the blocks in row-major order, each flattened by `flatten`."""
    return torch.stack([torch.stack([flatten(block(b, r, c)).reshape(-1) for r, c in grid])
                        for b in range(B)])


want = patches(lambda x: x)  # channel, pixel row, pixel column
mistakes = {
    "each patch is flattened with the channels last (pixel row, pixel column, channel), the "
    "layout of an image file: flatten channel first, then pixel row, then pixel column, the "
    "order of a Conv2d weight (C, K, P, P); the permute is (0, 2, 4, 1, 3, 5)":
        patches(lambda x: x.permute(1, 2, 0)),
    "inside each patch the pixel columns come before the pixel rows: are the last two axes of "
    "your permute swapped?": patches(lambda x: x.transpose(1, 2)),
    "this is a reshape of the image without a permute: it cuts runs of consecutive pixels, "
    "strips of whole image rows, not P x P blocks; reshape to (B, K, rows, P, cols, P), permute "
    "the grid axes to the front, then flatten": images.reshape(B, 9, K * P * P),
}
before = images.clone()
with checks.forbid("tfcourse.vit.patchify", task="Exercise 1"):
    got = patchify(images, P)
name = "patchify(images (2, 2, 12, 12), 4)"
assert torch.equal(images, before), "patchify changed its input images"
checks.expect_shape(got, (B, 9, K * P * P), name,
                    hint="a 3 x 3 grid gives N = 9 patches of K·P·P = 2·4·4 = 32 numbers")
assert got.dtype == images.dtype, f"{name} has dtype {got.dtype}, expected {images.dtype}"
if not torch.equal(got, want):  # each pixel's value is its index: say where the pixels went
    for mistake, wrong in mistakes.items():
        if torch.equal(got, wrong):
            raise checks.ContractError(f"{name} differs from the expected patches: {mistake}")
    blocks = [(b, m, want[b, m].sort().values) for b in range(B) for m in range(9)]
    for b, n in [(b, n) for b in range(B) for n in range(9)]:
        have = got[b, n].sort().values
        owners = [(b2, m) for b2, m, pixels in blocks if torch.equal(have, pixels)]
        if not owners:
            raise checks.ContractError(
                f"patch {n} of image {b} does not hold the pixels of one {P} x {P} block of the "
                f"image (all of its channels): patch {n} is grid row {n // 3}, grid column "
                f"{n % 3}, the pixels [{P * (n // 3)}:{P * (n // 3 + 1)}, {P * (n % 3)}:"
                f"{P * (n % 3 + 1)}] of every channel")
        b2, m = owners[0]
        if b2 != b:
            raise checks.ContractError(
                f"patch {n} of image {b} holds pixels of image {b2}: keep the batch axis first, "
                "and split only the height and the width into (grid index, pixel index)")
        if m != n:
            raise checks.ContractError(
                f"your patch {n} holds the pixels of patch {m} (grid row {m // 3}, grid column "
                f"{m % 3}): number the patches left to right along a row of the grid first, "
                f"then row by row downwards, as conv(images).flatten(2) does; the grid rows go "
                f"before the grid columns in your permute")
    raise checks.ContractError(
        f"{name}: every patch holds the right pixels, but in another order: flatten each patch "
        "channel first, then pixel row, then pixel column")
try:
    with checks.forbid("tfcourse.vit.patchify", task="Exercise 1"):
        patchify(torch.zeros(1, 1, 10, 12), 4)
except ValueError as error:
    assert "images" in str(error), (
        f"patchify(images of 10 x 12 pixels, 4) raised ValueError({str(error)!r}): name the "
        "argument, images, in the message")
except Exception as error:
    raise checks.ContractError(
        f"patchify(images of 10 x 12 pixels, 4) raised {type(error).__name__}: {error}. Check "
        "that the height and the width are multiples of patch_size first, and raise a "
        "ValueError that names images") from None
else:
    raise checks.ContractError(
        "patchify(images of 10 x 12 pixels, 4) returned without an error, but 10 rows do not "
        "split into patches of 4: raise a ValueError that names images (unfold drops the "
        "leftover pixels without a word)")

# %% nbgrader={"grade": true, "grade_id": "patchify_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 1 (3 points) run when the notebook is graded. Here this cell only
# checks that patchify runs.
import torch

assert patchify(torch.zeros(1, 1, 4, 4), 2).shape == (1, 4, 4)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.vit
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(41)
    for nb, nk, rows_px, cols_px, size, dtype, strided in [
        (3, 3, 8, 12, 4, torch.float32, False), (1, 1, 16, 16, 4, torch.float32, False),
        (2, 3, 6, 6, 1, torch.float64, False), (2, 2, 5, 5, 5, torch.float32, False),
        (1, 3, 12, 8, 2, torch.float64, True), (4, 1, 9, 6, 3, torch.float32, True),
    ]:
        if strided:  # a transposed view: not contiguous
            pixels = torch.randn(nb, nk, cols_px, rows_px, generator=gen, dtype=dtype)
            pixels = pixels.transpose(-1, -2)
        else:
            pixels = torch.randn(nb, nk, rows_px, cols_px, generator=gen, dtype=dtype)
        pixel_leaf = pixels.clone().requires_grad_(True)
        reference = tfcourse.vit.patchify(pixel_leaf, size)
        upstream = torch.randn(reference.shape, generator=gen, dtype=dtype)
        (reference * upstream).sum().backward()
        pixels_in = pixels.clone().requires_grad_(True)
        with checks.forbid("tfcourse.vit.patchify", task="Exercise 1"):
            result = patchify(pixels_in, size)
        label = (f"patchify on images {(nb, nk, rows_px, cols_px)} {dtype}"
                 f"{' (not contiguous)' if strided else ''}, patch_size={size}")
        checks.expect_close(result, reference.detach(), label, rtol=0, atol=0)
        assert torch.equal(pixels_in.detach(), pixels), f"{label} changed its input"
        assert result.requires_grad, f"{label}: the patches do not require grad"
        (result * upstream).sum().backward()
        assert pixels_in.grad is not None and torch.equal(pixels_in.grad, pixel_leaf.grad), (
            f"{label}: the gradient does not reach each pixel from its own patch")
    for shape, size in [((1, 1, 8, 10), 4), ((2, 3, 7, 6), 3), ((1, 2, 6, 6), 4)]:
        try:
            with checks.forbid("tfcourse.vit.patchify", task="Exercise 1"):
                patchify(torch.zeros(shape), size)
        except ValueError as error:
            assert "images" in str(error), f"the ValueError for {shape} does not name images"
        else:
            raise AssertionError(f"patchify on images {shape}, patch_size={size}: no ValueError")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "embed_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 2: the patch embedding, a linear map (3 points)
#
# Each flattened patch is mapped to a vector of the model's width $C$ by one learned linear map
# $E \in \mathbb{R}^{(K P^2) \times C}$, the same for every patch (Dosovitskiy et al., 2021,
# Eq. 1, with a bias $b$ as in the implementations):
#
# $$z_n = x_p^n E + b, \qquad n = 1, \dots, N .$$
#
# Implementations compute it as a convolution: `nn.Conv2d(K, C, kernel_size=P, stride=P)` looks
# at each patch once, with no overlap, and takes the dot product of the patch with each of its
# $C$ filters, `weight[c]` of shape (K, P, P), plus `bias[c]`: the same numbers. So the two are
# one map, provided the filters are flattened **in the same order as the patches**. With
# `patchify`'s order (channel, pixel row, pixel column), the filter of output channel $c$
# flattened is `weight[c].reshape(-1)`, so `weight.reshape(C, K·P·P)` holds one filter per row
# (the layout of an `nn.Linear` weight, which computes $x W^\top + b$) and $E$ is its transpose.
#
# **Write** `embed_patches(images, weight, bias)`: `images` (B, K, $I_h$, $I_w$) floating point;
# `weight` (C, K, P, P) and `bias` (C,), the parameters of a `Conv2d(K, C, kernel_size=P,
# stride=P)` (read $P$ from the weight's shape); $I_h$ and $I_w$ multiples of $P$. Return the
# (B, N, C) patch embeddings, row $n$ the embedding of patch $n$ (in `patchify`'s order), equal
# to `F.conv2d(images, weight, bias, stride=P).flatten(2).transpose(1, 2)`, through which
# gradients flow to `images`, `weight` and `bias`.
#
# - **Allowed:** `tfcourse.patchify` (the reference of Exercise 1, so that a mistake there does
#   not cost points here) or your own `patchify`, `reshape`, `transpose`/`.T`, `@`, `F.linear`,
#   `torch.einsum`.
# - **Not allowed:** convolutions (`F.conv2d`, `nn.Conv2d`, `tfcourse.PatchEmbedding`; the
#   hidden tests check): this exercise is the linear map that the convolution computes.
# - **Pitfalls:** `weight.reshape(K·P·P, C)` is not the transpose of `weight.reshape(C, K·P·P)`:
#   it scrambles the filters; a weight flattened with the channels last does not match patches
#   flattened channel first (what matters is that the two orders agree); the bias; copying the
#   parameters into a new `nn.Linear` cuts the gradients to `weight` and `bias`.
#
# **Points:** self-check 1, hidden tests 2 (one and three channels, height and width that differ,
# one patch per image, $C = 1$, float64, gradients to the images, the weight and the bias).

# %% nbgrader={"grade": false, "grade_id": "embed", "locked": false, "schema_version": 3, "solution": true, "task": false}
def embed_patches(images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
                  ) -> torch.Tensor:
    """(B, K, Ih, Iw) -> (B, N, C): each flattened patch times E, plus b, as
    Conv2d(K, C, kernel_size=P, stride=P) with this weight (C, K, P, P) and bias computes it."""
    ### BEGIN SOLUTION
    C, K, P, _ = weight.shape
    patches = tfcourse.patchify(images, P)  # (B, N, K·P·P): channel, pixel row, pixel column
    E = weight.reshape(C, K * P * P).T  # (K·P·P, C): each filter flattened in the same order
    return patches @ E + bias  # (B, N, C)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "embed_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 2 (1 point).
import warnings

import torch

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
B, K, P, C = 2, 3, 4, 5
images = torch.randn(B, K, 8, 12)  # a 2 x 3 grid of 4 x 4 patches: N = 6
weight, bias = torch.randn(C, K, P, P), torch.randn(C)  # those of Conv2d(3, 5, 4, stride=4)
with torch.no_grad():
    want = F.conv2d(images, weight, bias, stride=P).flatten(2).transpose(1, 2)  # (B, N, C)
    flat = tfcourse.patchify(images, P)  # (B, N, K·P·P)
    mistakes = {
        "the weight is reshaped to (K·P·P, C) directly, which scrambles the filters: reshape it "
        "to (C, K·P·P), one filter per row, and transpose that":
            flat @ weight.reshape(-1, C) + bias,
        "the weight and the patches are flattened in different orders (the weight with the "
        "channels last): flatten the filters as patchify flattens a patch, channel first, "
        "weight.reshape(C, -1)": flat @ weight.permute(0, 2, 3, 1).reshape(C, -1).T + bias,
        "the bias is missing: add b, one number per output channel": flat @ weight.reshape(C, -1).T,
    }
forbidden = ("torch.nn.functional.conv2d", "torch.nn.Conv2d.forward",
             "tfcourse.vit.PatchEmbedding.forward")
name = "embed_patches(images (2, 3, 8, 12), weight (5, 3, 4, 4), bias (5,))"
with checks.forbid(*forbidden, task="Exercise 2"):
    try:
        got = embed_patches(images, weight, bias)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. The patches are (B, N, K·P·P) = (2, 6, 48) and E is "
            "(K·P·P, C) = (48, 5): the weight reshaped to (C, K·P·P) = (5, 48) must be "
            "transposed (nn.Linear computes x W^T)") from None
checks.expect_shape(got, (B, 6, C), name, hint="one row of C numbers per patch: (B, N, C); the "
                    "convolution's (B, C, N) needs a transpose")
checks.expect_close(got, want, name, mistakes=mistakes,
                    hint="if you use your own patchify, make the self-check of Exercise 1 pass "
                         "first (or use tfcourse.patchify)")

# %% nbgrader={"grade": true, "grade_id": "embed_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 2 (2 points) run when the notebook is graded. Here this cell only
# checks that embed_patches runs.
import torch

assert embed_patches(torch.zeros(1, 1, 4, 4), torch.zeros(3, 1, 2, 2),
                     torch.zeros(3)).shape == (1, 4, 3)
### BEGIN HIDDEN TESTS
import warnings

import torch
import torch.nn.functional as F

from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(42)
    convolutions = ("torch.nn.functional.conv2d", "torch.nn.Conv2d.forward",
                    "tfcourse.vit.PatchEmbedding.forward")
    for nb, nk, rows_px, cols_px, size, width, dtype in [
        (3, 3, 8, 12, 4, 6, torch.float64), (1, 1, 16, 16, 4, 8, torch.float32),
        (2, 3, 6, 6, 6, 1, torch.float32), (2, 2, 6, 4, 2, 5, torch.float64),
    ]:
        pixels = torch.randn(nb, nk, rows_px, cols_px, generator=gen, dtype=dtype)
        kernel = torch.randn(width, nk, size, size, generator=gen, dtype=dtype)
        shift = torch.randn(width, generator=gen, dtype=dtype)
        leaves = [t.clone().requires_grad_(True) for t in (pixels, kernel, shift)]
        reference = F.conv2d(*leaves, stride=size).flatten(2).transpose(1, 2)
        upstream = torch.randn(reference.shape, generator=gen, dtype=dtype)
        ref_grads = torch.autograd.grad((reference * upstream).sum(), leaves)
        inputs = [t.clone().requires_grad_(True) for t in (pixels, kernel, shift)]
        with checks.forbid(*convolutions, task="Exercise 2"):
            result = embed_patches(*inputs)
        label = (f"embed_patches on images {(nb, nk, rows_px, cols_px)} {dtype} with a "
                 f"({width}, {nk}, {size}, {size}) weight")
        checks.expect_close(result, reference.detach(), label)
        assert result.requires_grad, f"{label}: the embeddings do not require grad"
        (result * upstream).sum().backward()
        for part, leaf, ref_grad in zip(("images", "weight", "bias"), inputs, ref_grads,
                                        strict=True):
            assert leaf.grad is not None, f"{label}: no gradient reaches {part}"
            checks.expect_close(leaf.grad, ref_grad, f"the gradient of {part} in {label}")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "vit_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 3: the ViT's forward pass (5 points)
#
# With the patches embedded, the Vision Transformer is a Transformer encoder with two additions
# at its input and a classifier at its output (Dosovitskiy et al., 2021, section 3.1, Eqs. 1–4):
#
# $$z_0 = [\,x_\text{class};\ x_p^1 E;\ x_p^2 E;\ \dots;\ x_p^N E\,] + E_\text{pos}, \qquad
# E_\text{pos} \in \mathbb{R}^{(N+1) \times C} \qquad \text{(Eq. 1)}$$
#
# $$\begin{aligned}
# z'_\ell &= \operatorname{MSA}(\operatorname{LN}(z_{\ell-1})) + z_{\ell-1}, \\
# z_\ell &= \operatorname{MLP}(\operatorname{LN}(z'_\ell)) + z'_\ell, \quad \ell = 1, \dots, L
# \qquad \text{(Eqs. 2, 3)}
# \end{aligned}$$
#
# $$y = \operatorname{LN}(z_L^0), \qquad \text{logits} = \operatorname{head}(y)
# \qquad \text{(Eq. 4)}$$
#
# * **The class token** $x_\text{class}$ is one learned vector, the same for every image,
#   **prepended** to the patch embeddings: the sequence has $N + 1$ tokens and the class token
#   is token 0. It belongs to no patch; through attention it gathers what the classification
#   needs, and the head reads the encoder's output **at position 0** only, $z_L^0$.
# * **The position embeddings** $E_\text{pos}$ are learned, one vector per token, $N + 1$ of
#   them: they are added **after** the class token is prepended, so that the class token gets
#   position 0 and patch $n$ position $n$. Without them, attention would see the patches as a
#   set: permute the patches of an image and the class token's output would not change.
# * **The final LayerNorm** (Eq. 4) normalises the output of the last block before the head:
#   the blocks are pre-LN, so nothing else normalises the residual stream at the end.
#
# The constructor is written for you, with the same modules as `tfcourse.VisionTransformer`
# (the tests copy a `tfcourse.VisionTransformer`'s weights into it and compare the logits):
# `self.patch_embed` maps (B, K, I, I) images to (B, N, C) patch embeddings (your Exercise 2, as
# a convolution), `self.cls_token` is (1, 1, C), `self.pos_embed` (1, N + 1, C), `self.blocks`
# the $L$ encoder blocks (each maps (B, T, C) to (B, T, C)), `self.norm` the final LayerNorm and
# `self.head` the linear classifier.
#
# **Write** `forward(images)`: `images` (B, K, I, I) floating point. Return the (B, classes)
# logits, through which gradients flow to every parameter.
#
# - **Allowed:** the modules and parameters of the model, `expand`, `repeat`, `torch.cat`,
#   indexing, a loop over `self.blocks`.
# - **Not allowed:** the methods of `tfcourse.VisionTransformer` (the hidden tests check).
# - **Pitfalls:** `self.cls_token` is (1, 1, C): expand it over the batch, (B, 1, C), before
#   `torch.cat` along the token axis, dim 1; prepend it, do not append it; add all $N + 1$
#   position embeddings after the concatenation (adding `pos_embed[:, 1:]` to the patches first
#   leaves the class token without a position); the head reads token 0, not the last token nor
#   the mean of the tokens; do not skip `self.norm`.
#
# **Points:** self-check 2, hidden tests 3 (other image, patch and model sizes, three channels,
# one patch, a batch of one, each image classified on its own, float64, gradients reaching every
# parameter, the class token's position among them, no ready-made forward).

# %% nbgrader={"grade": false, "grade_id": "vit", "locked": false, "schema_version": 3, "solution": true, "task": false}
class ViT(nn.Module):
    """A Vision Transformer that classifies from its class token (Dosovitskiy et al., 2021)."""

    def __init__(self, *, image_size: int, patch_size: int, in_channels: int = 1,
                 num_classes: int = 10, d_model: int = 64, num_heads: int = 4,
                 num_layers: int = 4, d_ff: int = 128) -> None:
        super().__init__()
        self.patch_embed = tfcourse.PatchEmbedding(image_size, patch_size, in_channels, d_model)
        N = self.patch_embed.num_patches  # (I / P)²
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, d_model))  # x_class
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, N + 1, d_model))  # E_pos
        self.blocks = nn.ModuleList(
            tfcourse.ViTBlock(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)  # the LN of Eq. 4
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        x = self.patch_embed(images)  # (B, N, C)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (1, 1, C) -> (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # z_0, (B, N + 1, C): Eq. 1
        for block in self.blocks:  # Eqs. 2 and 3
            x = block(x)
        return self.head(self.norm(x)[:, 0])  # Eq. 4: the class token, normalised
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "vit_test", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 3 (2 points).
import warnings

import torch

import tfcourse
from tfcourse import checks
from tfcourse.data import load_digit_images

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
torch.manual_seed(0)
config = dict(image_size=16, patch_size=4, num_classes=10, d_model=16, num_heads=2,
              num_layers=2, d_ff=32)
reference = tfcourse.VisionTransformer(**config).eval()
with torch.no_grad():  # a class token, positions and a final norm that all make a difference
    reference.cls_token.normal_()
    reference.pos_embed.normal_()
    reference.norm.weight.uniform_(0.5, 1.5)
    reference.norm.bias.normal_()
model = ViT(**config).eval()
model.load_state_dict(reference.state_dict())
images = load_digit_images(16).test_images[:3]  # three real digits, (3, 1, 16, 16): N = 16


def logits_of(z0, pool=lambda z: z[:, 0], final_norm=True):
    """The reference's logits from the tokens z0, right or with a classic mistake."""
    for blk in reference.blocks:
        z0 = blk(z0)
    return reference.head(pool(reference.norm(z0) if final_norm else z0))


with torch.no_grad():
    emb = reference.patch_embed(images)  # (B, N, C)
    cls, pos = reference.cls_token.expand(3, -1, -1), reference.pos_embed  # (B, 1, C), (1, 17, C)
    z0 = torch.cat([cls, emb], dim=1) + pos
    want = logits_of(z0)
    token_mistakes = {
        "the class token is missing: prepend self.cls_token, expanded over the batch, before "
        "adding the N + 1 positions": emb + pos[:, 1:],
        "the positions are added to the patches before the class token is prepended, so the "
        "class token gets none: concatenate first, then add all N + 1 positions":
            torch.cat([cls, emb + pos[:, 1:]], dim=1),
        "the class token is appended after the patches: it goes first, at position 0":
            torch.cat([emb, cls], dim=1) + pos,
        "the position embeddings are missing: add self.pos_embed, (1, N + 1, C), after "
        "prepending the class token": torch.cat([cls, emb], dim=1),
    }
    pool_mistakes = {
        "the head reads the last token: the class token is token 0, x[:, 0]":
            logits_of(z0, pool=lambda z: z[:, -1]),
        "the head reads the mean of the tokens: it reads the class token, x[:, 0]":
            logits_of(z0, pool=lambda z: z.mean(1)),
        "the final LayerNorm is skipped: apply self.norm to the last block's output before the "
        "head (Eq. 4)": logits_of(z0, final_norm=False),
    }
seen = []  # the tokens that enter the first block: z_0
hook = model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
name = "ViT(image_size=16, patch_size=4, d_model=16)(three digits (3, 1, 16, 16))"
forbidden = ("tfcourse.vit.VisionTransformer.forward", "tfcourse.vit.VisionTransformer.embed",
             "tfcourse.vit.VisionTransformer.pool_tokens")
try:
    with torch.no_grad(), checks.forbid(*forbidden, task="Exercise 3"):
        got = model(images)
except NotImplementedError:
    raise
except RuntimeError as error:
    raise checks.ContractError(
        f"{name} fails: {error}. The class token (1, 1, C) must be expanded over the batch, "
        "self.cls_token.expand(B, -1, -1), before torch.cat along dim 1; the N + 1 = 17 "
        "position embeddings are added after it is prepended") from None
finally:
    hook.remove()
assert seen, "the blocks were not run: for block in self.blocks: x = block(x)"
checks.expect_shape(seen[0], (3, 17, 16), "the tokens entering the first block, z_0",
                    hint="z_0 holds N + 1 = 17 tokens: the class token, then the 16 patches")
checks.expect_close(seen[0], z0, "the tokens entering the first block, z_0",
                    mistakes=token_mistakes)
checks.expect_shape(got, (3, 10), name, hint="one row of logits per image, from token 0 only")
checks.expect_close(got, want, name, mistakes=pool_mistakes,
                    hint="z_0 is right: is every block applied, in order, each to the output of "
                         "the one before?")

# %% nbgrader={"grade": true, "grade_id": "vit_hidden", "locked": true, "points": 3, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 3 (3 points) run when the notebook is graded. Here this cell only
# checks that ViT runs.
import torch

assert ViT(image_size=4, patch_size=2, d_model=8, num_heads=2, num_layers=1,
           d_ff=8)(torch.zeros(2, 1, 4, 4)).shape == (2, 10)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.vit
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    methods = ("forward", "embed", "pool_tokens")
    blocked = [f"tfcourse.vit.VisionTransformer.{m}" for m in methods]
    for seed, side, size, nk, width, heads, depth, classes, nb, dtype in [
        (1, 12, 4, 3, 24, 3, 2, 7, 4, torch.float64), (2, 8, 2, 1, 16, 2, 1, 3, 1, torch.float32),
        (3, 6, 6, 2, 8, 1, 3, 2, 3, torch.float32),  # one patch: two tokens
    ]:
        torch.manual_seed(seed)
        sizes = dict(image_size=side, patch_size=size, in_channels=nk, num_classes=classes,
                     d_model=width, num_heads=heads, num_layers=depth, d_ff=2 * width)
        original = tfcourse.vit.VisionTransformer(**sizes).to(dtype)
        with torch.no_grad():
            original.cls_token.normal_()
            original.pos_embed.normal_()
            original.norm.weight.uniform_(0.5, 1.5)
            original.norm.bias.normal_()
        student_model = ViT(**sizes).to(dtype)
        student_model.load_state_dict(original.state_dict())
        pixels = torch.rand(nb, nk, side, side, dtype=dtype)
        with torch.no_grad():
            expected_logits = original(pixels)
        with checks.forbid(*blocked, task="Exercise 3"):
            result = student_model(pixels)
            one_by_one = torch.cat([student_model(pixels[i:i + 1]) for i in range(nb)])
        label = (f"ViT({side}x{side} images, {nk} channel(s), patch_size={size}, "
                 f"d_model={width}, {depth} block(s), {classes} classes) on {nb} image(s), "
                 f"{dtype}")
        checks.expect_close(result, expected_logits, label)
        checks.expect_close(one_by_one.detach(), result.detach(),
                            label + ": each image alone against the batch")
        upstream = torch.randn(result.shape, dtype=dtype)
        (result * upstream).sum().backward()
        for pname, p in student_model.named_parameters():
            assert p.grad is not None and bool(torch.isfinite(p.grad).all()), (
                f"{label}: {pname} received no finite gradient")
        assert student_model.cls_token.grad.abs().sum() > 0, f"{label}: the class token is unused"
        assert student_model.pos_embed.grad[0, 0].abs().sum() > 0, (
            f"{label}: position 0, the class token's, gets no gradient")
    return True


assert _hidden_tests()
### END HIDDEN TESTS

# %% [markdown] nbgrader={"grade": false, "grade_id": "rollout_statement", "locked": true, "schema_version": 3, "solution": false, "task": false}
# ## Exercise 4: attention rollout (3 points)
#
# Which patches does the classification draw on? The attention weights of one layer say how each
# token mixes the tokens of the layer below, but after the first layer a token is already a
# mixture, and the residual connections carry every token past each attention layer as well.
# *Attention rollout* (Abnar and Zuidema, 2020, "Quantifying Attention Flow in Transformers",
# ACL, section 3) follows the mixing through the whole stack; Dosovitskiy et al. (2021) draw the
# ViT's attention maps this way (Figure 6). For layer $\ell$ with weights $A_\ell^h$ of heads
# $h = 1, \dots, H$, each (T, T) with rows that sum to 1:
#
# $$\bar A_\ell = \frac{1}{H} \sum_{h=1}^{H} A_\ell^h, \qquad
# \hat A_\ell = \tfrac{1}{2} \left(\bar A_\ell + I\right), \qquad
# \tilde A = \hat A_L \, \hat A_{L-1} \cdots \hat A_1 .$$
#
# The identity $I$ is the residual connection: half of each token's output is the token itself.
# $\hat A_\ell$ still has rows that sum to 1, and so has the product. The product is a matrix
# product, with the **last layer on the left**: the tokens after layer 1 are $\hat A_1$ applied
# to the input tokens, after layer 2 they are $\hat A_2 \hat A_1$ applied to them, and so on.
# Row 0 of $\tilde A$ says how much the class token's final state draws on each input token.
#
# **Write** `attention_rollout(maps)`: `maps` (L, B, H, T, T) floating point, the attention
# weights of every head of every layer, first layer first (what
# `tfcourse.VisionTransformer.attention_maps` returns), each row summing to 1. Return the
# (B, T, T) rollout $\tilde A$ of each batch element, in the dtype and on the device of `maps`
# (float16 and bfloat16 included). Do not change `maps`.
#
# - **Allowed:** `mean`, `torch.eye` (with `dtype=maps.dtype, device=maps.device`), `@`,
#   `torch.matmul`, `torch.bmm`, a loop over the layers.
# - **Not allowed:** `tfcourse.attention_rollout` (the hidden tests check).
# - **Pitfalls:** the heads are dimension 2 of `maps` (dimension 1 of one layer's (B, H, T, T));
#   `*` multiplies entry by entry, `@` is the matrix product; the order of the product; the
#   factor $\tfrac12$ (without it the rows sum to $2^L$); an identity made without the dtype of
#   `maps` is float32: float32 cannot be multiplied with float64, and float16 plus float32 is
#   float32; one made without the device of `maps` is on the CPU, where maps on a GPU cannot
#   meet it.
#
# **Points:** self-check 1, hidden tests 2 (one layer, many layers, one head, a batch of one,
# two tokens, float64, float16 and bfloat16, maps on another device (PyTorch's `meta` device),
# the maps of a ViT, the input unchanged).

# %% nbgrader={"grade": false, "grade_id": "rollout", "locked": false, "schema_version": 3, "solution": true, "task": false}
def attention_rollout(maps: torch.Tensor) -> torch.Tensor:
    """(L, B, H, T, T) attention weights -> (B, T, T): Â_L ··· Â_1 with Â = (mean_h A + I) / 2."""
    ### BEGIN SOLUTION
    T = maps.shape[-1]
    eye = torch.eye(T, dtype=maps.dtype, device=maps.device)  # (T, T): the residual path
    rollout = eye.expand(maps.shape[1], T, T)  # (B, T, T): before any layer, each token itself
    for layer in maps:  # (B, H, T, T), the first layer first
        mixed = 0.5 * (layer.mean(dim=1) + eye)  # (B, T, T): heads averaged, residual added
        rollout = mixed @ rollout  # the newer layer on the left
    return rollout
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "rollout_test", "locked": true, "points": 1, "schema_version": 3, "solution": false, "task": false}
# Self-check for Exercise 4 (1 point).
import warnings

import torch

import tfcourse
from tfcourse import checks

warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
L, B, H, T = 3, 2, 4, 5
scores = 3 * torch.randn(L, B, H, T, T, generator=torch.Generator().manual_seed(0))
maps = scores.softmax(dim=-1)  # (L, B, H, T, T), rows summing to 1
eye = torch.eye(T)


def elementwise():
    """The product taken entry by entry."""
    result = eye.expand(B, T, T)
    for layer in maps:
        result = 0.5 * (layer.mean(1) + eye) * result
    return result


with torch.no_grad():
    want = tfcourse.attention_rollout(maps)
    mistakes = {
        "the layers are multiplied in the wrong order: the last layer goes on the left, "
        "Â_L ··· Â_1 (rollout = mixed @ rollout, layer by layer)":
            tfcourse.attention_rollout(maps.flip(0)),
        "the residual identity is missing: Â = (mean of the heads + I) / 2":
            tfcourse.attention_rollout(maps, residual=False),
        "the rows sum to 2^L: Â = (mean of the heads + I) / 2, with the factor 1/2":
            want * 2**L,
        "the layers are multiplied entry by entry (*): the rollout is a matrix product (@)":
            elementwise(),
        "this is the last layer alone: multiply the layers together, starting from the "
        "identity": tfcourse.attention_rollout(maps[-1:]),
    }
before = maps.clone()
name = "attention_rollout(maps (3, 2, 4, 5, 5))"
with checks.forbid("tfcourse.vit.attention_rollout", task="Exercise 4"):
    try:
        got = attention_rollout(maps)
    except NotImplementedError:
        raise
    except RuntimeError as error:
        raise checks.ContractError(
            f"{name} fails: {error}. Average each layer's (B, H, T, T) weights over the heads, "
            "dimension 1, which leaves (B, T, T), and multiply (B, T, T) matrices of one "
            "dtype") from None
assert torch.equal(maps, before), "attention_rollout changed maps"
checks.expect_shape(got, (B, T, T), name,
                    hint="one (T, T) matrix per batch element: average over the heads, "
                         "dimension 1 of each layer's (B, H, T, T)")
checks.expect_close(got, want, name, mistakes=mistakes)

# %% nbgrader={"grade": true, "grade_id": "rollout_hidden", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
# Hidden tests for Exercise 4 (2 points) run when the notebook is graded. Here this cell only
# checks that attention_rollout runs.
import torch

assert attention_rollout(torch.full((1, 1, 1, 2, 2), 0.5)).shape == (1, 2, 2)
### BEGIN HIDDEN TESTS
import warnings

import torch

import tfcourse.vit
from tfcourse import checks


def _hidden_tests() -> bool:
    warnings.simplefilter("ignore")  # a warning on stderr would cost this cell its points
    gen = torch.Generator().manual_seed(44)
    stacks = []
    for depth, nb, heads, tokens, dtype, sharpness in [
        (4, 3, 2, 7, torch.float64, 3.0), (1, 2, 3, 4, torch.float32, 2.0),
        (2, 1, 1, 2, torch.float32, 1.0), (6, 2, 4, 10, torch.float64, 4.0),
    ]:
        logits = sharpness * torch.randn(depth, nb, heads, tokens, tokens, generator=gen,
                                         dtype=dtype)
        stacks.append(logits.softmax(dim=-1))
    torch.manual_seed(4)
    vit = tfcourse.vit.VisionTransformer(image_size=8, patch_size=2, d_model=16, num_heads=2,
                                         num_layers=3, d_ff=16)
    with torch.no_grad():
        vit.pos_embed.normal_()
    stacks.append(vit.attention_maps(torch.rand(2, 1, 8, 8)))  # (3, 2, 2, 17, 17)
    for dtype in (torch.float16, torch.bfloat16):  # half precision: kept, not promoted
        logits = 2 * torch.randn(3, 2, 2, 5, 5, generator=gen, dtype=torch.float64)
        stacks.append(logits.softmax(dim=-1).to(dtype))
    for weights in stacks:
        # computed in float64 from the same numbers, then rounded to the dtype of the maps
        expected_rollout = tfcourse.vit.attention_rollout(weights.double()).to(weights.dtype)
        kept = weights.clone()
        with checks.forbid("tfcourse.vit.attention_rollout", task="Exercise 4"):
            result = attention_rollout(weights)
        label = f"attention_rollout on maps {tuple(weights.shape)} {weights.dtype}"
        checks.expect_close(result, expected_rollout, label, hint=(
            "keep the dtype of maps: an identity made without dtype=maps.dtype is float32, and "
            "float16 + float32 is float32") if result.dtype != weights.dtype else None)
        assert torch.equal(weights, kept), f"{label} changed its input"
    with checks.forbid("tfcourse.vit.attention_rollout", task="Exercise 4"):  # the device
        checks.expect_on_meta(lambda: attention_rollout(torch.empty(2, 2, 3, 5, 5, device="meta")),
                 "attention_rollout on maps (2, 2, 3, 5, 5) on the meta device",
                 "make the identity on the device of maps, "
                 "torch.eye(T, dtype=maps.dtype, device=maps.device)")
    return True


assert _hidden_tests()
### END HIDDEN TESTS
