"""LPIPS-VGG against the real ``lpips`` 0.1.4 package, and its jit/grad/vmap/bf16 behaviour.

The reference and vggjax read the same random torchvision VGG-16 file (see
``lpips_reference.py``); the lin weights are the package's own files.
"""

import os
import subprocess
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from lpips_reference import LIN_DIR, reference, to_nchw, write_trunk

from vggjax.errors import ArchError
from vggjax.perceptual import LPIPS, load_lpips
from vggjax.perceptual.weights import read_lin

ODD = (5, 61, 93)  # batch 5 at an odd size
SMALL = (1, 32, 32)  # batch 1 at the smallest size VGG-16 takes
GRAD = (2, 32, 48)


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    return write_trunk(tmp_path_factory.mktemp("lpips") / "vgg16-features.pth")


def pair(shape, seed=0):
    """Two related RGB batches in [0, 1]: an image and a noisy copy of it."""
    rng = np.random.default_rng(seed)
    x = rng.random((*shape, 3), dtype=np.float32)
    y = np.clip(x + 0.2 * rng.standard_normal(x.shape).astype(np.float32), 0, 1)
    return x, y


def test_v01_lin_weights_are_nonnegative_with_the_reference_sums():
    for lin in (read_lin(None, "0.1"), read_lin(LIN_DIR / "v0.1" / "vgg.pth", "0.1")):
        assert [w.shape for w in lin] == [(64,), (128,), (256,), (512,), (512,)]
        assert all((w >= 0).all() for w in lin)
        np.testing.assert_allclose([w.sum() for w in lin], [6.926, 8.858, 17.515, 51.521, 47.035], atol=1e-3)


@pytest.mark.parametrize(
    "version, lin, spatial, variant",
    [
        ("0.1", True, False, "lpips-vgg-v0.1"),
        ("0.0", True, False, "lpips-vgg-v0.0"),
        ("0.1", False, False, "vgg-l2-baseline"),
        ("0.1", True, True, "lpips-vgg-v0.1"),
    ],
)
def test_matches_the_lpips_package(trunk, version, lin, spatial, variant):
    metric = load_lpips(trunk, version=version, baseline=not lin)
    ref = reference(trunk, version=version, lin=lin, spatial=spatial)
    for shape in (ODD, SMALL):
        x, y = pair(shape)
        out = metric(jnp.asarray(x), jnp.asarray(y), spatial=spatial)
        with torch.no_grad():
            want = ref(to_nchw(x), to_nchw(y), normalize=True).numpy()[:, 0]  # [N, 1, 1] or [N, H, W]
        assert out.variant == variant and out.distance.shape == (shape[0],)
        if spatial:
            assert out.map.shape == shape
            np.testing.assert_allclose(np.asarray(out.map), want, rtol=0, atol=1e-5)
        else:
            assert out.map is None
            np.testing.assert_allclose(np.asarray(out.distance), want[:, 0, 0], rtol=0, atol=1e-5)
        assert 0.005 < float(out.distance.min())  # a real distance, not zeros matching zeros


def test_gradient_wrt_either_image_matches_torch_autograd(trunk):
    metric = load_lpips(trunk)
    x, y = pair(GRAD, seed=1)
    gx, gy = jax.grad(lambda a, b: metric(a, b).distance.sum(), argnums=(0, 1))(
        jnp.asarray(x), jnp.asarray(y)
    )
    tx, ty = to_nchw(x).requires_grad_(), to_nchw(y).requires_grad_()
    reference(trunk)(tx, ty, normalize=True).sum().backward()
    for got, want in ((gx, tx.grad), (gy, ty.grad)):
        want = want.numpy().transpose(0, 2, 3, 1)
        scale = np.abs(want).max()
        assert scale > 0
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=1e-4 * scale)


def test_identical_images_give_zero_and_the_distance_is_symmetric(trunk):
    metric = load_lpips(trunk)
    x, y = (jnp.asarray(a) for a in pair(SMALL, seed=2))
    xx = jnp.concatenate([x, y])
    np.testing.assert_array_equal(np.asarray(metric(xx, xx).distance), [0.0, 0.0])
    assert float(metric(x, y).distance[0]) == float(metric(y, x).distance[0]) > 0


def test_jit_and_vmap_give_the_eager_numbers(trunk):
    metric = load_lpips(trunk)
    x, y = (jnp.asarray(a) for a in pair((3, 32, 32), seed=3))
    eager = np.asarray(metric(x, y).distance)
    jitted = jax.jit(lambda m, a, b: m(a, b).distance)(metric, x, y)  # the metric is a pytree argument
    np.testing.assert_allclose(np.asarray(jitted), eager, rtol=1e-6)
    mapped = jax.vmap(lambda a, b: metric(a[None], b[None]).distance[0])(x, y)
    np.testing.assert_allclose(np.asarray(mapped), eager, rtol=1e-5)


def test_inputs_in_minus_one_to_one(trunk):
    metric = load_lpips(trunk)
    x, y = (jnp.asarray(a) for a in pair(SMALL, seed=4))
    d01 = metric(x, y).distance
    d11 = metric(2 * x - 1, 2 * y - 1, input_range="-1,1").distance
    np.testing.assert_allclose(np.asarray(d11), np.asarray(d01), rtol=1e-5)


def test_bfloat16_trunk_keeps_normalisation_and_sums_in_float32(trunk):
    f32 = load_lpips(trunk)
    bf16 = LPIPS(f32.trunk, f32.lin, version="0.1", dtype="bfloat16")
    x, y = (jnp.asarray(a) for a in pair(SMALL, seed=5))
    out = bf16(x, y)
    assert out.distance.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out.distance), np.asarray(f32(x, y).distance), rtol=0.05)
    jaxpr = jax.make_jaxpr(lambda a, b: bf16(a, b).distance)(x, y)
    eqns = []

    def walk(jp):
        for e in jp.eqns:
            eqns.append(e)
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    products = [e for e in eqns if e.primitive.name in ("conv_general_dilated", "dot_general")]
    in_bf16 = [e for e in products if e.invars[0].aval.dtype == jnp.bfloat16]
    assert len(in_bf16) >= 13  # the trunk's 13 convs
    lins = [e for e in products if e not in in_bf16]  # the five 1×1 lin layers, [N, h, w, C] · [C]
    assert len(lins) == 5 and all(e.invars[0].aval.dtype == jnp.float32 for e in lins)
    for name in ("sqrt", "reduce_sum", "div"):
        found = [e for e in eqns if e.primitive.name == name]
        assert found and all(v.aval.dtype == jnp.float32 for e in found for v in e.outvars), name


def residual_bytes(fn, *args):
    """Bytes the backward pass of ``fn`` keeps (the leaves of its vjp closure)."""
    _, vjp = jax.vjp(fn, *args)
    return sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(vjp))


def test_a_frozen_reference_keeps_no_activations_for_the_backward_pass(trunk):
    metric = load_lpips(trunk)
    x, y = (jnp.asarray(a) for a in pair(GRAD, seed=6))
    one_side = residual_bytes(lambda a: metric(a, y).distance.sum(), x)
    frozen = residual_bytes(lambda a, b: metric(a, b, frozen_y=True).distance.sum(), x, y)
    both = residual_bytes(lambda a, b: metric(a, b).distance.sum(), x, y)
    weights = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(metric.trunk))  # kept once in each
    print(f"residual bytes: one side {one_side:,}, frozen y {frozen:,}, both {both:,}, weights {weights:,}")
    assert frozen <= 1.05 * one_side
    assert both - one_side > 0.5 * (one_side - weights)  # the measure sees a second branch's activations


def test_too_small_or_mismatched_images_are_refused(trunk):
    metric = load_lpips(trunk)
    with pytest.raises(ArchError, match="at least 32x32 pixels, got 16x40"):
        metric(jnp.zeros((1, 16, 40, 3)), jnp.zeros((1, 16, 40, 3)))
    with pytest.raises(ArchError, match=r"one shape, got \(1, 32, 32, 3\) and \(1, 32, 33, 3\)"):
        metric(jnp.zeros((1, 32, 32, 3)), jnp.zeros((1, 32, 33, 3)))


SHARDED = """
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from vggjax.perceptual import LPIPS
from vggjax.perceptual.weights import read_lin, trunk_shapes, trunk_variables

assert jax.device_count() == 2
rng = np.random.default_rng(0)
state = {k: (rng.standard_normal(s) * 0.05).astype(np.float32) for k, s in trunk_shapes().items()}
metric = LPIPS(trunk_variables(state), tuple(jnp.asarray(w) for w in read_lin(None, "0.1")))
x, y = (rng.random((4, 32, 32, 3), dtype=np.float32) for _ in range(2))
one = np.asarray(metric(jnp.asarray(x), jnp.asarray(y)).distance)
batch = NamedSharding(Mesh(np.array(jax.devices()), ("batch",)), P("batch"))
xs, ys = jax.device_put(x, batch), jax.device_put(y, batch)
out = jax.jit(lambda m, a, b: m(a, b, spatial=True))(metric, xs, ys)
assert out.distance.sharding.is_equivalent_to(batch, 1), out.distance.sharding
assert len(out.map.addressable_shards) == 2
np.testing.assert_allclose(np.asarray(out.distance), one, rtol=1e-5)
print("sharded", np.asarray(out.distance))
"""


@pytest.mark.slow
def test_a_batch_sharded_over_two_devices_gives_the_one_device_numbers():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    p = subprocess.run([sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.startswith("sharded [")
