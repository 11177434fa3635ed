"""oneDNN convolutions (impl="cpu_fast" on x86-64 Linux) against lax.conv, and the pure-JAX fallback.

Every conv layer shape of the VGG configs A-E, thin (width 0.25, as ``vggjax train`` runs them)
and full width, at 32, 64 and 224 pixels, 1- and 3-channel inputs: forward, input gradient and
weight gradient within 1e-5 (relative, in norm) of ``lax.conv_general_dilated`` and its autodiff.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from tiny import tiny_model

from vggjax.arch import get_arch
from vggjax.nn import onednn, onednn_build

pytestmark = pytest.mark.skipif(
    not onednn_build.available(), reason=f"oneDNN extension: {onednn_build.status()}"
)


def _layer_shapes(widths, sizes=(32, 64, 224), channels=(1, 3)):
    """Distinct ``(side, in channels, out channels, kernel)`` of the convs of configs A-E."""
    out = set()
    for name in ("A", "B", "C", "D", "E"):
        for width in widths:
            for size in sizes:
                for c in channels:
                    side, cin = size, c
                    for block in get_arch(name, width=width).blocks:
                        for k in block.kernels:
                            out.add((side, cin, block.channels, k))
                            cin = block.channels
                        side //= 2
    return sorted(out)


SHAPES = _layer_shapes((0.25, 1.0))


def _reference(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _with_grads(conv):
    def f(x, w, ct):
        y, vjp = jax.vjp(conv, x, w)
        return (y, *vjp(ct))

    return jax.jit(f)


REF, GOT = _with_grads(_reference), _with_grads(onednn.conv_same)


def _rel(got, want):
    return float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))


def test_every_vgg_layer_shape_matches_lax_conv():
    assert len(SHAPES) == 74  # 37 thin and 37 full-width shapes
    worst = {}
    rng = np.random.default_rng(0)  # numpy: jax.random would compile anew for every shape
    for side, cin, cout, k in SHAPES:
        batch = 2 if side <= 64 else 1
        x = rng.standard_normal((batch, side, side, cin), np.float32)
        w = rng.standard_normal((k, k, cin, cout), np.float32) / np.float32(np.sqrt(k * k * cin))
        ct = rng.standard_normal((batch, side, side, cout), np.float32)
        for name, got, want in zip(("forward", "input grad", "weight grad"), GOT(x, w, ct), REF(x, w, ct)):
            worst[(side, cin, cout, k, name)] = _rel(got, want)
    bad = {shape: err for shape, err in worst.items() if not err < 1e-5}
    assert not bad, bad
