"""Submissions that tests/test_grading.py grades, one module per assignment, and their helpers.

Each case is a student who starts from the solution and rewrites some solution cells (by their
nbgrader ``grade_id``), and states the exact outcome: the test cells listed in ``fails`` score 0
and every other test cell of the notebook scores full marks. ``loses`` names the exercise that
the mistake concerns; its score must drop (``None``: a correct implementation, full marks). A
case with ``times_out`` runs a cell past the time limit; one with ``kernel_dies`` kills its
kernel, so nbgrader records no grade for it; the rest of the batch must go on unchanged.

A module ``<assignment>.py`` defines ``NOTEBOOK``, ``EXERCISES`` (from :func:`exercises`),
``ALTERNATIVE`` (correct code written differently, every exercise at once) and ``CASES``.
"""

from __future__ import annotations

from collections.abc import Callable


def exercises(*names: str) -> dict[str, tuple[str, tuple[str, str]]]:
    """exercise -> its solution cell and its test cells, by the course's naming of grade_ids:
    the cell ``name`` is checked by ``name_test`` (shown) and ``name_hidden``."""
    return {name: (name, (f"{name}_test", f"{name}_hidden")) for name in names}


def indent(body: str, spaces: int) -> str:
    """``body`` (unindented lines) indented by ``spaces``; blank lines stay empty."""
    return "\n".join(" " * spaces + line if line else line
                     for line in body.strip("\n").splitlines())


def function(signature: str, body: str) -> str:
    """``def signature:`` with ``body`` (unindented lines) as its body."""
    return f"def {signature}:\n" + indent(body, 4)


def edit(right: str, make: Callable[[str], str], *changes: tuple[str, str]) -> str:
    """``make(right)`` with each (old, new) of ``changes`` replaced; each old occurs once."""
    for old, new in changes:
        assert right.count(old) == 1, old
        right = right.replace(old, new)
    return make(right)
