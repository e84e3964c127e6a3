"""The plant tier's message format and shift rules, without engines."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from station.plant import wire
from station.plant.cli import main as plant_main
from station.plant.ingest import shift_function

GOOD = {
    "station": "s1",
    "seq": 7,
    "line": "l1",
    "product": "p",
    "t": 1.5e9,
    "outcome": "FAIL",
    "part_id": 3,
    "model_id": "m",
    "latency_ms": 4.5,
    "defects": ["scratch"],
    "images": ["images/" + "0" * 64 + ".jpg"],
}


def test_outbox_entry_round_trip_and_damage_is_a_clear_error():
    imgs = [b"\xff\xd8one", b"\xff\xd8two-longer"]
    meta, back = wire.unpack(wire.pack({"a": 1}, imgs))
    assert meta == {"a": 1} and back == imgs
    with pytest.raises(ValueError, match="bad magic"):
        wire.unpack(b"nope" + b"\0" * 20)
    with pytest.raises(ValueError, match="truncated"):
        wire.unpack(wire.pack({"a": 1}, imgs)[:14])


def test_result_message_round_trip_and_field_errors():
    m = wire.ResultMsg.from_dict(GOOD)
    assert wire.ResultMsg.from_json(m.to_json()) == m
    with pytest.raises(ValueError, match="lacks seq"):
        wire.ResultMsg.from_dict({k: v for k, v in GOOD.items() if k != "seq"})
    with pytest.raises(ValueError, match="outcome 'MAYBE'"):
        wire.ResultMsg.from_dict({**GOOD, "outcome": "MAYBE"})
    with pytest.raises(ValueError, match="wrong type"):
        wire.ResultMsg.from_dict({**GOOD, "seq": "seven"})
    with pytest.raises(ValueError, match="not JSON"):
        wire.ResultMsg.from_json(b"{")


def test_keys_ids_and_names():
    assert wire.image_key(b"x") == f"images/{hashlib.sha256(b'x').hexdigest()}.jpg"
    assert wire.msg_id("s1", 9) == "s1:9"
    assert wire.stream_name("plant") == "PLANT_RESULTS" and wire.results_subject("plant", "s1") == "plant.results.s1"


def test_shifts_follow_the_station_rules():
    shift = shift_function((("N", "22:00", "06:00"), ("D", "06:00", "14:00")), "UTC")
    at = lambda h, m=0: dt.datetime(2026, 3, 1, h, m, tzinfo=dt.UTC).timestamp()  # noqa: E731
    assert [shift(at(23)), shift(at(5, 59)), shift(at(6)), shift(at(15))] == ["N", "N", "D", "-"]


def test_bad_shift_option_names_the_format(capsys):
    with pytest.raises(SystemExit):
        plant_main(["ingest", "--dsn", "x", "--nats", "y", "--shifts", "A06:00"])
    assert "NAME=HH:MM-HH:MM" in capsys.readouterr().err
