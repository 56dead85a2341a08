"""Grade a whole batch of submissions safely: ``make grade ASSIGNMENT=<assignment> [JOBS=N]``.

For every ``submitted/<student>/<assignment>/`` of the course directory:

1. the submission is checked and staged (:mod:`grading.intake`); one that cannot be read fails
   alone, with the reason;
2. ``nbgrader autograde`` grades it in a process of its own, with its kernel in the sandbox
   (:mod:`grading.execute`), ``JOBS`` students at a time;
3. what the grading saw, and what the reading of the code found, flags the submission for review
   in the gradebook (``flagged``, shown by formgrader) and in ``grades.csv``.

Then ``nbgrader generate_feedback`` writes the feedback (:mod:`grading.feedback`), the feedback
folders are left with the feedback pages only, ``nbgrader export`` writes ``grades.csv`` (with two
more columns: ``status`` and ``review``), and a summary is printed. The gradebook, the folders and
the formats are nbgrader's, so its own commands and formgrader work on the result.

Exit status: 0 when the batch ran to the end (students that could not be graded are listed in the
summary and in ``grades.csv`` with the reason), 2 when it could not start.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grading.execute import REPORT_ENV  # noqa: E402 (needs the line above)
from grading.intake import Intake, stage  # noqa: E402
from grading.sandbox import Limits, SandboxUnavailable, bwrap, task_cap  # noqa: E402

STAGING = ".grading"


class CannotGrade(Exception):
    """The batch cannot start or finish (not a student's fault)."""


def nbgrader(course: Path, *args: str, env: dict[str, str] | None = None,
             timeout: float = 3600) -> subprocess.CompletedProcess:
    environment = dict(os.environ)
    # nbgrader runs its database migrations by calling `alembic` by name
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent),
                                           environment.get("PATH", "")])
    environment.update(env or {})
    try:
        return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course,
                              env=environment, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        return subprocess.CompletedProcess(error.cmd, -9, error.stdout or "",
                                           f"nbgrader did not finish within {timeout:.0f} s")


def why_it_failed(result: subprocess.CompletedProcess) -> str:
    """The most telling line of a failed nbgrader run."""
    lines = [ln.strip() for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    for marker in ("DeadKernelError", "RuntimeError", "Error:", "ERROR"):
        found = [ln for ln in lines if marker in ln and "Please see" not in ln]
        if found:
            return found[-1][:300]
    return (lines[-1] if lines else f"nbgrader exited {result.returncode}")[:300]


class Batch:
    def __init__(self, course: Path, assignment: str, jobs: int) -> None:
        self.course, self.assignment, self.jobs = course, assignment, jobs
        self.staging = course / STAGING / assignment
        self.db = course / "gradebook.db"
        self.db_url = f"sqlite:///{self.db}?timeout=120"
        self.results: dict[str, Intake] = {}

    def releases(self) -> dict[str, nbformat.NotebookNode]:
        release = self.course / "_release" / self.assignment
        notebooks = {p.stem: nbformat.read(p, 4) for p in sorted(release.glob("*.ipynb"))}
        if not notebooks or not self.db.exists():
            raise CannotGrade(f"no release of {self.assignment!r} in {release} or no gradebook: "
                              f"run `nbgrader generate_assignment {self.assignment}` first")
        return notebooks

    def students(self) -> list[str]:
        submitted = self.course / "submitted"
        return sorted(p.name for p in submitted.iterdir()
                      if (p / self.assignment).exists() or (p / self.assignment).is_symlink())

    def grade_one(self, student: str) -> None:
        intake = self.results[student]
        report = self.staging / "reports" / f"{student}.json"
        limits = Limits()
        result = nbgrader(
            self.course, "autograde", self.assignment, f"--student={student}", "--force",
            f"--CourseDirectory.submitted_directory={self.staging / 'submitted'}",
            f"--CourseDirectory.db_url={self.db_url}", "--log-level=WARN",
            env={REPORT_ENV: str(report)},
            timeout=limits.notebook_seconds * max(1, len(self.notebooks)) + 120)
        if report.exists():
            for seen in json.loads(report.read_text()).values():
                intake.flags += seen["flags"]
                intake.notes += seen["notes"]
        if result.returncode != 0:
            intake.failure = f"nbgrader could not grade it: {why_it_failed(result)}"
        (self.staging / "logs").mkdir(exist_ok=True)
        (self.staging / "logs" / f"{student}.log").write_text(result.stdout + result.stderr)

    def run(self) -> int:
        try:
            bwrap()
            self.notebooks = self.releases()
            return self.grade()
        except (SandboxUnavailable, CannotGrade) as error:
            print(f"cannot grade: {error}", file=sys.stderr)
            return 2

    def grade(self) -> int:
        with task_cap(Limits()) as cap:
            if not cap.available:
                print("warning: processes are not capped on this machine (grading as root "
                      "without a pids control group it may create); the other limits apply")
        shutil.rmtree(self.staging, ignore_errors=True)
        (self.staging / "reports").mkdir(parents=True)
        students = self.students()
        start = time.perf_counter()
        for student in students:
            self.results[student] = stage(
                self.course / "submitted" / student / self.assignment,
                self.staging / "submitted" / student / self.assignment, self.notebooks, student)
        with sqlite3.connect(self.db) as db:  # readers and writers of parallel jobs: no blocking
            db.execute("PRAGMA journal_mode=WAL")
        gradable = [s for s in students if self.results[s].failure is None]
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(self.grade_one, gradable))
        graded_seconds = time.perf_counter() - start
        self.record()
        self.feedback([s for s in gradable if self.results[s].failure is None])
        self.export()
        self.summary(students, graded_seconds)
        shutil.rmtree(self.staging / "submitted", ignore_errors=True)
        (self.staging / "results.json").write_text(
            json.dumps({s: asdict(r) for s, r in self.results.items()}, indent=1))
        return 0

    def record(self) -> None:
        """Every student in the gradebook (so in the export), and the flags of the graded."""
        from nbgrader.api import Gradebook, MissingEntry

        with Gradebook(self.db_url) as gb:
            for student, intake in self.results.items():
                gb.update_or_create_student(student)
                reasons = intake.flags + intake.notes
                if intake.failure or not reasons:
                    continue
                for notebook in self.notebooks:
                    try:
                        submitted = gb.find_submission_notebook(notebook, self.assignment,
                                                                student)
                    except MissingEntry:
                        continue
                    submitted.flagged = True
                    comments = sorted(submitted.comments, key=lambda c: c.name)
                    if comments:
                        comments[0].auto_comment = "Flagged for review: " + "; ".join(reasons)
                gb.db.commit()

    def feedback(self, students: list[str]) -> None:
        result = nbgrader(self.course, "generate_feedback", self.assignment, "--force",
                          f"--CourseDirectory.db_url={self.db_url}", "--log-level=WARN")
        for student in students:
            folder = self.course / "feedback" / student / self.assignment
            if not all((folder / f"{n}.html").is_file() for n in self.notebooks):
                self.results[student].notes.append(f"no feedback: {why_it_failed(result)}")
            if folder.is_dir():  # the feedback pages, nothing a submission wrote or linked
                for path in folder.iterdir():
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    elif path.is_symlink() or path.suffix != ".html":
                        path.unlink()

    def export(self) -> None:
        out = self.course / "grades.csv"
        result = nbgrader(self.course, "export", f"--to={out}",
                          f"--CourseDirectory.db_url={self.db_url}", "--log-level=WARN")
        if result.returncode != 0:
            raise CannotGrade(f"nbgrader export failed: {why_it_failed(result)}")
        with open(out, newline="") as f:
            rows = list(csv.DictReader(f))
        fields = [*rows[0].keys(), "status", "review"] if rows else []
        for row in rows:
            intake = self.results.get(row["student_id"]) \
                if row["assignment"] == self.assignment else None
            row.setdefault("status", "")
            row.setdefault("review", "")
            if intake is not None:
                row["status"] = "failed" if intake.failure else "graded"
                row["review"] = intake.failure or "; ".join(intake.flags + intake.notes)
        with open(out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def summary(self, students: list[str], seconds: float) -> None:
        failed = {s: r.failure for s, r in self.results.items() if r.failure}
        flagged = {s: r.flags + r.notes for s, r in self.results.items()
                   if not r.failure and (r.flags or r.notes)}
        print(f"{self.assignment}: {len(students)} submissions, graded "
              f"{len(students) - len(failed)}, failed {len(failed)}, flagged for review "
              f"{len(flagged)} ({seconds:.1f} s, {self.jobs} at a time)")
        for student, reason in failed.items():
            print(f"  failed   {student}: {reason}")
        for student, reasons in flagged.items():
            shown = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more"
                                               if len(reasons) > 3 else "")
            print(f"  flagged  {student}: {shown}")
        print(f"grades: {self.course / 'grades.csv'}; feedback: {self.course / 'feedback'}; "
              f"details: {self.staging / 'results.json'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", help="the assignment, as in solutions/<assignment>/")
    parser.add_argument("--course", type=Path, default=Path("."),
                        help="the course directory (where nbgrader_config.py is)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="students graded at once (default: the number of cores)")
    args = parser.parse_args(argv)
    course = args.course.resolve()
    if not (course / "nbgrader_config.py").is_file():
        parser.error(f"--course {course}: no nbgrader_config.py there")
    if not (course / "submitted").is_dir():
        parser.error(f"--course {course}: no submitted/ folder there")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    return Batch(course, args.assignment, args.jobs).run()


if __name__ == "__main__":
    sys.exit(main())
