"""The names of a run's evaluation fields in ``metrics.jsonl``: ``val_*`` for the held-out split,
``test_*`` for the test set, and the renaming that makes older runs' records say which they were.

Before the validation split existed (runs whose ``config.json`` has no ``val_size``, which
loads as 0), every epoch was scored on the test split but recorded as ``val_*``;
:func:`honest_records` renames those fields ``test_*``.
"""

from __future__ import annotations

from collections.abc import Sequence

SPLITS = ("val", "test")  # the held-out validation split, the test split
SPLIT_NAMES = {"val": "validation", "test": "test"}  # in words, for messages and pages
METRICS = ("loss", "acc", "acc5")  # mean cross-entropy (nats), top-1 and top-5 accuracy


def fields(split: str) -> tuple[str, ...]:
    """The record fields of one split's scores, e.g. ``("val_loss", "val_acc", "val_acc5")``."""
    return tuple(f"{split}_{m}" for m in METRICS)


def selection_split(val_size: int) -> str:
    """The split scored every epoch and used to pick the best checkpoint: ``"val"``, or ``"test"`` for 0."""
    return "val" if val_size else "test"


def honest_records(records: Sequence[dict], val_size: int) -> list[dict]:
    """``records`` with the ``val_*`` fields of a test-validated run (``val_size`` 0) renamed ``test_*``.

    Runs with ``val_size`` 0 written by this version already name them ``test_*``; only
    older runs' records change. Records of a run with a validation split are returned as they are.
    """
    if val_size:
        return list(records)
    rename = dict(zip(fields("val"), fields("test"), strict=True))
    return [{rename.get(k, k): v for k, v in r.items()} for r in records]


def scores(split: str, result: dict[str, float]) -> dict[str, float]:
    """A split's ``{"loss", "acc", "acc5"}`` (``training.loop.evaluate``) as record fields."""
    return {f"{split}_{m}": result[m] for m in METRICS}


def available(records: Sequence[dict]) -> list[str]:
    """The splits of :data:`SPLITS` whose accuracy some record holds, in that order."""
    return [s for s in SPLITS if any(f"{s}_acc" in r for r in records)]
