"""The ``vggjax`` command's grammar: its subcommands and their flags (what each does: :mod:`vggjax.commands`).

``vggjax train``'s flags, and the model flags of the others, are made from the
:class:`~vggjax.config.TrainConfig` field metadata (:func:`vggjax.config.add_flags`).

Every user error (a :class:`~vggjax.errors.VggjaxError`) becomes one line on stderr,
``error: <what was wrong and how to fix it>``, without a traceback. Exit statuses: 0 ok,
1 some ``predict`` or ``lpips`` files unreadable, 2 bad input, 3 training diverged (NaN/Inf), 130 Ctrl-C,
141 stdout's reader went away (a closed pipe), 143 SIGTERM (see :mod:`vggjax.errors`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vggjax import commands
from vggjax.config import TTAS, add_flags
from vggjax.runtime import VersionAction, run_command


def _command(sub, name: str, func, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand's parser that runs ``func(args)`` (its own usage shown for a bad flag)."""
    p = sub.add_parser(name, help=help, description=description or help[0].upper() + help[1:] + ".")
    p.set_defaults(func=func, parser=p)
    return p


def _train_parser(sub) -> None:
    from vggjax.presets import PRESETS

    p = _command(sub, "train", commands.train, "train a VGG on Fashion-MNIST")
    p.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (see vggjax.presets.PRESETS)")
    add_flags(p)
    p.add_argument("--out", help="run folder (default runs/<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint and config")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group(
        "multi-host (jax.distributed)",
        "Every local device is always used. To train on several hosts, start one process per host "
        "with these flags (or VGGJAX_COORDINATOR, VGGJAX_NUM_PROCESSES, VGGJAX_PROCESS_ID).",
    )
    g.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    g.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index in [0, N)")
    g.add_argument(
        "--distributed",
        action="store_true",
        help="let JAX detect what is not given (SLURM, Open MPI, Cloud TPU pod slice); VGGJAX_DISTRIBUTED=1",
    )
    g.add_argument("--dist-timeout", type=int, metavar="S", help="seconds to wait for all processes (300)")


def _summary_parser(sub) -> None:
    from vggjax.config import HEADS, POOLINGS

    p = _command(sub, "summary", commands.summary, "per-layer output shapes, parameters and MACs of a VGG")
    add_flags(p, ("arch", "width"), arch="vgg11", width=1.0)
    p.add_argument("--input-size", type=int, default=224, help="input side in pixels")
    p.add_argument("--channels", type=int, default=1, help="input channels")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--head", default="flatten", choices=[*HEADS, "none"], help="none: the features alone")
    p.add_argument("--pooling", choices=POOLINGS, help="global pooling of a headless model (--head none)")
    p.add_argument("--detail", action="store_true", help="one row per conv, ReLU and pool")
    p.add_argument("--json", action="store_true", help="print JSON")


def _eval_parser(sub) -> None:
    p = _command(
        sub,
        "eval",
        commands.evaluate,
        "score a trained run on the Fashion-MNIST test split",
        "Score a run on the test split (or with --split val on the validation split its training held "
        "out): loss, top-1/top-5, per-class scores, confusion matrix. Writes eval.json, confusion.png, "
        "mistakes.png and report.html into RUN_DIR.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by vggjax train")
    p.add_argument("--checkpoint", help="weights folder to use instead of RUN_DIR/weights")
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST IDX files")
    p.add_argument("--limit-test", type=int, metavar="N", help="score only the first N test images")
    p.add_argument(
        "--split",
        default="test",
        choices=("test", "val"),
        help="test (default), or val: the training images the run held out (rebuilt from its seed and "
        "val_size)",
    )
    p.add_argument("--batch-size", type=int, default=500, help="images per device call")
    p.add_argument("--mistakes", type=int, default=32, metavar="N", help="images in mistakes.png")
    p.add_argument(
        "--tta",
        choices=TTAS,
        help="flip: mean softmax of image, mirror; flip-shift: 6 views, also ±1 px shifts (default: run's)",
    )
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    add_flags(p, ("verify_data",), verify_data=True)


def _predict_parser(sub, name: str = "predict", top_k: int = 3, imagenet_only: bool = False) -> None:
    p = _command(
        sub,
        name,
        commands.predict,
        "classify image files with a run (trained, or converted torchvision weights)"
        if not imagenet_only
        else "vggjax predict, top 5 by default, for converted torchvision weights only",
        "Classify image files (any format, size or mode) with a run, preprocessed as its config.json "
        "records: a Fashion-MNIST run sees a light garment on black (with --invert auto a picture whose "
        "border is mostly light is inverted first); converted ImageNet weights see torchvision's resize "
        "256, centre crop 224. Exit status 1 if any file could not be read."
        + (" predict-imagenet refuses runs that are not ImageNet weights." if imagenet_only else ""),
    )
    p.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="a folder from vggjax train or convert-torchvision, or torchvision weights by name: vgg16, "
        "vgg11_bn:IMAGENET1K_V1 (vggjax weights list)",
    )
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--top-k", "--top", dest="top_k", type=int, default=top_k, help="classes per image")
    p.add_argument("--invert", help="Fashion-MNIST runs: make it light-on-black: auto (default), yes or no")
    p.add_argument("--labels", help="class names, one per line (default: the dataset's, if it has them)")
    p.add_argument("--checkpoint", help="weights folder to use instead of RUN_DIR/weights")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(imagenet_only=imagenet_only)


def _receptive_field_parser(sub) -> None:
    p = _command(
        sub,
        "receptive-field",
        commands.receptive_field,
        "per-layer kernel, stride, dilation, receptive field, jump and start",
        "Receptive field r, jump j and start of each conv and pool layer of a VGG, in input "
        "pixels: r_l = r_{l-1} + (k_l-1)*d_l*j_{l-1} (d_l: the layer's dilation), j_l = j_{l-1}*s_l.",
    )
    add_flags(p, ("arch", "width"), arch="vgg11", width=1.0)
    p.add_argument("--all", action="store_true", help="also list the BatchNorm, ReLU and LRN layers")
    p.add_argument("--json", action="store_true", help="print JSON")


def _convert_parser(sub) -> None:
    p = _command(
        sub,
        "convert-torchvision",
        commands.convert,
        "convert a torchvision VGG .pth/.safetensors file into a vggjax run folder",
        "Convert a torchvision VGG state_dict (.pth or .safetensors) into a vggjax run folder "
        "(config.json + weights/), for predict and train --init-from. torch is not needed.",
    )
    p.add_argument(
        "weights",
        help="torchvision state_dict file, e.g. vgg16-397923af.pth, or torchvision's weights by name: vgg16, "
        "vgg16:IMAGENET1K_V1 (downloaded once; vggjax weights list)",
    )
    p.add_argument("--arch", help="the arch the file holds: vgg11 ... vgg19_bn, a literal; a name implies it")
    p.add_argument("--width", type=float, help="width multiplier (default 1.0, torchvision's models)")
    p.add_argument("--dataset", default="imagenet", choices=["imagenet", "fashion-mnist"], help="trained on")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty --out folder")


def _export_parser(sub) -> None:
    p = _command(
        sub,
        "export-torchvision",
        commands.export,
        "write a run's weights as a torchvision VGG state_dict",
        "Write a run's weights as a torchvision VGG state_dict: .safetensors (no torch needed; "
        "safetensors.torch.load_file in PyTorch) or .pth (torch.save format; needs torch).",
    )
    p.add_argument("run_dir", help="run folder (from vggjax train or convert-torchvision)")
    p.add_argument("out", help="output file, .pth or .safetensors")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def _weights_parser(sub) -> None:
    p = _command(
        sub,
        "weights",
        None,
        "torchvision's VGG weights by name: list them, or download one into the cache",
        "torchvision's VGG weights files by name: ARCH (its default weights) or ARCH:WEIGHTS, e.g. "
        "vgg16 or vgg16:IMAGENET1K_FEATURES. A file is downloaded once from torchvision's URL into "
        "$VGGJAX_HOME/weights (default ~/.cache/vggjax/weights) and checked against the SHA-256 "
        "prefix in its name. convert-torchvision, predict, predict-imagenet and train --init-from "
        "take these names too.",
    )
    actions = p.add_subparsers(dest="weights_action", required=True, metavar="ACTION")
    q = _command(actions, "list", commands.weights_list, "every weights name with its URL, size and hash")
    q.add_argument("--json", action="store_true", help="print JSON")
    q = _command(
        actions,
        "get",
        commands.weights_get,
        "download a weights file (once) and print its path",
        "Print the path of a torchvision weights file, downloading it first if it is not in the "
        "cache. Offline, put the file there by hand: the error names the URL and the path.",
    )
    q.add_argument("arch", metavar="ARCH[:WEIGHTS]", help="vgg11 ... vgg19_bn; e.g. vgg16:IMAGENET1K_V1")
    q.add_argument(
        "--name", metavar="WEIGHTS", help="torchvision's VGG*_Weights member (default IMAGENET1K_V1)"
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bar")


def _model_export_parser(sub) -> None:
    p = _command(
        sub,
        "export",
        commands.export_model,
        "write a run's model as ONNX or serialized StableHLO, to run without vggjax",
        "Write a run's model (or a torchvision VGG file, with --arch) as one file that runs without "
        "vggjax: ONNX (checked by onnx.checker; pip install 'vggjax[onnx]') or StableHLO serialized "
        "by jax.export, with a JSON sidecar FILE.json. Input NHWC images; prints each input and output.",
    )
    p.add_argument(
        "source",
        metavar="RUN_DIR",
        help="a run folder, a torchvision .pth/.safetensors file, or a weights name such as vgg16",
    )
    p.add_argument("--format", help="onnx or stablehlo (default: from --out's suffix .onnx/.stablehlo)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--batch", type=int, metavar="N", help="a fixed batch size (default: any batch)")
    p.add_argument("--dynamic-batch", action="store_true", help="a symbolic batch dimension N (the default)")
    p.add_argument(
        "--image-size", type=int, metavar="S", help="input side (default the run's; adaptive head: any)"
    )
    p.add_argument(
        "--preprocess", action="store_true", help="bake the run's preprocessing in: uint8[N, H, W, C] in"
    )
    p.add_argument("--output", default="logits", help="logits (default) or probs")
    p.add_argument("--features", metavar="LAYERS", help="comma-separated taps, e.g. relu4_3,pool5, instead")
    p.add_argument("--platforms", help="StableHLO: comma-separated, cpu (default), cuda, rocm, tpu")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--checkpoint", help="weights folder to use instead of RUN_DIR/weights")
    p.add_argument("--arch", help="for a torchvision file: the arch it holds (vgg16, vgg11_bn ...)")
    p.add_argument("--width", type=float, default=1.0, help="for a torchvision file: width multiplier")
    p.add_argument("--dataset", default="imagenet", help="for a torchvision file: imagenet or fashion-mnist")


def _bench_parser(sub) -> None:
    p = _command(
        sub,
        "bench",
        commands.bench,
        "train-step and inference throughput, GFLOP/s, share of peak, memory",
        "Throughput of the jitted train step that vggjax train runs, and of inference, on this machine: "
        "median images/s of several timed runs after compiling, achieved GFLOP/s from the model's MACs "
        "(a train step counted as 3x the forward pass), its fraction of a measured matmul peak, compile "
        "time, peak memory and the input pipeline's share of the step time.",
    )
    model = {"arch": "vgg11", "width": 0.25, "image_size": 32, "channels": 1, "batch_size": 128}
    speed = {"hidden": 4096, "num_classes": 10, "head": "flatten", "impl": "auto", "dtype": "float32"}
    add_flags(p, (*model, *speed), **model, **speed)
    p.add_argument("--source-size", type=int, default=28, help="side of the uint8 images fed to the step")
    p.add_argument("--steps", type=int, default=3, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (the median is reported)")
    p.add_argument("--only", choices=["train", "inference"], help="measure one of the two")
    p.add_argument("--json", action="store_true", help="print JSON")


def _lpips_parser(sub) -> None:
    from vggjax.config import DTYPES

    p = _command(
        sub,
        "lpips",
        commands.lpips,
        "LPIPS-VGG distances between image pairs, as the lpips package computes them",
        "LPIPS-VGG distance of each pair of images (the lpips 0.1.4 package's numbers), then their "
        "mean, with the variant's name. Images of a pair must have one size unless --resize is "
        "given; any mode is read as RGB in [0, 1]. Exit status 1 if any file could not be read.",
    )
    p.add_argument("images", metavar="IMAGE", nargs="*", help="image pairs: A B [A2 B2 ...]")
    p.add_argument(
        "--dir-a", metavar="DIR", help="a folder of images; compared with --dir-b's of the same name"
    )
    p.add_argument("--dir-b", metavar="DIR", help="the other folder")
    p.add_argument(
        "--trunk",
        metavar="FILE",
        help="torchvision VGG-16 state_dict (e.g. vgg16-397923af.pth), or the name vgg16",
    )
    p.add_argument(
        "--lin", metavar="FILE", help="lin weights (default: the installed lpips package's vgg.pth)"
    )
    p.add_argument(
        "--version", dest="lpips_version", default="0.1", choices=["0.1", "0.0"], help="LPIPS version"
    )
    p.add_argument("--baseline", action="store_true", help="no lin weights: the reference's lpips=False")
    p.add_argument("--spatial-out", metavar="DIR", help="write each pair's distance map as a PNG heat map")
    p.add_argument("--resize", type=int, metavar="S", help="resize every image to SxS first")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="pairs per device call")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="the trunk's compute dtype")
    p.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    """The ``vggjax`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="vggjax", description="VGG networks in JAX/Flax: build, inspect, train, evaluate, predict."
    )
    parser.add_argument("--version", action=VersionAction, help="print the versions a bug report needs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_train_parser, _summary_parser, _eval_parser, _predict_parser, _receptive_field_parser):
        add(sub)
    _convert_parser(sub)
    _export_parser(sub)
    _model_export_parser(sub)
    _predict_parser(sub, "predict-imagenet", top_k=5, imagenet_only=True)
    _bench_parser(sub)
    _weights_parser(sub)
    _lpips_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (see :func:`vggjax.runtime.run_command`)."""
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # argparse would show the top-level usage; the subcommand's is the useful one
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
