import json

import jax
import numpy as np
import pytest
import torch
from tiny import TINY, tiny_arch, tiny_config
from torch_vgg import make_torch_vgg

from vggjax.cli import main
from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError, ConfigError
from vggjax.interop import pretrained
from vggjax.interop.state_dict import HeadShape
from vggjax.interop.torchfile import read_state_dict
from vggjax.preprocessing import PREPROCESSING
from vggjax.run.folder import RunDir
from vggjax.run.resume import check_same_model, inherit_model


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small torchvision-layout vgg11_bn (20 classes) saved as .pth, and its folder."""
    root = tmp_path_factory.mktemp("small")
    module = make_torch_vgg("vgg11_bn", **TINY, num_classes=20)
    torch.save(module.state_dict(), root / "small.pth")
    pretrained.convert_torchvision(
        root / "small.pth", "vgg11_bn", root / "run", width=0.125, log=lambda _: None
    )
    return module, root


def random_variables(model, channels, seed=0):
    shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 32, 32, channels), np.float32))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def test_convert_writes_a_run_folder_describing_the_model(small):
    module, root = small
    config = json.loads((root / "run" / "config.json").read_text())
    assert config["arch"] == "vgg11_bn" and config["width"] == 0.125 and config["head"] == "adaptive"
    assert (config["channels"], config["num_classes"], config["hidden"]) == (3, 20, 64)
    assert config["dataset"] == "imagenet" and config["image_size"] == 224
    # The preprocessing the weights expect is recorded, as timm's pretrained cfg does.
    assert config["preprocessing"] == {
        "channels": 3,
        "size": 224,
        "resize": 256,
        "invert": False,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    loaded, variables = RunDir(root / "run").config(), RunDir(root / "run").read_variables()
    assert loaded.num_classes == 20 and loaded.preprocessing == PREPROCESSING["imagenet"]
    np.testing.assert_array_equal(
        variables["params"]["block1"]["conv1"]["kernel"],
        module.features[0].weight.detach().numpy().transpose(2, 3, 1, 0),
    )


def test_config_json_without_preprocessing_takes_its_datasets(small):
    _, root = small
    saved = json.loads((root / "run" / "config.json").read_text())
    assert TrainConfig.from_dict(saved) == TrainConfig.load(root / "run" / "config.json")
    old = {k: v for k, v in saved.items() if k != "preprocessing"}  # written before it was recorded
    assert TrainConfig.from_dict(old).preprocessing == PREPROCESSING["imagenet"]
    old["dataset"] = "fashion-mnist"  # a 3-channel model cannot use the grey images' preprocessing
    assert TrainConfig.from_dict(old).preprocessing is None
    assert TrainConfig.from_dict({**old, "channels": 1}).preprocessing == PREPROCESSING["fashion-mnist"]
    with pytest.raises(ConfigError, match="preprocessing needs the keys"):
        TrainConfig.from_dict({**saved, "preprocessing": {"size": 224}})
    wrong = {**saved, "preprocessing": {**saved["preprocessing"], "channels": 1, "mean": [0.5], "std": [0.5]}}
    with pytest.raises(ConfigError, match="does not fit a model of 3 channel"):
        TrainConfig.from_dict(wrong).validate()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_export_loads_strictly_into_pytorch_with_the_same_logits(small, tmp_path, suffix):
    module, root = small
    out = tmp_path / f"back{suffix}"
    pretrained.export_torchvision(root / "run", out)
    clone = make_torch_vgg("vgg11_bn", **TINY, num_classes=20, seed=99)
    state = {k: torch.from_numpy(v) for k, v in read_state_dict(out).items()}
    clone.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(clone(x), module(x), rtol=0, atol=0)


def test_adapt_input_channels_follows_timm():
    kernel = np.random.default_rng(0).standard_normal((3, 3, 3, 8)).astype(np.float32)
    variables = {"params": {"block1": {"conv1": {"kernel": kernel, "bias": np.zeros(8, np.float32)}}}}
    grey = pretrained.adapt_input_channels(variables, 1)["params"]["block1"]["conv1"]["kernel"]
    # A grey pixel g through the summed kernel = the RGB pixel (g, g, g) through the original.
    np.testing.assert_allclose(grey[:, :, 0], kernel.sum(axis=2), rtol=1e-6)
    five = pretrained.adapt_input_channels(variables, 5)["params"]["block1"]["conv1"]["kernel"]
    np.testing.assert_allclose(five, np.concatenate([kernel, kernel[:, :, :2]], axis=2) * 3 / 5, rtol=1e-6)
    assert variables["params"]["block1"]["conv1"]["kernel"] is kernel  # not mutated
    with pytest.raises(CheckpointError, match="cannot adapt a first conv with 5 input channels to 2"):
        pretrained.adapt_input_channels({"params": {"block1": {"conv1": {"kernel": five}}}}, 2)


def test_transfer_replaces_only_fc8_and_needs_the_adaptation_option():
    arch = tiny_arch()
    source = random_variables(HeadShape(3, 64, 1000).model(arch), 3, seed=1)
    target = random_variables(HeadShape(1, 64, 10).model(arch), 1, seed=2)
    with pytest.raises(
        CheckpointError, match="take 3 input channels but the data has 1; pass --adapt-channels"
    ):
        pretrained.transfer(source, target)
    notes = []
    out = pretrained.transfer(source, target, adapt_channels=True, log=notes.append)
    assert notes == [
        "adapted the first conv from 3 to 1 input channels (timm's in_chans rule)",
        "new fc8 for 10 classes (the pretrained one has 1000)",
    ]
    jax.tree.map(np.testing.assert_array_equal, out["params"]["fc8"], target["params"]["fc8"])
    for path in (("block3", "conv2"), ("fc6",), ("fc7",)):
        mine, theirs = out["params"], source["params"]
        for key in path:
            mine, theirs = mine[key], theirs[key]
        jax.tree.map(np.testing.assert_array_equal, mine, theirs)
    np.testing.assert_allclose(
        out["params"]["block1"]["conv1"]["kernel"][:, :, 0],
        source["params"]["block1"]["conv1"]["kernel"].sum(axis=2),
        rtol=1e-6,
    )
    wide = random_variables(HeadShape(1, 128, 10).model(arch), 1)
    with pytest.raises(
        CheckpointError,
        match=r"params/fc6/bias: the pretrained weights have shape \[64\] but the model needs \[128\]$",
    ):
        pretrained.transfer(source, wide, adapt_channels=True, log=lambda _: None)


def test_init_from_must_keep_the_network(small):
    _, root = small
    source = RunDir(root / "run").config()
    from vggjax.config import TrainConfig

    config = inherit_model(TrainConfig(), source)
    assert (config.arch, config.width, config.head, config.hidden) == ("vgg11_bn", 0.125, "adaptive", 64)
    assert (config.channels, config.num_classes, config.dataset) == (1, 10, "fashion-mnist")
    with pytest.raises(ConfigError, match="--arch 'vgg16' differs from the --init-from run's 'vgg11_bn'"):
        check_same_model(tiny_config(arch="vgg16", head="adaptive"), source)
    with pytest.raises(CheckpointError, match="not a vggjax run folder"):
        RunDir(root).config()


@pytest.mark.parametrize(
    "where, message",
    [
        (
            "missing/out.safetensors",
            "cannot write {tmp}/missing/out.safetensors: no folder {tmp}/missing; "
            "create it or choose another path",
        ),
        ("folder", "{tmp}/folder is a folder; give a file name ending in .safetensors or .pth"),
    ],
)
def test_export_to_an_unwritable_path_is_one_line_exit_2(small, tmp_path, capsys, where, message):
    # both used to end in a FileNotFoundError / IsADirectoryError traceback
    _, root = small
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "kept.txt").write_text("mine")
    assert main(["export-torchvision", str(root / "run"), str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert err == "error: " + message.format(tmp=tmp_path) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]
    assert [p.name for p in (tmp_path / "folder").iterdir()] == ["kept.txt"]
    assert (tmp_path / "folder" / "kept.txt").read_text() == "mine"


def test_export_refuses_an_existing_file_unless_overwrite(small, tmp_path, capsys):
    # issue 13, defect 7: it used to replace the file without a word
    _, root = small
    out = tmp_path / "mine.safetensors"
    out.write_bytes(b"years of work")
    assert main(["export-torchvision", str(root / "run"), str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {out} already exists; pass --overwrite to replace it, or choose another name\n"
    assert out.read_bytes() == b"years of work"
    assert main(["export-torchvision", str(root / "run"), str(out), "--overwrite"]) == 0
    state = read_state_dict(out)  # the run's weights, as the test above checks in PyTorch
    assert "features.1.running_mean" in state and "classifier.6.weight" in state
    assert capsys.readouterr().out == f"wrote {len(state)} tensors to {out}\n"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left beside it


@pytest.mark.parametrize("name", ["back.npz", "back.pt", "back"])
def test_export_writes_only_pth_and_safetensors_names(small, tmp_path, name):
    # a .npz name used to get a torch.save zip
    _, root = small
    only = r"\.safetensors or \.pth \(torch\.save\) files only: name it back\.safetensors or back\.pth$"
    with pytest.raises(ConfigError, match=only):
        pretrained.export_torchvision(root / "run", tmp_path / name)
    assert list(tmp_path.iterdir()) == []
