"""The PostgreSQL delivery state, lease manager and usage history implement what callers use, method for method."""

from __future__ import annotations

import inspect

import pytest

from collector.delivery.leases import StaticAssignment
from collector.store import api
from collector.store.postgres.delivery import PgDeliveryState, PgLeaseManager
from collector.store.postgres.usage import PgUsageStore
from collector.store.usage import UsageStore
from tests.collector.store.test_api import _methods


@pytest.mark.parametrize(
    ("proto", "impl"),
    [
        (api.DeliveryStateStore, PgDeliveryState),
        (api.DeliveryAssignment, PgLeaseManager),
        (api.DeliveryAssignment, StaticAssignment),
        (UsageStore, PgUsageStore),
    ],
)
def test_implements_the_interface(proto: type, impl: type) -> None:
    methods = _methods(proto)
    if proto is UsageStore:  # the embedded history's file handling is its own
        for name in ("open", "open_existing"):
            methods.pop(name, None)
    for name, sig in methods.items():
        assert hasattr(impl, name), f"{impl.__name__} lacks {proto.__name__}.{name}"
        if isinstance(inspect.getattr_static(impl, name), property) or not sig.parameters:
            continue
        got = list(inspect.signature(getattr(impl, name)).parameters)
        want = list(sig.parameters)
        assert got[: len(want)] == want, f"{impl.__name__}.{name}{got} does not match {want}"
    if proto is api.DeliveryAssignment:
        assert isinstance(impl.dynamic, bool)  # type: ignore[attr-defined]
