"""Errors a user can cause and fix.

Every error that comes from bad input (a malformed arch string, missing or corrupt
data, a checkpoint that does not fit) derives from :class:`VggjaxError`. Its message
is one line that says what was wrong and how to fix it; the command-line tool prints
it as ``error: <message>`` and exits with status 2, without a traceback.
"""

from __future__ import annotations


class VggjaxError(ValueError):
    """Base class of user-facing errors: one line, what was wrong and how to fix it."""


class ArchError(VggjaxError):
    """An architecture spec, width multiplier or input size that cannot build a VGG."""


class DataError(VggjaxError):
    """Data files that are missing, corrupt, truncated or inconsistent."""


class ConfigError(VggjaxError):
    """A training or evaluation setting that is out of range or contradicts another."""


class CheckpointError(VggjaxError):
    """A run folder or checkpoint that is missing, truncated or from another model."""
