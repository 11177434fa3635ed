import json
import math
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from vggjax import data
from vggjax.cli import main
from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError, ConfigError
from vggjax.nn.fit import from_config
from vggjax.run import checkpoint
from vggjax.run.files import read_jsonl
from vggjax.run.folder import RunDir
from vggjax.tasks.evaluate import classification_report, evaluate_run
from vggjax.training.steps import preprocess


def test_classification_report_by_hand():
    logits = np.array([[3.0, 1, 0], [0, 2, 1], [0, 2, 1], [1, 0, 2], [0, 0, 5]])
    labels = np.array([0, 1, 0, 2, 1])  # predictions 0, 1, 1, 2, 2
    r = classification_report(logits, labels, ["a", "b", "c"])
    assert r["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert r["count"] == 5 and r["acc"] == pytest.approx(3 / 5) and r["acc5"] == 1.0
    a, b, c = r["classes"]
    assert (a["support"], a["precision"], a["recall"], a["accuracy"]) == (2, 1.0, 0.5, 4 / 5)
    assert (b["precision"], b["recall"], b["accuracy"]) == (0.5, 0.5, 3 / 5)
    assert (c["precision"], c["recall"], c["accuracy"]) == (0.5, 1.0, 4 / 5)
    expected = np.mean([-(z[y] - math.log(np.exp(z).sum())) for z, y in zip(logits, labels, strict=True)])
    assert r["loss"] == pytest.approx(expected, rel=1e-12)


def test_eval_counts_match_an_independent_forward_pass(tiny_run):
    report = evaluate_run(tiny_run, limit_test=300, batch_size=128, num_mistakes=8)

    config = TrainConfig.load(tiny_run / "config.json")
    model = from_config(config)
    variables = checkpoint.load_variables(tiny_run / "weights")
    variables = {"params": variables["params"]}  # no BatchNorm in vgg11
    test = data.load_split("test", limit=300)
    logits = np.asarray(model.apply(variables, preprocess(jnp.asarray(test["image"]), 32), train=False))
    correct = int(np.sum(logits.argmax(-1) == test["label"]))

    assert report["count"] == 300
    assert report["acc"] == correct / 300
    confusion = np.array(report["confusion"])
    assert confusion.sum() == 300 and np.trace(confusion) == correct
    np.testing.assert_array_equal(confusion.sum(1), np.bincount(test["label"], minlength=10))
    top5 = np.argsort(-logits, -1)[:, :5]
    assert report["acc5"] == pytest.approx(np.mean((top5 == test["label"][:, None]).any(-1)))
    assert [c["name"] for c in report["classes"]] == list(data.CLASS_NAMES)
    assert json.loads((tiny_run / "eval.json").read_text()) == report
    for name in ("confusion.png", "mistakes.png", "report.html"):
        assert (tiny_run / name).stat().st_size > 1000


def test_eval_agrees_with_the_training_loop(tiny_run):
    last = read_jsonl(tiny_run / "metrics.jsonl")[-1]  # trained with limit_test=256, val_size=200
    report = evaluate_run(tiny_run, limit_test=256, batch_size=128, num_mistakes=0)
    assert report["split"] == "test" and report["count"] == 256
    assert report["acc"] == pytest.approx(last["test_acc"], abs=1e-9)
    assert report["acc5"] == pytest.approx(last["test_acc5"], abs=1e-9)
    assert report["loss"] == pytest.approx(last["test_loss"], rel=1e-4)
    val = evaluate_run(tiny_run, batch_size=128, num_mistakes=0, split="val")  # rebuilt from the config
    assert val["split"] == "val" and val["count"] == 200
    assert val["acc"] == pytest.approx(last["val_acc"], abs=1e-9)
    assert val["loss"] == pytest.approx(last["val_loss"], rel=1e-4)


def test_cli_eval_json(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--limit-test", "128", "--batch-size", "128", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["count"] == 128 and sum(map(sum, doc["confusion"])) == 128
    assert main(["eval", str(tiny_run), "--limit-test", "128", "--batch-size", "128"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "Ankle boot" in out and "confusion (rows: true class" in out


def test_load_run_errors(tiny_run, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="not a vggjax run folder"):
        RunDir(tmp_path).load()
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "hidden": 64}))
    with pytest.raises(
        CheckpointError,
        match=r"params/fc6/bias: the weights .* have shape \[128\] but the model needs \[64\]",
    ):
        RunDir(other).load()
    with pytest.raises(CheckpointError, match="no weights"):
        RunDir(tiny_run).load(tmp_path / "nope")
    with pytest.raises(ConfigError, match="--mistakes"):
        evaluate_run(tiny_run, num_mistakes=-1)
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ") and "not a vggjax run folder" in err and len(err.strip().splitlines()) == 1
    )
