"""Every registered model builds, runs, names its layers by block and survives save/load."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit._keras import keras, tf
from edgekit.models import count_model, create, list_models

ALL_NAMES = [spec.name for spec in list_models(include_tiny=True)]
TINY_NAMES = [spec.name for spec in list_models(include_tiny=True) if spec.tiny]
# Every layer belongs to the stem, a numbered block or transition, or the head.
LAYER_NAME = re.compile(r"^(input|stem_\w+|block\d+_\w+|transition\d+_\w+|head_\w+|logits|probs)$")


def _small(name: str, input_shape: tuple[int, int, int] = (32, 32, 3)) -> Any:
    keras.utils.set_random_seed(0)
    width = 1.0 if name.endswith("_tiny") else 0.25
    return create(name, input_shape=input_shape, classes=10, width=width)


def _batch(model: Any, n: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((n, *model.input_shape[1:]), dtype=np.float32)


def _interpreter(flatbuffer: bytes) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # tf.lite.Interpreter is deprecated but still there
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_content=flatbuffer)


def test_registry_is_not_empty() -> None:
    assert len(ALL_NAMES) >= 18
    assert len(TINY_NAMES) * 2 == len(ALL_NAMES)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_builds_at_32x32_and_outputs_probabilities(name: str) -> None:
    model = _small(name)
    probs = model(_batch(model), training=False).numpy()
    assert probs.shape == (2, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(probs >= 0)

    # The head: global pooling over >= 2x2, Dense logits without activation, softmax probs.
    pooled = model.get_layer("head_pool").input_shape
    assert pooled[1] >= 2 and pooled[2] >= 2, pooled
    logits = model.get_layer("logits")
    assert isinstance(logits, keras.layers.Dense)
    assert logits.activation is keras.activations.linear
    assert model.layers[-1].name == "probs"
    assert model.layers[-1].get_config()["activation"] == "softmax"

    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    bad = [n for n in names if not LAYER_NAME.match(n)]
    assert not bad, f"layers without a block prefix: {bad[:5]}"

    for layer in model.layers:
        assert not isinstance(layer, keras.layers.Lambda), layer.name
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.momentum == 0.9, layer.name

    assert count_model(model).params == model.count_params()


@pytest.mark.parametrize("name", TINY_NAMES)
@pytest.mark.parametrize("input_shape", [(64, 64, 3), (48, 96, 1)])
def test_tiny_builds_at_other_input_shapes(name: str, input_shape: tuple[int, int, int]) -> None:
    model = _small(name, input_shape)
    assert model.output_shape == (None, 10)
    pooled = model.get_layer("head_pool").input_shape
    assert pooled[1] >= 2 and pooled[2] >= 2, pooled


def test_width_shrinks_the_model() -> None:
    full = count_model(create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10))
    half = count_model(create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10, width=0.5))
    assert half.macs < full.macs
    assert half.params < full.params


def test_blocks_option_sets_depth() -> None:
    model = create("resnet18", input_shape=(32, 32, 3), classes=10, width=0.25, blocks=(1, 1, 1, 2))
    adds = [layer.name for layer in model.layers if layer.name.endswith("_add")]
    assert adds == ["block1_add", "block2_add", "block3_add", "block4_add", "block5_add"]


def test_mobilenet_v2_head_stays_1280_below_width_one() -> None:
    model = create("mobilenet_v2", input_shape=(32, 32, 3), classes=10, width=0.35)
    assert model.get_layer("head_conv").filters == 1280
    assert model.get_layer("stem_conv").filters == 16  # make_divisible(32 * 0.35, 8)


def test_shufflenet_v1_uses_group_convs_and_shuffle() -> None:
    model = create("shufflenet_v1_tiny", input_shape=(32, 32, 3), classes=10)
    assert model.get_layer("block1_gconv1").groups == 1  # its input has only 24 channels
    assert model.get_layer("block2_gconv1").groups == 3
    assert model.get_layer("block2_gconv2").groups == 3
    assert isinstance(model.get_layer("block2_shuffle_permute"), keras.layers.Permute)


def test_group_conv_exports_to_onnx() -> None:
    # tf_keras runs grouped Conv2D in an XLA function that tf2onnx cannot convert;
    # GroupConv2D avoids it.
    tf2onnx = pytest.importorskip("tf2onnx")
    ort = pytest.importorskip("onnxruntime")
    from edgekit.models import GroupConv2D

    model = _small("shufflenet_v1_tiny")
    assert isinstance(model.get_layer("block2_gconv1"), GroupConv2D)
    spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=13)
    session = ort.InferenceSession(proto.SerializeToString())
    x = _batch(model)
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, model(x, training=False).numpy(), atol=1e-5)


def test_channel_shuffle_permutes_channels() -> None:
    from edgekit.models import channel_shuffle

    inputs = keras.Input((2, 2, 6))
    model = keras.Model(inputs, channel_shuffle(inputs, 3, "shuffle"))
    x = np.broadcast_to(np.arange(6, dtype=np.float32), (1, 2, 2, 6))
    out = model(x).numpy()
    # Groups [0 1][2 3][4 5] interleave to [0 2 4 1 3 5].
    np.testing.assert_array_equal(out[0, 1, 1], [0, 2, 4, 1, 3, 5])


@pytest.mark.parametrize("name", TINY_NAMES)
def test_tiny_saves_and_loads_in_safe_mode(name: str, tmp_path: Path) -> None:
    model = _small(name)
    x = _batch(model)
    expected = model(x, training=False).numpy()
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]


@pytest.mark.parametrize("name", TINY_NAMES)
def test_tiny_converts_to_tflite(name: str, tmp_path: Path) -> None:
    """Through edgekit's converter (a bare module holding the one function: half the time
    of TFLiteConverter.from_keras_model on these models)."""
    from edgekit.converters import ConvertOptions, get_converter

    model = _small(name)
    artifact = get_converter("tflite_fp32").convert(model, tmp_path, ConvertOptions(stem=name))
    flatbuffer = artifact.path.read_bytes()
    assert len(flatbuffer) > 1000

    interpreter = _interpreter(flatbuffer)
    interpreter.allocate_tensors()
    x = _batch(model, 1)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, model(x, training=False).numpy(), atol=1e-4)
