"""Table 1 of the paper, and the same three columns measured from what each update waited for.

    from dni_dist.locking import TABLE1, locking
    locking({"gradient": 20})   # {'update_locked': True, 'backward_locked': True, 'direct_error': False}
    TABLE1["sg"]                # (False, False, False): what the paper says for synthetic gradients

A stage counts its updates by what it waited for before applying them ("none", "gradient" from
the next stage, or the broadcast "output_error"); the in-process trainer, the ZeroMQ summary and
the reproductions all derive the columns from those counts with `locking`.
"""

from __future__ import annotations

from collections.abc import Mapping

COLUMNS = ("update_locked", "backward_locked", "direct_error")

TABLE1: dict[str, tuple[bool, bool, bool]] = {
    "sg": (False, False, False),
    "sg_beta": (True, True, False),
    "bp": (True, True, False),
    "fa": (True, True, False),
    "dfa": (True, False, True),
    "kb": (True, False, True),
}
"""Per credit-assignment method: (update locked, backward locked, direct error), as published."""


def locking(update_waits: Mapping[str, int]) -> dict[str, bool]:
    """Table 1's columns for one interface from its update counts by what they waited for:
    update locked (waited on anything downstream), backward locked (on the neighbour's gradient),
    direct error (on the broadcast output error)."""
    gradient, error = update_waits.get("gradient", 0), update_waits.get("output_error", 0)
    return {"update_locked": gradient + error > 0, "backward_locked": gradient > 0, "direct_error": error > 0}
