"""Content and style losses on VGG feature taps: Gatys et al. (2016) and Johnson et al. (2016).

Feature dicts come from :func:`vggjax.nn.features.features` (``{"relu2_2": float32[N, H, W, C],
…}``). Notation: ``F`` is one image's tap as a ``C × M`` matrix (``C`` channels, ``M = H·W``
positions; Gatys' ``N_l`` and ``M_l``).

Gram normalisations (``gram_matrix(f, normalize=...)``), ``G = F Fᵀ / Z``:

===========  ============  ==================================================
``"none"``   ``Z = 1``     Gatys et al. (2016), eq. 3
``"hw"``     ``Z = H·W``   the mean over positions (vggjax's default)
``"chw"``    ``Z = C·H·W`` Johnson et al. (2016), the Gram matrix of sec. 3.2
===========  ============  ==================================================

Worked 2×2 example: one image with ``H = 1, W = 2, C = 2`` whose two positions hold
``(1, 2)`` and ``(3, 4)``, so ``F = [[1, 3], [2, 4]]`` and ``F Fᵀ = [[10, 14], [14, 20]]``:
``"none"`` gives that, ``"hw"`` ``[[5, 7], [7, 10]]``, ``"chw"`` ``[[2.5, 3.5], [3.5, 5]]``.
Gatys' style term against an all-zero map is ``(10² + 14² + 14² + 20²) / (4 · 2² · 2²) =
892 / 64 = 13.9375``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from vggjax.errors import ArchError, ConfigError
from vggjax.nn.features import GRAM_NORMALIZATIONS, gram_matrix

__all__ = ["GRAM_NORMALIZATIONS", "content_loss", "gram_matrix", "style_loss"]
STYLE_NORMALIZATIONS = ("gatys", *GRAM_NORMALIZATIONS)
CONTENT_REDUCTIONS = ("mean", "half_sum")


def _layer_weights(
    layers: Sequence[str], weights: Sequence[float] | Mapping[str, float] | None
) -> list[float]:
    if isinstance(layers, str) or not layers:
        raise ConfigError(f"layers must be a non-empty list of tap names, e.g. ['relu2_2'], got {layers!r}")
    if weights is None:
        return [1.0 / len(layers)] * len(layers)
    if isinstance(weights, Mapping):
        missing = [name for name in layers if name not in weights]
        if missing:
            raise ConfigError(f"no weight for layer {missing[0]}; give one weight per layer")
        return [float(weights[name]) for name in layers]
    if len(weights) != len(layers):
        raise ConfigError(f"{len(weights)} weights for {len(layers)} layers; give one weight per layer")
    return [float(w) for w in weights]


def _tap(feats: Mapping[str, jax.Array], name: str, which: str) -> jax.Array:
    if name not in feats:
        raise ConfigError(
            f"{which} has no tap {name!r} (it has {', '.join(feats)}); compute it with features()"
        )
    return feats[name]


def content_loss(
    feats_a: Mapping[str, jax.Array],
    feats_b: Mapping[str, jax.Array],
    layers: Sequence[str],
    weights: Sequence[float] | Mapping[str, float] | None = None,
    *,
    reduction: str = "mean",
) -> jax.Array:
    """Feature reconstruction loss ``Σ_l w_l · E_l`` between two images' taps.

    ``E_l = (1 / (C·H·W)) Σ (F_a − F_b)²`` with ``reduction="mean"`` (Johnson et al.'s
    feature reconstruction loss), ``E_l = ½ Σ (F_a − F_b)²`` with ``"half_sum"`` (Gatys et
    al., eq. 1). Example: taps ``(1, 2), (3, 4)`` against zeros give ``30 / 4 = 7.5``
    (``"mean"``) or ``15`` (``"half_sum"``).

    Args:
      feats_a, feats_b: tap dicts, each ``[N, H, W, C]`` of the same shape in both.
      layers: the taps to use, e.g. ``("relu2_2",)`` (Johnson et al.) or ``("relu4_2",)`` (Gatys).
      weights: one weight per layer (a sequence, or a dict by name); None: ``1 / len(layers)``.
      reduction: ``"mean"`` or ``"half_sum"``.

    Returns:
      ``float32[N]``: the loss per image.

    Raises:
      ConfigError: for a tap missing from a dict, weights that do not match ``layers``, or
        another ``reduction``.
      ArchError: for taps of different shapes.
    """
    if reduction not in CONTENT_REDUCTIONS:
        raise ConfigError(
            f"content reduction must be one of {', '.join(CONTENT_REDUCTIONS)}, got {reduction!r}"
        )
    total = 0.0
    for name, w in zip(layers, _layer_weights(layers, weights), strict=True):
        a = _tap(feats_a, name, "feats_a").astype(jnp.float32)
        b = _tap(feats_b, name, "feats_b").astype(jnp.float32)
        if a.shape != b.shape:
            raise ArchError(f"content_loss compares taps of one shape; {name} is {a.shape} and {b.shape}")
        sq = jnp.sum((a - b) ** 2, axis=(1, 2, 3))
        e = sq / (a.shape[1] * a.shape[2] * a.shape[3]) if reduction == "mean" else 0.5 * sq
        total = total + w * e
    return total


def style_loss(
    feats_a: Mapping[str, jax.Array],
    feats_b: Mapping[str, jax.Array],
    layers: Sequence[str],
    weights: Sequence[float] | Mapping[str, float] | None = None,
    *,
    normalize: str = "gatys",
) -> jax.Array:
    """Gram-matrix style loss ``Σ_l w_l · E_l`` between two images' taps.

    With ``normalize="gatys"`` (Gatys et al., eq. 4), ``E_l = Σ_{c,d} (G_a − G_b)² /
    (4 N_l² M_l²)`` on plain Grams (``N_l = C``, ``M_l = H·W``); with ``"none"``, ``"hw"`` or
    ``"chw"``, ``E_l = ‖G_a − G_b‖²_F`` on Grams of that normalisation (``"chw"`` is Johnson
    et al.'s style reconstruction loss). Example: positions ``(1, 2), (3, 4)`` against zeros
    give 13.9375 (``"gatys"``), 892 (``"none"``), 223 (``"hw"``), 55.75 (``"chw"``).
    ``feats_b``'s maps may have another ``H×W``: ``"gatys"`` is computed as ``Σ (G_a/M_a −
    G_b/M_b)² / (4 N_l²)``, each Gram over its own positions, which is eq. 4 when they agree.

    Args:
      feats_a, feats_b: tap dicts; each tap ``[N, H, W, C]``, ``C`` the same in both.
      layers: e.g. ``("relu1_2", "relu2_2", "relu3_3", "relu4_3")`` (Johnson et al.) or
        ``("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")`` (Gatys et al.).
      weights: one weight per layer; None: ``1 / len(layers)`` (Gatys' ``w_l = 1/5``).
      normalize: ``"gatys"``, ``"none"``, ``"hw"`` or ``"chw"``.

    Returns:
      ``float32[N]``: the loss per image.

    Raises:
      ConfigError: for a tap missing from a dict, weights that do not match ``layers``, or
        another ``normalize``.
      ArchError: for taps of different channel counts.
    """
    if normalize not in STYLE_NORMALIZATIONS:
        raise ConfigError(
            f"style normalize must be one of {', '.join(STYLE_NORMALIZATIONS)}, got {normalize!r}"
        )
    total = 0.0
    for name, w in zip(layers, _layer_weights(layers, weights), strict=True):
        a, b = _tap(feats_a, name, "feats_a"), _tap(feats_b, name, "feats_b")
        if a.shape[-1] != b.shape[-1]:
            raise ArchError(
                f"style_loss needs taps of one channel count; {name} has {a.shape[-1]} and {b.shape[-1]}"
            )
        gram = "hw" if normalize == "gatys" else normalize  # Σ(G−A)²/(4N²M²) = Σ(G/M − A/M)²/(4N²)
        e = jnp.sum((gram_matrix(a, gram) - gram_matrix(b, gram)) ** 2, axis=(1, 2))
        if normalize == "gatys":
            e = e / (4.0 * a.shape[-1] ** 2)
        total = total + w * e
    return total
