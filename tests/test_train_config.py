"""``train_config``: the preset / flags / --init-from / --resume merge of ``vggjax train``, as a library call.

Run folders here hold a ``config.json`` (and an empty checkpoint step where resuming needs
one) but no weights: the merge reads configs only.
"""

import dataclasses
import re

import pytest

from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError, ConfigError
from vggjax.presets import PRESETS
from vggjax.run.folder import RunDir
from vggjax.run.resume import train_config

SAVED = TrainConfig(arch="vgg13", width=0.5, head="adaptive", hidden=256, lr=0.3, epochs=4, seed=7)


def make_run(path, config=SAVED, *, checkpoint=True):
    """A run folder with ``config.json`` and, if asked, a checkpoint step folder (no weights)."""
    run = RunDir(path)
    run.prepare(overwrite=False)
    run.write_config(config)
    if checkpoint:
        (run.checkpoints_dir / "12").mkdir(parents=True)
    return path


def test_a_preset_with_flags_on_top(tmp_path):
    config, out, notes = train_config({"lr": 0.1, "epochs": 3}, preset="d2l", out=str(tmp_path / "new"))
    assert config == dataclasses.replace(PRESETS["d2l"], lr=0.1, epochs=3)
    assert (config.image_size, config.momentum, config.schedule) == (224, 0.0, "constant")  # d2l's
    assert (out, notes) == (str(tmp_path / "new"), [])
    assert not (tmp_path / "new").exists()  # checked, not created


def test_no_preset_is_the_default_and_no_out_a_timestamped_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, out, notes = train_config({"batch_size": 64})
    assert config == TrainConfig(batch_size=64) and notes == []
    assert re.fullmatch(r"runs/\d{8}-\d{6}", out), out


def test_init_from_inherits_the_network_and_reads_no_weights(tmp_path):
    source = make_run(tmp_path / "src", checkpoint=False)  # config.json only: no weights/ at all
    config, _, _ = train_config({"init_from": str(source), "lr": 0.2}, out=str(tmp_path / "ft"))
    assert (config.arch, config.width, config.head, config.hidden) == ("vgg13", 0.5, "adaptive", 256)
    # the rest is the preset's and the flags', not the source run's
    assert (config.lr, config.epochs, config.seed, config.init_from) == (0.2, 5, 0, str(source))
    config, _, _ = train_config({"init_from": str(source)}, preset="d2l", out=str(tmp_path / "ft"))
    assert (config.arch, config.hidden, config.image_size, config.lr) == ("vgg13", 256, 224, 0.01)


def test_init_from_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(tmp_path))} is not a vggjax run folder"):
        train_config({"init_from": str(tmp_path)}, out=str(tmp_path / "ft"))


def test_resume_takes_the_saved_config_and_refuses_a_disagreeing_flag(tmp_path):
    run = make_run(tmp_path / "run")
    assert train_config({}, resume=str(run)) == (SAVED, str(run), [])
    assert train_config({"lr": 0.3, "arch": "vgg13"}, resume=str(run))[0] == SAVED  # given again, same
    with pytest.raises(ConfigError) as e:
        train_config({"lr": 0.5}, resume=str(run))
    assert str(e.value) == (
        f"--lr 0.5 disagrees with the run's saved lr = 0.3 ({run / 'config.json'}); drop the flag to "
        "resume, or start a new run with another --out"
    )
    with pytest.raises(ConfigError, match=r"^--arch 'vgg11' disagrees with the run's saved arch = 'vgg13' "):
        train_config({}, preset="d2l", resume=str(run))  # every field of a named preset counts as given


def test_resume_allows_epochs_and_notes_the_recomputed_schedule(tmp_path):
    run = make_run(tmp_path / "run")
    config, out, notes = train_config({"epochs": 8, "keep": 2, "checkpoint_every": 5}, resume=str(run))
    assert config == dataclasses.replace(SAVED, epochs=8, keep=2, checkpoint_every=5) and out == str(run)
    assert notes == [
        "note: --epochs 8 (was 4) recomputes the cosine schedule and warm-up for the new length from here on"
    ]
    constant = make_run(tmp_path / "constant", dataclasses.replace(SAVED, schedule="constant"))
    assert train_config({"epochs": 8}, resume=str(constant))[2] == []  # nothing changes but the length


def test_resume_refuses_overwrite_another_out_and_a_folder_without_checkpoint(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="^--resume and --overwrite contradict each other; choose one$"):
        train_config({}, resume=str(run), overwrite=True)
    message = f"--out {tmp_path / 'x'} and --resume {run} differ; drop --out to resume"
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
        train_config({}, resume=str(run), out=str(tmp_path / "x"))
    monkeypatch.chdir(tmp_path)
    assert train_config({}, resume=str(run), out="run")[0] == SAVED  # the same folder, spelt relatively
    bare = make_run(tmp_path / "bare", checkpoint=False)
    with pytest.raises(CheckpointError, match="the run holds no checkpoint"):
        train_config({}, resume=str(bare))


def test_a_new_run_into_an_earlier_one_needs_overwrite(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="already holds a vggjax run; pass --resume"):
        train_config({}, out=str(run))
    assert train_config({}, out=str(run), overwrite=True)[1] == str(run)
    assert (run / "config.json").is_file() and (run / "checkpoints" / "12").is_dir()  # nothing removed yet


@pytest.mark.parametrize("name", ["out", "resume", "init_from", "data_dir"])
def test_an_empty_folder_flag_is_refused(name, tmp_path):
    flag = "--" + name.replace("_", "-")
    kwargs = {name: " "} if name in ("out", "resume") else {}
    overrides = {name: ""} if name not in kwargs else {}
    with pytest.raises(ConfigError, match=f"^{flag} is empty; give it a folder, or drop {flag}$"):
        train_config(overrides, **kwargs)


def test_a_multi_process_run_needs_out(tmp_path):
    with pytest.raises(ConfigError, match="^a multi-process run needs --out"):
        train_config({}, multi_process=True)
    assert train_config({}, out=str(tmp_path / "r"), multi_process=True)[1] == str(tmp_path / "r")
