"""The process group of a data-parallel run (book: chapter 11, "Scaling out").

``torchrun --nproc_per_node=W script.py`` starts W copies of a script and tells each one who it is
through environment variables: ``RANK`` (0 … W-1 over all machines), ``LOCAL_RANK`` (its index on
this machine, which picks its GPU), ``WORLD_SIZE`` (W), and ``MASTER_ADDR``/``MASTER_PORT`` (where
the processes meet). :func:`init_from_env` reads them and joins the default process group of
``torch.distributed`` (``init_method="env://"``), with the backend that moves the device's tensors:
``gloo`` for CPU tensors, ``nccl`` for CUDA tensors. See PyTorch's "torchrun (Elastic Launch)" and
"Distributed communication package" pages (https://pytorch.org/docs/stable/elastic/run.html,
https://pytorch.org/docs/stable/distributed.html).

Every function here also works in a plain single process (``python script.py``): there is then one
rank, rank 0, and the collectives return their input. :class:`tfcourse.Trainer` calls
:func:`init_from_env` itself, which is why a training script runs unchanged under ``torchrun``.
"""

from __future__ import annotations

import datetime
import os
import pickle
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (all of :data:`TORCHRUN_VARIABLES` set)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def is_initialized() -> bool:
    """Whether this process belongs to a process group (``torch.distributed`` is initialised)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the group, 0 … ``world_size() - 1``; 0 in a single process."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes in the group; 1 in a single process."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """This process's index on its own machine (``LOCAL_RANK``, set by torchrun); 0 otherwise."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """True on rank 0, the process that prints progress and writes files."""
    return rank() == 0


def rank_device(device: torch.device | str) -> torch.device:
    """The device this rank should use: under torchrun, a GPU given without an index ('cuda')
    becomes ``cuda:LOCAL_RANK``, one GPU per process on each machine; anything else is returned
    as it is."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and launched_by_torchrun():
        return torch.device("cuda", local_rank())
    return device


def init_from_env(
    device: torch.device | str | None = None, *, backend: str | None = None,
    timeout: datetime.timedelta = datetime.timedelta(minutes=10),
) -> bool:
    """Join the process group that torchrun describes in the environment; return whether this
    process is now in a process group.

    Does nothing (and returns False) outside torchrun, and nothing but return True when a group
    already exists. ``backend`` defaults to ``nccl`` when ``device`` is a GPU (it moves CUDA
    tensors between GPUs) and to ``gloo`` otherwise (CPU tensors). With a GPU, this process's GPU
    becomes the current one (:func:`torch.cuda.set_device`), as NCCL expects. ``timeout``: how
    long a collective waits for the other ranks before it fails (a rank that died must not hang
    the others forever; PyTorch's default for gloo is 30 minutes).
    """
    if is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    if not dist.is_available():
        raise RuntimeError("init_from_env: this PyTorch build has no torch.distributed")
    device = rank_device(device if device is not None else "cpu")
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend not in ("gloo", "nccl") and ":" not in backend:
        raise ValueError(f"backend: expected 'gloo', 'nccl' or a 'cpu:gloo,cuda:nccl' map, "
                         f"got {backend!r}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
    return True


def shutdown() -> None:
    """Leave the process group (at the end of a script: PyTorch warns about a group that is
    never destroyed). Does nothing in a single process."""
    if is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    """Where the backend wants the tensors of a collective: the current GPU for NCCL, else the
    CPU."""
    if is_initialized() and "nccl" in str(dist.get_backend()) and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over the ranks of ``values`` (a tensor of the same shape on every rank), as a new
    tensor on the device and of the dtype of ``values``; ``values`` itself in a single process.

    A collective: every rank must call it, in the same order as the other collectives."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values: expected a torch.Tensor, got {type(values).__name__}")
    if not is_initialized() or world_size() == 1:
        return values
    total = values.detach().to(_collective_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return (total / world_size()).to(values.device, values.dtype)


def all_gather_object(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (pickled; for small things such as random states);
    ``[obj]`` in a single process. A collective."""
    if not is_initialized():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait until every rank gets here (for example, until rank 0 has written a file). A
    collective; does nothing in a single process."""
    if is_initialized():
        if "nccl" in str(dist.get_backend()) and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _loopback_interface() -> str:
    """The name of this machine's loopback network interface ('lo' on Linux, 'lo0' on macOS)."""
    import socket

    names = [name for _, name in socket.if_nameindex()]
    return next((n for n in names if n.startswith("lo")), "lo")


def _group_member(fn: Callable[..., Any], args: tuple, rank_: int, size: int, store_path: str,
                  timeout: datetime.timedelta, pipe: Any) -> None:
    """The body of one process of :func:`run_local_group`: join, run ``fn``, send the outcome."""
    import traceback

    try:
        torch.set_num_threads(1)  # the processes share the machine's cores
        # gloo binds to the interface of the host's name unless told; a sandbox without network
        # may not resolve it. Set here, in the child, the caller's environment stays as it was.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", _loopback_interface())
        store = dist.FileStore(store_path, size)
        dist.init_process_group("gloo", store=store, rank=rank_, world_size=size,
                                timeout=timeout)
        try:
            outcome: tuple[str, Any] = ("ok", fn(*args))
        finally:
            dist.destroy_process_group()
    except BaseException as error:  # noqa: BLE001 - the parent reports it with the rank
        outcome = ("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
    # plain pickle, not multiprocessing's: that one shares a tensor's memory with the receiver
    # through this process, which is gone by the time the parent reads it
    try:
        message = pickle.dumps(outcome)
    except Exception as error:  # noqa: BLE001
        message = pickle.dumps(("error", f"what fn returned does not pickle: {error}"))
    pipe.send_bytes(message)
    pipe.close()


def run_local_group(fn: Callable[..., Any], world_size: int = 2, args: tuple = (), *,
                    timeout: float = 60.0) -> list[Any]:
    """Run ``fn(*args)`` in ``world_size`` new processes of this machine that form a ``gloo``
    process group, as torchrun's workers would; return what each returned, in rank order.

    Inside ``fn``, ``torch.distributed`` works as under torchrun (``dist.get_rank()``,
    ``dist.all_reduce``, ...) and so do :func:`rank` and :func:`world_size`. The processes are
    forked, so ``fn`` may be defined in a notebook; they meet through a file (no network port)
    and talk over the loopback interface; each uses one thread. What ``fn`` returns must pickle
    (tensors do). An error in a process is raised here as a RuntimeError that names its rank;
    processes still running after ``timeout`` seconds are killed (a collective that one rank
    never joins waits for it) and a TimeoutError is raised. Linux and macOS (it forks).
    """
    import multiprocessing
    import tempfile
    import time
    from multiprocessing.connection import wait

    if not callable(fn):
        raise TypeError(f"fn: expected a function, got {type(fn).__name__}")
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"world_size: expected an integer >= 1, got {world_size!r}")
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"timeout: expected a number of seconds > 0, got {timeout!r}")
    if is_initialized():
        raise RuntimeError("run_local_group: this process is already in a process group; call "
                           "it from a plain process (a notebook, a script without torchrun)")
    context = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="tfcourse-group-") as folder:
        store_path = os.path.join(folder, "store")
        pipes, processes = [], []
        for r in range(world_size):
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=_group_member, daemon=True,
                args=(fn, args, r, world_size, store_path,
                      datetime.timedelta(seconds=timeout + 30), send))
            process.start()
            send.close()
            pipes.append(receive)
            processes.append(process)
        deadline = time.monotonic() + timeout
        outcomes: list[tuple[str, Any] | None] = [None] * world_size
        waiting = dict(zip(pipes, range(world_size), strict=True))
        try:
            while waiting and (left := deadline - time.monotonic()) > 0:
                for pipe in wait(list(waiting), timeout=left):
                    r = waiting.pop(pipe)
                    try:
                        outcomes[r] = pickle.loads(pipe.recv_bytes())
                    except EOFError:  # the process ended without a word (killed, os._exit)
                        processes[r].join(5)
                        outcomes[r] = ("error", f"the process ended with exit code "
                                                f"{processes[r].exitcode}")
        finally:
            for process in processes:
                process.join(max(0.0, min(5.0, deadline - time.monotonic())))
                if process.is_alive():
                    process.kill()
                    process.join()
    unfinished = [r for r, outcome in enumerate(outcomes) if outcome is None]
    if unfinished:
        raise TimeoutError(f"run_local_group: rank(s) {unfinished} of {world_size} did not "
                           f"finish in {timeout:g} s (a collective waits for every rank)")
    for r, outcome in enumerate(outcomes):
        if outcome[0] == "error":
            raise RuntimeError(f"run_local_group: rank {r} of {world_size} failed: {outcome[1]}")
    return [outcome[1] for outcome in outcomes]
