"""LPIPS-VGG's weights from files, every key checked: a torchvision VGG-16 trunk and the lin weights.

* The trunk is any torchvision VGG-16 ``state_dict`` (``vgg16-397923af.pth``, a
  ``.safetensors``, a features-only file); only ``features.*`` is read and every one of its
  26 keys must be there with torchvision's shape (a ``classifier.*`` is ignored).
* The lin weights are the ``lpips`` package's ``weights/v{version}/vgg.pth``: five keys
  ``lin{l}.model.1.weight`` of ``float32[1, C_l, 1, 1]`` (``model.0`` in a file saved without
  dropout). The reference loads them with ``strict=False``, so a renamed key silently leaves
  random lin layers; here any missing, extra or reshaped key is an error naming it. A file
  whose SHA-256 is the other version's shipped file is refused for the wrong ``version``.

Without a lin file the one of the installed ``lpips`` package is used (found without
importing it, so torch is not loaded); vggjax itself never needs torch or lpips.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from vggjax.arch import get_arch
from vggjax.errors import CheckpointError
from vggjax.interop import torchfile
from vggjax.interop.state_dict import HeadShape, expected_shapes, guess_arch, strip_module_prefix
from vggjax.interop.torchvision import from_torchvision
from vggjax.perceptual.lpips import CHANNELS, LPIPS, variant_name

# SHA-256 of the lin files lpips 0.1.4 ships (lpips/weights/v{version}/vgg.pth; 7,289 and 6,735 bytes).
LIN_SHA256 = {
    "0.1": "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
    "0.0": "b9e4236260c3dd988fc79d2a48d645d885afcbb21f9fd595e6744cf7419b582c",
}
TRUNK_HINT = "give a torchvision VGG-16 state_dict (vgg16-397923af.pth) as the trunk"
_LIN_KEY = re.compile(r"lin(\d)\.model\.([01])\.weight")


def trunk_shapes() -> dict[str, tuple[int, ...]]:
    """The 26 ``features.*`` keys of torchvision's VGG-16 with their shapes (13 convs, weight and bias)."""
    return expected_shapes(get_arch("vgg16"), HeadShape(3, None, None, None))


def trunk_variables(state: Mapping[str, np.ndarray], source: str = "the trunk file") -> dict:
    """VGG-16 conv variables for :class:`~vggjax.perceptual.lpips.LPIPS` from a torchvision state_dict.

    Args:
      state: ``{key: array}`` (``features.0.weight: float32[64, 3, 3, 3]`` …); keys other than
        ``features.*`` are ignored, a ``module.`` prefix is stripped.
      source: how messages name the file.

    Returns:
      ``{"params": {"block1": {"conv1": {"kernel": float32[3, 3, 3, 64], "bias": …}, …}, …}}``.

    Raises:
      CheckpointError: naming the first missing ``features.*`` key (and how many more), an
        unexpected one, or one of another shape (with both); a lin file or another VGG is named.
    """
    state = strip_module_prefix(state, log=lambda _: None)
    if any(_LIN_KEY.fullmatch(k) for k in state):
        raise CheckpointError(
            f"{source} holds LPIPS lin weights (lin0.model.1.weight …), not a VGG-16; {TRUNK_HINT}"
        )
    feats = {
        k: v for k, v in state.items() if k.startswith("features.") and not k.endswith("num_batches_tracked")
    }
    expected = trunk_shapes()
    guess = guess_arch(state)
    looks = f" (it looks like {guess}, LPIPS-VGG needs vgg16)" if guess not in (None, "vgg16") else ""
    missing = [k for k in expected if k not in feats]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(
            f"{source} has no {missing[0]}{more}, which LPIPS-VGG's VGG-16 trunk needs{looks}; {TRUNK_HINT}"
        )
    extra = [k for k in feats if k not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{source} has {extra[0]}{more}, which VGG-16 has not{looks}; {TRUNK_HINT}")
    for key, shape in expected.items():
        if tuple(np.shape(feats[key])) != shape:
            raise CheckpointError(
                f"{key} in {source} has shape {list(np.shape(feats[key]))} but VGG-16 needs "
                f"{list(shape)}{looks}; {TRUNK_HINT}"
            )
    variables, _ = from_torchvision(feats, "vgg16", log=lambda _: None)
    return {"params": variables["params"]}


def read_trunk(path: str | Path) -> dict:
    """:func:`trunk_variables` of a file (``.pth`` or ``.safetensors``, read without torch).

    ``path`` may also be a weights name, ``vgg16`` or ``vgg16:IMAGENET1K_FEATURES``
    (:mod:`vggjax.interop.hub`: downloaded once into the cache, SHA-256 checked).

    Raises:
      CheckpointError: for an unreadable file or one without VGG-16's ``features.*``.
    """
    from vggjax.interop import hub

    named = hub.named(path)
    if named is not None:  # "vgg16" or "vgg16:IMAGENET1K_FEATURES": torchvision's file by name
        path = hub.weights_file(named.arch, named.name)
    if not Path(path).is_file():
        raise CheckpointError(f"no trunk file at {path}; {TRUNK_HINT}")
    return trunk_variables(torchfile.read_state_dict(path), f"the trunk file {path}")


def lin_weights(state: Mapping[str, np.ndarray], source: str = "the lin file") -> tuple[np.ndarray, ...]:
    """The five lin weights ``float32[C_l]`` from an LPIPS lin ``state_dict``.

    Args:
      state: ``{"lin0.model.1.weight": float32[1, 64, 1, 1], …, "lin4.model.1.weight": [1, 512, 1, 1]}``.
      source: how messages name the file.

    Raises:
      CheckpointError: for a VGG trunk given instead, a missing lin layer, an extra key, or a
        weight of another shape than ``[1, C_l, 1, 1]`` (named with both shapes).
    """
    if any(k.startswith("features.") for k in state):
        raise CheckpointError(
            f"{source} holds VGG features.* weights, not LPIPS lin weights; give it as the trunk"
        )
    found: dict[int, str] = {}
    for key in state:
        match = _LIN_KEY.fullmatch(key)
        if match is None or int(match[1]) >= len(CHANNELS) or int(match[1]) in found:
            raise CheckpointError(
                f"unexpected key {key} in {source}: an LPIPS-VGG lin file holds only "
                "lin0.model.1.weight … lin4.model.1.weight"
            )
        found[int(match[1])] = key
    out = []
    for layer, channels in enumerate(CHANNELS):
        if layer not in found:
            raise CheckpointError(
                f"{source} has no lin{layer}.model.1.weight, which LPIPS-VGG needs; give vgg.pth"
            )
        w = np.asarray(state[found[layer]])
        if w.shape != (1, channels, 1, 1):
            raise CheckpointError(
                f"{found[layer]} in {source} has shape {list(w.shape)} but LPIPS-VGG needs "
                f"[1, {channels}, 1, 1] (is it another network's lin file?)"
            )
        out.append(w.reshape(channels).astype(np.float32))
    return tuple(out)


def default_lin_file(version: str = "0.1") -> Path:
    """The installed ``lpips`` package's ``weights/v{version}/vgg.pth`` (found without importing it).

    Raises:
      ConfigError: for an unknown version.
      CheckpointError: if lpips is not installed or lacks the file.
    """
    variant_name(version, True)
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        raise CheckpointError(
            f"no lin file given and the lpips package is not installed; give the lin file (lpips' "
            f"weights/v{version}/vgg.pth, sha256 {LIN_SHA256[version][:12]}…) or pip install lpips==0.1.4"
        )
    if spec.submodule_search_locations is None:  # e.g. a script named lpips.py on sys.path
        raise CheckpointError(f"'lpips' is {spec.origin}, not the lpips package; give the lin file by hand")
    path = Path(spec.origin).parent / "weights" / f"v{version}" / "vgg.pth"
    if not path.is_file():
        raise CheckpointError(f"the installed lpips package has no {path}; give the lin file by hand")
    return path


def read_lin(path: str | Path | None, version: str = "0.1") -> tuple[np.ndarray, ...]:
    """:func:`lin_weights` of a file (None: :func:`default_lin_file`), checked against ``version``.

    Raises:
      ConfigError: for an unknown version.
      CheckpointError: for an unreadable or ill-formed file, the other version's shipped
        file, or (for the default file) a file that is not the one lpips 0.1.4 ships.
    """
    variant_name(version, True)
    default = path is None
    path = default_lin_file(version) if default else Path(path)
    if not path.is_file():
        raise CheckpointError(f"no lin file at {path}; give the lpips package's weights/v{version}/vgg.pth")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    other = next((v for v, h in LIN_SHA256.items() if h == digest and v != version), None)
    if other is not None:
        raise CheckpointError(
            f"{path} is the lin file of LPIPS v{other}, but version {version} was asked for; "
            f"pass --version {other} (version={other!r}) or give the v{version} file"
        )
    if default and digest != LIN_SHA256[version]:
        raise CheckpointError(
            f"{path} is not the lin file lpips 0.1.4 ships (sha256 {digest[:12]}…); give --lin"
        )
    return lin_weights(torchfile.read_state_dict(path), f"the lin file {path}")


def load_lpips(
    trunk: str | Path,
    *,
    lin: str | Path | None = None,
    version: str = "0.1",
    baseline: bool = False,
    dtype: str = "float32",
    impl: str = "auto",
) -> LPIPS:
    """An :class:`~vggjax.perceptual.lpips.LPIPS` from a trunk file and a lin file.

    Args:
      trunk: a torchvision VGG-16 ``state_dict`` (``.pth`` / ``.safetensors``).
      lin: the lin file of ``version``; None takes the installed ``lpips`` package's.
      version: ``"0.1"`` (default) or ``"0.0"``.
      baseline: no lin weights (the reference's ``lpips=False``; variant ``vgg-l2-baseline``).
      dtype: the trunk's compute dtype, ``"float32"`` or ``"bfloat16"``.
      impl: ``"auto"``, ``"xla"`` or ``"cpu_fast"`` (:mod:`vggjax.nn.impl`).

    Raises:
      CheckpointError: see :func:`read_trunk` and :func:`read_lin`.
      ConfigError: for an unknown version, dtype or impl.
    """
    variant_name(version, not baseline)
    from vggjax.perceptual.lpips import trunk_model

    trunk_model(dtype, impl)  # checks both
    weights = None if baseline else tuple(jnp.asarray(w) for w in read_lin(lin, version))
    variables = read_trunk(trunk)
    return LPIPS(variables, weights, version=version, dtype=dtype, impl=impl)
