"""``vggjax lpips``: LPIPS-VGG distances between pairs of image files, with optional heat maps.

Pairs are given as ``A B [A2 B2 …]`` and/or as two folders whose files of the same name are
paired. Each file is decoded by :func:`vggjax.data.images.open_image` (any mode → RGB),
optionally resized to ``S×S`` (Pillow bilinear, antialiased when shrinking), and scaled to
[0, 1]. Everything that would make the whole command wrong (an odd number of images,
folders whose names differ, a pair of two sizes without ``--resize``, an image under 32
pixels) is refused before anything is computed or written (exit 2). A file that cannot be
read costs only its pair: one line for it, the other pairs are scored, exit 1 (``vggjax
predict``'s rule).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from PIL import Image
from tqdm import tqdm

from vggjax.data.images import open_image
from vggjax.errors import ConfigError, DataError, check_positive_int
from vggjax.perceptual.lpips import LPIPS, MIN_SIDE
from vggjax.run.files import atomic_write_bytes

COLORMAP = "magma"  # heat maps: 0 black, the map's maximum pale yellow


@dataclasses.dataclass(frozen=True)
class PairResult:
    """One pair's result.

    Attributes:
      a, b: the two paths as given.
      lpips: the distance (float), None for a pair with an unreadable file.
      map: the heat map written for the pair (``--spatial-out``), else None.
      error: the one-line message of the unreadable file, else None.
    """

    a: str
    b: str
    lpips: float | None = None
    map: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"a", "b", "lpips"}`` (+ ``"map"``), or ``{"a", "b", "error"}``."""
        out: dict[str, Any] = {"a": self.a, "b": self.b}
        if self.error is not None:
            return out | {"error": self.error}
        return out | {"lpips": self.lpips} | ({"map": self.map} if self.map else {})


def list_pairs(
    images: Sequence[str], dir_a: str | None = None, dir_b: str | None = None
) -> list[tuple[str, str]]:
    """The pairs to score: ``images`` two by two, then the same-named image files of two folders.

    Args:
      images: ``[A, B, A2, B2, …]``.
      dir_a, dir_b: folders; every image file (by Pillow's known extensions, hidden files
        skipped) of one must have a namesake in the other. Pairs come in name order.

    Raises:
      ConfigError: for an odd number of images, only one folder, a missing folder, names
        in one folder and not the other, or no pair at all.
    """
    if len(images) % 2:
        raise ConfigError(f"{len(images)} images given: give them in pairs, A B [A2 B2 …]")
    pairs = list(zip(images[::2], images[1::2], strict=True))
    if (dir_a is None) != (dir_b is None):
        raise ConfigError("give both --dir-a and --dir-b (their files of the same name are compared)")
    if dir_a is not None:
        in_a, in_b = _image_names(dir_a, "--dir-a"), _image_names(dir_b, "--dir-b")
        for have, other, flag, of in ((in_a, in_b, "--dir-b", "--dir-a"), (in_b, in_a, "--dir-a", "--dir-b")):
            lonely = sorted(set(have) - set(other))
            if lonely:
                more = f" (and {len(lonely) - 1} more)" if len(lonely) > 1 else ""
                raise ConfigError(
                    f"{flag} has no {lonely[0]}{more}, which {of} has; both folders need the same names"
                )
        pairs += [(str(Path(dir_a) / n), str(Path(dir_b) / n)) for n in sorted(in_a)]
    if not pairs:
        raise ConfigError("no image pairs: give A B [A2 B2 …] or --dir-a DIR --dir-b DIR")
    return pairs


def _image_names(folder: str, flag: str) -> list[str]:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"{flag} {folder} is not a folder")
    known = Image.registered_extensions()
    return [
        p.name
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in known
    ]


def read_rgb(path: str | Path, resize: int | None = None) -> np.ndarray:
    """An image file as ``uint8[H, W, 3]`` RGB, or ``[S, S, 3]`` with ``resize=S``.

    Raises:
      DataError: for a file that is missing, not an image or truncated (naming it).
    """
    img = open_image(path).convert("RGB")
    if resize is not None:
        img = img.resize((resize, resize), Image.Resampling.BILINEAR)
    return np.asarray(img)


def heatmap_png(m: np.ndarray) -> bytes:
    """``float[H, W]`` ≥ 0 → PNG bytes, :data:`COLORMAP` from 0 to the map's maximum."""
    from matplotlib import colormaps

    top = float(m.max())
    rgba = colormaps[COLORMAP](m / top if top > 0 else np.zeros_like(m), bytes=True)
    buf = io.BytesIO()
    Image.fromarray(rgba[..., :3]).save(buf, format="PNG")
    return buf.getvalue()


def _map_names(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """``{stem of A}.png``, or ``{i:04d}_{stem}.png`` (from 1) where two pairs share a stem."""
    stems = [Path(a).stem for a, _ in pairs]
    if len(set(stems)) == len(stems):
        return [f"{s}.png" for s in stems]
    return [f"{i:04d}_{s}.png" for i, s in enumerate(stems, 1)]


@dataclasses.dataclass(frozen=True)
class Job:
    """Pairs checked by :func:`plan_pairs`, ready for :func:`score_pairs`.

    Attributes:
      pairs: ``(a, b)`` paths.
      resize: the side every image is resized to, or None.
      batch_size: pairs per device call.
      spatial_out: the heat-map folder, or None.
      shapes: ``{pair index: (H, W, 3)}`` of the pairs whose files decode.
      errors: ``{pair index: message}`` of the others.
    """

    pairs: tuple[tuple[str, str], ...]
    resize: int | None
    batch_size: int
    spatial_out: Path | None
    shapes: dict[int, tuple[int, ...]]
    errors: dict[int, str]


def plan_pairs(
    pairs: Sequence[tuple[str, str]],
    *,
    resize: int | None = None,
    batch_size: int = 8,
    spatial_out: str | Path | None = None,
) -> Job:
    """Decodes every file once and checks what would make the whole run wrong, before any weights load.

    Args:
      pairs: ``(a, b)`` paths, from :func:`list_pairs`.
      resize: resize every image to ``resize × resize`` first; None: the two of a pair must
        already have one size (pairs may differ from each other).
      batch_size: pairs per device call (the last batch of a size is padded to it).
      spatial_out: a folder (created by :func:`score_pairs`) for one PNG heat map per pair.

    Raises:
      ConfigError: for a pair of two sizes without ``resize``, an image under 32 pixels, a
        ``batch_size`` or ``resize`` out of range, or a ``spatial_out`` that is a file.
    """
    check_positive_int(batch_size, "--batch-size")
    if resize is not None and (check_positive_int(resize, "--resize") < MIN_SIDE):
        raise ConfigError(f"--resize must be at least {MIN_SIDE} (VGG-16's smallest input), got {resize}")
    out = None if spatial_out is None else Path(spatial_out)
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--spatial-out {out} is a file; give a folder for the heat maps")
    errors, shapes = {}, {}
    for i, (a, b) in enumerate(pairs):
        try:
            sa, sb = (read_rgb(p, resize).shape for p in (a, b))
        except DataError as e:
            errors[i] = str(e)
            continue
        if sa != sb:
            raise ConfigError(
                f"{a} is {sa[1]}x{sa[0]} but {b} is {sb[1]}x{sb[0]}; LPIPS compares images of one size: "
                "pass --resize S to resize both to SxS"
            )
        if min(sa[:2]) < MIN_SIDE:
            raise ConfigError(
                f"{a} is {sa[1]}x{sa[0]}; LPIPS-VGG needs at least {MIN_SIDE}x{MIN_SIDE} pixels: "
                f"pass --resize {2 * MIN_SIDE}"
            )
        shapes[i] = sa
    return Job(tuple(pairs), resize, batch_size, out, shapes, errors)


def score_pairs(metric: LPIPS, job: Job, *, progress: bool = False) -> list[PairResult]:
    """LPIPS of each pair of a :func:`plan_pairs` job, and its heat map in ``job.spatial_out``.

    Args:
      metric: e.g. :func:`vggjax.perceptual.weights.load_lpips`'s.
      job: the checked pairs.
      progress: a tqdm bar on stderr (shown on a terminal).

    Returns:
      One :class:`PairResult` per pair, in order; a pair with an unreadable file has its error.

    Raises:
      ConfigError: if the heat-map folder cannot be created or written.
    """
    out = job.spatial_out
    try:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        return _score(metric, job, progress)
    except OSError as e:
        raise ConfigError(
            f"cannot write heat maps to {out}: {e.strerror or e}; give a writable --spatial-out"
        ) from None


def _score(metric: LPIPS, job: Job, progress: bool) -> list[PairResult]:
    out, pairs, resize = job.spatial_out, job.pairs, job.resize
    names = _map_names(pairs)
    done: dict[int, PairResult] = {}
    with tqdm(total=len(job.shapes), unit="pair", disable=None if progress else True) as bar:
        for shape in dict.fromkeys(job.shapes.values()):
            group = [i for i, s in job.shapes.items() if s == shape]
            n = min(job.batch_size, len(group))
            for start in range(0, len(group), n):
                chunk = group[start : start + n]
                padded = chunk + [chunk[-1]] * (n - len(chunk))  # one compiled shape per image size
                x, y = (
                    jnp.asarray(np.stack([read_rgb(pairs[i][k], resize) for i in padded]), jnp.float32) / 255
                    for k in (0, 1)
                )
                result = metric(x, y, spatial=out is not None)
                dist = np.asarray(result.distance)
                maps = np.asarray(result.map) if out is not None else None
                for j, i in enumerate(chunk):
                    path = None
                    if maps is not None:
                        path = str(out / names[i])
                        atomic_write_bytes(path, heatmap_png(maps[j]))
                    done[i] = PairResult(*pairs[i], lpips=float(dist[j]), map=path)
                bar.update(len(chunk))
    return [done[i] if i in done else PairResult(*pairs[i], error=job.errors[i]) for i in range(len(pairs))]


def mean_distance(results: Sequence[PairResult]) -> float | None:
    """The mean of the scored pairs' distances, None when none was scored."""
    scored = [r.lpips for r in results if r.lpips is not None]
    return float(np.mean(scored)) if scored else None


def to_json(results: Sequence[PairResult], variant: str) -> dict[str, Any]:
    """``{"variant": ..., "pairs": [{"a", "b", "lpips"}, …], "mean": float | None}``."""
    return {"variant": variant, "pairs": [r.to_json() for r in results], "mean": mean_distance(results)}


def format_results(results: Sequence[PairResult], variant: str) -> str:
    """``A  B  0.123456`` per scored pair, then ``mean 0.123456 over N pairs (variant)``."""
    lines = [f"{r.a}  {r.b}  {r.lpips:.6f}" for r in results if r.error is None]
    mean = mean_distance(results)
    count = len(lines)
    summary = f"over {count} pair{'s' if count != 1 else ''} ({variant})"
    lines.append(f"mean {mean:.6f} {summary}" if mean is not None else f"no pair scored ({variant})")
    return "\n".join(lines)
