import json

import pytest

from vggjax.bench import TRAIN_FLOPS_PER_FORWARD, BenchConfig, run_bench
from vggjax.cli import main
from vggjax.errors import ConfigError

TINY = BenchConfig(width=0.125, hidden=64, batch_size=16, steps=1, repeats=2)


def test_report_figures_are_consistent():
    report = run_bench(TINY)
    flops = report["forward_gflop_per_image"]
    # thin VGG-11 at 1/8 width, 32x32x1, hidden 64: 2,441,856 MACs (summary.summarize)
    assert flops == pytest.approx(2 * 2_441_856 / 1e9)
    assert report["impl"] in ("cpu_fast", "xla") and report["matmul_peak_gflops"] > 0
    for mode, factor in (("train", TRAIN_FLOPS_PER_FORWARD), ("inference", 1)):
        r = report[mode]
        assert r["images_per_s"] > 0 and r["compile_s"] > 0
        assert r["gflops"] == pytest.approx(r["images_per_s"] * factor * flops)
        assert r["peak_fraction"] == pytest.approx(r["gflops"] / report["matmul_peak_gflops"])
    assert 0 <= report["train"]["data_time_share"] < 1
    assert report["memory"]["host_maxrss"] > 2**20


def test_cli_bench_json(capsys):
    argv = ["bench", "--width", "0.125", "--hidden", "64", "--batch-size", "8", "--steps", "1"]
    assert main([*argv, "--repeats", "1", "--only", "inference", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "train" not in report and report["inference"]["images_per_s"] > 0
    assert report["config"]["image_size"] == 32 and report["config"]["dtype"] == "float32"


def test_bad_settings_are_user_errors(capsys):
    with pytest.raises(ConfigError, match="--dtype"):
        BenchConfig(dtype="float16").validate()
    assert main(["bench", "--image-size", "16"]) == 2
    assert "at least 32x32" in capsys.readouterr().err
