"""Where the four Fashion-MNIST files come from: their names, the search path and the download.

:data:`FILES` names them per split; :func:`find_data_dir` looks in ``--data-dir``,
``$VGGJAX_DATA``, :data:`DEBIAN_DIR` and :func:`cache_dir`; :func:`download` fetches them
from :data:`URL`, checking :data:`MD5`. Reading and verifying them is
:mod:`vggjax.data.fashion_mnist`'s job.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from vggjax.errors import DataError

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
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "VGGJAX_DATA"
_ALL_FILES = tuple(name for pair in FILES.values() for name in pair)
HOW_TO_GET = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, or download "
    f"{', '.join(_ALL_FILES)} from {URL} into a directory and pass --data-dir DIR "
    f"or set {ENV_VAR}=DIR"
)
_PUT_FILES = f"put {', '.join(_ALL_FILES)} there (gzipped or not), or choose another directory"


def cache_dir() -> Path:
    """Download cache: ``$XDG_CACHE_HOME/vggjax/fashion-mnist`` or ``~/.cache/vggjax/...``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "vggjax" / "fashion-mnist"


def locate(directory: Path, name: str) -> Path | None:
    """``directory/name`` (``.gz``) or its raw twin without ``.gz``, whichever exists, else None."""
    gz, raw = directory / name, directory / name.removesuffix(".gz")
    return gz if gz.is_file() else raw if raw.is_file() else None


def _missing(directory: Path) -> list[str]:
    return [name for name in _ALL_FILES if locate(directory, name) is None]


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


def resolve_dir(data_dir: str | os.PathLike | None, allow_download: bool, progress: bool) -> Path:
    """The directory holding the four files (:func:`find_data_dir`), else downloaded into :func:`cache_dir`.

    Raises:
        DataError: the files are found nowhere and ``allow_download`` is off, the download
            fails, or an explicit ``data_dir`` or ``$VGGJAX_DATA`` lacks files.
    """
    directory = find_data_dir(data_dir)
    if directory is not None:
        return directory
    if not allow_download:
        raise DataError(f"Fashion-MNIST not found in ${ENV_VAR}, {DEBIAN_DIR} or {cache_dir()}; {HOW_TO_GET}")
    return download(cache_dir(), base_url=URL, progress=progress)
