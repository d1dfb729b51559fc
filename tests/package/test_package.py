"""edgekit package: Android .tflite with metadata, iOS Core ML package."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.errors import BadInputError, ModelLoadError, RuntimeUnavailableError
from edgekit.package import package_android, package_ios, read_package_metadata

DIGITS = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """An untrained mobilenet_v2_tiny (fixed seed), in memory and saved as .keras."""
    from edgekit._keras import keras
    from edgekit.models import create
    from edgekit.models._io import save_keras_model

    keras.utils.set_random_seed(0)
    model = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10)
    path = save_keras_model(model, tmp_path_factory.mktemp("src") / "tiny.keras")
    return model, path


@pytest.fixture(scope="module")
def int8_artifact(tiny, digits32, tmp_path_factory) -> Path:
    """The unpackaged full-int8 artifact, as the tflite_int8 converter writes it."""
    from edgekit.converters import ConvertOptions, get_converter

    out = tmp_path_factory.mktemp("artifact")
    options = ConvertOptions(stem="tiny", calibration=digits32.x_train)
    return get_converter("tflite_int8").convert(tiny[0], out, options).path


@pytest.fixture(scope="module")
def android_from_keras(tiny, digits32, tmp_path_factory):
    out = tmp_path_factory.mktemp("android")
    return package_android(tiny[1], out, data=digits32), out


def _run(model: Path | bytes, x: np.ndarray) -> np.ndarray:
    """Raw outputs of the LiteRT interpreter, one image at a time, inputs quantized as the
    metadata says."""
    from ai_edge_litert.interpreter import Interpreter

    content = model.read_bytes() if isinstance(model, Path) else model
    interp = Interpreter(model_content=content, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for image in x:
        if inp["dtype"] == np.float32:
            q = image[None].astype(np.float32)
        else:
            scale, zero = inp["quantization"]
            q = np.clip(np.round(image[None] / scale + zero), -128, 127).astype(inp["dtype"])
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        results.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(results)


# --------------------------------------------------------------------------------- android


def test_android_metadata_read_back(android_from_keras, tiny):
    from edgekit._io import sha256_file

    result, out = android_from_keras
    assert result.path == out / "tiny.tflite"
    assert sorted(p.name for p in out.iterdir()) == ["tiny.tflite"], "temporary files left"
    meta = read_package_metadata(result.path)

    assert meta["schema"] == "edgekit.mobile/1"
    assert meta["labels"] == DIGITS
    assert meta["associated_files"]["labels.txt"] == "".join(f"{d}\n" for d in DIGITS)
    files_json = json.loads(meta["associated_files"]["edgekit.json"])
    assert files_json == {k: v for k, v in meta.items() if k != "associated_files"}
    assert meta["normalization"]["mean"] == [0.0, 0.0, 0.0]
    assert meta["normalization"]["std"] == [255.0, 255.0, 255.0]
    assert meta["normalization"]["pixel_range"] == [0.0, 255.0]

    spec = meta["input"]
    assert spec["shape"] == [1, 32, 32, 3]
    assert (spec["dtype"], spec["layout"], spec["color"]) == ("int8", "NHWC", "RGB")
    assert spec["range"] == [0.0, 1.0]
    # (pixel / 255) quantized with scale 1/255, zero point -128: q = pixel - 128
    assert spec["quantization"]["scale"] == pytest.approx(1 / 255, rel=1e-6)
    assert spec["quantization"]["zero_point"] == -128
    assert meta["output"]["shape"] == [1, 10]
    assert meta["output"]["dtype"] == "int8" and meta["output"]["quantization"]["scale"] > 0
    assert meta["precision"] == "int8" and meta["converter"] == "tflite_int8"
    assert meta["source_sha256"] == sha256_file(tiny[1])
    assert result.checks["outputs_identical"] and result.checks["metadata_read_back"]


def test_a_trained_model_packaged_from_keras_classifies_as_keras_does(
    trained_tiny, digits32, tmp_path
):
    """The Android package of a trained model, fed as the app would feed it (the image
    quantized as its metadata says), classifies the held-out images as the Keras model does:
    the package is the model, converted to int8, not only a file that loads."""
    model, path = trained_tiny
    result = package_android(path, tmp_path, data=digits32)
    packaged = _run(result.path, digits32.x_test).argmax(1)
    keras_pred = model.predict(digits32.x_test, verbose=0).argmax(1)
    keras_acc = float(np.mean(keras_pred == digits32.y_test))
    assert keras_acc > 0.5  # trained: well above chance, so agreement means something
    assert float(np.mean(packaged == keras_pred)) >= 0.97
    assert float(np.mean(packaged == digits32.y_test)) >= keras_acc - 0.02


def test_android_metadata_is_a_flatbuffer_entry_and_a_zip_from_file_start(android_from_keras):
    """Read the file with the schema and zipfile directly, not through edgekit's reader."""
    from ai_edge_litert import schema_py_generated as fb

    blob = android_from_keras[0].path.read_bytes()
    model = fb.Model.GetRootAs(blob, 0)
    entries = {
        model.Metadata(i).Name().decode(): model.Metadata(i).Buffer()
        for i in range(model.MetadataLength())
    }
    assert "min_runtime_version" in entries, "the converter's metadata must be kept"
    payload = model.Buffers(entries["edgekit"]).DataAsNumpy().tobytes()
    assert json.loads(payload)["labels"] == DIGITS
    with zipfile.ZipFile(android_from_keras[0].path) as zf:
        for info in zf.infolist():
            # Android's metadata ZipFile: stored members, offsets from the start of the file
            assert info.compress_type == zipfile.ZIP_STORED
            assert blob[info.header_offset : info.header_offset + 4] == b"PK\x03\x04"


def test_packaged_artifact_runs_with_identical_outputs(int8_artifact, digits32, tmp_path):
    result = package_android(int8_artifact, tmp_path, labels=DIGITS)
    assert result.path == tmp_path / "tiny_int8.tflite"
    x = digits32.x_test[:32]
    before, after = _run(int8_artifact, x), _run(result.path, x)
    assert after.dtype == np.int8
    np.testing.assert_array_equal(after, before)
    meta = read_package_metadata(result.path)
    assert meta["labels"] == DIGITS and meta["precision"] is None

    # Packaging again is deterministic, and re-packaging a package replaces its metadata.
    again = package_android(int8_artifact, tmp_path / "again", labels=DIGITS)
    assert again.path.read_bytes() == result.path.read_bytes()
    labels = [f"digit {d}" for d in DIGITS]
    repacked = package_android(result.path, tmp_path / "re", labels=labels)
    from ai_edge_litert import schema_py_generated as fb

    model = fb.Model.GetRootAs(repacked.path.read_bytes(), 0)
    names = [model.Metadata(i).Name() for i in range(model.MetadataLength())]
    assert names.count(b"edgekit") == 1
    assert read_package_metadata(repacked.path)["labels"] == labels
    np.testing.assert_array_equal(_run(repacked.path, x), before)


def test_android_fp32_from_keras_labels_file(tiny, digits32, tmp_path):
    from edgekit.train import evaluate_probs

    labels_txt = tmp_path / "labels.txt"
    labels_txt.write_text("\n".join(f"class {d}" for d in DIGITS) + "\n\n")
    out = tmp_path / "out"
    result = package_android(tiny[0], out, labels=labels_txt, precision="fp32", stem="tiny_fp32")
    meta = read_package_metadata(result.path)
    assert meta["labels"] == [f"class {d}" for d in DIGITS]
    assert meta["input"]["dtype"] == "float32" and meta["input"]["quantization"] is None
    assert meta["source_sha256"] is None  # an in-memory model has no file
    x = digits32.x_test[:16]
    np.testing.assert_allclose(_run(result.path, x), evaluate_probs(tiny[0], x), atol=1e-4)


def test_wrong_label_count_is_one_line_and_writes_nothing(tiny, int8_artifact, digits32, tmp_path):
    out = tmp_path / "out"
    for source, data in ((tiny[1], digits32), (tiny[1], None), (int8_artifact, None)):
        with pytest.raises(BadInputError) as info:
            package_android(source, out, labels=DIGITS[:9], data=data)
        message = str(info.value)
        assert "\n" not in message
        assert "9 labels" in message and "10 classes" in message
        assert not out.exists()


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("junk.tflite", b"\x00" * 64, "no TFL3 identifier"),
        ("notes.txt", b"hello", "neither a Keras model"),
        ("missing.tflite", None, "does not exist"),
    ],
)
def test_non_tflite_source_is_a_clear_error(tmp_path, name, content, match):
    source = tmp_path / name
    if content is not None:
        source.write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(ModelLoadError, match=match):
        package_android(source, out, labels=DIGITS)
    assert not out.exists()


def test_bad_options_are_clear_errors(tiny, int8_artifact, tmp_path):
    out = tmp_path / "out"
    cases = [
        (dict(source=tiny[1], labels=DIGITS), "needs calibration data"),
        (dict(source=int8_artifact, labels=DIGITS, precision="fp32"), "already a TFLite"),
        (dict(source=tiny[1], labels=DIGITS, precision="fp8"), "unknown Android precision"),
        (dict(source=int8_artifact, labels=DIGITS, mean=[1, 2]), "3-channel input"),
        (dict(source=int8_artifact, labels=DIGITS, std=0), "std must be positive"),
        (dict(source=int8_artifact), "no class labels"),
        (dict(source=int8_artifact, labels=["a"] * 10), "repeats label"),
    ]
    for kwargs, match in cases:
        source = kwargs.pop("source")
        with pytest.raises(BadInputError, match=match):
            package_android(source, out, **kwargs)
    assert not out.exists()
    with pytest.raises(BadInputError, match="overwrite the source"):
        package_android(int8_artifact, int8_artifact.parent, labels=DIGITS)
    with pytest.raises(BadInputError, match="no edgekit metadata"):
        read_package_metadata(int8_artifact)


# ------------------------------------------------------------------------------------- ios


def test_ios_without_coremltools_names_the_extra(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "coremltools", None)  # import raises ImportError
    with pytest.raises(RuntimeUnavailableError, match=r"pip install 'edgekit\[ios\]'"):
        package_ios(tiny[1], tmp_path / "out", labels=DIGITS)
    assert not (tmp_path / "out").exists()


def test_ios_rejects_tflite_and_per_channel_std(int8_artifact, tiny, tmp_path):
    with pytest.raises(BadInputError, match=r"pass the \.keras file"):
        package_ios(int8_artifact, tmp_path, labels=DIGITS)
    with pytest.raises(BadInputError, match="one scale"):
        package_ios(tiny[1], tmp_path, labels=DIGITS, std=[58.4, 57.1, 57.4])


def test_ios_mlpackage_spec(tiny, digits32, tmp_path):
    ct = pytest.importorskip(
        "coremltools", reason="coremltools is not installed (pip install 'edgekit[ios]')"
    )
    result = package_ios(tiny[1], tmp_path, data=digits32, mean=127.5, std=127.5)
    assert result.path == tmp_path / "tiny.mlpackage"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.mlpackage"]

    # the spec as coremltools reads it
    spec = ct.utils.load_spec(str(result.path))
    assert spec.WhichOneof("Type") == "mlProgram"
    image = spec.description.input[0]
    assert image.type.WhichOneof("Type") == "imageType"
    assert (image.type.imageType.width, image.type.imageType.height) == (32, 32)
    assert image.type.imageType.colorSpace == image.type.imageType.RGB
    assert spec.description.predictedFeatureName == "classLabel"

    meta = read_package_metadata(result.path)
    assert meta["labels"] == DIGITS
    assert meta["coreml"]["scale"] == pytest.approx(1 / 127.5)
    assert meta["coreml"]["bias"] == [-1.0, -1.0, -1.0]
    saved = meta["coreml_spec"]
    assert saved["labels"] == DIGITS
    assert saved["scale"] == pytest.approx(1 / 127.5, rel=1e-6)
    assert saved["bias"] == pytest.approx([-1.0, -1.0, -1.0])
    assert result.checks["labels"] and result.checks["prediction_checked"] is False

    # packaging again replaces the package whole, leaving no staging folders
    again = package_ios(tiny[1], tmp_path, labels=[f"d{d}" for d in DIGITS], precision="fp32")
    assert read_package_metadata(again.path)["coreml_spec"]["labels"][0] == "d0"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.mlpackage"]
