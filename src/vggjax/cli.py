"""The ``vggjax`` command: thin argparse front end over the library.

Every user error (a :class:`~vggjax.errors.VggjaxError`) becomes one line on stderr,
``error: <what was wrong and how to fix it>``, without a traceback. Exit statuses: 0 ok,
1 some ``predict`` files unreadable, 2 bad input, 3 training diverged (NaN/Inf), 130 Ctrl-C,
141 stdout's reader went away (a closed pipe), 143 SIGTERM (see :mod:`vggjax.errors`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
import typing
from collections.abc import Sequence
from typing import Any

from vggjax.errors import Interrupted, StdoutError, VggjaxError
from vggjax.runtime import keep_freed_memory


def _config_flags(p: argparse.ArgumentParser, names: Sequence[str] | None = None, **defaults: Any) -> None:
    """Adds one ``--flag`` per :class:`~vggjax.config.TrainConfig` field, made from the field's metadata.

    Args:
      p: the (sub)parser.
      names: the fields to add; None adds every field marked for the command line.
      defaults: the parser's own defaults; fields without one default to None, so that only the
        flags given override a preset.
    """
    from vggjax.config import TrainConfig, flag_name

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if not (f.name in names if names is not None else f.metadata["cli"]):
            continue
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        default = defaults.get(f.name, f.default)
        help = f.metadata["help"] + ("" if default is None or kind is bool else f" (default {default})")
        flag = f"--{flag_name(f.name)}"
        given = {"dest": f.name, "default": defaults.get(f.name), "help": help}
        if kind is bool:  # a flag turns a field on, or off if it is on by default (--no-verify-data)
            p.add_argument(flag, action="store_false" if f.default else "store_true", **given)
        else:
            metavar = f.metadata["metavar"] or (None if f.metadata["choices"] else flag[2:].upper())
            p.add_argument(flag, type=kind, choices=f.metadata["choices"], metavar=metavar, **given)


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a VGG on Fashion-MNIST", description="Train a VGG on Fashion-MNIST."
    )
    from vggjax.config import PRESETS

    p.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (see vggjax.config.PRESETS)")
    _config_flags(p)
    p.add_argument("--out", help="run folder (default runs/<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint, with its saved config"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_distributed_args(p)
    p.set_defaults(func=_train, parser=p)


def _add_distributed_args(p: argparse.ArgumentParser) -> None:
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
        default=None,
        help="let JAX detect what is not given (SLURM, Open MPI, Cloud TPU pod slice); VGGJAX_DISTRIBUTED=1",
    )
    g.add_argument(
        "--dist-timeout", type=int, metavar="S", help="seconds to wait for all processes (default 300)"
    )


def _train(args: argparse.Namespace) -> int:
    from vggjax.config import TrainConfig
    from vggjax.run.resume import train_config
    from vggjax.training import parallel
    from vggjax.training.train import describe, train_and_evaluate

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    spec = parallel.resolve_spec(
        coordinator=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        auto=bool(args.distributed),
        timeout=args.dist_timeout,
    )
    config, out, notes = train_config(
        overrides,
        preset=args.preset,
        resume=args.resume,
        out=args.out,
        overwrite=args.overwrite,
        multi_process=spec is not None,
    )
    for note in notes:
        _out(note)
    parallel.initialize(spec)  # before anything touches a device
    main = parallel.is_main_process()
    if main:
        if args.resume:
            _out(f"resuming {out} with its saved config: {describe(config)}")
        else:
            _out(f"preset {args.preset or 'default'}: {describe(config)}\nrun folder: {out}")
        _out(parallel.describe_devices())
    final = train_and_evaluate(
        config, out, resume=bool(args.resume), overwrite=args.overwrite, progress=not args.no_progress
    )
    if main:
        _out(f"test accuracy {final['val_acc']:.4f} after {final['epoch']} epochs; results in {out}")
    return 0


def _summary_parser(sub) -> None:
    p = sub.add_parser(
        "summary",
        help="per-layer output shapes, parameters and MACs",
        description="Per-layer output shapes, parameters and MACs of a VGG.",
    )
    _config_flags(p, ("arch", "width"), arch="vgg11", width=1.0)
    p.add_argument("--input-size", type=int, default=224, help="input side in pixels")
    p.add_argument("--channels", type=int, default=1, help="input channels")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--head", default="flatten", choices=["flatten", "adaptive", "none"])
    p.add_argument("--pooling", choices=["avg", "max"], help="global pooling with --head none")
    p.add_argument("--detail", action="store_true", help="one row per conv, ReLU and pool")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_summary, parser=p)


def _summary(args: argparse.Namespace) -> int:
    from vggjax.arch import get_arch
    from vggjax.arch.summary import format_table, summarize, to_json

    rows = summarize(
        get_arch(args.arch, width=args.width),
        input_size=args.input_size,
        channels=args.channels,
        num_classes=args.num_classes,
        head=None if args.head == "none" else args.head,
        pooling=args.pooling,
        detail=args.detail,
    )
    _out(to_json(rows) if args.json else format_table(rows))
    return 0


def _eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score a trained run on the Fashion-MNIST test split",
        description="Score a run on the test split: loss, top-1/top-5, per-class scores, confusion "
        "matrix. Writes eval.json, confusion.png, mistakes.png and report.html into RUN_DIR.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by vggjax train")
    p.add_argument("--checkpoint", help="weights folder to use instead of RUN_DIR/weights")
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST IDX files")
    p.add_argument("--limit-test", type=int, metavar="N", help="score only the first N test images")
    p.add_argument("--batch-size", type=int, default=500, help="images per device call")
    p.add_argument("--mistakes", type=int, default=32, metavar="N", help="images in mistakes.png")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    _config_flags(p, ("verify_data",), verify_data=True)
    p.set_defaults(func=_eval, parser=p)


def _eval(args: argparse.Namespace) -> int:
    import json

    from vggjax.tasks.evaluate import evaluate_run, format_report

    report = evaluate_run(
        args.run_dir,
        checkpoint_dir=args.checkpoint,
        data_dir=args.data_dir,
        limit_test=args.limit_test,
        batch_size=args.batch_size,
        num_mistakes=args.mistakes,
        verify_data=args.verify_data,
    )
    if args.json:
        _out(json.dumps(report, indent=1))
    else:
        _out(format_report(report))
        _out(f"wrote eval.json, confusion.png, mistakes.png and report.html in {args.run_dir}")
    return 0


def _predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="classify image files with a run (trained, or converted torchvision weights)",
        description="Classify image files (any format, size or mode) with a run, preprocessed as its "
        "config.json records: a Fashion-MNIST run sees a light garment on black (with --invert auto a "
        "picture whose border is mostly light is inverted first); converted ImageNet weights see "
        "torchvision's resize 256, centre crop 224. Exit status 1 if any file could not be read.",
    )
    _add_predict_args(p, top_k=3)


def _add_predict_args(p: argparse.ArgumentParser, *, top_k: int, imagenet_only: bool = False) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a folder from vggjax train or convert-torchvision")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    p.add_argument("--top-k", "--top", dest="top_k", type=int, default=top_k, help="classes per image")
    p.add_argument("--invert", help="Fashion-MNIST runs: make it light-on-black: auto (default), yes or no")
    p.add_argument("--labels", help="class names, one per line (default: the dataset's, if it has them)")
    p.add_argument("--checkpoint", help="weights folder to use instead of RUN_DIR/weights")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_predict, parser=p, imagenet_only=imagenet_only)


def _predict(args: argparse.Namespace) -> int:
    import json

    from vggjax.run.folder import RunDir
    from vggjax.tasks.predict import check_imagenet_run, format_prediction, predict_files, read_labels

    run = RunDir(args.run_dir).load(args.checkpoint)
    if args.imagenet_only:
        check_imagenet_run(run.config, args.run_dir)
    labels = read_labels(args.labels, run.config.num_classes) if args.labels else None
    results = predict_files(run, args.images, top_k=args.top_k, invert=args.invert, labels=labels)
    for r in results:
        if r.error is not None:
            print(format_prediction(r), file=sys.stderr)
        elif not args.json:
            _out(format_prediction(r))
    if args.json:
        _out(json.dumps([r.to_json() for r in results], indent=1))
    return 1 if any(r.error is not None for r in results) else 0


def _receptive_field_parser(sub) -> None:
    p = sub.add_parser(
        "receptive-field",
        help="per-layer kernel, stride, receptive field, jump and start",
        description="Receptive field r, jump j and start of each conv and pool layer of a VGG, in input "
        "pixels: r_l = r_{l-1} + (k_l-1)*j_{l-1}, j_l = j_{l-1}*s_l.",
    )
    _config_flags(p, ("arch", "width"), arch="vgg11", width=1.0)
    p.add_argument("--all", action="store_true", help="also list the BatchNorm, ReLU and LRN layers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_receptive_field, parser=p)


def _receptive_field(args: argparse.Namespace) -> int:
    from vggjax.arch import get_arch
    from vggjax.arch.receptive_field import format_table, receptive_fields, to_json

    fields = receptive_fields(get_arch(args.arch, width=args.width), pointwise=args.all)
    _out(to_json(fields) if args.json else format_table(fields))
    return 0


def _convert_parser(sub) -> None:
    p = sub.add_parser(
        "convert-torchvision",
        help="convert a torchvision VGG .pth/.safetensors file into a vggjax run folder",
        description="Convert a torchvision VGG state_dict (.pth or .safetensors) into a vggjax run folder "
        "(config.json + weights/), for predict-imagenet and train --init-from. torch is not needed.",
    )
    p.add_argument("weights", help="torchvision state_dict file, e.g. vgg16-397923af.pth")
    p.add_argument(
        "--arch", required=True, help="the arch the file holds: vgg11 ... vgg19, vgg11_bn ... vgg19_bn"
    )
    p.add_argument("--width", type=float, default=1.0, help="width multiplier (1.0 for torchvision's models)")
    p.add_argument(
        "--dataset",
        default="imagenet",
        choices=["imagenet", "fashion-mnist"],
        help="what the weights were trained on (imagenet for torchvision's)",
    )
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--overwrite", action="store_true", help="allow a non-empty --out folder")
    p.set_defaults(func=_convert, parser=p)


def _convert(args: argparse.Namespace) -> int:
    from vggjax.interop.pretrained import convert_torchvision

    config = convert_torchvision(
        args.weights, args.arch, args.out, width=args.width, dataset=args.dataset, overwrite=args.overwrite
    )
    _out(
        f"converted {args.weights} ({config.arch}, {config.channels} channels, {config.num_classes} classes, "
        f"head {config.head}) to {args.out}"
    )
    return 0


def _export_parser(sub) -> None:
    p = sub.add_parser(
        "export-torchvision",
        help="write a run's weights as a torchvision VGG state_dict",
        description="Write a run's weights as a torchvision VGG state_dict: .safetensors (no torch needed; "
        "safetensors.torch.load_file in PyTorch) or .pth (torch.save format; needs torch).",
    )
    p.add_argument("run_dir", help="run folder (from vggjax train or convert-torchvision)")
    p.add_argument("out", help="output file, .pth or .safetensors")
    p.set_defaults(func=_export, parser=p)


def _export(args: argparse.Namespace) -> int:
    from vggjax.interop.pretrained import export_torchvision

    state = export_torchvision(args.run_dir, args.out)
    _out(f"wrote {len(state)} tensors to {args.out}")
    return 0


def _predict_imagenet_parser(sub) -> None:
    p = sub.add_parser(
        "predict-imagenet",
        help="vggjax predict, top 5 by default, for converted torchvision weights only",
        description="vggjax predict for a run from convert-torchvision (it refuses others): resize 256, "
        "centre crop 224, RGB in [0, 1], torchvision's mean/std; prints the top classes.",
    )
    _add_predict_args(p, top_k=5, imagenet_only=True)


def _bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="train-step and inference throughput, GFLOP/s, share of peak, memory",
        description="Throughput of the jitted train step and inference of a VGG on this machine: "
        "median images/s of several timed runs after compiling, achieved GFLOP/s from the model's "
        "MACs (a train step counted as 3x the forward pass), its fraction of a measured matmul "
        "peak, compile time, peak memory and the input pipeline's share of the step time.",
    )
    model = {"arch": "vgg11", "width": 0.25, "image_size": 32, "channels": 1, "batch_size": 128}
    speed = {"hidden": 4096, "num_classes": 10, "head": "flatten", "impl": "auto", "dtype": "float32"}
    _config_flags(p, (*model, *speed), **model, **speed)
    p.add_argument("--source-size", type=int, default=28, help="side of the uint8 images fed to the step")
    p.add_argument("--steps", type=int, default=3, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (the median is reported)")
    p.add_argument("--only", choices=["train", "inference"], help="measure one of the two")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_bench, parser=p)


def _bench(args: argparse.Namespace) -> int:
    import json

    from vggjax.bench import BenchConfig, format_report, run_bench
    from vggjax.config import TrainConfig

    given = vars(args)
    train = {f.name: given[f.name] for f in dataclasses.fields(TrainConfig) if f.name in given}
    own = {f.name: given[f.name] for f in dataclasses.fields(BenchConfig) if f.name in given}
    report = run_bench(BenchConfig(**own, train=TrainConfig(**train)))
    _out(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``vggjax`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="vggjax",
        description="VGG networks in JAX/Flax: build, inspect, train, evaluate, predict, benchmark.",
    )
    parser.add_argument("--version", action=_Version, help="print the versions a bug report needs, and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _summary_parser(sub)
    _eval_parser(sub)
    _predict_parser(sub)
    _receptive_field_parser(sub)
    _convert_parser(sub)
    _export_parser(sub)
    _predict_imagenet_parser(sub)
    _bench_parser(sub)
    return parser


class _Version(argparse.Action):
    """``vggjax --version``: vggjax, its main dependencies, Python, JAX's default backend and devices."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        import importlib.metadata
        import platform

        import jax

        names = ("vggjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
        for name in names:
            print(f"{name} {importlib.metadata.version(name)}")
        print(f"python {platform.python_version()} ({platform.machine()}, {platform.system()})")
        devices = jax.devices()
        print(f"backend {jax.default_backend()}, {len(devices)} device(s): {devices[0].device_kind}")
        parser.exit()


def _out(*values: object) -> None:
    """``print`` to standard output, flushed; a closed or full stdout becomes a :class:`StdoutError`.

    A closed pipe (``| head``) stays a ``BrokenPipeError``, which ``main`` ends quietly.
    """
    if sys.stdout is None:  # started with stdout closed (>&-): print() would drop it silently
        raise StdoutError("cannot write to standard output (it is closed); redirect it to a file")
    try:
        if values:
            print(*values)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        reason = e.strerror or e
        raise StdoutError(f"cannot write to standard output ({reason}); redirect it to a file") from None


def _terminated(signum, frame):
    raise Interrupted("stopped by SIGTERM outside the training loop", signum)


def _discard_stdout() -> None:
    if sys.stdout is None:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (captured in tests, or closed)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    0 ok, 1 some ``predict`` files could not be read (the rest were predicted), 2 bad
    input, 3 training diverged, 130 stopped by Ctrl-C, 141 the reader of stdout went
    away (``vggjax summary | head -3``), 143 stopped by SIGTERM.
    """
    args, unknown = build_parser().parse_known_args(argv)
    if unknown:  # argparse would show the top-level usage; the subcommand's is the useful one
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    keep_freed_memory()  # before JAX allocates its first buffer
    # orbax logs through absl; what a user needs comes back to us as one error line
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    # SIGTERM stops like Ctrl-C; while training, the loop saves a checkpoint first (vggjax.training.loop)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        status = args.func(args)
        _out()  # a closed pipe, or a closed or full stdout, shows here rather than at exit
        return status
    except BrokenPipeError:
        # The reader (head, less) has gone, as SIGPIPE would tell a C program: stop
        # quietly with the shell's status for that (128 + SIGPIPE), and point stdout at
        # /dev/null so that the flush at exit does not fail again (Python's docs, signal).
        _discard_stdout()
        return 128 + signal.SIGPIPE
    except VggjaxError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # Interrupted (checkpoint saved) or a plain Ctrl-C
        print(str(e) or "interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
