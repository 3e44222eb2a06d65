"""The one ``google.rpc.Status`` encoder both receivers use, checked against the official protobuf classes."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2, status_pb2

from collector.receivers import otlp_grpc
from collector.receivers.status import encode_status


@pytest.mark.parametrize(("code", "message"), [(3, "bad request: field 1"), (0, ""), (14, "überlastet ✓"), (300, "x")])
def test_code_and_message_decode_with_the_official_classes(code, message):
    st = status_pb2.Status.FromString(encode_status(code, message))
    assert (st.code, st.message, list(st.details)) == (code, message, [])


@pytest.mark.parametrize("retry_after", [5.0, 0.25, 1.5, 0.0])
def test_retry_info_detail(retry_after):
    st = status_pb2.Status.FromString(encode_status(8, "over the backlog limit", retry_after))
    (detail,) = st.details
    assert detail.type_url == "type.googleapis.com/google.rpc.RetryInfo"
    info = error_details_pb2.RetryInfo.FromString(detail.value)
    assert info.retry_delay.seconds + info.retry_delay.nanos / 1e9 == pytest.approx(retry_after)


def test_the_grpc_trailer_uses_the_same_encoder():
    assert otlp_grpc.status_details(8, "m", 2.0) == encode_status(8, "m", 2.0)
