"""The optimiser of a run: :func:`make_optimizer` (SGD, momentum, weight decay) on :func:`make_schedule`.

Both read only the :class:`~vggjax.config.TrainConfig` and the number of updates per
epoch, so a resumed run rebuilds the same optimiser state layout and learning rates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from vggjax.config import TrainConfig

__all__ = ["make_optimizer", "make_schedule"]


def make_schedule(config: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate as a function of updates done, over ``epochs * steps_per_epoch`` updates.

    ``constant`` and ``cosine`` (to 0): a linear warm-up from 0 over ``warmup_epochs``
    first. ``onecycle``: ``optax.cosine_onecycle_schedule`` (Smith & Topin 2017, as in
    PyTorch's ``OneCycleLR``): a cosine rise from ``lr / 25`` to ``lr`` over
    ``warmup_epochs`` (0.3 of the run when that is 0), then a cosine fall to ``lr / 25e4``.
    """
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, int(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "onecycle":
        rise = warmup / total if config.warmup_epochs else 0.3
        schedule = optax.cosine_onecycle_schedule(total, config.lr, pct_start=rise)
    else:
        if config.schedule == "cosine":
            decay = optax.cosine_decay_schedule(config.lr, total - warmup)
        else:
            decay = optax.constant_schedule(config.lr)
        schedule = optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), decay], [warmup])

    # optax mixes the int32 count with Python floats (and its one-cycle, bools with float32),
    # which strict dtype promotion refuses; a float32 count gives the same values.
    def learning_rate(count):
        with jax.numpy_dtype_promotion("standard"):
            return schedule(jnp.asarray(count, jnp.float32))

    return learning_rate


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with (Nesterov) momentum, coupled weight decay (PyTorch's convention) and the LR schedule."""
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(
            make_schedule(config, steps_per_epoch), momentum=config.momentum or None, nesterov=config.nesterov
        ),
    )
