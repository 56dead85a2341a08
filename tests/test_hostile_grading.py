# ruff: noqa: E501 (the submissions below are student code, kept as a student writes it)
"""Hostile submissions, graded in one batch with honest ones through the real ``make grade``.

Chapter 1's assignment is graded twice, each time in a fresh course folder: once with the honest
students alone (full, partial, blank, and correct code that writes to stderr), once with the
same honest students among the hostile ones below. Every hostile submission tries one thing that
plain nbgrader lets a submission do (reach the gradebook, the solutions or the network, outlive
its kernel, stop the batch, leak the hidden tests into its feedback, steer its own tests) or
breaks the notebook in a way that used to stop the batch. The tests check that:

* each honest student's grade, test cell by test cell, is what it is without the hostile ones,
  and no honest student is flagged;
* each hostile submission scores no more than its honest work, and is flagged or failed with the
  reason stated (``EXPECT``);
* the batch completes and every student is in ``grades.csv``; no process is left; nothing outside
  the grading folders changed; the network listener saw nobody; no feedback holds hidden-test
  text, and the feedback folders hold the feedback pages only.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from test_grading import (
    course_folder,
    grade_id,
    hidden_lines,
    is_solution,
    is_test,
    make_grade,
    nbgrader,
    page_text,
    read_scores,
    review,
)

pytestmark = pytest.mark.slow

ASSIGNMENT = "01_attention"
NOTEBOOK = "exercises"
TOKEN = "tfcourse-hostile-7c1e"  # in the command line of every process a submission leaves
GRADING_OUTPUTS = ("autograded", "feedback", ".grading", "gradebook.db", "gradebook.db-wal",
                   "gradebook.db-shm", "grades.csv")

WRONG_SOFTMAX = "def softmax(x, dim=-1):\n    return x\n"

# student -> (solution cells to replace, ...); {course} and {port} are filled in per run
HOSTILE: dict[str, dict[str, str]] = {
    "x_gradebook_write": {"softmax": '''
import glob, os, sqlite3
for path in ["{course}/gradebook.db", *glob.glob("/tmp/**/gradebook.db", recursive=True),
             "../../../gradebook.db"]:
    try:
        db = sqlite3.connect(path)
        db.execute("UPDATE grade SET auto_score = 1000")
        db.execute("UPDATE grade_cells SET source = 'pass'")
        db.commit()
        print("wrote", path)
    except Exception as error:
        print("no", path, type(error).__name__)
'''},
    "x_gradebook_lock": {"softmax": '''
import sqlite3, subprocess
subprocess.Popen(["python", "-c", "import sqlite3, time; db = sqlite3.connect('{course}/gradebook.db'); db.execute('BEGIN EXCLUSIVE'); time.sleep(600)", "{token}"], start_new_session=True)
'''},
    "x_reads_solutions": {"softmax": '''
import os
for path in ["{course}/solutions/01_attention/exercises.py", "{course}/nbgrader_config.py",
             "../../../solutions/01_attention/exercises.py"]:
    try:
        print(open(path).read())
    except OSError as error:
        print("cannot read", path, type(error).__name__)
print(os.listdir("/"), os.listdir("."))
'''},
    "x_reads_other_submission": {"softmax": '''
import glob
for path in glob.glob("{course}/submitted/*/01_attention/*.ipynb") + glob.glob("/home/**/*.ipynb", recursive=True) + glob.glob("/tmp/**/*.ipynb", recursive=True):
    print("found", path)
'''},
    "x_daemon": {"softmax": '''
import subprocess, os
subprocess.Popen(["sh", "-c", "sleep 600; echo {token}"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvp("sleep", ["sleep", "601", "{token}"])
    os._exit(0)
'''},
    "x_late_tamper": {"softmax": '''
import subprocess
script = "import glob, time\\nwhile True:\\n    time.sleep(0.5)\\n    for p in glob.glob('{course}/feedback/*/01_attention/*.html'):\\n        open(p, 'w').write('tampered')"
subprocess.Popen(["python", "-c", script, "{token}"], start_new_session=True)
'''},
    "x_network": {"softmax": '''
import socket
for host in ["127.0.0.1", "10.0.2.2", "8.8.8.8"]:
    try:
        socket.create_connection((host, {port}), timeout=2).sendall(b"hello")
        print("connected", host)
    except OSError as error:
        print("no network", host, error)
'''},
    "x_environment": {"softmax": '''
import os
print(sorted(os.environ.items()))
'''},
    "x_ast_transformer": {"softmax": '''
import ast
class NoChecks(ast.NodeTransformer):
    def visit_Assert(self, node):
        return ast.Pass()
    def visit_Raise(self, node):
        return ast.Pass()
get_ipython().ast_transformers.append(NoChecks())
'''},
    "x_input_transformer": {"softmax": '''
get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"])
'''},
    "x_patched_asserts": {"softmax": '''
import torch
torch.allclose = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
torch.equal = lambda *args, **kwargs: True
def softmax(x, dim=-1):
    return x
'''},
    "x_patched_checks": {"softmax": '''
from tfcourse import checks
for name in dir(checks):
    if name.startswith("expect"):
        setattr(checks, name, lambda *args, **kwargs: None)
def softmax(x, dim=-1):
    return x
'''},
    "x_swallows_errors": {"softmax": '''
ip = get_ipython()
original = ip.run_cell_async
async def run_cell_async(raw_cell, *args, **kwargs):
    result = await original("pass", *args, **kwargs)
    return result
ip.run_cell_async = run_cell_async
'''},
    "x_excepthook": {"softmax": '''
import sys
ip = get_ipython()
ip.showtraceback = lambda *args, **kwargs: None
ip.set_custom_exc((BaseException,), lambda *args, **kwargs: None)
'''},
    "x_forbidden_kept": {"softmax": '''
import torch.nn.functional as F
def softmax(x, dim=-1, _impl=F.softmax):
    return _impl(x, dim=dim)
'''},
    "x_leaks_by_frames": {"softmax": '''
import inspect, torch
def softmax(x, dim=-1):
    for frame in inspect.stack():
        print("".join(frame.code_context or []))
        print(inspect.getsource(frame.frame) if frame.frame.f_code.co_name == "<module>" else "")
    shifted = x - x.amax(dim=dim, keepdim=True)
    return shifted.exp() / shifted.exp().sum(dim=dim, keepdim=True)
'''},
    "x_leaks_by_events": {"softmax": '''
from IPython.display import HTML, display
import sys
def spy(info):
    print(info.raw_cell)
    print(info.raw_cell, file=sys.stderr)
    display(HTML("<pre>" + info.raw_cell + "</pre>"))
get_ipython().events.register("pre_run_cell", spy)
'''},
    "x_leaks_by_history": {"mha": '''
import linecache
for name, entry in list(linecache.cache.items()):
    print(name, "".join(entry[2]))
print(get_ipython().user_ns.get("In"))
'''},
    "x_writes_files": {"softmax": '''
for name in ["leak.html", "../leak.html", "exercises.html", "/tmp/leak"]:
    try:
        open(name, "w").write("hidden tests were here")
    except OSError as error:
        print("cannot write", name, error)
'''},
    "x_kernel_exits": {"heads": "import os\nos._exit(1)\n"},
    "x_memory": {"softmax": '''
blocks = []
try:
    while True:
        blocks.append(bytearray(1 << 30))
except MemoryError:
    print("stopped at", len(blocks), "GiB")
'''},
    "x_fork_bomb": {"softmax": '''
import subprocess
started = []
try:
    for _ in range(2000):
        started.append(subprocess.Popen(["sh", "-c", "sleep 600", "{token}"]))
except OSError as error:
    print("stopped after", len(started), error)
'''},
    "x_disk": {"softmax": '''
try:
    with open("big", "wb") as f:
        for _ in range(4096):
            f.write(b"0" * (1 << 20))
except OSError as error:
    print("disk:", error)
'''},
    "x_output_flood": {"softmax": '''
for _ in range(48):
    print("x" * (1 << 20))
'''},
    "x_ignores_interrupts": {"softmax": '''
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    pass
'''},
}

# what the grader must say of each ("flag", in the review column), the most it may score
# ("max": its honest work), and whether its other exercises are solved ("solved")
EXPECT = {
    "x_gradebook_write": {"flag": "import sqlite3"},
    "x_gradebook_lock": {"flag": "import subprocess"},
    "x_reads_solutions": {"flag": "open()"},
    "x_reads_other_submission": {"flag": "import glob"},
    "x_daemon": {"flag": "other process"},
    "x_late_tamper": {"flag": "import subprocess"},
    "x_network": {"flag": "import socket"},
    "x_environment": {"flag": "import os"},
    "x_ast_transformer": {"flag": "ast_transformers was changed"},
    "x_input_transformer": {"flag": "input_transformers_post"},
    "x_patched_asserts": {"flag": "torch.allclose was replaced"},
    "x_patched_checks": {"flag": "tfcourse.checks"},
    "x_swallows_errors": {"flag": "run_cell_async was replaced"},
    "x_excepthook": {"flag": "custom exception handler"},
    "x_forbidden_kept": {"flag": "forbidden in this exercise"},  # checks.forbid blocks it: 0
    "x_leaks_by_frames": {"flag": "import inspect", "max": 3},
    "x_leaks_by_events": {"flag": "IPython event callbacks"},
    "x_leaks_by_history": {"flag": "import linecache", "max": 13, "solved": True},
    "x_writes_files": {"flag": "open()"},
    "x_kernel_exits": {"flag": "the kernel died while running cell", "max": 10, "solved": True},
    "x_memory": {"flag": None},  # stopped by MemoryError: nothing to review, nothing earned
    "x_fork_bomb": {"flag": "import subprocess"},
    "x_disk": {"flag": "open()"},
    "x_output_flood": {"flag": "output beyond"},
    "x_ignores_interrupts": {"flag": "did not stop when interrupted"},
}


@dataclass
class Run:
    course: Path
    batch: subprocess.CompletedProcess
    students: dict[str, str]  # student -> kind ("honest", "hostile", "broken")
    release: nbformat.NotebookNode
    source: nbformat.NotebookNode
    listener: list[bytes]
    before: dict[str, str]
    after: dict[str, str]
    outside_before: dict[str, str]
    outside_after: dict[str, str]


def tree_hashes(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    hashes = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] in skip or path.is_dir():
            continue
        hashes[str(relative)] = "link" if path.is_symlink() else \
            hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def leftover_processes() -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if TOKEN in cmdline and "pytest" not in cmdline:
            found.append(f"{pid}: {cmdline[:120]}")
    return found


def listen() -> tuple[int, list[bytes]]:
    server = socket.socket()
    server.bind(("0.0.0.0", 0))
    server.listen()
    received: list[bytes] = []

    def serve() -> None:
        while True:
            connection, _ = server.accept()
            received.append(connection.recv(100) or b"(connected)")

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], received


def solved(source: nbformat.NotebookNode, release: nbformat.NotebookNode,
           replace: dict[str, str], keep: bool) -> nbformat.NotebookNode:
    """The released notebook with the solution cells filled (``keep``) or left blank, and the
    cells of ``replace`` rewritten."""
    solutions = {grade_id(c): c.source for c in source.cells if is_solution(c)}
    nb = nbformat.from_dict(release)
    for cell in nb.cells:
        if is_solution(cell):
            if grade_id(cell) in replace:
                cell.source = replace[grade_id(cell)]
            elif keep:
                cell.source = solutions[grade_id(cell)]
    return nb


HONEST_STDERR = '''
import logging, warnings
def softmax(x, dim=-1):
    warnings.warn("softmax: computing in the input's dtype")  # correct code that warns
    logging.getLogger("mine").warning("softmax of a %s tensor", tuple(x.shape))
    shifted = x - x.amax(dim=dim, keepdim=True)
    e = shifted.exp()
    return e / e.sum(dim=dim, keepdim=True)
'''


def honest_students(source: nbformat.NotebookNode, release: nbformat.NotebookNode
                    ) -> dict[str, nbformat.NotebookNode]:
    return {
        "h_full": solved(source, release, {}, keep=True),
        "h_partial": solved(source, release, {"softmax": WRONG_SOFTMAX}, keep=True),
        "h_blank": nbformat.from_dict(release),
        "h_stderr": solved(source, release, {"softmax": HONEST_STDERR}, keep=True),
    }


def write(folder: Path, name: str, nb: nbformat.NotebookNode | str | bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(nb, bytes):
        (folder / name).write_bytes(nb)
    elif isinstance(nb, str):
        (folder / name).write_text(nb)
    else:
        nbformat.write(nb, folder / name)


def broken_students(source: nbformat.NotebookNode, release: nbformat.NotebookNode,
                    submitted: Path, course: Path) -> dict[str, str]:
    """Submissions that are broken, by accident or not. Returns student -> expected outcome:
    ``fail:<reason>`` or ``grade:<points>:<note>``."""
    full = solved(source, release, {}, keep=True)
    outcome = {}

    def folder(student: str) -> Path:
        return submitted / student / ASSIGNMENT

    write(folder("y_invalid_json"), "exercises.ipynb", '{"cells": [')
    outcome["y_invalid_json"] = "fail:not valid JSON"
    raw = json.loads(nbformat.writes(full))
    raw["nbformat"] = 5
    write(folder("y_nbformat_5"), "exercises.ipynb", json.dumps(raw))
    outcome["y_nbformat_5"] = "fail:nbformat 5"
    write(folder("y_binary"), "exercises.ipynb", b"\x89PNG\r\n\x1a\n\x00\xff")
    outcome["y_binary"] = "fail:not valid JSON"
    write(folder("y_missing_notebook"), "README.txt", "I forgot to attach it")
    outcome["y_missing_notebook"] = "fail:no exercises.ipynb"
    write(folder("y_renamed_notebook"), "exercises (1).ipynb", full)
    outcome["y_renamed_notebook"] = "grade:18:renamed notebook"
    schema = nbformat.from_dict(full)
    for cell in schema.cells:
        if "nbgrader" in cell.metadata:
            cell.metadata.nbgrader["schema_version"] = 4 if is_test(cell) else 1
    write(folder("y_schema_version"), "exercises.ipynb", schema)
    outcome["y_schema_version"] = "grade:18:"
    renamed = nbformat.from_dict(full)
    for cell in renamed.cells:
        if grade_id(cell) == "softmax":
            cell.metadata.nbgrader["grade_id"] = "my_softmax"
        if grade_id(cell) == "softmax_hidden":
            cell.metadata.nbgrader["grade_id"] = "softmax_hidden_2"
            cell.source = "pass"
    write(folder("y_renamed_grade_ids"), "exercises.ipynb", renamed)
    outcome["y_renamed_grade_ids"] = "grade:18:is not a cell of the assignment"
    duplicated = nbformat.from_dict(solved(source, release, {}, keep=False))
    test = next(c for c in duplicated.cells if grade_id(c) == "softmax_hidden")
    copy = nbformat.from_dict(test)
    copy.source = "pass"
    duplicated.cells.insert(0, copy)
    write(folder("y_duplicated_grade_id"), "exercises.ipynb", duplicated)
    outcome["y_duplicated_grade_id"] = "grade:0:appears twice"
    linked = folder("y_symlinks")
    write(linked, "exercises.ipynb", full)
    (linked / "leak.py").symlink_to(course / "solutions" / ASSIGNMENT / "exercises.py")
    (linked / "gradebook.db").symlink_to(course / "gradebook.db")
    (linked / "notes.txt").write_text("my notes")
    outcome["y_symlinks"] = "grade:18:"
    return outcome


def grade_batch(course: Path, students: dict[str, nbformat.NotebookNode]) -> None:
    for student, nb in students.items():
        write(course / "submitted" / student / ASSIGNMENT, f"{NOTEBOOK}.ipynb", nb)


def prepare(course: Path) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    course_folder(course)
    nbgrader(course, "generate_assignment", ASSIGNMENT, "--log-level=WARN")
    source = nbformat.read(course / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    release = nbformat.read(course / "_release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    return source, release


@pytest.fixture(scope="module")
def honest_alone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    course = tmp_path_factory.mktemp("honest")
    source, release = prepare(course)
    students = honest_students(source, release)
    grade_batch(course, students)
    batch = make_grade(course, ASSIGNMENT)
    assert batch.returncode == 0, batch.stdout + batch.stderr
    return {s: read_scores(course, ASSIGNMENT, NOTEBOOK, s) for s in students}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("hostile")
    course = root / "course"
    course.mkdir()
    (root / "outside.txt").write_text("a file next to the course folder")
    source, release = prepare(course)
    port, received = listen()
    kinds = {}
    students = honest_students(source, release)
    kinds.update({s: "honest" for s in students})
    keeps_solutions = {s for s, e in EXPECT.items() if e.get("solved")}
    for student, replace in HOSTILE.items():
        code = {cell: text.format(course=course, port=port, token=TOKEN).strip("\n")
                for cell, text in replace.items()}
        students[student] = solved(source, release, code, keep=student in keeps_solutions)
        kinds[student] = "hostile"
    grade_batch(course, students)
    broken = broken_students(source, release, course / "submitted", course)
    kinds.update({s: "broken:" + o for s, o in broken.items()})
    assert len(kinds) - 4 >= 25
    before = tree_hashes(course, GRADING_OUTPUTS)
    outside_before = tree_hashes(root, ("course",))
    env_canary = {"TFCOURSE_HOST_SECRET": "host-secret-6d2f"}
    os.environ.update(env_canary)
    try:
        batch = make_grade(course, ASSIGNMENT)
    finally:
        os.environ.pop("TFCOURSE_HOST_SECRET")
    return Run(course, batch, kinds, release, source, received, before,
               tree_hashes(course, GRADING_OUTPUTS), outside_before,
               tree_hashes(root, ("course",)))


def rows(run: Run) -> dict[str, dict[str, str]]:
    return review(run.course, ASSIGNMENT)


def total(run: Run, student: str) -> float:
    scores = read_scores(run.course, ASSIGNMENT, NOTEBOOK, student) or {}
    return sum(s for s, _ in scores.values())


def test_the_batch_completes_and_every_student_is_exported(hostile: Run) -> None:
    assert hostile.batch.returncode == 0, hostile.batch.stderr
    assert sorted(rows(hostile)) == sorted(hostile.students)
    summary = hostile.batch.stdout
    assert f"{len(hostile.students)} submissions" in summary, summary
    print("\n" + summary.splitlines()[0])  # the batch's counts and time, for the CI log


def test_honest_grades_are_what_they_are_without_the_hostile_ones(
        hostile: Run, honest_alone: dict[str, dict]) -> None:
    exported = rows(hostile)
    assert honest_alone["h_full"] and sum(s for s, _ in honest_alone["h_full"].values()) == 18
    assert sum(s for s, _ in honest_alone["h_blank"].values()) == 0
    assert 0 < sum(s for s, _ in honest_alone["h_partial"].values()) < 18
    assert sum(s for s, _ in honest_alone["h_stderr"].values()) == 18, "stderr cost points"
    for student, scores in honest_alone.items():
        assert read_scores(hostile.course, ASSIGNMENT, NOTEBOOK, student) == scores, student
        assert exported[student]["status"] == "graded"
        assert exported[student]["review"] == "", exported[student]


@pytest.mark.parametrize("student", sorted(HOSTILE))
def test_a_hostile_submission_scores_its_honest_work_at_most_and_is_flagged(
        hostile: Run, student: str) -> None:
    expected = EXPECT[student]
    row = rows(hostile)[student]
    assert total(hostile, student) <= expected.get("max", 0), row
    assert row["status"] == "graded", row
    if expected["flag"] is not None:
        assert expected["flag"] in row["review"], row["review"]
        assert f"flagged  {student}:" in hostile.batch.stdout


def test_broken_submissions_fail_alone_with_their_reason(hostile: Run) -> None:
    exported = rows(hostile)
    for student, kind in hostile.students.items():
        if not kind.startswith("broken:"):
            continue
        outcome, detail = kind.removeprefix("broken:").split(":", 1)
        row = exported[student]
        if outcome == "fail":
            assert row["status"] == "failed" and detail in row["review"], row
            assert f"failed   {student}: " in hostile.batch.stdout
        else:
            points, note = detail.split(":", 1)
            assert row["status"] == "graded" and total(hostile, student) == float(points), row
            assert note in row["review"], row


def test_no_process_is_left(hostile: Run) -> None:
    assert leftover_processes() == []


def test_nothing_outside_the_grading_folders_changed(hostile: Run) -> None:
    assert hostile.after == hostile.before
    assert hostile.outside_after == hostile.outside_before
    assert hostile.listener == [], "a submission reached the network"


def test_the_sandbox_shows_no_host_environment_or_course(hostile: Run) -> None:
    nb = nbformat.read(hostile.course / "autograded" / "x_environment" / ASSIGNMENT /
                       f"{NOTEBOOK}.ipynb", 4)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "NBGRADER_EXECUTION" in printed and "host-secret-6d2f" not in printed
    nb = nbformat.read(hostile.course / "autograded" / "x_reads_solutions" / ASSIGNMENT /
                       f"{NOTEBOOK}.ipynb", 4)
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert printed.count("cannot read") == 3 and "BEGIN SOLUTION" not in printed


def test_feedback_holds_the_feedback_pages_and_no_hidden_test(hostile: Run) -> None:
    from test_grading import Graded  # hidden_lines reads only .release and .source

    secrets = hidden_lines(Graded(ASSIGNMENT, hostile.course, None, hostile.source,
                                  hostile.release, {}, {}, {}, 0, 0, hostile.batch))
    assert len(secrets) >= 10
    feedback = hostile.course / "feedback"
    pages = 0
    for path in feedback.rglob("*"):
        if path.is_dir():
            continue
        assert not path.is_symlink() and path.name == f"{NOTEBOOK}.html", path
        text = page_text(path.read_text())
        leaked = sorted(line for line in secrets if line in text)
        assert not leaked, f"{path}: {leaked[:3]}"
        assert "BEGIN HIDDEN TESTS" not in text and "tampered" != text
        pages += 1
    graded = [s for s, r in rows(hostile).items() if r["status"] == "graded"]
    assert pages == len(graded)
    autograded = hostile.course / "autograded" / "y_symlinks" / ASSIGNMENT
    assert sorted(p.name for p in autograded.iterdir()) == [f"{NOTEBOOK}.ipynb"]
