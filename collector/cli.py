"""Command line: argument parsing and sub-commands; the work lives in the modules it calls."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from collector import config as config_mod
from collector import csvsafe
from collector.config import Config, ConfigError
from collector.private import use_private_umask
from collector.runtime import tune_malloc
from collector.store.lock import DataDirLock, DataDirLocked
from collector.store.lock import holder as lock_holder

log = logging.getLogger("ccbridge")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

CSV_COLUMNS = (
    ("id", "id"),
    ("time", "time"),
    ("kind", "kind"),
    ("event", "event"),
    ("user_email", "user.email"),
    ("user_id", "user.id"),
    ("user_account_uuid", "user.account_uuid"),
    ("organization_id", "organization.id"),
    ("session_id", "session.id"),
    ("prompt_id", "prompt.id"),
    ("sequence", "sequence"),
    ("tool_name", "tool.name"),
    ("tool_use_id", "tool.use_id"),
    ("decision", "tool.decision"),
    ("decision_source", "tool.decision_source"),
    ("approval_mode", "tool.approval_mode"),
    ("success", "tool.success"),
    ("command", "tool.command"),
    ("file_path", "file.path"),
    ("file_operation", "file.operation"),
    ("model", "model"),
    ("cost_usd", "cost_usd"),
    ("tokens_input", "tokens.input"),
    ("tokens_output", "tokens.output"),
    ("source_identity", "source.identity"),
    ("id_collision", "id_collision.id"),
)


class JsonFormatter(logging.Formatter):
    """One JSON object per log line."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """RFC 3339 / ISO date-time, a date (``2026-11-01`` = midnight UTC), or a relative age (``24h``, ``7d``)."""
    now = now or datetime.now(UTC)
    s = text.strip()
    try:
        age = config_mod.parse_duration(s)
    except ConfigError:
        age = None
    if age is not None and not s.replace(".", "").isdigit():
        return now - timedelta(seconds=float(age))
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use RFC 3339 (2026-11-25T10:00:00Z), a date (2026-11-25) or an age (24h, 7d)"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def load_config(path: str | None, data_dir: str | None) -> Config:
    cfg = config_mod.load(path)
    if data_dir:
        cfg = cfg.with_data_dir(data_dir)
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# run


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


def _lock_data_dir(directory: str, action: str) -> DataDirLock | None:
    """Take the data directory's single-writer lock, or print one line naming the holder and return None."""
    try:
        return DataDirLock(directory).acquire()
    except DataDirLocked as exc:
        pid = f"pid {exc.pid}" if exc.pid is not None else "unknown pid"
        print(f"cannot {action}: data directory {directory} is locked by a running ccbridge ({pid})", file=sys.stderr)
    except OSError as exc:
        print(f"cannot {action}: cannot lock data directory {directory}: {exc.strerror or exc}", file=sys.stderr)
    return None


def cmd_run(args: argparse.Namespace) -> int:
    tune_malloc()
    use_private_umask()  # every file and directory the bridge (and SQLite) creates: 0600 / 0700
    cfg = load_config(args.config, args.data_dir)
    setup_logging(cfg.telemetry.log_level, cfg.telemetry.log_format)
    warning = config_mod.exposed_secrets_warning(args.config, cfg)
    if warning and not args.worker_index:
        log.warning("%s", warning)
    workers = cfg.server.workers
    if args.worker_index:
        from collector.service import Service

        holder = lock_holder(cfg.storage.directory)
        if holder != os.getppid():
            print(
                f"cannot start worker {args.worker_index}: data directory {cfg.storage.directory} is not locked by "
                "its primary process (workers are started by `ccbridge run`)",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        asyncio.run(Service(cfg, worker_index=args.worker_index, serve_telemetry=False, reuse_port=True).run())
        return EXIT_OK
    lock = _lock_data_dir(cfg.storage.directory, "start")
    if lock is None:
        return EXIT_FAILURE
    try:
        return _run_locked(args, cfg, workers)
    finally:
        lock.release()


def _run_locked(args: argparse.Namespace, cfg: Config, workers: int) -> int:
    if workers > 1:
        mp_dir = Path(cfg.storage.directory) / ".metrics"
        shutil.rmtree(mp_dir, ignore_errors=True)
        mp_dir.mkdir(parents=True, exist_ok=True)
        from collector.telemetry.server import enable_multiprocess

        enable_multiprocess(str(mp_dir))
        return _run_workers(args, cfg)
    from collector.service import Service

    try:
        asyncio.run(Service(cfg).run())
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_validate_config(args: argparse.Namespace) -> int:
    try:
        cfg = config_mod.load(args.file)
    except ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    warning = config_mod.exposed_secrets_warning(args.file, cfg)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file}: configuration is valid")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------------------
# audit export


def _dig(rec: dict[str, Any], dotted: str) -> Any:
    cur: Any = rec
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _csv_cell(v: Any) -> Any:
    """A cell of ``audit export --format csv``: numbers stay numbers, the rest as :func:`_csv_value`."""
    return v if isinstance(v, int | float) and not isinstance(v, bool) else _csv_value(v)


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict | list):
        return orjson.dumps(v).decode()
    return str(v)


def cmd_audit_export(args: argparse.Namespace) -> int:
    from collector.store import RecordQuery, StorageError, iter_records

    data_dir = args.data_dir or (load_config(args.config, None).storage.directory if args.config else None)
    data_dir = data_dir or config_mod.DEFAULT_DATA_DIR
    q = RecordQuery(
        since_ms=int(args.since.timestamp() * 1000) if args.since else None,
        until_ms=int(args.until.timestamp() * 1000) if args.until else None,
        kinds=tuple(args.kind or ()),
        user=args.user,
        session=args.session,
    )
    out = sys.stdout
    n = 0
    try:
        if args.format == "jsonl":
            buf = out.buffer
            for body in iter_records(data_dir, q):
                buf.write(body)
                buf.write(b"\n")
                n += 1
        else:
            writer = csvsafe.writer(out)
            writer.writerow([c for c, _ in CSV_COLUMNS])
            for body in iter_records(data_dir, q):
                rec = orjson.loads(body)
                writer.writerow([_csv_cell(_dig(rec, path)) for _, path in CSV_COLUMNS])
                n += 1
        out.flush()
    except StorageError as exc:
        print(f"cannot export: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        return EXIT_OK
    print(f"exported {n} records", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------------------
# demo


async def _demo(endpoint: str, sessions: int, prompts: int, token: str | None) -> int:
    import random

    import aiohttp

    from collector.demo import DemoSession, logs_request, metrics_request

    base = endpoint.rstrip("/")
    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    sent = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for i in range(sessions):
            s = DemoSession(email=f"demo.user{i + 1}@example.com", rng=random.Random(i))
            start = time.time_ns()
            t = start
            records = []
            for _ in range(prompts):
                records += s.prompt_turn(t)
                t += 5_000_000_000
            for path, body in (
                ("/v1/logs", logs_request(records).SerializeToString()),
                ("/v1/metrics", metrics_request(s, t, start).SerializeToString()),
            ):
                try:
                    async with http.post(base + path, data=body, headers=headers) as resp:
                        if resp.status != 200:
                            text = await resp.text(errors="replace")
                            print(f"{path}: HTTP {resp.status}: {text[:300]}", file=sys.stderr)
                            return EXIT_FAILURE
                except aiohttp.ClientError as exc:
                    print(f"cannot reach the bridge at {base}: {exc}", file=sys.stderr)
                    return EXIT_FAILURE
            sent += len(records)
            print(f"session {s.session_id} ({s.email}): {len(records)} events sent")
    print(f"sent {sent} events from {sessions} session(s). See them with: ccbridge audit export --format csv")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args.endpoint, args.sessions, args.prompts, os.environ.get("CCBRIDGE_TOKEN")))


# ---------------------------------------------------------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> str:
    if args.data_dir:
        return str(args.data_dir)
    if getattr(args, "config", None):
        return load_config(args.config, None).storage.directory
    return config_mod.DEFAULT_DATA_DIR


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from collector.store import StorageError, open_reader

    data_dir = _data_dir(args)
    reader = open_reader(data_dir)
    if not reader.shards():
        print(f"cannot verify: no store under {data_dir}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        report = reader.verify_chain()
    except (StorageError, OSError) as exc:
        print(f"cannot verify: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if report.broken is not None:
        b = report.broken
        t = datetime.fromtimestamp(b.time_ms / 1000, UTC).isoformat(timespec="milliseconds")
        print(
            f"CHAIN BROKEN in shard {b.shard} at record seq {b.seq} (id {b.record_id}, time {t}): {b.reason}. "
            f"{report.records} records checked."
        )
        return EXIT_FAILURE
    print(f"chain intact: {report.records} records in {report.shards} shard(s)")
    for shard, (seq, head) in sorted(report.head.items()):
        print(f"  shard {shard}: head seq {seq} hash {head}")
    return EXIT_OK


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from collector.delivery.dlq import entry_name, iso, list_entries, list_groups

    data_dir = _data_dir(args)
    if args.format == "jsonl":
        entries = list_entries(data_dir, args.destination)
        for shard, dl in entries:
            doc = {
                "id": entry_name(shard, dl),
                "destination": dl.destination,
                "batch": f"shard {shard} {dl.batch}".strip(),
                "record_id": dl.record_id,
                "record_time": iso(dl.time_ms),
                "failed_at": iso(dl.failed_ms),
                "reason": dl.reason,
                "status": dl.status,
                "attempts": dl.attempts,
            }
            sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        print(f"{len(entries)} dead letter(s)", file=sys.stderr)
        return EXIT_OK
    groups = list_groups(data_dir, args.destination)
    print(f"{'IDS':<16} {'COUNT':>6} {'DESTINATION':<20} {'BATCH':<22} {'LAST FAILED':<25} {'STATUS':<6} REASON")
    for shard, g in groups:
        ids = f"{shard}-{g.first_id}" + (f"..{g.last_id}" if g.last_id != g.first_id else "")
        batch = f"shard {shard} {g.batch}".strip()
        status = "" if g.status is None else str(g.status)
        reason = g.reason if len(g.reason) <= 100 else g.reason[:97] + "..."
        print(
            f"{ids:<16} {g.count:>6} {g.destination:<20} {batch:<22} {iso(g.last_failed_ms):<25} {status:<6} {reason}"
        )
    total = sum(g.count for _, g in groups)
    print(f"{total} dead letter(s) in {len(groups)} group(s) (by batch and reason)", file=sys.stderr)
    return EXIT_OK


def cmd_dlq_purge(args: argparse.Namespace) -> int:
    from collector.delivery.dlq import iso, purge

    if args.destination is None and args.older_than is None and not args.all:
        print("dlq purge: name what to remove: --destination, --older-than, or --all", file=sys.stderr)
        return EXIT_USAGE
    try:
        older_than = None if args.older_than is None else float(config_mod.parse_duration(args.older_than))
    except ConfigError:
        print(f"--older-than: invalid duration {args.older_than!r} (use e.g. 12h, 7d)", file=sys.stderr)
        return EXIT_USAGE
    result = purge(_data_dir(args), args.destination, older_than)
    for shard, g in result.groups:
        print(
            f"removed {g.count} from {g.destination} (shard {shard} {g.batch}, last failed "
            f"{iso(g.last_failed_ms)}): {g.reason}"
        )
    print(f"purged: {result.removed} dead letter(s)")
    return EXIT_OK


def cmd_dlq_show(args: argparse.Namespace) -> int:
    from collector.delivery.dlq import find_entry, iso

    try:
        found = find_entry(_data_dir(args), args.id)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    if found is None:
        print(f"no dead letter {args.id}", file=sys.stderr)
        return EXIT_FAILURE
    _shard, dl = found
    doc = {
        "id": args.id,
        "destination": dl.destination,
        "failed_at": iso(dl.failed_ms),
        "reason": dl.reason,
        "status": dl.status,
        "attempts": dl.attempts,
        "record": orjson.loads(dl.body),
    }
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    return EXIT_OK


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from collector.delivery.dlq import replay

    setup_logging("warning")
    cfg = load_config(args.config, args.data_dir)
    if args.destination and args.destination not in cfg.exporters:
        known = ", ".join(sorted(cfg.exporters)) or "none configured"
        print(f"destination {args.destination!r} is not in the configuration (known: {known})", file=sys.stderr)
        return EXIT_USAGE
    try:
        wait = float(config_mod.parse_duration(args.wait))
    except ConfigError:
        print(f"--wait: invalid duration {args.wait!r} (use e.g. 30s, 5m)", file=sys.stderr)
        return EXIT_USAGE
    lock = _lock_data_dir(cfg.storage.directory, "replay dead letters")
    if lock is None:
        return EXIT_FAILURE
    try:
        result = asyncio.run(replay(cfg, args.destination, wait))
    finally:
        lock.release()
    print(f"replayed: {result.delivered} delivered, {result.failed} still failing")
    for name in result.skipped_destinations:
        print(f"skipped dead letters of {name}: not in the configuration", file=sys.stderr)
    for name in result.unreachable:
        print(f"gave up on {name}: still failing after --wait {args.wait}; its entries stay", file=sys.stderr)
    return EXIT_OK if result.failed == 0 and not result.skipped_destinations else EXIT_FAILURE


def cmd_analytics_sync(args: argparse.Namespace) -> int:
    from collector.enrich.sync import run_sync_cli

    try:
        directory = load_config(args.config, args.data_dir).storage.directory
    except ConfigError:
        return run_sync_cli(args.config, args.data_dir, args.since, args.until)  # reports it in its own words
    lock = _lock_data_dir(directory, "sync analytics")
    if lock is None:
        return EXIT_FAILURE
    try:
        return run_sync_cli(args.config, args.data_dir, args.since, args.until)
    finally:
        lock.release()


def cmd_db_import(args: argparse.Namespace) -> int:
    """Copy an embedded store into the configured PostgreSQL (storage.backend: postgresql)."""
    from collector.store.postgres.connection import PostgresUnavailableError
    from collector.store.postgres.import_sqlite import import_sqlite
    from collector.store.postgres.migrations import SchemaTooNew
    from collector.store.postgres.session import settings_connector

    cfg = load_config(args.config, None)
    if cfg.storage.backend != "postgresql":
        print("cannot import: storage.backend must be postgresql (the import's destination)", file=sys.stderr)
        return EXIT_USAGE
    source = Path(args.from_sqlite)
    lock = _lock_data_dir(str(source), "import") if source.is_dir() else None
    if source.is_dir() and lock is None:
        return EXIT_FAILURE
    try:
        pg = cfg.storage.postgresql
        result = asyncio.run(import_sqlite(settings_connector(pg), pg.schema, source))
    except (PostgresUnavailableError, SchemaTooNew, FileNotFoundError, RuntimeError) as exc:
        print(f"cannot import: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if lock is not None:
            lock.release()
    print(result.summary())
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from collector.reports.cli import run_report

    return run_report(
        view=args.view,
        config_path=args.config,
        data_dir=args.data_dir,
        since=args.since,
        until=args.until,
        fmt=args.format,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ccbridge", description="Claude Code telemetry to audit records.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the bridge (receivers, store, telemetry endpoint)")
    run.add_argument("--config", help="YAML config file (default: embedded defaults)")
    run.add_argument("--data-dir", help="data directory (overrides storage.directory)")
    run.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    vc = sub.add_parser("validate-config", help="check a config file without starting")
    vc.add_argument("file")
    vc.set_defaults(func=cmd_validate_config)

    audit = sub.add_parser("audit", help="audit store commands").add_subparsers(dest="audit_command", required=True)
    ex = audit.add_parser("export", help="stream stored audit records to stdout")
    ex.add_argument("--config")
    ex.add_argument("--data-dir")
    ex.add_argument("--since", type=parse_time, help="inclusive lower time bound (RFC 3339, date or age like 24h)")
    ex.add_argument("--until", type=parse_time, help="exclusive upper time bound")
    ex.add_argument("--kind", action="append", help="record kind (repeatable)")
    ex.add_argument("--user", help="user email or user.id")
    ex.add_argument("--session", help="session id")
    ex.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    ex.set_defaults(func=cmd_audit_export)

    from collector.compliance.cli import register as register_approvals

    register_approvals(sub, parse_time, _data_dir)

    dlq = sub.add_parser("dlq", help="dead letters: records a destination refused").add_subparsers(
        dest="dlq_command", required=True
    )
    dl_list = dlq.add_parser("list", help="list dead letters")
    dl_show = dlq.add_parser("show", help="show one dead letter with its record")
    dl_show.add_argument("id", help="dead-letter id as listed, e.g. 0-17")
    dl_replay = dlq.add_parser("replay", help="re-send dead letters to their destination (uses the config)")
    dl_replay.add_argument(
        "--wait",
        default="60s",
        help="give up on a destination that keeps failing (timeouts, 429, 5xx) after this long (default: %(default)s)",
    )
    dl_purge = dlq.add_parser("purge", help="delete dead letters by destination and/or age; prints what it removed")
    dl_purge.add_argument("--older-than", help="only entries that failed longer ago than this, e.g. 7d, 12h")
    dl_purge.add_argument("--all", action="store_true", help="every dead letter (when no other filter is given)")
    for sp in (dl_list, dl_show, dl_replay, dl_purge):
        sp.add_argument("--config")
        sp.add_argument("--data-dir")
    for sp in (dl_list, dl_replay, dl_purge):
        sp.add_argument("--destination", help="only this destination (config key, e.g. http/siem)")
    dl_list.add_argument(
        "--format",
        choices=("table", "jsonl"),
        default="table",
        help="table: one line per batch and reason; jsonl: one line per entry (default: %(default)s)",
    )
    dl_purge.set_defaults(func=cmd_dlq_purge)
    dl_list.set_defaults(func=cmd_dlq_list)
    dl_show.set_defaults(func=cmd_dlq_show)
    dl_replay.set_defaults(func=cmd_dlq_replay)

    analytics = sub.add_parser("analytics", help="Claude Code Analytics API").add_subparsers(
        dest="analytics_command", required=True
    )
    sync = analytics.add_parser("sync", help="fetch daily usage into the local history (backfill or refresh)")
    sync.add_argument("--config")
    sync.add_argument("--data-dir")
    sync.add_argument("--since", help="first UTC day, YYYY-MM-DD (default: 90 days ago)")
    sync.add_argument("--until", help="last UTC day, YYYY-MM-DD (default: today)")
    sync.set_defaults(func=cmd_analytics_sync)

    rep = sub.add_parser("report", help="usage, adoption tiers and anomalies, or completeness (docs/reports.md)")
    rep.add_argument("view", nargs="?", choices=("completeness",), help="completeness: telemetry vs the Analytics API")
    rep.add_argument("--config")
    rep.add_argument("--data-dir")
    rep.add_argument("--since", help="first UTC day, YYYY-MM-DD (default: 6 days before --until)")
    rep.add_argument("--until", help="last UTC day, YYYY-MM-DD (default: yesterday)")
    rep.add_argument("--format", choices=("table", "markdown", "csv", "json"), default="table")
    rep.set_defaults(func=cmd_report)

    ver = audit.add_parser("verify", help="check the tamper-evidence chain of the store; names the first break")
    ver.add_argument("--config")
    ver.add_argument("--data-dir")
    ver.set_defaults(func=cmd_audit_verify)

    db = sub.add_parser("db", help="PostgreSQL storage backend").add_subparsers(dest="db_command", required=True)
    imp = db.add_parser(
        "import",
        help="copy an embedded store (records with their chains, cursors, dead letters, usage history) into the "
        "configured PostgreSQL; re-running copies only what is new",
    )
    imp.add_argument("--config", help="config with storage.backend: postgresql (the destination)")
    imp.add_argument("--from-sqlite", required=True, metavar="DIR", help="data directory of the embedded store")
    imp.set_defaults(func=cmd_db_import)

    demo = sub.add_parser("demo", help="send a realistic Claude Code session to a running bridge")
    demo.add_argument("--endpoint", default="http://127.0.0.1:4318", help="OTLP/HTTP base URL")
    demo.add_argument("--sessions", type=int, default=2)
    demo.add_argument("--prompts", type=int, default=2)
    demo.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "kind", None):
        from collector.processing.normalize import KINDS

        bad = [k for k in args.kind if k not in KINDS]
        if bad:
            parser.error(f"unknown kind {bad[0]!r}; kinds are {', '.join(KINDS)}")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
