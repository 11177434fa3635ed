"""How an image file becomes a model's input, recorded in each run's ``config.json`` (no JAX).

As timm's pretrained config does, a run says what its weights expect: the host turns a file
into ``uint8[size, size, channels]`` (:mod:`vggjax.data.images`) and the device scales,
resizes and normalises it (:func:`vggjax.training.steps.preprocess`).
"""

from __future__ import annotations

from typing import NamedTuple

from vggjax.errors import ConfigError, check_positive_int


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
