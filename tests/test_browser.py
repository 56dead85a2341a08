"""The built site in a real browser: headless Chromium (Debian's package, driven by selenium),
serving the site from a local HTTP server, as a reader opens it.

Chromium and its driver come from `make browser` (tools/install-browser.sh); without them these
tests fail, they do not skip.
"""

from __future__ import annotations

import base64
import functools
import http.server
import re
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    ARTIFACTS,
    exercise_pages,
    expected_launch_urls,
    lesson_pages,
    notebook_pages,
    toc_pages,
)
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ARTIFACTS / "screenshots"
RAW_TEX = re.compile(r"\$\$|\\\(|\\\[|\\(frac|sqrt|operatorname|mathbb|begin|left|right)\b")
# The preface, every lesson and exercise page, and the notation appendix (tables of maths).
PAGES = [toc_pages()[0], *lesson_pages(), *exercise_pages(), "chapters/appendices/notation"]
# Display equations are measured at two laptop windows, where each must fit the article's column,
# and on a phone, where a wider one must scroll sideways (CSS pixels; Chrome's device emulation).
LAPTOP_WIDTHS = (1280, 1400)
PHONE = {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture(scope="module")
def site(book_html: Path) -> Iterator[str]:
    """The built book served on 127.0.0.1 by a thread of this process; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(book_html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    assert Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file(), (
        "Chromium is missing: run `make browser` (tools/install-browser.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(driver: webdriver.Chrome, site: str, page: str, query: str = "") -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(urllib.parse.urljoin(site, f"{page}.html{query}"))
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete")


def wait_for_mathjax(driver: webdriver.Chrome) -> None:
    """Wait until MathJax has loaded and typeset the page (its startup promise resolves)."""
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return !!(window.MathJax && MathJax.startup && MathJax.startup.promise)"))
    driver.set_script_timeout(60)
    error = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "MathJax.startup.promise.then(() => done(null), e => done(String(e)));")
    assert error is None, f"MathJax failed: {error}"


def visible_prose(driver: webdriver.Chrome) -> str:
    """The rendered text of the article, without code (code may hold TeX legitimately, as in a
    matplotlib label) and without what MathJax produced."""
    return driver.execute_script("""
        const article = document.querySelector('article.bd-article').cloneNode(true);
        article.querySelectorAll('pre, code, script, style, mjx-container, .cell_input')
               .forEach(e => e.remove());
        return article.textContent;""")


def save_screenshot(driver: webdriver.Chrome, page: str) -> Path:
    """A full-page screenshot, in tests/artifacts/screenshots/<page>.png: the viewport is grown
    to the whole page for the capture (capturing beyond a small viewport misplaces the theme's
    sticky sidebar), then restored."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": min(height, 30000), "deviceScaleFactor": 1, "mobile": False})
    try:
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path = SCREENSHOTS / f"{page.replace('/', '-')}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def script_errors(driver: webdriver.Chrome, site: str) -> list[str]:
    """SEVERE console entries, but two kinds of failed requests that are not errors of the site:
    to another host (the site is read offline here; it ships all it needs, MathJax included) and
    the browser's own probe for /favicon.ico, which no page asks for."""
    host = urllib.parse.urlparse(site).netloc
    errors = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        message = entry["message"]
        url = urllib.parse.urlparse(message.split(" ", 1)[0])
        if "Failed to load resource" in message or "net::ERR_" in message:
            if url.scheme in ("http", "https") and url.netloc != host:
                continue
            if url.netloc == host and url.path == "/favicon.ico":
                continue
        errors.append(message)
    return errors


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_maths_figures_and_links(browser: webdriver.Chrome, site: str,
                                              page: str) -> None:
    open_page(browser, site, page)
    try:
        check_page(browser, site, page)
    finally:
        save_screenshot(browser, page)  # also, and above all, of a page that fails
    errors = script_errors(browser, site)
    assert not errors, f"{page}: errors in the browser console: {errors}"


def check_page(browser: webdriver.Chrome, site: str, page: str) -> None:
    # Every equation of the page is typeset, none is left as TeX or marked as a TeX error.
    maths = browser.find_elements(By.CSS_SELECTOR, "article .math")
    assert maths, f"{page}: no equation on the page"
    wait_for_mathjax(browser)
    untypeset = [m.get_attribute("outerHTML")[:200] for m in maths
                 if not m.find_elements(By.CSS_SELECTOR, "mjx-container")]
    assert not untypeset, f"{page}: equations not typeset by MathJax: {untypeset}"
    tex_errors = browser.execute_script("""
        const errors = [];
        for (const item of MathJax.startup.document.math) {
            const error = item.typesetRoot && item.typesetRoot.querySelector('mjx-merror');
            if (error) errors.push(error.getAttribute('data-mjx-error') + ' in: ' + item.math);
        }
        return errors;""")
    assert not tex_errors, f"{page}: MathJax could not typeset: {tex_errors}"
    raw = RAW_TEX.findall(visible_prose(browser))
    assert not raw, f"{page}: raw TeX in the text: {raw}"

    # Every image has loaded (a broken image has naturalWidth 0).
    WebDriverWait(browser, 30).until(lambda d: d.execute_script(
        "return [...document.images].every(i => i.complete)"))
    broken = browser.execute_script(
        "return [...document.images].filter(i => i.naturalWidth === 0).map(i => i.src)")
    assert not broken, f"{page}: images that did not load: {broken}"
    if page in lesson_pages():
        figures = browser.execute_script(
            "return [...document.querySelectorAll('.cell_output img')].map(i => i.naturalWidth)")
        assert figures and all(width > 0 for width in figures), f"{page}: no figure shown"

    # Notebook pages: the launch menu leads to this notebook in the configured repository.
    if page in notebook_pages():
        links = browser.execute_script(
            "return [...document.querySelectorAll('.dropdown-launch-buttons a')].map(a => a.href)")
        for service, url in expected_launch_urls(page).items():
            assert url in links, f"{page}: {service} launch link {url} missing from {links}"
        browser.find_element(By.CSS_SELECTOR, ".dropdown-launch-buttons button").click()
        WebDriverWait(browser, 10).until(lambda d: d.find_element(
            By.CSS_SELECTOR, ".dropdown-launch-buttons .dropdown-menu").is_displayed())


# For every display equation of the article: the horizontal extent of its typeset glyphs (all,
# and those of its \tag apart), the article's column (the content box of article.bd-article), and
# the nearest element between them that scrolls sideways, measured scrolled to its start and to
# its end. Its TeX comes from MathJax's list.
MEASURE_DISPLAY_EQUATIONS = """
    const article = document.querySelector('article.bd-article');
    const box = article.getBoundingClientRect(), style = getComputedStyle(article);
    const column = {left: box.left + parseFloat(style.borderLeftWidth)
                          + parseFloat(style.paddingLeft),
                    right: box.right - parseFloat(style.borderRightWidth)
                           - parseFloat(style.paddingRight)};
    const glyphs = (container, labels = null) => {
        let left = Infinity, right = -Infinity;
        for (const glyph of container.querySelectorAll('mjx-math mjx-c, mjx-math mjx-line')) {
            if (labels !== null && labels !== !!glyph.closest('mjx-labels')) continue;
            const r = glyph.getBoundingClientRect();
            if (r.width > 0) { left = Math.min(left, r.left); right = Math.max(right, r.right); }
        }
        return left <= right ? {left, right} : null;  // null: no glyph
    };
    const scroller = container => {
        for (let e = container; e && e !== article; e = e.parentElement) {
            if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) return e;
        }
        return null;
    };
    const tex = new Map();
    for (const item of MathJax.startup.document.math) {
        if (item.display && item.typesetRoot) tex.set(item.typesetRoot, item.math);
    }
    return [...article.querySelectorAll('mjx-container[display="true"]')].map(container => {
        const equation = {tex: tex.get(container) || container.textContent, column,
                          glyphs: glyphs(container), body: glyphs(container, false),
                          tag: glyphs(container, true), scroller: null};
        const element = scroller(container);
        if (element) {
            const r = element.getBoundingClientRect(), s = getComputedStyle(element);
            const view = {left: r.left + parseFloat(s.borderLeftWidth),
                          right: r.left + parseFloat(s.borderLeftWidth) + element.clientWidth};
            element.scrollLeft = 0;
            const atStart = glyphs(container);
            element.scrollLeft = element.scrollWidth;
            const atEnd = glyphs(container);
            element.scrollLeft = 0;
            equation.scroller = {tag: element.tagName.toLowerCase(), view,
                                 scrolls: element.scrollWidth > element.clientWidth,
                                 cut_left: view.left - atStart.left,
                                 cut_right: atEnd.right - view.right};
        }
        return equation;
    });"""


def equation_name(index: int, tex: str) -> str:
    """'Eq. (1.2) `h_t = ...`' (its \\tag), or 'display equation 3 `...`', with its TeX's start."""
    tag = re.search(r"\\tag\{([^}]*)\}", tex)
    name = f"Eq. ({tag.group(1)})" if tag else f"display equation {index + 1}"
    start = " ".join(re.sub(r"\\tag\{[^}]*\}", "", tex).split())
    return f"{name} `{start[:50]}{'…' if len(start) > 50 else ''}`"


def equation_problems(equations: list[dict], phone: bool) -> list[tuple[int, str]]:
    """What is wrong with the measured display equations, as (index, what) pairs, with 0.5 px of
    tolerance for rounding. At every width an equation's number stays clear of it. On a laptop
    no glyph may lie outside the column. On a phone one that does must be in an element that
    scrolls sideways, lies within the column, and reaches from the equation's left end to its
    right end (a centred equation wider than its box starts left of it, where no scrolling
    goes)."""
    problems = []
    for index, equation in enumerate(equations):
        body, tag = equation["body"], equation["tag"]
        if body and tag and tag["left"] < body["right"] - 0.5:  # its number is written over it
            problems.append((index, f"{equation_name(index, equation['tex'])}: its number "
                                    f"overlaps its last {body['right'] - tag['left']:.0f} px"))
        column, glyphs = equation["column"], equation["glyphs"]
        if not glyphs:
            continue
        past = max(column["left"] - glyphs["left"], glyphs["right"] - column["right"])
        if past <= 0.5:
            continue
        name = equation_name(index, equation["tex"])
        side = "left" if column["left"] - glyphs["left"] > 0.5 else "right"
        overflow = f"{name} runs {past:.0f} px past the column's {side} edge"
        scroller = equation["scroller"]
        if not phone:
            problem = (f"{overflow} ({glyphs['right'] - glyphs['left']:.0f} px wide, the column "
                       f"{column['right'] - column['left']:.0f} px)")
        elif scroller is None:
            problem = f"{overflow}, in no element that scrolls sideways"
        elif (outside := max(column["left"] - scroller["view"]["left"],
                             scroller["view"]["right"] - column["right"])) > 0.5:
            problem = (f"{name}: its scrolling <{scroller['tag']}> runs {outside:.0f} px past "
                       "the column")
        elif not scroller["scrolls"]:
            problem = f"{overflow}, and its <{scroller['tag']}> does not scroll"
        elif scroller["cut_left"] > 0.5:
            problem = (f"{name}: its left {scroller['cut_left']:.0f} px lie before the start of "
                       f"its scrolling <{scroller['tag']}>, out of reach")
        elif scroller["cut_right"] > 0.5:
            problem = (f"{name}: its right {scroller['cut_right']:.0f} px lie beyond the end of "
                       f"its scrolling <{scroller['tag']}>, out of reach")
        else:
            continue  # it scrolls, from end to end
        problems.append((index, problem))
    return problems


@pytest.mark.parametrize("width", [*LAPTOP_WIDTHS, PHONE["width"]])
@pytest.mark.parametrize("page", PAGES)
def test_display_equations_fit_the_column(browser: webdriver.Chrome, site: str, page: str,
                                          width: int) -> None:
    """From a laptop's window up every display equation fits the article's column (long ones are
    broken into lines); on a phone a wider one scrolls sideways, and both of its ends can be
    reached. The page is laid out at the width from the start (device emulation, cleared after)."""
    phone = width == PHONE["width"]
    metrics = PHONE if phone else {"width": width, "height": 1000, "deviceScaleFactor": 1,
                                   "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        open_page(browser, site, page)
        wait_for_mathjax(browser)
        problems = equation_problems(browser.execute_script(MEASURE_DISPLAY_EQUATIONS), phone)
        if problems:  # a view of the first one, for the failure report
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            browser.execute_script(
                "document.querySelectorAll('article.bd-article mjx-container[display=\"true\"]')"
                "[arguments[0]].scrollIntoView({block: 'center'});", problems[0][0])
            shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
            (SCREENSHOTS / f"{page.replace('/', '-')}-equations-{width}px.png").write_bytes(
                base64.b64decode(shot["data"]))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    if problems:
        where = "a phone" if phone else "a laptop window"
        pytest.fail(f"{page} at {width} px ({where}), display equations that do not fit the "
                    "column:\n  " + "\n  ".join(problem for _, problem in problems),
                    pytrace=False)


def test_search_finds_the_lessons(browser: webdriver.Chrome, site: str) -> None:
    for page in lesson_pages():
        open_page(browser, site, page)
        title = browser.find_element(By.CSS_SELECTOR, "article h1").text.strip("#¶ \n")
        open_page(browser, site, "search", f"?q={urllib.parse.quote(title)}")
        WebDriverWait(browser, 30).until(lambda d: d.find_elements(
            By.CSS_SELECTOR, "#search-results ul.search li a"))
        hits = [a.get_attribute("href") for a in
                browser.find_elements(By.CSS_SELECTOR, "#search-results ul.search li a")]
        assert any(f"{page}.html" in hit for hit in hits), f"searching {title!r}: {hits}"
        errors = script_errors(browser, site)
        assert not errors, f"search page: errors in the browser console: {errors}"
