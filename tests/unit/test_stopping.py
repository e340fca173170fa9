"""A stopping block leaves at once when the neighbour its stop waits on is gone, but only after a
grace that lets what the neighbour sent before it went be read."""

from __future__ import annotations

import time

from dni_dist.worker import stopping
from dni_dist.worker.stopping import Stopping


def test_a_stop_waiting_on_a_gone_neighbour_leaves_after_the_grace(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(stopping, "GONE_GRACE_S", 0.2)
    stop = Stopping(drain_timeout_s=60)
    stop.neighbour_gone(["activations in"], ended=False, pending=True)
    assert not stop.now, "no stop was requested: a restart under dni-launch is waited for"
    stop.request()
    assert stop.take_first()
    stop.neighbour_gone(["gradients out"], ended=False, pending=True)
    assert not stop.now and stop.gone_since is None, "the upstream edge is up: `end` can still come"
    stop.neighbour_gone(["activations in"], ended=False, pending=True)
    assert not stop.now, "within the grace"
    time.sleep(0.25)
    stop.neighbour_gone(["activations in"], ended=False, pending=True)
    assert stop.now


def test_after_end_only_a_gone_downstream_with_steps_still_waiting_matters(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(stopping, "GONE_GRACE_S", 0.0)
    stop = Stopping(drain_timeout_s=60)
    stop.request()
    stop.take_first()
    stop.neighbour_gone(["activations in"], ended=True, pending=True)
    assert not stop.now, "ended: the upstream neighbour is no longer needed"
    stop.neighbour_gone(["activations out"], ended=True, pending=False)
    assert not stop.now, "nothing waits for a target: the block finishes by itself"
    stop.neighbour_gone(["activations out"], ended=True, pending=True)
    assert stop.now
