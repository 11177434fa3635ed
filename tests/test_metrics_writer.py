import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vggjax.files import read_jsonl
from vggjax.metrics_writer import MetricsWriter


def _scalars(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_training_run_has_tensorboard_scalars(tiny_run):
    assert list(tiny_run.glob("events.out.tfevents.*"))
    scalars = _scalars(tiny_run)
    # 512 images / batch 16 = 32 steps: logged at step 20 and at the last step
    assert [step for step, _ in scalars["train/loss"]] == [20, 32]
    assert [step for step, _ in scalars["train/images_per_s"]] == [20, 32]
    assert all(rate > 0 for _, rate in scalars["train/images_per_s"])
    record = read_jsonl(tiny_run / "metrics.jsonl")[-1]
    for tag, key in [("val/acc", "val_acc"), ("val/loss", "val_loss"), ("train/epoch_loss", "train_loss")]:
        assert scalars[tag] == [(32, pytest.approx(record[key], rel=1e-6))]


def test_writer_rates_between_points(tmp_path):
    writer = MetricsWriter(tmp_path, '{"lr": 0.1}')
    writer.start_epoch(0)
    writer.train(20, 2.0, batch_size=8)
    writer.train(40, 1.5, batch_size=8)
    writer.epoch({"step": 40, "val_acc": 0.5, "val_loss": 1.25})
    writer.close()
    scalars = _scalars(tmp_path)
    assert scalars["train/loss"] == [(20, 2.0), (40, 1.5)]
    assert [s for s, _ in scalars["train/images_per_s"]] == [20, 40]
    assert scalars["val/acc"] == [(40, 0.5)] and scalars["val/loss"] == [(40, 1.25)]
    assert "train/epoch_loss" not in scalars
