"""Memory of decoding as the context grows: a Mamba model against attention (book: chapter 8).

    python -m tfcourse.bench decoding [--lengths 1024 2048 ...] [--device cuda]

For each context length T, a :class:`tfcourse.mamba.MambaLM` and a
:class:`tfcourse.language_models.DecoderOnlyLM` of the same width and depth read T tokens and
then generate a few more, one at a time. Two figures per model and length:

* ``state_mib``, what the decoder keeps between tokens: the Mamba layers' convolution and SSM
  states (:class:`tfcourse.mamba.MambaState`), or the attention layers' KV cache
  (:mod:`tfcourse.kv_cache`), counted from the tensors themselves;
* ``step_peak_mib``, the memory that generating those tokens needs beyond what was in use
  before (:func:`tfcourse.bench.measure.peak_memory_mib`): the KV cache is copied to grow by one
  position at every step, the Mamba state is replaced by one of the same size.

The T context tokens are read in one pass (Mamba's parallel forward with ``return_state``) or in
chunks through the cache (attention), which leaves exactly the state that T steps of decoding
leave (tests/test_mamba.py and tests/test_language_models.py check it), so a context of 16K tokens
costs seconds rather than 16K Python steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tfcourse import _validate
from tfcourse.language_models import DecoderOnlyLM
from tfcourse.mamba import MambaLM
from tfcourse.runtime import default_device

DEFAULT_LENGTHS = [1024, 2048, 4096, 8192, 16384]
MODELS = ("Mamba", "attention")
_PREFILL_CHUNK = 1024  # attention reads the context in chunks: no T × T score matrix


def _mib(tensors: Sequence[torch.Tensor]) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


@torch.no_grad()
def _mamba_decoder(model: MambaLM, context: torch.Tensor, new_tokens: int):
    """The state after ``context``, its size, and a function that decodes ``new_tokens``."""
    logits, state = model(context, return_state=True)
    token = logits[:, -1].argmax(-1)  # (B,)

    def decode() -> None:
        s, t = state, token
        for _ in range(new_tokens):
            step_logits, s = model.step(t, s)
            t = step_logits.argmax(-1)

    return _mib([t for layer in state for t in (layer.conv, layer.ssm)]), decode


@torch.no_grad()
def _attention_decoder(model: DecoderOnlyLM, context: torch.Tensor, new_tokens: int):
    cache = model.new_cache()
    for start in range(0, context.shape[1], _PREFILL_CHUNK):
        logits = model(context[:, start:start + _PREFILL_CHUNK], cache=cache)
    token = logits[:, -1:].argmax(-1)  # (B, 1)
    held = _mib([t for layer in cache for t in (layer.self_attn.keys, layer.self_attn.values)])

    def decode() -> None:
        t = token
        for _ in range(new_tokens):
            t = model(t, cache=cache)[:, -1:].argmax(-1)

    return held, decode


def decoding_memory(
    lengths: Sequence[int],
    *,
    d_model: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 32,
    new_tokens: int = 8,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> list[dict]:
    """Rows ``{"length", "model", "state_mib", "step_peak_mib"}``, ``model`` one of
    :data:`MODELS`, batch 1, untrained float32 models (their memory does not depend on the
    weights). ``step_peak_mib`` is ``None`` where the memory cannot be measured (a CPU other
    than Linux's)."""
    from tfcourse.bench.measure import peak_memory_mib  # sets malloc for the process: see bench

    if not lengths:
        raise ValueError("lengths: expected at least one length, got none")
    lengths = sorted({_validate.integer(T, "lengths", 1) for T in lengths})
    _validate.integer(new_tokens, "new_tokens", 1)
    device = torch.device(device) if device is not None else default_device()
    torch.manual_seed(seed)
    models = {
        "Mamba": (MambaLM(vocab_size, d_model=d_model, num_layers=num_layers), _mamba_decoder),
        "attention": (DecoderOnlyLM(vocab_size, max_len=lengths[-1] + 2 * new_tokens + 1,
                                    d_model=d_model, num_heads=num_heads,
                                    num_layers=num_layers), _attention_decoder),
    }
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for T in lengths:
        context = torch.randint(vocab_size, (1, T), generator=gen).to(device)
        for name, (model, decoder) in models.items():
            model.to(device).eval()
            held, decode = decoder(model, context, new_tokens)
            rows.append({"length": T, "model": name, "state_mib": held,
                         "step_peak_mib": peak_memory_mib(decode, device)})
            del decode  # frees the cache before the next model's context
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench decoding")
    parser.add_argument("--lengths", type=int, nargs="+", default=DEFAULT_LENGTHS)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=8)
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    rows = decoding_memory(args.lengths, d_model=args.d_model, num_layers=args.layers,
                           new_tokens=args.new_tokens, device=device)
    print(f"decoding memory, batch 1, C={args.d_model}, {args.layers} layers, float32, on "
          f"{device}: what the decoder keeps between tokens (state) and what {args.new_tokens} "
          f"decoding steps need beyond it (steps), MiB")
    print(f"{'T':>7} " + "".join(f"{m + ' state':>17}{m + ' steps':>17}" for m in MODELS))
    for T in sorted({r["length"] for r in rows}):
        cells = []
        for model in MODELS:
            row = next(r for r in rows if r["length"] == T and r["model"] == model)
            peak = row["step_peak_mib"]
            cells.append(f"{row['state_mib']:17.3f}" + (f"{peak:17.2f}" if peak is not None
                                                         else f"{'n/a':>17}"))
        print(f"{T:>7} " + "".join(cells))
