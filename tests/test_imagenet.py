import jax
import numpy as np
import pytest
from PIL import Image

from vggjax.errors import DataError
from vggjax.nn.vgg import build_model
from vggjax.tasks import imagenet


def test_load_image_resizes_short_side_then_centre_crops(tmp_path):
    # 1024x512 horizontal ramp: pixel value = x / 4. Resize(256) halves it to 512x256;
    # CenterCrop(224) starts at left (512 - 224) / 2 = 144, top 16.
    ramp = np.tile((np.arange(1024) // 4).astype(np.uint8), (512, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    out = imagenet.load_image(tmp_path / "ramp.png")
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # Resized column j samples source x = 2j + 0.5 (value ~ x / 4); crop column 0 is j = 144.
    assert abs(int(out[100, 0, 0]) - (2 * 144 + 0.5) / 4) <= 1
    assert abs(int(out[100, -1, 0]) - (2 * 367 + 0.5) / 4) <= 1
    np.testing.assert_array_equal(out[..., 0], out[..., 2])  # grey -> equal RGB channels


def test_load_image_is_rgb_whatever_the_file(tmp_path):
    Image.new("RGB", (300, 260), (255, 0, 0)).save(tmp_path / "red.png")
    Image.new("RGBA", (300, 260), (255, 0, 0, 128)).save(tmp_path / "red_alpha.png")
    Image.new("RGB", (300, 260), (255, 0, 0)).convert("P").save(tmp_path / "red_palette.png")
    for name in ("red.png", "red_alpha.png", "red_palette.png"):
        pixel = imagenet.load_image(tmp_path / name)[112, 112]
        assert pixel.tolist() == [255, 0, 0], name  # red first: RGB, never BGR
    with pytest.raises(DataError, match="cannot read image"):
        imagenet.load_image(tmp_path / "missing.png")


def test_normalize_takes_uint8_rgb_only():
    red = np.zeros((1, 2, 2, 3), np.uint8)
    red[..., 0] = 255
    out = np.asarray(imagenet.normalize(red))[0, 0, 0]
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # The two classic mistakes cannot get through: 0..255 floats and pre-scaled floats.
    with pytest.raises(DataError, match="takes uint8 RGB pixels .*got float32"):
        imagenet.normalize(red.astype(np.float32))
    with pytest.raises(DataError, match="takes uint8 RGB pixels .*got float64"):
        imagenet.normalize(red / 255.0)
    with pytest.raises(DataError, match="3 RGB channels"):
        imagenet.normalize(np.zeros((1, 2, 2, 1), np.uint8))


def test_predict_returns_sorted_top_k_of_the_softmax():
    model = build_model("vgg11", width=0.125, hidden=32, num_classes=20, head="adaptive")
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32))
    rng = np.random.default_rng(1)  # He-scaled random weights, without compiling an init

    def draw(s):
        fan_in = np.prod(s.shape[:-1]) if len(s.shape) > 1 else 50.0
        return rng.normal(0, (2 / fan_in) ** 0.5, s.shape).astype(np.float32)

    variables = jax.tree.map(draw, shapes)
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
    indices, probs = imagenet.predict(model, variables, images, top=5)
    logits = jax.jit(model.apply)(variables, imagenet.normalize(images))
    full = np.asarray(jax.nn.softmax(logits, axis=-1))
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=-1)[:, :5])
    np.testing.assert_allclose(probs, np.take_along_axis(full, indices, axis=-1), rtol=1e-6)
    assert np.all(np.diff(probs, axis=-1) <= 0) and float(probs.max()) < 0.99  # not saturated


def test_read_labels_counts_lines(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\n\n")
    assert imagenet.read_labels(tmp_path / "labels.txt", 2) == ["cat", "dog"]
    with pytest.raises(DataError, match="has 2 lines but the model has 1000 classes"):
        imagenet.read_labels(tmp_path / "labels.txt", 1000)
