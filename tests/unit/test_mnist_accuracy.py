"""Paper §5 in small: label-conditioned SG in the middle of a 6-layer ReLU+BN MLP learns MNIST
as well as backprop does in the same number of steps (bundled subset, 1,000 test images)."""

from __future__ import annotations

import pytest

from dni_dist import config_from_dict, train
from dni_dist.data import load_dataset


@pytest.mark.slow
def test_cdni_in_the_middle_matches_backprop_on_mnist_subset() -> None:
    ds = load_dataset("mnist", subset=True)
    accuracy = {}
    for method in ("bp", "sg"):
        cfg = config_from_dict(
            {
                "model": {"kind": "mlp", "depth": 6, "width": 512, "batch_norm": True},
                "split": {"placement": "middle"},
                "credit": {"method": method},
                "synthetic": {"conditioning": "activation+label", "lr": 1e-4},
                "data": {"name": "mnist", "subset": True, "batch_size": 128},
                "run": {"steps": 400, "seed": 0},
            }
        )
        result = train(cfg, dataset=ds)
        accuracy[method] = result.test_accuracy
    assert accuracy["bp"] > 0.9, accuracy  # the comparison only means something if backprop learned
    assert accuracy["sg"] >= accuracy["bp"] - 0.02, accuracy
