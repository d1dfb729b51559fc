"""Weight pruning: the NumPy pruners zero exactly what they say, TF-MOT reaches its target
in a short fine-tune with each pattern, zeros survive fine-tuning, and the recipe step
checks its options."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from edgekit._keras import keras
from edgekit.compress._steps import StepContext, check_options, get_step
from edgekit.compress.pruning import (
    fine_tune_sparse,
    kernel_of,
    prunable_layers,
    prune_level,
    prune_magnitude,
    prune_sensitivity,
    prune_tfmot,
    weight_sparsity,
)
from edgekit.data import Dataset
from edgekit.errors import BadInputError
from edgekit.models import create


def _model(name: str = "mobilenet_v2_tiny") -> Any:
    keras.utils.set_random_seed(0)
    return create(name, input_shape=(32, 32, 3), classes=10)


def _small_cnn() -> Any:
    """conv (3 input channels) -> depthwise -> 1x1 conv -> dense: fast to fine-tune."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, activation="relu", name="stem")(inputs)
    x = layers.DepthwiseConv2D(3, activation="relu", name="dw")(x)
    x = layers.Conv2D(16, 1, activation="relu", name="pw")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(10, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def _kernels(model: Any) -> dict[str, np.ndarray]:
    return {name: kernel_of(model.get_layer(name)).numpy() for name in prunable_layers(model)}


@pytest.fixture(scope="module")
def mnv2() -> Any:
    """One untouched mobilenet_v2_tiny for the tests that only read it (pruners copy)."""
    return _model()


@pytest.fixture(scope="module")
def small(digits32: Dataset) -> Dataset:
    """256 training images (8 steps per epoch) and no validation keep fine-tunes short."""
    d = digits32
    return Dataset(
        "digits-small", d.x_train[:256], d.y_train[:256], d.x_val[:0], d.y_val[:0], d.x_test,
        d.y_test, d.class_names,
    )  # fmt: skip


def _ctx(data: Dataset) -> StepContext:
    return StepContext(data=data, seed=0, batch_size=32)


# --------------------------------------------------------------------------- NumPy pruners


def test_magnitude_pruner_zeroes_exactly_the_weights_at_or_below_lambda(mnv2: Any) -> None:
    model = mnv2
    before = _kernels(model)
    all_weights = model.get_weights()
    lam = float(np.median(np.abs(before["block5_expand"])))
    pruned, report = prune_magnitude(model, lam)

    after = _kernels(pruned)
    assert set(report) == set(before)
    for name, w in before.items():
        expected = np.where(np.abs(w) <= lam, 0.0, w)
        np.testing.assert_array_equal(after[name], expected)
        assert report[name].threshold == lam
        assert report[name].sparsity == pytest.approx(np.mean(np.abs(w) <= lam))
    # The input model is untouched; biases and batch norms are not pruned.
    for a, b in zip(model.get_weights(), all_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    bn = [
        layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    for name in bn:
        for a, b in zip(
            pruned.get_layer(name).get_weights(), model.get_layer(name).get_weights(), strict=True
        ):
            np.testing.assert_array_equal(a, b)


def test_sensitivity_pruner_threshold_is_s_times_the_layer_std(mnv2: Any) -> None:
    model = mnv2
    before = _kernels(model)
    pruned, report = prune_sensitivity(model, 0.7)
    after = _kernels(pruned)
    for name, w in before.items():
        std = float(np.std(w[w != 0].astype(np.float64)))
        assert report[name].threshold == pytest.approx(0.7 * std, rel=1e-9)
        share = float(np.mean(np.abs(w) <= 0.7 * std))
        assert 0.2 < share < 0.8  # the check below is not vacuous
        assert report[name].sparsity == pytest.approx(share)
        np.testing.assert_array_equal(after[name] == 0, np.abs(w) <= report[name].threshold)


def test_level_pruner_reaches_each_layer_target_within_one_weight(mnv2: Any) -> None:
    model = mnv2
    _, report = prune_level(model, 0.3)
    for r in report.values():
        assert abs(r.sparsity - 0.3) <= max(0.01, 1 / r.weights), r

    targets = {"stem_conv": 0.8, "block2_dw": 0.45, "logits": 0.9}
    pruned, report = prune_level(model, targets)
    assert set(report) == set(targets)
    for name, target in targets.items():
        assert abs(report[name].sparsity - target) <= 1 / report[name].weights
    untouched = weight_sparsity(pruned)["layers"]["block3_expand"]
    assert untouched["zeros"] == 0


def test_level_pruner_breaks_ties_to_hit_the_count() -> None:
    model = _model()
    layer = model.get_layer("logits")
    kernel = np.full(layer.kernel.shape, 0.25, dtype=np.float32)  # every weight tied
    layer.kernel.assign(kernel)
    _, report = prune_level(model, 0.5, layers=["logits"])
    assert report["logits"].zeros == round(0.5 * kernel.size)
    assert report["logits"].threshold == pytest.approx(0.25)


def test_numpy_pruners_prune_group_conv_kernels() -> None:
    model = _model("shufflenet_v1_tiny")
    pruned, report = prune_level(model, 0.5)
    kinds = {r.kind for r in report.values()}
    assert {"GroupConv2D", "DepthwiseConv2D", "Conv2D", "Dense"} <= kinds
    assert weight_sparsity(pruned)["layers"]["block2_gconv1"]["sparsity"] == pytest.approx(0.5)


def test_weight_sparsity_counts_kernels_only() -> None:
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="fc")(inputs)
    model = keras.Model(inputs, outputs)
    model.get_layer("fc").set_weights(
        [np.array([[0, 1], [0, 2], [3, 0], [4, 5]], "f4"), np.zeros(2, "f4")]
    )
    stats = weight_sparsity(model)
    assert stats["overall"] == pytest.approx(3 / 8)
    assert stats["layers"]["fc"] == {"kind": "Dense", "weights": 8, "zeros": 3, "sparsity": 3 / 8}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: prune_magnitude(m, -0.1), "threshold must be a number >= 0"),
        (lambda m: prune_sensitivity(m, float("nan")), "s must be a number >= 0"),
        (lambda m: prune_level(m, 1.5), "sparsity must be a number in [0, 1]"),
        (lambda m: prune_level(m, 0.5, layers=["block1_dw_bn"]), "'block1_dw_bn' has no conv"),
        (lambda m: prune_level(m, 0.5, layers=["nope"]), "'nope' is not in the model"),
        (lambda m: prune_level(m, {"logits": 0.5}, layers=["logits"]), "not both"),
    ],
)
def test_numpy_pruners_refuse_bad_input(mnv2: Any, call: Any, message: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(message)):
        call(mnv2)


def test_masks_keep_zeros_through_fine_tuning(small: Dataset) -> None:
    model = _model()
    pruned, _ = prune_level(model, 0.6)
    before = _kernels(pruned)
    fine_tune_sparse(pruned, _ctx(small), epochs=1)
    after = _kernels(pruned)
    changed = 0
    for name, w in before.items():
        np.testing.assert_array_equal(after[name] == 0, w == 0, err_msg=name)
        changed += int(np.any(after[name] != w))
    assert changed > len(before) // 2  # it really trained


# --------------------------------------------------------------------------- TF-MOT


@pytest.mark.parametrize(
    "options",
    [{"schedule": "constant"}, {"schedule": "polynomial", "initial_sparsity": 0.1, "frequency": 2}],
    ids=["constant", "polynomial"],
)
def test_tfmot_reaches_the_target_in_one_epoch(small: Dataset, options: dict) -> None:
    model = _model()
    original = model.get_weights()
    ctx = _ctx(small)
    pruned = prune_tfmot(model, ctx, 0.5, epochs=1, **options)

    assert [layer.name for layer in pruned.layers] == [layer.name for layer in model.layers]
    assert not any("prune_low_magnitude" in layer.name for layer in pruned.layers)
    stats = weight_sparsity(pruned)["layers"]
    wrapped = ctx.state["pruned_layers"]
    assert len(wrapped) == 16  # every Conv2D and the Dense
    for name in wrapped:
        assert stats[name]["sparsity"] == pytest.approx(0.5, abs=0.02), name
    # TF-MOT 0.8.1 prunes no depthwise weight: left dense, and the user is told.
    assert stats["block3_dw"]["zeros"] == 0
    assert any("block3_dw" in note and "DepthwiseConv2D" in note for note in ctx.notes)
    assert ctx.state["pruned"] is True
    assert ctx.state["sparsity"] == pytest.approx(weight_sparsity(pruned)["overall"])
    assert 0.4 < ctx.state["sparsity"] < 0.5
    for a, b in zip(model.get_weights(), original, strict=True):
        np.testing.assert_array_equal(a, b)


def test_tfmot_2_4_zeroes_two_of_every_four_input_channels(small: Dataset) -> None:
    ctx = _ctx(small)
    pruned = prune_tfmot(_small_cnn(), ctx, granularity="2:4", epochs=1)
    # stem: 3 input channels, not a multiple of 4; dw: TF-MOT prunes no depthwise weight.
    assert ctx.state["pruned_layers"] == ["pw", "logits"]
    assert any("stem" in note and "multiple of 4" in note for note in ctx.notes)
    for name in ("pw", "logits"):
        kernel = kernel_of(pruned.get_layer(name)).numpy()
        # Groups of 4 consecutive input channels (kernel axis -2) at each position and output.
        groups = np.moveaxis(kernel, -2, -1).reshape(-1, 4)
        np.testing.assert_array_equal((groups == 0).sum(axis=1), 2, err_msg=name)
    assert weight_sparsity(pruned)["layers"]["stem"]["zeros"] == 0


def test_tfmot_block_zeroes_whole_blocks(small: Dataset) -> None:
    ctx = _ctx(small)
    pruned = prune_tfmot(_small_cnn(), ctx, 0.5, granularity="block", block_size=(2, 2), epochs=1)
    assert ctx.state["pruned_layers"] == ["logits"]  # TF-MOT blocks need 2-D kernels
    assert any("pw" in note and "2-D kernel" in note for note in ctx.notes)
    kernel = pruned.get_layer("logits").kernel.numpy()  # (16, 10): 8 x 5 blocks of 2x2
    blocks = kernel.reshape(8, 2, 5, 2).transpose(0, 2, 1, 3).reshape(8, 5, 4)
    zero_blocks = (blocks == 0).all(axis=-1)
    assert np.array_equal((blocks == 0).any(axis=-1), zero_blocks)  # no partly zero block
    assert zero_blocks.mean() == pytest.approx(0.5, abs=0.02)

    with pytest.raises(BadInputError, match=r"'pw'.*2-D kernel"):
        prune_tfmot(_small_cnn(), _ctx(small), 0.5, granularity="block", layers=["pw"])


def test_tfmot_skips_group_convs_and_refuses_them_by_name(small: Dataset) -> None:
    model = _model("shufflenet_v1_tiny")
    with pytest.raises(BadInputError) as err:
        prune_tfmot(model, _ctx(small), 0.5, epochs=1, layers=["block1_gconv1", "block2_gconv1"])
    message = str(err.value)
    assert "'block2_gconv1'" in message and "GroupConv2D" in message and "'level'" in message

    ctx = _ctx(small)
    pruned = prune_tfmot(model, ctx, 0.5, epochs=1)
    stats = weight_sparsity(pruned)["layers"]
    group_convs = [n for n, s in stats.items() if s["kind"] == "GroupConv2D"]
    assert group_convs and all(stats[n]["zeros"] == 0 for n in group_convs)
    assert all(any(n in note for note in ctx.notes) for n in group_convs)
    assert stats["block1_gconv1"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert stats["logits"]["sparsity"] == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"frequency": 100}, "frequency 100 is more than the 8 steps"),
        ({"granularity": "2:4", "target_sparsity": 0.7}, "2:4 sparsity is 0.5"),
        ({"schedule": "polynomial", "initial_sparsity": 0.6}, "above the target"),
        ({"schedule": "constant", "initial_sparsity": 0.2}, "polynomial' only"),
        ({"granularity": "2:4", "layers": ["stem_conv"]}, "'stem_conv'.*multiple of 4"),
        ({"layers": ["block1_dw"]}, "'block1_dw'.*prunes none of its weights"),
    ],
)
def test_tfmot_refuses_bad_options_before_training(
    mnv2: Any, small: Dataset, kwargs: dict, message: str
) -> None:
    with pytest.raises(BadInputError, match=message):
        prune_tfmot(mnv2, _ctx(small), **{"epochs": 1, **kwargs})


# --------------------------------------------------------------------------- recipe step


def test_prune_step_runs_a_numpy_method_and_records_state(small: Dataset) -> None:
    step = get_step("prune")
    options = check_options(step, {"method": "level", "sparsity": 0.4}, "test")
    ctx = _ctx(small)
    pruned = step.fn(_model(), ctx, **options)
    assert ctx.state["pruned"] is True
    assert ctx.state["sparsity"] == pytest.approx(0.4, abs=0.01)
    assert weight_sparsity(pruned)["overall"] == pytest.approx(ctx.state["sparsity"])


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"method": "magnitude"}, "needs option 'threshold'"),
        ({"method": "sensitivity"}, "needs option 's'"),
        ({"method": "tfmot", "threshold": 0.1}, "'threshold' applies to method magnitude"),
        ({"method": "level", "granularity": "2:4"}, "'granularity' applies to method tfmot"),
        ({"method": "tfmot", "block": [2, 2]}, "'block' applies to granularity 'block'"),
        ({"method": "tfmot", "granularity": "2:4", "frequency": 3}, "'frequency' does not apply"),
        ({"method": "tfmot", "epochs": 0}, "epochs must be >= 1"),
        ({"method": "level", "learning_rate": 0.01}, "give epochs >= 1"),
        ({"method": "tfmot", "granularity": "block", "block": [2]}, "two integers"),
        ({"method": "tfmot", "sparsity": 1.0}, r"prune.sparsity = 1.0 is not allowed"),
        ({"method": "level", "layers": ["nope"]}, "'nope' is not in the model"),
    ],
)
def test_prune_step_refuses_options_its_method_does_not_use(
    mnv2: Any, small: Dataset, given: dict, message: str
) -> None:
    step = get_step("prune")
    with pytest.raises(BadInputError, match=message):
        options = check_options(step, given, "recipe.toml")
        step.fn(mnv2, _ctx(small), **options)
