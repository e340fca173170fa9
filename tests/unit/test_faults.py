"""Fault specs parse strictly (the error names what is wrong) and fire once, in the first attempt."""

from __future__ import annotations

import pytest

from dni_dist import ConfigError, config_from_dict
from dni_dist.faults import Fault, FaultError, due, parse


def test_a_spec_lists_faults_of_every_kind() -> None:
    got = parse("block=2,step=300,kind=kill; block=1, step=10, kind=delay, ms=200, seconds=5;block=3,step=0,kind=hang")
    assert got == (Fault(2, 300, "kill"), Fault(1, 10, "delay", 5.0, 200.0), Fault(3, 0, "hang"))
    assert parse("") == () and parse(" ; ") == ()
    assert got[1].is_link and not got[0].is_link
    assert parse("block=1,step=5,kind=drop") == (Fault(1, 5, "drop"),) and Fault(1, 5, "drop").is_link
    assert got[1].describe() == "delay for 5s of 200ms at step 10 of block 1"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("block=2,step=3", "missing kind"),
        ("block=2,step=3,kind=explode", "kind='explode'"),
        ("block=x,step=3,kind=kill", "block='x' is not a number"),
        ("block=-1,step=3,kind=kill", "integers >= 0"),
        ("block=1,step=3,kind=kill,colour=red", "unknown key(s) colour"),
        ("block=1,step=3,kind=partition", "needs seconds=T"),
        ("block=0,step=3,kind=partition,seconds=2", "block 0 has no inbound"),
        ("block=0,step=3,kind=drop", "block 0 has no inbound"),
        ("block=1,step=3,kind=drop,seconds=2", "apply to partition and delay only"),
        ("block=1,step=3,kind=delay,seconds=2", "needs ms=M"),
        ("block=1,step=3,kind=kill,seconds=2", "apply to partition and delay only"),
        ("block=1,step,kind=kill", "expected key=value"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, needle: str) -> None:
    with pytest.raises(FaultError) as e:
        parse(spec)
    assert needle in str(e.value)


def test_the_config_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"runtime\.inject_fault: .*kind="):
        config_from_dict({"runtime": {"inject_fault": "block=1,step=2,kind=nope"}})
    cfg = config_from_dict({"runtime": {"inject_fault": "block=1,step=2,kind=exit"}})
    assert parse(cfg.runtime.inject_fault) == (Fault(1, 2, "exit"),)


def test_a_fault_fires_at_its_step_in_the_first_attempt_only() -> None:
    faults = parse("block=2,step=5,kind=kill;block=1,step=5,kind=exit")
    assert due(faults, block=2, step=5, attempt=0) == [Fault(2, 5, "kill")]
    assert due(faults, block=2, step=4, attempt=0) == []
    assert due(faults, block=2, step=5, attempt=1) == []  # the restarted block does not kill itself again


@pytest.mark.parametrize(
    ("runtime", "field"),
    [
        ({"max_restarts": -1}, "runtime.max_restarts"),
        ({"keep_checkpoints": 0}, "runtime.keep_checkpoints"),
        ({"peer_timeout_s": 0.4}, "runtime.progress_every_s"),  # the heartbeat must beat the timeout
    ],
)
def test_runtime_fault_tolerance_fields_are_checked(runtime: dict, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_from_dict({"runtime": runtime})
