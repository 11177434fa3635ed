import io
import pickle
import zipfile

import numpy as np
import pytest
import torch

from vggjax.errors import CheckpointError
from vggjax.interop.torchfile import read_state_dict, write_state_dict


def test_reads_torch_save_without_torch_views_dtypes_and_scalars(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "offset": base[1:],  # storage offset 6
        "transposed": base.T,  # strides (1, 6)
        "scalar": torch.tensor(7),
        "half": torch.linspace(-1, 1, 5, dtype=torch.float16),
        "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "empty": torch.zeros(0, 3),
    }
    torch.save(state, tmp_path / "a.pth")
    got = read_state_dict(tmp_path / "a.pth")
    assert list(got) == list(state)
    for key, tensor in state.items():
        assert got[key].shape == tuple(tensor.shape), key
        np.testing.assert_array_equal(got[key].astype(np.float32), tensor.float().numpy())
    assert got["scalar"].dtype == np.int64 and got["half"].dtype == np.float16


def test_batchnorm_state_dict_and_checkpoint_wrapper(tmp_path):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    torch.save({"epoch": 3, "state_dict": module.state_dict()}, tmp_path / "ckpt.pth")
    got = read_state_dict(tmp_path / "ckpt.pth")
    assert list(got) == list(module.state_dict())
    assert got["1.num_batches_tracked"].shape == () and got["0.weight"].shape == (4, 3, 3, 3)


def test_legacy_format_goes_through_torch(tmp_path):
    state = {"w": torch.randn(2, 3)}
    torch.save(state, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    np.testing.assert_array_equal(read_state_dict(tmp_path / "old.pth")["w"], state["w"].numpy())


def test_safetensors_and_pth_writers_round_trip(tmp_path):
    state = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(0, np.int64)}
    for name in ("w.safetensors", "w.pth"):
        write_state_dict(tmp_path / name, state)
        got = read_state_dict(tmp_path / name)
        assert set(got) == set(state)
        for key in state:
            np.testing.assert_array_equal(got[key], state[key])
    loaded = torch.load(tmp_path / "w.pth", weights_only=True)
    assert list(loaded) == ["a", "n"] and loaded["a"].dtype == torch.float32


def test_truncated_file_is_a_clear_error(tmp_path):
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="no weights file"):
        read_state_dict(tmp_path / "missing.pth")


def test_refuses_globals_outside_a_state_dict(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    (tmp_path / "evil.pth").write_bytes(buf.getvalue())
    with pytest.raises(
        CheckpointError, match=r"asks for (__builtin__|builtins)\.print, which is not part of a state_dict"
    ):
        read_state_dict(tmp_path / "evil.pth")
