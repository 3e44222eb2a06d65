"""A throwaway PostgreSQL server for tests and benchmarks (Debian's ``postgresql`` package, no mocks).

:class:`ThrowawayPostgres` runs ``initdb`` in a fresh temporary directory, starts ``postgres`` on a free loopback
port with its unix socket inside that directory, and removes everything when stopped. ``initdb`` and ``postgres``
refuse to run as root, so when the tests run as root the server runs as an unprivileged system user
(:data:`SERVER_USER`, created with ``useradd`` when missing; ``nobody`` when that fails) owning the directory.

The superuser ``postgres`` has a random password and TCP connections need it (``scram-sha-256``), so the DSN the
tests use is shaped like a production one, password included (which is what the redaction tests need).

:func:`postgres_for_tests` is what the session fixture uses: ``CCBRIDGE_TEST_POSTGRES_DSN`` when set (a server the
caller runs; it needs a role that may create schemas, and databases for :func:`create_database`), otherwise a
:class:`ThrowawayPostgres`.

Plain functions over the DSN (through asyncpg, the bridge's driver) make fresh schemas and databases per test.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import grp
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin")
SERVER_USER = "ccbridge-test"
FALLBACK_USER = "nobody"
DSN_ENV = "CCBRIDGE_TEST_POSTGRES_DSN"
START_ATTEMPTS = 3
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (scripts/install-system-deps installs them)."""


def pg_bin_dir() -> Path:
    """The directory holding ``initdb``/``pg_ctl``/``postgres`` (``$CCBRIDGE_PG_BIN`` or Debian's location)."""
    override = os.environ.get("CCBRIDGE_PG_BIN")
    candidates = (override,) if override else PG_BIN_CANDIDATES
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    found = shutil.which("pg_ctl")
    if found and (Path(found).parent / "initdb").is_file():
        return Path(found).parent
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found (looked in "
        + ", ".join(c for c in candidates if c)
        + "); run scripts/install-system-deps or set CCBRIDGE_TEST_POSTGRES_DSN"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as: None when we are not root (then we run it as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(SERVER_USER)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=False,
            capture_output=True,
        )
        try:
            pw = pwd.getpwnam(SERVER_USER)
        except KeyError:
            pw = pwd.getpwnam(FALLBACK_USER)
    return pw.pw_uid, pw.pw_gid


def dsn_with(dsn: str, *, dbname: str | None = None, options: str | None = None) -> str:
    """``dsn`` (a ``postgresql://`` URI) with another database name and/or ``options`` parameter."""
    parts = urllib.parse.urlsplit(dsn)
    path = "/" + urllib.parse.quote(dbname) if dbname is not None else parts.path
    query = dict(urllib.parse.parse_qsl(parts.query))
    if options is not None:
        query["options"] = options
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, urllib.parse.urlencode(query), ""))


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL server in a temporary directory; :meth:`start`, then :attr:`dsn`; :meth:`stop` removes it all.

    ``fsync`` off (the default for tests) keeps commits cheap on a busy machine; a killed server process loses
    nothing either way (the OS keeps the written pages), only an OS crash would. Benchmarks pass ``fsync=True``.
    """

    fsync: bool = False
    settings: dict[str, str] = field(default_factory=dict)
    base: Path | None = None
    port: int = 0
    password: str = ""
    _account: tuple[int, int] | None = None
    _started: bool = False

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.base is not None
        return self.base / "sock"

    @property
    def log_path(self) -> Path:
        assert self.base is not None
        return self.base / "server.log"

    @property
    def dsn(self) -> str:
        """Superuser DSN over TCP with the password (``postgresql://postgres:...@127.0.0.1:PORT/postgres``)."""
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, args: list[str], timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        """Run a server program, as the unprivileged account when we are root."""
        uid, gid = self._account if self._account is not None else (None, None)
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
            check=False,
            user=uid,
            group=gid,
            extra_groups=[] if uid is not None else None,
        )

    def _chown(self, path: Path) -> None:
        if self._account is not None:
            os.chown(path, *self._account)

    def start(self) -> ThrowawayPostgres:
        bindir = pg_bin_dir()
        self._account = _server_account()
        self.base = Path(tempfile.mkdtemp(prefix="ccbridge-pg-"))
        self._chown(self.base)
        self.socket_dir.mkdir()
        self._chown(self.socket_dir)
        self.password = secrets.token_urlsafe(18)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        atexit.register(self.stop)
        init = self._run(
            [
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        if init.returncode != 0:
            self.stop()
            raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.strip() or init.stdout.strip()}")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            "max_connections": "200",
            "shared_buffers": "128MB",
            "timezone": "'UTC'",
            **self.settings,
        }
        with open(self.data_dir / "postgresql.auto.conf", "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        last = ""
        for _ in range(START_ATTEMPTS):
            self.port = _free_port()
            res = self._run(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-w",
                    "-t",
                    str(START_TIMEOUT_S),
                    "-o",
                    f"-p {self.port}",
                    "start",
                ],
                timeout=START_TIMEOUT_S + 10,
            )
            if res.returncode == 0:
                self._started = True
                return self
            last = self._log_tail()
        self.stop()
        raise RuntimeError(f"postgres did not start after {START_ATTEMPTS} attempts: {last}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-10:])
        except OSError:
            return ""

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``pg_ctl -D DATA ARGS`` as the server's user (e.g. ``restart -m fast -w``)."""
        return self._run([str(pg_bin_dir() / "pg_ctl"), "-D", str(self.data_dir), *args])

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory. Safe to call twice."""
        if self._started:
            self._started = False
            res = self.pg_ctl("stop", "-m", "fast", "-w", "-t", "30")
            if res.returncode != 0:
                self.pg_ctl("stop", "-m", "immediate", "-w", "-t", "30")
        if self.base is not None and self.base.exists():
            shutil.rmtree(self.base, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)


@dataclass(frozen=True)
class PostgresTarget:
    """What the session fixture yields: an admin DSN and, when this process started it, the server itself."""

    dsn: str
    server: ThrowawayPostgres | None


@contextlib.contextmanager
def postgres_for_tests() -> Iterator[PostgresTarget]:
    """``CCBRIDGE_TEST_POSTGRES_DSN`` when set, otherwise a :class:`ThrowawayPostgres` stopped on exit."""
    external = os.environ.get(DSN_ENV)
    if external:
        yield PostgresTarget(dsn=external, server=None)
        return
    server = ThrowawayPostgres().start()
    try:
        yield PostgresTarget(dsn=server.dsn, server=server)
    finally:
        server.stop()


def _unique_name(prefix: str) -> str:
    return f"{prefix}_{int(time.time())}_{secrets.token_hex(4)}"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _admin(admin_dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def admin_execute(admin_dsn: str, statement: str) -> None:
    """Run one statement on ``admin_dsn`` outside any event loop (fixtures, setup code)."""
    asyncio.run(_admin(admin_dsn, statement))


def create_schema(admin_dsn: str) -> str:
    """Create a fresh, empty schema with a unique name; returns the name."""
    name = _unique_name("t")
    admin_execute(admin_dsn, f"CREATE SCHEMA {quote_ident(name)}")
    return name


def drop_schema(admin_dsn: str, name: str) -> None:
    admin_execute(admin_dsn, f"DROP SCHEMA IF EXISTS {quote_ident(name)} CASCADE")


def create_database(admin_dsn: str) -> str:
    """Create a fresh database with a unique name; returns its DSN (same credentials as ``admin_dsn``)."""
    name = _unique_name("tdb")
    admin_execute(admin_dsn, f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0 ENCODING 'UTF8'")
    return dsn_with(admin_dsn, dbname=name)


def drop_database(admin_dsn: str, dsn: str) -> None:
    """Drop the database ``dsn`` names, disconnecting anyone still using it."""
    name = urllib.parse.unquote(urllib.parse.urlsplit(dsn).path.lstrip("/"))
    admin_execute(admin_dsn, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def account_name() -> str:
    """The user the throwaway server runs as (for messages)."""
    acc = _server_account()
    if acc is None:
        return pwd.getpwuid(os.geteuid()).pw_name
    return f"{pwd.getpwuid(acc[0]).pw_name}:{grp.getgrgid(acc[1]).gr_name}"
