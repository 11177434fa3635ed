"""A jitted function as serialized StableHLO (``jax.export``), loadable by JAX without vggjax.

The function's weights are constants inside the module, so the artifact alone computes
the model: ``jax.export.deserialize(open(f, "rb").read()).call(x)`` (see ``docs/export.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np

from vggjax.errors import ExportError, VggjaxError, first_line

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # jax.export's lowering platforms
BATCH = "N"  # the symbolic batch dimension's name


def input_spec(shape: Sequence[int | None], dtype: str) -> jax.ShapeDtypeStruct:
    """The abstract input: ``shape`` with a ``None`` batch made the symbolic dimension ``N``."""
    batch = jax.export.symbolic_shape(BATCH)[0] if shape[0] is None else shape[0]
    return jax.ShapeDtypeStruct((batch, *shape[1:]), np.dtype(dtype))


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
    """Returns ``platforms`` as a tuple if it is a non-empty list of :data:`PLATFORMS`.

    Raises:
      ExportError: naming the unknown platforms and the known ones.
    """
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
        raise ExportError(
            f"unknown --platforms {unknown or list(platforms)}; use some of {', '.join(PLATFORMS)}"
        )
    return tuple(platforms)


def export_stablehlo(
    fn: Callable, spec: jax.ShapeDtypeStruct, platforms: Sequence[str] = ("cpu",)
) -> jax.export.Exported:
    """``jax.export.export(jax.jit(fn), platforms=...)(spec)``: StableHLO for each platform.

    Args:
      fn: the function, closing over its weights (they become constants of the module).
      spec: the input, e.g. ``input_spec((None, 32, 32, 1), "float32")`` for any batch.
      platforms: some of :data:`PLATFORMS`; the module runs on each (lowering needs no device).

    Returns:
      The ``jax.export.Exported``; ``.serialize()`` gives its bytes.

    Raises:
      ExportError: for an unknown platform, or when JAX cannot lower ``fn`` (its first line).
    """
    check_platforms(platforms)
    try:
        return jax.export.export(jax.jit(fn), platforms=tuple(platforms))(spec)
    except VggjaxError:  # the model's own checks (sizes, tap names): already one line
        raise
    except (ValueError, TypeError, NotImplementedError) as e:
        raise ExportError(
            f"jax.export cannot lower the model for {', '.join(platforms)}: {first_line(e, 300)}"
        ) from None


def describe(aval: jax.ShapeDtypeStruct | jax.core.ShapedArray) -> dict:
    """``{"shape": [N, 10] (the symbolic batch as its name), "dtype": "float32"}`` of an input or output."""
    return {"shape": [d if isinstance(d, int) else str(d) for d in aval.shape], "dtype": str(aval.dtype)}
