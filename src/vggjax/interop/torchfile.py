"""PyTorch ``state_dict`` files as numpy arrays, without importing torch.

Reads the two formats torchvision weights come in:

* ``.pth`` / ``.pt`` from ``torch.save`` (PyTorch ≥ 1.6): a zip holding ``data.pkl``
  (a pickle of the ``OrderedDict``) and one raw little-endian storage per tensor under
  ``data/<key>``. The pickle is read by a restricted unpickler that knows only the
  classes a ``state_dict`` uses (``collections.OrderedDict``,
  ``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage`` …) and refuses any other
  global, so a malicious file cannot run code; the format is PyTorch's
  ``torch/serialization.py`` (``_save`` / ``_load``).
* ``.safetensors`` through the ``safetensors`` package's numpy API.

The pre-1.6 (non-zip) ``torch.save`` format needs torch itself, an optional extra
(``pip install 'vggjax[torch]'``), loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np
import safetensors
import safetensors.numpy

from vggjax.errors import CheckpointError, first_line
from vggjax.run.files import atomic_write_bytes

# torch.<Name>Storage → element dtype, as torch/storage.py's typed storages.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
TORCH_INSTALL = "pip install 'vggjax[torch]' (PyTorch CPU is enough)"


class _Storage:
    """A storage global from the pickle: only its element dtype matters."""

    def __init__(self, name: str):
        self.dtype = STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """torch._utils._rebuild_tensor_v2 for numpy: a strided view of the storage, copied."""
    if not isinstance(storage, np.ndarray):
        raise CheckpointError(f"a tensor is built from a {type(storage).__name__}; save a plain state_dict")
    size, stride = tuple(size), tuple(stride)
    if any(n < 0 for n in size) or any(s < 0 for s in stride) or offset < 0:
        raise CheckpointError(f"a tensor has a negative size, stride or offset ({size}, {stride}, {offset})")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) if all(size) else offset - 1
    if last >= storage.size:
        raise CheckpointError(
            f"a tensor of shape {list(size)} reaches element {last} of a storage of {storage.size}; "
            "the file is corrupt: save the state_dict again"
        )
    start = storage[offset:]
    strides = tuple(s * storage.itemsize for s in stride)
    return np.lib.stride_tricks.as_strided(start, size, strides, writeable=False).copy()


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    """torch._utils._rebuild_parameter: a Parameter is its data here."""
    return data


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` of a torch zip file, allowing only state_dict classes."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, byteorder: str):
        super().__init__(file)
        self.archive, self.prefix, self.byteorder = archive, prefix, byteorder

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return _Storage(name)
        raise CheckpointError(
            f"the file's pickle asks for {module}.{name}, which is not part of a state_dict; "
            "vggjax reads only tensors (save model.state_dict(), not the model)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r} in the file; save a plain state_dict")
        storage, key, _location, numel = pid[1:]
        if not isinstance(storage, _Storage):
            raise CheckpointError(f"unsupported storage type {storage!r}; save a float32 state_dict")
        raw = self.archive.read(f"{self.prefix}data/{key}")
        dtype = storage.dtype.newbyteorder("<" if self.byteorder == "little" else ">")
        if len(raw) < numel * dtype.itemsize:
            raise CheckpointError(f"storage {key} holds {len(raw)} bytes, fewer than its {numel} elements")
        return np.frombuffer(raw, dtype, count=numel).astype(storage.dtype, copy=False)


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a PyTorch ``state_dict`` file into numpy arrays.

    Args:
      path: a ``torch.save`` file (``.pth``/``.pt``, any name) or a ``.safetensors`` file.
        A checkpoint dict holding the weights under ``"state_dict"`` or ``"model"`` is
        unwrapped.

    Returns:
      ``{key: array}`` in the file's order, e.g. ``"features.0.weight": float32[64, 3, 3, 3]``.

    Raises:
      CheckpointError: if the file is missing, truncated, not a state_dict, asks the
        unpickler for a class outside a state_dict, or is a pre-1.6 torch file and torch
        is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}; give the .pth or .safetensors file to read")
    with path.open("rb") as f:
        head = f.read(8)
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    elif head.startswith(b"PK"):
        state = _read_torch_zip(path)
    elif head.startswith(b"\x80"):
        state = _read_with_torch(path)
    else:
        raise CheckpointError(f"{path} is neither a torch.save zip file nor .safetensors; is it truncated?")
    return _unwrap(state, path)


def _read_torch_zip(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise CheckpointError(f"{path} is a zip file but not a torch.save file (no <name>/data.pkl)")
            prefix = pickles[0].removesuffix("data.pkl")
            names = set(archive.namelist())
            order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
            pkl = archive.read(pickles[0])
            return _StateDictUnpickler(io.BytesIO(pkl), archive, prefix, order).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, KeyError, pickle.UnpicklingError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {path} ({type(e).__name__}: {e}); the file is truncated or corrupt: get it again"
        ) from None


def _read_safetensors(path: Path) -> dict:
    try:
        return safetensors.numpy.load_file(path)
    except (safetensors.SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}; the file is truncated or corrupt") from None


def _read_with_torch(path: Path) -> dict:
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path} uses the pre-1.6 torch.save format, which needs torch to read; {TORCH_INSTALL}"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError) as e:
        raise CheckpointError(f"cannot read {path}: {first_line(e)}") from None
    state = _unwrap(state, path)
    return {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for k, v in state.items()}


def _unwrap(state: object, path: Path) -> dict[str, np.ndarray]:
    if isinstance(state, Mapping) and not any(isinstance(v, np.ndarray) for v in state.values()):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                return _unwrap(state[key], path)
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state_dict of tensors")
    return dict(state)


def write_state_dict(path: str | Path, state: Mapping[str, np.ndarray]) -> None:
    """Writes a ``state_dict`` atomically; ``torch.nn.Module.load_state_dict`` accepts it.

    Args:
      path: ``.safetensors`` (no torch needed; load it in PyTorch with
        ``safetensors.torch.load_file``) or any other name for a ``torch.save`` file
        (needs torch).
      state: ``{key: array}``, e.g. from :func:`vggjax.interop.torchvision.to_torchvision`.

    Raises:
      CheckpointError: if a ``torch.save`` file is asked for and torch is not installed.
    """
    path = Path(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
    if path.suffix == ".safetensors":
        atomic_write_bytes(path, safetensors.numpy.save(arrays))
        return
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"writing {path.name} as a torch.save file needs torch; {TORCH_INSTALL}, "
            "or name the output .safetensors"
        ) from None
    buf = io.BytesIO()
    torch.save(collections.OrderedDict((k, torch.from_numpy(v.copy())) for k, v in arrays.items()), buf)
    atomic_write_bytes(path, buf.getvalue())
