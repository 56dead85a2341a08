"""Reference PyTorch code for the course *From attention to Jamba*.

Glossary of dimension letters, used in every docstring and shape comment:

====  =======================================================  ==============
name  meaning                                                  paper symbol
====  =======================================================  ==============
B     batch size
T     query positions (sequence length of the queries)         n
S     key/value positions (sequence length of keys, values)   m
C     model width                                              d_model
H     number of attention heads                                h
D     width of one head, C / H                                 d_k = d_v
V     vocabulary size (number of token ids)
F     hidden width of the feed-forward network                d_ff
L     number of layers in a stack                              N
K     image channels                                           C
I     image height and width, in pixels                        H = W
P     patch height and width, in pixels                        P
N     number of patches, (I / P)²                              N
r     tokens merged by one layer of Token Merging              r
====  =======================================================  ==============

Hyena (chapter 7) uses N for the order of its operator and writes convolutions channels-first,
(B, C, T), as ``torch.nn.Conv1d`` does. The state space models of chapter 8 use N for the size of
the state and Cᵢ for a Mamba block's inner width (:mod:`tfcourse.ssm`, :mod:`tfcourse.mamba`).
The mixture of experts of chapter 9 (:mod:`tfcourse.moe`) writes X for the number of experts and k
for the experts each token uses.

Modules: :mod:`tfcourse.runtime` (device, dtype, seeding, threads),
:mod:`tfcourse.masks`, :mod:`tfcourse.attention`, :mod:`tfcourse.checks` (the contract-check
kit used by lessons, tests and graders), :mod:`tfcourse.plotting`, :mod:`tfcourse.bench`,
:mod:`tfcourse.tokenizers`, :mod:`tfcourse.data` (the course's data sets, generated or shipped with
Python), :mod:`tfcourse.training` (the trainer every chapter uses), :mod:`tfcourse.embeddings`,
:mod:`tfcourse.feedforward`, :mod:`tfcourse.transformer` (chapter 2), :mod:`tfcourse.kv_cache`,
:mod:`tfcourse.language_models` (chapter 3), :mod:`tfcourse.vit`, :mod:`tfcourse.convnet` and
:mod:`tfcourse.classification` (chapter 4), :mod:`tfcourse.tome` (chapter 5), :mod:`tfcourse.glu`
and :mod:`tfcourse.activator` (chapter 6), :mod:`tfcourse.hyena` (chapter 7), :mod:`tfcourse.ssm`,
:mod:`tfcourse.mamba` and :mod:`tfcourse.norms` (chapter 8), :mod:`tfcourse.moe` and
:mod:`tfcourse.jamba` (chapter 9), :mod:`tfcourse.mee`, :mod:`tfcourse.retrieval` and
:mod:`tfcourse.data.clips` (chapter 10), :mod:`tfcourse.distributed` (the process group of a
``torchrun`` launch) and :mod:`tfcourse.train` (``python -m tfcourse.train``, chapter 11).
"""

from tfcourse.activator import (
    ActivatorBlock,
    ActivatorClassifier,
    ActivatorGatingUnit,
)
from tfcourse.attention import (
    MultiHeadAttention,
    fused_scaled_dot_product_attention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from tfcourse.convnet import ConvNet
from tfcourse.embeddings import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
    shift_rotation,
    sinusoidal_encoding,
)
from tfcourse.feedforward import FeedForward
from tfcourse.glu import GLU, simplified_glu
from tfcourse.hyena import (
    HyenaBlock,
    HyenaLM,
    HyenaOperator,
    ImplicitFilter,
    ShortConv,
    direct_causal_conv,
    fft_causal_conv,
)
from tfcourse.jamba import (
    JAMBA_V0_1,
    GroupedQueryAttention,
    JambaConfig,
    JambaLayer,
    JambaLM,
    kv_cache_bytes,
    mamba_state_bytes,
    parameter_counts,
)
from tfcourse.kv_cache import KVCache
from tfcourse.language_models import (
    DecoderOnlyLM,
    EncoderOnlyLM,
    SequenceClassifier,
    mask_tokens,
    next_token_loss,
)
from tfcourse.mamba import MambaBlock, MambaLM, MambaMixer, MambaState
from tfcourse.masks import causal_mask, combine_masks, padding_mask, to_additive_mask
from tfcourse.moe import GatedFeedForward, MoEFeedForward, expert_load, load_balancing_loss
from tfcourse.norms import RMSNorm
from tfcourse.runtime import autocast_dtype, default_device, pin_threads, seed_everything
from tfcourse.ssm import (
    discretize,
    selective_scan_parallel,
    selective_scan_sequential,
    selective_scan_step,
    ssm_convolution,
    ssm_kernel,
    ssm_recurrent,
)
from tfcourse.tokenizers import CharTokenizer, WordTokenizer
from tfcourse.tome import (
    ToMeViT,
    bipartite_soft_matching,
    merge_schedule,
    merge_tokens,
    proportional_attention,
)
from tfcourse.training import History, TrainConfig, Trainer, checkpoint_blocks
from tfcourse.transformer import (
    Decoder,
    DecoderLayer,
    Encoder,
    EncoderLayer,
    Transformer,
    shift_right,
)
from tfcourse.vit import PatchEmbedding, VisionTransformer, ViTBlock, attention_rollout, patchify

__version__ = "0.1.0"

__all__ = [
    "ActivatorBlock",
    "ActivatorClassifier",
    "ActivatorGatingUnit",
    "CharTokenizer",
    "ConvNet",
    "Decoder",
    "DecoderLayer",
    "DecoderOnlyLM",
    "Encoder",
    "EncoderLayer",
    "EncoderOnlyLM",
    "FeedForward",
    "GLU",
    "GatedFeedForward",
    "GroupedQueryAttention",
    "History",
    "HyenaBlock",
    "HyenaLM",
    "HyenaOperator",
    "ImplicitFilter",
    "JAMBA_V0_1",
    "JambaConfig",
    "JambaLM",
    "JambaLayer",
    "KVCache",
    "LearnedPositionalEmbedding",
    "MambaBlock",
    "MambaLM",
    "MambaMixer",
    "MambaState",
    "MoEFeedForward",
    "MultiHeadAttention",
    "PatchEmbedding",
    "RMSNorm",
    "SequenceClassifier",
    "ShortConv",
    "SinusoidalPositionalEncoding",
    "ToMeViT",
    "TokenEmbedding",
    "TrainConfig",
    "Trainer",
    "Transformer",
    "ViTBlock",
    "VisionTransformer",
    "WordTokenizer",
    "attention_rollout",
    "autocast_dtype",
    "bipartite_soft_matching",
    "causal_mask",
    "checkpoint_blocks",
    "combine_masks",
    "default_device",
    "direct_causal_conv",
    "discretize",
    "expert_load",
    "fft_causal_conv",
    "fused_scaled_dot_product_attention",
    "kv_cache_bytes",
    "load_balancing_loss",
    "mamba_state_bytes",
    "mask_tokens",
    "merge_heads",
    "merge_schedule",
    "merge_tokens",
    "next_token_loss",
    "padding_mask",
    "parameter_counts",
    "patchify",
    "pin_threads",
    "proportional_attention",
    "scaled_dot_product_attention",
    "seed_everything",
    "selective_scan_parallel",
    "selective_scan_sequential",
    "selective_scan_step",
    "shift_right",
    "shift_rotation",
    "simplified_glu",
    "sinusoidal_encoding",
    "split_heads",
    "ssm_convolution",
    "ssm_kernel",
    "ssm_recurrent",
    "to_additive_mask",
]
