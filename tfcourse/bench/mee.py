"""Text-to-clip retrieval with incomplete streams: single streams, zero-filled concatenation and
the Mixture of Embedding Experts, with and without extra captioned images (book: chapter 10).

    python -m tfcourse.bench mee [--seeds 0 1 2 3 4] [--epochs 30] [--width 32]

For each seed, generates :func:`tfcourse.data.clips.clip_task` (its size is printed), trains
every model with the same width, epochs, batch size and learning rate
(:func:`tfcourse.mee.train_retrieval`), and prints text→clip and clip→text R@1, R@5, R@10 and
median rank on the held-out clips (:mod:`tfcourse.retrieval`; ties counted against the model),
with each model's training time. Then the mean over the seeds; text→clip R@10 and median rank
split by whether the clip has every stream its caption mentions (MEE renormalises its weights
over the streams a clip has, which is where it gains, and also why a clip lacking a stream can
rise to the top); and the mean mixture weights of MEE + images on the held-out captions, grouped
by what each caption mentions.

Every model trains for 30 epochs. At 15 the training losses were still falling fast (seed 0:
MEE 3.3 to 2.2 between epochs 15 and 30, concatenation 4.7 to 3.1) and MEE only tied
concatenation on text→clip R@10; at 50 the ordering was that of 30 (mean of five seeds: 16.2
against 15.0). Measured on 2 CPU cores (2 threads):
about 20 s of training for all seven models of a seed, 105 s for the whole run of five seeds.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from tfcourse.data.clips import GROUPS, STREAMS, VOCABULARY, ClipSet, clip_task, join, stream_widths
from tfcourse.mee import (
    ConcatenatedEmbedding,
    MixtureOfEmbeddingExperts,
    SingleStreamEmbedding,
    mixture_weights,
    train_retrieval,
)
from tfcourse.retrieval import median_rank, recall_at, retrieval_metrics, text_to_clip_ranks

# name: (builder(text_features, stream_features, width), trained with the extra images?)
MODELS: dict[str, tuple[Callable[[int, Sequence[int], int], nn.Module], bool]] = {
    **{f"{name} only": ((lambda v, d, w, m=m: SingleStreamEmbedding(v, d, w, m)), False)
       for m, name in enumerate(STREAMS)},
    "concatenation": (ConcatenatedEmbedding, False),
    "MEE": (MixtureOfEmbeddingExperts, False),
    "concatenation + images": (ConcatenatedEmbedding, True),
    "MEE + images": (MixtureOfEmbeddingExperts, True),
}
METRICS = ("R@1", "R@5", "R@10", "median_rank")


def weights_by_mention(model: MixtureOfEmbeddingExperts, clips: ClipSet) -> dict[str, list[float]]:
    """The mean mixture weights (one per stream) of the captions of ``clips``, for a clip with
    every stream, grouped by what the captions mention ("digit", "motion + sound", ...)."""
    every = torch.ones(1, len(STREAMS), dtype=torch.bool)
    with torch.no_grad():
        weights = mixture_weights(model.mixture(clips.text), every)[:, 0]  # (B, M)
    table = {}
    for subset in itertools.product((True, False), repeat=len(GROUPS)):
        rows = (clips.mentions == torch.tensor(subset)).all(dim=1)
        if rows.any():
            name = " + ".join(g for g, said in zip(GROUPS, subset, strict=True) if said)
            table[name] = weights[rows].mean(dim=0).tolist()
    return table


def retrieval_comparison(
    seed: int = 0, *, width: int = 32, epochs: int = 30, batch_size: int = 128, lr: float = 2e-3,
    models: Sequence[str] = tuple(MODELS), **task_options: object,
) -> dict:
    """Train each of ``models`` (names of :data:`MODELS`) on the task of ``seed`` and measure
    it on the held-out clips. Returns ``{"task": ClipTask, "rows": [{"model", "seconds",
    "text_to_clip": {...}, "clip_to_text": {...}, "by_completeness": {...}}], "weights":
    weights_by_mention of the last MEE trained}``. ``by_completeness`` splits the text→clip
    queries: ``"complete"`` where the clip has every stream the caption speaks of,
    ``"incomplete"`` where one is missing (a caption about the sound of a clip without audio);
    each with ``"queries"``, ``"R@10"`` and ``"median_rank"``."""
    task = clip_task(seed=seed, **task_options)
    with_images = join(task.train, task.extra)
    rows, weights = [], None
    for name in models:
        if name not in MODELS:
            raise ValueError(f"models: expected names from {list(MODELS)}, got {name!r}")
        build, extra = MODELS[name]
        torch.manual_seed(seed)  # the same initial draw for every model of a seed
        model = build(len(VOCABULARY), stream_widths(), width)
        data = with_images if extra else task.train
        start = time.perf_counter()
        train_retrieval(model, data.text, data.streams, data.present, epochs=epochs,
                        batch_size=batch_size, lr=lr, seed=seed)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            similarity = model(task.test.text, task.test.streams, task.test.present)
        # the captions whose clip has every stream they mention (each group has its stream)
        complete = (task.test.present | ~task.test.mentions).all(dim=1)
        ranks = text_to_clip_ranks(similarity)
        by_completeness = {
            key: {"queries": int(rows_.sum()), "R@10": recall_at(ranks[rows_], 10),
                  "median_rank": median_rank(ranks[rows_])}
            for key, rows_ in (("complete", complete), ("incomplete", ~complete))}
        rows.append({"model": name, "seconds": seconds, **retrieval_metrics(similarity),
                     "by_completeness": by_completeness})
        if isinstance(model, MixtureOfEmbeddingExperts):
            weights = weights_by_mention(model, task.test)
    return {"task": task, "rows": rows, "weights": weights}


def _table(rows: list[dict]) -> list[str]:
    head = " ".join(f"{m.replace('median_rank', 'MdR'):>5}" for m in METRICS)
    lines = [f"{'':<23} {'text→clip':^23}   {'clip→text':^23}",
             f"{'model':<23} {head}   {head} {'train s':>8}"]
    for row in rows:
        cells = [" ".join(f"{row[d][m]:5.1f}" for m in METRICS)
                 for d in ("text_to_clip", "clip_to_text")]
        lines.append(f"{row['model']:<23} {cells[0]}   {cells[1]} {row['seconds']:8.1f}")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcourse.bench mee")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--width", type=int, default=32, help="embedding width E")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args(argv)
    runs = [retrieval_comparison(seed, width=args.width, epochs=args.epochs,
                                 batch_size=args.batch_size, lr=args.lr) for seed in args.seeds]
    task = runs[0]["task"]
    print(f"Task: {task}; held-out clips use digit images no training item uses.")
    print(f"Every model: width {args.width}, {args.epochs} epochs, batch {args.batch_size}, "
          f"Adam lr {args.lr}, margin 0.2; R@K in %, MdR = median rank (lower is better), ties "
          f"counted against the model; chance: R@10 = {1000 / len(task.test):.1f} %, MdR ≈ "
          f"{(len(task.test) + 1) / 2:.0f}")
    for seed, run in zip(args.seeds, runs, strict=True):
        print(f"\nseed {seed}: {run['task'].test}")
        print("\n".join(_table(run["rows"])))
    if len(runs) > 1:
        mean = [{"model": row["model"],
                 "seconds": statistics.mean(r["rows"][i]["seconds"] for r in runs),
                 **{d: {m: statistics.mean(r["rows"][i][d][m] for r in runs) for m in METRICS}
                    for d in ("text_to_clip", "clip_to_text")}}
                for i, row in enumerate(runs[0]["rows"])]
        print(f"\nmean of the {len(runs)} seeds")
        print("\n".join(_table(mean)))
    seeds = ", ".join(map(str, args.seeds))
    print(f"\ntext→clip, R@10 / MdR for seeds {seeds}, split by whether the clip has every "
          "stream its caption mentions")
    split = {key: [[r["rows"][i]["by_completeness"][key] for r in runs]
                   for i in range(len(runs[0]["rows"]))] for key in ("complete", "incomplete")}
    width = 12 * len(runs)
    print(f"{'':<23} {'complete':<{width}}   {'incomplete':<{width}}")
    print(f"{'queries':<23} " + "   ".join(
        "".join(f"{cell['queries']:<12}" for cell in split[key][0]) for key in split))
    for i, row in enumerate(runs[0]["rows"]):
        print(f"{row['model']:<23} " + "   ".join(
            "".join(f"{c['R@10']:4.1f}/{c['median_rank']:<7g}" for c in split[key][i])
            for key in split))
    total = statistics.mean(sum(row["seconds"] for row in run["rows"]) for run in runs)
    print(f"\ntraining time of all {len(MODELS)} models: {total:.1f} s a seed, on "
          f"{torch.get_num_threads()} thread(s)")
    print(f"\nMixture weights of MEE + images (seed {args.seeds[-1]}), mean over the held-out "
          "captions, by what the caption mentions:")
    print(f"{'caption mentions':<24}" + "".join(f"{s:>11}" for s in STREAMS))
    for name, weights in runs[-1]["weights"].items():
        print(f"{name:<24}" + "".join(f"{w:11.2f}" for w in weights))
