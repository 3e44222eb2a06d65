"""``ccbridge run``: the bridge (receivers, store, delivery, telemetry endpoint), one or more worker processes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collector.cli.common import EXIT_OK, Failure, add_store_options, load_config, register_parser
from collector.config import Config
from collector.private import use_private_umask
from collector.runtime import tune_malloc
from collector.store.lock import DataDirLock, DataDirLocked
from collector.store.lock import holder as lock_holder
from collector.store.postgres import BackendUnavailable, require_backend_available
from collector.telemetry.logs import fields, setup_logging

log = logging.getLogger("ccbridge")


def register(sub: Any) -> None:
    run = register_parser(sub, "run", help="run the bridge (receivers, store, telemetry endpoint)")
    add_store_options(run)
    run.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)


def _run_workers(args: argparse.Namespace, cfg: Config) -> int:
    """Primary process of a multi-worker bridge: spawn the secondary workers, serve, stop them on exit."""
    from collector.service import Service

    children: list[subprocess.Popen[bytes]] = []
    base = [sys.executable, "-m", "collector.cli", "run"]
    if args.config:
        base += ["--config", args.config]
    base += ["--data-dir", cfg.storage.directory]
    for i in range(1, cfg.server.workers):
        children.append(subprocess.Popen([*base, "--worker-index", str(i)]))
    try:
        asyncio.run(Service(cfg, reuse_port=True).run())
    finally:
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + float(cfg.server.shutdown_timeout) + 5
        for c in children:
            try:
                c.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
    return EXIT_OK


def log_start(cfg: Config, config_path: str | None) -> None:
    """The start line: version, config file, data directory, receivers, destinations, workers."""
    from collector import __version__

    rcv = cfg.receivers.otlp
    receivers = [f"otlp_grpc {rcv.grpc.endpoint}"] if rcv.grpc.enabled else []
    receivers += [f"otlp_http {rcv.http.endpoint}"] if rcv.http.enabled else []
    destinations = sorted(k for k, v in cfg.exporters.items() if getattr(v, "enabled", True))
    log.info(
        "ccbridge %s (Python %s) starting: config %s, data directory %s, receivers %s, destinations %s, %d worker(s)",
        __version__,
        platform.python_version(),
        config_path or "(embedded defaults)",
        cfg.storage.directory,
        ", ".join(receivers) or "none",
        ", ".join(destinations) or "none",
        cfg.server.workers,
        extra=fields(
            version=__version__,
            python=platform.python_version(),
            config=config_path,
            data_dir=cfg.storage.directory,
            receivers=receivers,
            destinations=destinations,
            workers=cfg.server.workers,
        ),
    )


def lock_data_dir(directory: str, action: str) -> DataDirLock:
    """Take the data directory's single-writer lock, or raise :class:`Failure` naming the directory and the holder."""
    try:
        return DataDirLock(directory).acquire()
    except DataDirLocked as exc:
        pid = f"pid {exc.pid}" if exc.pid is not None else "unknown pid"
        raise Failure(f"cannot {action}: data directory {directory} is locked by a running ccbridge ({pid})") from None
    except OSError as exc:
        raise Failure(f"cannot {action}: cannot lock data directory {directory}: {exc.strerror or exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    tune_malloc()
    use_private_umask()  # every file and directory the bridge (and SQLite) creates: 0600 / 0700
    cfg = load_config(args, read_only=False)
    from collector.config import exposed_secrets_warning, file_problems

    missing = file_problems(cfg)
    if missing:
        raise Failure("; ".join(missing))
    try:
        require_backend_available(cfg.storage)
    except BackendUnavailable as exc:
        raise Failure(str(exc)) from None
    setup_logging(cfg.telemetry.log_level, cfg.telemetry.log_format)
    warning = exposed_secrets_warning(args.config, cfg)
    if warning and not args.worker_index:
        log.warning("%s", warning)
    if args.worker_index:
        from collector.service import Service

        if lock_holder(cfg.storage.directory) != os.getppid():
            raise Failure(
                f"cannot start worker {args.worker_index}: data directory {cfg.storage.directory} is not locked by "
                "its primary process (workers are started by `ccbridge run`)"
            )
        asyncio.run(Service(cfg, worker_index=args.worker_index, serve_telemetry=False, reuse_port=True).run())
        return EXIT_OK
    lock = lock_data_dir(cfg.storage.directory, "start")
    try:
        return _run_locked(args, cfg)
    finally:
        lock.release()


def _run_locked(args: argparse.Namespace, cfg: Config) -> int:
    """The primary process, holding the data directory's lock: the start line, then one or more workers."""
    log_start(cfg, args.config)
    if cfg.server.workers > 1:
        mp_dir = Path(cfg.storage.directory) / ".metrics"
        shutil.rmtree(mp_dir, ignore_errors=True)
        try:
            mp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise Failure(f"storage.directory: cannot create {mp_dir}: {exc.strerror}") from None
        from collector.telemetry.server import enable_multiprocess

        enable_multiprocess(str(mp_dir))
        with _start_failures(cfg):
            return _run_workers(args, cfg)
    from collector.service import Service

    with _start_failures(cfg):
        asyncio.run(Service(cfg).run())
    return EXIT_OK


@contextlib.contextmanager
def _start_failures(cfg: Config) -> Iterator[None]:
    """Expected start failures as one line naming the key or path: the store (``storage.directory``) cannot be
    opened, a port is taken."""
    from collector.store import StorageError

    try:
        yield
    except StorageError as exc:
        raise Failure(f"storage.directory {cfg.storage.directory}: {exc}") from None
    except OSError as exc:
        raise Failure(f"cannot start: {exc}") from None
