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


TESTED_ELSEWHERE = {
    "edgetpu": "tests/targets/test_edgetpu.py",
    "tensorrt_fp32": "tests/targets/test_tensorrt.py",
    "tensorrt_fp16": "tests/targets/test_tensorrt.py",
    "tensorrt_int8": "tests/targets/test_tensorrt.py",
}


def _has_vnni() -> bool:
    from edgekit.measure.lut import best_int8_isa

    return best_int8_isa() in ("amx_int8", "avx512_vnni", "avx_vnni")


class ConverterContract:
    """Subclass with ``format`` (and the limits the format must meet)."""

    format: ClassVar[str]
    min_agreement: ClassVar[float] = 0.99
    # The fixture is a tiny, briefly trained network (about 95% on digits): int8 costs it more
    # than it costs a real model, so quantized formats get 2.5 points here. The 1-point
    # criterion on the default model is asserted by the end-to-end deploy test.
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
    max_drop_points = 2.5


class TestTFLiteInt8(ConverterContract):
    format = "tflite_int8"
    min_agreement = 0.95
    max_drop_points = 2.5
    expect_input_dtype = "int8"

    def extra_checks(self, art, reference):
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(art.path))
        # static batch 1 and integer tensors everywhere except none: full-integer model
        assert list(interp.get_input_details()[0]["shape_signature"]) == [1, 32, 32, 3]
        float_tensors = [t for t in interp.get_tensor_details() if t["dtype"] == np.float32]
        assert not float_tensors, f"float tensors left in a full-int8 model: {float_tensors[:3]}"


class _ChainedContract(ConverterContract):
    """Formats whose source is another artifact: build the chain the planner gives."""

    def test_export_load_compare(self, reference, digits32, tmp_path):
        from edgekit.converters import plan_chain

        built = {"keras": reference["model"]}
        opts = ConvertOptions(stem="m", calibration=digits32.x_train)
        for step in plan_chain([self.format]):
            conv = get_converter(step)
            built[step] = conv.convert(built[conv.source], tmp_path, opts)
        art = built[self.format]
        conv = get_converter(self.format)
        assert all(f.is_file() for f in art.files) and art.size_bytes > 1000
        assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp") or p.is_dir()]
        runner = open_runner(art.runtime, art.path, threads=1)
        got = compare(runner.predict(digits32.x_test), reference["probs"], digits32.y_test)
        assert got.top1_agreement >= self.min_agreement
        assert (reference["accuracy"] - got.accuracy) * 100 <= self.max_drop_points
        if not conv.quantized:
            assert got.max_abs_error <= conv.tolerance
        self.extra_checks(art, reference)


class TestOnnxFP32(_ChainedContract):
    format = "onnx_fp32"
    min_agreement = 1.0


class TestOnnxFP16(_ChainedContract):
    format = "onnx_fp16"

    def extra_checks(self, art, reference):
        import onnx

        m = onnx.load(str(art.path))
        dtypes = {init.data_type for init in m.graph.initializer if len(init.dims) >= 2}
        assert dtypes == {onnx.TensorProto.FLOAT16}
        assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


class TestOnnxInt8(_ChainedContract):
    format = "onnx_int8"
    min_agreement = 0.95
    max_drop_points = 2.5


class TestOnnxInt8TensorRT(_ChainedContract):
    format = "onnx_int8_trt"
    min_agreement = 0.95
    max_drop_points = 2.5

    def extra_checks(self, art, reference):
        import onnx
        from onnx import numpy_helper

        m = onnx.load(str(art.path))
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
        assert qs, "no QuantizeLinear nodes"
        for n in qs:
            zp = inits[n.input[2]]
            assert zp.dtype == np.int8 and not zp.any(), f"{n.name} has zero point {zp}"
        # every conv / matmul weight is fed through DequantizeLinear of int8 data
        dq_outputs = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
        convs = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        assert convs
        for n in convs:
            w = dq_outputs.get(n.input[1])
            assert w is not None, f"weight of {n.name} has no QDQ"
            assert inits[w.input[0]].dtype == np.int8


class TestOpenVINOFP32(_ChainedContract):
    format = "openvino_fp32"
    min_agreement = 1.0

    def extra_checks(self, art, reference):
        assert art.path.suffix == ".xml" and art.path.with_suffix(".bin").is_file()


class TestOpenVINOFP16(_ChainedContract):
    format = "openvino_fp16"

    def extra_checks(self, art, reference):
        # weights stored as f16 constants: the .bin is about half the float32 parameter bytes
        xml = art.path.read_text()
        assert 'element_type="f16"' in xml
        params = reference["model"].count_params()
        assert art.path.with_suffix(".bin").stat().st_size < params * 4 * 0.6


class TestOpenVINOInt8(_ChainedContract):
    format = "openvino_int8"
    min_agreement = 0.95
    # OpenVINO's int8 kernels on a CPU without VNNI (the AVX2 EPYC CI may run on) saturate
    # full-range weights, so the IR has 7-bit weights everywhere (NNCF's overflow fix). That
    # costs this tiny fixture more than ONNX Runtime's 7-bit per-channel weights do: Keras
    # 0.922; IR 0.786 without the fix, 0.847 with NNCF's first-layer default, 0.897 with it
    # everywhere (9 test images; onnx_int8 0.919, tflite_int8 0.911). 2.5 where VNNI is.
    max_drop_points = 2.5 if _has_vnni() else 3.0

    def extra_checks(self, art, reference):
        import openvino as ov

        model = ov.Core().read_model(str(art.path))
        assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def test_plan_chain_orders_sources_first_and_shares_steps():
    from edgekit.converters import plan_chain

    assert plan_chain(["openvino_int8", "onnx_int8", "tflite_fp32"]) == [
        "onnx_fp32",
        "openvino_int8",
        "onnx_int8",
        "tflite_fp32",
    ]


def test_uint8_io(reference, digits32, tmp_path):
    art = get_converter("tflite_int8").convert(
        reference["model"], tmp_path, ConvertOptions(calibration=digits32.x_train, int_io="uint8")
    )
    runner = open_runner("litert", art.path)
    assert runner.info()["input_dtype"] == "uint8"
    got = compare(runner.predict(digits32.x_test), reference["probs"], digits32.y_test)
    assert got.top1_agreement >= 0.95


def test_every_registered_converter_has_a_contract_test():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    tested = {c.format for c in subclasses(ConverterContract) if hasattr(c, "format")}
    # Formats whose source is a compiled artifact that needs a toolchain absent here are
    # tested with the toolchain faked, in their own module.
    tested |= set(TESTED_ELSEWHERE)
    assert {c.format for c in list_converters()} <= tested


def test_int8_without_calibration_is_a_clear_error(reference, tmp_path):
    from edgekit.errors import BadInputError

    with pytest.raises(BadInputError, match="needs calibration data"):
        get_converter("tflite_int8").convert(reference["model"], tmp_path, ConvertOptions())
    assert not list(tmp_path.iterdir())
