"""Fashion-MNIST: load and verify the four official IDX files, found by :mod:`~vggjax.data.sources`.

Each file may be gzipped or raw, named with or without ``.gz`` (gzip is recognised by
content). Its content is checked against :data:`SHA256` whenever it is read. Bad data
raises :class:`~vggjax.errors.DataError`, one line naming the file. The class names,
image size and class counts are here too.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from vggjax.data.idx import read_idx_counted
from vggjax.data.sources import FILES, URL, locate, resolve_dir
from vggjax.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# SHA-256 of each file's decompressed content (IDX header and payload), checked on every
# read. Debian re-gzips the same deflate stream without the stored name and time (23-24
# bytes shorter), so its .gz checksums differ from MD5's but these are the same, as they
# are for the files gunzipped.
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
PER_CLASS: dict[str, int] = {"train": 6000, "test": 1000}  # examples of each class in each split
IMAGE_SIZE = 28
NUM_CLASSES = len(CLASS_NAMES)

_REPLACE = f"replace it with the official file from {URL}"
_NO_VERIFY = "pass --no-verify-data (verify=False) to use it anyway"


class ClassCountWarning(UserWarning):
    """Unverified labels whose class counts are not those of the official split (:data:`PER_CLASS`)."""


def load_split(
    split: str,
    data_dir: str | os.PathLike | None = None,
    *,
    limit: int | None = None,
    download: bool = False,
    verify: bool = True,
) -> dict[str, np.ndarray]:
    """Load one split, checked for consistency and, unless ``verify`` is off, against :data:`SHA256`.

    Args:
        split: ``"train"`` (60000 examples) or ``"test"`` (10000).
        data_dir: directory holding the files; searched for (:func:`find_data_dir`) if None.
        limit: keep only the first ``limit`` examples (at least 1); only those images
            are kept in memory (see :func:`read_idx`). Verification still reads the rest
            of the images file, in pieces (about 0.3 s of CPU more for all of train).
        download: download into :func:`cache_dir` if the files are found nowhere.
        verify: check the SHA-256 of both files' decompressed content (``--no-verify-data``
            turns it off, for a modified copy). When off, a :class:`ClassCountWarning` is
            issued if the labels' class counts differ from the official :data:`PER_CLASS`.

    Returns:
        ``{"image": uint8[N, 28, 28, 1], "label": int32[N]}``.

    Raises:
        DataError: unknown split, bad ``limit``, missing or malformed files, image and
            label counts that differ, a label outside 0..9, or (``verify``) a file whose
            content is not the official one.
    """
    if split not in FILES:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(map(repr, FILES))}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}; pass a positive limit or none")
    directory = resolve_dir(data_dir, download, progress=True)
    image_path, label_path = (locate(directory, n) or directory / n for n in FILES[split])
    # Only the images used are kept (47 MB for all of train); the labels (60 kB) are read
    # in full, so every label is checked to be a class, as without a limit.
    images, num_images, image_sha = read_idx_counted(image_path, limit, digest=verify)
    labels, _, label_sha = read_idx_counted(label_path, None, digest=verify)
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        shape = (num_images, *images.shape[1:])
        raise DataError(f"{image_path}: images of shape {shape}, not (N, 28, 28); {_REPLACE}")
    if labels.ndim != 1:
        raise DataError(f"{label_path}: labels of shape {labels.shape}, not (N,); {_REPLACE}")
    if num_images != len(labels):
        raise DataError(
            f"{image_path} holds {num_images} images but {label_path} holds {len(labels)} "
            f"labels; both must come from the same split: {_REPLACE}"
        )
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{label_path}: label {labels[i]} at index {i} is not in 0..9; {_REPLACE}")
    for path, name, got in zip((image_path, label_path), FILES[split], (image_sha, label_sha), strict=True):
        if verify and got != SHA256[name]:
            raise DataError(
                f"{path}: content has SHA-256 {got}, expected {SHA256[name]} (the official {name}); "
                f"{_REPLACE}, or {_NO_VERIFY}"
            )
    if not verify:
        _warn_on_class_counts(split, label_path, labels)
    if limit is not None:
        images, labels = images[:limit].copy(), labels[:limit]
    return {"image": images[..., None], "label": labels.astype(np.int32)}


def check_split(
    split: str, data_dir: str | os.PathLike | None = None, *, download: bool = False, verify: bool = True
) -> None:
    """Checks one split's files as :func:`load_split` does, and keeps none of their data.

    Training calls it at start for the test split, which it reads only at the end, so that
    a missing or corrupt test file stops a run before anything is written. It reads the
    label file and (``verify``) hashes the images file, but returns no image or label.

    Raises:
        DataError: as :func:`load_split`.
    """
    load_split(split, data_dir, limit=1, download=download, verify=verify)


def _warn_on_class_counts(split: str, path: Path, labels: np.ndarray) -> None:
    """Warn if the labels of a whole split do not hold :data:`PER_CLASS` examples of each class."""
    counts = np.bincount(labels, minlength=NUM_CLASSES).tolist()
    if counts != [PER_CLASS[split]] * NUM_CLASSES:
        warnings.warn(
            f"{path}: class counts {counts} are not the official {split} split's {PER_CLASS[split]} "
            "of each class, so this is not Fashion-MNIST as published (not verified: --no-verify-data)",
            ClassCountWarning,
            stacklevel=3,
        )


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    limit_train: int | None = None,
    limit_test: int | None = None,
    download: bool = True,
    progress: bool = True,
    verify: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Load both splits, downloading into :func:`cache_dir` if they are found nowhere.

    Args:
        data_dir: directory holding the files; searched for (:func:`find_data_dir`) if None.
        limit_train: keep only the first ``limit_train`` training examples (only their
            images are kept in memory).
        limit_test: keep only the first ``limit_test`` test examples (likewise).
        download: allow downloading when no directory holds the files.
        progress: show download progress bars.
        verify: check each file's content against :data:`SHA256` (see :func:`load_split`).

    Returns:
        ``(train, test)``, each ``{"image": uint8[N, 28, 28, 1], "label": int32[N]}``.

    Raises:
        DataError: the data is missing (and ``download`` is off or fails), malformed, or
            (``verify``) not the official files.
    """
    directory = resolve_dir(data_dir, download, progress)
    train = load_split("train", directory, limit=limit_train, verify=verify)
    return train, load_split("test", directory, limit=limit_test, verify=verify)
