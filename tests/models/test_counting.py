"""The MAC / parameter counter, checked against hand-computed layers and the papers."""

from __future__ import annotations

from functools import cache

import pytest

from edgekit._keras import keras
from edgekit.errors import BadInputError
from edgekit.models import (
    ModelCost,
    count_layers,
    count_model,
    create,
    get_model_spec,
    list_models,
    separable_macs,
    standard_conv_macs,
)

# (MACs, parameters) of the papers' canonical 224x224, 1000-class, width-1.0 networks.
PAPER = {
    "mobilenet_v1": (569e6, 4.2e6),
    "mobilenet_v2": (300e6, 3.47e6),
}


def _hand_model() -> keras.Model:
    inputs = keras.Input((16, 16, 3), name="input")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(inputs)  # 8x8x8
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.Conv2D(16, 1, use_bias=False, name="pw")(x)  # 8x8x16
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(24, 3, padding="same", groups=4, name="gconv")(x)  # 8x8x24
    x = keras.layers.DepthwiseConv2D(3, strides=2, depth_multiplier=2, name="dw2")(x)  # 3x3x48
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, name="fc")(x)
    return keras.Model(inputs, outputs)


def test_counter_matches_hand_computed_layers() -> None:
    model = _hand_model()
    costs = {c.name: c for c in count_layers(model)}

    conv = costs["conv"]
    assert (conv.kind, conv.macs, conv.params) == ("conv", 3 * 3 * 3 * 8 * 8 * 8, 3 * 3 * 3 * 8 + 8)
    assert (conv.kernel, conv.stride, conv.in_channels, conv.out_channels) == ((3, 3), (2, 2), 3, 8)
    assert conv.output_shape == (None, 8, 8, 8)

    dw = costs["dw"]
    assert (dw.kind, dw.macs, dw.params) == ("depthwise", 3 * 3 * 8 * 8 * 8, 3 * 3 * 8)
    pw = costs["pw"]
    assert (pw.kind, pw.macs, pw.params) == ("conv", 8 * 16 * 8 * 8, 8 * 16)

    gconv = costs["gconv"]
    assert gconv.kind == "group_conv"
    assert gconv.groups == 4
    assert gconv.macs == 3 * 3 * (16 // 4) * 24 * 8 * 8
    assert gconv.params == 3 * 3 * 4 * 24 + 24

    dw2 = costs["dw2"]
    assert dw2.macs == 3 * 3 * 24 * 2 * 3 * 3
    assert dw2.out_channels == 48

    fc = costs["fc"]
    assert (fc.kind, fc.macs, fc.params) == ("dense", 48 * 10, 48 * 10 + 10)

    bn = costs["bn"]
    assert (bn.kind, bn.macs, bn.params, bn.trainable_params) == ("other", 0, 4 * 16, 2 * 16)
    assert costs["pool"].macs == 0

    total = count_model(model)
    assert isinstance(total, ModelCost)
    assert total.macs == sum(c.macs for c in costs.values())
    assert total.params == model.count_params()
    assert total.by_kind()["depthwise"] == dw.macs + dw2.macs


def test_separable_block_is_the_papers_fraction_of_a_standard_conv() -> None:
    costs = {c.name: c for c in count_layers(_hand_model())}
    dk, m, n, df = 3, 8, 16, 8
    separable = costs["dw"].macs + costs["pw"].macs
    assert separable == separable_macs(dk, m, n, df) == dk * dk * m * df * df + m * n * df * df
    standard = standard_conv_macs(dk, m, n, df)
    assert standard == dk * dk * m * n * df * df
    assert separable / standard == pytest.approx(1 / n + 1 / dk**2)


def test_dynamic_input_size_is_refused() -> None:
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv")(inputs))
    with pytest.raises(BadInputError, match=r"layer 'conv'.*not static"):
        count_model(model)


def test_nested_models_are_flattened() -> None:
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 1, name="c")(inner_in), name="inner")
    outer_in = keras.Input((8, 8, 4))
    outer = keras.Model(outer_in, inner(outer_in))
    names = [c.name for c in count_layers(outer)]
    assert "inner/c" in names
    assert count_model(outer).macs == 4 * 4 * 8 * 8


@cache
def _canonical(name: str) -> ModelCost:
    return count_model(create(name, **get_model_spec(name).canonical))


@pytest.mark.parametrize("name", sorted(PAPER))
def test_canonical_costs_match_the_paper(name: str) -> None:
    macs, params = PAPER[name]
    cost = _canonical(name)
    assert cost.macs == pytest.approx(macs, rel=0.03)
    assert cost.params == pytest.approx(params, rel=0.03)


def test_report_canonical_costs(record_property: pytest.RecordProperty) -> None:
    """Print every canonical model's MACs and parameters (run with -s to see them)."""
    print()
    for spec in list_models():
        cost = _canonical(spec.name)
        record_property(spec.name, {"macs": cost.macs, "params": cost.params})
        print(
            f"{spec.name:15s} {cost.macs / 1e6:8.1f}M MACs  {cost.params / 1e6:6.3f}M params "
            f"({cost.trainable_params / 1e6:.3f}M trainable)"
        )
        assert cost.macs > 0 and cost.params > 0


def test_tfmot_wrapped_layers_count_as_their_inner_layer() -> None:
    # A QAT model (TF-MOT wrappers own the kernels) must report the MACs and parameters of
    # the network, not zero MACs and the quantizers' range variables.
    from edgekit.compress.qat import prepare_qat
    from edgekit.models import count_model, create

    model = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10)
    qat, _ = prepare_qat(model)
    plain, wrapped = count_model(model), count_model(qat)
    assert wrapped.macs == plain.macs > 0
    by_name = {c.name: c.params for c in plain.layers}
    for cost in wrapped.layers:
        inner = cost.name.removeprefix("quant_")
        if inner in by_name:
            assert cost.params == by_name[inner], cost.name
    assert abs(wrapped.params - plain.params) <= 3  # the input quantizer's range and step
