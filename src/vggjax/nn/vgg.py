"""VGG networks in flax.linen, built from an :class:`~vggjax.arch.Arch`; images NHWC ``float32[N, H, W, C]``.

Blocks ``block1`` … ``block5``, each ``conv{i}`` [→ ``bn{i}``] → ReLU repeated, then a
2×2 stride-2 max-pool; then the head ``fc6`` → ReLU → Dropout → ``fc7`` → ReLU → Dropout
→ ``fc8``. Parameter paths ``block{b}/conv{i}``, ``block{b}/bn{i}``, ``fc6``, ``fc7``,
``fc8`` are what weight import keys on. The layers, their order and names come from
:mod:`vggjax.arch.layout`, which the summary and torchvision import read too.

:class:`VGGBlock`, :class:`VGG` and :func:`build_model` are here; the model of a run's
config and the check that weights fit a model are in :mod:`vggjax.nn.fit`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vggjax.arch import ADAPTIVE_SIDE, Arch, Block, Layer, block_layers, feature_names, get_arch, head_layers
from vggjax.errors import ArchError, ConfigError
from vggjax.nn.impl import layer_ops
from vggjax.nn.init import initializers
from vggjax.nn.ops import adaptive_avg_pool, local_response_norm

Stage = tuple[str, Callable[[jax.Array], jax.Array]]


class VGGBlock(nn.Module):
    """``len(kernels)`` × [conv (padding d·(k//2)) → optional BatchNorm → ReLU], then 2×2 max-pool.

    Attributes:
      channels: output channels of every conv.
      kernels: kernel side of each conv (pixels).
      dilations: dilation of each conv (``nn.Conv``'s ``kernel_dilation``), as many as
        ``kernels``; ``()`` (the default) is 1 for every conv.
      batch_norm: insert BatchNorm (momentum 0.9, eps 1e-5: torchvision's numerics).
      lrn: local response normalisation after the first conv's ReLU.
      init_scheme: initialiser scheme, see :func:`vggjax.nn.init.initializers`.
      dtype: computation dtype (params stay float32).
      impl: ``"xla"``, ``"cpu_fast"`` or ``"auto"``, see :mod:`vggjax.nn.impl`.
      number: the block's number ``b`` (from 1) in its layer names ``conv{b}_{i}`` ….

    Input ``float32[N, H, W, C_in]``, output ``[N, H//2, W//2, channels]``.
    """

    channels: int
    kernels: tuple[int, ...] = (3,)
    dilations: tuple[int, ...] = ()
    batch_norm: bool = False
    lrn: bool = False
    init_scheme: str = "he"
    dtype: Any = jnp.float32
    impl: str = "xla"
    number: int = 1

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """The pooled map ``[N, H//2, W//2, channels]`` of ``x``: ``float32[N, H, W, C_in]``.

        ``train``: BatchNorm uses batch statistics (and needs ``mutable=["batch_stats"]``).
        """
        return self.run(x, train=train)[0]

    @nn.compact
    def run(
        self, x: jax.Array, *, train: bool = False, taps: Collection[str] | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Runs the block's layers in order, keeping the activations named in ``taps``.

        Args:
          x: ``float32[N, H, W, C_in]``.
          train: BatchNorm uses batch statistics.
          taps: layer names (``conv{b}_{i}``, ``bn{b}_{i}``, ``relu{b}_{i}``, ``lrn``,
            ``pool{b}``); names of other blocks are ignored.

        Returns:
          ``(last, found)``: ``found`` maps each name of ``taps`` in this block to its
          activation; the block stops after the layer that completes ``taps`` (``last`` is
          that layer's output; the pooled map when ``taps`` is None).
        """
        kernel_init, ops = initializers(self.init_scheme)["conv"], layer_ops(self.impl)
        block = Block(self.channels, tuple(self.kernels), tuple(self.dilations))
        stages: list[Stage] = []
        for layer in block_layers(block, self.number, batch_norm=self.batch_norm, lrn=self.lrn):
            if layer.kind == "conv":
                conv = functools.partial(nn.Conv, kernel_init=kernel_init, dtype=self.dtype, **ops["conv"])
                k, d = layer.kernel, layer.dilation
                stage = conv(
                    layer.channels, (k, k), padding=layer.padding, kernel_dilation=(d, d), name=layer.path[-1]
                )
            elif layer.kind == "bn":
                bn = ops["bn"](momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=layer.path[-1])
                stage = functools.partial(bn, use_running_average=not train)
            else:
                stage = {"relu": nn.relu, "lrn": local_response_norm, "pool": ops["pool"]}[layer.kind]
            stages.append((layer.name, stage))
        return run_stages(x, stages, taps)


def run_stages(
    x: jax.Array, stages: Sequence[Stage], taps: Collection[str] | None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Applies named ``(name, layer)`` stages in order.

    Returns ``(last, found)``: ``found`` holds the outputs of the stages named in
    ``taps``, and the stages stop as soon as all of ``taps`` are found: later layers are
    neither run nor need parameters. With ``taps=None`` every stage runs.
    """
    found: dict[str, jax.Array] = {}
    for name, layer in stages:
        x = layer(x)
        if taps is not None and name in taps:
            found[name] = x
            if len(found) == len(taps):
                break
    return x, found


class VGG(nn.Module):
    """A VGG network: the blocks of ``arch``, then a head.

    Attributes:
      arch: the :class:`~vggjax.arch.Arch` (a name such as ``"vgg16"`` or a literal
        goes through :func:`build_model` or :func:`vggjax.arch.get_arch` first).
      num_classes: logits per example.
      dropout_rate: dropout after ``fc6`` and ``fc7``, active only with ``train=True``.
      head: ``"flatten"`` (the d2l chapter's: flatten the last map, so the input size
        is fixed by the weights), ``"adaptive"`` (torchvision's: average-pool the last
        map to 7×7 first, so one set of weights serves any input ≥ ``min_input_size``),
        or ``None`` for a headless feature network.
      pooling: with ``head=None``: ``"avg"`` or ``"max"`` global pooling to
        ``[N, C]``, or ``None`` to return the last map ``[N, h, w, C]`` (Keras' convention).
      hidden: width of ``fc6`` and ``fc7`` (4096 in the paper).
      init_scheme: initialiser scheme, see :func:`vggjax.nn.init.initializers`.
      dtype: computation dtype; params are float32 whatever it is.
      impl: how convs, dense layers and pools are computed (same parameters, outputs and
        gradients to float rounding): ``"xla"``, Flax's own ops; ``"cpu_fast"``,
        :mod:`vggjax.nn.fastops`; ``"auto"`` (default) picks per backend (:mod:`vggjax.nn.impl`).

    ``model.apply(variables, x, train=...)`` with ``x`` of ``float32[N, H, W, C]`` in
    [0, 1] (or normalised, for ImageNet weights) returns logits ``float32[N, num_classes]``.
    With ``train=True`` it needs ``rngs={"dropout": key}`` (for ``dropout6`` and
    ``dropout7``) and, for BatchNorm archs, ``mutable=["batch_stats"]`` (it then returns
    ``(logits, {"batch_stats": ...})``). ``model.apply(variables, x, layers, method=VGG.features)``
    returns named activations instead (see :meth:`features`).

    Raises:
      ArchError: when ``arch`` is not an Arch, when the input is smaller than
        ``2**len(blocks)`` pixels on a side, when a flatten head is fed a different size
        from the one it was built for, or for an unknown head, pooling, init scheme or impl.
      ConfigError: (a ``ValueError``) with ``train=True`` but without the ``rngs`` or
        ``mutable`` above, one message naming all that this model needs, before any layer runs.
    """

    arch: Arch
    num_classes: int = 10
    dropout_rate: float = 0.5
    head: str | None = "flatten"
    pooling: str | None = None
    hidden: int = 4096
    init_scheme: str = "he"
    dtype: Any = jnp.float32
    impl: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.arch, Arch):
            hint = f"use build_model({self.arch!r}) or VGG(vggjax.arch.get_arch(...))"
            raise ArchError(f"VGG needs an Arch, got {self.arch!r}; {hint}")
        super().__post_init__()

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Logits ``float32[N, num_classes]``; headless, the pooled ``[N, C]`` or the last map.

        Args:
          x: ``float32[N, H, W, C]``.
          train: dropout on, BatchNorm on batch statistics.

        Raises:
          ArchError: for an input too small or (flatten head) of the wrong size.
        """
        return self._run(x, train=train, taps=None)

    def features(self, x: jax.Array, layers: Sequence[str], *, train: bool = False) -> dict[str, jax.Array]:
        """Named activations, computed only up to the deepest of ``layers``.

        Call as ``model.apply(variables, x, layers, method=VGG.features)``; the variables
        need only the layers up to the deepest one asked for.

        Args:
          x: ``float32[N, H, W, C]``.
          layers: names from :func:`vggjax.arch.feature_names` (``conv3_2``, ``relu3_2``,
            ``pool3``, ``fc7`` …); see :func:`vggjax.nn.features.features`.
          train: dropout on, BatchNorm on batch statistics.

        Returns:
          A dict from each name in ``layers`` (duplicates once, in the order asked) to its
          activation: ``[N, H', W', C']`` for conv-side layers, ``[N, features]`` for the head's.

        Raises:
          ArchError: for an unknown or empty list of names, or an input the model cannot take.
        """
        valid = feature_names(self.arch, head=self.head is not None)
        if isinstance(layers, str) or not layers:
            raise ArchError(f"taps must be a non-empty list of layer names, e.g. ['relu1_2'], got {layers!r}")
        unknown = [name for name in layers if name not in valid]
        if unknown:
            raise ArchError(f"unknown layer name(s) {unknown} for this VGG; use any of: {', '.join(valid)}")
        found = self._run(x, train=train, taps=set(layers))
        return {name: found[name] for name in layers}

    @nn.compact
    def _run(self, x: jax.Array, *, train: bool, taps: set[str] | None) -> Any:
        """The forward pass: the output with ``taps=None``, else the dict of the tapped activations."""
        sizes = {"pooling": self.pooling, "hidden": self.hidden, "num_classes": self.num_classes}
        head = head_layers(self.arch, head=self.head, **sizes)
        self.arch.check_input(x.shape)
        if train:
            self._check_train_args(head, taps)
        x = x.astype(self.dtype)
        found: dict[str, jax.Array] = {}
        for b, block in enumerate(self.arch.blocks, 1):
            run_block = VGGBlock(
                block.channels,
                block.kernels,
                block.dilations,
                batch_norm=self.arch.batch_norm,
                lrn=self.arch.lrn and b == 1,
                init_scheme=self.init_scheme,
                dtype=self.dtype,
                impl=self.impl,
                number=b,
                name=f"block{b}",
            )
            if taps is None:
                x = run_block(x, train=train)
                continue
            x, got = run_block.run(x, train=train, taps=taps - found.keys())
            found |= got
            if len(found) == len(taps):
                return found
        stages = [(layer.name, self._head_stage(layer, head, train)) for layer in head]
        x, got = run_stages(x, stages, None if taps is None else taps - found.keys())
        if taps is not None:
            return found | got
        return x.astype(jnp.float32) if self.head is not None else x

    def _check_train_args(self, head: list[Layer], taps: set[str] | None) -> None:
        """One ConfigError naming what ``train=True`` needs (``rngs``, ``mutable``) if any is not given."""
        drop = next((i for i, layer in enumerate(head) if layer.kind == "dropout"), None)
        later = set() if drop is None else {layer.name for layer in head[drop + 1 :]}  # after dropout6
        needs = {}  # what train=True needs here -> given?
        if self.dropout_rate > 0 and later and (taps is None or taps & later):
            needs['rngs={"dropout": key}'] = self.has_rng("dropout")
        if self.arch.batch_norm:
            needs['mutable=["batch_stats"]'] = self.is_mutable_collection("batch_stats")
        if not all(needs.values()):
            missing = ", ".join(k for k, given in needs.items() if not given)
            raise ConfigError(
                f"train=True on this VGG needs {' and '.join(needs)} in model.apply (missing: {missing}); "
                "pass train=False to evaluate"
            )

    def _head_stage(self, layer: Layer, head: list[Layer], train: bool) -> Callable[[jax.Array], jax.Array]:
        """The callable of one head layer; fc8 (the last) gets the logits initialiser."""
        if layer.kind == "dense":
            init = initializers(self.init_scheme)["logits" if layer is head[-1] else "dense"]
            dense = functools.partial(nn.Dense, dtype=self.dtype, **layer_ops(self.impl)["dense"])
            return dense(layer.channels, kernel_init=init, name=layer.name)
        if layer.kind == "dropout":
            return nn.Dropout(self.dropout_rate, deterministic=not train, name=layer.name)
        if layer.kind == "flatten":
            first = next(x.name for x in head if x.kind == "dense")
            return functools.partial(self._flatten, first=first)
        if layer.kind == "globalpool":
            return functools.partial(jnp.mean if self.pooling == "avg" else jnp.max, axis=(1, 2))
        if layer.kind == "avgpool":
            return functools.partial(adaptive_avg_pool, size=ADAPTIVE_SIDE)
        return nn.relu

    def _flatten(self, x: jax.Array, *, first: str) -> jax.Array:
        """``[N, h, w, C]`` → ``[N, h·w·C]``, checked against the ``first`` dense layer's kernel."""
        x = x.reshape((x.shape[0], -1))
        if self.is_initializing() or not self.has_variable("params", first):
            return x
        expected = self.variables["params"][first]["kernel"].shape[0]
        if x.shape[-1] != expected:
            raise ArchError(
                f"the flatten head's {first} expects {expected:,} features but this input gives "
                f"{x.shape[-1]:,}; feed the input size the model was built for, or use head='adaptive'"
            )
        return x


def build_model(
    arch: str | Sequence | Arch = "vgg11", *, width: float = 1.0, batch_norm: bool | None = None, **kwargs
) -> VGG:
    """A :class:`VGG` from a name or literal, with a width multiplier.

    ``build_model("vgg11", width=0.25)`` is the d2l chapter's thin VGG-11.

    Raises:
      ArchError: for an invalid arch or width (see :func:`vggjax.arch.get_arch`).
    """
    return VGG(get_arch(arch, width=width, batch_norm=batch_norm), **kwargs)
