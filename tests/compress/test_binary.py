"""Binarization: the sign/STE quantizer, binary layers, zoo models binarized, their TFLite
deployment, the 1-bit weight pack and the recipe step."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit._keras import keras, tf
from edgekit.compress._bitpack import (
    apply_packed_weights,
    binary_storage,
    pack_binary_weights,
    unpack_binary_weights,
)
from edgekit.compress._steps import StepContext, check_options, get_step
from edgekit.compress.binary import (
    BinaryConv2D,
    BinaryDense,
    BinaryDepthwiseConv2D,
    BinaryLayer,
    BinarySign,
    binarize,
    binarize_model,
    binary_layers,
    binary_sign,
    binary_to_float_model,
)
from edgekit.converters import ConvertOptions, get_converter
from edgekit.errors import BadInputError, ModelLoadError
from edgekit.measure import compare, open_runner
from edgekit.models import create
from edgekit.models._io import load_keras_model, save_keras_model
from edgekit.train import TrainConfig, evaluate_probs, train_model

ZOO = ["mobilenet_v2_tiny", "resnet18_tiny", "mobilenet_v1_tiny"]
POINTS = np.array([-3.0, -1.5, -1.0, -0.7, -1e-3, 0.0, 1e-3, 0.3, 1.0, 1.2, 3.0], np.float32)
WEIGHTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _model(name: str) -> Any:
    keras.utils.set_random_seed(0)
    return create(name, input_shape=(32, 32, 3), classes=10)


def _images(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).random((n, 32, 32, 3), dtype=np.float32)


def _small(data: Any, n: int = 256) -> Any:
    return dataclasses.replace(
        data,
        x_train=data.x_train[:n],
        y_train=data.y_train[:n],
        x_val=data.x_val[:64],
        y_val=data.y_val[:64],
    )


@pytest.mark.parametrize("ste", ["tanh", "clipped"])
def test_sign_is_exactly_plus_minus_one_and_the_ste_gradient_is_the_chosen_one(ste: str) -> None:
    x = tf.Variable(POINTS)
    with tf.GradientTape() as tape:
        y = binary_sign(x, ste)
        loss = tf.reduce_sum(y * tf.range(1.0, len(POINTS) + 1))  # a distinct upstream per point
    grad = tape.gradient(loss, x).numpy()
    np.testing.assert_array_equal(y.numpy(), np.where(POINTS >= 0, 1.0, -1.0))  # sign(0) = +1
    upstream = np.arange(1.0, len(POINTS) + 1)
    if ste == "tanh":
        expected = upstream * (1.0 - np.tanh(POINTS.astype(np.float64)) ** 2)
        np.testing.assert_allclose(grad, expected, rtol=1e-5)
    else:
        np.testing.assert_array_equal(grad, upstream * (np.abs(POINTS) <= 1.0))
    with pytest.raises(BadInputError, match="unknown straight-through estimator 'sgn'"):
        binary_sign(x, "sgn")


def test_binary_layers_use_scaled_signs_of_weights_and_inputs() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 6, 4)).astype(np.float32)
    for layer in (
        BinaryConv2D(6, 3, padding="same", use_bias=False),
        BinaryConv2D(6, 3, padding="same", groups=2, use_bias=False),
        BinaryDepthwiseConv2D(3, padding="same", use_bias=False),
        BinaryDense(5, use_bias=False),
    ):
        inputs = x if not isinstance(layer, BinaryDense) else x.reshape(2, -1)
        out = layer(inputs).numpy()
        kernel = layer.binarized_kernel().numpy()
        latent = layer.latent_kernel.numpy()
        alpha = np.abs(latent).mean(axis=layer.scale_axes, keepdims=True)
        np.testing.assert_allclose(kernel, np.where(latent >= 0, 1.0, -1.0) * alpha, rtol=1e-6)
        # the input goes through sign: any input with the same signs gives the same output
        np.testing.assert_allclose(layer(np.sign(inputs) * 7.0).numpy(), out, rtol=1e-5)
        assert layer.latent_kernel.dtype == tf.float32


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_binarizes_keeping_first_last_and_other_layers(name: str) -> None:
    model = _model(name)
    binary, result = binarize(model)
    x = _images()

    float_weighted = [layer.name for layer in model.layers if isinstance(layer, WEIGHTED)]
    assert set(result.kept_float) == {"stem_conv", "logits"}
    assert set(result.binarized) == set(float_weighted) - {"stem_conv", "logits"}
    for layer_name in result.kept_float:
        assert not isinstance(binary.get_layer(layer_name), BinaryLayer)
    for layer in binary_layers(binary):
        source = model.get_layer(layer.name)
        np.testing.assert_array_equal(layer.get_weights()[0], source.get_weights()[0])
        assert layer.binarize_inputs, layer.name

    # batch norms, adds, pooling and the softmax are all kept
    def count(m: Any, kind: type) -> int:
        return sum(isinstance(layer, kind) for layer in m.layers)

    for kind in (keras.layers.BatchNormalization, keras.layers.Add, keras.layers.Activation):
        assert count(binary, kind) == count(model, kind)
    assert binary.input_shape == model.input_shape and binary.output_shape == model.output_shape
    probs = binary(x).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    deploy = binary_to_float_model(binary)
    assert not binary_layers(deploy)
    signs = {layer.name for layer in deploy.layers if isinstance(layer, BinarySign)}
    assert signs == {f"{layer_name}_sign" for layer_name in result.binarized}
    np.testing.assert_allclose(deploy(x).numpy(), probs, atol=1e-6)


def test_one_training_step_updates_the_latent_weights_within_the_clip(digits32: Any) -> None:
    binary = binarize_model(_model("mobilenet_v1_tiny"), ste="clipped")
    before = {layer.name: layer.latent_kernel.numpy().copy() for layer in binary_layers(binary)}
    binary.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
    binary.train_on_batch(digits32.x_train[:32], digits32.y_train[:32])
    changed = 0
    for layer in binary_layers(binary):
        after = layer.latent_kernel.numpy()
        assert after.dtype == np.float32 and np.abs(after).max() <= 1.0
        changed += not np.array_equal(after, before[layer.name])
        assert set(np.unique(np.abs(binary_sign(after).numpy()))) == {1.0}
    assert changed == len(before)


def test_first_layer_reading_the_image_binarizes_weights_only() -> None:
    binary, result = binarize(_model("mobilenet_v1_tiny"), keep_first=False, keep_last=False)
    assert result.kept_float == []
    stem = binary.get_layer("stem_conv")
    assert isinstance(stem, BinaryConv2D) and not stem.binarize_inputs
    # the logits read pooled ReLU outputs, never negative: weights-only as well
    assert isinstance(binary.get_layer("logits"), BinaryDense)
    assert set(result.float_inputs) == {"stem_conv", "logits"}


@pytest.fixture(scope="module")
def trained_binary(digits32: Any) -> Any:
    binary = binarize_model(_model("resnet18_tiny"), ste="clipped")
    train_model(binary, digits32, TrainConfig(epochs=1, seed=0))
    return binary


def test_tflite_of_the_float_deployment_model_agrees_with_the_binary_model(
    trained_binary: Any, digits32: Any, tmp_path: Path
) -> None:
    reference = evaluate_probs(trained_binary, digits32.x_test)
    assert np.mean(np.argmax(reference, 1) == digits32.y_test) > 0.3  # it learned something
    deploy = binary_to_float_model(trained_binary)
    art = get_converter("tflite_fp32").convert(deploy, tmp_path, ConvertOptions(stem="bnn"))
    got = compare(
        open_runner("litert", art.path, threads=1).predict(digits32.x_test),
        reference,
        digits32.y_test,
    )
    assert got.top1_agreement >= 0.99
    assert got.max_abs_error < 1e-4


def test_bit_pack_round_trips_exactly_at_one_bit_per_weight(
    trained_binary: Any, tmp_path: Path
) -> None:
    path = tmp_path / "bnn.ekpack"
    storage = pack_binary_weights(trained_binary, path)
    assert storage == binary_storage(trained_binary)
    assert path.stat().st_size == storage.file_bytes
    assert not list(tmp_path.glob(".*tmp"))

    layers = binary_layers(trained_binary)
    count = sum(layer.latent_kernel.shape.num_elements() for layer in layers)
    assert storage.binarized_weights == count and storage.float32_bytes == 4 * count
    assert storage.packed_bytes == sum(
        -(-layer.latent_kernel.shape.num_elements() // 8) for layer in layers
    )
    assert storage.ratio <= 1 / 25

    packed = unpack_binary_weights(path)
    assert set(packed.signs) == {layer.name for layer in layers}
    for layer in layers:
        latent = layer.latent_kernel.numpy()
        np.testing.assert_array_equal(packed.signs[layer.name], np.where(latent >= 0, 1.0, -1.0))
        np.testing.assert_array_equal(packed.scales[layer.name], layer.kernel_scale().numpy())
        np.testing.assert_array_equal(
            packed.weights[layer.name][0], layer.binarized_kernel().numpy()
        )
    for layer in trained_binary.layers:
        if layer.weights and not isinstance(layer, BinaryLayer):
            for a, b in zip(packed.weights[layer.name], layer.get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)

    # A deployment model rebuilt from the pack alone computes the binary model's outputs.
    rebuilt = binary_to_float_model(trained_binary)
    rebuilt.set_weights([np.zeros_like(w) for w in rebuilt.get_weights()])
    apply_packed_weights(rebuilt, packed)
    x = _images()
    np.testing.assert_allclose(rebuilt(x).numpy(), trained_binary(x).numpy(), atol=1e-6)

    with pytest.raises(BadInputError, match="scaled binary layer"):
        apply_packed_weights(trained_binary, packed)
    (tmp_path / "bad.ekpack").write_bytes(b"not a pack at all")
    with pytest.raises(ModelLoadError, match="not an edgekit weight pack"):
        unpack_binary_weights(tmp_path / "bad.ekpack")
    (tmp_path / "cut.ekpack").write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="truncated"):
        unpack_binary_weights(tmp_path / "cut.ekpack")


def test_binary_model_saves_and_loads_in_safe_mode(tmp_path: Path) -> None:
    binary = binarize_model(_model("mobilenet_v1_tiny"), ste="clipped", scale=False)
    path = save_keras_model(binary, tmp_path / "bnn.keras")
    loaded = load_keras_model(path)  # safe mode
    for layer in binary_layers(binary):
        twin = loaded.get_layer(layer.name)
        assert type(twin) is type(layer)
        assert (twin.ste, twin.scale, twin.binarize_inputs) == ("clipped", False, True)
    x = _images()
    np.testing.assert_allclose(loaded(x).numpy(), binary(x).numpy(), atol=1e-6)


def test_binarize_step_fine_tunes_and_reports_storage(digits32: Any) -> None:
    step = get_step("binarize")
    options = check_options(step, {"ste": "clipped", "epochs": 1}, "recipe.yaml")
    assert options == {
        "ste": "clipped",
        "epochs": 1,
        "learning_rate": 1e-3,
        "keep_first": True,
        "keep_last": True,
        "scale": True,
    }
    with pytest.raises(BadInputError, match=r"binarize\.ste = 'sign' is not allowed"):
        check_options(step, {"ste": "sign"}, "recipe.yaml")

    ctx = StepContext(data=_small(digits32))
    out = step.fn(_model("mobilenet_v1_tiny"), ctx, **options)
    state = ctx.state["binary"]
    assert state["ratio"] <= 1 / 25 and state["packed_bytes"] * 32 == state["float32_bytes"]
    assert len(state["layers"]) == len(binary_layers(out)) == 10
    assert any("Larq Compute Engine" in note for note in ctx.notes)
    assert any("kept in float: stem_conv, logits" in note for note in ctx.notes)
    # It fine-tunes: the same model binarized with 0 epochs has other latent weights, and
    # the fine-tuned one fits the step's training images better.
    untuned = step.fn(
        _model("mobilenet_v1_tiny"), StepContext(data=ctx.data), **{**options, "epochs": 0}
    )
    name = state["layers"][0]
    assert not np.allclose(
        out.get_layer(name).get_weights()[0], untuned.get_layer(name).get_weights()[0]
    )
    data = ctx.data
    losses = []
    for m in (untuned, out):
        probs = evaluate_probs(m, data.x_train)[np.arange(len(data.y_train)), data.y_train]
        losses.append(float(-np.mean(np.log(np.maximum(probs, 1e-7)))))
    assert losses[1] < losses[0], losses


def test_a_binarized_keras_file_loads_in_a_fresh_process(tmp_path: Path) -> None:
    # What `edgekit deploy MODEL.keras` does: nothing has imported the binary layers' module
    # yet, so loading must find them by itself (in safe mode).
    import subprocess
    import sys

    model = binarize_model(create("resnet18_tiny", input_shape=(32, 32, 3), classes=10))
    path = save_keras_model(model, tmp_path / "bnn.keras")
    code = (
        "import sys; from edgekit.models._io import load_keras_model; "
        "m = load_keras_model(sys.argv[1]); "
        "print(sum(type(l).__name__.startswith('Binary') for l in m.layers))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert (
        int(proc.stdout.strip())
        == sum(type(layer).__name__.startswith("Binary") for layer in model.layers)
        > 0
    )


def test_deploy_converts_a_binary_model_through_its_exact_twin(
    trained_binary: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Converting the binary layers directly lets a converter see the latent kernels; every
    artifact comes from the ±1 twin and agrees with the binary model itself."""
    import edgekit.targets
    from edgekit.deploy import DeployRequest, deploy
    from edgekit.targets import validate_target

    small = validate_target(
        {
            "name": "cpu",
            "description": "three formats of the cpu target",
            "formats": ["tflite_fp32", "tflite_int8", "onnx_fp32"],
            "int_io": "int8",
            "threads": 1,
        },
        "test",
    )
    monkeypatch.setattr(edgekit.targets, "load_target", lambda name: small)
    path = save_keras_model(trained_binary, tmp_path / "bnn.keras")
    report = deploy(DeployRequest("cpu", path, out=tmp_path / "o", runs=3, warmup=1))
    assert report["float_twin"]["kind"] == "binary"
    assert report["float_twin"]["max_abs_error"] < 1e-4
    by_format = {a["format"]: a for a in report["artifacts"]}
    assert set(by_format) == {"tflite_fp32", "tflite_int8", "onnx_fp32"}
    assert {a["converted_from"] for a in by_format.values()} == {"float twin"}
    for fmt in ("tflite_fp32", "onnx_fp32"):
        assert by_format[fmt]["top1_agreement"] >= 0.99 and by_format[fmt]["max_abs_error"] < 1e-4
    # int8 quantizes the twin's activations too. This binary network, trained one epoch
    # (about 0.45 on the test images), has nearly flat outputs, so int8 changes the top
    # class of about half the images (measured 0.53 agreement on an AVX-512 and on an AVX2
    # host) and moves the accuracy by chance (0.3 points lower on the first, 5.3 higher on
    # the second). A broken int8 graph would agree with the twin, and score, about as often
    # as chance (0.1); the bounds keep well away from that and from both hosts' readings.
    int8 = by_format["tflite_int8"]
    said = (int8["top1_agreement"], int8["accuracy_drop_points"], int8["accuracy"])
    assert int8["top1_agreement"] >= 0.4 and int8["accuracy"] > 0.3, said
    assert abs(int8["accuracy_drop_points"]) <= 10.0, said
