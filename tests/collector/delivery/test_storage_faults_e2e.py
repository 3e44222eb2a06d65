"""Storage faults under a running bridge process: a full disk and a file system that turns read-only.

The tests run as root, so ``chmod`` cannot stop writes; instead the data directory lives on a small file system of
the test's own: a 2 MiB tmpfs that the test fills up, or a loop-mounted ext2 image that the kernel remounts read-only
(``errors=remount-ro`` plus ext4's ``trigger_fs_error``, the same path as a real disk error). A plain
``mount -o remount,ro`` cannot be used: Linux refuses it with EBUSY while any file on the mount is open for writing,
which the store's database always is. Tests skip, saying why, where mounting is not permitted.

Expected behaviour: receivers answer 503 / UNAVAILABLE with ``Retry-After`` (``storage.retry_after``), ``/readyz`` is
not ready and names the storage reason, the process stays up, nothing of a refused request is stored, and once space
returns the bridge accepts again by itself (a write probe runs every 2 s while unhealthy).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.collector.delivery.delivery_support import (
    ExportAnswer,
    Traffic,
    get_json,
    send_grpc_once,
    send_once,
    stored_ids,
    wait_until,
)

pytestmark = pytest.mark.slow

OVERRIDES = {"storage": {"retry_after": "1s"}}


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)


def _unmount(mnt: Path) -> None:
    for _ in range(50):
        if not os.path.ismount(mnt) or _run("umount", str(mnt)).returncode == 0:
            return
        time.sleep(0.1)  # a process of this test may still be closing its files
    _run("umount", "-l", str(mnt))


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted for this test (unmounted at teardown); a shard and its WAL fit once the filler goes."""
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) on this machine")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    res = _run("mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mnt))
    if res.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here (needs root and CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        _unmount(mnt)


@dataclass
class LoopFs:
    image: Path
    mnt: Path
    trigger: Path  # writing here raises an ext4 error: with errors=remount-ro the kernel makes the mount read-only

    def mount(self) -> None:
        res = _run("mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mnt))
        assert res.returncode == 0, res.stderr


@pytest.fixture
def loop_ext2(tmp_path: Path) -> Iterator[LoopFs]:
    """A 16 MiB ext2 image loop-mounted with ``errors=remount-ro`` (unmounted at teardown)."""
    mkfs = shutil.which("mkfs.ext2") or shutil.which("mke2fs")
    if mkfs is None or shutil.which("mount") is None or shutil.which("findmnt") is None:
        pytest.skip("needs mkfs.ext2, mount and findmnt")
    image, mnt = tmp_path / "ext2.img", tmp_path / "ext2"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    res = _run(mkfs, "-q", "-F", str(image))
    if res.returncode != 0:
        pytest.skip(f"cannot make an ext2 image: {res.stderr.strip()}")
    res = _run("mount", "-o", "loop,errors=remount-ro", str(image), str(mnt))
    if res.returncode != 0:
        pytest.skip(f"loop-mounting an image is not permitted here: {res.stderr.strip()}")
    try:
        dev = _run("findmnt", "-n", "-o", "SOURCE", str(mnt)).stdout.strip()
        trigger = Path("/sys/fs/ext4") / os.path.basename(dev) / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"the kernel has no {trigger} to simulate a disk error")
        yield LoopFs(image, mnt, trigger)
    finally:
        _unmount(mnt)


def fill(path: Path) -> int:
    """Write ``path`` until the file system is full; returns the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            block = b"\0" * chunk
            while True:
                try:
                    f.write(block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
                written += chunk
    return written


def refuses_writes(directory: Path) -> bool:
    try:
        (directory / "write-probe").write_bytes(b"x")
    except OSError as exc:
        return exc.errno in (errno.EROFS, errno.EIO)
    return False


async def ready(telemetry_url: str) -> tuple[int, Any]:
    return await get_json(telemetry_url + "/readyz")


async def assert_refused_as_storage_unavailable(bp: Any, traffic: Traffic, refused_ids: set[str]) -> Any:
    """Both receivers refuse with 503 / UNAVAILABLE and Retry-After; returns the /readyz body."""
    answers: list[ExportAnswer] = []

    async def refused() -> ExportAnswer | None:
        req, ids = traffic.request(turns=20)  # big enough to need fresh pages, not only reused WAL space
        ans = await send_once(bp.http_url, req)
        if ans.ok:
            return None
        refused_ids.update(ids)
        answers.append(ans)
        return ans

    ans = await wait_until(refused, 10, "HTTP request refused")
    assert (ans.status, ans.retry_after) == ("503", "1"), ans
    req, ids = traffic.request(turns=20)
    g = await send_grpc_once(bp.grpc_target, req)
    refused_ids.update(ids)
    assert (g.ok, g.status, g.retry_after) == (False, "UNAVAILABLE", "1"), g
    status, body = await ready(bp.telemetry_url)
    assert status == 503, body
    status_h, _ = await get_json(bp.telemetry_url + "/healthz")
    assert status_h == 200  # alive, just not ready
    assert bp.proc.poll() is None, "the bridge exited on a storage error"
    return body


async def test_disk_full_answers_503_not_ready_then_recovers_by_itself(tmpfs, spawn_bridge):
    bp = await asyncio.to_thread(spawn_bridge, data_dir=tmpfs / "data", overrides=OVERRIDES)
    traffic = Traffic(31)
    accepted: set[str] = set()
    req, ids = traffic.request()
    assert (await send_once(bp.http_url, req)).ok
    accepted.update(ids)

    filler = tmpfs / "filler"
    await asyncio.to_thread(fill, filler)
    refused: set[str] = set()
    body = await assert_refused_as_storage_unavailable(bp, traffic, refused)
    assert body["failing"]["storage"] == "storage: disk_full", body

    filler.unlink()  # space is back
    await wait_until(lambda: _is_ready(bp.telemetry_url), 8, "/readyz ready again after space returned")
    req, ids = traffic.request(turns=20)
    assert (await send_once(bp.http_url, req)).ok
    accepted.update(ids)
    req, ids = traffic.request(turns=20)
    g = await send_grpc_once(bp.grpc_target, req)
    assert g.ok, g
    accepted.update(ids)
    stored = stored_ids(bp.records())
    assert accepted <= stored
    assert not refused & stored, "part of a refused request was stored"
    assert await asyncio.to_thread(bp.terminate) == 0


async def _is_ready(telemetry_url: str) -> bool:
    return (await ready(telemetry_url))[0] == 200


async def test_read_only_file_system_answers_503_and_the_process_stays_up(loop_ext2, spawn_bridge):
    data_dir = loop_ext2.mnt / "data"
    bp = await asyncio.to_thread(spawn_bridge, data_dir=data_dir, overrides=OVERRIDES)
    traffic = Traffic(32)
    req, before = traffic.request()
    assert (await send_once(bp.http_url, req)).ok

    loop_ext2.trigger.write_text("ccbridge test: simulated disk error\n")
    await wait_until(lambda: refuses_writes(loop_ext2.mnt), 5, "the kernel made the mount read-only")
    refused: set[str] = set()
    body = await assert_refused_as_storage_unavailable(bp, traffic, refused)
    # SQLite reports a write refused with EROFS as SQLITE_IOERR_WRITE, hence io_error rather than read_only
    assert body["failing"]["storage"] in ("storage: read_only", "storage: io_error"), body
    await asyncio.sleep(2.5)  # one probe cycle: still up, still not ready
    assert bp.proc.poll() is None
    assert (await ready(bp.telemetry_url))[0] == 503

    # what an operator does: stop the bridge, repair and remount read-write, start it again on the same directory
    assert await asyncio.to_thread(bp.terminate) == 0
    _unmount(loop_ext2.mnt)
    fsck = _run("e2fsck", "-f", "-y", str(loop_ext2.image))
    assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr
    loop_ext2.mount()
    again = await asyncio.to_thread(spawn_bridge, data_dir=data_dir, overrides=OVERRIDES)
    req, after = traffic.request()
    assert (await send_once(again.http_url, req)).ok
    stored = stored_ids(again.records())
    assert set(before) | set(after) <= stored
    assert not refused & stored
    assert await asyncio.to_thread(again.terminate) == 0
