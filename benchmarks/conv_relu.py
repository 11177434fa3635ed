"""conv → bias → ReLU per layer: oneDNN's fused primitive against the convolution with XLA's bias and ReLU.

For the conv layers of the thin VGG-11 at 32x32 (batch 128, what ``vggjax train`` runs) and of
VGG-16 at 224x224 (batch 8, inference), each timed two ways, side by side in one process:

  fused:    ``vggjax.nn.onednn.conv_bias_relu`` (bias and ReLU as oneDNN post-ops; its backward
            is oneDNN's ReLU backward, then the two convolution backward primitives);
  separate: ``relu(onednn.conv_same(x, w) + b)``: the same convolution, bias and ReLU left to XLA
            (what ``VGGBlock`` runs under ``impl="cpu_fast"``).

Times are milliseconds per call (median of 5 runs after a warm-up): the forward, and for the
thin VGG-11 also forward plus gradient (input, weights, bias: a training layer). ``uptime`` is
printed before and after. Needs the oneDNN extension (x86-64 Linux).

    .venv/bin/python benchmarks/conv_relu.py
"""

from __future__ import annotations

import statistics
import subprocess
import time

import jax
import jax.numpy as jnp

from vggjax.nn import onednn, onednn_build

# (batch, side, in channels, out channels, timed with the gradient)
THIN_VGG11_32 = [(32, 1, 16), (16, 16, 32), (8, 32, 64), (8, 64, 64), (4, 64, 128), (4, 128, 128)]
THIN_VGG11_32 += [(2, 128, 128)]
VGG16_224 = [(224, 3, 64), (224, 64, 64), (112, 64, 128), (112, 128, 128), (56, 128, 256), (56, 256, 256)]
VGG16_224 += [(28, 256, 512), (28, 512, 512), (14, 512, 512)]
LAYERS = [(128, *layer, True) for layer in THIN_VGG11_32] + [(8, *layer, False) for layer in VGG16_224]


def separate(x, w, b):
    return jax.nn.relu(onednn.conv_same(x, w) + b.reshape(1, 1, 1, -1))


def with_grad(f):
    return jax.jit(jax.grad(lambda x, w, b: jnp.sum(f(x, w, b) ** 2), argnums=(0, 1, 2)))


def ms(f, *args) -> float:
    jax.block_until_ready(f(*args))
    n, runs = 3, []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            out = f(*args)
        jax.block_until_ready(out)
        runs.append((time.perf_counter() - start) / n * 1e3)
    return statistics.median(runs)


def main() -> None:
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"convolutions: {onednn_build.status()}")
    if not onednn_build.available():
        raise SystemExit("the oneDNN extension is not available here; nothing to compare")
    head = ("layer", "fused ms", "separate", "sep/fused", "grad fused", "separate", "sep/fused")
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, (24, 9, 9, 9, 11, 9, 9), strict=True)))
    for n, side, cin, cout, grad in LAYERS:
        keys = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(keys[0], (n, side, side, cin))
        w = jax.random.normal(keys[1], (3, 3, cin, cout)) / (3 * cin**0.5)
        b = 0.1 * jax.random.normal(keys[2], (cout,))
        fused, sep = ms(jax.jit(onednn.conv_bias_relu), x, w, b), ms(jax.jit(separate), x, w, b)
        line = f"{f'{n}x{side}x{side} {cin}->{cout}':>24} {fused:9.2f} {sep:9.2f} {sep / fused:9.2f}"
        if grad:
            gf, gs = ms(with_grad(onednn.conv_bias_relu), x, w, b), ms(with_grad(separate), x, w, b)
            line += f" {gf:11.2f} {gs:9.2f} {gs / gf:9.2f}"
        print(line, flush=True)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
