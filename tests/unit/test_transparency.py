"""With bp at every interface, the staged network is the plain network (torchgpipe's
transparency test): same parameters after 50 steps as one autograd graph."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dni_dist import config_from_dict, train
from dni_dist.data import BatchStream, load_dataset
from dni_dist.models import build_layers


@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_bp_four_stages_equals_single_graph(optim: str) -> None:
    cfg = config_from_dict(
        {
            "model": {"kind": "mlp", "depth": 6, "width": 64, "batch_norm": True},
            "split": {"placement": "even", "stages": 4},
            "credit": {"method": "bp"},
            "optim": {
                "name": optim,
                "lr": 1e-2,
                "momentum": 0.9 if optim == "sgd" else 0.0,
                "schedule": "cosine",
                "weight_decay": 1e-4,
            },
            "data": {"name": "mnist", "subset": True, "batch_size": 32},
            "run": {"steps": 50, "seed": 3},
        }
    )
    ds = load_dataset("mnist", subset=True)
    layers, _ = build_layers(cfg.model, input_dim=784, num_classes=10, seed=3)
    reference = nn.Sequential(*copy.deepcopy(layers))
    if optim == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=1e-4)
    else:
        opt = torch.optim.SGD(reference.parameters(), lr=1e-2, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50)
    batches = iter(BatchStream(ds.x_train, ds.labels_train, 10, 32, seed=3))
    for _ in range(50):
        x, y = next(batches)
        opt.zero_grad()
        F.cross_entropy(reference(x), y).backward()
        opt.step()
        sched.step()

    result = train(cfg, dataset=ds)
    assert len(result.stages) == 4
    staged = dict(result.model.named_parameters())
    plain = dict(reference.named_parameters())
    assert staged.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(staged[name], plain[name], msg=lambda m, n=name: f"{n}: {m}")
    for (name, buf), (_, ref) in zip(result.model.named_buffers(), reference.named_buffers()):
        torch.testing.assert_close(buf, ref, msg=lambda m, n=name: f"buffer {n}: {m}")
