"""Paper, Theorem 1: linear regression with a linear SG between its output and the loss
converges to the global least-squares solution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dni_dist import config_from_dict, train
from dni_dist.data import load_dataset


@pytest.mark.parametrize("name", ["linear2", "noisy100"])
def test_linear_regression_with_linear_sg_reaches_least_squares(name: str) -> None:
    ds = load_dataset(name)
    X = torch.cat([ds.x_train, torch.ones(ds.x_train.shape[0], 1)], dim=1).double()
    Y = ds.y_train.double()
    optimum = F.mse_loss(X @ torch.linalg.lstsq(X, Y).solution, Y).item()
    cfg = config_from_dict(
        {
            "model": {"kind": "linear", "loss": "mse"},
            "split": {"placement": "output"},
            "credit": {"method": "sg"},
            "optim": {"name": "sgd", "lr": 0.1},
            "synthetic": {"lr": 1e-2},
            "data": {"name": name, "batch_size": 0},
            "run": {"steps": 3000},
        }
    )
    result = train(cfg, dataset=ds)
    assert result.stages[0].stats.waits == {"none": 3000}  # the linear model never waited
    assert abs(result.test_loss - optimum) < 1e-4, (result.test_loss, optimum)
    # and it is the synthetic gradient that got it there: without the SG's training it would not move
    assert result.stages[0].stats.sg[-1].cosine > 0.99
