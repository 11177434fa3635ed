"""The data a run trains and evaluates on: the training images, the validation split, the test split.

With ``val_size`` > 0 the validation split is held out of the full training split
(:func:`vggjax.data.split_validation`) and ``limit_train`` takes the first N of the rest.
The test split's files are checked at start (:func:`vggjax.data.check_split`), but its
images are loaded only when something scores them: at the end of the run, or every epoch
with ``eval_test_every_epoch`` or ``val_size`` 0 (then it is the validation split).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable

from vggjax import data
from vggjax.config import TrainConfig
from vggjax.data.sources import resolve_dir
from vggjax.errors import ConfigError
from vggjax.run.records import selection_split

Loader = Callable[[], dict]  # () -> {"image": uint8[N, 28, 28, 1], "label": int32[N]}, loaded once


@dataclasses.dataclass(frozen=True)
class RunData:
    """What :func:`load_run_data` gives a run.

    Attributes:
      train: ``{"image": uint8[N, 28, 28, 1], "label": int32[N]}``, the images trained on.
      evals: the splits scored after every epoch, by record prefix (``"val"``, ``"test"``),
        each a loader; the first one picks the best checkpoint.
      test: the test split's loader (the same one as ``evals["test"]`` when that is there).
    """

    train: dict
    evals: dict[str, Loader]
    test: Loader


def load_run_data(config: TrainConfig, *, progress: bool, log: Callable[[str], None]) -> RunData:
    """Loads the training split, holds out the validation split and checks the test files.

    Args:
      config: a validated config (``data_dir``, ``verify_data``, ``val_size``, ``seed``,
        ``limit_train``, ``limit_test``, ``batch_size``, ``channels``, ``eval_test_every_epoch``).
      progress: show download progress bars.
      log: where warnings about unverified data go (one line each).

    Raises:
      DataError: when Fashion-MNIST cannot be found, downloaded or read (the test files included).
      ConfigError: ``val_size`` above the training images there are, fewer training images
        than ``batch_size``, or images with another channel count than ``config.channels``.
    """
    with warnings.catch_warnings(record=True) as caught:  # e.g. unverified data with odd class counts
        warnings.simplefilter("always", data.ClassCountWarning)
        directory = resolve_dir(config.data_dir, True, progress)
        # the validation split comes from all 60,000 images, so only without one may --limit-train cut
        limit = None if config.val_size else config.limit_train
        train = data.load_split("train", directory, limit=limit, verify=config.verify_data)
        data.check_split("test", directory, verify=config.verify_data)
    for w in caught:
        log(f"warning: {w.message}")
    val = None
    if config.val_size:
        train, val = data.split_validation(train, config.val_size, config.seed)
        if config.limit_train is not None:
            train = {key: value[: config.limit_train] for key, value in train.items()}
    _check_train(train, config)

    @functools.cache
    def test() -> dict:
        with warnings.catch_warnings():  # already logged by the check above
            warnings.simplefilter("ignore", data.ClassCountWarning)
            return data.load_split("test", directory, limit=config.limit_test, verify=config.verify_data)

    evals: dict[str, Loader] = {}
    if val is not None:
        evals["val"] = lambda: val
    if selection_split(config.val_size) == "test" or config.eval_test_every_epoch:
        evals["test"] = test
    return RunData(train, evals, test)


def _check_train(train: dict, config: TrainConfig) -> None:
    """At least a batch of training images, with the config's channel count."""
    n_train = len(train["label"])
    if n_train < config.batch_size:
        if config.limit_train is not None and config.limit_train <= n_train:  # the limit binds
            fix = "lower --batch-size or raise --limit-train"
        elif config.val_size:
            fix = f"{config.val_size} more are held out for validation, so lower --batch-size or --val-size"
        else:  # every training example is in already
            fix = f"the data holds no more, so lower --batch-size to {n_train} or less"
        too_big = f"--batch-size {config.batch_size} is larger than the {n_train} training examples"
        raise ConfigError(f"{too_big}; {fix}")
    channels = train["image"].shape[-1]
    if channels != config.channels:
        raise ConfigError(
            f"the images have {channels} channel(s) but the config says channels={config.channels}; "
            "use channels=1 for Fashion-MNIST (--adapt-channels adapts 3-channel --init-from weights)"
        )
