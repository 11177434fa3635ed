import json
import os
import subprocess
import sys

from vggjax.cli import main


def run(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "vggjax.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def test_help():
    p = run("--help")
    assert p.returncode == 0 and "train" in p.stdout and "summary" in p.stdout


def test_summary_json_matches_seed(capsys):
    assert main(["summary", "--arch", "vgg11", "--input-size", "224", "--channels", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    shapes = {layer["name"]: layer["output_shape"] for layer in doc["layers"]}
    assert shapes["block1"] == [1, 112, 112, 64] and shapes["block5"] == [1, 7, 7, 512]
    assert shapes["flatten"] == [1, 25088] and shapes["fc8"] == [1, 10]
    assert doc["total_params"] == sum(layer["params"] for layer in doc["layers"]) == 128_806_154


def test_summary_table(capsys):
    assert (
        main(["summary", "--arch", "vgg16", "--head", "adaptive", "--channels", "3", "--num-classes", "1000"])
        == 0
    )
    assert "138,357,544" in capsys.readouterr().out


def test_bad_arch_is_one_line_exit_2():
    p = run("summary", "--arch", "((1,16)")
    assert p.returncode == 2
    assert p.stderr.startswith("error: cannot parse arch") and len(p.stderr.strip().splitlines()) == 1
    assert "Traceback" not in p.stderr


def test_train_one_epoch_writes_run_folder(tmp_path):
    out = tmp_path / "run"
    p = run(
        "train",
        "--limit-train",
        "512",
        "--limit-test",
        "256",
        "--epochs",
        "1",
        "--hidden",
        "128",
        "--no-progress",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout and "preset default" in p.stdout
    assert {"config.json", "metrics.jsonl", "curves.png", "weights"} <= set(os.listdir(out))
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and 0.0 <= record["val_acc"] <= 1.0
    again = run("train", "--limit-train", "512", "--epochs", "1", "--out", str(out))
    assert again.returncode == 2 and "already holds a vggjax run; pass --resume" in again.stderr


def test_train_bad_flags_exit_2(tmp_path):
    for args, message in [
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--image-size", "28"], "at least 32"),
        (["--width", "-1"], "width multiplier must be > 0"),
        (["--preset", "gpu"], "unknown preset"),
        (["--data-dir", str(tmp_path / "nope")], str(tmp_path / "nope")),
    ]:
        p = run("train", "--out", str(tmp_path / "r"), *args)
        assert p.returncode == 2, (args, p.stderr)
        assert message in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "r").exists()
