"""LPIPS-VGG (Zhang et al., 2018), computing exactly what the ``lpips`` package (0.1.4, ``net="vgg"``) does.

Source: ``lpips/lpips.py`` (``LPIPS.forward``, ``ScalingLayer``, ``NetLinLayer``,
``upsample``, ``spatial_average``), ``lpips/__init__.py`` (``normalize_tensor``) and
``lpips/pretrained_networks.py`` (``vgg16``: torchvision's ``features[0:30]``). For images
``x, y``: ``float32[N, H, W, 3]``:

1. Inputs in [0, 1] become ``2·x − 1`` (the reference's ``normalize=True``); inputs in
   [−1, 1] are taken as they are. Version 0.1 then applies the scaling layer,
   ``(x − shift) / scale`` with ``shift = (−0.030, −0.088, −0.188)`` and ``scale = (0.458,
   0.448, 0.450)``; version 0.0 does not (the original release's bug, kept by the reference).
2. The VGG-16 trunk is tapped at ``relu1_2, relu2_2, relu3_3, relu4_3, relu5_3`` and stops
   there (no pool5, no head).
3. Each tap is unit-normalised over channels, ``f / (sqrt(Σ_c f²) + 1e-10)``, in float32.
4. ``d_l = (f_l(x) − f_l(y))²``; with lin weights ``w_l: float32[C_l]`` (a 1×1 conv without
   bias) ``m_l = Σ_c w_l[c] · d_l[..., c]``, without (the ``lpips=False`` baseline) ``m_l =
   Σ_c d_l[..., c]``.
5. ``distance = Σ_l mean_{h,w} m_l``: ``float32[N]``. With ``spatial=True`` also ``map = Σ_l
   upsample(m_l)``: ``float32[N, H, W]``, each ``m_l`` bilinearly resized to ``H×W`` (torch's
   ``nn.Upsample(mode="bilinear", align_corners=False)``, i.e. half-pixel centres, no antialias).

The variant is named in every result: ``lpips-vgg-v0.1``, ``lpips-vgg-v0.0``,
``vgg-l2-baseline`` (no lin weights, version 0.1's scaling) and ``vgg-l2-baseline-v0.0``.
:class:`LPIPS` is a pytree (its weights are leaves), so it goes through ``jax.jit``,
``jax.grad`` (with respect to either image or the lin weights) and ``jax.vmap``; loading it
from files is :func:`vggjax.perceptual.weights.load_lpips`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from vggjax.arch import get_arch
from vggjax.config import DTYPES, IMPLS
from vggjax.errors import ArchError, ConfigError
from vggjax.nn.vgg import VGG

TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
CHANNELS = (64, 128, 256, 512, 512)  # channels of each tap, and of each lin weight
SHIFT = (-0.030, -0.088, -0.188)  # ScalingLayer.shift, per RGB channel
SCALE = (0.458, 0.448, 0.450)  # ScalingLayer.scale
EPS = 1e-10  # normalize_tensor's eps, added to the norm
VERSIONS = ("0.1", "0.0")
INPUT_RANGES = ("0,1", "-1,1")
MIN_SIDE = get_arch("vgg16").min_input_size  # VGG's input check: 32 pixels


def variant_name(version: str, lin: bool) -> str:
    """``lpips-vgg-v0.1``, ``lpips-vgg-v0.0``, ``vgg-l2-baseline`` or ``vgg-l2-baseline-v0.0``.

    Raises:
      ConfigError: for a version other than ``"0.1"`` and ``"0.0"``.
    """
    if version not in VERSIONS:
        raise ConfigError(f"LPIPS version must be one of {', '.join(VERSIONS)}, got {version!r}")
    if lin:
        return f"lpips-vgg-v{version}"
    return "vgg-l2-baseline" + ("" if version == "0.1" else f"-v{version}")


@struct.dataclass
class LPIPSOutput:
    """What :class:`LPIPS` returns: the distances, the spatial map if asked for, and the variant.

    Attributes:
      distance: ``float32[N]``, one distance per pair (0 for identical images).
      map: ``float32[N, H, W]``, the per-pixel distance map at the input size, with
        ``spatial=True``; else None.
      variant: e.g. ``"lpips-vgg-v0.1"``; a static field, so it survives ``jit``.
    """

    distance: jax.Array
    map: jax.Array | None = None
    variant: str = struct.field(pytree_node=False, default="lpips-vgg-v0.1")


@functools.cache
def trunk_model(dtype: str = "float32", impl: str = "auto") -> VGG:
    """The headless VGG-16 whose ``features`` method computes the taps (torchvision's numerics).

    Raises:
      ConfigError: for a dtype other than float32/bfloat16 or an unknown impl.
    """
    if dtype not in DTYPES or impl not in IMPLS:
        raise ConfigError(
            f"LPIPS dtype must be one of {DTYPES} and impl one of {IMPLS}, got {dtype!r}, {impl!r}"
        )
    return VGG(get_arch("vgg16"), head=None, init_scheme="torchvision", dtype=jnp.dtype(dtype), impl=impl)


@struct.dataclass
class LPIPS:
    """The LPIPS-VGG metric: VGG-16 trunk weights, lin weights and version, as one pytree.

    Build it with :func:`vggjax.perceptual.weights.load_lpips`; call it on two batches::

        metric = load_lpips("vgg16-397923af.pth")          # lin weights of the lpips package
        out = metric(x, y)                                  # x, y: float32[N, H, W, 3] in [0, 1]
        out.distance, out.variant                           # float32[N], "lpips-vgg-v0.1"
        loss = metric(recon, target, frozen_y=True).distance.mean()

    Attributes:
      trunk: VGG-16 conv variables ``{"params": {"block1": {"conv1": {"kernel", "bias"}, …}, …}}``
        (kernels ``float32[3, 3, C_in, C_out]``), as from a torchvision file.
      lin: the five lin weights ``float32[C_l]`` (``C = 64, 128, 256, 512, 512``), or None for
        the ``lpips=False`` baseline.
      version: ``"0.1"`` or ``"0.0"``; it goes with the lin weights (the file of that version).
      dtype: ``"float32"`` or ``"bfloat16"``: the trunk's compute dtype; normalisation,
        differences, lin weights, means and sums are float32 either way.
      impl: how the trunk's convs run, see :mod:`vggjax.nn.impl` (``"auto"``).
    """

    trunk: dict
    lin: tuple[jax.Array, ...] | None
    version: str = struct.field(pytree_node=False, default="0.1")
    dtype: str = struct.field(pytree_node=False, default="float32")
    impl: str = struct.field(pytree_node=False, default="auto")

    @property
    def variant(self) -> str:
        """The variant's name, e.g. ``"lpips-vgg-v0.1"`` (see :func:`variant_name`)."""
        return variant_name(self.version, self.lin is not None)

    def prepare(self, x: jax.Array, *, input_range: str = "0,1") -> jax.Array:
        """The trunk's input: ``[−1, 1]`` from ``input_range``, then version 0.1's scaling layer.

        Args:
          x: ``float[N, H, W, 3]`` RGB in ``[0, 1]`` (``input_range="0,1"``) or ``[−1, 1]``.
          input_range: ``"0,1"`` or ``"-1,1"``.

        Returns:
          ``float32[N, H, W, 3]``.

        Raises:
          ConfigError: for another ``input_range``.
          ArchError: for an input that is not ``[N, H, W, 3]`` with sides of at least 32 pixels.
        """
        if input_range not in INPUT_RANGES:
            raise ConfigError(f"input_range must be one of {', '.join(INPUT_RANGES)}, got {input_range!r}")
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ArchError(f"LPIPS takes RGB batches float32[N, H, W, 3], got shape {tuple(x.shape)}")
        if min(x.shape[1], x.shape[2]) < MIN_SIDE:
            raise ArchError(
                f"LPIPS-VGG needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, got "
                f"{x.shape[1]}x{x.shape[2]}; resize them first (vggjax lpips --resize {MIN_SIDE * 2})"
            )
        x = x.astype(jnp.float32)
        if input_range == "0,1":
            x = 2 * x - 1
        if self.version == "0.1":
            shift, scale = (jnp.asarray(c, jnp.float32).reshape(1, 1, 1, 3) for c in (SHIFT, SCALE))
            x = (x - shift) / scale
        return x

    def features(self, x: jax.Array, *, input_range: str = "0,1") -> tuple[jax.Array, ...]:
        """The five unit-normalised taps of ``x``, for :meth:`compare` (e.g. a fixed target's, once).

        Args:
          x: ``float[N, H, W, 3]`` RGB, see :meth:`prepare`.
          input_range: ``"0,1"`` or ``"-1,1"``.

        Returns:
          ``float32[N, h_l, w_l, C_l]`` for each of :data:`TAPS`, ``f / (‖f‖_c + 1e-10)``.

        Raises:
          ConfigError, ArchError: as :meth:`prepare`.
        """
        return _taps(self.trunk, self.prepare(x, input_range=input_range), dtype=self.dtype, impl=self.impl)

    def compare(
        self,
        fx: tuple[jax.Array, ...],
        fy: tuple[jax.Array, ...],
        *,
        spatial: bool = False,
        size: tuple[int, int] | None = None,
    ) -> LPIPSOutput:
        """The distance between two sets of :meth:`features` (steps 4–5 of the module docstring).

        Args:
          fx, fy: :meth:`features` of two batches of the same shape.
          spatial: also return the map, upsampled to ``size``.
          size: ``(H, W)`` of the images, needed with ``spatial``.

        Returns:
          An :class:`LPIPSOutput` of this metric's variant.

        Raises:
          ConfigError: for ``spatial`` without ``size``.
        """
        if spatial and size is None:
            raise ConfigError("compare(spatial=True) needs size=(H, W), the images' size")
        distance, maps = 0.0, 0.0
        for layer, (a, b) in enumerate(zip(fx, fy, strict=True)):
            d = (a - b) ** 2
            m = (
                jnp.sum(d, axis=-1)
                if self.lin is None
                else jnp.einsum("nhwc,c->nhw", d, jnp.asarray(self.lin[layer], jnp.float32))
            )
            distance = distance + jnp.mean(m, axis=(1, 2))
            if spatial:
                maps = maps + jax.image.resize(m, (m.shape[0], *size), method="linear", antialias=False)
        return LPIPSOutput(distance, maps if spatial else None, self.variant)

    def __call__(
        self,
        x: jax.Array,
        y: jax.Array,
        *,
        spatial: bool = False,
        input_range: str = "0,1",
        frozen_y: bool = False,
    ) -> LPIPSOutput:
        """LPIPS between two batches of images (the trunk compiled once per shape, shared by all variants).

        Args:
          x, y: ``float[N, H, W, 3]`` RGB of the same shape, in ``[0, 1]`` by default.
          spatial: also return the per-pixel map ``float32[N, H, W]``.
          input_range: ``"0,1"`` or ``"-1,1"``.
          frozen_y: treat ``y`` as a fixed target: no gradient flows into it, and none of its
            trunk activations are kept for a backward pass (its branch is behind
            ``jax.lax.stop_gradient``). Not needed when ``y`` is not differentiated anyway.

        Returns:
          An :class:`LPIPSOutput`: ``distance: float32[N]``, ``map`` (with ``spatial``), ``variant``.

        Raises:
          ArchError: for images of different shapes, not RGB, or smaller than 32×32.
          ConfigError: for another ``input_range``.
        """
        if x.shape != y.shape:
            raise ArchError(f"LPIPS compares images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        fx = self.features(x, input_range=input_range)
        fy = self.features(jax.lax.stop_gradient(y) if frozen_y else y, input_range=input_range)
        return _compare(self, fx, fy, spatial=spatial, size=tuple(x.shape[1:3]))


# The trunk is compiled once per input shape, dtype and impl, whatever the version, lin and spatial.
@functools.partial(jax.jit, static_argnames=("dtype", "impl"))
def _taps(trunk: dict, x: jax.Array, *, dtype: str, impl: str) -> tuple[jax.Array, ...]:
    taps = trunk_model(dtype, impl).apply(trunk, x, TAPS, method=VGG.features)
    out = []
    for name in TAPS:
        f = taps[name].astype(jnp.float32)
        out.append(f / (jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True)) + EPS))
    return tuple(out)


@functools.partial(jax.jit, static_argnames=("spatial", "size"))
def _compare(metric: LPIPS, fx: Any, fy: Any, *, spatial: bool, size: tuple[int, int]) -> LPIPSOutput:
    return metric.compare(fx, fy, spatial=spatial, size=size)
