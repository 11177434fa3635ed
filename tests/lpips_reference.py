"""The real ``lpips`` package (0.1.4) as the reference, with a random torchvision VGG-16 trunk.

:func:`write_trunk` saves a torchvision-layout VGG-16 ``features.*`` state_dict (random,
torchvision's init plus small biases) with ``torch.save``; :func:`reference` builds
``lpips.LPIPS(net="vgg", pnet_rand=True)`` (no download) and copies that same file into its
trunk, so vggjax and the reference see the very same weights. The lin weights are the
package's own files.

The ``torchvision==0.28.0`` wheel the registry has is built against CUDA torch: its ``_C``
extension does not load with the CPU ``torch==2.13.0+cpu``, and ``_meta_registrations``
then fails on ``torch.library.register_fake("torchvision::nms")``. :func:`import_lpips`
defines the two op schemas it registers (``nms``, ``qnms``; nothing here calls them) before
the import when the extension cannot load, so ``torchvision.models.vgg16`` (pure Python)
and lpips import as usual.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch

LIN_DIR = Path(importlib.util.find_spec("lpips").origin).parent / "weights"
_SHIM: list = []


def import_lpips():
    """The ``lpips`` module, importing torchvision even where its C extension cannot load."""
    origin = Path(importlib.util.find_spec("torchvision").origin).parent
    try:
        torch.ops.load_library(next(origin.glob("_C*.so")))
    except (OSError, StopIteration):
        if not _SHIM:
            lib = torch.library.Library("torchvision", "DEF")
            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
            _SHIM.append(lib)  # the Library must stay alive for the schemas to stay defined
    import lpips

    return lpips


def trunk_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's VGG-16 ``features`` (``make_layers(cfgs["D"])``, its init), biases in ±0.05, seeded.

    Only the features are built: ``vgg16(weights=None)`` would also initialise the 120M
    classifier weights, which LPIPS never uses.
    """
    import_lpips()
    from torchvision.models import vgg

    torch.manual_seed(seed)
    features = vgg.make_layers(vgg.cfgs["D"])
    with torch.no_grad():
        for m in features:
            if isinstance(m, torch.nn.Conv2d):  # VGG._initialize_weights, then non-zero biases
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                m.bias.uniform_(-0.05, 0.05)
    return {f"features.{k}": v for k, v in features.state_dict().items()}


def write_trunk(path: Path, seed: int = 0) -> Path:
    """Saves :func:`trunk_state` with ``torch.save`` (the zip format vggjax reads without torch)."""
    torch.save(trunk_state(seed), path)
    return path


def reference(trunk: Path, *, version: str = "0.1", lin: bool = True, spatial: bool = False):
    """``lpips.LPIPS(net="vgg", pnet_rand=True, ...)`` in eval mode, its trunk loaded from ``trunk``.

    The trunk slices keep torchvision's ``features`` indices (``slice1.0`` … ``slice5.29``), so
    ``features.N.*`` is loaded into whichever slice holds ``N``, strictly.
    """
    lpips = import_lpips()
    with warnings.catch_warnings():  # lpips 0.1.4 calls vgg16(pretrained=...), deprecated in torchvision
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(
            net="vgg", version=version, lpips=lin, spatial=spatial, pnet_rand=True, verbose=False
        )
    state = torch.load(trunk, weights_only=True)
    target = {}
    for name, _ in model.net.named_parameters():  # slice{s}.{N}.weight
        _, index, kind = name.split(".")
        target[name] = state[f"features.{index}.{kind}"]
    missing, unexpected = model.net.load_state_dict(target, strict=True)
    assert not missing and not unexpected
    return model.eval()


def to_nchw(x: np.ndarray) -> torch.Tensor:
    """``float32[N, H, W, C]`` → a torch ``[N, C, H, W]`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 3, 1, 2)))
