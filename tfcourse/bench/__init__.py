"""Benchmarks that print their figures: ``python -m tfcourse.bench attention``.

Each benchmark is a module whose functions return rows (dicts) that the lessons plot and whose
``main`` prints them as a table. Timing and memory helpers are in :mod:`tfcourse.bench.measure`.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable
from typing import Any

# The child reads (fn, args, kwargs) pickled on stdin and writes the pickled result on stdout.
_CHILD = """
import pickle, sys
from tfcourse.runtime import pin_threads
pin_threads()
fn, args, kwargs = pickle.load(sys.stdin.buffer)
out, sys.stdout = sys.stdout.buffer, sys.stderr  # what fn prints must not mix with the result
pickle.dump(fn(*args, **kwargs), out)
"""


def in_fresh_process(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` run in a new Python process (threads pinned as here), its result
    returned.

    CPU memory figures need a process-wide malloc setting (:mod:`tfcourse.bench.measure`) that
    makes every later allocation of medium size slower (a Hyena training step about 2x): a page
    that measures memory and then trains measures in a child process. ``fn`` must be importable
    (a module's function), and its arguments and result picklable.
    """
    result = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True,
                            input=pickle.dumps((fn, args, kwargs)), check=False)
    if result.returncode != 0:
        raise RuntimeError(f"fn: {getattr(fn, '__name__', fn)} failed in the child process:\n"
                           + result.stderr.decode(errors="replace")[-4000:])
    return pickle.loads(result.stdout)
