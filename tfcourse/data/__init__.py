"""Data for the course, generated or shipped with Python: nothing is downloaded.

* :mod:`tfcourse.data.dates`: the date-translation task (chapter 2);
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

__all__ = [
    "DATE_FORMATS",
    "DateTask",
    "batches_from_tensors",
    "date_pairs",
    "format_date",
    "random_dates",
    "split_of",
    "step_generator",
    "step_seed",
]
