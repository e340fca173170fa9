"""Same recipe + same seed = same result, whatever the global RNG did before (no test seeding)."""

from __future__ import annotations

import pytest
import torch

from dni_dist import config_from_dict, train

RECIPE = {
    "model": {"kind": "mlp", "depth": 2, "width": 32},
    "split": {"placement": "every"},
    "credit": {"method": "sg"},
    "synthetic": {"kind": "mlp", "hidden": 16, "layers": 1},
    "data": {"name": "noisy100", "batch_size": 32},
    "run": {"steps": 20, "seed": 3},
}


@pytest.mark.parametrize(
    ("kind", "method"), [("linear", "sg"), ("mlp", "sg"), ("linear", "fa"), ("linear", "dfa"), ("linear", "kb")]
)
def test_same_seed_same_weights_whatever_the_global_rng(kind: str, method: str) -> None:
    """Model, SG modules (an MLP SG has random hidden layers), FA/DFA/Kickback feedback matrices
    and the data order all derive from run.seed: the global RNG's state changes nothing."""
    cfg = config_from_dict({**RECIPE, "synthetic": {**RECIPE["synthetic"], "kind": kind}, "credit": {"method": method}})
    torch.manual_seed(12345)
    a = train(cfg)
    torch.manual_seed(999)
    torch.rand(1000)  # the global RNG is elsewhere now
    b = train(cfg)
    for sa, sb in zip(a.stages, b.stages):
        for (name, pa), pb in zip(sa.module.state_dict().items(), sb.module.state_dict().values()):
            assert torch.equal(pa, pb), name
        if sa.sg is not None:
            assert sb.sg is not None
            for pa, pb in zip(sa.sg.parameters(), sb.sg.parameters()):
                assert torch.equal(pa, pb)
        if sa.feedback is not None:  # DFA / Kickback (FA's matrices are buffers in the state dict)
            assert sb.feedback is not None and torch.equal(sa.feedback, sb.feedback)
    assert a.train_loss == b.train_loss  # the same batches in the same order
    assert a.test_accuracy == b.test_accuracy
