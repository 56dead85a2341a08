"""Feedback that never shows a hidden test (``generate_feedback`` step, set in
``nbgrader_config.py``).

nbgrader's own feedback renders the autograded notebook, in which the test cells carry their full
source again, hidden tests included (nbgrader issue 1363); and any cell's output can repeat that
source (a traceback, a warning, or a submission that printed what it read). So:

* in every cell, the lines from ``### BEGIN HIDDEN TESTS`` to ``### END HIDDEN TESTS`` become one
  comment;
* an error in a test cell keeps its name and message, not its traceback;
* every output of every cell (streams, errors, each text-like type of display data) that contains
  a fragment of the hidden tests, :data:`FRAGMENT` characters or more that the rest of the page
  does not show, is replaced by a notice.
"""

from __future__ import annotations

import html
import re

from nbconvert.preprocessors import Preprocessor
from nbformat import NotebookNode
from traitlets import Bool

FRAGMENT = 20
PLACEHOLDER = "# (hidden tests: not shown in the feedback)"
NOTICE = "(output not shown in the feedback: it repeats hidden test code)\n"
BEGIN = re.compile(r"^.*BEGIN HIDDEN TESTS.*$")
END = re.compile(r"^.*END HIDDEN TESTS.*$")


def split_hidden(source: str) -> tuple[str, list[str]]:
    """(source with each hidden region replaced by the placeholder, the hidden lines)."""
    kept, hidden, inside = [], [], False
    for line in source.splitlines():
        if not inside and BEGIN.match(line):
            inside = True
            kept.append(PLACEHOLDER)
        elif inside:
            if END.match(line):
                inside = False
            else:
                hidden.append(line)
        else:
            kept.append(line)
    return "\n".join(kept), hidden


def squeeze(text: str) -> str:
    """Text with markup removed and every run of white space made one space."""
    text = html.unescape(re.sub(r"<[^>]+>|\x1b\[[0-9;]*m", "", text))
    return " ".join(text.split())


def output_texts(output: NotebookNode) -> list[str]:
    if output.output_type == "stream":
        return [output.get("text", "")]
    if output.output_type == "error":
        return [output.get("ename", ""), output.get("evalue", ""), *output.get("traceback", [])]
    texts = []
    for value in output.get("data", {}).values():  # every mime type; images are base64 text
        texts.append(value if isinstance(value, str) else "".join(map(str, value))
                     if isinstance(value, list) else str(value))
    return texts


class HideHiddenTests(Preprocessor):
    """See the module's docstring."""

    enabled = Bool(True)  # nbconvert registers a preprocessor class disabled by default

    def preprocess(self, nb: NotebookNode, resources: dict) -> tuple[NotebookNode, dict]:
        hidden: list[str] = []
        for cell in nb.cells:
            cell.source, lines = split_hidden(cell.source)
            hidden += lines
            cell.pop("attachments", None)
        shown = squeeze("\n".join(cell.source for cell in nb.cells))
        secret = squeeze("\n".join(hidden))
        self.fragments = {secret[i:i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)}
        self.fragments -= {shown[i:i + FRAGMENT] for i in range(len(shown) - FRAGMENT + 1)}
        return super().preprocess(nb, resources)

    def leaks(self, text: str) -> bool:
        text = squeeze(text)
        return any(text[i:i + FRAGMENT] in self.fragments
                   for i in range(len(text) - FRAGMENT + 1))

    def preprocess_cell(self, cell: NotebookNode, resources: dict, index: int
                        ) -> tuple[NotebookNode, dict]:
        meta = cell.metadata.get("nbgrader", {})
        test = cell.cell_type == "code" and meta.get("grade") and not meta.get("solution")
        outputs = []
        for output in cell.get("outputs", []):
            if test and output.output_type == "error":
                output.traceback = [f"{output.ename}: {output.evalue}"]
            if any(self.leaks(text) for text in output_texts(output)):
                if output.output_type == "error":  # which error stays visible
                    output.evalue = NOTICE.strip()
                    output.traceback = [f"{output.ename}: {output.evalue}"]
                else:
                    output = NotebookNode(output_type="stream", name="stdout", text=NOTICE)
            outputs.append(output)
        if cell.cell_type == "code":
            cell.outputs = outputs
        return cell, resources
