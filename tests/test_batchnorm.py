"""vggjax.nn.batchnorm against Flax's nn.BatchNorm, numpy and JAX's own autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vggjax.nn.batchnorm import BatchNorm, _forward, batch_norm

SHAPE = (8, 5, 5, 6)


def _inputs(seed=0):
    k1, k2, k3, k4 = jax.random.split(jax.random.key(seed), 4)
    x = (
        3.0 * jax.random.normal(k1, SHAPE)
        + jnp.arange(SHAPE[-1], dtype=jnp.float32).reshape(1, 1, 1, -1)
        - 2.0
    )  # per-channel offsets
    scale = 1.0 + 0.3 * jax.random.normal(k2, SHAPE[-1:])
    bias = 0.2 * jax.random.normal(k3, SHAPE[-1:])
    return x, scale, bias, jax.random.normal(k4, SHAPE)


def _with(variables, scale, bias):
    return {"params": {"scale": scale, "bias": bias}, "batch_stats": variables["batch_stats"]}


def test_same_variables_outputs_stats_and_gradients_as_flax():
    x, scale, bias, ct = _inputs()
    ours, flax_bn = BatchNorm(momentum=0.9, epsilon=1e-5), nn.BatchNorm(momentum=0.9, epsilon=1e-5)
    v_ours = ours.init(jax.random.key(0), x, use_running_average=False)
    v_flax = flax_bn.init(jax.random.key(0), x, use_running_average=False)
    assert jax.tree.map(np.shape, v_ours) == jax.tree.map(np.shape, v_flax)
    jax.tree.map(np.testing.assert_array_equal, v_ours, v_flax)  # init updates no statistics

    def train(module):
        def f(x, scale, bias):
            v = _with(v_flax, scale, bias)
            return module.apply(v, x, use_running_average=False, mutable=["batch_stats"])

        return jax.vjp(f, x, scale, bias, has_aux=True)

    (y_ours, vjp_ours, stats_ours), (y_flax, vjp_flax, stats_flax) = train(ours), train(flax_bn)
    np.testing.assert_allclose(y_ours, y_flax, rtol=1e-5, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats_ours, stats_flax)
    for a, b in zip(vjp_ours(ct), vjp_flax(ct), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    v = {"params": v_flax["params"], "batch_stats": stats_flax["batch_stats"]}
    np.testing.assert_allclose(
        ours.apply(v, x, use_running_average=True),
        flax_bn.apply(v, x, use_running_average=True),
        rtol=1e-5,
        atol=1e-6,
    )


def test_statistics_and_running_update_against_numpy():
    x, scale, bias, _ = _inputs(1)
    xs = np.asarray(x, np.float64)
    mean, var = xs.mean((0, 1, 2)), xs.var((0, 1, 2))  # biased, as Flax and torchvision's forward use
    y, m, v = batch_norm(x, scale, bias)
    np.testing.assert_allclose(m, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v, var, rtol=1e-5)
    np.testing.assert_allclose(
        y, (xs - mean) / np.sqrt(var + 1e-5) * np.asarray(scale) + np.asarray(bias), rtol=1e-5, atol=1e-5
    )
    module = BatchNorm(momentum=0.9)
    variables = module.init(jax.random.key(0), x, use_running_average=False)
    _, new = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_allclose(new["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)


def test_closed_form_gradient_equals_autodiff_in_all_three_outputs():
    x, scale, bias, ct = _inputs(2)
    w_mean, w_var = jnp.linspace(-1.0, 1.0, SHAPE[-1]), jnp.linspace(0.5, 2.0, SHAPE[-1])

    def loss(norm):
        def f(x, scale, bias):
            y, mean, var = norm(x, scale, bias)
            return jnp.sum(jnp.tanh(y) * ct) + jnp.sum(mean * w_mean) + jnp.sum(var * w_var)

        return f

    autodiff = loss(lambda x, s, b: _forward(x, s, b, 1e-5)[0])  # JAX differentiates the forward itself
    ours, reference = jax.grad(loss(batch_norm), (0, 1, 2)), jax.grad(autodiff, (0, 1, 2))
    for a, b in zip(ours(x, scale, bias), reference(x, scale, bias), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
