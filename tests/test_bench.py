import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from tiny import TINY_FLAGS, tiny_config

from vggjax import data
from vggjax.bench import BenchConfig, TrainRunner, run_bench
from vggjax.cli import main
from vggjax.config import TrainConfig
from vggjax.errors import ConfigError
from vggjax.run.weights import load_variables
from vggjax.training.train import train_and_evaluate

TINY = BenchConfig(train=tiny_config(batch_size=16), steps=1, repeats=2)


@pytest.mark.slow
def test_report_figures():
    report = run_bench(TINY)
    # thin VGG-11 at 1/8 width, 32x32x1, hidden 64: 2,441,856 MACs (summary.summarize)
    assert report["forward_gflop_per_image"] == pytest.approx(2 * 2_441_856 / 1e9)
    assert report["impl"] == ("cpu_fast" if jax.default_backend() == "cpu" else "xla")
    assert report["devices"] == jax.device_count() and report["matmul_peak_gflops"] > 0
    assert report["config"]["train"]["lr"] == TrainConfig().lr and report["config"]["steps"] == 1
    for mode in ("train", "inference"):
        r = report[mode]
        assert r["images_per_s"] > 0 and r["compile_s"] > 0 and r["gflops"] > 0 and r["peak_fraction"] > 0
    assert 0 <= report["train"]["data_time_share"] < 1
    assert report["memory"]["host_maxrss"] > 2**20


@pytest.mark.slow
def test_bench_step_is_trains_step(tmp_path):
    # Bug: bench built its own optimizer (lr 0.01 whatever the config), its own initial
    # state (key 0) and a one-device step, so it timed something `vggjax train` never runs.
    # Two steps of bench on train's images must end bitwise where a real run's two steps end.
    config = TrainConfig(
        width=0.125,
        hidden=32,
        batch_size=16,
        epochs=1,
        lr=0.2,
        limit_train=32,
        limit_test=16,
        seed=3,
        val_size=0,  # train on the first 32 images, the ones bench is given below
    )
    train_and_evaluate(config, tmp_path / "run", progress=False, log=lambda s: None)
    trained = load_variables(tmp_path / "run" / "weights")
    images, _ = data.load_fashion_mnist(limit_train=32, limit_test=16, download=False, progress=False)
    runner = TrainRunner(BenchConfig(train=config), images=images)
    start = jax.device_get(runner.state.params)
    runner(2)
    assert int(runner.state.step) == 2
    got, want = jax.device_get(runner.state.params), jax.device_get(trained["params"])
    jax.tree.map(np.testing.assert_array_equal, got, want)
    assert not np.array_equal(start["fc8"]["kernel"], got["fc8"]["kernel"])


SHARDED = textwrap.dedent(
    """
    import json, jax
    from vggjax.bench import BenchConfig, InferenceRunner, TrainRunner
    from vggjax.config import TrainConfig

    config = BenchConfig(train=TrainConfig(width=0.125, hidden=16, batch_size=8), steps=1, repeats=1)
    runner = TrainRunner(config)
    batch = runner.next_batch()
    compiled = runner.step.input_shardings[0][1]["image"]
    runner(1)
    inference = InferenceRunner(config)
    print(json.dumps({
        "devices": jax.device_count(),
        "batch": sorted(len(s.data) for s in batch["image"].addressable_shards),
        "batch_devices": len(batch["image"].sharding.device_set),
        "step_devices": len(compiled.device_set),
        "step_spec": list(compiled.spec),
        "inference": sorted(len(s.data) for s in inference.batch["image"].addressable_shards),
    }))
    """
)


@pytest.mark.slow
def test_bench_step_input_is_split_over_every_device():
    # Bug: bench compiled its step for one device while train splits each batch over all.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["devices"] == 4
    assert got["batch"] == [2, 2, 2, 2] and got["batch_devices"] == 4
    assert got["step_devices"] == 4 and got["step_spec"] == ["data"]
    assert got["inference"] == [2, 2, 2, 2]


def test_cli_bench_json(capsys):
    argv = ["bench", *TINY_FLAGS, "--batch-size", "8", "--steps", "1"]
    assert main([*argv, "--repeats", "1", "--only", "inference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "train" not in report and report["inference"]["images_per_s"] > 0
    assert report["config"]["only"] == "inference" and report["config"]["train"]["batch_size"] == 8
    assert report["config"]["train"]["image_size"] == 32 and report["config"]["train"]["dtype"] == "float32"


def test_cli_bench_times_a_three_channel_model(capsys):
    # Bug: a 3-channel model took Fashion-MNIST's 1-channel preprocessing and was refused
    # ("does not fit a model of 3 channel(s); delete it from config.json") before timing.
    argv = ["bench", *TINY_FLAGS, "--channels", "3", "--num-classes", "1000", "--batch-size", "4"]
    assert main([*argv, "--steps", "1", "--repeats", "1", "--only", "inference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["config"]["train"]["channels"] == 3 and report["inference"]["images_per_s"] > 0
    assert TrainConfig(channels=3).validate().preprocessing is None
    assert TrainConfig().preprocessing.channels == 1


def test_bad_settings_are_user_errors(capsys):
    with pytest.raises(ConfigError, match="--dtype"):
        BenchConfig(train=TrainConfig(dtype="float16")).validate()
    with pytest.raises(ConfigError, match="--only must be one of train, inference"):
        BenchConfig(only="both").validate()
    with pytest.raises(ConfigError, match="--repeats must be a positive integer, got 0"):
        BenchConfig(repeats=0).validate()
    assert main(["bench", "--image-size", "16"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: --image-size 16 is too small for 5 2x2 max-pools; use at least 32 "
        "(or a four-pool arch such as vgg11_28)\n"
    )
