"""The learner's two ways in, each in a fresh virtual environment, from the student edition (the
repository learners get, `student_edition` in conftest.py):

* Binder: an environment made from the edition's binder/ (as far as this machine can reach: the
  pytorch.org index line is dropped, ``torch==2.13.0`` comes from the local wheel), installed from
  the edition's root so that a file missing from the edition fails here, runs `postBuild` and
  executes chapter 1's lesson, the shortest, with its own kernel. Every lesson runs once in the
  suite: in the book build (test_book.py), from the same edition and with the same pinned versions
  (checked below); running them all again here would add about ten minutes.
* Colab: in an environment that already has torch (as Colab has), the setup cell of the committed
  notebooks, with ``google.colab`` faked, installs ``tfcourse`` from the edition's git repository
  (standing in for GitHub) and leaves torch as it was; without Colab it does nothing.

Both environments are built at the start of the module, the Colab one in the background while the
Binder one is installed and its lesson runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import env_with_venv_bin, lesson_pages, notebook_pages, notebook_tool

pytestmark = pytest.mark.slow

PIP_TIMEOUT_S = 900
LESSON_TIMEOUT_S = 900  # a lesson must run in 3 minutes on 2 cores; this only catches a hang
TORCH = "torch==2.13.0"  # the pin that installs the CPU build on this machine and in CI


def run(command: list[str], *, timeout: float = PIP_TIMEOUT_S, check: bool = True,
        **kwargs: object) -> subprocess.CompletedProcess:
    """Run a command with its output captured; on failure, fail the test showing that output."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited {result.returncode}:\n"
                    f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}", pytrace=False)
    return result


class Venv:
    """A fresh virtual environment, with helpers to run its Python outside the repository (so
    that ``import tfcourse`` cannot find the repository's folder by accident)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        self.python = self.bin / "python"
        run([sys.executable, "-m", "venv", str(path)])

    def env(self, **extra: str) -> dict[str, str]:
        env = env_with_venv_bin(**extra)
        env["PATH"] = f"{self.bin}{os.pathsep}{env['PATH']}"
        env.pop("PYTHONPATH", None)
        env["VIRTUAL_ENV"] = str(self.path)
        return env

    def pip(self, *args: str, cwd: Path | None = None) -> subprocess.Popen:
        return subprocess.Popen([str(self.python), "-m", "pip", *args, "--no-input"],
                                cwd=cwd or self.path, env=self.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def python_code(self, code: str, *, check: bool = True, **env: str
                    ) -> subprocess.CompletedProcess:
        return run([str(self.python), "-c", code], cwd=self.path, env=self.env(**env),
                   check=check)

    def freeze(self) -> list[str]:
        listed = run([str(self.python), "-m", "pip", "list", "--format=json"], cwd=self.path,
                     env=self.env()).stdout
        return sorted(f"{p['name']}=={p['version']}" for p in json.loads(listed))


def finish(process: subprocess.Popen, what: str) -> None:
    try:
        output, _ = process.communicate(timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    if process.returncode != 0:
        pytest.fail(f"{what} failed (exit {process.returncode}):\n{output[-8000:]}",
                    pytrace=False)


def reachable_binder_requirements(binder: Path, folder: Path) -> Path:
    """binder/requirements.txt without its index lines (pytorch.org is not reachable here; the
    local torch wheel has the same version)."""
    lines = (binder / "requirements.txt").read_text().splitlines()
    kept = [line for line in lines if not re.match(r"\s*--(extra-)?index-url\b", line)]
    target = folder / "requirements.txt"
    target.write_text("\n".join(kept) + "\n")
    return target


@pytest.fixture(scope="module")
def colab_venv_started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Venv, object]]:
    """A fresh environment with only torch, as on Colab: its install starts at once and runs in
    the background; the test that needs it waits for it."""
    venv = Venv(tmp_path_factory.mktemp("colab") / "venv")
    process = venv.pip("install", "--quiet", TORCH)
    yield venv, process
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.fixture(scope="module")
def binder_venv(tmp_path_factory: pytest.TempPathFactory, colab_venv_started: object,
                student_edition: Path) -> Venv:
    """The edition's binder/requirements.txt installed into a fresh environment, from the
    edition's root (where repo2docker resolves ``-e .``). Requesting the Colab environment first
    starts it early."""
    folder = tmp_path_factory.mktemp("binder")
    venv = Venv(folder / "venv")
    requirements = reachable_binder_requirements(student_edition / "binder", folder)
    finish(venv.pip("install", "--quiet", "-r", str(requirements), cwd=student_edition),
           "installing the edition's binder/requirements.txt")
    return venv


@pytest.fixture(scope="module")
def colab_venv(colab_venv_started: tuple[Venv, subprocess.Popen]) -> Venv:
    venv, process = colab_venv_started
    finish(process, f"installing {TORCH} into the Colab-like environment")
    return venv


def test_binder_files_are_what_repo2docker_needs(student_edition: Path) -> None:
    binder = student_edition / "binder"
    runtime = (binder / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(3)\.(\d+)", runtime)
    assert match, f"binder/runtime.txt: expected 'python-3.X', got {runtime!r}"
    assert (3, int(match.group(2))) == sys.version_info[:2], (
        f"binder/runtime.txt asks for Python {runtime}; these tests (and the pinned environment) "
        f"use Python {sys.version_info.major}.{sys.version_info.minor}")
    requirements = (binder / "requirements.txt").read_text().splitlines()
    assert "-e ." in [line.strip() for line in requirements], (
        "binder/requirements.txt must install the course package: repo2docker ignores "
        "pyproject.toml when a binder/ folder exists")
    assert any(re.fullmatch(r"torch==[\d.]+", line.strip()) for line in requirements)
    assert any("download.pytorch.org/whl/cpu" in line for line in requirements), (
        "without the CPU index, Binder installs the multi-GB CUDA build of torch")
    # The book build runs the lessons with requirements/dev.txt: Binder must pin the same versions.
    pinned = set((student_edition / "requirements" / "dev.txt").read_text().lower().split())
    differ = [line for line in map(str.strip, requirements)
              if re.fullmatch(r"[\w.-]+==[\w.+-]+", line) and line.lower() not in pinned]
    assert not differ, f"binder/requirements.txt and requirements/dev.txt differ: {differ}"

    post_build = binder / "postBuild"
    text = post_build.read_text()
    assert text.startswith("#!"), "binder/postBuild: no shebang line"
    assert re.search(r"^set -e|^set -euo pipefail|^set -[a-z]*e", text, re.M), (
        "binder/postBuild: without `set -e` a failing step does not fail the Binder build")
    assert post_build.stat().st_mode & stat.S_IXUSR, "binder/postBuild is not executable"


def test_binder_postbuild_runs(binder_venv: Venv, student_edition: Path) -> None:
    result = run([str(student_edition / "binder" / "postBuild")], cwd=student_edition,
                 env=binder_venv.env())
    assert "tfcourse" in result.stdout
    imported = binder_venv.python_code("import tfcourse; print(tfcourse.__file__)").stdout
    assert imported.startswith(str(student_edition)), f"tfcourse imported from {imported}"


def test_a_lesson_runs_in_the_binder_environment(binder_venv: Venv, student_edition: Path,
                                                 tmp_path: Path) -> None:
    """Chapter 1's lesson executes, with no error, on a kernel of the Binder environment (a last
    cell, added to a copy, proves which Python ran it)."""
    page = lesson_pages()[0]
    assert page.startswith("chapters/01_"), f"the first lesson is {page}, not chapter 1's"
    folder = tmp_path / "chapter"
    shutil.copytree((student_edition / page).parent, folder)  # it may write files beside itself
    notebook = folder / f"{Path(page).name}.ipynb"
    nb = nbformat.read(notebook, 4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint('PREFIX', sys.prefix)"))
    nbformat.write(nb, notebook)
    finish(binder_venv.pip("install", "--quiet", "nbclient", "ipykernel"),
           "installing nbclient and ipykernel")  # normally already there, with jupyterlab
    script = textwrap.dedent(f"""
        import nbformat
        from nbclient import NotebookClient
        nb = nbformat.read({str(notebook)!r}, 4)
        NotebookClient(nb, timeout={LESSON_TIMEOUT_S}, kernel_name="python3",
                       resources={{"metadata": {{"path": {str(folder)!r}}}}}).execute()
        nbformat.write(nb, {str(notebook)!r})
    """)
    run([str(binder_venv.python), "-c", script], cwd=folder, timeout=LESSON_TIMEOUT_S,
        env=binder_venv.env(TFCOURSE_THREADS="2"))
    executed = nbformat.read(notebook, 4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, f"{page}: error outputs: {errors}"
    last = "".join(o.get("text", "") for o in executed.cells[-1].outputs)
    assert f"PREFIX {binder_venv.path}" in last, f"{page} ran on another Python: {last!r}"


def setup_cell_source(edition: Path, page: str) -> str:
    cell = nbformat.read(edition / f"{page}.ipynb", 4).cells[0]
    assert cell.cell_type == "code" and "setup" in cell.metadata.get("tags", []), (
        f"{page}.ipynb: the first cell is not the setup cell")
    return cell.source


def torch_fingerprint(venv: Venv) -> str:
    return venv.python_code(
        "import os, torch; print(torch.__version__, torch.__file__, "
        "os.stat(torch.__file__).st_mtime_ns)").stdout.strip()


FAKE_COLAB = ("import sys, types\n"
              "sys.modules['google'] = types.ModuleType('google')\n"
              "sys.modules['google.colab'] = types.ModuleType('google.colab')\n")


def test_colab_setup_cell_installs_tfcourse_and_keeps_torch(colab_venv: Venv,
                                                            student_edition: Path) -> None:
    repo = notebook_tool().repository()
    remote = f"git+{repo['url']}@{repo['branch']}"
    page = notebook_pages()[0]
    source = setup_cell_source(student_edition, page)
    assert remote in source, f"{page}: the setup cell does not install from {remote}"
    # The edition's repository stands in for GitHub (a git+file URL needs a host part to be a
    # valid requirement: file://localhost/path).
    cell = source.replace(remote, f"git+file://localhost{student_edition}@{repo['branch']}")

    # Not on Colab (Binder, a local install): the cell installs nothing, even without tfcourse.
    before = colab_venv.freeze()
    torch_before = torch_fingerprint(colab_venv)
    colab_venv.python_code(cell)
    assert colab_venv.freeze() == before, "the setup cell installed packages outside Colab"
    assert "None" in colab_venv.python_code(
        "import importlib.util; print(importlib.util.find_spec('tfcourse'))").stdout

    # On Colab: it installs tfcourse from the repository and keeps Colab's torch.
    colab_venv.python_code(FAKE_COLAB + cell)
    imported = colab_venv.python_code("import tfcourse; print(tfcourse.__file__)").stdout
    assert str(colab_venv.path) in imported, f"tfcourse imported from {imported}"
    assert torch_fingerprint(colab_venv) == torch_before, "the setup cell replaced torch"
    after = colab_venv.freeze()
    added = sorted(set(after) - set(before))
    assert [p for p in after if p.lower().startswith("torch==")] == \
        [p for p in before if p.lower().startswith("torch==")]
    assert not [p for p in added if p.lower().startswith(("nvidia", "triton"))], added
    assert any(p.startswith("tfcourse==") for p in added), added

    # Run again (a learner re-runs the notebook): nothing more is installed.
    colab_venv.python_code(FAKE_COLAB + cell)
    assert colab_venv.freeze() == after
