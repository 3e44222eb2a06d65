import asyncio, time
import pytest
from tests.fakes.http_sink import HttpSink
from tests.collector.delivery.delivery_support import *

@pytest.mark.parametrize("i", range(3))
async def test_subproc(spawn_bridge, i):
    async with HttpSink() as sink:
        bp = await asyncio.to_thread(spawn_bridge, overrides={"exporters": {"http/x": http_destination(sink.url)}})
        tr = Traffic(1)
        async with LoadClients(bp.http_url, bp.grpc_target, tr, pause=0.05) as lc:
            await asyncio.sleep(3)
        st = lc.stats
        t1 = time.monotonic()
        try:
            await sink.wait_for_ids(st.accepted, 8)
        except TimeoutError as e:
            print(e)
        print("accepted", len(st.accepted), "got", len(sink.ids() & st.accepted), "drain", time.monotonic() - t1, "crashes", bp.output().count("crashed"))
