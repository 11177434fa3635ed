import json
import math

import pytest

from vggjax.config import TrainConfig
from vggjax.errors import ArchError, ConfigError
from vggjax.presets import PRESETS
from vggjax.training.guards import warn_if_stuck
from vggjax.training.train import train_and_evaluate

SMALL = TrainConfig(
    limit_train=2000,
    limit_test=500,
    val_size=0,  # scored on the test split every epoch, as before the validation split
    hidden=256,
    dropout_rate=0.0,
    batch_size=32,
    epochs=3,
    lr=0.05,
)


@pytest.mark.slow
def test_training_on_real_subset_learns(tmp_path, fashion_small):
    final = train_and_evaluate(SMALL, tmp_path / "run", progress=False, log=lambda s: None)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train_loss"] < records[0]["train_loss"] < math.log(10) + 0.1
    assert final["test_acc"] > 0.6  # chance is 0.1
    assert {"epoch", "train_loss", "test_loss", "test_acc", "test_acc5", "seconds"} <= set(final)
    assert not any(k.startswith("val_") for r in records for k in r)  # --val-size 0: the test split
    saved = TrainConfig.load(tmp_path / "run" / "config.json")
    assert saved == SMALL
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "run" / "weights").is_dir()


def test_refuses_non_empty_out(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        train_and_evaluate(SMALL, out, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_stuck_warning():
    lines = []
    with pytest.warns(RuntimeWarning, match="stuck"):
        warn_if_stuck(math.log(10) + 0.001, 10, lines.append)
    assert "ln(10)" in lines[0]
    warn_if_stuck(1.2, 10, lines.append)
    assert len(lines) == 1


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"batch_size": 0}, ConfigError, "--batch-size must be a positive integer"),
        ({"epochs": -1}, ConfigError, "--epochs"),
        ({"lr": 0.0}, ConfigError, "--lr must be > 0"),
        ({"momentum": 1.0}, ConfigError, "--momentum"),
        ({"image_size": 28}, ConfigError, "at least 32"),
        ({"width": 0.0}, ArchError, "width multiplier"),
        ({"arch": "((1,16)"}, ArchError, "cannot parse"),
        ({"schedule": "step"}, ConfigError, "--schedule must be one of"),
    ],
)
def test_bad_config(change, error, message):
    import dataclasses

    with pytest.raises(error, match=message):
        dataclasses.replace(SMALL, **change).validate()


def test_presets_are_valid():
    for config in PRESETS.values():
        config.validate()
    d2l = PRESETS["d2l"]
    assert (d2l.image_size, d2l.batch_size, d2l.lr, d2l.momentum, d2l.epochs) == (224, 128, 0.01, 0.0, 10)
    assert d2l.resolved_arch().to_tuple() == ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))
