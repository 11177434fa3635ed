"""Pure train and eval steps; the caller jits them.

Batches are dicts of host arrays: ``{"image": uint8[B, H, W, C], "label": int32[B]}``,
plus ``"mask": bool[B]`` for padded eval batches. Scaling to [0, 1], resizing to the
model's input size and normalising (:func:`preprocess`) happen here, on the device,
inside the jitted step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state

from vggjax.errors import DataError
from vggjax.preprocessing import PREPROCESSING, Preprocessing


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the ``batch_stats`` collection (empty without BatchNorm)."""

    batch_stats: Any = None


def preprocess(
    images: jax.Array, image_size: int, preprocessing: Preprocessing = PREPROCESSING["fashion-mnist"]
) -> jax.Array:
    """``uint8[N, H, W, C]`` → ``float32[N, S, S, C]``, ``S = image_size``, as ``preprocessing`` says.

    Pixels are scaled first (255 → 1.0), then resized bilinearly (so a resize can never
    turn a uint8 image into zeros) and clipped to [0, 1], then normalised as
    ``(x - mean) / std`` per channel: Fashion-MNIST's record (the default, what training
    uses) stops at [0, 1]; ImageNet's is torchvision's ``Normalize(mean, std)``. Taking
    ``uint8`` only rules out the two classic mistakes, normalising 0..255 floats and
    scaling pixels twice.

    Args:
      images: raw pixels, e.g. from :func:`vggjax.data.images.load_image`.
      image_size: the model's input side in pixels (static under jit).
      preprocessing: the run's :class:`~vggjax.config.Preprocessing` (static under jit).

    Raises:
      DataError: if ``images`` is not ``uint8``, or has another channel count than
        ``preprocessing``'s mean/std (one value fits any count).
    """
    mean, std = preprocessing.mean, preprocessing.std
    if images.dtype != jnp.uint8:
        raise DataError(
            f"preprocess takes uint8 pixels (0..255), got {images.dtype}; pass the raw pixels "
            "(e.g. from vggjax.data.images.load_image), not scaled floats"
        )
    n, h, w, c = images.shape
    if len(mean) not in (1, c):
        raise DataError(f"the preprocessing takes {len(mean)} channels, got images of shape {images.shape}")
    x = images.astype(jnp.float32) / 255.0
    if (h, w) != (image_size, image_size):
        x = jax.image.resize(x, (n, image_size, image_size, c), method="bilinear")
    x = jnp.clip(x, 0.0, 1.0)
    if any(m != 0 for m in mean) or any(s != 1 for s in std):  # static: no ops for Fashion-MNIST
        shape = (1, 1, 1, len(mean))
        x = (x - jnp.asarray(mean, jnp.float32).reshape(shape)) / jnp.asarray(std, jnp.float32).reshape(shape)
    return x


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array, input_shape: tuple[int, ...]
) -> TrainState:
    """Initialises ``params`` (and ``batch_stats``) for inputs of ``input_shape`` (NHWC).

    Raises:
      ArchError: if the input shape does not fit the model (see ``VGG``).
    """
    variables = model.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
    )


def _variables(state: TrainState) -> dict:
    if state.batch_stats:
        return {"params": state.params, "batch_stats": state.batch_stats}
    return {"params": state.params}


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, image_size: int) -> tuple[TrainState, dict]:
    """One SGD step on ``batch``; the dropout key is ``fold_in(rng, state.step)``.

    Args:
      state: the current state.
      batch: ``{"image": uint8[B, H, W, C], "label": int32[B]}``.
      rng: the run's base dropout key; each step folds in its step number, so every
        step gets a fresh mask and a resumed run replays the same keys.
      image_size: model input side in pixels (static under jit).

    Returns:
      The new state and ``{"loss": mean cross-entropy, "accuracy": fraction correct,
      "grad_norm": global L2 norm of the gradients}`` (float32 scalars).
    """
    x = preprocess(batch["image"], image_size)
    labels = batch["label"]
    dropout_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
        variables = {**_variables(state), "params": params}
        logits, updates = state.apply_fn(
            variables, x, train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"]
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        "grad_norm": optax.tree.norm(grads),
    }
    return state, metrics


def eval_step(state: TrainState, batch: dict, *, image_size: int) -> dict:
    """Sums over the real (``mask``) examples of a batch: ``loss``, ``correct``, ``correct5``, ``count``.

    The host adds these up over all batches and divides once, so padded batches never
    bias the result.
    """
    x = preprocess(batch["image"], image_size)
    labels = batch["label"]
    mask = batch.get("mask", jnp.ones(labels.shape, bool)).astype(jnp.float32)
    logits = state.apply_fn(_variables(state), x, train=False)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
        "loss": jnp.sum(loss * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels).astype(jnp.float32) * mask),
        "correct5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1).astype(jnp.float32) * mask),
        "count": jnp.sum(mask),
    }
