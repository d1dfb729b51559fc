"""Jetson / TensorRT: the ONNX -> engine converters, the trtexec script, the engine runner.

TensorRT and a CUDA GPU are absent on most machines: the converter's script path runs for
real (against a fake ``trtexec`` on PATH), the builder and the runner run against a fake
``tensorrt`` module injected into ``sys.modules`` with a fake CUDA memory helper, and GPU
detection against a fake ``libcuda``. The real build-and-run test is marked ``jetson`` and
skips with the reason ``detect_tensorrt()`` gives.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgekit._io import sha256_file
from edgekit.converters import Artifact, ConvertOptions, get_converter, plan_chain
from edgekit.converters import tensorrt as trt_build
from edgekit.converters.tensorrt import (
    check_qdq,
    engine_manifest_path,
    trtexec_command,
    trtexec_timing_command,
)
from edgekit.errors import BadInputError, ConversionError, RuntimeUnavailableError
from edgekit.measure import _tensorrt as trt_runner
from edgekit.measure._tensorrt import TensorRTRunner, detect_tensorrt, parse_gpu_device

DETECTED = detect_tensorrt()
JETSON_MISSING = [DETECTED["reasons"][k] for k in ("tensorrt", "gpu", "cuda_memory")
                  if k in DETECTED["reasons"]]  # fmt: skip
ORIN = {"index": 0, "name": "Orin", "compute_capability": "8.7"}
XAVIER = {"index": 0, "name": "Xavier", "compute_capability": "7.2"}


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert "\n" not in text, f"message is not one line: {text!r}"
    return text


# ---------------------------------------------------------------------------- models


def _fold_int32_biases(src: Path, dst: Path) -> Path:
    """``src`` with every DequantizeLinear of an int32 initializer replaced by its float value
    (what quantize_static writes with QuantizeBias=False)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    inits = {t.name: t for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        data = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if data is not None and data.data_type == onnx.TensorProto.INT32:
            value = numpy_helper.to_array(data) * numpy_helper.to_array(inits[node.input[1]])
            value = value.astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    """mobilenet_v2_tiny (untrained): float32 ONNX; the onnx_int8_trt converter's output
    (``int8_converter``); the same with its int32 biases folded to float (``int8``)."""
    import onnxruntime as ort

    from edgekit._keras import keras
    from edgekit.models import create

    keras.utils.set_random_seed(0)
    model = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10)
    calib = np.random.default_rng(0).random((16, 32, 32, 3), dtype=np.float32)
    out = tmp_path_factory.mktemp("onnx")
    options = ConvertOptions(stem="tiny", calibration=calib)
    fp32 = get_converter("onnx_fp32").convert(model, out, options)
    int8 = get_converter("onnx_int8_trt").convert(fp32, out, options)
    folded = _fold_int32_biases(int8.path, tmp_path_factory.mktemp("folded") / int8.path.name)
    x = {"input": calib[:1]}
    ref = ort.InferenceSession(str(int8.path), providers=["CPUExecutionProvider"]).run(None, x)
    got = ort.InferenceSession(str(folded), providers=["CPUExecutionProvider"]).run(None, x)
    np.testing.assert_allclose(got[0], ref[0], atol=1e-5)
    return {"fp32": fp32.path, "int8": folded, "int8_converter": int8.path}


def _copy_into(src: Path, folder: Path) -> Path:
    """The ONNX beside the engine, as the deploy pipeline has it (one artifact folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(src, folder / src.name))


def _qdq_model(path: Path, zero_point: Any = 5, dtype: Any = np.int8, with_zp: bool = True) -> Path:
    """input -> QuantizeLinear -> DequantizeLinear -> output, built by hand."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "scale")]
    args = ["input", "scale"]
    if with_zp:
        inits.append(numpy_helper.from_array(np.array(zero_point, dtype), "zp"))
        args.append("zp")
    nodes = [
        helper.make_node("QuantizeLinear", args, ["q"], name="q1"),
        helper.make_node("DequantizeLinear", ["q", *args[1:]], ["output"], name="dq1"),
    ]
    graph = helper.make_graph(nodes, "qdq", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------------------- fakes


class _Severity:
    def __init__(self, name: str) -> None:
        self.name = name


ERROR, WARNING, VERBOSE = _Severity("ERROR"), _Severity("WARNING"), _Severity("VERBOSE")
MAGIC_ERROR = (
    "1: [stdArchiveReader.cpp::StdArchiveReader::32] Error Code 1: Serialization "
    "(Serialization assertion magicTagRead == kMAGIC_TAG failed.Magic tag does not match)"
)


def _fake_probs(x: np.ndarray) -> np.ndarray:
    """What the fake engine computes: softmax of 10 numbers taken from the image."""
    logits = x.reshape(len(x), -1)[:, :10] * 10.0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


class FakeCuda:
    """Stands in for cuda-python: 'device' buffers are numpy byte arrays keyed by pointer."""

    name = "fake-cuda"

    def __init__(self) -> None:
        self.buffers: dict[int, np.ndarray] = {}
        self.freed: list[int] = []
        self._next = 4096

    def malloc(self, nbytes: int) -> int:
        self._next += 4096
        self.buffers[self._next] = np.zeros(nbytes, np.uint8)
        return self._next

    def free(self, ptr: int) -> None:
        self.freed.append(ptr)
        del self.buffers[ptr]

    def stream(self) -> str:
        return "stream"

    def stream_handle(self, stream: Any) -> int:
        return 7

    def htod(self, ptr: int, host: np.ndarray, stream: Any) -> None:
        self.buffers[ptr][: host.nbytes] = np.ascontiguousarray(host).view(np.uint8).reshape(-1)

    def dtoh(self, host: np.ndarray, ptr: int, stream: Any) -> None:
        host.view(np.uint8).reshape(-1)[:] = self.buffers[ptr][: host.nbytes]

    def sync(self, stream: Any) -> None:
        pass


def make_fake_tensorrt(
    version: str = "10.3.0",
    *,
    deserialize: str = "engine",
    parse_ok: bool = True,
    build_ok: bool = True,
    precision_flags: bool = True,
    memory: FakeCuda | None = None,
) -> types.ModuleType:
    """A ``tensorrt`` module with the calls edgekit makes; ``trt.state`` records them."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    state = SimpleNamespace(flags=[], network_flags=None, pool=None, parsed=None, loaded=None)
    trt.state = state

    class ILogger:
        Severity = SimpleNamespace(ERROR=ERROR, WARNING=WARNING, VERBOSE=VERBOSE)

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0)
    trt.BuilderFlag = (
        SimpleNamespace(FP16="FP16", INT8="INT8") if precision_flags else SimpleNamespace()
    )
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.nptype = lambda dtype: np.float32

    class Config:
        def set_flag(self, flag: str) -> None:
            state.flags.append(flag)

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            state.pool = (pool, size)

    class Builder:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int) -> object:
            state.network_flags = flags
            return object()

        def create_builder_config(self) -> Config:
            return Config()

        def build_serialized_network(self, network: Any, config: Any) -> bytes | None:
            self.logger.log(VERBOSE, "fake: tactic timing (not kept)")
            self.logger.log(WARNING, "fake builder: nothing real was built")
            if not build_ok:
                self.logger.log(ERROR, "fake: could not find any implementation for node Conv_3")
                return None
            return b"FAKEPLAN\x00\x01\x02\x03" + version.encode()

    class OnnxParser:
        def __init__(self, network: Any, logger: Any) -> None:
            self.errors: list[str] = []

        def parse_from_file(self, path: str) -> bool:
            state.parsed = path
            if not parse_ok:
                self.errors = ["In node 3 (importConv): UNSUPPORTED_NODE: fake"]
            return parse_ok

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, i: int) -> str:
            return self.errors[i]

    shapes = {"input": (1, 32, 32, 3), "probs": (1, 10)}

    class Context:
        def __init__(self) -> None:
            self.addresses: dict[str, int] = {}

        def set_tensor_address(self, name: str, ptr: int) -> None:
            self.addresses[name] = ptr

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return shapes[name]

        def execute_async_v3(self, stream_handle: int) -> bool:
            assert stream_handle == 7 and memory is not None
            x = memory.buffers[self.addresses["input"]].view(np.float32).reshape(shapes["input"])
            y = _fake_probs(x)
            memory.buffers[self.addresses["probs"]][:] = y.view(np.uint8).reshape(-1)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i: int) -> str:
            return ["input", "probs"][i]

        def get_tensor_mode(self, name: str) -> str:
            return "INPUT" if name == "input" else "OUTPUT"

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return shapes[name]

        def get_tensor_dtype(self, name: str) -> str:
            return "FLOAT"

        def create_execution_context(self) -> Context:
            return Context()

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
            state.loaded = data
            if deserialize == "none":
                self.logger.log(ERROR, MAGIC_ERROR)
                return None
            if deserialize == "raise":
                raise RuntimeError("fake: plan is truncated")
            return Engine()

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


@pytest.fixture
def no_tensorrt(monkeypatch) -> None:
    """``import tensorrt`` fails, here and on a device that has it."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def fake_device(monkeypatch) -> Any:
    """Install a fake TensorRT (and an Orin GPU); returns ``install(**fake options)``."""

    def install(gpu: dict[str, Any] = ORIN, **kwargs: Any) -> types.ModuleType:
        trt = make_fake_tensorrt(**kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(trt_build, "cuda_gpus", lambda: ([gpu], None))
        memory = kwargs.get("memory")
        if memory is not None:
            monkeypatch.setattr(trt_runner, "open_cuda_memory", lambda index: memory)
        return trt

    return install


# ---------------------------------------------------------------------------- commands


def test_trtexec_command_argv_per_precision():
    assert trtexec_command("m_fp32.onnx", "m_fp16.engine", "fp16") == [
        "trtexec", "--onnx=m_fp32.onnx", "--saveEngine=m_fp16.engine", "--fp16"
    ]  # fmt: skip
    assert trtexec_command(Path("m_int8_trt.onnx"), Path("m_int8.engine"), "int8") == [
        "trtexec", "--onnx=m_int8_trt.onnx", "--saveEngine=m_int8.engine", "--int8", "--fp16"
    ]  # fmt: skip
    assert trtexec_command("a.onnx", "a.engine", "fp32") == [
        "trtexec", "--onnx=a.onnx", "--saveEngine=a.engine"
    ]  # fmt: skip
    argv = trtexec_command("a.onnx", "a.engine", "fp16", workspace_mib=512, trtexec="/x/trtexec")
    assert argv[0] == "/x/trtexec" and argv[-1] == "--memPoolSize=workspace:512"
    with pytest.raises(BadInputError, match="unknown TensorRT precision 'int4'; choose one of"):
        trtexec_command("a.onnx", "a.engine", "int4")


def test_trtexec_timing_command():
    assert trtexec_timing_command("m_fp16.engine") == [
        "trtexec", "--loadEngine=m_fp16.engine", "--warmUp=500", "--iterations=200",
        "--avgRuns=100",
    ]  # fmt: skip
    assert trtexec_timing_command("e", iterations=50)[3] == "--iterations=50"


def test_converters_are_registered_with_their_chain_position():
    rows = {
        f: (c.source, c.suffix, c.runtime, c.precision, c.quantized)
        for f in ("tensorrt_fp32", "tensorrt_fp16", "tensorrt_int8")
        for c in [get_converter(f)]
    }
    assert rows == {
        "tensorrt_fp32": ("onnx_fp32", ".engine", "tensorrt", "fp32", False),
        "tensorrt_fp16": ("onnx_fp32", ".engine", "tensorrt", "fp16", False),
        "tensorrt_int8": ("onnx_int8_trt", ".engine", "tensorrt", "int8", True),
    }
    assert plan_chain(["tensorrt_int8", "tensorrt_fp16"]) == [
        "onnx_fp32", "onnx_int8_trt", "tensorrt_int8", "tensorrt_fp16"
    ]  # fmt: skip


# ---------------------------------------------------------------------------- no TensorRT


def test_fp16_without_tensorrt_writes_the_trtexec_script(onnx_models, tmp_path, no_tensorrt):
    out = tmp_path / "out"
    onnx_path = _copy_into(onnx_models["fp32"], out)
    src = Artifact("onnx_fp32", onnx_path, "onnxruntime", "fp32", files=[onnx_path])
    with pytest.raises(RuntimeUnavailableError) as err:
        get_converter("tensorrt_fp16").convert(src, out, ConvertOptions(stem="tiny"))
    text = _one_line(err)
    script = out / "tiny_fp16_trtexec.sh"
    assert text.startswith("cannot build tiny_fp16.engine here: TensorRT is not importable")
    assert "JetPack" in text and 'python3 -c "import tensorrt"' in text
    assert f"wrote {script} with the trtexec commands" in text
    assert sorted(p.name for p in out.iterdir()) == ["tiny_fp16_trtexec.sh", "tiny_fp32.onnx"]
    body = script.read_text()
    assert os.access(script, os.X_OK) and body.startswith("#!/usr/bin/env bash\n")
    assert '"$TRTEXEC" --onnx=tiny_fp32.onnx --saveEngine=tiny_fp16.engine --fp16 2>&1' in body
    assert '"$TRTEXEC" --loadEngine=tiny_fp16.engine --warmUp=500' in body
    assert sha256_file(onnx_path) in body and "/usr/src/tensorrt/bin/trtexec" in body
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def _int8_script_check(src: Path, out: Path) -> None:
    onnx_path = _copy_into(src, out)
    with pytest.raises(RuntimeUnavailableError, match=r"tiny_int8_trtexec\.sh") as err:
        get_converter("tensorrt_int8").convert(onnx_path, out, ConvertOptions(stem="tiny"))
    assert "TensorRT is not importable" in _one_line(err)
    body = (out / "tiny_int8_trtexec.sh").read_text()
    assert "--onnx=tiny_int8_trt.onnx --saveEngine=tiny_int8.engine --int8 --fp16" in body
    assert not list(out.glob("*.engine")) and not list(out.glob(".*.tmp"))


def test_int8_from_the_onnx_int8_trt_converter_is_accepted(onnx_models, tmp_path, no_tensorrt):
    _int8_script_check(onnx_models["int8_converter"], tmp_path / "out")


def test_int8_symmetric_qdq_is_accepted_up_to_tensorrt(onnx_models, tmp_path, no_tensorrt):
    _int8_script_check(onnx_models["int8"], tmp_path / "out")


def test_int8_refuses_int32_biases_before_anything_else(tmp_path, no_tensorrt):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # input -> Q -> DQ -> Add(DQ(int32 bias)): what quantize_static writes for a biased layer
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(np.arange(4, dtype=np.int32), "bias_quantized"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "bias_scale"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "zp"], ["q"], name="q1"),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["x"], name="dq1"),
        helper.make_node("DequantizeLinear", ["bias_quantized", "bias_scale"], ["b"], name="dqb"),
        helper.make_node("Add", ["x", "b"], ["output"], name="add"),
    ]
    graph = helper.make_graph(nodes, "bias", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp_path / "bias.onnx"))
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as err:
        get_converter("tensorrt_int8").convert(tmp_path / "bias.onnx", out, ConvertOptions())
    text = _one_line(err)
    assert "dequantizes int32 data in 1 DequantizeLinear node(s) (quantized biases; the " in text
    assert "first is 'dqb'), which TensorRT cannot parse" in text
    assert text.endswith("(onnxruntime quantize_static extra option QuantizeBias=False)")
    assert not out.exists()


def test_an_onnx_elsewhere_is_named_by_absolute_path(onnx_models, tmp_path, no_tensorrt):
    options = ConvertOptions(stem="m", extra={"workspace_mib": 256})
    with pytest.raises(RuntimeUnavailableError):
        get_converter("tensorrt_fp32").convert(onnx_models["fp32"], tmp_path, options)
    body = (tmp_path / "m_fp32_trtexec.sh").read_text()
    want = f"--onnx={onnx_models['fp32'].absolute()} --saveEngine=m_fp32.engine"
    assert f"{want} --memPoolSize=workspace:256 2>&1" in body


FAKE_TRTEXEC = r"""#!/bin/sh
# Fake trtexec: records its argv; --saveEngine=F writes F.
echo "$@" >> "$(dirname "$0")/argv.txt"
for arg in "$@"; do
  case "$arg" in --saveEngine=*) printf 'fake plan' > "${arg#--saveEngine=}" ;; esac
done
echo "&&&& PASSED TensorRT.trtexec [TensorRT v100300] # trtexec $*"
"""


@pytest.fixture
def fake_trtexec(tmp_path, monkeypatch) -> Path:
    """A fake trtexec first on PATH; returns the file its argv lines are appended to."""
    if os.name != "posix" or not shutil.which("bash"):
        pytest.skip("the trtexec script and the fake trtexec need a POSIX shell and bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "trtexec"
    exe.write_text(FAKE_TRTEXEC)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("TRTEXEC", raising=False)
    return bin_dir / "argv.txt"


def test_the_script_builds_then_times_with_trtexec(
    onnx_models, tmp_path, no_tensorrt, fake_trtexec
):
    out = tmp_path / "device-copy"
    _copy_into(onnx_models["int8"], out)
    with pytest.raises(RuntimeUnavailableError):
        get_converter("tensorrt_int8").convert(
            out / "tiny_int8_trt.onnx", out, ConvertOptions(stem="tiny")
        )
    proc = subprocess.run(
        [str(out / "tiny_int8_trtexec.sh")], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert fake_trtexec.read_text().splitlines() == [
        "--onnx=tiny_int8_trt.onnx --saveEngine=tiny_int8.engine --int8 --fp16",
        "--loadEngine=tiny_int8.engine --warmUp=500 --iterations=200 --avgRuns=100",
    ]
    assert (out / "tiny_int8.engine").read_bytes() == b"fake plan"
    assert "PASSED" in (out / "tiny_int8_trtexec_build.log").read_text()
    assert (out / "tiny_int8_trtexec_timing.log").is_file()


# ---------------------------------------------------------------------------- refusals


def test_int8_refuses_an_asymmetric_qdq_model_before_anything_else(tmp_path, no_tensorrt):
    model = _qdq_model(tmp_path / "asym.onnx", zero_point=5)
    out = tmp_path / "out"
    with pytest.raises(BadInputError) as err:
        get_converter("tensorrt_int8").convert(model, out, ConvertOptions(stem="m"))
    text = _one_line(err)
    assert "non-zero zero point (5) in QuantizeLinear node 'q1'" in text
    assert "TensorRT takes only symmetric int8 (zero point 0): use the onnx_int8_trt format" in text
    assert not out.exists(), "something was written for a refused model"


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"zero_point": 0, "dtype": np.uint8}, "a uint8 zero point in QuantizeLinear node 'q1'"),
        ({"with_zp": False}, "no zero point in QuantizeLinear node 'q1', so it is uint8"),
    ],
)
def test_int8_refuses_uint8_quantization(tmp_path, kwargs, expected):
    model = _qdq_model(tmp_path / "u8.onnx", **kwargs)
    with pytest.raises(BadInputError, match=expected):
        check_qdq(model, "int8")


def test_symmetric_hand_built_qdq_passes_the_check(tmp_path):
    model = _qdq_model(tmp_path / "sym.onnx", zero_point=0)
    assert check_qdq(model, "int8") == {"quantize_nodes": 1, "dequantize_nodes": 1}


def test_int8_refuses_a_float_model_and_floats_refuse_qdq(onnx_models, tmp_path):
    with pytest.raises(
        BadInputError, match=r"no QuantizeLinear/DequantizeLinear nodes.*onnx_int8_trt"
    ):
        get_converter("tensorrt_int8").convert(onnx_models["fp32"], tmp_path, ConvertOptions())
    with pytest.raises(BadInputError, match=r"QuantizeLinear/DequantizeLinear nodes, so TensorRT "
                       r"would build an int8 engine, not fp16; use the tensorrt_int8"):  # fmt: skip
        get_converter("tensorrt_fp16").convert(onnx_models["int8"], tmp_path, ConvertOptions())
    assert not list(tmp_path.iterdir())


def test_bad_sources_and_options(onnx_models, tmp_path):
    conv = get_converter("tensorrt_fp16")
    with pytest.raises(
        BadInputError, match=r"takes an ONNX artifact or an \.onnx path, got object"
    ):
        conv.convert(object(), tmp_path, ConvertOptions())
    with pytest.raises(BadInputError, match=r"expected an \.onnx file"):
        conv.convert(tmp_path / "missing.onnx", tmp_path, ConvertOptions())
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff\xfe not protobuf")
    with pytest.raises(BadInputError, match="is not a loadable ONNX model"):
        conv.convert(junk, tmp_path, ConvertOptions())
    with pytest.raises(BadInputError, match="workspace_mib='big' is not valid"):
        conv.convert(onnx_models["fp32"], tmp_path, ConvertOptions(extra={"workspace_mib": "big"}))


# ---------------------------------------------------------------------------- build (fake)


@pytest.mark.parametrize(
    "fmt, version, flags, network_flags",
    [
        ("tensorrt_int8", "10.3.0", ["INT8", "FP16"], 0),
        ("tensorrt_fp16", "8.5.2.2", ["FP16"], 1),  # JetPack 5: explicit batch flag
    ],
)
def test_fake_build_writes_engine_manifest_and_log(
    onnx_models, tmp_path, fake_device, fmt, version, flags, network_flags
):
    trt = fake_device(version=version)
    out = tmp_path / "out"
    src = _copy_into(onnx_models["int8" if fmt == "tensorrt_int8" else "fp32"], out)
    options = ConvertOptions(stem="tiny", extra={"workspace_mib": 256})
    art = get_converter(fmt).convert(src, out, options)
    precision = fmt.split("_")[1]
    assert art.path == out / f"tiny_{precision}.engine"
    assert art.path.read_bytes().startswith(b"FAKEPLAN")
    assert (art.format, art.runtime, art.precision) == (fmt, "tensorrt", precision)
    assert trt.state.flags == flags and trt.state.network_flags == network_flags
    assert trt.state.pool == ("WORKSPACE", 256 << 20) and trt.state.parsed == str(src)
    manifest = json.loads(engine_manifest_path(art.path).read_text())
    assert manifest["edgekit_tensorrt_engine"] == 1
    assert manifest["tensorrt_version"] == version and manifest["precision"] == precision
    assert (manifest["gpu"], manifest["compute_capability"]) == ("Orin", "8.7")
    assert manifest["onnx"] == src.name and manifest["onnx_sha256"] == sha256_file(src)
    assert manifest["engine_sha256"] == sha256_file(art.path)
    assert manifest["builder_flags"] == flags
    assert manifest["trtexec_command"] == trtexec_command(
        src.name, art.path.name, precision, workspace_mib=256
    )
    assert art.files == [art.path, engine_manifest_path(art.path)]
    assert art.details["compute_capability"] == "8.7" and art.details["log"].endswith(".log")
    text = (out / f"tiny_{precision}_tensorrt.log").read_text()
    assert "[WARNING] fake builder: nothing real was built" in text
    assert "equivalent trtexec command" in text and "VERBOSE" not in text
    assert not list(out.glob("*_trtexec.sh")) and not list(out.glob(".*"))


def test_fake_parser_failure_keeps_the_log_and_writes_no_engine(onnx_models, tmp_path, fake_device):
    fake_device(parse_ok=False)
    out = tmp_path / "out"
    with pytest.raises(ConversionError) as err:
        get_converter("tensorrt_fp16").convert(onnx_models["fp32"], out, ConvertOptions(stem="m"))
    text = _one_line(err)
    assert "ONNX parser rejected" in text and "In node 3 (importConv)" in text
    assert f"TensorRT log: {out / 'm_fp16_tensorrt.log'}" in text
    assert [p.name for p in out.iterdir()] == ["m_fp16_tensorrt.log"]
    assert "[PARSER] In node 3" in (out / "m_fp16_tensorrt.log").read_text()


def test_fake_builder_failure_names_the_first_error(onnx_models, tmp_path, fake_device):
    fake_device(build_ok=False)
    expected = r"could not build a fp32 engine from .*: fake: could not find any implementation "
    with pytest.raises(ConversionError, match=expected + r"for node Conv_3 \(TensorRT log"):
        get_converter("tensorrt_fp32").convert(onnx_models["fp32"], tmp_path, ConvertOptions())
    assert not list(tmp_path.glob("*.engine"))


def test_tensorrt_11_has_no_precision_flags(onnx_models, tmp_path, fake_device):
    trt = fake_device(version="11.0.0", precision_flags=False)
    with pytest.raises(ConversionError, match=r"TensorRT 11.0.0 has no BuilderFlag.FP16"):
        get_converter("tensorrt_fp16").convert(onnx_models["fp32"], tmp_path, ConvertOptions())
    # int8 is explicit quantization: the QDQ nodes alone make the int8 layers
    art = get_converter("tensorrt_int8").convert(onnx_models["int8"], tmp_path, ConvertOptions())
    assert art.path.is_file() and trt.state.flags == []


# ---------------------------------------------------------------------------- runner


@pytest.fixture
def some_engine(tmp_path) -> Path:
    path = tmp_path / "x_fp16.engine"
    path.write_bytes(b"ftrt\x00\x00\x00\x00" + bytes(range(256)))
    return path


def test_runner_without_tensorrt_names_the_install(some_engine, no_tensorrt):
    with pytest.raises(RuntimeUnavailableError) as err:
        TensorRTRunner(some_engine)
    text = _one_line(err)
    assert text.startswith("TensorRT is not importable") and "JetPack" in text


@pytest.mark.parametrize(
    "content, what",
    [
        (b"\x1c\x00\x00\x00TFL3" + bytes(64), "a TFLite model"),
        (b"this is not an engine\n", "a text file"),
        (b"\x08\x08\x12\x07tf2onnx" + bytes(16), "an ONNX model"),
        (b"PK\x03\x04" + bytes(32), "a zip archive (a .keras model?)"),
    ],
)
def test_runner_tells_a_foreign_file_apart(tmp_path, content, what, no_tensorrt):
    path = tmp_path / "model.engine"
    path.write_bytes(content)
    with pytest.raises(BadInputError) as err:
        TensorRTRunner(path)
    assert f"'{path}' is {what}, not a serialized TensorRT engine" in _one_line(err)


def test_runner_refuses_missing_and_empty_files(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        TensorRTRunner(tmp_path / "nope.engine")
    (tmp_path / "empty.engine").write_bytes(b"")
    with pytest.raises(BadInputError, match="is empty"):
        TensorRTRunner(tmp_path / "empty.engine")


def test_engine_built_elsewhere_says_rebuild_on_the_device(onnx_models, tmp_path, fake_device):
    # Built on a Xavier with JetPack 5 (TensorRT 8.5) ...
    fake_device(version="8.5.2.2", gpu=XAVIER)
    out = tmp_path / "out"
    src = _copy_into(onnx_models["int8"], out)
    art = get_converter("tensorrt_int8").convert(src, out, ConvertOptions(stem="tiny"))
    # ... opened on an Orin with JetPack 6 (TensorRT 10.3).
    trt = fake_device(version="10.3.0", gpu=ORIN)
    with pytest.raises(BadInputError) as err:
        TensorRTRunner(art.path)
    assert _one_line(err) == (
        f"engine '{art.path}' was built with TensorRT 8.5.2.2 for compute capability 7.2 "
        "(Xavier); this machine has TensorRT 10.3.0 / capability 8.7 (Orin): rebuild on the "
        "device with trtexec --onnx=tiny_int8_trt.onnx --saveEngine=tiny_int8.engine --int8 --fp16"
    )
    assert trt.state.loaded is None, "the foreign engine reached the deserializer"


@pytest.mark.parametrize(
    "mode, said",
    [("none", "Magic tag does not match"), ("raise", "fake: plan is truncated")],
)
def test_engine_that_does_not_deserialize_is_one_line(some_engine, fake_device, mode, said):
    fake_device(deserialize=mode)
    with pytest.raises(BadInputError) as err:
        TensorRTRunner(some_engine)
    text = _one_line(err)
    assert text.startswith(
        f"engine '{some_engine}' cannot be loaded by TensorRT 10.3.0 on Orin (compute "
        "capability 8.7): "
    )
    assert said in text
    assert text.endswith(
        "rebuild on the device with trtexec --onnx=MODEL.onnx --saveEngine=x_fp16.engine "
        "--fp16 (MODEL.onnx: the ONNX it was built from)"
    )


def test_a_stale_manifest_is_ignored(onnx_models, tmp_path, fake_device):
    fake_device(version="8.5.2.2", gpu=XAVIER)
    art = get_converter("tensorrt_fp16").convert(onnx_models["fp32"], tmp_path, ConvertOptions())
    art.path.write_bytes(b"ftrt\x00rebuilt on the device with trtexec since")
    memory = FakeCuda()
    fake_device(memory=memory)
    runner = TensorRTRunner(art.path)  # the manifest no longer describes this engine
    assert runner.manifest is None and runner.info()["precision"] is None


def test_runner_predicts_through_the_fake_engine(some_engine, fake_device):
    memory = FakeCuda()
    trt = fake_device(memory=memory)
    runner = TensorRTRunner(some_engine, threads=2, device="cuda:0")
    assert trt.state.loaded == some_engine.read_bytes()
    assert runner.input_shape == (1, 32, 32, 3) and runner.load_ms >= 0
    x = np.random.default_rng(1).random((3, 32, 32, 3), dtype=np.float32)
    got = runner.predict(x)
    assert got.shape == (3, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, _fake_probs(x), rtol=1e-6)
    runner.prepare(x[2:3])
    runner.run()
    np.testing.assert_allclose(runner._host["probs"], _fake_probs(x[2:3]), rtol=1e-6)
    info = runner.info()
    assert info["name"] == "tensorrt" and info["version"] == "10.3.0"
    assert (info["gpu"], info["compute_capability"], info["device"]) == ("Orin", "8.7", "cuda:0")
    assert info["input_dtype"] == "float32" and info["cuda_memory"] == "fake-cuda"
    with pytest.raises(BadInputError, match=r"do not fit engine .* which takes \(32, 32, 3\)"):
        runner.predict(np.zeros((1, 64, 64, 3), np.float32))
    runner.close()
    assert len(memory.freed) == 2 and not memory.buffers


def test_device_strings(some_engine, fake_device):
    assert [parse_gpu_device(d) for d in (None, "", "gpu", "cuda", "gpu:1", "cuda:2", "3")] == [
        0, 0, 0, 0, 1, 2, 3
    ]  # fmt: skip
    for bad in ("tpu", "gpu:", "cuda:x", "dla:0"):
        with pytest.raises(BadInputError, match="unknown TensorRT device"):
            parse_gpu_device(bad)
    fake_device(memory=FakeCuda())
    with pytest.raises(BadInputError, match=r"'gpu:1'; this machine has 1 GPU\(s\): gpu:0 Orin"):
        TensorRTRunner(some_engine, device="gpu:1")


def test_runner_without_a_gpu(some_engine, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt())
    monkeypatch.setattr(trt_build, "cuda_gpus", lambda: ([], "libcuda.so.1 not found: no driver"))
    with pytest.raises(RuntimeUnavailableError, match=r"no CUDA GPU here \(libcuda.so.1 not"):
        TensorRTRunner(some_engine)


def test_cli_bench_of_a_foreign_engine_is_one_line_and_exit_2(some_engine, fake_device, capsys):
    from edgekit.cli import main

    fake_device(deserialize="none")
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(some_engine)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and "rebuild on the device with trtexec" in err


def test_cli_bench_without_tensorrt_is_one_line_and_exit_1(some_engine, no_tensorrt, capsys):
    from edgekit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(some_engine)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.count("\n") == 1 and "TensorRT is not importable" in err and "JetPack" in err


# ---------------------------------------------------------------------------- detection

FAKE_LIBCUDA = r"""
#include <stdlib.h>
#include <string.h>
int cuInit(unsigned int flags) { return getenv("FAKE_CUDA_NO_DEVICE") ? 100 : 0; }
int cuDeviceGetCount(int *count) { *count = 1; return 0; }
int cuDeviceGet(int *device, int ordinal) { *device = ordinal; return 0; }
int cuDeviceGetName(char *name, int len, int device) { strncpy(name, "Orin", len); return 0; }
int cuDeviceGetAttribute(int *value, int attribute, int device) {
  *value = attribute == 75 ? 8 : attribute == 76 ? 7 : 0;  /* compute capability 8.7 */
  return 0;
}
"""


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory) -> Path:
    """A CUDA driver library with one Orin (or none, with FAKE_CUDA_NO_DEVICE)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None or platform.system() != "Linux":
        pytest.skip("needs a C compiler on Linux to build a fake libcuda")
    folder = tmp_path_factory.mktemp("fakecuda")
    (folder / "cuda.c").write_text(FAKE_LIBCUDA)
    lib = folder / "libfakecuda.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(folder / "cuda.c")], check=True)
    return lib


def test_cuda_gpus_reads_the_driver_api(fake_libcuda, monkeypatch):
    monkeypatch.setitem(trt_build.CUDA_DRIVER_LIBRARIES, "Linux", (str(fake_libcuda),))
    assert trt_build.cuda_gpus() == ([ORIN], None)
    monkeypatch.setenv("FAKE_CUDA_NO_DEVICE", "1")
    gpus, why = trt_build.cuda_gpus()
    assert gpus == [] and "no CUDA-capable device (cuInit: CUDA error 100)" in why


def test_detect_tensorrt_gives_reasons_for_what_is_missing(no_tensorrt, monkeypatch):
    monkeypatch.setitem(trt_build.CUDA_DRIVER_LIBRARIES, platform.system(), ("libnocuda.so.9",))
    d = detect_tensorrt()
    assert set(d) == {"tensorrt", "tensorrt_version", "gpus", "trtexec", "cuda_memory", "reasons"}
    assert d["tensorrt"] is False and d["tensorrt_version"] is None and d["gpus"] == []
    assert "JetPack" in d["reasons"]["tensorrt"]
    assert d["reasons"]["gpu"] == "no CUDA GPU here (libnocuda.so.9 not found: no NVIDIA driver)"
    if d["trtexec"] is None:
        assert "/usr/src/tensorrt/bin/trtexec" in d["reasons"]["trtexec"]
    if d["cuda_memory"] is None:
        assert "pip install cuda-python" in d["reasons"]["cuda_memory"]
    json.dumps(d)
    assert "TensorRT is not importable" in trt_runner._probe(None)
    assert "unknown TensorRT device 'tpu'" in trt_runner._probe("tpu")
    reason = get_converter("tensorrt_fp16").unavailable_reason()
    assert reason and reason.endswith(
        "(the trtexec script to run on the device is written instead)"
    )


def test_detect_finds_tensorrt_gpu_and_trtexec(fake_device, fake_trtexec):
    fake_device()
    d = detect_tensorrt()
    assert d["tensorrt_version"] == "10.3.0" and d["gpus"] == [ORIN]
    assert d["trtexec"] == str(fake_trtexec.parent / "trtexec")
    assert not {"tensorrt", "gpu", "trtexec"} & set(d["reasons"])
    assert get_converter("tensorrt_int8").unavailable_reason() is None


# ---------------------------------------------------------------------------- on a Jetson


@pytest.mark.jetson
@pytest.mark.skipif(bool(JETSON_MISSING), reason="; ".join(JETSON_MISSING) or "no TensorRT")
@pytest.mark.parametrize(
    "fmt, min_agreement",
    [("tensorrt_fp16", 0.98), ("tensorrt_int8", 0.95)],
)
def test_real_engine_top1_agrees_with_onnxruntime(
    trained_tiny, digits32, tmp_path, fmt, min_agreement
):
    from edgekit.measure import compare, open_runner

    model, _ = trained_tiny
    options = ConvertOptions(stem="tiny", calibration=digits32.x_train)
    built: dict[str, Any] = {"keras": model}
    for step in plan_chain([fmt]):
        conv = get_converter(step)
        built[step] = conv.convert(built[conv.source], tmp_path, options)
    art, source = built[fmt], built[get_converter(fmt).source]
    manifest = json.loads(engine_manifest_path(art.path).read_text())
    assert manifest["tensorrt_version"] == DETECTED["tensorrt_version"]
    assert manifest["compute_capability"] == DETECTED["gpus"][0]["compute_capability"]
    reference = open_runner("onnxruntime", source.path).predict(digits32.x_test)
    runner = TensorRTRunner(art.path)
    got = compare(runner.predict(digits32.x_test), reference, digits32.y_test)
    assert got.top1_agreement >= min_agreement
    runner.prepare(digits32.x_test[:1])
    runner.run()
    runner.close()
