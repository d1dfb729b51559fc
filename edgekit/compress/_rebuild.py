"""Build the pruned functional model: same layers, fewer channels, the kept weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.compress._graph import ChannelGraph


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
    from edgekit._keras import keras, tf

    keep_elem = np.ones(graph.element_count, dtype=bool)
    for e in range(graph.element_count):
        keep_elem[e] = keep_class.get(graph.find(e), True)
    masks = {tid: keep_elem[labels] for tid, labels in graph.labels.items()}

    new: dict[str, Any] = {}
    for step in graph.steps:
        layer = step.layer
        if step.node.is_input:
            config = layer.get_config()
            tensor = keras.Input(
                batch_shape=tuple(config["batch_input_shape"]),
                dtype=config.get("dtype"),
                name=config["name"],
            )
            new[step.outputs[0]] = tensor
            continue
        in_masks = [masks[t] for t in step.inputs]
        out_masks = [masks[t] for t in step.outputs]
        config, weights = step.rule.rebuild(layer, in_masks, out_masks)
        clone = type(layer).from_config(config)
        args, kwargs = _map_arguments(step.node, new)
        outputs = tf.nest.flatten(clone(*args, **kwargs))
        clone.set_weights(weights)
        for tid, tensor, mask in zip(step.outputs, outputs, out_masks, strict=True):
            expected = int(mask.sum()) if mask.ndim == 1 else None
            if expected is not None and int(tensor.shape[-1]) != expected:
                raise RuntimeError(
                    f"internal error: pruned layer '{layer.name}' has {tensor.shape[-1]} "
                    f"channels, expected {expected}"
                )
            new[tid] = tensor

    inputs = [new[str(id(t))] for t in graph.model.inputs]
    outputs = [new[str(id(t))] for t in graph.model.outputs]
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=graph.model.name,
    )


def _map_arguments(node: Any, new: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    # Node.map_arguments pops one tensor per use, so give it one copy per use.
    uses: dict[str, list[Any]] = {}
    for tid in node.flat_input_ids:
        uses.setdefault(tid, []).append(new[tid])
    return node.map_arguments(uses)
