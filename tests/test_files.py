import os
import stat

import pytest

from vggjax.run.files import atomic_write_bytes, atomic_write_text, read_jsonl, write_jsonl


def test_atomic_write_replaces_whole_file_with_normal_mode(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_jsonl(path, [{"epoch": 1}])
    write_jsonl(path, [{"epoch": 1}, {"epoch": 2}])
    assert read_jsonl(path) == [{"epoch": 1}, {"epoch": 2}]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp files left


def test_failed_write_keeps_old_content(tmp_path):
    path = tmp_path / "config.json"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, object())  # not bytes: the write fails midway
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
