"""The one-logit log loss (`model.loss = "bce"`): App. C's single-output-neuron variant."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dni_dist import config_from_dict, train
from dni_dist.config import ConfigError
from dni_dist.data import load_dataset
from dni_dist.losses import accuracy, binary_cross_entropy, output_width
from dni_dist.synthetic import SyntheticGradient


def test_bce_equals_softmax_ce_of_the_logit_difference() -> None:
    torch.manual_seed(0)
    z2 = torch.randn(8, 2)
    y = F.one_hot(torch.randint(0, 2, (8,)), 2).float()
    one = (z2[:, 1] - z2[:, 0]).unsqueeze(1)  # the one logit a two-logit softmax depends on
    torch.testing.assert_close(binary_cross_entropy(one, y), F.cross_entropy(z2, y))
    assert accuracy(one, y) == accuracy(z2, y)


def test_output_width_and_clear_error_for_more_than_two_classes() -> None:
    assert output_width("bce", 2) == 1 and output_width("ce", 10) == 10
    with pytest.raises(ValueError, match="two-class dataset, got 10 classes"):
        output_width("bce", 10)
    with pytest.raises(ConfigError, match=r"model\.loss"):
        config_from_dict({"model": {"loss": "hinge"}})


def test_sigmoid_sg_on_one_logit_predicts_sigma_minus_positive_label() -> None:
    sg = SyntheticGradient(kind="sigmoid", conditioning="activation+label", act_dim=1, label_dim=2)
    z, y = torch.zeros(3, 1), torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    torch.testing.assert_close(sg(z, y), torch.tensor([[0.5], [-0.5], [-0.5]]))  # σ(0) − y₁


@pytest.mark.parametrize("method", ["bp", "sg", "dfa"])
def test_bce_models_train_through_every_kind_of_interface(method: str) -> None:
    cfg = config_from_dict(
        {
            "model": {"kind": "mlp", "depth": 2, "width": 16, "batch_norm": False, "loss": "bce"},
            "split": {"placement": "every"},
            "credit": {"method": method},
            "optim": {"name": "adam", "lr": 1e-2},
            "data": {"name": "linear2", "batch_size": 0},
            "run": {"steps": 300, "seed": 0},
        }
    )
    result = train(cfg, dataset=load_dataset("linear2"))
    assert result.evals[-1].accuracy > 0.9, f"{method}: {result.evals[-1]}"


def test_bce_on_a_ten_class_dataset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.loss: 'bce' needs a two-class dataset; mnist has 10 classes"):
        config_from_dict({"model": {"loss": "bce"}, "data": {"name": "mnist"}})
