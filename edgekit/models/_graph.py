"""The layer calls of a functional Keras model, and rebuilding a model call by call.

Channel pruning, binarization and the float twin of a quantization-aware model all walk the
same graph and build a new model from it; this is that walk, written once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgekit.errors import BadInputError


@dataclass
class LayerCall:
    """One layer call of a functional model and the ids of its input and output tensors."""

    layer: Any
    node: Any
    inputs: list[str]
    outputs: list[str]


def layer_calls(model: Any, purpose: str) -> list[LayerCall]:
    """Every layer call of ``model`` in topological order (inputs first).

    Args:
        model: a functional ``tf_keras`` model.
        purpose: what needs the graph, for error messages ("channel pruning").

    Raises:
        BadInputError: the model is not functional, nests a model, or calls a layer twice.
    """
    from edgekit._keras import keras, tf

    if not getattr(model, "_is_graph_network", False):
        raise BadInputError(
            f"model '{getattr(model, 'name', model)}' is not a functional Keras model; "
            f"{purpose} needs the layer graph (build it with keras.Model(inputs, outputs))"
        )
    by_depth = model._nodes_by_depth
    seen: set[str] = set()
    calls = []
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            layer = node.layer
            if isinstance(layer, keras.Model):
                raise BadInputError(
                    f"layer '{layer.name}' is a nested model; {purpose} needs a flat model "
                    "(rebuild it with the inner model's layers)"
                )
            if layer.name in seen:
                raise BadInputError(
                    f"layer '{layer.name}' is called more than once; {purpose} needs every "
                    "layer to be used once"
                )
            seen.add(layer.name)
            outputs = [str(id(t)) for t in tf.nest.flatten(node.outputs)]
            calls.append(LayerCall(layer, node, list(node.flat_input_ids), outputs))
    return calls


def new_input(layer: Any) -> Any:
    """A fresh ``keras.Input`` like the input layer ``layer`` (same shape, dtype and name)."""
    from edgekit._keras import keras

    config = layer.get_config()
    return keras.Input(
        batch_shape=tuple(config["batch_input_shape"]),
        dtype=config.get("dtype"),
        name=config["name"],
    )


def map_arguments(node: Any, new: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    """The positional and keyword arguments of ``node``'s call, with the tensors in ``new``."""
    # Node.map_arguments pops one tensor per use, so give it one copy per use.
    uses: dict[str, list[Any]] = {}
    for tid in node.flat_input_ids:
        uses.setdefault(tid, []).append(new[tid])
    return node.map_arguments(uses)


def call_copy(
    layer: Any, node: Any, new: dict[str, Any], config: dict[str, Any]
) -> tuple[Any, list[Any]]:
    """Call a new layer of ``layer``'s class made from ``config`` the way ``node`` called
    ``layer``; returns its outputs (the caller sets its weights)."""
    from edgekit._keras import tf

    clone = type(layer).from_config(config)
    args, kwargs = map_arguments(node, new)
    return clone, tf.nest.flatten(clone(*args, **kwargs))


def finish(model: Any, new: dict[str, Any]) -> Any:
    """The functional model from ``new``'s tensors for ``model``'s inputs and outputs."""
    from edgekit._keras import keras

    inputs = [new[str(id(t))] for t in model.inputs]
    outputs = [new[str(id(t))] for t in model.outputs]
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=model.name,
    )


def rebuild(
    model: Any,
    convert: Callable[[LayerCall, dict[str, Any]], list[Any] | None],
    purpose: str,
) -> Any:
    """A new functional model built call by call.

    Args:
        model: a functional ``tf_keras`` model.
        convert: builds a call's new output tensors from ``new`` (tensor id -> new tensor),
            or returns None for a copy of the layer with its weights.
        purpose: what the rebuild is for, for error messages.

    Returns:
        A new, uncompiled model with ``model``'s name.

    Raises:
        BadInputError: see :func:`layer_calls`.
    """
    new: dict[str, Any] = {}
    for call in layer_calls(model, purpose):
        layer = call.layer
        if call.node.is_input:
            new[call.outputs[0]] = new_input(layer)
            continue
        outputs = convert(call, new)
        if outputs is None:
            clone, outputs = call_copy(layer, call.node, new, layer.get_config())
            clone.set_weights(layer.get_weights())
        for tid, tensor in zip(call.outputs, outputs, strict=True):
            new[tid] = tensor
    return finish(model, new)
