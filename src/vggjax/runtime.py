"""The process around a command: allocator settings, signals, standard output, exit statuses.

:func:`run_command` runs one ``vggjax`` subcommand the way every subcommand runs: malloc
tuned, SIGTERM turned into :class:`~vggjax.errors.Interrupted`, user errors printed as one
line with their exit status, a closed pipe ended quietly; :func:`out` is its one writer of
standard output.

The allocator:

glibc returns large freed blocks to the OS (``munmap``, heap trimming), so XLA's
per-step activation buffers are page-faulted in again every step: 30–50% of a CPU
train step at large activations. Keeping them in the process costs nothing but
resident memory that is reused anyway. XLA:CPU allocates from its worker threads, and
glibc gives threads their own arenas, which are trimmed on their own terms; with one
arena every buffer comes back from the same kept heap (thin VGG-11 at 32×32: 203 →
167 ms per train step, minor page faults per process run 946k → 305k).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable

from vggjax.errors import Interrupted, StdoutError, VggjaxError, VggjaxWarning

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to keep freed memory: ``mallopt`` M_MMAP_MAX=0, no trimming, one arena.

    The same as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_ARENA_MAX=1``
    in the environment. Call it before JAX starts its threads and allocates.

    Does nothing when ``VGGJAX_MALLOC=default`` is set or the C library is not glibc.
    Returns whether the setting was applied.
    """
    if os.environ.get("VGGJAX_MALLOC") == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(M_MMAP_MAX, 0) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    ok &= mallopt(M_ARENA_MAX, 1) == 1
    return bool(ok)


class VersionAction(argparse.Action):
    """``vggjax --version``: vggjax, its main dependencies, Python, JAX's default backend and devices,
    and what ``impl="cpu_fast"`` convolutions run on (oneDNN, or pure JAX and why)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import importlib.metadata
        import platform

        import jax

        names = ("vggjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
        for name in names:
            print(f"{name} {importlib.metadata.version(name)}")
        print(f"python {platform.python_version()} ({platform.machine()}, {platform.system()})")
        devices = jax.devices()
        print(f"backend {jax.default_backend()}, {len(devices)} device(s): {devices[0].device_kind}")
        from vggjax.nn import onednn_build

        print(f"cpu_fast convolutions: {onednn_build.status()}")
        parser.exit()


def out(*values: object) -> None:
    """``print`` to standard output, flushed; a closed or full stdout becomes a :class:`StdoutError`.

    A closed pipe (``| head``) stays a ``BrokenPipeError``, which :func:`run_command` ends quietly.
    """
    if sys.stdout is None:  # started with stdout closed (>&-): print() would drop it silently
        raise StdoutError("cannot write to standard output (it is closed); redirect it to a file")
    try:
        if values:
            print(*values)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        reason = e.strerror or e
        raise StdoutError(f"cannot write to standard output ({reason}); redirect it to a file") from None


def _terminated(signum, frame):
    raise Interrupted("stopped by SIGTERM outside the training loop", signum)


def _discard_stdout() -> None:
    if sys.stdout is None:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (captured in tests, or closed)
        pass


def _one_line_warnings(show: Callable) -> Callable:
    """A ``warnings.showwarning`` that prints a :class:`VggjaxWarning` as ``warning: <message>``."""

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, VggjaxWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


def run_command(command: Callable[[], int]) -> int:
    """Runs ``command`` (a parsed subcommand) and returns the process's exit status.

    0 (or what ``command`` returns: 1 when some ``predict`` files could not be read), a
    :class:`~vggjax.errors.VggjaxError`'s ``exit_code`` (2 bad input, 3 diverged, 74 stdout
    closed or full) after its one-line message on stderr, 130 Ctrl-C, 141 the reader of
    stdout went away (``vggjax summary | head -3``), 143 SIGTERM. A
    :class:`~vggjax.errors.VggjaxWarning` is shown each time it is raised, as one line on
    stderr: ``warning: <message>``.
    """
    keep_freed_memory()  # before JAX allocates its first buffer
    # orbax logs through absl; what a user needs comes back to us as one error line
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    # SIGTERM stops like Ctrl-C; while training, the loop saves a checkpoint first (vggjax.training.loop)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", VggjaxWarning)
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            status = command()
        out()  # a closed pipe, or a closed or full stdout, shows here rather than at exit
        return status
    except BrokenPipeError:
        # The reader (head, less) has gone, as SIGPIPE would tell a C program: stop
        # quietly with the shell's status for that (128 + SIGPIPE), and point stdout at
        # /dev/null so that the flush at exit does not fail again (Python's docs, signal).
        _discard_stdout()
        return 128 + signal.SIGPIPE
    except VggjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # Interrupted (checkpoint saved) or a plain Ctrl-C
        print(str(e) or "interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
