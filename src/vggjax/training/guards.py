"""The run's guards: non-finite losses and parameters stop it, a first epoch that learned nothing warns.

:class:`~vggjax.training.loop.Trainer` calls them; the messages say where it happened and what to
change.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vggjax.errors import DivergedError
from vggjax.run.checkpoint import RunCheckpoints

STUCK_TOLERANCE = 0.02  # a first-epoch loss within this of ln(classes) means no learning


@jax.jit
def all_finite(tree) -> jax.Array:
    """``bool[]``: whether every leaf of ``tree`` (e.g. ``params``) is free of NaN and ±Inf."""
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def diverged(
    step: int, what: str, *, steps_per_epoch: int, lr: float, checkpoints: RunCheckpoints
) -> DivergedError:
    """The error for a run that went non-finite at (1-based) ``step``, after the pending saves finish.

    Args:
      what: the values seen, e.g. ``"loss nan, gradient norm inf"``.
      lr: the learning rate of that step.
      checkpoints: the run's; its newest step is named as the one kept.
    """
    checkpoints.wait()
    epoch, batch = divmod(step - 1, steps_per_epoch)
    latest = checkpoints.latest_step()
    kept = (
        f"the last good checkpoint, step {latest}, is kept in {checkpoints.directory}"
        if latest is not None
        else "no checkpoint had been saved yet"
    )
    return DivergedError(
        f"training diverged at step {step} (epoch {epoch + 1}, batch {batch + 1}): {what} "
        f"at learning rate {lr:.6g}; lower --lr (or add --warmup-epochs) and train again; {kept}"
    )


def warn_if_stuck(train_loss: float, num_classes: int, log: Callable[[str], None]) -> None:
    """Warns (and logs) when the epoch-1 loss is still ln(classes), the loss of a uniform guess."""
    chance = math.log(num_classes)
    if abs(train_loss - chance) < STUCK_TOLERANCE:
        message = (
            f"training looks stuck: the epoch-1 loss {train_loss:.4f} is still ln({num_classes}) = "
            f"{chance:.4f}, the loss of a uniform guess; try another --lr or --init"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        log(f"warning: {message}")
