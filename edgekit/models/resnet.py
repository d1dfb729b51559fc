"""ResNet (He et al. 2015): residual blocks H(x) = F(x) + x, basic and bottleneck.

Layer names: ``stem_conv``; per block ``block{i}_conv1``/``block{i}_conv2`` (basic) or
``block{i}_reduce``/``block{i}_conv``/``block{i}_expand`` (bottleneck), each with ``_bn`` and
``_relu``; ``block{i}_shortcut`` (+``_bn``) where the shape changes; ``block{i}_add``,
``block{i}_out``. The stride of a bottleneck sits on its 3x3 conv (ResNet v1.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgekit._keras import keras
from edgekit.models._common import (
    activation,
    check_args,
    check_blocks,
    classifier,
    conv_bn,
    make_divisible,
    model_input,
    uses_small_stem,
)
from edgekit.models._registry import register_model

STAGE_FILTERS = (64, 128, 256, 512)
TINY_STAGE_FILTERS = (16, 32, 64, 128)
BOTTLENECK_EXPANSION = 4


def _basic_block(x: Any, filters: int, stride: int, name: str) -> Any:
    shortcut = x
    y = conv_bn(x, filters, 3, f"{name}_conv1", stride=stride)
    y = conv_bn(y, filters, 3, f"{name}_conv2", act=None)
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = conv_bn(x, filters, 1, f"{name}_shortcut", stride=stride, act=None)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return activation("relu", f"{name}_out")(y)


def _bottleneck_block(x: Any, filters: int, stride: int, name: str) -> Any:
    out_filters = filters * BOTTLENECK_EXPANSION
    shortcut = x
    y = conv_bn(x, filters, 1, f"{name}_reduce")
    y = conv_bn(y, filters, 3, f"{name}_conv", stride=stride)
    y = conv_bn(y, out_filters, 1, f"{name}_expand", act=None)
    if stride != 1 or int(x.shape[-1]) != out_filters:
        shortcut = conv_bn(x, out_filters, 1, f"{name}_shortcut", stride=stride, act=None)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return activation("relu", f"{name}_out")(y)


def build_resnet(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    *,
    blocks: Sequence[int] = (2, 2, 2, 2),
    bottleneck: bool = False,
    stage_filters: Sequence[int] = STAGE_FILTERS,
    name: str = "resnet",
) -> keras.Model:
    """Build a ResNet from its stage table.

    Args:
        input_shape: (height, width, channels), sides 32..512.
        classes: number of output classes, >= 2.
        width: multiplier on every stage's filters (rounded to a multiple of 8).
        blocks: residual blocks per stage; the first block of stages 2.. halves the size.
        bottleneck: bottleneck blocks (1x1 reduce, 3x3, 1x1 expand x4) instead of basic.
        stage_filters: filters of each stage at width 1.0 (bottleneck: before the x4).
        name: the Keras model name.

    Returns:
        An uncompiled functional model ending in a softmax over ``classes``.

    Raises:
        BadInputError: an argument is out of range.
    """
    check_args(input_shape, classes, width)
    blocks = check_blocks(blocks, len(stage_filters))
    block_fn = _bottleneck_block if bottleneck else _basic_block

    inputs = model_input(input_shape)
    stem_filters = make_divisible(stage_filters[0] * width)
    if uses_small_stem(input_shape):
        x = conv_bn(inputs, stem_filters, 3, "stem_conv")
    else:
        x = conv_bn(inputs, stem_filters, 7, "stem_conv", stride=2)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

    index = 0
    for stage, (filters, repeats) in enumerate(zip(stage_filters, blocks, strict=True)):
        filters = make_divisible(filters * width)
        for repeat in range(repeats):
            index += 1
            stride = 2 if stage > 0 and repeat == 0 else 1
            x = block_fn(x, filters, stride, f"block{index}")
    return keras.Model(inputs, classifier(x, classes), name=name)


@register_model("resnet18", family="resnet")
def resnet18(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (2, 2, 2, 2),
) -> keras.Model:
    """ResNet-18: basic blocks (2, 2, 2, 2), 11.7M parameters, 1.8G MACs at 224."""
    return build_resnet(input_shape, classes, width, blocks=blocks, name="resnet18")


@register_model("resnet50", family="resnet")
def resnet50(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (3, 4, 6, 3),
) -> keras.Model:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3), 25.6M parameters, 4.1G MACs at 224."""
    return build_resnet(
        input_shape, classes, width, blocks=blocks, bottleneck=True, name="resnet50"
    )


_TINY = {"input_shape": (32, 32, 3), "classes": 10}


@register_model("resnet18_tiny", family="resnet", canonical=_TINY, tiny=True)
def resnet18_tiny(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (1, 1, 1, 1),
) -> keras.Model:
    """ResNet-18 shape with one basic block per stage and filters 16..128, for tests."""
    return build_resnet(
        input_shape,
        classes,
        width,
        blocks=blocks,
        stage_filters=TINY_STAGE_FILTERS,
        name="resnet18_tiny",
    )


@register_model("resnet50_tiny", family="resnet", canonical=_TINY, tiny=True)
def resnet50_tiny(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (1, 1, 1, 1),
) -> keras.Model:
    """ResNet-50 shape with one bottleneck block per stage and filters 16..128, for tests."""
    return build_resnet(
        input_shape,
        classes,
        width,
        blocks=blocks,
        bottleneck=True,
        stage_filters=TINY_STAGE_FILTERS,
        name="resnet50_tiny",
    )
