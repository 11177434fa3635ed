"""Augmentation in the jitted step, label smoothing, one-cycle, EMA and flip TTA (issue 15: 2, 3)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny import tiny_config, tiny_model

from vggjax.config import TrainConfig
from vggjax.errors import ConfigError
from vggjax.run.checkpoint import RunCheckpoints
from vggjax.run.files import read_jsonl
from vggjax.run.weights import load_variables, save_variables
from vggjax.tasks.evaluate import evaluate_run
from vggjax.training.augment import ERASE_SCALE, Augment, augment, random_crop, random_erase, random_flip
from vggjax.training.optim import make_schedule
from vggjax.training.steps import create_train_state, predict, train_step, tta_views, update_ema
from vggjax.training.train import train_and_evaluate

KEY = jax.random.key(7)


def images(n=16, size=8, seed=0):
    """``float32[n, size, size, 1]`` with every pixel distinct and > 0 (so windows and zeros are unique)."""
    values = np.random.default_rng(seed).permutation(n * size * size).astype(np.float32) + 1
    return jnp.asarray(values.reshape(n, size, size, 1))


def test_nothing_on_is_the_identity_and_the_same_key_gives_the_same_batch():
    x = images()
    assert augment(KEY, x, Augment()) is x
    assert augment(KEY, x, Augment(crop_pad=0, flip=False, erase=0.0)) is x
    np.testing.assert_array_equal(random_erase(KEY, x, 0.0), x)
    how = Augment(crop_pad=2, flip=True, erase=0.5)
    a, b = augment(KEY, x, how), augment(KEY, x, how)
    np.testing.assert_array_equal(a, b)
    jitted = jax.jit(augment, static_argnums=2)(KEY, x, how)
    np.testing.assert_array_equal(jitted, a)
    other = augment(jax.random.fold_in(KEY, 1), x, how)
    assert not np.array_equal(other, a)


def test_a_crop_is_a_window_of_the_zero_padded_image():
    x, pad = np.asarray(images()), 2
    out = np.asarray(random_crop(KEY, jnp.asarray(x), pad))
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = []
    for i in range(len(x)):
        found = [
            (r, c)
            for r in range(2 * pad + 1)
            for c in range(2 * pad + 1)
            if np.array_equal(out[i], padded[i, r : r + 8, c : c + 8])
        ]
        assert len(found) == 1, (i, found)
        offsets.append(found[0])
    assert len(set(offsets)) > 5  # offsets vary over the batch


def test_flip_mirrors_exactly_the_examples_it_flips():
    x = np.asarray(images(32))
    out = np.asarray(random_flip(KEY, jnp.asarray(x)))
    flipped = [np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, x, strict=True)]
    kept = [np.array_equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each one or the other, exactly
    assert 6 < sum(flipped) < 26


def zero_box(image):
    """The zeroed rectangle of one ``[H, W, 1]`` image as (top, left, h, w), checking it is one rectangle."""
    rows, cols = np.nonzero(image[..., 0] == 0)
    if not len(rows):
        return None
    top, left = rows.min(), cols.min()
    h, w = rows.max() - top + 1, cols.max() - left + 1
    assert len(rows) == h * w  # the zeros fill their bounding box
    return top, left, h, w


def test_erase_p1_zeroes_one_rectangle_of_the_scale_and_leaves_the_rest():
    x = np.asarray(images(32, size=32))
    out = np.asarray(random_erase(KEY, jnp.asarray(x), 1.0))
    for o, xi in zip(out, x, strict=True):
        top, left, h, w = zero_box(o)
        slack = (h + w) / 2 + 0.25  # h and w are rounded, as torchvision rounds them
        assert ERASE_SCALE[0] * 32 * 32 - slack <= h * w <= ERASE_SCALE[1] * 32 * 32 + slack
        keep = np.ones((32, 32, 1), bool)
        keep[top : top + h, left : left + w] = False
        np.testing.assert_array_equal(o[keep], xi[keep])
    half = np.asarray(random_erase(KEY, jnp.asarray(x), 0.5))
    assert 6 < sum(zero_box(o) is not None for o in half) < 26


def test_label_smoothing_loss_is_the_hand_computed_value():
    model = tiny_model(dropout_rate=0.0)
    state = create_train_state(model, optax.sgd(0.0), jax.random.key(0), (1, 32, 32, 1))
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (4, 32, 32, 1), dtype=np.uint8),
        "label": np.array([0, 3, 9, 3], np.int32),
    }
    logits = np.asarray(
        state.apply_fn({"params": state.params}, batch["image"] / np.float32(255), train=True)
    )
    logits = logits.astype(np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    alpha, k = 0.1, 10
    target = np.full((4, k), alpha / k)
    target[np.arange(4), batch["label"]] += 1 - alpha
    expected = float(-(target * log_p).sum(-1).mean())
    _, m = train_step(state, batch, jax.random.key(1), image_size=32, label_smoothing=alpha)
    assert float(m["loss"]) == pytest.approx(expected, rel=1e-5)
    _, plain = train_step(state, batch, jax.random.key(1), image_size=32)
    assert float(plain["loss"]) == pytest.approx(-log_p[np.arange(4), batch["label"]].mean(), rel=1e-5)
    assert abs(float(m["loss"]) - float(plain["loss"])) > 1e-3


def test_onecycle_schedule_rises_to_lr_then_falls_to_lr_over_25e4():
    config = TrainConfig(epochs=2, lr=0.1, schedule="onecycle")  # 20 updates, rise over 0.3 of them
    s = make_schedule(config, 10)
    assert float(s(0)) == pytest.approx(0.1 / 25, rel=1e-6)
    assert float(s(6)) == pytest.approx(0.1, rel=1e-6)
    assert float(s(3)) == pytest.approx(
        0.1 / 25 + (0.1 - 0.1 / 25) * (1 - math.cos(math.pi / 2)) / 2, rel=1e-5
    )
    assert float(s(20)) == pytest.approx(0.1 / 25 / 1e4, rel=1e-5)
    assert all(float(s(i)) > float(s(i + 1)) for i in range(6, 20))
    warm = make_schedule(TrainConfig(epochs=2, lr=0.1, schedule="onecycle", warmup_epochs=0.5), 10)
    assert float(warm(5)) == pytest.approx(0.1, rel=1e-6) and float(warm(4)) < 0.1


def test_ema_is_optax_debiased_ema():
    rng = np.random.default_rng(0)
    trees = [{"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)} for _ in range(6)]
    tx = optax.ema(0.9, debias=True)
    opt_state = tx.init(trees[0])
    ema = {"w": jnp.full((3, 2), 123.0)}  # its start never matters: the first update is the value
    for t, tree in enumerate(trees, 1):
        with jax.numpy_dtype_promotion("standard"):  # optax's debias mixes int32 and float
            expected, opt_state = tx.update(tree, opt_state)
        ema = update_ema(ema, tree, 0.9, jnp.int32(t))
        np.testing.assert_allclose(ema["w"], expected["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(update_ema(ema, trees[0], 0.9, jnp.int32(1))["w"], trees[0]["w"])


def test_flip_tta_is_the_mean_of_the_two_softmaxes_and_mirror_invariant():
    model = tiny_model("vgg11_bn")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
    x = images(4, size=32) / (4 * 32 * 32)

    def softmax(z):
        z = np.asarray(z, np.float64)
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    plain = model.apply(variables, x, train=False)
    mirror = model.apply(variables, x[:, :, ::-1], train=False)
    expected = (softmax(plain) + softmax(mirror)) / 2
    scores = predict(model.apply, variables, x, "flip")
    np.testing.assert_allclose(np.exp(np.asarray(scores, np.float64)), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(predict(model.apply, variables, x[:, :, ::-1], "flip"), scores, atol=1e-6)
    np.testing.assert_array_equal(predict(model.apply, variables, x, "none"), plain)
    assert not np.allclose(softmax(plain), expected, atol=1e-4)  # the mirror does change the answer
    with pytest.raises(ValueError, match="tta must be one of none, flip, flip-shift, got 'five-crop'"):
        predict(model.apply, variables, x, "five-crop")


def test_flip_shift_views_are_the_image_moved_one_pixel_with_zero_fill_and_their_mirrors():
    x = np.arange(2 * 4 * 5 * 1, dtype=np.float32).reshape(2, 4, 5, 1) + 1
    views = [np.asarray(v) for v in tta_views(jnp.asarray(x), "flip-shift")]
    down_right, up_left = np.zeros_like(x), np.zeros_like(x)  # content moved by +1 / -1 pixel per axis
    down_right[:, 1:, 1:], up_left[:, :-1, :-1] = x[:, :-1, :-1], x[:, 1:, 1:]
    expected = [x, down_right, up_left]
    expected += [v[:, :, ::-1] for v in expected]
    assert len(views) == 6
    for got, want in zip(views, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    flip = tta_views(jnp.asarray(x), "flip")
    assert len(flip) == 2 and np.array_equal(flip[1], x[:, :, ::-1])


def test_flip_shift_tta_is_the_mean_softmax_of_the_six_views():
    model = tiny_model("vgg11_bn")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), train=False)
    x = images(3, size=32) / (3 * 32 * 32)
    probs = [
        np.asarray(jax.nn.softmax(model.apply(variables, v, train=False)), np.float64)
        for v in tta_views(x, "flip-shift")
    ]
    scores = predict(model.apply, variables, x, "flip-shift")
    np.testing.assert_allclose(
        np.exp(np.asarray(scores, np.float64)), np.mean(probs, 0), rtol=1e-5, atol=1e-7
    )
    flip = np.exp(np.asarray(predict(model.apply, variables, x, "flip"), np.float64))
    assert not np.allclose(flip, np.mean(probs, 0), atol=1e-4)  # the shifted views do count


def test_train_step_augments_from_the_step_key_only():
    state = create_train_state(
        tiny_model(dropout_rate=0.0), optax.sgd(0.1), jax.random.key(0), (1, 32, 32, 1)
    )
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (8, 28, 28, 1), dtype=np.uint8),
        "label": np.arange(8, dtype=np.int32),
    }
    step = jax.jit(
        lambda s, b, r, how: train_step(s, b, r, image_size=32, augmentation=how), static_argnums=3
    )
    how = Augment(crop_pad=4, flip=True, erase=1.0)
    a, ma = step(state, batch, jax.random.key(1), how)
    b, mb = step(state, batch, jax.random.key(1), how)
    _, plain = step(state, batch, jax.random.key(1), Augment())
    assert float(ma["loss"]) == float(mb["loss"]) != float(plain["loss"])
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
    _, later = step(state.replace(step=5), batch, jax.random.key(1), how)  # same params, other crops
    assert float(later["loss"]) != float(ma["loss"])


@pytest.mark.slow
def test_eval_scores_the_ema_weights_and_only_the_last_epoch_averages_the_tta_views(tmp_path):
    config = tiny_config(
        arch="vgg11_bn",
        limit_train=1024,
        limit_test=200,
        val_size=1000,
        batch_size=32,
        epochs=2,
        ema=0.9,
        crop_pad=2,
        flip=True,
        tta="flip-shift",
    )
    run_dir = tmp_path / "run"
    train_and_evaluate(config, run_dir, progress=False, log=lambda s: None)
    with RunCheckpoints(run_dir / "checkpoints") as ckpts:
        saved = ckpts.read()["state"]
        selected = ckpts.val_acc(ckpts.latest_step())
    weights, ema = load_variables(run_dir / "weights"), saved["ema"]
    for x, y in zip(jax.tree.leaves(weights), jax.tree.leaves(ema), strict=True):
        np.testing.assert_array_equal(x, y)  # weights/ holds the checkpoint's EMA (params and batch_stats)
    first, last = read_jsonl(run_dir / "metrics.jsonl")
    report = evaluate_run(run_dir, limit_test=200, batch_size=100, num_mistakes=0)
    # The run scores the test split once, at the end, on the weights it saves, with its --tta:
    # eval must agree.
    assert report["acc"] == pytest.approx(last["test_acc"], abs=1e-9)
    assert report["loss"] == pytest.approx(last["test_loss"], rel=1e-4)
    # The raw weights score otherwise: the run's scoring and eval did use the EMA.
    save_variables(tmp_path / "raw", {"params": saved["params"], "batch_stats": saved["batch_stats"]})
    raw = evaluate_run(
        run_dir, checkpoint_dir=tmp_path / "raw", limit_test=200, batch_size=100, num_mistakes=0
    )
    assert abs(raw["loss"] - last["test_loss"]) > 1e-3, (raw["loss"], last["test_loss"])
    plain = evaluate_run(run_dir, limit_test=200, batch_size=100, num_mistakes=0, tta="none")
    assert plain["loss"] != report["loss"] and plain["count"] == 200
    # Only the last epoch's validation averages the views (its record says so); the best
    # checkpoint is selected on the plain images, as every earlier epoch was scored.
    assert "tta" not in first and last["tta"] == "flip-shift"
    val_flip = evaluate_run(run_dir, split="val", batch_size=100, num_mistakes=0)
    val_plain = evaluate_run(run_dir, split="val", batch_size=100, num_mistakes=0, tta="none")
    assert last["val_loss"] == pytest.approx(val_flip["loss"], rel=1e-4) and val_flip["count"] == 1000
    assert abs(val_plain["loss"] - val_flip["loss"]) > 1e-4
    assert val_plain["acc"] != val_flip["acc"]  # else the next line could not tell them apart
    assert selected == pytest.approx(val_plain["acc"], abs=1e-9)


def test_eval_refuses_an_unknown_tta_before_reading_anything(tmp_path):
    with pytest.raises(ConfigError, match=r"^--tta must be one of none, flip, flip-shift, got 'five-crop'$"):
        evaluate_run(tmp_path / "no such run", tta="five-crop")
