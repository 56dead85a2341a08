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
====  =======================================================  ==============

Modules: :mod:`tfcourse.runtime` (device, dtype, seeding, threads),
:mod:`tfcourse.masks`, :mod:`tfcourse.attention`, :mod:`tfcourse.checks` (the contract-check
kit used by lessons, tests and graders), :mod:`tfcourse.plotting`, :mod:`tfcourse.bench`,
:mod:`tfcourse.tokenizers`, :mod:`tfcourse.data` (the course's data sets, generated or shipped with
Python), :mod:`tfcourse.training` (the trainer every chapter uses).
"""

from tfcourse.attention import (
    MultiHeadAttention,
    fused_scaled_dot_product_attention,
    merge_heads,
    scaled_dot_product_attention,
    split_heads,
)
from tfcourse.masks import causal_mask, combine_masks, padding_mask, to_additive_mask
from tfcourse.runtime import autocast_dtype, default_device, pin_threads, seed_everything
from tfcourse.tokenizers import CharTokenizer, WordTokenizer
from tfcourse.training import History, TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "CharTokenizer",
    "History",
    "MultiHeadAttention",
    "TrainConfig",
    "Trainer",
    "WordTokenizer",
    "autocast_dtype",
    "causal_mask",
    "combine_masks",
    "default_device",
    "fused_scaled_dot_product_attention",
    "merge_heads",
    "padding_mask",
    "pin_threads",
    "scaled_dot_product_attention",
    "seed_everything",
    "split_heads",
    "to_additive_mask",
]
