"""Benchmark: records per second drained from the durable store into the Datadog Logs intake (the strict fake),
through the production path (delivery engine -> ``datadog`` exporter -> field policy, gzip JSON arrays -> HTTP),
with the metrics tailer submitting count series at the same time.

Phase 1 (not timed) stores ``--records`` realistic Claude Code audit records (from :mod:`collector.demo`, over
OTLP/HTTP to an in-process bridge without destinations). Phase 2 restarts the bridge on the same data directory with
the Datadog destination and times how long the backlog takes to be accepted (``ccbridge_exporter_sent_records``).
The fake runs in a child process so its parsing does not share the bridge's event loop.

Usage: ``python bench/datadog.py [--records 20000] [--concurrency 4] [--batch 1000] [--compression gzip|none]
[--no-metrics]``. Prints one line with the figure and a JSON line with details.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backlog import drain, fill, serve_and_report, with_fake

from tests.fakes.datadog import DatadogFake

API_KEY = "0123456789abcdef0123456789abcdef"
DEST = "datadog/bench"


def report(fake: DatadogFake) -> dict[str, Any]:
    logs, requests = fake.logs, fake.requests
    return {
        "log_entries": len(logs),
        "unique_records": len({e.attributes["claude_code"]["id"] for e in logs}),
        "log_requests": sum(r.path == "/api/v2/logs" for r in requests),
        "log_wire_bytes": sum(len(r.body) for r in requests if r.path == "/api/v2/logs"),
        "series_requests": sum(r.path == "/api/v2/series" for r in requests),
        "metric_points": len(fake.points),
        "dropped_points": len(fake.dropped_points),
        "truncated_entries": sum(e.truncated for e in logs),
    }


def serve_fake(conn: Connection) -> None:
    """Child process: the fake intake until the parent sends anything on ``conn``; then report what it received."""
    serve_and_report(conn, DatadogFake([API_KEY]), report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="batch.max_records")
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    parser.add_argument("--no-metrics", dest="metrics", action="store_false", help="send_metrics: false")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()

    def work(url: str) -> dict[str, Any]:
        section = {
            "api_key": API_KEY,
            "logs_endpoint": url,
            "metrics_endpoint": url,
            "tags": ["env:bench"],
            "concurrency": args.concurrency,
            "compression": args.compression,
            "send_metrics": args.metrics,
            "metrics_interval": "1s",
            "batch": {"max_records": args.batch, "timeout": "200ms"},
        }
        settle = 1.5 if args.metrics else 0.0  # let the series tailer submit its last changes (not timed)
        with tempfile.TemporaryDirectory(prefix="ccbridge-bench-datadog-") as tmp:
            stored = asyncio.run(fill(Path(tmp), args.records, users=50, seed=7))
            result = asyncio.run(drain(Path(tmp), DEST, section, stored, args.max_seconds, settle))
            return {"records": stored, **result}

    result, fake = with_fake(serve_fake, (), work)
    stored = result["records"]
    rate = stored / result["elapsed_s"]
    out = {
        "concurrency": args.concurrency,
        "batch_max_records": args.batch,
        "compression": args.compression,
        "send_metrics": args.metrics,
        **result,
        "records_per_s": round(rate),
        **fake,
    }
    print(f"datadog: {rate:,.0f} records/s ({stored} records in {result['elapsed_s']}s, metrics={args.metrics})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
