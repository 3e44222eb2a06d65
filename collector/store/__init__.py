"""The durable embedded store: records are appended here before any client hears success."""

from collector.store.sqlite import AppendResult, AuditStore, RecordQuery, StorageError, iter_records

__all__ = ["AppendResult", "AuditStore", "RecordQuery", "StorageError", "iter_records"]
