"""nbgrader configuration for the course (instructor guide: chapters/appendices/instructor.md).

The repository root is the course directory (run nbgrader from there): `solutions/<assignment>/`
holds the source notebooks (solutions and hidden tests), `_release/` the generated student
versions, `submitted/`, `autograded/` and `feedback/` the grading folders (all three ignored by
git).

Besides the folders, this file sets three things that nbgrader 0.9.6 does not do by default:

* a per-cell time limit that really applies (``Execute.timeout``; nbgrader's own ``Execute``
  preprocessor ignores ``ExecutePreprocessor.timeout`` once ``Execute.timeout`` is set);
* graded cells that a student deleted are put back and graded (``OverwriteCells``);
* feedback that does not reveal the hidden tests (:class:`HideHiddenTests`, below): nbgrader's
  ``generate_feedback`` shows the autograded notebook, in which the test cells carry their full
  source again, hidden tests included (nbgrader issue 1363).
"""

import re

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor, Preprocessor
from nbgrader.preprocessors import GetGrades
from traitlets import Bool

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

# A test cell that a student deleted is restored from the gradebook and run, instead of leaving
# its grade empty.
c.OverwriteCells.add_missing_cells = True


class HideHiddenTests(Preprocessor):
    """Feedback without the hidden tests.

    In every cell, the lines from ``### BEGIN HIDDEN TESTS`` to ``### END HIDDEN TESTS`` are
    replaced by one comment. In graded test cells, an error keeps its name and message but loses
    its traceback (a traceback quotes the source lines of the test that failed), and output lines
    that repeat a line of the hidden tests (a warning quotes its source line) are dropped.
    """

    enabled = Bool(True)  # nbconvert registers a preprocessor class disabled by default
    begin = re.compile(r"^.*BEGIN HIDDEN TESTS.*$")
    end = re.compile(r"^.*END HIDDEN TESTS.*$")
    placeholder = "# (hidden tests: not shown in the feedback)"

    def split(self, source):
        """(source without hidden regions, the hidden lines)."""
        kept, hidden, inside = [], [], False
        for line in source.splitlines():
            if not inside and self.begin.match(line):
                inside = True
                kept.append(self.placeholder)
            elif inside:
                if self.end.match(line):
                    inside = False
                else:
                    hidden.append(line)
            else:
                kept.append(line)
        return "\n".join(kept), hidden

    def preprocess_cell(self, cell, resources, index):
        cell.source, hidden = self.split(cell.source)
        nbgrader = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not nbgrader.get("grade") or nbgrader.get("solution"):
            return cell, resources
        secret = {line.strip() for line in hidden if len(line.strip()) > 3}
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                output.traceback = [f"{output.ename}: {output.evalue}"]
            elif output.output_type == "stream":
                lines = output.text.splitlines(keepends=True)
                output.text = "".join(ln for ln in lines if ln.strip() not in secret)
        return cell, resources


c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
