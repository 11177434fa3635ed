"""The validation split (issue 15, 1): held out of training, stratified, fixed by the seed; the test
split read only at the end; honest field names; old run folders still evaluate and resume."""

import dataclasses
import json

import numpy as np
import pytest
from tiny import save_finished_state, tiny_config

import vggjax.data.fashion_mnist as fashion_mnist
from vggjax import data
from vggjax.cli import main
from vggjax.config import TrainConfig
from vggjax.presets import PRESETS
from vggjax.run.files import read_jsonl
from vggjax.run.records import honest_records
from vggjax.run.report import write_report
from vggjax.run.resume import resume_config
from vggjax.training.inputs import load_run_data
from vggjax.training.train import train_and_evaluate

RUN = tiny_config(limit_train=64, limit_test=64, batch_size=16, epochs=2, dropout_rate=0.0)


@pytest.fixture(scope="module")
def full_train():
    """All 60,000 training images, with each one's index."""
    train = data.load_split("train")
    return {**train, "index": np.arange(len(train["label"]))}


@pytest.mark.parametrize("size", [5000, 1234, 10])
def test_split_is_stratified_disjoint_and_complete(full_train, size):
    train, val = data.split_validation(full_train, size, seed=0)
    counts = np.bincount(val["label"], minlength=10)
    assert counts.sum() == size and np.all(np.abs(counts - size / 10) < 1), counts
    assert len(np.intersect1d(train["index"], val["index"])) == 0
    assert len(train["index"]) + len(val["index"]) == 60000
    assert np.all(np.diff(train["index"]) > 0)  # the rest keeps its order: --limit-train takes its first N
    np.testing.assert_array_equal(val["image"], full_train["image"][val["index"]])


def test_split_is_fixed_by_the_seed(full_train):
    a = data.split_validation(full_train, 500, seed=0)[1]["index"]
    b = data.split_validation(full_train, 500, seed=0)[1]["index"]
    c = data.split_validation(full_train, 500, seed=1)[1]["index"]
    np.testing.assert_array_equal(a, b)
    assert len(np.intersect1d(a, c)) < 100  # another seed, another draw (~4 in common by chance)


def test_class_counts_of_unbalanced_labels():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    assert data.class_counts(labels, 10).tolist() == [5, 3, 2]
    assert data.class_counts(labels, 7).tolist() == [4, 2, 1]  # 3.5, 2.1, 1.4: the largest remainder
    assert data.class_counts(labels, 0).tolist() == [0, 0, 0]


def test_training_images_are_the_first_of_the_rest_and_never_validation(full_train):
    config = dataclasses.replace(RUN, limit_train=4096, val_size=5000, seed=3)
    inputs = load_run_data(config, progress=False, log=print)
    train_idx, val_idx = (s["index"] for s in data.split_validation(full_train, 5000, seed=3))
    assert len(inputs.train["label"]) == 4096  # --limit-train 4096 still trains on 4096 images
    np.testing.assert_array_equal(inputs.train["image"], full_train["image"][train_idx[:4096]])
    assert len(np.intersect1d(train_idx[:4096], val_idx)) == 0
    val = inputs.evals["val"]()
    np.testing.assert_array_equal(val["image"], full_train["image"][val_idx])
    assert list(inputs.evals) == ["val"]  # the test split is scored at the end only


def recording(monkeypatch):
    """Records every read of an IDX file (name, limit) and every log line, in order."""
    events = []
    read = fashion_mnist.read_idx_counted

    def counted(path, limit, **kwargs):
        events.append(("read", path.name, limit))
        return read(path, limit, **kwargs)

    monkeypatch.setattr(fashion_mnist, "read_idx_counted", counted)
    return events, lambda line: events.append(("log", line))


def test_images_read(events, before=None) -> list:
    """The test images files read (with their limits), up to the log line starting with ``before``."""
    out = []
    for kind, *what in events:
        if kind == "log" and before and what[0].startswith(before):
            break
        if kind == "read" and what[0].startswith("t10k-images"):
            out.append(what[1])
    return out


test_images_read.__test__ = False  # a helper, not a test


@pytest.mark.slow
def test_the_test_split_is_read_only_at_the_end(tmp_path, monkeypatch):
    events, log = recording(monkeypatch)
    final = train_and_evaluate(RUN, tmp_path / "run", progress=False, log=log)
    # at start only the files' check reads it (one image kept); the 64 images are read after the last epoch
    assert test_images_read(events, before="epoch 2/2") == [1]
    assert test_images_read(events) == [1, 64]
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [sorted(k for k in r if k[:4] in ("val_", "test")) for r in records] == [
        ["val_acc", "val_acc5", "val_loss"],
        ["test_acc", "test_acc5", "test_loss", "val_acc", "val_acc5", "val_loss"],
    ]
    assert final == records[-1]
    lines = [what[0] for kind, *what in events if kind == "log"]
    test_line = next(line for line in lines if line.startswith("test loss"))
    assert test_line == (
        f"test loss {final['test_loss']:.4f}, test acc {final['test_acc']:.4f}, "
        f"test acc5 {final['test_acc5']:.4f} (64 test images, the final weights)"
    )
    assert not any(line.startswith("validating on the test split") for line in lines)
    assert any("best validation accuracy at step" in line for line in lines)


@pytest.mark.slow
def test_every_epoch_flags_score_test_and_average_the_tta_views_each_epoch(tmp_path, monkeypatch):
    events, log = recording(monkeypatch)
    config = dataclasses.replace(RUN, eval_test_every_epoch=True, tta="flip", tta_every_epoch=True)
    train_and_evaluate(config, tmp_path / "run", progress=False, log=log)
    assert test_images_read(events, before="epoch 1/2") == [1, 64]  # loaded once, before epoch 1 ends
    assert test_images_read(events) == [1, 64]
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert all({"val_acc", "test_acc", "test_loss", "test_acc5"} <= set(r) for r in records)
    assert [r["tta"] for r in records] == ["flip", "flip"]
    epoch_lines = [e[1] for e in events if e[0] == "log" and e[1].startswith("epoch ")]
    assert len(epoch_lines) == 2 and all(" (--tta flip), " in line for line in epoch_lines), epoch_lines


@pytest.mark.slow
def test_val_size_0_validates_on_test_and_names_the_fields_test(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--width", "0.125", "--hidden", "64", "--limit-train", "64", "--limit-test", "64"]
    flags += ["--batch-size", "16", "--epochs", "1", "--val-size", "0", "--no-progress", "--out", str(out)]
    assert main(["train", *flags]) == 0
    printed = capsys.readouterr().out
    assert (
        "validating on the test split (--val-size 0, the d2l chapter's setting): the best checkpoint "
        "is selected on test\n"
    ) in printed
    assert "best test accuracy at step 4" in printed
    (record,) = read_jsonl(out / "metrics.jsonl")
    assert not any(k.startswith("val_") for k in record) and {"test_loss", "test_acc", "test_acc5"} <= set(
        record
    )
    assert "epoch 1/1: train loss" in printed and f"test acc {record['test_acc']:.4f}, " in printed
    assert f"test accuracy {record['test_acc']:.4f} after 1 epochs" in printed


def test_the_d2l_preset_validates_on_test():
    assert PRESETS["d2l"].val_size == 0 and PRESETS["default"].val_size == 5000


def test_config_without_val_size_loads_as_0():
    saved = json.loads(RUN.to_json())
    del saved["val_size"], saved["eval_test_every_epoch"]
    config = TrainConfig.from_dict(saved)
    assert (config.val_size, config.eval_test_every_epoch) == (0, False)
    assert TrainConfig.from_dict(json.loads(RUN.to_json())) == RUN


def test_honest_records_rename_only_a_test_validated_runs_fields():
    old = [{"epoch": 1, "val_loss": 2.0, "val_acc": 0.5, "val_acc5": 0.9, "seconds": 1.0}]
    assert honest_records(old, 0) == [
        {"epoch": 1, "test_loss": 2.0, "test_acc": 0.5, "test_acc5": 0.9, "seconds": 1.0}
    ]
    assert honest_records(old, 5000) == old


def old_run(run_dir):
    """A finished one-epoch run folder as vggjax wrote it before --val-size: no val_size in config.json,
    its test scores recorded as val_* (no training needed)."""
    config = dataclasses.replace(RUN, epochs=1, val_size=0)
    run_dir.mkdir(parents=True)
    saved = json.loads(config.to_json())
    del saved["val_size"], saved["eval_test_every_epoch"]
    (run_dir / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
    record = {"epoch": 1, "step": 4, "train_loss": 2.3, "train_acc": 0.1, "val_loss": 2.25, "val_acc": 0.125}
    save_finished_state(run_dir, config, record)
    write_report(run_dir)
    return run_dir


def test_an_old_run_folder_still_evaluates_and_reports(tmp_path, capsys):
    run = old_run(tmp_path / "old")
    page = (run / "report.html").read_text()
    assert "<th>test_acc</th>" in page and "<th>val_acc</th>" not in page  # they were test scores
    assert main(["eval", str(run), "--limit-test", "64", "--batch-size", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["split"], report["count"]) == ("test", 64)
    assert main(["eval", str(run), "--split", "val"]) == 2
    assert "has no validation split (val_size 0: it validated on the test split)" in capsys.readouterr().err


@pytest.mark.slow
def test_an_old_run_folder_resumes_on_the_test_split(tmp_path):
    run = old_run(tmp_path / "old")
    config, _ = resume_config(run, {"epochs": 2})
    assert config.val_size == 0
    train_and_evaluate(config, run, resume=True, progress=False, log=lambda s: None)
    first, second = read_jsonl(run / "metrics.jsonl")
    assert (first["test_acc"], "val_acc" in first) == (0.125, False)  # renamed: it was the test split
    assert not any(k.startswith("val_") for k in second) and "test_acc" in second
    assert json.loads((run / "config.json").read_text())["val_size"] == 0
