"""Tests of vggjax.data: IDX reading, data-directory search, download and batching."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from vggjax import data
from vggjax.data import sources
from vggjax.errors import ConfigError, DataError

NAMES = [name for pair in data.FILES.values() for name in pair]


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write(path: Path, payload: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_dir(directory: Path, n: int = 10, gz: bool = True, seed: int = 0) -> Path:
    """Write all four files (n examples per split) into directory."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for images_name, labels_name in data.FILES.values():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        suffix = "" if gz else ".gz"
        write(directory / images_name.removesuffix(suffix), idx_bytes(images), gz)
        write(directory / labels_name.removesuffix(suffix), idx_bytes(labels), gz)
    return directory


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No $VGGJAX_DATA, an empty cache and no proxy unless a test sets them."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "x.idx", idx_bytes(array), gz)
    out = data.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, array)
    out[0, 0, 0] = 7  # writable


def test_gzip_recognised_by_content_not_name(tmp_path):
    labels = np.array([3, 1, 4], dtype=np.uint8)
    gz_without_suffix = write(tmp_path / "labels-idx1-ubyte", idx_bytes(labels), gz=True)
    raw_with_suffix = write(tmp_path / "labels-idx1-ubyte.gz", idx_bytes(labels), gz=False)
    np.testing.assert_array_equal(data.read_idx(gz_without_suffix), labels)
    np.testing.assert_array_equal(data.read_idx(raw_with_suffix), labels)


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"\x01\x02\x08\x01" + b"\0" * 8, "not an IDX file"),
        (b"\0\0\x0d\x01" + (1).to_bytes(4, "big") + b"\0\0\0\0", "data type 0x0d"),
        (b"\0\0\x08\x05" + b"\0" * 20, "5 dimensions"),
        (b"\0\0\x08\x03\0\0\0\x01", "header truncated"),
        (b"\0\0", "not an IDX file"),
    ],
)
def test_bad_header(tmp_path, payload, match):
    path = write(tmp_path / "t10k-labels-idx1-ubyte", payload, gz=False)
    with pytest.raises(DataError, match=match) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_html_page_under_idx_name(tmp_path):
    html = b"<html><head><title>404 Not Found</title></head><body>" + b"x" * 700
    path = write(tmp_path / "train-images-idx3-ubyte.gz", html[:700], gz=False)
    with pytest.raises(DataError, match=r"not an IDX file \(starts with b'<htm'\)") as info:
        data.read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8) + 1))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="gzip") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 20)
    with pytest.raises(DataError, match="gzip") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_payload_size_must_match_header(tmp_path, gz):
    declared_10_holds_9 = bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(range(9))
    path = write(tmp_path / "labels", declared_10_holds_9, gz)
    with pytest.raises(DataError, match="truncated.* 10 data bytes.* holds 9") as info:
        data.read_idx(path)
    assert str(path) in str(info.value)
    too_long = write(tmp_path / "long", idx_bytes(np.zeros(4)) + b"\0", gz)
    with pytest.raises(DataError, match="too long"):
        data.read_idx(too_long)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        data.read_idx(tmp_path / "nope")


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_limit_gives_the_first_entries(tmp_path, gz):
    array = np.arange(5 * 3 * 2, dtype=np.uint8).reshape(5, 3, 2)
    path = write(tmp_path / "x.idx", idx_bytes(array), gz)
    for limit in (1, 3, 5, 9):
        out = data.read_idx(path, limit=limit)
        assert out.shape == (min(limit, 5), 3, 2)
        np.testing.assert_array_equal(out, array[:limit])
        out[0, 0, 0] = 7  # writable
    with pytest.raises(DataError, match="limit must be at least 0, got -1"):
        data.read_idx(path, limit=-1)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_limit_still_checks_header_and_length(tmp_path, gz):
    # the entries asked for are all there; what comes after them is not
    declared_10_holds_9 = bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(range(9))
    path = write(tmp_path / "labels", declared_10_holds_9, gz)
    with pytest.raises(DataError, match="truncated.* 10 data bytes.* holds 9") as info:
        data.read_idx(path, limit=2)
    assert str(path) in str(info.value)
    too_long = write(tmp_path / "long", idx_bytes(np.zeros(4)) + b"\0", gz)
    with pytest.raises(DataError, match="too long: header declares shape \\(4,\\)"):
        data.read_idx(too_long, limit=1)
    not_idx = write(tmp_path / "html", b"<html>" + bytes(100), gz)
    with pytest.raises(DataError, match="not an IDX file"):
        data.read_idx(not_idx, limit=1)
    header_cut = write(tmp_path / "cut", b"\0\0\x08\x03\0\0\0\x01", gz)
    with pytest.raises(DataError, match="header truncated at 8 bytes"):
        data.read_idx(header_cut, limit=1)


def test_read_idx_limit_on_a_cut_gzip_stream(tmp_path):
    blob = gzip.compress(idx_bytes(np.arange(50 * 28 * 28).reshape(50, 28, 28) % 251))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupt gzip stream") as info:
        data.read_idx(path, limit=1)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------- load_split


@pytest.mark.parametrize("gz", [False, True])
def test_load_split_generated(tmp_path, gz):
    directory = make_dir(tmp_path / "d", n=12, gz=gz)
    with pytest.warns(data.ClassCountWarning, match=r"class counts \[2, 2, 1, 1, 1, 1, 1, 1, 1, 1\]"):
        ds = data.load_split("train", directory, verify=False)  # generated: not the official files
    assert ds["image"].shape == (12, 28, 28, 1) and ds["image"].dtype == np.uint8
    assert ds["label"].shape == (12,) and ds["label"].dtype == np.int32
    with pytest.warns(data.ClassCountWarning):
        small = data.load_split("test", directory, limit=5, verify=False)
    assert small["image"].shape == (5, 28, 28, 1) and small["label"].tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_load_split_bad_arguments(tmp_path):
    directory = make_dir(tmp_path / "d")
    with pytest.raises(DataError, match="limit"):
        data.load_split("test", directory, limit=0)
    with pytest.raises(DataError, match="split"):
        data.load_split("valid", directory)


@pytest.mark.parametrize("limit", [None, 3])
def test_count_mismatch(tmp_path, limit):
    directory = make_dir(tmp_path / "d", n=10)
    labels = directory / "t10k-labels-idx1-ubyte.gz"
    write(labels, idx_bytes(np.zeros(9, dtype=np.uint8)), gz=True)
    with pytest.raises(DataError, match="10 images.* 9 labels") as info:
        data.load_split("test", directory, limit=limit)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value) and str(labels) in str(info.value)


def test_label_out_of_range(tmp_path):
    directory = make_dir(tmp_path / "d", n=10)
    labels = directory / "t10k-labels-idx1-ubyte.gz"
    write(labels, idx_bytes(np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 10])), gz=True)
    with pytest.raises(DataError, match="label 10 at index 9") as info:
        data.load_split("test", directory, limit=3)
    assert str(labels) in str(info.value)


@pytest.mark.parametrize("limit", [None, 2])
def test_images_wrong_shape(tmp_path, limit):
    directory = make_dir(tmp_path / "d", n=4)
    write(
        directory / "t10k-images-idx3-ubyte.gz",
        idx_bytes(np.zeros((4, 32, 32))),
        gz=True,
    )
    with pytest.raises(DataError, match=r"images of shape \(4, 32, 32\), not \(N, 28, 28\)"):
        data.load_split("test", directory, limit=limit)


def test_debian_files_limited():
    ds = data.load_split("test", data.DEBIAN_DIR, limit=100)
    assert ds["image"].shape == (100, 28, 28, 1) and ds["image"].dtype == np.uint8
    assert ds["label"].shape == (100,) and ds["label"].dtype == np.int32
    assert ds["label"].min() >= 0 and ds["label"].max() <= 9
    assert ds["image"].max() > 0  # real pixels, not zeros


def test_limited_load_reads_only_the_images_it_keeps(fashion_small):
    images = data.DEBIAN_DIR / "train-images-idx3-ubyte.gz"
    tracemalloc.start()
    try:
        ds = data.load_split("train", data.DEBIAN_DIR, limit=2000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # 2,000 images are 1.6 MB; reading all 60,000 held their 47 MB (twice, briefly)
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    full = data.read_idx(images)
    assert full.shape == (60000, 28, 28)
    np.testing.assert_array_equal(ds["image"][..., 0], full[:2000])
    np.testing.assert_array_equal(fashion_small[0]["image"], ds["image"])
    labels = data.read_idx(images.with_name("train-labels-idx1-ubyte.gz"))
    np.testing.assert_array_equal(ds["label"], labels[:2000])
    owner = ds["image"] if ds["image"].base is None else ds["image"].base
    assert owner.nbytes == 2000 * 28 * 28  # no view into a buffer of all the images


def test_debian_files_full():
    train, test = data.load_fashion_mnist(data.DEBIAN_DIR, download=False)
    assert train["image"].shape == (60000, 28, 28, 1) and train["label"].shape == (60000,)
    assert test["image"].shape == (10000, 28, 28, 1) and test["label"].shape == (10000,)
    assert np.bincount(train["label"]).tolist() == [6000] * 10
    assert np.bincount(test["label"]).tolist() == [1000] * 10


# ---------------------------------------------------------------- find_data_dir


def test_explicit_dir_wins(tmp_path, monkeypatch):
    explicit, env = make_dir(tmp_path / "explicit"), make_dir(tmp_path / "env")
    monkeypatch.setenv(data.ENV_VAR, str(env))
    assert data.find_data_dir(explicit) == explicit
    assert data.find_data_dir(str(explicit)) == explicit


def test_explicit_dir_missing_files(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(make_dir(tmp_path / "env")))
    partial = make_dir(tmp_path / "partial")
    (partial / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks train-labels-idx1-ubyte.gz") as info:
        data.find_data_dir(partial)
    message = str(info.value)
    assert str(partial) in message and all(name in message for name in NAMES)
    with pytest.raises(DataError, match="does not exist"):
        data.find_data_dir(tmp_path / "absent")


def test_env_beats_debian(tmp_path, monkeypatch):
    debian, env = make_dir(tmp_path / "debian"), make_dir(tmp_path / "env")
    monkeypatch.setattr(sources, "DEBIAN_DIR", debian)
    assert data.find_data_dir() == debian
    monkeypatch.setenv(data.ENV_VAR, str(env))
    assert data.find_data_dir() == env


def test_env_dir_missing_files_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(DataError, match="VGGJAX_DATA"):
        data.find_data_dir()


def test_cache_dir_via_xdg(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "no-debian")
    assert data.cache_dir() == tmp_path / "xdg-cache" / "vggjax" / "fashion-mnist"
    assert data.find_data_dir() is None
    make_dir(data.cache_dir(), gz=False)
    assert data.find_data_dir() == data.cache_dir()
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == Path.home() / ".cache" / "vggjax" / "fashion-mnist"


def test_not_found_without_download(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(download=False)


# ---------------------------------------------------------------- batches


def toy(n: int) -> dict[str, np.ndarray]:
    return {"image": np.arange(n)[:, None] * np.ones((1, 3)), "label": np.arange(n)}


def test_shuffle_then_batch():
    ds = toy(100)
    first = [set(next(data.batches(ds, 10, shuffle=True, epoch=e))["label"]) for e in (0, 1)]
    assert first[0] != first[1]
    assert first[0] != set(range(10))  # not contiguous blocks of the original order


def test_shuffle_is_deterministic_and_a_permutation():
    ds = toy(50)
    a = np.concatenate([b["label"] for b in data.batches(ds, 8, shuffle=True, seed=3, epoch=2)])
    b = np.concatenate([b["label"] for b in data.batches(ds, 8, shuffle=True, seed=3, epoch=2)])
    np.testing.assert_array_equal(a, b)
    assert sorted(a.tolist()) == list(range(50))
    for batch in data.batches(ds, 8, shuffle=True, seed=3):
        np.testing.assert_array_equal(batch["image"][:, 0], batch["label"])  # rows stay paired


def test_no_shuffle_keeps_order():
    labels = [b["label"].tolist() for b in data.batches(toy(5), 2, shuffle=False)]
    assert labels == [[0, 1], [2, 3], [4]]


def test_eval_padding():
    out = list(data.batches(toy(10), 4, shuffle=False, pad=True))
    assert len(out) == 3 == data.num_batches(10, 4, drop_remainder=False)
    assert all(b["label"].shape == (4,) and b["mask"].dtype == bool for b in out)
    assert out[-1]["mask"].tolist() == [True, True, False, False]
    assert out[-1]["label"].tolist() == [8, 9, 0, 0]
    assert sum(int(b["mask"].sum()) for b in out) == 10
    seen = np.concatenate([b["label"][b["mask"]] for b in out])
    assert sorted(seen.tolist()) == list(range(10))


def test_drop_remainder():
    out = list(data.batches(toy(10), 4, shuffle=True, drop_remainder=True))
    assert len(out) == 2 == data.num_batches(10, 4, drop_remainder=True)
    assert all(len(b["label"]) == 4 and "mask" not in b for b in out)
    assert len(list(data.batches(toy(8), 4, shuffle=False, drop_remainder=True))) == 2


def test_batches_bad_config():
    with pytest.raises(ConfigError):
        next(data.batches(toy(4), 0, shuffle=False))
    with pytest.raises(ConfigError):
        data.num_batches(4, -1, drop_remainder=False)
    with pytest.raises(ConfigError):
        next(data.batches(toy(4), 2, shuffle=False, pad=True, drop_remainder=True))
    with pytest.raises(DataError, match="length"):
        next(data.batches({"image": np.zeros(3), "label": np.zeros(4)}, 2, shuffle=False))


# ---------------------------------------------------------------- download


@pytest.fixture
def server(tmp_path):
    """A local HTTP server for a directory of small generated .gz files: (url, md5 map)."""
    root = make_dir(tmp_path / "served", n=6)
    md5 = {name: hashlib.md5((root / name).read_bytes()).hexdigest() for name in NAMES}

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", md5
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.mark.filterwarnings("ignore::vggjax.data.ClassCountWarning")
def test_download_good_checksum(tmp_path, server, monkeypatch):
    url, md5 = server
    monkeypatch.setattr(sources, "MD5", md5)
    dest = tmp_path / "dest" / "nested"
    assert data.download(dest, base_url=url, progress=False) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(NAMES)
    assert data.load_split("train", dest, verify=False)["image"].shape == (6, 28, 28, 1)
    mtimes = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    data.download(dest, base_url=url + "gone/", progress=False)  # all present: nothing fetched
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == mtimes


def test_download_bad_checksum(tmp_path, server, monkeypatch):
    url, md5 = server
    monkeypatch.setattr(sources, "MD5", {**md5, NAMES[0]: "0" * 32})
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=f"{NAMES[0]}.*md5 {md5[NAMES[0]]}, expected 0{{32}}"):
        data.download(dest, base_url=url, progress=False)
    assert list(dest.iterdir()) == []


def test_download_explicit_md5_argument(tmp_path, server):
    url, md5 = server
    data.download(tmp_path / "dest", base_url=url, progress=False, md5=md5)
    assert len(list((tmp_path / "dest").iterdir())) == 4


def test_download_server_down(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        data.download(dest, base_url=f"http://127.0.0.1:{port}/", progress=False, timeout=5)
    assert "--data-dir" in str(info.value) and "VGGJAX_DATA" in str(info.value)
    assert list(dest.iterdir()) == []


def test_download_404(tmp_path, server, monkeypatch):
    url, md5 = server
    monkeypatch.setattr(sources, "MD5", md5)
    with pytest.raises(DataError, match="404"):
        data.download(tmp_path / "dest", base_url=url + "missing/", progress=False)
    assert list((tmp_path / "dest").iterdir()) == []


@pytest.mark.filterwarnings("ignore::vggjax.data.ClassCountWarning")
def test_load_fashion_mnist_downloads_into_cache(tmp_path, server, monkeypatch):
    url, md5 = server
    monkeypatch.setattr(sources, "MD5", md5)
    monkeypatch.setattr(sources, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(sources, "URL", url)
    train, test = data.load_fashion_mnist(limit_train=4, progress=False, verify=False)
    assert train["image"].shape == (4, 28, 28, 1) and test["label"].shape == (6,)
    assert sorted(p.name for p in data.cache_dir().iterdir()) == sorted(NAMES)
