"""Bad input everywhere: exit 2, one line naming what was wrong and how to fix it, nothing damaged.

And the NaN guard: a learning rate far too high stops at the first non-finite step, exit 3.
"""

import atexit
import dataclasses
import functools
import gzip
import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import TINY_TRAIN_FLAGS, save_finished_state, tiny_config

from vggjax import data
from vggjax.cli import main
from vggjax.config import TrainConfig
from vggjax.errors import first_line, shorten
from vggjax.interop import hub
from vggjax.nn.fit import from_config
from vggjax.run.checkpoint import RunCheckpoints
from vggjax.run.files import atomic_write_text
from vggjax.run.folder import RunDir
from vggjax.run.meta import Position, model_signature
from vggjax.run.resume import already_complete
from vggjax.run.weights import save_variables
from vggjax.training.optim import make_optimizer
from vggjax.training.steps import create_train_state
from vggjax.training.train import train_and_evaluate

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


def data_dir_with_100_train_images(tmp_path: Path) -> Path:
    """The real Fashion-MNIST test split, but a training split of its first 100 images only."""
    folder = tmp_path / "fmnist100"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).symlink_to(data.DEBIAN_DIR / name)
    for name, header, item in (("images-idx3", (2051, 100, 28, 28), 784), ("labels-idx1", (2049, 100), 1)):
        real = gzip.decompress((data.DEBIAN_DIR / f"train-{name}-ubyte.gz").read_bytes())
        head = b"".join(n.to_bytes(4, "big") for n in header)
        (folder / f"train-{name}-ubyte.gz").write_bytes(gzip.compress(head + real[len(head) :][: 100 * item]))
    return folder


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
    if case.startswith("val-size") and "data" in case:  # the 100 training images below
        small = ["--data-dir", str(data_dir_with_100_train_images(tmp_path)), "--no-verify-data"]
        sizes = [] if case == "val-size above the data" else ["--val-size", "50", "--batch-size", "64"]
        return [*new, *small, *sizes], out
    if case == "batch above all the data":  # --limit-train above the 100 training images there are
        small = ["--data-dir", str(data_dir_with_100_train_images(tmp_path)), "--no-verify-data"]
        return [*new, *small, "--limit-train", "1000", "--batch-size", "128", "--val-size", "0"], out
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
    "preset unknown": (["--preset", "gpu"], "unknown preset 'gpu'; use one of default, d2l, fast, best"),
    "width zero": (["--width", "0"], "width multiplier must be > 0, got 0.0"),
    "width negative": (["--width", "-0.5"], "width multiplier must be > 0, got -0.5"),
    "width infinite": (["--width", "inf"], "width multiplier must be finite, got inf"),
    "arch huge convs": (
        ["--arch", "((100000000,16),)"],
        "block 1 (100000000, 16): num_convs 100,000,000 is over the limit of 64 (per block; VGG-19 has 4)",
    ),
    "arch too many convs in all": (
        ["--arch", str(((64, 8),) * 5)],
        "arch blocks 1-5: convs in all 320 is over the limit of 256 (VGG-19 has 16); use fewer blocks",
    ),
    "arch huge channels": (
        ["--arch", "((1,1000000),)"],
        "channels 1,000,000 is over the limit of 16,384 (32x VGG's widest, 512); use fewer channels",
    ),
    "width huge": (
        ["--width", "1e9"],
        "width multiplier 1e+09 gives block 4 512,000,000,000 channels, over the limit of 16,384 "
        "(32x VGG's widest, 512); use a width of at most 32",
    ),
    "arch zero dilation": (
        ["--arch", "((2,16,3,0),)"],
        "dilations must be positive integers (1: no dilation), got 0",
    ),
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
    # issue 13, 12: error text
    "init-from missing": (["--init-from", "/nonexistent/run"], "/nonexistent/run: no such folder"),
    "arch literal of 100 kB": (
        ["--arch", "((1,16)," * 12500],
        "cannot parse arch '((1,16),((1,16),((1,16),",  # and not the other 99.8 kB (length below)
    ),
    "batch above all the data": (
        [],
        "--batch-size 128 is larger than the 100 training examples; the data holds no more, so lower "
        "--batch-size to 100 or less",
    ),
    # --- the validation split (issue 15, 1)
    "val-size negative": (
        ["--val-size", "-1"],
        "--val-size must be an integer >= 0 (0 validates on the test split), got -1",
    ),
    "val-size leaves less than a batch": (
        ["--val-size", "59950"],
        "--val-size 59950 leaves 50 of the 60000 training images, fewer than --batch-size 128; lower "
        "--val-size or --batch-size",
    ),
    "val-size above the data": (
        [],
        "--val-size 5000 is more than the 100 training images there are; lower --val-size",
    ),
    "val-size leaves less than a batch of the data": (
        [],
        "--batch-size 64 is larger than the 50 training examples; 50 more are held out for validation, "
        "so lower --batch-size or --val-size",
    ),
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
    # --- recipe pieces (issue 15: 2, 3)
    "crop-pad negative": (
        ["--crop-pad", "-1"],
        "--crop-pad must be an integer in [0, 16] (half the image), got -1",
    ),
    "crop-pad above half": (
        ["--crop-pad", "17"],
        "--crop-pad must be an integer in [0, 16] (half the image), got 17",
    ),
    "erase above 1": (["--erase", "1.5"], "--erase must be in [0, 1], got 1.5"),
    "erase nan": (["--erase", "nan"], "--erase must be in [0, 1], got nan"),
    "label smoothing 1": (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1.0"),
    "label smoothing negative": (
        ["--label-smoothing", "-0.1"],
        "--label-smoothing must be in [0, 1), got -0.1",
    ),
    "ema 1": (["--ema", "1"], "--ema must be in [0, 1), got 1.0"),
    "ema infinite": (["--ema", "inf"], "--ema must be in [0, 1), got inf"),
    "nesterov without momentum": (
        ["--nesterov", "--momentum", "0"],
        "--nesterov needs --momentum > 0; add --momentum 0.9 or drop --nesterov",
    ),
}

# What a one-line error must never show: a Python object's repr (orbax's TensorStore
# "<bound method pybind11_detail_function_record…>"), or a 100 kB echo of the input.
OBJECT_REPR = re.compile(r"<(bound method |function |built-in |[\w.]+ object at 0x)")
LONGEST_MESSAGE = 1000  # characters; the longest real message is under 500


def assert_clean_message(err: str) -> None:
    assert not OBJECT_REPR.search(err), err
    assert len(err) < LONGEST_MESSAGE, f"{len(err)} characters: {err[:300]}…"


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_damages_nothing(case, tmp_path, capsys):
    args, keep = setup_case(case, tmp_path)
    before = snapshot(keep)
    assert main(["train", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert CASES[case][1] in err, err
    assert_clean_message(err)
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
    flags = ["--arch", "vgg11_bn", *TINY_TRAIN_FLAGS, "--batch-size", "16"]
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


@command_case
def receptive_field_huge_num_convs(tmp_path):
    # used to build a 100-million-entry kernel list: MemoryError (or minutes of swapping)
    message = "error: block 1 (100000000, 16): num_convs 100,000,000 is over the limit of 64 (per block; "
    return ["receptive-field", "--arch", "((100000000,16),)"], tmp_path, message + "VGG-19 has 4)"


@command_case
def receptive_field_too_many_convs_in_all(tmp_path):
    arch = str(((64, 8),) * 5)
    return (
        ["receptive-field", "--arch", arch],
        tmp_path,
        "arch blocks 1-5: convs in all 320 is over the limit of 256",
    )


@command_case
def summary_huge_width(tmp_path):
    message = "width multiplier 1e+09 gives block 4 512,000,000,000 channels, over the limit of 16,384"
    return ["summary", "--width", "1e9"], tmp_path, message


@command_case
def summary_huge_channels(tmp_path):
    message = "block 1 (1, 100000): channels 100,000 is over the limit of 16,384"
    return ["summary", "--arch", "((1,100000),)"], tmp_path, message


@command_case
def receptive_field_zero_dilation(tmp_path):
    message = "block 1 (3, 16, 3, 0): dilations must be positive integers (1: no dilation), got 0"
    return ["receptive-field", "--arch", "((3,16,3,0),)"], tmp_path, message


@command_case
def receptive_field_fractional_dilation(tmp_path):
    message = "block 1 (3, 16, 3, 1.5): dilations must be an int or a tuple of 3 ints, got 1.5"
    return ["receptive-field", "--arch", "((3,16,3,1.5),)"], tmp_path, message


@command_case
def summary_dilations_of_the_wrong_length(tmp_path):
    message = "block 1 (3, 16, 3, (1, 2)): dilations must be an int or a tuple of 3 ints, got (1, 2)"
    return ["summary", "--arch", "((3,16,3,(1,2)),)"], tmp_path, message


@command_case
def receptive_field_huge_dilation(tmp_path):
    message = (
        "block 1 (1, 16, 3, 1000): dilation 1,000 is over the limit of 256 (a 3x3 conv then spans 513 pixels)"
    )
    return ["receptive-field", "--arch", "((1,16,3,1000),)"], tmp_path, message


@command_case
def export_torchvision_dilated_run(tmp_path):
    # torchvision's VGG would load the weights (same shapes) and run them undilated
    config = tiny_config(arch="((1,64),(1,128,3,2),(2,256),(2,512),(2,512))")
    run = make_run(tmp_path / "run", config=config, checkpoint_of=None)
    state = create_train_state(
        from_config(config), make_optimizer(config, 4), jax.random.key(0), (1, 32, 32, 1)
    )
    save_variables(run / "weights", {"params": state.params, "batch_stats": state.batch_stats})
    message = (
        "torchvision's VGG has no dilated convs, but this arch dilates conv2_1 (2): torchvision.models.vgg*"
    )
    return ["export-torchvision", str(run), str(tmp_path / "out.safetensors")], tmp_path, message


# --- export-torchvision, _bn apply, resume of a finished run, error text (issue 13: 7, 9, 11, 12)

# --- weights by name (issue 14)


@pytest.fixture(autouse=True)
def weights_offline(tmp_path, monkeypatch):
    """Weights names download into tmp_path/home from a closed port on 127.0.0.1: offline, always.

    No test here reaches the network, and whatever a refused command left in the cache would
    show in the snapshot of tmp_path.
    """
    monkeypatch.setenv("VGGJAX_HOME", str(tmp_path / "home"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    for key, w in hub.REGISTRY.items():
        monkeypatch.setitem(hub.REGISTRY, key, dataclasses.replace(w, url=closed + w.file))


def offline(tmp_path, key="vgg16:IMAGENET1K_V1"):
    """The whole message for downloading ``key`` with no server."""
    w = hub.REGISTRY[key]
    return (
        f"error: cannot download {w.url} (Connection refused); download it by hand and save it as "
        f"{tmp_path / 'home' / 'weights' / w.file} (its SHA-256 starts {w.sha256_prefix}), then run again\n"
    )


@command_case
def weights_get_unknown_arch(tmp_path):
    message = "torchvision has no weights for 'vgg15'; the names are vgg11, vgg11_bn, vgg13,"
    return ["weights", "get", "vgg15"], tmp_path, message


@command_case
def weights_get_unknown_weights_name(tmp_path):
    message = "no vgg16 weights named 'IMAGENET1K_V2'; vgg16's are IMAGENET1K_V1, IMAGENET1K_FEATURES"
    return ["weights", "get", "vgg16", "--name", "IMAGENET1K_V2"], tmp_path, message


@command_case
def weights_get_offline(tmp_path):
    return ["weights", "get", "vgg16"], tmp_path, offline(tmp_path)


@command_case
def predict_imagenet_by_name_offline(tmp_path):
    return ["predict-imagenet", "vgg16", str(tmp_path / "a.png")], tmp_path, offline(tmp_path)


@command_case
def predict_imagenet_features_only_weights(tmp_path):
    argv = ["predict-imagenet", "vgg16:IMAGENET1K_FEATURES", str(tmp_path / "a.png")]
    return argv, tmp_path, "vgg16:IMAGENET1K_FEATURES is torchvision's features-only file: its classifier"


@command_case
def convert_by_name_with_another_arch(tmp_path):
    argv = ["convert-torchvision", "vgg16", "--arch", "vgg11", "--out", str(tmp_path / "out")]
    return argv, tmp_path, "--arch vgg11 contradicts vgg16:IMAGENET1K_V1, which is vgg16; drop --arch"


@command_case
def convert_by_name_into_a_used_folder_before_downloading(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    argv = ["convert-torchvision", "vgg16_bn", "--out", str(tmp_path / "out")]
    return argv, tmp_path, f"output folder {tmp_path / 'out'} is not empty and is not a vggjax run"


@command_case
def convert_file_without_arch(tmp_path):
    argv = ["convert-torchvision", str(tmp_path / "w.pth"), "--out", str(tmp_path / "out")]
    return argv, tmp_path, f"--arch is needed with a file: the arch {tmp_path / 'w.pth'} holds"


@command_case
def train_init_from_name_offline(tmp_path):
    argv = ["train", "--init-from", "vgg11_bn", "--out", str(tmp_path / "out")]
    return argv, tmp_path, offline(tmp_path, "vgg11_bn:IMAGENET1K_V1")


@command_case
def train_init_from_unknown_weights_name(tmp_path):
    argv = ["train", "--init-from", "vgg16_bn:IMAGENET1K_FEATURES", "--out", str(tmp_path / "out")]
    return argv, tmp_path, "torchvision has no vgg16_bn weights named 'IMAGENET1K_FEATURES'; vgg16_bn's are"


def config_only_run(tmp_path: Path) -> Path:
    """A run folder with its config.json alone: enough for checks made before any weights are read."""
    return make_run(tmp_path / "run", checkpoint_of=None)


@command_case
def export_onto_an_existing_file(tmp_path):
    (tmp_path / "mine.safetensors").write_bytes(b"years of work")
    argv = ["export-torchvision", str(config_only_run(tmp_path)), str(tmp_path / "mine.safetensors")]
    return argv, tmp_path, f"{tmp_path / 'mine.safetensors'} already exists; pass --overwrite to replace it"


@command_case
def export_to_an_npz_name(tmp_path):
    argv = ["export-torchvision", str(config_only_run(tmp_path)), str(tmp_path / "weights.npz")]
    message = (
        f"{tmp_path / 'weights.npz'} ends in .npz; export-torchvision writes .safetensors or .pth "
        "(torch.save) files only: name it weights.safetensors or weights.pth"
    )
    return argv, tmp_path, message


@command_case
def export_from_a_missing_folder(tmp_path):
    argv = ["export-torchvision", str(tmp_path / "nope"), str(tmp_path / "out.safetensors")]
    return argv, tmp_path, f"{tmp_path / 'nope'}: no such folder; give a folder written by vggjax train"


@command_case
def eval_limit_test_zero(tmp_path):
    argv = ["eval", str(config_only_run(tmp_path)), "--limit-test", "0"]
    return argv, tmp_path, "--limit-test must be a positive integer, got 0"


@command_case
def eval_batch_size_zero(tmp_path):
    argv = ["eval", str(config_only_run(tmp_path)), "--batch-size", "0"]
    return argv, tmp_path, "--batch-size must be a positive integer, got 0"


@command_case
def eval_a_missing_folder(tmp_path):
    return ["eval", str(tmp_path / "nope")], tmp_path, f"{tmp_path / 'nope'}: no such folder"


@command_case
def predict_with_a_missing_folder(tmp_path):
    argv = ["predict", str(tmp_path / "nope"), str(tmp_path / "shirt.png")]
    return argv, tmp_path, f"{tmp_path / 'nope'}: no such folder"


@command_case
def summary_arch_literal_of_100_kB(tmp_path):
    text = "((1,16)," * 12500
    return ["summary", "--arch", text], tmp_path, f"cannot parse arch '{text[:199]}… ("


@command_case
def receptive_field_unknown_arch_of_100_kB(tmp_path):
    name = "vgg" + "1" * 100_000
    return ["receptive-field", "--arch", name], tmp_path, f"unknown arch '{name[:199]}…; use one of A, B"


def test_first_line_gives_the_cause_instead_of_an_object_repr():
    # orbax wraps TensorStore's error as "… See full TensorStore details: <bound method …>"
    class Spec:
        def spec(self):
            pass

    reason = 'OUT_OF_RANGE: Error reading "params.fc6.kernel/0": byte range [1, 9) not valid'
    try:
        try:
            raise ValueError(reason + "\nmore lines")
        except ValueError as e:
            raise Exception(f"Encountered error while reading array index: (0,). See: {Spec().spec}") from e
    except Exception as e:
        wrapped = e
    assert "<bound method" in str(wrapped)
    assert first_line(wrapped) == reason
    assert first_line(wrapped, 13) == "OUT_OF_RANGE:…"
    alone = Exception(f"it failed at {object()} in the end")  # no cause: cut before the repr
    assert first_line(alone) == "it failed at"
    assert shorten("x" * 300) == "x" * 200 + "…" and shorten("short") == "short"


FINISHED = dataclasses.replace(RUN, epochs=1)
FINISHED_LINE = (
    "run {} is already complete (1 of 1 epochs); nothing to do: resume with --epochs 2 or more to train on\n"
)


def timed_snapshot(root: Path) -> dict[str, tuple]:
    """:func:`snapshot` with each entry's modification time (ns): untouched, not merely rewritten alike."""
    return {name: (digest, (root / name).stat().st_mtime_ns) for name, digest in snapshot(root).items()}


def make_finished_run(run_dir: Path) -> Path:
    """A run folder as ``vggjax train`` leaves it after its last epoch (no training needed)."""
    make_run(run_dir, config=FINISHED, checkpoint_of=None)
    record = {"epoch": 1, "step": 4, "train_loss": 2.3, "val_loss": 2.3, "val_acc": 0.1}
    save_finished_state(run_dir, FINISHED, record)
    (run_dir / "report.html").write_text("<html>the report</html>\n")
    return run_dir


def test_resume_of_a_finished_run_says_so_and_touches_nothing(tmp_path, capsys):
    # used to retrain nothing, exit 0 in silence, and rewrite weights/, report.html and the rest
    out = make_finished_run(tmp_path / "out")
    before = timed_snapshot(out)
    assert main(["train", "--no-progress", "--resume", str(out)]) == 0
    printed = capsys.readouterr()
    assert (printed.out, printed.err) == (FINISHED_LINE.format(out), "")
    assert timed_snapshot(out) == before
    # a library resume has nothing to do either; it returns the last record
    record = train_and_evaluate(FINISHED, out, resume=True, log=lambda _: None)
    assert record == json.loads((out / "metrics.jsonl").read_text())
    assert timed_snapshot(out) == before


def test_resume_of_a_run_stopped_before_its_final_files_is_not_finished(tmp_path):
    out = make_finished_run(tmp_path / "out")
    shutil.rmtree(out / "weights")  # stopped after the last checkpoint, before the weights were saved
    assert already_complete(out, FINISHED) is None  # so resuming writes them
    longer = dataclasses.replace(FINISHED, epochs=2)  # resume --epochs 2: one more epoch to train
    assert already_complete(make_finished_run(tmp_path / "again"), longer) is None


@pytest.mark.slow
def test_resume_of_a_trained_finished_run_touches_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    flags = [
        *TINY_TRAIN_FLAGS,
        "--limit-train",
        "64",
        "--limit-test",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "16",
    ]
    assert main(["train", "--no-progress", *flags, "--out", str(out)]) == 0
    capsys.readouterr()
    before = timed_snapshot(out)
    assert main(["train", "--no-progress", "--resume", str(out)]) == 0
    printed = capsys.readouterr()
    assert (printed.out, printed.err) == (FINISHED_LINE.format(out), "")
    assert timed_snapshot(out) == before


# --- lpips (issue 14)


def lpips_files(tmp_path, sizes=((40, 40), (40, 40)), trunk_shapes_changed=None):
    """Two PNGs of the given (W, H) and a zero VGG-16 trunk (.safetensors, optionally a key reshaped)."""
    from PIL import Image

    from vggjax.interop.torchfile import write_state_dict
    from vggjax.perceptual.weights import trunk_shapes

    images = []
    for i, size in enumerate(sizes):
        images.append(str(tmp_path / f"img{i}.png"))
        Image.new("RGB", size, (10 * i, 100, 200)).save(images[-1])
    shapes = trunk_shapes() | (trunk_shapes_changed or {})
    trunk = tmp_path / "vgg16.safetensors"
    write_state_dict(trunk, {k: np.zeros(s, np.float32) for k, s in shapes.items()})
    return images, str(trunk)


@command_case
def lpips_missing_trunk_file(tmp_path):
    images, _ = lpips_files(tmp_path)
    return ["lpips", *images, "--trunk", str(tmp_path / "vgg16.pth")], tmp_path, "no trunk file at"


@command_case
def lpips_no_trunk_given(tmp_path):
    images, _ = lpips_files(tmp_path)
    return ["lpips", *images], tmp_path, "give --trunk FILE: a torchvision VGG-16 state_dict"


@command_case
def lpips_wrong_shaped_trunk_key(tmp_path):
    images, trunk = lpips_files(tmp_path, trunk_shapes_changed={"features.7.weight": (128, 64, 1, 1)})
    message = "features.7.weight in the trunk file"
    return ["lpips", *images, "--trunk", trunk], tmp_path, message + f" {trunk} has shape [128, 64, 1, 1]"


@command_case
def lpips_lin_file_as_trunk(tmp_path):
    from vggjax.perceptual.weights import default_lin_file

    images, _ = lpips_files(tmp_path)
    argv = ["lpips", *images, "--trunk", str(default_lin_file())]
    return argv, tmp_path, "holds LPIPS lin weights (lin0.model.1.weight …), not a VGG-16"


@command_case
def lpips_other_versions_lin_file(tmp_path):
    from vggjax.perceptual.weights import default_lin_file

    images, trunk = lpips_files(tmp_path)
    argv = ["lpips", *images, "--trunk", trunk, "--lin", str(default_lin_file("0.0"))]
    return argv, tmp_path, "is the lin file of LPIPS v0.0, but version 0.1 was asked for"


@command_case
def lpips_odd_number_of_images(tmp_path):
    images, trunk = lpips_files(tmp_path, sizes=((40, 40),) * 3)
    return ["lpips", *images, "--trunk", trunk], tmp_path, "3 images given: give them in pairs, A B [A2 B2 …]"


@command_case
def lpips_size_mismatch(tmp_path):
    images, trunk = lpips_files(tmp_path, sizes=((40, 40), (48, 40)))
    message = "img1.png is 48x40; LPIPS compares images of one size: pass --resize S"
    return ["lpips", *images, "--trunk", trunk, "--spatial-out", str(tmp_path / "maps")], tmp_path, message


@command_case
def lpips_image_too_small(tmp_path):
    images, trunk = lpips_files(tmp_path, sizes=((28, 28), (28, 28)))
    return ["lpips", *images, "--trunk", trunk], tmp_path, "needs at least 32x32 pixels: pass --resize 64"


@command_case
def lpips_folders_with_other_names(tmp_path):
    _, trunk = lpips_files(tmp_path)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "img0.png").rename(tmp_path / "a" / "cat.png")
    (tmp_path / "img1.png").rename(tmp_path / "b" / "dog.png")
    argv = ["lpips", "--dir-a", str(tmp_path / "a"), "--dir-b", str(tmp_path / "b"), "--trunk", trunk]
    return argv, tmp_path, "--dir-b has no cat.png, which --dir-a has; both folders need the same names"


@command_case
def lpips_spatial_out_is_a_file(tmp_path):
    images, trunk = lpips_files(tmp_path)
    (tmp_path / "maps").write_text("mine")
    argv = ["lpips", *images, "--trunk", trunk, "--spatial-out", str(tmp_path / "maps")]
    return argv, tmp_path, "is a file; give a folder for the heat maps"


# --- export (issue 16)


@functools.cache
def _export_template() -> Path:
    """One thin VGG-11 run with weights (made once), copied into each export case's folder."""
    root = Path(tempfile.mkdtemp(prefix="vggjax-export-cases-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    config = tiny_config()
    variables = from_config(config).init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
    RunDir(root / "run").save(config, variables, overwrite=False)
    return root / "run"


def export_case(tmp_path: Path, *flags: str, out: str = "m.onnx") -> tuple[list[str], Path]:
    run = tmp_path / "run"
    shutil.copytree(_export_template(), run)
    return ["export", str(run), "--out", str(tmp_path / out), *flags], tmp_path


@command_case
def export_unknown_format(tmp_path):
    argv, keep = export_case(tmp_path, "--format", "tflite")
    return argv, keep, "unknown --format 'tflite'; use one of onnx, stablehlo"


@command_case
def export_no_format_and_unknown_suffix(tmp_path):
    return *export_case(tmp_path, out="m.bin"), "give --format (onnx, stablehlo): the suffix of"


@command_case
def export_not_a_run(tmp_path):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.tex").write_text("years of work")
    argv = ["export", str(tmp_path / "thesis"), "--out", str(tmp_path / "m.onnx")]
    return argv, tmp_path, "is not a vggjax run folder (no config.json)"


@command_case
def export_torchvision_file_without_arch(tmp_path):
    (tmp_path / "vgg16.pth").write_bytes(b"not read")
    argv = ["export", str(tmp_path / "vgg16.pth"), "--out", str(tmp_path / "m.onnx")]
    return argv, tmp_path, "is a torchvision weights file; give --arch"


@command_case
def export_image_size_below_minimum(tmp_path):
    return *export_case(tmp_path, "--image-size", "16"), "input 16x16 is too small for 5 2x2 max-pools"


@command_case
def export_flatten_head_at_another_size(tmp_path):
    return *export_case(tmp_path, "--image-size", "64"), "the run's flatten head takes exactly 32x32"


@command_case
def export_unwritable_sys(tmp_path):
    argv, keep = export_case(tmp_path)
    return [*argv[:-2], "--out", "/sys/vggjax.onnx"], keep, "cannot write /sys/vggjax.onnx"


@command_case
def export_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    return *export_case(tmp_path, out="file/m.onnx"), "cannot write"


@command_case
def export_existing_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"an earlier model")
    return *export_case(tmp_path), "m.onnx exists; pass --overwrite to replace it"


@command_case
def export_existing_sidecar(tmp_path):
    (tmp_path / "m.stablehlo.json").write_text("{}")
    return *export_case(tmp_path, out="m.stablehlo"), "m.stablehlo.json exists; pass --overwrite"


@command_case
def export_unknown_feature(tmp_path):
    return *export_case(tmp_path, "--features", "relu4_1,relu9_1"), "unknown layer name(s) ['relu9_1']"


@command_case
def export_probs_of_features(tmp_path):
    return *export_case(tmp_path, "--features", "pool5", "--output", "probs"), "no --output probs"


@command_case
def export_unknown_platform(tmp_path):
    argv, keep = export_case(tmp_path, "--platforms", "cpu,gpu", out="m.stablehlo")
    return argv, keep, "unknown --platforms ['gpu']; use some of cpu, cuda, rocm, tpu"


@command_case
def export_batch_and_dynamic_batch(tmp_path):
    return *export_case(tmp_path, "--batch", "4", "--dynamic-batch"), "give --batch N or --dynamic-batch"


@command_case
def export_zero_batch(tmp_path):
    return *export_case(tmp_path, "--batch", "0"), "--batch must be a positive integer, got 0"


# --- the validation split (issue 15, 1)


@command_case
def eval_split_val_of_a_test_validated_run(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(_export_template(), run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "val_size": 0}))
    message = "has no validation split (val_size 0: it validated on the test split); drop --split val"
    return ["eval", str(run), "--split", "val"], tmp_path, message


@command_case
def eval_split_val_with_limit_test(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(_export_template(), run)
    argv = ["eval", str(run), "--split", "val", "--limit-test", "10"]
    return argv, tmp_path, "--limit-test limits the test split; drop it with --split val"


@pytest.mark.parametrize("case", list(COMMAND_CASES))
def test_bad_command_input_is_one_line_exit_2_and_damages_nothing(case, tmp_path, capsys):
    argv, keep, message = COMMAND_CASES[case](tmp_path)
    before = snapshot(keep)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert_clean_message(err)
    assert snapshot(keep) == before
