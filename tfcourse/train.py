"""Train a chapter's model from the command line, on one process or many (book: chapter 11).

::

    python -m tfcourse.train --model gpt --steps 200 --batch 32 --history run.json
    torchrun --standalone --nproc_per_node=2 -m tfcourse.train --model gpt --steps 200 --batch 32

Both commands train on the same batches (``--batch`` is the batch of a step, over all
processes: with W processes each trains on ``batch / W`` of its rows, see
:func:`tfcourse.training.shard_batch`) and give the same loss curve, to rounding. The models,
each on the course's own data, nothing downloaded:

* ``gpt``: chapter 3's decoder-only language model on the characters of Python's help pages
  (:func:`tfcourse.data.python_docs`), next-token loss; ``--block`` characters of context;
* ``vit``: chapter 4's Vision Transformer on scikit-learn's handwritten digits, 16 × 16 pixels;
* ``mamba``: chapter 8's Mamba on the selective-copying task (``--block`` positions).

Rank 0 prints the progress line and writes ``--history`` (JSON: the run's settings and its
:class:`tfcourse.History` records, one per ``--log-every`` steps) and the checkpoints.
``--checkpoint PATH`` saves every ``--checkpoint-every`` steps and at the end; ``--resume``
continues from ``PATH`` when it exists (the same command then survives an interruption);
``--stop-at STEP`` ends the run early at STEP, as an interruption would, with ``--steps`` still
setting the learning-rate schedule. Threads per process: ``TFCOURSE_THREADS`` (set it to 1 under
torchrun on a small CPU machine: W processes share the cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tfcourse import distributed
from tfcourse.runtime import pin_threads, seed_everything
from tfcourse.training import PRECISIONS, History, TrainConfig, Trainer

LossFn = Callable[[nn.Module, Any], Any]


@dataclasses.dataclass
class Task:
    """A model and what trains it: ``batches(batch_size)`` gives the step-deterministic batch
    function of :class:`tfcourse.Trainer`; ``eval_fn`` its evaluation."""

    model: nn.Module
    loss_fn: LossFn
    batches: Callable[[int], Callable[[int], Any]]
    eval_fn: Callable[[nn.Module], Mapping[str, float]]


def gpt_task(width: int, layers: int, block: int, seed: int) -> Task:
    """Chapter 3: a character-level GPT on the prose of Python's help pages."""
    from tfcourse.data.text import lm_batches, python_docs, train_val_split
    from tfcourse.language_models import DecoderOnlyLM, next_token_loss
    from tfcourse.tokenizers import CharTokenizer

    train_text, val_text = train_val_split(python_docs())
    chars = CharTokenizer.from_text(train_text)
    train_ids = torch.tensor(chars.encode(train_text))  # (N,)
    val_ids = torch.tensor(chars.encode(val_text))  # (N_val,)
    model = DecoderOnlyLM(chars.vocab_size, max_len=block + 1, d_model=width,
                          num_heads=max(1, width // 16), num_layers=layers)
    starts = torch.linspace(0, len(val_ids) - block - 2, 32).long()
    val_windows = torch.stack([val_ids[s:s + block + 1] for s in starts.tolist()])  # (32, T + 1)

    def loss_fn(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
        return next_token_loss(model(windows), windows)

    def eval_fn(model: nn.Module) -> dict[str, float]:
        windows = val_windows.to(next(model.parameters()).device)
        return {"val_loss": next_token_loss(model(windows), windows).item()}

    return Task(model, loss_fn,
                lambda b: lm_batches(train_ids, batch_size=b, block_size=block, seed=seed),
                eval_fn)


def vit_task(width: int, layers: int, block: int, seed: int) -> Task:
    """Chapter 4: a Vision Transformer on the handwritten digits (``block`` is unused)."""
    from tfcourse.classification import accuracy, classification_loss
    from tfcourse.data.digits import digit_batches, load_digit_images
    from tfcourse.vit import VisionTransformer

    data = load_digit_images(16)
    model = VisionTransformer(image_size=16, patch_size=4, d_model=width,
                              num_heads=max(1, width // 16), num_layers=layers, d_ff=2 * width)

    def eval_fn(model: nn.Module) -> dict[str, float]:
        return {"test_accuracy": accuracy(model, data.test_images, data.test_labels)}

    return Task(model, classification_loss, lambda b: digit_batches(data, b, seed=seed), eval_fn)


def mamba_task(width: int, layers: int, block: int, seed: int) -> Task:
    """Chapter 8: Mamba on selective copying, ``block`` positions, 4 tokens to copy."""
    from tfcourse.data.recall import recall_accuracy, recall_batches, recall_loss
    from tfcourse.mamba import MambaLM

    task = dict(seq_len=block, num_tokens=4, vocab_size=10)
    model = MambaLM(task["vocab_size"], d_model=width, num_layers=layers)
    test_tokens, test_targets = recall_batches("selective_copy", 256, seed=seed + 123,
                                               **task)(0)

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        tokens, targets = batch
        return recall_loss(model(tokens), targets)

    def eval_fn(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        return {"accuracy": recall_accuracy(model(test_tokens.to(device)),
                                            test_targets.to(device))}

    return Task(model, loss_fn,
                lambda b: recall_batches("selective_copy", b, seed=seed, **task), eval_fn)


TASKS: dict[str, Callable[[int, int, int, int], Task]] = {
    "gpt": gpt_task, "vit": vit_task, "mamba": mamba_task,
}


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m tfcourse.train``."""
    p = argparse.ArgumentParser(prog="python -m tfcourse.train", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(TASKS), required=True)
    p.add_argument("--steps", type=int, required=True, help="optimizer steps of the schedule")
    p.add_argument("--batch", type=int, required=True,
                   help="rows per step over all processes (divisible by processes x "
                        "accumulation steps)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=64, help="d_model")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--block", type=int, default=64, help="sequence length (gpt, mamba)")
    p.add_argument("--accumulation-steps", type=int, default=1)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--compile", nargs="?", const=True, default=False, metavar="BACKEND",
                   help="torch.compile the model (optionally naming a backend, e.g. aot_eager)")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--log-every", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint file")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--stop-at", type=int, default=None, help="end the run early at this step")
    p.add_argument("--history", type=Path, default=None, help="JSON file for the history")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def main(argv: Sequence[str] | None = None) -> History:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the history."""
    args = parser().parse_args(argv)
    if args.resume and args.checkpoint is None:
        raise SystemExit("--resume: needs --checkpoint PATH")
    pin_threads()
    seed_everything(args.seed)  # the same initial model on every rank (DDP also broadcasts it)
    task = TASKS[args.model](args.width, args.layers, args.block, args.seed)
    config = TrainConfig(
        steps=args.steps, lr=args.lr, warmup_steps=args.warmup, seed=args.seed,
        accumulation_steps=args.accumulation_steps, precision=args.precision,
        compile=args.compile, activation_checkpointing=args.activation_checkpointing,
        device=args.device, log_every=args.log_every, eval_every=args.eval_every,
        progress=not args.quiet, checkpoint_path=args.checkpoint,
        checkpoint_every=args.checkpoint_every)
    batches = task.batches(args.batch)
    try:
        if args.resume and args.checkpoint.exists():
            trainer = Trainer.resume(args.checkpoint, task.model, task.loss_fn, batches, config,
                                     eval_fn=task.eval_fn)
            if distributed.is_main() and not args.quiet:
                print(f"resumed from {args.checkpoint} at step {trainer.step}", flush=True)
        else:
            trainer = Trainer(task.model, task.loss_fn, batches, config, eval_fn=task.eval_fn)
        stop = args.steps if args.stop_at is None else min(args.stop_at, args.steps)
        history = trainer.fit(steps=max(0, stop - trainer.step))
        if args.history is not None and distributed.is_main():
            settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
            record = {"settings": settings, "world_size": trainer.world_size,
                      "rows_per_rank": args.batch // trainer.world_size, **history.as_dict()}
            args.history.parent.mkdir(parents=True, exist_ok=True)
            args.history.write_text(json.dumps(record, indent=1))
        return history
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    main()
