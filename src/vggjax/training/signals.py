"""Stopping training cleanly on SIGINT or SIGTERM: :func:`stop_signals` and its :class:`StopFlag`.

Within :func:`stop_signals` the first signal only sets the flag; the epoch loop
(:class:`~vggjax.training.loop.Trainer`) asks :meth:`StopFlag.now` after each step, saves a
checkpoint and raises :class:`~vggjax.errors.Interrupted`. A second signal raises at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import jax
import numpy as np

from vggjax.errors import Interrupted


class StopFlag:
    """The number of the signal that asked training to stop, or None."""

    signum: int | None = None

    def now(self, *, at_sync: bool) -> bool:
        """Whether a signal asks to stop after this step.

        Every process must stop at the same step, as they save together: with several
        processes the flags are gathered at sync points only (a small all-gather).
        """
        if jax.process_count() == 1:
            return self.signum is not None
        if not at_sync:
            return False
        from jax.experimental import multihost_utils

        signums = multihost_utils.process_allgather(np.int32(self.signum or 0))
        if self.signum is None and int(np.max(signums)):
            self.signum = int(np.max(signums))
        return self.signum is not None


@contextlib.contextmanager
def stop_signals() -> Iterator[StopFlag]:
    """Within the block, SIGINT and SIGTERM set ``flag.signum`` instead of stopping.

    A second signal raises :class:`~vggjax.errors.Interrupted` at once. Handlers can
    only be set in the main thread; elsewhere the flag is never set.

    Raises:
      Interrupted: on a second SIGINT or SIGTERM within the block.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.signum is not None:
            raise Interrupted(f"stopped by a second {signal.Signals(signum).name}", signum)
        flag.signum = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
