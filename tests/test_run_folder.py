"""``RunDir``: the one list of a run's files, its config without weights, load / save; and two bugs
of ``vggjax train`` that came from several modules each knowing a part of a run folder."""

import json
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vggjax.cli import main
from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError, ConfigError
from vggjax.run.folder import RunDir

EVERY_FILE = [
    "config.json",
    "metrics.jsonl",
    "curves.png",
    "checkpoints",
    "weights",
    "events.out.tfevents.1712.host.1",
    "events.out.tfevents.1713.host.2",
    "report.html",
    "eval.json",
    "confusion.png",
    "mistakes.png",
]


def test_the_list_of_a_runs_files():
    assert RunDir.FILES == (
        "config.json",
        "metrics.jsonl",
        "curves.png",
        "checkpoints",
        "weights",
        "events.out.tfevents.*",
        "report.html",
        "eval.json",
        "confusion.png",
        "mistakes.png",
    )
    run = RunDir("runs/a")
    assert (run.config_file, run.eval_file, run.weights_dir) == (
        Path("runs/a/config.json"),
        Path("runs/a/eval.json"),
        Path("runs/a/weights"),
    )
    assert str(run) == "runs/a"


def test_prepare_with_overwrite_removes_every_file_of_the_list_and_nothing_else(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare(overwrite=False)
    for name in EVERY_FILE:
        if "." in name:
            (run.path / name).write_text("old")
        else:
            (run.path / name / "1").mkdir(parents=True)
    for mine in ("notes.txt", "events.txt", "plots"):
        (run.path / mine).mkdir() if mine == "plots" else (run.path / mine).write_text("mine")
    assert sorted(p.name for p in run.files()) == sorted(EVERY_FILE)
    assert [p.name for p in run.event_files()] == EVERY_FILE[5:7]
    run.prepare(overwrite=False)  # a resumed run's folder: nothing removed
    assert len(list(run.path.iterdir())) == len(EVERY_FILE) + 3
    run.prepare(overwrite=True)
    assert sorted(p.name for p in run.path.iterdir()) == ["events.txt", "notes.txt", "plots"]
    assert (run.path / "notes.txt").read_text() == "mine"


def test_config_reads_config_json_alone_and_validates_it(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(CheckpointError) as e:
        run.config()
    assert str(e.value) == (
        f"{tmp_path} is not a vggjax run folder (no config.json); give a folder written by vggjax train "
        "or vggjax convert-torchvision"
    )
    config = TrainConfig(arch="vgg13", hidden=96, num_classes=3)
    run.write_config(config)
    assert run.config() == config and run.is_run()  # no weights/ needed
    (tmp_path / "config.json").write_text(json.dumps({**json.loads(config.to_json()), "hidden": 0}))
    with pytest.raises(CheckpointError) as e:
        run.config()
    assert str(e.value) == (
        f"{tmp_path / 'config.json'} is not a usable config: --hidden must be a positive integer, got 0"
    )


def test_load_rebuilds_the_model_and_puts_the_weights_on_the_device(tiny_run):
    run = RunDir(tiny_run).load()
    assert run.config == TrainConfig.load(tiny_run / "config.json") and run.weights == tiny_run / "weights"
    assert (run.model.hidden, run.model.num_classes, run.model.dropout_rate) == (128, 10, 0.0)
    assert set(run.variables) == {"params"}  # no BatchNorm: no batch_stats collection
    kernel = run.variables["params"]["fc8"]["kernel"]
    assert isinstance(kernel, jax.Array) and kernel.shape == (128, 10)
    on_disk = RunDir(tiny_run).read_variables()
    assert on_disk["batch_stats"] == {} and isinstance(on_disk["params"]["fc8"]["kernel"], np.ndarray)
    np.testing.assert_array_equal(np.asarray(kernel), on_disk["params"]["fc8"]["kernel"])


def test_save_writes_a_new_run_and_refuses_an_earlier_one(tiny_run, tmp_path):
    source = RunDir(tiny_run)
    copy = RunDir(tmp_path / "copy")
    copy.save(source.config(), source.read_variables(), overwrite=False)
    assert sorted(p.name for p in copy.path.iterdir()) == ["config.json", "weights"]
    assert copy.config() == source.config()
    jax.tree.map(np.testing.assert_array_equal, copy.read_variables(), source.read_variables())
    with pytest.raises(
        ConfigError, match=re.escape(f"output folder {copy} already holds a vggjax run; pass")
    ):
        copy.save(source.config(), source.read_variables(), overwrite=False)


def test_train_overwrite_leaves_nothing_of_the_old_run(tiny_run, tmp_path, capsys):
    # report.html, eval.json, confusion.png, mistakes.png and the event files used to survive
    # --overwrite: the new report.html showed the old run's test scores and confusion matrix,
    # and TensorBoard two runs' curves in one folder.
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    (out / "notes.txt").write_text("mine")
    assert main(["eval", str(out), "--limit-test", "64", "--batch-size", "64", "--mistakes", "4"]) == 0
    old_events = sorted(p.name for p in out.glob("events.out.tfevents.*"))
    assert len(old_events) == 1 and "Test evaluation" in (out / "report.html").read_text()
    assert all((out / name).is_file() for name in ("eval.json", "confusion.png", "mistakes.png"))
    flags = [
        "--width",
        "0.125",
        "--hidden",
        "32",
        "--limit-train",
        "64",
        "--limit-test",
        "64",
        "--val-size",
        "200",
    ]
    flags += ["--batch-size", "32", "--epochs", "1", "--no-progress", "--out", str(out), "--overwrite"]
    assert main(["train", *flags]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in out.iterdir())
    events = [name for name in names if name.startswith("events.out.tfevents.")]
    assert len(events) == 1 and events[0] not in old_events  # only the new run's
    assert names == sorted(
        ["checkpoints", "config.json", "curves.png", "metrics.jsonl", "notes.txt", "report.html", "weights"]
        + events
    )
    report = (out / "report.html").read_text()
    assert "Test evaluation" not in report and 'alt="confusion.png"' not in report
    assert 'alt="mistakes.png"' not in report and 'alt="curves.png"' in report
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]  # 64 / 32 steps
    assert json.loads((out / "config.json").read_text())["hidden"] == 32


def test_train_init_from_reads_the_weights_once(tiny_run, tmp_path, monkeypatch, capsys):
    # The command line read the whole weights folder just for the run's config, then
    # training read it again (for VGG-16 about 0.5 GB twice).
    reads = []
    restore = ocp.StandardCheckpointer.restore

    def counting_restore(self, directory, *args, **kwargs):
        reads.append(Path(directory))
        return restore(self, directory, *args, **kwargs)

    monkeypatch.setattr(ocp.StandardCheckpointer, "restore", counting_restore)
    flags = ["--init-from", str(tiny_run), "--limit-train", "64", "--limit-test", "64", "--val-size", "200"]
    flags += ["--batch-size", "32", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "ft")]
    assert main(["train", *flags]) == 0
    assert f"initialised from {tiny_run}" in capsys.readouterr().out
    assert reads == [(tiny_run / "weights").absolute()]
