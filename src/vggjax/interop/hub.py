"""torchvision's VGG weights by name: the registry, the cache, and names where a run folder goes.

A *weights name* is ``ARCH`` or ``ARCH:WEIGHTS``, torchvision's builder and its
``VGG*_Weights`` member: ``vgg16`` is ``vgg16:IMAGENET1K_V1`` (torchvision's ``DEFAULT``),
``vgg16:IMAGENET1K_FEATURES`` the features-only file. :func:`weights_file` downloads the file
from torchvision's URL into :func:`weights_dir` once, checked against the SHA-256 prefix in its
name (:mod:`vggjax.interop.download`), and returns its path.

``vggjax convert-torchvision``, ``predict``/``predict-imagenet`` and ``train --init-from``
take a name wherever they take a file or run folder (:func:`named`): an argument that is an
existing path is always that path, as before; one that is not, and reads ``vgg<...>[:<...>]``,
is a name, and an unknown one is an error listing the names.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vggjax.errors import CheckpointError, ConfigError
from vggjax.interop.download import fetch_verified, hash_prefix

if TYPE_CHECKING:
    from vggjax.config import TrainConfig
    from vggjax.run.folder import LoadedRun

ENV_VAR = "VGGJAX_HOME"
DEFAULT = "IMAGENET1K_V1"  # every VGG*_Weights.DEFAULT in torchvision 0.28
_NAME = re.compile(r"vgg[0-9a-z_]*(:\w*)?")  # what reads as a weights name rather than a path


@dataclasses.dataclass(frozen=True)
class Weights:
    """One torchvision weights file: what it holds and where it is published.

    Attributes:
      arch: the torchvision builder, e.g. ``"vgg16"``.
      name: its ``VGG*_Weights`` member, e.g. ``"IMAGENET1K_V1"``.
      url: torchvision's URL; the hex in the file name is the SHA-256 prefix.
      mib: torchvision's ``meta["_file_size"]``, the size in MiB (2**20 bytes) to 3 decimals.
      size: the exact size in bytes, where a public download record gives it, else None.
      classifier: False for a features-only file, whose ``classifier.*`` is "missing values" (torchvision).
      width: the width multiplier the file is at (1.0 for torchvision's).
    """

    arch: str
    name: str
    url: str
    mib: float
    size: int | None = None
    classifier: bool = True
    width: float = 1.0

    @property
    def key(self) -> str:
        """``"<arch>:<name>"``, e.g. ``"vgg16:IMAGENET1K_V1"``."""
        return f"{self.arch}:{self.name}"

    @property
    def file(self) -> str:
        """The file name in the URL, e.g. ``"vgg16-397923af.pth"``."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        """The SHA-256 prefix torchvision's ``check_hash`` reads from :attr:`file`."""
        return hash_prefix(self.url)

    @property
    def path(self) -> Path:
        """Where the file is cached: ``weights_dir() / file``."""
        return weights_dir() / self.file

    def to_json(self) -> dict[str, Any]:
        """What ``vggjax weights list --json`` shows for it."""
        return {
            "name": self.key,
            "arch": self.arch,
            "weights": self.name,
            "default": self.name == DEFAULT,
            "url": self.url,
            "file": self.file,
            "sha256_prefix": self.sha256_prefix,
            "mib": self.mib,
            "bytes": self.size,
            "classifier": self.classifier,
            "path": str(self.path),
        }


_TV = "https://download.pytorch.org/models/"
# URLs and "_file_size" (MiB) from torchvision 0.28.0's torchvision/models/vgg.py. Exact byte
# sizes: torch.hub's download progress lines "N/N" for these files in public notebooks; the
# others' exact sizes were not found and are left out (the SHA-256 prefix is checked anyway).
REGISTRY: dict[str, Weights] = {
    w.key: w
    for w in (
        Weights("vgg11", DEFAULT, _TV + "vgg11-8a719046.pth", 506.84),
        Weights("vgg11_bn", DEFAULT, _TV + "vgg11_bn-6002323d.pth", 506.881),
        Weights("vgg13", DEFAULT, _TV + "vgg13-19584684.pth", 507.545),
        Weights("vgg13_bn", DEFAULT, _TV + "vgg13_bn-abd245e5.pth", 507.59),
        Weights("vgg16", DEFAULT, _TV + "vgg16-397923af.pth", 527.796, 553433881),
        Weights(
            "vgg16",
            "IMAGENET1K_FEATURES",
            _TV + "vgg16_features-amdegroot-88682ab5.pth",
            527.802,
            classifier=False,
        ),
        Weights("vgg16_bn", DEFAULT, _TV + "vgg16_bn-6c64b313.pth", 527.866, 553507836),
        Weights("vgg19", DEFAULT, _TV + "vgg19-dcbb9e9d.pth", 548.051, 574673361),
        Weights("vgg19_bn", DEFAULT, _TV + "vgg19_bn-c79401a0.pth", 548.143, 574769405),
    )
}


def weights_dir() -> Path:
    """The cache folder: ``$VGGJAX_HOME/weights``, else ``$XDG_CACHE_HOME/vggjax/weights`` or
    ``~/.cache/vggjax/weights`` (beside the Fashion-MNIST download cache)."""
    home = os.environ.get(ENV_VAR, "")
    if home:
        return Path(home).expanduser() / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "vggjax" / "weights"


def lookup(arch: str, name: str = DEFAULT) -> Weights:
    """The registry entry of ``arch``'s weights ``name`` (``"DEFAULT"`` is torchvision's default).

    Raises:
      CheckpointError: for an arch or name torchvision has no weights for, listing those it has.
    """
    archs = sorted({w.arch for w in REGISTRY.values()})
    if arch not in archs:
        raise CheckpointError(
            f"torchvision has no weights for {arch!r}; the names are {', '.join(archs)}, each "
            "optionally :WEIGHTS (vggjax weights list)"
        )
    name = DEFAULT if name == "DEFAULT" else name
    if f"{arch}:{name}" not in REGISTRY:
        have = [w.name for w in REGISTRY.values() if w.arch == arch]
        raise CheckpointError(
            f"torchvision has no {arch} weights named {name!r}; {arch}'s are {', '.join(have)} "
            "(vggjax weights list)"
        )
    return REGISTRY[f"{arch}:{name}"]


def parse(value: str, name: str | None = None) -> Weights:
    """The entry a weights name names: ``"vgg16"``, ``"vgg16:IMAGENET1K_FEATURES"``.

    Args:
      value: ``ARCH`` or ``ARCH:WEIGHTS``.
      name: the weights, given separately (``--name``); not with ``ARCH:WEIGHTS``.

    Raises:
      CheckpointError: for an unknown arch or weights name (see :func:`lookup`).
      ConfigError: for the weights given twice.
    """
    arch, colon, weights = value.partition(":")
    if colon and name is not None:
        raise ConfigError(f"{value} already names its weights; drop --name {name}")
    return lookup(arch, (weights if colon else name) or DEFAULT)


def named(value: str | os.PathLike) -> Weights | None:
    """The entry ``value`` names if it is a weights name rather than a path, else None.

    An existing file or folder is never a name (so a run folder called ``vgg16`` still is
    that folder); anything else that reads ``vgg<...>[:<...>]`` is one.

    Raises:
      CheckpointError: for a name-like value that names no weights (see :func:`lookup`).
    """
    text = os.fspath(value)
    if Path(text).exists() or not _NAME.fullmatch(text):
        return None
    return parse(text)


def weights_file(arch: str, name: str = DEFAULT, *, progress: bool | None = None) -> Path:
    """The path of torchvision's ``arch`` weights ``name``, downloaded into the cache if needed.

    Example: ``weights_file("vgg16")`` is ``~/.cache/vggjax/weights/vgg16-397923af.pth``, the
    file ``torchvision.models.vgg16(weights="IMAGENET1K_V1")`` loads.

    Args:
      arch: ``"vgg11"`` … ``"vgg19_bn"``.
      name: the ``VGG*_Weights`` member, ``"IMAGENET1K_V1"`` (``"DEFAULT"``) or, for vgg16,
        ``"IMAGENET1K_FEATURES"``.
      progress: a download progress bar on stderr (None: only on a terminal).

    Raises:
      CheckpointError: for an unknown name; offline, or a download or cached file that fails
        its SHA-256 check (one line naming the URL, the path and how to place the file by hand).
    """
    w = lookup(arch, name)
    return fetch_verified(w.url, w.path, sha256=w.sha256_prefix, size=w.size, progress=progress)


def check_convertible(w: Weights, given: dict[str, Any] | None = None) -> None:
    """Checks that ``w`` can become a run (it has a classifier) and agrees with flags ``given``.

    Args:
      w: the entry.
      given: flags the user gave beside the name, e.g. ``{"--arch": "vgg11", "--width": None}``.

    Raises:
      CheckpointError: for a features-only file, whose classifier is missing values.
      ConfigError: for a given ``--arch`` or ``--width`` other than the entry's.
    """
    for flag, value in (given or {}).items():
        implied = getattr(w, flag.removeprefix("--"))
        if value is not None and value != implied:
            raise ConfigError(f"{flag} {value} contradicts {w.key}, which is {implied}; drop {flag}")
    if not w.classifier:
        raise CheckpointError(
            f"{w.key} is torchvision's features-only file: its classifier is missing values, so it "
            f"cannot classify or start a classifier; `vggjax weights get {w.key}` gives the file for "
            f"its features.* weights, or use {w.arch}"
        )


def format_registry() -> str:
    """``vggjax weights list``: one row per entry (name, MiB, bytes, SHA-256 prefix, URL), then the cache."""
    rows = [("NAME", "MiB", "BYTES", "SHA256", "URL")]
    for w in REGISTRY.values():
        name = w.key + (f" (= {w.arch})" if w.name == DEFAULT else "")
        rows.append((name, f"{w.mib:.3f}", f"{w.size:,}" if w.size else "-", w.sha256_prefix, w.url))
    n = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{a:<{n[0]}}  {b:>{n[1]}}  {c:>{n[2]}}  {d:<{n[3]}}  {e}" for a, b, c, d, e in rows]
    notes = (
        f"cache: {weights_dir()} (${ENV_VAR}/weights); MiB is torchvision's figure, BYTES exact where known"
    )
    return "\n".join([*lines, notes])


def read_weights(w: Weights, *, log: Callable[[str], None] = print) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and variables ``vggjax convert-torchvision`` would write for ``w``, in memory.

    Raises:
      CheckpointError: for a features-only file (it has no usable classifier), or as
        :func:`weights_file` and :func:`vggjax.interop.pretrained.read_torchvision`.
    """
    from vggjax.interop.pretrained import read_torchvision

    check_convertible(w)
    path = weights_file(w.arch, w.name)
    return read_torchvision(path, w.arch, width=w.width, log=log)


def read_run(value: str, *, log: Callable[[str], None] = print) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and variables of a run folder or a weights name (``train --init-from``).

    Raises:
      CheckpointError: as :meth:`~vggjax.run.folder.RunDir.read_variables` or :func:`read_weights`.
    """
    from vggjax.run.folder import RunDir

    w = named(value)
    if w is not None:
        return read_weights(w, log=log)
    run = RunDir(value)
    return run.config(), run.read_variables()


def run_config(value: str) -> TrainConfig:
    """The config of a run folder (its ``config.json`` alone) or of a weights name (read from the file)."""
    from vggjax.run.folder import RunDir

    w = named(value)
    return RunDir(value).config() if w is None else read_weights(w, log=lambda _: None)[0]


def load_run(w: Weights, *, log: Callable[[str], None] = print) -> LoadedRun:
    """Named weights as :meth:`vggjax.run.folder.RunDir.load` returns a run (``vggjax predict``)."""
    import jax

    from vggjax.nn.fit import from_config
    from vggjax.run.folder import LoadedRun

    config, variables = read_weights(w, log=log)
    if not variables["batch_stats"]:
        del variables["batch_stats"]
    return LoadedRun(config, from_config(config), jax.device_put(variables), w.path)
