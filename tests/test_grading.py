"""The instructor's path: the real nbgrader cycle on every assignment under solutions/.

For each assignment, one temporary course folder gets a copy of nbgrader_config.py and solutions/,
and the commands of the instructor guide run there, as an instructor runs them:
``generate_assignment``, submissions under ``submitted/<student>/<assignment>/``, ``autograde``
(one batch for every student), scores read from the gradebook, ``generate_feedback``, ``export``.

The students are built from the released notebook: the solution filled in, the notebook untouched,
one with test cells deleted, and the cases of ``tests/grading_cases/<assignment>.py`` (mistakes
that learners make, a correct implementation written differently, a cell that never ends, a
kernel that dies). Every case states exactly which test cells it fails; all other test cells must
score full marks, so a submission that disturbed the batch would show up in another student's
grade. To keep the batch short, cases that touch different exercises share a student.
"""

from __future__ import annotations

import csv
import html as html_lib
import importlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbgrader.api import Gradebook, MissingEntry

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = sorted(p.parent.name for p in (ROOT / "solutions").glob("*/*.ipynb"))
AUTOGRADE_BUDGET_S = 15  # the course's target per notebook, reported
AUTOGRADE_BOUND_S = 60  # what the test asserts, generous against a busy machine
GRADE_JOBS = 2  # students graded at once, as `make grade` does on these 2-core machines
HIDDEN = re.compile(r"^[^\n]*BEGIN HIDDEN TESTS.*?END HIDDEN TESTS[^\n]*$", re.S | re.M)


def load_cases(assignment: str) -> ModuleType:
    path = ROOT / "tests" / "grading_cases" / f"{assignment}.py"
    assert path.exists(), f"{assignment}: no grading cases in {path.relative_to(ROOT)}"
    return importlib.import_module(f"grading_cases.{assignment}")


def nbgrader(course: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course`` as a separate process, as an instructor would."""
    env = dict(os.environ)
    # nbgrader runs its database migrations by calling `alembic` by name
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("TFCOURSE_THREADS", "1")
    result = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
        text=True, timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"nbgrader {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def course_folder(course: Path) -> None:
    """What an instructor's course folder holds for grading: the configuration, the sandboxed
    grading it loads, and the sources of the assignments."""
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "tools" / "grading", course / "tools" / "grading", ignore=ignore)
    shutil.copytree(ROOT / "solutions", course / "solutions", ignore=ignore)


def make_grade(course: Path, assignment: str) -> subprocess.CompletedProcess:
    """``make grade`` on the course folder ``course``, as the instructor guide says."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run(["make", "-s", "-C", str(ROOT), "grade", f"ASSIGNMENT={assignment}",
                           f"COURSE={course}", f"JOBS={GRADE_JOBS}"], env=env,
                          capture_output=True, text=True, timeout=1800)


def review(graded_course: Path, assignment: str) -> dict[str, dict[str, str]]:
    """grades.csv's rows of ``assignment``: student -> row."""
    with open(graded_course / "grades.csv", newline="") as f:
        return {r["student_id"]: r for r in csv.DictReader(f) if r["assignment"] == assignment}


def grade_id(cell: nbformat.NotebookNode) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def is_test(cell: nbformat.NotebookNode) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("grade")) and not meta.get("solution")


def is_solution(cell: nbformat.NotebookNode) -> bool:
    return bool(cell.metadata.get("nbgrader", {}).get("solution"))


@dataclass
class Graded:
    """Everything one run of the cycle produced, for the tests to inspect."""

    assignment: str
    course: Path
    cases: ModuleType
    source: nbformat.NotebookNode  # solutions/<assignment>/<notebook>.ipynb
    release: nbformat.NotebookNode  # the student version generate_assignment produced
    students: dict[str, dict]  # student id -> its cases, the test cells it fails, its hazards
    scores: dict[str, dict[str, tuple[float, float]] | None]  # student -> test cell -> score
    max_scores: dict[str, float]  # test cell -> points
    seconds_per_notebook: float  # the batch's time, times the jobs, over the students
    batch_seconds: float
    batch: subprocess.CompletedProcess
    timings: dict[str, float] = field(default_factory=dict)

    def path(self, folder: str, student: str, suffix: str = ".ipynb") -> Path:
        return self.course / folder / student / self.assignment / f"{self.cases.NOTEBOOK}{suffix}"


def pack(cases: dict[str, dict]) -> list[list[str]]:
    """Group the cases into few students, to keep the batch short: cases share a student when
    they rewrite different cells and fail different test cells (the exact expectation of the
    union then also shows that they do not interact). A case that kills its kernel, or that is
    correct, gets a student of its own."""
    groups: list[list[str]] = []
    for name, case in cases.items():
        alone = case.get("kernel_dies") or case.get("loses", 1) is None
        for group in groups if not alone else ():
            others = [cases[n] for n in group]
            if all(not (o.get("kernel_dies") or o.get("loses", 1) is None)
                   and not set(o["replace"]) & set(case["replace"])
                   and not set(o["fails"]) & set(case["fails"]) for o in others):
                group.append(name)
                break
        else:
            groups.append([name])
    return groups


def build_students(cases: ModuleType, source: nbformat.NotebookNode,
                   release: nbformat.NotebookNode) -> dict[str, tuple[dict, nbformat.NotebookNode]]:
    """Student id -> (what is expected of it, its submitted notebook). Ids sort in the order
    nbgrader grades them: the submissions that hang or crash first, then the others."""
    solutions = {grade_id(c): c.source for c in source.cells if is_solution(c)}
    tests = [grade_id(c) for c in release.cells if is_test(c)]

    def submission(replace: dict[str, str], delete: tuple[str, ...] = ()) -> nbformat.NotebookNode:
        nb = nbformat.from_dict(release)  # a deep copy
        unknown = set(replace) - set(solutions)
        assert not unknown, f"grading case names unknown solution cells: {sorted(unknown)}"
        for cell in nb.cells:
            if is_solution(cell):
                cell.source = replace.get(grade_id(cell), solutions[grade_id(cell)]).strip("\n")
        nb.cells = [c for c in nb.cells if grade_id(c) not in delete]
        return nb

    students: dict[str, tuple[dict, nbformat.NotebookNode]] = {}
    groups = pack(cases.CASES)
    hazardous = [g for g in groups if any(cases.CASES[n].get("kernel_dies")
                                          or cases.CASES[n].get("times_out") for n in g)]
    for prefix, selected in (("a", hazardous), ("c", [g for g in groups if g not in hazardous])):
        for group in selected:
            members = [cases.CASES[n] for n in group]
            expected = {
                "cases": group,
                "fails": tuple(sorted({f for m in members for f in m.get("fails", ())})),
                "kernel_dies": any(m.get("kernel_dies") for m in members),
                "times_out": any(m.get("times_out") for m in members),
            }
            replace = {cell: code for m in members for cell, code in m["replace"].items()}
            students[f"{prefix}{len(students):02d}_{group[0]}"] = (expected, submission(replace))
    students["b_solution"] = ({"cases": [], "fails": ()}, submission({}))
    students["b_untouched"] = ({"cases": [], "fails": tuple(tests)}, nbformat.from_dict(release))
    deleted = (tests[0], tests[-1])  # a self-check and a hidden-test cell
    students["b_deleted_tests"] = ({"cases": [], "fails": (), "deleted": deleted},
                                   submission({}, deleted))
    return dict(sorted(students.items()))


def read_scores(course: Path, assignment: str, notebook: str, student: str
                ) -> dict[str, tuple[float, float]] | None:
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            submitted = gb.find_submission_notebook(notebook, assignment, student)
        except MissingEntry:
            return None
        return {g.name: (g.score, g.max_score) for g in submitted.grades
                if g.cell_type == "code"}


@pytest.fixture(scope="module", params=ASSIGNMENTS)
def graded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Graded:
    assignment = request.param
    cases = load_cases(assignment)
    course = tmp_path_factory.mktemp(f"course-{assignment}")
    course_folder(course)
    timings = {}

    start = time.perf_counter()
    nbgrader(course, "generate_assignment", assignment, "--log-level=WARN")
    timings["generate_assignment"] = time.perf_counter() - start
    source = nbformat.read(course / "solutions" / assignment / f"{cases.NOTEBOOK}.ipynb", 4)
    release = nbformat.read(course / "_release" / assignment / f"{cases.NOTEBOOK}.ipynb", 4)

    students = build_students(cases, source, release)
    for student, (_, nb) in students.items():
        folder = course / "submitted" / student / assignment
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{cases.NOTEBOOK}.ipynb")

    # the whole batch through the instructor's command, as in the guide
    start = time.perf_counter()
    batch = make_grade(course, assignment)
    batch_seconds = time.perf_counter() - start

    scores = {s: read_scores(course, assignment, cases.NOTEBOOK, s) for s in students}
    max_scores = {grade_id(c): float(c.metadata.nbgrader["points"])
                  for c in source.cells if is_test(c)}
    per_notebook = batch_seconds * GRADE_JOBS / len(students)
    print(f"\n[{assignment}] make grade, {len(students)} students, {GRADE_JOBS} at a time: "
          f"{batch_seconds:.1f} s, about {per_notebook:.1f} s per notebook (course target "
          f"{AUTOGRADE_BUDGET_S} s); generate_assignment {timings['generate_assignment']:.1f} s")
    return Graded(assignment, course, cases, source, release,
                  {s: case for s, (case, _) in students.items()}, scores, max_scores,
                  per_notebook, batch_seconds, batch, timings)


def exercise_scores(graded: Graded, student: str) -> dict[str, tuple[float, float]]:
    """Exercise -> (score, max score) of ``student``."""
    cells = graded.scores[student]
    return {name: (sum(cells[t][0] for t in tests), sum(cells[t][1] for t in tests))
            for name, (_, tests) in graded.cases.EXERCISES.items()}


def test_cases_name_real_cells(graded: Graded) -> None:
    exercises = graded.cases.EXERCISES
    solutions = {grade_id(c) for c in graded.source.cells if is_solution(c)}
    assert {s for s, _ in exercises.values()} == solutions
    assert {t for _, tests in exercises.values() for t in tests} == set(graded.max_scores)
    for name, case in graded.cases.CASES.items():
        assert set(case.get("fails", ())) <= set(graded.max_scores), name
        assert case.get("loses") in (None, *exercises), name


def test_solution_scores_full_marks(graded: Graded) -> None:
    scores = graded.scores["b_solution"]
    assert scores is not None
    assert {cell: s for cell, (s, _) in scores.items()} == graded.max_scores


def test_untouched_student_notebook_scores_zero(graded: Graded) -> None:
    scores = graded.scores["b_untouched"]
    assert scores is not None and set(scores) == set(graded.max_scores)
    assert all(s == 0 for s, _ in scores.values()), scores


def test_every_student_scores_exactly_as_expected(graded: Graded) -> None:
    """Cells a case fails score 0, all others full marks: a wrong case loses points where it
    should and nowhere else, and no submission changed another student's grade."""
    wrong = {}
    for student, expected in graded.students.items():
        if expected.get("kernel_dies"):
            continue
        got = {cell: s for cell, (s, _) in (graded.scores[student] or {}).items()}
        want = {cell: 0.0 if cell in expected["fails"] else m
                for cell, m in graded.max_scores.items()}
        if got != want:
            cases = ", ".join(expected["cases"]) or student
            wrong[cases] = {c: (got.get(c), want[c]) for c in want if got.get(c) != want[c]}
    assert not wrong, f"(score, expected) per test cell: {wrong}"


def test_each_mistake_loses_points_on_its_exercise(graded: Graded) -> None:
    full = exercise_scores(graded, "b_solution")
    seen = set()
    for student, expected in graded.students.items():
        if expected.get("kernel_dies"):
            continue
        got = exercise_scores(graded, student)
        for name in expected["cases"]:
            seen.add(name)
            exercise = graded.cases.CASES[name]["loses"]
            if exercise is None:
                assert got == full, f"{name} is correct and should score full marks: {got}"
            else:
                score, maximum = got[exercise]
                assert score < maximum, f"{name} keeps full marks on {exercise}"
    wrong = {n for n, c in graded.cases.CASES.items() if not c.get("kernel_dies")}
    assert seen == wrong


def test_a_correct_alternative_scores_full_marks(graded: Graded) -> None:
    correct = {n for n, c in graded.cases.CASES.items() if "loses" in c and c["loses"] is None}
    assert correct, "the grading cases need a correct implementation written differently"
    total = sum(graded.max_scores.values())
    for student, expected in graded.students.items():
        if correct & set(expected["cases"]):
            assert sum(s for s, _ in graded.scores[student].values()) == total, student


def test_a_cell_that_never_ends_is_stopped_and_the_rest_runs(graded: Graded) -> None:
    loops = [s for s, expected in graded.students.items() if expected.get("times_out")]
    assert loops, "the grading cases need a submission that loops forever"
    for student in loops:
        nb = nbformat.read(graded.path("autograded", student), 4)
        errors = [o.ename for c in nb.cells for o in c.get("outputs", [])
                  if o.output_type == "error"]
        assert "CellTimeoutError" in errors or "KeyboardInterrupt" in errors, errors
        assert graded.scores[student] is not None


def test_a_dying_kernel_keeps_what_it_earned_and_is_flagged(graded: Graded) -> None:
    """A kernel that dies stops that notebook only: the test cells it ran keep their scores, the
    rest score zero, the student is flagged with the reason, and the batch goes on."""
    dying = [s for s, expected in graded.students.items() if expected.get("kernel_dies")]
    assert dying, "the grading cases need a submission that kills its kernel"
    assert graded.batch.returncode == 0, graded.batch.stdout + graded.batch.stderr
    rows = review(graded.course, graded.assignment)
    total = sum(graded.max_scores.values())
    for student in dying:
        scores = graded.scores[student]
        assert scores is not None and sum(s for s, _ in scores.values()) < total, scores
        assert "the kernel died while running cell" in rows[student]["review"], rows[student]
        assert rows[student]["status"] == "graded"
        nb = nbformat.read(graded.path("autograded", student), 4)
        died = [i for i, c in enumerate(nb.cells) for o in c.get("outputs", [])
                if o.output_type == "error" and o.ename == "DeadKernelError"]
        assert len(died) == 1, died
        before = {grade_id(c) for c in nb.cells[:died[0]] if is_test(c)}
        assert {c: scores[c][0] for c in before} == {c: graded.max_scores[c] for c in before}
        after = {grade_id(c) for c in nb.cells[died[0]:] if is_test(c)}
        assert after and all(scores[c][0] == 0 for c in after)
    assert graded.batch.stdout.count("flagged  ") >= len(dying)


def test_honest_submissions_are_not_flagged(graded: Graded) -> None:
    rows = review(graded.course, graded.assignment)
    for student in ("b_solution", "b_untouched", "b_deleted_tests"):
        assert rows[student]["status"] == "graded" and rows[student]["review"] == "", \
            rows[student]


def test_deleted_test_cells_are_restored_and_graded(graded: Graded) -> None:
    student = "b_deleted_tests"
    nb = nbformat.read(graded.path("autograded", student), 4)
    restored = {grade_id(c) for c in nb.cells if is_test(c)}
    assert set(graded.students[student]["deleted"]) <= restored
    assert {c: s for c, (s, _) in graded.scores[student].items()} == graded.max_scores


def hidden_lines(graded: Graded) -> set[str]:
    """Distinctive lines of the hidden tests: found nowhere in the student notebook."""
    public = "\n".join(c.source for c in graded.release.cells)
    lines = set()
    for cell in graded.source.cells:
        for region in HIDDEN.findall(cell.source):
            lines |= {ln.strip() for ln in region.splitlines()[1:-1]}
    return {ln for ln in lines if len(ln) >= 16 and ln not in public}


def page_text(html: str) -> str:
    """The text of an HTML page as a reader sees it (code highlighting splits source lines)."""
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", html, flags=re.S)
    return html_lib.unescape(re.sub(r"<[^>]+>", "", text))


def test_feedback_does_not_reveal_hidden_tests(graded: Graded) -> None:
    secrets = hidden_lines(graded)
    assert len(secrets) >= 10
    # the check can see hidden tests: nbgrader's default feedback (no filter) shows them
    from nbconvert import HTMLExporter

    failing = next(s for s, c in graded.students.items()
                   if any("hidden" in f for f in c["fails"]) and c["cases"])
    autograded = nbformat.read(graded.path("autograded", failing), 4)
    unfiltered = page_text(HTMLExporter().from_notebook_node(autograded)[0])
    assert any(line in unfiltered for line in secrets)
    assert "Traceback" in unfiltered or "File " in unfiltered or "----> " in unfiltered

    pages = 0
    for student, case in graded.students.items():
        page = graded.path("feedback", student, ".html")
        if case.get("kernel_dies"):
            continue
        assert page.exists(), f"no feedback for {student}"
        pages += 1
        html = page.read_text()
        text = page_text(html)
        assert "BEGIN HIDDEN TESTS" not in html and "END HIDDEN TESTS" not in html, student
        leaked = sorted(line for line in secrets if line in text)
        assert not leaked, f"the feedback of {student} shows hidden tests: {leaked[:3]}"
    failed_page = page_text(graded.path("feedback", failing, ".html").read_text())
    assert "Error:" in failed_page, "a failed test's error name and message should remain"
    assert pages == sum(not c.get("kernel_dies") for c in graded.students.values())


def test_export_has_a_row_per_student(graded: Graded) -> None:
    with open(graded.course / "grades.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["assignment"] == graded.assignment]
    assert sorted(r["student_id"] for r in rows) == sorted(graded.students)
    totals = {r["student_id"]: float(r["score"]) for r in rows}
    assert totals["b_solution"] == sum(graded.max_scores.values())
    assert totals["b_untouched"] == 0


def test_release_holds_no_solution_and_no_hidden_test(graded: Graded) -> None:
    released = graded.course / "_release" / graded.assignment
    assert sorted(p.name for p in released.iterdir()) == [f"{graded.cases.NOTEBOOK}.ipynb"]
    text = (released / f"{graded.cases.NOTEBOOK}.ipynb").read_text()
    for marker in ("BEGIN SOLUTION", "BEGIN HIDDEN TESTS"):
        assert marker not in text
    # nothing from the solutions' source (*.py) lands beside the autograded notebooks either
    autograded = graded.path("autograded", "b_solution").parent
    assert sorted(p.suffix for p in autograded.iterdir()) == [".ipynb"]


def test_autograde_time_per_notebook(graded: Graded) -> None:
    print(f"[{graded.assignment}] make grade, per notebook: {graded.seconds_per_notebook:.1f} s "
          f"(target {AUTOGRADE_BUDGET_S} s)")
    assert graded.seconds_per_notebook < AUTOGRADE_BOUND_S


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_validator_passes_the_source_and_fails_the_student_version(assignment: str) -> None:
    from nbgrader.validator import Validator

    notebook = load_cases(assignment).NOTEBOOK
    source = ROOT / "solutions" / assignment / f"{notebook}.ipynb"
    student = ROOT / "chapters" / assignment / f"{notebook}.ipynb"
    assert Validator().validate(str(source)) == {}, "the solution fails a test"
    assert Validator(invert=True).validate(str(student)) == {}, "the student version passes a test"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_hidden_tests_do_not_need_the_self_checks(assignment: str) -> None:
    """A learner may delete a self-check cell: the hidden tests must pass without it having run."""
    from nbclient import NotebookClient

    notebook = load_cases(assignment).NOTEBOOK
    nb = nbformat.read(ROOT / "solutions" / assignment / f"{notebook}.ipynb", 4)
    hidden = [grade_id(c) for c in nb.cells if is_test(c) and HIDDEN.search(c.source)]
    assert hidden, "no hidden tests"
    nb.cells = [c for c in nb.cells if not is_test(c) or grade_id(c) in hidden]
    NotebookClient(nb, timeout=60, allow_errors=True).execute()
    failed = {grade_id(c): o.get("ename", "stderr") for c in nb.cells if c.cell_type == "code"
              for o in c.outputs
              if o.output_type == "error" or o.get("name") == "stderr"}
    assert not failed, f"hidden tests that fail without the self-checks: {failed}"
