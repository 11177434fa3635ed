"""Building the VGG a run's config describes, and checking that weights fit a model.

:func:`from_config` is the one model factory of training, evaluation, prediction and
export; :func:`check_fits` (on top of :func:`check_shapes`) is the one "do these
weights fit" check, so weights are never loaded partially or silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError
from vggjax.nn.vgg import VGG


def from_config(config: TrainConfig) -> VGG:
    """The :class:`VGG` a :class:`~vggjax.config.TrainConfig` describes (a run's ``config.json``).

    The one model factory: training, evaluation, prediction and export build their model
    here, so a run's weights always meet the network they were trained in.

    Raises:
      ArchError: for an invalid arch or width.
    """
    return VGG(
        config.resolved_arch(),
        num_classes=config.num_classes,
        dropout_rate=config.dropout_rate,
        head=config.head,
        hidden=config.hidden,
        init_scheme=config.init_scheme,
        dtype=jnp.dtype(config.dtype),
        impl=config.impl,
    )


def check_fits(
    model: VGG,
    variables: Mapping[str, Any],
    input_shape: Sequence[int],
    *,
    what: str = "the weights",
    hint: str = "",
) -> None:
    """Checks that ``variables`` are exactly what ``model.init`` makes for ``input_shape``.

    The model is traced abstractly (:func:`jax.eval_shape`; nothing is computed or
    allocated), so this costs the same for VGG-16 as for a thin VGG-11. Weights are
    never loaded partially or silently: a missing, extra or reshaped variable fails here.

    Args:
      model: the network the variables are for.
      variables: ``{"params": ..., "batch_stats": ...}`` (arrays or anything with a
        ``shape``); an empty collection counts as absent.
      input_shape: the NHWC input, e.g. ``(1, 32, 32, 1)``; with the flatten head it sets fc6's shape.
      what: how the message names the variables, e.g. ``"the weights runs/a/weights"``.
      hint: appended to the message: how to fix it.

    Raises:
      CheckpointError: naming the first path that is missing, extra or of another shape
        (with both shapes).
    """
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    check_shapes(variables, jax.eval_shape(model.init, jax.random.key(0), x), what=what, hint=hint)


def check_shapes(variables: Any, expected: Any, *, what: str = "the weights", hint: str = "") -> None:
    """Checks that two variable trees have the same leaf paths and shapes (:func:`check_fits`' core).

    Args:
      variables: the tree to check, e.g. weights read from disk.
      expected: the tree the model needs (arrays or :class:`jax.ShapeDtypeStruct`).
      what: how the message names ``variables``.
      hint: appended to the message, e.g. how to fix it.

    Raises:
      CheckpointError: naming the first path of ``expected`` that ``variables`` lack or hold
        in another shape (with both shapes), else the first path ``expected`` lacks.
    """

    def flat(tree: Any) -> dict[str, tuple[int, ...]]:
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        return {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(np.shape(v)) for p, v in leaves}

    have, want = flat(variables), flat(expected)
    for path, shape in want.items():
        if path not in have:
            raise CheckpointError(f"{what} have no {path}, which the model needs{hint}")
        if have[path] != shape:
            raise CheckpointError(
                f"{path}: {what} have shape {list(have[path])} but the model needs {list(shape)}{hint}"
            )
    extra = next((path for path in have if path not in want), None)
    if extra is not None:
        raise CheckpointError(f"{what} have {extra}, which the model does not have{hint}")
