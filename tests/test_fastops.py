"""The fast CPU path must compute what the plain linen model computes, gradients included."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from jax import lax
from tiny import tiny_model

from vggjax.arch import feature_names
from vggjax.errors import ArchError
from vggjax.nn import fastops
from vggjax.nn.impl import resolve_impl
from vggjax.nn.vgg import VGG

# The training forward that both the gradients and the branch check run (same dropout mask).
TRAIN = {"train": True, "rngs": {"dropout": jax.random.key(2)}, "mutable": ["batch_stats"]}


def _grads(model, variables, x, labels):
    def loss(params):
        logits, _ = model.apply({**variables, "params": params}, x, **TRAIN)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return jax.jit(jax.value_and_grad(loss))(variables["params"])


def _branches(model, variables, x):
    """The piecewise-linear branches ``model`` takes on ``x``: every ReLU's mask and every
    2×2 max-pool's argmax, in the training forward (:data:`TRAIN`)."""
    names = feature_names(model.arch, head=True)

    def forward(v, x):
        return model.apply(v, x, names, method=VGG.features, **TRAIN)[0]

    feats = jax.jit(forward)(variables, x)
    found = []
    for before, name in zip(names, names[1:], strict=False):
        a = np.asarray(feats[before])
        if name.startswith("relu"):
            found.append(a > 0)
        elif name.startswith("pool"):
            n, h, w, c = a.shape
            windows = a[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
            found.append(windows.transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4).argmax(axis=1))
    return found


def _input_on_shared_branches(plain, fast, variables, shape):
    """The first of ``uniform(key(1..10), shape)`` on which ``fast`` takes the same ReLU masks
    and pool choices as ``plain``.

    The gradient is discontinuous where a pre-activation is 0 or a pool window ties: two
    correct implementations that round differently (oneDNN and XLA differ by ~1e-6) can
    take different branches at a value within rounding of the tie, and one flipped ReLU
    moves every gradient before it by ~1%. Where the branches agree, the gradients must
    agree to rounding. A fast path that computes wrong values flips branches on every input,
    which fails here.
    """
    for seed in range(1, 11):
        x = jax.random.uniform(jax.random.key(seed), shape)
        ref, got = _branches(plain, variables, x), _branches(fast, variables, x)
        if all(np.array_equal(a, b) for a, b in zip(ref, got, strict=True)):
            return x
    raise AssertionError("the fast path takes other ReLU/pool branches than xla on 10 of 10 inputs")


@pytest.mark.parametrize(
    "arch, size, channels, impl",
    [
        # cpu_fast: oneDNN convs where the extension loads (tests/test_onednn.py), else cpu_jax's
        ("vgg11", 32, 1, "cpu_fast"),
        ("vgg11", 32, 1, "cpu_jax"),  # 1-channel first layer (9 multiply-adds), im2col on small maps
        ("vgg11_bn", 32, 3, "cpu_fast"),  # BatchNorm; 3-channel first layer
        ("C", 64, 1, "cpu_fast"),  # the paper's config C (1x1 convs)
        # dilated convs fall through to lax.conv_general_dilated, the plain convs stay fast
        ("((1,64),(2,128,3,(1,2)),(2,256,3,2),(2,512,(3,1),(2,4)),(2,512))", 32, 1, "cpu_fast"),
    ],
)
def test_gradients_equal_plain_model(arch, size, channels, impl):
    shape = (4, size, size, channels)
    labels = jnp.arange(4) % 10
    plain = tiny_model(arch, impl="xla")
    fast = tiny_model(arch, impl=impl)
    variables = plain.init(jax.random.key(0), jnp.zeros(shape))
    x = _input_on_shared_branches(plain, fast, variables, shape)
    loss_ref, g_ref = _grads(plain, variables, x, labels)
    loss_fast, g_fast = _grads(fast, variables, x, labels)
    np.testing.assert_allclose(float(loss_fast), float(loss_ref), rtol=1e-5)
    ref = dict(jax.tree_util.tree_leaves_with_path(g_ref))
    got = dict(jax.tree_util.tree_leaves_with_path(g_fast))
    assert ref.keys() == got.keys()
    for path, r in ref.items():
        name = jax.tree_util.keystr(path)
        if "conv" in name and "bias" in name and "_bn" in arch:
            # A bias right before BatchNorm has gradient exactly 0 in theory; both are rounding noise.
            assert float(jnp.abs(r).max()) < 1e-6 and float(jnp.abs(got[path]).max()) < 1e-6, name
            continue
        rel = float(jnp.linalg.norm(got[path] - r) / jnp.linalg.norm(r))
        assert rel < 1e-4, (name, rel)


def test_max_pool_matches_flax_with_ties_and_odd_sides():
    # Small integers give many ties; 7x9 has an odd last row and column that VALID drops.
    x = jax.random.randint(jax.random.key(0), (2, 7, 9, 3), 0, 3).astype(jnp.float32)
    ct = jax.random.normal(jax.random.key(1), (2, 3, 4, 3))

    def plain(x):
        return nn.max_pool(x, (2, 2), strides=(2, 2))

    y_ref, vjp_ref = jax.vjp(plain, x)
    y, vjp = jax.vjp(fastops.max_pool_2x2, x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(vjp(ct)[0], vjp_ref(ct)[0])


def _assert_same_grads(f, g, *args, rtol, atol=0.0):
    for a, b in zip(jax.grad(f, (0, 1))(*args), jax.grad(g, (0, 1))(*args), strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_dense_and_conv_vjps_match_lax():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x, w = jax.random.normal(k1, (5, 7)), jax.random.normal(k2, (7, 3))
    _assert_same_grads(
        lambda x, w: jnp.sum(jnp.sin(x @ w)),
        lambda x, w: jnp.sum(jnp.sin(fastops.dense(x, w))),
        x,
        w,
        rtol=1e-5,
    )

    def ref(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))

    for side, cin in ((20, 4), (6, 4), (9, 1)):  # lax.conv, im2col and 1-channel branches
        x, w = jax.random.normal(k3, (2, side, side, cin)), jax.random.normal(k2, (3, 3, cin, 5))
        _assert_same_grads(
            lambda x, w: jnp.sum(ref(x, w) ** 2),
            lambda x, w: jnp.sum(fastops.conv_same(x, w) ** 2),
            x,
            w,
            rtol=1e-4,
            atol=1e-3,
        )


def test_other_convolutions_fall_through_to_lax():
    x, w = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 4))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    strided = fastops.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn)
    np.testing.assert_array_equal(
        strided, lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=dn)
    )


def test_impl_switch():
    assert resolve_impl("auto") == ("cpu_fast" if jax.default_backend() == "cpu" else "xla")
    assert resolve_impl("xla") == "xla" and resolve_impl("cpu_jax") == "cpu_jax"
    with pytest.raises(ArchError, match="unknown impl 'fast'"):
        resolve_impl("fast")
