"""ShuffleNet v1 (Zhang et al. 2017) and v2 (Ma et al. 2018).

v1 unit: 1x1 group conv (g groups) -> channel shuffle -> 3x3 depthwise -> 1x1 group conv;
identity + add at stride 1, 3x3/2 average-pooled shortcut + concat at stride 2. The
bottleneck has a quarter of the unit's output channels; the first 1x1 of stage 2 is not
grouped (its input has only 24 channels), as in the paper.

v2 unit: at stride 1 the channels are split in half, one half goes through
1x1 -> 3x3 depthwise -> 1x1 and is concatenated with the other, then shuffled; at stride 2
both branches see the whole input (the left one is 3x3/2 depthwise -> 1x1).

Layer names: ``stem_conv``, ``stem_pool``; per unit ``block{i}_gconv1``, ``block{i}_dw``,
``block{i}_gconv2`` (v1) or ``block{i}_split``, ``block{i}_pw1``, ``block{i}_dw``,
``block{i}_pw2``, ``block{i}_short_dw``, ``block{i}_short_pw`` (v2), with ``_bn``/``_relu``;
``block{i}_shuffle_*``, ``block{i}_add``/``block{i}_concat``; ``head_conv`` (v2).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from edgekit._keras import keras
from edgekit.errors import BadInputError
from edgekit.models._common import (
    activation,
    check_args,
    check_blocks,
    classifier,
    conv_bn,
    depthwise_bn,
    make_divisible,
    model_input,
    uses_small_stem,
)
from edgekit.models._layers import ChannelSplit, channel_shuffle
from edgekit.models._registry import register_model

STEM_FILTERS = 24
BLOCKS = (4, 8, 4)
# ShuffleNet v1 stage output channels at width 1.0, per number of groups (paper, Table 1).
V1_STAGE_FILTERS: dict[int, tuple[int, int, int]] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
V2_STAGE_FILTERS = (116, 232, 464)
V2_HEAD_FILTERS = 1024


def _stem(inputs: Any, filters: int, input_shape: Sequence[int]) -> Any:
    if uses_small_stem(input_shape):
        return conv_bn(inputs, filters, 3, "stem_conv")
    x = conv_bn(inputs, filters, 3, "stem_conv", stride=2)
    return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)


def _v1_unit(x: Any, out_channels: int, groups: int, stride: int, first: bool, name: str) -> Any:
    in_channels = int(x.shape[-1])
    branch_out = out_channels - in_channels if stride == 2 else out_channels
    bottleneck = out_channels // 4
    y = conv_bn(x, bottleneck, 1, f"{name}_gconv1", groups=1 if first else groups)
    if groups > 1:
        y = channel_shuffle(y, groups, f"{name}_shuffle")
    y = depthwise_bn(y, 3, f"{name}_dw", stride=stride, act=None)
    y = conv_bn(y, branch_out, 1, f"{name}_gconv2", groups=groups, act=None)
    if stride == 2:
        shortcut = keras.layers.AveragePooling2D(
            3, strides=2, padding="same", name=f"{name}_shortcut_pool"
        )(x)
        y = keras.layers.Concatenate(name=f"{name}_concat")([shortcut, y])
    else:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return activation("relu", f"{name}_out")(y)


def build_shufflenet_v1(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    *,
    groups: int = 3,
    blocks: Sequence[int] = BLOCKS,
    stage_filters: Sequence[int] | None = None,
    name: str = "shufflenet_v1",
) -> keras.Model:
    """Build a ShuffleNet v1.

    Args:
        input_shape: (height, width, channels), sides 32..512.
        classes: number of output classes, >= 2.
        width: the scale factor s (ShuffleNet s×); stage channels are rounded to a multiple
            of 4·groups so that the bottleneck splits into the groups.
        groups: g, the groups of the pointwise convs: 1, 2, 3, 4 or 8.
        blocks: units per stage (the first of each has stride 2); the paper's are (4, 8, 4).
        stage_filters: output channels per stage at width 1.0; default the paper's for g.
        name: the Keras model name.

    Returns:
        An uncompiled functional model ending in a softmax over ``classes``.

    Raises:
        BadInputError: an argument is out of range.
    """
    check_args(input_shape, classes, width)
    if not isinstance(groups, int) or groups not in V1_STAGE_FILTERS:
        raise BadInputError(
            f"groups must be one of {sorted(V1_STAGE_FILTERS)} for ShuffleNet v1; got {groups!r}"
        )
    base = tuple(stage_filters) if stage_filters is not None else V1_STAGE_FILTERS[groups]
    blocks = check_blocks(blocks, len(base))
    channels = [make_divisible(c * width, 4 * groups) for c in base]
    # The stride-2 concat needs stage 2's output above the stem's channels.
    stem = min(STEM_FILTERS, channels[0] // 2)
    if any(later <= earlier for earlier, later in pairwise(channels)):
        raise BadInputError(f"stage_filters must increase from stage to stage; got {list(base)}")

    inputs = model_input(input_shape)
    x = _stem(inputs, stem, input_shape)
    index = 0
    for stage, (out_channels, repeats) in enumerate(zip(channels, blocks, strict=True)):
        for repeat in range(repeats):
            index += 1
            stride = 2 if repeat == 0 else 1
            first = stage == 0 and repeat == 0
            x = _v1_unit(x, out_channels, groups, stride, first, f"block{index}")
    return keras.Model(inputs, classifier(x, classes), name=name)


def _v2_unit(x: Any, out_channels: int, stride: int, name: str) -> Any:
    branch = out_channels // 2
    if stride == 1:
        left, right = ChannelSplit(2, name=f"{name}_split")(x)
    else:
        left = depthwise_bn(x, 3, f"{name}_short_dw", stride=2, act=None)
        left = conv_bn(left, branch, 1, f"{name}_short_pw")
        right = x
    right = conv_bn(right, branch, 1, f"{name}_pw1")
    right = depthwise_bn(right, 3, f"{name}_dw", stride=stride, act=None)
    right = conv_bn(right, branch, 1, f"{name}_pw2")
    y = keras.layers.Concatenate(name=f"{name}_concat")([left, right])
    return channel_shuffle(y, 2, f"{name}_shuffle")


def build_shufflenet_v2(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    *,
    blocks: Sequence[int] = BLOCKS,
    stage_filters: Sequence[int] = V2_STAGE_FILTERS,
    head_filters: int = V2_HEAD_FILTERS,
    name: str = "shufflenet_v2",
) -> keras.Model:
    """Build a ShuffleNet v2.

    Args:
        input_shape: (height, width, channels), sides 32..512.
        classes: number of output classes, >= 2.
        width: multiplier on the stage channels (rounded to a multiple of 4, at least 8);
            1.0 gives the paper's 1x (116, 232, 464); other paper widths (0.5x = 48, ...)
            are not a linear scale, pass ``stage_filters`` for them. The head conv keeps
            ``head_filters`` when width <= 1.0.
        blocks: units per stage (the first of each has stride 2); the paper's are (4, 8, 4).
        stage_filters: output channels per stage at width 1.0.
        head_filters: filters of the last 1x1 conv (conv5) at width 1.0.
        name: the Keras model name.

    Returns:
        An uncompiled functional model ending in a softmax over ``classes``.

    Raises:
        BadInputError: an argument is out of range.
    """
    check_args(input_shape, classes, width)
    blocks = check_blocks(blocks, len(stage_filters))
    channels = [make_divisible(c * width, 4) for c in stage_filters]
    channels = [max(8, c) for c in channels]

    inputs = model_input(input_shape)
    x = _stem(inputs, STEM_FILTERS, input_shape)
    index = 0
    for out_channels, repeats in zip(channels, blocks, strict=True):
        for repeat in range(repeats):
            index += 1
            x = _v2_unit(x, out_channels, 2 if repeat == 0 else 1, f"block{index}")
    head = make_divisible(head_filters * width) if width > 1.0 else head_filters
    x = conv_bn(x, head, 1, "head_conv")
    return keras.Model(inputs, classifier(x, classes), name=name)


_TINY = {"input_shape": (32, 32, 3), "classes": 10}


@register_model("shufflenet_v1", family="shufflenet")
def shufflenet_v1(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    groups: int = 3,
    blocks: Sequence[int] = BLOCKS,
) -> keras.Model:
    """ShuffleNet v1 1x (g=3): 1.9M parameters, 140M MACs at 224."""
    return build_shufflenet_v1(
        input_shape, classes, width, groups=groups, blocks=blocks, name="shufflenet_v1"
    )


@register_model("shufflenet_v2", family="shufflenet")
def shufflenet_v2(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = BLOCKS,
) -> keras.Model:
    """ShuffleNet v2 1x: 2.3M parameters, 146M MACs at 224."""
    return build_shufflenet_v2(input_shape, classes, width, blocks=blocks, name="shufflenet_v2")


@register_model("shufflenet_v1_tiny", family="shufflenet", canonical=_TINY, tiny=True)
def shufflenet_v1_tiny(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    groups: int = 3,
    blocks: Sequence[int] = (1, 2, 1),
) -> keras.Model:
    """ShuffleNet v1 (g=3) with a quarter of the channels and (1, 2, 1) units, for tests."""
    # An unknown g gets None here and a clear error from the builder.
    paper = V1_STAGE_FILTERS.get(groups) if isinstance(groups, int) else None
    return build_shufflenet_v1(
        input_shape,
        classes,
        width,
        groups=groups,
        blocks=blocks,
        stage_filters=tuple(c // 4 for c in paper) if paper else None,
        name="shufflenet_v1_tiny",
    )


@register_model("shufflenet_v2_tiny", family="shufflenet", canonical=_TINY, tiny=True)
def shufflenet_v2_tiny(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (1, 2, 1),
) -> keras.Model:
    """ShuffleNet v2 with channels (32, 64, 128), (1, 2, 1) units and a 128 head, for tests."""
    return build_shufflenet_v2(
        input_shape,
        classes,
        width,
        blocks=blocks,
        stage_filters=(32, 64, 128),
        head_filters=128,
        name="shufflenet_v2_tiny",
    )
