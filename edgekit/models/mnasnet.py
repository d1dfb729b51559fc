"""MnasNet (Tan et al. 2019) and the factorized hierarchical search space it came from.

The network is a fixed skeleton (3x3/2 stem conv, searched blocks, 1x1 head conv, pooling,
classifier) whose blocks are data: a list of :class:`BlockSpec`, one per block, each giving
the conv op, kernel, squeeze-excite ratio, skip op, filters and number of layers. MnasNet-A1
(:data:`MNASNET_A1_BLOCKS`) and -B1 (:data:`MNASNET_B1_BLOCKS`) are two such lists;
a search samples others and builds them with :func:`build_mnasnet`.

Layer names: ``stem_conv``; per layer ``block{i}_expand``, ``block{i}_dw``,
``block{i}_se_*``, ``block{i}_project`` (``mbconv``), ``block{i}_dw``/``block{i}_project``
(``sepconv``) or ``block{i}_conv`` (``conv``), each with ``_bn``; ``block{i}_add``;
``head_conv``. ``i`` counts layers over the whole network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from edgekit._keras import keras
from edgekit.errors import BadInputError
from edgekit.models._common import (
    check_args,
    check_blocks,
    classifier,
    conv_bn,
    depthwise_bn,
    make_divisible,
    model_input,
    squeeze_excite,
    uses_small_stem,
)
from edgekit.models._registry import register_model

CONV_OPS = ("conv", "sepconv", "mbconv")
SKIP_OPS = ("identity", "none")
STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclass(frozen=True)
class BlockSpec:
    """One block of the MnasNet search space.

    Attributes:
        conv_op: ``"conv"`` (regular kxk conv), ``"sepconv"`` (depthwise kxk + linear 1x1)
            or ``"mbconv"`` (1x1 expand, depthwise kxk, linear 1x1: MBConv``expansion``).
        kernel: depthwise (or regular) kernel size, odd: 3 or 5 in the paper.
        filters: output channels at width 1.0.
        layers: how many layers the block repeats (>= 1).
        stride: stride of the block's first layer (1 or 2); part of the fixed skeleton.
        expansion: MBConv expansion ratio (3 or 6 in the paper); ignored by other ops.
        se_ratio: squeeze-excite channels as a fraction of the layer's input channels;
            0 disables squeeze-excite.
        skip: ``"identity"`` adds a residual where stride is 1 and channels match,
            ``"none"`` never does.
    """

    conv_op: str
    kernel: int
    filters: int
    layers: int
    stride: int = 1
    expansion: int = 6
    se_ratio: float = 0.0
    skip: str = "identity"

    def check(self, index: int) -> None:
        """Raise BadInputError naming the block and field if a value is out of range."""
        problems = []
        if self.conv_op not in CONV_OPS:
            problems.append(f"conv_op {self.conv_op!r} (valid: {', '.join(CONV_OPS)})")
        if not isinstance(self.kernel, int) or self.kernel < 1 or self.kernel % 2 == 0:
            problems.append(f"kernel {self.kernel!r} (valid: odd integer >= 1)")
        if not isinstance(self.filters, int) or self.filters < 1:
            problems.append(f"filters {self.filters!r} (valid: integer >= 1)")
        if not isinstance(self.layers, int) or self.layers < 1:
            problems.append(f"layers {self.layers!r} (valid: integer >= 1)")
        if self.stride not in (1, 2):
            problems.append(f"stride {self.stride!r} (valid: 1, 2)")
        if not isinstance(self.expansion, int | float) or self.expansion <= 0:
            problems.append(f"expansion {self.expansion!r} (valid: > 0)")
        if not isinstance(self.se_ratio, int | float) or not 0 <= self.se_ratio <= 1:
            problems.append(f"se_ratio {self.se_ratio!r} (valid: 0..1)")
        if self.skip not in SKIP_OPS:
            problems.append(f"skip {self.skip!r} (valid: {', '.join(SKIP_OPS)})")
        if problems:
            raise BadInputError(f"MnasNet block {index} has bad {'; '.join(problems)}")


# MnasNet-A1 (paper, Figure 7): SepConv k3; MBConv6 k3 x2; MBConv3 k5 SE x3; MBConv6 k3 x4;
# MBConv6 k3 SE x2; MBConv6 k5 SE x3; MBConv6 k3 x1.
MNASNET_A1_BLOCKS: tuple[BlockSpec, ...] = (
    BlockSpec("sepconv", 3, 16, 1, stride=1, expansion=1, skip="none"),
    BlockSpec("mbconv", 3, 24, 2, stride=2, expansion=6),
    BlockSpec("mbconv", 5, 40, 3, stride=2, expansion=3, se_ratio=0.25),
    BlockSpec("mbconv", 3, 80, 4, stride=2, expansion=6),
    BlockSpec("mbconv", 3, 112, 2, stride=1, expansion=6, se_ratio=0.25),
    BlockSpec("mbconv", 5, 160, 3, stride=2, expansion=6, se_ratio=0.25),
    BlockSpec("mbconv", 3, 320, 1, stride=1, expansion=6),
)

# MnasNet-B1 (the paper's first version, no squeeze-excite).
MNASNET_B1_BLOCKS: tuple[BlockSpec, ...] = (
    BlockSpec("sepconv", 3, 16, 1, stride=1, expansion=1, skip="none"),
    BlockSpec("mbconv", 3, 24, 3, stride=2, expansion=3),
    BlockSpec("mbconv", 5, 40, 3, stride=2, expansion=3),
    BlockSpec("mbconv", 5, 80, 3, stride=2, expansion=6),
    BlockSpec("mbconv", 3, 96, 2, stride=1, expansion=6),
    BlockSpec("mbconv", 5, 192, 4, stride=2, expansion=6),
    BlockSpec("mbconv", 3, 320, 1, stride=1, expansion=6, skip="none"),
)


def _layer(x: Any, spec: BlockSpec, filters: int, stride: int, name: str) -> Any:
    in_channels = int(x.shape[-1])
    se_channels = max(1, int(in_channels * spec.se_ratio))
    y = x
    if spec.conv_op == "conv":
        y = conv_bn(y, filters, spec.kernel, f"{name}_conv", stride=stride)
        if spec.se_ratio > 0:
            y = squeeze_excite(y, se_channels, name)
    else:
        if spec.conv_op == "mbconv" and spec.expansion != 1:
            y = conv_bn(y, make_divisible(in_channels * spec.expansion), 1, f"{name}_expand")
        y = depthwise_bn(y, spec.kernel, f"{name}_dw", stride=stride)
        if spec.se_ratio > 0:
            y = squeeze_excite(y, se_channels, name)
        y = conv_bn(y, filters, 1, f"{name}_project", act=None)
    if spec.skip == "identity" and stride == 1 and in_channels == filters:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def build_mnasnet(
    blocks: Sequence[BlockSpec] = MNASNET_A1_BLOCKS,
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    *,
    stem_filters: int = STEM_FILTERS,
    head_filters: int = HEAD_FILTERS,
    name: str = "mnasnet",
) -> keras.Model:
    """Build an MnasNet-style network from a per-block spec list.

    Args:
        blocks: the searched blocks, in order (see :class:`BlockSpec`).
        input_shape: (height, width, channels), sides 32..512.
        classes: number of output classes, >= 2.
        width: multiplier on every block's filters and the stem (multiples of 8, at least
            8); the head conv keeps ``head_filters`` when width <= 1.0.
        stem_filters: filters of the 3x3/2 stem conv at width 1.0.
        head_filters: filters of the 1x1 head conv at width 1.0.
        name: the Keras model name.

    Returns:
        An uncompiled functional model ending in a softmax over ``classes``.

    Raises:
        BadInputError: an argument or a block spec is out of range.
    """
    check_args(input_shape, classes, width)
    if isinstance(blocks, str) or not isinstance(blocks, Sequence) or not blocks:
        raise BadInputError(f"blocks must be a non-empty list of BlockSpec; got {blocks!r}")
    for i, spec in enumerate(blocks, start=1):
        if not isinstance(spec, BlockSpec):
            raise BadInputError(f"MnasNet block {i} must be a BlockSpec; got {spec!r}")
        spec.check(i)

    inputs = model_input(input_shape)
    stem_stride = 1 if uses_small_stem(input_shape) else 2
    x = conv_bn(inputs, make_divisible(stem_filters * width), 3, "stem_conv", stride=stem_stride)
    index = 0
    for spec in blocks:
        filters = make_divisible(spec.filters * width)
        for repeat in range(spec.layers):
            index += 1
            x = _layer(x, spec, filters, spec.stride if repeat == 0 else 1, f"block{index}")
    head = make_divisible(head_filters * width) if width > 1.0 else head_filters
    x = conv_bn(x, head, 1, "head_conv")
    return keras.Model(inputs, classifier(x, classes), name=name)


def _with_layers(specs: Sequence[BlockSpec], layers: Sequence[int] | None) -> list[BlockSpec]:
    if layers is None:
        return list(specs)
    counts = check_blocks(layers, len(specs))
    return [replace(spec, layers=n) for spec, n in zip(specs, counts, strict=True)]


@register_model("mnasnet_a1", family="mnasnet")
def mnasnet_a1(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] | None = None,
) -> keras.Model:
    """MnasNet-A1: MBConv3/6, kernels 3/5, squeeze-excite; 3.9M parameters, 312M MACs."""
    return build_mnasnet(
        _with_layers(MNASNET_A1_BLOCKS, blocks), input_shape, classes, width, name="mnasnet_a1"
    )


@register_model(
    "mnasnet_a1_tiny",
    family="mnasnet",
    canonical={"input_shape": (32, 32, 3), "classes": 10},
    tiny=True,
)
def mnasnet_a1_tiny(
    input_shape: Sequence[int] = (224, 224, 3),
    classes: int = 1000,
    width: float = 1.0,
    blocks: Sequence[int] | None = None,
) -> keras.Model:
    """MnasNet-A1 ops with one layer per block and a quarter of the filters, for tests."""
    tiny = [replace(s, layers=1, filters=max(8, s.filters // 4)) for s in MNASNET_A1_BLOCKS]
    return build_mnasnet(
        _with_layers(tiny, blocks),
        input_shape,
        classes,
        width,
        stem_filters=8,
        head_filters=128,
        name="mnasnet_a1_tiny",
    )
