"""``vggjax lpips`` on real images: distances and their mean with the variant, JSON, heat maps, bad files.

The images are real Fashion-MNIST garments (grey, upscaled to 64×64) and blurred RGB or
palette copies; the trunk is the random torchvision VGG-16 file of ``lpips_reference.py``.
"""

import json

import numpy as np
import pytest
import torch
from lpips_reference import reference, to_nchw, write_trunk
from PIL import Image, ImageFilter

from vggjax.cli import main

# one batch shape for every run (--batch-size 2, 64×64), so the trunk compiles once
FLAGS = ["--batch-size", "2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, fashion_small):
    root = tmp_path_factory.mktemp("lpips-cli")
    trunk = write_trunk(root / "vgg16-features.pth")
    for name in ("a", "b"):
        (root / name).mkdir()
    for i in range(4):
        g = Image.fromarray(fashion_small[0]["image"][i, :, :, 0]).resize((64, 64), Image.Resampling.BILINEAR)
        g.save(root / "a" / f"item{i}.png")  # mode L
        blurred = g.filter(ImageFilter.GaussianBlur(0.5 + i)).convert("RGB")
        (blurred.convert("P") if i % 2 else blurred).save(root / "b" / f"item{i}.png")
    (root / "a" / "notes.txt").write_text("not an image, not paired")
    return root, str(trunk)


def rgb01(path):
    return np.asarray(Image.open(path).convert("RGB"), np.float32)[None] / 255


def test_pairs_print_each_distance_and_the_mean_with_the_variant(files, capsys):
    root, trunk = files
    a0, b0, a1, b1 = (str(root / d / f"item{i}.png") for i in (0, 1) for d in ("a", "b"))
    assert main(["lpips", a0, b0, a1, b1, "--trunk", trunk, *FLAGS]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(f"{a0}  {b0}  ") and lines[1].startswith(f"{a1}  {b1}  ")
    d = [float(line.split()[-1]) for line in lines[:2]]
    ref = reference(root / "vgg16-features.pth")
    with torch.no_grad():  # the reference on the same decoded pixels (grey → RGB, palette → RGB)
        want = [
            float(ref(to_nchw(rgb01(a)), to_nchw(rgb01(b)), normalize=True)) for a, b in ((a0, b0), (a1, b1))
        ]
    np.testing.assert_allclose(d, want, atol=2e-6)  # printed with 6 decimals
    assert lines[2] == f"mean {np.mean(d):.6f} over 2 pairs (lpips-vgg-v0.1)"
    assert 0 < d[0] < d[1]  # more blur, farther


def test_folders_json_and_heat_maps(files, capsys, tmp_path):
    root, trunk = files
    maps = tmp_path / "maps"
    argv = ["lpips", "--dir-a", str(root / "a"), "--dir-b", str(root / "b"), "--trunk", trunk, *FLAGS]
    assert main([*argv, "--spatial-out", str(maps), "--json", "--version", "0.0"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["variant"] == "lpips-vgg-v0.0" and [p["a"] for p in out["pairs"]] == [
        str(root / "a" / f"item{i}.png") for i in range(4)
    ]
    assert out["mean"] == pytest.approx(np.mean([p["lpips"] for p in out["pairs"]]))
    assert sorted(p.name for p in maps.iterdir()) == [f"item{i}.png" for i in range(4)]
    for p in out["pairs"]:
        assert p["map"] == str(maps / (p["a"].rsplit("/", 1)[-1]))
        heat = Image.open(p["map"])
        assert heat.size == (64, 64) and heat.mode == "RGB" and np.asarray(heat).std() > 0
    assert main([*argv, "--baseline", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variant"] == "vgg-l2-baseline"


def test_a_bad_file_costs_only_its_pair_exit_1(files, capsys, tmp_path):
    root, trunk = files
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    a0, b0 = str(root / "a" / "item0.png"), str(root / "b" / "item0.png")
    big = tmp_path / "big.png"
    Image.open(b0).resize((80, 96)).save(big)
    argv = ["lpips", a0, str(broken), a0, b0, a0, str(big), "--resize", "64", "--trunk", trunk, *FLAGS]
    assert main([*argv, "--json"]) == 1
    captured = capsys.readouterr()
    assert (
        captured.err
        == f"error: {broken}: cannot read image (Truncated File Read); give a readable PNG or JPEG file\n"
    )
    pairs = json.loads(captured.out)["pairs"]
    assert pairs[0] == {"a": a0, "b": str(broken), "error": captured.err[7:-1]}
    assert pairs[1]["lpips"] > 0 and pairs[2]["lpips"] > 0  # another size, resized to 64×64 like the rest
