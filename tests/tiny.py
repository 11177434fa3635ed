"""The one tiny VGG the tests build, so that every test's model is the same small network.

vgg11 (or any named arch) at width 1/8 — channels 8, 16, 32, 64, 64 for vgg11 — with fc6 and
fc7 of 64 units: a few hundred thousand parameters, compiled in seconds on a 2-core CPU. Its
training configs hold out 200 validation images (:data:`TINY_VAL_SIZE`).
"""

from vggjax.arch import Arch, get_arch
from vggjax.config import TrainConfig

TINY = {"width": 0.125, "hidden": 64}
TINY_FLAGS = ["--width", "0.125", "--hidden", "64"]  # the same, as vggjax train / bench flags
# A small validation split for training tests (the default 5,000 would be scored every epoch)
TINY_VAL_SIZE = 200
TINY_TRAIN_FLAGS = [*TINY_FLAGS, "--val-size", str(TINY_VAL_SIZE)]  # vggjax train only


def tiny_arch(arch: str = "vgg11") -> Arch:
    """``arch`` at the tiny width."""
    return get_arch(arch, width=TINY["width"])


def tiny_config(**overrides) -> TrainConfig:
    """A :class:`TrainConfig` of the tiny model and validation split; ``overrides`` set any other field."""
    return TrainConfig(**{**TINY, "val_size": TINY_VAL_SIZE, **overrides})


def tiny_model(arch: str = "vgg11", **overrides):
    """The tiny :class:`~vggjax.nn.vgg.VGG` of ``arch``; ``overrides`` go to ``build_model``."""
    from vggjax.nn.vgg import build_model

    return build_model(arch, **{**TINY, **overrides})


def save_finished_state(run_dir, config: TrainConfig, record: dict) -> None:
    """Writes what a run's last epoch leaves beside its config: ``metrics.jsonl`` holding
    ``record``, an end-of-run checkpoint (step 4, selection accuracy ``record["val_acc"]``) and
    ``weights/``, from a fresh state of ``config`` (no training needed)."""
    import json

    import jax
    import jax.numpy as jnp

    from vggjax.nn.fit import from_config
    from vggjax.run.checkpoint import RunCheckpoints
    from vggjax.run.meta import Position, model_signature
    from vggjax.run.weights import save_variables
    from vggjax.training.optim import make_optimizer
    from vggjax.training.steps import create_train_state

    (run_dir / "metrics.jsonl").write_text(json.dumps(record) + "\n")
    state = create_train_state(
        from_config(config), make_optimizer(config, 4), jax.random.key(0), (1, 32, 32, 1)
    )
    state = state.replace(step=jnp.asarray(4, jnp.int32))
    with RunCheckpoints(run_dir / "checkpoints") as ckpts:
        ckpts.save(
            state,
            rng=jax.random.key(1),
            position=Position(2, 0),
            model=model_signature(config),
            records=[record],
            val_acc=record["val_acc"],
        )
    save_variables(run_dir / "weights", {"params": state.params, "batch_stats": state.batch_stats})
