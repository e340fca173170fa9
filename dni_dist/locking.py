"""Table 1 of the paper, and the same three columns derived from what each update depended on.

    from dni_dist.locking import TABLE1, locking
    locking(1, {"activation@0+gradient@2": 20})
    # {'update_locked': True, 'backward_locked': True, 'direct_error': False}
    TABLE1["sg"]                # (False, False, False): what the paper says for synthetic gradients

Every weight update of a stage records the received messages it used: the activation it ran on
and the gradient or output error it applied (dni_dist.stage_stats.UpdateRecord, counted by
signature "kind@producing stage"). The columns follow from that record alone, not from which
code path ran: an update is *update-locked* if it used a message produced by a later stage,
*backward-locked* if it used the next stage's backward pass (its gradient message), and
*direct-error* if it used the output error broadcast by the last stage.
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


def dependency_ids(signature: str) -> list[tuple[str, int]]:
    """[(kind, producing stage), ...] of one signature ('activation@0+gradient@2'; 'none')."""
    if signature == "none":
        return []
    out = []
    for part in signature.split("+"):
        kind, _, stage = part.partition("@")
        if not stage.isdigit():
            raise ValueError(f"dependency signature {signature!r}: expected kind@stage parts joined by '+'")
        out.append((kind, int(stage)))
    return out


def locking(stage: int, dependencies: Mapping[str, int]) -> dict[str, bool]:
    """Table 1's columns for the interface on the output of `stage`, from its updates counted
    by dependency signature (StageStats.dependencies)."""
    used = {d for sig, n in dependencies.items() if n > 0 for d in dependency_ids(sig)}
    return {
        "update_locked": any(producer > stage for _, producer in used),
        "backward_locked": ("gradient", stage + 1) in used,
        "direct_error": any(kind == "output_error" for kind, _ in used),
    }
