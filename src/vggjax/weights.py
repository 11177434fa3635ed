"""Final model weights on disk with orbax-checkpoint.

A weights folder (``<run>/weights``) holds the Flax variables
``{"params": ..., "batch_stats": ...}`` as an orbax ``StandardCheckpointer`` tree; orbax
writes to a temporary folder and renames it when complete, so a killed save never
leaves a half-written folder under the final name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from vggjax.errors import CheckpointError


def save_variables(path: str | Path, variables: dict[str, Any]) -> None:
    """Saves Flax variables to the folder ``path`` (replaced if it exists); blocks until done."""
    path = Path(path).absolute()
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, jax.device_get(variables), force=True)
        ckptr.wait_until_finished()


def load_variables(path: str | Path, target: dict[str, Any] | None = None) -> dict[str, Any]:
    """Loads Flax variables saved by :func:`save_variables`.

    Args:
      path: the weights folder.
      target: optional variables (or their ``jax.ShapeDtypeStruct``s) whose tree and
        shapes the saved ones must match.

    Raises:
      CheckpointError: if the folder is missing, unreadable, or its tree or shapes
        differ from ``target``.
    """
    path = Path(path).absolute()
    if not path.is_dir():
        raise CheckpointError(f"no weights at {path}; give a folder written by vggjax train")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            if target is None:
                return ckptr.restore(path)
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
            return ckptr.restore(path, abstract)
    except (ValueError, KeyError, OSError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot load weights from {path}: {first}") from None
