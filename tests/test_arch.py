import subprocess
import sys

import pytest

from vggjax.arch import (
    D2L_THIN,
    Arch,
    Block,
    feature_names,
    get_arch,
    head_layers,
    is_layer_name,
    layers,
    names,
    scale_width,
)
from vggjax.arch.summary import summarize
from vggjax.errors import ArchError


def test_thin_vgg11_is_the_seed_tuple():
    assert (
        get_arch("vgg11", width=0.25).to_tuple()
        == D2L_THIN
        == ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))
    )


def test_paper_configs():
    assert get_arch("vgg11").to_tuple() == ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
    assert get_arch("B").to_tuple() == ((2, 64), (2, 128), (2, 256), (2, 512), (2, 512))
    assert get_arch("vgg16").to_tuple() == ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
    assert get_arch("vgg19").to_tuple() == ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
    c = get_arch("C")
    assert c.blocks[2] == Block(256, (3, 3, 1))
    assert c.to_tuple()[4] == (3, 512, (3, 3, 1))
    assert get_arch("A-LRN").lrn and not get_arch("A").lrn
    assert get_arch("vgg16_bn").batch_norm and not get_arch("vgg16").batch_norm


@pytest.mark.parametrize("name", names())
def test_every_name_round_trips_through_its_literal(name):
    arch = get_arch(name, width=0.5)
    assert get_arch(str(arch)).blocks == arch.blocks


def test_literal_forms():
    assert get_arch("((1,16),(1,32),(2,64),(2,128),(2,128))").to_tuple() == D2L_THIN
    assert get_arch([[2, 8, 1]]).blocks == (Block(8, (1, 1)),)
    assert get_arch("((2, 8, (3, 1)),)").blocks == (Block(8, (3, 1)),)
    assert get_arch("VGG16").name == "vgg16"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("((1,16),(1,32)", "cannot parse"),
        ("()", "non-empty"),
        ("((0,16),)", "num_convs must be a positive integer"),
        ("((1,-4),)", "channels must be a positive integer"),
        ("((1,2.5),)", "channels must be a positive integer"),
        ("((True,8),)", "num_convs must be a positive integer"),
        ("((1,8,2),)", "odd positive"),
        ("((2,8,(3,3,3)),)", "tuple of 2 ints"),
        ("((1,),)", "expected (num_convs, channels)"),
        ("((1,8,3,1,1),)", "or (num_convs, channels, kernels, dilations)"),
        ("((2,8,3,0),)", "dilations must be positive integers (1: no dilation), got 0"),
        ("((2,8,3,-2),)", "dilations must be positive integers (1: no dilation), got -2"),
        ("((2,8,3,1.5),)", "dilations must be an int or a tuple of 2 ints, got 1.5"),
        ("((2,8,3,(1,True)),)", "dilations must be positive integers (1: no dilation), got True"),
        ("((2,8,3,(1,2,3)),)", "dilations must be an int or a tuple of 2 ints, got (1, 2, 3)"),
        ("((2,8,3,'2'),)", "dilations must be an int or a tuple of 2 ints, got '2'"),
        ("vgg12", "unknown arch 'vgg12'"),
        ("__import__('os').system('true')", "unknown arch"),
        ("(__import__('os'),)", "cannot parse"),
    ],
)
def test_bad_specs_give_clear_errors(spec, message):
    with pytest.raises(ArchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        get_arch(spec)


@pytest.mark.parametrize("width", [0, -1, float("nan")])
def test_bad_width(width):
    with pytest.raises(ArchError, match="width multiplier must be > 0"):
        scale_width(get_arch("vgg11").blocks, width)


def test_infinite_width_is_an_arch_error_not_an_overflow():
    with pytest.raises(ArchError, match=r"width multiplier must be finite, got inf; 1.0 keeps"):
        scale_width(get_arch("vgg11").blocks, float("inf"))


def test_layers_use_vgg_names():
    names_ = [layer.name for layer in layers(get_arch("vgg11_bn"))]
    assert names_[:5] == ["conv1_1", "bn1_1", "relu1_1", "pool1", "conv2_1"]
    assert names_[-1] == "pool5"
    assert all(is_layer_name(n) for n in names_)
    assert Arch(get_arch("vgg16").blocks).min_input_size == 32


def test_arch_summary_receptive_field_and_their_cli_never_load_jax():
    """``vggjax summary`` and ``vggjax receptive-field`` need no JAX, so they must not pay its start-up."""
    code = (
        "import sys, contextlib, io\n"
        "import vggjax.arch, vggjax.arch.summary, vggjax.arch.receptive_field, vggjax.config\n"
        "from vggjax.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['receptive-field', '--arch', 'vgg16']) == 0\n"
        "    assert main(['summary', '--arch', 'vgg16', '--head', 'adaptive']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'jaxlib')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_layers_carry_torchvisions_feature_indices():
    # torchvision's vgg16 / vgg16_bn `features` Sequentials: conv and pool positions.
    def where(name, kind):
        return [int(x.torchvision.split(".")[1]) for x in layers(get_arch(name)) if x.kind == kind]

    assert where("vgg16", "conv") == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert where("vgg16", "pool") == [4, 9, 16, 23, 30]
    assert where("vgg16_bn", "conv") == [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    assert where("vgg16_bn", "bn") == [1, 4, 8, 11, 15, 18, 21, 25, 28, 31, 35, 38, 41]
    assert where("vgg16_bn", "pool") == [6, 13, 23, 33, 43]
    lrn = layers(get_arch("A-LRN"))  # torchvision has no LRN module
    assert [(x.name, x.torchvision) for x in lrn[:4]] == [
        ("conv1_1", "features.0"),
        ("relu1_1", "features.1"),
        ("lrn", None),
        ("pool1", "features.2"),
    ]
    bn = {x.name: x.path for x in layers(get_arch("vgg16_bn"))}
    assert bn["conv3_2"] == ("block3", "conv2") and bn["bn5_3"] == ("block5", "bn3") and bn["relu1_1"] == ()


def test_head_layers_are_torchvisions_classifier():
    arch = get_arch("vgg16")
    head = layers(arch, head="adaptive", hidden=4096, num_classes=1000)[-9:]
    assert [(x.name, x.kind, x.channels, x.torchvision) for x in head] == [
        ("avgpool", "avgpool", 512, "avgpool"),
        ("flatten", "flatten", 512, None),
        ("fc6", "dense", 4096, "classifier.0"),
        ("relu6", "relu", 4096, "classifier.1"),
        ("dropout6", "dropout", 4096, "classifier.2"),
        ("fc7", "dense", 4096, "classifier.3"),
        ("relu7", "relu", 4096, "classifier.4"),
        ("dropout7", "dropout", 4096, "classifier.5"),
        ("fc8", "dense", 1000, "classifier.6"),
    ]
    assert [x.path for x in head if x.kind == "dense"] == [("fc6",), ("fc7",), ("fc8",)]
    flatten = head_layers(arch, head="flatten", hidden=64, num_classes=10)
    assert [x.name for x in flatten][:2] == ["flatten", "fc6"] and flatten[-1].channels == 10
    assert head_layers(arch, head=None) == [] and layers(arch)[-1].name == "pool5"
    assert [x.name for x in head_layers(arch, head=None, pooling="max")] == ["global_maxpool"]
    names_ = feature_names(arch)
    assert names_[-6:] == ["pool5", "fc6", "relu6", "fc7", "relu7", "fc8"]
    assert feature_names(arch, head=False)[-1] == "pool5"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"head": "dense"}, "unknown head 'dense'"),
        ({"head": None, "pooling": "sum"}, "unknown pooling 'sum'"),
    ],
)
def test_unknown_head_or_pooling(kwargs, message):
    with pytest.raises(ArchError, match=message):
        layers(get_arch("vgg11"), **kwargs)


@pytest.mark.parametrize(
    "literal, shortest",
    [
        ("((2,8,3,1),)", ((2, 8),)),  # dilation 1 everywhere is the plain form
        ("((2,8,1,(1,1)),)", ((2, 8, 1),)),
        ("((2,8,3,2),)", ((2, 8, 3, 2),)),
        ("((2,8,5,(2,2)),)", ((2, 8, 5, 2),)),
        ("((3,64,3,(1,2,3)),)", ((3, 64, 3, (1, 2, 3)),)),
        ("((2,8,(3,1),(2,5)),(1,16))", ((2, 8, (3, 1), (2, 5)), (1, 16))),
    ],
)
def test_dilated_blocks_print_in_the_shortest_form_and_parse_back(literal, shortest):
    arch = get_arch(literal)
    assert arch.to_tuple() == shortest
    assert get_arch(str(arch)).blocks == arch.blocks == get_arch(shortest).blocks
    assert get_arch(literal, width=0.5).blocks[0].dilations == arch.blocks[0].dilations  # width keeps them


def test_block_dilations_default_to_one_and_old_forms_are_unchanged():
    assert Block(8, (3, 1)).dilations == (1, 1) and Block(8, (3, 1)) == Block(8, (3, 1), (1, 1))
    assert get_arch("((3,64,3,(1,2,3)),)").blocks == (Block(64, (3, 3, 3), (1, 2, 3)),)
    assert [b.dilations for b in get_arch("C").blocks] == [(1, 1), (1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1)]
    assert str(get_arch("C", width=0.25)) == "((2,16),(2,32),(3,64,(3,3,1)),(3,128,(3,3,1)),(3,128,(3,3,1)))"
    with pytest.raises(ArchError, match=r"a block of 2 convs needs 2 dilations, got \(1, 2, 3\)"):
        Block(8, (3, 3), (1, 2, 3))


def test_dilated_convs_are_padded_to_keep_their_size():
    convs = [x for x in layers(get_arch("((3,8,(3,5,1),(2,3,4)),)")) if x.kind == "conv"]
    assert [(x.kernel, x.dilation, x.padding) for x in convs] == [(3, 2, 2), (5, 3, 6), (1, 4, 0)]
    assert {x.dilation for x in layers(get_arch("((3,8,3,2),)"), head="flatten") if x.kind != "conv"} == {1}


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            "((100000000,16),)",
            "block 1 (100000000, 16): num_convs 100,000,000 is over the limit of 64 (per block; "
            "VGG-19 has 4); use fewer convs per block",
        ),
        (
            str(((64, 8),) * 5),
            "arch blocks 1-5: convs in all 320 is over the limit of 256 (VGG-19 has 16); "
            "use fewer blocks or fewer convs per block",
        ),
        (
            "((1,100000),)",
            "block 1 (1, 100000): channels 100,000 is over the limit of 16,384 (32x VGG's widest, 512); "
            "use fewer channels or a smaller width",
        ),
        (
            "((1,8,101),)",
            "block 1 (1, 8, 101): kernel size 101 is over the limit of 99 (over 3x RepLKNet's 31); "
            "use a smaller kernel",
        ),
        (
            "((2,8,3,(1,1000)),)",
            "block 1 (2, 8, 3, (1, 1000)): dilation 1,000 is over the limit of 256 (a 3x3 conv then "
            "spans 513 pixels); use a smaller dilation",
        ),
    ],
)
def test_arch_sizes_are_bounded_in_one_line(spec, message):
    with pytest.raises(ArchError) as e:
        get_arch(spec)
    assert str(e.value) == message


def test_bounds_themselves_are_accepted():
    arch = get_arch(str(((64, 8),) * 3 + ((63, 8), (1, 16384, 99, 256))))
    assert sum(b.num_convs for b in arch.blocks) == 256 and arch.out_channels == 16384


def test_width_is_bounded_by_the_channels_it_gives():
    assert get_arch("vgg11", width=32).out_channels == 16384
    for width, message in [
        (1e9, "width multiplier 1e+09 gives block 4 512,000,000,000 channels, over the limit of 16,384"),
        (32.01, "width multiplier 32.01 gives block 4 16,389 channels, over the limit of 16,384"),
    ]:
        with pytest.raises(ArchError) as e:
            get_arch("vgg11", width=width)
        assert str(e.value) == f"{message} (32x VGG's widest, 512); use a width of at most 32"
    with pytest.raises(ArchError, match=r"gives block 1 20,000 channels, .*; use a width of at most 8.192$"):
        get_arch("((1,2000),)", width=10)


@pytest.mark.parametrize("name, paper", [("vgg11_28", "vgg11"), ("VGG16_28_bn", "vgg16_bn")])
def test_native_28_variants_are_the_first_four_blocks(name, paper):
    arch, full = get_arch(name), get_arch(paper)
    assert arch.blocks == full.blocks[:4] and arch.batch_norm == full.batch_norm
    assert arch.name == name.lower() and arch.min_input_size == 16


def test_native_28_variant_pools_28_to_1():
    arch = get_arch("vgg11_28", width=0.25)
    rows = {r.name: r.output_shape for r in summarize(arch, input_size=28, channels=1, detail=True)}
    assert [rows[f"pool{i}"][1:3] for i in range(1, 5)] == [(14, 14), (7, 7), (3, 3), (1, 1)]
    assert rows["flatten"] == (1, 128) and "pool5" not in rows
