"""dni_dist: Decoupled Neural Interfaces trained for real, one process per block.

from dni_dist import load_recipe, train
result = train(load_recipe("launch/mnist-sg.toml"))
"""

from dni_dist.config import (
    ConfigError,
    CreditConfig,
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    RuntimeConfig,
    SplitConfig,
    SyntheticConfig,
    TrainConfig,
)
from dni_dist.messages import Kind, Message
from dni_dist.recipes import config_from_dict, load_recipe
from dni_dist.stage import ProtocolError, Stage, StageSpec
from dni_dist.synthetic import SyntheticGradient
from dni_dist.topology import Topology
from dni_dist.trainer import EvalPoint, TrainResult, evaluate, train
from dni_dist.version import __version__

__all__ = [
    "ConfigError",
    "CreditConfig",
    "DataConfig",
    "EvalPoint",
    "Kind",
    "Message",
    "ModelConfig",
    "OptimConfig",
    "ProtocolError",
    "RunConfig",
    "RuntimeConfig",
    "SplitConfig",
    "Stage",
    "StageSpec",
    "SyntheticConfig",
    "SyntheticGradient",
    "Topology",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "config_from_dict",
    "evaluate",
    "load_recipe",
    "train",
]
