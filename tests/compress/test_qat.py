"""Quantization-aware training: the fake-quant model converts to a full-int8 TFLite model that
agrees with it, saves and loads as .keras, leaves what TF-MOT cannot quantize in float (and
says so), and keeps the zeros and clusters of earlier pruning and clustering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit._keras import keras
from edgekit.compress._steps import StepContext, check_options, get_step
from edgekit.compress.qat import float_layers, quantize_aware, resolve_preserve
from edgekit.compress.twin import float_twin, model_for_converter
from edgekit.converters import ConvertOptions, get_converter
from edgekit.data import Dataset
from edgekit.errors import BadInputError
from edgekit.measure import open_runner
from edgekit.models import GroupConv2D, create
from edgekit.models._io import load_keras_model, save_keras_model
from edgekit.train import evaluate_probs

CLUSTERS = 8
KERNELS = ("kernel", "depthwise_kernel")


def _small(data: Dataset, n: int = 128) -> Dataset:
    # Fine-tuning only has to move the weights; a few batches keep the tests short.
    return Dataset(
        "digits-small",
        data.x_train[:n],
        data.y_train[:n],
        data.x_val[:32],
        data.y_val[:32],
        data.x_test,
        data.y_test,
        data.class_names,
    )


def _kernels(model: Any) -> dict[str, np.ndarray]:
    """Conv / depthwise / dense kernels by layer name (QAT wrappers looked through)."""
    out = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        for var in layer.trainable_weights:  # (a QAT wrapper tracks its layer's kernel)
            if var.name.rsplit("/", 1)[-1].split(":")[0] in KERNELS:
                out[inner.name] = np.asarray(var.numpy())
    return out


def _tfmot() -> Any:
    import tensorflow_model_optimization as tfmot

    return tfmot


@pytest.fixture(scope="module")
def qat_tiny(trained_tiny: tuple[Any, Path], digits32: Dataset) -> tuple[Any, StepContext]:
    """The trained tiny model after the registered ``qat`` step (1 epoch)."""
    model, _ = trained_tiny
    step = get_step("qat")
    options = check_options(step, {"epochs": 1}, "test")
    ctx = StepContext(data=digits32)
    qat = step.fn(model, ctx, **options)
    return qat, ctx


def test_qat_step_registers_its_options_and_state(qat_tiny: tuple[Any, StepContext]) -> None:
    qat, ctx = qat_tiny
    step = get_step("qat")
    assert set(step.options) == {"epochs", "learning_rate", "preserve"}
    assert ctx.state["qat"] is True
    assert ctx.notes == []  # every layer of mobilenet_v2 is quantized
    wrappers = [layer for layer in qat.layers if type(layer).__name__ == "QuantizeWrapperV2"]
    assert any(layer.layer.name == "block1_project" for layer in wrappers)
    with pytest.raises(BadInputError, match="already holds TF-MOT wrappers"):
        quantize_aware(qat, ctx, epochs=0)
    with pytest.raises(BadInputError, match="preserve"):
        check_options(step, {"preserve": "all"}, "test")
    with pytest.raises(BadInputError, match="epochs"):
        check_options(step, {"epochs": -1}, "test")


def test_qat_model_converts_to_full_int8_and_agrees(
    qat_tiny: tuple[Any, StepContext], digits32: Dataset, tmp_path: Path
) -> None:
    qat, _ = qat_tiny
    options = ConvertOptions(stem="qat", calibration=digits32.x_train)
    artifact = get_converter("tflite_int8").convert(qat, tmp_path, options)
    runner = open_runner("litert", artifact.path)
    tensor_types = {np.dtype(t["dtype"]) for t in runner.interpreter.get_tensor_details()}
    assert tensor_types <= {np.dtype(np.int8), np.dtype(np.int32)}, tensor_types

    keras_probs = evaluate_probs(qat, digits32.x_test)
    tflite_probs = runner.predict(digits32.x_test)
    agreement = np.mean(keras_probs.argmax(1) == tflite_probs.argmax(1))
    keras_acc = np.mean(keras_probs.argmax(1) == digits32.y_test)
    tflite_acc = np.mean(tflite_probs.argmax(1) == digits32.y_test)
    assert keras_acc > 0.8  # trained: the agreement below is not that of two constant models
    assert agreement >= 0.97, agreement
    assert abs(keras_acc - tflite_acc) <= 0.02, (keras_acc, tflite_acc)


def test_qat_model_saves_and_loads_in_safe_mode(
    qat_tiny: tuple[Any, StepContext], digits32: Dataset, tmp_path: Path
) -> None:
    qat, _ = qat_tiny
    x = digits32.x_test[:64]
    loaded = load_keras_model(save_keras_model(qat, tmp_path / "qat.keras"))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)
    # A loaded QAT model saves and loads again.
    again = load_keras_model(save_keras_model(loaded, tmp_path / "again.keras"))
    np.testing.assert_allclose(again.predict(x, verbose=0), qat.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "layer", "kind"),
    [
        ("shufflenet_v1_tiny", "block1_gconv2", "GroupConv2D"),
        ("shufflenet_v2_tiny", "block3_split", "ChannelSplit"),
    ],
)
def test_unsupported_layer_stays_float_and_is_noted(
    name: str, layer: str, kind: str, digits32: Dataset
) -> None:
    keras.utils.set_random_seed(0)
    model = create(name, input_shape=(32, 32, 3), classes=10)
    assert (layer, kind) in {(f.name, f.type) for f in float_layers(model)}
    ctx = StepContext(data=digits32)
    qat = quantize_aware(model, ctx, epochs=0)
    assert any(f"'{layer}' ({kind})" in note for note in ctx.notes), ctx.notes
    wrapper = qat.get_layer(f"quant_{layer}")
    assert type(wrapper.layer).__name__ == kind
    # No fake-quant weights or activations: the layer computes in float.
    assert wrapper.quantize_config.get_weights_and_quantizers(wrapper.layer) == []
    assert wrapper.quantize_config.get_activations_and_quantizers(wrapper.layer) == []
    # Its neighbours are quantized.
    quantized = [
        w for w in qat.layers if getattr(w, "quantize_config", None) is not None and w.weights
    ]
    assert any(w.quantize_config.get_weights_and_quantizers(w.layer) for w in quantized)
    x = digits32.x_test[:8]
    np.testing.assert_allclose(qat.predict(x, verbose=0).sum(axis=1), 1.0, rtol=1e-5)


def _mixed_model() -> Any:
    """Two patterns of the zoo that once failed to convert after QAT.

    ShuffleNet v1's stride-2 unit: a float GroupConv2D branch and an average-pooled shortcut
    meet in a concat (TF-MOT's concat transform skipped a concat with a float input, the pool
    kept a range of its own, and the converter rejected two scales on one pool). DenseNet's
    transition: a pool feeds both a concat and a batch norm TF-MOT cannot fold.
    """
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    branch = GroupConv2D(8, 1, groups=2, use_bias=False, name="gconv")(x)
    branch = layers.BatchNormalization(name="gconv_bn")(branch)
    shortcut = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = layers.ReLU()(layers.Concatenate()([shortcut, branch]))
    pooled = layers.AveragePooling2D(2, name="transition_pool")(x)
    y = layers.ReLU()(layers.BatchNormalization(name="dense_bn")(pooled))
    y = layers.Conv2D(8, 1, name="dense_conv")(y)
    x = layers.Concatenate()([pooled, y])
    x = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, layers.Activation("softmax")(x))


def test_float_layers_still_convert_to_full_int8(digits32: Dataset, tmp_path: Path) -> None:
    ctx = StepContext(data=_small(digits32, 64))
    qat = quantize_aware(_mixed_model(), ctx, epochs=1, learning_rate=1e-3)
    noted = " ".join(ctx.notes)
    assert "'gconv' (GroupConv2D)" in noted and "'dense_bn' (BatchNormalization)" in noted
    options = ConvertOptions(stem="mixed", calibration=digits32.x_train[:64])
    artifact = get_converter("tflite_int8").convert(qat, tmp_path, options)
    x_test = digits32.x_test[:64]
    probs = open_runner("litert", artifact.path).predict(x_test)
    assert probs.shape == (64, 10)
    agreement = np.mean(probs.argmax(1) == evaluate_probs(qat, x_test).argmax(1))
    assert agreement >= 0.9, agreement


def test_auto_preserve_reads_the_state_of_earlier_steps() -> None:
    assert resolve_preserve("auto", {}) == (False, False)
    assert resolve_preserve("auto", {"pruned": True, "sparsity": 0.5}) == (True, False)
    assert resolve_preserve("auto", {"clustered": 8}) == (False, True)
    assert resolve_preserve("auto", {"sparsity": 0.5, "clustered": 8}) == (True, True)
    assert resolve_preserve("none", {"pruned": True, "clustered": 8}) == (False, False)
    assert resolve_preserve("both", {}) == (True, True)
    with pytest.raises(BadInputError, match="unknown preserve 'all'; choose one of auto"):
        resolve_preserve("all", {})


@pytest.fixture(scope="module")
def pruned() -> Any:
    """mobilenet_v2_tiny with the smaller half of every conv, depthwise and dense kernel zero
    (what a magnitude pruning step leaves)."""
    keras.utils.set_random_seed(0)
    model = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10)
    for layer in model.layers:
        if isinstance(
            layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D | keras.layers.Dense
        ):
            kernel, *rest = layer.get_weights()
            kernel[np.abs(kernel) < np.median(np.abs(kernel))] = 0.0
            layer.set_weights([kernel, *rest])
    return model


def _zeros(kernels: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(np.mean(k == 0)) for name, k in kernels.items()}


def _assert_zeros_kept(before: dict[str, float], after: dict[str, float]) -> None:
    assert after.keys() == before.keys()
    for name, share in before.items():
        assert after[name] >= share - 0.01, (name, share, after[name])


def test_prune_preserving_qat_keeps_every_zero(pruned: Any, digits32: Dataset) -> None:
    before = _zeros(_kernels(pruned))
    assert min(before.values()) > 0.45  # every kernel, depthwise ones too: not vacuous

    ctx = StepContext(data=_small(digits32), state={"pruned": True, "sparsity": 0.5})
    qat = quantize_aware(pruned, ctx, epochs=1, learning_rate=1e-3)
    _assert_zeros_kept(before, _zeros(_kernels(qat)))


def test_cluster_preserving_qat_keeps_at_most_k_values_and_the_zeros(
    pruned: Any, digits32: Dataset
) -> None:
    # Prune -> cluster -> QAT, the collaborative chain (PCQAT). TF-MOT clusters the kernels
    # when it wraps them; no fine-tuning is needed for clustered weights.
    clustering = _tfmot().clustering.keras
    keras.utils.set_random_seed(0)
    wrapped = clustering.cluster_weights(
        pruned,
        number_of_clusters=CLUSTERS,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
        preserve_sparsity=True,
    )
    clustered = clustering.strip_clustering(wrapped)
    kernels = _kernels(clustered)
    shared = [n for n, k in kernels.items() if len(np.unique(k)) <= CLUSTERS]
    assert len(shared) >= 15, shared  # every conv and dense kernel (not the depthwise ones)

    state = {"pruned": True, "sparsity": 0.5, "clustered": CLUSTERS}
    qat = quantize_aware(clustered, StepContext(data=_small(digits32), state=state), epochs=1)
    after = _kernels(qat)
    for name in shared:
        assert len(np.unique(after[name])) <= CLUSTERS, (name, len(np.unique(after[name])))
    assert any(not np.array_equal(after[n], kernels[n]) for n in shared)  # centroids trained
    _assert_zeros_kept(_zeros(kernels), _zeros(after))
    # The cluster-training variables are gone: the model saves like a plain QAT model.
    names = {w.name for w in qat.weights}
    assert not any("cluster_centroids" in n or "ori_weights" in n for n in names)


def test_float_twin_is_the_original_network_with_the_trained_weights(
    qat_tiny: tuple[Any, StepContext], trained_tiny: tuple[Any, Path], digits32: Dataset,
    tmp_path: Path,
) -> None:  # fmt: skip
    qat, _ = qat_tiny
    original, _ = trained_tiny
    twin = float_twin(qat)
    assert twin is not None and twin.kind == "fake_quant" and not twin.exact
    assert twin.used_by(takes_fake_quant=False) and not twin.used_by(takes_fake_quant=True)
    model = twin.model
    assert [x.name for x in model.layers] == [x.name for x in original.layers]
    assert [type(x) for x in model.layers] == [type(x) for x in original.layers]
    trained = _kernels(qat)
    assert set(_kernels(model)) == set(trained)
    for name, kernel in _kernels(model).items():  # QAT's weights, not the original's
        np.testing.assert_array_equal(kernel, trained[name])
    assert any(not np.array_equal(k, _kernels(original)[n]) for n, k in trained.items())
    # It computes what the QAT model computes, up to the quantization error.
    x = digits32.x_test
    fake, plain = evaluate_probs(qat, x), evaluate_probs(model, x)
    assert np.mean(fake.argmax(1) == plain.argmax(1)) >= 0.95
    assert 1e-6 < np.abs(fake - plain).mean() < 0.02, np.abs(fake - plain).mean()
    # A QAT model loaded from .keras (variables named without their layer) gives the same twin.
    loaded = float_twin(load_keras_model(save_keras_model(qat, tmp_path / "qat.keras")))
    assert loaded is not None
    for a, b in zip(loaded.model.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float_twin(original) is None
    # What each converter is given (deploy, compress and package all ask this).
    assert model_for_converter(qat, takes_fake_quant=True) is qat
    assert not any("Quantize" in type(x).__name__ for x in model_for_converter(qat, False).layers)
    assert model_for_converter(original, takes_fake_quant=False) is original


def test_deploy_converts_a_qat_model_for_every_runtime(
    qat_tiny: tuple[Any, StepContext], digits32: Dataset, tmp_path: Path
) -> None:
    """tf2onnx keeps FakeQuant nodes ONNX Runtime cannot run: ONNX and OpenVINO (and TFLite
    float) artifacts come from the float twin; the int8 TFLite model from the QAT ranges."""
    from edgekit.deploy import DeployRequest, deploy

    qat, _ = qat_tiny
    path = save_keras_model(qat, tmp_path / "qat.keras")
    report = deploy(DeployRequest("cpu", path, out=tmp_path / "o", runs=3, warmup=1))
    by_format = {a["format"]: a for a in report["artifacts"]}
    assert set(by_format) == {
        "tflite_fp32", "tflite_fp16", "tflite_dynamic", "tflite_int8",
        "onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8",
    }  # fmt: skip
    assert report["skipped"] == []
    twin = report["float_twin"]
    assert twin["kind"] == "fake_quant" and twin["top1_agreement"] >= 0.95
    ref = report["reference"]["accuracy"]
    assert ref > 0.8
    for fmt, a in by_format.items():
        assert a["converted_from"] == ("keras" if fmt == "tflite_int8" else "float twin"), fmt
        assert a["accuracy"] >= ref - 0.03, (fmt, a["accuracy"], ref)
    for fmt in ("tflite_fp32", "onnx_fp32", "openvino_fp32"):  # exact copies of the twin
        a = by_format[fmt]
        assert a["max_abs_error"] < 1e-4, fmt
        # ...whose accuracy may differ from the QAT model's: the check says so.
        assert a["check"]["passed"] == (a["accuracy_drop_points"] <= 1.0), a["check"]
        assert "accuracy drop" in a["check"]["detail"]
    # The int8 model is the QAT model's own: it agrees with it, not merely with the twin.
    assert by_format["tflite_int8"]["top1_agreement"] >= 0.97
    assert by_format["tflite_fp32"]["size_bytes"] > 1.8 * by_format["tflite_int8"]["size_bytes"]
