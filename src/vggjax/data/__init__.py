"""Data: IDX files, Fashion-MNIST, batches and image files (numpy and Pillow; no JAX, no flax).

``from vggjax import data`` gives the public names of :mod:`~vggjax.data.idx`,
:mod:`~vggjax.data.sources`, :mod:`~vggjax.data.fashion_mnist`, :mod:`~vggjax.data.split` and
:mod:`~vggjax.data.batching`.
"""

from vggjax.data.batching import batches, num_batches
from vggjax.data.fashion_mnist import (
    CLASS_NAMES,
    IMAGE_SIZE,
    NUM_CLASSES,
    PER_CLASS,
    SHA256,
    ClassCountWarning,
    check_split,
    load_fashion_mnist,
    load_split,
)
from vggjax.data.idx import read_idx
from vggjax.data.sources import DEBIAN_DIR, ENV_VAR, FILES, MD5, URL, cache_dir, download, find_data_dir
from vggjax.data.split import class_counts, split_validation

__all__ = [
    "CLASS_NAMES",
    "DEBIAN_DIR",
    "ENV_VAR",
    "FILES",
    "IMAGE_SIZE",
    "MD5",
    "NUM_CLASSES",
    "PER_CLASS",
    "SHA256",
    "URL",
    "ClassCountWarning",
    "batches",
    "cache_dir",
    "check_split",
    "class_counts",
    "download",
    "find_data_dir",
    "load_fashion_mnist",
    "load_split",
    "num_batches",
    "read_idx",
    "split_validation",
]
