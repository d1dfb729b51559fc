"""SqueezeNet v1.1 (Iandola et al. 2016): fire modules and late downsampling.

A fire module squeezes with 1x1 convs (s filters) and expands with 1x1 and 3x3 convs whose
outputs are concatenated (e filters in all, s < e). Fire sizes follow the paper's
metaparameters: e_i = base_e + incr_e * floor(i / freq), s_i = squeeze_ratio * e_i,
with pct_3x3 of e_i in the 3x3 branch. Max-pools sit before the 2nd and 3rd stages.

Differences from the paper, for edge conversion and small data: every conv has batch norm,
and the classifier is global pooling + Dense ``logits`` (the same function as the paper's
linear conv10 before pooling, without its ReLU, at 1/169 of its MACs at 224).

Layer names: ``stem_conv``, ``stem_pool``; per fire module ``block{i}_squeeze``,
``block{i}_expand1x1``, ``block{i}_expand3x3`` (each with ``_bn``, ``_relu``),
``block{i}_concat``; the max-pool in front of a stage is ``block{i}_pool``.
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
    make_divisible,
    model_input,
    uses_small_stem,
)
from edgekit.models._registry import register_model

BASE_EXPAND = 128
INCREMENT_EXPAND = 128
FREQUENCY = 2


def _fire(x: Any, squeeze: int, expand1x1: int, expand3x3: int, name: str) -> Any:
    s = conv_bn(x, squeeze, 1, f"{name}_squeeze")
    e1 = conv_bn(s, expand1x1, 1, f"{name}_expand1x1")
    e3 = conv_bn(s, expand3x3, 3, f"{name}_expand3x3")
    return keras.layers.Concatenate(name=f"{name}_concat")([e1, e3])


def build_squeezenet(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    *,
    blocks: Sequence[int] = (2, 2, 4),
    squeeze_ratio: float = 0.125,
    pct_3x3: float = 0.5,
    stem_filters: int = 64,
    base_expand: int = BASE_EXPAND,
    increment_expand: int = INCREMENT_EXPAND,
    name: str = "squeezenet",
) -> keras.Model:
    """Build a SqueezeNet v1.1-style network.

    Args:
        input_shape: (height, width, channels), sides 32..512.
        classes: number of output classes, >= 2.
        width: multiplier on the stem and every fire module's filters (multiples of 8).
        blocks: fire modules per stage; a 3x3/2 max-pool precedes every stage.
        squeeze_ratio: squeeze filters / expand filters (SR), in (0, 1).
        pct_3x3: share of the expand filters in the 3x3 branch, in (0, 1).
        stem_filters: filters of the first 3x3 conv at width 1.0.
        base_expand: expand filters of the first fire module at width 1.0.
        increment_expand: expand filters added every second fire module.
        name: the Keras model name.

    Returns:
        An uncompiled functional model ending in a softmax over ``classes``.

    Raises:
        BadInputError: an argument is out of range.
    """
    check_args(input_shape, classes, width)
    blocks = check_blocks(blocks, None)
    check_positive(squeeze_ratio, "squeeze_ratio", upper=0.99)
    check_positive(pct_3x3, "pct_3x3", upper=0.99)

    inputs = model_input(input_shape)
    stem = make_divisible(stem_filters * width)
    if uses_small_stem(input_shape):
        x = conv_bn(inputs, stem, 3, "stem_conv")
    else:
        x = conv_bn(inputs, stem, 3, "stem_conv", stride=2, padding="valid")
    x = keras.layers.MaxPooling2D(3, strides=2, name="stem_pool")(x)

    index = 0
    for stage, repeats in enumerate(blocks):
        for repeat in range(repeats):
            name_i = f"block{index + 1}"
            if stage > 0 and repeat == 0:
                x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name_i}_pool")(x)
            expand = (base_expand + increment_expand * (index // FREQUENCY)) * width
            expand3x3 = make_divisible(expand * pct_3x3)
            expand1x1 = make_divisible(expand * (1.0 - pct_3x3))
            squeeze = make_divisible(expand * squeeze_ratio)
            x = _fire(x, squeeze, expand1x1, expand3x3, name_i)
            index += 1
    return keras.Model(inputs, classifier(x, classes), name=name)


@register_model("squeezenet", family="squeezenet")
def squeezenet(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (2, 2, 4),
    squeeze_ratio: float = 0.125,
) -> keras.Model:
    """SqueezeNet v1.1: eight fire modules, 1.2M parameters, 0.26G MACs at 224."""
    return build_squeezenet(
        input_shape, classes, width, blocks=blocks, squeeze_ratio=squeeze_ratio, name="squeezenet"
    )


@register_model(
    "squeezenet_tiny",
    family="squeezenet",
    canonical={"input_shape": (32, 32, 3), "classes": 10},
    tiny=True,
)
def squeezenet_tiny(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] = (1, 1, 1),
    squeeze_ratio: float = 0.25,
) -> keras.Model:
    """SqueezeNet with one fire module per stage and a quarter of the filters, for tests."""
    return build_squeezenet(
        input_shape,
        classes,
        width,
        blocks=blocks,
        squeeze_ratio=squeeze_ratio,
        stem_filters=16,
        base_expand=32,
        increment_expand=32,
        name="squeezenet_tiny",
    )
