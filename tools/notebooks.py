"""Build every notebook of the course from its single source.

    python tools/notebooks.py          # write the .ipynb files
    python tools/notebooks.py --check  # fail if a committed .ipynb differs from what would be built

Sources are jupytext "percent" scripts: ``chapters/**/lesson.py`` and ``solutions/*/exercises.py``.
Each becomes a ``.ipynb`` beside it, with a first cell that installs ``tfcourse`` on Colab from the
repository named in ``_config.yml``. Then nbgrader's ``generate_assignment`` turns each solution
notebook into the student notebook ``chapters/<assignment>/exercises.ipynb`` (released into a
scratch course folder, because ``--force`` deletes the whole release folder of an assignment).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def repository() -> dict[str, str]:
    """The ``repository`` block of ``_config.yml``: url, branch, path_to_book."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    return {"url": config["url"].rstrip("/"), "branch": config["branch"],
            "path_to_book": config.get("path_to_book") or ""}


def install_requirement() -> str:
    """The pip requirement that installs this repository's ``tfcourse`` on Colab."""
    repo = repository()
    return f"tfcourse @ git+{repo['url']}@{repo['branch']}"


def setup_cell() -> nbformat.NotebookNode:
    source = f'''# Setup. On Colab this installs the course package `tfcourse`, keeping Colab's own
# torch; on Binder and in a local install it is already there and nothing happens.
import importlib.util
import subprocess
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("tfcourse") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                    "{install_requirement()}"], check=True)'''
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata = {"tags": ["setup", "remove-cell"]}  # the book page starts with its title
    return cell


def build_notebook(source: Path) -> nbformat.NotebookNode:
    nb = jupytext.read(source, fmt="py:percent")
    nb.cells.insert(0, setup_cell())
    nb.metadata = {
        "kernelspec": KERNELSPEC,
        "language_info": {"name": "python"},
    }
    for index, cell in enumerate(nb.cells):
        cell.id = f"cell-{index:03d}"  # stable ids keep rebuilt notebooks byte-identical
        cell.metadata.pop("lines_to_next_cell", None)  # jupytext layout hint, not content
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    path.write_text(nbformat.writes(nb, version=4) + "\n")


def sources() -> list[Path]:
    return sorted(ROOT.glob("chapters/**/lesson.py")) + sorted(ROOT.glob("solutions/*/*.py"))


def release(course: Path, assignment: str) -> None:
    """Run ``nbgrader generate_assignment`` in ``course`` (a copy of the course folder)."""
    env = dict(os.environ)  # nbgrader calls `alembic` by name: put this environment's bin first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", assignment, "--force",
         "--log-level=WARN"],
        cwd=course, check=True, env=env,
    )


def build_all(out: Path) -> list[Path]:
    """Write every built notebook under ``out`` (same relative paths as in the repository)."""
    written = []
    for source in sources():
        target = out / source.relative_to(ROOT).with_suffix(".ipynb")
        target.parent.mkdir(parents=True, exist_ok=True)
        write(build_notebook(source), target)
        written.append(target)
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        shutil.copy(ROOT / "nbgrader_config.py", course)
        # the configuration loads the course's grading steps from tools/grading
        shutil.copytree(ROOT / "tools" / "grading", course / "tools" / "grading",
                        ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(out / "solutions", course / "solutions",
                        ignore=shutil.ignore_patterns("*.py"))
        for assignment in sorted(p.name for p in (course / "solutions").iterdir()):
            release(course, assignment)
            for student in sorted((course / "_release" / assignment).glob("*.ipynb")):
                target = out / "chapters" / assignment / student.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(student, target)
                written.append(target)
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed notebooks instead of writing them")
    args = parser.parse_args()
    if not args.check:
        for path in build_all(ROOT):
            print("wrote", path.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = []
        for built in build_all(Path(tmp)):
            committed = ROOT / built.relative_to(tmp)
            if not committed.exists() or committed.read_text() != built.read_text():
                stale.append(str(committed.relative_to(ROOT)))
    if stale:
        print("out of date (run `make notebooks`):", *stale, sep="\n  ")
        return 1
    print("all notebooks match their sources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
