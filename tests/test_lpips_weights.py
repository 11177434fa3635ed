"""LPIPS-VGG's weight files: every key there with its shape, or an error naming it; never a partial load."""

import shutil

import numpy as np
import pytest
from lpips_reference import LIN_DIR

from vggjax.arch import get_arch
from vggjax.errors import CheckpointError, ConfigError
from vggjax.interop import torchfile
from vggjax.interop.state_dict import HeadShape, expected_shapes
from vggjax.perceptual import variant_name
from vggjax.perceptual.weights import (
    LIN_SHA256,
    default_lin_file,
    lin_weights,
    read_lin,
    trunk_shapes,
    trunk_variables,
)


def fake_trunk() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in trunk_shapes().items()}


def test_trunk_needs_exactly_vgg16_features_and_ignores_the_classifier():
    state = fake_trunk()
    assert len(state) == 26 and list(state)[-1] == "features.28.bias"
    full = {**state, "classifier.0.weight": np.zeros((8, 8), np.float32)}  # never read
    variables = trunk_variables(full)
    assert sorted(variables["params"]) == [f"block{b}" for b in range(1, 6)]
    kernel = variables["params"]["block3"]["conv2"]["kernel"]  # features.12: conv 2 of block 3
    np.testing.assert_array_equal(kernel, state["features.12.weight"].transpose(2, 3, 1, 0))


def test_trunk_errors_name_the_key():
    state = fake_trunk()
    del state["features.26.weight"], state["features.28.bias"]
    with pytest.raises(CheckpointError, match=r"has no features\.26\.weight \(and 1 more\), which LPIPS-VGG"):
        trunk_variables(state)
    state = fake_trunk()
    state["features.5.weight"] = np.zeros((128, 32, 3, 3), np.float32)
    with pytest.raises(
        CheckpointError,
        match=r"features\.5\.weight in .* shape \[128, 32, 3, 3\] but VGG-16 needs \[128, 64, 3, 3\]",
    ):
        trunk_variables(state)
    vgg19 = {
        k: np.zeros(s, np.float32)
        for k, s in expected_shapes(get_arch("vgg19"), HeadShape(3, None, None, None)).items()
    }
    with pytest.raises(CheckpointError, match=r"looks like vgg19, LPIPS-VGG needs vgg16"):
        trunk_variables(vgg19)
    lin = torchfile.read_state_dict(LIN_DIR / "v0.1" / "vgg.pth")
    with pytest.raises(CheckpointError, match="holds LPIPS lin weights .* not a VGG-16"):
        trunk_variables(lin)


def test_lin_file_errors_name_the_key(tmp_path):
    state = torchfile.read_state_dict(LIN_DIR / "v0.1" / "vgg.pth")
    assert sorted(state) == [f"lin{i}.model.1.weight" for i in range(5)]
    no_dropout = {
        k.replace("model.1", "model.0"): v for k, v in state.items()
    }  # saved with use_dropout=False
    np.testing.assert_array_equal(lin_weights(no_dropout)[3], state["lin3.model.1.weight"].reshape(512))
    missing = {k: v for k, v in state.items() if not k.startswith("lin3")}
    with pytest.raises(CheckpointError, match=r"has no lin3\.model\.1\.weight"):
        lin_weights(missing)
    shifted = {f"module.{k}": v for k, v in state.items()}  # the reference's strict=False would load nothing
    with pytest.raises(CheckpointError, match=r"unexpected key module\.lin0\.model\.1\.weight"):
        lin_weights(shifted)
    alex = {**state, "lin0.model.1.weight": np.zeros((1, 192, 1, 1), np.float32)}
    with pytest.raises(CheckpointError, match=r"shape \[1, 192, 1, 1\] but LPIPS-VGG needs \[1, 64, 1, 1\]"):
        lin_weights(alex)
    with pytest.raises(CheckpointError, match="holds VGG features.* weights, not LPIPS lin weights"):
        lin_weights(fake_trunk())


def test_a_lin_file_of_the_other_version_is_refused(tmp_path):
    for have, asked in (("0.0", "0.1"), ("0.1", "0.0")):
        copy = shutil.copy(LIN_DIR / f"v{have}" / "vgg.pth", tmp_path / f"mine-{have}.pth")  # any name
        with pytest.raises(
            CheckpointError, match=f"is the lin file of LPIPS v{have}, but version {asked} was asked"
        ):
            read_lin(copy, asked)
        assert len(read_lin(copy, have)) == 5
    assert default_lin_file("0.0") == LIN_DIR / "v0.0" / "vgg.pth"
    assert set(LIN_SHA256) == {"0.1", "0.0"}
    v0 = read_lin(None, "0.0")
    assert min(float(w.min()) for w in v0) == 0.0 and float(v0[0].sum()) == pytest.approx(3.6416, abs=1e-3)


def test_variant_names():
    assert variant_name("0.1", True) == "lpips-vgg-v0.1"
    assert variant_name("0.0", True) == "lpips-vgg-v0.0"
    assert variant_name("0.1", False) == "vgg-l2-baseline"
    assert variant_name("0.0", False) == "vgg-l2-baseline-v0.0"
    with pytest.raises(ConfigError, match="version must be one of 0.1, 0.0, got '0.2'"):
        variant_name("0.2", True)


def test_a_script_named_lpips_is_not_taken_for_the_package(tmp_path, monkeypatch):
    import importlib.util

    script = tmp_path / "lpips.py"  # e.g. a benchmark script run from its own folder
    script.write_text("")
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: importlib.util.spec_from_file_location(name, script)
    )
    with pytest.raises(
        CheckpointError, match=f"'lpips' is {script}, not the lpips package; give the lin file"
    ):
        default_lin_file("0.1")
