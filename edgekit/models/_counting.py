"""Per-layer multiply-accumulate (MAC) and parameter counts.

MACs follow the papers' convention: only the multiply-accumulates of convolutions and
fully connected layers are counted (batch norm, activations, pooling, adds are not):

- Conv2D: K_h·K_w·(C_in/groups)·C_out·H_out·W_out
- DepthwiseConv2D: K_h·K_w·C_in·depth_multiplier·H_out·W_out
- SeparableConv2D: its depthwise part plus its 1x1 pointwise part
- Dense: in·out (times the leading positions if applied to a >2-D tensor)

Parameters are every weight, batch-norm moving statistics included (what ``count_params``
reports); trainable parameters are listed apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import BadInputError

Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class LayerCost:
    """The cost of one layer.

    ``kind`` is ``conv``, ``depthwise``, ``group_conv`` (a Conv2D with groups > 1),
    ``dense`` or ``other`` (no MACs counted). ``kernel``, ``stride``, ``groups``,
    ``in_channels`` and ``out_channels`` are None where they do not apply.
    """

    name: str
    kind: str
    macs: int
    params: int
    trainable_params: int
    input_shape: Shape | list[Shape] | None
    output_shape: Shape | list[Shape] | None
    kernel: tuple[int, ...] | None = None
    stride: tuple[int, ...] | None = None
    groups: int | None = None
    in_channels: int | None = None
    out_channels: int | None = None


@dataclass(frozen=True)
class ModelCost:
    """Totals over a model, with the per-layer costs they were summed from."""

    macs: int
    params: int
    trainable_params: int
    layers: list[LayerCost] = field(default_factory=list)

    def by_kind(self) -> dict[str, int]:
        """MACs summed per layer kind."""
        totals: dict[str, int] = {}
        for layer in self.layers:
            totals[layer.kind] = totals.get(layer.kind, 0) + layer.macs
        return totals


def standard_conv_macs(dk: int, m: int, n: int, df: int) -> int:
    """MACs of a standard D_K x D_K conv, M -> N channels, D_F x D_F output: D_K²·M·N·D_F²."""
    return dk * dk * m * n * df * df


def separable_macs(dk: int, m: int, n: int, df: int) -> int:
    """MACs of a depthwise separable conv: D_K²·M·D_F² (depthwise) + M·N·D_F² (pointwise).

    Its ratio to :func:`standard_conv_macs` is 1/N + 1/D_K².
    """
    return dk * dk * m * df * df + m * n * df * df


def count_layers(model: Any) -> list[LayerCost]:
    """Cost of every layer of a built Keras 2 model, nested models flattened.

    Args:
        model: a ``tf_keras`` model with static spatial input sizes.

    Returns:
        One :class:`LayerCost` per layer, in model order; layers of a nested model are
        named ``outer/inner``.

    Raises:
        BadInputError: a conv or dense layer's shapes are unknown (dynamic input size).
    """
    from edgekit._keras import keras

    costs: list[LayerCost] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            for inner in count_layers(layer):
                costs.append(_renamed(inner, f"{layer.name}/{inner.name}"))
            continue
        costs.append(_layer_cost(layer, keras))
    return costs


def count_model(model: Any) -> ModelCost:
    """Total MACs and parameters of a Keras 2 model, with the per-layer breakdown.

    Raises:
        BadInputError: see :func:`count_layers`.
    """
    layers = count_layers(model)
    return ModelCost(
        macs=sum(c.macs for c in layers),
        params=sum(c.params for c in layers),
        trainable_params=sum(c.trainable_params for c in layers),
        layers=layers,
    )


def _renamed(cost: LayerCost, name: str) -> LayerCost:
    from dataclasses import replace

    return replace(cost, name=name)


def _shape(value: Any) -> Shape | list[Shape] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [_shape(v) for v in value]  # type: ignore[misc]
    return tuple(None if d is None else int(d) for d in value)


def _io_shapes(layer: Any) -> tuple[Any, Any]:
    # The first call of the layer; a layer shared by several calls is counted once per
    # model, as in the papers' tables.
    try:
        node = layer.inbound_nodes[0]
    except (AttributeError, IndexError):
        return None, None
    return _shape(node.input_shapes), _shape(node.output_shapes)


def _known(shape: Any, layer: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or any(d is None for d in shape[1:]):
        raise BadInputError(
            f"cannot count MACs of layer '{layer.name}': shape {shape} is not static; "
            "build the model with a fixed input_shape"
        )
    return tuple(int(d) for d in shape[1:])


def _layer_cost(layer: Any, keras: Any, shapes: tuple[Any, Any] | None = None) -> LayerCost:
    in_shape, out_shape = shapes or _io_shapes(layer)
    inner = getattr(layer, "layer", None)
    if isinstance(layer, keras.layers.Wrapper) and isinstance(inner, keras.layers.Layer):
        # A TF-MOT wrapper (fake-quant, pruning, clustering): the work is the inner layer's;
        # the wrapper's own variables (quantizer ranges, masks) are not parameters.
        # TF-MOT's quantize wrapper creates the inner layer's variables itself (named
        # "<inner>/kernel"), so count the wrapper's variables that carry the inner name.
        from dataclasses import replace

        cost = _layer_cost(inner, keras, (in_shape, out_shape))
        own = {w.name: w for w in layer.weights if w.name.startswith(f"{inner.name}/")}
        own.update({w.name: w for w in inner.weights})
        if own:
            own_vars = list(own.values())
            cost = replace(
                cost,
                params=sum(int(math.prod(w.shape)) for w in own_vars),
                trainable_params=sum(int(math.prod(w.shape)) for w in own_vars if w.trainable),
            )
        return _renamed(cost, layer.name)
    params = int(layer.count_params()) if layer.built else 0
    trainable = sum(int(math.prod(w.shape)) for w in layer.trainable_weights)
    common: dict[str, Any] = {
        "name": layer.name,
        "params": params,
        "trainable_params": trainable,
        "input_shape": in_shape,
        "output_shape": out_shape,
    }
    layers = keras.layers
    if isinstance(layer, layers.DepthwiseConv2D):
        out_sp = _known(out_shape, layer)
        c_in = _known(in_shape, layer)[-1]
        kernel = tuple(layer.kernel_size)
        multiplier = int(layer.depth_multiplier)
        macs = math.prod(kernel) * c_in * multiplier * math.prod(out_sp[:-1])
        return LayerCost(
            kind="depthwise",
            macs=macs,
            kernel=kernel,
            stride=tuple(layer.strides),
            groups=c_in,
            in_channels=c_in,
            out_channels=c_in * multiplier,
            **common,
        )
    if isinstance(layer, layers.SeparableConv2D):
        out_sp = _known(out_shape, layer)
        c_in = _known(in_shape, layer)[-1]
        kernel = tuple(layer.kernel_size)
        mid = c_in * int(layer.depth_multiplier)
        positions = math.prod(out_sp[:-1])
        macs = (math.prod(kernel) * mid + mid * out_sp[-1]) * positions
        return LayerCost(
            kind="conv",
            macs=macs,
            kernel=kernel,
            stride=tuple(layer.strides),
            groups=1,
            in_channels=c_in,
            out_channels=out_sp[-1],
            **common,
        )
    if isinstance(layer, layers.Conv1DTranspose | layers.Conv2DTranspose | layers.Conv3DTranspose):
        in_sp = _known(in_shape, layer)
        out_c = _known(out_shape, layer)[-1]
        kernel = tuple(layer.kernel_size)
        macs = math.prod(kernel) * in_sp[-1] * out_c * math.prod(in_sp[:-1])
        return LayerCost(
            kind="conv",
            macs=macs,
            kernel=kernel,
            stride=tuple(layer.strides),
            groups=1,
            in_channels=in_sp[-1],
            out_channels=out_c,
            **common,
        )
    if isinstance(layer, layers.Conv1D | layers.Conv2D | layers.Conv3D):
        out_sp = _known(out_shape, layer)
        c_in = _known(in_shape, layer)[-1]
        groups = int(getattr(layer, "groups", 1) or 1)
        kernel = tuple(layer.kernel_size)
        macs = math.prod(kernel) * (c_in // groups) * out_sp[-1] * math.prod(out_sp[:-1])
        return LayerCost(
            kind="group_conv" if groups > 1 else "conv",
            macs=macs,
            kernel=kernel,
            stride=tuple(layer.strides),
            groups=groups,
            in_channels=c_in,
            out_channels=out_sp[-1],
            **common,
        )
    if isinstance(layer, layers.Dense):
        in_dims = _known(in_shape, layer)
        units = int(layer.units)
        macs = math.prod(in_dims) * units
        return LayerCost(
            kind="dense",
            macs=macs,
            groups=1,
            in_channels=in_dims[-1],
            out_channels=units,
            **common,
        )
    return LayerCost(kind="other", macs=0, **common)


class RechanneledCost:
    """MACs and parameters of a model's copy whose layers have other channel counts, without
    building the copy (a channel-pruning search prices many such copies of one network).

    Each layer's cost is recomputed from its input and output channels with the formulas of
    :func:`count_layers`; a layer whose channels do not change keeps its cost. A changed layer
    of a kind not modelled here (a custom layer with weights, a TF-MOT wrapper, a transposed
    convolution) makes :meth:`cost` return None: the caller builds that copy instead.

    Args:
        model: a built Keras 2 model without nested models (else :attr:`usable` is False).
    """

    def __init__(self, model: Any) -> None:
        from edgekit._keras import keras

        self._keras = keras
        self.usable = not any(isinstance(layer, keras.Model) for layer in model.layers)
        self._layers = {layer.name: layer for layer in model.layers}
        self._costs = {c.name: c for c in count_layers(model)} if self.usable else {}
        self._checked: dict[str, bool] = {}

    def cost(self, channels: dict[str, Any]) -> tuple[int, int] | None:
        """``(MACs, parameters)`` once every layer named in ``channels`` has the given
        channels (objects with ``inputs`` and ``outputs`` tuples, as
        :meth:`edgekit.compress.PlannedChannels.layer_channels` gives), or None."""
        if not self.usable:
            return None
        macs = params = 0
        for name, cost in self._costs.items():
            planned = channels.get(name)
            found = cost if planned is None else self._layer(cost, planned)
            if found is None:
                return None
            macs += found.macs if isinstance(found, LayerCost) else found[0]
            params += found.params if isinstance(found, LayerCost) else found[1]
        return macs, params

    def _layer(self, cost: LayerCost, planned: Any) -> LayerCost | tuple[int, int] | None:
        if not planned.inputs or not planned.outputs or not self._layers[cost.name].weights:
            return cost  # nothing to count, or no weights (no MACs, no parameters)
        in_shape, out_shape = cost.input_shape, cost.output_shape
        if not isinstance(in_shape, tuple) or not isinstance(out_shape, tuple):
            return None
        c_in, c_out = int(planned.inputs[0]), int(planned.outputs[0])
        if (c_in, c_out) == (in_shape[-1], out_shape[-1]):
            return cost
        # The formula must give the layer's own cost at its own channels, or it is not the
        # layer's formula (a layer kind or configuration not modelled here).
        if cost.name not in self._checked:
            own = self._formula(cost, int(in_shape[-1]), int(out_shape[-1]))
            self._checked[cost.name] = own == (cost.macs, cost.params)
        return self._formula(cost, c_in, c_out) if self._checked[cost.name] else None

    def _formula(self, cost: LayerCost, c_in: int, c_out: int) -> tuple[int, int] | None:
        layers = self._keras.layers
        layer = self._layers[cost.name]
        if isinstance(layer, layers.Wrapper) or isinstance(
            layer, layers.Conv1DTranspose | layers.Conv2DTranspose | layers.Conv3DTranspose
        ):
            return None
        assert isinstance(cost.input_shape, tuple) and isinstance(cost.output_shape, tuple)
        bias = bool(getattr(layer, "use_bias", False))
        positions = math.prod(int(d or 0) for d in cost.output_shape[1:-1])
        kernel = math.prod(getattr(layer, "kernel_size", (1,)))
        if isinstance(layer, layers.DepthwiseConv2D):
            mid = c_in * int(layer.depth_multiplier)
            return kernel * mid * positions, kernel * mid + (mid if bias else 0)
        if isinstance(layer, layers.SeparableConv2D):
            mid = c_in * int(layer.depth_multiplier)
            macs = (kernel * mid + mid * c_out) * positions
            return macs, kernel * mid + mid * c_out + (c_out if bias else 0)
        if isinstance(layer, layers.Conv1D | layers.Conv2D | layers.Conv3D):
            groups = int(getattr(layer, "groups", 1) or 1)
            if c_in % groups:
                return None
            weights = kernel * (c_in // groups) * c_out
            return weights * positions, weights + (c_out if bias else 0)
        if isinstance(layer, layers.Dense):
            leading = math.prod(int(d or 0) for d in cost.input_shape[1:-1])
            return leading * c_in * c_out, c_in * c_out + (c_out if bias else 0)
        if isinstance(layer, layers.BatchNormalization) and c_in == c_out:
            return 0, len(layer.weights) * c_out
        return None
