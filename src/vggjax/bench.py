"""Throughput of a VGG's train step and inference, its FLOP rate and share of the device's peak.

What is timed is what ``vggjax train`` runs: :func:`vggjax.training.steps.train_step` under
``jax.jit`` with the state donated, SGD with momentum 0.9 and weight decay 5e-4 (the
default config's optimizer), batches cut by :func:`vggjax.data.batches` from uint8
images and scaled (and resized, if ``source_size`` differs) inside the step. Inference
is the jitted forward pass in eval mode on the same batches.

Every figure is the median of ``repeats`` timed runs of ``steps`` calls each, after a
first call that compiles. FLOPs come from the closed-form MAC count of
:func:`vggjax.arch.summary.summarize` (2 FLOPs per MAC): a forward pass costs ``2·MACs``
per image and a train step about ``3 × 2·MACs`` (forward, input gradient, weight
gradient; element-wise ops, pools and the optimizer not counted). The peak is a
measured ``jnp.dot`` of two 2048×2048 matrices in the same dtype (best of 10 runs), not
a datasheet figure.
"""

from __future__ import annotations

import dataclasses
import functools
import resource
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vggjax import data
from vggjax.arch import get_arch
from vggjax.arch.summary import summarize, totals
from vggjax.errors import ConfigError, check_positive_int
from vggjax.nn.impl import resolve_impl
from vggjax.nn.vgg import VGG
from vggjax.training.steps import create_train_state, preprocess, train_step

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
TRAIN_FLOPS_PER_FORWARD = 3  # forward + input gradient + weight gradient


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to measure.

    Attributes:
      arch: arch name or literal (see :func:`vggjax.arch.get_arch`).
      width: width multiplier on every block's channels.
      image_size: model input side in pixels.
      channels: input channels (1 for Fashion-MNIST, 3 for ImageNet).
      batch_size: images per step.
      dtype: ``"float32"`` or ``"bfloat16"`` (compute dtype; params stay float32).
      impl: ``"auto"``, ``"xla"`` or ``"cpu_fast"`` (see :class:`vggjax.nn.vgg.VGG`).
      hidden: width of fc6 and fc7.
      num_classes: outputs of fc8.
      head: ``"flatten"`` or ``"adaptive"``.
      source_size: side of the uint8 images fed to the step (28 is Fashion-MNIST's;
        the step resizes them to ``image_size`` as in training).
      steps: calls per timed run.
      repeats: timed runs; figures are their median.
    """

    arch: str = "vgg11"
    width: float = 0.25
    image_size: int = 32
    channels: int = 1
    batch_size: int = 128
    dtype: str = "float32"
    impl: str = "auto"
    hidden: int = 4096
    num_classes: int = 10
    head: str = "flatten"
    source_size: int = 28
    steps: int = 3
    repeats: int = 5

    def validate(self) -> BenchConfig:
        """Checks the settings; returns self.

        Raises:
          ConfigError: for a non-positive count or an unknown dtype.
          ArchError: for an invalid arch, width, impl or too small an image size.
        """
        for name in ("image_size", "channels", "batch_size", "hidden", "num_classes", "source_size", "steps"):
            check_positive_int(getattr(self, name), f"--{name.replace('_', '-')}")
        check_positive_int(self.repeats, "--repeats")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        resolve_impl(self.impl)
        summarize(get_arch(self.arch, width=self.width), input_size=self.image_size)
        return self

    def model(self) -> VGG:
        """The :class:`~vggjax.nn.vgg.VGG` measured."""
        return VGG(
            get_arch(self.arch, width=self.width),
            num_classes=self.num_classes,
            head=self.head,
            hidden=self.hidden,
            dtype=DTYPES[self.dtype],
            impl=self.impl,
        )

    def forward_macs(self) -> int:
        """Multiply-accumulates of one forward pass of one image."""
        rows = summarize(
            get_arch(self.arch, width=self.width),
            input_size=self.image_size,
            channels=self.channels,
            num_classes=self.num_classes,
            head=self.head,
            hidden=self.hidden,
        )
        return totals(rows)["total_macs"]


def rates(run: Callable[[], Any], *, items: int, repeats: int) -> list[float]:
    """``items / seconds`` of each of ``repeats`` calls of ``run`` (which must block)."""
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        out.append(items / (time.perf_counter() - start))
    return out


def median_rate(run: Callable[[], Any], *, items: int, repeats: int) -> float:
    """Median of :func:`rates`: the typical rate, robust to a run slowed by another process."""
    return statistics.median(rates(run, items=items, repeats=repeats))


def matmul_peak(n: int = 2048, dtype: str = "float32", repeats: int = 10) -> float:
    """Measured GFLOP/s of one ``float[n, n] @ float[n, n]`` product (``2·n³`` FLOPs).

    The best of ``repeats`` runs, not the median: a peak is what the device can do, and
    a run slowed by another process must not make the model look faster than the peak.
    """
    a = jax.random.normal(jax.random.key(0), (n, n), DTYPES[dtype])
    f = jax.jit(jnp.dot)
    f(a, a).block_until_ready()
    return max(rates(lambda: f(a, a).block_until_ready(), items=2 * n**3, repeats=repeats)) / 1e9


def synthetic_images(config: BenchConfig, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``{"image": uint8[n, S, S, C], "label": int32[n]}``, ``S = source_size``, uniform noise."""
    rng = np.random.default_rng(seed)
    shape = (n, config.source_size, config.source_size, config.channels)
    return {
        "image": rng.integers(0, 256, shape, dtype=np.uint8),
        "label": rng.integers(0, config.num_classes, n).astype(np.int32),
    }


class TrainRunner:
    """A compiled train step and its batches: ``runner(n)`` runs ``n`` steps and blocks.

    Attributes:
      compile_seconds: time to trace and compile the step.
      data_seconds: total host time spent drawing batches so far.
    """

    def __init__(self, config: BenchConfig, *, lr: float = 0.01):
        model = config.model()
        tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(lr, momentum=0.9))
        shape = (1, config.image_size, config.image_size, config.channels)
        self.state = create_train_state(model, tx, jax.random.key(0), shape)
        self.rng = jax.random.key(1)
        self.config = config
        self.ds = synthetic_images(config, 4 * config.batch_size)
        self.epoch = 0
        self.batches = iter(())
        self.data_seconds = 0.0
        step = jax.jit(functools.partial(train_step, image_size=config.image_size), donate_argnums=0)
        start = time.perf_counter()
        self.step = step.lower(self.state, self._next_batch(), self.rng).compile()
        self.compile_seconds = time.perf_counter() - start
        self.data_seconds = 0.0

    def _next_batch(self) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        batch = next(self.batches, None)
        if batch is None:
            self.epoch += 1
            self.batches = data.batches(
                self.ds, self.config.batch_size, shuffle=True, epoch=self.epoch, drop_remainder=True
            )
            batch = next(self.batches)
        self.data_seconds += time.perf_counter() - start
        return batch

    def __call__(self, n: int) -> None:
        for _ in range(n):
            self.state, metrics = self.step(self.state, self._next_batch(), self.rng)
        jax.block_until_ready((self.state, metrics))


class InferenceRunner:
    """The compiled eval-mode forward pass: ``runner(n)`` runs ``n`` batches and blocks."""

    def __init__(self, config: BenchConfig):
        model = config.model()
        shape = (1, config.image_size, config.image_size, config.channels)
        self.variables = model.init(jax.random.key(0), jnp.zeros(shape), train=False)
        self.batch = synthetic_images(config, config.batch_size)["image"]

        def predict(variables, images):
            return model.apply(variables, preprocess(images, config.image_size), train=False)

        start = time.perf_counter()
        self.predict = jax.jit(predict).lower(self.variables, self.batch).compile()
        self.compile_seconds = time.perf_counter() - start

    def __call__(self, n: int) -> None:
        for _ in range(n):
            logits = self.predict(self.variables, self.batch)
        logits.block_until_ready()


def peak_memory_bytes() -> dict[str, int]:
    """``{"host_maxrss": …}`` (``getrusage``; Linux reports KiB) plus ``device_peak`` where the
    backend reports ``memory_stats()`` (GPU/TPU)."""
    out = {"host_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak"] = int(stats["peak_bytes_in_use"])
    return out


def run_bench(config: BenchConfig, *, train: bool = True, inference: bool = True) -> dict[str, Any]:
    """Measures ``config``; returns a JSON-ready dict (see :func:`format_report` for the fields).

    Raises:
      ConfigError, ArchError: for invalid settings (see :meth:`BenchConfig.validate`).
    """
    config.validate()
    peak = matmul_peak(dtype=config.dtype)
    flops = 2 * config.forward_macs()
    report: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "impl": resolve_impl(config.impl),
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "forward_gflop_per_image": flops / 1e9,
        "matmul_peak_gflops": peak,
    }
    items = config.batch_size * config.steps
    if train:
        runner = TrainRunner(config)
        runner(1)
        runner.data_seconds = 0.0
        start = time.perf_counter()
        rate = median_rate(lambda: runner(config.steps), items=items, repeats=config.repeats)
        total = time.perf_counter() - start
        gflops = rate * TRAIN_FLOPS_PER_FORWARD * flops / 1e9
        report["train"] = {
            "images_per_s": rate,
            "compile_s": runner.compile_seconds,
            "gflops": gflops,
            "peak_fraction": gflops / peak,
            "data_time_share": runner.data_seconds / total,
        }
    if inference:
        runner = InferenceRunner(config)
        runner(1)
        rate = median_rate(lambda: runner(config.steps), items=items, repeats=config.repeats)
        gflops = rate * flops / 1e9
        report["inference"] = {
            "images_per_s": rate,
            "compile_s": runner.compile_seconds,
            "gflops": gflops,
            "peak_fraction": gflops / peak,
        }
    report["memory"] = peak_memory_bytes()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines ``vggjax bench`` prints."""
    c = report["config"]
    lines = [
        f"{c['arch']} width {c['width']} at {c['image_size']}x{c['image_size']}x{c['channels']}, "
        f"batch {c['batch_size']}, {c['dtype']}, impl {report['impl']} on {report['backend']} "
        f"({report['device']})",
        f"forward {report['forward_gflop_per_image']:.3f} GFLOP/image; measured matmul peak "
        f"{report['matmul_peak_gflops']:.1f} GFLOP/s",
    ]
    for mode in ("train", "inference"):
        if mode in report:
            r = report[mode]
            line = (
                f"{mode:<9} {r['images_per_s']:9.1f} images/s  {r['gflops']:7.1f} GFLOP/s "
                f"({100 * r['peak_fraction']:.0f}% of peak)  compile {r['compile_s']:.1f} s"
            )
            if "data_time_share" in r:
                line += f"  data {100 * r['data_time_share']:.2f}% of step time"
            lines.append(line)
    mem = report["memory"]
    line = f"peak memory: host {mem['host_maxrss'] / 2**20:.0f} MiB (maxrss)"
    if "device_peak" in mem:
        line += f", device {mem['device_peak'] / 2**20:.0f} MiB"
    lines.append(line)
    if "train" in report:
        lines.append("train GFLOP/s counts 3x the forward MACs (forward, input and weight gradients)")
    return "\n".join(lines)
