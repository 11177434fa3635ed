import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vggjax.errors import DataError
from vggjax.nn.vgg import build_model
from vggjax.preprocessing import PREPROCESSING
from vggjax.training.steps import create_train_state, eval_step, preprocess, train_step


def test_preprocess_scales_then_resizes():
    img = np.full((2, 28, 28, 1), 255, np.uint8)
    for size in (28, 32, 224):
        x = preprocess(jnp.asarray(img), size)
        assert x.dtype == jnp.float32 and x.shape == (2, size, size, 1)
        np.testing.assert_allclose(np.asarray(x), 1.0, atol=1e-6)
    rnd = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    x = np.asarray(preprocess(jnp.asarray(rnd), 32))
    assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5


def test_preprocess_normalises_as_the_record_says():
    red = np.zeros((1, 2, 2, 3), np.uint8)
    red[..., 0] = 255
    imagenet = PREPROCESSING["imagenet"]
    out = np.asarray(jax.jit(preprocess, static_argnums=(1, 2))(red, 2, imagenet))[0, 0, 0]
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]  # torchvision's Normalize
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(preprocess(red, 2))[0, 0, 0], [1, 0, 0])  # Fashion-MNIST's
    # The two classic mistakes cannot get through: 0..255 floats and pre-scaled floats.
    with pytest.raises(DataError, match="takes uint8 pixels .*got float32"):
        preprocess(red.astype(np.float32), 2, imagenet)
    with pytest.raises(DataError, match="takes uint8 pixels .*got float64"):
        preprocess(red / 255.0, 2, imagenet)
    with pytest.raises(DataError, match="takes 3 channels"):
        preprocess(np.zeros((1, 2, 2, 1), np.uint8), 2, imagenet)


def _state(hidden=32):
    model = build_model("vgg11", width=0.125, hidden=hidden)
    return create_train_state(model, optax.sgd(0.01), jax.random.key(0), (1, 32, 32, 1))


def _batch(n=8):
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
        "label": rng.integers(0, 10, n).astype(np.int32),
    }


def test_step0_loss_is_ln10():
    state = _state()
    sums = eval_step(state, _batch(64), image_size=32)
    assert abs(float(sums["loss"] / sums["count"]) - math.log(10)) < 0.15


def test_dropout_key_changes_every_step():
    # Same params, same batch: two consecutive steps fold in different step numbers.
    state = _state()
    batch = _batch()
    s1, m1 = train_step(state, batch, jax.random.key(3), image_size=32)
    s1b = s1.replace(params=state.params)
    _, m2 = train_step(s1b, batch, jax.random.key(3), image_size=32)
    assert float(m1["loss"]) != float(m2["loss"])
    # and the same step with the same key is reproducible
    _, m1b = train_step(state, batch, jax.random.key(3), image_size=32)
    assert float(m1["loss"]) == float(m1b["loss"])


def test_eval_mask_excludes_padding():
    state = _state()
    batch = _batch(8)
    full = eval_step(state, batch, image_size=32)
    masked = eval_step(state, {**batch, "mask": np.arange(8) < 5}, image_size=32)
    half = eval_step(state, {k: v[:5] for k, v in batch.items()}, image_size=32)
    assert float(full["count"]) == 8 and float(masked["count"]) == 5
    np.testing.assert_allclose(float(masked["loss"]), float(half["loss"]), rtol=1e-5)
    assert float(masked["correct"]) == float(half["correct"])


def test_batchnorm_stats_update_in_training_only():
    model = build_model("vgg11_bn", width=0.125, hidden=32)
    state = create_train_state(model, optax.sgd(0.01), jax.random.key(0), (1, 32, 32, 1))
    new, _ = train_step(state, _batch(), jax.random.key(1), image_size=32)
    before = state.batch_stats["block1"]["bn1"]["mean"]
    assert not np.allclose(before, new.batch_stats["block1"]["bn1"]["mean"])
    a = eval_step(new, _batch(), image_size=32)
    b = eval_step(new, _batch(), image_size=32)
    assert float(a["loss"]) == float(b["loss"])
