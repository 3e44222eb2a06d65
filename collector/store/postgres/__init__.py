"""PostgreSQL storage backend (``storage.backend: postgresql``): schema migrations and connection settings.

The record, delivery and chain operations of the backend build on the storage interface of ``collector/store``;
until they are in place a bridge configured for PostgreSQL refuses to start (:func:`require_backend_available`)
rather than pretend to store anything. What is in place: the schema and its versioned migrations
(:mod:`~collector.store.postgres.migrations`), connecting from the settings with redacted one-line errors and the
bounded wait at start, plus what ``ccbridge db migrate|status`` run (:mod:`~collector.store.postgres.connection`),
and retention (:mod:`~collector.store.postgres.retention`). Nothing here imports the driver at module load: it is
an optional extra (``pip install 'ccbridge[postgresql]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from collector.configtypes import ConfigError

if TYPE_CHECKING:
    from collector.config import StorageConfig

__all__ = ["BackendUnavailable", "require_backend_available"]

#: Backends ``ccbridge run`` can serve with in this version.
RUNNABLE_BACKENDS = frozenset({"sqlite"})


class BackendUnavailable(ConfigError):
    """The configured storage backend cannot run in this version (a one-line message naming the key)."""


def require_backend_available(storage: StorageConfig, path: str = "storage.backend") -> None:
    """Refuse to start a bridge on a backend this version cannot serve with, in one line naming the key."""
    if storage.backend in RUNNABLE_BACKENDS:
        return
    raise BackendUnavailable(
        f"{path}: the PostgreSQL storage backend is not available in this version of ccbridge "
        f"(its schema can be prepared, but records cannot be stored in it yet); set {path}: sqlite"
    )
