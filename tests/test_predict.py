import json

import numpy as np
import pytest
from PIL import Image

from vggjax import data
from vggjax.cli import main
from vggjax.errors import ConfigError, DataError
from vggjax.run.runs import load_run, predict_logits, softmax
from vggjax.tasks.predict import border_is_light, load_image, predict_files, to_grey


@pytest.fixture(scope="module")
def garment():
    """A real Fashion-MNIST test image (light on black), ``uint8[28, 28]``, and its label."""
    test = data.load_split("test", limit=1)
    return test["image"][0, ..., 0], int(test["label"][0])


@pytest.fixture(scope="module")
def files(garment, tmp_path_factory):
    """Image files of several modes and sizes made from ``garment``, and broken files."""
    x, _ = garment
    dark = 255 - x  # a dark garment on white, like a product photo
    d = tmp_path_factory.mktemp("images")
    Image.fromarray(x).save(d / "l.png")
    Image.fromarray(np.stack([dark] * 3, -1)).save(d / "rgb.png")
    Image.fromarray(x.astype(np.uint16) * 257).save(d / "grey16.png")
    palette = Image.frombytes("P", (28, 28), x.tobytes())
    palette.putpalette([v for i in range(256) for v in (i, i, i)])
    palette.save(d / "palette.png")
    rgba = np.zeros((28, 40, 4), np.uint8)  # transparent black margins left and right
    rgba[:, 6:34, :3], rgba[:, 6:34, 3] = dark[..., None], 255
    Image.fromarray(rgba).save(d / "rgba.png")
    big = Image.fromarray(np.stack([dark] * 3, -1)).resize((120, 200), Image.Resampling.BICUBIC)
    big.save(d / "big.jpg", quality=90)
    Image.fromarray(x[10:15, 12:15]).save(d / "tiny.png")
    (d / "notes.jpg").write_text("not an image")
    (d / "cut.png").write_bytes((d / "rgb.png").read_bytes()[:200])
    return d


def test_lossless_modes_give_the_dataset_image_back(files, garment):
    x, _ = garment
    assert Image.open(files / "grey16.png").mode == "I;16"
    assert Image.open(files / "palette.png").mode == "P"
    for name, inverted in [
        ("l.png", False),
        ("rgb.png", True),
        ("grey16.png", False),
        ("palette.png", False),
    ]:
        image, was_inverted = load_image(files / name)
        assert image.dtype == np.uint8 and image.shape == (28, 28, 1)
        assert was_inverted == inverted, name
        np.testing.assert_array_equal(image[..., 0], x, err_msg=name)


def test_transparent_pixels_become_background(files):
    grey = to_grey(Image.open(files / "rgba.png"))
    assert grey.shape == (28, 40) and (grey[:, :6] == 255).all()  # composited onto white
    image, inverted = load_image(files / "rgba.png")
    assert inverted and image.shape == (28, 28, 1)
    assert (image[:4, :, 0] == 0).all() and (image[-4:, :, 0] == 0).all()  # padding and margins black
    assert image.max() > 150  # the garment is light


def test_sizes_and_forced_inversion(files):
    image, inverted = load_image(files / "big.jpg")
    assert inverted and image.shape == (28, 28, 1) and image.mean() > 20
    assert load_image(files / "tiny.png")[0].shape == (28, 28, 1)
    assert load_image(files / "l.png", invert="yes")[1] is True
    assert load_image(files / "rgb.png", invert="no")[1] is False
    assert border_is_light(np.full((5, 5), 200, np.uint8)) and not border_is_light(np.zeros((5, 5), np.uint8))
    with pytest.raises(ConfigError, match="--invert"):
        load_image(files / "l.png", invert="maybe")


@pytest.mark.parametrize(
    "name, message",
    [
        ("notes.jpg", "not an image Pillow can read"),
        ("cut.png", "cannot read image"),
        ("missing.png", "No such file or directory"),
        (".", "cannot read image"),
    ],
)
def test_bad_files_are_one_line_errors(files, name, message):
    with pytest.raises(DataError, match=message) as info:
        load_image(files / name)
    assert len(str(info.value).splitlines()) == 1 and str(files / name) in str(info.value)


def test_predict_files_matches_the_model_and_skips_bad_files(tiny_run, files, garment):
    x, _ = garment
    run = load_run(tiny_run)
    paths = [files / n for n in ("l.png", "notes.jpg", "rgb.png", "big.jpg", "cut.png", "palette.png")]
    results = predict_files(run, paths, top_k=10)
    assert [("error" in r) for r in results] == [False, True, False, False, True, False]
    expected = softmax(predict_logits(run, x[None, ..., None]))[0]
    for r in (results[0], results[2], results[5]):  # the same pixels after conversion
        probs = np.array([t["prob"] for t in sorted(r["top"], key=lambda t: t["index"])])
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
        assert r["top"][0]["index"] == int(expected.argmax())
    big = results[3]["top"]
    assert sum(t["prob"] for t in big) == pytest.approx(1.0)
    assert [t["prob"] for t in big] == sorted((t["prob"] for t in big), reverse=True)
    assert {t["class"] for t in big} == set(data.CLASS_NAMES)
    with pytest.raises(ConfigError, match="--top-k"):
        predict_files(run, paths, top_k=11)


def test_cli_predict(tiny_run, files, capsys):
    good, bad = str(files / "l.png"), str(files / "cut.png")
    assert main(["predict", str(tiny_run), good, bad, "--top-k", "2"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}: ") and out.count(",") == 1 and len(out.splitlines()) == 1
    assert err.startswith(f"error: {bad}: ") and len(err.splitlines()) == 1
    assert main(["predict", str(tiny_run), good, str(files / "rgb.png"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["inverted"] for r in doc] == [False, True] and len(doc[0]["top"]) == 3
    assert main(["predict", str(tiny_run), good, "--top-k", "0"]) == 2
    assert "error: --top-k must be between 1 and 10" in capsys.readouterr().err
