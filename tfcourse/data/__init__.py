"""Data for the course, generated or shipped with Python: nothing is downloaded.

* :mod:`tfcourse.data.dates`: the date-translation task (chapter 2);
* :mod:`tfcourse.data.text`: the prose of Python's help pages, shipped with CPython (chapter 3:
  language models, and the word-order task for fine-tuning);
* :mod:`tfcourse.data.digits`: handwritten digits, real images shipped with scikit-learn
  (chapters 4 to 6);
* :mod:`tfcourse.data.recall`: synthetic in-context recall tasks, associative recall, MQAR,
  induction heads and selective copying (chapters 7 to 9);
* :mod:`tfcourse.data.clips`: captioned clips of moving digits with appearance, motion and audio
  streams, some missing, for text-to-clip retrieval (chapter 10);
* :mod:`tfcourse.data.batching`: batches as a deterministic function of the step, which makes
  resumed training runs repeat exactly.
"""

from tfcourse.data.batching import batches_from_tensors, step_generator, step_seed
from tfcourse.data.dates import (
    DATE_FORMATS,
    DateTask,
    date_pairs,
    format_date,
    random_dates,
    split_of,
)
from tfcourse.data.digits import DigitImages, digit_batches, load_digit_images, random_shift
from tfcourse.data.recall import (
    RECALL_TASKS,
    associative_recall,
    induction_heads,
    multi_query_associative_recall,
    recall_accuracy,
    recall_batches,
    recall_loss,
    selective_copying,
)
from tfcourse.data.text import (
    corpus_stats,
    lm_batches,
    python_docs,
    scramble,
    sentences,
    train_val_split,
    word_order_task,
)

__all__ = [
    "DATE_FORMATS",
    "DateTask",
    "DigitImages",
    "RECALL_TASKS",
    "associative_recall",
    "batches_from_tensors",
    "corpus_stats",
    "date_pairs",
    "digit_batches",
    "format_date",
    "induction_heads",
    "lm_batches",
    "load_digit_images",
    "multi_query_associative_recall",
    "python_docs",
    "random_dates",
    "random_shift",
    "recall_accuracy",
    "recall_batches",
    "recall_loss",
    "scramble",
    "selective_copying",
    "sentences",
    "split_of",
    "step_generator",
    "step_seed",
    "train_val_split",
    "word_order_task",
]
