"""``ccbridge db import --from-sqlite DIR``: copy an embedded store into the configured PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from collector.cli.common import EXIT_OK, Failure, UsageError, add_store_options, load_config, register_parser


def register(sub: Any) -> None:
    db = register_parser(sub, "db", help="PostgreSQL storage backend")
    cmds = db.add_subparsers(dest="db_command", required=True, metavar="{import}")
    imp = register_parser(
        cmds,
        "import",
        help="copy an embedded store into the configured PostgreSQL",
        description="Copy an embedded store (records with their chains, metric points, spans, cursors, dead "
        "letters, usage history) into the PostgreSQL of --config (storage.backend: postgresql). Re-running copies "
        "only what was added since.",
    )
    add_store_options(imp)
    imp.add_argument(
        "--from-sqlite",
        metavar="DIR",
        help="data directory of the embedded store to copy (default: --data-dir, else storage.directory of --config, "
        "whose storage.backend: postgresql is the destination)",
    )
    imp.set_defaults(func=cmd_db_import)


def cmd_db_import(args: argparse.Namespace) -> int:
    from collector.cli.run import lock_data_dir
    from collector.store.postgres.connection import PostgresUnavailableError
    from collector.store.postgres.import_sqlite import import_sqlite
    from collector.store.postgres.migrations import SchemaTooNew
    from collector.store.postgres.session import settings_connector

    cfg = load_config(args, read_only=True)
    if cfg.storage.backend != "postgresql":
        raise UsageError("storage.backend must be postgresql (the import's destination)")
    source = Path(args.from_sqlite) if args.from_sqlite else cfg.data_dir
    lock = lock_data_dir(str(source), "import") if source.is_dir() else None
    try:
        pg = cfg.storage.postgresql
        result = asyncio.run(import_sqlite(settings_connector(pg), pg.schema, source))
    except (PostgresUnavailableError, SchemaTooNew, FileNotFoundError, RuntimeError) as exc:
        raise Failure(f"cannot import: {exc}") from None
    finally:
        if lock is not None:
            lock.release()
    print(result.summary())
    return EXIT_OK
