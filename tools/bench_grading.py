"""What the sandbox and parallel grading cost: ``python tools/bench_grading.py [ASSIGNMENT]``.

In a scratch course folder, with the assignment's solution as every submission, it prints side
by side, measured in one run:

* the time of ``nbgrader autograde`` for one notebook with the course's configuration (kernel in
  the sandbox) and with nbgrader's own execution step, alternating, the fastest of ``--repeat``;
* the time of ``make grade``'s batch of ``--students`` submissions with 1 job and with ``--jobs``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grade  # noqa: E402 (needs the line above)

ROOT = Path(__file__).resolve().parents[1]


def course(folder: Path, assignment: str, students: int, sandbox: bool) -> None:
    config = (ROOT / "nbgrader_config.py").read_text()
    if not sandbox:  # nbgrader's own execution step
        config = re.sub(r"c\.Autograde\.autograde_preprocessors = \[.*?\]\n", "", config,
                        flags=re.S)
    (folder / "nbgrader_config.py").write_text(config)
    shutil.copytree(ROOT / "tools" / "grading", folder / "tools" / "grading")
    shutil.copytree(ROOT / "solutions" / assignment, folder / "solutions" / assignment)
    result = grade.nbgrader(folder, "generate_assignment", assignment, "--log-level=WARN")
    assert result.returncode == 0, result.stderr
    notebook = next((folder / "solutions" / assignment).glob("*.ipynb"))
    for i in range(students):
        target = folder / "submitted" / f"s{i:02d}" / assignment
        target.mkdir(parents=True)
        nbformat.write(nbformat.read(notebook, 4), target / notebook.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", nargs="?", default="01_attention")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        sandboxed, plain = Path(scratch, "sandboxed"), Path(scratch, "plain")
        for folder, sandbox in ((sandboxed, True), (plain, False)):
            folder.mkdir()
            course(folder, args.assignment, args.students, sandbox)
        times: dict[str, list[float]] = {"sandbox": [], "plain": []}
        for _ in range(args.repeat):
            for name, folder in (("sandbox", sandboxed), ("plain", plain)):
                start = time.perf_counter()
                result = grade.nbgrader(folder, "autograde", args.assignment, "--student=s00",
                                        "--force", "--log-level=ERROR")
                times[name].append(time.perf_counter() - start)
                assert result.returncode == 0, result.stderr[-2000:]
        one, bare = min(times["sandbox"]), min(times["plain"])
        print(f"{args.assignment}, one notebook (nbgrader autograde, fastest of {args.repeat}): "
              f"sandbox {one:.2f} s, without {bare:.2f} s, ratio {one / bare:.2f}")
        batch = {}
        for jobs in (1, args.jobs):
            start = time.perf_counter()
            code = grade.Batch(sandboxed, args.assignment, jobs).run()
            batch[jobs] = time.perf_counter() - start
            assert code == 0
        print(f"make grade, {args.students} submissions: 1 job {batch[1]:.1f} s, {args.jobs} jobs "
              f"{batch[args.jobs]:.1f} s, speed-up {batch[1] / batch[args.jobs]:.2f}")


if __name__ == "__main__":
    main()
