"""Data parallelism over every device, on one host or many, with JAX's own runtime.

One :class:`~jax.sharding.Mesh` with a single ``"data"`` axis spans ``jax.devices()``
(every device of every process). Each global batch is split along that axis, so a
device sees ``batch_size / device_count`` examples; params, batch statistics and the
optimizer state are replicated (a thin VGG is a few MB: sharding them would only add
collectives). XLA inserts the gradient all-reduce itself when ``train_step`` is jitted
with these shardings, so the loss, BatchNorm statistics and gradients are those of the
whole global batch, exactly as on one device. This is the ``jit`` + ``jax.sharding``
recipe of the JAX "Distributed arrays and automatic parallelization" guide, as used by
big_vision and the Flax ImageNet example.

Several hosts join with :func:`initialize` (``jax.distributed``) before JAX touches a
device; each process then reads the same data files, cuts the same global batches (the
shuffle depends only on seed and epoch) and puts only its own rows on its devices with
``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from vggjax.errors import ConfigError, check_positive_int, first_line

AXIS = "data"
ENV = {
    "coordinator": "VGGJAX_COORDINATOR",
    "num_processes": "VGGJAX_NUM_PROCESSES",
    "process_id": "VGGJAX_PROCESS_ID",
    "auto": "VGGJAX_DISTRIBUTED",
    "timeout": "VGGJAX_DIST_TIMEOUT",
}
DEFAULT_TIMEOUT = 300  # seconds, jax.distributed's own default


@dataclasses.dataclass(frozen=True)
class DistributedSpec:
    """How this process joins a multi-process run (arguments of ``jax.distributed.initialize``).

    Attributes:
      coordinator: ``HOST:PORT`` of process 0's coordination service; None lets JAX
        detect it (SLURM, Open MPI, Cloud TPU, Kubernetes).
      num_processes: processes in the run; None lets JAX detect it.
      process_id: this process's index in ``[0, num_processes)``; None lets JAX detect it.
      timeout: seconds to wait for all processes to connect, and at shutdown.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout: int = DEFAULT_TIMEOUT


def resolve_spec(
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
    timeout: int | None = None,
    env: Mapping[str, str] | None = None,
) -> DistributedSpec | None:
    """Decides from flags, then environment variables, whether and how to start ``jax.distributed``.

    Each argument left None falls back to its variable (``VGGJAX_COORDINATOR``,
    ``VGGJAX_NUM_PROCESSES``, ``VGGJAX_PROCESS_ID``, ``VGGJAX_DISTRIBUTED=1`` for ``auto``,
    ``VGGJAX_DIST_TIMEOUT``). Without any of them the run is single-process (but still uses
    every local device). With ``auto``, the unset values are left to JAX's cluster
    detection (SLURM, Open MPI, Cloud TPU pod slices, Kubernetes).

    Args:
      coordinator: ``HOST:PORT`` of process 0.
      num_processes: number of processes, N.
      process_id: this process's index, in ``[0, N)``.
      auto: let ``jax.distributed.initialize`` detect what is not given.
      timeout: seconds for connecting and shutting down (default 300).
      env: the environment to read (default ``os.environ``).

    Returns:
      The spec to pass to :func:`initialize`, or None for a single-process run.

    Raises:
      ConfigError: for a malformed value, a process id out of range, or an incomplete
        explicit setting (all of coordinator, number of processes and process id are
        needed unless ``auto``).
    """
    env = os.environ if env is None else env
    coordinator = coordinator or env.get(ENV["coordinator"]) or None
    num_processes = _int_or_none(num_processes, env, "num_processes", "--num-processes")
    process_id = _int_or_none(process_id, env, "process_id", "--process-id")
    timeout = _int_or_none(timeout, env, "timeout", "--dist-timeout")
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    auto = auto or env.get(ENV["auto"], "").lower() in ("1", "true", "yes", "auto")
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if not auto and all(v is None for v in given.values()):
        return None
    if not auto and any(v is None for v in given.values()):
        missing = [flag for flag, v in given.items() if v is None]
        raise ConfigError(
            f"multi-process training needs --coordinator, --num-processes and --process-id; missing "
            f"{', '.join(missing)} (or set VGGJAX_COORDINATOR, VGGJAX_NUM_PROCESSES, VGGJAX_PROCESS_ID; "
            "or pass --distributed to let JAX detect them)"
        )
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234), got {coordinator!r}")
    if num_processes is not None:
        check_positive_int(num_processes, "--num-processes")
    if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
        raise ConfigError(
            f"--process-id must be in [0, {num_processes}) for --num-processes {num_processes}, "
            f"got {process_id}"
        )
    if timeout < 1:
        raise ConfigError(f"--dist-timeout must be a positive number of seconds, got {timeout}")
    return DistributedSpec(coordinator, num_processes, process_id, timeout)


def _int_or_none(value: int | None, env: Mapping[str, str], key: str, flag: str) -> int | None:
    if value is not None:
        return value
    raw = env.get(ENV[key])
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{ENV[key]} (or {flag}) must be an integer, got {raw!r}") from None


def initialize(spec: DistributedSpec | None) -> None:
    """Joins the multi-process run described by ``spec`` (nothing for None).

    Must run before anything touches a JAX device. On CPU, cross-process collectives
    use gloo (``jax_cpu_collectives_implementation``).

    Raises:
      ConfigError: if JAX is already initialised, or the processes cannot connect
        within ``spec.timeout`` seconds.
    """
    if spec is None:
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=spec.coordinator,
            num_processes=spec.num_processes,
            process_id=spec.process_id,
            initialization_timeout=spec.timeout,
            shutdown_timeout_seconds=spec.timeout,
        )
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"cannot start jax.distributed ({first_line(e)}); check --coordinator, --num-processes and "
            "--process-id, and that every process is started"
        ) from None


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh((len(devices),), (AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Splits the leading (batch) axis over the mesh's ``"data"`` axis."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh (params, optimizer state, metrics)."""
    return NamedSharding(mesh, PartitionSpec())


def check_batch_size(batch_size: int, mesh: Mesh, *, flag: str = "--batch-size") -> None:
    """Checks that a global batch splits evenly over the mesh's devices.

    Raises:
      ConfigError: if ``batch_size`` is not a multiple of the device count.
    """
    n = mesh.devices.size
    if batch_size % n:
        lower, upper = batch_size // n * n, -(-batch_size // n) * n
        options = f"{lower} or {upper}" if lower else f"{upper}"
        raise ConfigError(
            f"{flag} {batch_size} does not split over {n} devices; use a multiple of {n} (e.g. {options})"
        )


def process_rows(sharding: NamedSharding, batch_size: int) -> np.ndarray:
    """The rows of a global batch of ``batch_size`` that live on this process's devices.

    Returns:
      ``int64[batch_size / process_count]`` indices in increasing order: the order in
      which ``jax.make_array_from_process_local_data`` expects the process-local rows.
    """
    slices = sharding.addressable_devices_indices_map((batch_size,)).values()
    starts = sorted({(s[0].start or 0, s[0].stop if s[0].stop is not None else batch_size) for s in slices})
    return np.concatenate([np.arange(a, b) for a, b in starts])


def shard_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Puts this process's rows of a global host batch on its devices.

    Args:
      batch: the global batch, arrays ``[B, ...]`` (every process cuts the same one).
      sharding: :func:`batch_sharding` of the mesh.

    Returns:
      Global ``jax.Array`` s of shape ``[B, ...]``, split along the batch axis; each
      process transfers only its ``B / process_count`` rows.
    """
    size = len(next(iter(batch.values())))
    rows = process_rows(sharding, size)
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(value)[rows], value.shape)
        for key, value in batch.items()
    }


def is_main_process() -> bool:
    """True on process 0, the one that writes metrics, plots and logs."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """A barrier across processes (nothing in a single-process run)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def replica_fingerprint(tree: Any) -> np.ndarray:
    """``uint32[1]``: CRC-32 of the bytes of this process's first copy of every leaf.

    Equal fingerprints on every process show that the replicas are bitwise identical.
    """
    crc = 0
    for leaf in jax.tree.leaves(tree):
        crc = zlib.crc32(np.ascontiguousarray(leaf.addressable_data(0)).tobytes(), crc)
    return np.array([crc], np.uint32)


def check_replicas_agree(tree: Any) -> None:
    """Raises ``AssertionError`` unless every process holds bitwise the same replicated ``tree``.

    Compares :func:`replica_fingerprint` across processes (a 4-byte all-gather); a
    single-process run has nothing to compare.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.assert_equal(replica_fingerprint(tree), "replicated params differ across processes")


def describe_devices() -> str:
    """One line: processes, devices and the per-device split, printed at the start of a run."""
    local = jax.local_devices()
    return (
        f"devices: {jax.device_count()} ({local[0].platform}) in {jax.process_count()} process(es), "
        f"{len(local)} on this one; batches split over the '{AXIS}' mesh axis"
    )
