"""Shared test fixtures: a real bridge on loopback, in-process or as a separate process.

Everything here listens on 127.0.0.1 only and keeps its data under the test's ``tmp_path``.

Public API (kept stable; other test modules rely on it):

``free_port() -> int``
    A TCP port on 127.0.0.1 that was free a moment ago (plain function; ``from tests.conftest import free_port``).

``bridge_config_dict(data_dir, *, http_port, grpc_port, telemetry_port, overrides=None) -> dict``
    The YAML-shaped config tree the fixtures use: both OTLP receivers and the telemetry endpoint on 127.0.0.1, the
    store in ``data_dir``, ``telemetry.log_level: warning``, ``server.shutdown_timeout: 5s`` and
    ``server.workers: 1``; everything else is the embedded default, except the console, which is off (tests enable
    it on a free port). ``overrides`` is deep-merged on top (e.g. ``{"storage": {"synchronous": "normal"}}``).
    ``config_from_dict(tree) -> Config`` builds and validates it like the YAML loader.

``start_bridge(data_dir, overrides=None) -> Bridge`` (async)
    What the fixtures call; use it directly only when you stop the bridge yourself.

``stored_records(data_dir, **query)`` / ``stored_bodies(data_dir, table)`` / ``stored_count(data_dir, table)``
    Read a data directory (live or stopped bridge, all shards) without a Bridge object.

``Bridge`` (what the ``bridge`` fixture yields and ``bridge_factory`` returns)
    ``.cfg`` (:class:`collector.config.Config`), ``.service`` (the running :class:`collector.service.Service`),
    ``.data_dir`` (Path), ``.http_url`` (``http://127.0.0.1:PORT``), ``.grpc_target`` (``127.0.0.1:PORT``),
    ``.telemetry_url``; ``.records(**query)`` -> list of stored audit records as dicts (``query`` are
    :class:`collector.store.api.RecordQuery` fields: ``kinds``, ``session``, ``user``, ``since_ms``, ``until_ms``),
    ``.metric_points()`` / ``.spans()`` -> stored bodies as dicts, ``.count(table)`` -> rows in ``records``,
    ``metric_points`` or ``spans`` over all shards, ``await .stop()`` (idempotent).

``bridge`` (async fixture)
    A started in-process :class:`Bridge` in the test's event loop, with default settings; stopped after the test.

``bridge_factory`` (async fixture)
    ``await bridge_factory(data_dir=None, overrides=None) -> Bridge``: start more bridges, e.g. a second one on the
    same ``data_dir`` after stopping the first (restart), or one with config overrides. All are stopped at teardown.

``BridgeProcess`` / ``spawn_bridge`` (fixture)
    ``spawn_bridge(data_dir=None, overrides=None, wait=True, env=None) -> BridgeProcess`` runs
    ``python -m collector.cli run --config FILE`` and (with ``wait``) blocks until ``/readyz`` answers 200.
    ``BridgeProcess`` has ``.proc`` (Popen), ``.config_path``, ``.data_dir``, ``.http_url``, ``.grpc_target``,
    ``.telemetry_url``, ``.log_path`` (its stdout+stderr), ``.output()``, ``.wait_ready(timeout)``,
    ``await .wait_ready_async(timeout)``, ``.kill()`` (SIGKILL, reaped), ``.terminate(timeout)`` (SIGTERM, returns
    the exit code), ``.records(**query)``, ``.metric_points()``, ``.spans()``, ``.count(table)``. The process runs in
    its own session; at teardown anything of that process group still running is terminated, then killed.

``postgres`` (session fixture) -> :class:`tests.pg_support.PostgresTarget`
    A real PostgreSQL server for the whole session: ``CCBRIDGE_TEST_POSTGRES_DSN`` when set, otherwise a throwaway
    one (initdb in a temporary directory, free loopback port, an unprivileged user when run as root), stopped and
    removed at the end. ``.dsn`` is a superuser DSN (with a password); ``.server`` the
    :class:`tests.pg_support.ThrowawayPostgres` (``None`` for an external server). Skips, saying why, when no
    PostgreSQL server binaries are installed (``scripts/install-system-deps``).

``pg_schema`` (fixture) -> str / ``pg_database`` (fixture) -> str
    A fresh empty schema name in ``postgres.dsn``'s database (dropped with everything in it after the test), or the
    DSN of a fresh empty database (dropped after the test, sessions still connected to it are ended).

``claude_code_fixtures`` (fixture) / ``CLAUDE_CODE_FIXTURES`` (Path)
    ``tests/fixtures/claude-code``: the recorded Claude Code OTLP runs (see its README.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web

from collector.config import Config, load_tree
from collector.service import Service
from collector.store import RecordQuery, iter_records
from collector.store.sqlite import connect, shard_paths
from tests.pg_support import (
    PostgresTarget,
    PostgresUnavailable,
    create_database,
    create_schema,
    drop_database,
    drop_schema,
    postgres_for_tests,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CLAUDE_CODE_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "claude-code"
LOOPBACK = "127.0.0.1"
START_ATTEMPTS = 3
READY_TIMEOUT = 20.0
TABLES = ("records", "metric_points", "spans")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS just handed out (free now; a later bind can still race, rarely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on a free loopback port: the runner (``await runner.cleanup()`` to stop) and the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    return runner, int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def bridge_config_dict(
    data_dir: str | Path,
    *,
    http_port: int,
    grpc_port: int,
    telemetry_port: int,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config tree (as in the YAML file) for a loopback bridge storing into ``data_dir``."""
    tree: dict[str, Any] = {
        "receivers": {
            "otlp": {
                "grpc": {"enabled": True, "endpoint": f"{LOOPBACK}:{grpc_port}"},
                "http": {"enabled": True, "endpoint": f"{LOOPBACK}:{http_port}"},
            }
        },
        "storage": {"directory": str(data_dir)},
        "telemetry": {"endpoint": f"{LOOPBACK}:{telemetry_port}", "log_level": "warning"},
        "server": {"shutdown_timeout": "5s", "workers": 1},
        # the console would listen on 127.0.0.1:8080 by default; tests that use it enable it on a free port
        "console": {"enabled": False},
    }
    return _deep_merge(tree, overrides or {})


def config_from_dict(tree: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a config tree, exactly as the YAML loader does."""
    return load_tree(tree)


# ---------------------------------------------------------------------------------------------------------------
# reading what a bridge stored (works on a live or a stopped bridge, and across shards)


def stored_records(data_dir: str | Path, **query: Any) -> list[dict[str, Any]]:
    """All audit records under ``data_dir`` (time order, merged over shards) as dicts."""
    return [orjson.loads(b) for b in iter_records(data_dir, RecordQuery(**query))]


def stored_bodies(data_dir: str | Path, table: str) -> list[dict[str, Any]]:
    """Bodies of ``metric_points`` or ``spans`` (or ``records``) over all shards, in shard then insertion order."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table}")
    out: list[dict[str, Any]] = []
    for db in shard_paths(data_dir):
        with contextlib.closing(connect(db, readonly=True)) as conn:
            out.extend(orjson.loads(bytes(b)) for (b,) in conn.execute(f"SELECT body FROM {table} ORDER BY seq"))
    return out


def stored_count(data_dir: str | Path, table: str) -> int:
    """Rows in ``table`` summed over all shards under ``data_dir``."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table}")
    total = 0
    for db in shard_paths(data_dir):
        with contextlib.closing(connect(db, readonly=True)) as conn:
            total += int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    return total


class _StoreReader:
    data_dir: Path

    def records(self, **query: Any) -> list[dict[str, Any]]:
        """Stored audit records as dicts; ``query`` takes :class:`RecordQuery` fields."""
        return stored_records(self.data_dir, **query)

    def metric_points(self) -> list[dict[str, Any]]:
        return stored_bodies(self.data_dir, "metric_points")

    def spans(self) -> list[dict[str, Any]]:
        return stored_bodies(self.data_dir, "spans")

    def count(self, table: str = "records") -> int:
        return stored_count(self.data_dir, table)


# ---------------------------------------------------------------------------------------------------------------
# in-process bridge


@dataclass
class Bridge(_StoreReader):
    """A :class:`Service` running in the test's event loop."""

    cfg: Config
    service: Service
    data_dir: Path
    http_url: str
    grpc_target: str
    telemetry_url: str
    _stopped: bool = field(default=False, repr=False)

    async def stop(self) -> None:
        """Stop the service (drains receivers, closes the store). Safe to call twice."""
        if not self._stopped:
            self._stopped = True
            await self.service.stop()


async def start_bridge(data_dir: Path, overrides: dict[str, Any] | None = None) -> Bridge:
    """Start an in-process bridge on fresh loopback ports (retrying if a port was taken in between)."""
    last: Exception | None = None
    for _ in range(START_ATTEMPTS):
        http_port, grpc_port, tel_port = free_port(), free_port(), free_port()
        cfg = config_from_dict(
            bridge_config_dict(
                data_dir, http_port=http_port, grpc_port=grpc_port, telemetry_port=tel_port, overrides=overrides
            )
        )
        service = Service(cfg)
        try:
            await service.start()
        except OSError as exc:  # a port got taken between free_port() and bind
            last = exc
            with contextlib.suppress(Exception):
                await service.stop()
            continue
        return Bridge(
            cfg=cfg,
            service=service,
            data_dir=Path(data_dir),
            http_url=f"http://{LOOPBACK}:{http_port}",
            grpc_target=f"{LOOPBACK}:{grpc_port}",
            telemetry_url=f"http://{LOOPBACK}:{tel_port}",
        )
    raise RuntimeError(f"could not start the bridge after {START_ATTEMPTS} attempts: {last}")


@pytest.fixture
async def bridge_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Bridge]]]:
    """``await bridge_factory(data_dir=None, overrides=None)`` starts a bridge; all are stopped at teardown."""
    started: list[Bridge] = []
    counter = 0

    async def start(data_dir: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Bridge:
        nonlocal counter
        counter += 1
        b = await start_bridge(Path(data_dir) if data_dir else tmp_path / f"bridge-{counter}", overrides)
        started.append(b)
        return b

    yield start
    errors: list[BaseException] = []
    for b in reversed(started):
        try:
            await b.stop()
        except Exception as exc:  # stop the others anyway, then report
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture
async def bridge(bridge_factory: Callable[..., Awaitable[Bridge]]) -> Bridge:
    """A started in-process bridge (both receivers + telemetry on loopback, store in tmp_path)."""
    return await bridge_factory()


# ---------------------------------------------------------------------------------------------------------------
# bridge as a separate process


@dataclass
class BridgeProcess(_StoreReader):
    """``python -m collector.cli run --config FILE`` started by a test."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    data_dir: Path
    http_url: str
    grpc_target: str
    telemetry_url: str
    log_path: Path

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _ready_once(self) -> bool:
        try:
            with urllib.request.urlopen(self.telemetry_url + "/readyz", timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Block until ``/readyz`` is 200; raise if the process exits or the time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode} before ready:\n{self.output()}")
            if self._ready_once():
                return
            time.sleep(0.05)
        raise TimeoutError(f"bridge not ready after {timeout}s:\n{self.output()}")

    async def wait_ready_async(self, timeout: float = READY_TIMEOUT) -> None:
        """:meth:`wait_ready` without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode} before ready:\n{self.output()}")
            if await asyncio.to_thread(self._ready_once):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"bridge not ready after {timeout}s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL the bridge process (like ``kill -9``) and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful stop) and wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def _cleanup(self) -> None:
        """Stop this process and any worker it spawned (its own process group), gently first."""
        pgid = self.proc.pid  # start_new_session=True: the bridge leads its own group
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
            if self.proc.poll() is not None and not _group_alive(pgid):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1.0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@pytest.fixture
def spawn_bridge(tmp_path: Path) -> Iterator[Callable[..., BridgeProcess]]:
    """``spawn_bridge(data_dir=None, overrides=None, wait=True, env=None)`` runs the bridge as a subprocess."""
    started: list[BridgeProcess] = []
    counter = 0

    def spawn(
        data_dir: str | Path | None = None,
        overrides: dict[str, Any] | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
    ) -> BridgeProcess:
        nonlocal counter
        counter += 1
        ddir = Path(data_dir) if data_dir else tmp_path / f"bridge-proc-{counter}"
        last: Exception | None = None
        for attempt in range(START_ATTEMPTS):
            http_port, grpc_port, tel_port = free_port(), free_port(), free_port()
            tree = bridge_config_dict(
                ddir, http_port=http_port, grpc_port=grpc_port, telemetry_port=tel_port, overrides=overrides
            )
            config_from_dict(tree)  # refuse a bad override here, with a clear error, not in the child
            config_path = tmp_path / f"bridge-proc-{counter}-{attempt}.yaml"
            config_path.write_text(yaml.safe_dump(tree, sort_keys=False))
            log_path = tmp_path / f"bridge-proc-{counter}-{attempt}.log"
            child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
            with open(log_path, "wb") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "collector.cli", "run", "--config", str(config_path)],
                    cwd=PROJECT_ROOT,
                    env=child_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            bp = BridgeProcess(
                proc=proc,
                config_path=config_path,
                data_dir=ddir,
                http_url=f"http://{LOOPBACK}:{http_port}",
                grpc_target=f"{LOOPBACK}:{grpc_port}",
                telemetry_url=f"http://{LOOPBACK}:{tel_port}",
                log_path=log_path,
            )
            started.append(bp)
            if not wait:
                return bp
            try:
                bp.wait_ready()
            except RuntimeError as exc:  # exited early: most likely a port raced away; try fresh ports
                last = exc
                continue
            return bp
        raise RuntimeError(f"could not start the bridge process after {START_ATTEMPTS} attempts: {last}")

    yield spawn
    for bp in reversed(started):
        bp._cleanup()


@pytest.fixture
def claude_code_fixtures() -> Path:
    """The recorded Claude Code OTLP runs (``tests/fixtures/claude-code``)."""
    return CLAUDE_CODE_FIXTURES


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresTarget]:
    """A real PostgreSQL server for the session (``CCBRIDGE_TEST_POSTGRES_DSN`` or a throwaway one)."""
    try:
        cm = postgres_for_tests()
        target = cm.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield target
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture
def pg_schema(postgres: PostgresTarget) -> Iterator[str]:
    """A fresh, empty schema in ``postgres.dsn``'s database; dropped (CASCADE) after the test."""
    name = create_schema(postgres.dsn)
    yield name
    drop_schema(postgres.dsn, name)


@pytest.fixture
def pg_database(postgres: PostgresTarget) -> Iterator[str]:
    """The DSN of a fresh, empty database; dropped after the test."""
    dsn = create_database(postgres.dsn)
    yield dsn
    drop_database(postgres.dsn, dsn)
