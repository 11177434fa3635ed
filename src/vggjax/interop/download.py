"""Fetching a file by URL into a cache, verified by SHA-256, never leaving half of it behind.

:func:`fetch_verified` is the one download path for weights files (torchvision's, by name, in
:mod:`vggjax.interop.hub`; any other pinned file, e.g. LPIPS's ``lin`` weights). It streams
the URL into a temp file beside the target (``.<name>.<random>.part``), checks the byte count
and the SHA-256, and only then renames it into place; on any failure, Ctrl-C included, the temp
file is removed, so the target is either absent or complete.

A file that is already there is used without the network. It is hashed once, on its first use
(whether vggjax downloaded it or someone placed it by hand), and the result is recorded beside
it in ``.<name>.verified`` with the file's size and modification time; later uses compare
only those, so a 500 MB file is not re-read on every ``vggjax predict``. A file whose size or
time changed is hashed again. (torch.hub's ``load_state_dict_from_url`` does not check an
existing file at all; this catches a truncated or wrong file placed by hand before it is used.)
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from vggjax.errors import CheckpointError, first_line
from vggjax.run.files import atomic_write_text

# torch.hub's HASH_REGEX (torch/hub.py): the hex after the last-but-one "-" of a file name,
# e.g. "397923af" in vgg16-397923af.pth, is the prefix of the file's SHA-256.
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")
CHUNK = 1 << 20  # bytes read and hashed at a time


def hash_prefix(url: str) -> str:
    """The SHA-256 prefix torchvision's ``check_hash`` takes from a file name, e.g. ``"397923af"``.

    Raises:
      ValueError: if the name carries no ``-<hex>.`` part.
    """
    match = HASH_REGEX.search(url.rsplit("/", 1)[-1])
    if match is None or not match.group(1):
        raise ValueError(f"{url} has no -<sha256 prefix>. in its file name")
    return match.group(1)


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in :data:`CHUNK` pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _by_hand(path: Path, sha256: str) -> str:
    """How to place the file by hand; every message that ends with it has named the URL."""
    return f"download it by hand and save it as {path} (its SHA-256 starts {sha256[:8]}), then run again"


def _record(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _stamp(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def check_file(path: str | Path, *, sha256: str, size: int | None = None, url: str = "") -> Path:
    """Checks an existing file against ``sha256`` (a prefix or the full hex) and ``size``.

    The first check hashes the file and records the result (see the module docstring);
    later ones compare the record's size and modification time only.

    Returns:
      ``path``.

    Raises:
      CheckpointError: if the size or the SHA-256 differs, naming the file, both values and
        how to replace it; the file itself is left alone.
    """
    path, sha256 = Path(path), sha256.lower()
    stamp = _stamp(path)
    try:
        seen = json.loads(_record(path).read_text())
        if {k: seen.get(k) for k in stamp} == stamp and str(seen.get("sha256", "")).startswith(sha256):
            return path
    except (OSError, ValueError, AttributeError):
        pass  # no record, or not ours: hash the file
    where = f" (from {url})" if url else ""
    if size is not None and stamp["size"] != size:
        raise CheckpointError(
            f"{path} has {stamp['size']:,} bytes, not {size:,}{where}; delete it to download it again, "
            "or put the right file there"
        )
    got = sha256_file(path)
    if not got.startswith(sha256):
        raise CheckpointError(
            f"{path} has SHA-256 {got[:16]}…, not {sha256}…{where}; delete it to download it again, "
            "or put the right file there"
        )
    try:
        atomic_write_text(_record(path), json.dumps({"sha256": got, **stamp}) + "\n")
    except OSError:
        pass  # a read-only cache: the file is hashed again next time
    return path


def fetch_verified(
    url: str,
    path: str | Path,
    *,
    sha256: str,
    size: int | None = None,
    progress: bool | None = None,
    timeout: float = 30.0,
) -> Path:
    """Makes ``path`` hold the file at ``url``, verified: reused if there, else downloaded.

    Args:
      url: where the file is served (``https://``, ``http://`` or ``file://``).
      path: where it goes; its folder is created when the download starts.
      sha256: the expected SHA-256 in hex, in full or a prefix (torchvision pins 8 digits,
        :func:`hash_prefix`).
      size: the expected size in bytes, if known.
      progress: a tqdm bar on stderr: True, False, or None for only when stderr is a terminal.
      timeout: seconds a connection or a read may wait.

    Returns:
      ``path``.

    Raises:
      CheckpointError: offline or another network failure, an HTTP error, a body shorter
        than announced, a size or SHA-256 mismatch, or an unwritable folder. The one-line
        message names the URL, the target path and how to place the file by hand; nothing
        is left at ``path`` or beside it.
    """
    path, sha256 = Path(path).expanduser(), sha256.lower()
    if path.is_file():
        return check_file(path, sha256=sha256, size=size, url=url)
    by_hand = _by_hand(path, sha256)
    request = urllib.request.Request(url, headers={"User-Agent": "vggjax"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise CheckpointError(f"cannot download {url} ({_reason(e)}); {by_hand}") from None
    tmp, done = None, False
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # deepest first
    with response:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            os.close(fd)
            got, received = _stream(response, Path(tmp), size, progress, url, by_hand, path.name)
            announced = int(response.headers.get("Content-Length") or 0) or None
            if announced is not None and received != announced:
                raise CheckpointError(
                    f"the download of {url} stopped after {received:,} of {announced:,} bytes "
                    f"(nothing was kept); try again, or {by_hand}"
                )
            if size is not None and received != size:
                raise CheckpointError(
                    f"{url} gave {received:,} bytes, not {size:,} (nothing was kept); {by_hand}"
                )
            if not got.startswith(sha256):
                raise CheckpointError(
                    f"{url} gave a file with SHA-256 {got[:16]}…, not {sha256}… (nothing was kept); "
                    f"try again later, or {by_hand}"
                )
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)  # the mode open() gives, not mkstemp's 0600
            os.replace(tmp, path)
            done = True
        except OSError as e:
            raise CheckpointError(
                f"cannot write {path} ({e.strerror or e}); free space there or set VGGJAX_HOME "
                "to a writable folder"
            ) from None
        finally:
            if not done:
                _remove(tmp, made)
    try:
        atomic_write_text(_record(path), json.dumps({"sha256": got, **_stamp(path)}) + "\n")
    except OSError:
        pass  # checked now, hashed again on next use
    return path


def _remove(tmp: str | None, made: list[Path]) -> None:
    """Removes the temp file, then the folders made for it (deepest first) while they are empty."""
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (another download), or never made
            break


def _stream(response, tmp: Path, size, progress, url: str, by_hand: str, name: str) -> tuple[str, int]:
    """Copies the response into ``tmp`` (fsynced); returns its SHA-256 and byte count."""
    digest, received = hashlib.sha256(), 0
    total = int(response.headers.get("Content-Length") or 0) or size
    bar = tqdm(
        total=total, unit="B", unit_scale=True, desc=name, disable=None if progress is None else not progress
    )
    with open(tmp, "wb") as out, bar:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException, ValueError) as e:
                raise CheckpointError(
                    f"cannot download {url} ({_reason(e)} after {received:,} bytes; nothing was kept); "
                    f"{by_hand}"
                ) from None
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), received


def _reason(e: BaseException) -> str:
    """What went wrong, in a few words: ``HTTP Error 404: Not Found``, ``Connection refused``."""
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        if not isinstance(e.reason, BaseException):
            return str(e.reason)
        e = e.reason
    return str(getattr(e, "strerror", None) or first_line(e))
