"""The model zoo: lightweight CNN families built with Keras 2 (tf-keras).

``create(name, input_shape=..., classes=..., width=...)`` builds a registered model;
``count_model(model)`` reports its MACs and parameters per layer. The family modules (and
with them TensorFlow) are imported on first use, so ``import edgekit.models`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgekit.models._counting import (
    LayerCost,
    ModelCost,
    RechanneledCost,
    count_layers,
    count_model,
    separable_macs,
    standard_conv_macs,
)
from edgekit.models._registry import (
    ModelSpec,
    create,
    get_model_spec,
    list_models,
    register_model,
)

# Public names that need TensorFlow, loaded from their module on first access (PEP 562).
_LAZY = {
    "BlockSpec": "edgekit.models.mnasnet",
    "MNASNET_A1_BLOCKS": "edgekit.models.mnasnet",
    "MNASNET_B1_BLOCKS": "edgekit.models.mnasnet",
    "build_mnasnet": "edgekit.models.mnasnet",
    "ChannelSplit": "edgekit.models._layers",
    "GroupConv2D": "edgekit.models._layers",
    "channel_shuffle": "edgekit.models._layers",
    "make_divisible": "edgekit.models._common",
}

__all__ = [
    "MNASNET_A1_BLOCKS",
    "MNASNET_B1_BLOCKS",
    "BlockSpec",
    "ChannelSplit",
    "GroupConv2D",
    "LayerCost",
    "ModelCost",
    "ModelSpec",
    "RechanneledCost",
    "build_mnasnet",
    "channel_shuffle",
    "count_layers",
    "count_model",
    "create",
    "get_model_spec",
    "list_models",
    "make_divisible",
    "register_model",
    "separable_macs",
    "standard_conv_macs",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekit.models' has no attribute '{name}'")
