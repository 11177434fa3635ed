"""Content and style losses and the Gram normalisations, on the docstrings' hand-computed 2×2 example."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_model

from vggjax.errors import ArchError, ConfigError
from vggjax.nn.features import features
from vggjax.nn.features import gram_matrix as features_gram
from vggjax.perceptual import content_loss, gram_matrix, style_loss

# One image, H = 1, W = 2, C = 2: positions (1, 2) and (3, 4), so F = [[1, 3], [2, 4]].
F = jnp.asarray([[[[1.0, 2.0], [3.0, 4.0]]]])
ZERO = jnp.zeros_like(F)


def test_gram_normalisations_by_hand():
    np.testing.assert_array_equal(gram_matrix(F, "none")[0], [[10, 14], [14, 20]])
    np.testing.assert_array_equal(gram_matrix(F, "hw")[0], [[5, 7], [7, 10]])
    np.testing.assert_array_equal(gram_matrix(F, "chw")[0], [[2.5, 3.5], [3.5, 5]])
    np.testing.assert_array_equal(gram_matrix(F), gram_matrix(F, "hw"))  # the default, as before
    assert features_gram is gram_matrix  # one implementation
    assert gram_matrix(F.astype(jnp.bfloat16), "none").dtype == jnp.float32
    with pytest.raises(ConfigError, match="normalize must be one of none, hw, chw, got 'c'"):
        gram_matrix(F, "c")
    with pytest.raises(ArchError, match="NHWC"):
        gram_matrix(F[0])


def test_style_loss_by_hand():
    a, b = {"t": F}, {"t": ZERO}
    expected = {"gatys": 892 / 64, "none": 892.0, "hw": 223.0, "chw": 55.75}
    for normalize, value in expected.items():
        got = style_loss(a, b, ["t"], [1.0], normalize=normalize)
        assert got.shape == (1,) and float(got[0]) == pytest.approx(value, rel=1e-6), normalize
    assert float(style_loss(a, b, ["t"])[0]) == pytest.approx(13.9375)  # one layer: weight 1/1
    two = style_loss({"t": F, "u": 2 * F}, {"t": ZERO, "u": ZERO}, ["t", "u"], {"t": 1.0, "u": 0.5})
    assert float(two[0]) == pytest.approx(13.9375 + 0.5 * 16 * 13.9375)
    # Gatys at another image size: each Gram over its own positions (a tiled copy has the same style)
    tiled = jnp.concatenate([F, F], axis=2)
    assert float(style_loss({"t": F}, {"t": tiled}, ["t"])[0]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="no weight for layer u"):
        style_loss(a | {"u": F}, b | {"u": F}, ["t", "u"], {"t": 1.0})
    with pytest.raises(ConfigError, match="feats_b has no tap 'u'"):
        style_loss(a | {"u": F}, b, ["t", "u"])


def test_content_loss_by_hand():
    a, b = {"t": F}, {"t": ZERO}
    assert float(content_loss(a, b, ["t"])[0]) == pytest.approx(7.5)  # 30 / (C·H·W = 4)
    assert float(content_loss(a, b, ["t"], reduction="half_sum")[0]) == pytest.approx(15.0)
    with pytest.raises(ArchError, match="content_loss compares taps of one shape"):
        content_loss(a, {"t": jnp.zeros((1, 2, 2, 2))}, ["t"])
    with pytest.raises(ConfigError, match="1 weights for 2 layers"):
        content_loss(a | {"u": F}, b | {"u": F}, ["t", "u"], [1.0])


def test_losses_on_real_taps_under_jit_and_grad():
    model = tiny_model("vgg16", head=None)
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    variables = model.init(jax.random.key(1), x)
    layers = ("relu1_2", "relu2_2", "relu3_3")

    def loss(img, target):
        fa, fb = features(model, variables, img, layers), features(model, variables, target, layers)
        return (style_loss(fa, fb, layers, normalize="chw") + content_loss(fa, fb, ["relu2_2"])).sum()

    value, grad = jax.jit(jax.value_and_grad(loss))(x, x[::-1])
    assert float(value) > 0 and grad.shape == x.shape and float(jnp.abs(grad).max()) > 0
    assert float(jax.jit(loss)(x, x)) == 0.0
