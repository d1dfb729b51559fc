"""One template test for every converter: export, load in the real runtime, compare with Keras."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from edgekit.converters import ConvertOptions, get_converter, list_converters
from edgekit.measure import accuracy, compare, open_runner
from edgekit.train import evaluate_probs


@pytest.fixture(scope="module")
def reference(trained_tiny, digits32) -> dict[str, Any]:
    model, _ = trained_tiny
    probs = evaluate_probs(model, digits32.x_test)
    return {"model": model, "probs": probs, "accuracy": accuracy(probs, digits32.y_test)}


class ConverterContract:
    """Subclass with ``format`` (and the limits the format must meet)."""

    format: ClassVar[str]
    min_agreement: ClassVar[float] = 0.99
    max_drop_points: ClassVar[float] = 1.0
    expect_input_dtype: ClassVar[str] = "float32"

    def test_export_load_compare(self, reference, digits32, tmp_path):
        assert reference["accuracy"] > 0.8, (
            "the fixture model must be trained for this test to mean anything"
        )
        conv = get_converter(self.format)
        art = conv.convert(
            reference["model"], tmp_path, ConvertOptions(stem="m", calibration=digits32.x_train)
        )
        assert art.path.is_file() and art.size_bytes > 1000
        assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"
        runner = open_runner(art.runtime, art.path, threads=1)
        assert runner.info()["input_dtype"] == self.expect_input_dtype
        got = compare(runner.predict(digits32.x_test), reference["probs"], digits32.y_test)
        assert got.top1_agreement >= self.min_agreement
        assert (reference["accuracy"] - got.accuracy) * 100 <= self.max_drop_points
        if not conv.quantized:
            assert got.max_abs_error <= conv.tolerance
        self.extra_checks(art, reference)

    def extra_checks(self, art: Any, reference: dict[str, Any]) -> None:
        pass


class TestTFLiteFP32(ConverterContract):
    format = "tflite_fp32"
    min_agreement = 1.0


class TestTFLiteFP16(ConverterContract):
    format = "tflite_fp16"

    def extra_checks(self, art, reference):
        # float16 weights: about half the float32 parameter bytes
        params = reference["model"].count_params()
        assert art.size_bytes < params * 4 * 0.75


class TestTFLiteDynamic(ConverterContract):
    format = "tflite_dynamic"
    min_agreement = 0.97


class TestTFLiteInt8(ConverterContract):
    format = "tflite_int8"
    min_agreement = 0.95
    expect_input_dtype = "int8"

    def extra_checks(self, art, reference):
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(art.path))
        # static batch 1 and integer tensors everywhere except none: full-integer model
        assert list(interp.get_input_details()[0]["shape_signature"]) == [1, 32, 32, 3]
        float_tensors = [t for t in interp.get_tensor_details() if t["dtype"] == np.float32]
        assert not float_tensors, f"float tensors left in a full-int8 model: {float_tensors[:3]}"


def test_uint8_io(reference, digits32, tmp_path):
    art = get_converter("tflite_int8").convert(
        reference["model"], tmp_path, ConvertOptions(calibration=digits32.x_train, int_io="uint8")
    )
    runner = open_runner("litert", art.path)
    assert runner.info()["input_dtype"] == "uint8"
    got = compare(runner.predict(digits32.x_test), reference["probs"], digits32.y_test)
    assert got.top1_agreement >= 0.95


def test_every_registered_converter_has_a_contract_test():
    tested = {c.format for c in ConverterContract.__subclasses__()}
    assert {c.format for c in list_converters()} <= tested


def test_int8_without_calibration_is_a_clear_error(reference, tmp_path):
    from edgekit.errors import BadInputError

    with pytest.raises(BadInputError, match="needs calibration data"):
        get_converter("tflite_int8").convert(reference["model"], tmp_path, ConvertOptions())
    assert not list(tmp_path.iterdir())
