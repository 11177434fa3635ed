"""Run checkpoints: round trip, keep-last-K plus best, refusals, a save killed mid-write."""

import asyncio
import dataclasses
import gc
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import tiny_config

from vggjax.errors import CheckpointError
from vggjax.nn.fit import from_config
from vggjax.run.checkpoint import RunCheckpoints
from vggjax.run.meta import Position, model_signature
from vggjax.training import parallel
from vggjax.training.optim import make_optimizer
from vggjax.training.steps import create_train_state

CONFIG = tiny_config(arch="vgg11_bn", image_size=32)


def fresh_state(config=CONFIG):
    state = create_train_state(
        from_config(config), make_optimizer(config, 10), jax.random.key(0), (1, 32, 32, 1)
    )
    return state.replace(step=jnp.zeros((), jnp.int32))


def trained_state():
    """A state whose params, momentum, BatchNorm statistics and step all differ from init."""
    state = fresh_state()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), state.params)
    state = state.apply_gradients(grads=grads).apply_gradients(grads=grads)
    stats = jax.tree.map(lambda s: s + 0.5, state.batch_stats)
    return state.replace(batch_stats=stats)


def assert_trees_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_round_trip_restores_every_part(tmp_path):
    state, rng = trained_state(), jax.random.key(7)
    partial = [{"loss": np.float32(2.25), "accuracy": np.float32(0.125), "grad_norm": np.float32(1.5)}]
    records = [{"epoch": 1, "val_acc": 0.5}]
    with RunCheckpoints(tmp_path / "ck") as ckpts:
        ckpts.save(
            state,
            rng=rng,
            position=Position(2, 1),
            model=model_signature(CONFIG),
            partial=partial,
            records=records,
        )
    with RunCheckpoints(tmp_path / "ck") as ckpts:
        assert ckpts.steps() == [2]
        restored = ckpts.restore(fresh_state(), jax.random.key(0), model=model_signature(CONFIG))
    assert restored.step == 2 and int(restored.state.step) == 2
    assert restored.position == Position(2, 1)
    assert restored.partial == partial and restored.records == records
    assert jax.random.key_data(restored.rng).tolist() == jax.random.key_data(rng).tolist()
    assert restored.state.batch_stats  # BatchNorm statistics travel with the params
    for part in ("params", "batch_stats", "opt_state"):
        assert_trees_equal(getattr(restored.state, part), getattr(state, part))
    momentum = jax.tree.leaves(restored.state.opt_state)
    assert any(np.abs(np.asarray(m)).max() > 0 for m in momentum if np.asarray(m).dtype == np.float32)


def test_restore_puts_every_array_in_the_given_sharding(tmp_path):
    """Orbax reads into the mesh's replicated sharding, where training's init puts a fresh state."""
    rep = parallel.replicated(parallel.data_mesh())
    state = trained_state()
    with RunCheckpoints(tmp_path / "ck") as ckpts:
        ckpts.save(state, rng=jax.random.key(7), position=Position(1, 2), model=model_signature(CONFIG))
    with RunCheckpoints(tmp_path / "ck") as ckpts:
        restored = ckpts.restore(
            fresh_state(), jax.random.key(0), model=model_signature(CONFIG), sharding=rep
        )
    leaves = jax.tree.leaves(restored.state) + [restored.rng]
    assert len(leaves) > 40 and all(leaf.sharding == rep for leaf in leaves)
    assert_trees_equal(restored.state.params, state.params)


def test_keeps_last_k_and_the_best(tmp_path):
    state, sig = fresh_state(), model_signature(CONFIG)
    accs = {2: 0.9, 4: 0.5}  # end-of-epoch checkpoints; the others are step checkpoints
    with RunCheckpoints(tmp_path / "ck", keep=2) as ckpts:
        for step in range(1, 7):
            ckpts.save(
                state.replace(step=jnp.asarray(step, jnp.int32)),
                rng=jax.random.key(0),
                position=Position(1, step),
                model=sig,
                val_acc=accs.get(step),
            )
        ckpts.wait()
        assert ckpts.steps() == [2, 5, 6]
    with RunCheckpoints(tmp_path / "ck", keep=2) as ckpts:
        assert ckpts.steps() == [2, 5, 6] and ckpts.latest_step() == 6 and ckpts.best_step() == 2
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["2", "5", "6"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "ck"
    with RunCheckpoints(folder) as ckpts:
        sig = model_signature(CONFIG)
        ckpts.save(trained_state(), rng=jax.random.key(1), position=Position(1, 2), model=sig)
    return folder


def test_checkpoint_of_another_model_is_refused(saved):
    other = tiny_config(arch="vgg11")
    with RunCheckpoints(saved) as ckpts, pytest.raises(CheckpointError) as e:
        ckpts.restore(fresh_state(other), jax.random.key(0), model=model_signature(other))
    message = str(e.value)
    assert "was written for model ((1,8),(1,16),(2,32),(2,64),(2,64))+batch_norm" in message
    assert ", not ((1,8),(1,16),(2,32),(2,64),(2,64)) (head flatten" in message


def old_signature(config=CONFIG) -> dict:
    """The signature as stored before ``channels`` and ``num_classes`` were added to it."""
    sig = model_signature(config)
    del sig["channels"], sig["num_classes"]
    return sig


def test_checkpoint_from_before_channels_and_classes_were_stored_resumes(tmp_path):
    state, rng = trained_state(), jax.random.key(7)
    with RunCheckpoints(tmp_path / "ck") as ckpts:
        ckpts.save(state, rng=rng, position=Position(1, 2), model=old_signature())
    assert (CONFIG.channels, CONFIG.num_classes) == (1, 10)  # what every model had then
    with RunCheckpoints(tmp_path / "ck") as ckpts:
        restored = ckpts.restore(fresh_state(), jax.random.key(0), model=model_signature(CONFIG))
    assert restored.step == int(state.step) and restored.position == Position(1, 2)
    assert_trees_equal(restored.state.params, state.params)
    assert_trees_equal(restored.state.opt_state, state.opt_state)


@pytest.mark.parametrize(
    "stored, ours, words",
    [
        # an old checkpoint is a 1-channel, 10-class model, so a 3-channel one does not fit it
        (old_signature(), dataclasses.replace(CONFIG, channels=3), ("channels 1, classes 10", "channels 3")),
        # the two models differ only in classes: the message has to show it
        (model_signature(CONFIG), dataclasses.replace(CONFIG, num_classes=5), ("classes 10)", "classes 5)")),
    ],
)
def test_refusal_names_channels_and_classes(tmp_path, stored, ours, words):
    with RunCheckpoints(tmp_path / "ck") as ckpts:
        ckpts.save(trained_state(), rng=jax.random.key(1), position=Position(1, 2), model=stored)
    with RunCheckpoints(tmp_path / "ck") as ckpts, pytest.raises(CheckpointError) as e:
        ckpts.restore(fresh_state(ours), jax.random.key(0), model=model_signature(ours))
    written, wanted = str(e.value).split(", not ")
    assert words[0] in written and words[1] in wanted, str(e.value)
    assert written.endswith(
        "was written for model ((1,8),(1,16),(2,32),(2,64),(2,64))+batch_norm "
        "(head flatten, hidden 64, 32 px, channels 1, classes 10)"
    ), written


def unfinished_tasks() -> list[asyncio.Task]:
    gc.collect()
    return [t for t in gc.get_objects() if issubclass(type(t), asyncio.Task) and not t.done()]


# Orbax stops at the first failed array read and closes its event loop; the other reads
# must be finished first, or their callbacks hit the closed loop and their coroutines,
# collected unfinished, print tracebacks after the error (as "unraisable" exceptions,
# which fail the test here).
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("which", ["array data", "array index", "array metadata", "meta", "metrics"])
def test_truncated_checkpoint_is_refused(saved, tmp_path, which):
    folder = tmp_path / "ck"
    shutil.copytree(saved, folder)
    files = [p for p in (folder / "2").rglob("*") if p.is_file()]
    target = {
        "array data": max(files, key=lambda p: p.stat().st_size),
        "array index": next((folder / "2" / "state" / "d").iterdir()),  # OCDBT b-tree nodes
        "array metadata": folder / "2" / "state" / "_METADATA",
        "meta": folder / "2" / "meta" / "metadata",
        "metrics": folder / "2" / "metrics" / "metrics",
    }[which]
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"checkpoint {folder / '2'} is truncated or unreadable"):
        with RunCheckpoints(folder) as ckpts:
            ckpts.restore(fresh_state(), jax.random.key(0), model=model_signature(CONFIG))
    assert unfinished_tasks() == []


KILLED_SAVE = """
import os, signal
import jax, jax.numpy as jnp
from orbax.checkpoint._src.path import atomicity
import test_checkpoint as t
from vggjax.training import parallel
from vggjax.run.checkpoint import RunCheckpoints
from vggjax.run.meta import Position

state, sig = t.trained_state(), t.model_signature(t.CONFIG)
with RunCheckpoints({folder!r}) as ckpts:
    ckpts.save(state, rng=jax.random.key(1), position=Position(1, 2), model=sig)
    ckpts.wait()

    async def killed(self, *args, **kwargs):  # every file of the save written, not yet renamed
        os.kill(os.getpid(), signal.SIGKILL)

    atomicity.AtomicRenameTemporaryPath.finalize = killed
    ckpts.save(state.replace(step=jnp.asarray(3, jnp.int32)), rng=jax.random.key(1),
               position=Position(1, 3), model=sig)
    ckpts.wait()
"""


def test_save_killed_mid_write_leaves_previous_checkpoint_loadable(tmp_path):
    folder = tmp_path / "ck"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILLED_SAVE.format(folder=str(folder)))],
        cwd=os.path.dirname(__file__),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "2" and len(names) == 2 and "tmp" in names[1]  # step 3 never got its name
    with RunCheckpoints(folder) as ckpts:
        assert ckpts.steps() == [2]
        restored = ckpts.restore(fresh_state(), jax.random.key(0), model=model_signature(CONFIG))
    assert_trees_equal(restored.state.params, trained_state().params)
    assert sorted(p.name for p in folder.iterdir()) == ["2"]  # the leftover is cleaned up
