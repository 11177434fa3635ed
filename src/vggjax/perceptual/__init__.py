"""VGG as a frozen perceptual network: LPIPS-VGG with the reference's numbers, content and style losses.

:class:`LPIPS` is in :mod:`vggjax.perceptual.lpips`, :func:`load_lpips` (its weights from
files) in :mod:`vggjax.perceptual.weights`, and ``content_loss``, ``gram_matrix`` and
``style_loss`` in :mod:`vggjax.perceptual.style`. Guide: ``docs/perceptual.md``. Names are
imported on first use: the style losses do not load the weight readers.
"""

_LAZY = {
    "LPIPS": "vggjax.perceptual.lpips",
    "LPIPSOutput": "vggjax.perceptual.lpips",
    "TAPS": "vggjax.perceptual.lpips",
    "variant_name": "vggjax.perceptual.lpips",
    "GRAM_NORMALIZATIONS": "vggjax.perceptual.style",
    "content_loss": "vggjax.perceptual.style",
    "gram_matrix": "vggjax.perceptual.style",
    "style_loss": "vggjax.perceptual.style",
    "load_lpips": "vggjax.perceptual.weights",
    "read_lin": "vggjax.perceptual.weights",
    "read_trunk": "vggjax.perceptual.weights",
}


def __getattr__(name: str):
    """The names of ``__all__``, imported from their module on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vggjax.perceptual' has no attribute {name!r}")


__all__ = sorted(_LAZY)
