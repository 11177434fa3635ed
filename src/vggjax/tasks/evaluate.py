"""``vggjax eval``: a trained run's loss, accuracy, per-class scores and confusion matrix.

:func:`classification_report` is pure numpy on logits and labels; :func:`evaluate_run`
loads a run (:meth:`vggjax.run.folder.RunDir.load`), scores it on the Fashion-MNIST test split
(or, with ``split="val"``, on the validation split its config held out of training) and writes,
beside the run's other files::

    run_dir/eval.json       the numbers (what ``--json`` prints)
    run_dir/confusion.png   the confusion matrix, each row normalised by its true class
    run_dir/mistakes.png    the most confident misclassified images
    run_dir/report.html     the run report, now with this evaluation
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vggjax import data
from vggjax.errors import ConfigError, check_positive_int
from vggjax.run.files import atomic_write_text
from vggjax.run.folder import RunDir
from vggjax.run.plots import plot_confusion, plot_mistakes
from vggjax.run.records import SPLIT_NAMES, SPLITS
from vggjax.run.report import write_report
from vggjax.tasks.predict import check_tta, predict_logits, softmax


def classification_report(
    logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = data.CLASS_NAMES
) -> dict:
    """Loss, top-1/top-5 accuracy, per-class scores and the confusion matrix.

    Per class ``c`` (one-vs-rest, ``tp`` = examples of ``c`` predicted ``c``):
    ``precision = tp / predicted c`` (0 when nothing is predicted ``c``),
    ``recall = tp / support`` (the accuracy on the images of class ``c``; 0 without
    support) and ``accuracy = (tp + tn) / N``, the binary "is it ``c``?" accuracy.

    Args:
      logits: ``float[N, K]`` model outputs.
      labels: ``int[N]`` true classes in ``0..K-1``.
      class_names: ``K`` names, in class order.

    Returns:
      ``{"count", "loss" (mean cross-entropy, nats), "acc", "acc5", "classes": [{"name",
      "support", "precision", "recall", "accuracy"}] * K, "confusion": int[K][K]}``;
      ``confusion[t][p]`` counts examples of true class ``t`` predicted ``p``.
    """
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, np.int64)
    n, k = logits.shape
    log_probs = np.log(softmax(logits))
    pred = logits.argmax(-1)
    top5 = np.argsort(-logits, axis=-1, kind="stable")[:, : min(5, k)]
    confusion = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    tp, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    classes = [
        {
            "name": class_names[c],
            "support": int(support[c]),
            "precision": float(tp[c] / predicted[c]) if predicted[c] else 0.0,
            "recall": float(tp[c] / support[c]) if support[c] else 0.0,
            "accuracy": float((n - (support[c] - tp[c]) - (predicted[c] - tp[c])) / n),
        }
        for c in range(k)
    ]
    return {
        "count": int(n),
        "loss": float(-log_probs[np.arange(n), labels].mean()),
        "acc": float((pred == labels).mean()),
        "acc5": float((top5 == labels[:, None]).any(-1).mean()),
        "classes": classes,
        "confusion": confusion.tolist(),
    }


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    limit_test: int | None = None,
    batch_size: int = 500,
    num_mistakes: int = 32,
    verify_data: bool = True,
    split: str = "test",
    tta: str | None = None,
) -> dict:
    """Scores a run on the test split and writes ``eval.json``, the two PNGs and ``report.html``.

    With ``split="val"`` it scores the run's validation split instead, rebuilt from its
    config (``seed``, ``val_size``; :func:`vggjax.data.split_validation`), which reads the
    whole training split.

    Args:
      run_dir: a folder written by ``vggjax train``.
      checkpoint_dir: weights to evaluate instead of the run's own (see ``RunDir.load``).
      data_dir: Fashion-MNIST folder; defaults to the run's ``data_dir``, then the usual search.
      limit_test: score only the first N test images (default: all 10,000).
      batch_size: images per device call.
      num_mistakes: at most this many misclassified images in ``mistakes.png``.
      verify_data: check the files' SHA-256 as they are read (see ``data.load_split``).
      split: ``"test"`` or ``"val"``.
      tta: one of ``config.TTAS`` (:func:`vggjax.training.steps.tta_views`); None: the run's ``tta``.

    Returns:
      :func:`classification_report` plus ``"run"``, ``"weights"`` (the paths used) and ``"split"``.

    Raises:
      CheckpointError: for a folder that does not exist or is not a run, or weights that do not fit it.
      DataError: when the test split cannot be found, downloaded or read, or is not the official one
        (``verify_data``).
      ConfigError: for ``limit_test`` or ``batch_size`` < 1, ``num_mistakes`` < 0, an unknown
        ``split`` or ``tta``, or ``limit_test`` with ``split="val"``, naming the flag, checked before anything
        is read; for ``split="val"`` of a run without a validation split (``val_size`` 0).
    """
    if split not in SPLITS:
        raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "val" and limit_test is not None:
        raise ConfigError("--limit-test limits the test split; drop it with --split val")
    if limit_test is not None:
        check_positive_int(limit_test, "--limit-test")
    check_positive_int(batch_size, "--batch-size")
    if num_mistakes < 0:
        raise ConfigError(f"--mistakes must be >= 0, got {num_mistakes}")
    if tta is not None:
        check_tta(tta)
    folder = RunDir(run_dir)
    run_dir = folder.path
    run = folder.load(checkpoint_dir)
    if run.config.dataset != "fashion-mnist":
        raise ConfigError(
            f"{run_dir} holds {run.config.dataset} weights; vggjax eval scores Fashion-MNIST runs "
            "(fine-tune them first with vggjax train --init-from)"
        )
    directory = data_dir or run.config.data_dir
    if split == "val":
        test = _validation_split(run.config, run_dir, directory, verify_data)
    else:
        test = data.load_split("test", directory, limit=limit_test, download=True, verify=verify_data)
    logits = predict_logits(run, test["image"], batch_size=batch_size, tta=tta)
    report = classification_report(logits, test["label"])
    report = {"run": str(run_dir), "weights": str(run.weights), "split": split, **report}
    atomic_write_text(folder.eval_file, json.dumps(report, indent=1) + "\n")

    plot_confusion(
        np.asarray(report["confusion"]),
        data.CLASS_NAMES,
        folder.confusion_file,
        title=f"{run_dir.name}: {SPLIT_NAMES[split]} accuracy {report['acc']:.2%} on {report['count']} "
        "images",
    )
    probs = softmax(logits)
    pred = probs.argmax(-1)
    wrong = np.flatnonzero(pred != test["label"])
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:num_mistakes]
    plot_mistakes(
        test["image"][wrong, ..., 0],
        test["label"][wrong],
        pred[wrong],
        probs[wrong, pred[wrong]],
        data.CLASS_NAMES,
        folder.mistakes_file,
        title=f"most confident mistakes: {len(wrong)} of {int((pred != test['label']).sum())}",
    )
    write_report(run_dir)
    return report


def _validation_split(config, run_dir: Path, directory, verify: bool) -> dict:
    """The validation split ``config`` held out of training (see ``training.inputs``)."""
    if not config.val_size:
        raise ConfigError(
            f"{run_dir} has no validation split (val_size 0: it validated on the test split); "
            "drop --split val to score the test split"
        )
    train = data.load_split("train", directory, download=True, verify=verify)
    return data.split_validation(train, config.val_size, config.seed)[1]


def format_report(report: dict) -> str:
    """The human-readable ``vggjax eval`` output: totals, a per-class table, the confusion matrix."""
    split = SPLIT_NAMES[report.get("split", "test")]
    lines = [
        f"{report['count']} {split} images, weights {report['weights']}",
        f"loss {report['loss']:.4f}   top-1 {report['acc']:.4f}   top-5 {report['acc5']:.4f}",
        "",
        f"{'class':<12} {'support':>7} {'precision':>9} {'recall':>7} {'accuracy':>8}",
    ]
    lines += [
        f"{c['name']:<12} {c['support']:>7} {c['precision']:>9.4f} {c['recall']:>7.4f} {c['accuracy']:>8.4f}"
        for c in report["classes"]
    ]
    short = [c["name"][:5] for c in report["classes"]]
    lines += [
        "",
        "confusion (rows: true class, columns: predicted)",
        " " * 12 + "".join(f"{s:>6}" for s in short),
    ]
    lines += [
        f"{c['name']:<12}" + "".join(f"{v:>6}" for v in row)
        for c, row in zip(report["classes"], report["confusion"], strict=True)
    ]
    return "\n".join(lines)
