"""How each kind of layer moves channels: label propagation and the pruned layer's weights.

A rule has two methods:

- ``propagate(step, in_labels, graph)`` returns the labels of the layer's outputs and
  records on ``graph`` the couplings and the fixed channels the layer imposes;
- ``rebuild(layer, in_masks, out_masks)`` returns the pruned layer's config and weights,
  given which positions of each input and output tensor are kept (boolean masks of the
  label arrays' shapes).

Rules are looked up by layer class, most specific class first; a layer with no rule is
*opaque*: its input channels are fixed (never removed) and its outputs get new fixed
channels, so pruning never reaches through it but the model still rebuilds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgekit.compress._graph import ChannelGraph, Step

Weights = list[np.ndarray]
Labels = list[np.ndarray]

# Activation functions that mix the channel axis: pruning a channel changes the others.
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


class Rule:
    """Base rule: an opaque layer."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        return self.block(step, in_labels, graph)

    def block(
        self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph, why: str = ""
    ) -> Labels:
        """Fix the inputs' channels and give the outputs new fixed ones."""
        kind = type(step.layer).__name__
        reason = f"layer '{step.layer.name}' ({kind}) {why or 'is opaque to channel pruning'}"
        for labels in in_labels:
            graph.fix(labels, reason)
        return [graph.new_elements(shape[-1], None, fixed=reason) for shape in step.out_shapes]

    def rebuild(
        self, layer: Any, in_masks: list[np.ndarray], out_masks: list[np.ndarray]
    ) -> tuple[dict[str, Any], Weights]:
        return layer.get_config(), layer.get_weights()


class InputRule(Rule):
    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        return [graph.new_elements(step.out_shapes[0][-1], None, fixed="it is a model input")]


class ProducerRule(Rule):
    """Conv1D/2D/3D (grouped or not) and Dense: new output channels, inputs are read."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        layer = step.layer
        (labels,) = in_labels
        if labels.ndim != 1 or getattr(layer, "data_format", "channels_last") != "channels_last":
            return self.block(step, in_labels, graph)
        groups = int(getattr(layer, "groups", 1) or 1)
        activation = getattr(getattr(layer, "activation", None), "__name__", "")
        mixing = f"layer '{layer.name}' applies {activation} across its output channels"
        fixed = mixing if activation in _MIXING_ACTIVATIONS else None
        out = graph.new_elements(step.out_shapes[0][-1], layer.name, fixed=fixed)
        if groups > 1:
            # A group of the pruned conv must read and write only channels of the same
            # original group, at the same place: prune the same positions in every group.
            graph.unite_blocks(labels, groups)
            graph.unite_blocks(out, groups)
        return [out]

    def rebuild(
        self, layer: Any, in_masks: list[np.ndarray], out_masks: list[np.ndarray]
    ) -> tuple[dict[str, Any], Weights]:
        config = layer.get_config()
        out_pos = np.flatnonzero(out_masks[0])
        key = "units" if "units" in config else "filters"
        config[key] = len(out_pos)
        groups = int(config.get("groups", 1) or 1)
        in_pos = _group_positions(in_masks[0], groups)
        weights = []
        for w in layer.get_weights():
            if w.ndim == 1:  # bias
                weights.append(w[out_pos])
            else:  # kernel (..., in / groups, out)
                weights.append(np.take(np.take(w, in_pos, axis=-2), out_pos, axis=-1))
        return config, weights


class SeparableRule(Rule):
    """SeparableConv1D/2D: a depthwise part on the inputs, then new pointwise outputs."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        (labels,) = in_labels
        if labels.ndim != 1 or step.layer.data_format != "channels_last":
            return self.block(step, in_labels, graph)
        return [graph.new_elements(step.out_shapes[0][-1], step.layer.name)]

    def rebuild(
        self, layer: Any, in_masks: list[np.ndarray], out_masks: list[np.ndarray]
    ) -> tuple[dict[str, Any], Weights]:
        config = layer.get_config()
        out_pos = np.flatnonzero(out_masks[0])
        config["filters"] = len(out_pos)
        in_pos = np.flatnonzero(in_masks[0])
        mid_pos = np.flatnonzero(np.repeat(in_masks[0], int(layer.depth_multiplier)))
        depthwise, pointwise, *bias = layer.get_weights()
        weights = [
            np.take(depthwise, in_pos, axis=-2),
            np.take(np.take(pointwise, mid_pos, axis=-2), out_pos, axis=-1),
        ]
        return config, weights + [b[out_pos] for b in bias]


class DepthwiseRule(Rule):
    """DepthwiseConv1D/2D: output channel c·m + k comes from input channel c."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        (labels,) = in_labels
        if labels.ndim != 1 or step.layer.data_format != "channels_last":
            return self.block(step, in_labels, graph)
        return [np.repeat(labels, int(step.layer.depth_multiplier))]

    def rebuild(
        self, layer: Any, in_masks: list[np.ndarray], out_masks: list[np.ndarray]
    ) -> tuple[dict[str, Any], Weights]:
        in_pos = np.flatnonzero(in_masks[0])
        out_pos = np.flatnonzero(out_masks[0])
        weights = []
        for w in layer.get_weights():
            weights.append(w[out_pos] if w.ndim == 1 else np.take(w, in_pos, axis=-2))
        return layer.get_config(), weights


class ChannelWiseRule(Rule):
    """BatchNormalization (over the last axis) and PReLU: one weight per channel."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        (labels,) = in_labels
        layer = step.layer
        rank = len(step.in_shapes[0])
        axis = getattr(layer, "axis", None)
        axes = [axis] if isinstance(axis, int) else axis
        if labels.ndim != 1 or (axes is not None and list(axes) not in ([rank], [-1])):
            return self.block(step, in_labels, graph)
        return [labels]

    def rebuild(
        self, layer: Any, in_masks: list[np.ndarray], out_masks: list[np.ndarray]
    ) -> tuple[dict[str, Any], Weights]:
        mask = in_masks[0]
        pos = np.flatnonzero(mask)
        weights = [
            np.take(w, pos, axis=-1) if w.shape and w.shape[-1] == mask.size else w
            for w in layer.get_weights()
        ]
        return layer.get_config(), weights


class ElementWiseRule(Rule):
    """Activations, dropout, noise: each value depends on the same channel only."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        activation = step.layer.get_config().get("activation")
        if isinstance(activation, str) and activation in _MIXING_ACTIVATIONS:
            return self.block(step, in_labels, graph, f"applies {activation} across channels")
        return list(in_labels)


class SpatialRule(Rule):
    """Pooling, padding, cropping, up-sampling: the channel axis is untouched."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        (labels,) = in_labels
        fmt = getattr(step.layer, "data_format", "channels_last")
        if labels.ndim != 1 or fmt != "channels_last":
            return self.block(step, in_labels, graph)
        return [labels]


class MergeRule(Rule):
    """Add, Subtract, Multiply, Average, Maximum, Minimum: channel i meets channel i."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        full = [lab for lab in in_labels if lab.size > 1] or list(in_labels)
        if any(lab.shape != full[0].shape for lab in full):
            return self.block(step, in_labels, graph)
        for lab in in_labels:
            if lab.size < full[0].size:  # broadcast over the channels: it cannot shrink
                graph.fix(lab, f"it is broadcast over the channels in '{step.layer.name}'")
        for lab in full[1:]:
            graph.unite(full[0], lab)
        return [full[0]]


class ConcatenateRule(Rule):
    """Concatenate: channel ranges follow each other; other axes couple like a merge."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        rank = len(step.in_shapes[0])
        axis = int(step.layer.axis)
        axis = axis - 1 if axis > 0 else axis + rank  # index into the shape without batch
        if all(lab.ndim == 1 for lab in in_labels) and axis == rank - 1:
            return [np.concatenate(in_labels)]
        if all(lab.shape == in_labels[0].shape for lab in in_labels) and axis < rank - max(
            lab.ndim for lab in in_labels
        ):
            for lab in in_labels[1:]:
                graph.unite(in_labels[0], lab)
            return [in_labels[0]]
        return self.block(step, in_labels, graph)


class ChannelSplitRule(Rule):
    """edgekit's ChannelSplit: equal channel ranges; each part must keep the same count."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        (labels,) = in_labels
        if labels.ndim != 1:
            return self.block(step, in_labels, graph)
        splits = int(step.layer.splits)
        graph.unite_blocks(labels, splits)
        return list(labels.reshape(splits, -1))


class ReshapeRule(Rule):
    """Reshape that keeps the spatial positions apart from the channels (channel shuffle).

    The channel part may be split into several axes, e.g. (C,) -> (groups, C / groups); the
    kept positions must then form a rectangle, so channels are coupled along every axis but
    the last.
    """

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        (labels,) = in_labels
        out = _reshape_labels(labels, step.in_shapes[0], step.out_shapes[0])
        if out is None:
            return self.block(step, in_labels, graph)
        if out.ndim > 1:
            columns = out.reshape(-1, out.shape[-1])
            for row in columns[1:]:
                graph.unite(columns[0], row)
        return [out]

    def rebuild(
        self, layer: Any, in_masks: list[np.ndarray], out_masks: list[np.ndarray]
    ) -> tuple[dict[str, Any], Weights]:
        config = layer.get_config()
        target = tuple(config["target_shape"])
        mask = out_masks[0]
        config["target_shape"] = target[: len(target) - mask.ndim] + _kept_dims(mask)
        return config, layer.get_weights()


class PermuteRule(Rule):
    """Permute among the channel axes only (the middle step of a channel shuffle)."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        (labels,) = in_labels
        dims = tuple(int(d) for d in step.layer.dims)
        spatial = len(dims) - labels.ndim
        if dims[:spatial] != tuple(range(1, spatial + 1)):
            return self.block(step, in_labels, graph)
        return [labels.transpose([d - 1 - spatial for d in dims[spatial:]])]


class FlattenRule(Rule):
    """Flatten: the channel labels repeat once per spatial position."""

    def propagate(self, step: Step, in_labels: list[np.ndarray], graph: ChannelGraph) -> Labels:
        (labels,) = in_labels
        if getattr(step.layer, "data_format", "channels_last") != "channels_last":
            return self.block(step, in_labels, graph)
        spatial = math.prod(step.in_shapes[0][: len(step.in_shapes[0]) - labels.ndim])
        return [np.tile(labels.ravel(), spatial)]


def _group_positions(mask: np.ndarray, groups: int) -> np.ndarray:
    """Kept input positions within one group of a grouped conv (the same in every group)."""
    if groups == 1:
        return np.flatnonzero(mask)
    rows = mask.reshape(groups, -1)
    if any(not np.array_equal(rows[0], row) for row in rows[1:]):
        raise RuntimeError("internal error: grouped conv input pruned unevenly across groups")
    return np.flatnonzero(rows[0])


def _kept_dims(mask: np.ndarray) -> tuple[int, ...]:
    """Side lengths of the kept rectangle of a multi-axis mask."""
    dims = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        dims.append(int(np.any(mask, axis=others).sum()) if others else int(mask.sum()))
    if math.prod(dims) != int(mask.sum()):
        raise RuntimeError("internal error: kept channels of a reshape are not a rectangle")
    return tuple(dims)


def _reshape_labels(
    labels: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> np.ndarray | None:
    """Labels after a reshape, or None when it mixes spatial positions and channels."""
    spatial = math.prod(in_shape[: len(in_shape) - labels.ndim])
    for k in range(len(out_shape), -1, -1):
        head, tail = math.prod(out_shape[:k]), math.prod(out_shape[k:])
        if tail % labels.size or spatial % head:
            continue
        repeat = tail // labels.size
        if head * repeat == spatial:
            return np.tile(labels.ravel(), repeat).reshape(out_shape[k:])
    return None


def _rule_table() -> list[tuple[tuple[type, ...], Rule]]:
    from edgekit._keras import keras
    from edgekit.models._layers import ChannelSplit

    layers = keras.layers
    opaque = Rule()
    return [
        ((layers.InputLayer,), InputRule()),
        # Before Conv: these subclass it but move channels differently.
        ((layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose), opaque),
        ((layers.SeparableConv1D, layers.SeparableConv2D), SeparableRule()),
        ((layers.DepthwiseConv1D, layers.DepthwiseConv2D), DepthwiseRule()),
        ((layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.Dense), ProducerRule()),
        ((layers.BatchNormalization, layers.PReLU), ChannelWiseRule()),
        (
            (
                layers.Activation,
                layers.ReLU,
                layers.LeakyReLU,
                layers.ELU,
                layers.ThresholdedReLU,
                layers.Dropout,
                layers.GaussianNoise,
                layers.GaussianDropout,
                layers.AlphaDropout,
                layers.ActivityRegularization,
            ),
            ElementWiseRule(),
        ),
        (
            (
                layers.SpatialDropout1D,
                layers.SpatialDropout2D,
                layers.SpatialDropout3D,
                layers.MaxPooling1D,
                layers.MaxPooling2D,
                layers.MaxPooling3D,
                layers.AveragePooling1D,
                layers.AveragePooling2D,
                layers.AveragePooling3D,
                layers.GlobalAveragePooling1D,
                layers.GlobalAveragePooling2D,
                layers.GlobalAveragePooling3D,
                layers.GlobalMaxPooling1D,
                layers.GlobalMaxPooling2D,
                layers.GlobalMaxPooling3D,
                layers.ZeroPadding1D,
                layers.ZeroPadding2D,
                layers.ZeroPadding3D,
                layers.Cropping1D,
                layers.Cropping2D,
                layers.Cropping3D,
                layers.UpSampling1D,
                layers.UpSampling2D,
                layers.UpSampling3D,
            ),
            SpatialRule(),
        ),
        (
            (
                layers.Add,
                layers.Subtract,
                layers.Multiply,
                layers.Average,
                layers.Maximum,
                layers.Minimum,
            ),
            MergeRule(),
        ),
        ((layers.Concatenate,), ConcatenateRule()),
        ((ChannelSplit,), ChannelSplitRule()),
        ((layers.Reshape,), ReshapeRule()),
        ((layers.Permute,), PermuteRule()),
        ((layers.Flatten,), FlattenRule()),
    ]


_TABLE: list[tuple[tuple[type, ...], Rule]] = []


def rule_for(layer: Any) -> Rule:
    """The rule of ``layer``'s class; an opaque rule for classes without one."""
    if not _TABLE:
        _TABLE.extend(_rule_table())
    for classes, rule in _TABLE:
        if isinstance(layer, classes):
            return rule
    return _OPAQUE


_OPAQUE = Rule()
