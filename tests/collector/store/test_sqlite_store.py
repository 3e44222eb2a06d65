"""The durable store (``collector.store.sqlite``): group commit, de-duplication, storage failures, shard merging.

About the failure tests: CI runs as root, and root ignores file permissions, so ``chmod`` cannot make a database
read-only. What is used instead, from most to least real:

- a real tmpfs that fills up, and a real read-only tmpfs, mounted in a private mount namespace (``unshare -m``) by a
  child process; skipped where mounting is not permitted;
- SQLite's own limits on the store's writer connection: ``PRAGMA max_page_count`` makes SQLite fail with
  ``SQLITE_FULL`` ("database or disk is full") and ``PRAGMA query_only`` with ``SQLITE_READONLY`` ("attempt to write
  a readonly database"). These are the genuine SQLite errors the store sees on a full or read-only disk, raised on
  its real write path; only their cause is simulated.
- a data directory path that is blocked by a regular file, for ``open()``.
"""

from __future__ import annotations

import asyncio
import errno
import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import orjson
import pytest

from collector.store import RecordQuery, iter_records
from collector.store import sqlite as sqlite_store
from collector.store.sqlite import (
    AuditStore,
    RecordRow,
    StorageError,
    classify_sqlite_error,
    shard_path,
    shard_paths,
)

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def row(
    rid: str,
    time_ms: int,
    *,
    kind: str = "event",
    user: str | None = None,
    user_id: str | None = None,
    session: str | None = None,
    size: int = 0,
) -> RecordRow:
    body = {"id": rid, "time_ms": time_ms, "kind": kind}
    if size:
        body["pad"] = "x" * size
    return (rid, time_ms, kind, user, user_id, session, time_ms, orjson.dumps(body))


def ids(directory: Path, **query: object) -> list[str]:
    return [orjson.loads(b)["id"] for b in iter_records(directory, RecordQuery(**query))]  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path):
    s = AuditStore(tmp_path / "data").open()
    yield s
    s.close()


# ---------------------------------------------------------------------------------------------------------------
# basics


def test_open_creates_the_shard_file_in_wal_mode(tmp_path):
    with AuditStore(tmp_path / "d", shard=3) as s:
        assert s.path == shard_path(tmp_path / "d", 3) == tmp_path / "d" / "store" / "shard-3.db"
        assert s.path.exists()
        with s.reader() as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert shard_paths(tmp_path / "d") == [tmp_path / "d" / "store" / "shard-3.db"]


def test_append_then_read_back(store):
    result = store.append_sync(records=[row("a", 1), row("b", 2)])
    assert (result.records, result.new_records) == (2, 2)
    assert store.count() == 2
    assert ids(store.directory) == ["a", "b"]


def test_append_after_close_is_a_storage_error(tmp_path):
    s = AuditStore(tmp_path / "d").open()
    s.close()
    with pytest.raises(StorageError) as exc:
        s.append_sync(records=[row("a", 1)])
    assert exc.value.reason == "closed"


def test_close_finishes_queued_appends(tmp_path):
    s = AuditStore(tmp_path / "d", commit_interval=0.05).open()
    done: list[int] = []

    def writer(i: int) -> None:
        s.append_sync(records=[row(f"r{i}", i)])
        done.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s.close()
    assert sorted(done) == list(range(20))
    assert len(ids(tmp_path / "d")) == 20


# ---------------------------------------------------------------------------------------------------------------
# group commit


async def test_concurrent_appends_share_commits(tmp_path):
    s = AuditStore(tmp_path / "d").open()
    try:
        n = 300
        results = await asyncio.gather(*(s.append(records=[row(f"r{i:04d}", i)]) for i in range(n)))
        assert [r.new_records for r in results] == [1] * n
        assert s.count() == n
        assert s.committed_rows == n
        assert 1 <= s.commits < n
        assert s.commits <= n // 4, f"{s.commits} commits for {n} concurrent appends: no group commit"
    finally:
        s.close()


async def test_commit_interval_gathers_everything_waiting_into_one_commit(tmp_path):
    s = AuditStore(tmp_path / "d", commit_interval=0.1).open()
    try:
        n = 200
        await asyncio.gather(*(s.append(records=[row(f"r{i:04d}", i)]) for i in range(n)))
        assert s.count() == n
        assert s.commits <= 2
    finally:
        s.close()


def test_concurrent_threads_share_commits(tmp_path):
    s = AuditStore(tmp_path / "d", commit_interval=0.01).open()
    threads_n, per_thread = 16, 10
    barrier = threading.Barrier(threads_n)

    def writer(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            s.append_sync(records=[row(f"t{t}-{i}", i)])

    try:
        threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        appends = threads_n * per_thread
        assert s.count() == appends
        assert s.commits < appends // 2
    finally:
        s.close()


async def test_max_commit_records_bounds_one_commit(tmp_path):
    s = AuditStore(tmp_path / "d", commit_interval=0.05, max_commit_records=10).open()
    try:
        await asyncio.gather(*(s.append(records=[row(f"r{i:03d}", i)]) for i in range(100)))
        assert s.count() == 100
        assert s.commits >= 10
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------------------------
# duplicates


def test_duplicate_time_and_id_is_stored_once(store):
    first = store.append_sync(records=[row("dup", 1000), row("dup", 1000), row("other", 1000)])
    assert (first.records, first.new_records) == (3, 2)
    again = store.append_sync(records=[row("dup", 1000)])
    assert (again.records, again.new_records) == (1, 0)
    assert store.count() == 2
    assert ids(store.directory) == ["dup", "other"]


async def test_concurrent_retries_of_the_same_record_store_it_once(store):
    results = await asyncio.gather(*(store.append(records=[row("same", 5)]) for _ in range(50)))
    assert sum(r.new_records for r in results) == 1
    assert store.count() == 1


def test_same_id_at_another_time_is_a_different_row(store):
    # the unique key is (time_ms, id): a retry carries the same event time, so only that collides
    store.append_sync(records=[row("x", 1000), row("x", 2000)])
    assert store.count() == 2


def test_duplicate_span_is_stored_once(store):
    span = ("ab" * 16, "cd" * 8, 1000, "claude_code.tool", b"{}")
    store.append_sync(spans=[span, span])
    store.append_sync(spans=[span])
    assert store.count("spans") == 1


# ---------------------------------------------------------------------------------------------------------------
# storage failures (see the module docstring for what is real and what is simulated)


def test_disk_full_is_a_storage_error_and_the_store_recovers(store):
    store.append_sync(records=[row("before", 1)])
    conn = store._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")  # no room for one more page
    with pytest.raises(StorageError) as exc:
        store.append_sync(records=[row("big", 2, size=200_000)])
    assert exc.value.reason == "disk_full"
    assert "full" in str(exc.value)
    assert store.healthy is False
    assert store.last_error is not None
    assert store.last_error.reason == "disk_full"
    assert ids(store.directory) == ["before"]  # nothing partial
    conn.execute("PRAGMA max_page_count=1073741823")  # space is back
    store.append_sync(records=[row("after", 3, size=200_000)])
    assert store.healthy is True
    assert store.last_error is None
    assert ids(store.directory) == ["before", "after"]


def test_read_only_database_is_a_storage_error_and_the_store_recovers(store):
    store.append_sync(records=[row("before", 1)])
    conn = store._conn
    assert conn is not None
    conn.execute("PRAGMA query_only=ON")
    with pytest.raises(StorageError) as exc:
        store.append_sync(records=[row("refused", 2)])
    assert exc.value.reason == "read_only"
    assert store.healthy is False
    conn.execute("PRAGMA query_only=OFF")
    store.append_sync(records=[row("after", 3)])
    assert store.healthy is True
    assert ids(store.directory) == ["before", "after"]


def test_health_recovers_without_client_traffic(store):
    """While unhealthy the writer probes the store; once writes work again ``healthy`` is True with no new append."""
    conn = store._conn
    assert conn is not None
    conn.execute("PRAGMA query_only=ON")
    with pytest.raises(StorageError):
        store.append_sync(records=[row("refused", 1)])
    time.sleep(sqlite_store.PROBE_INTERVAL_S + 0.5)  # at least one probe ran, and failed
    assert store.healthy is False
    conn.execute("PRAGMA query_only=OFF")
    deadline = time.monotonic() + sqlite_store.PROBE_INTERVAL_S * 3
    while not store.healthy:
        assert time.monotonic() < deadline, "the store did not notice that writes work again"
        time.sleep(0.05)
    assert store.count() == 0


async def test_every_append_of_a_failed_commit_gets_the_error(tmp_path):
    s = AuditStore(tmp_path / "d", commit_interval=0.05).open()
    try:
        assert s._conn is not None
        s._conn.execute("PRAGMA query_only=ON")
        results = await asyncio.gather(
            *(s.append(records=[row(f"r{i}", i)]) for i in range(20)), return_exceptions=True
        )
        assert all(isinstance(r, StorageError) and r.reason == "read_only" for r in results)
        s._conn.execute("PRAGMA query_only=OFF")
        assert (await s.append(records=[row("ok", 1)])).new_records == 1
        assert s.count() == 1
    finally:
        s.close()


def test_open_on_an_unusable_directory_is_a_storage_error(tmp_path):
    blocked = tmp_path / "data"
    blocked.write_text("a file where the data directory should be")
    with pytest.raises(StorageError) as exc:
        AuditStore(blocked).open()
    assert exc.value.reason in ("io_error", "error")
    assert str(blocked) in str(exc.value)


def _sqlite_error(name: str, message: str) -> sqlite3.Error:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorname = name  # type: ignore[attr-defined]  # what the sqlite3 module sets on real errors
    return exc


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (_sqlite_error("SQLITE_FULL", "database or disk is full"), "disk_full"),
        (_sqlite_error("SQLITE_READONLY", "attempt to write a readonly database"), "read_only"),
        (_sqlite_error("SQLITE_READONLY_DBMOVED", "attempt to write a readonly database"), "read_only"),
        (_sqlite_error("SQLITE_BUSY", "database is locked"), "locked"),
        (_sqlite_error("SQLITE_LOCKED", "database table is locked"), "locked"),
        (_sqlite_error("SQLITE_IOERR_SHORT_READ", "disk I/O error"), "io_error"),
        (_sqlite_error("SQLITE_CANTOPEN", "unable to open database file"), "io_error"),
        (_sqlite_error("SQLITE_ERROR", "no such table: full_readonly_locked"), "error"),
        (OSError(errno.ENOSPC, "No space left on device"), "disk_full"),
        (OSError(errno.EROFS, "Read-only file system"), "read_only"),
        (OSError(errno.EIO, "Input/output error"), "io_error"),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "sqlite_errorname", None) or f"errno-{v.errno}",
)
def test_classify_sqlite_error(exc, reason):
    classified = classify_sqlite_error(exc)
    assert classified.reason == reason
    assert str(exc) in str(classified)


def test_classification_ignores_words_in_the_file_path():
    exc = OSError(errno.EROFS, "Read-only file system", "/srv/ccbridge-full/locked/store")
    assert classify_sqlite_error(exc).reason == "read_only"


def test_real_sqlite_errors_carry_the_code_the_classifier_uses(store):
    # guards the assumption behind _sqlite_error(): the sqlite3 module really sets sqlite_errorname
    assert store._conn is not None
    store._conn.execute("PRAGMA query_only=ON")
    try:
        with pytest.raises(sqlite3.OperationalError) as exc:
            store._conn.execute("INSERT INTO meta(key, value) VALUES ('x', 'y')")
        assert exc.value.sqlite_errorname == "SQLITE_READONLY"
        assert classify_sqlite_error(exc.value).reason == "read_only"
    finally:
        store._conn.execute("PRAGMA query_only=OFF")


_TMPFS_SCRIPT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from collector.store.sqlite import AuditStore, StorageError

    full_dir, ro_dir = sys.argv[1], sys.argv[2]
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", full_dir], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", ro_dir], check=True)
    out = {}
    store = AuditStore(os.path.join(full_dir, "data")).open()
    row = lambda i, n: (f"r{i}", i, "event", None, None, None, i, b"x" * n)
    store.append_sync(records=[row(0, 10)])
    filler = os.path.join(full_dir, "filler")
    with open(filler, "wb") as f:  # take (nearly) all remaining space
        try:
            while True:
                f.write(b"\\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:
        store.append_sync(records=[row(1, 512 * 1024)])
        out["full"] = "accepted"
    except StorageError as exc:
        out["full"] = exc.reason
    out["healthy_while_full"] = store.healthy
    os.remove(filler)
    store.append_sync(records=[row(2, 512 * 1024)])
    out["healthy_after"] = store.healthy
    out["count"] = store.count()
    store.close()
    try:
        AuditStore(os.path.join(ro_dir, "data")).open()
        out["read_only"] = "opened"
    except StorageError as exc:
        out["read_only"] = exc.reason
    print(json.dumps(out))
    """
)


def test_real_tmpfs_out_of_space_and_mounted_ro(tmp_path):
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) not available")
    full_dir, ro_dir = tmp_path / "small", tmp_path / "frozen"
    full_dir.mkdir()
    ro_dir.mkdir()
    proc = subprocess.run(
        [unshare, "--mount", "--propagation", "private", sys.executable, "-c", _TMPFS_SCRIPT, full_dir, ro_dir],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 and ("Operation not permitted" in proc.stderr or "permission denied" in proc.stderr):
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "full": "disk_full",
        "healthy_while_full": False,
        "healthy_after": True,
        "count": 2,
        "read_only": "read_only",
    }


# ---------------------------------------------------------------------------------------------------------------
# reading across shards


def test_iter_records_merges_shards_in_time_order_and_drops_cross_shard_duplicates(tmp_path):
    d = tmp_path / "d"
    with AuditStore(d, shard=0) as s0, AuditStore(d, shard=1) as s1:
        s0.append_sync(records=[row("a1", 1), row("a3", 3), row("dup", 5), row("a7", 7), row("same-b", 9)])
        s1.append_sync(records=[row("b2", 2), row("b4", 4), row("dup", 5), row("b6", 6), row("same-a", 9)])
    assert ids(d) == ["a1", "b2", "a3", "b4", "dup", "b6", "a7", "same-a", "same-b"]


def test_iter_records_filters_apply_to_every_shard(tmp_path):
    d = tmp_path / "d"
    with AuditStore(d, shard=0) as s0, AuditStore(d, shard=1) as s1:
        s0.append_sync(
            records=[
                row("p0", 10, kind="user_prompt", user="alice@example.com", user_id="u-a", session="s1"),
                row("t0", 20, kind="tool_result", user="u-b", user_id="u-b", session="s2"),
            ]
        )
        s1.append_sync(
            records=[
                row("p1", 15, kind="user_prompt", user="u-b", user_id="u-b", session="s2"),
                row("d1", 30, kind="tool_decision", user="alice@example.com", user_id="u-a", session="s1"),
            ]
        )
    assert ids(d, kinds=("user_prompt",)) == ["p0", "p1"]
    assert ids(d, kinds=("user_prompt", "tool_decision")) == ["p0", "p1", "d1"]
    assert ids(d, user="alice@example.com") == ["p0", "d1"]
    assert ids(d, user="u-a") == ["p0", "d1"]
    assert ids(d, session="s2") == ["p1", "t0"]
    assert ids(d, since_ms=15, until_ms=30) == ["p1", "t0"]  # since inclusive, until exclusive


def test_iter_records_without_a_store_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError) as exc:
        list(iter_records(tmp_path / "nothing-here", RecordQuery()))
    assert exc.value.reason == "missing"


def test_iter_records_streams_in_batches(tmp_path):
    d = tmp_path / "d"
    with AuditStore(d) as s:
        s.append_sync(records=[row(f"r{i:05d}", i) for i in range(2500)])
    it = iter_records(d, RecordQuery(), batch_size=100)
    assert orjson.loads(next(it))["id"] == "r00000"
    assert sum(1 for _ in it) == 2499


def test_reading_while_writing(store):
    store.append_sync(records=[row("a", 1)])
    it = iter_records(store.directory, RecordQuery(), batch_size=1)
    assert orjson.loads(next(it))["id"] == "a"
    store.append_sync(records=[row("b", 2)])  # the writer is not blocked by the open reader
    list(it)
    assert store.count() == 2
