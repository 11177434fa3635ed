"""Errors a user can cause and fix, and the command-line exit status of each.

Every error that comes from bad input (a malformed arch string, missing or corrupt
data, a checkpoint that does not fit) derives from :class:`VggjaxError`. Its message
is one line that says what was wrong and how to fix it; the command-line tool prints
it as ``error: <message>`` and exits with the error's ``exit_code``, without a traceback.

Exit statuses of ``vggjax``:

===== ==========================================================================
0     success
1     ``vggjax predict``: some image files could not be read
2     bad input (any :class:`VggjaxError` but :class:`DivergedError`)
3     training diverged: a non-finite loss or gradient (:class:`DivergedError`)
74    standard output cannot be written: closed (``>&-``) or full (``> /dev/full``); EX_IOERR
130   stopped by Ctrl-C (SIGINT); a checkpoint was saved if training had started
141   the reader of stdout went away (a closed pipe: ``vggjax summary | head -3``)
143   stopped by SIGTERM; a checkpoint was saved if training had started
===== ==========================================================================
"""

from __future__ import annotations

import re
import signal

EX_IOERR = 74  # sysexits.h: an input/output error (here: standard output cannot be written)


class VggjaxError(ValueError):
    """Base class of user-facing errors: one line, what was wrong and how to fix it.

    Attributes:
      exit_code: the status the command-line tool exits with (2: bad input).
    """

    exit_code: int = 2


class ArchError(VggjaxError):
    """An architecture spec, width multiplier or input size that cannot build a VGG."""


class DataError(VggjaxError):
    """Data files that are missing, corrupt, truncated or inconsistent."""


class ConfigError(VggjaxError):
    """A training or evaluation setting that is out of range or contradicts another."""


class CheckpointError(VggjaxError):
    """A run folder or checkpoint that is missing, truncated or from another model."""


class ExportError(VggjaxError):
    """A model that cannot be exported as asked: a missing optional package, or a layer or op
    the target format cannot express (the message names it)."""


class DivergedError(VggjaxError):
    """The loss or the gradient norm became NaN or infinite; training stopped.

    The message names the step and the learning rate; no checkpoint of the
    diverged state is written, so the run's newest checkpoint is the last good one.
    """

    exit_code = 3


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM after saving a checkpoint.

    A :class:`KeyboardInterrupt`, so code that does not handle it stops as on Ctrl-C.

    Attributes:
      signum: the signal received (``signal.SIGINT`` or ``signal.SIGTERM``).
      exit_code: ``128 + signum``, the shell's convention (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum


def check_positive_int(value: object, flag: str, error: type[VggjaxError] = ConfigError) -> int:
    """Returns ``value`` if it is an ``int`` >= 1 (not a bool), else raises ``error`` naming ``flag``.

    Args:
      value: the value given.
      flag: how the user gave it, e.g. ``"--batch-size"``, named in the message.
      error: the error class to raise (:class:`ConfigError` by default).

    Raises:
      VggjaxError: ``error("<flag> must be a positive integer, got <value>")``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise error(f"{flag} must be a positive integer, got {value!r}")
    return value


def shorten(text: str, limit: int = 200) -> str:
    """``text`` itself if it has at most ``limit`` characters, else its first ``limit`` and ``…``.

    For echoing user input (an arch literal of 100 kB) or a library's message in a one-line
    error, e.g. ``shorten("abcdefgh", 5) == "abcde…"``.
    """
    return text if len(text) <= limit else text[:limit] + "…"


# The start of a Python object's repr: <bound method …>, <function f at 0x…>, <Foo object at 0x…>
_OBJECT_REPR = re.compile(r"<(?:bound method |built-in |function |method |[\w.]+ object at 0x)")


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (at most ``limit`` characters, see :func:`shorten`).

    For wrapping a library's multi-line error into one of vggjax's one-line messages. A
    message that shows a Python object's repr (orbax's "See full TensorStore details:
    <bound method …>") is replaced by that of the exception it was raised from (``raise …
    from``), which says what failed; without one, the line is cut before the repr. An
    empty message gives the exception's type name.
    """
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    found = _OBJECT_REPR.search(line)
    if found and e.__cause__ is not None:
        return first_line(e.__cause__, limit)
    if found:
        line = line[: found.start()].rstrip(" :") or type(e).__name__
    return line if limit is None else shorten(line, limit)


class VggjaxWarning(UserWarning):
    """Something that works but is likely not what was meant; the command line shows it as one
    line on stderr, ``warning: <message>`` (see :func:`vggjax.runtime.run_command`)."""


class StdoutError(VggjaxError):
    """Standard output cannot be written: it was closed (``>&-``) or its device is full."""

    exit_code = EX_IOERR
