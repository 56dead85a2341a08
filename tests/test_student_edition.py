"""The student edition (tools/student_edition.py), the repository learners get: one commit, the
book and what builds it, no solution, hidden test or grading machinery anywhere, in its files or in
its git objects. The book build, Binder and Colab tests use the same edition (`student_edition`
in conftest.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, student_edition_tool

# What stays with the instructor. The generator keeps an allow-list instead: a new top-level file
# shows up here as a difference, to be published (tools/student_edition.py) or kept private.
PRIVATE = re.compile(r"(solutions|tests|tools|\.ci)/|nbgrader_config\.py$")
TRANSFORMED = {"README.md", "Makefile"}


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                          check=True).stdout


def tracked(folder: Path) -> list[str]:
    return sorted(filter(None, git(folder, "ls-files", "-z").split("\0")))


def test_the_edition_is_one_commit(student_edition: Path) -> None:
    assert git(student_edition, "rev-list", "--all", "--count").strip() == "1"
    branch = student_edition_tool().repository()["branch"]
    assert git(student_edition, "branch", "--show-current").strip() == branch
    assert not git(student_edition, "status", "--porcelain", "--untracked-files=all")


def test_the_edition_holds_exactly_the_public_files(student_edition: Path) -> None:
    expected = [name for name in tracked(ROOT)
                if not PRIVATE.match(name) and (ROOT / name).is_file()]
    assert tracked(student_edition) == expected
    for name in ("solutions", "tests", "tools", ".ci", "nbgrader_config.py"):
        assert not (student_edition / name).exists(), f"{name} is in the student edition"
    for name in expected:
        if name not in TRANSFORMED:
            assert (student_edition / name).read_bytes() == (ROOT / name).read_bytes(), name
    # Modes too: Binder runs binder/postBuild only when it is executable.
    modes = {line.split()[3]: line.split()[0]
             for line in git(student_edition, "ls-files", "-s").splitlines()}
    assert modes["binder/postBuild"] == "100755"


def test_config_is_the_same_so_links_point_at_the_edition(student_edition: Path) -> None:
    assert (student_edition / "_config.yml").read_bytes() == (ROOT / "_config.yml").read_bytes()


def test_no_solution_or_hidden_test_in_files_or_git_objects(student_edition: Path) -> None:
    tool = student_edition_tool()
    secrets = tool.secret_lines()
    assert len(secrets) > 100, f"only {len(secrets)} secret lines: is solutions/ empty?"
    assert not tool.find_leaks(student_edition, tracked(student_edition))
    # Every object of the repository, reachable or not, as git would push or pack it.
    objects = git(student_edition, "cat-file", "--batch-all-objects",
                  "--batch-check=%(objectname) %(objecttype)").split("\n")
    blobs = [line.split()[0] for line in objects if line.endswith(" blob")]
    assert set(blobs) == {line.split()[2] for line in
                          git(student_edition, "ls-tree", "-r", "HEAD").splitlines()}
    contents = ((blob, subprocess.run(["git", "cat-file", "blob", blob], cwd=student_edition,
                                      capture_output=True, check=True).stdout) for blob in blobs)
    assert not tool.leaks(contents, secrets)
    grep = subprocess.run(["git", "grep", "-I", "-F", "-l", "-f", "-", "HEAD"],
                          cwd=student_edition, input="\n".join([*tool.MARKERS, *secrets]),
                          capture_output=True, text=True)
    assert grep.returncode == 1 and not grep.stdout, f"git grep found:\n{grep.stdout}"


def test_the_scan_finds_a_solution_line_and_a_marker(tmp_path: Path) -> None:
    """Guards the test above against a scan that finds nothing."""
    tool = student_edition_tool()
    secret = tool.secret_lines()[0]
    (tmp_path / "notes.md").write_text(f"text\n    {secret}\nmore\n")
    (tmp_path / "cell.ipynb").write_text('{"cells": [{"source": ["### END HIDDEN TESTS\\n"]}]}')
    (tmp_path / "clean.py").write_text("print('nothing to see')\n")
    assert tool.find_leaks(tmp_path, ["notes.md", "cell.ipynb", "clean.py"]) == [
        f"notes.md: {secret!r}", "cell.ipynb: 'END HIDDEN TESTS'"]


def test_a_leak_fails_the_generator_and_nothing_is_committed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = student_edition_tool()
    line = "def scaled_dot_product_attention("  # as if a solution's line were in tfcourse
    assert line in (ROOT / "tfcourse" / "attention.py").read_text()
    monkeypatch.setattr(tool, "secret_lines", lambda: [line])
    with pytest.raises(tool.EditionError, match=r"tfcourse/attention\.py: 'def scaled_dot"):
        tool.write_edition(tmp_path / "edition")
    assert not (tmp_path / "edition" / ".git").exists(), "a leaking edition was committed"


def test_secret_lines_come_from_every_solution_and_hidden_test_region() -> None:
    secrets = set(student_edition_tool().secret_lines())
    for source in sorted(ROOT.glob("solutions/*/exercises.py")):
        regions = re.findall(r"### BEGIN (SOLUTION|HIDDEN TESTS)\n(.*?)### END \1",
                             source.read_text(), flags=re.S)
        kinds = {kind for kind, body in regions
                 if secrets & {line.strip() for line in body.splitlines()}}
        assert kinds == {"SOLUTION", "HIDDEN TESTS"}, f"{source}: no secret line from {kinds}"


def test_readme_keeps_the_learner_sections_only(student_edition: Path) -> None:
    full = (ROOT / "README.md").read_text()
    edition = (student_edition / "README.md").read_text()
    assert edition == student_edition_tool().edition_readme(full)
    assert "<!-- instructor-only -->" in full
    for kept in ("# From attention to Jamba", "## Read it", "## Work the notebooks",
                 "## Build the book", "make book", "colab-badge.svg", "badge_logo.svg"):
        assert kept in edition, f"the edition's README lost {kept!r}"
    for gone in ("instructor-only", "## Run the tests", "## Grade with nbgrader", "make test",
                 "make notebooks", "make student-edition", "solutions/", "nbgrader_config.py",
                 ".ci/run"):
        assert gone in full, f"README.md no longer has {gone!r}: update this test"
        assert gone not in edition, f"the edition's README still has {gone!r}"


def test_readme_markers_must_pair() -> None:
    tool = student_edition_tool()
    for text in ("a\n<!-- instructor-only -->\nb\n",
                 "<!-- instructor-only -->\n<!-- instructor-only -->\nb\n"
                 "<!-- /instructor-only -->\n<!-- /instructor-only -->\n"):
        with pytest.raises(tool.EditionError, match="unpaired"):
            tool.edition_readme(text)


def test_make_book_works_in_the_edition(student_edition: Path) -> None:
    makefile = (student_edition / "Makefile").read_text()
    assert makefile == student_edition_tool().edition_makefile((ROOT / "Makefile").read_text())
    assert "tools/" not in makefile and "solutions" not in makefile
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.M).group(1).split()
    assert "book" in phony and "test" not in phony and "student-edition" not in phony
    for target in phony:  # dry runs: every target's prerequisites exist in the edition
        result = subprocess.run(["make", "-n", target], cwd=student_edition, capture_output=True,
                                text=True)
        assert result.returncode == 0, f"make -n {target}: {result.stderr}"
    dry = subprocess.run(["make", "-n", "book"], cwd=student_edition, capture_output=True,
                         text=True).stdout
    assert "jupyter-book build . -W -n --keep-going" in dry
    assert "pip install --quiet -r requirements/dev.txt" in dry
    for target in ("test", "notebooks", "student-edition"):
        result = subprocess.run(["make", "-n", target], cwd=student_edition, capture_output=True,
                                text=True)
        assert result.returncode != 0 and "No rule to make target" in result.stderr, target


def test_destination_refusals(tmp_path: Path) -> None:
    tool = student_edition_tool()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(tool.EditionError, match="exists and is not empty"):
        tool.write_edition(busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    inside = ROOT / "_build" / "edition"
    with pytest.raises(tool.EditionError, match="inside this repository"):
        tool.write_edition(inside)
    assert not inside.exists()
    with pytest.raises(tool.EditionError, match="inside this repository"):
        tool.write_edition(ROOT)
    with pytest.raises(tool.EditionError, match="not a folder"):
        tool.write_edition(busy / "keep.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert tool.check_destination(empty) == empty.resolve()


def test_command_line_refuses_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    for dest, message in ((str(tmp_path), "exists and is not empty"),
                          ("", "make student-edition DEST=<folder>")):
        result = subprocess.run([sys.executable, str(ROOT / "tools" / "student_edition.py"),
                                 dest], capture_output=True, text=True)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
