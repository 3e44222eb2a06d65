"""A fast counting sink for end-to-end benchmarks: accepts NDJSON / JSON-array POSTs, counts records.

``python bench/sink.py --port N``; ``GET /stats`` returns ``{"records": n, "requests": m, "first": t0, "last": t1}``.
"""

from __future__ import annotations

import argparse
import gzip
import time

from aiohttp import web

STATE = {"records": 0, "requests": 0, "first": 0.0, "last": 0.0}


async def ingest(request: web.Request) -> web.Response:
    body = await request.read()
    if request.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    n = body.count(b"\n") if not body.startswith(b"[") else body.count(b'"schema_version"')
    now = time.time()
    if not STATE["first"]:
        STATE["first"] = now
    STATE["last"] = now
    STATE["records"] += n
    STATE["requests"] += 1
    return web.Response(status=200)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(STATE)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/ingest", ingest)
    app.router.add_get("/stats", stats)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
