"""Reading and writing edgekit's metadata in a TFLite flatbuffer, and its associated files.

The metadata is UTF-8 JSON in a buffer that a ``Model.metadata`` entry named ``edgekit``
points to. Associated files (``labels.txt``, ``edgekit.json``) live in an uncompressed zip
appended after the flatbuffer: the TFLite metadata convention (tflite-support's
MetadataPopulator writes them so), which the TFLite loader ignores and Android's
``MetadataExtractor.getAssociatedFile`` reads. The maintained writer, tflite-support, needs
protobuf<4 and cannot be installed beside TensorFlow 2.21, so the flatbuffer is edited here
with the schema's object API that ai-edge-litert ships.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from edgekit.errors import BadInputError, RuntimeUnavailableError

TFLITE_MAGIC = b"TFL3"
METADATA_NAME = "edgekit"
LABELS_FILE = "labels.txt"
METADATA_FILE = "edgekit.json"
# Fixed zip timestamps keep the packaged bytes identical from run to run.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def schema() -> Any:
    """The TFLite flatbuffer schema module (``ai_edge_litert.schema_py_generated``).

    Raises:
        RuntimeUnavailableError: ai-edge-litert is not installed.
    """
    try:
        from ai_edge_litert import schema_py_generated as fb
    except ImportError as err:
        raise RuntimeUnavailableError(
            "the TFLite flatbuffer schema comes with ai-edge-litert, which is not installed; "
            "pip install ai-edge-litert"
        ) from err
    return fb


def labels_text(labels: list[str]) -> str:
    """``labels.txt`` content: one label per line."""
    return "".join(f"{label}\n" for label in labels)


def embed_metadata(model_bytes: bytes, metadata: dict[str, Any], labels: list[str]) -> bytes:
    """A copy of a TFLite model with ``metadata`` embedded and the associated files appended.

    An earlier ``edgekit`` entry is replaced; members of a zip the source already carried are
    kept, except ``labels.txt`` and ``edgekit.json``, which are rewritten.

    Args:
        model_bytes: a TFLite flatbuffer (bytes after it are ignored).
        metadata: JSON-serialisable metadata.
        labels: class names, one per line of ``labels.txt``.

    Returns:
        The packaged model's bytes.

    Raises:
        BadInputError: the bytes are not a readable TFLite flatbuffer, or the model keeps its
            weights outside the flatbuffer (over 2 GB), which repacking would break.
    """
    import flatbuffers

    fb = schema()
    try:
        model = fb.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    except Exception as err:
        raise BadInputError(
            f"not a readable TFLite flatbuffer ({type(err).__name__}); the file is truncated "
            "or corrupt"
        ) from err
    model.buffers = list(model.buffers or [])
    if any((b.offset or 0) > 1 for b in model.buffers if b is not None):
        raise BadInputError(
            "the TFLite model stores weights outside its flatbuffer (a model over 2 GB); "
            "packaging such models is not supported"
        )
    text = json.dumps(metadata, indent=1)
    payload = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    entries = list(model.metadata or [])
    ours = [m for m in entries if _as_str(m.name) == METADATA_NAME]
    if ours:
        model.buffers[ours[0].buffer].data = payload
        entries = [m for m in entries if m is ours[0] or _as_str(m.name) != METADATA_NAME]
    else:
        buffer = fb.BufferT()
        buffer.data = payload
        model.buffers.append(buffer)
        entry = fb.MetadataT()
        entry.name = METADATA_NAME
        entry.buffer = len(model.buffers) - 1
        entries.append(entry)
    model.metadata = entries
    builder = flatbuffers.Builder(len(model_bytes) + len(payload) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_MAGIC)
    out = io.BytesIO()
    out.write(builder.Output())
    files = {
        name: data
        for name, data in read_associated_files(model_bytes).items()
        if name not in (LABELS_FILE, METADATA_FILE)
    }
    files[LABELS_FILE] = labels_text(labels).encode("utf-8")
    files[METADATA_FILE] = text.encode("utf-8")
    # Mode "a" on bytes that are not a zip appends a new archive whose offsets count from the
    # start of the file, as MetadataPopulator writes it. STORED: Android's metadata ZipFile
    # reads uncompressed members only.
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data)
    return out.getvalue()


def read_metadata(blob: bytes) -> dict[str, Any] | None:
    """The JSON of the ``edgekit`` metadata entry of a TFLite model, or None if it has none.

    Raises:
        BadInputError: the bytes are not a readable TFLite flatbuffer.
    """
    if blob[4:8] != TFLITE_MAGIC:
        raise BadInputError("not a TFLite model (no TFL3 identifier)")
    fb = schema()
    try:
        model = fb.Model.GetRootAs(blob, 0)
        entries = [model.Metadata(i) for i in range(model.MetadataLength())]
        found = [m for m in entries if _as_str(m.Name()) == METADATA_NAME]
        raw = model.Buffers(found[0].Buffer()).DataAsNumpy().tobytes() if found else None
        return json.loads(raw.decode("utf-8")) if raw is not None else None
    except Exception as err:
        raise BadInputError(f"truncated or corrupt TFLite model ({type(err).__name__})") from err


def read_associated_files(blob: bytes) -> dict[str, bytes]:
    """Members of the zip appended to a TFLite model: {file name: bytes}; {} when none."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            return {info.filename: zf.read(info) for info in zf.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}


def io_spec(blob: bytes) -> dict[str, dict[str, Any]]:
    """Name, shape, dtype and quantization of the first input and output tensors.

    Returns:
        ``{"input": {...}, "output": {...}}``; ``quantization`` is ``{"scale",
        "zero_point"}`` for a quantized tensor, else None.

    Raises:
        BadInputError: the bytes are not a readable TFLite flatbuffer.
    """
    fb = schema()
    types = {v: k.lower() for k, v in vars(fb.TensorType).items() if not k.startswith("_")}
    try:
        graph = fb.Model.GetRootAs(blob, 0).Subgraphs(0)

        def describe(index: int) -> dict[str, Any]:
            t = graph.Tensors(index)
            q = t.Quantization()
            quant = None
            if q is not None and q.ScaleLength() > 0:
                quant = {"scale": float(q.Scale(0)), "zero_point": int(q.ZeroPoint(0))}
            return {
                "name": _as_str(t.Name()),
                "shape": [int(d) for d in t.ShapeAsNumpy()],
                "dtype": types.get(t.Type(), "unknown"),
                "quantization": quant,
            }

        return {
            "input": describe(graph.Inputs(0)),
            "output": describe(graph.Outputs(0)),
            "counts": {"inputs": graph.InputsLength(), "outputs": graph.OutputsLength()},
        }
    except Exception as err:
        raise BadInputError(f"truncated or corrupt TFLite model ({type(err).__name__})") from err


def _as_str(name: bytes | str | None) -> str:
    return name.decode("utf-8", errors="replace") if isinstance(name, bytes) else (name or "")
