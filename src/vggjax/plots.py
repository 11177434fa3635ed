"""Training curves as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vggjax.files import atomic_write_bytes  # noqa: E402


def plot_curves(records: Sequence[dict], path: str | Path) -> None:
    """Plots train loss, val loss and val accuracy against epoch, like the d2l chapter.

    Args:
      records: ``metrics.jsonl`` records with ``epoch``, ``train_loss``, ``val_loss``
        and ``val_acc``.
      path: the PNG to write (atomically).
    """
    epochs = [r["epoch"] for r in records]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(epochs, [r["train_loss"] for r in records], "-o", label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in records], "--o", label="val loss")
    ax.plot(epochs, [r["val_acc"] for r in records], "-.o", label="val acc")
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(epochs) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
