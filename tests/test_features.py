import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.errors import ScopeParamNotFoundError
from tiny import tiny_arch

from vggjax.arch import feature_names, get_arch
from vggjax.errors import ArchError
from vggjax.nn.features import features, gram_matrix
from vggjax.nn.ops import local_response_norm
from vggjax.nn.vgg import VGG


@functools.cache
def small(arch):
    """A width-0.125 VGG, a 32×32 RGB batch of 2, and random variables of the model's shapes.

    Kernels are normal with variance 2 / fan_in; biases, BN scales and running
    statistics uniform in [0.5, 1.5], so BatchNorm is far from the identity. numpy
    fills them: compiling ``model.init`` costs seconds per arch on a small CPU.
    """
    model = VGG(tiny_arch(arch), hidden=32)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    rng = np.random.default_rng(0)

    def fill(s):
        if len(s.shape) == 1:
            return rng.uniform(0.5, 1.5, s.shape).astype(np.float32)
        return (rng.standard_normal(s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))).astype(np.float32)

    return model, jax.tree.map(fill, jax.eval_shape(model.init, jax.random.key(0), x)), x


def close(a, b):
    # Two jitted programs may fuse differently; the values agree to float32 rounding.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["vgg11_bn", "C"])
def test_features_equal_a_full_forward(arch):
    model, variables, x = small(arch)
    spec = get_arch(arch)
    logits, state = jax.jit(
        lambda v, x: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    )(variables, x)
    cap = state["intermediates"]
    names = feature_names(spec)
    got = jax.jit(lambda v, x: features(model, v, x, names))(variables, x)
    assert sorted(got) == sorted(names)  # jit returns dicts with sorted keys
    for b, block in enumerate(spec.blocks, 1):
        for i in range(1, block.num_convs + 1):
            conv = cap[f"block{b}"][f"conv{i}"]["__call__"][0]
            close(got[f"conv{b}_{i}"], conv)
            pre = conv
            if spec.batch_norm:
                pre = cap[f"block{b}"][f"bn{i}"]["__call__"][0]
                close(got[f"bn{b}_{i}"], pre)
            close(got[f"relu{b}_{i}"], np.maximum(pre, 0))
        close(got[f"pool{b}"], cap[f"block{b}"]["__call__"][0])
    for n in ("6", "7"):
        close(got[f"fc{n}"], cap[f"fc{n}"]["__call__"][0])
        close(got[f"relu{n}"], np.maximum(cap[f"fc{n}"]["__call__"][0], 0))
    close(got["fc8"], logits)
    assert got["relu1_1"].shape == (2, 32, 32, 8) and got["pool5"].shape == (2, 1, 1, 64)
    assert got["fc7"].shape == (2, 32) and got["fc8"].shape == (2, 10)


def count(jaxpr, op):
    return str(jaxpr).count(f" {op}[")


def test_only_layers_up_to_the_deepest_are_run():
    model, variables, x = small("vgg11_bn")
    model = model.clone(impl="xla")  # count the reference path's ops (lax conv, reduce_window pool)

    def ops(names):
        jaxpr = jax.make_jaxpr(lambda v, x: features(model, v, x, names))(variables, x)
        return (
            count(jaxpr, "conv_general_dilated"),
            count(jaxpr, "reduce_window_max"),
            count(jaxpr, "dot_general"),
        )

    assert ops(["relu1_1"]) == (1, 0, 0)
    assert ops(["pool1"]) == (1, 1, 0)
    assert ops(["relu3_1", "conv1_1"]) == (3, 2, 0)
    assert ops(["pool5"]) == (8, 5, 0)
    assert ops(["fc6"]) == (8, 5, 1)
    assert ops(["fc8"]) == (8, 5, 3)


def test_a_shallow_tap_needs_only_its_own_parameters():
    model, variables, x = small("vgg16")
    block1 = {"params": {"block1": {"conv1": variables["params"]["block1"]["conv1"]}}}
    shallow = features(model, block1, x, ("relu1_1",))["relu1_1"]
    np.testing.assert_array_equal(shallow, features(model, variables, x, ("relu1_1",))["relu1_1"])
    with pytest.raises(
        ScopeParamNotFoundError, match="block1/conv2"
    ):  # one layer deeper needs conv2's weights
        features(model, block1, x, ("relu1_2",))


def test_order_duplicates_and_headless():
    model, variables, x = small("vgg11")
    got = features(model, variables, x, ["fc7", "relu2_1", "fc7"])
    assert list(got) == ["fc7", "relu2_1"]
    headless = VGG(tiny_arch(), head=None)
    assert features(headless, variables, x, ["pool5"])["pool5"].shape == (2, 1, 1, 64)
    with pytest.raises(ArchError, match=r"unknown layer name\(s\) \['fc7'\]") as e:
        features(headless, variables, x, ["pool5", "fc7"])
    assert e.value.args[0].endswith("relu5_2, pool5")


@pytest.mark.parametrize(
    "layers, message",
    [
        (["relu5_3"], r"unknown layer name\(s\) \['relu5_3'\] for this VGG; use any of: conv1_1, relu1_1,"),
        (["bn1_1"], r"unknown layer name\(s\) \['bn1_1'\]"),
        ([], "non-empty list"),
        ("relu1_1", "non-empty list of layer names"),
    ],
)
def test_unknown_names_list_the_valid_ones(layers, message):
    model, variables, x = small("vgg11")
    with pytest.raises(ArchError, match=message):
        features(model, variables, x, layers)


def test_lrn_is_alexnets_formula():
    # Krizhevsky et al. 2012, 3.3: b_c = a_c / (k + alpha * sum_{j=max(0,c-n/2)}^{min(C-1,c+n/2)} a_j^2)^beta
    # with k=2, n=5, alpha=1e-4, beta=0.75.
    a = np.asarray(jax.random.uniform(jax.random.key(0), (2, 3, 4, 7), maxval=100.0), np.float64)
    ref = np.empty_like(a)
    for c in range(7):
        window = a[..., max(0, c - 2) : min(6, c + 2) + 1]
        ref[..., c] = a[..., c] / (2 + 1e-4 * np.sum(window**2, axis=-1)) ** 0.75
    np.testing.assert_allclose(jax.jit(local_response_norm)(jnp.asarray(a, jnp.float32)), ref, rtol=1e-5)
    assert np.min(np.abs(ref / (a / 2**0.75) - 1)) > 0.01  # the window term matters at this scale


def test_lrn_tap_follows_relu1_1():
    model, variables, x = small("A-LRN")
    got = features(model, variables, x, ["relu1_1", "lrn"])
    np.testing.assert_array_equal(got["lrn"], local_response_norm(got["relu1_1"]))


def test_gram_matrix_against_numpy():
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
    g = gram_matrix(x)
    xn = np.asarray(x, np.float64)
    np.testing.assert_allclose(g, np.einsum("nhwc,nhwd->ncd", xn, xn) / 30, rtol=1e-5, atol=1e-6)
    by_hand = sum(np.outer(xn[1, h, w], xn[1, h, w]) for h in range(5) for w in range(6)) / 30
    np.testing.assert_allclose(g[1], by_hand, rtol=1e-5, atol=1e-6)
    assert g.dtype == jnp.float32 and gram_matrix(x.astype(jnp.bfloat16)).dtype == jnp.float32
    with pytest.raises(ArchError, match="NHWC"):
        gram_matrix(x[0])
