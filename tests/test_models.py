import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_arch, tiny_model

from vggjax.arch import get_arch
from vggjax.errors import ArchError, ConfigError
from vggjax.nn.vgg import VGG, adaptive_avg_pool, build_model


def shapes(model, size, channels=1):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels))))


def test_seed_shapes_vgg11_224():
    # The d2l chapter's printout: five blocks, flatten 25088, then the dense head.
    model = build_model("vgg11", num_classes=10)
    x = jnp.zeros((1, 224, 224, 1))
    variables = shapes(model, 224)

    def run(v):
        return model.apply(
            v,
            x,
            capture_intermediates=lambda m, _: (m.name or "").startswith("block"),
            mutable=["intermediates"],
        )

    out, state = jax.eval_shape(run, variables)
    blocks = [state["intermediates"][f"block{b}"]["__call__"][0].shape for b in range(1, 6)]
    assert blocks == [(1, 112, 112, 64), (1, 56, 56, 128), (1, 28, 28, 256), (1, 14, 14, 512), (1, 7, 7, 512)]
    assert variables["params"]["fc6"]["kernel"].shape == (25088, 4096)
    assert variables["params"]["fc8"]["kernel"].shape == (4096, 10)
    assert out.shape == (1, 10)


def test_param_names():
    params = shapes(build_model("vgg11_bn", width=0.25), 32)
    assert set(params["params"]) == {"block1", "block2", "block3", "block4", "block5", "fc6", "fc7", "fc8"}
    assert set(params["params"]["block3"]) == {"conv1", "bn1", "conv2", "bn2"}
    assert set(params["batch_stats"]["block3"]["bn2"]) == {"mean", "var"}


@pytest.mark.parametrize(
    "name, expected",
    [
        ("vgg11", 132_863_336),
        ("vgg13", 133_047_848),
        ("vgg16", 138_357_544),
        ("vgg19", 143_667_240),
        ("vgg11_bn", 132_868_840),
        ("vgg16_bn", 138_365_992),
        ("vgg19_bn", 143_678_248),
    ],
)
def test_torchvision_param_counts(name, expected):
    model = build_model(name, head="adaptive", num_classes=1000)
    params = shapes(model, 224, 3)["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == expected


def test_too_small_input_names_minimum():
    with pytest.raises(ArchError, match="at least 32x32"):
        build_model("vgg11", width=0.25).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_flatten_head_wrong_size_suggests_adaptive():
    model = build_model("vgg11", width=0.25)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
    with pytest.raises(ArchError, match=r"expects 128 features but this input gives 512.*adaptive"):
        model.apply(variables, jnp.zeros((1, 64, 64, 1)))


def test_adaptive_head_serves_any_size():
    model = build_model("vgg11", width=0.125, head="adaptive")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    for size in (32, 64, 100):
        assert model.apply(variables, jnp.zeros((2, size, size, 3))).shape == (2, 10)


def test_adaptive_avg_pool_matches_torch_bins():
    x = jnp.arange(2 * 10 * 10 * 1, dtype=jnp.float32).reshape(2, 10, 10, 1)
    out = np.asarray(adaptive_avg_pool(x, 7))
    # PyTorch's bins for 10 -> 7: [floor(i*10/7), ceil((i+1)*10/7))
    bins = [(i * 10 // 7, -(-(i + 1) * 10 // 7)) for i in range(7)]
    ref = np.array([[[x[n, a:b, c:d, 0].mean() for c, d in bins] for a, b in bins] for n in range(2)])
    np.testing.assert_allclose(out[..., 0], ref, rtol=1e-6)
    one = adaptive_avg_pool(jnp.ones((1, 1, 1, 4)) * 3.0, 7)
    assert one.shape == (1, 7, 7, 4) and float(one.min()) == 3.0


def test_headless_pooling():
    model = VGG(tiny_arch(), head=None, pooling="avg")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert "fc6" not in variables["params"]
    assert model.apply(variables, jnp.ones((2, 64, 64, 3))).shape == (2, 64)
    fmap = VGG(tiny_arch(), head=None).apply(variables, jnp.ones((2, 64, 64, 3)))
    assert fmap.shape == (2, 2, 2, 64)


def test_dropout_only_in_training_and_fresh_per_key():
    model = tiny_model()
    x = jax.random.uniform(jax.random.key(1), (4, 32, 32, 1))
    variables = model.init(jax.random.key(0), x)
    a = model.apply(variables, x)
    np.testing.assert_array_equal(a, model.apply(variables, x))
    t1 = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    t2 = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert not np.allclose(t1, t2)


@pytest.mark.parametrize(
    "given, missing",
    [
        ({}, 'rngs={"dropout": key}, mutable=["batch_stats"]'),
        ({"rngs": {"dropout": jax.random.key(1)}}, 'mutable=["batch_stats"]'),
        ({"mutable": ["batch_stats"]}, 'rngs={"dropout": key}'),
    ],
)
def test_training_apply_without_rngs_or_mutable_names_both_in_one_error(given, missing):
    # issue 13, defect 9: Flax's own errors came one at a time and named neither argument
    model = tiny_model("vgg11_bn")
    x = jnp.zeros((2, 32, 32, 1))
    variables = model.init(jax.random.key(0), x)
    needs = 'train=True on this VGG needs rngs={"dropout": key} and mutable=["batch_stats"] in model.apply'
    with pytest.raises(ConfigError) as caught:
        model.apply(variables, x, train=True, **given)
    assert str(caught.value) == f"{needs} (missing: {missing}); pass train=False to evaluate"
    assert isinstance(caught.value, ValueError)  # what a caller of apply with bad arguments catches
    logits, updates = model.apply(
        variables, x, train=True, rngs={"dropout": jax.random.key(1)}, mutable=["batch_stats"]
    )
    assert logits.shape == (2, 10) and set(updates) == {"batch_stats"}
    with pytest.raises(ConfigError, match=r'needs rngs=\{"dropout": key\} in model.apply \(missing'):
        tiny_model().apply(model.init(jax.random.key(0), x), x, train=True)  # no BatchNorm: rngs only


def test_dropout_layers_are_named_as_the_summary_names_them():
    model = tiny_model()
    x = jnp.zeros((1, 32, 32, 1))
    variables = model.init(jax.random.key(0), x)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    head = [name for name in state["intermediates"] if not name.startswith("block")]
    assert head == ["fc6", "dropout6", "fc7", "dropout7", "fc8", "__call__"]


def test_init_schemes_differ_and_unknown_is_clear():
    x = jnp.zeros((1, 32, 32, 1))
    k = {
        s: build_model("vgg11", width=0.125, init_scheme=s).init(jax.random.key(0), x)["params"]["fc7"][
            "kernel"
        ]
        for s in ("he", "torchvision", "lecun")
    }
    assert abs(float(jnp.std(k["torchvision"])) - 0.01) < 1e-3
    assert abs(float(jnp.std(k["he"])) - (2 / k["he"].shape[0]) ** 0.5) < 0.01
    with pytest.raises(ArchError, match="unknown init"):
        build_model("vgg11", width=0.125, init_scheme="xavier").init(jax.random.key(0), x)


def test_arch_must_be_an_arch():
    # VGG.arch is typed Arch: names and literals are resolved by build_model / get_arch first.
    with pytest.raises(ArchError, match=r"VGG needs an Arch, got 'vgg11'; use build_model\('vgg11'\)"):
        VGG("vgg11")
    with pytest.raises(ArchError, match="VGG needs an Arch"):
        VGG(((1, 8), (1, 16)))
    assert build_model("vgg11").arch == get_arch("vgg11")


def test_call_returns_logits_and_features_is_its_own_method():
    model = build_model("vgg11", width=0.125, hidden=16)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 1))
    variables = model.init(jax.random.key(0), x)
    logits = model.apply(variables, x)
    got = model.apply(variables, x, ("fc8", "pool5"), method=VGG.features)
    assert list(got) == ["fc8", "pool5"] and got["pool5"].shape == (2, 1, 1, 64)
    np.testing.assert_allclose(got["fc8"], logits, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="taps"):
        model.apply(variables, x, taps=("fc8",))


@pytest.mark.parametrize("impl", ["xla", "cpu_fast"])
def test_dilated_convs_are_lax_convs_with_rhs_dilation(impl):
    # Same parameter shapes as the undilated arch; conv1_2 is the dilated conv of relu1_1.
    dilated = VGG(get_arch("((2,8,3,(1,2)),(2,8,(3,5),3))"), head=None, impl=impl)
    plain = VGG(get_arch("((2,8),(2,8,(3,5)))"), head=None, impl=impl)
    x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
    variables = dilated.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, plain.init(jax.random.key(0), x))
    got = dilated.apply(variables, x, ["relu1_1", "conv1_2", "relu2_1", "conv2_2"], method=VGG.features)
    for prev, name, (b, i), d in [("relu1_1", "conv1_2", (1, 2), 2), ("relu2_1", "conv2_2", (2, 2), 3)]:
        conv = variables["params"][f"block{b}"][f"conv{i}"]
        k = conv["kernel"].shape[0]
        p = d * (k // 2)
        dn = ("NHWC", "HWIO", "NHWC")
        ref = jax.lax.conv_general_dilated(
            got[prev], conv["kernel"], (1, 1), [(p, p), (p, p)], rhs_dilation=(d, d), dimension_numbers=dn
        )
        ref = ref + conv["bias"].reshape(1, 1, 1, -1)
        assert got[name].shape == got[prev].shape
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5)
    undilated = plain.apply(variables, x, ["conv1_2"], method=VGG.features)["conv1_2"]
    assert float(jnp.abs(undilated - got["conv1_2"]).max()) > 1e-3  # the dilation is really applied
