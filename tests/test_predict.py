import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from vggjax import data
from vggjax.cli import main
from vggjax.config import TrainConfig
from vggjax.data import images
from vggjax.data.images import border_is_light, to_grey
from vggjax.errors import ConfigError, DataError
from vggjax.nn.fit import from_config
from vggjax.preprocessing import PREPROCESSING
from vggjax.run.folder import LoadedRun, RunDir
from vggjax.tasks.predict import (
    Guess,
    Prediction,
    format_prediction,
    predict_files,
    predict_logits,
    read_labels,
    softmax,
)
from vggjax.training.steps import preprocess


def load_image(path, invert="auto"):
    """The Fashion-MNIST host side, as ``vggjax predict`` runs it for a trained run."""
    return images.load_image(path, PREPROCESSING["fashion-mnist"], invert=invert)


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
    run = RunDir(tiny_run).load()
    paths = [files / n for n in ("l.png", "notes.jpg", "rgb.png", "big.jpg", "cut.png", "palette.png")]
    results = predict_files(run, paths, top_k=10)
    assert [r.error is not None for r in results] == [False, True, False, False, True, False]
    assert [r.file for r in results] == [str(p) for p in paths]
    expected = softmax(predict_logits(run, x[None, ..., None]))[0]
    for r in (results[0], results[2], results[5]):  # the same pixels after conversion
        probs = np.array([g.prob for g in sorted(r.top, key=lambda g: g.index)])
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-7)
        assert r.top[0].index == int(expected.argmax())
    assert [r.inverted for r in results] == [False, None, True, True, None, False]
    big = results[3].top
    assert sum(g.prob for g in big) == pytest.approx(1.0)
    assert [g.prob for g in big] == sorted((g.prob for g in big), reverse=True)
    assert {g.name for g in big} == set(data.CLASS_NAMES)
    assert all(g.name == data.CLASS_NAMES[g.index] for g in big)
    assert results[1].top == () and results[1].error.startswith(f"{paths[1]}: not an image")
    with pytest.raises(ConfigError, match="--top-k must be between 1 and 10, got 11"):
        predict_files(run, paths, top_k=11)
    with pytest.raises(ConfigError, match="--invert must be one of auto, yes, no"):
        predict_files(run, paths, invert="maybe")
    with pytest.raises(ConfigError, match="3 class names for a model of 10 classes"):
        predict_files(run, paths, labels=["a", "b", "c"])
    named = predict_files(run, paths[:1], top_k=2, labels=[f"c{i}" for i in range(10)])[0]
    assert [g.name for g in named.top] == [f"c{g.index}" for g in results[0].top[:2]]


def test_prediction_layouts():
    p = Prediction("a.png", top=(Guess(3, "Dress", 0.9123), Guess(0, None, 0.05)), inverted=True)
    assert format_prediction(p) == "a.png: Dress 0.912, #0 0.050   (inverted)"
    assert p.to_json() == {
        "file": "a.png",
        "inverted": True,
        "top": [{"class": "Dress", "index": 3, "prob": 0.9123}, {"class": None, "index": 0, "prob": 0.05}],
    }
    assert list(Prediction("b.png", top=p.top).to_json()) == ["file", "top"]  # no inversion: no key
    bad = Prediction("c.png", error="c.png: cannot read image")
    assert bad.to_json() == {"file": "c.png", "error": "c.png: cannot read image"}
    assert format_prediction(bad) == "error: c.png: cannot read image"


def imagenet_style_run(num_classes=20):
    """A run as convert-torchvision makes one (RGB, adaptive head, ImageNet preprocessing), in
    memory: a thin VGG-11 with He-scaled random weights, at 32x32 so that it compiles fast."""
    config = TrainConfig(
        width=0.125, hidden=32, num_classes=num_classes, head="adaptive", channels=3, dataset="imagenet"
    ).validate()
    assert config.preprocessing == PREPROCESSING["imagenet"]
    model = from_config(config)
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    rng = np.random.default_rng(1)  # without compiling an init

    def draw(s):
        fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 50.0
        return rng.normal(0, (2 / fan_in) ** 0.5, s.shape).astype(np.float32)

    return LoadedRun(config, model, jax.tree.map(draw, shapes), Path("in-memory"))


def test_predict_files_on_imagenet_weights_is_the_sorted_top_k_of_the_softmax(tmp_path):
    run = imagenet_style_run()
    rng = np.random.default_rng(0)
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        Image.fromarray(rng.integers(0, 256, (240 + 10 * i, 320, 3), dtype=np.uint8)).save(path)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    results = predict_files(run, [paths[0], tmp_path / "bad.png", *paths[1:]], top_k=5)
    assert results[1].error is not None and results[1].top == ()
    good = [r for r in results if r.error is None]
    # The same crops through the model by hand: torchvision's transforms, then (x - mean) / std.
    crops = np.stack([images.load_image(p, PREPROCESSING["imagenet"])[0] for p in paths])
    assert crops.shape == (3, 224, 224, 3)
    x = preprocess(crops, 32, PREPROCESSING["imagenet"])
    full = np.asarray(jax.nn.softmax(jax.jit(run.model.apply)(run.variables, x), axis=-1))
    indices = np.array([[g.index for g in r.top] for r in good])
    probs = np.array([[g.prob for g in r.top] for r in good])
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=-1)[:, :5])
    np.testing.assert_allclose(probs, np.take_along_axis(full, indices, axis=-1), rtol=1e-6)
    assert np.all(np.diff(probs, axis=-1) <= 0) and float(probs.max()) < 0.99  # not saturated
    assert all(r.inverted is None and g.name is None for r in good for g in r.top)  # no names without labels
    with pytest.raises(ConfigError, match="--invert is for runs of light-on-dark pictures"):
        predict_files(run, paths, invert="no")
    with pytest.raises(ConfigError, match="--top-k must be between 1 and 20, got 21"):
        predict_files(run, paths, top_k=21)


def test_read_labels_counts_lines(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\n\n")
    assert read_labels(tmp_path / "labels.txt", 2) == ["cat", "dog"]
    with pytest.raises(DataError, match="has 2 lines but the model has 1000 classes"):
        read_labels(tmp_path / "labels.txt", 1000)


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
