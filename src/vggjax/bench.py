"""Throughput of a VGG's train step and inference, its FLOP rate and share of the device's peak.

What is timed is what ``vggjax train`` runs, built by the same function
(:func:`vggjax.training.train.build_step`) from a :class:`~vggjax.config.TrainConfig`:
its model, optimizer (schedule, momentum, weight decay), initial state and dropout key,
and :func:`vggjax.training.steps.train_step` jitted with the state replicated and
donated and each batch split over every device. Batches are cut from uint8 images as
training cuts them (:func:`vggjax.data.batches`, the config's seed) and put on the
devices with :func:`vggjax.training.parallel.shard_batch`; scaling (and resizing, if
``source_size`` differs) happens inside the step. Inference is train's jitted
evaluation step (the forward pass in eval mode, plus its loss and accuracy sums) on
the same kind of batches.

Every figure is the median of ``repeats`` timed runs of ``steps`` calls each, after a
first call that compiles. FLOPs come from the closed-form MAC count of
:func:`vggjax.arch.summary.summarize` (2 FLOPs per MAC): a forward pass costs ``2·MACs``
per image and a train step about ``3 × 2·MACs`` (forward, input gradient, weight
gradient; element-wise ops, pools and the optimizer not counted). The peak is a
measured ``jnp.dot`` of two 2048×2048 matrices in the same dtype (best of 10 runs) on
one device, times the number of devices; not a datasheet figure.
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

from vggjax import data
from vggjax.arch.summary import summarize, totals
from vggjax.config import TrainConfig
from vggjax.errors import ConfigError, check_positive_int
from vggjax.nn import onednn_build
from vggjax.nn.impl import resolve_impl
from vggjax.training import parallel
from vggjax.training.memory import check_memory
from vggjax.training.train import Steps, build_step

MODES = ("train", "inference")
TRAIN_FLOPS_PER_FORWARD = 3  # forward + input gradient + weight gradient


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What to measure: a training config, and the bench's own knobs.

    Attributes:
      train: the run whose step is timed: its model (arch, width, head, hidden, channels,
        classes, init), ``impl``, ``dtype``, ``image_size``, ``batch_size``, optimizer and
        ``seed`` are used; its data and checkpoint fields are not.
      source_size: side of the uint8 images fed to the step (28 is Fashion-MNIST's;
        the step resizes them to ``train.image_size`` as in training).
      steps: calls per timed run.
      repeats: timed runs; figures are their median.
      only: ``"train"`` or ``"inference"`` to measure one of the two; None for both.
    """

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    source_size: int = 28
    steps: int = 3
    repeats: int = 5
    only: str | None = None

    def validate(self) -> BenchConfig:
        """Checks the settings; returns self.

        Raises:
          ConfigError: for an invalid training config (see :meth:`TrainConfig.validate`),
            a non-positive count, or an unknown ``only``.
          ArchError: for an invalid arch or width.
        """
        self.train.validate()
        for name in ("source_size", "steps", "repeats"):
            check_positive_int(getattr(self, name), f"--{name.replace('_', '-')}")
        if self.only is not None and self.only not in MODES:
            raise ConfigError(f"--only must be one of {', '.join(MODES)}, got {self.only!r}")
        return self

    def forward_macs(self) -> int:
        """Multiply-accumulates of one forward pass of one image."""
        c = self.train
        sizes = {"channels": c.channels, "num_classes": c.num_classes, "head": c.head, "hidden": c.hidden}
        return totals(summarize(c.resolved_arch(), input_size=c.image_size, **sizes))["total_macs"]


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
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    f = jax.jit(jnp.dot)
    f(a, a).block_until_ready()
    return max(rates(lambda: f(a, a).block_until_ready(), items=2 * n**3, repeats=repeats)) / 1e9


def synthetic_images(config: BenchConfig, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``{"image": uint8[n, S, S, C], "label": int32[n]}``, ``S = source_size``, uniform noise."""
    rng = np.random.default_rng(seed)
    shape = (n, config.source_size, config.source_size, config.train.channels)
    return {
        "image": rng.integers(0, 256, shape, dtype=np.uint8),
        "label": rng.integers(0, config.train.num_classes, n).astype(np.int32),
    }


def build(config: BenchConfig, steps_per_epoch: int) -> Steps:
    """``build_step`` of ``config.train`` on a mesh over every device, as ``vggjax train`` builds it.

    Raises:
      ConfigError: if the batch size does not split over the devices, or its train step
        (which bounds inference's) would not fit in memory (``training.memory.check_memory``).
    """
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    check_memory(config.train, mesh, evaluation=False)
    return build_step(config.train, mesh, steps_per_epoch)


class TrainRunner:
    """Train's compiled step and its batches: ``runner(n)`` runs ``n`` steps and blocks.

    Args:
      config: what to measure.
      images: ``{"image": uint8[N, H, W, C], "label": int32[N]}`` to cut batches from, as
        training cuts them (shuffled by the config's seed and the epoch, the remainder
        dropped); default four batches of :func:`synthetic_images`. The schedule spans
        ``train.epochs`` passes over them, as it would in training.

    Attributes:
      state: the :class:`~vggjax.training.steps.TrainState`, replaced (donated) by each step.
      compile_seconds: time to trace and compile the step.
      data_seconds: host time spent cutting batches and putting them on the devices so far.

    Raises:
      ConfigError: if the batch size does not split over the devices.
    """

    def __init__(self, config: BenchConfig, images: dict[str, np.ndarray] | None = None):
        self.config, size = config, config.train.batch_size
        self.images = synthetic_images(config, 4 * size) if images is None else images
        self.built = build(config, data.num_batches(len(self.images["label"]), size, drop_remainder=True))
        self.state = self.built.init_state()
        self.epoch, self.batches, self.data_seconds = 0, iter(()), 0.0
        start = time.perf_counter()
        lowered = self.built.train_fn.lower(self.state, self.next_batch(), self.built.dropout_rng)
        self.step = lowered.compile()
        self.compile_seconds = time.perf_counter() - start
        self.epoch, self.batches, self.data_seconds = 0, iter(()), 0.0  # step 1 takes batch 1, as in train

    def next_batch(self) -> dict[str, jax.Array]:
        """The next training batch, split over the mesh (``parallel.shard_batch``)."""
        start = time.perf_counter()
        batch = next(self.batches, None)
        if batch is None:
            self.epoch, c = self.epoch + 1, self.config.train
            cut = {"shuffle": True, "seed": c.seed, "epoch": self.epoch, "drop_remainder": True}
            self.batches = data.batches(self.images, c.batch_size, **cut)  # as Trainer.train_epoch does
            batch = next(self.batches)
        batch = parallel.shard_batch(batch, self.built.batch_sharding)
        self.data_seconds += time.perf_counter() - start
        return batch

    def __call__(self, n: int) -> None:
        for _ in range(n):
            self.state, metrics = self.step(self.state, self.next_batch(), self.built.dropout_rng)
        jax.block_until_ready((self.state, metrics))


class InferenceRunner:
    """Train's compiled evaluation step on one batch: ``runner(n)`` runs it ``n`` times and blocks.

    Attributes:
      compile_seconds: time to trace and compile the step.
      data_seconds: 0: the one batch is put on the devices before the timing.

    Raises:
      ConfigError: if the batch size does not split over the devices.
    """

    data_seconds = 0.0

    def __init__(self, config: BenchConfig):
        built = build(config, steps_per_epoch=1)
        self.state = built.init_state()
        images = synthetic_images(config, config.train.batch_size)
        self.batch = parallel.shard_batch(images, built.batch_sharding)
        start = time.perf_counter()
        self.evaluate = built.eval_fn.lower(self.state, self.batch).compile()
        self.compile_seconds = time.perf_counter() - start

    def __call__(self, n: int) -> None:
        for _ in range(n):
            sums = self.evaluate(self.state, self.batch)
        jax.block_until_ready(sums)


def peak_memory_bytes() -> dict[str, int]:
    """``{"host_maxrss": …}`` (``getrusage``; Linux reports KiB) plus ``device_peak`` of the
    first device where the backend reports ``memory_stats()`` (GPU/TPU)."""
    out = {"host_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        out["device_peak"] = int(stats["peak_bytes_in_use"])
    return out


def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Measures ``config``; returns a JSON-ready dict (see :func:`format_report` for the fields).

    Raises:
      ConfigError, ArchError: for invalid settings (see :meth:`BenchConfig.validate`), or
        a batch size that does not split over the devices.
    """
    config.validate()
    c = config.train
    devices = jax.device_count()
    peak = matmul_peak(dtype=c.dtype)
    flops = 2 * config.forward_macs()
    report: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "impl": resolve_impl(c.impl),
        "convs": onednn_build.status() if resolve_impl(c.impl) == "cpu_fast" else None,
        "device": str(jax.devices()[0].device_kind),
        "devices": devices,
        "backend": jax.default_backend(),
        "forward_gflop_per_image": flops / 1e9,
        "matmul_peak_gflops": peak,
    }
    runners = {"train": (TrainRunner, TRAIN_FLOPS_PER_FORWARD), "inference": (InferenceRunner, 1)}
    for mode, (make, factor) in runners.items():
        if config.only not in (None, mode):
            continue
        runner = make(config)
        runner(1)
        runner.data_seconds, start = 0.0, time.perf_counter()
        run = functools.partial(runner, config.steps)
        rate = median_rate(run, items=c.batch_size * config.steps, repeats=config.repeats)
        gflops = rate * factor * flops / 1e9
        report[mode] = {
            "images_per_s": rate,
            "compile_s": runner.compile_seconds,
            "gflops": gflops,
            "peak_fraction": gflops / (peak * devices),
        }
        if mode == "train":
            report[mode]["data_time_share"] = runner.data_seconds / (time.perf_counter() - start)
    report["memory"] = peak_memory_bytes()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines ``vggjax bench`` prints."""
    c = report["config"]["train"]
    lines = [
        f"{c['arch']} width {c['width']} at {c['image_size']}x{c['image_size']}x{c['channels']}, "
        f"batch {c['batch_size']}, {c['dtype']}, impl {report['impl']} on {report['backend']} "
        f"({report['devices']} x {report['device']})",
        f"forward {report['forward_gflop_per_image']:.3f} GFLOP/image; measured matmul peak "
        f"{report['matmul_peak_gflops']:.1f} GFLOP/s per device",
    ]
    if report.get("convs"):
        lines.append(f"convolutions: {report['convs']}")
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
