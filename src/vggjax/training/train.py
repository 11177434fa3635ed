"""``train_and_evaluate(config, run_dir)``: the one function that wires a run together.

config → data → model → jitted steps → :class:`~vggjax.training.loop.Trainer` → metrics,
curves, TensorBoard events, checkpoints, weights and the report in ``run_dir`` (the files
:class:`~vggjax.run.folder.RunDir` lists).

Training is data-parallel over every device (``vggjax.training.parallel``): each global batch is
split over a ``"data"`` mesh axis and the state is replicated. In a multi-process run
every process calls this function; only process 0 logs and writes files, and all of
them save checkpoints and the weights together.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path

import jax

from vggjax import data
from vggjax.arch.layout import warn_if_upsampling
from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError, ConfigError
from vggjax.interop import hub, pretrained
from vggjax.nn.fit import from_config
from vggjax.nn.vgg import VGG
from vggjax.run import weights
from vggjax.run.checkpoint import RunCheckpoints
from vggjax.run.files import read_jsonl, write_jsonl
from vggjax.run.folder import RunDir
from vggjax.run.meta import Position, model_signature
from vggjax.run.metrics import MetricsWriter
from vggjax.run.records import SPLIT_NAMES, honest_records, selection_split
from vggjax.run.report import write_report
from vggjax.run.resume import already_complete, check_same_model
from vggjax.training import parallel
from vggjax.training.augment import Augment
from vggjax.training.inputs import load_run_data
from vggjax.training.loop import Trainer, evaluate
from vggjax.training.memory import check_memory
from vggjax.training.optim import make_optimizer, make_schedule
from vggjax.training.steps import TrainState, create_train_state, eval_step, train_step

__all__ = ["describe", "evaluate", "train_and_evaluate"]


@dataclasses.dataclass(frozen=True)
class Steps:
    """What a run compiles, built from its config by :func:`build_step` (``vggjax bench`` times the same).

    Attributes:
      model: the config's :class:`~vggjax.nn.vgg.VGG`.
      init: ``init(rng) -> TrainState`` with the config's optimizer, not jitted (``init_from`` wraps it).
      init_rng, dropout_rng: the init key and the run's base dropout key, split from ``config.seed``.
      train_fn: ``train_step(state, batch, rng) -> (state, metrics)``, jitted: state replicated
        and donated, batch split over the mesh.
      eval_fn: ``eval_step(state, batch) -> sums``, jitted, sums replicated: the validation after
        each epoch, on the plain images (with ``config.tta``'s views if ``tta_every_epoch``).
      final_eval_fn: the same with ``config.tta``'s views, which score the final weights (the last
        epoch's validation and the test split); ``eval_fn`` itself when the two are the same.
      replicated, batch_sharding: the state's and a global batch's shardings.
    """

    model: VGG
    init: Callable[[jax.Array], TrainState]
    init_rng: jax.Array
    dropout_rng: jax.Array
    train_fn: Callable
    eval_fn: Callable
    final_eval_fn: Callable
    replicated: jax.sharding.NamedSharding
    batch_sharding: jax.sharding.NamedSharding

    def init_state(self) -> TrainState:
        """A fresh state drawn from ``init_rng``, replicated over the mesh."""
        return jax.jit(self.init, out_shardings=self.replicated)(self.init_rng)


def build_step(config: TrainConfig, mesh: jax.sharding.Mesh, steps_per_epoch: int) -> Steps:
    """The model, optimizer, initial state and jitted, sharded, donated steps of ``config``.

    Args:
      config: a validated config; its model, optimizer, ``seed``, ``image_size`` and
        ``channels`` are used.
      mesh: the devices (:func:`vggjax.training.parallel.data_mesh`).
      steps_per_epoch: train steps per epoch, which the learning-rate schedule spans.
    """
    init_rng, dropout_rng = jax.random.split(jax.random.key(config.seed))
    model = from_config(config)
    init = functools.partial(
        create_train_state,
        model,
        make_optimizer(config, steps_per_epoch),
        input_shape=(1, config.image_size, config.image_size, config.channels),
        ema=config.ema > 0,
    )
    rep, split = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    recipe = {
        "augmentation": Augment(config.crop_pad, config.flip, config.erase),
        "label_smoothing": config.label_smoothing,
        "ema_decay": config.ema,
    }
    train_fn = jax.jit(
        functools.partial(train_step, image_size=config.image_size, **recipe),
        in_shardings=(rep, split, rep),
        out_shardings=rep,
        donate_argnums=0,
    )

    def jit_eval(tta: str) -> Callable:
        return jax.jit(functools.partial(eval_step, image_size=config.image_size, tta=tta), out_shardings=rep)

    final_eval_fn = jit_eval(config.tta)
    eval_fn = final_eval_fn if config.tta_every_epoch or config.tta == "none" else jit_eval("none")
    return Steps(model, init, init_rng, dropout_rng, train_fn, eval_fn, final_eval_fn, rep, split)


def train_and_evaluate(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Trains ``config`` on Fashion-MNIST, validating after each epoch and scoring the test split at the end.

    The validation split is ``config.val_size`` training images held out
    (:mod:`vggjax.training.inputs`); it picks the best checkpoint. The test split is scored once,
    on the final state, into the last record's ``test_*`` fields (and every epoch with
    ``eval_test_every_epoch``). With ``val_size`` 0 the test split is the validation, as in the
    d2l chapter, and the records name its scores ``test_*``.

    Checkpoints go to ``run_dir/checkpoints`` after every epoch and every
    ``config.checkpoint_every`` steps. With ``resume``, training continues from the
    newest checkpoint: params, BatchNorm statistics, optimizer state, step, dropout key
    and data-order position are restored, so on CPU the result is bitwise that of an
    uninterrupted run; resuming a complete run logs so and writes nothing
    (:func:`vggjax.run.resume.already_complete`). Everything is checked before anything is written.

    Args:
      config: the run's settings; validated first. When resuming, the run's saved
        config (see :func:`vggjax.run.resume.resume_config`).
      run_dir: the run folder.
      resume: continue the run in ``run_dir`` from its newest checkpoint.
      overwrite: replace an earlier run in ``run_dir`` (only its own files are removed).
      progress: show a tqdm bar per epoch (loss and images/s).
      log: where one-line messages go (process 0 only).

    Returns:
      The last epoch's ``metrics.jsonl`` record, with ``test_loss``, ``test_acc``, ``test_acc5``.

    Raises:
      ConfigError, ArchError: for invalid settings or an unusable ``run_dir``, including
        a ``batch_size`` or ``eval_batch_size`` that does not split over the devices, a
        step estimated not to fit in memory (:func:`vggjax.training.memory.check_memory`),
        or a network that differs from the ``init_from`` run's.
      DataError: when Fashion-MNIST cannot be found, downloaded or read.
      CheckpointError: when resuming a folder that is not a run, has no checkpoint,
        or whose newest checkpoint is truncated or from another model; when the
        ``init_from`` weights cannot be read or do not fit (another channel count
        without ``adapt_channels``).
      DivergedError: at the first non-finite loss or gradient (the last good checkpoint is kept).
      Interrupted: on SIGINT or SIGTERM, after saving a checkpoint.
    """
    config.validate()
    run = RunDir(run_dir)
    run_dir = run.path
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other; choose one")
    if config.dataset != "fashion-mnist":
        raise ConfigError(
            f"vggjax train trains on Fashion-MNIST, but this config's dataset is {config.dataset!r}; "
            "to fine-tune converted weights pass --init-from RUN_DIR instead"
        )
    source = None  # the --init-from weights, read once
    if config.init_from and not resume:
        source_config, source = hub.read_run(config.init_from, log=log)  # a run folder or weights name
        check_same_model(config, source_config)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.batch_size, mesh)
    parallel.check_batch_size(config.eval_batch_size, mesh, flag="--eval-batch-size")
    check_memory(config, mesh)
    warn_if_upsampling(config.resolved_arch(), config.image_size, config.head)
    main = parallel.is_main_process()
    progress, log = progress and main, log if main else (lambda s: None)
    if resume:
        run.check_resumable()
        if done := already_complete(run_dir, config):
            log(done)
            return read_jsonl(run.metrics_file)[-1]
    else:
        run.check_new(overwrite=overwrite)
    if config.val_size == 0:
        log(
            "validating on the test split (--val-size 0, the d2l chapter's setting): the best checkpoint "
            "is selected on test"
        )
    inputs = load_run_data(config, progress=progress, log=log)
    n_train, channels = len(inputs.train["label"]), inputs.train["image"].shape[-1]
    if source is not None:
        pretrained.check_channels(source, channels, adapt_channels=config.adapt_channels)
    steps_per_epoch = data.num_batches(n_train, config.batch_size, drop_remainder=True)
    built = build_step(config, mesh, steps_per_epoch)
    rep, split, dropout_rng = built.replicated, built.batch_sharding, built.dropout_rng
    if source is not None:
        init = functools.partial(_init_from, built.init, adapt_channels=config.adapt_channels, log=log)
        state = jax.jit(init, out_shardings=rep)(built.init_rng, source)
        log(f"initialised from {config.init_from}")
    else:
        state = built.init_state()
    signature, checkpoints = model_signature(config), run.checkpoints_dir
    start, partial, records, resume_step = Position(1, 0), [], [], None
    if resume:
        with RunCheckpoints(checkpoints, keep=config.keep) as ckpts:
            restored = ckpts.restore(state, dropout_rng, model=signature, sharding=rep)
        state, dropout_rng, start = restored.state, restored.rng, restored.position
        partial, resume_step = restored.partial, restored.step
        records = honest_records(restored.records, config.val_size)  # an older run's val_* were test
        _check_position(start, config, steps_per_epoch, run_dir)
        log(
            f"resuming {run_dir} from step {restored.step} (epoch {start.epoch}, "
            f"{start.batch} of {steps_per_epoch} batches done)"
        )
    parallel.sync("run folder checked")  # every process checks before any writes
    if main:
        if not resume:
            run.prepare(overwrite=overwrite)
        run.write_config(config)
        write_jsonl(run.metrics_file, records)
    parallel.sync("run folder ready")
    board = MetricsWriter(run_dir, config.to_json(), active=main, resume_step=resume_step)
    with RunCheckpoints(checkpoints, keep=config.keep) as ckpts, contextlib.closing(board):
        trainer = Trainer(
            config=config,
            train_fn=built.train_fn,
            eval_fn=built.eval_fn,
            final_eval_fn=built.final_eval_fn,
            train_ds=inputs.train,
            evals=inputs.evals,
            rng=dropout_rng,
            steps_per_epoch=steps_per_epoch,
            schedule=make_schedule(config, steps_per_epoch),
            checkpoints=ckpts,
            model=signature,
            run_dir=run_dir,
            board=board,
            batch_sharding=split,
            main=main,
            records=list(records),
            progress=progress,
            log=log,
        )
        state = trainer.fit(state, start, partial)
        trainer.score_test(state, inputs.test)  # the final state, the one saved in weights/
        best = ckpts.best_step()
    final = {"params": state.params, "batch_stats": state.batch_stats} if state.ema is None else state.ema
    weights.save_variables(run.weights_dir, final)  # what was validated: the EMA when the run keeps one
    if main:
        write_report(run_dir)
    if jax.process_count() > 1:
        parallel.check_replicas_agree(state.params)
        log(f"params identical on all {jax.process_count()} processes ({mesh.devices.size} devices)")
    if best is not None:
        split = SPLIT_NAMES[selection_split(config.val_size)]
        log(f"checkpoints in {checkpoints}; best {split} accuracy at step {best}")
    return trainer.records[-1]


def _init_from(init: Callable, rng: jax.Array, source: dict, *, adapt_channels: bool, log) -> TrainState:
    """``init(rng)`` with its variables filled from ``source`` (see ``pretrained.transfer``); jittable."""
    state = init(rng)
    fresh = {"params": state.params, "batch_stats": state.batch_stats}
    start = pretrained.transfer(source, fresh, adapt_channels=adapt_channels, log=log)
    ema = None if state.ema is None else start
    return state.replace(params=start["params"], batch_stats=start["batch_stats"], ema=ema)


def _check_position(start: Position, config: TrainConfig, steps_per_epoch: int, run_dir: Path) -> None:
    """Refuses a checkpoint position this config cannot continue from."""
    if start.batch > steps_per_epoch:
        raise CheckpointError(
            f"{run_dir}: the checkpoint is at batch {start.batch} of epoch {start.epoch}, but this "
            f"data gives {steps_per_epoch} batches per epoch; resume with the data the run was started with"
        )
    needed = start.epoch if start.batch else start.epoch - 1  # epochs begun by the checkpoint
    if needed > config.epochs:
        raise ConfigError(
            f"--epochs {config.epochs} is below the {needed} epochs {run_dir} has begun; "
            f"pass --epochs {needed} or more"
        )


def describe(config: TrainConfig) -> str:
    """A short multi-line description of a config, printed at the start of a run."""
    arch = config.resolved_arch()
    lines = [f"  {f.name} = {getattr(config, f.name)!r}" for f in dataclasses.fields(config)]
    return f"arch {arch.name or 'custom'} {arch} at {config.image_size}x{config.image_size}\n" + "\n".join(
        lines
    )
