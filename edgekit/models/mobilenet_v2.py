"""MobileNet v2 (Sandler et al. 2018): inverted residuals with linear bottlenecks.

A block expands its input t times with a 1x1 conv (ReLU6), filters it with a 3x3 depthwise
conv (ReLU6), and projects it back with a linear 1x1 conv; an identity shortcut joins input
and output when stride is 1 and the channel counts match.

Layer names: ``stem_conv``; per block ``block{i}_expand`` (absent when t = 1),
``block{i}_dw``, ``block{i}_project`` (each with ``_bn``; expand and dw with ``_relu``),
``block{i}_add``; ``head_conv`` (+``_bn``, ``_relu``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgekit._keras import keras
from edgekit.models._common import (
    check_args,
    check_blocks,
    check_positive,
    classifier,
    conv_bn,
    depthwise_bn,
    make_divisible,
    model_input,
    uses_small_stem,
)
from edgekit.models._registry import register_model

# (expansion t, filters c, stride s of the first block) per stage; repeats n are BLOCKS.
STAGES: tuple[tuple[int, int, int], ...] = (
    (1, 16, 1),
    (6, 24, 2),
    (6, 32, 2),
    (6, 64, 2),
    (6, 96, 1),
    (6, 160, 2),
    (6, 320, 1),
)
BLOCKS = (1, 2, 3, 4, 3, 3, 1)
STEM_FILTERS = 32
HEAD_FILTERS = 1280


def inverted_residual(
    x: Any, expansion: float, filters: int, stride: int, kernel: int, name: str
) -> Any:
    """One MobileNet v2 block: expand 1x1, depthwise, linear project 1x1, optional add."""
    in_channels = int(x.shape[-1])
    y = x
    if expansion != 1:
        y = conv_bn(y, make_divisible(in_channels * expansion), 1, f"{name}_expand", act="relu6")
    y = depthwise_bn(y, kernel, f"{name}_dw", stride=stride, act="relu6")
    y = conv_bn(y, filters, 1, f"{name}_project", act=None)
    if stride == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def build_mobilenet_v2(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    *,
    blocks: Sequence[int] = BLOCKS,
    expansion: float = 6,
    stages: Sequence[tuple[int, int, int]] = STAGES,
    stem_filters: int = STEM_FILTERS,
    head_filters: int = HEAD_FILTERS,
    name: str = "mobilenet_v2",
) -> keras.Model:
    """Build a MobileNet v2 from its (t, c, n, s) table.

    Args:
        input_shape: (height, width, channels), sides 32..512.
        classes: number of output classes, >= 2.
        width: the width multiplier (channels rounded to a multiple of 8, at least 8); the
            head conv keeps ``head_filters`` when width <= 1.0, as in the paper.
        blocks: inverted residual blocks per stage (n); the paper's are (1, 2, 3, 4, 3, 3, 1).
        expansion: t for every stage whose table t is not 1.
        stages: (t, c, s) per stage at width 1.0.
        stem_filters: filters of the first full 3x3 conv at width 1.0.
        head_filters: filters of the last 1x1 conv at width 1.0.
        name: the Keras model name.

    Returns:
        An uncompiled functional model ending in a softmax over ``classes``.

    Raises:
        BadInputError: an argument is out of range.
    """
    check_args(input_shape, classes, width)
    blocks = check_blocks(blocks, len(stages))
    expansion = check_positive(expansion, "expansion")

    inputs = model_input(input_shape)
    stem_stride = 1 if uses_small_stem(input_shape) else 2
    x = conv_bn(
        inputs,
        make_divisible(stem_filters * width),
        3,
        "stem_conv",
        stride=stem_stride,
        act="relu6",
    )
    index = 0
    for (t, filters, stride), repeats in zip(stages, blocks, strict=True):
        for repeat in range(repeats):
            index += 1
            x = inverted_residual(
                x,
                1 if t == 1 else expansion,
                make_divisible(filters * width),
                stride if repeat == 0 else 1,
                3,
                f"block{index}",
            )
    head = make_divisible(head_filters * width) if width > 1.0 else head_filters
    x = conv_bn(x, head, 1, "head_conv", act="relu6")
    return keras.Model(inputs, classifier(x, classes), name=name)


@register_model("mobilenet_v2", family="mobilenet_v2")
def mobilenet_v2(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = BLOCKS,
    expansion: float = 6,
) -> keras.Model:
    """MobileNet v2 1.0-224: 17 inverted residual blocks, 3.5M parameters, 300M MACs."""
    return build_mobilenet_v2(
        input_shape, classes, width, blocks=blocks, expansion=expansion, name="mobilenet_v2"
    )


@register_model(
    "mobilenet_v2_tiny",
    family="mobilenet_v2",
    canonical={"input_shape": (32, 32, 3), "classes": 10},
    tiny=True,
)
def mobilenet_v2_tiny(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (1, 1, 1, 1, 1, 1, 1),
    expansion: float = 3,
) -> keras.Model:
    """MobileNet v2 with one block per stage, a quarter of the filters and t = 3, for tests."""
    return build_mobilenet_v2(
        input_shape,
        classes,
        width,
        blocks=blocks,
        expansion=expansion,
        stages=tuple((t, filters // 4, stride) for t, filters, stride in STAGES),
        stem_filters=8,
        head_filters=128,
        name="mobilenet_v2_tiny",
    )
