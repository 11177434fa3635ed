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
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from vggjax.arch import Arch, feature_names, get_arch
from vggjax.config import IMPLS, INITS, TrainConfig
from vggjax.errors import ArchError, CheckpointError
from vggjax.nn.ops import adaptive_avg_pool, local_response_norm, max_pool_2x2


def resolve_impl(impl: str) -> str:
    """``"auto"`` → ``"cpu_fast"`` on a CPU backend, ``"xla"`` elsewhere; others unchanged.

    Raises:
      ArchError: for an unknown implementation.
    """
    if impl not in IMPLS:
        raise ArchError(f"unknown impl {impl!r}; use one of {', '.join(IMPLS)}")
    if impl == "auto":
        return "cpu_fast" if jax.default_backend() == "cpu" else "xla"
    return impl


def layer_ops(impl: str) -> dict[str, Any]:
    """The conv, dense and pool functions of an implementation (see :class:`VGG`'s ``impl``).

    ``"xla"`` is the reference: Flax's defaults (``lax.conv_general_dilated``,
    ``lax.dot_general``, ``nn.max_pool``). ``"cpu_fast"`` swaps in
    :mod:`vggjax.nn.fastops`: same numbers and gradients, faster on XLA:CPU.

    Raises:
      ArchError: for an unknown implementation.
    """
    if resolve_impl(impl) == "xla":
        return {"conv": {}, "dense": {}, "pool": max_pool_2x2}
    from vggjax.nn import fastops

    return {
        "conv": {"conv_general_dilated": fastops.conv_general_dilated},
        "dense": {"dot_general": fastops.dot_general},
        "pool": fastops.max_pool_2x2,
    }


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


class VGGBlock(nn.Module):
    """``len(kernels)`` × [conv (padding k//2) → optional BatchNorm → ReLU], then 2×2 max-pool.

    Attributes:
      channels: output channels of every conv.
      kernels: kernel side of each conv (pixels).
      batch_norm: insert BatchNorm (momentum 0.9, eps 1e-5: torchvision's numerics).
      lrn: local response normalisation after the first conv's ReLU.
      init_scheme: initialiser scheme, see :func:`initializers`.
      dtype: computation dtype (params stay float32).
      impl: ``"xla"``, ``"cpu_fast"`` or ``"auto"``, see :class:`VGG`.
      number: the block's number ``b`` (from 1) in its layer names ``conv{b}_{i}`` ….

    Input ``float32[N, H, W, C_in]``, output ``[N, H//2, W//2, channels]``.
    """

    channels: int
    kernels: tuple[int, ...] = (3,)
    batch_norm: bool = False
    lrn: bool = False
    init_scheme: str = "he"
    dtype: Any = jnp.float32
    impl: str = "xla"
    number: int = 1

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, taps: Collection[str] | None = None
    ) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
        """Runs the block; with ``taps``, also returns the named activations asked for.

        Args:
          x: ``float32[N, H, W, C_in]``.
          train: BatchNorm uses batch statistics (and needs ``mutable=["batch_stats"]``).
          taps: layer names (``conv{b}_{i}``, ``bn{b}_{i}``, ``relu{b}_{i}``, ``lrn``,
            ``pool{b}``) to return; names of other blocks are ignored.

        Returns:
          The pooled map; with ``taps``, ``(last, found)``: ``found`` maps each name of
          ``taps`` that is in this block to its activation, and the block stops after
          the layer that completes ``taps`` (``last`` is that layer's output).
        """
        b, kernel_init = self.number, initializers(self.init_scheme)["conv"]
        ops = layer_ops(self.impl)
        stages: list[tuple[str, Callable[[jax.Array], jax.Array]]] = []
        for i, k in enumerate(self.kernels, 1):
            conv = nn.Conv(
                self.channels,
                (k, k),
                padding=k // 2,
                kernel_init=kernel_init,
                dtype=self.dtype,
                name=f"conv{i}",
                **ops["conv"],
            )
            stages.append((f"conv{b}_{i}", conv))
            if self.batch_norm:
                bn = nn.BatchNorm(
                    use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=f"bn{i}"
                )
                stages.append((f"bn{b}_{i}", bn))
            stages.append((f"relu{b}_{i}", nn.relu))
            if self.lrn and i == 1:
                stages.append(("lrn", local_response_norm))
        stages.append((f"pool{b}", ops["pool"]))
        return run_stages(x, stages, taps)


def run_stages(
    x: jax.Array, stages: Sequence[tuple[str, Callable[[jax.Array], jax.Array]]], taps: Collection[str] | None
) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
    """Applies named ``(name, layer)`` stages in order.

    Returns the last output; with ``taps``, ``(last, found)`` where ``found`` holds the
    outputs of the stages named in ``taps``, stopping as soon as all of ``taps`` are
    found: later layers are neither run nor need parameters.
    """
    found: dict[str, jax.Array] = {}
    for name, layer in stages:
        x = layer(x)
        if taps is not None and name in taps:
            found[name] = x
            if len(found) == len(taps):
                break
    return x if taps is None else (x, found)


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
      impl: how convs, dense layers and pools are computed, with identical parameters
        and (to float rounding) identical outputs and gradients: ``"xla"``, Flax's
        own ops, the reference; ``"cpu_fast"``, :mod:`vggjax.nn.fastops`, matmul-shaped
        ops with hand-written gradients, faster on XLA:CPU (README, "Speed"); ``"auto"``
        (default), ``"cpu_fast"`` on a CPU backend and ``"xla"`` on GPU/TPU.

    Call ``model.apply(variables, x, train=...)`` with ``x`` of ``float32[N, H, W, C]``
    in [0, 1] (or normalised, for ImageNet weights); returns logits
    ``float32[N, num_classes]``. With ``train=True`` it needs ``rngs={"dropout": key}``
    and, for BatchNorm archs, ``mutable=["batch_stats"]``.

    Raises:
      ArchError: when the input is smaller than ``2**len(blocks)`` pixels on a side,
        when a flatten head is fed a different size from the one it was built for,
        or for an unknown head, pooling, init scheme or impl.
    """

    arch: Arch | str | tuple = "vgg11"
    num_classes: int = 10
    dropout_rate: float = 0.5
    head: str | None = "flatten"
    pooling: str | None = None
    hidden: int = 4096
    init_scheme: str = "he"
    dtype: Any = jnp.float32
    impl: str = "auto"

    @property
    def spec(self) -> Arch:
        """The resolved :class:`~vggjax.arch.Arch`."""
        return get_arch(self.arch)

    @nn.compact
    def __call__(
        self, x: jax.Array, *, train: bool = False, taps: Sequence[str] | None = None
    ) -> jax.Array | dict[str, jax.Array]:
        """Logits (or features, see ``head``); with ``taps``, named activations instead.

        Args:
          x: ``float32[N, H, W, C]``.
          train: dropout on, BatchNorm on batch statistics.
          taps: layer names from :func:`vggjax.arch.feature_names` (``conv3_2``,
            ``relu3_2``, ``pool3``, ``fc7`` …); see :func:`vggjax.features.features`.

        Returns:
          ``float32[N, num_classes]`` logits; with ``taps``, a dict from each name in
          ``taps`` to its activation, computed only up to the deepest of them.

        Raises:
          ArchError: for an input too small or (flatten head) of the wrong size, or an
            unknown tap name.
        """
        spec = self.spec
        wanted = None if taps is None else self._check_taps(spec, taps)
        check_input(spec, x.shape)
        x = x.astype(self.dtype)
        found: dict[str, jax.Array] = {}
        for b, block in enumerate(spec.blocks, 1):
            run_block = VGGBlock(
                block.channels,
                block.kernels,
                batch_norm=spec.batch_norm,
                lrn=spec.lrn and b == 1,
                init_scheme=self.init_scheme,
                dtype=self.dtype,
                impl=self.impl,
                number=b,
                name=f"block{b}",
            )
            if wanted is None:
                x = run_block(x, train=train)
                continue
            x, got = run_block(x, train=train, taps=wanted - found.keys())
            found |= got
            if len(found) == len(wanted):
                return {name: found[name] for name in taps}
        if wanted is None:
            return self.apply_head(x, train=train)
        found |= self.apply_head(x, train=train, taps=wanted - found.keys())
        return {name: found[name] for name in taps}

    def _check_taps(self, spec: Arch, taps: Sequence[str]) -> set[str]:
        valid = feature_names(spec, head=self.head is not None)
        if isinstance(taps, str) or not taps:
            raise ArchError(f"taps must be a non-empty list of layer names, e.g. ('relu1_2',), got {taps!r}")
        unknown = [name for name in taps if name not in valid]
        if unknown:
            raise ArchError(f"unknown layer name(s) {unknown} for this VGG; use any of: {', '.join(valid)}")
        return set(taps)

    def apply_head(
        self, x: jax.Array, *, train: bool, taps: Collection[str] | None = None
    ) -> jax.Array | dict[str, jax.Array]:
        """The part after the last pool: ``[N, h, w, C]`` → logits, features or pooled.

        With ``taps`` (names among ``fc6``, ``relu6``, ``fc7``, ``relu7``, ``fc8``),
        returns a dict of those activations instead, stopping at the deepest.
        """
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
        dense = functools.partial(nn.Dense, dtype=self.dtype, **layer_ops(self.impl)["dense"])
        dropout = functools.partial(nn.Dropout, self.dropout_rate, deterministic=not train)
        stages = [
            ("fc6", dense(self.hidden, kernel_init=inits["dense"], name="fc6")),
            ("relu6", nn.relu),
            ("dropout6", dropout()),
            ("fc7", dense(self.hidden, kernel_init=inits["dense"], name="fc7")),
            ("relu7", nn.relu),
            ("dropout7", dropout()),
            ("fc8", dense(self.num_classes, kernel_init=inits["logits"], name="fc8")),
        ]
        out = run_stages(x, stages, taps)
        return out[1] if taps is not None else out.astype(jnp.float32)

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


def from_config(config: TrainConfig) -> VGG:
    """The :class:`VGG` a :class:`~vggjax.config.TrainConfig` describes (a run's ``config.json``).

    The one model factory: training, evaluation, prediction and export build their model
    here, so a run's weights always meet the network they were trained in.

    Raises:
      ArchError: for an invalid arch or width.
    """
    return VGG(
        config.resolved_arch(),
        num_classes=config.num_classes,
        dropout_rate=config.dropout_rate,
        head=config.head,
        hidden=config.hidden,
        init_scheme=config.init_scheme,
        dtype=jnp.dtype(config.dtype),
        impl=config.impl,
    )


def check_fits(
    model: VGG,
    variables: Mapping[str, Any],
    input_shape: Sequence[int],
    *,
    what: str = "the weights",
    hint: str = "",
) -> None:
    """Checks that ``variables`` are exactly what ``model.init`` makes for ``input_shape``.

    The model is traced abstractly (:func:`jax.eval_shape`; nothing is computed or
    allocated), so this costs the same for VGG-16 as for a thin VGG-11. Weights are
    never loaded partially or silently: a missing, extra or reshaped variable fails here.

    Args:
      model: the network the variables are for.
      variables: ``{"params": ..., "batch_stats": ...}`` (arrays or anything with a
        ``shape``); an empty collection counts as absent.
      input_shape: the NHWC input, e.g. ``(1, 32, 32, 1)``; with the flatten head it sets fc6's shape.
      what: how the message names the variables, e.g. ``"the weights runs/a/weights"``.
      hint: appended to the message: how to fix it.

    Raises:
      CheckpointError: naming the first path that is missing, extra or of another shape
        (with both shapes).
    """
    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    check_shapes(variables, jax.eval_shape(model.init, jax.random.key(0), x), what=what, hint=hint)


def check_shapes(variables: Any, expected: Any, *, what: str = "the weights", hint: str = "") -> None:
    """Checks that two variable trees have the same leaf paths and shapes (:func:`check_fits`' core).

    Args:
      variables: the tree to check, e.g. weights read from disk.
      expected: the tree the model needs (arrays or :class:`jax.ShapeDtypeStruct`).
      what: how the message names ``variables``.
      hint: appended to the message, e.g. how to fix it.

    Raises:
      CheckpointError: naming the first path of ``expected`` that ``variables`` lack or hold
        in another shape (with both shapes), else the first path ``expected`` lacks.
    """

    def flat(tree: Any) -> dict[str, tuple[int, ...]]:
        leaves = jax.tree_util.tree_leaves_with_path(tree)
        return {jax.tree_util.keystr(p, simple=True, separator="/"): tuple(np.shape(v)) for p, v in leaves}

    have, want = flat(variables), flat(expected)
    for path, shape in want.items():
        if path not in have:
            raise CheckpointError(f"{what} have no {path}, which the model needs{hint}")
        if have[path] != shape:
            raise CheckpointError(
                f"{path}: {what} have shape {list(have[path])} but the model needs {list(shape)}{hint}"
            )
    extra = next((path for path in have if path not in want), None)
    if extra is not None:
        raise CheckpointError(f"{what} have {extra}, which the model does not have{hint}")
