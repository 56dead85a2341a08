"""Everything that names the repository agrees with the `repository` block of _config.yml: the
setup cell of every notebook, the launch configuration of the book, the README's badges and any
Colab or Binder link in the course's pages.
"""

from __future__ import annotations

import ast
import re
import subprocess
import urllib.parse
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, book_config, committed_notebooks, notebook_pages, notebook_tool

BAD_PIP_OPTIONS = {"-U", "--upgrade", "--force-reinstall", "--ignore-installed", "-I"}
LINK = re.compile(r"https?://[^\s)\]\"'<>`]+")


def configured() -> dict[str, str]:
    repo = book_config()["repository"]
    url = repo["url"].rstrip("/")
    parts = urllib.parse.urlparse(url)
    org, name = parts.path.strip("/").split("/")
    return {"url": url, "host": parts.netloc, "org": org, "name": name,
            "branch": str(repo["branch"]), "path": (repo.get("path_to_book") or "").strip("/")}


def repository_path(page_file: str) -> str:
    """Where a file of the book lies in the repository (the book may sit in a subfolder)."""
    prefix = configured()["path"]
    return f"{prefix}/{page_file}" if prefix else page_file


def check_launch_link(url: str) -> str | None:
    """None when a Colab or Binder link points at a notebook of the configured repository and
    branch that exists; otherwise what is wrong with it."""
    repo = configured()
    colab = re.fullmatch(r"https://colab\.research\.google\.com/github/([^/]+)/([^/]+)/blob/"
                         r"([^/]+)/(.+\.ipynb)", url)
    binder = re.fullmatch(r"https://mybinder\.org/v2/gh/([^/]+)/([^/]+)/([^/?]+)"
                          r"(?:\?urlpath=(?:lab/tree|tree)/(.+\.ipynb)|\?filepath=(.+\.ipynb))?",
                          url)
    match = colab or binder
    if not match:
        return f"not a Colab or Binder link to a notebook on GitHub: {url}"
    org, name, branch = match.group(1, 2, 3)
    if (org, name, branch) != (repo["org"], repo["name"], repo["branch"]):
        return (f"{url} names {org}/{name}@{branch}, _config.yml says "
                f"{repo['org']}/{repo['name']}@{repo['branch']}")
    path = next((g for g in match.groups()[3:] if g), None)
    if path is not None:
        prefix = f"{repo['path']}/" if repo["path"] else ""
        if not path.startswith(prefix) or not (ROOT / path[len(prefix):]).is_file():
            return f"{url}: {path} is not a notebook of the repository"
        if path[len(prefix):] not in {p.relative_to(ROOT).as_posix()
                                      for p in committed_notebooks()}:
            return f"{url}: {path} is not committed, so GitHub does not have it"
    return None


def test_the_repository_is_set_once_in_config() -> None:
    config = book_config()
    repo = config["repository"]
    assert {"url", "branch"} <= set(repo), "_config.yml: repository needs url and branch " \
        "(Jupyter Book defaults them to its own repository and to 'master')"
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo["url"].rstrip("/")), (
        "repository.url must be https://github.com/<org>/<repo> for Colab and Binder links")
    assert not repo["url"].endswith(".git")
    # path_to_book: where this _config.yml lies inside the git repository.
    top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip())
    expected = ROOT.resolve().relative_to(top.resolve()).as_posix()
    assert configured()["path"] == ("" if expected == "." else expected)
    # The tool that writes the setup cells reads the same block.
    tool = notebook_tool()
    repo_now = configured()
    assert tool.repository() == {"url": repo_now["url"], "branch": repo_now["branch"],
                                 "path_to_book": repo_now["path"]}
    assert tool.install_requirement() == f"tfcourse @ git+{repo_now['url']}@{repo_now['branch']}"


def test_book_launch_buttons_are_configured() -> None:
    config = book_config()
    launch = config.get("launch_buttons", {})
    assert launch.get("binderhub_url", "").rstrip("/") == "https://mybinder.org"
    assert launch.get("colab_url", "").rstrip("/") == "https://colab.research.google.com"
    assert config.get("html", {}).get("use_repository_button") is True
    sphinx = config.get("sphinx", {})
    if "html_theme_options" in sphinx.get("config", {}):
        assert sphinx.get("recursive_update") is True, (
            "sphinx.config.html_theme_options replaces the launch buttons unless "
            "sphinx.recursive_update is true")
    # Colab opens the .ipynb from GitHub: every notebook page must be a committed notebook.
    committed = {p.relative_to(ROOT).as_posix() for p in committed_notebooks()}
    for page in notebook_pages():
        assert f"{page}.ipynb" in committed, f"{page}.ipynb is not committed"


@pytest.mark.parametrize("notebook", committed_notebooks(),
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_setup_cell_installs_from_the_configured_repository(notebook: Path) -> None:
    repo = configured()
    expected = f"tfcourse @ git+{repo['url']}@{repo['branch']}"
    cells = nbformat.read(notebook, 4).cells
    assert cells and cells[0].cell_type == "code", f"{notebook.name}: no setup cell first"
    source = cells[0].source
    assert "setup" in cells[0].metadata.get("tags", []), "the first cell is not tagged setup"
    requirements = re.findall(r"[\"'](tfcourse @ [^\"']+)[\"']", source)
    assert requirements == [expected], f"installs {requirements}, expected [{expected!r}]"
    assert '"google.colab" in sys.modules' in source, "the install must happen on Colab only"
    assert 'find_spec("tfcourse") is None' in source, "the install must skip an installed tfcourse"
    # What it hands pip: the course package only; never torch, never an upgrade or reinstall.
    strings = [node.value for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    assert not [s for s in strings if re.match(r"torch\b", s) or s in BAD_PIP_OPTIONS], strings


def test_readme_badges_point_at_the_configured_repository() -> None:
    readme = ROOT / "README.md"
    links = [u for u in LINK.findall(readme.read_text())
             if "colab.research.google.com/github" in u or "mybinder.org/v2" in u]
    kinds = {"Colab" if "colab" in u else "Binder" for u in links}
    assert kinds == {"Colab", "Binder"}, f"README.md: expected Colab and Binder badges, got {links}"
    problems = [p for p in map(check_launch_link, links) if p]
    assert not problems, "\n".join(problems)


def test_every_launch_link_in_the_course_agrees() -> None:
    """Colab and Binder links written by hand in any page, notebook or the README."""
    files = [ROOT / "README.md", *sorted(ROOT.glob("*.md")), *sorted(ROOT.glob("chapters/**/*.md")),
             *committed_notebooks()]
    problems = []
    repo = configured()
    for file in dict.fromkeys(files):
        if not file.is_file():
            continue
        for url in LINK.findall(file.read_text()):
            if "colab.research.google.com/github" in url or "mybinder.org/v2" in url:
                problem = check_launch_link(url.rstrip(".,;\\n"))
                if problem:
                    problems.append(f"{file.relative_to(ROOT)}: {problem}")
            elif re.search(rf"{re.escape(repo['host'])}/[^/\s]+/{re.escape(repo['name'])}\b",
                           url) and not url.startswith(repo["url"]):
                problems.append(f"{file.relative_to(ROOT)}: {url} is not {repo['url']}")
    assert not problems, "\n".join(problems)
