"""The allocator setting: applied on glibc (Debian/Ubuntu), switched off by VGGJAX_MALLOC=default."""

from __future__ import annotations

from vggjax.runtime import keep_freed_memory


def test_keep_freed_memory_applies_all_three_settings_on_glibc(monkeypatch):
    monkeypatch.delenv("VGGJAX_MALLOC", raising=False)
    assert keep_freed_memory() is True  # every mallopt call (mmap max, trim, arenas) accepted


def test_vggjax_malloc_default_leaves_glibc_alone(monkeypatch):
    monkeypatch.setenv("VGGJAX_MALLOC", "default")
    assert keep_freed_memory() is False
