"""Process-wide tuning: applied by default, left alone when the environment says so."""

from __future__ import annotations

import gc
import platform
from collections.abc import Iterator

import pytest

from collector import runtime


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_gc_threshold_raised(restore_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CCBRIDGE_GC_DEFAULT", raising=False)
    gc.set_threshold(700, 10, 10)
    runtime.tune_gc()
    assert gc.get_threshold() == (runtime.GC_GEN0_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 0


def test_gc_defaults_kept_on_request(restore_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCBRIDGE_GC_DEFAULT", "1")
    gc.set_threshold(700, 10, 10)
    runtime.tune_gc()
    assert gc.get_threshold() == (700, 10, 10)


def test_malloc_arena_max_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert runtime.tune_malloc() is False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_malloc_arenas_capped_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert runtime.tune_malloc() is True
