"""Sphinx extension: write each script of a page once.

Sphinx 7 keeps an inline script that an extension registers while documents are read twice: once
as it was registered (file name ``None``) and once more from its registry (file name ``""``). Every
page then declares sphinx-thebe's ``const THEBE_JS_URL`` twice, and browsers report a
``SyntaxError`` on every page of the book. This drops the second copy. Loaded from _config.yml
(``sphinx.local_extensions``); tests/test_browser.py fails if a page logs a script error.
"""

from __future__ import annotations

from typing import Any


def _dedupe(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for script in scripts:
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", script) or "", getattr(script, "priority", 500),
               tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # the builder's own list, restored after each page


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _dedupe)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
