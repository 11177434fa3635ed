"""oneDNN convolutions (impl="cpu_fast" on x86-64 Linux) against lax.conv, and the pure-JAX fallback.

Every conv layer shape of the VGG configs A-E, thin (width 0.25, as ``vggjax train`` runs them)
and full width (at 32 and 64 only under the slow mark), at 32, 64 and 224 pixels, 1- and 3-channel
inputs: forward, input gradient and weight gradient within 1e-5 (relative, in norm) of
``lax.conv_general_dilated`` and its autodiff, for the plain convolution and for the one with
bias and ReLU fused (against ``relu(lax.conv + b)``, and its bias gradient too).
"""

import json
import os
import platform
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from tiny import tiny_model

from vggjax.arch import get_arch
from vggjax.nn import fastops, onednn, onednn_build

# pyproject.toml declares the oneDNN wheels on x86-64 Linux, so there the extension must build
# and load (CI's machines); a failure to is a test failure, not a skip.
pytestmark = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="the oneDNN wheels vggjax depends on are x86-64 Linux only",
)


def test_the_extension_is_built_and_loaded_here():
    assert onednn_build.available(), onednn_build.status()


def _layer_shapes(widths, sizes=(32, 64, 224), channels=(1, 3)):
    """Distinct ``(side, in channels, out channels, kernel)`` of the convs of configs A-E."""
    out = set()
    for name in ("A", "B", "C", "D", "E"):
        for width in widths:
            for size in sizes:
                for c in channels:
                    side, cin = size, c
                    for block in get_arch(name, width=width).blocks:
                        for k in block.kernels:
                            out.add((side, cin, block.channels, k))
                            cin = block.channels
                        side //= 2
    return sorted(out)


def _reference(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _reference_relu(x, w, b):
    return jax.nn.relu(_reference(x, w) + b.reshape(1, 1, 1, -1))


def _reference_relu_pool(x, w, b):
    return fastops.max_pool_2x2(_reference_relu(x, w, b))


def _with_grads(conv):
    """jit of ``(*operands, ct) -> (conv(*operands), *its gradients for ct)``."""

    def f(*args):
        y, vjp = jax.vjp(conv, *args[:-1])
        return (y, *vjp(args[-1]))

    return jax.jit(f)


REF, GOT = _with_grads(_reference), _with_grads(onednn.conv_same)
NAMES = ("forward", "input grad", "weight grad")
FUSED_REF, FUSED = _with_grads(_reference_relu), _with_grads(onednn.conv_bias_relu)
FUSED_NAMES = ("fused forward", "fused input grad", "fused weight grad", "fused bias grad")


def _rel(got, want):
    return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))


@pytest.mark.parametrize(
    "width, sizes, count",
    [
        (0.25, (32, 64, 224), 37),  # what vggjax train runs (thin VGGs)
        (1.0, (224,), 13),  # the ImageNet VGGs (converted torchvision weights)
        pytest.param(1.0, (32, 64), 24, marks=pytest.mark.slow),  # full width on small images
    ],
)
def test_every_vgg_layer_shape_matches_lax_conv(width, sizes, count):
    shapes = _layer_shapes((width,), sizes)
    assert len(shapes) == count
    worst = {}
    rng = np.random.default_rng(0)  # numpy: jax.random would compile anew for every shape
    for side, cin, cout, k in shapes:
        x = rng.standard_normal((1, side, side, cin), np.float32)
        w = rng.standard_normal((k, k, cin, cout), np.float32) / np.float32(np.sqrt(k * k * cin))
        ct = rng.standard_normal((1, side, side, cout), np.float32)
        for name, got, want in zip(NAMES, GOT(x, w, ct), REF(x, w, ct), strict=True):
            worst[(side, cin, cout, k, name)] = _rel(got, want)
        b = rng.standard_normal(cout, np.float32) * np.float32(0.5)
        # No cotangent where the pre-activation is within rounding of 0, where the two ReLUs
        # may rightly take different branches (the gradient would differ there by the whole dy)
        z = np.asarray(REF(x, w, ct)[0]) + b
        ct_fused = np.where(np.abs(z) > 1e-3, ct, np.float32(0))
        pairs = zip(FUSED_NAMES, FUSED(x, w, b, ct_fused), FUSED_REF(x, w, b, ct_fused), strict=True)
        for name, got, want in pairs:
            worst[(side, cin, cout, k, name)] = _rel(got, want)
    bad = {shape: err for shape, err in worst.items() if not err < 1e-5}
    assert not bad, bad


@pytest.mark.parametrize("pooled", [False, True])
def test_fused_convs_around_a_pool_have_lax_gradients_under_jit(pooled):
    # conv+ReLU -> 2x2 pool -> conv+ReLU: the pattern where XLA once wrote the first ReLU's
    # backward into its own input's buffer (see onednn._cbr_bwd); only jit shows it.
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(2, 8, 8, 1)).astype(np.float32)
    params = [rng.standard_normal(s, np.float32) for s in ((3, 3, 1, 2), (2,), (3, 3, 2, 4), (4,))]

    def loss(p, conv, conv_pool):
        h = conv_pool(x, p[0], p[1])
        return jnp.sum(conv(h, p[2], p[3]) ** 2)

    def fused_pool(x, w, b):
        return fastops.max_pool_2x2(onednn.conv_bias_relu(x, w, b))

    fused = (onednn.conv_bias_relu, onednn.conv_bias_relu_pool if pooled else fused_pool)
    got = jax.jit(jax.grad(loss), static_argnums=(1, 2))(params, *fused)
    want = jax.grad(loss)(params, _reference_relu, _reference_relu_pool)
    for g, r in zip(got, want, strict=True):
        assert _rel(g, r) < 1e-5


def test_conv_bias_relu_pool_is_the_two_ops_in_a_row():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 9, 8), np.float32)  # odd side: the pool drops the last row
    w = rng.standard_normal((3, 3, 8, 16), np.float32) / np.float32(np.sqrt(72))
    b = rng.standard_normal(16, np.float32) * np.float32(0.5)
    ct = rng.standard_normal((2, 4, 4, 16), np.float32)

    got = _with_grads(onednn.conv_bias_relu_pool)(x, w, b, ct)
    want = _with_grads(_reference_relu_pool)(x, w, b, ct)
    assert got[0].shape == (2, 4, 4, 16) and float(got[0].min()) >= 0
    for g, r in zip(got, want, strict=True):
        assert _rel(g, r) < 1e-5


def _conv_calls(model, x):
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    text = jax.jit(lambda v: model.apply(v, x)).lower(variables).as_text()
    return text.count("vggjax_conv_fwd")


def test_cpu_fast_runs_its_convs_on_onednn_and_cpu_jax_does_not():
    x = jnp.ones((2, 32, 32, 1))
    assert _conv_calls(tiny_model("vgg11", impl="cpu_fast"), x) == 8  # VGG-11's 8 convs
    assert _conv_calls(tiny_model("vgg11", impl="cpu_jax"), x) == 0


def test_vmap_folds_the_mapped_axis_or_loops():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2, 8, 8, 4), np.float32)
    w = rng.standard_normal((3, 3, 3, 4, 6), np.float32)
    b = rng.standard_normal(6, np.float32)

    def loss(x, w, conv):
        return jnp.sum(conv(x, w) ** 2)

    def fused_relu(x, w):
        return onednn.conv_bias_relu(x, w, jnp.asarray(b))

    def plain_relu(x, w):
        return _reference_relu(x, w, b)

    # shared weights: folded into the batch; mapped weights: lax.map
    for conv, ref in ((onednn.conv_same, _reference), (fused_relu, plain_relu)):
        for axes, ws in (((0, None), w[0]), ((0, 0), w)):
            got = jax.vmap(jax.value_and_grad(loss, (0, 1)), (*axes, None))(x, ws, conv)
            want = jax.vmap(jax.value_and_grad(loss, (0, 1)), (*axes, None))(x, ws, ref)
            for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_allclose(g, r, rtol=2e-5, atol=1e-4)


SMALL = "((1,16),(1,32))"  # two conv blocks: quick to compile


def _grads(impl: str, x: jax.Array) -> list[np.ndarray]:
    model = tiny_model(SMALL, impl=impl)
    v = jax.jit(model.init)(jax.random.key(0), x[:1])
    grad = jax.jit(jax.grad(lambda v: jnp.sum(model.apply(v, x) ** 2)))
    return [np.asarray(g) for g in jax.tree.leaves(grad(v))]


def test_switched_off_falls_back_to_pure_jax_with_the_same_numbers(monkeypatch):
    env = {**os.environ, "VGGJAX_ONEDNN": "0"}
    code = "from vggjax.nn import onednn_build; print(onednn_build.status())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "pure JAX (oneDNN unavailable: switched off by VGGJAX_ONEDNN=0)"
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
    with_onednn = _grads("cpu_fast", x)
    monkeypatch.setattr(onednn_build, "_state", {"lib": None, "reason": "switched off by VGGJAX_ONEDNN=0"})
    assert _conv_calls(tiny_model(SMALL, impl="cpu_fast"), x) == 0
    fallback, pure = _grads("cpu_fast", x), _grads("cpu_jax", x)
    for f, p, o in zip(fallback, pure, with_onednn, strict=True):
        np.testing.assert_array_equal(f, p)  # the same ops: bit for bit
        assert np.linalg.norm(f - o) <= 1e-5 * np.linalg.norm(o)


CHILD = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, "tests")
from tiny import tiny_model
from jax.sharding import NamedSharding, PartitionSpec as P
x = jax.random.uniform(jax.random.key(1), (8, 16, 16, 1))
mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
x = jax.device_put(x, NamedSharding(mesh, P("data")))
out = {}
for impl in ("cpu_fast", "xla"):
    model = tiny_model(sys.argv[1], impl=impl)
    v = jax.device_put(jax.jit(model.init)(jax.random.key(0), x[:1]), NamedSharding(mesh, P()))
    grad = jax.jit(jax.grad(lambda v, x: jnp.sum(model.apply(v, x) ** 2)))
    hlo = grad.lower(v, x).compile().as_text()
    out[impl] = {
        "grads": [np.asarray(g).ravel().tolist() for g in jax.tree.leaves(grad(v, x))],
        "all_gathers": hlo.count("all-gather("),
        "conv_calls": [line.split("=")[1].split("{")[0].strip() for line in hlo.splitlines()
                       if 'custom_call_target="vggjax_conv_fwd"' in line],
    }
print(json.dumps(out))
"""


def test_data_mesh_runs_one_call_per_device_shard():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, SMALL], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    fast = out["cpu_fast"]
    # both convs, each on the device's 2 of the 8 images; no activation gathered onto every device
    assert sorted(fast["conv_calls"]) == ["f32[2,16,16,2]", "f32[2,8,8,4]"]  # tiny width: 2 and 4 channels
    assert fast["all_gathers"] == 0
    for g, r in zip(fast["grads"], out["xla"]["grads"], strict=True):
        assert np.linalg.norm(np.subtract(g, r)) <= 1e-4 * np.linalg.norm(r)


FUSED_CHILD = """
import json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from vggjax.nn import onednn
rng = np.random.default_rng(4)
x = rng.uniform(size=(8, 8, 8, 3)).astype(np.float32)
p = [rng.standard_normal(s, np.float32) * 0.5 for s in ((3, 3, 3, 4), (4,), (3, 3, 4, 8), (8,))]

def loss(p, x):
    h = onednn.conv_bias_relu_pool(x, p[0], p[1])
    return jnp.sum(onednn.conv_bias_relu(h, p[2], p[3]) ** 2)

mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
xs = jax.device_put(x, NamedSharding(mesh, P("data")))
grad = jax.jit(jax.grad(loss))
hlo = grad.lower(p, xs).compile().as_text()
calls = [line.split("=")[1].split("{")[0].strip()
         for line in hlo.splitlines() if "custom_call_target" in line]
print(json.dumps({"calls": sorted(calls), "sharded": [np.asarray(g).ravel().tolist() for g in grad(p, xs)],
                  "whole": [np.asarray(g).ravel().tolist() for g in grad(p, x)]}))
"""


def test_fused_ops_run_per_device_shard_on_a_data_mesh():
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run(
        [sys.executable, "-c", FUSED_CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.splitlines()[-1])
    # each device: 2 of the 8 images; both forwards, the second's ReLU backward and input
    # gradient, both weight gradients (partial sums, all-reduced)
    assert out["calls"] == sorted(
        ["f32[2,8,8,4]", "f32[2,4,4,8]", "f32[2,4,4,8]", "f32[2,4,4,4]", "f32[3,3,3,4]", "f32[3,3,4,8]"]
    ), out["calls"]
    for g, r in zip(out["sharded"], out["whole"], strict=True):
        assert np.linalg.norm(np.subtract(g, r)) <= 1e-5 * np.linalg.norm(r)


@pytest.mark.parametrize(
    "op, shapes",
    [
        (onednn.conv_same, [(1, 8, 8, 3), (3, 3, 4, 8)]),  # w's input channels are not x's
        (onednn.conv_same, [(8, 8, 3), (3, 3, 3, 8)]),  # x without its batch axis
        (onednn.conv_same, [(1, 8, 8, 3), (2, 2, 3, 8)]),  # even kernel
        (onednn.conv_bias_relu, [(1, 8, 8, 3), (3, 3, 3, 8), (5,)]),  # one bias per output channel
        (onednn.conv_bias_relu_pool, [(1, 8, 8, 3), (3, 3, 3, 8), (8, 1)]),
        (onednn.conv_same, [(1, 8, 8, 0), (3, 3, 0, 8)]),  # no input channels: oneDNN has no such conv
    ],
)
def test_shapes_that_do_not_fit_are_refused_before_any_call(op, shapes):
    # The C++ handlers read as many elements as the shapes say, so a mismatch must not reach them
    with pytest.raises(ValueError, match="do not fit"):
        op(*(jnp.ones(s) for s in shapes))


def test_other_dtypes_are_refused_at_trace_time():
    x, w, b = jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 8)), jnp.ones(8)
    for args in ((x.astype(jnp.bfloat16), w, b), (x, w.astype(jnp.int32), b), (x, w, b.astype(jnp.float16))):
        with pytest.raises(TypeError, match="must be a float32 array"):
            jax.eval_shape(onednn.conv_bias_relu, *args)


def test_vmap_of_empty_inputs_gives_empty_outputs():
    w = jnp.ones((3, 3, 3, 4))
    assert jax.vmap(onednn.conv_same, (0, None))(jnp.ones((3, 2, 0, 6, 3)), w).shape == (3, 2, 0, 6, 4)
    assert jax.vmap(onednn.conv_same, (0, None))(jnp.ones((0, 2, 5, 6, 3)), w).shape == (0, 2, 5, 6, 4)
