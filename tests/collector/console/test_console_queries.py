"""The console's store queries: counts from the hourly tally equal counts straight from the records."""

from __future__ import annotations

import random
from pathlib import Path

from collector.compliance.approvals import ApprovalFilter, store_rows
from collector.store import trail as queries
from tests.collector.console.console_support import T0, session_records, write_store


def brute(data_dir: Path, flt: ApprovalFilter) -> queries.Counts:
    rows = list(store_rows(data_dir, flt))
    return queries.Counts(
        decisions=len(rows),
        rejected=sum(r["decision"] == "reject" for r in rows),
        manual=sum(r["approval_mode"] == "manual" for r in rows),
        automatic=sum(r["approval_mode"] == "automatic" for r in rows),
        hook=sum(r["approval_mode"] == "hook" for r in rows),
    )


def calls(rng: random.Random, n: int) -> list[dict[str, str]]:
    out = []
    for i in range(n):
        source = rng.choice(["config", "hook", "user_reject", "user_temporary"])
        out.append(
            {
                "name": "Bash",
                "decision": "reject" if source == "user_reject" else "accept",
                "source": source,
                "command": f"c{i}",
            }
        )
    return out


def test_hourly_tally_counts_equal_the_records_and_follow_new_ones(tmp_path):
    rng = random.Random(3)
    d = tmp_path / "d"
    # sessions spread over ~10 hours, decisions 1 s apart
    for k in range(12):
        write_store(d, session_records(f"s{k}", f"u{k % 3}@example.com", T0 + k * 3_000_000, calls(rng, 20)))
    ranges = [
        (T0 - 1, T0 + 40_000_000),
        (T0 + 1_234_567, T0 + 20_000_000),
        (T0 + 3_600_000, T0 + 7_200_000),
        (T0 + 10, T0 + 3_599_999),
    ]
    for since, until in ranges:
        for extra in ({}, {"decision": "reject"}, {"mode": "hook"}, {"user": "u1@example.com"}):
            flt = ApprovalFilter(since, until, **extra)
            assert queries.counts(d, flt) == brute(d, flt), (since, until, extra)
    # new decisions (also in hours already tallied) are counted on the next view
    write_store(d, session_records("late", "u9@example.com", T0 + 3_700_000, calls(rng, 30)))
    flt = ApprovalFilter(T0 - 1, T0 + 40_000_000)
    assert queries.counts(d, flt) == brute(d, flt)
    assert queries.counts(d, flt).decisions == 12 * 20 + 30
