"""What happens to a submission before nbgrader reads it, on the trusted side.

:func:`stage` copies the notebooks of one submission into a staging folder that nbgrader grades
instead of ``submitted/`` (which stays as the student handed it in): only notebooks and a valid
``timestamp.txt``, never links or other files, so nothing a student wrote reaches the
``autograded/`` or ``feedback/`` folders. On the way it repairs what would stop nbgrader, or
records why the submission cannot be graded:

* a file that is not JSON, or not a notebook nbformat can read as version 4, fails that student;
* a missing notebook fails; a single other notebook in the folder is graded in its place;
* each nbgrader cell's metadata is replaced by the released notebook's (a cell ``schema_version``
  other than 3 stops all of nbgrader), a ``grade_id`` that the assignment does not have or that
  appears twice becomes an ordinary cell (nbgrader then restores the test cells that are missing).

:func:`review` reads the student's code (solution cells and added cells) for what tampering with
grading needs: process, file, import and introspection machinery, IPython's hooks, rebinding a
library's functions, and names of the ready-made implementations that the exercise forbids.
Nothing found there costs points; it flags the submission for a person to read.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

MAX_NOTEBOOK_BYTES = 32 << 20

# modules, names and attributes that an exercise never needs and tampering does
MODULES = {"os", "sys", "subprocess", "ctypes", "gc", "inspect", "importlib", "builtins",
           "socket", "signal", "threading", "multiprocessing", "concurrent", "sqlite3", "shutil",
           "pathlib", "marshal", "pickle", "base64", "codecs", "zlib", "types", "ast", "atexit",
           "faulthandler", "resource", "pty", "tempfile", "glob", "urllib", "http", "asyncio",
           "IPython", "ipykernel", "nbformat", "nbgrader", "dis", "traceback", "linecache"}
NAMES = {"exec", "eval", "compile", "__import__", "globals", "locals", "vars", "open", "setattr",
         "delattr", "get_ipython", "__builtins__", "__grading_guard__", "breakpoint"}
ATTRIBUTES = {"__code__", "__globals__", "__closure__", "__subclasses__", "__builtins__",
              "__bases__", "__mro__", "f_back", "f_globals", "f_locals", "f_code", "tb_frame",
              "gi_frame", "ast_transformers", "input_transformers_post",
              "input_transformers_cleanup", "_getframe", "settrace", "setprofile", "meta_path",
              "__grading_guard__", "system", "popen"}
FORBIDDEN = re.compile(r"^(?:torch|tfcourse)(?:\.\w+)+$")
EVERYWHERE = {"Tensor", "Module"}  # classes that every solution names


@dataclass
class Intake:
    """One student's submission as staged: why it cannot be graded, or what to review."""

    student: str
    failure: str | None = None
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def nbgrader_meta(cell: NotebookNode) -> dict:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta if isinstance(meta, dict) else {}


def read_notebook(path: Path) -> NotebookNode:
    """The notebook at ``path`` as nbformat 4, or ValueError saying what is wrong with it."""
    if path.is_symlink() or not path.is_file():
        raise ValueError(f"{path.name} is not a plain file")
    if path.stat().st_size > MAX_NOTEBOOK_BYTES:
        raise ValueError(f"{path.name} is larger than {MAX_NOTEBOOK_BYTES >> 20} MiB")
    try:
        text = path.read_bytes().decode("utf-8")
        raw = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path.name} is not valid JSON ({error})") from None
    if not isinstance(raw, dict) or "cells" not in raw and "worksheets" not in raw:
        raise ValueError(f"{path.name} is JSON but not a notebook")
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as error:  # nbformat raises several types for unreadable versions
        raise ValueError(f"{path.name} is nbformat {raw.get('nbformat')!r}, which cannot be read "
                         f"as version 4 ({type(error).__name__}: {error})") from None
    cells = nb.get("cells")
    if not isinstance(cells, list) or not all(
            isinstance(c, dict) and c.get("cell_type") in ("code", "markdown", "raw")
            and isinstance(c.get("source"), str) for c in cells):
        raise ValueError(f"{path.name} has malformed cells")
    return nb


def normalise(nb: NotebookNode, release: NotebookNode, intake: Intake) -> NotebookNode:
    """Give each nbgrader cell the released metadata; unknown or repeated grade_ids become
    ordinary cells."""
    released = {nbgrader_meta(c).get("grade_id"): nbgrader_meta(c) for c in release.cells
                if nbgrader_meta(c)}
    seen: set[str] = set()
    for cell in nb.cells:
        if "nbgrader" not in cell.get("metadata", {}):
            continue
        grade_id = nbgrader_meta(cell).get("grade_id")
        if isinstance(grade_id, str) and grade_id in released and grade_id not in seen:
            cell.metadata["nbgrader"] = copy.deepcopy(released[grade_id])
            seen.add(grade_id)
            continue
        why = "appears twice" if grade_id in seen else "is not a cell of the assignment"
        intake.notes.append(f"cell grade_id {str(grade_id)[:60]!r} {why}: graded as an "
                            "ordinary cell")
        del cell.metadata["nbgrader"]
    return nb


def stage(folder: Path, staged: Path, releases: dict[str, NotebookNode], student: str
          ) -> Intake:
    """Stage ``folder`` (``submitted/<student>/<assignment>``) into ``staged``."""
    intake = Intake(student)
    if folder.is_symlink() or not folder.is_dir():
        intake.failure = f"{folder} is not a folder"
        return intake
    staged.mkdir(parents=True)
    present = sorted(p for p in folder.glob("*.ipynb") if p.is_file() and not p.is_symlink())
    for name, release in releases.items():
        path = folder / f"{name}.ipynb"
        if not path.exists() and not path.is_symlink():
            others = [p for p in present if p.stem not in releases]
            if len(others) != 1:
                found = ", ".join(p.name for p in present) or "no notebook"
                intake.failure = f"no {name}.ipynb in the submission (found: {found})"
                return intake
            path = others[0]
            intake.notes.append(f"{path.name} was graded as {name}.ipynb (renamed notebook)")
        try:
            nb = normalise(read_notebook(path), release, intake)
        except ValueError as error:
            intake.failure = str(error)
            return intake
        intake.flags += review(nb, release)
        nbformat.write(nb, staged / f"{name}.ipynb")
    timestamp = folder / "timestamp.txt"
    if timestamp.is_file() and not timestamp.is_symlink() and timestamp.stat().st_size < 100:
        shutil.copy(timestamp, staged / "timestamp.txt")
    return intake


def forbidden_by_exercise(release: NotebookNode) -> dict[str, set[tuple[str, str | None]]]:
    """Solution cell -> what its exercise's test cells forbid (``checks.forbid`` targets), as
    (function, None) or, for a method of a class of the course or PyTorch, (method, class)."""
    names: dict[str, set[tuple[str, str | None]]] = {}
    current = None
    for cell in release.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution"):
            current = meta.get("grade_id")
            names.setdefault(current, set())
        elif meta.get("grade") and current is not None and cell.cell_type == "code":
            try:
                tree = ast.parse(cell.source)
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and FORBIDDEN.match(node.value):
                    *_, owner, name = node.value.split(".")
                    method = owner[:1].isupper() and owner not in EVERYWHERE
                    names[current].add((name, owner if method else None))
    return names


def review(nb: NotebookNode, release: NotebookNode) -> list[str]:
    """What in the student's code a person should look at (see the module's docstring)."""
    forbidden = forbidden_by_exercise(release)
    defined = set().union(*(_defined(cell.source) for cell in [*nb.cells, *release.cells]
                            if cell.cell_type == "code"))
    given = {cell.source.strip() for cell in release.cells}
    flags: list[str] = []
    for index, cell in enumerate(nb.cells):
        meta = nbgrader_meta(cell)
        if cell.cell_type != "code" or (meta and not meta.get("solution")) \
                or (not meta and cell.source.strip() in given):
            continue  # test and locked cells are put back from the gradebook
        where = f"cell {index}" + (f" ({meta['grade_id']})" if meta.get("grade_id") else "")
        lines = cell.source.splitlines()
        if any(line.lstrip().startswith(("!", "%")) for line in lines):
            flags.append(f"{where}: a shell escape or magic command")
        code = "\n".join("" if line.lstrip().startswith(("!", "%")) else line for line in lines)
        try:
            tree = ast.parse(code)
        except SyntaxError:
            continue
        found = sorted(_suspicious(tree, forbidden.get(meta.get("grade_id"), set()), defined))
        if found:
            flags.append(f"{where}: uses {', '.join(found)}")
    return flags


def _defined(source: str) -> set[str]:
    """Names that ``source`` binds (functions, classes, variables, arguments)."""
    try:
        tree = ast.parse("\n".join("" if ln.lstrip().startswith(("!", "%")) else ln
                                   for ln in source.splitlines()))
    except SyntaxError:
        return set()
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def _suspicious(tree: ast.AST, forbidden: set[tuple[str, str | None]], defined: set[str]
                ) -> set[str]:
    functions = {name for name, owner in forbidden if owner is None}
    classes = {owner for _, owner in forbidden if owner is not None}
    imported: set[str] = set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""]
            for module in modules:
                if module.split(".")[0] in MODULES:
                    found.add(f"import {module}")
            for alias in node.names:
                imported.add((alias.asname or alias.name).split(".")[0])
                if alias.name.split(".")[-1] in functions:
                    found.add(f"{alias.name} (forbidden in this exercise)")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id in NAMES:
                found.add(f"{node.id}()" if node.id not in ("__builtins__",) else node.id)
            elif node.id in functions and node.id not in defined:
                found.add(f"{node.id} (forbidden in this exercise)")
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else \
                node.value.attr if isinstance(node.value, ast.Attribute) else None
            if node.attr in ATTRIBUTES:
                found.add(f".{node.attr}")
            elif node.attr in functions or (node.attr, owner) in forbidden:
                found.add(f".{node.attr} (forbidden in this exercise)")
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = base.id if isinstance(base, ast.Name) else \
                    base.attr if isinstance(base, ast.Attribute) else None
                if name in classes:
                    found.add(f"a subclass of {name} (forbidden in this exercise)")
    for node in ast.walk(tree):  # `torch.allclose = ...`: rebinding a library's function
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            root = target
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(target, ast.Attribute) and isinstance(root, ast.Name) \
                    and root.id in imported:
                found.add(f"assignment to {ast.unparse(target)}")
    return found
