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
    # A short recipe for a 2-core CPU: the thin VGG-11 with BatchNorm (vgg11_bn at width 0.25,
    # 16/32/64/128/128 channels) and a 512-wide head, 5 epochs of SGD with warm-up and cosine
    # decay, random 2-pixel crops and flips, flip averaging at evaluation.
    #   vggjax train --preset fast
    # Seeds 0 and 1, idle 2-core VM, 2026-12-02: val acc 0.9234, 0.9168, test acc 0.9127, 0.9148,
    # 343 and 410 s from the
    # command to its last line (benchmarks/recipes.py; docs/training.md, "Recipes"). Short of
    # the 0.935 of the published 26M-parameter VGG16.
    "fast": TrainConfig(
        arch="vgg11_bn",
        hidden=512,
        dropout_rate=0.3,
        epochs=5,
        lr=0.1,
        warmup_epochs=0.3,
        crop_pad=2,
        flip=True,
        tta="flip",
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
