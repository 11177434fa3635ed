"""Resume equals an uninterrupted run, bitwise on CPU: after an epoch, after Ctrl-C, after SIGKILL."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tiny import TINY_TRAIN_FLAGS, tiny_config

from vggjax.config import TrainConfig
from vggjax.errors import Interrupted
from vggjax.run.checkpoint import RunCheckpoints
from vggjax.training.loop import TIMING_FIELDS
from vggjax.training.train import train_and_evaluate

# BatchNorm (batch_stats), dropout (the key stream), momentum (optimizer state), a
# constant schedule (so one epoch then --epochs 2 is two epochs straight), augmentation
# (keyed by the step) and an EMA of the weights (more state); 32 steps per epoch.
pytestmark = pytest.mark.slow  # every test here trains and kills real runs

CONFIG = tiny_config(
    arch="vgg11_bn",
    dropout_rate=0.5,
    batch_size=16,
    eval_batch_size=128,
    epochs=2,
    lr=0.02,
    schedule="constant",
    limit_train=512,
    limit_test=128,
    checkpoint_every=5,
    crop_pad=2,
    flip=True,
    erase=0.25,
    ema=0.9,
)
FLAGS = [
    "--arch", "vgg11_bn", *TINY_TRAIN_FLAGS, "--dropout", "0.5",
    "--batch-size", "16", "--eval-batch-size", "128", "--epochs", "2", "--lr", "0.02",
    "--schedule", "constant", "--limit-train", "512", "--limit-test", "128", "--checkpoint-every", "5",
    "--crop-pad", "2", "--flip", "--erase", "0.25", "--ema", "0.9",
]  # fmt: skip
QUIET = {"progress": False, "log": lambda s: None}


def final_state(run_dir):
    """The newest checkpoint's full state tree (params, batch_stats, opt_state, step, rng)."""
    with RunCheckpoints(run_dir / "checkpoints") as ckpts:
        step = ckpts.latest_step()
        return step, ckpts.read(step)["state"]


def assert_bitwise_equal(run_a, run_b):
    step_a, a = final_state(run_a)
    step_b, b = final_state(run_b)
    assert step_a == step_b == 64
    assert "ema" in a and "ema" in b  # the EMA is checkpointed and compared too
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b and len(leaves_a) > 40
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def metric_values(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """Two epochs without a stop."""
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train_and_evaluate(CONFIG, run_dir, **QUIET)
    return run_dir


def test_one_epoch_then_resume_for_a_second_equals_two_straight(straight, tmp_path):
    run_dir = tmp_path / "run"
    first = train_and_evaluate(dataclasses.replace(CONFIG, epochs=1), run_dir, **QUIET)
    assert first["epoch"] == 1 and first["step"] == 32
    final = train_and_evaluate(CONFIG, run_dir, resume=True, **QUIET)
    assert final["epoch"] == 2
    assert_bitwise_equal(run_dir, straight)
    assert metric_values(run_dir) == metric_values(straight)  # each epoch once, same values
    assert TrainConfig.load(run_dir / "config.json").epochs == 2


def test_same_seed_and_flags_give_identical_metrics(straight, tmp_path):
    train_and_evaluate(CONFIG, tmp_path / "again", **QUIET)
    values = metric_values(tmp_path / "again")
    assert [r["epoch"] for r in values] == [1, 2]
    assert values == metric_values(straight)


def test_ctrl_c_saves_and_resume_continues_exactly(straight, tmp_path):
    run_dir = tmp_path / "run"
    lines = []

    def log(line):  # a real SIGINT, delivered while epoch 1 ends
        lines.append(line)
        if line.startswith("epoch 1/2"):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as e:
        train_and_evaluate(CONFIG, run_dir, progress=False, log=log)
    assert e.value.exit_code == 130
    assert str(e.value).startswith("stopped by SIGINT at step 32; checkpoint saved in ")
    assert str(e.value).endswith(f"resume with: vggjax train --resume {run_dir}")
    assert [r["epoch"] for r in metric_values(run_dir)] == [1]
    train_and_evaluate(CONFIG, run_dir, resume=True, **QUIET)
    assert_bitwise_equal(run_dir, straight)
    assert metric_values(run_dir) == metric_values(straight)


def cli(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "vggjax", "train", *args, "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def wait_for_checkpoint(proc, folder, after, timeout=300):
    """Polls until a complete checkpoint with a step above ``after`` exists; returns its step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.is_dir() else []
        if any(s > after for s in steps):
            return max(steps)
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint after step {after} in {timeout} s")


def test_sigkill_then_sigterm_then_resume_equals_uninterrupted(straight, tmp_path):
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    proc = cli(*FLAGS, "--out", str(run_dir))
    wait_for_checkpoint(proc, folder, after=0)
    proc.kill()  # SIGKILL: no chance to save or clean up
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    proc = cli("--resume", str(run_dir))
    line = proc.stdout.readline()
    while not line.startswith("resuming") or "from step" not in line:
        assert line, proc.communicate()
        line = proc.stdout.readline()
    killed_at = int(line.split("from step ")[1].split()[0])
    assert killed_at % 32 != 0, line  # the kill landed in the middle of an epoch
    wait_for_checkpoint(proc, folder, after=killed_at)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate()
    assert proc.returncode == 143, err
    assert f"resume with: vggjax train --resume {run_dir}" in err.strip().splitlines()[-1]

    proc = cli("--resume", str(run_dir))
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "test accuracy" in out
    assert_bitwise_equal(run_dir, straight)
    assert metric_values(run_dir) == metric_values(straight)
