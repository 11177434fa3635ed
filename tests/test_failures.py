"""Bad input everywhere: exit 2, one line naming what was wrong and how to fix it, nothing damaged.

And the NaN guard: a learning rate far too high stops at the first non-finite step, exit 3.
"""

import dataclasses
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import TINY_FLAGS, tiny_config

from vggjax import data
from vggjax.cli import main
from vggjax.config import TrainConfig
from vggjax.nn.fit import from_config
from vggjax.run.checkpoint import RunCheckpoints
from vggjax.run.files import atomic_write_text
from vggjax.run.folder import RunDir
from vggjax.run.meta import Position, model_signature
from vggjax.run.weights import save_variables
from vggjax.training.optim import make_optimizer
from vggjax.training.steps import create_train_state

RUN = tiny_config(arch="vgg11_bn", limit_train=64, limit_test=64, batch_size=16)


def make_run(run_dir: Path, config: TrainConfig = RUN, checkpoint_of: TrainConfig | None = RUN) -> Path:
    """A run folder as ``vggjax train`` leaves it after one saved step (no training needed)."""
    run_dir.mkdir(parents=True)
    atomic_write_text(run_dir / "config.json", config.to_json() + "\n")
    (run_dir / "metrics.jsonl").write_text("")
    if checkpoint_of is not None:
        state = create_train_state(
            from_config(checkpoint_of), make_optimizer(checkpoint_of, 4), jax.random.key(0), (1, 32, 32, 1)
        )
        state = state.replace(step=jnp.asarray(1, jnp.int32))
        with RunCheckpoints(run_dir / "checkpoints") as ckpts:
            ckpts.save(
                state, rng=jax.random.key(1), position=Position(1, 1), model=model_signature(checkpoint_of)
            )
    return run_dir


def snapshot(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def data_dir_with(tmp_path: Path, bad: bytes) -> Path:
    """The real Fashion-MNIST files, but the test labels replaced by ``bad``."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (folder / name).symlink_to(data.DEBIAN_DIR / name)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(bad)
    return folder


# 10,000 labels in digit MNIST's test split's class counts
DIGIT_MNIST_LIKE_LABELS = np.repeat(
    np.arange(10, dtype=np.uint8), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
).tobytes()


def real_test_labels() -> bytes:
    return gzip.decompress((data.DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())


def setup_case(case: str, tmp_path: Path) -> tuple[list[str], Path]:
    """The flags of one bad-input case, and the folder whose content must survive it."""
    out = tmp_path / "out"
    new = ["--out", str(out), "--limit-train", "64", "--limit-test", "64"]
    if case == "other arch":
        make_run(out, config=dataclasses.replace(RUN, arch="vgg11"), checkpoint_of=RUN)
        return ["--resume", str(out)], out
    if case == "truncated checkpoint":
        make_run(out)
        files = [p for p in (out / "checkpoints").rglob("*") if p.is_file()]
        big = max(files, key=lambda p: p.stat().st_size)
        big.write_bytes(big.read_bytes()[:100])
        return ["--resume", str(out)], out
    if case == "existing run":
        make_run(out)
        return new, out
    if case in ("not a run", "not a run, --overwrite"):
        out.mkdir()
        (out / "thesis.tex").write_text("years of work")
        return [*new, "--overwrite"] if "overwrite" in case else new, out
    if case == "resume missing":
        return ["--resume", str(tmp_path / "nope")], out
    if case == "resume no checkpoint":
        make_run(out, checkpoint_of=None)
        return ["--resume", str(out)], out
    if case == "resume disagrees":
        make_run(out)
        return ["--resume", str(out), "--lr", "0.5"], out
    if case == "resume and overwrite":
        make_run(out)
        return ["--resume", str(out), "--overwrite"], out
    if case == "unwritable: parent is a file":
        (tmp_path / "file").write_text("x")
        return ["--out", str(tmp_path / "file" / "run"), "--limit-train", "64"], tmp_path
    if case == "unwritable: /sys":
        return ["--out", "/sys/vggjax-run", "--limit-train", "64"], out
    idx = {
        "IDX wrong magic": b"\x01\x02\x03\x04" + bytes(100),
        "IDX truncated": gzip.compress(real_test_labels()[:5000]),
        "IDX corrupt gzip": gzip.compress(real_test_labels())[:3000],
        # the magic and the count written little-endian
        "IDX byte-swapped": b"\x01\x08\0\0" + (10000).to_bytes(4, "little") + real_test_labels()[8:],
        # a valid IDX labels file, but not 1000 of each class
        "labels not Fashion-MNIST's": real_test_labels()[:8] + DIGIT_MNIST_LIKE_LABELS,
    }
    if case in idx:
        return [*new, "--data-dir", str(data_dir_with(tmp_path, idx[case]))], out
    return [*new, *CASES[case][0]], out


CASES = {
    # case: (flags, what the one-line message must contain)
    "arch unbalanced": (["--arch", "((1,16),(1,32)"], "cannot parse arch '((1,16),(1,32)'"),
    "arch empty": (["--arch", ""], "cannot parse arch ''"),
    "arch no blocks": (["--arch", "()"], "arch must be a non-empty tuple"),
    "arch zero convs": (["--arch", "((0,16),(1,32))"], "num_convs must be a positive integer, got 0"),
    "arch negative channels": (["--arch", "((1,-16),)"], "channels must be a positive integer, got -16"),
    "arch non-integer convs": (["--arch", "((1.5,16),)"], "num_convs must be a positive integer, got 1.5"),
    "arch unknown name": (["--arch", "vgg99"], "unknown arch 'vgg99'; use one of"),
    "width zero": (["--width", "0"], "width multiplier must be > 0, got 0.0"),
    "width negative": (["--width", "-0.5"], "width multiplier must be > 0, got -0.5"),
    "width infinite": (["--width", "inf"], "width multiplier must be finite, got inf"),
    "image too small": (
        ["--image-size", "16"],
        "--image-size 16 is too small for 5 2x2 max-pools; use at least 32",
    ),
    "lr infinite": (["--lr", "inf"], "--lr must be finite, got inf"),
    "weight decay infinite": (["--weight-decay", "inf"], "--weight-decay must be finite, got inf"),
    "warmup infinite": (["--warmup-epochs", "inf"], "--warmup-epochs must be finite, got inf"),
    "seed negative": (["--seed", "-1"], "--seed must be an integer in [0, 2**32), got -1"),
    "seed too large": (["--seed", str(2**32)], "--seed must be an integer in [0, 2**32), got 4294967296"),
    "out empty": (["--out", ""], "--out is empty; give it a folder, or drop --out"),
    "resume empty": (["--resume", ""], "--resume is empty; give it a folder, or drop --resume"),
    "init-from empty": (["--init-from", ""], "--init-from is empty; give it a folder, or drop --init-from"),
    "data-dir empty": (["--data-dir", ""], "--data-dir is empty; give it a folder, or drop --data-dir"),
    "batch zero": (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    "batch negative": (["--batch-size", "-8"], "--batch-size must be a positive integer, got -8"),
    "checkpoint-every zero": (["--checkpoint-every", "0"], "--checkpoint-every must be a positive integer"),
    "keep zero": (["--keep", "0"], "--keep must be a positive integer, got 0"),
    "missing data dir": (
        ["--data-dir", "/nonexistent/fmnist"],
        "data directory /nonexistent/fmnist does not exist",
    ),
    "IDX wrong magic": ([], "t10k-labels-idx1-ubyte.gz: not an IDX file"),
    "IDX truncated": ([], "t10k-labels-idx1-ubyte.gz: truncated: header declares shape (10000,)"),
    "IDX corrupt gzip": ([], "t10k-labels-idx1-ubyte.gz: truncated or corrupt gzip stream"),
    "IDX byte-swapped": ([], "t10k-labels-idx1-ubyte.gz: IDX header looks byte-swapped: it starts with"),
    "labels not Fashion-MNIST's": ([], "t10k-labels-idx1-ubyte.gz: content has SHA-256 "),
    "other arch": ([], "was written for model ((1,8),(1,16),(2,32),(2,64),(2,64))+batch_norm"),
    "truncated checkpoint": ([], "checkpoints/1 is truncated or unreadable"),
    "existing run": ([], "already holds a vggjax run; pass --resume"),
    "not a run": ([], "is not empty and is not a vggjax run"),
    "not a run, --overwrite": ([], "is not empty and is not a vggjax run"),
    "unwritable: parent is a file": ([], "cannot write output folder"),
    "unwritable: /sys": ([], "cannot write output folder /sys/vggjax-run"),
    "resume missing": ([], "nope: no such folder"),
    "resume no checkpoint": ([], "the run holds no checkpoint"),
    "resume disagrees": ([], "--lr 0.5 disagrees with the run's saved lr = 0.05"),
    "resume and overwrite": ([], "--resume and --overwrite contradict each other"),
    # --- resource bounds (issue 13: 5): refused before the run folder is made
    "image size astronomical": (
        ["--image-size", "100000"],
        "one training step (batch 128 at 100000x100000) needs about ",
    ),
    "hidden astronomical": (
        ["--hidden", "1000000000"],
        "one training step (batch 128 at 32x32) needs about ",
    ),
    "eval batch astronomical": (
        ["--eval-batch-size", "100000000"],
        "use a smaller --eval-batch-size, --image-size, --hidden or --width",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_damages_nothing(case, tmp_path, capsys):
    args, keep = setup_case(case, tmp_path)
    before = snapshot(keep)
    assert main(["train", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert CASES[case][1] in err, err
    assert snapshot(keep) == before  # nothing already written is damaged (or created)


# ``vggjax train --resume RUN``, then a second for late callbacks and a garbage collection
# before the interpreter exits: whatever orbax left behind reports itself by then.
RESUME_AND_COLLECT = """
import gc, sys, time
from vggjax.cli import main
status = main(["train", "--no-progress", "--resume", sys.argv[1]])
time.sleep(1)
gc.collect()
sys.exit(status)
"""


@pytest.mark.parametrize("which", ["manifest.ocdbt", "d"])
def test_resume_from_emptied_checkpoint_file_prints_only_the_error_line(which, tmp_path):
    # A failed array read used to leave orbax's other reads pending on the event loop it
    # had closed: "Event loop is closed" and dozens of never-retrieved exceptions followed
    # the error line.
    out = make_run(tmp_path / "out")
    state = out / "checkpoints" / "1" / "state"
    victim = state / which if which != "d" else next((state / "d").iterdir())  # the OCDBT b-tree
    victim.write_bytes(b"")
    before = snapshot(out)
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_AND_COLLECT, str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert err.count("\n") == 1, err[-3000:]  # one line and nothing after it
    assert err.startswith(f"error: checkpoint {out / 'checkpoints' / '1'} is truncated or unreadable ("), err
    assert err.endswith("); delete that folder to resume from the one before it\n"), err
    assert snapshot(out) == before


EVAL_AND_COLLECT = RESUME_AND_COLLECT.replace('"train", "--no-progress", "--resume", ', '"eval", ')


def test_eval_with_emptied_weights_file_prints_only_the_error_line(tmp_path):
    # The final weights are read by the same orbax machinery as checkpoints, and failed
    # the same way (13 lines of "Event loop is closed" after the error line).
    out = make_run(tmp_path / "out", checkpoint_of=None)
    state = create_train_state(from_config(RUN), make_optimizer(RUN, 4), jax.random.key(0), (1, 32, 32, 1))
    save_variables(out / "weights", {"params": state.params, "batch_stats": state.batch_stats})
    (out / "weights" / "manifest.ocdbt").write_bytes(b"")
    before = snapshot(out)
    proc = subprocess.run(
        [sys.executable, "-c", EVAL_AND_COLLECT, str(out)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith(f"error: cannot load weights from {out / 'weights'}"), proc.stderr
    assert snapshot(out) == before


def test_far_too_high_lr_stops_at_first_non_finite_step(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--arch", "vgg11_bn", *TINY_FLAGS, "--batch-size", "16"]
    flags += ["--limit-train", "512", "--limit-test", "64", "--lr", "10", "--momentum", "0"]
    flags += ["--schedule", "constant", "--checkpoint-every", "1", "--no-progress", "--out", str(out)]
    assert main(["train", *flags]) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: training diverged at step ")
    step = int(err.split("at step ")[1].split()[0])
    assert f"(epoch 1, batch {step}): loss " in err and "at learning rate 10;" in err
    assert f"the last good checkpoint, step {step - 1}, is kept in {out / 'checkpoints'}" in err
    assert json.loads((out / "config.json").read_text())["lr"] == 10
    assert (out / "metrics.jsonl").read_text() == ""
    with RunCheckpoints(out / "checkpoints") as ckpts:
        assert ckpts.latest_step() == step - 1
        params = ckpts.read()["state"]["params"]
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))
    shutil.rmtree(out)


def test_overwrite_replaces_only_the_runs_own_files(tmp_path):
    out = make_run(tmp_path / "out")
    (out / "notes.txt").write_text("mine")
    RunDir(out).check_new(overwrite=True)
    RunDir(out).prepare(overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# Bad input to the other subcommands. Each case is a function of ``tmp_path`` returning
# ``(argv, folder that must come through unchanged, what the one-line message must contain)``.
COMMAND_CASES: dict = {}


def command_case(fn):
    """Registers a bad-input case of a subcommand other than train, under its function name."""
    COMMAND_CASES[fn.__name__] = fn
    return fn


@command_case
def summary_unparsable_arch(tmp_path):
    return ["summary", "--arch", "((1,16)"], tmp_path, "cannot parse arch '((1,16)'"


# --- resource bounds, adaptive upsampling, summary head/pooling (issue 13: 5, 6, 8)
MEMORY_FIX = "available on this machine; use a smaller --batch-size, --image-size, --hidden or --width"


@command_case
def bench_image_size_astronomical(tmp_path):
    return ["bench", "--image-size", "100000"], tmp_path, MEMORY_FIX


@command_case
def bench_hidden_astronomical(tmp_path):
    return ["bench", "--hidden", "1000000000"], tmp_path, MEMORY_FIX


@command_case
def summary_pooling_with_flatten_head(tmp_path):
    message = (
        "pooling 'avg' (--pooling) is a headless model's global pooling, and the 'flatten' head has none"
    )
    return ["summary", "--pooling", "avg"], tmp_path, message + "; choose --head none (head=None) to pool"


@command_case
def summary_pooling_with_adaptive_head(tmp_path):
    return ["summary", "--head", "adaptive", "--pooling", "max"], tmp_path, "the 'adaptive' head has none"


# --- dilation (issue 13: 13)

# --- export-torchvision, _bn apply, resume of a finished run, error text (issue 13: 7, 9, 11, 12)


@pytest.mark.parametrize("case", list(COMMAND_CASES))
def test_bad_command_input_is_one_line_exit_2_and_damages_nothing(case, tmp_path, capsys):
    argv, keep, message = COMMAND_CASES[case](tmp_path)
    before = snapshot(keep)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert snapshot(keep) == before
