"""The credit window of an sg block: block (wait), drop-oldest (never wait), and block with a
target timeout (wait, then give up on a target that is not coming). Admission is socket-free,
so the policy is tested on a real Block without any process or port."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from dni_dist import RuntimeConfig, config_from_dict
from dni_dist.block import Block
from dni_dist.stage_stats import LagRecord
from dni_dist.topology import Topology, assign_blocks
from dni_dist.worker.admission import Admission

X, Y = torch.rand(4, 784), F.one_hot(torch.arange(4) % 10, 10).float()


def block0(method: str = "sg") -> Block:
    cfg = config_from_dict({"model": {"depth": 2, "width": 8}, "split": {"placement": "even", "stages": 2},
                            "credit": {"method": method}, "data": {"name": "mnist", "subset": True}})  # fmt: skip
    topo = Topology.from_config(cfg, input_dim=784, num_classes=10)
    return Block(topo, topo.build_stages(cfg, input_dim=784, num_classes=10)[:1], first=0)


def fill(block: Block) -> None:
    for step in range(2):
        block.feed(step, X, Y)
    assert block.inflight() == 2


def test_block_policy_waits_when_the_window_is_full() -> None:
    block, adm = block0(), Admission(RuntimeConfig(max_inflight=2), blocks=2)
    fill(block)
    assert not adm.credit_ok(block) and block.inflight() == 2 and not adm.dropped
    assert adm.why_not(block, next_step=2, end_step=9, send_backlog=0, hwm=4) == "credit"


def test_drop_oldest_forgets_the_oldest_step_at_once() -> None:
    block, adm = block0(), Admission(RuntimeConfig(max_inflight=2, overflow="drop-oldest"), blocks=2)
    fill(block)
    assert adm.credit_ok(block) and adm.dropped["pending"] == 1
    assert list(block.stages[0].pending) == [1]
    assert adm.stale_target(0) and adm.dropped["stale_target"] == 1  # its late target is stale, not an error
    assert not adm.stale_target(0)


def test_the_auto_window_covers_the_links_round_trip_and_no_more() -> None:
    """A link whose fastest round trip is 9.5 steps long needs 11 steps in flight to never wait;
    queueing below (slower round trips) does not widen it, and max_window caps it."""
    block = block0()
    fill(block)
    fixed = Admission(RuntimeConfig(max_inflight=2, window="fixed"), blocks=2)
    auto = Admission(RuntimeConfig(max_inflight=2, window="auto"), blocks=2)
    capped = Admission(RuntimeConfig(max_inflight=2, window="auto", max_window=6), blocks=2)
    assert auto.window(block) == 2  # nothing measured yet: max_inflight
    lags = block.stages[0].stats.lags
    for step, seconds in enumerate((0.5, 0.095, 0.3, 0.2)):  # the first is slow start-up, then queueing
        lags.append(LagRecord(step, 3, seconds))
    for adm in (fixed, auto, capped):
        for step in range(5):
            adm.forwarded(step, 0.01)
    assert (fixed.window(block), auto.window(block), capped.window(block)) == (2, 11, 6)
    assert auto.credit_ok(block) and not fixed.credit_ok(block)  # 2 in flight: room only in the auto window
    lags.append(LagRecord(9, 1, 0.001))  # a fast link: never below max_inflight
    assert auto.window(block) == 2


def test_target_timeout_waits_then_gives_up_on_a_late_target() -> None:
    block, adm = block0(), Admission(RuntimeConfig(max_inflight=2, target_timeout_s=0.2), blocks=2)
    fill(block)
    assert not adm.credit_ok(block)  # not late yet: wait like the block policy
    time.sleep(0.25)
    assert adm.credit_ok(block) and adm.dropped["timeout"] == 1
    assert list(block.stages[0].pending) == [1]


def test_a_locked_stage_gives_up_on_a_lost_gradient_after_the_target_timeout() -> None:
    block, adm = block0("bp"), Admission(RuntimeConfig(target_timeout_s=0.2), blocks=2)
    block.feed(0, X, Y)  # bp: locked until block 1's gradient of step 0 arrives
    assert adm.why_not(block, next_step=1, end_step=9, send_backlog=0, hwm=4) == "gradient"
    adm.expire(block)
    assert block.has_pending() and not adm.dropped  # not late yet
    time.sleep(0.25)
    adm.expire(block)
    assert not block.has_pending() and adm.dropped["timeout"] == 1
    assert adm.why_not(block, next_step=1, end_step=9, send_backlog=0, hwm=4) is None  # moves on
    assert adm.stale_target(0) and adm.dropped["stale_target"] == 1  # the gradient, if it comes late
    never = Admission(RuntimeConfig(target_timeout_s=0), blocks=2)
    block.feed(1, X, Y)
    time.sleep(0.01)
    never.expire(block)
    assert block.has_pending()  # 0 = wait forever


def test_a_restarted_block_counts_targets_of_its_previous_life_as_stale_and_remembers_boundedly() -> None:
    adm = Admission(RuntimeConfig(max_inflight=2, window="fixed"), blocks=2)
    assert not adm.stale_target(3)  # a first incarnation: an unknown target is a protocol error
    adm.restarted, adm.first_step = True, 10
    assert adm.stale_target(3) and not adm.stale_target(12)
    adm.remember(list(range(100)), "lost")
    assert adm.dropped["lost"] == 100 and len(adm.dropped_steps) <= 10 * 2


def test_lockstep_feeds_the_next_step_only_after_every_block_finished_the_last() -> None:
    block, adm = block0(), Admission(RuntimeConfig(lockstep=True), blocks=2)
    block.feed(0, X, Y)
    assert adm.why_not(block, next_step=1, end_step=9, send_backlog=0, hwm=4) == "lockstep"
    adm.finished_below(0)  # the DONE marker of step 0 from block 1
    assert adm.done_to_send(block) is None  # step 0 still waits for its target here
    block.stages[0].pending.clear()
    assert adm.done_to_send(block) == 0
    assert adm.why_not(block, next_step=1, end_step=9, send_backlog=0, hwm=4) is None
    assert adm.why_not(block, next_step=10, end_step=9, send_backlog=0, hwm=4) == "drain"
    assert adm.why_not(block, next_step=1, end_step=9, send_backlog=4, hwm=4) == "send"


def test_blocks_get_consecutive_stages_and_bad_counts_are_explained() -> None:
    for stages, blocks in ((7, 4), (51, 4), (4, 4), (9, 2)):
        ranges = assign_blocks(stages, blocks)
        assert ranges[0][0] == 0 and ranges[-1][1] == stages - 1 and len(ranges) == blocks
        assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:])), "consecutive, no gaps"
        sizes = [hi - lo + 1 for lo, hi in ranges]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1, sizes
    with pytest.raises(ValueError, match="cannot place 3 stages on 4 blocks"):
        assign_blocks(3, 4)
