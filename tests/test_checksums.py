"""Fashion-MNIST as published: its checksums, their check on every read, and other data refused.

The real files are Debian's ``dataset-fashion-mnist`` (re-gzipped, same content) in data.DEBIAN_DIR.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from vggjax import data
from vggjax.cli import main
from vggjax.data.idx import read_idx
from vggjax.errors import DataError

# Zalando's README (github.com/zalandoresearch/fashion-mnist), as published.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# The modification time each official .gz stores in its gzip header, with its file name; Debian's
# copies store neither (mtime of the repackaging, no name) but the same deflate stream.
OFFICIAL_MTIME = {"train": 0x59A7E9DE, "t10k": 0x59A7E9F3}  # 2017-08-31
DIGIT_MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TEST_LABELS, TEST_IMAGES = "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def official_with(tmp_path: Path, name: str, content: bytes) -> Path:
    """A folder of the real four files (linked), but ``name`` holding ``content``."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for other in (n for pair in data.FILES.values() for n in pair):
        if other != name:
            (folder / other).symlink_to(data.DEBIAN_DIR / other)
    (folder / name).write_bytes(content)
    return folder


def digit_mnist_like_labels() -> bytes:
    """A valid IDX labels file of 10,000 labels with digit-MNIST's test class counts (not Fashion-MNIST's)."""
    labels = np.repeat(np.arange(10, dtype=np.uint8), DIGIT_MNIST_TEST_COUNTS)
    np.random.default_rng(0).shuffle(labels)
    return idx_bytes(labels)


def test_md5_are_the_official_ones_as_published():
    assert data.MD5 == OFFICIAL_MD5


@pytest.mark.parametrize("name", list(OFFICIAL_MD5))
def test_official_file_is_debians_with_name_and_time_restored_and_has_the_pinned_content(name):
    debian = (data.DEBIAN_DIR / name).read_bytes()
    assert debian[:4] == b"\x1f\x8b\x08\x00"  # deflate, no stored name
    mtime = OFFICIAL_MTIME[name.split("-")[0]]
    header = b"\x1f\x8b\x08\x08" + mtime.to_bytes(4, "little") + b"\x00\x03"  # FNAME; XFL 0, Unix
    official = header + name.removesuffix(".gz").encode() + b"\0" + debian[10:]
    assert len(official) == len(debian) + len(name) - 2  # 24 or 23 bytes longer, as served
    assert hashlib.md5(official).hexdigest() == OFFICIAL_MD5[name]
    assert hashlib.sha256(gzip.decompress(official)).hexdigest() == data.SHA256[name]


def test_raw_copies_are_verified_as_the_gzipped_ones(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in data.SHA256:  # the test split gunzipped, the train split as it is
        if name.startswith("t10k"):
            content = gzip.decompress((data.DEBIAN_DIR / name).read_bytes())
            (folder / name.removesuffix(".gz")).write_bytes(content)
        else:
            (folder / name).symlink_to(data.DEBIAN_DIR / name)
    raw = data.load_split("test", folder, limit=50)
    gz = data.load_split("test", data.DEBIAN_DIR, limit=50)
    np.testing.assert_array_equal(raw["image"], gz["image"])
    np.testing.assert_array_equal(raw["label"], gz["label"])


@pytest.mark.parametrize("limit", [None, 100])
def test_labels_with_digit_mnist_counts_are_refused(tmp_path, limit):
    content = digit_mnist_like_labels()
    folder = official_with(tmp_path, TEST_LABELS, gzip.compress(content))
    with pytest.raises(DataError) as info:
        data.load_split("test", folder, limit=limit)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"{folder / TEST_LABELS}: content has SHA-256 {hashlib.sha256(content).hexdigest()}, "
        f"expected {data.SHA256[TEST_LABELS]} (the official {TEST_LABELS}); "
    )
    assert message.endswith("or pass --no-verify-data (verify=False) to use it anyway")


def test_unverified_labels_with_other_counts_load_with_one_warning(tmp_path):
    folder = official_with(tmp_path, TEST_LABELS, digit_mnist_like_labels())
    with pytest.warns(data.ClassCountWarning) as caught:
        test = data.load_split("test", folder, limit=20, verify=False)
    assert len(caught) == 1
    assert str(caught[0].message) == (
        f"{folder / TEST_LABELS}: class counts {DIGIT_MNIST_TEST_COUNTS} are not the official test "
        "split's 1000 of each class, so this is not Fashion-MNIST as published (not verified: "
        "--no-verify-data)"
    )
    assert test["label"].shape == (20,)


def test_official_data_unverified_warns_of_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = data.load_split("train", data.DEBIAN_DIR, limit=10, verify=False)
        test = data.load_split("test", data.DEBIAN_DIR, limit=10, verify=False)
    assert train["label"].shape == test["label"].shape == (10,)


@pytest.mark.parametrize("gz", [False, True])
def test_a_limited_read_still_verifies_the_whole_images_file(tmp_path, gz):
    content = bytearray(gzip.decompress((data.DEBIAN_DIR / TEST_IMAGES).read_bytes()))
    content[-1] ^= 0x01  # the last pixel of the last image, far past the 5 images kept
    stored = gzip.compress(bytes(content), compresslevel=1) if gz else bytes(content)
    folder = official_with(tmp_path, TEST_IMAGES, stored)
    got = hashlib.sha256(content).hexdigest()
    with pytest.raises(DataError, match=f"{TEST_IMAGES}: content has SHA-256 {got}, expected"):
        data.load_split("test", folder, limit=5)
    kept = data.load_split("test", folder, limit=5, verify=False)["image"]
    np.testing.assert_array_equal(kept, data.load_split("test", data.DEBIAN_DIR, limit=5)["image"])


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("limit", [None, 2])
@pytest.mark.parametrize(("shape", "magic"), [((6,), 2049), ((6, 28, 28), 2051)])
def test_byte_swapped_header_is_named_as_such(tmp_path, gz, limit, shape, magic):
    # the magic and the dimensions written little-endian, as a naive writer on x86 does
    header = bytes([len(shape), 0x08, 0, 0]) + b"".join(d.to_bytes(4, "little") for d in shape)
    path = tmp_path / "swapped"
    content = header + bytes(int(np.prod(shape)))
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(DataError) as info:
        read_idx(path, limit=limit)
    assert str(info.value) == (
        f"{path}: IDX header looks byte-swapped: it starts with {header[:4]!r}, the magic {magic} "
        f"written little-endian, but IDX is big-endian ({magic.to_bytes(4, 'big')!r}); write the file "
        "big-endian, or replace it with an intact copy of the file"
    )


def test_cli_train_refuses_unofficial_labels_unless_told(tmp_path, capsys):
    folder = official_with(tmp_path, TEST_LABELS, gzip.compress(digit_mnist_like_labels()))
    out = tmp_path / "out"
    flags = ["train", "--no-progress", "--data-dir", str(folder), "--limit-train", "64", "--out", str(out)]
    assert main(flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {folder / TEST_LABELS}: content has SHA-256 ")
    assert "--no-verify-data" in err and not out.exists()
    # with --no-verify-data the data is loaded (one warning line), and the next check stops the run
    assert main([*flags, "--no-verify-data", "--batch-size", "128"]) == 2
    captured = capsys.readouterr()
    assert "  verify_data = False\n" in captured.out
    warned = [line for line in captured.out.splitlines() if line.startswith("warning: ")]
    assert warned == [
        f"warning: {folder / TEST_LABELS}: class counts {DIGIT_MNIST_TEST_COUNTS} are not the official "
        "test split's 1000 of each class, so this is not Fashion-MNIST as published (not verified: "
        "--no-verify-data)"
    ]
    assert captured.err.startswith("error: --batch-size 128 is larger than the 64 training examples")
    assert not out.exists()


def test_cli_eval_refuses_unofficial_labels_unless_told(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    folder = official_with(tmp_path, TEST_LABELS, gzip.compress(digit_mnist_like_labels()))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    flags = ["eval", str(run), "--data-dir", str(folder), "--limit-test", "128", "--batch-size", "128"]
    assert main(flags) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {folder / TEST_LABELS}: content has SHA-256 ")
    assert "--no-verify-data" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    with pytest.warns(data.ClassCountWarning):
        assert main([*flags, "--no-verify-data", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["count"] == 128
