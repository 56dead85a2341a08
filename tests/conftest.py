"""Shared test setup: every test runs with a fixed number of torch threads; the student edition is
generated once per session (fixture ``student_edition``) and the book is built once, from it
(fixtures ``book_build`` and ``book_html``)."""

import fnmatch
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from tfcourse.runtime import pin_threads


@pytest.fixture(autouse=True, scope="session")
def _pinned_threads() -> None:
    pin_threads()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run where CUDA is present and are skipped, saying why, elsewhere."""
    if torch.cuda.is_available():
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


# --- The student edition and the book built from it: each made once per test session. ---


ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
# The bin folder of the environment running the tests (not resolved: a venv's python is a link).
VENV_BIN = Path(sys.executable).parent
BOOK_BUILD_TIMEOUT_S = 3600  # eleven lessons of at most 3 minutes each, with room to spare


def env_with_venv_bin(**extra: str) -> dict[str, str]:
    """The current environment with this venv's bin first on PATH (jupyter-book, nbgrader and
    their kernels find their tools by name there)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@functools.cache
def student_edition_tool() -> types.ModuleType:
    """tools/student_edition.py, which writes the repository learners get (loaded once, so that
    its EditionError is one class)."""
    spec = importlib.util.spec_from_file_location("course_student_edition",
                                                  ROOT / "tools" / "student_edition.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def student_edition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The student edition, generated from the working tree into a fresh folder: what learners
    get, and what the book build, Binder and Colab tests use."""
    return student_edition_tool().write_edition(tmp_path_factory.mktemp("edition") / "course")


@dataclass(frozen=True)
class BookBuild:
    returncode: int
    log: str
    html: Path


@pytest.fixture(scope="session")
def book_build(tmp_path_factory: pytest.TempPathFactory, student_edition: Path) -> BookBuild:
    """Build the book once, from the student edition (the site exactly as learners get it), from a
    clean state, as `make book` does (-W -n --keep-going), into a fresh folder: no execution cache
    or previous output is reused. The lessons import the edition's own `tfcourse` (PYTHONPATH), so
    a module missing from the edition fails the build. The log and the site are copied to
    tests/artifacts/ for inspection."""
    out = tmp_path_factory.mktemp("book")
    command = [str(VENV_BIN / "jupyter-book"), "build", str(student_edition),
               "--path-output", str(out), "-W", "-n", "--keep-going"]
    env = env_with_venv_bin(PYTHONPATH=str(student_edition))
    try:
        result = subprocess.run(command, cwd=student_edition, env=env, capture_output=True,
                                text=True, timeout=BOOK_BUILD_TIMEOUT_S)
        returncode, log = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as error:
        returncode = -1
        log = f"timed out after {BOOK_BUILD_TIMEOUT_S} s\n{error.stdout or ''}{error.stderr or ''}"
    log = re.sub(r"\x1b\[[0-9;]*m", "", log)  # drop the colour codes of Sphinx's log
    html = out / "_build" / "html"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "book-build.log").write_text(log)
    if html.is_dir():
        shutil.rmtree(ARTIFACTS / "book", ignore_errors=True)
        shutil.copytree(html, ARTIFACTS / "book")
    return BookBuild(returncode, log, html)


@pytest.fixture(scope="session")
def book_html(book_build: BookBuild) -> Path:
    """The folder of the built site; fails, with the build log, when the build failed."""
    if book_build.returncode != 0 or not (book_build.html / "index.html").is_file():
        pytest.fail(f"the book build failed (exit {book_build.returncode}); log:\n"
                    f"{book_build.log[-20000:]}", pytrace=False)
    return book_build.html


# --- What the book is made of, read from _config.yml and _toc.yml (the tests compute expected
# --- pages and links from the configuration, never from the built site).


def committed_notebooks() -> list[Path]:
    """Every .ipynb file that git tracks."""
    listed = subprocess.run(["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    return sorted(ROOT / name for name in listed if (ROOT / name).is_file())


def book_config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


def toc_pages() -> list[str]:
    """Every page of _toc.yml, root first, as Sphinx docnames ('chapters/01_attention/lesson')."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                pages.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({key: value for key, value in toc.items() if key != "root"})
    return [re.sub(r"\.(md|ipynb)$", "", page) for page in pages]


def notebook_pages() -> list[str]:
    """Pages of the book whose source is a committed notebook (those have launch buttons)."""
    return [page for page in toc_pages() if (ROOT / f"{page}.ipynb").is_file()]


def is_executed(page: str) -> bool:
    """Whether the book build runs this notebook (execute.exclude_patterns of _config.yml)."""
    patterns = book_config().get("execute", {}).get("exclude_patterns", [])
    return not any(fnmatch.fnmatch(f"{page}.ipynb", pattern) for pattern in patterns)


def lesson_pages() -> list[str]:
    return [page for page in notebook_pages() if is_executed(page)]


def exercise_pages() -> list[str]:
    return [page for page in notebook_pages() if not is_executed(page)]


def expected_launch_urls(page: str) -> dict[str, str]:
    """The Binder and Colab URLs a reader must get for ``page``, from the `repository` and
    `launch_buttons` blocks of _config.yml."""
    config = book_config()
    repo, launch = config["repository"], config["launch_buttons"]
    org, name = urllib.parse.urlparse(repo["url"]).path.strip("/").removesuffix(".git").split("/")
    branch = repo["branch"]
    prefix = (repo.get("path_to_book") or "").strip("/")
    path = f"{prefix}/{page}.ipynb" if prefix else f"{page}.ipynb"
    ui = {"jupyterlab": "lab/tree", "classic": "tree"}[launch.get("notebook_interface", "classic")]
    binder = launch["binderhub_url"].rstrip("/")
    colab = launch["colab_url"].rstrip("/")
    return {
        "Binder": f"{binder}/v2/gh/{org}/{name}/{branch}?urlpath={ui}/{path}",
        "Colab": f"{colab}/github/{org}/{name}/blob/{branch}/{path}",
    }


def notebook_tool() -> types.ModuleType:
    """tools/notebooks.py, which derives each notebook's setup cell from _config.yml."""
    spec = importlib.util.spec_from_file_location("course_notebook_tool",
                                                  ROOT / "tools" / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
