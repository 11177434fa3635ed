import json
import re

import jax
import jax.numpy as jnp
import pytest

from vggjax.arch import AdaptiveUpsamplingWarning, adaptive_upsampling, get_arch, warn_if_upsampling
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


def test_table_columns_grow_with_their_contents(capsys):
    # Issue 13, 5: the columns had fixed widths, so big numbers ran into each other
    # (`…826,3787,398…`). Paper channels (512) on a 65536-px input: 22-character shapes,
    # 21-digit params (fc6) and 26-digit MACs (conv1_2).
    argv = ["summary", "--arch", "((2,512),)", "--input-size", "65536", "--detail"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], [line for line in lines[2:] if not line.startswith("-")]
    shape_at, params_end = header.index("output shape"), header.index("params") + len("params")
    cells = re.compile(r"(\S+) +(\([\d, ]*\))? +([\d,]+) +([\d,]+)")
    seen = {}
    for line in rows:
        m = cells.fullmatch(line)
        assert m, line  # four columns, at least one space between each
        if m[2]:
            assert m.start(2) == shape_at, line
        assert m.end(3) == params_end and m.end(4) == len(header), line  # right-aligned
        seen[m[1]] = (m[3], m[4])
    assert seen["conv1_2"][1] == f"{65536**2 * 9 * 512 * 512:,}"
    assert seen["fc6"][0] == f"{32768**2 * 512 * 4096 + 4096:,}"
    every = summarize(get_arch("((2,512),)"), input_size=65536, channels=1, num_classes=10)
    assert seen["total"] == (f"{totals(every)['total_params']:,}", f"{totals(every)['total_macs']:,}")


def test_default_table_layout_is_unchanged(capsys):
    assert main(["summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{'layer':<14}{'output shape':<22}{'params':>14}{'MACs':>18}"
    assert lines[2] == f"{'block1':<14}{'(1, 112, 112, 64)':<22}{640:>14,}{224 * 224 * 9 * 64:>18,}"


@pytest.mark.parametrize(
    "size, side, copies", [(32, 1, "49 copies of each value"), (64, 2, "49 values from 4")]
)
def test_adaptive_head_warns_when_it_enlarges_the_last_map(size, side, copies, capsys):
    # Issue 13, 6: 1x1 pool5 silently became 7x7, a 25,088-wide fc6 where 512 would do.
    assert main(["summary", "--head", "adaptive", "--input-size", str(size)]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"warning: the adaptive pool enlarges pool5's {side}x{side} map to 7x7 ({copies}; fc6 takes "
        f"25,088 inputs where {side * side * 512:,} would do); use --head flatten for inputs this small\n"
    )
    assert "fc6" in captured.out  # the table is still printed
    with pytest.warns(AdaptiveUpsamplingWarning, match=f"{side}x{side} map to 7x7"):
        warn_if_upsampling(get_arch("vgg11"), size, "adaptive")


@pytest.mark.parametrize("argv", [["--head", "adaptive", "--input-size", "224"], ["--input-size", "32"]])
def test_no_warning_when_the_map_is_not_enlarged(argv, capsys):
    assert main(["summary", *argv]) == 0
    assert capsys.readouterr().err == ""
    assert adaptive_upsampling(get_arch("vgg11"), 224) is None
    assert "6x6 map to 7x7 (49 values from 36;" in adaptive_upsampling(get_arch("vgg11"), 223)


@pytest.mark.parametrize("head", ["flatten", "adaptive"])
def test_pooling_with_a_head_is_an_error_in_the_model_too(head):
    # Issue 13, 8: the pooling was silently ignored; summary and model share head_layers.
    with pytest.raises(ArchError, match=f"the '{head}' head has none; choose --head none"):
        summarize(get_arch("vgg11"), input_size=32, head=head, pooling="avg")
    with pytest.raises(ArchError, match="choose --head none"):
        VGG(get_arch("vgg11", width=0.125), head=head, pooling="max").init(
            jax.random.key(0), jnp.zeros((1, 32, 32, 1), jnp.float32)
        )
