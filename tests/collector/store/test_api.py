"""The embedded backend implements the storage protocols of ``collector.store.api`` method for method.

A second backend (PostgreSQL) is checked the same way: every public method of a protocol must exist on the
implementation with the same parameter names, so callers written against the protocol work with either.
"""

from __future__ import annotations

import inspect

import pytest

from collector.store import api, open_reader, open_store, open_usage_history
from collector.store.delivery_state import DeliveryState
from collector.store.reader import ShardQuery, ShardReader, SqliteStoreReader
from collector.store.sqlite import AuditStore


def _methods(proto: type) -> dict[str, inspect.Signature]:
    out = {}
    for name, member in vars(proto).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            out[name] = inspect.Signature()
        elif callable(member):
            out[name] = inspect.signature(member)
    return out


@pytest.mark.parametrize(
    ("proto", "impl"),
    [
        (api.AuditLog, AuditStore),
        (api.StoreReader, SqliteStoreReader),
        (api.ShardLog, ShardReader),
        (api.ShardView, ShardQuery),
        (api.DeliveryStateStore, DeliveryState),
    ],
)
def test_sqlite_backend_implements_the_protocol(proto: type, impl: type) -> None:
    for name, sig in _methods(proto).items():
        assert hasattr(impl, name), f"{impl.__name__} lacks {proto.__name__}.{name}"
        member = getattr(impl, name)
        if isinstance(inspect.getattr_static(impl, name), property) or not sig.parameters:
            continue
        got = list(inspect.signature(member).parameters)
        want = list(sig.parameters)
        assert got[: len(want)] == want, f"{impl.__name__}.{name}{got} does not match the protocol's {want}"


def test_factories_return_the_embedded_backend(tmp_path) -> None:
    from collector.config import StorageConfig

    store = open_store(StorageConfig(directory=str(tmp_path), writer="thread"), shard=3)
    assert isinstance(store, AuditStore) and store.shard == 3 and store.writer == "thread"
    assert isinstance(open_reader(tmp_path), SqliteStoreReader)
    history = open_usage_history(tmp_path)
    history.close()
