"""Fashion-MNIST as published: its checksums, their check on every read, and other data refused.

The real files are Debian's ``dataset-fashion-mnist`` (re-gzipped, same content) in data.DEBIAN_DIR.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from vggjax import data
from vggjax.data.idx import read_idx
from vggjax.errors import DataError

# Zalando's README (github.com/zalandoresearch/fashion-mnist), as published.
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def test_md5_are_the_official_ones_as_published():
    assert data.MD5 == OFFICIAL_MD5


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
