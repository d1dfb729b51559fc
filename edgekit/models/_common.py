"""What every family shares: argument checks, channel rounding, the stem choice, the head."""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from edgekit._keras import keras
from edgekit.errors import BadInputError
from edgekit.models._layers import GroupConv2D

MIN_SIDE = 32
MAX_SIDE = 512
# Below this side the first downsampling is skipped so that a 32x32 input still ends at
# 2x2 or more before global pooling.
SMALL_INPUT_SIDE = 64
# Small nets trained briefly on small data sets track the batch statistics better with a
# short moving average than with Keras' default 0.99.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-3


def check_args(input_shape: Any, classes: Any, width: Any) -> tuple[int, int, int]:
    """Check the three options every builder takes and return the input shape as ints.

    Raises:
        BadInputError: a value is out of range; the message names it and the valid range.
    """
    if (
        not isinstance(input_shape, Sequence)
        or isinstance(input_shape, str)
        or len(input_shape) != 3
        or not all(isinstance(d, Integral) and not isinstance(d, bool) for d in input_shape)
    ):
        raise BadInputError(
            f"input_shape must be 3 integers (height, width, channels); got {input_shape!r}"
        )
    height, side, channels = (int(d) for d in input_shape)
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= side <= MAX_SIDE):
        raise BadInputError(
            f"input_shape spatial size must be {MIN_SIDE}..{MAX_SIDE} pixels per side; "
            f"got {height}x{side}"
        )
    if channels < 1:
        raise BadInputError(f"input_shape channels must be >= 1; got {channels}")
    if not isinstance(classes, Integral) or isinstance(classes, bool) or classes < 2:
        raise BadInputError(f"classes must be an integer >= 2; got {classes!r}")
    if (
        not isinstance(width, Real)
        or isinstance(width, bool)
        or not math.isfinite(width)
        or width <= 0
    ):
        raise BadInputError(f"width must be a number > 0 (1.0 is the paper's width); got {width!r}")
    return height, side, channels


def check_blocks(blocks: Any, stages: int | None, option: str = "blocks") -> tuple[int, ...]:
    """Check a per-stage repeat count such as ResNet's ``blocks=(2, 2, 2, 2)``.

    Args:
        blocks: the value received.
        stages: how many stages the family has; None when any number >= 1 is fine.
        option: the option's name, for the message.

    Raises:
        BadInputError: not ``stages`` integers >= 1.
    """
    if (
        not isinstance(blocks, Sequence)
        or isinstance(blocks, str)
        or len(blocks) == 0
        or (stages is not None and len(blocks) != stages)
        or not all(isinstance(b, Integral) and not isinstance(b, bool) and b >= 1 for b in blocks)
    ):
        count = "one or more" if stages is None else str(stages)
        raise BadInputError(
            f"{option} must be {count} integers >= 1 (blocks per stage); got {blocks!r}"
        )
    return tuple(int(b) for b in blocks)


def check_positive(value: Any, option: str, *, upper: float | None = None) -> float:
    """Check a real-valued family option (growth rate, compression, ratio) is > 0.

    Raises:
        BadInputError: not a finite number in (0, upper].
    """
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value <= 0 or (upper is not None and value > upper):
        valid = f"in (0, {upper}]" if upper is not None else "> 0"
        raise BadInputError(f"{option} must be a number {valid}; got {value!r}")
    return float(value)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` (the MobileNet rule).

    Never goes below ``min_value`` (default ``divisor``) and never rounds down by more
    than 10%.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


def uses_small_stem(input_shape: Sequence[int]) -> bool:
    """True when the input is small enough that the stem must not downsample."""
    return min(input_shape[0], input_shape[1]) < SMALL_INPUT_SIDE


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """The one BatchNormalization configuration the zoo uses."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def activation(kind: str, name: str) -> keras.layers.Layer:
    """``relu`` or ``relu6`` as a ReLU layer (both convert to one fused TFLite op)."""
    return keras.layers.ReLU(6.0 if kind == "relu6" else None, name=name)


def conv_bn(
    x: Any,
    filters: int,
    kernel: int,
    name: str,
    *,
    stride: int = 1,
    groups: int = 1,
    act: str | None = "relu",
    padding: str = "same",
) -> Any:
    """Conv2D (no bias) -> BN -> optional ReLU/ReLU6, named ``name``, ``name_bn``, ``name_relu``."""
    # Grouped convs use GroupConv2D, which exports to ONNX (see its docstring).
    conv_class = GroupConv2D if groups > 1 else keras.layers.Conv2D
    x = conv_class(
        filters, kernel, strides=stride, padding=padding, groups=groups, use_bias=False, name=name
    )(x)
    x = batch_norm(f"{name}_bn")(x)
    if act is not None:
        x = activation(act, f"{name}_relu")(x)
    return x


def depthwise_bn(
    x: Any, kernel: int, name: str, *, stride: int = 1, act: str | None = "relu"
) -> Any:
    """DepthwiseConv2D (no bias) -> BN -> optional ReLU/ReLU6."""
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False, name=name
    )(x)
    x = batch_norm(f"{name}_bn")(x)
    if act is not None:
        x = activation(act, f"{name}_relu")(x)
    return x


def squeeze_excite(x: Any, reduced: int, name: str) -> Any:
    """Squeeze-and-excite: pool, 1x1 reduce + ReLU, 1x1 expand + sigmoid, rescale."""
    channels = int(x.shape[-1])
    s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
    s = keras.layers.Conv2D(max(1, reduced), 1, name=f"{name}_se_reduce")(s)
    s = keras.layers.ReLU(name=f"{name}_se_relu")(s)
    s = keras.layers.Conv2D(channels, 1, name=f"{name}_se_expand")(s)
    s = keras.layers.Activation("sigmoid", name=f"{name}_se_sigmoid")(s)
    return keras.layers.Multiply(name=f"{name}_se_scale")([x, s])


def classifier(x: Any, classes: int) -> Any:
    """Global average pooling, Dense ``logits`` (no activation), softmax ``probs``."""
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dense(classes, name="logits")(x)
    return keras.layers.Activation("softmax", name="probs")(x)


def model_input(input_shape: Sequence[int]) -> Any:
    """The model's input tensor, named ``input``."""
    return keras.Input(shape=tuple(input_shape), name="input")
