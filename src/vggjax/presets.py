"""Named training presets: ``vggjax train --preset NAME`` starts from one, flags override its fields.

Each preset's comment gives the command and, where measured, the result it reaches; the
recipes table in ``docs/training.md`` has the figures (``benchmarks/recipes.py``).
"""

from __future__ import annotations

from vggjax.config import TrainConfig
from vggjax.errors import ConfigError

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
        val_size=0,  # the chapter validates (and so selects) on the test split
    ),
    # A short recipe for a 2-core CPU: the four-block thin VGG-11 with BatchNorm at the native
    # 28×28 (vgg11_28_bn at width 0.25, 16/32/64/128 channels, no resize; 1.4× the images/s of
    # vgg11_bn at 32×32) and a 512-wide head without dropout, 14 epochs of Nesterov SGD at
    # batch 256 with warm-up and cosine decay, label smoothing 0.1, random 1-pixel crops and
    # flips, averaging at the final evaluation over six views (the image, it shifted one pixel
    # down-right and up-left, and their mirrors: --tta flip-shift).
    #   vggjax train --preset fast
    # Seeds 0, 1, 2, 2026-12-04, 2-core AMD EPYC VM, no other process: val acc 0.9452, 0.9406,
    # 0.9402, test acc 0.9401, 0.9384, 0.9410, in 296.6, 289.3 and 316.2 s from the command to
    # its last line (benchmarks/recipes.py, docs/training.md "Recipes"). Above the published
    # 26M-parameter VGG16 (0.935); two seeds reach 0.94, the mean (0.9398) and the slowest run
    # miss 0.94 and 5 minutes.
    "fast": TrainConfig(
        arch="vgg11_28_bn",
        image_size=28,
        hidden=512,
        dropout_rate=0.0,
        epochs=14,
        batch_size=256,
        lr=0.2,
        nesterov=True,
        warmup_epochs=0.3,
        label_smoothing=0.1,
        crop_pad=1,
        flip=True,
        tta="flip-shift",
        eval_batch_size=1000,
    ),
    # A longer recipe: vgg11_bn at width 0.5 (32/64/128/256/256 channels), 512-wide head with
    # dropout 0.3, 32 epochs of Nesterov SGD (1 warm-up epoch, cosine decay), 2-pixel crops,
    # flips, random erasing (p 0.25), label smoothing 0.1, six-view averaging at evaluation
    # (--tta flip-shift).
    #   vggjax train --preset best
    # Seed 0, 2026-12-04, 2-core AMD EPYC VM, no other process (uptime load 1.08 at the start):
    # val acc 0.9476, test acc 0.9447, 2990 s from the command to its last line. On the same
    # weights --tta flip scores 0.9420 and no averaging 0.9399. Above the published
    # 26M-parameter VGG16 (0.935), short of the 0.95.
    "best": TrainConfig(
        arch="vgg11_bn",
        width=0.5,
        hidden=512,
        dropout_rate=0.3,
        epochs=32,
        lr=0.1,
        nesterov=True,
        warmup_epochs=1.0,
        label_smoothing=0.1,
        crop_pad=2,
        flip=True,
        erase=0.25,
        tta="flip-shift",
        eval_batch_size=1000,
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
