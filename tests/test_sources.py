"""Every notebook has one source, and the repository's code is lint-clean.

The .ipynb files are built from jupytext sources and nbgrader (`make notebooks`); a committed
notebook that drifts from what that command produces fails here."""

import json
import subprocess
import sys

from conftest import ROOT, committed_notebooks


def test_committed_notebooks_match_their_sources() -> None:
    result = subprocess.run([sys.executable, "tools/notebooks.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_notebook_is_built_from_a_source() -> None:
    notebooks = committed_notebooks()
    assert notebooks, "no notebook is committed"
    for path in notebooks:
        source = path.with_suffix(".py")
        student = ROOT / "solutions" / path.parent.name / path.name
        assert source.is_file() or student.is_file(), f"{path.relative_to(ROOT)} has no source"


def test_committed_notebooks_carry_no_outputs() -> None:
    for path in committed_notebooks():
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"], f"{path.relative_to(ROOT)} is committed with outputs"
                assert cell["execution_count"] is None


def test_student_notebooks_hold_no_solutions_or_hidden_tests() -> None:
    for path in committed_notebooks():
        if path.is_relative_to(ROOT / "chapters"):
            text = path.read_text()
            assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, path


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
