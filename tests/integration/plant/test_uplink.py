"""The station's uplink on real engines: images in S3 under their hash, results in JetStream with
``station:seq`` ids, the outbox deleted only after stored acks; offline: bounded, alarmed, counted,
drained oldest first on reconnect."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

from station.plant import wire
from station.plant.engines import free_port
from tests.fixtures_plant import Plant, SimStation, wait_until


async def _stream_messages(url: str, prefix: str) -> list[tuple[str, dict]]:
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(wire.stream_name(prefix))
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            m = await js.get_msg(wire.stream_name(prefix), seq)
            assert m.headers is not None and m.data is not None
            out.append((m.headers["Nats-Msg-Id"], json.loads(m.data)))
        return out
    finally:
        await nc.close()


async def _make_stream(url: str, prefix: str) -> None:
    import nats

    nc = await nats.connect(url)
    try:
        await wire.ensure_stream(nc.jetstream(), prefix)
    finally:
        await nc.close()


def test_uplink_sends_images_and_results_once_and_empties_the_outbox(plant: Plant):
    asyncio.run(_make_stream(plant.engines.nats.url, plant.prefix))
    st = SimStation("st-a", plant.link(outbox_path=plant.root / "a.db", batch=16)).start()
    try:
        st.send(40)
        wait_until(
            lambda: st.uplink.published == 40 and st.uplink.outbox_pending == 0, 30, "40 results stored by JetStream"
        )
        assert st.uplink.connected and st.uplink.dropped == 0
    finally:
        st.stop()
    msgs = asyncio.run(_stream_messages(plant.engines.nats.url, plant.prefix))
    assert [mid for mid, _ in msgs] == [f"st-a:{i}" for i in range(1, 41)], (
        "one message per part, oldest first, id station:seq"
    )
    assert [m["part_id"] for _, m in msgs] == list(range(1, 41))
    s3 = wire.s3_client(plant.engines.s3.endpoint, "k", "s")
    for _, m in msgs[:5]:
        (key,) = m["images"]
        body = s3.get_object(Bucket=plant.bucket, Key=key)["Body"].read()
        assert key == f"images/{hashlib.sha256(body).hexdigest()}.jpg", "the key is the content hash of the stored JPEG"
        assert body[:2] == b"\xff\xd8"


def test_offline_outbox_is_bounded_alarmed_counted_and_drains_oldest_first(plant: Plant, tmp_path):
    from station.plant.engines import Nats

    nats_srv = Nats(tmp_path / "late-nats", port=free_port())  # not started yet: the plant is unreachable
    link = plant.link(nats_url=nats_srv.url, outbox_path=tmp_path / "o.db", outbox_max=30, alarm_fill=0.5)
    st = SimStation("st-off", link).start()
    try:
        st.send(20)
        wait_until(lambda: st.uplink.outbox_pending == 20, 10, "20 results stored offline")
        # raised once, when the fill crosses alarm_fill (15 of 30); how many of the 20 were in by then is timing
        fills = [int(m.group(1)) for _, state, msg in st.alarms if (m := re.search(r"outbox (\d+)/30 results", msg))]
        assert len(fills) == 1 and 15 <= fills[0] <= 20, st.alarms
        st.send(15)  # 35 > 30: the 5 oldest go, counted
        wait_until(lambda: st.uplink.dropped == 5, 10, "5 dropped by the overflow policy")
        assert st.uplink.outbox_pending == 30
        assert any(state == "alarm" and "5 results dropped (drop_oldest)" in msg for _, state, msg in st.alarms), (
            st.alarms
        )
        assert st.uplink.health()["state"] == "alarm"
        nats_srv.start()
        asyncio.run(_make_stream(nats_srv.url, plant.prefix))
        wait_until(lambda: st.uplink.outbox_pending == 0, 30, "the outbox drained on reconnect")
        assert st.uplink.published == 30
        assert any(state == "ok" and "drained" in msg for _, state, msg in st.alarms)
        ids = [mid for mid, _ in asyncio.run(_stream_messages(nats_srv.url, plant.prefix))]
        assert ids == [f"st-off:{i}" for i in range(6, 36)], "oldest first; the 5 dropped are the oldest"
    finally:
        st.stop()
        nats_srv.stop()


def test_drop_newest_policy_keeps_the_oldest(plant: Plant, tmp_path):
    link = plant.link(
        nats_url=f"nats://127.0.0.1:{free_port()}", outbox_path=tmp_path / "n.db", outbox_max=10, overflow="drop_newest"
    )
    st = SimStation("st-new", link).start()
    try:
        st.send(14)
        wait_until(lambda: st.uplink.dropped == 4, 10, "4 refused")
        assert st.uplink.outbox_pending == 10
    finally:
        st.stop()
    from station.store.outbox import Outbox

    ob = Outbox(tmp_path / "n.db", 10)
    metas = [wire.unpack(e.payload)[0] for e in ob.after(0, 100)]
    ob.close()
    assert [m["part_id"] for m in metas] == list(range(1, 11)), "the stored ones are the first 10 parts"
