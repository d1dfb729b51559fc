"""Structured channel pruning: every zoo family shrinks, still runs, converts, and keeps
exactly the weights of the channels it keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit._keras import keras
from edgekit.compress import (
    PlannedChannels,
    channel_importance,
    count_macs,
    prunable_groups,
    prune_channels,
    uniform_channel_plan,
)
from edgekit.compress.channels import _Analysis
from edgekit.converters import ConvertOptions, get_converter
from edgekit.errors import BadInputError
from edgekit.measure import measure_side_by_side, open_runner
from edgekit.models import RechanneledCost, count_model, create, list_models
from edgekit.models._io import load_keras_model, save_keras_model

TINY = [spec.name for spec in list_models(include_tiny=True) if spec.tiny]
# Largest difference of a probability between a tiny pruned (untrained) model and its int8
# TFLite, calibrated and run on the same random images (measured: 0.0015-0.0021).
INT8_PROB_TOLERANCE = 0.01
# Tiny models with several blocks per stage, so residual chains couple 2 or 3 producers.
DEEPER = [
    ("mobilenet_v2_tiny", {"blocks": (1, 2, 3, 1, 1, 1, 1)}),
    ("resnet18_tiny", {"blocks": (2, 2, 1, 1)}),
    ("resnet50_tiny", {"blocks": (2, 1, 1, 1)}),
    ("mnasnet_a1_tiny", {"blocks": (1, 2, 2, 1, 1, 1, 1)}),
]


def _model(name: str, **kwargs: Any) -> Any:
    keras.utils.set_random_seed(0)
    return create(name, input_shape=(32, 32, 3), classes=10, **kwargs)


def _images(n: int = 4, side: int = 32) -> np.ndarray:
    return np.random.default_rng(0).random((n, side, side, 3), dtype=np.float32)


def _logits_model(model: Any) -> Any:
    # Softmax hides differences in the logits; compare before it.
    return keras.Model(model.input, model.get_layer("logits").output)


def _max_diff(a: Any, b: Any, x: np.ndarray) -> float:
    return float(np.abs(_logits_model(a)(x).numpy() - _logits_model(b)(x).numpy()).max())


@pytest.mark.parametrize("name", TINY)
def test_half_pruned_zoo_model_is_smaller_runs_saves_and_converts(
    name: str, tmp_path: Path
) -> None:
    model = _model(name)
    plan = uniform_channel_plan(model, 0.5)
    assert plan, "no prunable group"
    pruned = prune_channels(model, plan)

    before, after = count_macs(model), count_macs(pruned)
    assert after < 0.75 * before, (before, after)
    assert pruned.input_shape == model.input_shape
    assert pruned.output_shape == model.output_shape
    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in pruned.layers)
    for group in prunable_groups(model):
        kept = pruned.get_layer(group.name).get_weights()[0].shape[-1]
        assert kept == plan[group.name], group

    x = _images()
    probs = pruned(x, training=False).numpy()
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    loaded = load_keras_model(save_keras_model(pruned, tmp_path / "pruned.keras"))
    np.testing.assert_allclose(loaded(x).numpy(), probs, atol=1e-6)

    # The converted graph is the pruned network: in fp32 to float precision, in int8 within
    # quantization error of it.
    options = ConvertOptions(stem=name, calibration=_images(8))
    fp32 = get_converter("tflite_fp32").convert(pruned, tmp_path, options)
    np.testing.assert_allclose(open_runner("litert", fp32.path).predict(x), probs, atol=1e-5)
    artifact = get_converter("tflite_int8").convert(pruned, tmp_path, options)
    out = open_runner("litert", artifact.path).predict(x)
    assert out.shape == (4, 10)
    assert float(np.abs(out - probs).max()) < INT8_PROB_TOLERANCE, np.abs(out - probs).max()


@pytest.mark.parametrize("name", TINY)
def test_keeping_every_channel_reproduces_the_model(name: str) -> None:
    model = _model(name)
    plan = {g.name: g.channel_count for g in prunable_groups(model)}
    pruned = prune_channels(model, plan)
    assert count_macs(pruned) == count_macs(model)
    assert _max_diff(model, pruned, _images()) < 1e-5


def _zero_units(model: Any, rng: np.random.Generator) -> dict[str, list[int]]:
    """Randomise batch norms and biases, then make about half the units of every group
    exactly zero at every point of the network; return the plan that removes them."""
    analysis = _Analysis(model)
    graph = analysis.graph
    dead: set[int] = set()
    plan: dict[str, list[int]] = {}
    for name, group in analysis.groups.items():
        classes = group.component.classes
        drop = set(rng.choice(classes, size=len(classes) // 2, replace=False).tolist())
        dead |= drop
        plan[name] = [i for i, r in enumerate(group.channel_class.tolist()) if r not in drop]

    for step in graph.steps:
        layer = step.layer
        weights = layer.get_weights()
        if not weights:
            continue
        out_dead = np.isin(graph.roots(graph.labels[step.outputs[0]]), list(dead))
        if layer.name in graph.producers:
            # A separable conv's output channels come from its pointwise kernel.
            weights[1 if hasattr(layer, "pointwise_kernel") else 0][..., out_dead] = 0.0
        if getattr(layer, "use_bias", False):  # producers and depthwise convs
            weights[-1] = rng.normal(size=weights[-1].shape).astype(np.float32)
            weights[-1][out_dead] = 0.0
        if isinstance(layer, keras.layers.BatchNormalization):
            in_dead = np.isin(graph.roots(graph.labels[step.inputs[0]]), list(dead))
            n = len(in_dead)
            gamma = rng.uniform(0.5, 1.5, n)
            mean = rng.normal(size=n)
            var = rng.uniform(0.5, 1.5, n)
            beta = rng.normal(size=n)
            # BN(0) = beta - gamma * mean / sqrt(var + eps) = 0 on the dead channels.
            beta[in_dead] = gamma[in_dead] * mean[in_dead] / np.sqrt(var[in_dead] + layer.epsilon)
            weights = [w.astype(np.float32) for w in (gamma, beta, mean, var)]
        layer.set_weights(weights)
    return plan


@pytest.mark.parametrize(
    ("name", "options"), [(n, {}) for n in TINY] + DEEPER, ids=lambda v: str(v) if v else ""
)
def test_removing_zero_channels_leaves_outputs_unchanged(name: str, options: dict) -> None:
    # Removed channels are exactly zero everywhere, so any weight copied to a wrong index
    # (after an Add, a Concatenate offset, a depthwise conv, a shuffle) changes the output.
    model = _model(name, **options)
    plan = _zero_units(model, np.random.default_rng(1))
    pruned = prune_channels(model, plan)
    assert count_macs(pruned) < count_macs(model)
    x = _images()
    reference = np.abs(_logits_model(model)(x).numpy()).max()
    assert reference > 1e-3  # the check below is not vacuous
    assert _max_diff(model, pruned, x) < 1e-5 * max(1.0, reference)


def _mixed_layers_model() -> Any:
    layers = keras.layers
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3), name="input")
    a = layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    a = layers.PReLU(name="prelu")(a)
    b = layers.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, name="sep")(a)
    c = layers.Conv2D(6, 1, activation="relu", name="conv2")(a)
    x = layers.Concatenate(name="concat")([b, c])
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, layers.Dense(4, activation="softmax", name="logits")(x))


def test_separable_depthwise_multiplier_flatten_and_dense_prune_exactly() -> None:
    model = _mixed_layers_model()
    groups = {g.name: g for g in prunable_groups(model)}
    assert set(groups) == {"conv1", "sep", "conv2", "fc"}  # not the softmax output
    x = _images(4, side=8)
    full = prune_channels(model, {name: g.channel_count for name, g in groups.items()})
    assert _max_diff(model, full, x) < 1e-6
    plan = _zero_units(model, np.random.default_rng(2))
    pruned = prune_channels(model, plan)
    assert pruned.get_layer("dw").output_shape[-1] == 2 * (len(plan["sep"]) + len(plan["conv2"]))
    assert _max_diff(model, pruned, x) < 1e-6


def _one_conv_model() -> Any:
    inputs = keras.Input((8, 8, 3), name="input")
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    out = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, out)
    kernel = np.zeros((3, 3, 3, 4), dtype=np.float32)
    kernel[0, 0, 0, 0] = 3.0  # L1 3.0, L2 3.0
    kernel[..., 1] = 0.2  # L1 5.4, L2 1.04
    kernel[1, 1, :, 2] = 0.5  # L1 1.5, L2 0.87
    kernel[0, 0, 0, 3] = -2.0  # L1 2.0, L2 2.0
    model.get_layer("conv").set_weights([kernel])
    return model


@pytest.mark.parametrize(("criterion", "kept"), [("l1", [0, 1]), ("l2", [0, 3])])
def test_criterion_keeps_the_filters_with_the_largest_norms(
    criterion: str, kept: list[int]
) -> None:
    model = _one_conv_model()
    scores = channel_importance(model, criterion)["conv"]
    expected = {"l1": [3.0, 5.4, 1.5, 2.0], "l2": [3.0, 0.2 * 27**0.5, 0.5 * 3**0.5, 2.0]}
    np.testing.assert_allclose(scores, expected[criterion], rtol=1e-6)

    pruned = prune_channels(model, {"conv": 2}, criterion=criterion)
    original = model.get_layer("conv").get_weights()[0]
    np.testing.assert_array_equal(pruned.get_layer("conv").get_weights()[0], original[..., kept])
    dense = model.get_layer("logits").get_weights()[0]
    np.testing.assert_array_equal(pruned.get_layer("logits").get_weights()[0], dense[kept])


def test_explicit_indices_keep_those_channels_in_order() -> None:
    model = _one_conv_model()
    pruned = prune_channels(model, {"conv": [3, 1]})
    original = model.get_layer("conv").get_weights()[0]
    np.testing.assert_array_equal(pruned.get_layer("conv").get_weights()[0], original[..., [1, 3]])


@pytest.mark.parametrize(("name", "options"), DEEPER[:2])
def test_residual_groups_are_pruned_consistently(name: str, options: dict) -> None:
    model = _model(name, **options)
    groups = {g.name: g for g in prunable_groups(model)}
    residual = [g for g in groups.values() if len(g.producers) > 1]
    assert residual
    if name.startswith("mobilenet_v2"):
        assert groups["block2_project"].producers == ("block2_project", "block3_project")
        assert groups["block4_project"].producers == (
            "block4_project",
            "block5_project",
            "block6_project",
        )
        assert {"block3_add", "block5_add", "block6_add"} <= set(
            groups["block4_project"].consumers + groups["block2_project"].consumers
        )
    plan = {g.name: max(g.min_channels, g.channel_count // 3) for g in residual}
    pruned = prune_channels(model, plan)
    adds = [layer for layer in pruned.layers if isinstance(layer, keras.layers.Add)]
    assert adds
    for add in adds:
        widths = {int(shape[-1]) for shape in add.input_shape}
        assert len(widths) == 1, (add.name, add.input_shape)
    for group in residual:
        for producer in group.producers:
            assert pruned.get_layer(producer).filters == plan[group.name]


def test_group_names_and_members_are_block_level() -> None:
    groups = {g.name: g for g in prunable_groups(_model("mnasnet_a1_tiny"))}
    se = groups["block3_expand"]
    # The squeeze-excite gate multiplies the expanded channels: its expand conv is coupled.
    assert se.producers == ("block3_expand", "block3_se_expand")
    assert {"block3_dw", "block3_dw_bn", "block3_se_scale", "block3_project"} <= set(se.consumers)
    assert groups["block3_se_reduce"].channel_count == 2
    assert "logits" not in groups  # the model output keeps its classes


def test_shufflenet_v1_prunes_whole_group_aligned_units() -> None:
    model = _model("shufflenet_v1_tiny")
    groups = {g.name: g for g in prunable_groups(model)}
    stage = groups["stem_conv"]
    assert stage.divisor > 1 and stage.channel_count % stage.divisor == 0
    # A grouped conv reading a shuffle of a grouped conv's output fuses every channel.
    assert not any(name.endswith("_gconv1") for name in groups)
    pruned = prune_channels(model, uniform_channel_plan(model, 0.5))
    for layer in pruned.layers:
        if getattr(layer, "groups", 1) > 1:
            assert layer.filters % layer.groups == 0
            assert layer.input_shape[-1] % layer.groups == 0


def _one_line_error(call: Any) -> str:
    with pytest.raises(BadInputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", TINY)
def test_planned_channels_key_the_ops_of_the_network_prune_channels_builds(name: str) -> None:
    """The latency search reads a pruned network's look-up keys from its planned channel
    counts instead of building it: the keys must be exactly those of the built network, for
    single-group and several-group plans, through adds, concatenations, splits, shuffles,
    grouped convs and squeeze-excite."""
    from edgekit.measure.lut import model_ops, rechannel_ops

    model = _model(name)
    groups = prunable_groups(model)
    planned = PlannedChannels(model)
    ops = model_ops(model, "int8")
    rng = np.random.default_rng(1)
    plans = [{}]
    for size in (1, 3):
        chosen = rng.choice(len(groups), size=min(size, len(groups)), replace=False)
        plan = {}
        for i in chosen:
            g = groups[int(i)]
            units = g.channel_count // g.divisor
            plan[g.name] = int(rng.integers(1, units)) * g.divisor if units > 1 else g.divisor
        plans.append(plan)
    counted = RechanneledCost(model)
    for plan in plans:
        pruned = prune_channels(model, plan)
        built = model_ops(pruned, "int8")
        fast = rechannel_ops(ops, planned.layer_channels(plan))
        assert [(o.name, o.key, o.reason) for o in fast] == [
            (o.name, o.key, o.reason) for o in built
        ], plan
        # MACs and parameters too (the MACs and size resources), unless a changed layer is
        # one RechanneledCost does not model (then the search builds the network).
        cost = count_model(pruned)
        assert counted.cost(planned.layer_channels(plan)) == (cost.macs, cost.params), plan
    with pytest.raises(BadInputError, match="unknown prunable group"):
        planned.layer_channels({"no_such_group": 1})


def test_bad_plans_give_one_line_errors() -> None:
    model = _model("mobilenet_v2_tiny")
    groups = {g.name: g for g in prunable_groups(model)}
    expand = groups["block2_expand"]

    message = _one_line_error(lambda: prune_channels(model, {"block99_expand": 4}))
    assert "unknown prunable group 'block99_expand'" in message
    assert "stem_conv" in message and "block2_expand" in message

    for count in (0, expand.channel_count + 1):
        message = _one_line_error(lambda c=count: prune_channels(model, {"block2_expand": c}))
        assert f"cannot keep {count} channels" in message
        assert f"allowed: 1..{expand.channel_count}" in message

    message = _one_line_error(lambda: prune_channels(model, {"block1_project": 4}))
    assert "group 'stem_conv'" in message
    message = _one_line_error(lambda: prune_channels(model, {"logits": 4}))
    assert "cannot be pruned" in message and "softmax" in message
    message = _one_line_error(lambda: prune_channels(model, {"block2_expand": [0, 0, 1]}))
    assert "distinct" in message
    message = _one_line_error(lambda: prune_channels(model, {"block2_expand": 4}, "l3"))
    assert "unknown criterion 'l3'" in message
    message = _one_line_error(lambda: uniform_channel_plan(model, 1.0))
    assert "[0, 1)" in message


def test_units_and_unsupported_models_give_one_line_errors() -> None:
    model = _model("shufflenet_v1_tiny")
    stage = {g.name: g for g in prunable_groups(model)}["stem_conv"]
    message = _one_line_error(lambda: prune_channels(model, {"stem_conv": stage.divisor + 1}))
    assert f"in steps of {stage.divisor}" in message
    message = _one_line_error(lambda: prune_channels(model, {"stem_conv": [0]}))
    assert f"in steps of {stage.divisor}" in message
    message = _one_line_error(lambda: prune_channels(model, {"block2_gconv1": 3}))
    assert "coupled into one unit" in message

    class Subclassed(keras.Model):
        def call(self, x: Any) -> Any:
            return x

    message = _one_line_error(lambda: prunable_groups(Subclassed()))
    assert "not a functional Keras model" in message


@pytest.mark.slow
def test_pruning_half_the_macs_makes_int8_tflite_faster(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = create("mobilenet_v2", input_shape=(96, 96, 3), classes=10, width=1.0)
    pruned = prune_channels(model, uniform_channel_plan(model, 0.3, multiple_of=8))
    ratio = count_macs(pruned) / count_macs(model)
    assert 0.4 < ratio < 0.6, ratio

    calibration = _images(8, side=96)
    converter = get_converter("tflite_int8")
    runners = {}
    for stem, net in (("original", model), ("pruned", pruned)):
        artifact = converter.convert(
            net, tmp_path, ConvertOptions(stem=stem, calibration=calibration)
        )
        runners[stem] = open_runner("litert", artifact.path, threads=1)
    stats = measure_side_by_side(runners, calibration[:1], runs=30, warmup=5)
    assert stats["pruned"].p50 < 0.85 * stats["original"].p50, {
        k: round(v.p50, 3) for k, v in stats.items()
    }
