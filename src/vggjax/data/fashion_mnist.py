"""Fashion-MNIST: find, download, verify and load the four official IDX files.

Each file may be gzipped or raw, named with or without ``.gz`` (gzip is recognised by
content). Its content is checked against :data:`SHA256` whenever it is read. Bad data
raises :class:`~vggjax.errors.DataError`, one line naming the file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tqdm import tqdm

from vggjax.data.idx import read_idx_counted
from vggjax.errors import DataError

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# MD5 of the .gz files as served from URL (Zalando's README), checked by download().
MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
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
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "VGGJAX_DATA"
IMAGE_SIZE = 28
NUM_CLASSES = len(CLASS_NAMES)

_ALL_FILES = tuple(name for pair in FILES.values() for name in pair)
HOW_TO_GET = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, or download "
    f"{', '.join(_ALL_FILES)} from {URL} into a directory and pass --data-dir DIR "
    f"or set {ENV_VAR}=DIR"
)
_REPLACE = f"replace it with the official file from {URL}"
_NO_VERIFY = "pass --no-verify-data (verify=False) to use it anyway"
_PUT_FILES = f"put {', '.join(_ALL_FILES)} there (gzipped or not), or choose another directory"


class ClassCountWarning(UserWarning):
    """Unverified labels whose class counts are not those of the official split (:data:`PER_CLASS`)."""


def cache_dir() -> Path:
    """Download cache: ``$XDG_CACHE_HOME/vggjax/fashion-mnist`` or ``~/.cache/vggjax/...``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "vggjax" / "fashion-mnist"

def _locate(directory: Path, name: str) -> Path | None:
    """``directory/name`` (``.gz``) or its raw twin without ``.gz``, whichever exists."""
    gz, raw = directory / name, directory / name.removesuffix(".gz")
    return gz if gz.is_file() else raw if raw.is_file() else None


def _missing(directory: Path) -> list[str]:
    return [name for name in _ALL_FILES if _locate(directory, name) is None]


def find_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """Find the directory holding all four files, ``.gz`` or raw.

    Search order: ``data_dir``, ``$VGGJAX_DATA``, :data:`DEBIAN_DIR`, :func:`cache_dir`.

    Args:
        data_dir: a directory the user chose; if given it must hold the files.

    Returns:
        The first directory holding all four files, or ``None``.

    Raises:
        DataError: ``data_dir`` or ``$VGGJAX_DATA`` is set but lacks files (an explicit
            choice is never silently skipped).
    """
    for chosen, what in ((data_dir, "data directory"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if chosen is None or str(chosen) == "":
            continue
        directory = Path(chosen).expanduser()
        missing = _missing(directory) if directory.is_dir() else None
        if missing is None:
            raise DataError(f"{what} {directory} does not exist; create it and {_PUT_FILES}")
        if missing:
            raise DataError(f"{what} {directory} lacks {', '.join(missing)}; {_PUT_FILES}")
        return directory
    for directory in (DEBIAN_DIR, cache_dir()):
        if directory.is_dir() and not _missing(directory):
            return directory
    return None


def _fetch(url: str, out: BinaryIO, name: str, progress: bool, timeout: float) -> str:
    """Stream ``url`` into the open file ``out``; return the md5 of what was written."""
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException, ValueError) as e:
        is_http = isinstance(e, urllib.error.HTTPError)
        reason = e.reason if isinstance(e, urllib.error.URLError) and not is_http else e
        raise DataError(f"could not download {url} ({reason}); {HOW_TO_GET}") from None
    return digest.hexdigest()


def _file_md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def download(
    dest_dir: str | os.PathLike,
    *,
    base_url: str = URL,
    progress: bool = True,
    timeout: float = 30,
    md5: Mapping[str, str] | None = None,
) -> Path:
    """Download the four files into ``dest_dir``, verifying each MD5.

    Each file is written to a temporary file in ``dest_dir`` and renamed into place only
    once its checksum matches; files already present with the right checksum are skipped.

    Args:
        dest_dir: directory to download into; created if missing.
        base_url: where the files are served; the file name is appended.
        progress: show a tqdm progress bar per file.
        timeout: socket timeout in seconds.
        md5: expected checksum per file name; defaults to :data:`MD5`.

    Returns:
        ``dest_dir`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: ``dest_dir`` not writable, network failure or wrong checksum; no
            partial file is left behind.
    """
    md5 = MD5 if md5 is None else md5
    dest = Path(dest_dir).expanduser()
    for name in _ALL_FILES:
        final, url, tmp_path = dest / name, base_url.rstrip("/") + "/" + name, None
        if final.is_file() and _file_md5(final) == md5[name]:
            continue
        try:
            dest.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=dest, suffix=".part", delete=False) as tmp:
                tmp_path = Path(tmp.name)
                got = _fetch(url, tmp, name, progress, timeout)
            if got != md5[name]:
                raise DataError(
                    f"downloaded {name} from {url} has md5 {got}, expected {md5[name]}; "
                    f"the download is corrupt, try again later or {HOW_TO_GET}"
                )
            os.replace(tmp_path, final)
        except OSError as e:
            raise DataError(f"cannot write {final} ({e}); {HOW_TO_GET}") from None
        finally:
            if tmp_path is not None:
                tmp_path.unlink(missing_ok=True)
    return dest


def _resolve_dir(data_dir: str | os.PathLike | None, allow_download: bool, progress: bool) -> Path:
    directory = find_data_dir(data_dir)
    if directory is not None:
        return directory
    if not allow_download:
        raise DataError(f"Fashion-MNIST not found in ${ENV_VAR}, {DEBIAN_DIR} or {cache_dir()}; {HOW_TO_GET}")
    return download(cache_dir(), base_url=URL, progress=progress)


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
    directory = _resolve_dir(data_dir, download, progress=True)
    image_path, label_path = (_locate(directory, n) or directory / n for n in FILES[split])
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
    directory = _resolve_dir(data_dir, download, progress)
    train = load_split("train", directory, limit=limit_train, verify=verify)
    return train, load_split("test", directory, limit=limit_test, verify=verify)
