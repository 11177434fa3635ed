"""A validation split held out of the training images: stratified by class, fixed by a seed (numpy only).

:func:`split_validation` is a pure function of the labels, ``val_size`` and ``seed``, so a
resumed run (or ``vggjax eval --split val``) rebuilds the same split from the run's config.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from vggjax.errors import ConfigError

# Mixed into the split's seed so that it draws from another stream than the data order
# (``batches`` uses ``(seed, epoch)`` with small epochs): the bytes of "val" as an integer.
SPLIT_STREAM = int.from_bytes(b"val", "big")


def class_counts(labels: np.ndarray, val_size: int) -> np.ndarray:
    """How many images of each class the validation split takes: proportional to the class frequencies.

    Each class gets ``floor(val_size * n_c / N)``; the images still owed go one each to the
    classes with the largest remainders (ties to the lower class), so the counts sum to
    ``val_size`` and differ from the exact shares by less than 1.

    Args:
      labels: ``int[N]`` classes in ``0..K-1``.
      val_size: images to hold out, ``0 <= val_size <= N``.

    Returns:
      ``int64[K]`` counts, each at most the class's own count.
    """
    freq = np.bincount(labels)
    exact = val_size * freq / max(len(labels), 1)
    counts = np.floor(exact).astype(np.int64)
    owed = val_size - int(counts.sum())
    order = np.lexsort((np.arange(len(freq)), -(exact - counts)))  # largest remainder, then class
    counts[order[:owed]] += 1
    return counts


def split_validation(
    train_ds: Mapping[str, np.ndarray], val_size: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Holds ``val_size`` examples of ``train_ds`` out for validation, stratified by class.

    The per-class counts come from :func:`class_counts` (on the official split, exactly
    ``val_size / 10`` per class, within 1 when it is not a multiple of 10); which images
    of each class are held out is drawn by ``np.random.default_rng((seed, SPLIT_STREAM))``.
    Both parts keep the original order of the examples, so ``--limit-train N`` then takes
    the first N of the remaining ones.

    Args:
      train_ds: ``{"image": uint8[N, 28, 28, 1], "label": int32[N], ...}``, arrays of length N.
      val_size: examples to hold out, V, in ``0..N``; 0 holds out nothing.
      seed: the run's seed, in ``[0, 2**32)``.

    Returns:
      ``(train, val)``: the same keys, ``[N - V, ...]`` and ``[V, ...]``, disjoint and
      together every example.

    Raises:
      ConfigError: ``val_size`` is negative or above N.
    """
    labels = np.asarray(train_ds["label"])
    n = len(labels)
    if not 0 <= val_size <= n:
        raise ConfigError(
            f"--val-size {val_size} is more than the {n} training images there are; lower --val-size"
        )
    rng = np.random.default_rng((seed, SPLIT_STREAM))
    held = np.zeros(n, dtype=bool)
    for c, count in enumerate(class_counts(labels, val_size)):
        members = np.flatnonzero(labels == c)
        held[rng.choice(members, size=int(count), replace=False)] = True
    train = {key: value[~held] for key, value in train_ds.items()}
    val = {key: value[held] for key, value in train_ds.items()}
    return train, val
