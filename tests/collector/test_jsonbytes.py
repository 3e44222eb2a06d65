"""Kept JSON bytes are exactly as large as their text, and the same text orjson writes."""

from __future__ import annotations

import tracemalloc

import orjson
import pytest

from collector.jsonbytes import dumps_kept


@pytest.mark.parametrize("value", [{"a": 1}, {"k": "v" * 3000}, [{"x": "é" * 500, "n": 2**40}] * 20, "text", None])
def test_same_bytes_as_orjson(value: object) -> None:
    assert dumps_kept(value) == orjson.dumps(value)
    assert dumps_kept(value, orjson.OPT_SORT_KEYS) == orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def test_allocation_is_the_size_of_the_text() -> None:
    record = {"kind": "tool_result", "attributes": {f"k{i}": "v" * 60 for i in range(40)}}
    size = len(orjson.dumps(record))
    tracemalloc.start()
    try:
        kept = [dumps_kept(record) for _ in range(200)]
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(kept) == 200
    per_value = current / 200
    assert per_value < size * 1.2 + 64, f"{per_value:.0f} bytes held per {size}-byte value"
