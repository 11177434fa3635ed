"""Batches of in-memory datasets: shuffled by example, cut, padded and masked (numpy only)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from vggjax.errors import ConfigError, DataError


def num_batches(n: int, batch_size: int, *, drop_remainder: bool) -> int:
    """Number of batches :func:`batches` yields for ``n`` examples.

    Raises:
        ConfigError: ``batch_size`` is not positive.
    """
    if batch_size <= 0:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}; pass a positive one")
    return n // batch_size if drop_remainder else -(-n // batch_size)


def batches(
    ds: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
    pad: bool = False,
) -> Iterator[dict[str, np.ndarray]]:
    """Cut a dataset into batches; with ``shuffle``, permute the examples first.

    The permutation comes from ``np.random.default_rng((seed, epoch))`` and is applied to
    the examples before batches are cut, so batch membership changes every epoch.

    Args:
        ds: arrays with a common leading length N, e.g. ``image: uint8[N, 28, 28, 1]``.
        batch_size: examples per batch, B.
        shuffle: permute the examples before batching.
        seed: shuffle seed.
        epoch: epoch number, mixed into the shuffle seed.
        drop_remainder: drop a last partial batch (training).
        pad: pad a last partial batch to B by repeating example 0, and add
            ``"mask": bool[B]`` (True for real examples) to every batch (evaluation).

    Returns:
        An iterator of dicts with the keys of ``ds`` (and ``"mask"``), arrays ``[B, ...]``.

    Raises:
        ConfigError: ``batch_size`` not positive, or both ``drop_remainder`` and ``pad``.
        DataError: the arrays of ``ds`` differ in length.
    """
    num_batches(0, batch_size, drop_remainder=drop_remainder)  # checks batch_size
    if drop_remainder and pad:
        raise ConfigError("drop_remainder and pad contradict each other; choose one")
    lengths = {key: len(value) for key, value in ds.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"dataset arrays differ in length: {lengths}; they must all be equal")
    n = next(iter(lengths.values()), 0)
    order = np.random.default_rng((seed, epoch)).permutation(n) if shuffle else np.arange(n)
    return _cut(ds, order, batch_size, drop_remainder, pad)


def _cut(
    ds: Mapping[str, np.ndarray], order: np.ndarray, size: int, drop: bool, pad: bool
) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(order), size):
        index = order[start : start + size]
        real = len(index)
        if real < size and drop:
            return
        if real < size and pad:
            index = np.concatenate([index, np.zeros(size - real, dtype=index.dtype)])
        batch = {key: value[index] for key, value in ds.items()}
        if pad:
            batch["mask"] = np.arange(size) < real
        yield batch
