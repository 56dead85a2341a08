"""The rendered book, as a reader gets it from one clean build (`book_html` in conftest.py).

Expected pages, launch links and forbidden text are computed from the repository (_config.yml,
_toc.yml, the notebooks), never read back from the site.
"""

from __future__ import annotations

import html as html_lib
import json
import re
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from conftest import (
    ROOT,
    BookBuild,
    book_config,
    exercise_pages,
    expected_launch_urls,
    lesson_pages,
    notebook_pages,
    toc_pages,
)
from sphinx.search.en import SearchEnglish

pytestmark = pytest.mark.slow

NBGRADER_MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
HIDDEN_IN_BOOK = {"remove-cell", "remove-input"}  # myst-nb tags: the page does not show the code
DISTINCTIVE = 25  # a solution line this long, absent from the student notebook, identifies it


def soup(html: Path, page: str) -> BeautifulSoup:
    return BeautifulSoup((html / f"{page}.html").read_text(), "html.parser")


def article(html: Path, page: str) -> BeautifulSoup:
    """The page's own content (no navigation, no sidebars)."""
    main = soup(html, page).select_one("article.bd-article")
    assert main is not None, f"{page}.html has no article element"
    return main


def prose_words(markdown: str) -> set[str]:
    """The plain words of a markdown cell, without maths, code, links' targets and MyST syntax."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$", " ", markdown, flags=re.S)  # maths
    text = re.sub(r"```.*?```|:::.*?:::", " ", text, flags=re.S)  # fences and directives
    text = re.sub(r"`[^`]*`", " ", text)  # inline code and the target of a role
    text = re.sub(r"\{[^}]*\}|<[^>]*>|\]\([^)]*\)|^\([^)]*\)=$|https?://\S+", " ", text,
                  flags=re.M)  # roles, html, link targets, labels, urls
    return {word.lower() for word in re.findall(r"[A-Za-z]{4,}", text)}


PLAIN_QUOTES = str.maketrans("\u2018\u2019\u201c\u201d", "''\"\"")


def headings(markdown: str) -> list[str]:
    return [line.lstrip("#").strip() for line in markdown.splitlines() if line.startswith("#")]


def solution_lines() -> list[str]:
    """Distinctive lines of every solution and hidden-test region of solutions/*/*.ipynb: long
    ones that no published student notebook contains (a line such as a self-check's call that
    one notebook hides and another shows is public, not a leak)."""
    published = [ROOT / "chapters" / source.parent.name / source.name
                 for source in ROOT.glob("solutions/*/*.ipynb")]
    student_text = "\n".join(cell.source for student in published if student.is_file()
                             for cell in nbformat.read(student, 4).cells)
    lines = []
    for source in sorted(ROOT.glob("solutions/*/*.ipynb")):
        for cell in nbformat.read(source, 4).cells:
            inside = False
            for line in cell.source.splitlines():
                if re.search(r"### BEGIN (SOLUTION|HIDDEN TESTS)", line):
                    inside = True
                elif re.search(r"### END (SOLUTION|HIDDEN TESTS)", line):
                    inside = False
                elif inside and len(line.strip()) >= DISTINCTIVE \
                        and line.strip() not in student_text:
                    lines.append(line.strip())
    return lines


def readable_texts(path: Path) -> list[str]:
    """The text of a built file as a reader could see it: raw, entity-decoded, and (for html)
    the text of the page, where highlighted code is contiguous again; cell sources for .ipynb."""
    raw = path.read_bytes().decode("utf-8", errors="ignore")
    texts = [raw, html_lib.unescape(raw)]
    if path.suffix == ".html":
        texts.append(BeautifulSoup(raw, "html.parser").get_text())
    elif path.suffix == ".ipynb":
        try:
            texts.append("\n".join(c.source for c in nbformat.reads(raw, 4).cells))
        except Exception:  # not a notebook after all: the raw text is scanned
            pass
    return texts


def test_the_book_has_lessons_and_exercises() -> None:
    # Guards the parametrised tests below against silently running on no page at all.
    assert lesson_pages(), "no executed notebook page in _toc.yml"
    assert exercise_pages(), "no exercise notebook page in _toc.yml"


def test_book_builds_with_warnings_as_errors(book_build: BookBuild) -> None:
    assert book_build.returncode == 0, (
        f"`jupyter-book build -W -n --keep-going` failed; log:\n{book_build.log[-20000:]}")
    assert re.search(r"build succeeded|build finished with problems", book_build.log)


def test_every_page_of_the_toc_is_built(book_html: Path) -> None:
    for page in toc_pages():
        built = book_html / f"{page}.html"
        assert built.is_file(), f"{page}: no page built"
        title = soup(book_html, page).select_one("article h1")
        assert title is not None and title.get_text(strip=True), f"{page}: no title"
    index = (book_html / "index.html").read_text()
    assert f"{toc_pages()[0]}.html" in index, "index.html does not lead to the root page"


def test_preface_and_appendices_exist(book_html: Path) -> None:
    pages = toc_pages()
    assert pages[0] == "intro"
    for page in ("intro", "chapters/appendices/setup", "chapters/appendices/notation"):
        assert page in pages, f"{page} is not in _toc.yml"
        assert (book_html / f"{page}.html").is_file()
    preface = article(book_html, "intro").get_text(" ")
    for topic in ("Transformer", "Vision Transformer", "Token Merging", "Activator", "Hyena",
                  "Mamba", "Jamba", "Colab", "Binder"):
        assert topic in preface, f"the preface does not mention {topic}"
    # The preface links to every chapter (its table of contents lists the lessons).
    links = {a["href"] for a in article(book_html, "intro").select("a[href]")}
    for page in lesson_pages():
        assert f"{page}.html" in links, f"the preface does not link to {page}"
    notation = article(book_html, "chapters/appendices/notation")
    glossary: dict[str, list[str]] = {}  # a letter may mean one thing per family of chapters
    for row in notation.select("tr"):
        cells = [cell.get_text(" ", strip=True) for cell in row.select("td")]
        if len(cells) >= 2:
            glossary.setdefault(cells[0], []).append(cells[1])
    for letter, meaning in (("B", "batch"), ("T", "query"), ("S", "key"), ("C", "model width"),
                            ("H", "heads"), ("D", "one head"), ("P", "patch"),
                            ("N", "number of patches"), ("r", "merged"), ("N", "state size"),
                            ("Cᵢ", "inner width"), ("X", "experts"), ("k", "each token")):
        assert any(meaning in m for m in glossary.get(letter, [])), (
            f"glossary: {letter} is not '{meaning}'")
    notation = notation.get_text(" ")
    assert "MultiheadAttention" in notation


@pytest.mark.parametrize("page", lesson_pages())
def test_lesson_page_shows_executed_outputs_and_figures(book_html: Path, page: str) -> None:
    content = article(book_html, page)
    outputs = content.select("div.cell_output")
    assert outputs, f"{page}: no cell output on the page: the lesson was not executed"
    assert not content.select(".output.traceback, .output.error"), f"{page}: an error output"
    figures = [img for output in outputs for img in output.select("img")]
    assert figures, f"{page}: no figure among the outputs"
    for img in figures:
        file = (book_html / page).parent / img["src"]
        assert file.is_file(), f"{page}: figure {img['src']} is not in the site"
        head = file.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") or file.suffix in (".svg", ".jpg", ".jpeg"), file
        assert file.stat().st_size > 1000, f"{page}: figure {file.name} is nearly empty"


@pytest.mark.parametrize("page", exercise_pages())
def test_exercise_page_is_rendered_not_executed(book_html: Path, page: str) -> None:
    content = article(book_html, page)
    assert not content.select("div.cell_output"), f"{page}: the exercise notebook was executed"
    text = content.get_text(" ").translate(PLAIN_QUOTES)  # Sphinx typesets ' as a curly quote
    words = {word.lower() for word in re.findall(r"[A-Za-z]{4,}", text)}
    code = "\n".join(pre.get_text() for pre in content.select("div.cell_input pre"))
    notebook = nbformat.read(ROOT / f"{page}.ipynb", 4)
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for heading in headings(cell.source):
                assert " ".join(heading.split()) in " ".join(text.split()), heading
            missing = prose_words(cell.source) - words
            assert not missing, f"{page}: statement words missing from the page: {missing}"
        elif cell.cell_type == "code" and not HIDDEN_IN_BOOK & set(cell.metadata.get("tags", [])):
            for line in cell.source.splitlines():
                assert line.strip() in code, f"{page}: starter code missing: {line!r}"
    assert "NotImplementedError" in code, f"{page}: no starter code to complete"


@pytest.mark.parametrize("page", notebook_pages())
def test_notebook_page_has_launch_links(book_html: Path, page: str) -> None:
    menu = soup(book_html, page).select_one(".dropdown-launch-buttons")
    assert menu is not None, f"{page}: no launch menu"
    hrefs = {a["href"] for a in menu.select("a[href]")}
    for service, url in expected_launch_urls(page).items():
        assert url in hrefs, f"{page}: no {service} link to {url}; links: {sorted(hrefs)}"
    repository = book_config()["repository"]["url"].rstrip("/")
    page_links = {a["href"].rstrip("/") for a in soup(book_html, page).select("a[href]")}
    assert repository in page_links, f"{page}: no link to the repository {repository}"


def test_search_index_holds_the_lessons(book_html: Path) -> None:
    assert (book_html / "search.html").is_file()
    script = (book_html / "searchindex.js").read_text()
    index = json.loads(script[script.index("(") + 1: script.rindex(")")])
    assert set(toc_pages()) <= set(index["docnames"])
    terms = set(index["terms"]) | set(index["titleterms"])
    language = SearchEnglish({})
    stem, stopwords = language.stem, language.stopwords
    for page in lesson_pages():
        notebook = nbformat.read(ROOT / f"{page}.ipynb", 4)
        markdown = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
        title = headings(markdown)[0]
        assert title in index["titles"], f"{page}: title {title!r} not in the search index"
        words = {w.lower() for h in headings(markdown) for w in re.findall(r"[A-Za-z]{4,}", h)}
        words |= {w for w in prose_words(markdown) if len(w) >= 8}
        missing = {word for word in words - stopwords if stem(word) not in terms}
        assert not missing, f"{page}: words not searchable: {sorted(missing)}"


def test_no_solutions_pages_are_built(book_html: Path) -> None:
    built = [p.relative_to(book_html) for p in book_html.rglob("*")]
    assert not [p for p in built if "solutions" in p.parts], "solution pages are in the site"


def test_site_contains_no_solution_or_hidden_test(book_html: Path) -> None:
    lines = solution_lines()
    assert lines, "no distinctive solution line found: is solutions/ empty?"
    leaks = []
    for path in sorted(p for p in book_html.rglob("*") if p.is_file()):
        texts = readable_texts(path)
        for needle in (*NBGRADER_MARKERS, *lines):
            if any(needle in text for text in texts):
                leaks.append(f"{path.relative_to(book_html)}: {needle!r}")
    assert not leaks, "the public site shows solutions or hidden tests:\n" + "\n".join(leaks)
