"""Compression: pruning, structured channel pruning, quantization-aware training,
binarization, weight sharing, knowledge distillation, and recipes that chain them.

Each method is usable alone (the functions below) or as a step of a recipe
(:func:`load_recipe`, ``edgekit compress MODEL --recipe NAME|FILE.toml``).

Names are imported on first use: several methods define Keras layers, and importing
``edgekit.compress`` must not start TensorFlow for a command that does not need it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "edgekit.compress.channels": (
        "CRITERIA",
        "LayerChannels",
        "PlannedChannels",
        "PrunableGroup",
        "channel_importance",
        "count_macs",
        "prunable_groups",
        "prune_channels",
        "uniform_channel_plan",
    ),
    "edgekit.compress.channels_step": ("plan_for_macs",),
    "edgekit.compress.pruning": (
        "LayerPruning",
        "PruneResult",
        "fine_tune_sparse",
        "prune_level",
        "prune_magnitude",
        "prune_sensitivity",
        "prune_tfmot",
        "sparsity_mask_callback",
        "weight_sparsity",
    ),
    "edgekit.compress.sensitivity": (
        "SChoice",
        "SensitivityResult",
        "choose_s",
        "plot_sensitivity",
        "sensitivity_analysis",
    ),
    "edgekit.compress.binary": (
        "BinaryConv2D",
        "BinaryDense",
        "BinaryDepthwiseConv2D",
        "BinarySign",
        "binarize",
        "binarize_model",
        "binary_sign",
        "binary_to_float_model",
    ),
    "edgekit.compress._bitpack": (
        "BinaryStorage",
        "apply_packed_weights",
        "binary_storage",
        "pack_binary_weights",
        "unpack_binary_weights",
    ),
    "edgekit.compress.sharing": (
        "CodebookReport",
        "cluster_gmm",
        "cluster_tfmot",
        "codebook_size",
        "read_codebook",
        "write_codebook",
    ),
    "edgekit.compress.qat": ("quantize_aware",),
    "edgekit.compress.distill": ("distill", "kd_loss"),
    "edgekit.compress.recipe": ("Recipe", "builtin_recipes", "load_recipe", "parse_recipe"),
    "edgekit.compress._steps": ("Option", "StepContext", "list_steps", "register_step"),
    "edgekit.compress._run": ("CompressRequest", "compress"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'edgekit.compress' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
