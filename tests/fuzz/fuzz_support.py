"""Shared by the fuzz tests: hypothesis profiles, the per-example guards and the invariants every input must keep.

Profiles (select with ``HYPOTHESIS_PROFILE``; ``ci`` when unset):

- ``ci``: a fixed number of examples per test, ``derandomize=True`` (the same inputs every run, so CI is
  deterministic), no example database; the whole fuzz suite stays well under a minute on 2 cores.
- ``long``: for local runs, 20x the examples, random (``HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest
  tests/fuzz``); failures are kept in ``.hypothesis/`` and replayed first next time.

Guards around every example: a hard wall-clock limit (``SIGALRM``; a hang fails the example instead of the run),
hypothesis' own per-example ``deadline``, and a ``tracemalloc`` peak bounded relative to the input's size.

Invariants (:func:`check_records`): every normalized record validates against ``schemas/audit_record.v1.json``,
serializes with orjson (what the store does) and has a storable time (a signed 64-bit millisecond count).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from hypothesis import HealthCheck, settings

from collector.pipeline import record_row
from collector.processing.decode import LogEvent
from collector.processing.normalize import event_time_ns, normalize_log

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "audit_record.v1.json").read_text())
VALIDATOR = jsonschema.validators.validator_for(SCHEMA)(SCHEMA)
RECEIVED_NS = 1_795_643_846_000_000_000
HARD_LIMIT_S = 10
INT64_MAX = 2**63 - 1

_COMMON = {
    "database": None,
    "suppress_health_check": (HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much),
    "print_blob": True,
}
settings.register_profile("ci", max_examples=120, derandomize=True, deadline=2000, **_COMMON)
settings.register_profile(
    "long", max_examples=2400, derandomize=False, deadline=5000, **{**_COMMON, "database": settings.default.database}
)
PROFILE_NAME = os.environ.get("HYPOTHESIS_PROFILE", "ci")
PROFILE = settings.get_profile(PROFILE_NAME if PROFILE_NAME in ("ci", "long") else "ci")


def examples(n: int) -> settings:
    """The fuzz profile with ``n`` examples (20x under ``long``), applied per test: the global default that other
    test modules use is left alone."""
    scale = 20 if PROFILE_NAME == "long" else 1
    return settings(PROFILE, max_examples=n * scale)


class Hang(Exception):
    """An example ran past the hard limit."""


@contextlib.contextmanager
def guarded(input_size: int, per_byte: int = 64, floor: int = 16 * 2**20) -> Iterator[None]:
    """Run one example under a hard time limit and check its Python heap peak stays under a bound.

    The bound is ``floor + per_byte * input_size``: decoding may expand its input (objects per value), but never by
    more than a constant factor.
    """

    def on_alarm(_sig: int, _frame: Any) -> None:
        raise Hang(f"example did not finish within {HARD_LIMIT_S}s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HARD_LIMIT_S)
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    bound = floor + per_byte * input_size
    assert peak <= bound, f"heap peak {peak} bytes for a {input_size}-byte input (bound {bound})"


def known_gap(error: jsonschema.ValidationError) -> str | None:
    """The reported, not yet fixed, normalizer/schema mismatch a validation error is, or None.

    Examples that only hit these are skipped (``assume``); each has a strict-xfail regression test in
    ``test_fuzz_known_bugs.py``. When one is fixed, that test passes unexpectedly and fails the run: then delete the
    matching rule here so the fuzzers cover the case again.
    """
    del error
    return None


def known_decode_gap(items: list[Any]) -> str | None:
    """The reported, not yet fixed, decoder bug decoded ``items`` show, or None (same protocol as :func:`known_gap`)."""
    del items
    return None


def check_records(records: list[dict[str, Any]], *, skip_known_gaps: bool = True) -> None:
    """The invariants of normalized records (see the module docstring)."""
    from hypothesis import assume

    for rec in records:
        errors = sorted(VALIDATOR.iter_errors(rec), key=lambda e: list(e.path))
        if skip_known_gaps and errors and all(known_gap(e) for e in errors):
            assume(False)
        assert not errors, f"record does not validate: {errors[0].message} at {list(errors[0].path)}"
        orjson.dumps(rec)


def normalize_all(events: list[LogEvent]) -> list[dict[str, Any]]:
    """Normalize like the pipeline does, checking each record's store row can be built and its time stored."""
    out: list[dict[str, Any]] = []
    for ev in events:
        t = event_time_ns(ev, RECEIVED_NS)
        for rec in normalize_log(ev, RECEIVED_NS, "http", "fuzz-identity"):
            row = record_row(rec, t, RECEIVED_NS // 1_000_000)
            assert -INT64_MAX <= row[1] <= INT64_MAX, f"time_ms {row[1]} does not fit a 64-bit column"
            out.append(rec)
    return out


def recorded_bodies() -> list[tuple[str, str, bytes]]:
    """Every recorded request body as ``(signal, media, body)`` (gzip bodies as the decoded protobuf)."""
    import gzip

    out = []
    for path in sorted((ROOT / "tests" / "fixtures" / "claude-code").glob("*/otlp/raw/*")):
        if path.name.endswith(".meta.json"):
            continue
        signal_name = path.name.split("-", 1)[1].split(".", 1)[0]
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        media = "json" if path.name.endswith(".json") else "protobuf"
        out.append((signal_name, media, data))
    return out
