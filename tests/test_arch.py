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
