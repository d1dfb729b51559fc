"""MobileNet v1 (Howard et al. 2017): depthwise separable convolutions.

Each block is a 3x3 depthwise conv (D_K·D_K·M·D_F·D_F MACs) followed by a 1x1 pointwise
conv (M·N·D_F·D_F), a 1/N + 1/D_K² fraction of a standard 3x3 conv's cost. ReLU6 after each,
as in the reference implementations.

Layer names: ``stem_conv`` (+``_bn``, ``_relu``); per block ``block{i}_dw``,
``block{i}_pw``, each with ``_bn`` and ``_relu``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgekit._keras import keras
from edgekit.models._common import (
    check_args,
    check_blocks,
    classifier,
    conv_bn,
    depthwise_bn,
    make_divisible,
    model_input,
    uses_small_stem,
)
from edgekit.models._registry import register_model

# (filters, stride of the stage's first block) for each stage at width 1.0.
STAGES: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (256, 2), (512, 2), (1024, 2))
BLOCKS = (1, 2, 2, 6, 2)
STEM_FILTERS = 32


def _separable_block(x: Any, filters: int, stride: int, name: str) -> Any:
    x = depthwise_bn(x, 3, f"{name}_dw", stride=stride, act="relu6")
    return conv_bn(x, filters, 1, f"{name}_pw", act="relu6")


def build_mobilenet_v1(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    *,
    blocks: Sequence[int] = BLOCKS,
    stages: Sequence[tuple[int, int]] = STAGES,
    stem_filters: int = STEM_FILTERS,
    name: str = "mobilenet_v1",
) -> keras.Model:
    """Build a MobileNet v1 from its stage table.

    Args:
        input_shape: (height, width, channels), sides 32..512.
        classes: number of output classes, >= 2.
        width: the width multiplier alpha (channels rounded to a multiple of 8, at least 8).
        blocks: separable blocks per stage; the paper's 13 are (1, 2, 2, 6, 2).
        stages: (filters, stride) per stage at width 1.0.
        stem_filters: filters of the first full 3x3 conv at width 1.0.
        name: the Keras model name.

    Returns:
        An uncompiled functional model ending in a softmax over ``classes``.

    Raises:
        BadInputError: an argument is out of range.
    """
    check_args(input_shape, classes, width)
    blocks = check_blocks(blocks, len(stages))

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
    for (filters, stride), repeats in zip(stages, blocks, strict=True):
        for repeat in range(repeats):
            index += 1
            x = _separable_block(
                x, make_divisible(filters * width), stride if repeat == 0 else 1, f"block{index}"
            )
    return keras.Model(inputs, classifier(x, classes), name=name)


@register_model("mobilenet_v1", family="mobilenet_v1")
def mobilenet_v1(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = BLOCKS,
) -> keras.Model:
    """MobileNet v1 1.0-224: 13 separable blocks, 4.2M parameters, 569M MACs."""
    return build_mobilenet_v1(input_shape, classes, width, blocks=blocks, name="mobilenet_v1")


@register_model(
    "mobilenet_v1_tiny",
    family="mobilenet_v1",
    canonical={"input_shape": (32, 32, 3), "classes": 10},
    tiny=True,
)
def mobilenet_v1_tiny(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (1, 1, 1, 1, 1),
) -> keras.Model:
    """MobileNet v1 with one block per stage and a quarter of the filters, for tests."""
    return build_mobilenet_v1(
        input_shape,
        classes,
        width,
        blocks=blocks,
        stages=tuple((filters // 4, stride) for filters, stride in STAGES),
        stem_filters=8,
        name="mobilenet_v1_tiny",
    )
