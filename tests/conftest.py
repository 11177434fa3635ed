"""Shared test settings: strict dtype/rank promotion, small real data subsets.

XLA's compilations are cached on disk for the session (also for the subprocesses
tests start, through the environment), so a model compiled once is not compiled again
by the next run of it: this saves time only, the executables are the same.
"""

import atexit
import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

_JAX_CACHE = tempfile.mkdtemp(prefix="vggjax-tests-xla-cache-")
atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
jax.config.update("jax_compilation_cache_dir", _JAX_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


@pytest.fixture(scope="session")
def fashion_small():
    """The first 2,000 training and 500 test examples of the real Fashion-MNIST."""
    from vggjax import data

    return data.load_fashion_mnist(limit_train=2000, limit_test=500, download=False, progress=False)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A real one-epoch run (512 training images, 200 held out for validation, thin VGG-11 at 32x32)."""
    from vggjax.config import TrainConfig
    from vggjax.training.train import train_and_evaluate

    config = TrainConfig(
        limit_train=512,
        limit_test=256,
        val_size=200,
        width=0.25,
        hidden=128,
        dropout_rate=0.0,
        batch_size=16,
        epochs=1,
    )
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    train_and_evaluate(config, run_dir, progress=False, log=lambda s: None)
    return run_dir
