r"""Activator, a vision transformer whose core is a gated MLP (book: chapter 6).

Abdullah and Aydin (2024, "Activator: GLU Activation Function as the Core Component of a Vision
Transformer", arXiv:2405.15953) replace the attention of a ViT block with a gating unit built on
GEGLU. The structure here is that of the authors' released model:

* gating unit: two up-projections of the normalised input, GELU on the first, both normalised by
  one shared layer norm, multiplied element by element and projected down;
* block: residual gating unit, then residual feed-forward, with one layer norm instance before
  both; the reduced block drops the feed-forward;
* classifier: a convolutional patcher, no class token, no position embedding, the blocks, mean
  pooling and a linear head.

Every layer acts on each patch on its own: nothing mixes the N patches until the mean at the end.
``token_mixing=True`` adds a step that does (a linear map across the patches, as in MLP-Mixer,
Tolstikhin et al., 2021), for the chapter's comparison; it is not part of the released model.
Letters: B batch, N patches, C model width, F hidden width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tfcourse import _validate
from tfcourse.vit import PatchEmbedding

ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}  # GEGLU, SwiGLU, ReGLU


class ActivatorGatingUnit(nn.Module):
    r"""(B, N, C) -> (B, N, C), each position on its own:

    .. math:: u = \operatorname{LN}_F(\operatorname{GELU}(x W_1 + b_1)), \quad
              v = \operatorname{LN}_F(x W_2 + b_2), \quad
              y = (u \odot v)\, W_3 + b_3

    with one layer norm :math:`\operatorname{LN}_F` (over F) shared by both branches, after the
    activation. ``activation`` ``"silu"`` or ``"relu"`` gives the paper's SwiGLU and ReGLU
    ablations.
    """

    def __init__(self, d_model: int, d_hidden: int, *, activation: str = "gelu") -> None:
        super().__init__()
        _validate.integer(d_model, "d_model", 1)
        _validate.integer(d_hidden, "d_hidden", 1)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.gate_proj = nn.Linear(d_model, d_hidden)  # W_1, b_1: the branch through GELU
        self.value_proj = nn.Linear(d_model, d_hidden)  # W_2, b_2
        self.norm = nn.LayerNorm(d_hidden)  # one instance, used on both branches
        self.out_proj = nn.Linear(d_hidden, d_model)  # W_3, b_3

    def branches(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u and v, each (B, N, F): the normalised gate and value, before they multiply."""
        u = self.norm(ACTIVATIONS[self.activation](self.gate_proj(x)))
        v = self.norm(self.value_proj(x))
        return u, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.branches(x)
        return self.out_proj(u * v)


class ActivatorBlock(nn.Module):
    r"""(B, N, C) -> (B, N, C):

    .. math:: x' = x + \operatorname{AGU}(\operatorname{LN}(x)), \qquad
              y = x' + \operatorname{FFN}(\operatorname{LN}(x'))

    with one layer norm instance used before both sub-layers, and a GELU feed-forward of hidden
    width F with dropout after its activation and after its output. ``reduced=True`` drops the
    feed-forward: :math:`y = x'`. ``token_mixing=True`` first adds
    :math:`x \leftarrow x + W_\text{tok} \operatorname{LN}_\text{tok}(x)`, a linear map over the N
    positions (an addition for the chapter's comparison, with its own norm).
    """

    def __init__(
        self, d_model: int, d_hidden: int, *, dropout: float = 0.0, reduced: bool = False,
        activation: str = "gelu", num_patches: int | None = None, token_mixing: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        if token_mixing:
            _validate.integer(num_patches, "num_patches", 1)
            self.mix_norm = nn.LayerNorm(d_model)
            self.token_mix = nn.Linear(num_patches, num_patches)  # W_tok, over positions
        self.token_mixing = token_mixing
        self.norm = nn.LayerNorm(d_model)  # shared by the gating unit and the feed-forward
        self.gating = ActivatorGatingUnit(d_model, d_hidden, activation=activation)
        self.reduced = reduced
        if not reduced:
            self.ffn = nn.Sequential(nn.Linear(d_model, d_hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(d_hidden, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_mixing:
            mixed = self.token_mix(self.mix_norm(x).transpose(1, 2))  # (B, C, N): over positions
            x = x + mixed.transpose(1, 2)  # (B, N, C)
        x = x + self.gating(self.norm(x))
        if self.reduced:
            return x
        return x + self.ffn(self.norm(x))


class ActivatorClassifier(nn.Module):
    r"""Conv patcher, L Activator blocks, mean over the N patches, linear head:
    (B, K, I, I) -> (B, num_classes).

    .. math:: z_0 = [x_p^1 E; \dots; x_p^N E], \qquad
              y = \operatorname{head}\Big(\tfrac1N \textstyle\sum_i z_L^i\Big)

    No class token, no position embedding and no final norm, as released. The defaults are those
    of the released CIFAR-10 model: 32×32 RGB images, P = 4, C = 256, F = 512, 4 blocks,
    dropout 0.5.
    """

    def __init__(
        self, *, image_size: int = 32, patch_size: int = 4, in_channels: int = 3,
        num_classes: int = 10, d_model: int = 256, d_hidden: int = 512, num_layers: int = 4,
        dropout: float = 0.5, reduced: bool = False, activation: str = "gelu",
        token_mixing: bool = False,
    ) -> None:
        super().__init__()
        _validate.integer(num_classes, "num_classes", 2)
        _validate.integer(num_layers, "num_layers", 1)
        self.patch_embed = PatchEmbedding(image_size, patch_size, in_channels, d_model)
        self.blocks = nn.ModuleList(
            ActivatorBlock(d_model, d_hidden, dropout=dropout, reduced=reduced,
                           activation=activation, num_patches=self.patch_embed.num_patches,
                           token_mixing=token_mixing)
            for _ in range(num_layers))
        self.head = nn.Linear(d_model, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, I, I) -> z_L, (B, N, C): every patch's representation before pooling."""
        x = self.patch_embed(images)  # (B, N, C)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=1))  # (B, N, C) -> (B, C) -> (B, classes)


def block_parameters(d_model: int, d_hidden: int, *, reduced: bool = False) -> int:
    """The parameters of one :class:`ActivatorBlock` with its norm shared, in closed form.

    Block norm 2C; gating unit 2(CF + F) + (FC + C) + 2F; feed-forward (CF + F) + (FC + C).
    For C = 256, F = 512: 658,944; reduced, 396,032.
    """
    C, Fh = d_model, d_hidden
    gating = 2 * (C * Fh + Fh) + (Fh * C + C) + 2 * Fh
    ffn = 0 if reduced else (C * Fh + Fh) + (Fh * C + C)
    return 2 * C + gating + ffn
