import base64
import json
import re

from vggjax.run.report import write_report
from vggjax.tasks.evaluate import evaluate_run


def test_training_writes_a_report_and_eval_updates_it(tiny_run):
    page = (tiny_run / "report.html").read_text()
    assert "curves.png" in page and "Metrics per epoch" in page  # written by train_and_evaluate

    evaluate_run(tiny_run, limit_test=128, batch_size=128, num_mistakes=4)
    page = (tiny_run / "report.html").read_text()
    uris = dict(re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="([a-z]+\.png)">', page))
    embedded = {name: base64.b64decode(data) for data, name in uris.items()}
    assert set(embedded) == {"curves.png", "confusion.png", "mistakes.png"}
    for name, png in embedded.items():
        assert png == (tiny_run / name).read_bytes()
    assert "Test evaluation" in page and "Ankle boot" in page and "128 test images" in page
    config = json.loads((tiny_run / "config.json").read_text())
    assert f"<td>{config['hidden']}</td>" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page  # self-contained


def test_report_of_an_almost_empty_folder(tmp_path):
    path = write_report(tmp_path)
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<img" not in page and "<table" not in page
