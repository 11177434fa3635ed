import numpy as np
import pytest
from PIL import Image

from vggjax.data.images import load_image, open_image
from vggjax.errors import DataError
from vggjax.preprocessing import PREPROCESSING

FASHION, IMAGENET = PREPROCESSING["fashion-mnist"], PREPROCESSING["imagenet"]
ORIENTATION = 0x0112  # the EXIF tag


def crop(path):
    pixels, inverted = load_image(path, IMAGENET)
    assert inverted is None  # ImageNet's preprocessing does not invert
    return pixels


def test_imagenet_resizes_short_side_then_centre_crops(tmp_path):
    # 1024x512 horizontal ramp: pixel value = x / 4. Resize(256) halves it to 512x256;
    # CenterCrop(224) starts at left (512 - 224) / 2 = 144, top 16.
    ramp = np.tile((np.arange(1024) // 4).astype(np.uint8), (512, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    out = crop(tmp_path / "ramp.png")
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # Resized column j samples source x = 2j + 0.5 (value ~ x / 4); crop column 0 is j = 144.
    assert abs(int(out[100, 0, 0]) - (2 * 144 + 0.5) / 4) <= 1
    assert abs(int(out[100, -1, 0]) - (2 * 367 + 0.5) / 4) <= 1
    np.testing.assert_array_equal(out[..., 0], out[..., 2])  # grey -> equal RGB channels


def test_imagenet_pictures_are_rgb_whatever_the_file(tmp_path):
    Image.new("RGB", (300, 260), (255, 0, 0)).save(tmp_path / "red.png")
    Image.new("RGB", (300, 260), (255, 0, 0)).convert("P").save(tmp_path / "red_palette.png")
    Image.new("RGB", (300, 260), (255, 0, 0)).convert("CMYK").save(tmp_path / "red_cmyk.jpg", quality=100)
    for name in ("red.png", "red_palette.png"):
        assert crop(tmp_path / name)[112, 112].tolist() == [255, 0, 0], name  # red first: RGB, never BGR
    assert np.abs(crop(tmp_path / "red_cmyk.jpg")[112, 112].astype(int) - [255, 0, 0]).max() <= 3
    # Half-transparent red is composited onto white, as a viewer shows it: (255 + 255) / 2, 255 / 2.
    Image.new("RGBA", (300, 260), (255, 0, 0, 128)).save(tmp_path / "red_alpha.png")
    assert crop(tmp_path / "red_alpha.png")[112, 112].tolist() == [255, 127, 127]
    # 16-bit grey is scaled 0..65535 -> 0..255, not clipped at 255 as Pillow's convert("RGB") does.
    Image.fromarray(np.full((260, 300), 100 * 257, np.uint16)).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    assert crop(tmp_path / "grey16.png")[112, 112].tolist() == [100, 100, 100]
    with pytest.raises(DataError, match="cannot read image"):
        crop(tmp_path / "missing.png")


def _picture(w=300, h=200):
    """An RGB picture no rotation maps onto itself: ramps across and down, a blue corner."""
    x = np.zeros((h, w, 3), np.uint8)
    x[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    x[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    x[: h // 4, : w // 5, 2] = 255
    return x


# EXIF orientation -> the rotation a viewer applies: 3 = 180°, 6 = 90° clockwise, 8 = 90° anticlockwise.
@pytest.mark.parametrize("orientation, turns", [(3, 2), (6, -1), (8, 1)])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("preprocessing", [IMAGENET, FASHION], ids=["imagenet", "fashion-mnist"])
def test_exif_orientation_is_applied_for_every_run(tmp_path, orientation, turns, suffix, preprocessing):
    # Issue 12, bug 4: the ImageNet path read a phone photo's pixels without its EXIF
    # rotation, so it classified the picture on its side.
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    tagged = tmp_path / f"tagged{suffix}"
    Image.fromarray(_picture()).save(tagged, exif=exif, quality=95)
    with Image.open(tagged) as img:  # the stored pixels (a JPEG's decoded), without the rotation
        assert img.getexif()[ORIENTATION] == orientation
        stored = np.asarray(img.convert("RGB"))
    Image.fromarray(np.rot90(stored, turns)).save(tmp_path / "rotated.png")  # lossless, no tag
    Image.fromarray(stored).save(tmp_path / "unrotated.png")
    got, want = (load_image(tmp_path / n, preprocessing)[0] for n in (tagged.name, "rotated.png"))
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, load_image(tmp_path / "unrotated.png", preprocessing)[0])
    assert open_image(tagged).size == Image.open(tmp_path / "rotated.png").size


@pytest.mark.parametrize("preprocessing", [IMAGENET, FASHION], ids=["imagenet", "fashion-mnist"])
def test_every_decoder_failure_is_one_data_error_naming_the_file(tmp_path, preprocessing):
    Image.fromarray(_picture()).save(tmp_path / "good.png")
    (tmp_path / "notes.jpg").write_text("not an image")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:300])
    (tmp_path / "folder.png").mkdir()
    for name, message in [
        ("notes.jpg", "not an image Pillow can read"),
        ("cut.png", "cannot read image"),
        ("missing.png", "No such file or directory"),
        ("folder.png", "cannot read image"),
    ]:
        with pytest.raises(DataError, match=message) as info:
            load_image(tmp_path / name, preprocessing)
        assert str(info.value).startswith(f"{tmp_path / name}: ") and len(str(info.value).splitlines()) == 1
