"""nbgrader configuration for the course (instructor guide: chapters/appendices/instructor.md).

The repository root is the course directory (run nbgrader from there): `solutions/<assignment>/`
holds the source notebooks (solutions and hidden tests), `_release/` the generated student
versions, `submitted/`, `autograded/` and `feedback/` the grading folders (all three ignored by
git).

Besides the folders, this file sets four things that nbgrader 0.9.6 does not do by default:

* student code runs in a sandbox (``SandboxedExecute``, from ``tools/grading/``, in place of
  nbgrader's ``Execute``); ``make grade`` adds the per-student staging and isolation around it;
* a per-cell time limit that really applies (``Execute.timeout``; nbgrader's own ``Execute``
  preprocessor ignores ``ExecutePreprocessor.timeout`` once ``Execute.timeout`` is set);
* graded cells that a student deleted are put back and graded (``OverwriteCells``);
* feedback that does not reveal the hidden tests (``HideHiddenTests``, from ``tools/grading/``):
  nbgrader's ``generate_feedback`` shows the autograded notebook, in which the test cells carry
  their full source again, hidden tests included (nbgrader issue 1363).
"""

import sys
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.preprocessors import (
    AssignLatePenalties,
    CheckCellMetadata,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tools.grading.execute import SandboxedExecute  # noqa: E402 (needs the line above)
from tools.grading.feedback import HideHiddenTests  # noqa: E402

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "_release"

# Files of solutions/<assignment>/ other than notebooks are copied into every release and every
# autograded folder; the jupytext sources (*.py) hold the solutions and hidden tests, so they are
# never copied. (Assignments ship no other Python file: the code they need is in tfcourse.)
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", "*.py"]

c.ClearSolutions.code_stub = dict(python="# YOUR CODE HERE\nraise NotImplementedError()")
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Every cell of an exercise notebook runs in well under a second (importing torch, the slowest,
# takes a few), so a cell that runs for 20 s is stuck: it is interrupted and scores 0, and the
# rest of the notebook still runs.
c.Execute.timeout = 20

# Student code runs in a sandbox (tools/grading/): nbgrader's own execution step is replaced by
# one that starts the kernel there; the rest of autograde is nbgrader's.
c.Autograde.autograde_preprocessors = [
    SandboxedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
    AssignLatePenalties, CheckCellMetadata,
]

# A test cell that a student deleted is restored from the gradebook and run, instead of leaving
# its grade empty.
c.OverwriteCells.add_missing_cells = True


c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
