"""``vggjax export``: a run's model as one file that runs without vggjax (ONNX or StableHLO).

What is exported is one function of NHWC images, :func:`forward`: the run's model in
evaluation mode (Flax's own ops, ``impl="xla"``), optionally behind the run's device-side
preprocessing (``uint8`` in) and followed by a softmax, or the named activations of
``--features``. ``--format stablehlo`` serializes exactly that function with ``jax.export``
(:mod:`vggjax.interop.stablehlo`); ``--format onnx`` builds the same computation from the
arch's layer list (:mod:`vggjax.interop.onnx_graph`, which says why). Shapes come from
``jax.eval_shape`` of :func:`forward`, which also runs the model's checks (sizes, tap names).

Each artifact carries one record (:func:`export_run`'s ``record``): input and output names,
shapes and dtypes, the preprocessing (in the graph or left to the host), the class names,
the model, the vggjax and jax versions: in ONNX's ``metadata_props``, or as ``FILE.json``
beside StableHLO. Files are written atomically after all checks and the conversion passed.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

import vggjax
from vggjax.arch import layers
from vggjax.config import TrainConfig
from vggjax.errors import ConfigError, check_positive_int
from vggjax.interop import onnx_graph, stablehlo
from vggjax.nn.vgg import VGG
from vggjax.run.files import atomic_write_bytes, atomic_write_text, check_new_files
from vggjax.run.folder import LoadedRun, RunDir
from vggjax.tasks.predict import DATASET_CLASS_NAMES
from vggjax.training.steps import preprocess as preprocess_images

FORMATS = {".onnx": "onnx", ".stablehlo": "stablehlo"}  # suffix → format, for an --out without --format
OUTPUTS = ("logits", "probs")
TORCHVISION_FILES = (".pth", ".pt", ".safetensors")
# The config.json fields the record names the model by.
MODEL_FIELDS = ("arch", "width", "head", "num_classes", "channels", "dataset")


class ExportResult(NamedTuple):
    """What :func:`export_run` wrote.

    Attributes:
      files: the artifact, then (StableHLO) its ``.json`` sidecar.
      record: the metadata written with it (see the module docstring).
      size: the artifact's size in bytes.
      seconds: wall time of the conversion and the writes.
    """

    files: list[Path]
    record: dict[str, Any]
    size: int
    seconds: float


def resolve_format(format: str | None, out: str | Path) -> str:
    """``format``, or the one ``out``'s suffix names (``.onnx``, ``.stablehlo``).

    Raises:
      ConfigError: for an unknown format, or none given and no known suffix.
    """
    known = ", ".join(FORMATS.values())
    if format is None:
        if Path(out).suffix not in FORMATS:
            raise ConfigError(f"give --format ({known}): the suffix of {out} names none")
        return FORMATS[Path(out).suffix]
    if format not in FORMATS.values():
        raise ConfigError(f"unknown --format {format!r}; use one of {known}")
    return format


def load_source(
    source: str | Path,
    *,
    checkpoint: str | Path | None = None,
    arch: str | None = None,
    width: float = 1.0,
    dataset: str = "imagenet",
) -> LoadedRun:
    """A run folder, or a torchvision VGG file converted as ``vggjax convert-torchvision`` does.

    Args:
      source: a folder from ``vggjax train`` / ``convert-torchvision``, a ``.pth`` /
        ``.safetensors`` torchvision state_dict (then ``arch`` is needed), or a weights
        name such as ``vgg16`` (see :mod:`vggjax.interop.hub`; downloaded once, hash-checked).
      checkpoint: a weights folder to use instead of the run's ``weights/``.
      arch, width, dataset: what a torchvision file holds (see
        :func:`vggjax.interop.pretrained.convert_torchvision`).

    Raises:
      CheckpointError: for a folder that is not a run or weights that do not fit it, or a
        file that does not hold ``arch``.
      ConfigError: for a torchvision file without ``arch``.
    """
    path = Path(source)
    from vggjax.interop import hub

    named = hub.named(source)
    if named is not None:  # torchvision's weights by name (vgg16, vgg16_bn:IMAGENET1K_V1, …)
        return hub.load_run(named, log=lambda _: None)
    if not (path.is_file() and path.suffix in TORCHVISION_FILES):
        return RunDir(path).load(checkpoint)
    if arch is None:
        raise ConfigError(
            f"{path} is a torchvision weights file; give --arch (e.g. --arch vgg16) to export it"
        )
    from vggjax.interop.pretrained import convert_torchvision

    with tempfile.TemporaryDirectory(prefix="vggjax-export-") as tmp:
        convert_torchvision(path, arch, Path(tmp) / "run", width=width, dataset=dataset, log=lambda _: None)
        return RunDir(Path(tmp) / "run").load()


def check_image_size(config: TrainConfig, image_size: int | None) -> int:
    """The side to export at: ``image_size``, or the run's own.

    Raises:
      ArchError: below the arch's minimum (one pool would see an empty map).
      ConfigError: for a size other than the run's with the flatten head.
    """
    size = config.image_size if image_size is None else check_positive_int(image_size, "--image-size")
    config.resolved_arch().check_input((1, size, size, config.channels))
    if config.head == "flatten" and size != config.image_size:
        raise ConfigError(
            f"--image-size {size}: the run's flatten head takes exactly {config.image_size}x"
            f"{config.image_size} (its fc6 is sized for it); only an adaptive-head model exports at "
            "other sizes"
        )
    return size


def forward(
    run: LoadedRun, image_size: int, *, preprocess: bool, output: str, features: Sequence[str] | None
) -> tuple[Callable[[jax.Array], Any], tuple[int, int, int], str]:
    """The function that is exported, and its input's ``(H, W, C)`` and dtype.

    Returns:
      ``(fn, (h, w, c), dtype)``: ``fn`` maps a batch ``[N, h, w, c]`` to the logits or
      probabilities ``float32[N, K]``, or (``features``) to ``{name: activation}`` (NHWC maps
      ``[N, H', W', C']``, head taps ``[N, F]``). With ``preprocess`` the input is the
      ``uint8`` picture of the run's host side (side ``preprocessing.size``), else the
      model's ``float32`` input at ``image_size``.
    """
    config = run.config
    model = run.model.clone(impl="xla")  # Flax's own ops: the same numbers, on every platform
    variables = jax.tree.map(np.asarray, run.variables)
    prep = config.preprocessing

    def fn(images: jax.Array) -> Any:
        x = preprocess_images(images, image_size, prep) if preprocess else images
        if features:
            return model.apply(variables, x, tuple(features), method=VGG.features)
        logits = model.apply(variables, x, train=False)
        return jax.nn.softmax(logits) if output == "probs" else logits

    side = prep.size if preprocess else image_size
    return fn, (side, side, config.channels), "uint8" if preprocess else "float32"


def export_run(
    source: str | Path,
    out: str | Path,
    *,
    format: str | None = None,
    batch: int | None = None,
    image_size: int | None = None,
    preprocess: bool = False,
    output: str = "logits",
    features: Sequence[str] | None = None,
    platforms: Sequence[str] | None = None,
    overwrite: bool = False,
    checkpoint: str | Path | None = None,
    arch: str | None = None,
    width: float = 1.0,
    dataset: str = "imagenet",
) -> ExportResult:
    """Exports a run's model to ``out`` as ONNX or serialized StableHLO (see the module docstring).

    Args:
      source, checkpoint, arch, width, dataset: what to export (:func:`load_source`).
      out: the file to write; StableHLO also writes ``out + ".json"``.
      format: ``"onnx"`` or ``"stablehlo"``; None takes it from ``out``'s suffix.
      batch: a fixed batch size; None (the default) exports any batch (symbolic ``N``).
      image_size: the model's input side; None takes the run's (see :func:`check_image_size`).
      preprocess: bake the run's preprocessing in: the input becomes ``uint8[N, P, P, C]``.
      output: ``"logits"`` or ``"probs"`` (softmax).
      features: layer names (``relu4_3``, ``pool5`` …) to export a feature extractor instead.
      platforms: StableHLO only: some of ``cpu`` (default), ``cuda``, ``rocm``, ``tpu``.
      overwrite: replace existing files.

    Raises:
      ConfigError: for a bad option, an existing file without ``overwrite``, or an unwritable ``out``.
      CheckpointError: for a source that is not a run (or torchvision file) or weights that do not fit.
      ArchError: for an image size below the arch's minimum, or an unknown feature name.
      ExportError: without the onnx package (``--format onnx``), or for a layer or op the
        format cannot express.
    """
    start, out = time.perf_counter(), Path(out)
    fmt = resolve_format(format, out)
    if output not in OUTPUTS:
        raise ConfigError(f"unknown --output {output!r}; use logits or probs")
    if features is not None and (output != "logits" or not features):
        raise ConfigError(
            "--features exports activations: give at least one layer name, and no --output probs"
        )
    if batch is not None:
        check_positive_int(batch, "--batch")
    if platforms is not None and fmt != "stablehlo":
        raise ConfigError("--platforms is for --format stablehlo; ONNX runs wherever onnxruntime does")
    stablehlo.check_platforms(platforms or ("cpu",))
    if fmt == "onnx":
        onnx = onnx_graph.onnx_module()  # a missing extra is said before any work
    targets = [out] if fmt == "onnx" else [out, out.with_name(out.name + ".json")]
    check_new_files(targets, overwrite=overwrite)
    run = load_source(source, checkpoint=checkpoint, arch=arch, width=width, dataset=dataset)
    config = run.config
    size = check_image_size(config, image_size)
    fn, hwc, dtype = forward(run, size, preprocess=preprocess, output=output, features=features)
    shapes = jax.eval_shape(fn, jax.ShapeDtypeStruct((batch or 1, *hwc), np.dtype(dtype)))
    named = [(n, shapes[n]) for n in dict.fromkeys(features)] if features else [(output, shapes)]
    dim = batch or stablehlo.BATCH

    def spec(name: str, shape: Sequence[int], dtype: Any) -> dict[str, Any]:
        return {"name": name, "shape": [dim, *shape[1:]], "dtype": str(np.dtype(dtype))}

    names = DATASET_CLASS_NAMES.get(config.dataset)
    record = {
        "format": fmt,
        **({"opset": onnx_graph.OPSET} if fmt == "onnx" else {"platforms": list(platforms or ["cpu"])}),
        "inputs": [{**spec(onnx_graph.INPUT, (0, *hwc), dtype), "layout": "NHWC"}],
        "outputs": [spec(n, s.shape, s.dtype) for n, s in named],
        "preprocessing": {"in_graph": preprocess, "image_size": size, **config.preprocessing._asdict()},
        "class_names": list(names) if names is not None and len(names) == config.num_classes else None,
        "model": {k: getattr(config, k) for k in MODEL_FIELDS},
        "source": str(source),
        "vggjax_version": vggjax.__version__,
        "jax_version": jax.__version__,
    }
    if fmt == "onnx":
        record["onnx_version"] = onnx.__version__
        sizes = {"head": config.head, "hidden": config.hidden, "num_classes": config.num_classes}
        model = onnx_graph.build_onnx(
            layers(config.resolved_arch(), **sizes),
            run.variables,
            input_shape=record["inputs"][0]["shape"],
            image_size=size,
            outputs={o["name"]: o["shape"] for o in record["outputs"]},
            preprocessing=config.preprocessing if preprocess else None,
            taps=list(dict.fromkeys(features)) if features else None,
            probs=output == "probs",
            metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()},
        )
        data = model.SerializeToString()
    else:
        exported = stablehlo.export_stablehlo(
            fn, stablehlo.input_spec((batch, *hwc), dtype), platforms or ("cpu",)
        )
        data = bytes(exported.serialize())
    try:
        atomic_write_bytes(out, data)
        if fmt == "stablehlo":
            atomic_write_text(targets[1], json.dumps(record, indent=1) + "\n")
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror or e}; choose a writable --out") from None
    return ExportResult(targets, record, len(data), time.perf_counter() - start)


def format_result(result: ExportResult) -> str:
    """What ``vggjax export`` prints: the files, the format, and each input and output."""
    r, (out, *rest) = result.record, result.files
    how = (
        f"ONNX opset {r['opset']}" if r["format"] == "onnx" else f"StableHLO for {', '.join(r['platforms'])}"
    )
    lines = [f"wrote {out} ({how}, {result.size / 1e6:.2f} MB, {result.seconds:.1f} s)"]
    lines += [f"wrote {path} (shapes, preprocessing, class names, versions)" for path in rest]
    prep = " (the run's preprocessing in the graph)" if r["preprocessing"]["in_graph"] else ""

    def show(kind: str, t: dict) -> str:
        return f"  {kind} {t['name']}: {t['dtype']}[{', '.join(map(str, t['shape']))}]"

    lines += [show("input ", t) + " NHWC" + prep for t in r["inputs"]]
    return "\n".join(lines + [show("output", t) for t in r["outputs"]])
