"""BatchNorm → ReLU per layer, forward and gradient: vggjax's ``BatchNorm`` against Flax's ``nn.BatchNorm``.

For the BatchNorm layers of the two CPU presets' networks at batch 128, what ``vggjax train``
runs: ``--preset fast`` (``vgg11_28_bn`` x0.25 at 28x28) and ``--preset best`` (``vgg11_bn``
x0.5 at 32x32). Each layer is timed both ways side by side in one process: milliseconds per
call of the jitted gradient of ``sum(relu(bn(x)) * ct)`` with respect to the input, the scale
and the bias, in training mode (batch statistics updated), median of 5 runs of 20 calls.
``uptime`` is printed before and after.

    .venv/bin/python benchmarks/batchnorm.py
"""

from __future__ import annotations

import subprocess

import jax
import jax.numpy as jnp
from flax import linen as nn

from vggjax.bench import median_rate
from vggjax.nn.batchnorm import BatchNorm

# (preset, side, channels) of every BatchNorm layer
LAYERS = [
    ("fast", 28, 16),
    ("fast", 14, 32),
    ("fast", 7, 64),
    ("fast", 7, 64),
    ("fast", 3, 128),
    ("fast", 3, 128),
]
LAYERS += [("best", 32, 32), ("best", 16, 64), ("best", 8, 128), ("best", 8, 128), ("best", 4, 256)]
LAYERS += [("best", 4, 256), ("best", 2, 256), ("best", 2, 256)]
BATCH = 128


def layer_gradient(module: nn.Module, shape: tuple[int, ...]):
    """The jitted gradient of one training-mode BatchNorm → ReLU layer, and its arguments."""
    k1, k2 = jax.random.split(jax.random.key(0))
    x, ct = 2.0 * jax.random.normal(k1, shape) + 0.5, jax.random.normal(k2, shape)
    variables = module.init(jax.random.key(1), x, use_running_average=False)

    def loss(x, params):
        y, _ = module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            use_running_average=False,
            mutable=["batch_stats"],
        )
        return jnp.sum(jax.nn.relu(y) * ct)

    return jax.jit(jax.grad(loss, argnums=(0, 1))), (x, variables["params"])


def milliseconds(fn, args, calls: int = 20, repeats: int = 5) -> float:
    """Median milliseconds per call of ``fn(*args)`` over ``repeats`` runs of ``calls``, after a warm-up."""
    jax.block_until_ready(fn(*args))

    def run() -> None:
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)

    return 1e3 / median_rate(run, items=calls, repeats=repeats)


def main() -> None:
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print("preset  layer           flax ms  vggjax ms  ratio")
    totals = {}
    for preset, side, channels in LAYERS:
        shape = (BATCH, side, side, channels)
        flax_ms = milliseconds(*layer_gradient(nn.BatchNorm(momentum=0.9, epsilon=1e-5), shape))
        ours_ms = milliseconds(*layer_gradient(BatchNorm(momentum=0.9, epsilon=1e-5), shape))
        a, b = totals.get(preset, (0.0, 0.0))
        totals[preset] = (a + flax_ms, b + ours_ms)
        layer = f"{side:3}x{side:<3}x{channels:<4}"
        print(f"{preset:6}  {layer}  {flax_ms:8.3f}  {ours_ms:9.3f}  {flax_ms / ours_ms:5.2f}x")
    for preset, (a, b) in totals.items():
        print(f"{preset:6}  all layers      {a:8.3f}  {b:9.3f}  {a / b:5.2f}x")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
