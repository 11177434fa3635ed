"""Run folders from and to other weights: torchvision files, fine-tuning starts.

``convert_torchvision`` turns a torchvision ``.pth``/``.safetensors`` file into a run
folder (``config.json`` + ``weights/``) and ``export_torchvision`` does the reverse;
``transfer`` starts a new model from a run's weights (``vggjax train --init-from``),
replacing the classifier and adapting the input channels where asked. Variables are Flax
trees ``{"params": ..., "batch_stats": ...}`` with paths ``block{b}/conv{i}``, ``fc6`` … ``fc8``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vggjax.arch import get_arch
from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError, ConfigError
from vggjax.interop import torchfile
from vggjax.interop import torchvision as interop
from vggjax.nn.fit import check_shapes
from vggjax.preprocessing import PREPROCESSING
from vggjax.run.folder import RunDir

# Fields that define the network (and so must match the weights); the rest is training.
REPLACEABLE = ("fc8",)  # re-initialised when the class count differs


def convert_torchvision(
    path: str | Path,
    arch: str,
    run_dir: str | Path,
    *,
    width: float = 1.0,
    dataset: str = "imagenet",
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> TrainConfig:
    """Converts a torchvision VGG weights file into a vggjax run folder.

    The folder's ``config.json`` describes the model (for ImageNet weights: 3 channels,
    1000 classes, the adaptive head at 224×224, ``dataset="imagenet"``) and records the
    dataset's preprocessing (:data:`vggjax.config.PREPROCESSING`; for ImageNet torchvision's
    resize 256, centre crop 224 and mean/std), so ``vggjax predict`` and ``vggjax train
    --init-from`` can use it.

    Args:
      path: a ``torch.save`` state_dict (``.pth``) or ``.safetensors`` file.
      arch: the arch the file holds (``vgg16``, ``vgg11_bn``, or a literal).
      run_dir: output folder.
      width: width multiplier of ``arch`` (1.0 for torchvision's models).
      dataset: what the weights were trained on: ``"imagenet"`` (torchvision's) or
        ``"fashion-mnist"`` (a model exported by ``vggjax export-torchvision``).
      overwrite: allow a non-empty ``run_dir``.
      log: where notes go.

    Returns:
      The config written to ``run_dir/config.json``.

    Raises:
      CheckpointError: for an unreadable file or one that does not hold ``arch``
        (see :func:`vggjax.interop.torchvision.from_torchvision`), or a file without a classifier.
      ConfigError: if ``run_dir`` is not empty and ``overwrite`` is False, or for an
        unknown ``dataset``.
    """
    config, variables = read_torchvision(path, arch, width=width, dataset=dataset, log=log)
    RunDir(run_dir).save(config, variables, overwrite=overwrite)
    return config


def read_torchvision(
    path: str | Path,
    arch: str,
    *,
    width: float = 1.0,
    dataset: str = "imagenet",
    log: Callable[[str], None] = print,
) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and variables :func:`convert_torchvision` writes, without writing them.

    Returns:
      ``(config, {"params": ..., "batch_stats": ...})`` of numpy arrays (``batch_stats``
      empty without BatchNorm).

    Raises:
      CheckpointError, ConfigError: as :func:`convert_torchvision` (but for ``run_dir``).
    """
    spec = get_arch(arch, width=width)
    variables, head = interop.from_torchvision(torchfile.read_state_dict(path), spec, log=log)
    if head.head is None:
        raise CheckpointError(
            f"{path} has no classifier.* weights; convert it with vggjax.interop.torchvision.from_torchvision"
        )
    config = TrainConfig(
        arch=arch,
        width=width,
        image_size=head.side * 2 ** len(spec.blocks),
        head=head.head,
        hidden=head.hidden,
        init_scheme="torchvision",
        channels=head.channels,
        num_classes=head.num_classes,
        dataset=dataset,
        preprocessing=PREPROCESSING.get(dataset),  # None for an unknown dataset: validate names it
    ).validate()
    return config, variables


EXPORT_SUFFIXES = (".safetensors", ".pth")  # what export_torchvision writes


def export_torchvision(run_dir: str | Path, path: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Writes a run's weights as a torchvision VGG state_dict (``.pth`` or ``.safetensors``).

    The file is written atomically (a temp file beside it, then renamed), so a failed or
    refused export leaves an existing file as it was.

    Args:
      run_dir: a run folder (from ``vggjax train`` or ``vggjax convert-torchvision``).
      path: the output file: ``.safetensors`` (no torch needed) or ``.pth`` (``torch.save``).
      overwrite: replace an existing ``path``.

    Returns:
      The exported ``{key: array}``.

    Raises:
      CheckpointError: if ``run_dir`` is not a run folder, its weights do not fit its config
        (see :meth:`~vggjax.run.folder.RunDir.load`), or a ``.pth`` is asked for without torch
        installed.
      ConfigError: if ``path`` is a folder, ends in neither ``.safetensors`` nor ``.pth``,
        exists and ``overwrite`` is False, or cannot be written; checked before the run is read.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file name ending in .safetensors or .pth")
    if path.suffix not in EXPORT_SUFFIXES:
        ends = f"ends in {path.suffix}" if path.suffix else "has no suffix"
        raise ConfigError(
            f"{path} {ends}; export-torchvision writes .safetensors or .pth (torch.save) files only: "
            f"name it {path.stem}.safetensors or {path.stem}.pth"
        )
    if not path.parent.is_dir():
        raise ConfigError(f"cannot write {path}: no folder {path.parent}; create it or choose another path")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; pass --overwrite to replace it, or choose another name")
    run = RunDir(run_dir).load()
    state = interop.to_torchvision(run.variables, run.config.resolved_arch())
    try:
        torchfile.write_state_dict(path, state)
    except OSError as e:
        raise ConfigError(f"cannot write {path}: {e.strerror or e}; choose a writable path") from None
    return state


def input_channels(variables: Mapping[str, Any]) -> int:
    """Input channels the first conv takes (``block1/conv1`` kernel ``[kh, kw, C_in, C_out]``)."""
    return int(np.shape(variables["params"]["block1"]["conv1"]["kernel"])[2])


def check_channels(source: Mapping[str, Any], channels: int, *, adapt_channels: bool) -> None:
    """Checks that pretrained weights take ``channels`` inputs, or that adapting them is allowed.

    Raises:
      CheckpointError: naming both channel counts and the ``--adapt-channels`` option.
    """
    have = input_channels(source)
    if have != channels and not adapt_channels:
        raise CheckpointError(
            f"the pretrained weights take {have} input channels but the data has {channels}; pass "
            "--adapt-channels to adapt the first conv (timm's in_chans: RGB kernels summed for grey)"
        )


def adapt_input_channels(variables: Mapping[str, Any], channels: int) -> dict[str, Any]:
    """Adapts the first conv to ``channels`` inputs the way timm's ``adapt_input_conv`` does.

    From timm (``timm/models/_manipulate.py``, ``in_chans``): for one channel the kernel
    is summed over its input channels (a grey image ``g`` then gives the same
    pre-activation as the RGB image ``(g, g, g)``); from 3 (RGB) to ``n`` channels the RGB
    kernel is tiled and scaled by ``3 / n``.

    Args:
      variables: Flax variables whose ``params/block1/conv1/kernel`` is
        ``float32[kh, kw, C_in, C_out]``.
      channels: the new input channel count.

    Returns:
      A copy of ``variables`` with ``kernel`` of ``float32[kh, kw, channels, C_out]`` (a JAX
      array; this also runs under ``jax.jit``).

    Raises:
      CheckpointError: when neither rule applies (``C_in`` is not 3 and ``channels`` is not 1).
    """
    params = variables["params"]
    conv = params["block1"]["conv1"]
    kernel = jnp.asarray(conv["kernel"], jnp.float32)
    have = kernel.shape[2]
    if channels == have:
        return dict(variables)
    if channels == 1:
        new = kernel.sum(axis=2, keepdims=True)
    elif have == 3 and channels > 0:
        new = jnp.tile(kernel, (1, 1, math.ceil(channels / 3), 1))[:, :, :channels] * (3 / channels)
    else:
        raise CheckpointError(
            f"cannot adapt a first conv with {have} input channels to {channels}; timm's rule goes "
            "from 3 (RGB) to any count, or from any count to 1"
        )
    block1 = {**params["block1"], "conv1": {**conv, "kernel": new}}
    return {**variables, "params": {**params, "block1": block1}}


def transfer(
    source: Mapping[str, Any],
    target: Mapping[str, Any],
    *,
    adapt_channels: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fills freshly initialised ``target`` variables from pretrained ``source`` ones.

    Every variable is copied from ``source``, except ``fc8`` when the class counts
    differ (kept from ``target``: a new classifier) and the first conv when the
    channel counts differ and ``adapt_channels`` is set (see :func:`adapt_input_channels`).

    Args:
      source: pretrained variables, e.g. from :meth:`vggjax.run.folder.RunDir.read_variables`.
      target: variables of the model to train (same arch), e.g. from ``model.init``.
      adapt_channels: allow a different input channel count.
      log: where notes (a replaced classifier, adapted channels) go.

    Returns:
      Variables with ``target``'s tree and shapes.

    Raises:
      CheckpointError: for a channel count that differs without ``adapt_channels``
        (naming both counts), or any other variable missing from ``source``, extra in it
        or of another shape (naming its path and both shapes; see :func:`vggjax.nn.vgg.check_shapes`).
    """
    have, want = input_channels(source), input_channels(target)
    check_channels(source, want, adapt_channels=adapt_channels)
    if have != want:
        log(f"adapted the first conv from {have} to {want} input channels (timm's in_chans rule)")
        source = adapt_input_channels(source, want)
    params, fresh = source["params"], target["params"]
    for layer in REPLACEABLE:
        classes, needed = (np.shape(p[layer]["bias"])[-1] if layer in p else None for p in (params, fresh))
        if None not in (classes, needed) and classes != needed:
            log(f"new {layer} for {needed} classes (the pretrained one has {classes})")
            params = {**params, layer: fresh[layer]}
    source = {**source, "params": params}
    fan_in = [np.shape(p["fc6"]["kernel"])[0] if "fc6" in p else None for p in (params, fresh)]
    flat = fan_in[0] != fan_in[1]
    hint = "; with a flatten head, train at the --init-from run's --image-size" if flat else ""
    check_shapes(source, target, what="the pretrained weights", hint=hint)
    name = functools.partial(jax.tree_util.keystr, simple=True, separator="/")
    leaves = {name(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(source)}
    return jax.tree_util.tree_map_with_path(lambda path, _: leaves[name(path)], dict(target))
