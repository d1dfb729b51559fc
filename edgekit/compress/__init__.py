"""Compression: structured channel pruning that makes the network really smaller.

``prunable_groups(model)`` lists the coupled channel groups of a functional Keras model,
``prune_channels(model, plan)`` removes channels and returns a new, smaller model,
``uniform_channel_plan`` and ``channel_importance`` help build a plan, ``count_macs``
measures the result.
"""

from __future__ import annotations

from edgekit.compress.channels import (
    CRITERIA,
    PrunableGroup,
    channel_importance,
    count_macs,
    prunable_groups,
    prune_channels,
    uniform_channel_plan,
)

__all__ = [
    "CRITERIA",
    "PrunableGroup",
    "channel_importance",
    "count_macs",
    "prunable_groups",
    "prune_channels",
    "uniform_channel_plan",
]
