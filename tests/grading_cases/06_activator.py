"""Submissions that tests/test_grading.py grades for the assignment 06_activator.

The mistakes are the classic ones of chapter 6: a gated linear unit with the activation on the
value or on the product, the gate's bias outside the activation, GELU hard-coded, a sigmoid as
the default activation, the weights transposed, or written for three axes only; a gating unit
with a second norm where one is shared, GELU on the value branch, the norm before the GELU, a
branch left unnormalised, or the product normalised; a classifier with a class token, a position
embedding or a final norm added, pooled from token 0 or over the features, with each block
applied to the patch vectors, or with the reduced flag ignored; a token-mixing test that compares
exactly where rounding leaves about 1e-7, compares the changed patch too or only, changes the
whole image, piles up its changes in the caller's images, swaps the grid's rows and columns,
changes the first patch only, skips patch 0, compares the mean change instead of the largest,
changes one channel or the first image only, forgets the absolute value, ignores atol, or returns
a tensor; and calls to the reference.
"""

from grading_cases import edit, exercises, function, indent

NOTEBOOK = "exercises"

EXERCISES = exercises("glu", "gating", "activator", "mixing")

GLU = EXERCISES["glu"][1]
GATING = EXERCISES["gating"][1]
ACTIVATOR = EXERCISES["activator"][1]
MIXING = EXERCISES["mixing"][1]


def glu(body: str) -> str:
    return function("glu(x, w_gate, b_gate, w_value, b_value, activation=F.gelu)", body)


def gating(body: str) -> str:
    return function("gating_unit(x, unit)", body)


def mixing(body: str) -> str:
    return function("mixes_tokens(features, images, patch_size, atol=1e-5)", body)


ACTIVATOR_CLASS = '''
class Activator(nn.Module):
    def __init__(self, *, image_size, patch_size, in_channels=1, num_classes=10, d_model=32,
                 d_hidden=64, num_layers=2, reduced=False):
        super().__init__()
{init}

    def features(self, images):
{features}

    def forward(self, images):
{forward}
'''


def activator(text: str) -> str:
    """The exercise-3 class from ``text``: three bodies (unindented lines) separated by lines
    ``---``: __init__ after super().__init__(), features, forward."""
    init, features, forward = text.strip("\n").split("\n---\n")
    return ACTIVATOR_CLASS.format(init=indent(init, 8), features=indent(features, 8),
                                  forward=indent(forward, 8))


# The right implementations, written plainly; each mistake below edits one or a few lines.
GLU_RIGHT = '''
gate = activation(x @ w_gate + b_gate)
value = x @ w_value + b_value
return gate * value
'''

GATING_RIGHT = '''
gate = F.gelu(unit.gate_proj(x))
u = unit.norm(gate)
v = unit.norm(unit.value_proj(x))
return unit.out_proj(u * v)
'''

ACTIVATOR_RIGHT = '''
self.patch_embed = tfcourse.PatchEmbedding(image_size, patch_size, in_channels, d_model)
self.blocks = nn.ModuleList(
    [tfcourse.ActivatorBlock(d_model, d_hidden, reduced=reduced) for _ in range(num_layers)])
self.head = nn.Linear(d_model, num_classes)
---
x = self.patch_embed(images)
for block in self.blocks:
    x = block(x)
return x
---
pooled = self.features(images).mean(dim=1)
return self.head(pooled)
'''

MIXING_RIGHT = '''
P = patch_size
cols = images.shape[-1] // P
with torch.no_grad():
    base = features(images)
    for n in range(base.shape[1]):
        r, c = divmod(n, cols)
        changed = images.clone()
        changed[..., r * P:(r + 1) * P, c * P:(c + 1) * P] += 1.0
        moved = (features(changed) - base).abs()
        moved[:, n] = 0
        if moved.max() > atol:
            return True
return False
'''


# Correct code written differently from the solution: every exercise at once, three times.
ALTERNATIVE = {
    "glu": glu('''
# F.linear takes (out, in) weights: transpose the (C, F) ones
return activation(F.linear(x, w_gate.T, b_gate)) * F.linear(x, w_value.T, b_value)
'''),
    "gating": gating('''
# the layer norm written out with the module's own weight, bias and eps
ln = unit.norm


def normalise(h):
    mu = h.mean(dim=-1, keepdim=True)
    var = ((h - mu) ** 2).mean(dim=-1, keepdim=True)
    return (h - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


up = torch.nn.functional.gelu(unit.gate_proj(x))
return unit.out_proj(normalise(up) * normalise(unit.value_proj(x)))
'''),
    "activator": activator('''
self.patch_embed = tfcourse.PatchEmbedding(image_size, patch_size, in_channels, d_model)
self.blocks = nn.ModuleList()
for _ in range(num_layers):
    self.blocks.append(tfcourse.ActivatorBlock(d_model, d_hidden, dropout=0.0, reduced=reduced))
self.head = nn.Linear(in_features=d_model, out_features=num_classes)
---
import functools

return functools.reduce(lambda z, blk: blk(z), self.blocks, self.patch_embed(images))
---
z = self.features(images)
return self.head(z.sum(dim=1) / z.shape[1])
'''),
    "mixing": mixing('''
# random noise on each patch in turn; allclose with rtol=0 is |a - b| <= atol
B, K, height, width = images.shape
step = patch_size
before = features(images).detach()
index = 0
for top in range(0, height, step):
    for left in range(0, width, step):
        other = images.detach().clone()
        other[:, :, top:top + step, left:left + step] = torch.rand(
            B, K, step, step, dtype=images.dtype)
        after = features(other).detach()
        keep = [i for i in range(after.shape[1]) if i != index]
        if not torch.allclose(after[:, keep], before[:, keep], rtol=0.0, atol=atol):
            return True
        index += 1
return False
'''),
}

ALTERNATIVE_2 = {
    "glu": glu('''
gate = torch.einsum("...c,cf->...f", x, w_gate) + b_gate
value = torch.einsum("...c,cf->...f", x, w_value) + b_value
return value * activation(gate)
'''),
    "gating": gating('''
# both branches through the one norm in a single call
both = torch.stack([F.gelu(unit.gate_proj(x)), unit.value_proj(x)])
u, v = unit.norm(both).unbind(0)
return unit.out_proj(u * v)
'''),
    "activator": activator('''
self.patch_embed = tfcourse.PatchEmbedding(image_size, patch_size, in_channels, d_model)
layers = [tfcourse.ActivatorBlock(d_model, d_hidden, reduced=reduced)
          for _ in range(num_layers)]
self.blocks = nn.ModuleList(layers)
self.head = nn.Linear(d_model, num_classes)
---
tokens = self.patch_embed(images)
for i in range(len(self.blocks)):
    tokens = self.blocks[i](tokens)
return tokens
---
return self.head(torch.mean(self.features(images), 1))
'''),
    "mixing": mixing('''
# all N changed copies in one batch of N·B images; one patch mask per copy
B, K, H, W = images.shape
P = patch_size
cols = W // P
N = (H // P) * cols
grid = (torch.arange(H)[:, None] // P) * cols + torch.arange(W)[None, :] // P  # (H, W)
masks = (grid == torch.arange(N)[:, None, None]).to(images.dtype)  # (N, H, W)
with torch.no_grad():
    base = features(images)  # (B, N, C)
    copies = images.unsqueeze(0) + masks[:, None, None]  # (N, B, K, H, W)
    out = features(copies.reshape(N * B, K, H, W)).reshape(N, B, N, -1)
diff = (out - base).abs().amax(dim=(1, 3))  # (changed patch, patch seen)
diff.fill_diagonal_(0)
return bool((diff > atol).any())
'''),
}

ALTERNATIVE_3 = {
    "glu": glu('''
out = torch.matmul(x, w_value)
out = out + b_value
return out * activation(torch.matmul(x, w_gate) + b_gate)
'''),
    "gating": gating('''
norm = unit.norm
h_gate = norm(torch.nn.functional.gelu(unit.gate_proj(x), approximate="none"))
h_value = norm(unit.value_proj(x))
return unit.out_proj(torch.mul(h_gate, h_value))
'''),
    "activator": activator('''
self.patch_embed = tfcourse.PatchEmbedding(image_size=image_size, patch_size=patch_size,
                                           in_channels=in_channels, d_model=d_model)
self.blocks = nn.ModuleList(tfcourse.ActivatorBlock(d_model, d_hidden, reduced=reduced)
                            for _ in range(num_layers))
self.head = nn.Linear(d_model, num_classes)
---
out = self.patch_embed(images)
for layer in self.blocks:
    out = layer(out)
return out
---
feats = self.features(images)
return self.head(feats).mean(dim=1)  # the head is linear: mean and head commute
'''),
    "mixing": mixing('''
import itertools

P = patch_size
rows, cols = images.shape[-2] // P, images.shape[-1] // P
with torch.no_grad():
    reference = features(images)
    for n, (r, c) in enumerate(itertools.product(range(rows), range(cols))):
        probe = images.clone()
        probe[:, :, r * P:(r + 1) * P, c * P:(c + 1) * P] *= -2.0
        probe[:, :, r * P:(r + 1) * P, c * P:(c + 1) * P] += 0.5
        delta = (features(probe) - reference).abs()
        others = torch.cat([delta[:, :n], delta[:, n + 1:]], dim=1)
        if others.numel() and others.max().item() > atol:
            return True
return False
'''),
}

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    "alternative_2": {"replace": ALTERNATIVE_2, "loses": None, "fails": ()},
    "alternative_3": {"replace": ALTERNATIVE_3, "loses": None, "fails": ()},
    # ---- exercise 1, a gated linear unit
    "glu_activation_on_the_value": {
        "replace": {"glu": edit(GLU_RIGHT, glu, (
            "gate = activation(x @ w_gate + b_gate)\nvalue = x @ w_value + b_value",
            "gate = x @ w_gate + b_gate\nvalue = activation(x @ w_value + b_value)"))},
        "loses": "glu", "fails": GLU,
    },
    "glu_activation_on_the_product": {
        "replace": {"glu": edit(GLU_RIGHT, glu, (
            "gate = activation(x @ w_gate + b_gate)", "gate = x @ w_gate + b_gate"), (
            "return gate * value", "return activation(gate * value)"))},
        "loses": "glu", "fails": GLU,
    },
    "glu_bias_after_the_activation": {
        "replace": {"glu": edit(GLU_RIGHT, glu, (
            "activation(x @ w_gate + b_gate)", "activation(x @ w_gate) + b_gate"))},
        "loses": "glu", "fails": GLU,
    },
    "glu_gelu_hard_coded": {  # the activation argument ignored
        "replace": {"glu": edit(GLU_RIGHT, glu, ("gate = activation(", "gate = F.gelu("))},
        "loses": "glu", "fails": GLU,
    },
    "glu_weights_transposed": {  # (F, C) weights assumed: a shape error, or wrong when C = F
        "replace": {"glu": edit(GLU_RIGHT, glu, ("x @ w_gate", "x @ w_gate.T"),
                                ("x @ w_value", "x @ w_value.T"))},
        "loses": "glu", "fails": GLU,
    },
    "glu_three_axes_only": {  # (B, N, C) assumed
        "replace": {"glu": edit(GLU_RIGHT, glu, (
            "gate = activation(x @ w_gate + b_gate)",
            "B, N, C = x.shape\ngate = activation(torch.bmm(x, w_gate.expand(B, C, -1)) + b_gate)"
        ))},
        "loses": "glu", "fails": ("glu_hidden",),
    },
    "glu_default_sigmoid": {  # the default activation is F.gelu, not Dauphin's sigmoid
        "replace": {"glu": function("glu(x, w_gate, b_gate, w_value, b_value, "
                                    "activation=torch.sigmoid)", GLU_RIGHT)},
        "loses": "glu", "fails": ("glu_hidden",),
    },
    "glu_calls_tfcourse": {
        "replace": {"glu": glu('''
unit_glu = tfcourse.GLU(w_gate.shape[0], w_gate.shape[1], variant="geglu").to(x.dtype)
unit_glu.activation = activation
with torch.no_grad():
    unit_glu.gate.weight.copy_(w_gate.T)
    unit_glu.gate.bias.copy_(b_gate)
    unit_glu.value.weight.copy_(w_value.T)
    unit_glu.value.bias.copy_(b_value)
return unit_glu(x)
''')},
        "loses": "glu", "fails": GLU,
    },
    # ---- exercise 2, the gating unit
    "gating_separate_norms": {  # a second, fresh norm on the value branch
        "replace": {"gating": edit(GATING_RIGHT, gating, (
            "v = unit.norm(unit.value_proj(x))",
            "value = unit.value_proj(x)\n"
            "v = torch.nn.LayerNorm(value.shape[-1], dtype=value.dtype)(value)"))},
        "loses": "gating", "fails": GATING,
    },
    "gating_gelu_on_the_value": {
        "replace": {"gating": edit(GATING_RIGHT, gating, (
            "gate = F.gelu(unit.gate_proj(x))", "gate = unit.gate_proj(x)"), (
            "v = unit.norm(unit.value_proj(x))", "v = unit.norm(F.gelu(unit.value_proj(x)))"))},
        "loses": "gating", "fails": GATING,
    },
    "gating_norm_before_gelu": {
        "replace": {"gating": edit(GATING_RIGHT, gating, (
            "gate = F.gelu(unit.gate_proj(x))\nu = unit.norm(gate)",
            "u = F.gelu(unit.norm(unit.gate_proj(x)))"))},
        "loses": "gating", "fails": GATING,
    },
    "gating_value_not_normalised": {
        "replace": {"gating": edit(GATING_RIGHT, gating, (
            "v = unit.norm(unit.value_proj(x))", "v = unit.value_proj(x)"))},
        "loses": "gating", "fails": GATING,
    },
    "gating_product_normalised": {
        "replace": {"gating": edit(GATING_RIGHT, gating, (
            "u = unit.norm(gate)\nv = unit.norm(unit.value_proj(x))\n"
            "return unit.out_proj(u * v)",
            "return unit.out_proj(unit.norm(gate * unit.value_proj(x)))"))},
        "loses": "gating", "fails": GATING,
    },
    "gating_calls_tfcourse": {
        "replace": {"gating": gating("return unit(x)")},
        "loses": "gating", "fails": GATING,
    },
    # ---- exercise 3, the classifier
    "activator_class_token": {  # the ViT's class token, pooled from it
        "replace": {"activator": edit(ACTIVATOR_RIGHT, activator, (
            "self.head = nn.Linear(d_model, num_classes)",
            "self.head = nn.Linear(d_model, num_classes)\n"
            "self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))"), (
            "x = self.patch_embed(images)",
            "x = self.patch_embed(images)\n"
            "x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)"), (
            "pooled = self.features(images).mean(dim=1)", "pooled = self.features(images)[:, 0]"))},
        "loses": "activator", "fails": ACTIVATOR,
    },
    "activator_position_embedding": {
        "replace": {"activator": edit(ACTIVATOR_RIGHT, activator, (
            "self.head = nn.Linear(d_model, num_classes)",
            "self.head = nn.Linear(d_model, num_classes)\n"
            "self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, "
            "d_model))"), (
            "x = self.patch_embed(images)", "x = self.patch_embed(images) + self.pos_embed"))},
        "loses": "activator", "fails": ACTIVATOR,
    },
    "activator_final_norm": {
        "replace": {"activator": edit(ACTIVATOR_RIGHT, activator, (
            "self.head = nn.Linear(d_model, num_classes)",
            "self.head = nn.Linear(d_model, num_classes)\nself.norm = nn.LayerNorm(d_model)"), (
            "pooled = self.features(images).mean(dim=1)",
            "pooled = self.norm(self.features(images)).mean(dim=1)"))},
        "loses": "activator", "fails": ACTIVATOR,
    },
    "activator_pools_token_0": {
        "replace": {"activator": edit(ACTIVATOR_RIGHT, activator, (
            "self.features(images).mean(dim=1)", "self.features(images)[:, 0]"))},
        "loses": "activator", "fails": ACTIVATOR,
    },
    "activator_mean_over_the_features": {  # (B, N): right shape only when N = C
        "replace": {"activator": edit(ACTIVATOR_RIGHT, activator, (
            "self.features(images).mean(dim=1)", "self.features(images).mean(dim=-1)"))},
        "loses": "activator", "fails": ACTIVATOR,
    },
    "activator_each_block_on_the_patches": {  # only the last block counts
        "replace": {"activator": edit(ACTIVATOR_RIGHT, activator, (
            "x = self.patch_embed(images)\nfor block in self.blocks:\n    x = block(x)\nreturn x",
            "patches = self.patch_embed(images)\nfor block in self.blocks:\n"
            "    x = block(patches)\nreturn x"))},
        "loses": "activator", "fails": ACTIVATOR,
    },
    "activator_reduced_ignored": {  # always the full block
        "replace": {"activator": edit(ACTIVATOR_RIGHT, activator, (
            "tfcourse.ActivatorBlock(d_model, d_hidden, reduced=reduced)",
            "tfcourse.ActivatorBlock(d_model, d_hidden)"))},
        "loses": "activator", "fails": ("activator_hidden",),
    },
    "activator_subclasses_tfcourse": {
        "replace": {"activator": '''
class Activator(tfcourse.ActivatorClassifier):
    def __init__(self, *, image_size, patch_size, in_channels=1, num_classes=10, d_model=32,
                 d_hidden=64, num_layers=2, reduced=False):
        super().__init__(image_size=image_size, patch_size=patch_size,
                         in_channels=in_channels, num_classes=num_classes, d_model=d_model,
                         d_hidden=d_hidden, num_layers=num_layers, dropout=0.0,
                         reduced=reduced)
'''},
        "loses": "activator", "fails": ACTIVATOR,
    },
    # ---- exercise 4, the token-mixing test
    "mixing_exact_equality": {  # rounding of about 1e-7 counted as mixing
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, (
            "if moved.max() > atol:", "if moved.max() > 0:"))},
        "loses": "mixing", "fails": MIXING,
    },
    "mixing_torch_equal": {  # the same mistake through torch.equal on the other patches
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, (
            "moved = (features(changed) - base).abs()\n        moved[:, n] = 0\n"
            "        if moved.max() > atol:",
            "after = features(changed)\n        after[:, n] = base[:, n]\n"
            "        if not torch.equal(after, base):"))},
        "loses": "mixing", "fails": MIXING,
    },
    "mixing_changed_patch_compared_too": {  # every model seems to mix
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, ("moved[:, n] = 0\n", ""))},
        "loses": "mixing", "fails": MIXING,
    },
    "mixing_only_the_changed_patch_compared": {
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, (
            "moved = (features(changed) - base).abs()\n        moved[:, n] = 0\n"
            "        if moved.max() > atol:",
            "moved = (features(changed) - base).abs()[:, n]\n"
            "        if moved.max() > atol:"))},
        "loses": "mixing", "fails": MIXING,
    },
    "mixing_whole_image_changed": {
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, (
            "changed[..., r * P:(r + 1) * P, c * P:(c + 1) * P] += 1.0", "changed += 1.0"))},
        "loses": "mixing", "fails": MIXING,
    },
    "mixing_changes_the_images_in_place": {  # no copy: the changes pile up in images
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, (
            "changed = images.clone()", "changed = images"))},
        "loses": "mixing", "fails": MIXING,
    },
    "mixing_rows_and_columns_swapped": {  # the patch changed is not the patch left out
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, ("r, c = divmod(n, cols)",
                                                          "c, r = divmod(n, cols)"))},
        "loses": "mixing", "fails": MIXING,
    },
    "mixing_first_patch_only": {  # misses a model that mixes backwards only
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, ("for n in range(base.shape[1]):",
                                                          "for n in range(1):"))},
        "loses": "mixing", "fails": ("mixing_hidden",),
    },
    "mixing_skips_patch_0": {  # misses a model in which only patch 0 is read by another
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, ("for n in range(base.shape[1]):",
                                                          "for n in range(1, base.shape[1]):"))},
        "loses": "mixing", "fails": ("mixing_hidden",),
    },
    "mixing_mean_change": {  # one faint cross-patch feature is averaged away
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, ("if moved.max() > atol:",
                                                          "if moved.mean() > atol:"))},
        "loses": "mixing", "fails": ("mixing_hidden",),
    },
    "mixing_one_channel_changed": {  # misses a model that mixes through another channel
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, (
            "changed[..., r * P:(r + 1) * P, c * P:(c + 1) * P] += 1.0",
            "changed[:, 0, r * P:(r + 1) * P, c * P:(c + 1) * P] += 1.0"))},
        "loses": "mixing", "fails": ("mixing_hidden",),
    },
    "mixing_first_image_only": {  # misses a model that mixes in some images only
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, (
            "changed[..., r * P:(r + 1) * P, c * P:(c + 1) * P] += 1.0",
            "changed[0, :, r * P:(r + 1) * P, c * P:(c + 1) * P] += 1.0"))},
        "loses": "mixing", "fails": ("mixing_hidden",),
    },
    "mixing_without_abs": {  # a feature that moves down goes unseen
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, (
            "moved = (features(changed) - base).abs()", "moved = features(changed) - base"))},
        "loses": "mixing", "fails": ("mixing_hidden",),
    },
    "mixing_atol_ignored": {
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, ("if moved.max() > atol:",
                                                          "if moved.max() > 1e-5:"))},
        "loses": "mixing", "fails": ("mixing_hidden",),
    },
    "mixing_returns_a_tensor": {
        "replace": {"mixing": edit(MIXING_RIGHT, mixing, (
            "    base = features(images)", "    base = features(images)\n"
            "    found = torch.tensor(False)"), (
            "        if moved.max() > atol:\n            return True\nreturn False",
            "        found = found | (moved.max() > atol)\nreturn found"))},
        "loses": "mixing", "fails": MIXING,
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"mixing": '''
while True:
    pass
'''},
        "loses": "mixing", "fails": MIXING, "times_out": True,
    },
    "kernel_exits": {"replace": {"glu": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
