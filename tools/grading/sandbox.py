"""The Bubblewrap sandbox that one submission's kernel runs in.

Why Bubblewrap: it needs no daemon and no root (it uses unprivileged user namespaces, which work
on these machines), it builds the kernel's file system from an empty root, so whatever is not
named below does not exist for the kernel, and with a PID namespace every process that the kernel
starts is killed when the kernel ends, whatever it does to detach. A container engine would give
the same isolation but needs a daemon and an image per environment; a separate user account
alone would still see the course directory.

What the kernel sees:

* read-only: the operating system's programs and libraries (``/usr``), the Python installation,
  this environment (its ``site-packages``) and the folder of the ``tfcourse`` package;
* writable, on size-capped memory file systems: ``/home/student`` (its working folder, holding a
  copy of the submission's files other than notebooks) and ``/tmp``;
* the folder of its connection file and sockets, made read-only once the kernel is up;
* no network (an empty network namespace), no other process of the machine, no course directory,
  no gradebook, no ``solutions/``, no other submission.

Caps: address space per process (``RLIMIT_AS``), processes and threads alive at once (a ``pids``
control group when the grader runs as root, ``RLIMIT_NPROC`` otherwise), single file size
(``RLIMIT_FSIZE``) and the size of the writable folders; the time and output caps are applied by
the executor (:mod:`execute`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOME = "/home/student"
WORK = f"{HOME}/work"
GUARD = Path(__file__).with_name("guard.py")
GUARD_IN_SANDBOX = "/opt/grading/guard.py"


class SandboxUnavailable(RuntimeError):
    """The machine cannot run the sandbox (no Bubblewrap, no user namespaces)."""


@dataclass(frozen=True)
class Limits:
    """What one submission may use. A submission that reaches a limit keeps what it earned
    before it; the test cells it did not reach score zero."""

    memory_bytes: int = 6 << 30  # address space of each process
    tasks: int = 256  # processes and threads alive at once (torch and ipykernel use ~30)
    disk_bytes: int = 256 << 20  # each writable folder
    file_bytes: int = 128 << 20  # one file
    output_bytes: int = 4 << 20  # output kept for the whole notebook
    notebook_seconds: float = 300.0  # the whole notebook, cells and checks


def bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            "grading runs student code in a Bubblewrap sandbox, and `bwrap` is not installed: "
            "install Debian's or Ubuntu's `bubblewrap` package (sudo apt-get install bubblewrap)")
    return path


def readable_roots() -> list[str]:
    """The folders the kernel may read, outermost only."""
    spec = importlib.util.find_spec("tfcourse")
    package = [str(Path(spec.origin).parent)] if spec and spec.origin else []
    roots = sorted({"/usr", os.path.realpath(sys.base_prefix), sys.prefix, *package})
    return [r for r in roots if not any(r != o and r.startswith(o.rstrip("/") + "/")
                                        for o in roots)]


def command(runtime: Path, submission_files: Path, limits: Limits, env: dict[str, str]
            ) -> list[str]:
    """The command line that runs ``kernel command`` (appended by the caller) in the sandbox.

    ``runtime`` holds the connection file and the kernel's sockets; ``submission_files`` is
    copied into the kernel's working folder before the kernel starts."""
    args = [bwrap(), "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--disable-userns", "--die-with-parent",
            "--new-session",
            "--hostname", "grading", "--uid", "1000", "--gid", "1000", "--clearenv"]
    # the writable memory file systems first: a folder bound below them (the environment or
    # the course's tools may lie under /tmp) is mounted on top of them, not hidden by them
    args += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(limits.disk_bytes), "--tmpfs", "/tmp",
             "--size", str(limits.disk_bytes), "--tmpfs", HOME]
    for root in readable_roots():
        args += ["--ro-bind", root, root]
    for link, target in (("/bin", "usr/bin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64"),
                         ("/sbin", "usr/sbin")):
        if os.path.islink(link):
            args += ["--symlink", target, link]
        elif os.path.isdir(link):
            args += ["--ro-bind", link, link]
    args += ["--ro-bind", str(GUARD), GUARD_IN_SANDBOX,
             "--ro-bind", str(submission_files), "/opt/submission",
             "--bind", str(runtime), str(runtime),
             "--chdir", HOME]
    fixed = {"HOME": HOME, "PATH": f"{sys.prefix}/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
             "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{HOME}/.matplotlib",
             "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "TMPDIR": "/tmp"}
    for name, value in {**fixed, **env}.items():
        args += ["--setenv", name, value]
    # copy the submission's files into the writable folder, then become the kernel
    return [*args, "/bin/sh", "-c", f'cp -R /opt/submission/. "{WORK}" 2>/dev/null; '
            f'cd "{WORK}" && exec "$@"', "sandbox"]


def rlimits(limits: Limits, tasks: int | None) -> list[str]:
    """``prlimit`` prefix: memory, file size and (when not capped by a control group) tasks."""
    args = ["prlimit", f"--as={limits.memory_bytes}", f"--fsize={limits.file_bytes}",
            "--core=0"]
    if tasks is not None:
        args.append(f"--nproc={tasks}")
    return args


class TaskCap:
    """Caps the processes and threads of one sandbox and kills them all at the end.

    As root, ``RLIMIT_NPROC`` does not apply, so a ``pids`` control group does it (version 1 or
    2, where this process may create one); otherwise the limit is ``RLIMIT_NPROC`` over what this
    user already runs. ``available`` is False when neither works (the summary says so)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.group: Path | None = None
        self.nproc: int | None = None
        if os.geteuid() == 0:
            self.group = self._make_group()
        else:
            self.nproc = self._own_tasks() + limits.tasks
        self.available = self.group is not None or self.nproc is not None

    def _make_group(self) -> Path | None:
        name = f"tfcourse-grading-{uuid.uuid4().hex[:12]}"
        candidates = [Path("/sys/fs/cgroup/pids") / name]
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                if line.startswith("0::"):
                    candidates.append(Path("/sys/fs/cgroup") / line[3:].lstrip("/") / name)
        for group in candidates:
            try:
                group.mkdir()
            except OSError:
                continue
            try:
                (group / "pids.max").write_text(str(self.limits.tasks))
                return group
            except OSError:
                with contextlib.suppress(OSError):
                    group.rmdir()
        return None

    @staticmethod
    def _own_tasks() -> int:
        uid, count = os.getuid(), 0
        for pid in os.listdir("/proc"):
            with contextlib.suppress(OSError):
                if pid.isdigit() and os.stat(f"/proc/{pid}").st_uid == uid:
                    count += len(os.listdir(f"/proc/{pid}/task"))
        return count

    def prefix(self) -> list[str]:
        """Command prefix that puts the command under the cap before it runs."""
        if self.group is not None:
            procs = self.group / "cgroup.procs"
            return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs),
                    *rlimits(self.limits, None)]
        return rlimits(self.limits, self.nproc)

    def close(self) -> None:
        if self.group is None:
            return
        for _ in range(50):
            try:
                pids = (self.group / "cgroup.procs").read_text().split()
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.group.rmdir()


@contextlib.contextmanager
def task_cap(limits: Limits) -> Iterator[TaskCap]:
    cap = TaskCap(limits)
    try:
        yield cap
    finally:
        cap.close()
