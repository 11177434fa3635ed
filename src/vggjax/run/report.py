"""``report.html``: one self-contained page per run that opens in a browser with no server.

It shows the run's ``config.json``, its ``metrics.jsonl`` as a table (``val_*``: the split held
out of training, ``test_*``: the test set), the latest
``eval.json`` (if ``vggjax eval`` ran) and every picture of the run (``curves.png``,
``confusion.png``, ``mistakes.png``) embedded as base64 ``data:`` URIs, so the file can be
mailed or copied alone. Written at the end of training and again by ``vggjax eval``.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

from vggjax.run.files import atomic_write_text, read_jsonl
from vggjax.run.folder import RunDir
from vggjax.run.records import SPLIT_NAMES, fields, honest_records

PICTURES = (
    (RunDir.CURVES, "Training curves"),
    (RunDir.CONFUSION, "Confusion matrix (rows normalised by true class)"),
    (RunDir.MISTAKES, "Most confident mistakes"),
)
METRIC_COLUMNS = (
    "epoch", "step", "train_loss", "train_acc", *fields("val"), *fields("test"), "tta", "seconds",
    "train_images_per_s",
)  # fmt: skip
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f3f3f3; } td.key, th.key { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def write_report(run_dir: str | Path) -> Path:
    """Writes ``run_dir/report.html`` (atomically) from the files the run folder holds now.

    Args:
      run_dir: a run folder; ``config.json``, ``metrics.jsonl``, ``eval.json`` and the
        PNGs are each optional (absent ones are left out of the page).

    Returns:
      The path of the report.
    """
    run = RunDir(run_dir)
    run_dir = run.path
    parts = [f"<h1>vggjax run <code>{escape(run_dir.name)}</code></h1>"]
    config = json.loads(run.config_file.read_text()) if run.config_file.is_file() else {}
    if config:
        parts += ["<h2>Config</h2>", _table(["setting", "value"], [[k, str(v)] for k, v in config.items()])]
    # a run without val_size validated on the test split, and named its scores val_*
    records = honest_records(read_jsonl(run.metrics_file), config.get("val_size", 0))
    if records:
        columns = [c for c in METRIC_COLUMNS if any(c in r for r in records)]
        parts += [
            "<h2>Metrics per epoch</h2>",
            _table(columns, [[_metric(c, r.get(c)) for c in columns] for r in records]),
        ]
    if run.eval_file.is_file():
        parts += _eval_section(json.loads(run.eval_file.read_text()))
    for name, caption in PICTURES:
        png = run_dir / name
        if png.is_file():
            uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
            parts += [f"<h2>{escape(caption)}</h2>", f'<img src="{uri}" alt="{escape(name)}">']
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>vggjax run {escape(run_dir.name)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    atomic_write_text(run.report_file, page)
    return run.report_file


def _metric(column: str, value):
    if isinstance(value, float) and column in ("seconds", "train_images_per_s"):
        return f"{value:.1f}"
    return value


def _eval_section(report: dict) -> list[str]:
    split = report.get("split", "test")  # eval.json of older runs: always the test split
    weights = escape(str(report.get("weights", "")))
    summary = (
        f"<p>{report['count']} {SPLIT_NAMES[split]} images, weights <code>{weights}</code>: "
        f"loss {report['loss']:.4f}, top-1 {report['acc']:.4f}, top-5 {report['acc5']:.4f}</p>"
    )
    rows = [[c["name"], c["support"], c["precision"], c["recall"], c["accuracy"]] for c in report["classes"]]
    return [
        f"<h2>{SPLIT_NAMES[split].capitalize()} evaluation</h2>",
        summary,
        _table(["class", "support", "precision", "recall", "accuracy"], rows),
    ]


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v, tag: str, i: int) -> str:
        text = f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)
        cls = ' class="key"' if i == 0 else ""
        return f"<{tag}{cls}>{escape(text)}</{tag}>"

    head = "<tr>" + "".join(cell(h, "th", i) for i, h in enumerate(header)) + "</tr>"
    body = ["<tr>" + "".join(cell(v, "td", i) for i, v in enumerate(row)) + "</tr>" for row in rows]
    return "<table>\n" + "\n".join([head, *body]) + "\n</table>"
