"""Shared test settings: strict dtype/rank promotion, small real data subsets."""

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def fashion_small():
    """The first 2,000 training and 500 test examples of the real Fashion-MNIST."""
    from vggjax import data

    return data.load_fashion_mnist(limit_train=2000, limit_test=500, download=False, progress=False)
