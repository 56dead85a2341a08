"""tfcourse.distributed and the Trainer under torchrun (book: chapter 11).

The launches run ``python -m torch.distributed.run`` (torchrun) on ``python -m tfcourse.train``,
gloo on the CPU, one thread per process; every launch has a timeout and is killed with its whole
process group when it runs over, so nothing can hang the suite. GPU tests (marker ``gpu``) run
the same with nccl where CUDA is present.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tfcourse import distributed, train
from tfcourse.training import TrainConfig, Trainer, shard_batch

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_TIMEOUT_S = 180
# A tiny character-level GPT of chapter 3: 16 rows of 32 characters per step, 12 steps.
GPT = ["--model", "gpt", "--steps", "12", "--batch", "16", "--width", "32", "--layers", "2",
       "--block", "32", "--lr", "3e-3", "--quiet"]
# Two processes add their gradients in another order than one process does over the doubled
# batch: float32 rounding, about 1e-7 of the loss at step 1, grown by AdamW over 12 steps to
# about 1e-6 here. A real mistake (two ranks on the same rows, gradients not averaged, one rank's
# loss recorded) moves the loss by 1e-3 to 1e-1.
RTOL = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in distributed.TORCHRUN_VARIABLES}
    env.update(TFCOURSE_THREADS="1", OMP_NUM_THREADS="1")  # two processes share two cores
    return env


def start(torchrun_args: list[str], train_args: list[str], log: Path) -> subprocess.Popen:
    """``torchrun <torchrun_args> -m tfcourse.train <train_args>``, in a session of its own (so
    that a timeout kills the launcher and its workers together)."""
    command = [sys.executable, "-m", "torch.distributed.run", *torchrun_args,
               "-m", "tfcourse.train", *train_args]
    out = log.open("w")
    return subprocess.Popen(command, cwd=ROOT, env=launch_env(), stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float = LAUNCH_TIMEOUT_S) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"torchrun ran over {timeout} s; its output:\n{log.read_text()[-3000:]}")
    assert proc.returncode == 0, f"torchrun failed; its output:\n{log.read_text()[-3000:]}"


def torchrun(torchrun_args: list[str], train_args: list[str], log: Path) -> None:
    finish(start(torchrun_args, train_args, log), log)


def losses(history_file: Path) -> list[float]:
    return [r["loss"] for r in json.loads(history_file.read_text())["train"]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process with the whole batch (in this process), and two processes under torchrun
    with half of it each: 12 steps, then 6 steps stopped and resumed to 12."""
    tmp = tmp_path_factory.mktemp("runs")
    train.main([*GPT, "--history", str(tmp / "one.json")])
    two = ["--standalone", "--nproc_per_node=2"]
    torchrun(two, [*GPT, "--history", str(tmp / "two.json"), "--checkpoint",
                   str(tmp / "two.pt")], tmp / "two.log")
    torchrun(two, [*GPT, "--checkpoint", str(tmp / "resumed.pt"), "--stop-at", "6"],
             tmp / "first_half.log")
    torchrun(two, [*GPT, "--checkpoint", str(tmp / "resumed.pt"), "--resume", "--history",
                   str(tmp / "resumed.json")], tmp / "second_half.log")
    return {"tmp": tmp, "one": tmp / "one.json", "two": tmp / "two.json",
            "resumed": tmp / "resumed.json"}


def test_two_processes_follow_the_one_process_curve(runs: dict[str, Path]) -> None:
    one, two = json.loads(runs["one"].read_text()), json.loads(runs["two"].read_text())
    assert one["world_size"] == 1 and two["world_size"] == 2 and two["rows_per_rank"] == 8
    assert [r["step"] for r in two["train"]] == list(range(1, 13))
    assert losses(runs["two"]) == pytest.approx(losses(runs["one"]), rel=RTOL)
    assert [r["grad_norm"] for r in two["train"]] == pytest.approx(
        [r["grad_norm"] for r in one["train"]], rel=10 * RTOL)
    assert losses(runs["one"])[-1] < losses(runs["one"])[0] - 0.5  # it learns


def test_a_run_stopped_and_resumed_under_torchrun_is_exact(runs: dict[str, Path]) -> None:
    # Bit for bit: the same operations on the same rows in the same order; the checkpoint holds
    # parameters, AdamW's moments, the step and both ranks' random states, and gloo's sum of two
    # ranks' gradients does not depend on anything the interruption changed.
    assert losses(runs["resumed"]) == losses(runs["two"])
    full = torch.load(runs["tmp"] / "two.pt", weights_only=True)
    resumed = torch.load(runs["tmp"] / "resumed.pt", weights_only=True)
    assert full["step"] == resumed["step"] == 12 and resumed["world_size"] == 2
    assert len(resumed["rng_per_rank"]) == 2
    for name, value in full["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def test_two_nodes_meet_at_a_c10d_rendezvous(runs: dict[str, Path]) -> None:
    """Two launches, as on two machines: ``--nnodes=2``, one process each, meeting at a c10d
    rendezvous on localhost (node 0 hosts its store: on one machine both would match the host)."""
    tmp, port = runs["tmp"], free_port()
    procs = []
    for node in (0, 1):
        node_args = ["--nnodes=2", "--nproc_per_node=1", f"--node_rank={node}",
                     "--rdzv_backend=c10d", f"--rdzv_endpoint=localhost:{port}",
                     "--rdzv_id=tfcourse-test", f"--rdzv_conf=is_host={int(node == 0)}"]
        procs.append(start(node_args, [*GPT, "--history", str(tmp / "nodes.json")],
                           tmp / f"node{node}.log"))
    for node, proc in enumerate(procs):
        finish(proc, tmp / f"node{node}.log")
    nodes = json.loads((tmp / "nodes.json").read_text())
    assert nodes["world_size"] == 2
    assert losses(tmp / "nodes.json") == pytest.approx(losses(runs["one"]), rel=RTOL)


# --- in one process ---


def test_one_process_is_rank_zero_of_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun() and not distributed.init_from_env()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    x = torch.arange(3.0)
    assert distributed.all_reduce_mean(x) is x
    assert distributed.all_gather_object({"a": 1}) == [{"a": 1}]
    distributed.barrier()
    distributed.shutdown()
    assert distributed.rank_device("cuda") == torch.device("cuda")  # no LOCAL_RANK to apply
    monkeypatch.setenv("LOCAL_RANK", "1")
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "0")
    assert distributed.rank_device("cuda") == torch.device("cuda", 1)
    assert distributed.rank_device("cpu") == torch.device("cpu")
    with pytest.raises(TypeError, match="values: expected a torch.Tensor, got list"):
        distributed.all_reduce_mean([1.0])


def test_shard_batch_gives_each_rank_its_rows_once() -> None:
    x, y = torch.arange(24).reshape(12, 2), torch.arange(12)
    parts = [p for r in range(2) for p in shard_batch({"x": x, "y": [y]}, r, 2, 3)]
    assert len(parts) == 6 and all(p["x"].shape == (2, 2) for p in parts)
    assert torch.equal(torch.cat([p["y"][0] for p in parts]), y)  # every row once, in order
    assert shard_batch(x, 0, 1, 1)[0] is x  # one process, one micro-batch: untouched
    with pytest.raises(ValueError, match=r"batch of 12 rows does not split into world_size=5 "
                                         r"x accumulation_steps=1 = 5 equal parts"):
        shard_batch(x, 0, 5)
    with pytest.raises(ValueError, match=r"B rows first.*\[12, 11\]"):
        shard_batch((x, y[:11]), 0, 2)


@contextlib.contextmanager
def gloo_group_of_one():
    """A real process group of one rank (gloo), so that the Trainer wraps its model in
    DistributedDataParallel, as under torchrun."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0,
                            world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def tiny_regression():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g)
    return model, (lambda step: (x[step % 4 * 16:][:16], y[step % 4 * 16:][:16]))


def mse(model, batch):
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def test_ddp_of_one_rank_changes_nothing_and_reaches_model_attributes() -> None:
    config = TrainConfig(steps=6, lr=1e-2, device="cpu", progress=False, log_every=1,
                         accumulation_steps=2)
    plain_model, batches = tiny_regression()
    plain = Trainer(plain_model, mse, batches, config)
    assert plain.train_model is plain_model
    plain.fit()
    with gloo_group_of_one():
        model, batches = tiny_regression()
        model.scale = 1.0  # an attribute that loss_fn reads through the DDP wrapper
        ddp = Trainer(model, lambda m, b: m.scale * mse(m, b), batches, config)
        assert isinstance(ddp.train_model, nn.parallel.DistributedDataParallel)
        assert ddp.model is model and ddp.world_size == 1
        ddp.fit()
        assert ddp.history.loss == plain.history.loss  # an all-reduce over one rank is exact

        model, batches = tiny_regression()
        bypass = Trainer(model, lambda m, b: mse(m.module, b), batches, config)
        with pytest.raises(RuntimeError, match=r"loss_fn: under torchrun it must call the model"):
            bypass.fit()


@pytest.mark.parametrize("model_name", ["vit", "mamba"])
def test_the_script_trains_the_other_chapters_models(model_name: str, tmp_path: Path) -> None:
    history = train.main(["--model", model_name, "--steps", "2", "--batch", "8", "--width", "16",
                          "--layers", "1", "--block", "16", "--quiet", "--eval-every", "2",
                          "--history", str(tmp_path / "h.json")])
    assert len(history.loss) == 2 and len(history.eval) == 1
    saved = json.loads((tmp_path / "h.json").read_text())
    assert saved["settings"]["model"] == model_name and len(saved["train"]) == 2


def test_the_script_explains_a_resume_without_a_checkpoint() -> None:
    with pytest.raises(SystemExit, match="--resume: needs --checkpoint PATH"):
        train.main([*GPT, "--resume"])


# --- GPU: fp16/bf16 training, and DDP with nccl ---


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_training_on_cuda(precision: str, tmp_path: Path) -> None:
    history = train.main([*GPT, "--steps", "30", "--device", "cuda", "--precision", precision,
                          "--history", str(tmp_path / "h.json")])
    assert all(torch.isfinite(torch.tensor(history.loss)))
    assert history.loss[-1] < history.loss[0] - 0.5
    if precision == "fp16":
        assert history.last("loss_scale") > 1  # the GradScaler ran (and did not collapse)


@pytest.mark.gpu
def test_ddp_with_nccl_follows_the_one_process_curve(tmp_path: Path) -> None:
    processes = min(2, torch.cuda.device_count())  # NCCL wants one GPU per process
    args = [*GPT, "--device", "cuda"]
    train.main([*args, "--history", str(tmp_path / "one.json")])
    torchrun(["--standalone", f"--nproc_per_node={processes}"],
             [*args, "--history", str(tmp_path / "ddp.json")], tmp_path / "ddp.log")
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["world_size"] == processes
    assert losses(tmp_path / "ddp.json") == pytest.approx(losses(tmp_path / "one.json"),
                                                          rel=1e-3)


def _ranks_and_sum() -> tuple[int, int, torch.Tensor]:
    total = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(total)  # 1 + 2 on both ranks
    return distributed.rank(), distributed.world_size(), total


def _fails_on_rank_one() -> None:
    if dist.get_rank() == 1:
        raise ValueError("the data of rank 1 is bad")


def _rank_one_never_joins() -> None:
    if dist.get_rank() == 1:
        time.sleep(60)
    dist.all_reduce(torch.ones(1))


def test_a_local_group_runs_a_collective_and_returns_in_rank_order() -> None:
    results = distributed.run_local_group(_ranks_and_sum, 2)
    assert [(r, w) for r, w, _ in results] == [(0, 2), (1, 2)]
    assert all(total.item() == 3.0 for _, _, total in results)
    assert not distributed.is_initialized()  # this process stays out of the group


def test_a_local_group_names_the_rank_that_failed_and_the_one_that_hangs() -> None:
    with pytest.raises(RuntimeError, match="rank 1 of 2 failed: ValueError: the data of rank 1"):
        distributed.run_local_group(_fails_on_rank_one, 2)
    with pytest.raises(TimeoutError, match=r"rank\(s\) \[0, 1\] of 2 did not finish in 3 s"):
        distributed.run_local_group(_rank_one_never_joins, 2, timeout=3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(fn=3), "fn: expected a function"),
    (dict(fn=print, world_size=0), "world_size: expected an integer >= 1"),
    (dict(fn=print, timeout=-1), "timeout: expected a number of seconds > 0"),
])
def test_a_local_group_checks_its_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        distributed.run_local_group(**kwargs)
