"""An estimate of the memory a VGG's training step (or evaluation batch) needs, from its summary.

Pure Python, no JAX: the numbers are the :func:`vggjax.arch.summary.summarize` rows'
(``detail=True``: one row per conv, BatchNorm, ReLU, LRN, pool and head layer). It is an
*estimate*, for refusing a run that cannot fit before anything is written, not a
measurement. What it counts, in bytes:

* **parameters**: the summary's ``total_params`` in float32 (parameters stay float32
  whatever the compute dtype), times ``2 + optimizer_slots``: the parameters, their
  gradients and the optimizer's per-parameter state (SGD's momentum is one slot; plain
  SGD has none).
* **activations, training**: every layer's output for the whole batch plus the model
  input, at the compute dtype's size, times :data:`ACTIVATION_FACTOR`: the outputs kept
  for the backward pass (1×), their gradients on the way back, and XLA's temporaries
  (padding, im2col patches, layout copies).
* **evaluation**: the parameters and optimizer state (both stay resident in a training
  run) and :data:`EVAL_FACTOR` × the largest layer output: a forward pass frees each
  output once the next is computed.

The factors come from XLA's own accounting of the compiled steps
(``jax.jit(step).lower(...).compile().memory_analysis()``, temporaries less the
gradients, over the activations counted here) on CPU, for the thin and full VGG-11,
VGG-11-BN, VGG-16 and one-block nets at 32–224 px: training 0.9–2.1× with
``impl="cpu_fast"`` and 1.5–3.4× with ``"xla"``; evaluation 0.4–1.1× the largest output
for maps of 56 px and more (up to 4.5× on 32 px maps, where the sizes are small). With
``bfloat16`` on a CPU, XLA computes convs in float32 and the activations come out about
twice the estimate. Not counted: the JAX runtime and compiler (a few hundred MiB of host
memory), the dataset, and the optimizer's scalar state.
"""

from __future__ import annotations

import dataclasses
import math

from vggjax.arch.spec import Arch
from vggjax.arch.summary import summarize, totals

# Bytes of activation memory per activation counted, in units of the compute dtype's
# size, for each implementation of the ops (see vggjax.nn.impl); measured as above.
ACTIVATION_FACTOR = {"xla": 3.5, "cpu_fast": 2.0, "cpu_jax": 2.0}
EVAL_FACTOR = 2.0  # × the largest layer output, for a forward pass
PARAM_BYTES = 4  # float32
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Estimated bytes of one training step (or one evaluation batch) on one device.

    Attributes:
      params: parameters, gradients and optimizer state, in bytes (float32).
      activations: layer outputs of the batch with the factor for what a step keeps, in bytes.
    """

    params: int
    activations: int

    @property
    def total(self) -> int:
        """``params + activations``, in bytes."""
        return self.params + self.activations


def estimate_memory(
    arch: Arch,
    *,
    input_size: int,
    batch: int,
    channels: int = 1,
    num_classes: int = 10,
    head: str | None = "flatten",
    hidden: int = 4096,
    dtype: str = "float32",
    impl: str = "xla",
    optimizer_slots: int = 1,
    train: bool = True,
) -> MemoryEstimate:
    """The estimated memory of one step of a VGG on a ``float[batch, S, S, channels]`` batch.

    Args:
      arch: the architecture (width applied).
      input_size: the model's input side ``S`` in pixels.
      batch: examples in the step (per device, when a batch is split over several).
      channels, num_classes, head, hidden: as :func:`vggjax.arch.summary.summarize` takes them.
      dtype: the compute dtype, ``"float32"`` or ``"bfloat16"`` (sets the activations' size).
      impl: ``"xla"`` or ``"cpu_fast"``, resolved (see :func:`vggjax.nn.impl.resolve_impl`);
        picks the training factor of :data:`ACTIVATION_FACTOR`.
      optimizer_slots: per-parameter arrays of optimizer state (1 for SGD with momentum).
      train: a training step (forward and backward) rather than an evaluation batch
        (forward only: no gradients).

    Returns:
      A :class:`MemoryEstimate` in bytes.

    Raises:
      ArchError, ConfigError: as :func:`~vggjax.arch.summary.summarize` raises them.
      KeyError: for a dtype or impl not listed above.
    """
    rows = summarize(
        arch,
        input_size=input_size,
        channels=channels,
        num_classes=num_classes,
        head=head,
        hidden=hidden,
        batch=batch,
        detail=True,
    )
    outputs = [math.prod(r.output_shape) for r in rows]
    size = DTYPE_BYTES[dtype]
    params = totals(rows)["total_params"] * PARAM_BYTES
    if not train:
        return MemoryEstimate(params * (1 + optimizer_slots), int(EVAL_FACTOR * max(outputs) * size))
    counted = sum(outputs) + batch * input_size**2 * channels  # the input: conv1_1's weight gradient
    return MemoryEstimate(params * (2 + optimizer_slots), int(ACTIVATION_FACTOR[impl] * counted * size))


def gib(n: int) -> str:
    """``n`` bytes in GiB for a message: ``"2.3 GiB"``, ``"18,626 GiB"``, ``"1.86e+10 GiB"``."""
    g = n / 2**30
    return f"{g:.1f} GiB" if g < 100 else f"{g:,.0f} GiB" if g < 1e7 else f"{g:.3g} GiB"
