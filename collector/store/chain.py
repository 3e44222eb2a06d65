"""The tamper-evidence hash chain of a store shard, written and verified in one place (every backend uses it).

Each record's link is SHA-256 over the previous link and the record's stored bytes; a shard's chain starts at
:func:`chain_genesis` (or, once retention removed its start, at the anchor the store kept: the last removed record's
``seq`` and link). :func:`verify_links` walks one shard's ``(seq, id, time_ms, body, link)`` rows in ``seq`` order and
names the first record whose link does not match its content and predecessor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

CHAIN_DOMAIN = b"ccbridge-chain-v1"


def chain_genesis(shard: int) -> bytes:
    """The link before a shard's first record."""
    return hashlib.sha256(CHAIN_DOMAIN + b"\x00genesis\x00" + str(shard).encode()).digest()


def chain_link(prev: bytes, body: bytes) -> bytes:
    """Tamper-evidence link of a record: SHA-256 over the previous link and the record's stored bytes."""
    return hashlib.sha256(prev + body).digest()


@dataclass(frozen=True)
class ChainBreak:
    """The first record of a shard whose chain link does not match its content and predecessor."""

    shard: int
    seq: int
    record_id: str
    time_ms: int
    reason: str


@dataclass
class ChainReport:
    shards: int = 0
    records: int = 0
    head: dict[int, tuple[int, str]] = field(default_factory=dict)
    broken: ChainBreak | None = None


ChainRow = tuple[int, str, int, bytes, "bytes | None"]


def verify_links(report: ChainReport, shard: int, anchor: tuple[int, bytes] | None, rows: Iterable[ChainRow]) -> bool:
    """Check one shard's rows (``seq`` order) into ``report``; False (with ``report.broken`` set) at the first break.

    ``anchor`` is ``(seq, link)`` of the last record retention removed, or None when the shard starts at genesis.
    """
    prev, prev_seq = (anchor[1], anchor[0]) if anchor is not None else (chain_genesis(shard), 0)
    report.shards += 1
    for seq, rid, t, body, link in rows:
        report.records += 1
        if link is None:
            reason = "record has no chain link (written by a version without tamper evidence)"
        elif seq != prev_seq + 1:
            reason = f"records {prev_seq + 1}..{seq - 1} are missing before this record"
        elif hashlib.sha256(prev + body).digest() != link:
            reason = "record content or its predecessor was modified"
        else:
            prev, prev_seq = link, seq
            continue
        report.broken = ChainBreak(shard, seq, rid, t, reason)
        return False
    report.head[shard] = (prev_seq, prev.hex())
    return True
