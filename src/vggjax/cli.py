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
import time
from collections.abc import Sequence
from pathlib import Path

from vggjax.errors import ConfigError, Interrupted, VggjaxError
from vggjax.runtime import keep_freed_memory


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", help="name (vgg11, vgg16_bn, A-LRN, ...) or literal '((1,16),(1,32),...)'")
    p.add_argument("--width", type=float, help="width multiplier on every block's channels")


def _add_speed_args(p: argparse.ArgumentParser, defaults: bool = False) -> None:
    p.add_argument(
        "--impl",
        choices=["auto", "xla", "cpu_fast"],
        default="auto" if defaults else None,
        help="auto (default): fast matmul-shaped ops on CPU, Flax's elsewhere; same numbers",
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32" if defaults else None,
        help="compute dtype (params stay float32); bfloat16 is for GPUs/TPUs",
    )


def _train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a VGG on Fashion-MNIST", description="Train a VGG on Fashion-MNIST."
    )
    p.add_argument("--preset", help="default (2-core CPU) or d2l (the chapter's setting)")
    _add_model_args(p)
    p.add_argument("--image-size", type=int, help="model input side in pixels")
    p.add_argument("--head", choices=["flatten", "adaptive"])
    p.add_argument("--init", dest="init_scheme", choices=["he", "torchvision", "lecun"])
    p.add_argument("--dropout", dest="dropout_rate", type=float)
    p.add_argument("--hidden", type=int, help="width of fc6 and fc7")
    _add_speed_args(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["constant", "cosine"])
    p.add_argument("--warmup-epochs", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST IDX files")
    p.add_argument("--limit-train", type=int, metavar="N", help="use the first N training examples")
    p.add_argument("--limit-test", type=int, metavar="N", help="use the first N test examples")
    p.add_argument("--checkpoint-every", type=int, metavar="N", help="also checkpoint every N steps")
    p.add_argument("--keep", type=int, metavar="K", help="keep the K newest checkpoints (and the best)")
    p.add_argument(
        "--init-from",
        metavar="RUN_DIR",
        help="start from this run's weights (e.g. from convert-torchvision); a new fc8 if the classes differ",
    )
    p.add_argument(
        "--adapt-channels",
        action="store_true",
        default=None,
        help="with --init-from: adapt 3-channel weights to grey images (timm's in_chans: RGB kernels summed)",
    )
    p.add_argument("--out", help="run folder (default runs/<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint, with its saved config"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_distributed_args(p)
    p.set_defaults(func=_train)


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
    from vggjax.config import TrainConfig, get_preset
    from vggjax.run.folder import check_new_run_dir
    from vggjax.training import parallel
    from vggjax.training.train import describe, train_and_evaluate

    for name in ("out", "resume", "init_from", "data_dir"):
        # an empty value (e.g. an unset shell variable) would read as no flag at all, or as "."
        if getattr(args, name) is not None and not getattr(args, name).strip():
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} is empty; give it a folder, or drop {flag}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    preset = get_preset(args.preset) if args.preset else None
    if args.init_from and not args.resume:
        from vggjax.interop.pretrained import inherit_model, read_run

        preset = inherit_model(preset or get_preset("default"), read_run(args.init_from)[0])
    spec = parallel.resolve_spec(
        coordinator=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        auto=bool(args.distributed),
        timeout=args.dist_timeout,
    )
    if spec is not None and not (args.out or args.resume):
        raise ConfigError("a multi-process run needs --out, one folder that every process can reach")
    if args.resume:
        config, out = _resume_config(args, overrides, preset), args.resume
    else:
        config = dataclasses.replace(preset or get_preset("default"), **overrides).validate()
        out = args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
        check_new_run_dir(out, overwrite=args.overwrite)
    parallel.initialize(spec)  # before anything touches a device
    main = parallel.is_main_process()
    if main:
        if args.resume:
            print(f"resuming {out} with its saved config: {describe(config)}", flush=True)
        else:
            print(f"preset {args.preset or 'default'}: {describe(config)}\nrun folder: {out}", flush=True)
        print(parallel.describe_devices(), flush=True)
    final = train_and_evaluate(
        config, out, resume=bool(args.resume), overwrite=args.overwrite, progress=not args.no_progress
    )
    if main:
        print(f"test accuracy {final['val_acc']:.4f} after {final['epoch']} epochs; results in {out}")
    return 0


def _resume_config(args: argparse.Namespace, overrides: dict, preset):
    from vggjax.config import TrainConfig
    from vggjax.run.folder import resume_config

    if args.out and Path(args.out).absolute() != Path(args.resume).absolute():
        raise ConfigError(f"--out {args.out} and --resume {args.resume} differ; drop --out to resume")
    if args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; choose one")
    config = resume_config(args.resume, overrides, preset=preset)
    saved = TrainConfig.load(Path(args.resume) / "config.json")
    if config.epochs != saved.epochs and (config.schedule != "constant" or config.warmup_epochs):
        print(
            f"note: --epochs {config.epochs} (was {saved.epochs}) recomputes the {config.schedule} "
            "schedule and warm-up for the new length from here on",
            flush=True,
        )
    return config


def _summary_parser(sub) -> None:
    p = sub.add_parser(
        "summary",
        help="per-layer output shapes, parameters and MACs",
        description="Per-layer output shapes, parameters and MACs of a VGG.",
    )
    _add_model_args(p)
    p.set_defaults(arch="vgg11", width=1.0)
    p.add_argument("--input-size", type=int, default=224, help="input side in pixels")
    p.add_argument("--channels", type=int, default=1, help="input channels")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--head", default="flatten", choices=["flatten", "adaptive", "none"])
    p.add_argument("--pooling", choices=["avg", "max"], help="global pooling with --head none")
    p.add_argument("--detail", action="store_true", help="one row per conv, ReLU and pool")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_summary)


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
    print(to_json(rows) if args.json else format_table(rows))
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
    p.set_defaults(func=_eval)


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
    )
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_report(report))
        print(f"wrote eval.json, confusion.png, mistakes.png and report.html in {args.run_dir}")
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
    p.set_defaults(func=_predict, imagenet_only=imagenet_only)


def _predict(args: argparse.Namespace) -> int:
    import json

    from vggjax.run.runs import load_run
    from vggjax.tasks.predict import check_imagenet_run, format_prediction, predict_files, read_labels

    run = load_run(args.run_dir, args.checkpoint)
    if args.imagenet_only:
        check_imagenet_run(run.config, args.run_dir)
    labels = read_labels(args.labels, run.config.num_classes) if args.labels else None
    results = predict_files(run, args.images, top_k=args.top_k, invert=args.invert, labels=labels)
    for r in results:
        if r.error is not None:
            print(format_prediction(r), file=sys.stderr)
        elif not args.json:
            print(format_prediction(r))
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=1))
    return 1 if any(r.error is not None for r in results) else 0


def _receptive_field_parser(sub) -> None:
    p = sub.add_parser(
        "receptive-field",
        help="per-layer kernel, stride, receptive field, jump and start",
        description="Receptive field r, jump j and start of each conv and pool layer of a VGG, in input "
        "pixels: r_l = r_{l-1} + (k_l-1)*j_{l-1}, j_l = j_{l-1}*s_l.",
    )
    _add_model_args(p)
    p.set_defaults(arch="vgg11", width=1.0)
    p.add_argument("--all", action="store_true", help="also list the BatchNorm, ReLU and LRN layers")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_receptive_field)


def _receptive_field(args: argparse.Namespace) -> int:
    from vggjax.arch import get_arch
    from vggjax.arch.receptive_field import format_table, receptive_fields, to_json

    fields = receptive_fields(get_arch(args.arch, width=args.width), pointwise=args.all)
    print(to_json(fields) if args.json else format_table(fields))
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
    p.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from vggjax.interop.pretrained import convert_torchvision

    config = convert_torchvision(
        args.weights, args.arch, args.out, width=args.width, dataset=args.dataset, overwrite=args.overwrite
    )
    print(
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
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from vggjax.interop.pretrained import export_torchvision

    state = export_torchvision(args.run_dir, args.out)
    print(f"wrote {len(state)} tensors to {args.out}")
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
    _add_model_args(p)
    p.set_defaults(arch="vgg11", width=0.25)
    p.add_argument("--image-size", type=int, default=32, help="model input side in pixels")
    p.add_argument("--channels", type=int, default=1, help="input channels")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", type=int, default=4096, help="width of fc6 and fc7")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--head", default="flatten", choices=["flatten", "adaptive"])
    _add_speed_args(p, defaults=True)
    p.add_argument("--source-size", type=int, default=28, help="side of the uint8 images fed to the step")
    p.add_argument("--steps", type=int, default=3, help="steps per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs (the median is reported)")
    p.add_argument("--only", choices=["train", "inference"], help="measure one of the two")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    import json

    from vggjax.bench import BenchConfig, format_report, run_bench

    fields = {f.name for f in dataclasses.fields(BenchConfig)}
    config = BenchConfig(**{k: v for k, v in vars(args).items() if k in fields})
    report = run_bench(config, train=args.only != "inference", inference=args.only != "train")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``vggjax`` argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="vggjax",
        description="VGG networks in JAX/Flax: build, inspect, train, evaluate, predict, benchmark.",
    )
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


def _terminated(signum, frame):
    raise Interrupted("stopped by SIGTERM outside the training loop", signum)


def _discard_stdout() -> None:
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
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # before JAX allocates its first buffer
    # orbax logs through absl; what a user needs comes back to us as one error line
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    # SIGTERM stops like Ctrl-C; while training, the loop saves a checkpoint first (vggjax.training.loop)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here rather than at exit
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
