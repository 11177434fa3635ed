"""Training configuration: one frozen dataclass, named presets, validation.

A run's config is printed at start and saved as ``<run>/config.json``; command-line
flags override fields of a preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vggjax.arch import Arch, get_arch
from vggjax.data.fashion_mnist import NUM_CLASSES, PER_CLASS
from vggjax.errors import ConfigError, check_positive_int
from vggjax.preprocessing import PREPROCESSING, Preprocessing

# Every choice a config or a model takes, defined once (this module imports no JAX).
# The dense head: the d2l chapter's flatten, torchvision's 7x7 adaptive average pool; a
# model may also be headless (head None, see nn.vgg.VGG), which no training config is.
HEADS = ("flatten", "adaptive")
POOLINGS = ("avg", "max")  # global pooling of a headless model
INITS = ("he", "torchvision", "lecun")  # see nn.vgg.initializers
# How convs, dense layers and pools are computed (same numbers): auto, Flax's own ops, the
# CPU ops of nn.fastops with oneDNN convolutions where available, or those ops in pure JAX (nn.impl).
IMPLS = ("auto", "xla", "cpu_fast", "cpu_jax")
DTYPES = ("float32", "bfloat16")  # compute dtypes; params stay float32
SCHEDULES = ("constant", "cosine", "onecycle")  # see training.optim.make_schedule
TTAS = ("none", "flip", "flip-shift")  # test-time augmentation: see training.steps.tta_views
# What a run's images are: Fashion-MNIST (what `vggjax train` trains on, scaled to [0, 1])
# or ImageNet (converted torchvision weights: RGB, torchvision's mean/std).
DATASETS = ("fashion-mnist", "imagenet")


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    choices: tuple | None = None,
    metavar: str | None = None,
    positive: bool = False,
    cli: bool = True,
) -> Any:
    """A config field with the metadata its command-line flag and its documentation are made from.

    Args:
      default: the field's default value.
      help: one sentence on what it sets, with its unit; it is both the flag's ``--help`` text
        and the field's entry in the class docstring.
      flag: the flag without ``--`` when it is not the field name with ``-`` for ``_``.
      choices: the allowed values (checked by :meth:`TrainConfig.validate` and argparse).
      metavar: the flag's placeholder in ``--help``.
      positive: the value must be an integer >= 1 (None allowed when the default is None).
      cli: whether ``vggjax train`` has a flag for it.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "metavar": metavar}
    return dataclasses.field(default=default, metadata={**metadata, "positive": positive, "cli": cli})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; ``vggjax train``'s flags are made from its fields.

    A run's config is printed at start and saved as the run's ``config.json``.
    """

    arch: str = option("vgg11", "arch name (vgg11, vgg16_bn, A-LRN ...) or literal '((1,16),(1,32),...)'")
    width: float = option(0.25, "width multiplier on every block's channels (0.25: the d2l thin VGG-11)")
    image_size: int = option(
        32, "model input side in pixels; the 28x28 images are resized bilinearly", positive=True
    )
    head: str = option(
        "flatten", "dense head: flatten (d2l) or adaptive (torchvision's 7x7 average pool)", choices=HEADS
    )
    hidden: int = option(4096, "width of fc6 and fc7", positive=True)
    dropout_rate: float = option(0.5, "dropout after fc6 and fc7, in [0, 1)", flag="dropout")
    init_scheme: str = option(
        "he", "initialisation scheme (see nn.vgg.initializers)", flag="init", choices=INITS
    )
    impl: str = option(
        "auto",
        "auto: cpu_fast on CPU, xla elsewhere; cpu_fast: oneDNN convs where available; cpu_jax; same numbers",
        choices=IMPLS,
    )
    dtype: str = option(
        "float32",
        "compute dtype (params stay float32); bfloat16 is for GPUs/TPUs, slower on a CPU",
        choices=DTYPES,
    )
    epochs: int = option(5, "passes over the training set", positive=True)
    batch_size: int = option(128, "training examples per step (split over the devices)", positive=True)
    eval_batch_size: int = option(
        500, "examples per evaluation batch (the last one is padded and masked)", positive=True
    )
    lr: float = option(0.05, "peak learning rate of SGD")
    momentum: float = option(0.9, "SGD momentum in [0, 1); 0 is plain SGD")
    weight_decay: float = option(5e-4, "L2 penalty added to the gradient, as PyTorch's SGD does")
    nesterov: bool = option(False, "Nesterov momentum (optax.sgd's nesterov)")
    schedule: str = option(
        "cosine", "cosine decay to 0, constant, or onecycle (optax's cosine one-cycle)", choices=SCHEDULES
    )
    warmup_epochs: float = option(0.0, "warm-up to --lr over these epochs (onecycle: 0 is 0.3 of the run)")
    label_smoothing: float = option(0.0, "label smoothing of the training loss, in [0, 1)")
    crop_pad: int = option(0, "random crop of the input after zero padding by P pixels per side", metavar="P")
    flip: bool = option(False, "random horizontal flip of training images (p 0.5)")
    erase: float = option(0.0, "probability of random erasing (one zeroed rectangle per image)", metavar="P")
    ema: float = option(0.0, "decay of an EMA of the weights that evaluation and weights/ use; 0 is off")
    tta: str = option(
        "none",
        "scoring of the final weights (last validation, test, eval) on each image alone, with its "
        "mirror, or also shifted ±1 px diagonally and mirrored",
        choices=TTAS,
    )
    tta_every_epoch: bool = option(
        False, "average the --tta views in every epoch's validation too (by default only the last's)"
    )
    seed: int = option(0, "seeds init, data order, dropout and augmentation; in [0, 2**32)")
    data_dir: str | None = option(None, "folder with the four Fashion-MNIST IDX files (default: searched)")
    verify_data: bool = option(
        True,
        "check each Fashion-MNIST file's SHA-256 as it is read; turn it off for a modified copy (then "
        "only class counts unlike the official ones are warned of)",
        flag="no-verify-data",
    )
    limit_train: int | None = option(
        None, "use the first N training examples not held out for validation", metavar="N", positive=True
    )
    limit_test: int | None = option(None, "use the first N test examples", metavar="N", positive=True)
    val_size: int = option(
        5000,
        "training images held out for validation, stratified by class and fixed by --seed; 0 "
        "validates on the test split, as the d2l chapter does",
        metavar="N",
    )
    eval_test_every_epoch: bool = option(
        False, "also score the test split after every epoch (by default only once, at the end)"
    )
    checkpoint_every: int | None = option(
        None, "also checkpoint every N steps (default: at the end of each epoch)", metavar="N", positive=True
    )
    keep: int = option(3, "keep the K newest checkpoints (and the best)", metavar="K", positive=True)
    channels: int = option(
        1, "input channels of the model (1: Fashion-MNIST, 3: ImageNet weights)", positive=True, cli=False
    )
    num_classes: int = option(
        10, "logits per example (10: Fashion-MNIST, 1000: ImageNet weights)", positive=True, cli=False
    )
    dataset: str = option(
        "fashion-mnist",
        "what the weights expect: fashion-mnist or imagenet (converted torchvision weights)",
        choices=DATASETS,
        cli=False,
    )
    init_from: str | None = option(
        None,
        "start from this run's weights (e.g. from convert-torchvision), or from torchvision's by name "
        "(vgg16, vgg11_bn:IMAGENET1K_V1); a new fc8 if the classes differ",
        metavar="RUN_DIR",
    )
    adapt_channels: bool = option(
        False,
        "with --init-from: adapt 3-channel weights to grey images (timm's in_chans: RGB kernels summed)",
    )
    preprocessing: Preprocessing | None = option(
        None, "how image files become inputs (a Preprocessing); None takes the dataset's", cli=False
    )

    def __post_init__(self):
        # The dataset's preprocessing, where it fits the model's channels (a 3-channel model timed
        # by `vggjax bench` has none; training it on grey images fails on the images' channels).
        default = PREPROCESSING.get(self.dataset)
        if self.preprocessing is None and default is not None and default.channels == self.channels:
            object.__setattr__(self, "preprocessing", default)

    def resolved_arch(self) -> Arch:
        """The :class:`~vggjax.arch.Arch` this config trains (width applied)."""
        return get_arch(self.arch, width=self.width)

    def validate(self) -> TrainConfig:
        """Checks every field; returns self so calls chain.

        Raises:
          ConfigError: for a value out of range, naming the flag and how to fix it.
          ArchError: for an invalid arch or width, or an image size below the arch's minimum.
        """
        arch = self.resolved_arch()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata["positive"] and not (value is None and f.default is None):
                check_positive_int(value, f"--{flag_name(f.name)}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"--momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.dropout_rate < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout_rate!r}")
        if not self.warmup_epochs >= 0:
            raise ConfigError(f"--warmup-epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.nesterov and not self.momentum:
            raise ConfigError("--nesterov needs --momentum > 0; add --momentum 0.9 or drop --nesterov")
        pad, half = self.crop_pad, self.image_size // 2
        if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad <= half:
            raise ConfigError(f"--crop-pad must be an integer in [0, {half}] (half the image), got {pad!r}")
        for name, top in (("label_smoothing", "1)"), ("erase", "1]"), ("ema", "1)")):
            value = getattr(self, name)
            if not (0 <= value < 1 or (top == "1]" and value == 1)):
                raise ConfigError(f"--{flag_name(name)} must be in [0, {top}, got {value!r}")
        for name in ("lr", "weight_decay", "warmup_epochs"):
            if math.isinf(getattr(self, name)):
                raise ConfigError(f"--{flag_name(name)} must be finite, got {getattr(self, name)!r}")
        # jax.random.key keeps 32 bits (2**32 seeds as 0) and NumPy's shuffle rejects negatives
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be an integer in [0, 2**32), got {self.seed!r}")
        self._check_val_size()
        for f in dataclasses.fields(self):
            allowed, value = f.metadata["choices"], getattr(self, f.name)
            if allowed and value not in allowed:
                raise ConfigError(f"--{flag_name(f.name)} must be one of {', '.join(allowed)}, got {value!r}")
        if self.preprocessing is not None:
            self.preprocessing.check(self.channels)
        if self.image_size < arch.min_input_size:
            raise ConfigError(
                f"--image-size {self.image_size} is too small for {len(arch.blocks)} 2x2 max-pools; "
                f"use at least {arch.min_input_size}"
                + (" (or a four-pool arch such as vgg11_28)" if self.image_size >= 16 else "")
            )
        return self

    def _check_val_size(self) -> None:
        """``val_size`` is an integer >= 0 that leaves at least a batch of the official training images."""
        size = self.val_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigError(
                f"--val-size must be an integer >= 0 (0 validates on the test split), got {size!r}"
            )
        total = PER_CLASS["train"] * NUM_CLASSES
        if total - size < self.batch_size:
            raise ConfigError(
                f"--val-size {size} leaves {max(total - size, 0)} of the {total} training images, fewer "
                f"than --batch-size {self.batch_size}; lower --val-size or --batch-size"
            )

    def to_json(self) -> str:
        """The config as indented JSON (the content of ``config.json``)."""
        prep = self.preprocessing._asdict() if self.preprocessing else None
        return json.dumps({**dataclasses.asdict(self), "preprocessing": prep}, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Builds a config from ``config.json`` content.

        A config without ``val_size`` (runs written before it existed, which validated on the
        test split) loads with ``val_size=0``, so such a run evaluates and resumes as it ran.

        Raises:
          ConfigError: for a key that is not a config field.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}; known keys: {sorted(names)}")
        data = {"val_size": 0, **data}  # older runs: the test split was their validation
        prep = data.get("preprocessing")  # absent from runs written before it was recorded
        if prep is not None:
            if not isinstance(prep, dict) or set(prep) != set(Preprocessing._fields):
                raise ConfigError(f"preprocessing needs the keys {list(Preprocessing._fields)}, got {prep!r}")
            prep = {k: tuple(v) if isinstance(v, list) else v for k, v in prep.items()}  # JSON lists
            data = {**data, "preprocessing": Preprocessing(**prep)}
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Reads ``config.json``.

        Raises:
          ConfigError: if the file is missing or not valid JSON.
        """
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None


def flag_name(name: str) -> str:
    """The command-line flag (without ``--``) that sets the config field ``name``."""
    field = _FIELDS.get(name)  # also names flags that set no field, e.g. out
    return (field and field.metadata["flag"]) or name.replace("_", "-")


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TrainConfig.__doc__ += "\n    Attributes:\n" + "".join(
    f"      {f.name}: {f.metadata['help']} (default {f.default!r}).\n" for f in _FIELDS.values()
)


def add_flags(p: argparse.ArgumentParser, names: Sequence[str] | None = None, **defaults: Any) -> None:
    """Adds one ``--flag`` per :class:`TrainConfig` field to an argparse parser, from the field's metadata.

    Args:
      p: the (sub)parser.
      names: the fields to add; None adds every field marked for the command line.
      defaults: the parser's own defaults; fields without one default to None, so that only the
        flags given override a preset.
    """
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if not (f.name in names if names is not None else f.metadata["cli"]):
            continue
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        default = defaults.get(f.name, f.default)
        help = f.metadata["help"] + ("" if default is None or kind is bool else f" (default {default})")
        flag = f"--{flag_name(f.name)}"
        given = {"dest": f.name, "default": defaults.get(f.name), "help": help}
        if kind is bool:  # a flag turns a field on, or off if it is on by default (--no-verify-data)
            p.add_argument(flag, action="store_false" if f.default else "store_true", **given)
        else:
            metavar = f.metadata["metavar"] or (None if f.metadata["choices"] else flag[2:].upper())
            p.add_argument(flag, type=kind, choices=f.metadata["choices"], metavar=metavar, **given)
