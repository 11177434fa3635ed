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

from vggjax.config import TTAS
from vggjax.errors import DataError
from vggjax.preprocessing import PREPROCESSING, Preprocessing
from vggjax.training.augment import Augment, augment

AUGMENT_STREAM = 0x61756700  # folded into a step's key to give its augmentation key ("aug")
NO_AUGMENT = Augment()


class TrainState(train_state.TrainState):
    """Flax's TrainState plus the ``batch_stats`` collection (empty without BatchNorm) and ``ema``.

    ``ema`` is None, or, for a run with ``ema`` > 0, ``{"params", "batch_stats"}``: the
    bias-corrected exponential moving average of the variables after each update, which
    evaluation scores (see :func:`train_step`).
    """

    batch_stats: Any = None
    ema: Any = None


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
    model: nn.Module,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    input_shape: tuple[int, ...],
    *,
    ema: bool = False,
) -> TrainState:
    """Initialises ``params`` (and ``batch_stats``) for inputs of ``input_shape`` (NHWC).

    With ``ema``, ``state.ema`` starts as a copy of the variables.

    Raises:
      ArchError: if the input shape does not fit the model (see ``VGG``).
    """
    variables = model.init(rng, jnp.zeros(input_shape, jnp.float32), train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=tx,
        batch_stats=batch_stats,
        ema={"params": params, "batch_stats": batch_stats} if ema else None,
    )


def _variables(state: TrainState) -> dict:
    if state.batch_stats:
        return {"params": state.params, "batch_stats": state.batch_stats}
    return {"params": state.params}


def eval_variables(state: TrainState) -> dict:
    """The variables evaluation scores and ``weights/`` holds: ``state.ema`` if the run keeps one.

    ``{"params", "batch_stats"}``, ``batch_stats`` left out when empty (no BatchNorm).
    """
    variables = state.ema if state.ema is not None else _variables(state)
    return {k: v for k, v in variables.items() if k == "params" or v}


def update_ema(ema: dict, variables: dict, decay: float, step: jax.Array) -> dict:
    """The bias-corrected EMA after update ``step`` (1, 2, ...): ``optax.ema(decay, debias=True)``'s value.

    ``e_t = e_{t-1} + (1 - decay) / (1 - decay**t) * (v_t - e_{t-1})`` (optax.incremental_update),
    so ``e_1 = v_1`` and ``e_t = (1 - decay) * sum_k decay**(t-k) v_k / (1 - decay**t)``, the
    debiased average of Adam (Kingma & Ba 2015, sec. 3) with no extra state: what the
    initial values were never matters.
    """
    decay = jnp.float32(decay)  # both sides in float32: the first rate is exactly 1
    rate = (1 - decay) / (1 - decay ** jnp.asarray(step, jnp.float32))
    return optax.incremental_update(variables, ema, rate)


def tta_views(x: jax.Array, tta: str) -> list[jax.Array]:
    """The views of ``float32[B, H, W, C]`` that test-time augmentation ``tta`` scores, each ``x``'s shape.

    ``"none"``: ``[x]``; ``"flip"``: ``x`` and its left-right mirror; ``"flip-shift"``: ``x``
    shifted by one pixel down-right and by one pixel up-left (the vacated row and column are
    0, as the training crops' padding is), and the mirrors of those three: the six views of
    Keller Jordan's airbench (``infer_mirror_translate``), which pads by reflection, weights
    the views ¼, ¼, ⅛ × 4 and averages logits; :func:`predict` averages probabilities with
    equal weights.

    Raises:
      ValueError: for another ``tta`` (:data:`vggjax.config.TTAS`).
    """
    if tta not in TTAS:
        raise ValueError(f"tta must be one of {', '.join(TTAS)}, got {tta!r}")
    views = [x]
    if tta == "flip-shift":
        h, w = x.shape[1:3]
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        views += [padded[:, :h, :w], padded[:, 2 : h + 2, 2 : w + 2]]
    return views if tta == "none" else views + [v[:, :, ::-1] for v in views]


def predict(apply_fn: Any, variables: dict, x: jax.Array, tta: str = "none") -> jax.Array:
    """Class scores of inputs ``float32[B, H, W, C]``: ``float32[B, K]`` logits, or log-probabilities.

    With ``tta="none"`` the model's logits. Otherwise ``log(mean(softmax(f(v))))`` over the
    views of :func:`tta_views` (computed as a logsumexp): the log of each image's mean
    probability over its views; as logits they give that softmax, its argmax and its
    cross-entropy.

    Raises:
      ValueError: for another ``tta`` than those of :data:`vggjax.config.TTAS`.
    """
    views = tta_views(x, tta)
    if len(views) == 1:
        return apply_fn(variables, x, train=False)
    scores = [jax.nn.log_softmax(apply_fn(variables, v, train=False).astype(jnp.float32)) for v in views]
    return jax.nn.logsumexp(jnp.stack(scores), axis=0) - jnp.log(float(len(views)))


def train_step(
    state: TrainState,
    batch: dict,
    rng: jax.Array,
    *,
    image_size: int,
    augmentation: Augment = NO_AUGMENT,
    label_smoothing: float = 0.0,
    ema_decay: float = 0.0,
) -> tuple[TrainState, dict]:
    """One SGD step on ``batch``; the dropout key is ``fold_in(rng, state.step)``.

    Args:
      state: the current state; with ``ema_decay``, one with ``state.ema``.
      batch: ``{"image": uint8[B, H, W, C], "label": int32[B]}``.
      rng: the run's base key; each step folds in its step number, so every step gets a
        fresh dropout mask (and augmentation) and a resumed run replays the same keys.
      image_size: model input side in pixels (static under jit).
      augmentation: what :func:`vggjax.training.augment.augment` does to the preprocessed
        batch, with the key ``fold_in(fold_in(rng, state.step), AUGMENT_STREAM)`` (static).
      label_smoothing: ``optax.smooth_labels``' alpha for the loss (0: plain one-hot).
      ema_decay: decay of ``state.ema`` (:func:`update_ema`), updated after the step; 0 is off.

    Returns:
      The new state and ``{"loss": mean cross-entropy (against the smoothed labels),
      "accuracy": fraction correct, "grad_norm": global L2 norm of the gradients}``
      (float32 scalars).
    """
    x = preprocess(batch["image"], image_size)
    labels = batch["label"]
    dropout_rng = jax.random.fold_in(rng, state.step)
    if augmentation.active:
        x = augment(jax.random.fold_in(dropout_rng, AUGMENT_STREAM), x, augmentation)

    def loss_fn(params):
        variables = {**_variables(state), "params": params}
        logits, updates = state.apply_fn(
            variables, x, train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"]
        )
        if label_smoothing:
            targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
            loss = optax.softmax_cross_entropy(logits, targets).mean()
        else:
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, updates)

    (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
    if ema_decay:
        new = {"params": state.params, "batch_stats": state.batch_stats}
        state = state.replace(ema=update_ema(state.ema, new, ema_decay, state.step))
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == labels),
        "grad_norm": optax.tree.norm(grads),
    }
    return state, metrics


def eval_step(state: TrainState, batch: dict, *, image_size: int, tta: str = "none") -> dict:
    """Sums over the real (``mask``) examples of a batch: ``loss``, ``correct``, ``correct5``, ``count``.

    Scores :func:`eval_variables` (the EMA when the run keeps one) through :func:`predict`
    with ``tta`` (static). The host adds these up over all batches and divides once, so
    padded batches never bias the result.
    """
    x = preprocess(batch["image"], image_size)
    labels = batch["label"]
    mask = batch.get("mask", jnp.ones(labels.shape, bool)).astype(jnp.float32)
    logits = predict(state.apply_fn, eval_variables(state), x, tta)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
        "loss": jnp.sum(loss * mask),
        "correct": jnp.sum((jnp.argmax(logits, -1) == labels).astype(jnp.float32) * mask),
        "correct5": jnp.sum(jnp.any(top5 == labels[:, None], axis=-1).astype(jnp.float32) * mask),
        "count": jnp.sum(mask),
    }
