"""Final model weights on disk with orbax-checkpoint.

A weights folder (``<run>/weights``) holds the Flax variables
``{"params": ..., "batch_stats": ...}`` as an orbax ``StandardCheckpointer`` tree; orbax
writes to a temporary folder and renames it when complete, so a killed save never
leaves a half-written folder under the final name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from vggjax.errors import CheckpointError, first_line


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
        with ocp.StandardCheckpointer() as ckptr, draining_event_loops():
            if target is None:
                return ckptr.restore(path)
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
            return ckptr.restore(path, abstract)
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise CheckpointError(f"cannot load weights from {path}: {first_line(e)}") from None


class _DrainingEventLoop(asyncio.SelectorEventLoop):
    """An event loop that lets every task on it finish before it closes.

    Orbax (``asyncio_utils.run_sync``) reads a checkpoint's arrays with ``asyncio.gather``
    on a fresh loop and closes that loop as soon as the first read fails, leaving the
    other reads pending: their TensorStore callbacks then hit the closed loop ("Event
    loop is closed") and the abandoned coroutines report their errors when collected,
    dozens of tracebacks after our one-line error. Letting the remaining reads of the
    same checkpoint finish first (``gather`` collects their errors) leaves nothing
    behind to report. With no task pending, as after a good restore, it closes at once.
    """

    def close(self) -> None:
        if self.is_running() or self.is_closed():
            return super().close()
        try:
            while pending := asyncio.all_tasks(self):
                self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.run_until_complete(self.shutdown_asyncgens())
        finally:
            super().close()


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return _DrainingEventLoop()


@contextlib.contextmanager
def draining_event_loops() -> Iterator[None]:
    """Within the block, event loops that orbax creates finish their tasks before closing.

    Orbax makes its loop with ``asyncio.new_event_loop()``, which asks the event loop
    policy; the previous policy is put back afterwards. (Policies are deprecated from
    Python 3.14 on, with removal planned for 3.16.)
    """
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DrainingPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)
