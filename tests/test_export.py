"""vggjax export: ONNX in onnxruntime and StableHLO deserialized by plain JAX give vggjax's numbers."""

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from tiny import TINY, tiny_config
from torch_vgg import make_torch_vgg

from vggjax.arch import Layer, layers
from vggjax.cli import main
from vggjax.data import images
from vggjax.errors import ExportError
from vggjax.interop import onnx_graph
from vggjax.interop.pretrained import convert_torchvision
from vggjax.nn.features import features
from vggjax.nn.fit import from_config
from vggjax.run.folder import RunDir
from vggjax.tasks.export import export_run
from vggjax.tasks.predict import predict_files, predict_logits

TOL = 1e-4  # the bound; the differences printed are near 1e-6


def save_run(path, config, seed=0):
    """A run folder of ``config`` with random weights (He-scaled), biases and BatchNorm statistics.

    Drawn with numpy on the shapes ``jax.eval_shape`` gives, as ``model.init`` would be slower.
    """
    config = config.validate()
    side = config.image_size
    x = jax.ShapeDtypeStruct((1, side, side, config.channels), jnp.float32)
    shapes = jax.eval_shape(from_config(config).init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)

    def draw(path, a):
        names = [k.key for k in path]
        if names[-1] == "kernel":  # He: logits of a few units, so that 1e-4 is a real bound
            std = np.sqrt(2 / np.prod(a.shape[:-1]))
            return (rng.standard_normal(a.shape) * std).astype(np.float32)
        low, high = {"var": (0.5, 2.0), "scale": (0.5, 1.5)}.get(names[-1], (-0.2, 0.2))
        return rng.uniform(low, high, a.shape).astype(np.float32)

    RunDir(path).save(config, jax.tree_util.tree_map_with_path(draw, shapes), overwrite=False)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The thin VGG-11 (flatten head, 32x32), its _bn, an adaptive head, and a converted torchvision file."""
    root = tmp_path_factory.mktemp("runs")
    out = {
        "thin": save_run(root / "thin", tiny_config()),
        "bn": save_run(root / "bn", tiny_config(arch="vgg11_bn"), seed=1),
        "adaptive": save_run(root / "adaptive", tiny_config(head="adaptive"), seed=2),
    }
    state = make_torch_vgg("vgg11", **TINY, num_classes=20).state_dict()
    state["classifier.6.weight"] *= 500  # torchvision's init (std 0.01) gives logits near 0.01
    torch.save(state, root / "tv.pth")
    convert_torchvision(root / "tv.pth", "vgg11", root / "tv", width=TINY["width"], log=lambda _: None)
    out["torchvision"] = root / "tv"
    return out


def inputs(run, side, batch, seed):
    """``float32[batch, side, side, C]`` in the run's input range (ImageNet runs: normalised)."""
    x = np.random.default_rng(seed).random((batch, side, side, run.config.channels), np.float32)
    return x if run.config.dataset != "imagenet" else (x - 0.45) / 0.226


def logits(run, x):
    """vggjax's logits, jitted as predict and eval run the model."""
    return np.asarray(jax.jit(run.model.apply)(run.variables, x))


def onnx_call(path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"images": x})


# A plain JAX program: it imports nothing from vggjax and says so.
DESERIALIZE = textwrap.dedent(
    """
    import sys
    import jax, numpy as np
    for model, x, out in zip(*[iter(sys.argv[1:])] * 3):
        exported = jax.export.deserialize(open(model, "rb").read())
        np.save(out, np.asarray(exported.call(np.load(x))))
    assert not any(m.startswith("vggjax") for m in sys.modules), "vggjax was imported"
    """
)


@pytest.fixture(scope="module")
def round_trips(runs, tmp_path_factory):
    """Each run exported once per format with a dynamic batch, run at batch 1 and 7, and vggjax's logits.

    Returns ``{(run, format, batch): (got, expected)}``; StableHLO runs in one subprocess.
    """
    root = tmp_path_factory.mktemp("exported")
    cases = {"thin": None, "bn": None, "torchvision": None, "adaptive": 96}
    results, plain_jax = {}, []
    for name, size in cases.items():
        run = RunDir(runs[name]).load()
        side = size or run.config.image_size
        x7 = inputs(run, side, 7, seed=0)
        batches = {1: x7[:1], 7: x7}
        expected7 = logits(run, x7)  # one compile; rows do not depend on each other
        for fmt in ("onnx", "stablehlo"):
            result = export_run(runs[name], root / f"{name}.{fmt}", image_size=size)
            assert result.record["inputs"][0]["shape"] == ["N", side, side, run.config.channels]
            for batch, x in batches.items():
                expected = expected7[:batch]
                if fmt == "onnx":
                    results[name, fmt, batch] = (onnx_call(result.files[0])(x)[0], expected)
                else:
                    np.save(root / f"{name}{batch}.npy", x)
                    plain_jax += [
                        result.files[0],
                        root / f"{name}{batch}.npy",
                        root / f"{name}{batch}.out.npy",
                    ]
                    results[name, fmt, batch] = (root / f"{name}{batch}.out.npy", expected)
    subprocess.run([sys.executable, "-c", DESERIALIZE, *map(str, plain_jax)], check=True, timeout=600)
    for key, (got, expected) in results.items():
        if key[1] == "stablehlo":
            results[key] = (np.load(got), expected)
    return results


@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
@pytest.mark.parametrize("name", ["thin", "bn", "torchvision", "adaptive"])
def test_one_dynamic_batch_file_gives_vggjax_logits_at_batch_1_and_7(round_trips, name, fmt):
    for batch in (1, 7):
        got, expected = round_trips[name, fmt, batch]
        assert got.shape == expected.shape == (batch, expected.shape[1])
        diff = float(np.abs(got - expected).max())
        top = float(np.abs(expected).max())
        print(f"{name} {fmt} batch {batch}: max abs difference {diff:.2e} (logits up to {top:.2f})")
        assert diff < TOL
        assert top > 1  # logits large enough that the bound means something


def test_adaptive_head_exported_at_96_runs_at_96(runs, tmp_path):
    run = RunDir(runs["adaptive"]).load()
    path = export_run(runs["adaptive"], tmp_path / "a.onnx", image_size=96).files[0]
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    assert [d.dim_param or d.dim_value for d in shape.dim] == ["N", 96, 96, 1]
    x = inputs(run, 96, 2, seed=5)
    np.testing.assert_allclose(onnx_call(path)(x)[0], logits(run, x), atol=TOL)
    with pytest.raises(Exception, match="Got: 32 Expected: 96"):  # the file is for 96x96, not 32x32
        onnx_call(path)(inputs(run, 32, 1, seed=5))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Image files of other sizes and modes, as a user has them."""
    d, rng = tmp_path_factory.mktemp("pictures"), np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(28, 28), (60, 40), (300, 260)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(d / f"{i}.png")
        paths.append(d / f"{i}.png")
    return paths


@pytest.mark.parametrize("name", ["thin", "torchvision"])  # resized 28 -> 32; ImageNet mean/std
def test_preprocess_model_fed_raw_uint8_equals_predict(runs, pictures, tmp_path, name, capsys):
    out = tmp_path / "p.onnx"
    assert main(["export", str(runs[name]), "--out", str(out), "--preprocess", "--output", "probs"]) == 0
    printed = capsys.readouterr().out
    run = RunDir(runs[name]).load()
    prep = run.config.preprocessing
    assert f"input  images: uint8[N, {prep.size}, {prep.size}, {prep.channels}] NHWC" in printed
    raw = np.stack([images.load_image(p, prep)[0] for p in pictures])  # what predict feeds its model
    probs = onnx_call(out)(raw)[0]
    logits = predict_logits(run, raw)
    np.testing.assert_allclose(probs, jax.nn.softmax(logits), atol=1e-6)
    for p, got in zip(predict_files(run, pictures, top_k=3), probs, strict=True):
        assert [g.index for g in p.top] == list(np.argsort(-got)[:3])
        np.testing.assert_allclose([g.prob for g in p.top], np.sort(got)[::-1][:3], atol=1e-6)
    onnx_logits = export_run(runs[name], tmp_path / "l.onnx", preprocess=True).files[0]
    diff = float(np.abs(onnx_call(onnx_logits)(raw)[0] - logits).max())
    print(f"{name} --preprocess: max abs difference to predict's logits {diff:.2e}")
    assert diff < TOL


def test_preprocess_stablehlo_equals_predict(runs, pictures, tmp_path):
    run = RunDir(runs["thin"]).load()
    path = export_run(runs["thin"], tmp_path / "p.stablehlo", preprocess=True).files[0]
    raw = np.stack([images.load_image(p, run.config.preprocessing)[0] for p in pictures])
    got = jax.export.deserialize(path.read_bytes()).call(raw)
    np.testing.assert_allclose(got, predict_logits(run, raw), atol=TOL)


def test_features_export_the_named_activations_nhwc(runs, tmp_path):
    run = RunDir(runs["bn"]).load()
    taps = ["relu4_1", "pool5", "fc7"]
    x = inputs(run, 32, 3, seed=3)
    expected = jax.jit(lambda v, x: features(run.model, v, x, taps))(run.variables, x)
    onnx_path = export_run(runs["bn"], tmp_path / "f.onnx", features=taps).files[0]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == taps
    hlo = jax.export.deserialize(
        export_run(runs["bn"], tmp_path / "f.stablehlo", features=taps).files[0].read_bytes()
    )
    from_hlo = hlo.call(x)
    for name, got in zip(taps, session.run(None, {"images": x}), strict=True):
        assert got.shape == expected[name].shape  # NHWC maps, as vggjax returns them
        np.testing.assert_allclose(got, expected[name], atol=TOL)
        np.testing.assert_allclose(from_hlo[name], expected[name], atol=TOL)


def test_metadata_names_opset_inputs_outputs_and_is_printed(runs, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(runs["thin"]), "--format", "onnx", "--out", str(out), "--batch", "3"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"wrote {out} (ONNX opset 17, ")
    assert printed[1:] == ["  input  images: float32[3, 32, 32, 1] NHWC", "  output logits: float32[3, 10]"]
    model = onnx.load(str(out))
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["opset"]) == 17
    assert json.loads(meta["inputs"]) == [
        {"name": "images", "shape": [3, 32, 32, 1], "dtype": "float32", "layout": "NHWC"}
    ]
    assert json.loads(meta["outputs"]) == [{"name": "logits", "shape": [3, 10], "dtype": "float32"}]
    assert json.loads(meta["class_names"])[0] == "T-shirt/top"
    assert meta["vggjax_version"] and meta["jax_version"] == jax.__version__
    assert main(["export", str(runs["thin"]), "--out", str(out), "--batch", "5", "--overwrite"]) == 0
    assert (
        json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}["inputs"])[0]["shape"][0] == 5
    )


def test_stablehlo_sidecar_and_cuda_on_request(runs, tmp_path, capsys):
    out = tmp_path / "m.stablehlo"
    argv = ["export", str(runs["bn"]), "--out", str(out), "--platforms", "cpu,cuda", "--preprocess"]
    assert main(argv) == 0
    assert f"wrote {out}.json (shapes, preprocessing, class names, versions)" in capsys.readouterr().out
    side = json.loads((tmp_path / "m.stablehlo.json").read_text())
    assert side["platforms"] == ["cpu", "cuda"] and side["jax_version"] == jax.__version__
    assert side["inputs"][0] == {
        "name": "images",
        "shape": ["N", 28, 28, 1],
        "dtype": "uint8",
        "layout": "NHWC",
    }
    assert side["preprocessing"] == {
        "in_graph": True,
        "image_size": 32,
        "channels": 1,
        "size": 28,
        "resize": None,
        "invert": True,
        "mean": [0.0],
        "std": [1.0],
    }
    assert jax.export.deserialize(out.read_bytes()).platforms == ("cpu", "cuda")


def test_a_torchvision_file_exports_as_its_converted_run(runs, tmp_path):
    pth = runs["torchvision"].parent / "tv.pth"
    argv = ["--arch", "vgg11", "--width", str(TINY["width"])]
    assert main(["export", str(pth), "--out", str(tmp_path / "a.onnx"), *argv]) == 0
    x = inputs(RunDir(runs["torchvision"]).load(), 224, 1, seed=4)
    from_file = onnx_call(tmp_path / "a.onnx")(x)[0]
    export_run(runs["torchvision"], tmp_path / "b.onnx")
    np.testing.assert_array_equal(from_file, onnx_call(tmp_path / "b.onnx")(x)[0])


def test_onnx_without_the_extra_is_one_line_exit_2(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    assert main(["export", str(runs["thin"]), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: --format onnx needs the onnx package, which is not installed: pip install 'vggjax[onnx]'\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_layer_onnx_has_no_op_for_is_named(runs):
    run = RunDir(runs["thin"]).load()
    arch = run.config.resolved_arch()
    every = layers(arch, head="flatten", hidden=64, num_classes=10)
    odd = [*every[:3], Layer("gelu", "gelu1_1", 1, 1, 1, 0, 8), *every[3:]]
    with pytest.raises(ExportError, match=r"^cannot convert layer gelu1_1 \(kind 'gelu'\) to ONNX"):
        onnx_graph.build_onnx(
            odd, run.variables, input_shape=["N", 32, 32, 1], image_size=32, outputs={"logits": ["N", 10]}
        )
