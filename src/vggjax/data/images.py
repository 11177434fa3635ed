"""Image files as model inputs: one Pillow decoder and two target transforms (numpy + Pillow).

:func:`open_image` decodes any file Pillow reads the same way for every run:

1. Open and decode the whole file; the EXIF orientation (a phone photo's rotation) is
   applied, as a viewer shows the picture.
2. Mode: 16-bit grey (``I;16``, ``I``) is scaled 0..65535 → 0..255 (Pillow's own conversion
   would clip it) and float grey (``F``) from [0, 1]; an image with transparency (RGBA, LA,
   a palette with a transparent colour) is composited onto **white**, as a viewer shows it;
   a palette, CMYK or YCbCr becomes RGB. The result is ``L`` (grey) or ``RGB``.

Every failure (missing, not an image, truncated, an exotic mode) is one :class:`DataError`
naming the file. Then the run's :class:`~vggjax.config.Preprocessing` record picks the
target transform (:func:`load_image`):

- **Fashion-MNIST** (:func:`maybe_invert`, :func:`pad_to_square`): 28×28 grey, a light
  garment on black. Grey is Pillow's ``convert("L")`` (ITU-R 601-2 luma). ``invert="auto"``
  inverts when the border (the outer 1/14 of each side) is mostly light (more than half its
  pixels ≥ 128), so a garment photographed on a white table becomes light-on-black;
  ``"yes"``/``"no"`` force it. Then pad to a square with black, centred, and resize
  (Pillow bilinear, antialiased when shrinking).
- **ImageNet** (:func:`center_crop`): torchvision's ``Resize(256)`` + ``CenterCrop(224)``
  on RGB ``uint8`` (``torchvision/transforms/functional.py``): the shorter side to 256
  (bilinear, antialiased), the longer to ``int(256 · long / short)``, then the centre crop
  with its top-left at ``round((side - 224) / 2)``.

Scaling to [0, 1] and the mean/std normalisation happen on the device
(:func:`vggjax.training.steps.preprocess`), so pixels stay ``uint8`` here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vggjax.errors import ConfigError, DataError, first_line
from vggjax.preprocessing import Preprocessing

INVERT_CHOICES = ("auto", "yes", "no")
_TRANSPARENT = ("RGBA", "LA", "PA", "RGBa", "La")


def check_invert(invert: str) -> str:
    """Returns ``invert`` if it is ``"auto"``, ``"yes"`` or ``"no"``.

    Raises:
      ConfigError: for anything else, naming ``--invert`` and the choices.
    """
    if invert not in INVERT_CHOICES:
        raise ConfigError(f"--invert must be one of {', '.join(INVERT_CHOICES)}, got {invert!r}")
    return invert


def standard_mode(img: Image.Image) -> Image.Image:
    """Any Pillow image → the same picture in mode ``L`` (grey) or ``RGB`` (step 2 above).

    Raises:
      DataError: for a mode Pillow cannot convert.
    """
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img).astype(np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.round(a * (255.0 / scale)), 0, 255).astype(np.uint8))
    if img.mode == "F":
        a = np.asarray(img, np.float64)
        return Image.fromarray(np.clip(np.round(a * 255.0 if a.max() <= 1.0 else a), 0, 255).astype(np.uint8))
    if img.mode in _TRANSPARENT or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("L" if img.mode in ("1", "L") else "RGB")
    except ValueError as e:
        raise DataError(f"cannot convert image mode {img.mode} ({e}); save it as RGB or grey") from None


def open_image(path: str | Path) -> Image.Image:
    """Decodes an image file as a viewer shows it (steps 1–2 above), in mode ``L`` or ``RGB``.

    Args:
      path: a PNG, JPEG or any other file Pillow decodes; any size and mode.

    Returns:
      A loaded Pillow image in mode ``L`` or ``RGB``, EXIF orientation applied.

    Raises:
      DataError: for a file that is missing, unreadable, not an image, truncated, or of a
        mode Pillow cannot convert; the message starts with the path.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return standard_mode(ImageOps.exif_transpose(img))
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read; give a PNG or JPEG file") from None
    except Exception as e:  # any decoder failure (OSError, SyntaxError, struct.error ...) is a bad file
        reason = e.strerror if isinstance(e, OSError) and e.strerror else first_line(e)
        raise DataError(f"{path}: cannot read image ({reason}); give a readable PNG or JPEG file") from None


def to_grey(img: Image.Image) -> np.ndarray:
    """Any Pillow image → ``uint8[H, W]`` grey (ITU-R 601-2 luma of :func:`standard_mode`).

    Raises:
      DataError: for a mode Pillow cannot convert.
    """
    return np.asarray(standard_mode(img).convert("L"))


def border_is_light(grey: np.ndarray) -> bool:
    """Whether more than half of the border pixels of ``uint8[H, W]`` are ≥ 128.

    The border is the outer ``max(1, min(H, W) // 14)`` pixels of each side.
    """
    h, w = grey.shape
    b = max(1, min(h, w) // 14)
    ring = np.concatenate(
        [grey[:b].ravel(), grey[-b:].ravel(), grey[b:-b, :b].ravel(), grey[b:-b, -b:].ravel()]
    )
    return bool(np.mean(ring >= 128) > 0.5)


def maybe_invert(pixels: np.ndarray, invert: str) -> tuple[np.ndarray, bool]:
    """``255 - pixels`` if ``invert`` is ``"yes"``, or ``"auto"`` and the border is light.

    Args:
      pixels: ``uint8[H, W]`` grey or ``uint8[H, W, 3]`` RGB (its grey decides the border).
      invert: ``"auto"``, ``"yes"`` or ``"no"``.

    Returns:
      The pixels, inverted or not, and whether they were.

    Raises:
      ConfigError: for another ``invert``.
    """
    check_invert(invert)
    grey = pixels if pixels.ndim == 2 else np.asarray(Image.fromarray(pixels).convert("L"))
    inverted = invert == "yes" or (invert == "auto" and border_is_light(grey))
    return (255 - pixels if inverted else pixels), inverted


def pad_to_square(pixels: np.ndarray, size: int) -> np.ndarray:
    """Pads ``uint8[H, W(, C)]`` to a centred black square, then resizes it to ``size × size``.

    Black is Fashion-MNIST's background; the resize is Pillow's bilinear filter,
    antialiased when shrinking, so the aspect ratio is kept.
    """
    h, w = pixels.shape[:2]
    side = max(h, w)
    square = np.zeros((side, side, *pixels.shape[2:]), np.uint8)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = pixels
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR))


def center_crop(img: Image.Image, *, resize: int, size: int) -> Image.Image:
    """torchvision's ``Resize(resize)`` then ``CenterCrop(size)`` on a Pillow image.

    The shorter side becomes ``resize`` pixels and the longer ``int(resize · long / short)``
    (bilinear, antialiased); the crop's top-left corner is at ``round((side - size) / 2)``.
    """
    w, h = img.size
    new = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)
    img = img.resize(new, Image.Resampling.BILINEAR)
    left, top = int(round((new[0] - size) / 2.0)), int(round((new[1] - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def load_image(
    path: str | Path, preprocessing: Preprocessing, *, invert: str = "auto"
) -> tuple[np.ndarray, bool | None]:
    """Reads an image file as the host side of ``preprocessing`` says (the module docstring).

    :func:`open_image`, grey or RGB; with ``preprocessing.resize`` set, :func:`center_crop`;
    with ``preprocessing.invert``, :func:`maybe_invert`; without ``resize``, :func:`pad_to_square`.

    Args:
      path: a PNG, JPEG or any other file Pillow decodes; any size and mode.
      preprocessing: the run's record (``config.preprocessing``), e.g.
        ``vggjax.config.PREPROCESSING["fashion-mnist"]``.
      invert: ``"auto"``, ``"yes"`` or ``"no"``; used where ``preprocessing.invert`` is set.

    Returns:
      ``(uint8[S, S, C], inverted)`` with ``S = preprocessing.size`` and ``C =
      preprocessing.channels``; ``inverted`` is whether the picture was inverted, None
      where ``preprocessing`` does not invert.

    Raises:
      DataError: for a file that is missing, unreadable, not an image, or truncated.
      ConfigError: for an unknown ``invert``.
    """
    check_invert(invert)
    p = preprocessing
    img = open_image(path).convert("L" if p.channels == 1 else "RGB")
    if p.resize is not None:
        img = center_crop(img, resize=p.resize, size=p.size)
    pixels, inverted = np.asarray(img), None
    if p.invert:
        pixels, inverted = maybe_invert(pixels, invert)
    if p.resize is None:
        pixels = pad_to_square(pixels, p.size)
    return pixels.reshape(p.size, p.size, p.channels), inverted
