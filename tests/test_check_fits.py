"""The one model factory (``from_config``) and the one "do these weights fit" check (``check_fits``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_config

from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError
from vggjax.nn.fit import check_fits, check_shapes, from_config

TINY = TrainConfig(arch="vgg11_bn", width=0.125, hidden=32, num_classes=7)  # channels 8, 16, 32, 64, 64
X = (1, 32, 32, 1)


def real_variables(config, shape=X):
    """Variables of ``from_config(config)`` as numpy arrays, as weights read from disk are."""
    model = from_config(config)
    return jax.tree.map(np.asarray, model.init(jax.random.key(0), np.zeros(shape, np.float32)))


@pytest.mark.parametrize(
    "arch, expected", [("vgg16", 138_357_544), ("vgg11_bn", 132_868_840), ("vgg19_bn", 143_678_248)]
)
def test_from_config_builds_torchvisions_models(arch, expected):
    config = TrainConfig(arch=arch, width=1.0, head="adaptive", channels=3, num_classes=1000, image_size=224)
    model = from_config(config)
    x = jax.ShapeDtypeStruct((1, 224, 224, 3), np.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    assert sum(p.size for p in jax.tree.leaves(params)) == expected


def test_from_config_takes_every_model_field():
    config = TrainConfig(
        arch="vgg11_bn",
        width=0.125,
        hidden=48,
        num_classes=7,
        head="adaptive",
        dropout_rate=0.25,
        init_scheme="torchvision",
        dtype="bfloat16",
        impl="xla",
        channels=3,
    )
    model = from_config(config)
    assert (model.num_classes, model.hidden, model.head, model.dropout_rate) == (7, 48, "adaptive", 0.25)
    assert (model.init_scheme, model.dtype, model.impl) == ("torchvision", jnp.dtype("bfloat16"), "xla")
    # flax's BatchNorm subtracts its float32 statistics from bfloat16 activations, which the
    # strict dtype promotion of the test configuration refuses; flax's own mix, not ours
    with jax.numpy_dtype_promotion("standard"):
        variables = real_variables(config, (1, 32, 32, 3))
    assert variables["params"]["block1"]["conv1"]["kernel"].shape == (3, 3, 3, 8)
    assert variables["params"]["fc6"]["kernel"].shape == (64 * 7 * 7, 48)  # the adaptive head's 7x7
    assert variables["params"]["fc8"]["kernel"].shape == (48, 7)
    assert variables["batch_stats"]["block5"]["bn2"]["var"].shape == (64,)


def test_variables_of_the_same_config_fit():
    model = from_config(TINY)
    check_fits(model, real_variables(TINY), X)
    plain = TrainConfig(arch="vgg11", width=0.125, hidden=32)
    # a model without BatchNorm: an empty batch_stats (as train.py saves it) counts as absent
    check_fits(from_config(plain), {**real_variables(plain), "batch_stats": {}}, X)


def test_another_shape_names_the_first_path_and_both_shapes():
    wide = real_variables(tiny_config(arch="vgg11_bn", num_classes=7))
    with pytest.raises(CheckpointError) as e:
        check_fits(from_config(TINY), wide, X)
    assert str(e.value) == "params/fc6/bias: the weights have shape [64] but the model needs [32]"


def test_the_input_shape_sets_the_flatten_heads_fc6():
    config = TrainConfig(arch="vgg11", width=0.125, hidden=32, head="flatten")
    variables = real_variables(config)  # 32x32: a 1x1x64 map into fc6
    check_fits(from_config(config), variables, X)
    with pytest.raises(CheckpointError) as e:
        check_fits(from_config(config), variables, (1, 64, 64, 1), what="the weights w", hint="; fix it")
    assert (
        str(e.value)
        == "params/fc6/kernel: the weights w have shape [64, 32] but the model needs [256, 32]; fix it"
    )


def test_a_missing_or_extra_variable_is_refused():
    variables = real_variables(TINY)
    fewer = {**variables, "params": {k: v for k, v in variables["params"].items() if k != "fc7"}}
    with pytest.raises(CheckpointError) as e:
        check_fits(from_config(TINY), fewer, X)
    assert str(e.value) == "the weights have no params/fc7/bias, which the model needs"
    more = {**variables, "params": {**variables["params"], "fc9": {"bias": np.zeros(3, np.float32)}}}
    with pytest.raises(CheckpointError) as e:
        check_fits(from_config(TINY), more, X)
    assert str(e.value) == "the weights have params/fc9/bias, which the model does not have"


def test_plain_weights_do_not_fit_a_batchnorm_model():
    plain = real_variables(TrainConfig(arch="vgg11", width=0.125, hidden=32, num_classes=7))
    with pytest.raises(CheckpointError) as e:
        check_fits(from_config(TINY), plain, X)
    assert str(e.value) == "the weights have no batch_stats/block1/bn1/mean, which the model needs"


def test_check_shapes_compares_any_two_trees():
    a = {"params": {"fc8": {"kernel": np.zeros((4, 3)), "bias": np.zeros(3)}}}
    check_shapes(a, jax.tree.map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), a))
    b = {"params": {"fc8": {"kernel": np.zeros((4, 5)), "bias": np.zeros(3)}}}
    with pytest.raises(CheckpointError, match=r"^params/fc8/kernel: the x have shape \[4, 3\] but the model"):
        check_shapes(a, b, what="the x")
