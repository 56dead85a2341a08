"""nbgrader's execution step, with the kernel in the sandbox (``Autograde.autograde_preprocessors``
in ``nbgrader_config.py`` puts :class:`SandboxedExecute` where nbgrader's ``Execute`` was).

Everything else of nbgrader's autograde stays: restoring the test cells from the gradebook before,
scoring and saving the grades after. The executor is on the trusted side: it sends the cells to
the sandboxed kernel and keeps what comes back, so student code cannot write the notebook that
is scored. On top of nbgrader's ``Execute`` it:

* runs the guard (:mod:`guard`) before and after every test cell and records what it restored;
* stops a notebook at its overall time limit, and records a kernel that died (memory, ``os._exit``,
  a crash): the cells it did not run get an error, so its test cells score zero and the ones
  before keep their scores;
* keeps at most ``Limits.output_bytes`` of output;
* lets a passing test cell keep its points when the code under test writes to stderr (warnings,
  logging): nbgrader would score it zero.

What it saw is logged, and written as JSON to the file named by ``TFCOURSE_GRADING_REPORT`` (the
grading command reads it, flags the submission and writes the reasons into ``grades.csv``).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from nbgrader.utils import is_grade, is_solution

from .sandbox import GUARD_IN_SANDBOX, Limits, command, task_cap

REPORT_ENV = "TFCOURSE_GRADING_REPORT"
GUARD_SECONDS = 15


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command runs inside the sandbox, over ``ipc`` sockets (a
    kernel in its own network namespace cannot be reached over TCP)."""

    prefix: list[str] = []

    @property
    def kernel_spec(self) -> object:
        spec = super().kernel_spec
        # a signal would reach the sandbox's launcher, not the kernel: ask the kernel itself
        spec.interrupt_mode = "message"
        return spec

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        return [*self.prefix, *super().format_kernel_cmd(extra_arguments)]


def is_test(cell: NotebookNode) -> bool:
    return cell.cell_type == "code" and is_grade(cell) and not is_solution(cell)


def error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"{ename}: {evalue}"])


class SandboxedExecute(Execute):
    limits = Limits()

    def preprocess(self, nb: NotebookNode, resources: dict, km: object = None
                   ) -> tuple[NotebookNode, dict]:
        self.flags: list[str] = []  # what a reviewer should look at
        self.notes: list[str] = []  # limits reached: recorded, not suspicious in themselves
        self.stopped: str | None = None  # why the remaining cells did not run
        self.output_size = 0
        self.deadline = time.monotonic() + self.limits.notebook_seconds
        folder = Path(resources.get("metadata", {}).get("path") or ".")
        scratch = Path(tempfile.mkdtemp(prefix="tfcourse-grading-"))
        try:
            runtime, files = scratch / "runtime", scratch / "files"
            runtime.mkdir()
            files.mkdir()
            # the kernel gets a copy of the folder's plain files, never a notebook (the one being
            # graded holds the hidden tests) and never a link
            for path in folder.iterdir():
                if path.is_file() and not path.is_symlink() and path.suffix != ".ipynb":
                    shutil.copy(path, files / path.name)
            with task_cap(self.limits) as cap:
                env = {"NBGRADER_EXECUTION": "autograde",
                       "TFCOURSE_THREADS": os.environ.get("TFCOURSE_THREADS", "1")}
                self._sandbox = (runtime, [*cap.prefix(), *command(runtime, files, self.limits,
                                                                     env)])
                nb, resources = super().preprocess(nb, resources, km)
        finally:
            if (scratch / "runtime").is_dir():  # made read-only once the kernel was up
                (scratch / "runtime").chmod(stat.S_IRWXU)
            shutil.rmtree(scratch, ignore_errors=True)
        self._report(resources)
        return nb, resources

    def create_kernel_manager(self) -> AsyncKernelManager:
        runtime, prefix = self._sandbox
        self.kernel_manager_class = SandboxedKernelManager
        self.km = super().create_kernel_manager()
        self.km.prefix = prefix
        self.km.transport = "ipc"
        self.km.ip = str(runtime / "kernel")
        self.km.connection_file = str(runtime / "kernel.json")
        line = (f"exec(compile(open({GUARD_IN_SANDBOX!r}).read(), {GUARD_IN_SANDBOX!r}, 'exec'), "
                "{'__name__': '__grading_guard__', 'get_ipython': get_ipython})")
        self.extra_arguments = [*self.extra_arguments, f"--IPKernelApp.exec_lines={line}"]
        return self.km

    async def async_start_new_kernel_client(self) -> object:
        kc = await super().async_start_new_kernel_client()
        # the sockets exist now: nothing else may be written where they lie (host disk)
        runtime = self._sandbox[0]
        runtime.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return kc

    start_new_kernel_client = run_sync(async_start_new_kernel_client)

    def _get_timeout(self, cell: NotebookNode | None) -> int | None:
        remaining = max(1, int(self.deadline - time.monotonic()))
        timeout = super()._get_timeout(cell)
        return remaining if timeout is None else min(timeout, remaining)

    async def async_execute_cell(self, cell: NotebookNode, cell_index: int,
                                 execution_count: int | None = None,
                                 store_history: bool = True) -> NotebookNode:
        if cell.cell_type != "code" or not cell.source.strip():
            return cell
        if self.stopped is None and time.monotonic() > self.deadline:
            self.stopped = (f"the notebook reached its time limit of "
                            f"{self.limits.notebook_seconds:.0f} s")
            self.notes.append(self.stopped)
        if self.stopped is not None:
            cell.outputs = [error("NotRun", f"not run: {self.stopped}")]
            return cell
        test = is_test(cell)
        untrusted = error("IntegrityError", "not graded: the kernel did not run the integrity "
                          "check around this test cell as sent (its execution is hooked)")
        try:
            if test and not await self._guard(f"before test cell {cell_index}"):
                cell.outputs = [untrusted]
                return cell
            cell = await super().async_execute_cell(cell, cell_index, execution_count,
                                                    store_history)
            if any(o.get("ename") == "CellTimeoutError" for o in cell.outputs) \
                    and not await self._answers():
                raise CellTimeoutError("the kernel ignored the interrupt")
            if test and not await self._guard(f"after test cell {cell_index}"):
                cell.outputs = [untrusted]
        except DeadKernelError:
            self.stopped = f"the kernel died while running cell {cell_index}"
            self.notes.append(self.stopped + " (a crash, os._exit, or the memory limit)")
            cell.outputs = [*cell.get("outputs", []), error("DeadKernelError", self.stopped)]
            return cell
        except CellTimeoutError:
            self.stopped = f"cell {cell_index} did not stop when interrupted at its time limit"
            self.notes.append(self.stopped)
            cell.outputs = [*cell.get("outputs", []), error("CellTimeoutError", self.stopped)]
            return cell
        if test:
            for output in cell.outputs:  # warnings and logging do not fail a test
                if output.output_type == "stream" and output.name == "stderr":
                    output.name = "stdout"
        return cell

    async def _answers(self) -> bool:
        """Whether the kernel, interrupted after a time-out, runs code again."""
        try:
            await asyncio.wait_for(self.kc.execute_interactive(
                "pass", silent=True, store_history=False, timeout=GUARD_SECONDS,
                output_hook=lambda msg: None), GUARD_SECONDS + 5)
            return True
        except (TimeoutError, asyncio.TimeoutError):
            return False

    execute_cell = run_sync(async_execute_cell)

    async def _guard(self, when: str) -> bool:
        """Run the guard; record what it restored. False when the kernel did not answer as
        the guard does (so its execution cannot be trusted)."""
        nonce = secrets.token_hex(8)
        try:
            reply = await asyncio.wait_for(
                self.kc.execute_interactive(f"__grading_guard__({nonce!r})", silent=True,
                                            store_history=False, timeout=GUARD_SECONDS,
                                            output_hook=lambda msg: None),
                GUARD_SECONDS + 5)
            content = reply["content"]
            answer = json.loads(content.get("evalue", "")) if content.get(
                "ename") == "GuardReport" else None
        except (TimeoutError, asyncio.TimeoutError, ValueError, KeyError):
            answer = None
        if not await self.km.is_alive():
            raise DeadKernelError("Kernel died")
        if answer is None or answer.get("nonce") != nonce:
            flag = ("the kernel did not run the integrity check as sent (its execution is "
                    "hooked, or the check was replaced): its test cells score zero")
            if not any(f.endswith(flag) for f in self.flags):
                self.flags.append(f"{when}: {flag}")
            return False
        seen = {flag.split(": ", 1)[1] for flag in self.flags}
        self.flags += [f"{when}: {finding}" for finding in answer["findings"]
                       if finding not in seen]
        return True

    def output(self, outs: list, msg: dict, display_id: str | None, cell_index: int
               ) -> NotebookNode | None:
        self.output_size += len(json.dumps(msg.get("content", {})))
        if self.output_size > self.limits.output_bytes:
            if not any(n.startswith("output beyond") for n in self.notes):
                self.notes.append(f"output beyond {self.limits.output_bytes >> 20} MiB was "
                                  f"dropped (from cell {cell_index} on)")
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _report(self, resources: dict) -> None:
        notebook = resources.get("nbgrader", {}).get("notebook", "?")
        for flag in self.flags:
            self.log.warning("flagged for review: %s", flag)
        for note in self.notes:
            self.log.warning("%s", note)
        path = os.environ.get(REPORT_ENV)
        if path:
            report = json.loads(Path(path).read_text()) if Path(path).exists() else {}
            report[notebook] = {"flags": self.flags, "notes": self.notes}
            Path(path).write_text(json.dumps(report, indent=1))
