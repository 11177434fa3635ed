"""The optimiser of a run: :func:`make_optimizer` (SGD, momentum, weight decay) on :func:`make_schedule`.

Both read only the :class:`~vggjax.config.TrainConfig` and the number of updates per
epoch, so a resumed run rebuilds the same optimiser state layout and learning rates.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from vggjax.config import TrainConfig

__all__ = ["make_optimizer", "make_schedule"]


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of updates done: linear warm-up, then cosine or constant."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, int(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(config.lr, total - warmup)
    else:
        decay = optax.constant_schedule(config.lr)
    schedule = optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), decay], [warmup])
    # optax mixes the int32 count with Python floats, which strict dtype promotion refuses;
    # a float32 count gives the same values (the schedules turn it into float32 anyway).
    return lambda count: schedule(jnp.asarray(count, jnp.float32))


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum, coupled weight decay (PyTorch's convention) and the LR schedule."""
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(make_schedule(config, steps_per_epoch), momentum=config.momentum or None),
    )
