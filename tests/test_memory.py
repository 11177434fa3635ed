"""The memory estimate of a training step, and the refusal of a run that cannot fit (issue 13, 5)."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from vggjax.arch import get_arch
from vggjax.arch.memory import estimate_memory, gib
from vggjax.config import TrainConfig
from vggjax.errors import ConfigError
from vggjax.presets import PRESETS
from vggjax.training import memory, parallel
from vggjax.training.train import build_step

# One block of one 3x3 conv, 1 -> 16 channels, at 64x64, fc6/fc7 of 64, 10 classes, batch 32.
ONE_BLOCK = TrainConfig(arch="((1,16),)", width=1.0, hidden=64, image_size=64, batch_size=32)
# Counted by hand: conv 9*16 + 16; fc6 (32*32*16)*64 + 64; fc7 64*64 + 64; fc8 64*10 + 10.
ONE_BLOCK_PARAMS = 160 + 1_048_640 + 4_160 + 650
# Outputs per batch: conv1_1 and relu1_1 32*64*64*16 each, pool1 and flatten 32*32*32*16 each,
# fc6, relu6, dropout6, fc7, relu7, dropout7 32*64 each, fc8 32*10; and the input 32*64*64.
ONE_BLOCK_OUTPUTS = 2 * 2_097_152 + 2 * 524_288 + 6 * 2_048 + 320 + 131_072


def one_block_estimate(impl: str, **overrides) -> int:
    c = dataclasses.replace(ONE_BLOCK, **overrides)
    sizes = {"hidden": c.hidden, "head": c.head, "dtype": c.dtype, "optimizer_slots": 1 if c.momentum else 0}
    return estimate_memory(c.resolved_arch(), input_size=c.image_size, batch=c.batch_size, impl=impl, **sizes)


def test_estimate_counts_what_it_says():
    e = one_block_estimate("xla")
    assert e.params == ONE_BLOCK_PARAMS * 4 * 3  # float32 params, gradients, momentum
    assert e.activations == int(3.5 * ONE_BLOCK_OUTPUTS * 4)
    assert one_block_estimate("xla", momentum=0.0).params == ONE_BLOCK_PARAMS * 4 * 2
    assert one_block_estimate("xla", dtype="bfloat16").activations == int(3.5 * ONE_BLOCK_OUTPUTS * 2)
    assert one_block_estimate("cpu_fast").activations == int(2.0 * ONE_BLOCK_OUTPUTS * 4)


@pytest.mark.parametrize("impl", ["xla", "cpu_fast"])
def test_estimate_is_within_a_factor_of_what_xla_compiles(impl):
    # XLA's own accounting of the compiled train step vggjax train runs: its arguments
    # (state, batch, key), outputs not aliased to them (the state is donated), temporaries.
    config = dataclasses.replace(ONE_BLOCK, impl=impl).validate()
    built = build_step(config, parallel.data_mesh(), steps_per_epoch=10)
    state = jax.eval_shape(built.init, built.init_rng)
    batch = {
        "image": jax.ShapeDtypeStruct((32, 28, 28, 1), jnp.uint8),
        "label": jax.ShapeDtypeStruct((32,), jnp.int32),
    }
    m = built.train_fn.lower(state, batch, built.dropout_rng).compile().memory_analysis()
    compiled = (
        m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    )
    estimate = one_block_estimate(impl).total
    assert 0.5 < compiled / estimate < 1.5, (compiled, estimate)


def fake_host(monkeypatch, available: int) -> None:
    monkeypatch.setattr(memory, "host_available_bytes", lambda: available)


@pytest.mark.parametrize("preset", ["default", "d2l", "fast", "best"])
def test_the_presets_fit_a_24_gib_machine(preset, monkeypatch):
    fake_host(monkeypatch, 22 * 2**30)  # 24 GiB less the system's and JAX's own share
    memory.check_memory(PRESETS[preset], parallel.data_mesh())


def test_a_step_over_the_limit_is_refused_naming_estimate_limit_and_flags(monkeypatch):
    fake_host(monkeypatch, 2**30)
    d2l = PRESETS["d2l"]
    with pytest.raises(ConfigError) as e:
        memory.check_memory(d2l, parallel.data_mesh())
    assert str(e.value).startswith("one training step (batch 128 at 224x224) needs about ")
    assert str(e.value).endswith(
        "GiB), more than the 1.0 GiB available on this machine; "
        "use a smaller --batch-size, --image-size, --hidden or --width"
    )
    small = dataclasses.replace(d2l, batch_size=4, eval_batch_size=1000)
    with pytest.raises(
        ConfigError, match=r"^one evaluation batch \(batch 1000 at 224x224\).*--eval-batch-size"
    ):
        memory.check_memory(small, parallel.data_mesh())
    memory.check_memory(small, parallel.data_mesh(), evaluation=False)  # bench's check


def test_host_available_bytes_reads_meminfo_and_the_cgroup_limit(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  8000000 kB\nMemFree:  1000 kB\nMemAvailable:  3000000 kB\n")
    group = tmp_path / "cgroup" / Path("/proc/self/cgroup").read_text().split("::", 1)[1].strip().lstrip("/")
    assert memory.host_available_bytes(meminfo, tmp_path / "cgroup") == 3_000_000 * 1024
    group.mkdir(parents=True, exist_ok=True)
    (group / "memory.max").write_text("max\n")
    assert memory.host_available_bytes(meminfo, tmp_path / "cgroup") == 3_000_000 * 1024
    (group / "memory.max").write_text(f"{2**30}\n")
    (group / "memory.current").write_text(f"{2**28}\n")
    assert memory.host_available_bytes(meminfo, tmp_path / "cgroup") == 2**30 - 2**28
    assert memory.host_available_bytes(tmp_path / "missing") is None


def test_gib_stays_readable_for_astronomical_sizes():
    assert [gib(n) for n in (2**29, 150 * 2**30, 2**70)] == ["0.5 GiB", "150 GiB", "1.1e+12 GiB"]


def test_vgg16_parameter_memory_is_its_138m_parameters_three_times():
    # float32 parameters, gradients and momentum of the paper's VGG-16 (Table 2: 138M)
    e = estimate_memory(get_arch("vgg16"), input_size=224, batch=64, channels=3, num_classes=1000)
    assert e.params == 138_357_544 * 4 * 3


def test_an_ema_is_one_more_copy_of_the_parameters(monkeypatch):
    # The EMA of --ema is a third per-parameter array beside the parameters' gradients and
    # momentum (issue 15): a run that fits without it can be refused with it.
    config = TrainConfig(hidden=40_000, batch_size=1, eval_batch_size=1)  # fc7: 1.6e9 parameters
    plain = estimate_memory(
        config.resolved_arch(), input_size=32, batch=1, channels=1, num_classes=10, hidden=40_000
    ).params
    fake_host(monkeypatch, int(plain * 1.1))  # room for parameters, gradients, momentum: not an EMA
    memory.check_memory(config, parallel.data_mesh(), evaluation=False)
    with pytest.raises(ConfigError, match=r"\(parameters, gradients, momentum and EMA [0-9.]+ GiB"):
        memory.check_memory(dataclasses.replace(config, ema=0.999), parallel.data_mesh(), evaluation=False)
