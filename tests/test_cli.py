import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tiny import TINY, TINY_FLAGS

from vggjax.cli import main
from vggjax.nn import onednn_build


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


@pytest.mark.slow
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
        "--val-size",
        "200",
        "--no-progress",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout and "preset default" in p.stdout
    assert {"config.json", "metrics.jsonl", "curves.png", "weights"} <= set(os.listdir(out))
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and 0.0 <= record["val_acc"] <= 1.0 and 0.0 <= record["test_acc"] <= 1.0
    again = run("train", "--limit-train", "512", "--epochs", "1", "--out", str(out))
    assert again.returncode == 2 and "already holds a vggjax run; pass --resume" in again.stderr


@pytest.mark.slow
def test_train_bad_flags_exit_2(tmp_path):
    # One real process for the exit status and stderr a shell sees; every other bad flag is a
    # case of tests/test_failures.py's CASES, run in-process.
    p = run("train", "--out", str(tmp_path / "r"), "--batch-size", "0")
    assert p.returncode == 2, p.stderr
    assert p.stderr == "error: --batch-size must be a positive integer, got 0\n"
    assert not (tmp_path / "r").exists()


def test_train_warns_when_the_adaptive_head_enlarges_the_map(tmp_path, capsys):
    # Issue 13, 6: the warning comes before anything is loaded or written (here the run then
    # stops at its too-small data, so no training is needed to see it).
    out = tmp_path / "r"
    argv = ["train", "--head", "adaptive", "--no-progress", "--out", str(out), "--limit-train", "64"]
    assert main([*argv, *TINY_FLAGS]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        "warning: the adaptive pool enlarges pool5's 1x1 map to 7x7 (49 copies of each value; fc6 takes "
        "3,136 inputs where 64 would do); use --head flatten for inputs this small"
    )
    assert (
        err[1].startswith("error: --batch-size 128 is larger than the 64 training examples") and len(err) == 2
    )
    assert not out.exists()


def test_convert_torchvision_then_predict_imagenet(tmp_path, capsys):
    import torch
    from PIL import Image
    from torch_vgg import make_torch_vgg

    module = make_torch_vgg("vgg11", **TINY, num_classes=12)
    torch.save({f"module.{k}": v for k, v in module.state_dict().items()}, tmp_path / "w.pth")
    run_dir = tmp_path / "run"
    args = ["convert-torchvision", str(tmp_path / "w.pth"), "--arch", "vgg11", "--width", "0.125"]
    assert main([*args, "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "stripped the 'module.' prefix" in out and "3 channels, 12 classes, head adaptive" in out

    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.png")
    (tmp_path / "labels.txt").write_text("".join(f"class {i}\n" for i in range(12)))
    labels = ["--labels", str(tmp_path / "labels.txt")]
    assert main(["predict-imagenet", str(run_dir), str(tmp_path / "a.png"), *labels]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tmp_path / 'a.png'}: ") and lines[0].count(",") == 4
    # The same image through PyTorch, preprocessed the torchvision way by hand: the short
    # side 240 -> 256, the long 320 -> int(256 * 320 / 240) = 341; crop at round(58.5) = 58, 16.
    image = Image.open(tmp_path / "a.png").convert("RGB").resize((341, 256), Image.Resampling.BILINEAR)
    x = (np.asarray(image, np.float32) / 255.0)[16:240, 58:282]
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    with torch.no_grad():
        probs = torch.softmax(module(torch.from_numpy(x.transpose(2, 0, 1)[None].copy())), -1)[0].numpy()
    best = int(probs.argmax())
    assert lines[0].split(": ", 1)[1].startswith(f"class {best} ") and probs[best] < 0.99
    # predict-imagenet --json (it had none) gives the probabilities in full.
    assert main(["predict-imagenet", str(run_dir), str(tmp_path / "a.png"), *labels, "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    assert [t["index"] for t in top] == np.argsort(-probs)[:5].tolist()
    assert [t["class"] for t in top] == [f"class {t['index']}" for t in top]
    np.testing.assert_allclose([t["prob"] for t in top], probs[[t["index"] for t in top]], atol=1e-4)
    # `vggjax predict` reads the run's preprocessing and takes the same ImageNet path.
    assert main(["predict", str(run_dir), str(tmp_path / "a.png"), "--top-k", "5", *labels]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert main(["eval", str(run_dir)]) == 2
    assert "holds imagenet weights; vggjax eval scores Fashion-MNIST runs" in capsys.readouterr().err
    # --top 0 / --top-k 0 used to print one class and exit 0; --top 13 used to print 12 classes
    assert main(["predict-imagenet", str(run_dir), str(tmp_path / "a.png"), "--top", "0"]) == 2
    assert capsys.readouterr() == ("", "error: --top-k must be between 1 and 12, got 0\n")
    assert main(["predict", str(run_dir), str(tmp_path / "a.png"), "--top-k", "-3"]) == 2
    assert capsys.readouterr() == ("", "error: --top-k must be between 1 and 12, got -3\n")
    assert main(["predict-imagenet", str(run_dir), str(tmp_path / "a.png"), "--top", "13"]) == 2
    assert capsys.readouterr() == ("", "error: --top-k must be between 1 and 12, got 13\n")
    # An unreadable file gets its error line and the others are still predicted (exit 1),
    # as `vggjax predict` does for a Fashion-MNIST run.
    (tmp_path / "bad.png").write_bytes(b"not an image")
    files = [str(tmp_path / "bad.png"), str(tmp_path / "a.png")]
    assert main(["predict-imagenet", str(run_dir), *files, *labels]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == lines and err.count("\n") == 1 and "bad.png" in err
    assert err.startswith("error: ")

    bad = ["convert-torchvision", str(tmp_path / "w.pth"), "--arch", "vgg11_bn", "--out", str(tmp_path / "x")]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: the file holds weights without BatchNorm, i.e. vgg11, but the arch is vgg11_bn"
    )
    assert len(err.strip().splitlines()) == 1


def test_predict_json_is_one_layout_for_both_kinds_of_run(tmp_path, capsys, tiny_run):
    import torch
    from PIL import Image
    from torch_vgg import make_torch_vgg

    from vggjax.data import CLASS_NAMES

    module = make_torch_vgg("vgg11", width=0.125, hidden=64, num_classes=12)
    torch.save(module.state_dict(), tmp_path / "w.pth")
    converted = tmp_path / "tv"
    args = ["convert-torchvision", str(tmp_path / "w.pth"), "--arch", "vgg11", "--width", "0.125"]
    assert main([*args, "--out", str(converted)]) == 0
    noise = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    files = [str(tmp_path / "a.png"), str(tmp_path / "bad.png")]
    docs = {}
    for kind, run_dir in [("fashion-mnist", tiny_run), ("imagenet", converted)]:
        capsys.readouterr()
        assert main(["predict", str(run_dir), *files, "--top-k", "2", "--json"]) == 1, kind
        out, err = capsys.readouterr()
        docs[kind] = json.loads(out)
        assert err.startswith(f"error: {files[1]}: not an image") and err.count("\n") == 1
    # One layout: "inverted" only where the run's preprocessing inverts (Fashion-MNIST).
    assert [list(r) for r in docs["fashion-mnist"]] == [["file", "inverted", "top"], ["file", "error"]]
    assert [list(r) for r in docs["imagenet"]] == [["file", "top"], ["file", "error"]]
    for kind, doc in docs.items():
        assert [r["file"] for r in doc] == files and doc[1]["error"].startswith(f"{files[1]}: not an image")
        assert [list(t) for t in doc[0]["top"]] == [["class", "index", "prob"]] * 2, kind
        assert doc[0]["top"][0]["prob"] >= doc[0]["top"][1]["prob"] > 0
    assert [t["class"] for t in docs["fashion-mnist"][0]["top"]] == [
        CLASS_NAMES[t["index"]] for t in docs["fashion-mnist"][0]["top"]
    ]
    assert [t["class"] for t in docs["imagenet"][0]["top"]] == [None, None]  # no --labels: no names
    assert main(["predict-imagenet", str(tiny_run), files[0]]) == 2
    assert "is a fashion-mnist model with 1 channel(s), not ImageNet weights" in capsys.readouterr().err
    assert main(["predict", str(converted), files[0], "--invert", "yes"]) == 2
    assert "--invert is for runs of light-on-dark pictures" in capsys.readouterr().err


@pytest.mark.slow
def test_train_init_from_converted_weights(tmp_path, capsys, fashion_small):
    import torch
    from torch_vgg import make_torch_vgg

    from vggjax.run.folder import RunDir

    torch.save(make_torch_vgg("vgg11", width=0.125, hidden=64).state_dict(), tmp_path / "w.pth")
    source = tmp_path / "src"
    assert (
        main(
            [
                "convert-torchvision",
                str(tmp_path / "w.pth"),
                "--arch",
                "vgg11",
                "--width",
                "0.125",
                "--out",
                str(source),
            ]
        )
        == 0
    )
    common = [
        "train",
        "--init-from",
        str(source),
        "--limit-train",
        "256",
        "--limit-test",
        "128",
        "--epochs",
        "1",
    ]
    common += ["--batch-size", "64", "--no-progress", "--out", str(tmp_path / "ft")]
    assert main(common) == 2
    assert "take 3 input channels but the data has 1; pass --adapt-channels" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()
    assert main([*common, "--adapt-channels"]) == 0
    out = capsys.readouterr().out
    assert "adapted the first conv from 3 to 1 input channels" in out
    assert "new fc8 for 10 classes (the pretrained one has 1000)" in out and "test accuracy" in out
    config, variables = RunDir(tmp_path / "ft").config(), RunDir(tmp_path / "ft").read_variables()
    assert (config.arch, config.width, config.hidden, config.head) == ("vgg11", 0.125, 64, "adaptive")
    assert variables["params"]["block1"]["conv1"]["kernel"].shape == (3, 3, 1, 8)
    assert variables["params"]["fc8"]["kernel"].shape == (64, 10)
    # Four SGD steps move the converted weights only a little: still the source's, not a fresh init.
    before = RunDir(source).read_variables()
    a, b = (np.ravel(v["params"]["block3"]["conv1"]["kernel"]) for v in (variables, before))
    assert np.corrcoef(a, b)[0, 1] > 0.9


@pytest.mark.parametrize("flags", [[], ["--detail", "--json"]])
def test_output_into_a_closed_pipe_exits_141_quietly(flags):
    # `vggjax summary | head -3`, with head gone before vggjax writes: the table is written
    # when stdout is flushed at exit, the longer JSON already by print.
    read, write = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vggjax", "summary", "--arch", "vgg16", *flags],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(read)  # the reader is gone before the child starts writing
    os.close(write)
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (141, "")


@pytest.mark.parametrize("flags", [["summary"], ["receptive-field", "--json"]])
def test_closed_or_full_stdout_is_one_line_exit_74(flags):
    """``>&-`` and ``> /dev/full`` gave exit 1 and a traceback; now one line and EX_IOERR."""
    command = " ".join([sys.executable, "-m", "vggjax", *flags])
    cases = ((">/dev/null", None), (">&-", "it is closed"), (">/dev/full", "No space left on device"))
    for redirect, reason in cases:
        p = subprocess.run(["sh", "-c", f"exec {command} {redirect}"], stderr=subprocess.PIPE, text=True)
        if reason is None:
            assert p.returncode == 0 and p.stderr == ""
            continue
        assert p.returncode == 74, p.stderr
        assert p.stderr == f"error: cannot write to standard output ({reason}); redirect it to a file\n"


def test_version_names_what_a_bug_report_needs():
    p = run("--version")
    assert p.returncode == 0, p.stderr
    names = [line.split()[0] for line in p.stdout.splitlines()]
    wanted = ["vggjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "python", "backend"]
    assert names == [*wanted, "cpu_fast"]
    assert "backend cpu, 1 device(s)" in p.stdout
    # what cpu_fast's convolutions run on: oneDNN where it loads, else pure JAX and why
    assert p.stdout.splitlines()[-1] == f"cpu_fast convolutions: {onednn_build.status()}"


def test_version_says_why_cpu_fast_is_pure_jax():
    p = subprocess.run(
        [sys.executable, "-m", "vggjax.cli", "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, "VGGJAX_ONEDNN": "0"},
    )
    assert p.returncode == 0, p.stderr
    last = "cpu_fast convolutions: pure JAX (oneDNN unavailable: switched off by VGGJAX_ONEDNN=0)"
    assert p.stdout.splitlines()[-1] == last


def test_an_unknown_flag_shows_the_subcommands_usage():
    p = run("summary", "--bogus")
    assert p.returncode == 2
    assert p.stderr.startswith("usage: vggjax summary") and "unrecognized arguments: --bogus" in p.stderr
