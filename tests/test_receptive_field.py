import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from tiny import tiny_arch

from vggjax.arch import get_arch, names
from vggjax.arch.receptive_field import receptive_fields
from vggjax.cli import main
from vggjax.nn.features import features
from vggjax.nn.vgg import VGG


def by_name(arch, **kw):
    return {f.name: f for f in receptive_fields(get_arch(arch), **kw)}


def test_vgg16_pool5_is_212():
    f = by_name("vgg16")["pool5"]
    assert (f.receptive_field, f.jump, f.start) == (212, 32, 15.5)


def test_dilations_1_2_3_give_fields_3_7_13():
    # r_l = r_{l-1} + (k_l - 1)·d_l·j_{l-1}; a tool that ignores dilation says 3, 5, 7.
    fields = receptive_fields(get_arch("((3,8,3,(1,2,3)),)"))
    assert [(f.name, f.dilation, f.receptive_field, f.start) for f in fields] == [
        ("conv1_1", 1, 3, 0),
        ("conv1_2", 2, 7, 0),
        ("conv1_3", 3, 13, 0),
        ("pool1", 1, 14, 0.5),
    ]
    # After a pool (jump 2) a conv dilated 2 adds (3 - 1)·2·2 = 8 pixels; a dilated 1×1 adds none.
    later = by_name("((1,8),(3,8,(3,1,3),(2,5,1)))")
    assert [later[n].receptive_field for n in ("pool1", "conv2_1", "conv2_2", "conv2_3")] == [4, 12, 12, 16]


def test_stride_one_closed_form():
    # The d2l chapter's r_L = 1 + sum(k_l - 1) while every stride is 1.
    fields = receptive_fields(get_arch("((4,8,(3,5,1,3)),)"))
    assert [f.receptive_field for f in fields[:4]] == [1 + 2, 1 + 2 + 4, 1 + 2 + 4 + 0, 1 + 2 + 4 + 0 + 2]
    assert by_name("vgg16")["conv1_2"].receptive_field == 5


@pytest.mark.parametrize("arch", names())
def test_fields_never_shrink(arch):
    fields = receptive_fields(get_arch(arch), pointwise=True)
    assert len(fields) == len({f.name for f in fields})
    for a, b in zip(fields, fields[1:], strict=False):
        assert b.receptive_field >= a.receptive_field and b.jump >= a.jump and b.start >= a.start


def test_pointwise_layers_repeat_the_conv():
    fields = by_name("vgg11_bn", pointwise=True)
    conv, bn = fields["conv3_2"], fields["bn3_2"]
    assert (bn.kind, bn.kernel, bn.stride) == ("bn", 1, 1)
    assert (
        (bn.receptive_field, bn.jump, bn.start)
        == (conv.receptive_field, conv.jump, conv.start)
        == (26, 4, 1.5)
    )
    assert "relu3_2" not in by_name("vgg11_bn")


def probe(arch):
    """A linear single-channel stand-in with the arch's geometry: (name, fn) per layer.

    Convs are all-ones k×k kernels with dilation d and padding d·(k//2), pools are 2×2
    stride-2 window SUMS: a max-pool can pick any pixel of its window, and the sum's
    gradient reaches all of them (a max-pool's reaches only the argmax).
    """
    stages = []
    for b, block in enumerate(arch.blocks, 1):
        for i, (k, d) in enumerate(zip(block.kernels, block.dilations, strict=True), 1):

            def conv(x, k=k, d=d):
                p = d * (k // 2)
                w = jnp.ones((1, 1, k, k))
                return lax.conv_general_dilated(x, w, (1, 1), [(p, p), (p, p)], rhs_dilation=(d, d))

            stages.append((f"conv{b}_{i}", conv))
        stages.append(
            (f"pool{b}", lambda x: lax.reduce_window(x, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"))
        )
    return stages


def support(grad):
    """First and last row and column where the gradient is non-zero."""
    rows, cols = np.flatnonzero(np.any(grad != 0, axis=1)), np.flatnonzero(np.any(grad != 0, axis=0))
    return (rows[0], rows[-1]), (cols[0], cols[-1])


DILATED = "((2,8,3,(1,2)),(3,8,3,(1,2,3)),(2,8,(3,1),(2,5)),(1,8,5,2))"


@pytest.mark.parametrize("arch", ["vgg11", "vgg16", "C", "vgg11_28", DILATED])
def test_closed_form_matches_gradient_measurement(arch):
    size = 256
    spec = get_arch(arch)
    fields = by_name(arch)
    stages = probe(spec)
    for depth, (name, _) in enumerate(stages, 1):

        def centre_unit(image, depth=depth):
            x = image[None, None]
            for _, fn in stages[:depth]:
                x = fn(x)
            c = x.shape[-1] // 2
            return x[0, 0, c, c], c

        c = centre_unit(jnp.zeros((size, size)))[1]
        grad = np.asarray(jax.grad(lambda img: centre_unit(img)[0])(jnp.ones((size, size))))
        lo, hi = fields[name].span(c)
        assert 0 <= lo and hi <= size - 1, (name, "field must fit in the input to be measured whole")
        assert support(grad) == ((lo, hi), (lo, hi)), name
        assert hi - lo + 1 == fields[name].receptive_field
    if arch == "C":  # the 1×1 convs add nothing to the field
        assert fields["conv3_3"].receptive_field == fields["conv3_2"].receptive_field == 32


def positive_variables(model, x):
    """Uniform(0.1, 1) weights of the model's shapes (no ReLU dead zones with positive inputs)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: rng.uniform(0.1, 1.0, s.shape).astype(np.float32), shapes)


@pytest.mark.parametrize(
    "arch, width, block1, taps",
    [
        ("vgg16", 0.125, ((2, 8),), ("conv1_1", "relu1_2")),
        ("((3,8,3,(1,2,3)),(1,8))", 1.0, ((3, 8, 3, (1, 2, 3)),), ("conv1_1", "relu1_2", "relu1_3")),
    ],
)
def test_real_model_conv_layers_match_exactly(arch, width, block1, taps):
    # Positive weights and input: every ReLU passes, so the support is the whole field.
    # Only block1's parameters are needed; a one-block VGG has the same paths.
    arch = get_arch(arch, width=width)
    model = VGG(arch, head=None)
    x = jax.random.uniform(jax.random.key(1), (1, 32, 32, 1), minval=0.1)
    variables = positive_variables(VGG(get_arch(block1), head=None), x)
    fields = {f.name: f for f in receptive_fields(arch)}
    for name in taps:
        grad = jax.jit(
            jax.grad(lambda x, name=name: features(model, variables, x, [name])[name][0, 16, 16, 0])
        )(x)
        field = fields[name.replace("relu", "conv")]
        lo, hi = field.span(16)
        assert support(np.asarray(grad[0, :, :, 0])) == ((lo, hi), (lo, hi)), name
        assert hi - lo + 1 == field.receptive_field


def test_real_max_pool_gradient_stays_inside_the_field():
    # A real max-pool routes the gradient through one pixel per window: a subset of the field.
    model = VGG(tiny_arch(), head=None)
    x = jax.random.uniform(jax.random.key(1), (1, 160, 160, 1), minval=0.1)
    variables = positive_variables(model, x)
    grad = jax.jit(jax.grad(lambda x: features(model, variables, x, ["pool5"])["pool5"][0, 2, 2, 0]))(x)
    (r0, r1), (c0, c1) = support(np.asarray(grad[0, :, :, 0]))
    lo, hi = by_name("vgg11")["pool5"].span(2)
    assert (lo, hi) == (79.5 - 74.5, 79.5 + 74.5)  # centre 15.5 + 2·32, half (150 - 1) / 2
    assert lo <= r0 <= r1 <= hi and lo <= c0 <= c1 <= hi


def test_cli_json_and_table(capsys):
    assert main(["receptive-field", "--arch", "vgg16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    keys = {"name", "kind", "kernel", "stride", "dilation", "receptive_field", "jump", "start"}
    assert set(doc["layers"][0]) == keys
    assert doc["layers"][-1] == {
        "name": "pool5",
        "kind": "pool",
        "kernel": 2,
        "stride": 2,
        "dilation": 1,
        "receptive_field": 212,
        "jump": 32,
        "start": 15.5,
    }
    assert len(doc["layers"]) == 13 + 5
    assert main(["receptive-field", "--arch", "C", "--width", "0.25", "--all"]) == 0
    table = capsys.readouterr().out
    assert "relu3_3" in table and table.splitlines()[-1].split() == [
        "pool5",
        "pool",
        "2",
        "2",
        "1",
        "156",
        "32",
        "15.5",
    ]
    assert main(["receptive-field", "--arch", "((3,8,3,(1,2,3)),)"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["layer", "kind", "kernel", "stride", "dilation", "field", "jump", "start"]
    assert [line.split() for line in table[3:5]] == [
        ["conv1_2", "conv", "3", "1", "2", "7", "1", "0"],
        ["conv1_3", "conv", "3", "1", "3", "13", "1", "0"],
    ]
    assert main(["receptive-field", "--arch", "((3,8,3,(1,2,3)),)", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    fields = [(x["dilation"], x["receptive_field"]) for x in doc["layers"]]
    assert fields == [(1, 3), (2, 7), (3, 13), (1, 14)]


def test_cli_bad_arch_exits_2(capsys):
    assert main(["receptive-field", "--arch", "vgg17"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown arch 'vgg17'") and len(err.strip().splitlines()) == 1
