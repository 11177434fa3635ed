"""Atomic file writes (a reader sees the old content or the new, never half), and the check before."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from vggjax.errors import ConfigError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Writes ``data`` to a temp file beside ``path``, fsyncs it, then renames it into place.

    Raises:
      OSError: if the folder is not writable (the old file, if any, is left as it was).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # the mode open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Writes one JSON object per line, atomically (the whole file is replaced)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def read_jsonl(path: str | Path) -> list[dict]:
    """Reads a JSON-lines file; an absent file reads as no records."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_new_files(paths: Sequence[Path], *, overwrite: bool) -> None:
    """Checks that each of ``paths`` (one folder) may be written as ``--out``; writes nothing that stays.

    Raises:
      ConfigError: for a folder, an existing file without ``overwrite`` (naming it), or a
        folder that does not exist or cannot be written.
    """
    for path in paths:
        if path.is_dir():
            raise ConfigError(f"{path} is a folder; give --out a file name")
        if path.exists() and not overwrite:
            raise ConfigError(f"{path} exists; pass --overwrite to replace it, or choose another --out")
    parent = paths[0].parent
    try:
        if not parent.is_dir():
            raise FileNotFoundError(f"no folder {parent}")
        with tempfile.TemporaryFile(dir=parent, prefix=".vggjax-probe-"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write {paths[0]}: {e.strerror or e}; choose a writable --out") from None
