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
    from vggjax.run.resume import already_complete, train_config
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
    if args.resume and (done := already_complete(out, config)):  # exit 0: the run is as asked
        if main:
            _out(done)
        return 0
    if main:
        preset = f"preset {args.preset or 'default'}"
        start = f"resuming {out} with its saved config" if args.resume else preset
        _out(f"{start}: {describe(config)}" + ("" if args.resume else f"\nrun folder: {out}"))
        _out(parallel.describe_devices())
    final = train_and_evaluate(
        config, out, resume=bool(args.resume), overwrite=args.overwrite, progress=not args.no_progress
    )
    if main:
        _out(f"test accuracy {final['test_acc']:.4f} after {final['epoch']} epochs; results in {out}")
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
        split=args.split,
        tta=args.tta,
    )
    done = f"wrote eval.json, confusion.png, mistakes.png and report.html in {args.run_dir}"
    _print(args, report, f"{format_report(report)}\n{done}")
    return 0


def predict(args: argparse.Namespace) -> int:
    from vggjax.errors import ConfigError
    from vggjax.interop import hub
    from vggjax.run.folder import RunDir
    from vggjax.tasks.predict import check_imagenet_run, format_prediction, predict_files, read_labels

    w = hub.named(args.run_dir)
    if w is not None and args.checkpoint:
        raise ConfigError(
            f"--checkpoint picks the weights of a run folder, but {args.run_dir} names torchvision's; drop it"
        )
    run = RunDir(args.run_dir).load(args.checkpoint) if w is None else hub.load_run(w, log=_out)
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
    from vggjax.errors import CheckpointError
    from vggjax.interop import hub
    from vggjax.interop.pretrained import convert_torchvision
    from vggjax.run.folder import RunDir

    w, given = hub.named(args.weights), {"--arch": args.arch, "--width": args.width}
    if w is None and args.arch is None:
        raise CheckpointError(
            f"--arch is needed with a file: the arch {args.weights} holds (vgg11 ... vgg19_bn, or a "
            "literal); a weights name such as vgg16 implies it"
        )
    if w is not None:
        hub.check_convertible(w, given)
        RunDir(args.out).check_new(overwrite=args.overwrite)  # before a download, not after
    path = args.weights if w is None else hub.weights_file(w.arch, w.name)
    arch, width = (args.arch, args.width or 1.0) if w is None else (w.arch, w.width)
    c = convert_torchvision(path, arch, args.out, width=width, dataset=args.dataset, overwrite=args.overwrite)
    shape = f"{c.arch}, {c.channels} channels, {c.num_classes} classes, head {c.head}"
    _out(f"converted {args.weights if w is None else f'{w.key} ({path})'} ({shape}) to {args.out}")
    return 0


def weights_list(args: argparse.Namespace) -> int:
    from vggjax.interop import hub

    _print(args, [w.to_json() for w in hub.REGISTRY.values()], hub.format_registry())
    return 0


def weights_get(args: argparse.Namespace) -> int:
    from vggjax.interop import hub

    w = hub.parse(args.arch, args.name)
    _out(str(hub.weights_file(w.arch, w.name, progress=False if args.no_progress else None)))
    return 0


def export(args: argparse.Namespace) -> int:
    from vggjax.interop.pretrained import export_torchvision

    state = export_torchvision(args.run_dir, args.out, overwrite=args.overwrite)
    _out(f"wrote {len(state)} tensors to {args.out}")
    return 0


def export_model(args: argparse.Namespace) -> int:
    from vggjax.errors import ConfigError
    from vggjax.tasks.export import export_run, format_result

    if args.batch is not None and args.dynamic_batch:
        raise ConfigError("give --batch N or --dynamic-batch, not both")
    result = export_run(
        args.source,
        args.out,
        format=args.format,
        batch=args.batch,
        image_size=args.image_size,
        preprocess=args.preprocess,
        output=args.output,
        features=args.features.split(",") if args.features is not None else None,
        platforms=args.platforms.split(",") if args.platforms is not None else None,
        overwrite=args.overwrite,
        checkpoint=args.checkpoint,
        arch=args.arch,
        width=args.width,
        dataset=args.dataset,
    )
    _out(format_result(result))
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


def lpips(args: argparse.Namespace) -> int:
    from vggjax.errors import ConfigError
    from vggjax.perceptual.weights import load_lpips
    from vggjax.tasks.lpips import format_results, list_pairs, plan_pairs, score_pairs, to_json

    pairs = list_pairs(args.images, args.dir_a, args.dir_b)
    if args.trunk is None:
        raise ConfigError("give --trunk FILE: a torchvision VGG-16 state_dict such as vgg16-397923af.pth")
    job = plan_pairs(pairs, resize=args.resize, batch_size=args.batch_size, spatial_out=args.spatial_out)
    metric = load_lpips(
        args.trunk, lin=args.lin, version=args.lpips_version, baseline=args.baseline, dtype=args.dtype
    )
    results = score_pairs(metric, job, progress=args.dir_a is not None)
    for r in results:
        if r.error is not None:
            print(f"error: {r.error}", file=sys.stderr)
    maps = sum(r.map is not None for r in results)
    text = format_results(results, metric.variant)
    _print(
        args,
        to_json(results, metric.variant),
        text + (f"\nwrote {maps} heat maps to {args.spatial_out}" if maps else ""),
    )
    return 1 if any(r.error is not None for r in results) else 0
