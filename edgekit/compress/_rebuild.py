"""Build the pruned functional model: same layers, fewer channels, the kept weights."""

from __future__ import annotations

from typing import Any

from edgekit.compress._graph import ChannelGraph
from edgekit.models._graph import call_copy, finish, new_input


def rebuild_model(graph: ChannelGraph, keep_class: dict[int, bool]) -> Any:
    """A new model in which every tensor keeps the channels whose class is kept.

    Args:
        graph: the analysis of the original model.
        keep_class: class root -> kept; classes missing from it are kept.

    Returns:
        A new ``tf_keras`` functional model with the original's name, layer names, inputs
        and outputs; each layer's config differs only in its channel counts.

    Raises:
        RuntimeError: a pruned layer does not have the shape the analysis predicted (a bug).
    """
    masks = graph.masks(keep_class)

    new: dict[str, Any] = {}
    for step in graph.steps:
        layer = step.layer
        if step.node.is_input:
            new[step.outputs[0]] = new_input(layer)
            continue
        in_masks = [masks[t] for t in step.inputs]
        out_masks = [masks[t] for t in step.outputs]
        config, weights = step.rule.rebuild(layer, in_masks, out_masks)
        clone, outputs = call_copy(layer, step.node, new, config)
        clone.set_weights(weights)
        for tid, tensor, mask in zip(step.outputs, outputs, out_masks, strict=True):
            expected = int(mask.sum()) if mask.ndim == 1 else None
            if expected is not None and int(tensor.shape[-1]) != expected:
                raise RuntimeError(
                    f"internal error: pruned layer '{layer.name}' has {tensor.shape[-1]} "
                    f"channels, expected {expected}"
                )
            new[tid] = tensor

    return finish(graph.model, new)
