"""Write the student edition: the repository that learners get.

    python tools/student_edition.py DEST     # or: make student-edition DEST=<folder>

This repository is the instructor's and stays private: `solutions/` holds every solution and hidden
test, `tests/` the grading cases and the grading tests, `tools/` the grading machinery. DEST becomes
a new git repository with a single commit (no history from here) holding what this repository
tracks, read from the working tree, less all of that: the book and its configuration, the lessons,
the student exercise notebooks, `tfcourse`, the Binder environment and what `make book` needs. The
README loses its `<!-- instructor-only -->` … `<!-- /instructor-only -->` blocks and the Makefile
its instructor targets. Before committing, every file is scanned for the lines of the solution and
hidden-test regions of `solutions/*/exercises.py` and for nbgrader's markers; a leak fails the run.

Push DEST to the repository that `_config.yml` names (`repository:`): the launch buttons and the
Colab install cell of every notebook point there. Each edition is a new single commit, so publishing
it over the previous one is a forced push.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# What the edition holds (folders end in "/"): everything else of this repository stays with the
# instructor. An allow-list, so that a new top-level file is private until someone publishes it.
PUBLISHED = ("_config.yml", "_toc.yml", "intro.md", "README.md", "Makefile", "pyproject.toml",
             ".gitignore", "_ext/", "_static/", "binder/", "chapters/", "requirements/",
             "tfcourse/")
# Makefile targets that work without the instructor's files; the edition's Makefile has no other.
EDITION_TARGETS = frozenset({"venv", "book", "lint", "lock", "clean"})
INSTRUCTOR_ONLY = re.compile(r"^<!-- instructor-only -->\n.*?^<!-- /instructor-only -->\n",
                             re.M | re.S)
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
REGION_START = re.compile(r"### BEGIN (SOLUTION|HIDDEN TESTS)$")
REGION_END = re.compile(r"### END (SOLUTION|HIDDEN TESTS)$")
DISTINCTIVE = 16  # a region's line this long, and not public anyway, identifies the solution
RULE = re.compile(r"^(?P<targets>[^\s#.][^:=]*?)\s*:(?![=:])")  # `name: prerequisites`
# Replaces the Makefile's leading comment block, which lists the instructor's commands too.
MAKEFILE_HEADER = """\
# `make book` sets up .venv, with every dependency pinned, and builds the book with every lesson
# executed (_build/html); nothing needs to be installed by hand.
"""


class EditionError(Exception):
    """The edition cannot be written (bad destination, or a leak): the message says why."""


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def repository() -> dict[str, str]:
    """The `repository` block of `_config.yml`: the student edition's public repository."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return {"url": config["url"].rstrip("/"), "branch": str(config["branch"])}


def published_files() -> list[str]:
    """The files of this repository that the edition holds (tracked, present in the working tree,
    under PUBLISHED), as paths relative to the root."""
    tracked = filter(None, git("ls-files", "-z").split("\0"))
    return sorted(name for name in tracked
                  if any(name == entry or (entry.endswith("/") and name.startswith(entry))
                         for entry in PUBLISHED)
                  and (ROOT / name).is_file())


def edition_readme(text: str) -> str:
    """README.md without its instructor-only blocks."""
    kept = INSTRUCTOR_ONLY.sub("", text)
    if "instructor-only" in kept:
        raise EditionError("README.md: an <!-- instructor-only --> marker is unpaired, nested or "
                           "not on a line of its own")
    return re.sub(r"\n{3,}", "\n\n", kept)


def edition_makefile(text: str) -> str:
    """The Makefile with MAKEFILE_HEADER and only EDITION_TARGETS: the other phony rules (and
    comment lines just above them) and their .PHONY entries go."""

    def kept(targets: str) -> bool:  # file targets (`$(VENV)/.installed`) build what kept ones need
        return all(t in EDITION_TARGETS or "/" in t or "." in t for t in targets.split())

    body = text.splitlines()
    while body and body[0].startswith("#"):
        body.pop(0)
    lines = MAKEFILE_HEADER.splitlines()
    header = len(lines)
    in_dropped_rule = False
    for line in body:
        if in_dropped_rule and line[:1] in ("\t", " "):  # its recipe
            continue
        in_dropped_rule = False
        rule = RULE.match(line)
        if rule and not kept(rule["targets"]):
            in_dropped_rule = True
            while len(lines) > header and lines[-1].startswith("#"):
                lines.pop()
        elif line.startswith(".PHONY:"):
            phony = [t for t in line.removeprefix(".PHONY:").split() if t in EDITION_TARGETS]
            lines.append(".PHONY: " + " ".join(phony))
        else:
            lines.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def public_text() -> str:
    """What the course publishes on purpose: the lessons, the student notebooks, and `tfcourse`
    (the reference code, whose use the exercises forbid; a solution line it shares is public)."""
    texts = [path.read_text() for pattern in ("chapters/*/lesson.py", "tfcourse/**/*.py")
             for path in sorted(ROOT.glob(pattern))]
    for notebook in sorted(ROOT.glob("chapters/*/exercises.ipynb")):
        texts += ["".join(cell["source"]) for cell in json.loads(notebook.read_text())["cells"]]
    return "\n".join(texts)


def secret_lines() -> list[str]:
    """The distinctive lines of every solution and hidden-test region of solutions/*/exercises.py:
    at least DISTINCTIVE characters once stripped, and found in nothing public."""
    public = public_text()
    lines = set()
    for source in sorted(ROOT.glob("solutions/*/exercises.py")):
        inside = False
        for raw in source.read_text().splitlines():
            line = raw.strip()
            if REGION_START.match(line):
                inside = True
            elif REGION_END.match(line):
                inside = False
            elif inside and len(line) >= DISTINCTIVE and line not in public:
                lines.add(line)
    return sorted(lines)


def json_strings(node: object) -> Iterable[str]:
    """Every string of a parsed JSON document, depth first."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict | list):
        for item in node.values() if isinstance(node, dict) else node:
            yield from json_strings(item)


def readable_texts(name: str, data: bytes) -> list[str]:
    """A file's text, and for a notebook its decoded strings too (JSON escapes quotes)."""
    text = data.decode("utf-8", errors="ignore")
    if not name.endswith(".ipynb"):
        return [text]
    try:
        return [text, "\n".join(json_strings(json.loads(text)))]
    except ValueError:  # not valid JSON: its raw text is scanned
        return [text]


def leaks(files: Iterable[tuple[str, bytes]], secrets: list[str] | None = None) -> list[str]:
    """`name: 'line'` for every nbgrader marker or secret line found in the (name, content)
    pairs."""
    needles = [*MARKERS, *(secret_lines() if secrets is None else secrets)]
    found = []
    for name, data in files:
        texts = readable_texts(name, data)
        found += [f"{name}: {needle!r}" for needle in needles
                  if any(needle in text for text in texts)]
    return found


def find_leaks(folder: Path, names: Iterable[str]) -> list[str]:
    """leaks() of the files `names` (relative paths) under `folder`."""
    return leaks((name, (folder / name).read_bytes()) for name in names)


def check_destination(dest: Path) -> Path:
    """The absolute destination; raises EditionError for a folder inside this repository, a file,
    or a folder that is not empty."""
    dest = dest.expanduser().resolve()
    if dest == ROOT or ROOT in dest.parents:
        raise EditionError(f"{dest} is inside this repository ({ROOT}): the edition must be a "
                           "repository of its own; choose a folder outside it")
    if dest.exists() and not dest.is_dir():
        raise EditionError(f"{dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        raise EditionError(f"{dest} exists and is not empty: give a new or empty folder")
    return dest


def write_edition(dest: Path) -> Path:
    """Write the student edition into `dest` (new or empty) as a git repository with one commit
    on the branch of `_config.yml`; returns its absolute path."""
    dest = check_destination(dest)
    transforms = {"README.md": edition_readme, "Makefile": edition_makefile}
    names = published_files()
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in transforms:
            target.write_text(transforms[name]((ROOT / name).read_text()))
            shutil.copymode(ROOT / name, target)
        else:
            shutil.copy2(ROOT / name, target)  # keeps the executable bit (binder/postBuild)
    found = find_leaks(dest, names)
    if found:
        raise EditionError(f"{dest} would publish solutions or hidden tests; it was left "
                           f"uncommitted (not a git repository) for inspection:\n  "
                           + "\n  ".join(found))
    source = git("describe", "--always", "--dirty").strip()
    identity = []
    for key, default in (("user.name", "tfcourse"), ("user.email", "tfcourse@localhost")):
        value = subprocess.run(["git", "config", key], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        identity += ["-c", f"{key}={value or default}"]
    git("init", "--quiet", f"--initial-branch={repository()['branch']}", cwd=dest)
    git("add", "--all", "--force", cwd=dest)  # --force: the edition's .gitignore must not drop any
    git(*identity, "commit", "--quiet", "-m", "Student edition of the course",
        "-m", f"Generated by tools/student_edition.py from the instructor's commit {source}.",
        cwd=dest)
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=str, help="a new or empty folder outside this repository")
    args = parser.parse_args()
    if not args.dest:
        print("student_edition: give the destination: make student-edition DEST=<folder>",
              file=sys.stderr)
        return 2
    try:
        dest = write_edition(Path(args.dest))
    except EditionError as error:
        print(f"student_edition: {error}", file=sys.stderr)
        return 1
    repo = repository()
    print(f"wrote the student edition to {dest}\n"
          f"publish it: git -C {dest} push --force {repo['url']} {repo['branch']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
