import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vggjax.run.files import read_jsonl
from vggjax.run.metrics import MetricsWriter


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


def test_resumed_writer_hides_the_points_logged_after_the_checkpoint(tmp_path):
    # A run checkpointed at step 20, logged up to step 60 and was killed; the resumed run
    # logs 21..60 again. TensorBoard must show each step once, with the resumed values.
    first = MetricsWriter(tmp_path, '{"lr": 0.1}')
    first.start_epoch(0)
    for step in (20, 40, 60):
        first.train(step, 1.0, batch_size=8)
    first.close()
    resumed = MetricsWriter(tmp_path, '{"lr": 0.1}', resume_step=20)
    resumed.start_epoch(20)
    for step in (40, 60):
        resumed.train(step, 0.5, batch_size=8)
    resumed.close()
    assert _scalars(tmp_path)["train/loss"] == [(20, 1.0), (40, 0.5), (60, 0.5)]
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert events.Tags()["tensors"] == ["config/text_summary"]
    assert len(events.Tensors("config/text_summary")) == 1  # the config is written once
