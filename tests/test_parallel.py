"""Data parallelism: flags and env vars, batch sharding, and real runs on 4 devices and 2 processes.

The pytest process has already started JAX with one CPU device, so multi-device runs
are separate ``vggjax train`` processes with ``--xla_force_host_platform_device_count``;
they must reach the losses and weights of the same run on one device.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pytest
from tiny import TINY_TRAIN_FLAGS, tiny_config

from vggjax.cli import main
from vggjax.errors import ConfigError
from vggjax.run import checkpoint
from vggjax.training import parallel
from vggjax.training.train import train_and_evaluate

# The README's commands use exactly these flags.
ARGS = [
    "--limit-train", "256", "--limit-test", "128", "--epochs", "2", "--batch-size", "32",
    "--eval-batch-size", "64", *TINY_TRAIN_FLAGS, "--no-progress",
]  # fmt: skip
CONFIG = tiny_config(limit_train=256, limit_test=128, epochs=2, batch_size=32, eval_batch_size=64)
DEADLINE = 420  # seconds for a whole multi-process run on a busy 2-core machine
LOSS_TOL = 1e-5
PARAM_TOL = 1e-5


def _env(devices: int) -> dict:
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "PYTHONWARNINGS": "ignore",
    }


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_same_run(run, reference):
    for got, want in zip(_metrics(run), _metrics(reference), strict=True):
        assert got["step"] == want["step"]
        for key in ("train_loss", "val_loss"):
            assert got[key] == pytest.approx(want[key], abs=LOSS_TOL), key
    got = checkpoint.load_variables(run / "weights")
    want = checkpoint.load_variables(reference / "weights")
    diffs = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), got, want)
    assert max(jax.tree.leaves(diffs)) < PARAM_TOL, diffs


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory, fashion_small):
    """The reference: the test config trained in this process, on its one device."""
    assert jax.device_count() == 1
    run = tmp_path_factory.mktemp("parallel") / "one"
    with warnings.catch_warnings():  # 8 steps are too few to leave ln(10): the "stuck" warning
        warnings.simplefilter("ignore", RuntimeWarning)
        train_and_evaluate(CONFIG, run, progress=False, log=lambda s: None)
    return run


def test_resolve_spec_single_process_by_default():
    assert parallel.resolve_spec(env={}) is None


def test_resolve_spec_from_flags_and_env():
    spec = parallel.resolve_spec(coordinator="10.0.0.1:1234", num_processes=4, process_id=3, env={})
    assert spec == parallel.DistributedSpec("10.0.0.1:1234", 4, 3, parallel.DEFAULT_TIMEOUT)
    env = {"VGGJAX_COORDINATOR": "h:9", "VGGJAX_NUM_PROCESSES": "2", "VGGJAX_PROCESS_ID": "1"}
    assert parallel.resolve_spec(env={**env, "VGGJAX_DIST_TIMEOUT": "30"}) == parallel.DistributedSpec(
        "h:9", 2, 1, 30
    )
    assert parallel.resolve_spec(process_id=0, env=env).process_id == 0  # a flag beats its variable
    assert parallel.resolve_spec(auto=True, env={}) == parallel.DistributedSpec()
    assert parallel.resolve_spec(env={"VGGJAX_DISTRIBUTED": "1"}) == parallel.DistributedSpec()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"coordinator": "h:1"}, "missing --num-processes, --process-id"),
        ({"coordinator": "h", "num_processes": 2, "process_id": 0}, "HOST:PORT"),
        ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, r"--process-id must be in \[0, 2\)"),
        ({"coordinator": "h:1", "num_processes": 0, "process_id": 0}, "--num-processes must be"),
        ({"env": {"VGGJAX_NUM_PROCESSES": "two"}}, "VGGJAX_NUM_PROCESSES .* must be an integer"),
        ({"auto": True, "timeout": 0}, "--dist-timeout"),
    ],
)
def test_resolve_spec_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        parallel.resolve_spec(**{"env": {}, **kwargs})


@pytest.mark.parametrize(
    "args, message",
    [
        (["--coordinator", "127.0.0.1:1"], "missing --num-processes, --process-id"),
        (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"], "needs --out"),
    ],
)
def test_cli_multihost_flag_errors_exit_2(args, message, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_shard_batch_on_one_device_keeps_every_row():
    mesh = parallel.data_mesh()
    sharding = parallel.batch_sharding(mesh)
    batch = {"image": np.arange(4 * 2 * 2 * 1, dtype=np.uint8).reshape(4, 2, 2, 1), "label": np.arange(4)}
    np.testing.assert_array_equal(parallel.process_rows(sharding, 4), np.arange(4))
    out = parallel.shard_batch(batch, sharding)
    assert out["image"].sharding == sharding and out["image"].shape == (4, 2, 2, 1)
    np.testing.assert_array_equal(np.asarray(out["image"]), batch["image"])
    parallel.check_batch_size(3, mesh)  # any size splits over one device


@pytest.mark.slow
def test_four_devices_match_one_device(tmp_path, one_device_run):
    out = tmp_path / "four"
    p = subprocess.run(
        [sys.executable, "-m", "vggjax", "train", *ARGS, "--out", str(out)],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "devices: 4 (cpu) in 1 process(es)" in p.stdout
    _assert_same_run(out, one_device_run)


@pytest.mark.slow
def test_batch_size_must_split_over_devices(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "vggjax", "train", *ARGS, "--batch-size", "30", "--out", str(tmp_path / "r")],
        env=_env(4),
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == (
        "error: --batch-size 30 does not split over 4 devices; use a multiple of 4 (e.g. 28 or 32)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_processes(n: int, devices_each: int, args: list[str], logs: list) -> list[subprocess.Popen]:
    """Starts ``n`` ``vggjax train ARGS`` processes joined over gloo on 127.0.0.1 (a free port).

    Worker output goes to the files ``logs`` (a full pipe would block a worker inside a collective).
    """
    port = _free_port()
    workers = []
    for i, log in enumerate(logs):
        with open(log, "w") as f:
            command = [sys.executable, "-m", "vggjax", "train", *args, "--dist-timeout", "60"]
            command += [
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                str(n),
                "--process-id",
                str(i),
            ]
            workers.append(
                subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, env=_env(devices_each))
            )
    return workers


def _finish(workers: list[subprocess.Popen], logs: list, deadline: float, *, code: int = 0) -> list[str]:
    """Waits for every worker until ``deadline`` (``time.monotonic()``), kills those still running.

    Returns each worker's output; asserts that every worker exited with ``code``.
    """
    while time.monotonic() < deadline and any(w.poll() is None for w in workers):
        time.sleep(0.2)
    for w in workers:
        if w.poll() is None:
            w.kill()
        w.wait()
    texts = [log.read_text() for log in logs]
    for w, text in zip(workers, texts, strict=True):
        assert w.returncode == code, f"worker exited {w.returncode}, not {code}:\n{text[-3000:]}"
    return texts


def _logs(out, n: int, tag: str = "") -> list:
    return [out.parent / f"{out.name}{tag}.worker{i}.log" for i in range(n)]


def _run_processes(out, n: int, devices_each: int, extra: list[str]) -> list[str]:
    """Runs ``n`` processes of the test config into ``out`` under one deadline; returns their output."""
    logs = _logs(out, n)
    workers = _start_processes(n, devices_each, [*ARGS, "--out", str(out), *extra], logs)
    return _finish(workers, logs, time.monotonic() + DEADLINE)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """The test config trained uninterrupted by two processes of two CPU devices each."""
    out = tmp_path_factory.mktemp("parallel") / "two"
    return out, _run_processes(out, 2, 2, [])


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_match_one_device(two_process_run, one_device_run):
    out, logs = two_process_run
    assert "devices: 4 (cpu) in 2 process(es), 2 on this one" in logs[0]
    assert "params identical on all 2 processes (4 devices)" in logs[0]  # bitwise, checked by CRC
    assert "epoch 2/2" in logs[0] and "epoch" not in logs[1]  # only process 0 logs
    _assert_same_run(out, one_device_run)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_processes_stopped_by_sigterm_resume_to_the_same_run(tmp_path, one_device_run, two_process_run):
    """SIGTERM to both workers (as a cluster's preemption does) after their first step checkpoint:
    both stop at the same step and save; two processes resume the run to its end, bitwise
    equal to the uninterrupted two-process run."""
    out = tmp_path / "two-stopped"
    deadline = time.monotonic() + DEADLINE
    logs = _logs(out, 2)
    workers = _start_processes(2, 2, [*ARGS, "--out", str(out), "--checkpoint-every", "1"], logs)
    while not (out / "checkpoints" / "1").is_dir() and time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), [log.read_text()[-3000:] for log in logs]
        time.sleep(0.05)
    for w in workers:
        w.send_signal(signal.SIGTERM)
    texts = _finish(workers, logs, deadline, code=128 + signal.SIGTERM)
    stopped = re.search(r"stopped by SIGTERM at step (\d+); checkpoint saved", texts[0])
    assert stopped, texts[0][-3000:]
    step = int(stopped.group(1))
    assert 1 <= step < 16 and f"stopped by SIGTERM at step {step}" in texts[1]  # the same step on both
    with checkpoint.RunCheckpoints(out / "checkpoints") as ckpts:
        assert ckpts.latest_step() == step

    logs = _logs(out, 2, ".resumed")
    resume = ["--resume", str(out), "--no-progress", "--checkpoint-every", "4"]
    texts = _finish(_start_processes(2, 2, resume, logs), logs, deadline)
    assert f"resuming {out} from step {step}" in texts[0]
    assert "params identical on all 2 processes (4 devices)" in texts[0]  # bitwise, checked by CRC
    _assert_same_run(out, one_device_run)
    straight = two_process_run[0]
    with (
        checkpoint.RunCheckpoints(out / "checkpoints") as a,
        checkpoint.RunCheckpoints(straight / "checkpoints") as b,
    ):
        got, want = a.read(16)["state"], b.read(16)["state"]  # params, batch_stats, opt_state, step, rng
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
