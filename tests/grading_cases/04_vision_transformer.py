"""Submissions that tests/test_grading.py grades for the assignment 04_vision_transformer.

The mistakes are the classic ones of chapter 4: patches flattened with the channels last, in
column-major grid order, with their pixels transposed, or cut by a reshape without a permute;
``view`` after a permute; square images assumed; the sizes not checked (``unfold`` drops the
leftover pixels), or checked on one axis only; a patch embedding whose weight is reshaped
instead of transposed, flattened in another order than the patches, not transposed at all, or
copied into a new ``nn.Linear`` (no gradient); a bias forgotten; a ViT without its class token,
with the class token appended or not expanded over the batch, with positions added before the
class token or not at all, pooling the last token or the mean, skipping the final norm, or with
a detached class token; a rollout multiplied in the wrong order, entry by entry, without the
residual identity or its factor 1/2, averaged over the batch instead of the heads, reduced to
the last layer, with an identity in the default dtype (float64 fails; or, with no identity to
start from, float16 and bfloat16 maps come back as float32) or on the default device.
"""

from grading_cases import edit, exercises, function

NOTEBOOK = "exercises"

EXERCISES = exercises("patchify", "embed", "vit", "rollout")

PATCHIFY = EXERCISES["patchify"][1]
EMBED = EXERCISES["embed"][1]
VIT = EXERCISES["vit"][1]
ROLLOUT = EXERCISES["rollout"][1]


def patchify(body: str) -> str:
    return function("patchify(images, patch_size)", body)


def embed(body: str) -> str:
    return function("embed_patches(images, weight, bias)", body)


VIT_CLASS = '''
class ViT(nn.Module):
    def __init__(self, *, image_size, patch_size, in_channels=1, num_classes=10, d_model=64,
                 num_heads=4, num_layers=4, d_ff=128):
        super().__init__()
        self.patch_embed = tfcourse.PatchEmbedding(image_size, patch_size, in_channels, d_model)
        N = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, d_model))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, N + 1, d_model))
        self.blocks = nn.ModuleList(
            tfcourse.ViTBlock(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, images):
{body}
'''


def vit(body: str) -> str:
    """The exercise-3 class with ``body`` (unindented lines) as its forward."""
    return VIT_CLASS.format(body="\n".join(
        "        " + line if line else line for line in body.strip("\n").splitlines()))


def rollout(body: str) -> str:
    return function("attention_rollout(maps)", body)


# The right implementations, written plainly; each mistake below edits one or two lines.
PATCHIFY_RIGHT = '''
B, K, height, width = images.shape
P = patch_size
if height % P or width % P:
    raise ValueError(f"images: {height}x{width} pixels do not divide into patches of {P}")
grid = images.reshape(B, K, height // P, P, width // P, P)
grid = grid.permute(0, 2, 4, 1, 3, 5)
return grid.reshape(B, -1, K * P * P)
'''

EMBED_RIGHT = '''
C, K, P, _ = weight.shape
patches = tfcourse.patchify(images, P)
return patches @ weight.reshape(C, K * P * P).T + bias
'''

VIT_RIGHT = '''
x = self.patch_embed(images)
cls = self.cls_token.expand(x.shape[0], -1, -1)
x = torch.cat([cls, x], dim=1) + self.pos_embed
for block in self.blocks:
    x = block(x)
return self.head(self.norm(x)[:, 0])
'''

ROLLOUT_RIGHT = '''
T = maps.shape[-1]
eye = torch.eye(T, dtype=maps.dtype, device=maps.device)
result = eye.expand(maps.shape[1], T, T)
for layer in maps:
    mixed = 0.5 * (layer.mean(dim=1) + eye)
    result = mixed @ result
return result
'''


# Correct code written differently from the solution: every exercise at once.
ALTERNATIVE = {
    "patchify": patchify('''
# F.unfold gives (B, K·P·P, N), each column a patch flattened channel, row, column
if images.shape[-2] % patch_size != 0 or images.shape[-1] % patch_size != 0:
    raise ValueError(f"images of shape {tuple(images.shape)}: not a whole number of patches")
return F.unfold(images, kernel_size=patch_size, stride=patch_size).transpose(1, 2)
'''),
    "embed": embed('''
# the patches and the filters both flattened with the channels last: one order for both, so
# the dot products are those of the convolution
C, K, P, _ = weight.shape
B = images.shape[0]
blocks = images.unfold(2, P, P).unfold(3, P, P)  # (B, K, rows, cols, P, P)
flat = blocks.permute(0, 2, 3, 4, 5, 1).reshape(B, -1, P * P * K)
filters = weight.permute(0, 2, 3, 1).reshape(C, P * P * K)
return torch.einsum("bnk,ck->bnc", flat, filters) + bias
'''),
    "vit": vit('''
B = images.shape[0]
tokens = self.patch_embed(images)
tokens = torch.cat((self.cls_token.repeat(B, 1, 1), tokens), 1)
tokens = tokens + self.pos_embed
for i in range(len(self.blocks)):
    tokens = self.blocks[i](tokens)
# LayerNorm works token by token: normalising token 0 alone gives the same vector
return self.head(self.norm(tokens[:, 0]))
'''),
    "rollout": rollout('''
# from the last layer down, each earlier layer multiplied on the right
T = maps.shape[-1]
steps = (maps.mean(dim=2) + torch.eye(T).to(maps)) / 2  # (L, B, T, T); .to: dtype, device
total = steps[-1]
for step in reversed(steps[:-1]):
    total = torch.bmm(total, step)
return total / total.sum(dim=-1, keepdim=True)
'''),
}

CASES = {
    # ---- correct, written differently: full marks
    "alternative": {"replace": ALTERNATIVE, "loses": None, "fails": ()},
    # ---- exercise 1, patchify
    "patchify_channels_last": {
        "replace": {"patchify": edit(PATCHIFY_RIGHT, patchify, ("(0, 2, 4, 1, 3, 5)",
                                                               "(0, 2, 4, 3, 5, 1)"))},
        "loses": "patchify", "fails": PATCHIFY,
    },
    "patchify_grid_column_major": {  # down the first grid column first
        "replace": {"patchify": edit(PATCHIFY_RIGHT, patchify, ("(0, 2, 4, 1, 3, 5)",
                                                               "(0, 4, 2, 1, 3, 5)"))},
        "loses": "patchify", "fails": PATCHIFY,
    },
    "patchify_pixels_transposed": {  # pixel columns before pixel rows inside a patch
        "replace": {"patchify": edit(PATCHIFY_RIGHT, patchify, ("(0, 2, 4, 1, 3, 5)",
                                                               "(0, 2, 4, 1, 5, 3)"))},
        "loses": "patchify", "fails": PATCHIFY,
    },
    "patchify_reshape_without_permute": {  # strips of consecutive pixels, not blocks
        "replace": {"patchify": edit(PATCHIFY_RIGHT, patchify,
                                     ("grid = grid.permute(0, 2, 4, 1, 3, 5)\n", ""))},
        "loses": "patchify", "fails": PATCHIFY,
    },
    "patchify_view_after_permute": {  # a view of a permuted tensor: RuntimeError
        "replace": {"patchify": edit(PATCHIFY_RIGHT, patchify, ("grid.reshape(B, -1",
                                                               "grid.view(B, -1"))},
        "loses": "patchify", "fails": PATCHIFY,
    },
    "patchify_square_images_only": {  # the height used for the width: right on squares only
        "replace": {"patchify": edit(PATCHIFY_RIGHT, patchify, (
            "B, K, height, width = images.shape",
            "B, K, height, _ = images.shape\nwidth = height"))},
        "loses": "patchify", "fails": ("patchify_hidden",),
    },
    "patchify_checks_the_height_only": {  # a width that does not divide: RuntimeError
        "replace": {"patchify": edit(PATCHIFY_RIGHT, patchify, ("if height % P or width % P:",
                                                               "if height % P:"))},
        "loses": "patchify", "fails": ("patchify_hidden",),
    },
    "patchify_unfold_without_a_check": {  # the right order, but leftover pixels dropped
        "replace": {"patchify": patchify('''
return F.unfold(images, patch_size, stride=patch_size).transpose(1, 2)
''')},
        "loses": "patchify", "fails": PATCHIFY,
    },
    "patchify_calls_tfcourse": {
        "replace": {"patchify": patchify("return tfcourse.patchify(images, patch_size)")},
        "loses": "patchify", "fails": PATCHIFY,
    },
    # ---- exercise 2, the patch embedding
    "embed_weight_reshaped_not_transposed": {  # (K·P·P, C) by reshape scrambles the filters
        "replace": {"embed": edit(EMBED_RIGHT, embed, ("weight.reshape(C, K * P * P).T",
                                                       "weight.reshape(K * P * P, C)"))},
        "loses": "embed", "fails": EMBED,
    },
    "embed_weight_flattened_channels_last": {  # patches channel first, filters channel last
        "replace": {"embed": edit(EMBED_RIGHT, embed, (
            "weight.reshape(C, K * P * P).T", "weight.permute(0, 2, 3, 1).reshape(C, -1).T"))},
        "loses": "embed", "fails": EMBED,
    },
    "embed_weight_not_transposed": {  # (B, N, K·P·P) @ (C, K·P·P): RuntimeError
        "replace": {"embed": edit(EMBED_RIGHT, embed, ("K * P * P).T", "K * P * P)"))},
        "loses": "embed", "fails": EMBED,
    },
    "embed_bias_forgotten": {
        "replace": {"embed": edit(EMBED_RIGHT, embed, (".T + bias", ".T"))},
        "loses": "embed", "fails": EMBED,
    },
    "embed_copied_into_a_linear": {  # right values in float32; no gradient, no float64
        "replace": {"embed": embed('''
C, K, P, _ = weight.shape
linear = nn.Linear(K * P * P, C)
with torch.no_grad():
    linear.weight.copy_(weight.reshape(C, -1))
    linear.bias.copy_(bias)
return linear(tfcourse.patchify(images, P))
''')},
        "loses": "embed", "fails": ("embed_hidden",),
    },
    "embed_calls_conv2d": {
        "replace": {"embed": embed('''
P = weight.shape[-1]
return F.conv2d(images, weight, bias, stride=P).flatten(2).transpose(1, 2)
''')},
        "loses": "embed", "fails": EMBED,
    },
    # ---- exercise 3, the ViT's forward pass
    "vit_no_class_token": {  # the first patch is classified
        "replace": {"vit": edit(VIT_RIGHT, vit, ("torch.cat([cls, x], dim=1) + self.pos_embed",
                                                 "x + self.pos_embed[:, 1:]"))},
        "loses": "vit", "fails": VIT,
    },
    "vit_positions_before_the_class_token": {  # the class token gets no position
        "replace": {"vit": edit(VIT_RIGHT, vit, (
            "torch.cat([cls, x], dim=1) + self.pos_embed",
            "torch.cat([cls, x + self.pos_embed[:, 1:]], dim=1)"))},
        "loses": "vit", "fails": VIT,
    },
    "vit_class_token_appended": {
        "replace": {"vit": edit(VIT_RIGHT, vit, ("torch.cat([cls, x]", "torch.cat([x, cls]"))},
        "loses": "vit", "fails": VIT,
    },
    "vit_class_token_not_expanded": {  # (1, 1, C) and (B, N, C): RuntimeError when B > 1
        "replace": {"vit": edit(VIT_RIGHT, vit, ("torch.cat([cls, x]",
                                                 "torch.cat([self.cls_token, x]"))},
        "loses": "vit", "fails": VIT,
    },
    "vit_no_positions": {
        "replace": {"vit": edit(VIT_RIGHT, vit, (" + self.pos_embed", ""))},
        "loses": "vit", "fails": VIT,
    },
    "vit_pools_the_last_token": {
        "replace": {"vit": edit(VIT_RIGHT, vit, ("[:, 0]", "[:, -1]"))},
        "loses": "vit", "fails": VIT,
    },
    "vit_pools_the_mean": {  # mean pooling, although the model has a class token
        "replace": {"vit": edit(VIT_RIGHT, vit, ("[:, 0]", ".mean(dim=1)"))},
        "loses": "vit", "fails": VIT,
    },
    "vit_skips_the_final_norm": {
        "replace": {"vit": edit(VIT_RIGHT, vit, ("self.head(self.norm(x)[:, 0])",
                                                 "self.head(x[:, 0])"))},
        "loses": "vit", "fails": VIT,
    },
    "vit_class_token_detached": {  # the right logits, but the class token never learns
        "replace": {"vit": edit(VIT_RIGHT, vit, ("self.cls_token.expand",
                                                 "self.cls_token.detach().expand"))},
        "loses": "vit", "fails": ("vit_hidden",),
    },
    "vit_calls_tfcourse": {
        "replace": {"vit": vit("return tfcourse.VisionTransformer.forward(self, images)")},
        "loses": "vit", "fails": VIT,
    },
    # ---- exercise 4, attention rollout
    "rollout_wrong_order": {  # Â_1 ··· Â_L
        "replace": {"rollout": edit(ROLLOUT_RIGHT, rollout, ("mixed @ result",
                                                             "result @ mixed"))},
        "loses": "rollout", "fails": ROLLOUT,
    },
    "rollout_entry_by_entry": {
        "replace": {"rollout": edit(ROLLOUT_RIGHT, rollout, ("mixed @ result",
                                                             "mixed * result"))},
        "loses": "rollout", "fails": ROLLOUT,
    },
    "rollout_without_the_residual": {
        "replace": {"rollout": edit(ROLLOUT_RIGHT, rollout, (
            "0.5 * (layer.mean(dim=1) + eye)", "layer.mean(dim=1)"))},
        "loses": "rollout", "fails": ROLLOUT,
    },
    "rollout_without_the_half": {  # rows summing to 2^L
        "replace": {"rollout": edit(ROLLOUT_RIGHT, rollout, (
            "0.5 * (layer.mean(dim=1) + eye)", "layer.mean(dim=1) + eye"))},
        "loses": "rollout", "fails": ROLLOUT,
    },
    "rollout_mean_over_the_batch": {  # dim 0 of (B, H, T, T) is the batch
        "replace": {"rollout": edit(ROLLOUT_RIGHT, rollout, ("layer.mean(dim=1)",
                                                             "layer.mean(dim=0)"))},
        "loses": "rollout", "fails": ROLLOUT,
    },
    "rollout_last_layer_only": {  # each layer overwrites the product
        "replace": {"rollout": edit(ROLLOUT_RIGHT, rollout, ("result = mixed @ result",
                                                             "result = mixed"))},
        "loses": "rollout", "fails": ROLLOUT,
    },
    "rollout_identity_in_float32": {  # right in float32; float64 @ float32 raises
        "replace": {"rollout": edit(ROLLOUT_RIGHT, rollout, (
            "torch.eye(T, dtype=maps.dtype, device=maps.device)", "torch.eye(T)"))},
        "loses": "rollout", "fails": ("rollout_hidden",),
    },
    "rollout_identity_on_the_default_device": {  # right on the CPU; maps on a GPU fail
        "replace": {"rollout": edit(ROLLOUT_RIGHT, rollout, (
            "torch.eye(T, dtype=maps.dtype, device=maps.device)",
            "torch.eye(T, dtype=maps.dtype)"))},
        "loses": "rollout", "fails": ("rollout_hidden",),
    },
    "rollout_identity_promotes_half_precision": {  # a float32 identity and no identity to start
        # from: float64 + float32 stays float64, but float16 + float32 returns float32
        "replace": {"rollout": rollout('''
T = maps.shape[-1]
eye = torch.eye(T, device=maps.device)
result = None
for layer in maps:
    mixed = 0.5 * (layer.mean(dim=1) + eye)
    result = mixed if result is None else mixed @ result
return result
''')},
        "loses": "rollout", "fails": ("rollout_hidden",),
    },
    "rollout_calls_tfcourse": {
        "replace": {"rollout": rollout("return tfcourse.attention_rollout(maps)")},
        "loses": "rollout", "fails": ROLLOUT,
    },
    # ---- submissions that must not disturb the batch
    "infinite_loop": {  # the cell is stopped at the time limit; the rest of the notebook runs
        "replace": {"rollout": '''
while True:
    pass
'''},
        "loses": "rollout", "fails": ROLLOUT, "times_out": True,
    },
    "kernel_exits": {"replace": {"patchify": "import os\nos._exit(1)\n"}, "kernel_dies": True},
}
