"""The generic ``http`` destination: POST batches of audit records as JSON to any URL.

For Logstash, Cribl, Vector, webhooks and the like. ``format: ndjson`` sends one record per line
(``application/x-ndjson``), ``format: json_array`` one JSON array (``application/json``). Batches are split so no
request exceeds ``max_request_bytes``. 2xx is success; 408, 429 and 5xx are retried (honouring ``Retry-After``);
other 4xx are permanent and go to dead letters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp

from collector.configtypes import ByteSize, ConfigError, Duration, Secret
from collector.delivery.outcome import Outcome
from collector.delivery.settings import DestinationSettings
from exporters.base import DeliveryRecord, Exporter, Payload, gzip_compress
from exporters.httpclient import TLSClientConfig, default_outcome, new_session, post
from exporters.ocsf import ocsf_body


@dataclass(frozen=True)
class HttpExporterConfig(DestinationSettings):
    url: str = ""
    format: Literal["ndjson", "json_array"] = "ndjson"
    headers: dict[str, Secret] = field(default_factory=dict)
    compression: Literal["none", "gzip"] = "none"
    timeout: Duration = Duration(30.0)
    max_request_bytes: ByteSize = ByteSize(8 * 1024 * 1024)
    tls: TLSClientConfig = field(default_factory=TLSClientConfig)

    def validate(self, path: str) -> None:
        super().validate(path)
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{path}.url: must be an http:// or https:// URL (got {self.url!r})")
        if self.max_request_bytes < 1024:
            raise ConfigError(f"{path}.max_request_bytes: must be >= 1KiB")


def split_by_size(records: Sequence[DeliveryRecord], limit: int, overhead: int = 2) -> list[list[DeliveryRecord]]:
    """Consecutive groups whose bodies (plus one separator byte each) fit ``limit``; an oversize record goes alone."""
    groups: list[list[DeliveryRecord]] = []
    cur: list[DeliveryRecord] = []
    size = overhead
    for r in records:
        n = len(r.body) + 1
        if cur and size + n > limit:
            groups.append(cur)
            cur, size = [], overhead
        cur.append(r)
        size += n
    if cur:
        groups.append(cur)
    return groups


class HttpExporter(Exporter):
    type_name: ClassVar[str] = "http"
    config_class: ClassVar[type[DestinationSettings]] = HttpExporterConfig

    def __init__(self, name: str, config: HttpExporterConfig) -> None:
        super().__init__(name, config)
        self.cfg = config
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = new_session(self.cfg.tls, self.cfg.timeout, limit=max(4, self.cfg.concurrency * 2))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def encode(self, records: Sequence[DeliveryRecord]) -> list[Payload]:
        cfg = self.cfg
        out = []
        originals = {id(r): r for r in records}
        if cfg.schema == "ocsf":
            shown = [DeliveryRecord(r.seq, r.id, ocsf_body(r.record), r.time_ms) for r in records]
            originals = {id(s): r for s, r in zip(shown, records, strict=True)}
            records = shown
        for group in split_by_size(records, cfg.max_request_bytes):
            if cfg.format == "ndjson":
                data = b"\n".join(r.body for r in group) + b"\n"
                ctype = "application/x-ndjson"
            else:
                data = b"[" + b",".join(r.body for r in group) + b"]"
                ctype = "application/json"
            headers = {"Content-Type": ctype, **{k: v.get() for k, v in cfg.headers.items()}}
            if cfg.compression == "gzip":
                data = gzip_compress(data)
                headers["Content-Encoding"] = "gzip"
            out.append(Payload([originals[id(r)] for r in group], data, headers))
        return out

    async def push(self, payload: Payload) -> Outcome:
        if self.session is None:
            await self.start()
        assert self.session is not None
        return default_outcome(await post(self.session, self.cfg.url, payload.data, payload.headers))
