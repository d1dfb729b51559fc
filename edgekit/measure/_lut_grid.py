"""Layer configurations for latency look-up tables: keys, the ops of a model, the zoo grid.

A look-up table is indexed by :class:`LayerKey`: one *executed* op as the TFLite converter
emits it. Batch norm and ReLU/ReLU6 that follow a convolution (or a dense layer, or an add)
are folded into it by the converter, so they are not ops of their own; they only set the
key's ``act``. Everything else (residual adds, pooling, the classifier's dense and softmax)
is an op with a key.

:func:`model_ops` walks a Keras model into ``(layer name, key)`` pairs, :func:`zoo_grid`
enumerates the keys of zoo models over width multipliers (the grid a table is built on),
and :func:`build_micro_model` builds the one-op Keras model that measures a key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from edgekit.errors import BadInputError
from edgekit.models._counting import LayerCost, count_layers

PRECISIONS = ("int8", "fp32")
# Ops whose cost grows with MACs; the rest grow with the elements they touch.
MAC_OPS = frozenset({"conv", "group_conv", "depthwise", "dense"})
# Ops a micro-model can be built for (see build_micro_model).
OPS = frozenset(
    {
        *MAC_OPS,
        "add",
        "mul",
        "bn",
        "relu",
        "sigmoid",
        "gap",
        "avgpool",
        "maxpool",
        "softmax",
        "concat",
    }
)
ACTS = ("none", "relu", "relu6")


@dataclass(frozen=True, order=True)
class LayerKey:
    """One op of a converted model, as a look-up table indexes it.

    Attributes:
        op: ``conv``, ``group_conv``, ``depthwise``, ``dense``, ``add``, ``mul``, ``bn``,
            ``relu``, ``sigmoid``, ``gap`` (global average pooling), ``avgpool``, ``maxpool``,
            ``softmax`` or ``concat``.
        h, w: spatial size of the op's input (1, 1 for dense and softmax).
        cin, cout: input and output channels (features for dense, classes for softmax).
        kernel, stride: (height, width); (1, 1) where they do not apply.
        groups: convolution groups (``cin`` for depthwise).
        act: activation fused into the op: ``none``, ``relu`` or ``relu6``.
        padding: ``same`` or ``valid``.
        inputs: number of inputs (add, mul, concat).
        precision: ``int8`` or ``fp32``.
    """

    op: str
    h: int
    w: int
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    groups: int = 1
    act: str = "none"
    padding: str = "same"
    inputs: int = 1
    precision: str = "int8"

    def __str__(self) -> str:
        text = f"{self.op} {self.h}x{self.w}x{self.cin}->{self.cout}"
        if self.kernel != (1, 1) or self.op in MAC_OPS - {"dense"}:
            text += f" k{self.kernel[0]}x{self.kernel[1]}"
        if self.stride != (1, 1):
            text += f" s{self.stride[0]}x{self.stride[1]}"
        if self.op == "group_conv":
            text += f" g{self.groups}"
        if self.inputs != 1:
            text += f" n{self.inputs}"
        if self.act != "none":
            text += f" {self.act}"
        if self.padding != "same":
            text += f" {self.padding}"
        return f"{text} {self.precision}"

    @property
    def work(self) -> int:
        """MACs for convolutions and dense layers, elements touched for the other ops."""
        oh, ow = self.out_hw
        if self.op in ("conv", "group_conv"):
            k = self.kernel[0] * self.kernel[1]
            return k * (self.cin // max(1, self.groups)) * self.cout * oh * ow
        if self.op == "depthwise":
            return self.kernel[0] * self.kernel[1] * self.cout * oh * ow
        if self.op == "dense":
            return self.cin * self.cout
        return self.h * self.w * max(self.cin, self.cout) * max(1, self.inputs)

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output spatial size."""
        if self.op in ("dense", "softmax", "gap"):
            return 1, 1
        if self.padding == "valid":
            return (
                (self.h - self.kernel[0]) // self.stride[0] + 1,
                (self.w - self.kernel[1]) // self.stride[1] + 1,
            )
        return math.ceil(self.h / self.stride[0]), math.ceil(self.w / self.stride[1])

    @property
    def family(self) -> tuple[Any, ...]:
        """The fields neighbours must share to interpolate between them: all but channels."""
        group_mode = self.groups if self.op == "group_conv" else 0
        return (
            self.op,
            self.h,
            self.w,
            self.kernel,
            self.stride,
            group_mode,
            self.act,
            self.padding,
            self.inputs,
            self.precision,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        d = asdict(self)
        d["kernel"] = list(self.kernel)
        d["stride"] = list(self.stride)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerKey:
        """Inverse of :meth:`as_dict`; unknown fields (``ms`` ...) are ignored.

        Raises:
            BadInputError: a field is missing or of the wrong type.
        """
        names = {f.name for f in fields(cls)}
        try:
            values = {k: v for k, v in d.items() if k in names}
            values["kernel"] = tuple(int(v) for v in values.get("kernel", (1, 1)))
            values["stride"] = tuple(int(v) for v in values.get("stride", (1, 1)))
            for name in ("h", "w", "cin", "cout", "groups", "inputs"):
                if name in values:
                    values[name] = int(values[name])
            key = cls(**values)
        except (TypeError, ValueError) as err:
            raise BadInputError(f"bad look-up table entry {d!r}: {err}") from err
        if key.op not in OPS or key.precision not in PRECISIONS:
            raise BadInputError(
                f"bad look-up table entry {d!r}: op must be one of {', '.join(sorted(OPS))} "
                f"and precision one of {', '.join(PRECISIONS)}"
            )
        return key


def _pair(value: Any) -> tuple[int, int]:
    if value is None:
        return (1, 1)
    t = tuple(int(v) for v in value)
    return (t[0], t[1]) if len(t) >= 2 else (t[0], t[0])


def _spatial(shape: Any) -> tuple[int, int, int]:
    """(h, w, c) of a layer's (first) input shape; rank-2 shapes are (1, 1, features)."""
    if isinstance(shape, list):
        shape = shape[0]
    if shape is None:
        raise BadInputError("layer has no known input shape")
    dims = [int(d) for d in shape[1:] if d is not None]
    if len(dims) == 3:
        return dims[0], dims[1], dims[2]
    if len(dims) == 1:
        return 1, 1, dims[0]
    raise BadInputError(f"layer input shape {shape} is neither (H, W, C) nor (features,)")


def layer_key(
    cost: LayerCost,
    precision: str,
    *,
    op: str | None = None,
    act: str = "none",
    padding: str = "same",
    inputs: int = 1,
) -> LayerKey:
    """The look-up key of one layer from its :class:`LayerCost`.

    The input spatial size (H x W) and channels come from ``cost.input_shape``.

    Args:
        cost: the layer's cost as :func:`edgekit.models.count_layers` reports it.
        precision: ``int8`` or ``fp32``.
        op: the op type; defaults to ``cost.kind`` for conv, group_conv, depthwise and dense
            and is required for other layers (add, gap, softmax, ...).
        act: activation fused into the op.
        padding: ``same`` or ``valid``.
        inputs: number of inputs of add / mul / concat.

    Raises:
        BadInputError: unknown precision or op, or a layer without a static input shape.
    """
    if precision not in PRECISIONS:
        raise BadInputError(
            f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}"
        )
    op = op or cost.kind
    if op not in OPS:
        raise BadInputError(
            f"layer '{cost.name}' has no look-up op (kind '{cost.kind}'); "
            f"known ops: {', '.join(sorted(OPS))}"
        )
    h, w, c = _spatial(cost.input_shape)
    out = cost.output_shape[0] if isinstance(cost.output_shape, list) else cost.output_shape
    cout = int(out[-1]) if out and out[-1] is not None else c
    if op in MAC_OPS:
        cin = int(cost.in_channels or c)
        cout = int(cost.out_channels or cout)
    else:
        cin = c
    groups = int(cost.groups or 1)
    if op == "depthwise":
        groups = cin
    kernel = _pair(cost.kernel)
    if kernel == (1, 1) or op not in ("conv", "group_conv", "depthwise", "avgpool", "maxpool"):
        padding = "same"  # a 1x1 window never pads: both spellings are one op
    return LayerKey(
        op=op,
        h=h,
        w=w,
        cin=cin,
        cout=cout,
        kernel=kernel,
        stride=_pair(cost.stride),
        groups=groups,
        act=act,
        padding=padding,
        inputs=inputs,
        precision=precision,
    )


# Why a concatenation gets no key (model_ops and rechannel_ops must say the same).
UNEVEN_CONCAT = "concat of inputs with different shapes is not keyed"


@dataclass(frozen=True)
class ModelOp:
    """One executed op of a model: the Keras layer that owns it and its key.

    ``fused`` names the layers folded into it (batch norm, activation).
    """

    name: str
    key: LayerKey | None
    fused: tuple[str, ...] = ()
    reason: str = ""


def _inbound(layer: Any) -> list[Any]:
    try:
        found = layer.inbound_nodes[0].inbound_layers
    except (AttributeError, IndexError):
        return []
    return list(found) if isinstance(found, list | tuple) else [found]


def _act_of(layer: Any, keras: Any) -> str | None:
    """``relu``/``relu6`` for an activation layer the converter fuses, else None."""
    if isinstance(layer, keras.layers.ReLU):
        if float(layer.negative_slope or 0) != 0 or float(layer.threshold or 0) != 0:
            return None
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else None
    if isinstance(layer, keras.layers.Activation):
        return _fn_act(layer.activation)
    return None


def _fn_name(fn: Any) -> str:
    return str(getattr(fn, "__name__", ""))


def _fn_act(fn: Any) -> str | None:
    name = _fn_name(fn)
    return name if name in ("relu", "relu6") else None


def model_ops(model: Any, precision: str) -> list[ModelOp]:
    """The ops the TFLite converter makes of a Keras model, with their look-up keys.

    Batch norm directly after a conv, depthwise or dense layer (its only consumer) is folded
    into it; a ReLU/ReLU6 after such an op or after an add is fused into it. Layers that do not
    execute at inference (input, dropout) are left out. A layer edgekit cannot key (a custom
    layer, a reshape) gives a :class:`ModelOp` with ``key=None`` and a reason.

    Args:
        model: a built ``tf_keras`` functional model with a static input size.
        precision: ``int8`` or ``fp32``.

    Raises:
        BadInputError: the model has no static input size, or an unknown precision.
    """
    from edgekit._keras import keras

    if precision not in PRECISIONS:
        raise BadInputError(
            f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}"
        )
    costs = {c.name: c for c in count_layers(model)}
    layers = [layer for layer in model.layers if not isinstance(layer, keras.Model)]
    if len(layers) != len(model.layers):
        raise BadInputError(
            f"model '{model.name}' nests other models; look-up prediction needs a flat "
            "functional model"
        )
    consumers: dict[str, int] = {}
    for layer in layers:
        for src in _inbound(layer):
            consumers[src.name] = consumers.get(src.name, 0) + 1

    ops: list[dict[str, Any]] = []
    owner: dict[str, int] = {}  # layer name -> index in ops of the op that executes it
    skip = (keras.layers.InputLayer, keras.layers.Dropout, keras.layers.SpatialDropout2D)
    for layer in layers:
        if isinstance(layer, skip):
            continue
        cost = costs[layer.name]
        srcs = _inbound(layer)
        src = srcs[0] if len(srcs) == 1 else None
        src_op = ops[owner[src.name]] if src is not None and src.name in owner else None
        sole = src is not None and consumers.get(src.name, 0) == 1
        act = _act_of(layer, keras)
        if isinstance(layer, keras.layers.BatchNormalization):
            if (
                sole
                and src_op
                and src_op["op"] in MAC_OPS
                and not src_op["bn"]
                and src_op["act"] == "none"
            ):
                src_op["bn"] = True
                src_op["fused"].append(layer.name)
                owner[layer.name] = owner[src.name]
                continue
            kind: str | None = "bn"
        elif act is not None:
            if (
                sole
                and src_op
                and src_op["op"] in (*MAC_OPS, "add", "bn")
                and src_op["act"] == "none"
            ):
                src_op["act"] = act
                src_op["fused"].append(layer.name)
                owner[layer.name] = owner[src.name]
                continue
            kind = "relu"
        elif cost.kind in MAC_OPS:
            kind = cost.kind
            act = _fn_act(getattr(layer, "activation", None))
        elif isinstance(layer, keras.layers.Add):
            kind = "add"
        elif isinstance(layer, keras.layers.Multiply):
            kind = "mul"
        elif isinstance(layer, keras.layers.Concatenate):
            kind = "concat"
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            kind = "gap"
        elif isinstance(layer, keras.layers.AveragePooling2D):
            kind = "avgpool"
        elif isinstance(layer, keras.layers.MaxPooling2D):
            kind = "maxpool"
        elif isinstance(layer, keras.layers.Softmax) or (
            isinstance(layer, keras.layers.Activation)
            and getattr(layer.activation, "__name__", "") == "softmax"
        ):
            kind = "softmax"
        elif isinstance(layer, keras.layers.Activation) and _fn_name(layer.activation) == "sigmoid":
            kind = "sigmoid"
        else:
            kind = None
        owner[layer.name] = len(ops)
        ops.append(
            {
                "name": layer.name,
                "op": kind,
                "cost": cost,
                "layer": layer,
                "bn": False,
                "act": act if kind in ("relu", *MAC_OPS) and act else "none",
                "fused": [],
                "inputs": max(1, len(srcs)),
            }
        )
    return [_finish(o, precision) for o in ops]


def _finish(o: dict[str, Any], precision: str) -> ModelOp:
    layer = o["layer"]
    if o["op"] is None:
        return ModelOp(
            o["name"],
            None,
            reason=f"no look-up op for a {type(layer).__name__} layer",
        )
    cost: LayerCost = o["cost"]
    if o["op"] in ("avgpool", "maxpool"):
        cost = replace(cost, kernel=tuple(layer.pool_size), stride=tuple(layer.strides))
    if o["op"] == "concat":
        shapes = cost.input_shape if isinstance(cost.input_shape, list) else [cost.input_shape]
        if len({tuple(s) for s in shapes}) != 1:
            return ModelOp(o["name"], None, reason=UNEVEN_CONCAT)
    padding = str(getattr(layer, "padding", "same")).lower()
    key = layer_key(
        cost,
        precision,
        op=o["op"],
        act=o["act"],
        padding=padding if padding in ("same", "valid") else "same",
        inputs=o["inputs"] if o["op"] in ("add", "mul", "concat") else 1,
    )
    return ModelOp(o["name"], key, tuple(o["fused"]))


def rechannel_ops(ops: Sequence[ModelOp], channels: dict[str, Any]) -> list[ModelOp]:
    """The ops of the same network with other channel counts (a channel-pruned copy).

    Pruning channels changes no op, kernel, stride or spatial size: only each op's input
    and output channels (and a depthwise op's groups, which are its channels). That gives
    the keys of a pruned network without building it.

    Args:
        ops: :func:`model_ops` of the unpruned network.
        channels: layer name -> its tensors' channels after pruning, with ``inputs`` and
            ``outputs`` tuples (:class:`edgekit.compress.LayerChannels`).

    Returns:
        One op per op of ``ops``, keyed as :func:`model_ops` keys the pruned network; a
        concatenation whose inputs no longer have equal shapes is left unkeyed, as there.
    """
    out = []
    for op in ops:
        key = op.key
        if key is None:
            out.append(op)
            continue
        counts = channels[op.name]
        cin, cout = counts.inputs[0], counts.outputs[0]
        if key.op == "concat" and len(set(counts.inputs)) != 1:
            out.append(ModelOp(op.name, None, reason=UNEVEN_CONCAT))
            continue
        groups = cin if key.op == "depthwise" else key.groups
        out.append(replace(op, key=replace(key, cin=cin, cout=cout, groups=groups)))
    return out


def zoo_grid(
    models: Sequence[str],
    widths: Sequence[float],
    input_size: int,
    precision: str,
    classes: Sequence[int] = (1000,),
    references: dict[str, Any] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[LayerKey]:
    """The distinct keys of zoo models over width multipliers, in first-seen order.

    Args:
        models: registered zoo names (``mobilenet_v1``, ``mobilenet_v2``, ...).
        widths: width multipliers; channels are rounded as the zoo rounds them.
        input_size: square input side.
        precision: ``int8`` or ``fp32``.
        classes: classifier sizes to cover (the head's dense and softmax).
        references: if given, the models built with the largest of ``classes`` are stored in
            it under ``"name@width"`` (a table calibrates itself on them, see build_lut).
        progress: called as ``progress("grid", done, total)`` after each model built.

    Raises:
        UnknownNameError: an unknown model name.
        BadInputError: a width or input size the zoo refuses, or a layer edgekit cannot key.
    """
    from edgekit.models import create

    seen: dict[LayerKey, None] = {}
    total = len(models) * len(widths) * len(classes)
    done = 0
    for name in models:
        for width in widths:
            for n in classes:
                model = create(
                    name, input_shape=(input_size, input_size, 3), classes=n, width=width
                )
                for op in model_ops(model, precision):
                    if op.key is None:
                        raise BadInputError(
                            f"{name} width {width}: layer '{op.name}' cannot be measured "
                            f"({op.reason})"
                        )
                    seen.setdefault(op.key, None)
                if references is not None and n == max(classes):
                    references[f"{name}@{width:g}"] = model
                done += 1
                if progress is not None:
                    progress("grid", done, total)
    return list(seen)


def empty_key(precision: str) -> LayerKey:
    """The smallest op there is: the per-invoke overhead a table subtracts from every entry."""
    return LayerKey("add", 1, 1, 8, 8, inputs=2, precision=precision)


def build_micro_model(key: LayerKey, copies: int = 1) -> Any:
    """A Keras model of ``copies`` parallel instances of the op ``key``, built as the zoo builds it.

    Convolutions are conv (no bias) -> batch norm -> activation, which the converter folds
    into one op; adds, muls and concats take the one input several times (the converter keeps
    them as one op with that many inputs). With ``copies > 1`` every copy has its own weights
    and its own output, all reading the one input.

    Raises:
        BadInputError: an op without a micro-model.
    """
    from edgekit._keras import keras

    if key.op not in OPS:
        raise BadInputError(
            f"no micro-model for op '{key.op}'; known ops: {', '.join(sorted(OPS))}"
        )
    rank2 = key.op in ("dense", "softmax")
    inp = keras.Input(shape=(key.cin,) if rank2 else (key.h, key.w, key.cin), name="input")
    outputs = [apply_op(inp, key) for _ in range(max(1, copies))]
    return keras.Model(inp, outputs[0] if len(outputs) == 1 else outputs, name=f"micro_{key.op}")


def apply_op(x: Any, key: LayerKey) -> Any:
    """Apply the Keras layers of one ``key`` op (with new weights) to the tensor ``x``."""
    from edgekit._keras import keras
    from edgekit.models._common import BN_EPSILON, BN_MOMENTUM
    from edgekit.models._layers import GroupConv2D

    layers = keras.layers
    conv_args = {"strides": key.stride, "padding": key.padding, "use_bias": False}
    if key.op == "conv":
        x = layers.Conv2D(key.cout, key.kernel, **conv_args)(x)
    elif key.op == "group_conv":
        x = GroupConv2D(key.cout, key.kernel, groups=key.groups, **conv_args)(x)
    elif key.op == "depthwise":
        multiplier = max(1, key.cout // key.cin)
        x = layers.DepthwiseConv2D(key.kernel, depth_multiplier=multiplier, **conv_args)(x)
    elif key.op == "dense":
        x = layers.Dense(key.cout)(x)
    elif key.op == "bn":
        # A trained BN has an offset: with the initial beta = 0 the converter would drop the ADD.
        bn = layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, beta_initializer="ones"
        )
        x = bn(x)
    elif key.op in ("add", "mul", "concat"):
        merge = {"add": layers.Add, "mul": layers.Multiply, "concat": layers.Concatenate}
        x = merge[key.op]()([x] * max(2, key.inputs))
    elif key.op == "gap":
        x = layers.GlobalAveragePooling2D()(x)
    elif key.op in ("avgpool", "maxpool"):
        pool = layers.AveragePooling2D if key.op == "avgpool" else layers.MaxPooling2D
        x = pool(key.kernel, strides=key.stride, padding=key.padding)(x)
    elif key.op == "softmax":
        x = layers.Activation("softmax")(x)
    elif key.op == "sigmoid":
        x = layers.Activation("sigmoid")(x)
    if key.op in ("conv", "group_conv", "depthwise"):
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON)(x)
    if key.act != "none" or key.op == "relu":
        x = layers.ReLU(6.0 if key.act == "relu6" else None)(x)
    return x


def dedupe(keys: Iterable[LayerKey]) -> list[LayerKey]:
    """Keys without repeats, in first-seen order."""
    return list(dict.fromkeys(keys))
