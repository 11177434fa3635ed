"""Training configuration: one frozen dataclass, named presets, validation.

A run's config is printed at start and saved as ``<run>/config.json``; command-line
flags override fields of a preset.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

from vggjax.arch import Arch, get_arch
from vggjax.errors import ConfigError, check_positive_int

# Every choice a config or a model takes, defined once (this module imports no JAX).
# The dense head: the d2l chapter's flatten, torchvision's 7x7 adaptive average pool; a
# model may also be headless (head None, see nn.vgg.VGG), which no training config is.
HEADS = ("flatten", "adaptive")
POOLINGS = ("avg", "max")  # global pooling of a headless model
INITS = ("he", "torchvision", "lecun")  # see nn.vgg.initializers
# How convs, dense layers and pools are computed (same numbers): auto, Flax's own ops, or
# the matmul-shaped ops of nn.fastops (see nn.vgg.VGG).
IMPLS = ("auto", "xla", "cpu_fast")
DTYPES = ("float32", "bfloat16")  # compute dtypes; params stay float32
SCHEDULES = ("constant", "cosine")
# What a run's images are: Fashion-MNIST (what `vggjax train` trains on, scaled to [0, 1])
# or ImageNet (converted torchvision weights: RGB, torchvision's mean/std).
DATASETS = ("fashion-mnist", "imagenet")


class Preprocessing(NamedTuple):
    """How an image file becomes the model's input, kept in ``config.json`` as timm's pretrained cfg.

    The host (:func:`vggjax.data.images.load_image`) makes ``uint8[size, size, channels]``;
    the device (:func:`vggjax.training.steps.preprocess`, in jit) scales it to [0, 1], resizes
    it bilinearly to the run's ``image_size`` and computes ``(x - mean) / std``. A NamedTuple
    is hashable (static under jit) and stays whole under ``dataclasses.asdict``.

    Attributes:
      channels: 1 (grey, ITU-R 601-2 luma) or 3 (RGB, in that order).
      size: side in pixels of the square picture made on the host.
      resize: None pads to a black square and resizes to ``size``; an int resizes the shorter
        side to it and cuts the centre ``size × size`` (torchvision's Resize + CenterCrop).
      invert: the model expects light on dark, so ``predict --invert`` applies.
      mean, std: per-channel mean and standard deviation of pixels in [0, 1] (1 value: all).
    """

    channels: int
    size: int
    resize: int | None
    invert: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def check(self, channels: int) -> None:
        """Checks the record against the model's input ``channels``.

        Raises:
          ConfigError: for a size, channel count, mean or std that cannot work.
        """
        check_positive_int(self.size, "preprocessing size")
        if self.resize is not None and check_positive_int(self.resize, "preprocessing resize") < self.size:
            raise ConfigError(f"preprocessing resize {self.resize} is below its crop size {self.size}")
        n = len(self.mean)
        if self.channels != channels or n not in (1, channels) or len(self.std) != n:
            raise ConfigError(
                f"preprocessing {self} does not fit a model of {channels} channel(s); delete it from "
                "config.json to take the dataset's"
            )


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet RGB mean and std, pixels in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
# What each dataset's weights expect; a config.json without "preprocessing" gets its dataset's.
PREPROCESSING = {
    "fashion-mnist": Preprocessing(channels=1, size=28, resize=None, invert=True, mean=(0.0,), std=(1.0,)),
    # torchvision's VGG16_Weights.IMAGENET1K_V1.transforms: Resize(256), CenterCrop(224), Normalize
    "imagenet": Preprocessing(
        channels=3, size=224, resize=256, invert=False, mean=IMAGENET_MEAN, std=IMAGENET_STD
    ),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
      arch: arch name (``vgg11``, ``vgg16_bn``, ``A-LRN`` …) or literal
        (``"((1,16),(1,32),(2,64),(2,128),(2,128))"``).
      width: width multiplier on every block's channels (0.25 gives the d2l thin VGG-11).
      image_size: model input side in pixels; 28×28 images are resized bilinearly.
      head: ``"flatten"`` (d2l) or ``"adaptive"`` (torchvision).
      hidden: width of fc6 and fc7.
      dropout_rate: dropout after fc6 and fc7.
      init_scheme: ``"he"``, ``"torchvision"`` or ``"lecun"`` (see ``models.initializers``).
      impl: ``"auto"`` (fast ops on CPU, Flax's elsewhere), ``"xla"`` or ``"cpu_fast"``
        (see ``models.VGG``); same numbers, different speed.
      dtype: compute dtype, ``"float32"`` or ``"bfloat16"`` (params stay float32); bfloat16
        is for accelerators, on a CPU it is slower.
      epochs: passes over the training set.
      batch_size: training examples per step.
      eval_batch_size: test examples per evaluation batch (the last one is padded and masked).
      lr: peak learning rate of SGD.
      momentum: SGD momentum (0 is plain SGD).
      weight_decay: L2 penalty added to the gradient, as PyTorch's SGD does.
      schedule: ``"constant"`` or ``"cosine"`` decay to 0 over the run.
      warmup_epochs: linear warm-up from 0 to ``lr`` over this many epochs.
      seed: seeds init, data order and dropout.
      data_dir: folder holding the four Fashion-MNIST IDX files (None searches).
      limit_train: use only the first N training examples.
      limit_test: use only the first N test examples.
      checkpoint_every: also checkpoint every N steps (None: only at the end of each epoch).
      keep: how many of the newest checkpoints to keep; the best by validation
        accuracy is kept as well.
      channels: input channels of the model (1 for Fashion-MNIST, 3 for ImageNet weights).
      num_classes: logits per example (10 for Fashion-MNIST, 1000 for ImageNet weights).
      dataset: ``"fashion-mnist"`` or ``"imagenet"`` (a converted torchvision model); says
        which preprocessing and labels the weights expect.
      preprocessing: how image files become inputs (:class:`Preprocessing`); None (the
        default) takes the dataset's from :data:`PREPROCESSING`.
      init_from: run folder whose weights start training (``vggjax train --init-from``);
        its arch, width, head and hidden are used; fc8 is replaced when the classes differ.
      adapt_channels: with ``init_from``, allow a different input channel count by
        adapting the first conv (timm's ``in_chans``: RGB kernels summed for grey).
    """

    arch: str = "vgg11"
    width: float = 0.25
    image_size: int = 32
    head: str = "flatten"
    hidden: int = 4096
    dropout_rate: float = 0.5
    init_scheme: str = "he"
    impl: str = "auto"
    dtype: str = "float32"
    epochs: int = 5
    batch_size: int = 128
    eval_batch_size: int = 500
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    seed: int = 0
    data_dir: str | None = None
    limit_train: int | None = None
    limit_test: int | None = None
    checkpoint_every: int | None = None
    keep: int = 3
    channels: int = 1
    num_classes: int = 10
    dataset: str = "fashion-mnist"
    init_from: str | None = None
    adapt_channels: bool = False
    preprocessing: Preprocessing | None = None

    def __post_init__(self):
        if self.preprocessing is None and self.dataset in PREPROCESSING:
            object.__setattr__(self, "preprocessing", PREPROCESSING[self.dataset])

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
        positive = (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "image_size",
            "hidden",
            "keep",
            "channels",
            "num_classes",
        )
        for name in positive:
            check_positive_int(getattr(self, name), f"--{flag_name(name)}")
        for name in ("limit_train", "limit_test", "checkpoint_every"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), f"--{flag_name(name)}")
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
        for name in ("lr", "weight_decay", "warmup_epochs"):
            if math.isinf(getattr(self, name)):
                raise ConfigError(f"--{flag_name(name)} must be finite, got {getattr(self, name)!r}")
        # jax.random.key keeps 32 bits (2**32 seeds as 0) and NumPy's shuffle rejects negatives
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be an integer in [0, 2**32), got {self.seed!r}")
        choices = {
            "schedule": SCHEDULES,
            "head": HEADS,
            "init_scheme": INITS,
            "dataset": DATASETS,
            "impl": IMPLS,
            "dtype": DTYPES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"--{flag_name(name)} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        self.preprocessing.check(self.channels)
        if self.image_size < arch.min_input_size:
            raise ConfigError(
                f"--image-size {self.image_size} is too small for {len(arch.blocks)} 2x2 max-pools; "
                f"use at least {arch.min_input_size}"
            )
        return self

    def to_json(self) -> str:
        """The config as indented JSON (the content of ``config.json``)."""
        prep = self.preprocessing._asdict() if self.preprocessing else None
        return json.dumps({**dataclasses.asdict(self), "preprocessing": prep}, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Builds a config from ``config.json`` content.

        Raises:
          ConfigError: for a key that is not a config field.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}; known keys: {sorted(names)}")
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
    return {"dropout_rate": "dropout", "init_scheme": "init"}.get(name, name).replace("_", "-")


PRESETS: dict[str, TrainConfig] = {
    # Default: thin VGG-11 at 32×32, tuned for a 2-core CPU.
    #   vggjax train
    "default": TrainConfig(),
    # The d2l chapter's exact setting: thin VGG-11 at 224×224, batch 128, plain SGD
    # with lr 0.01, 10 epochs; for a GPU.
    #   vggjax train --preset d2l
    "d2l": TrainConfig(
        image_size=224,
        epochs=10,
        batch_size=128,
        lr=0.01,
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        init_scheme="he",
    ),
}


def get_preset(name: str) -> TrainConfig:
    """A named preset.

    Raises:
      ConfigError: for an unknown name, listing the known ones.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}") from None
