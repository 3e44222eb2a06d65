"""The data directory's single-writer lock (``collector.store.lock``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from collector.store.lock import LOCK_FILENAME, DataDirLock, DataDirLocked, holder
from tests.conftest import PROJECT_ROOT


def test_second_lock_is_refused_naming_directory_and_pid(tmp_path):
    data_dir = tmp_path / "data"
    with DataDirLock(data_dir) as first:
        assert first.held and (data_dir / LOCK_FILENAME).read_text().strip() == str(os.getpid())
        assert holder(data_dir) == os.getpid()
        with pytest.raises(DataDirLocked) as err:
            DataDirLock(data_dir).acquire()
        assert err.value.pid == os.getpid() and err.value.directory == data_dir
        assert str(data_dir) in str(err.value) and str(os.getpid()) in str(err.value)
    assert holder(data_dir) is None
    with DataDirLock(data_dir):  # released: free again
        pass


def test_lock_is_released_when_the_holder_dies(tmp_path):
    """A process killed while holding the lock leaves the file behind but not the lock."""
    code = (
        "import os, sys, time; from collector.store.lock import DataDirLock; "
        f"DataDirLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert holder(tmp_path) == proc.pid
        with pytest.raises(DataDirLocked):
            DataDirLock(tmp_path).acquire()
    finally:
        proc.kill()  # this test's own child, by its pid
        proc.wait()
    assert (tmp_path / LOCK_FILENAME).exists()
    assert holder(tmp_path) is None
    DataDirLock(tmp_path).acquire().release()


def test_a_worker_without_its_primary_refuses_to_start(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "collector.cli", "run", "--data-dir", str(tmp_path), "--worker-index", "1"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode != 0
    assert "not locked by its primary" in out.stderr and str(tmp_path) in out.stderr
    assert not (tmp_path / "store").exists()
