"""Edge TPU compatibility analysis of a .tflite file, without the Edge TPU compiler.

Reads the TFLite flatbuffer (with the schema module ai-edge-litert ships) and applies the
rules of Coral's "TensorFlow models on the Edge TPU" page
(https://coral.ai/docs/edgetpu/models-intro/):

- every tensor an op reads or writes is 8-bit quantized (int8 or uint8); constant int32/int64
  parameters (biases of int8 convolutions, axes, shapes, paddings) are allowed, as the compiler
  allows them;
- tensor sizes are constant at compile time (no ``-1`` in a shape signature);
- tensors have at most 3 dimensions larger than 1, the 3 innermost ("If a tensor has more than
  3 dimensions, then only the 3 innermost dimensions may have a size greater than 1"); a tensor
  of rank 5 or more is reported too (the compiler rejects them, e.g. 5-D TRANSPOSE,
  google-coral/edgetpu#274);
- the op is in the supported-operations table (and needs no newer runtime than the one
  compiled for);
- the model has one subgraph;
- the compiler partitions the graph once: ops are mapped up to the first op that cannot be,
  and that op and every op after it run on the CPU ("More than one subgraph is not supported"
  in the compiler's log), even supported ones.

A float-input QUANTIZE that reads a graph input, and a float-output DEQUANTIZE that writes a
graph output, run on the CPU at the graph edges without splitting the graph (the compiler
reports them as "not mapped" and maps everything between them, e.g. f0cal/google-coral#20).
An int8 <-> uint8 QUANTIZE (the requantize of uint8 I/O models) is a supported op.

The compiler also checks things this analysis cannot (op versions newer than it knows,
on-chip memory, per-op size limits); its own log is the final word when it is installed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import BadInputError

TFLITE_MAGIC = b"TFL3"

#: Edge TPU runtime version a model is compiled for unless told otherwise: runtime 14 is what
#: the last compiler (16.0) targets by default and what libedgetpu 16.0 provides.
DEFAULT_MIN_RUNTIME_VERSION = 14

#: TFLite builtin op -> (minimum Edge TPU runtime version or None for every version, known
#: limitation). From the "Supported operations" table of
#: https://coral.ai/docs/edgetpu/models-intro/#supported-operations and the compiler release
#: notes (runtime 13 added ExpandDims, Pack, Quantize, Sum, TransposeConv; runtime 14 added
#: LSTM, ReduceMax/Min, Rsqrt, SquaredDifference, Transpose).
SUPPORTED_OPS: dict[str, tuple[int | None, str]] = {
    "ADD": (None, ""),
    "AVERAGE_POOL_2D": (None, "no fused activation function"),
    "CONCATENATION": (
        None,
        "no fused activation function; a constant input must be all zeros, with 2 inputs",
    ),
    "CONV_2D": (None, "same dilation in x and y"),
    "DEPTHWISE_CONV_2D": (None, "same dilation in x and y (no dilation before runtime 13)"),
    "EXPAND_DIMS": (13, ""),
    "FULLY_CONNECTED": (None, "default weights format only; one-dimensional output"),
    "L2_NORMALIZATION": (None, ""),
    "LOGISTIC": (None, ""),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (14, "unidirectional LSTM only"),
    "MAXIMUM": (None, ""),
    "MAX_POOL_2D": (None, "no fused activation function"),
    "MEAN": (None, "no reduction in the batch dimension"),
    "MINIMUM": (None, ""),
    "MUL": (None, ""),
    "PACK": (13, "no packing in the batch dimension"),
    "PAD": (None, "no padding in the batch dimension"),
    "PRELU": (13, "alpha must be constant"),
    "QUANTIZE": (13, ""),
    "REDUCE_MAX": (14, "no reduction in the batch dimension"),
    "REDUCE_MIN": (14, "no reduction in the batch dimension"),
    "RELU": (None, ""),
    "RELU6": (None, ""),
    "RELU_N1_TO_1": (None, ""),
    "RESHAPE": (None, "some reshapes of large tensors are not mapped"),
    "RESIZE_BILINEAR": (None, "3-D input/output; some sizes stay on the CPU for precision"),
    "RESIZE_NEAREST_NEIGHBOR": (None, "3-D input/output; some sizes stay on the CPU"),
    "RSQRT": (14, ""),
    "SLICE": (None, ""),
    "SOFTMAX": (None, "1-D input of at most 16,000 elements"),
    "SPACE_TO_DEPTH": (None, ""),
    "SPLIT": (None, "no splitting in the batch dimension"),
    "SQUARED_DIFFERENCE": (14, ""),
    "SQUEEZE": (None, ""),
    "STRIDED_SLICE": (None, ""),
    "SUB": (None, ""),
    "SUM": (13, "no reduction in the batch dimension"),
    "TANH": (None, ""),
    "TRANSPOSE": (14, "no transposition of the batch dimension"),
    "TRANSPOSE_CONV": (13, ""),
}

SOFTMAX_MAX_ELEMENTS = 16_000
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"

REASON_NOT_SUPPORTED = "op not supported by the Edge TPU"
REASON_AFTER_UNMAPPED = "after the first unmapped op: runs on the CPU"
REASON_EDGE_QUANTIZE = "float input quantize at the graph edge: runs on the CPU"
REASON_EDGE_DEQUANTIZE = "float output dequantize at the graph edge: runs on the CPU"

_INT8_TYPES = frozenset({"int8", "uint8"})
_CONSTANT_PARAM_TYPES = frozenset({"int8", "uint8", "int32", "int64"})
_FLOAT_TYPES = frozenset({"float32", "float16", "float64", "bfloat16"})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor an op reads or writes."""

    index: int
    name: str
    dtype: str
    shape: list[int]
    shape_signature: list[int]
    constant: bool

    def describe(self) -> str:
        return f"{self.dtype} tensor '{self.name}' {self.shape}"


@dataclass
class OpReport:
    """Where one op will run and why.

    Attributes:
        index: position in the main subgraph (execution order).
        op: TFLite op name (``CONV_2D``; ``CUSTOM(code)`` for custom ops).
        version: the op's version in the flatbuffer.
        mapped: True when the compiler is expected to map it to the Edge TPU.
        reason: why it is not mapped (None when mapped).
        problems: every rule the op itself breaks (also for ops after the first unmapped
            one, whose ``reason`` is the partition).
        edge: a float quantize/dequantize at the graph edge (CPU, does not split the graph).
        macs: multiply-accumulates (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED; 0 otherwise).
    """

    index: int
    op: str
    version: int
    mapped: bool
    reason: str | None
    problems: list[str]
    edge: bool
    macs: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]

    @property
    def where(self) -> str:
        return "edgetpu" if self.mapped else "cpu"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["where"] = self.where
        return d


@dataclass
class EdgeTPUReport:
    """Which ops of a .tflite model will map to the Edge TPU.

    Attributes:
        path: the analysed file.
        min_runtime_version: the Edge TPU runtime version the analysis assumed.
        subgraphs: subgraphs in the model (the compiler needs exactly 1).
        ops: every op of the main subgraph, in execution order.
        problems: model-level problems (more than one subgraph).
        compiled: the model already contains an ``edgetpu-custom-op`` (compiler output).
    """

    path: str
    min_runtime_version: int
    subgraphs: int
    ops: list[OpReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    compiled: bool = False

    @property
    def ops_total(self) -> int:
        return len(self.ops)

    @property
    def ops_mapped(self) -> int:
        return sum(op.mapped for op in self.ops)

    @property
    def macs_total(self) -> int:
        return sum(op.macs for op in self.ops)

    @property
    def macs_mapped(self) -> int:
        return sum(op.macs for op in self.ops if op.mapped)

    @property
    def macs_mapped_fraction(self) -> float:
        """MACs on the Edge TPU over all MACs; for a model without MACs, 1.0 when every op
        maps and 0.0 otherwise."""
        if self.macs_total:
            return self.macs_mapped / self.macs_total
        return 1.0 if self.ops_mapped == self.ops_total else 0.0

    @property
    def unmapped(self) -> list[dict[str, Any]]:
        return [
            {"op": op.op, "index": op.index, "reason": op.reason}
            for op in self.ops
            if not op.mapped
        ]

    @property
    def first_unmapped(self) -> OpReport | None:
        """The op where the compiler's single partition happens (edge ops excluded)."""
        return next((op for op in self.ops if not op.mapped and not op.edge), None)

    @property
    def fully_mapped(self) -> bool:
        """Every op except float I/O edge ops maps, in a single-subgraph model."""
        return self.first_unmapped is None and not self.problems

    def summary(self) -> str:
        """One line: how much maps, and the first op that does not."""
        line = (
            f"{self.ops_mapped}/{self.ops_total} ops on the Edge TPU "
            f"({self.macs_mapped_fraction:.1%} of {self.macs_total:,} MACs)"
        )
        first = self.first_unmapped
        if first is not None:
            line += f"; first unmapped: op {first.index} {first.op} ({first.reason})"
        if self.problems:
            line += "; " + "; ".join(self.problems)
        return line

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the report (totals, unmapped ops, every op)."""
        return {
            "path": self.path,
            "min_runtime_version": self.min_runtime_version,
            "subgraphs": self.subgraphs,
            "compiled": self.compiled,
            "fully_mapped": self.fully_mapped,
            "ops_total": self.ops_total,
            "ops_mapped": self.ops_mapped,
            "macs_total": self.macs_total,
            "macs_mapped": self.macs_mapped,
            "macs_mapped_fraction": self.macs_mapped_fraction,
            "problems": list(self.problems),
            "unmapped": self.unmapped,
            "ops": [op.as_dict() for op in self.ops],
        }


def _schema() -> Any:
    """The TFLite flatbuffer schema module (ai-edge-litert's, else TensorFlow's)."""
    try:
        from ai_edge_litert import schema_py_generated

        return schema_py_generated
    except ImportError:
        from tensorflow.lite.python import schema_py_generated  # type: ignore[import-untyped]

        return schema_py_generated


def _enum_names(enum_cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _read_model(path: str | Path) -> tuple[Path, bytes]:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"model '{path}' does not exist; pass the path of a .tflite file")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_MAGIC:
        raise BadInputError(
            f"'{path}' is not a TFLite model (no TFL3 identifier); expected a .tflite flatbuffer"
        )
    return path, data


def _shape(values: Any, length: int) -> list[int]:
    return [int(v) for v in values] if length else []


def _op_name(fb: Any, model: Any, op: Any, builtin_names: dict[int, str]) -> tuple[str, int]:
    code = model.OperatorCodes(op.OpcodeIndex())
    # Ops numbered above 127 live in builtin_code; older files only fill the deprecated field.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    name = builtin_names.get(builtin, f"BUILTIN_{builtin}")
    if builtin == fb.BuiltinOperator.CUSTOM:
        custom = code.CustomCode()
        name = f"CUSTOM({custom.decode(errors='replace') if custom else ''})"
    return name, int(code.Version())


def _fused_activation(fb: Any, op: Any, name: str) -> int:
    """The fused activation of a pooling or concatenation op (0 = none)."""
    table = op.BuiltinOptions()
    if table is None:
        return 0
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        opts = fb.Pool2DOptions()
    elif name == "CONCATENATION":
        opts = fb.ConcatenationOptions()
    else:
        return 0
    opts.Init(table.Bytes, table.Pos)
    return int(opts.FusedActivationFunction())


def _macs(name: str, inputs: list[TensorInfo], outputs: list[TensorInfo]) -> int:
    """Multiply-accumulates from the tensor shapes, the zoo's convention
    (edgekit.models._counting): CONV_2D n·oh·ow·oc·kh·kw·(ic/groups), DEPTHWISE_CONV_2D
    n·oh·ow·oc·kh·kw, FULLY_CONNECTED in·out per output row."""
    if len(inputs) < 2 or not outputs:
        return 0
    weights, out = inputs[1].shape, outputs[0].shape
    if name == "CONV_2D" and len(weights) == 4 and len(out) == 4:
        _, kh, kw, ic_per_group = weights  # OHWI; I is in_channels / groups
        return math.prod(out) * kh * kw * ic_per_group
    if name == "DEPTHWISE_CONV_2D" and len(weights) == 4 and len(out) == 4:
        _, kh, kw, _ = weights  # 1HWO
        return math.prod(out) * kh * kw
    if name == "FULLY_CONNECTED" and len(weights) == 2 and out:
        return math.prod(out) * weights[1]  # rows · out · in
    return 0


def _rank_problem(t: TensorInfo) -> str | None:
    rank = len(t.shape)
    if rank > 4:
        return f"tensor rank {rank} > 4: {t.describe()}"
    outer = [d for d in t.shape[:-3] if d > 1]
    if outer:
        return (
            f"tensor rank {rank} with a dimension > 1 outside the 3 innermost: {t.describe()}; "
            "only the 3 innermost dimensions may be larger than 1 (batch must be 1)"
        )
    return None


def _tensor_problems(tensors: list[TensorInfo]) -> list[str]:
    """dtype, static-shape and rank problems of an op's tensors, one message per rule."""
    not_int8 = [
        t
        for t in tensors
        if (t.constant and t.dtype not in _CONSTANT_PARAM_TYPES)
        or (not t.constant and t.dtype not in _INT8_TYPES)
    ]
    problems = []
    if not_int8:
        more = f" (+{len(not_int8) - 1} more)" if len(not_int8) > 1 else ""
        problems.append(f"not int8: {not_int8[0].describe()}{more}")
    dynamic = [t for t in tensors if not t.constant and any(d < 0 for d in t.shape_signature)]
    if dynamic:
        t = dynamic[0]
        problems.append(
            f"dynamic shape: tensor '{t.name}' has shape signature {t.shape_signature}; "
            "the Edge TPU needs static shapes (batch 1)"
        )
    for t in tensors:
        if not t.constant and (msg := _rank_problem(t)):
            problems.append(msg)
            break
    return problems


def analyze_edgetpu(
    path: str | Path, min_runtime_version: int = DEFAULT_MIN_RUNTIME_VERSION
) -> EdgeTPUReport:
    """Report, per op in execution order, whether it will map to the Edge TPU and why not.

    Args:
        path: a .tflite file (normally the full-int8 model the compiler takes).
        min_runtime_version: the Edge TPU runtime version to compile for (``-m``); ops that
            need a newer runtime are reported as not mapped.

    Returns:
        An :class:`EdgeTPUReport`; ``as_dict()`` gives its JSON form.

    Raises:
        BadInputError: ``path`` is missing or is not a TFLite flatbuffer.
    """
    path, data = _read_model(path)
    fb = _schema()
    try:
        model = fb.Model.GetRootAs(data, 0)
        n_subgraphs = int(model.SubgraphsLength())
        if n_subgraphs < 1:
            raise ValueError("no subgraph")
        graph = model.Subgraphs(0)
        graph_inputs = {int(i) for i in graph.InputsAsNumpy()} if graph.InputsLength() else set()
        graph_outputs = {int(i) for i in graph.OutputsAsNumpy()} if graph.OutputsLength() else set()
        raw_ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
        produced = {
            int(t) for op in raw_ops if op.OutputsLength() for t in op.OutputsAsNumpy() if t >= 0
        }
    except Exception as err:  # a truncated or foreign flatbuffer raises anything
        raise BadInputError(f"'{path}' cannot be parsed as a TFLite model: {err}") from err

    builtin_names = _enum_names(fb.BuiltinOperator)
    type_names = {k: v.lower() for k, v in _enum_names(fb.TensorType).items()}

    def tensor(i: int) -> TensorInfo:
        t = graph.Tensors(i)
        shape = _shape(t.ShapeAsNumpy(), t.ShapeLength())
        signature = _shape(t.ShapeSignatureAsNumpy(), t.ShapeSignatureLength()) or shape
        # Constant = neither a graph input nor written by any op (weights, biases, axes).
        constant = i not in graph_inputs and i not in produced and not t.IsVariable()
        return TensorInfo(
            index=i,
            name=(t.Name() or b"").decode(errors="replace"),
            dtype=type_names.get(t.Type(), f"type{t.Type()}"),
            shape=shape,
            shape_signature=signature,
            constant=constant,
        )

    report = EdgeTPUReport(
        path=str(path), min_runtime_version=int(min_runtime_version), subgraphs=n_subgraphs
    )
    if n_subgraphs > 1:
        report.problems.append(
            f"model has {n_subgraphs} subgraphs; the Edge TPU compiler maps only one "
            "(control flow such as WHILE or IF stays on the CPU)"
        )

    partitioned = False
    for index, op in enumerate(raw_ops):
        name, version = _op_name(fb, model, op, builtin_names)
        ins = [tensor(int(i)) for i in (op.InputsAsNumpy() if op.InputsLength() else []) if i >= 0]
        outs = [
            tensor(int(i)) for i in (op.OutputsAsNumpy() if op.OutputsLength() else []) if i >= 0
        ]
        if name == f"CUSTOM({EDGETPU_CUSTOM_OP})":
            report.compiled = True
            entry = OpReport(index, name, version, True, None, [], False, 0, ins, outs)
            report.ops.append(entry)
            continue

        problems: list[str] = []
        limits = SUPPORTED_OPS.get(name)
        if limits is None:
            problems.append(REASON_NOT_SUPPORTED)
        elif limits[0] is not None and limits[0] > min_runtime_version:
            problems.append(
                f"{REASON_NOT_SUPPORTED} runtime {min_runtime_version}: "
                f"{name} needs runtime >= {limits[0]}"
            )
        problems += _tensor_problems(ins + outs)
        if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"):
            if _fused_activation(fb, op, name):
                problems.append(f"{name} with a fused activation function is not supported")
        if name == "SOFTMAX" and ins and ins[0].shape:
            elements = math.prod(ins[0].shape[1:]) if len(ins[0].shape) > 1 else ins[0].shape[0]
            if elements > SOFTMAX_MAX_ELEMENTS:
                problems.append(
                    f"SOFTMAX over {elements} elements > {SOFTMAX_MAX_ELEMENTS:,} supported"
                )

        edge = (
            name == "QUANTIZE"
            and len(ins) == 1
            and ins[0].index in graph_inputs
            and ins[0].dtype in _FLOAT_TYPES
        ) or (
            name == "DEQUANTIZE"
            and len(outs) == 1
            and outs[0].index in graph_outputs
            and ins
            and not ins[0].constant
            and outs[0].dtype in _FLOAT_TYPES
        )
        macs = _macs(name, ins, outs)
        if edge:
            reason = REASON_EDGE_QUANTIZE if name == "QUANTIZE" else REASON_EDGE_DEQUANTIZE
            entry = OpReport(index, name, version, False, reason, problems, True, macs, ins, outs)
        elif partitioned:
            entry = OpReport(
                index, name, version, False, REASON_AFTER_UNMAPPED, problems, False, macs, ins, outs
            )
        elif problems:
            partitioned = True
            entry = OpReport(
                index, name, version, False, problems[0], problems, False, macs, ins, outs
            )
        else:
            entry = OpReport(index, name, version, True, None, [], False, macs, ins, outs)
        report.ops.append(entry)
    return report
