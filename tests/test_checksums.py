"""Fashion-MNIST as published: its checksums, their check on every read, and other data refused.

The real files are Debian's ``dataset-fashion-mnist`` (re-gzipped, same content) in data.DEBIAN_DIR.
"""

from __future__ import annotations

from vggjax import data

# Zalando's README (github.com/zalandoresearch/fashion-mnist), as published.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def test_md5_are_the_official_ones_as_published():
    assert data.MD5 == OFFICIAL_MD5
