"""Pictures of a run as PNGs (matplotlib, no display needed): curves, confusion, mistakes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from vggjax.run.files import atomic_write_bytes  # noqa: E402
from vggjax.run.records import SPLITS  # noqa: E402


def plot_curves(records: Sequence[dict], path: str | Path) -> None:
    """Plots train loss and each split's loss and accuracy against epoch, like the d2l chapter.

    A split (``val``: held out of training, ``test``) is drawn at the epochs whose records hold
    it: every epoch, or only the last one for the test split scored once at the end.

    Args:
      records: ``metrics.jsonl`` records with ``epoch``, ``train_loss`` and any of
        ``val_loss``, ``val_acc``, ``test_loss``, ``test_acc``.
      path: the PNG to write (atomically).
    """
    epochs = [r["epoch"] for r in records]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(epochs, [r["train_loss"] for r in records], "-o", label="train loss")
    for split, marker in zip(SPLITS, "os", strict=True):
        for metric, style in (("loss", "--"), ("acc", "-.")):
            key = f"{split}_{metric}"
            points = [(r["epoch"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), style + marker, label=f"{split} {metric}")
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(epochs) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_confusion(
    confusion: np.ndarray, class_names: Sequence[str], path: str | Path, *, title: str = ""
) -> None:
    """Draws a confusion matrix with every row normalised by its true class.

    Cell ``(t, p)`` shows the fraction of class-``t`` images predicted as ``p`` (the
    diagonal is each class's recall), as a colour and as a percentage (empty cells
    hold no image; ``<1`` marks a non-zero count under 0.5%).

    Args:
      confusion: ``int[K, K]`` counts, rows true classes, columns predictions.
      class_names: ``K`` axis labels.
      path: the PNG to write (atomically).
      title: figure title.
    """
    confusion = np.asarray(confusion, np.float64)
    rows = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(7.5, 6.5), dpi=120)
    im = ax.imshow(rows, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    for t in range(k):
        for p in range(k):
            if confusion[t, p]:
                color = "white" if rows[t, p] > 0.6 else "black"
                pct = 100 * rows[t, p]
                text = f"{pct:.0f}" if pct >= 0.5 else "<1"
                ax.text(p, t, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix (% of each true class)", fontsize=10)
    _save(fig, path)


def plot_mistakes(
    images: np.ndarray,
    true: Sequence[int],
    pred: Sequence[int],
    prob: Sequence[float],
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
    cols: int = 8,
) -> None:
    """Draws misclassified images in a grid, each titled with its true and predicted class.

    Args:
      images: ``uint8[M, H, W]`` grey images as stored in the dataset (light on black).
      true: ``M`` true class indices.
      pred: ``M`` predicted class indices.
      prob: ``M`` softmax probabilities of the predicted classes.
      class_names: names indexed by class.
      path: the PNG to write (atomically).
      title: figure title.
      cols: images per row.
    """
    m = len(images)
    cols = max(1, min(cols, m))
    rows = max(1, -(-m // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.45 * cols, 1.75 * rows + 0.4), dpi=120, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t, p, q in zip(axes.flat, images, true, pred, prob, strict=False):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {class_names[t]}\npred {class_names[p]} {q:.2f}", fontsize=7, color="#b00")
    if not m:
        axes[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    fig.suptitle(title or "misclassified images", fontsize=10)
    _save(fig, path)


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
