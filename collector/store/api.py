"""The storage interface: what the rest of ccbridge may ask of the store, whatever backend keeps the data.

Only ``collector/store/`` knows tables, files and the stored bytes' layout. Everything else gets a backend object
from :mod:`collector.store` (:func:`~collector.store.open_store` for the writer of one shard,
:func:`~collector.store.open_reader` for reading a data directory, :func:`~collector.store.open_usage_history` for the
Analytics API history) and talks to it through these protocols. The embedded SQLite backend implements them in
:mod:`collector.store.sqlite` (writer), :mod:`collector.store.reader` (reads), :mod:`collector.store.delivery_state`
(cursors, dead letters) and :mod:`collector.store.usage` (usage history); a second backend (PostgreSQL) is one more
set of classes implementing the same protocols, chosen in the factories.

Terms: a *shard* is one writer's log (one per worker); ``seq`` numbers a shard's records (and, separately, its metric
points) in append order and is what cursors point at. Record, metric point and span bodies are the JSON bytes the
pipeline produced; readers get them back unchanged (``iter_records`` adds the ``chain`` link).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# Rows the pipeline appends (see collector.pipeline): the store decides how they are kept.
RecordRow = tuple[str, int, str, str | None, str | None, str | None, int, bytes]
"""(id, time_ms, kind, user, user_id, session, received_ms, body)"""
MetricRow = tuple[int, str, str, bytes]
"""(time_ms, key, name, body)"""
SpanRow = tuple[str, str, int, str, bytes]
"""(trace_id, span_id, time_ms, name, body)"""


class StorageError(Exception):
    """The store cannot serve the request right now (disk full, read-only, I/O error, locked, missing). Retry later.

    ``reason`` is short and machine-readable (``disk_full``, ``read_only``, ``locked``, ``io_error``, ``missing``,
    ``not_ready``, ``error``); ``detail`` is for people.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"storage unavailable ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class AppendResult:
    """What one append did: rows offered, new (non-duplicate) records stored, and how many of those arrived with
    the id of a different stored record (stored under a new id and flagged ``id_collision``)."""

    records: int = 0
    new_records: int = 0
    metric_points: int = 0
    spans: int = 0
    collisions: int = 0


@dataclass(frozen=True)
class RecordQuery:
    """Filters for :meth:`StoreReader.iter_records`; times are Unix milliseconds, bounds inclusive/exclusive."""

    since_ms: int | None = None
    until_ms: int | None = None
    kinds: tuple[str, ...] = ()
    user: str | None = None
    session: str | None = None


class AuditLog(Protocol):
    """The writer of one shard: group-committed appends (a returned append is durable), chain head, retention."""

    shard: int
    chain_head: bytes
    chain_seq: int
    on_commit: Callable[[], None] | None
    on_commit_stats: Callable[[int, float], None] | None
    last_error: StorageError | None

    def open(self) -> AuditLog: ...
    def close(self) -> None: ...
    @property
    def healthy(self) -> bool: ...
    async def append(
        self, records: Sequence[RecordRow], metrics: Sequence[MetricRow] = (), spans: Sequence[SpanRow] = ()
    ) -> AppendResult: ...
    def append_sync(
        self, records: Sequence[RecordRow], metrics: Sequence[MetricRow] = (), spans: Sequence[SpanRow] = ()
    ) -> AppendResult: ...
    async def delete_expired(self, cutoff_ms: int, max_seq: int | None, batch: int = 10_000) -> int:
        """Retention: delete the oldest records received before ``cutoff_ms`` with ``seq <= max_seq``."""
        ...


class ShardLog(Protocol):
    """Reads of one shard by ``seq`` (delivery, metric tailers); safe from any thread, one call at a time.

    ``*_after`` calls return rows with ``seq`` greater than the given one, in ``seq`` order.
    """

    def close(self) -> None: ...
    def read_after(
        self, seq: int, max_records: int, max_bytes: int, make: Callable[[int, str, bytes, int], T]
    ) -> tuple[list[T], int]:
        """Up to ``max_records`` records within ``max_bytes`` (at least one) as ``make(seq, id, body, time_ms)``,
        and the first one's arrival time (ms)."""
        ...

    def last_seq(self) -> int: ...
    def oldest_received_after(self, seq: int) -> int | None: ...
    def average_size(self, sample: int = 200) -> float: ...
    def end_positions(self) -> tuple[int, int]:
        """The last ``seq`` of (records, metric points): where a reader of only new rows starts."""
        ...

    def first_position(self, table: str, since_ms: int) -> int:
        """``table`` is ``records`` or ``metric_points``: the position before its first row at or after
        ``since_ms`` (or its end when there is none)."""
        ...

    def records_after(self, seq: int, limit: int, min_time_ms: int | None = None) -> list[tuple[int, int, str, Any]]:
        """``(seq, time_ms, kind, body)``; ``body`` is None for records older than ``min_time_ms``."""
        ...

    def points_after(self, seq: int, limit: int) -> list[tuple[int, Any]]:
        """``(seq, body)`` of metric points."""
        ...

    def records_between(self, since_ms: int, upto_seq: int) -> Iterator[tuple[int, Any]]:
        """``(time_ms, body)`` of records at or after ``since_ms`` with ``seq <= upto_seq``, in ``seq`` order
        (streamed in bounded memory)."""
        ...

    def points_between(
        self, since_ms: int, upto_seq: int, *, cumulative_only: bool = False, newest: int | None = None
    ) -> Iterator[Any]:
        """Bodies of metric points at or after ``since_ms`` with ``seq <= upto_seq`` in ``seq`` order (only
        cumulative ones if asked; only the ``newest`` N if given)."""
        ...


class ShardView(Protocol):
    """Query-shaped reads of one shard (compliance exports, reports), open for the caller's duration."""

    def close(self) -> None: ...
    def sessions_with(self, kind: str, since_ms: int, until_ms: int, user: str | None) -> Iterator[str | None]:
        """Distinct sessions with a record of ``kind`` in the window (by user if given), in order, None first."""
        ...

    def session_records(
        self, session: str | None, windows: Sequence[tuple[str, int, int]]
    ) -> Iterator[tuple[int, str, bytes, bytes | None]]:
        """``(time_ms, id, body, chain link)`` of ``session``'s records matching any ``(kind, since, until)``."""
        ...

    def spans(self, trace_id: str, name: str) -> Iterator[bytes]: ...
    def metric_points_named(self, names: Sequence[str], since_ms: int, until_ms: int) -> list[tuple[int, str, bytes]]:
        """``(time_ms, key, body)`` of the named metric points in the window."""
        ...

    def session_starts(self, since_ms: int, until_ms: int) -> Iterator[tuple[str, int, str | None, str | None]]:
        """Per session in the window: ``(session, first time_ms, email, user_id)``."""
        ...


class DeliveryStateStore(Protocol):
    """Per-shard delivery state: destination cursors and dead letters (see :mod:`collector.store.delivery_state`)."""

    def close(self) -> None: ...
    def cursor(self, destination: str, default: int = 0) -> int: ...
    def set_cursor(self, destination: str, seq: int) -> None: ...
    def cursors(self) -> dict[str, int]: ...
    def dead_letter(
        self,
        destination: str,
        records: Sequence[tuple[int, str, int, bytes]],
        reason: str,
        status: int | None,
        attempts: int,
        advance_to: int | None = None,
    ) -> None:
        """Store ``(seq, id, time_ms, body)`` rows as dead letters (and optionally advance the cursor), atomically."""
        ...

    def dead_letter_count(self, destination: str | None = None) -> int: ...
    def dead_letters(self, destination: str | None = None, limit: int | None = None, after: int = 0) -> list[Any]:
        """Dead letters in id order (of ``destination`` only, when given), those with an id above ``after``."""
        ...

    def delete_dead_letters(self, dlq_ids: Sequence[int]) -> None: ...
    def fail_again(self, dlq_ids: Sequence[int], reason: str, status: int | None) -> None:
        """Entries a replay sent and the destination refused again: new reason and time, one more attempt."""
        ...

    def dead_letter_groups(self, destination: str | None = None) -> list[Any]:
        """Dead letters grouped by destination, batch and reason, oldest group first."""
        ...

    def purge_dead_letters(self, destination: str | None = None, failed_before_ms: int | None = None) -> list[Any]:
        """Delete matching dead letters; returns what was deleted, grouped as :meth:`dead_letter_groups`."""
        ...


class StoreReader(Protocol):
    """Everything that reads a data directory: shards, record queries, chain verification, delivery state."""

    def shards(self) -> list[int]:
        """Shards that exist, in order."""
        ...

    def has_shard(self, shard: int) -> bool: ...
    def shard_log(self, shard: int) -> ShardLog: ...
    def shard_view(self, shard: int) -> ShardView: ...
    def iter_records(self, q: RecordQuery, batch_size: int = 1000) -> Iterator[bytes]:
        """Stored records (JSON with their ``chain`` link) in time order across shards, each once."""
        ...

    def verify_chain(self) -> Any:
        """A :class:`~collector.store.chain.ChainReport` over every shard."""
        ...

    def delivery_state(self, shard: int) -> DeliveryStateStore: ...
    def delivery_state_shards(self) -> list[int]:
        """Shards that have delivery state (cursors or dead letters)."""
        ...
