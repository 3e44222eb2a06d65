"""Micro-benchmark: what usage enrichment and identity backfill add per record on the ingest hot path.

Two measurements, both on realistic records from :mod:`collector.demo` (200 developers) with 1,000 users'
summaries and the 200 developers' ids loaded in the enricher:

1. ``Enricher.enrich`` alone, per record, for the three paths: a known user with ``user.email`` (learn check +
   usage lookup), a record without ``user.email`` that is backfilled from its ``user.id``, and an unknown user;
2. ``Pipeline.build_log_rows`` (normalize + enrich + JSON encoding of the row) with and without an enricher: the
   difference is the end-to-end cost, including encoding the larger record.

Usage: ``python bench/enrich_hotpath.py [--records 20000] [--repeat 5]``. Prints a table and a JSON line (best of
``--repeat`` runs, microseconds per record).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.demo import batches
from collector.enrich.enricher import Enricher
from collector.pipeline import Pipeline
from collector.processing.decode import LogEvent, logs_from_message
from collector.processing.normalize import normalize_log
from collector.store.sqlite import AuditStore
from collector.store.usage import UserDailySummary
from collector.telemetry.selfmetrics import SelfMetrics

USERS = 200
KNOWN_USERS = 1000


def summaries() -> list[UserDailySummary]:
    emails = [f"dev{i:03d}@example.com" for i in range(USERS)] + [f"other{i:04d}@example.com" for i in range(800)]
    return [
        UserDailySummary(e, date(2026, 11, 24), 5, 2, 1, 800, 120, 90, 10, Decimal("12.34"), ("vscode",))
        for e in emails[:KNOWN_USERS]
    ]


def events(n: int) -> list[LogEvent]:
    out: list[LogEvent] = []
    for req in batches(500, users=USERS):
        out.extend(logs_from_message(req))
        if len(out) >= n:
            return out[:n]
    return out


def best(repeat: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    evs = events(args.records)
    records = [rec for ev in evs for rec in normalize_log(ev, time.time_ns(), "http")]
    n = len(records)
    with tempfile.TemporaryDirectory(prefix="ccbridge-enrich-bench-") as tmp:
        enricher = Enricher(tmp)
        enricher.install(summaries(), {})
        for rec in records:
            enricher.enrich(copy.deepcopy(rec))  # learn the 200 developers' user.id -> e-mail

        with_email = [copy.deepcopy(r) for r in records]
        no_email: list[list[dict[str, Any]]] = []
        unknown: list[list[dict[str, Any]]] = []
        for _ in range(args.repeat):
            batch = [copy.deepcopy(r) for r in records]
            for r in batch:
                r["user"].pop("email", None)
                r["user"].pop("identity_source", None)
            no_email.append(batch)
            other = [copy.deepcopy(r) for r in records]
            for r in other:
                r["user"]["email"] = "stranger@example.org"
                r["user"]["id"] = "f" * 64
            unknown.append(other)

        enrich = enricher.enrich

        def run_known() -> None:
            for r in with_email:
                enrich(r)

        pools = iter(no_email)

        def run_backfill() -> None:
            for r in next(pools):
                enrich(r)

        unknown_pools = iter(unknown)

        def run_unknown() -> None:
            for r in next(unknown_pools):
                enrich(r)

        known_us = best(args.repeat, run_known) / n * 1e6
        backfill_us = best(args.repeat, run_backfill) / n * 1e6
        unknown_us = best(args.repeat, run_unknown) / n * 1e6
        assert all(r["user"]["identity_source"] == "backfill" and "usage" in r for r in no_email[0])

        store = AuditStore(Path(tmp) / "unused")
        plain = Pipeline(store, SelfMetrics())
        enriched = Pipeline(store, SelfMetrics(), enricher=enricher)
        plain_s = enriched_s = float("inf")
        for _ in range(args.repeat):  # interleaved, so load changes on the machine hit both alike
            plain_s = min(plain_s, best(1, lambda: plain.build_log_rows(evs, "http")))
            enriched_s = min(enriched_s, best(1, lambda: enriched.build_log_rows(evs, "http")))
    report = {
        "records": n,
        "enrich_known_user_us": round(known_us, 3),
        "enrich_backfill_us": round(backfill_us, 3),
        "enrich_unknown_user_us": round(unknown_us, 3),
        "build_rows_plain_us": round(plain_s / n * 1e6, 2),
        "build_rows_enriched_us": round(enriched_s / n * 1e6, 2),
        "build_rows_added_us": round((enriched_s - plain_s) / n * 1e6, 2),
        "python": sys.version.split()[0],
    }
    print(f"{'path':<34} {'µs/record':>10}")
    for key, value in report.items():
        if key.endswith("_us"):
            print(f"{key:<34} {value:>10}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
