"""``train_and_evaluate(config, run_dir)``: the one function that wires a run together.

config → data → model → jitted steps → metrics, curves and weights in ``run_dir``::

    run_dir/config.json     the TrainConfig
    run_dir/metrics.jsonl   one JSON line per epoch
    run_dir/curves.png      train loss, val loss, val accuracy against epoch
    run_dir/weights/        final Flax variables (orbax)
    run_dir/events.out.tfevents.*   TensorBoard scalars (see ``metrics_writer``)
    run_dir/report.html     config, metrics and pictures in one page (see ``report``)

Training is data-parallel over every device (``vggjax.parallel``): each global batch is
split over a ``"data"`` mesh axis and the state is replicated. In a multi-process run
every process calls this function; only process 0 logs and writes files, and all of
them save the weights together.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from tqdm.auto import tqdm

from vggjax import checkpoint, data, parallel, pretrained
from vggjax.config import TrainConfig
from vggjax.errors import ConfigError
from vggjax.files import atomic_write_text, prepare_run_dir, write_jsonl
from vggjax.metrics_writer import LOG_EVERY, MetricsWriter
from vggjax.models import VGG
from vggjax.plots import plot_curves
from vggjax.report import write_report
from vggjax.steps import TrainState, create_train_state, eval_step, train_step

STUCK_TOLERANCE = 0.02  # a first-epoch loss within this of ln(classes) means no learning


def make_model(config: TrainConfig, num_classes: int | None = None) -> VGG:
    """The :class:`~vggjax.models.VGG` a config describes (``num_classes`` overrides the config's)."""
    return VGG(
        config.resolved_arch(),
        num_classes=num_classes or config.num_classes,
        dropout_rate=config.dropout_rate,
        head=config.head,
        hidden=config.hidden,
        init_scheme=config.init_scheme,
    )


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum, coupled weight decay (PyTorch's convention) and the LR schedule."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, int(config.warmup_epochs * steps_per_epoch))
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(config.lr, total - warmup)
    else:
        decay = optax.constant_schedule(config.lr)
    schedule = optax.join_schedules([optax.linear_schedule(0.0, config.lr, warmup), decay], [warmup])
    return optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(schedule, momentum=config.momentum or None),
    )


def evaluate(
    eval_fn: Callable, state: TrainState, ds: dict, batch_size: int, sharding: NamedSharding | None = None
) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy over every example of ``ds`` (padded, masked batches).

    With ``sharding`` (``parallel.batch_sharding``), each batch is split over the mesh;
    ``eval_fn`` returns replicated sums, so every process gets the same result.
    """
    put = (lambda b: parallel.shard_batch(b, sharding)) if sharding is not None else (lambda b: b)
    sums = [eval_fn(state, put(b)) for b in data.batches(ds, batch_size, shuffle=False, pad=True)]
    total = jax.tree.map(lambda *xs: float(np.sum(xs)), *jax.device_get(sums))
    n = total["count"]
    return {"loss": total["loss"] / n, "acc": total["correct"] / n, "acc5": total["correct5"] / n}


def train_and_evaluate(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Trains ``config`` on Fashion-MNIST, evaluating on the test split after each epoch.

    Args:
      config: the run's settings; validated first.
      run_dir: folder for ``config.json``, ``metrics.jsonl``, ``curves.png``, ``weights/``.
      overwrite: allow a non-empty ``run_dir``.
      progress: show a tqdm bar per epoch (loss and images/s).
      log: where one-line messages go (process 0 only).

    Returns:
      The last epoch's ``metrics.jsonl`` record.

    Raises:
      ConfigError, ArchError: for invalid settings (before anything is written), including
        a ``batch_size`` or ``eval_batch_size`` that does not split over the devices, or a
        network that differs from the ``init_from`` run's.
      CheckpointError: when the ``init_from`` weights cannot be read or do not fit
        (another channel count without ``adapt_channels``).
      DataError: when Fashion-MNIST cannot be found, downloaded or read.
    """
    config.validate()
    if config.dataset != "fashion-mnist":
        raise ConfigError(
            f"vggjax train trains on Fashion-MNIST, but this config's dataset is {config.dataset!r}; "
            "to fine-tune converted weights pass --init-from RUN_DIR instead"
        )
    source = pretrained.read_run(config.init_from) if config.init_from else None
    if source:
        pretrained.check_same_model(config, source[0])
    run_dir = Path(run_dir)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, flag="--eval-batch-size")
    main = parallel.is_main_process()
    progress, log = progress and main, log if main else (lambda s: None)
    train_ds, test_ds = data.load_fashion_mnist(
        config.data_dir, limit_train=config.limit_train, limit_test=config.limit_test, progress=progress
    )
    n_train = len(train_ds["label"])
    if n_train < config.batch_size:
        raise ConfigError(
            f"--batch-size {config.batch_size} is larger than the {n_train} training examples; "
            "lower --batch-size or raise --limit-train"
        )
    channels = train_ds["image"].shape[-1]
    if channels != config.channels:
        raise ConfigError(
            f"the images have {channels} channel(s) but the config says channels={config.channels}; "
            "use channels=1 for Fashion-MNIST (--adapt-channels adapts 3-channel --init-from weights)"
        )
    if source:
        pretrained.check_channels(source[1], channels, adapt_channels=config.adapt_channels)
    prepare_run_dir(run_dir, overwrite=overwrite)  # every process checks before any writes
    parallel.sync("run folder checked")
    if main:
        atomic_write_text(run_dir / "config.json", config.to_json() + "\n")
    board = MetricsWriter(run_dir, config.to_json(), active=main)

    steps_per_epoch = data.num_batches(n_train, config.batch_size, drop_remainder=True)
    model = make_model(config)
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    init = functools.partial(
        create_train_state,
        model,
        make_optimizer(config, steps_per_epoch),
        input_shape=(1, config.image_size, config.image_size, channels),
    )
    rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    if source:
        init = functools.partial(_init_from, init, adapt_channels=config.adapt_channels, log=log)
        state = jax.jit(init, out_shardings=rep)(init_rng, source[1])
        log(f"initialised from {config.init_from}")
    else:
        state = jax.jit(init, out_shardings=rep)(init_rng)
    train_fn = jax.jit(
        functools.partial(train_step, image_size=config.image_size),
        in_shardings=(rep, split, rep),
        out_shardings=rep,
        donate_argnums=0,
    )
    eval_fn = jax.jit(functools.partial(eval_step, image_size=config.image_size), out_shardings=rep)

    records: list[dict] = []
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        state, train_loss, train_acc = _train_epoch(
            train_fn, state, train_ds, config, epoch, dropout_rng, steps_per_epoch, progress, split, board
        )
        train_seconds = time.perf_counter() - start
        val = evaluate(eval_fn, state, test_ds, config.eval_batch_size, split)
        record = {
            "epoch": epoch,
            "step": int(state.step),
            "train_loss": train_loss,
            "train_acc": train_acc,
            "val_loss": val["loss"],
            "val_acc": val["acc"],
            "val_acc5": val["acc5"],
            "seconds": round(time.perf_counter() - start, 3),
            "train_images_per_s": round(steps_per_epoch * config.batch_size / train_seconds, 1),
        }
        records.append(record)
        if main:
            write_jsonl(run_dir / "metrics.jsonl", records)
            board.epoch(record)
            plot_curves(records, run_dir / "curves.png")
        log(
            f"epoch {epoch}/{config.epochs}: train loss {train_loss:.4f}, val loss {val['loss']:.4f}, "
            f"val acc {val['acc']:.4f}, {record['seconds']:.1f} s"
        )
        if epoch == 1 and main:
            _warn_if_stuck(train_loss, model.num_classes, log)

    checkpoint.save_variables(run_dir / "weights", {"params": state.params, "batch_stats": state.batch_stats})
    board.close()
    if main:
        write_report(run_dir)
    if jax.process_count() > 1:
        parallel.check_replicas_agree(state.params)
        log(f"params identical on all {jax.process_count()} processes ({mesh.devices.size} devices)")
    return records[-1]


def _init_from(init: Callable, rng: jax.Array, source: dict, *, adapt_channels: bool, log) -> TrainState:
    """``init(rng)`` with its variables filled from ``source`` (see ``pretrained.transfer``); jittable."""
    state = init(rng)
    fresh = {"params": state.params, "batch_stats": state.batch_stats}
    start = pretrained.transfer(source, fresh, adapt_channels=adapt_channels, log=log)
    return state.replace(params=start["params"], batch_stats=start["batch_stats"])


def _train_epoch(train_fn, state, ds, config, epoch, dropout_rng, steps, progress, sharding, board):
    """One pass over the shuffled training set; returns the state and epoch means."""
    batches = data.batches(
        ds, config.batch_size, shuffle=True, seed=config.seed, epoch=epoch, drop_remainder=True
    )
    metrics = []
    bar = tqdm(
        total=steps, desc=f"epoch {epoch}/{config.epochs}", unit="step", disable=not progress, leave=False
    )
    start = time.perf_counter()
    board.start_epoch((epoch - 1) * steps)
    with bar:
        for i, batch in enumerate(batches, 1):
            state, m = train_fn(state, parallel.shard_batch(batch, sharding), dropout_rng)
            metrics.append(m)
            bar.update()
            if i % LOG_EVERY == 0 or i == steps:
                loss = float(m["loss"])  # one host sync per LOG_EVERY steps
                board.train((epoch - 1) * steps + i, loss, config.batch_size)
                rate = i * config.batch_size / (time.perf_counter() - start)
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}")
    means = jax.tree.map(lambda *xs: float(np.mean(xs)), *jax.device_get(metrics))
    return state, means["loss"], means["accuracy"]


def _warn_if_stuck(train_loss: float, num_classes: int, log: Callable[[str], None]) -> None:
    chance = math.log(num_classes)
    if abs(train_loss - chance) < STUCK_TOLERANCE:
        message = (
            f"training looks stuck: the epoch-1 loss {train_loss:.4f} is still ln({num_classes}) = "
            f"{chance:.4f}, the loss of a uniform guess; try another --lr or --init"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        log(f"warning: {message}")


def describe(config: TrainConfig) -> str:
    """A short multi-line description of a config, printed at the start of a run."""
    arch = config.resolved_arch()
    lines = [f"  {f.name} = {getattr(config, f.name)!r}" for f in dataclasses.fields(config)]
    return f"arch {arch.name or 'custom'} {arch} at {config.image_size}x{config.image_size}\n" + "\n".join(
        lines
    )
