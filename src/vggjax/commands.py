"""What each ``vggjax`` subcommand does with its parsed flags: one library call, then its output.

:mod:`vggjax.cli` holds the grammar (the flags) and points each subcommand here. Every
function takes the ``argparse.Namespace`` and returns the exit status; libraries are imported
inside, so ``vggjax summary`` never loads JAX. Standard output is written through
:func:`vggjax.runtime.out` only.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from vggjax.runtime import out as _out


def _print(args: argparse.Namespace, result: Any, text: str) -> None:
    """The result as JSON with ``--json``, else as ``text``."""
    import json

    _out(json.dumps(result, indent=1) if args.json else text)


def train(args: argparse.Namespace) -> int:
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
        auto=args.distributed,
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
        preset = f"preset {args.preset or 'default'}"
        start = f"resuming {out} with its saved config" if args.resume else preset
        _out(f"{start}: {describe(config)}" + ("" if args.resume else f"\nrun folder: {out}"))
        _out(parallel.describe_devices())
    final = train_and_evaluate(
        config, out, resume=bool(args.resume), overwrite=args.overwrite, progress=not args.no_progress
    )
    if main:
        _out(f"test accuracy {final['val_acc']:.4f} after {final['epoch']} epochs; results in {out}")
    return 0


def summary(args: argparse.Namespace) -> int:
    from vggjax.arch import get_arch, warn_if_upsampling
    from vggjax.arch.summary import format_table, summarize, to_json

    arch, head = get_arch(args.arch, width=args.width), None if args.head == "none" else args.head
    rows = summarize(
        arch,
        input_size=args.input_size,
        channels=args.channels,
        num_classes=args.num_classes,
        head=head,
        pooling=args.pooling,
        detail=args.detail,
    )
    warn_if_upsampling(arch, args.input_size, head)
    _out(to_json(rows) if args.json else format_table(rows))
    return 0


def evaluate(args: argparse.Namespace) -> int:
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
    done = f"wrote eval.json, confusion.png, mistakes.png and report.html in {args.run_dir}"
    _print(args, report, f"{format_report(report)}\n{done}")
    return 0


def predict(args: argparse.Namespace) -> int:
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
    good = [format_prediction(r) for r in results if r.error is None]
    _print(args, [r.to_json() for r in results], "\n".join(good))
    return 1 if any(r.error is not None for r in results) else 0


def receptive_field(args: argparse.Namespace) -> int:
    from vggjax.arch import get_arch
    from vggjax.arch.receptive_field import format_table, receptive_fields, to_json

    fields = receptive_fields(get_arch(args.arch, width=args.width), pointwise=args.all)
    _out(to_json(fields) if args.json else format_table(fields))
    return 0


def convert(args: argparse.Namespace) -> int:
    from vggjax.interop.pretrained import convert_torchvision

    c = convert_torchvision(
        args.weights, args.arch, args.out, width=args.width, dataset=args.dataset, overwrite=args.overwrite
    )
    shape = f"{c.arch}, {c.channels} channels, {c.num_classes} classes, head {c.head}"
    _out(f"converted {args.weights} ({shape}) to {args.out}")
    return 0


def export(args: argparse.Namespace) -> int:
    from vggjax.interop.pretrained import export_torchvision

    _out(f"wrote {len(export_torchvision(args.run_dir, args.out))} tensors to {args.out}")
    return 0


def bench(args: argparse.Namespace) -> int:
    from vggjax.bench import BenchConfig, format_report, run_bench
    from vggjax.config import TrainConfig

    given = vars(args)
    train = {f.name: given[f.name] for f in dataclasses.fields(TrainConfig) if f.name in given}
    own = {f.name: given[f.name] for f in dataclasses.fields(BenchConfig) if f.name in given}
    report = run_bench(BenchConfig(**own, train=TrainConfig(**train)))
    _print(args, report, format_report(report))
    return 0
