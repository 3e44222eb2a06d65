"""Benchmark: records per second drained from the durable store into Splunk HEC (the strict fake) with indexer
acknowledgement on, through the production path (delivery engine -> ``splunk_hec`` exporter -> HTTP -> ack polls).

Phase 1 (not timed) stores ``--records`` realistic Claude Code audit records (from :mod:`collector.demo`, sent over
OTLP/HTTP to an in-process bridge without destinations). Phase 2 restarts the bridge on the same data directory with
the Splunk destination and times how long the backlog takes to be confirmed (``ccbridge_exporter_sent_records``).
The fake runs in a child process so its work does not share the bridge's event loop.

Usage: ``python bench/splunk_hec.py [--records 20000] [--concurrency 4] [--ack-poll 1s] [--ack-delay 0.05]
[--no-ack] [--compression gzip|none] [--batch 1000]``. Prints one line with the figure and a JSON line with details.
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

from tests.fakes.splunk_hec import SplunkHecFake, TokenPolicy

TOKEN = "00000000-1111-2222-3333-444444444444"
DEST = "splunk_hec/bench"


def report(fake: SplunkHecFake) -> dict[str, Any]:
    events, requests = fake.events, fake.requests
    return {
        "events": len(events),
        "unique_ids": len({e.event["id"] for e in events}),
        "event_requests": sum(r.path.endswith("/event") for r in requests),
        "ack_polls": sum(r.path.endswith("/ack") for r in requests),
        "wire_bytes": sum(len(r.body) for r in requests if r.path.endswith("/event")),
    }


def serve_fake(ack: bool, ack_delay: float, conn: Connection) -> None:
    """Child process: the HEC fake until the parent sends anything on ``conn``; then report what it indexed."""
    serve_and_report(conn, SplunkHecFake({TOKEN: TokenPolicy(ack=ack)}, ack_delay=ack_delay), report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="batch.max_records")
    parser.add_argument("--ack-poll", default="1s", help="ack_poll_interval")
    parser.add_argument("--ack-delay", type=float, default=0.05, help="seconds until the fake acknowledges")
    parser.add_argument("--no-ack", dest="ack", action="store_false")
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    args = parser.parse_args()

    def work(url: str) -> dict[str, Any]:
        section = {
            "endpoint": url,
            "token": TOKEN,
            "index": "ai_audit",
            "ack": args.ack,
            "ack_poll_interval": args.ack_poll,
            "concurrency": args.concurrency,
            "compression": args.compression,
            "batch": {"max_records": args.batch, "timeout": "200ms"},
            "health_check_interval": 0,
        }
        with tempfile.TemporaryDirectory(prefix="ccbridge-bench-splunk-") as tmp:
            stored = asyncio.run(fill(Path(tmp), args.records))
            return {"records": stored, **asyncio.run(drain(Path(tmp), DEST, section, stored, args.max_seconds))}

    result, fake = with_fake(serve_fake, (args.ack, args.ack_delay), work)
    stored = result["records"]
    rate = stored / result["elapsed_s"]
    out = {
        "ack": args.ack,
        "ack_poll_interval": args.ack_poll,
        "fake_ack_delay_s": args.ack_delay,
        "concurrency": args.concurrency,
        "batch_max_records": args.batch,
        "compression": args.compression,
        **result,
        "records_per_s": round(rate),
        **fake,
    }
    ack = "on" if args.ack else "off"
    print(f"splunk_hec: {rate:,.0f} records/s ({stored} records in {result['elapsed_s']}s, ack {ack})")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
