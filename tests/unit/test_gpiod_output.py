"""The gpiod output driver, on the registered in-memory chip backend ("fake": no GPIO on this machine).

The driver code is the same for the real libgpiod bindings; only the chip underneath differs
(see station/actuate/gpio_fake.py and docs/gpio.md for running it on a Jetson).
"""

from __future__ import annotations

import itertools
import time

import pytest

from station.actuate.base import OUTPUTS, OutputError
from station.actuate.gpio_fake import FakeGpiod
from station.actuate.gpiod_output import GPIO_APIS, GpiodOutput
from station.actuate.scheduler import RejectScheduler
from station.config import CalibrationConfig, GpiodOutputConfig, RejectConfig, RulesConfig, parse_config
from station.contracts import Outcome, PartResult, Trigger, Verdict
from station.counters import Counters
from station.decide import Decider

_paths = itertools.count()


@pytest.fixture
def chip():
    """A fresh fake chip with Jetson-style line names."""
    path = f"/dev/gpiochip-fake{next(_paths)}"
    return FakeGpiod.add_chip(path, num_lines=32, names={"PQ.05": 5, "PH.00": 8})


def make(chip, **kw) -> GpiodOutput:
    cfg = GpiodOutputConfig(chip=chip.path, backend="fake", **kw)
    out = OUTPUTS.create(cfg)
    assert isinstance(out, GpiodOutput)
    return out


def test_fake_backend_is_a_registered_gpio_api():
    assert {"libgpiod", "fake"} <= set(GPIO_APIS.types())
    cfg = parse_config({"reject": {"output": {"type": "gpiod", "backend": "fake", "lines": {"reject": "PQ.05"}}}})
    assert cfg.reject.output.type == "gpiod"


def test_lines_by_name_and_offset_drive_the_pins(chip):
    out = make(chip, lines={"reject": "PQ.05", "ready": 3})
    out.open()
    assert out.offsets == {"reject": 5, "ready": 3}
    assert chip.consumers == {5: "inspection-station", 3: "inspection-station"}
    assert chip.level(5) == 0 and chip.level(3) == 0, "requested inactive"
    out.set("reject", True)
    assert chip.level(5) == 1 and chip.level(3) == 0
    out.set("ready", True)
    out.set("reject", False)
    assert (chip.level(5), chip.level(3)) == (0, 1)
    assert [e.level for e in chip.edges_of(5)] == [0, 1, 0]
    assert out.health()["state"] == "ok"
    out.close()
    assert chip.level(3) == 0, "close drives every line inactive"
    assert chip.consumers == {}, "and releases them"


def test_active_low_inverts_the_pin(chip):
    out = make(chip, lines={"reject": 8}, active_low=True)
    out.open()
    assert chip.level(8) == 1, "inactive = high on an active-low line"
    out.set("reject", True)
    assert chip.level(8) == 0
    out.close()
    assert chip.level(8) == 1


def test_bad_config_is_a_clear_error(chip):
    with pytest.raises(OutputError, match="not found.*reject.output.chip"):
        GpiodOutput(GpiodOutputConfig(chip="/dev/gpiochip-nope", backend="fake")).open()
    with pytest.raises(OutputError, match=r"reject.output.lines.reject: 'PZ.99' is not a line"):
        make(chip, lines={"reject": "PZ.99"}).open()
    with pytest.raises(OutputError, match="is not a line"):
        make(chip, lines={"reject": 99}).open()
    holder = make(chip, lines={"reject": 5})
    holder.open()
    with pytest.raises(OutputError, match="held by another program"):
        make(chip, lines={"other": "PQ.05"}).open()
    with pytest.raises(OutputError, match="not mapped"):
        holder.set("horn", True)
    holder.close()


def test_real_libgpiod_backend_reports_a_missing_chip():
    """On this machine (no GPIO) the real bindings must fail with the fix in the message, not a traceback."""
    out = GpiodOutput(GpiodOutputConfig(chip="/dev/gpiochip-does-not-exist", backend="libgpiod"))
    with pytest.raises(OutputError, match="gpiochip-does-not-exist not found|pip install"):
        out.open()


def test_scheduler_pulses_a_gpio_line(chip):
    out = make(chip, lines={"reject": "PQ.05"})
    out.open()
    cfg = RejectConfig(travel_ms=80, safety_margin_ms=30, pulse_ms=15)
    sched = RejectScheduler(cfg, out, Decider(RulesConfig(), CalibrationConfig(), "c"), Counters(), lambda r: None)
    sched.start()
    trigs = [Trigger(i, i, time.monotonic_ns()) for i in (1, 2)]
    for t in trigs:
        sched.admit(t)
    for t, o in zip(trigs, (Outcome.FAIL, Outcome.PASS)):
        sched.submit(
            PartResult(t, Verdict(t.part_id, o, (), (), "m", "c", "cal", {}, t.t_trigger_ns, time.monotonic_ns()))
        )
    sched.stop(drain_s=1.0)
    out.close()
    edges = chip.edges_of(5)
    assert [e.level for e in edges] == [0, 1, 0]
    rise, fall = edges[1].t_ns, edges[2].t_ns
    assert abs((rise - trigs[0].t_trigger_ns) / 1e6 - 80) < 10
    assert abs((fall - rise) / 1e6 - 15) < 10
