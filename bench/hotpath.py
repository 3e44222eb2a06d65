"""Micro-benchmark: CPU microseconds per record for every stage of the hot path, ingest and delivery.

Stages, each timed on its own over the same realistic Claude Code traffic (the load generator's templates: 512-record
OTLP/HTTP protobuf bodies with fresh session ids):

- ingest: ``decode`` (protobuf parse + attribute walk), ``redact`` (secret detectors over attributes, bodies and
  resources), ``normalize`` (audit records), ``encode`` (record JSON and store row), ``store`` (multi-row insert,
  chain and commit into a real shard with ``synchronous: off`` so the disk does not count), each timed alone over
  all events; and ``combined``: the first four as the receivers run them (lazy decode, 32 events at a time through
  every stage, which keeps each event in the CPU cache and costs less than the sum);
- delivery, per audit record, from stored rows as the engine hands them over: ``read`` (the engine's batch query),
  and each exporter's ``encode``: ``http``, ``splunk_hec``, ``datadog`` (logs), ``prometheus`` (accumulate).

Usage: ``python bench/hotpath.py [--requests 40] [--repeat 5] [--profile STAGE]``. Prints a table and a JSON line
(median of ``--repeat`` runs, µs per event for ingest stages and per audit record for delivery stages).
``--profile`` runs one stage under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import fresh_body, make_templates

from collector.pipeline import DEFAULT_MAX_RECORD_SIZE, DEFAULT_MAX_VALUE_SIZE, Pipeline, record_row
from collector.processing.decode import LogEvent, log_stream_from_protobuf, logs_from_protobuf
from collector.processing.normalize import event_time_ns, normalize_log
from collector.processing.redact import Redactor
from collector.runtime import tune_gc
from collector.store.sqlite import AuditStore
from collector.telemetry.selfmetrics import SelfMetrics
from exporters import build_configs, create
from exporters.base import DeliveryRecord

EXPORTERS: dict[str, dict[str, Any]] = {
    "http": {"url": "http://127.0.0.1:9/ingest"},
    "splunk_hec": {"endpoint": "http://127.0.0.1:9", "token": "00000000-1111-2222-3333-444444444444", "ack": True},
    "datadog": {
        "api_key": "0123456789abcdef0123456789abcdef",
        "logs_endpoint": "http://127.0.0.1:9/api/v2/logs",
        "metrics_endpoint": "http://127.0.0.1:9/api/v2/series",
        "hash_salt": "bench-salt",
    },
}


def bodies(requests: int, batch: int) -> list[bytes]:
    templates = make_templates(batch)
    return [fresh_body(templates[i % len(templates)]) for i in range(requests)]


def timed(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


class Bench:
    def __init__(self, requests: int, batch: int, tmp: Path) -> None:
        self.bodies = bodies(requests, batch)
        self.events_n = requests * batch
        self.redactor = Redactor()
        self.metrics = SelfMetrics()
        self.tmp = tmp
        self.decoded: list[list[LogEvent]] = [logs_from_protobuf(b) for b in self.bodies]
        self.redacted = [self._redact(evs) for evs in self.decoded]
        self.records = [[r for ev in evs for r in normalize_log(ev, time.time_ns(), "http")] for evs in self.redacted]
        self.records_n = sum(len(r) for r in self.records)
        now = time.time_ns()
        self.rows = [[record_row(r, now, now // 1_000_000) for r in recs] for recs in self.records]
        self.delivery = [
            [DeliveryRecord(i, row[0], row[7], row[1]) for i, row in enumerate(rows)] for rows in self.rows
        ]
        self.round = 0

    def _redact(self, events: list[LogEvent]) -> list[LogEvent]:
        pipeline = Pipeline.__new__(Pipeline)
        pipeline.redactor = self.redactor
        copies = [
            LogEvent(
                e.resource,
                e.scope_name,
                e.scope_version,
                e.time_unix_nano,
                e.observed_time_unix_nano,
                e.severity_number,
                e.severity_text,
                e.body,
                e.event_name,
                dict(e.attributes),
                e.trace_id,
                e.span_id,
                e.flags,
            )
            for e in events
        ]
        pipeline.redact_events(copies)
        return copies

    def combined(self) -> None:
        """What a receiver runs per request before the store: lazy decode, then every stage 32 events at a time."""
        pipeline = Pipeline.__new__(Pipeline)
        pipeline.redactor = self.redactor
        pipeline.enricher = None
        pipeline.max_value_size = DEFAULT_MAX_VALUE_SIZE
        pipeline.max_record_size = DEFAULT_MAX_RECORD_SIZE
        for b in self.bodies:
            pipeline.build_log_rows(log_stream_from_protobuf(b), "http")

    def decode(self) -> None:
        for b in self.bodies:
            logs_from_protobuf(b)

    def redact(self) -> None:
        for evs in self.decoded:
            self._redact(evs)

    def normalize(self) -> None:
        now = time.time_ns()
        for evs in self.redacted:
            for ev in evs:
                event_time_ns(ev, now)
                normalize_log(ev, now, "http")

    def encode(self) -> None:
        now = time.time_ns()
        for recs in self.records:
            for r in recs:
                record_row(r, now, now // 1_000_000)

    def store(self) -> None:
        self.round += 1
        directory = self.tmp / f"store-{self.round}"
        store = AuditStore(directory, synchronous="off", writer="inline")

        async def run() -> None:
            store.open()
            try:
                for rows in self.rows:
                    await store.append(records=rows)
            finally:
                store.close()

        asyncio.run(run())

    def exporter(self, key: str) -> Callable[[], None]:
        cfg = build_configs({key: EXPORTERS[key]})[key]
        exporter = create(key, cfg)

        def run() -> None:
            for batch in self.delivery:
                fresh = [DeliveryRecord(r.seq, r.id, r.body, r.time_ms) for r in batch]
                exporter.encode(fresh)

        return run

    def prometheus(self) -> Callable[[], None]:
        import orjson

        from exporters.prometheus.accumulator import Accumulator

        acc = Accumulator()

        def run() -> None:
            for batch in self.delivery:
                for r in batch:
                    acc.add_record(orjson.loads(r.body))

        return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", default="")
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ccbridge-hotpath-") as tmp:
        bench = Bench(args.requests, args.batch, Path(tmp))
        tune_gc()  # as the bridge does at start: the benchmark's inputs are start-up objects here
        stages: dict[str, tuple[Callable[[], Any], int]] = {
            "decode": (bench.decode, bench.events_n),
            "redact": (bench.redact, bench.events_n),
            "normalize": (bench.normalize, bench.events_n),
            "encode": (bench.encode, bench.events_n),
            "store": (bench.store, bench.events_n),
            "combined": (bench.combined, bench.events_n),
            "http": (bench.exporter("http"), bench.records_n),
            "splunk_hec": (bench.exporter("splunk_hec"), bench.records_n),
            "datadog": (bench.exporter("datadog"), bench.records_n),
            "prometheus": (bench.prometheus(), bench.records_n),
        }
        if args.only:
            stages = {k: v for k, v in stages.items() if k in args.only.split(",")}
        if args.profile:
            fn, _ = stages[args.profile]
            prof = cProfile.Profile()
            prof.runcall(fn)
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        results: dict[str, float] = {}
        for name, (fn, n) in stages.items():
            fn()  # warm caches, as a running bridge has them
            runs = [timed(fn) / n * 1e6 for _ in range(args.repeat)]
            results[name] = round(statistics.median(runs), 2)
            print(f"{name:12s} {results[name]:8.2f} µs per {'event' if n == bench.events_n else 'record'}")
        ingest = sum(results.get(k, 0) for k in ("decode", "redact", "normalize", "encode", "store"))
        print(f"{'sum':12s} {ingest:8.2f} µs per event of the five ingest stages, each timed alone")
        if "combined" in results and "store" in results:
            print(f"{'ingest':12s} {results['combined'] + results['store']:8.2f} µs per event as the bridge runs them")
        print(f"{bench.records_n / bench.events_n:.3f} audit records per event")
        print(json.dumps({"events": bench.events_n, "records": bench.records_n, "us": results}))


if __name__ == "__main__":
    main()
