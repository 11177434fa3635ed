import json

import jax
import jax.numpy as jnp
import pytest

from vggjax.arch import get_arch
from vggjax.arch.summary import summarize, to_json, totals
from vggjax.cli import main
from vggjax.errors import ArchError, ConfigError
from vggjax.nn.vgg import VGG


def test_seed_summary_vgg11_224_one_channel():
    rows = summarize(get_arch("vgg11"), input_size=224, channels=1, num_classes=10)
    assert [(r.name, r.output_shape) for r in rows] == [
        ("block1", (1, 112, 112, 64)),
        ("block2", (1, 56, 56, 128)),
        ("block3", (1, 28, 28, 256)),
        ("block4", (1, 14, 14, 512)),
        ("block5", (1, 7, 7, 512)),
        ("flatten", (1, 25088)),
        ("fc6", (1, 4096)),
        ("relu6", (1, 4096)),
        ("dropout6", (1, 4096)),
        ("fc7", (1, 4096)),
        ("relu7", (1, 4096)),
        ("dropout7", (1, 4096)),
        ("fc8", (1, 10)),
    ]
    # By hand: conv params k*k*cin*cout + cout; dense in*out + out.
    assert rows[0].params == 9 * 1 * 64 + 64
    assert rows[2].params == (9 * 128 * 256 + 256) + (9 * 256 * 256 + 256)
    assert rows[6].params == 25088 * 4096 + 4096
    assert rows[0].macs == 224 * 224 * 9 * 64
    assert rows[2].macs == 56 * 56 * 9 * (128 * 256 + 256 * 256)


DILATED = "((1,64),(2,128,3,(1,2)),(2,256,3,2),(2,512,(3,1),(2,4)),(2,512))"


@pytest.mark.parametrize("name", ["vgg11", "vgg13_bn", "C", "A-LRN", DILATED])
@pytest.mark.parametrize("size, channels, head", [(32, 1, "flatten"), (64, 3, "adaptive")])
def test_params_equal_the_model(name, size, channels, head):
    arch = get_arch(name, width=0.25)
    rows = summarize(arch, input_size=size, channels=channels, num_classes=10, head=head, hidden=64)
    model = VGG(arch, num_classes=10, head=head, hidden=64)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, channels))))
    assert totals(rows)["total_params"] == sum(p.size for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("config, millions", [("A", 133), ("B", 133), ("C", 134), ("D", 138), ("E", 144)])
def test_paper_table2_millions(config, millions):
    rows = summarize(get_arch(config), input_size=224, channels=3, num_classes=1000, head="adaptive")
    assert round(totals(rows)["total_params"] / 1e6) == millions


def test_vgg16_macs_by_hand():
    # VGG-16 at 224: sum over convs of H*W*9*cin*cout, plus the dense layers.
    convs = [(224, 3, 64), (224, 64, 64), (112, 64, 128), (112, 128, 128)]
    convs += [(56, 128, 256)] + [(56, 256, 256)] * 2 + [(28, 256, 512)] + [(28, 512, 512)] * 2
    convs += [(14, 512, 512)] * 3
    expected = sum(s * s * 9 * a * b for s, a, b in convs) + 25088 * 4096 + 4096 * 4096 + 4096 * 1000
    rows = summarize(get_arch("vgg16"), input_size=224, channels=3, num_classes=1000)
    assert totals(rows)["total_macs"] == expected == 15_470_264_320


def test_detail_rows_and_json():
    rows = summarize(get_arch("vgg11_bn", width=0.25), input_size=32, channels=1, detail=True)
    names = [r.name for r in rows]
    assert names[:4] == ["conv1_1", "bn1_1", "relu1_1", "pool1"] and "pool5" in names
    doc = json.loads(to_json(rows))
    assert doc["total_params"] == sum(layer["params"] for layer in doc["layers"])
    assert doc["layers"][3]["output_shape"] == [1, 16, 16, 16]


def test_too_small():
    with pytest.raises(ArchError, match="at least 32x32"):
        summarize(get_arch("vgg11"), input_size=28)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channels": 0}, "--channels must be a positive integer, got 0"),
        ({"channels": -3}, "--channels must be a positive integer, got -3"),
        ({"num_classes": 0}, "--num-classes must be a positive integer, got 0"),
        ({"num_classes": -4}, "--num-classes must be a positive integer, got -4"),
        ({"hidden": 0}, "--hidden must be a positive integer, got 0"),
    ],
)
def test_non_positive_sizes_are_errors_not_negative_counts(kwargs, message):
    # `vggjax summary --num-classes -4` used to print fc8 with -16,388 parameters and exit 0
    with pytest.raises(ConfigError, match=message):
        summarize(get_arch("vgg11"), input_size=32, **kwargs)


def test_summary_cli_non_positive_channels_is_one_line_exit_2(capsys):
    assert main(["summary", "--channels", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: --channels must be a positive integer, got 0\n"
    assert captured.out == ""


def test_dilation_changes_no_number_and_is_shown():
    plain, dilated = (
        get_arch("((1,64),(2,128),(2,256),(2,512,(3,1)),(2,512))", width=0.25),
        get_arch(DILATED, width=0.25),
    )
    for detail in (False, True):
        a = summarize(plain, input_size=32, channels=1, detail=detail)
        b = summarize(dilated, input_size=32, channels=1, detail=detail)
        assert [(r.name, r.output_shape, r.params, r.macs) for r in a] == [
            (r.name, r.output_shape, r.params, r.macs) for r in b
        ]
    rows = {r.name: r for r in summarize(dilated, input_size=32, detail=True)}
    assert (rows["conv2_2"].dilations, rows["conv2_2"].label) == ((2,), "conv2_2 d2")
    assert (rows["conv1_1"].label, rows["relu2_2"].dilations, rows["pool2"].label) == ("conv1_1", (), "pool2")
    blocks = {r.name: r for r in summarize(dilated, input_size=32)}
    assert [blocks[f"block{b}"].label for b in range(1, 6)] == [
        "block1",
        "block2 d1,2",
        "block3 d2,2",
        "block4 d2,4",
        "block5",
    ]
    doc = json.loads(to_json(summarize(dilated, input_size=32)))
    assert [x["dilations"] for x in doc["layers"][:5]] == [[1], [1, 2], [2, 2], [2, 4], [1, 1]]


def test_dilated_summary_shapes_equal_the_model(capsys):
    arch = get_arch(DILATED, width=0.125)
    model = VGG(arch, num_classes=10, hidden=16)
    x = jnp.zeros((1, 32, 32, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    names = ["conv2_2", "relu3_1", "conv4_2", "pool5"]
    got = jax.eval_shape(lambda v: model.apply(v, x, names, method=VGG.features), variables)
    rows = {r.name: r for r in summarize(arch, input_size=32, detail=True)}
    assert {n: tuple(a.shape) for n, a in got.items()} == {n: rows[n].output_shape for n in names}
    assert main(["summary", "--arch", DILATED, "--width", "0.125", "--input-size", "32"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[3].startswith("block2 d1,2 ") and table[6].startswith("block5 ")
