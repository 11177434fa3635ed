"""VGG networks in flax.linen, built from an :class:`~vggjax.arch.Arch`.

Layout (the d2l chapter's, with the VGG paper's layer names): blocks ``block1`` …
``block5``, each ``conv{i}`` [→ ``bn{i}``] → ReLU repeated, then a 2×2 stride-2
max-pool; then the head ``fc6`` (4096) → ReLU → Dropout → ``fc7`` (4096) → ReLU →
Dropout → ``fc8`` (classes). Parameter paths are therefore ``block{b}/conv{i}``,
``block{b}/bn{i}``, ``fc6``, ``fc7``, ``fc8``; weight import keys on them.

Images are NHWC: ``float32[N, H, W, C]``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vggjax.arch import Arch, get_arch
from vggjax.errors import ArchError

HEADS = ("flatten", "adaptive", None)
INITS = ("he", "torchvision", "lecun")


def initializers(scheme: str) -> dict[str, Any]:
    """Kernel initialisers for ``conv``, ``dense`` (fc6, fc7) and ``logits`` (fc8) layers.

    Biases are always zero. Schemes:
      ``"he"`` (default): He et al. 2015, normal with variance 2 / fan_in for convs,
        fc6 and fc7, which keeps activations at unit scale through the ReLUs, so the
        d2l chapter's plain SGD (lr 0.01) trains every depth; fc8 is normal with std
        0.01 so the step-0 loss is ln(num_classes).
      ``"torchvision"``: torchvision's VGG: conv normal with variance 2 / fan_out,
        dense normal with std 0.01.
      ``"lecun"``: Flax's default, normal with variance 1 / fan_in.

    Raises:
      ArchError: for an unknown scheme.
    """
    vs = nn.initializers.variance_scaling
    if scheme == "he":
        conv = dense = vs(2.0, "fan_in", "normal")
        logits = nn.initializers.normal(0.01)
    elif scheme == "torchvision":
        conv, dense = vs(2.0, "fan_out", "normal"), nn.initializers.normal(0.01)
        logits = dense
    elif scheme == "lecun":
        conv = dense = logits = nn.initializers.lecun_normal()
    else:
        raise ArchError(f"unknown init {scheme!r}; use one of {', '.join(INITS)}")
    return {"conv": conv, "dense": dense, "logits": logits}


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max-pool with stride 2 (VALID): ``[N, H, W, C]`` → ``[N, H//2, W//2, C]``."""
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def adaptive_avg_pool(x: jax.Array, size: int = 7) -> jax.Array:
    """torchvision's ``AdaptiveAvgPool2d(size)``: ``[N, H, W, C]`` → ``[N, size, size, C]``.

    Output cell ``i`` averages input rows ``floor(i·H/size)`` to ``ceil((i+1)·H/size)``
    (exclusive), the same bins as PyTorch, so a 1×1 map is replicated to 7×7.
    """

    def pool(x: jax.Array, axis: int) -> jax.Array:
        n = x.shape[axis]
        if n == size:
            return x
        cells = [
            jnp.mean(
                jax.lax.slice_in_dim(x, (i * n) // size, -(-((i + 1) * n) // size), axis=axis),
                axis=axis,
                keepdims=True,
            )
            for i in range(size)
        ]
        return jnp.concatenate(cells, axis=axis)

    return pool(pool(x, 1), 2)


class VGGBlock(nn.Module):
    """``len(kernels)`` × [conv (padding k//2) → optional BatchNorm → ReLU], then 2×2 max-pool.

    Attributes:
      channels: output channels of every conv.
      kernels: kernel side of each conv (pixels).
      batch_norm: insert BatchNorm (momentum 0.9, eps 1e-5: torchvision's numerics).
      lrn: local response normalisation after the first conv.
      init_scheme: initialiser scheme, see :func:`initializers`.
      dtype: computation dtype (params stay float32).

    Input ``float32[N, H, W, C_in]``, output ``[N, H//2, W//2, channels]``.
    """

    channels: int
    kernels: tuple[int, ...] = (3,)
    batch_norm: bool = False
    lrn: bool = False
    init_scheme: str = "he"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        kernel_init = initializers(self.init_scheme)["conv"]
        for i, k in enumerate(self.kernels, 1):
            x = nn.Conv(
                self.channels,
                (k, k),
                padding=k // 2,
                kernel_init=kernel_init,
                dtype=self.dtype,
                name=f"conv{i}",
            )(x)
            if self.batch_norm:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=0.9,
                    epsilon=1e-5,
                    dtype=self.dtype,
                    name=f"bn{i}",
                )(x)
            x = nn.relu(x)
            if self.lrn and i == 1:
                x = local_response_norm(x)
        return max_pool_2x2(x)


def local_response_norm(
    x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> jax.Array:
    """AlexNet's local response normalisation across channels (the VGG paper's A-LRN).

    ``b_c = a_c / (k + alpha · Σ_{|c'-c| ≤ size//2} a_{c'}²) ** beta`` with AlexNet's
    constants (Krizhevsky et al. 2012, section 3.3), on ``[N, H, W, C]``.
    """
    sq = jnp.square(x)
    half = size // 2
    padded = jnp.pad(sq, [(0, 0), (0, 0), (0, 0), (half, half)])
    window = sum(padded[..., i : i + x.shape[-1]] for i in range(size))
    return x / (k + alpha * window) ** beta


class VGG(nn.Module):
    """A VGG network: the blocks of ``arch``, then a head.

    Attributes:
      arch: an :class:`~vggjax.arch.Arch`, a name such as ``"vgg16"``, or a tuple of
        ``(num_convs, channels)`` pairs as in the d2l chapter.
      num_classes: logits per example.
      dropout_rate: dropout after ``fc6`` and ``fc7``, active only with ``train=True``.
      head: ``"flatten"`` (the d2l chapter's: flatten the last map, so the input size
        is fixed by the weights), ``"adaptive"`` (torchvision's: average-pool the last
        map to 7×7 first, so one set of weights serves any input ≥ ``min_input_size``),
        or ``None`` for a headless feature network.
      pooling: with ``head=None``: ``"avg"`` or ``"max"`` global pooling to
        ``[N, C]``, or ``None`` to return the last map ``[N, h, w, C]`` (Keras' convention).
      hidden: width of ``fc6`` and ``fc7`` (4096 in the paper).
      init_scheme: initialiser scheme, see :func:`initializers`.
      dtype: computation dtype; params are float32 whatever it is.

    Call ``model.apply(variables, x, train=...)`` with ``x`` of ``float32[N, H, W, C]``
    in [0, 1] (or normalised, for ImageNet weights); returns logits
    ``float32[N, num_classes]``. With ``train=True`` it needs ``rngs={"dropout": key}``
    and, for BatchNorm archs, ``mutable=["batch_stats"]``.

    Raises:
      ArchError: when the input is smaller than ``2**len(blocks)`` pixels on a side,
        when a flatten head is fed a different size from the one it was built for,
        or for an unknown head, pooling or init scheme.
    """

    arch: Arch | str | tuple = "vgg11"
    num_classes: int = 10
    dropout_rate: float = 0.5
    head: str | None = "flatten"
    pooling: str | None = None
    hidden: int = 4096
    init_scheme: str = "he"
    dtype: Any = jnp.float32

    @property
    def spec(self) -> Arch:
        """The resolved :class:`~vggjax.arch.Arch`."""
        return get_arch(self.arch)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        spec = self.spec
        check_input(spec, x.shape)
        x = x.astype(self.dtype)
        for b, block in enumerate(spec.blocks, 1):
            x = VGGBlock(
                block.channels,
                block.kernels,
                spec.batch_norm,
                spec.lrn and b == 1,
                self.init_scheme,
                self.dtype,
                name=f"block{b}",
            )(x, train=train)
        return self.apply_head(x, train=train)

    def apply_head(self, x: jax.Array, *, train: bool) -> jax.Array:
        """The part after the last pool: ``[N, h, w, C]`` → logits, features or pooled."""
        if self.head is None:
            if self.pooling is None:
                return x
            if self.pooling in ("avg", "max"):
                return (jnp.mean if self.pooling == "avg" else jnp.max)(x, axis=(1, 2))
            raise ArchError(f"unknown pooling {self.pooling!r}; use 'avg', 'max' or None")
        if self.head == "adaptive":
            x = adaptive_avg_pool(x, 7)
        elif self.head != "flatten":
            raise ArchError(f"unknown head {self.head!r}; use 'flatten', 'adaptive' or None")
        x = x.reshape((x.shape[0], -1))
        self._check_flatten(x.shape[-1])
        inits = initializers(self.init_scheme)
        dense = functools.partial(nn.Dense, dtype=self.dtype)
        for name in ("fc6", "fc7"):
            x = nn.relu(dense(self.hidden, kernel_init=inits["dense"], name=name)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return dense(self.num_classes, kernel_init=inits["logits"], name="fc8")(x).astype(jnp.float32)

    def _check_flatten(self, features: int) -> None:
        if self.is_initializing() or not self.has_variable("params", "fc6"):
            return
        expected = self.variables["params"]["fc6"]["kernel"].shape[0]
        if features != expected:
            raise ArchError(
                f"the flatten head's fc6 expects {expected:,} features but this input gives "
                f"{features:,}; feed the input size the model was built for, or use head='adaptive'"
            )


def check_input(arch: Arch, shape: Sequence[int]) -> None:
    """Checks an NHWC input shape against the arch's five (or more) pools.

    Raises:
      ArchError: if the input is not 4-D or a side is below ``arch.min_input_size``,
        naming the pool that would see an empty map.
    """
    if len(shape) != 4:
        raise ArchError(f"expected an NHWC batch [N, H, W, C], got shape {tuple(shape)}")
    side = min(shape[1], shape[2])
    if side < arch.min_input_size:
        pool = next(b for b in range(1, len(arch.blocks) + 1) if side >> b == 0)
        raise ArchError(
            f"input {shape[1]}x{shape[2]} is too small for {len(arch.blocks)} 2x2 max-pools: "
            f"pool{pool} would get an empty map; use an input of at least "
            f"{arch.min_input_size}x{arch.min_input_size} pixels (e.g. --image-size {arch.min_input_size})"
        )


def build_model(
    arch: str | Sequence | Arch = "vgg11",
    *,
    width: float = 1.0,
    batch_norm: bool | None = None,
    **kwargs: Any,
) -> VGG:
    """A :class:`VGG` from a name or literal, with a width multiplier.

    ``build_model("vgg11", width=0.25)`` is the d2l chapter's thin VGG-11.

    Raises:
      ArchError: for an invalid arch or width (see :func:`vggjax.arch.get_arch`).
    """
    return VGG(get_arch(arch, width=width, batch_norm=batch_norm), **kwargs)
