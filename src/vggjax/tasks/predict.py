"""``vggjax predict``: classify your own PNG/JPEG files with a trained run.

Fashion-MNIST images are 28×28 grey, a light garment centred on a black background.
A file is turned into such an image with Pillow, then goes through the same
``steps.preprocess`` as every training batch (scale to [0, 1], bilinear resize to the
run's ``image_size``):

1. Open and decode; a JPEG's EXIF orientation is applied.
2. Grey: 16-bit grey (``I;16``, ``I``) is scaled 0..65535 → 0..255 (Pillow's own
   conversion would clip it); an image with transparency (RGBA, LA, a palette with a
   transparent colour) is first composited onto **white**, as a viewer shows it, so
   transparent areas count as background; everything else uses Pillow's ``convert("L")``
   (ITU-R 601-2 luma).
3. Inversion (``invert``): ``"auto"`` inverts when the border (the outer 1/14 of each
   side, 2 px at 28×28) is mostly light (more than half its pixels ≥ 128), i.e. a
   photo of a garment on a white or light table becomes light-on-black like the
   training data; ``"yes"`` / ``"no"`` force the choice.
4. Pad to a square with black (the training background), centred, keeping the aspect
   ratio; resize to 28×28 (Pillow bilinear, antialiased when shrinking).

Best results come from one garment filling most of the frame on a plain background.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vggjax import data
from vggjax.errors import ConfigError, DataError, first_line
from vggjax.run.runs import LoadedRun, predict_logits, softmax

INVERT_CHOICES = ("auto", "yes", "no")


def to_grey(img: Image.Image) -> np.ndarray:
    """Any Pillow image → ``uint8[H, W]`` grey (steps 1–2 of the module docstring).

    Raises:
      DataError: for a mode Pillow cannot convert to grey.
    """
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img).astype(np.float64)
        scale = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return np.clip(np.round(a * (255.0 / scale)), 0, 255).astype(np.uint8)
    if img.mode == "F":
        a = np.asarray(img, np.float64)
        return np.clip(np.round(a * 255.0 if a.max() <= 1.0 else a), 0, 255).astype(np.uint8)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    try:
        return np.asarray(img.convert("L"))
    except ValueError as e:
        raise DataError(
            f"cannot convert image mode {img.mode} to grey ({e}); save it as RGB or grey"
        ) from None


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


def load_image(
    path: str | Path, *, invert: str = "auto", size: int = data.IMAGE_SIZE
) -> tuple[np.ndarray, bool]:
    """Reads an image file as a Fashion-MNIST-style picture (the module docstring's steps).

    Args:
      path: a PNG, JPEG or any other file Pillow can decode; any size and mode.
      invert: ``"auto"``, ``"yes"`` or ``"no"``.
      size: output side in pixels (28, the dataset's).

    Returns:
      ``(uint8[size, size, 1], inverted)``: light object on black, and whether the
      grey image was inverted.

    Raises:
      DataError: for a file that is missing, unreadable, not an image, or truncated.
      ConfigError: for an unknown ``invert``.
    """
    if invert not in INVERT_CHOICES:
        raise ConfigError(f"--invert must be one of {', '.join(INVERT_CHOICES)}, got {invert!r}")
    try:
        with Image.open(path) as img:
            img.load()
            grey = to_grey(ImageOps.exif_transpose(img))
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read; give a PNG or JPEG file") from None
    except Exception as e:  # any decoder failure (OSError, SyntaxError, struct.error ...) is a bad file
        reason = e.strerror if isinstance(e, OSError) and e.strerror else first_line(e)
        raise DataError(f"{path}: cannot read image ({reason}); give a readable PNG or JPEG file") from None
    inverted = invert == "yes" or (invert == "auto" and border_is_light(grey))
    if inverted:
        grey = 255 - grey
    h, w = grey.shape
    side = max(h, w)
    square = np.zeros((side, side), np.uint8)
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = grey
    small = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(small)[..., None], inverted


def predict_files(
    run: LoadedRun, paths: Sequence[str | Path], *, top_k: int = 3, invert: str = "auto"
) -> list[dict]:
    """Top-``k`` classes for each file; a file that cannot be read gets an error entry.

    Args:
      run: a loaded run (:func:`vggjax.run.runs.load_run`).
      paths: image files.
      top_k: classes to report per file, most probable first.
      invert: see :func:`load_image`.

    Returns:
      One dict per path, in order: ``{"file", "inverted", "top": [{"class", "index",
      "prob"}] * top_k}`` or ``{"file", "error"}`` (the one-line message).

    Raises:
      ConfigError: for ``top_k`` outside 1..num_classes or an unknown ``invert``.
    """
    k = run.model.num_classes
    if not 1 <= top_k <= k:
        raise ConfigError(f"--top-k must be between 1 and {k}, got {top_k}")
    if invert not in INVERT_CHOICES:
        raise ConfigError(f"--invert must be one of {', '.join(INVERT_CHOICES)}, got {invert!r}")
    results: list[dict] = []
    images = []
    for path in paths:
        try:
            image, inverted = load_image(path, invert=invert)
        except DataError as e:
            results.append({"file": str(path), "error": str(e)})
            continue
        results.append({"file": str(path), "inverted": inverted})
        images.append(image)
    if images:
        probs = softmax(predict_logits(run, np.stack(images), batch_size=64))
        good = (r for r in results if "error" not in r)
        for r, p in zip(good, probs, strict=True):
            order = np.argsort(-p, kind="stable")[:top_k]
            r["top"] = [{"class": data.CLASS_NAMES[i], "index": int(i), "prob": float(p[i])} for i in order]
    return results


def format_prediction(result: dict) -> str:
    """One line: ``file: Class 0.912, Class 0.051, ... [inverted]`` (or the error)."""
    if "error" in result:
        return f"error: {result['error']}"
    top = ", ".join(f"{t['class']} {t['prob']:.3f}" for t in result["top"])
    return f"{result['file']}: {top}" + ("   (inverted)" if result["inverted"] else "")
