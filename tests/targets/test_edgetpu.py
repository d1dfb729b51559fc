"""Coral Edge TPU: op analysis without the compiler, the compiler step, the delegate runner.

The compiler, libedgetpu and a device are absent on most machines: tests that need them skip
with the reason ``detect_edgetpu()`` gives; the compiler's run/log/parse path is exercised
with a fake ``edgetpu_compiler`` script, the no-device path with a fake delegate library.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.converters import ConvertOptions, get_converter
from edgekit.converters.edgetpu import (
    EdgeTPUConverter,
    edgetpu_compiler_command,
    parse_compiler_output,
)
from edgekit.errors import BadInputError, ConversionError, RuntimeUnavailableError
from edgekit.measure import _edgetpu as edgetpu_runner
from edgekit.measure import compare, open_runner
from edgekit.measure._edgetpu import check_device, detect_edgetpu
from edgekit.targets._edgetpu import (
    REASON_AFTER_UNMAPPED,
    REASON_EDGE_DEQUANTIZE,
    REASON_EDGE_QUANTIZE,
    REASON_NOT_SUPPORTED,
    analyze_edgetpu,
)

DETECTED = detect_edgetpu()
NO_COMPILER = DETECTED["compiler"] is None
NO_DEVICE = not (DETECTED["runtime"] and DETECTED["devices"])
DEVICE_SKIP_REASON = "; ".join(DETECTED["reasons"].values()) or "no Edge TPU"


# ---------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    return np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def tiny(calib, tmp_path_factory) -> dict[str, Any]:
    """mobilenet_v2_tiny (untrained) as Keras, full-int8 TFLite and float32 TFLite."""
    from edgekit._keras import keras
    from edgekit.models import create

    keras.utils.set_random_seed(0)
    model = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10)
    out = tmp_path_factory.mktemp("tiny")
    options = ConvertOptions(stem="tiny", calibration=calib)
    return {
        "model": model,
        "int8": get_converter("tflite_int8").convert(model, out, options).path,
        "fp32": get_converter("tflite_fp32").convert(model, out, options).path,
    }


def _small_model(middle: Any) -> Any:
    """conv -> middle -> 1x1 conv -> global pool -> dense softmax, on 32x32x3."""
    from edgekit._keras import keras

    layers = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = middle(x)
    x = layers.Conv2D(8, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10, activation="softmax")(x))


def _to_int8(
    model: Any,
    calib: np.ndarray,
    path: Path,
    io: str | None = "int8",
    dynamic_batch: bool = False,
) -> Path:
    """Full-int8 conversion; ``from_keras_model`` keeps the -1 batch of the Keras model,
    ``from_concrete_functions`` (the default here) fixes batch 1 as edgekit's converter does."""
    from edgekit._keras import tf

    if dynamic_batch:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    else:
        fn = tf.function(lambda x: model(x, training=False))
        spec = tf.TensorSpec((1, 32, 32, 3), tf.float32)
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [fn.get_concrete_function(spec)], model
        )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calib[i : i + 1]] for i in range(len(calib)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io is not None:  # None keeps float I/O: QUANTIZE/DEQUANTIZE at the graph edges
        converter.inference_input_type = getattr(tf, io)
        converter.inference_output_type = getattr(tf, io)
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def relu_model() -> Any:
    from edgekit._keras import keras

    return _small_model(keras.layers.ReLU())


def _names(report: Any) -> list[str]:
    return [op.op for op in report.ops]


# ---------------------------------------------------------------------------- analysis


def test_int8_zoo_model_maps_every_op(tiny):
    from edgekit.models import count_model

    report = analyze_edgetpu(tiny["int8"])
    assert report.subgraphs == 1 and not report.problems
    assert report.ops_total > 20 and report.ops_mapped == report.ops_total
    assert report.unmapped == [] and report.fully_mapped and report.first_unmapped is None
    assert report.macs_mapped_fraction == 1.0
    # MACs from the TFLite tensor shapes agree with the zoo's count of the Keras model
    assert report.macs_total == report.macs_mapped == count_model(tiny["model"]).macs
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(_names(report))
    d = json.loads(json.dumps(report.as_dict()))
    assert d["ops_mapped"] == d["ops_total"] == len(d["ops"])
    assert d["ops"][0]["where"] == "edgetpu" and d["ops"][0]["macs"] > 0


def test_float_model_first_op_not_int8_then_everything_on_cpu(tiny):
    report = analyze_edgetpu(tiny["fp32"])
    first, rest = report.ops[0], report.ops[1:]
    assert first.op == "CONV_2D" and not first.mapped
    assert first.reason.startswith("not int8: float32 tensor")
    assert all(op.where == "cpu" and op.reason == REASON_AFTER_UNMAPPED for op in rest)
    assert all(any(p.startswith("not int8") for p in op.problems) for op in rest)
    assert report.ops_mapped == 0 and report.macs_mapped_fraction == 0.0
    assert report.unmapped[0] == {"op": "CONV_2D", "index": 0, "reason": first.reason}
    assert "first unmapped: op 0 CONV_2D" in report.summary()


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_dynamic_batch_is_reported(relu_model, calib, tmp_path):
    path = _to_int8(relu_model, calib, tmp_path / "dyn.tflite", dynamic_batch=True)
    report = analyze_edgetpu(path)
    first = report.ops[0]
    assert first.reason.startswith("dynamic shape") and "-1" in first.reason
    assert first.inputs[0].shape_signature[0] == -1
    assert all(op.reason == REASON_AFTER_UNMAPPED for op in report.ops[1:])


def test_unsupported_op_splits_the_graph_there(calib, tmp_path):
    from edgekit._keras import keras

    # LEAKY_RELU converts to an int8 builtin but is not in the Edge TPU's op table (the
    # compiler logs "Operation not supported" for it).
    path = _to_int8(_small_model(keras.layers.LeakyReLU(0.1)), calib, tmp_path / "leaky.tflite")
    report = analyze_edgetpu(path)
    at = _names(report).index("LEAKY_RELU")
    assert at > 0
    assert all(op.mapped for op in report.ops[:at])
    assert report.ops[at].reason == REASON_NOT_SUPPORTED
    assert all(op.reason == REASON_AFTER_UNMAPPED for op in report.ops[at + 1 :])
    assert report.ops_mapped == at and 0 < report.macs_mapped_fraction < 1


def test_rank_5_tensor_is_reported(calib, tmp_path):
    from edgekit._keras import keras

    layers = keras.layers

    def rank5(x: Any) -> Any:
        y = layers.Reshape((2, 16, 32, 8))(x)
        y = layers.Lambda(lambda t: t * 2.0)(y)
        return layers.Reshape((32, 32, 8))(y)

    path = _to_int8(_small_model(rank5), calib, tmp_path / "rank5.tflite")
    report = analyze_edgetpu(path)
    first = report.first_unmapped
    assert first is not None and first.op == "RESHAPE"
    assert first.reason.startswith("tensor rank 5 > 4")
    assert report.ops[0].op == "CONV_2D" and report.ops[0].mapped


def test_float_io_edges_run_on_cpu_without_splitting(relu_model, calib, tmp_path):
    report = analyze_edgetpu(_to_int8(relu_model, calib, tmp_path / "fio.tflite", io=None))
    first, last = report.ops[0], report.ops[-1]
    assert (first.op, first.reason, first.edge) == ("QUANTIZE", REASON_EDGE_QUANTIZE, True)
    assert (last.op, last.reason, last.edge) == ("DEQUANTIZE", REASON_EDGE_DEQUANTIZE, True)
    assert all(op.mapped for op in report.ops[1:-1])
    assert report.first_unmapped is None and report.fully_mapped
    assert report.ops_mapped == report.ops_total - 2 and report.macs_mapped_fraction == 1.0


def test_uint8_io_requantize_maps_from_runtime_13(relu_model, calib, tmp_path):
    path = _to_int8(relu_model, calib, tmp_path / "u8.tflite", io="uint8")
    report = analyze_edgetpu(path)
    assert _names(report)[0] == "QUANTIZE" and report.ops_mapped == report.ops_total
    old = analyze_edgetpu(path, min_runtime_version=12)
    assert not old.ops[0].mapped and "needs runtime >= 13" in old.ops[0].reason


def test_compiled_model_is_recognised(tiny, tmp_path):
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    from edgekit.measure._edgetpu import is_edgetpu_compiled

    # What the compiler writes: the mapped ops replaced by one edgetpu-custom-op.
    model = flatbuffer_utils.read_model(str(tiny["int8"]))
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.CUSTOM
    code.customCode, code.version = "edgetpu-custom-op", 1
    model.operatorCodes.append(code)
    op = model.subgraphs[0].operators[0]
    op.opcodeIndex, op.builtinOptionsType, op.builtinOptions = len(model.operatorCodes) - 1, 0, None
    path = tmp_path / "tiny_edgetpu.tflite"
    flatbuffer_utils.write_model(model, str(path))
    report = analyze_edgetpu(path)
    assert report.compiled and report.ops[0].op == "CUSTOM(edgetpu-custom-op)"
    assert report.ops[0].mapped and not analyze_edgetpu(tiny["int8"]).compiled
    assert is_edgetpu_compiled(path) and not is_edgetpu_compiled(tiny["int8"])


def test_analysis_of_a_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        analyze_edgetpu(tmp_path / "nope.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(BadInputError, match="not a TFLite model"):
        analyze_edgetpu(junk)


# ---------------------------------------------------------------------------- converter

FAKE_COMPILER = r"""#!/bin/sh
# Fake edgetpu_compiler: records its argv, then behaves as FAKE_ETPU_MODE says
# (ok: copy the model and print what compiler 16 prints; fail: exit 1; hang: never finish).
echo "$@" >> "$(dirname "$0")/argv.txt"
if [ "$1" = "--version" ]; then echo "Edge TPU Compiler version 16.0.384591198"; exit 0; fi
while [ $# -gt 0 ]; do
  case "$1" in
    -s) shift ;;
    -m) shift 2 ;;
    -o) out="$2"; shift 2 ;;
    *) model="$1"; shift ;;
  esac
done
stem=$(basename "$model" .tflite)
echo "Edge TPU Compiler version 16.0.384591198"
case "${FAKE_ETPU_MODE:-ok}" in
  fail) echo "ERROR: Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'" >&2
        exit 1 ;;
  hang) exec sleep 30 ;;
esac
cp "$model" "$out/${stem}_edgetpu.tflite"
printf 'Edge TPU Compiler version 16.0.384591198\nInput: %s\n' "$model" > "$out/${stem}_edgetpu.log"
cat <<EOF
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 412 ms.

Input model: $model
Input size: 64.00KiB
Output model: $out/${stem}_edgetpu.tflite
Output size: 120.00KiB
On-chip memory used for caching model parameters: 60.25KiB
On-chip memory remaining for caching model parameters: 7.91MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 26
Operation log: $out/${stem}_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU.
Number of operations that will run on Edge TPU: 25
Number of operations that will run on CPU: 1

Operator                       Count      Status

CONV_2D                        14         Mapped to Edge TPU
DEPTHWISE_CONV_2D              7          Mapped to Edge TPU
ADD                            1          Mapped to Edge TPU
MEAN                           1          Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
SOFTMAX                        1          Mapped to Edge TPU
PAD                            1          Operation is otherwise supported, but not mapped due to some unspecified limitation
Compilation child process completed within timeout period.
Compilation succeeded!
EOF
"""


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch) -> Path:
    """A fake edgetpu_compiler first on PATH; returns the file its argv is appended to."""
    if os.name != "posix":
        pytest.skip("the fake edgetpu_compiler is a POSIX shell script")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "edgetpu_compiler"
    script.write_text(FAKE_COMPILER)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bin_dir / "argv.txt"


def test_compiler_command_is_the_documented_argv():
    assert edgetpu_compiler_command("m_int8.tflite", "out", 13) == [
        "edgetpu_compiler", "-s", "-m", "13", "-o", "out", "m_int8.tflite"
    ]  # fmt: skip
    assert edgetpu_compiler_command(Path("a.tflite"), Path("o"))[1:4] == ["-s", "-m", "14"]


def test_converter_is_registered_with_its_chain_position():
    conv = get_converter("edgetpu")
    assert isinstance(conv, EdgeTPUConverter)
    assert (conv.source, conv.suffix, conv.runtime, conv.precision, conv.quantized) == (
        "tflite_int8", "_edgetpu.tflite", "edgetpu", "int8", True
    )  # fmt: skip


def test_converter_refuses_a_float_model_before_compiling(tiny, fake_compiler, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(BadInputError, match=r"not a full-int8 model: .*op 0 CONV_2D \(float32"):
        get_converter("edgetpu").convert(tiny["fp32"], out, ConvertOptions(stem="tiny"))
    assert not fake_compiler.exists(), "the compiler ran on a float model"
    assert not out.exists() or not list(out.iterdir())


def test_converter_without_compiler_names_it_and_the_package(tiny, tmp_path, monkeypatch):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    out = tmp_path / "out"
    with pytest.raises(RuntimeUnavailableError, match=r"edgetpu_compiler not found on PATH.*"
                       r"apt package edgetpu-compiler") as err:  # fmt: skip
        get_converter("edgetpu").convert(tiny["int8"], out, ConvertOptions(stem="tiny"))
    assert "-s -m 14 -o" in str(err.value)  # the command to run elsewhere
    assert not out.exists() or not list(out.iterdir())


def test_fake_compiler_run_log_parse_and_rename(tiny, fake_compiler, tmp_path):
    from edgekit.converters import Artifact

    out = tmp_path / "out"
    src = Artifact("tflite_int8", tiny["int8"], "litert", "int8", files=[tiny["int8"]])
    art = get_converter("edgetpu").convert(src, out, ConvertOptions(stem="tiny"))
    assert art.path == out / "tiny_edgetpu.tflite" and art.path.is_file()
    assert art.path.read_bytes() == tiny["int8"].read_bytes()  # the fake copies its input
    assert (art.format, art.runtime, art.precision) == ("edgetpu", "edgetpu", "int8")
    assert sorted(p.name for p in out.iterdir()) == ["tiny_edgetpu.log", "tiny_edgetpu.tflite"]
    argv = fake_compiler.read_text().split()
    assert argv[:4] == ["-s", "-m", "14", "-o"] and argv[-1] == str(tiny["int8"].absolute())
    d = art.details
    assert (d["ops_on_edgetpu"], d["ops_on_cpu"], d["ops_total"]) == (25, 1, 26)
    assert d["compiler_version"] == "16.0.384591198" and d["edgetpu_subgraphs"] == 1
    assert d["off_chip_memory_used"] == "0.00B" and d["compile_ms"] == 412
    assert d["operations"][0] == {"op": "CONV_2D", "count": 14, "status": "Mapped to Edge TPU"}
    assert d["command"] == edgetpu_compiler_command(tiny["int8"].absolute(), out, 14)
    assert d["analysis"]["ops_mapped"] == d["analysis"]["ops_total"]
    text = (out / "tiny_edgetpu.log").read_text()
    assert text.startswith("$ ") and "Number of operations that will run on CPU: 1" in text
    assert "--- operation log tiny_int8_edgetpu.log ---" in text


def test_fake_compiler_failure_keeps_the_log_and_no_artifact(
    tiny, fake_compiler, tmp_path, monkeypatch
):
    monkeypatch.setenv("FAKE_ETPU_MODE", "fail")
    out = tmp_path / "out"
    with pytest.raises(
        ConversionError, match=r"exit status 1: ERROR: Didn't find op.*compiler log"
    ):
        get_converter("edgetpu").convert(tiny["int8"], out, ConvertOptions(stem="tiny"))
    assert [p.name for p in out.iterdir()] == ["tiny_edgetpu.log"]
    assert "FULLY_CONNECTED" in (out / "tiny_edgetpu.log").read_text()


def test_fake_compiler_timeout(tiny, fake_compiler, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ETPU_MODE", "hang")
    out = tmp_path / "out"
    options = ConvertOptions(stem="tiny", extra={"timeout_s": 1})
    with pytest.raises(ConversionError, match=r"no result within 1 s"):
        get_converter("edgetpu").convert(tiny["int8"], out, options)
    assert [p.name for p in out.iterdir()] == ["tiny_edgetpu.log"]


def test_bad_converter_options_and_sources(tiny, tmp_path):
    conv = get_converter("edgetpu")
    with pytest.raises(BadInputError, match="min_runtime_version='new'"):
        conv.convert(tiny["int8"], tmp_path, ConvertOptions(extra={"min_runtime_version": "new"}))
    with pytest.raises(BadInputError, match=r"tflite_int8 artifact or a \.tflite path"):
        conv.convert(object(), tmp_path, ConvertOptions())


def test_summary_parse_when_every_op_maps():
    # When nothing stays on the CPU the compiler prints the table but no "will run on" lines.
    text = textwrap.dedent(
        """\
        Edge TPU Compiler version 16.0.384591198
        Total number of operations: 3
        Operator                       Count      Status

        CONV_2D                        2          Mapped to Edge TPU
        SOFTMAX                        1          Mapped to Edge TPU
        """
    )
    got = parse_compiler_output(text)
    assert (got["ops_on_edgetpu"], got["ops_on_cpu"], got["ops_total"]) == (3, 0, 3)
    assert parse_compiler_output("")["operations"] == []


@pytest.mark.skipif(NO_COMPILER, reason=DETECTED["reasons"].get("compiler", ""))
def test_real_compiler_compiles_the_int8_model(tiny, tmp_path):
    art = get_converter("edgetpu").convert(tiny["int8"], tmp_path, ConvertOptions(stem="tiny"))
    assert analyze_edgetpu(art.path).compiled
    assert art.details["ops_on_edgetpu"] > 0 and (tmp_path / "tiny_edgetpu.log").is_file()


# ---------------------------------------------------------------------------- runner

FAKE_LIBEDGETPU = r"""
#include <stdlib.h>
typedef void (*report_fn)(const char *);
static char fake_delegate[256];
void *tflite_plugin_create_delegate(char **keys, char **values, int n, report_fn report) {
  if (getenv("FAKE_EDGETPU_DEVICE")) return fake_delegate;
  if (report) report("Failed to open an Edge TPU device");
  return NULL;
}
void tflite_plugin_destroy_delegate(void *delegate) {}
"""


@pytest.fixture(scope="module")
def fake_libedgetpu(tmp_path_factory) -> Path:
    """A delegate library that finds no device (or a dummy one with FAKE_EDGETPU_DEVICE)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or platform.system() != "Linux":
        pytest.skip("needs a C compiler on Linux to build a fake delegate library")
    folder = tmp_path_factory.mktemp("fakelib")
    (folder / "fake.c").write_text(FAKE_LIBEDGETPU)
    lib = folder / "libfakeedgetpu.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(folder / "fake.c")], check=True)
    return lib


def test_check_device_strings():
    for ok in ("", "usb", "usb:0", "pci", "pci:1", ":0"):
        assert check_device(ok) == ok
    for bad in ("usb0", "tpu", "usb:", "usb:x"):
        with pytest.raises(BadInputError, match="unknown Edge TPU device"):
            check_device(bad)


@pytest.mark.skipif(DETECTED["runtime"], reason="libedgetpu is installed here")
def test_runner_without_libedgetpu_names_the_package(tiny):
    with pytest.raises(RuntimeUnavailableError, match=r"libedgetpu.* not found; .*libedgetpu1-std"):
        open_runner("edgetpu", tiny["int8"])


def test_runner_with_a_library_but_no_device(tiny, fake_libedgetpu, monkeypatch):
    monkeypatch.setitem(edgetpu_runner.EDGETPU_LIBRARIES, platform.system(), str(fake_libedgetpu))
    with pytest.raises(RuntimeUnavailableError, match=r"no Edge TPU found \(device 'usb:0'.*"
                       r"Failed to open an Edge TPU device"):  # fmt: skip
        edgetpu_runner.EdgeTPURunner(tiny["int8"], device="usb:0")


def test_runner_refuses_an_uncompiled_model(tiny, fake_libedgetpu, monkeypatch):
    monkeypatch.setitem(edgetpu_runner.EDGETPU_LIBRARIES, platform.system(), str(fake_libedgetpu))
    monkeypatch.setenv("FAKE_EDGETPU_DEVICE", "1")
    with pytest.raises(BadInputError, match="not compiled for the Edge TPU"):
        open_runner("edgetpu", tiny["int8"])


def test_detect_edgetpu_gives_reasons_for_what_is_missing():
    d = detect_edgetpu()
    assert set(d) >= {"compiler", "compiler_version", "runtime", "devices", "reasons"}
    if d["compiler"] is None:
        assert "edgetpu-compiler" in d["reasons"]["compiler"]
    if not d["runtime"]:
        assert "libedgetpu1-std" in d["reasons"]["runtime"]
    if not d["devices"]:
        assert d["reasons"]["devices"].startswith("no Edge TPU found")
    json.dumps(d)


def test_detect_edgetpu_reads_the_compiler_version(fake_compiler):
    d = detect_edgetpu()
    assert d["compiler"] and d["compiler_version"] == "16.0.384591198"
    assert "compiler" not in d["reasons"]


@pytest.mark.coral
@pytest.mark.skipif(NO_DEVICE or NO_COMPILER, reason=DEVICE_SKIP_REASON)
def test_edgetpu_top1_agrees_with_the_int8_cpu_model(trained_tiny, digits32, tmp_path):
    model, _ = trained_tiny
    options = ConvertOptions(stem="tiny", calibration=digits32.x_train)
    int8 = get_converter("tflite_int8").convert(model, tmp_path, options)
    compiled = get_converter("edgetpu").convert(int8, tmp_path, options)
    cpu = open_runner("litert", int8.path).predict(digits32.x_test)
    tpu = open_runner("edgetpu", compiled.path)
    assert tpu.info()["name"] == "edgetpu"
    got = compare(tpu.predict(digits32.x_test), cpu, digits32.y_test)
    assert got.top1_agreement >= 0.98
