"""Refusing a run whose estimated memory exceeds what this machine has, before anything is written.

:func:`check_memory` compares :func:`vggjax.arch.memory.estimate_memory` of a config's
training step and evaluation batch with the memory of the devices that would run them:
on a CPU backend the host's available memory (``MemAvailable`` of ``/proc/meminfo``, or
less if the process's cgroup limits it), shared by every local CPU device; on a GPU or
TPU the free memory of each device (``memory_stats()``: ``bytes_limit - bytes_in_use``).
Where neither can be read the check passes.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax

from vggjax.arch.memory import estimate_memory, gib
from vggjax.config import TrainConfig
from vggjax.errors import ConfigError
from vggjax.nn.impl import resolve_impl


def host_available_bytes(
    meminfo: str | Path = "/proc/meminfo", cgroup: str | Path = "/sys/fs/cgroup"
) -> int | None:
    """Bytes of host memory a new allocation can get, or None where Linux does not say.

    ``MemAvailable`` of ``meminfo`` (the kernel's estimate of what can be allocated without
    swapping), capped by the cgroup v2 limit of this process (``memory.max - memory.current``
    of its folder under ``cgroup``, as a container sets it), if any.
    """
    try:
        lines = Path(meminfo).read_text().splitlines()
        available = next(int(line.split()[1]) * 1024 for line in lines if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    try:
        own = Path("/proc/self/cgroup").read_text().split("::", 1)[1].strip().lstrip("/")
        folder = Path(cgroup) / own
        limit = (folder / "memory.max").read_text().strip()
        if limit != "max":
            available = min(available, int(limit) - int((folder / "memory.current").read_text()))
    except (OSError, IndexError, ValueError):
        pass
    return available


def device_limit(devices: list[jax.Device]) -> tuple[int, str, int] | None:
    """``(bytes, what, copies)``: the memory one device's share of a step must fit in.

    On CPU the host's available memory, which all ``copies`` local CPU devices share; on
    GPU/TPU the least free memory of a local device (``copies`` 1). None if unknown.
    """
    local = [d for d in devices if d.process_index == jax.process_index()] or devices
    if local[0].platform == "cpu":
        available = host_available_bytes()
        return None if available is None else (available, "available on this machine", len(local))
    free = []
    for d in local:
        stats = d.memory_stats() or {}
        if "bytes_limit" in stats:
            free.append(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return (min(free), f"free on {local[0].device_kind}", 1) if free else None


def check_memory(config: TrainConfig, mesh: jax.sharding.Mesh, *, evaluation: bool = True) -> None:
    """Refuses ``config`` if one training step (or evaluation batch) is estimated not to fit.

    Args:
      config: a validated config; its model, ``dtype``, ``impl``, ``momentum``,
        ``image_size``, ``batch_size`` and ``eval_batch_size`` are used.
      mesh: the devices the batches are split over (each holds the parameters and its share).
      evaluation: also check an evaluation batch of ``eval_batch_size``.

    Raises:
      ConfigError: naming the estimate and the limit in GiB and the flags that lower it.
    """
    limit = device_limit(list(mesh.devices.flat))
    if limit is None:
        return
    available, what, copies = limit
    n = mesh.devices.size
    model = {"channels": config.channels, "num_classes": config.num_classes, "head": config.head}
    model |= {"hidden": config.hidden, "dtype": config.dtype, "impl": resolve_impl(config.impl)}
    arch, size = config.resolved_arch(), config.image_size
    kept = ["momentum"] * bool(config.momentum) + ["EMA"] * bool(config.ema)  # per-parameter state
    slots = len(kept)
    checks = [("training step", "--batch-size", config.batch_size, True)]
    if evaluation:
        checks.append(("evaluation batch", "--eval-batch-size", config.eval_batch_size, False))
    for name, flag, batch, train in checks:
        e = estimate_memory(
            arch, input_size=size, batch=math.ceil(batch / n), optimizer_slots=slots, train=train, **model
        )
        if copies * e.total > available:
            names = ["parameters", *["gradients"] * train, *kept]
            held = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
            each = f" on each of {n} devices" if n > 1 and copies == 1 else ""
            parts = f"{held} {gib(copies * e.params)}, activations {gib(copies * e.activations)}"
            raise ConfigError(
                f"one {name} (batch {batch} at {size}x{size}) needs about {gib(copies * e.total)}{each} "
                f"({parts}), more than the {gib(available)} {what}; "
                f"use a smaller {flag}, --image-size, --hidden or --width"
            )
