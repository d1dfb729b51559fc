"""DenseNet (Huang et al. 2017): each layer sees the concatenation of every earlier map.

DenseNet-BC: each dense layer is BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k) with growth rate k;
transitions are BN-ReLU-Conv1x1(compression * C)-AvgPool2x2.

Layer names: ``stem_conv``; in dense block b, layer l: ``block{b}_layer{l}_bn1``, ``_relu1``,
``_conv1`` (bottleneck), ``_bn2``, ``_relu2``, ``_conv2``, ``_concat``; transitions
``transition{b}_bn``, ``_relu``, ``_conv``, ``_pool``; ``head_bn``, ``head_relu``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from edgekit._keras import keras
from edgekit.models._common import (
    activation,
    batch_norm,
    check_args,
    check_blocks,
    check_positive,
    classifier,
    conv_bn,
    make_divisible,
    model_input,
    uses_small_stem,
)
from edgekit.models._registry import register_model

BOTTLENECK_FACTOR = 4


def _dense_layer(x: Any, growth_rate: int, bottleneck: bool, name: str) -> Any:
    y = batch_norm(f"{name}_bn1")(x)
    y = activation("relu", f"{name}_relu1")(y)
    if bottleneck:
        y = keras.layers.Conv2D(
            BOTTLENECK_FACTOR * growth_rate, 1, use_bias=False, name=f"{name}_conv1"
        )(y)
        y = batch_norm(f"{name}_bn2")(y)
        y = activation("relu", f"{name}_relu2")(y)
    y = keras.layers.Conv2D(growth_rate, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    return keras.layers.Concatenate(name=f"{name}_concat")([x, y])


def _transition(x: Any, compression: float, name: str) -> Any:
    filters = max(1, math.floor(int(x.shape[-1]) * compression))
    x = batch_norm(f"{name}_bn")(x)
    x = activation("relu", f"{name}_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv")(x)
    return keras.layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def build_densenet(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    *,
    blocks: Sequence[int] = (6, 12, 24, 16),
    growth_rate: int = 32,
    compression: float = 0.5,
    bottleneck: bool = True,
    name: str = "densenet",
) -> keras.Model:
    """Build a DenseNet from its block table.

    Args:
        input_shape: (height, width, channels), sides 32..512.
        classes: number of output classes, >= 2.
        width: multiplier on the growth rate (rounded to a multiple of 8); the stem has
            twice the growth rate, as in the paper.
        blocks: dense layers per dense block.
        growth_rate: k, the channels each dense layer adds, at width 1.0.
        compression: fraction of channels a transition keeps, in (0, 1].
        bottleneck: use the 1x1 bottleneck (4k channels) before each 3x3 (DenseNet-B).
        name: the Keras model name.

    Returns:
        An uncompiled functional model ending in a softmax over ``classes``.

    Raises:
        BadInputError: an argument is out of range.
    """
    check_args(input_shape, classes, width)
    blocks = check_blocks(blocks, None)
    check_positive(growth_rate, "growth_rate")
    compression = check_positive(compression, "compression", upper=1.0)
    growth = make_divisible(growth_rate * width)

    inputs = model_input(input_shape)
    if uses_small_stem(input_shape):
        x = conv_bn(inputs, 2 * growth, 3, "stem_conv")
    else:
        x = conv_bn(inputs, 2 * growth, 7, "stem_conv", stride=2)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

    for b, layers in enumerate(blocks, start=1):
        for layer in range(1, layers + 1):
            x = _dense_layer(x, growth, bottleneck, f"block{b}_layer{layer}")
        if b < len(blocks):
            x = _transition(x, compression, f"transition{b}")
    x = batch_norm("head_bn")(x)
    x = activation("relu", "head_relu")(x)
    return keras.Model(inputs, classifier(x, classes), name=name)


@register_model("densenet121", family="densenet")
def densenet121(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (6, 12, 24, 16),
    growth_rate: int = 32,
    compression: float = 0.5,
) -> keras.Model:
    """DenseNet-121 (BC, k=32, blocks 6-12-24-16): 8.0M parameters, 2.9G MACs at 224."""
    return build_densenet(
        input_shape,
        classes,
        width,
        blocks=blocks,
        growth_rate=growth_rate,
        compression=compression,
        name="densenet121",
    )


@register_model(
    "densenet121_tiny",
    family="densenet",
    canonical={"input_shape": (32, 32, 3), "classes": 10},
    tiny=True,
)
def densenet121_tiny(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (2, 2, 2),
    growth_rate: int = 8,
    compression: float = 0.5,
) -> keras.Model:
    """DenseNet-BC with three blocks of two layers and growth rate 8, for tests."""
    return build_densenet(
        input_shape,
        classes,
        width,
        blocks=blocks,
        growth_rate=growth_rate,
        compression=compression,
        name="densenet121_tiny",
    )
