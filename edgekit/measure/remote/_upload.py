"""What the agent accepts as an upload: runtime formats identified by their bytes, nothing else.

The agent is given bytes, never a path, and names every file it writes itself. An upload is
accepted only when its content is the runtime format it claims to be:

========== ===================================================================================
format     check
========== ===================================================================================
tflite     the FlatBuffer file identifier ``TFL3`` at offset 4
onnx       a protobuf ``ModelProto`` starting with field 1 (``ir_version``, a varint): byte
           ``0x08``, then a one-byte version (< 0x80)
openvino   a zip or tar (optionally gzip) archive with exactly one ``.xml`` and one ``.bin``
           regular file, safe relative member names, the ``.xml`` containing ``<net`` and no
           DTD (``<!DOCTYPE`` / ``<!ENTITY``)
tensorrt   TensorRT's plan format has no documented header, so the agent cannot identify an
           engine by itself: it accepts one only when TensorRT is installed on the agent (the
           probe then deserializes it with ``engine_host_code_allowed = False``, TensorRT's own
           header check being the identification) and the bytes are not recognisably another
           format; on any other agent an ``.engine`` upload is refused with 415
========== ===================================================================================

Keras (.keras zip, .h5), pickles, NumPy files and SavedModels (``saved_model.pb``, in an
archive or not) are refused with 415 and a reason naming what the upload looks like.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

#: format query value -> file suffix of the staged artifact (what the probe dispatches on).
FORMATS = {"tflite": ".tflite", "onnx": ".onnx", "openvino": ".xml", "tensorrt": ".engine"}
#: local runtime name (edgekit.measure._bench.detect_runtime) -> format query value.
FORMAT_BY_RUNTIME = {
    "litert": "tflite",
    "edgetpu": "tflite",
    "onnxruntime": "onnx",
    "openvino": "openvino",
    "tensorrt": "tensorrt",
}
_MAX_ARCHIVE_MEMBERS = 16
_XML_HEAD = 1 << 16
_EXPECTED = {
    "tflite": "a TFLite model (no 'TFL3' identifier at offset 4)",
    "onnx": "an ONNX model (no ModelProto header: byte 0x08, then the IR version)",
    "openvino": "an OpenVINO IR archive (a zip or tar with one .xml and one .bin)",
    "tensorrt": "a TensorRT engine",
}


class UploadRefused(Exception):
    """An upload the agent will not measure: an HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def describe_bytes(head: bytes) -> str | None:
    """What a file is, from its first bytes, when it is recognisably something; else None."""
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "an HDF5 file (a Keras .h5 model?)"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "a zip archive"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "a tar archive"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy array file (.npy, which can hold pickles)"
    if head.startswith(b"\x7fELF"):
        return "an executable or shared library"
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "a TFLite model"
    if head.lstrip().startswith((b"<?xml", b"<net")):
        return "an XML file"
    if len(head) >= 2 and head[0] == 0x08 and head[1] < 0x80:
        return "an ONNX model"
    if head and b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError:
            return None
        return "a text file"
    return None


def _archive_names(path: Path) -> list[str] | None:
    """Member names of a zip or tar file, or None when it is neither (or unreadable)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return zf.namelist()
        if tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as tf:
                return tf.getnames()
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError):
        return None
    return None


def _model_in_archive(names: list[str]) -> str | None:
    """The kind of model that must never be accepted, if the member names show one."""
    base = {PurePosixPath(n).name for n in names}
    if "saved_model.pb" in base or "saved_model.pbtxt" in base:
        return "a TensorFlow SavedModel (saved_model.pb)"
    if "model.weights.h5" in base or ("config.json" in base and "metadata.json" in base):
        return "a Keras .keras model"
    if any(n.endswith((".pkl", ".pickle", ".pt", ".pth")) for n in base):
        return "pickled Python objects"
    if any(n.endswith((".h5", ".keras", ".hdf5")) for n in base):
        return "a Keras model file"
    return None


def describe_upload(path: Path) -> str:
    """What an upload looks like, for a refusal message."""
    with open(path, "rb") as f:
        head = f.read(512)
    what = describe_bytes(head)
    if what in ("a zip archive", "a tar archive", "a gzip file"):
        names = _archive_names(path)
        inside = _model_in_archive(names) if names else None
        if inside:
            return f"{what} holding {inside}"
    return what or "unrecognised binary data"


def _refuse_format(path: Path, fmt: str) -> UploadRefused:
    return UploadRefused(
        415,
        f"the upload is {describe_upload(path)}, not {_EXPECTED[fmt]}; the agent takes runtime "
        "artifacts only (.tflite, .onnx, OpenVINO .xml+.bin, TensorRT .engine), never Keras, "
        "pickle or SavedModel files",
    )


def _safe_member_name(name: str) -> PurePosixPath:
    p = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or p.is_absolute()
        or ".." in p.parts
        or (len(name) > 1 and name[1] == ":")
    ):
        raise UploadRefused(
            400,
            f"archive member name '{name[:100]}' is not a plain relative name (absolute paths, "
            "'..', drive letters and backslashes are refused)",
        )
    return p


def _copy_bounded(src: IO[bytes], dst: Path, budget: int) -> int:
    """Copy at most ``budget`` bytes; raise 413 past it (a compressed archive can inflate)."""
    written = 0
    with open(dst, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > budget:
                raise UploadRefused(
                    413,
                    f"the OpenVINO archive unpacks to more than the agent's limit of {budget} bytes",
                )
            out.write(chunk)
    return written


def _stage_openvino(upload: Path, work: Path, max_bytes: int) -> Path:
    names = _archive_names(upload)
    if names is None:
        raise _refuse_format(upload, "openvino")
    inside = _model_in_archive(names)
    if inside:
        raise UploadRefused(
            415,
            f"the archive holds {inside}, not an OpenVINO IR; the agent takes runtime artifacts "
            "only, never Keras, pickle or SavedModel files",
        )
    if len(names) > _MAX_ARCHIVE_MEMBERS:
        raise UploadRefused(
            415, f"the archive has {len(names)} members; an OpenVINO IR is one .xml and one .bin"
        )
    for name in names:
        _safe_member_name(name)
    xml_path, bin_path = work / "model.xml", work / "model.bin"
    if zipfile.is_zipfile(upload):
        with zipfile.ZipFile(upload) as zf:
            files = [i for i in zf.infolist() if not i.is_dir()]
            _check_ir_members([i.filename for i in files])
            budget = max_bytes
            for info in files:
                target = xml_path if info.filename.lower().endswith(".xml") else bin_path
                with zf.open(info) as src:
                    budget -= _copy_bounded(src, target, budget)
    else:
        with tarfile.open(upload, "r:*") as tf:
            members = tf.getmembers()
            for m in members:
                if not (m.isfile() or m.isdir()):
                    raise UploadRefused(
                        400,
                        f"archive member '{m.name[:100]}' is a link or device; only regular files",
                    )
            files = [m for m in members if m.isfile()]
            _check_ir_members([m.name for m in files])
            budget = max_bytes
            for m in files:
                target = xml_path if m.name.lower().endswith(".xml") else bin_path
                src = tf.extractfile(m)
                if src is None:
                    raise UploadRefused(400, f"archive member '{m.name[:100]}' cannot be read")
                with src:
                    budget -= _copy_bounded(src, target, budget)
    with open(xml_path, "rb") as f:
        head = f.read(_XML_HEAD)
    if b"<net" not in head:
        raise UploadRefused(415, "the archive's .xml is not an OpenVINO IR (no <net> element)")
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise UploadRefused(415, "the archive's .xml declares a DTD; an OpenVINO IR has none")
    return xml_path


def _check_ir_members(names: list[str]) -> None:
    xml = [n for n in names if n.lower().endswith(".xml")]
    bins = [n for n in names if n.lower().endswith(".bin")]
    if len(xml) != 1 or len(bins) != 1 or len(names) != 2:
        raise UploadRefused(
            415,
            f"the archive holds {len(names)} files ({', '.join(n[:60] for n in names[:6]) or 'none'});"
            " an OpenVINO IR upload is exactly one .xml and one .bin",
        )


def stage_artifact(
    upload: Path, fmt: str, work: Path, max_bytes: int, tensorrt_available: bool
) -> Path:
    """Check an upload against its claimed format and place it in ``work`` under our own name.

    Args:
        upload: the uploaded bytes, already on disk in ``work``.
        fmt: the claimed format, a key of FORMATS.
        work: this request's scratch folder.
        max_bytes: the most an OpenVINO archive may unpack to.
        tensorrt_available: whether TensorRT is installed on this agent.

    Returns:
        The artifact to give the probe (``model.tflite``, ``model.onnx``, ``model.xml`` beside
        ``model.bin``, or ``model.engine``).

    Raises:
        UploadRefused: 415 for content that is not ``fmt``; 400 for unsafe archive members;
            413 for an archive that inflates past ``max_bytes``.
    """
    if fmt == "openvino":
        return _stage_openvino(upload, work, max_bytes)
    with open(upload, "rb") as f:
        head = f.read(512)
    if fmt == "tflite":
        ok = len(head) >= 8 and head[4:8] == b"TFL3"
    elif fmt == "onnx":
        ok = len(head) >= 2 and head[0] == 0x08 and head[1] < 0x80
    elif fmt == "tensorrt":
        if not tensorrt_available:
            raise UploadRefused(
                415,
                "this agent has no TensorRT, and a TensorRT engine has no documented header to "
                "identify it by, so .engine uploads are refused here; run the agent on the "
                "device with TensorRT (e.g. the Jetson the engine was built on)",
            )
        ok = bool(head) and describe_bytes(head) is None
    else:  # the handler validates fmt first; this is a programming error
        raise ValueError(f"unknown format {fmt!r}")
    if not ok:
        raise _refuse_format(upload, fmt)
    target = work / f"model{FORMATS[fmt]}"
    os.replace(upload, target)
    return target


def remove_tree(path: Path) -> None:
    """Remove a scratch folder, ignoring what is already gone."""
    shutil.rmtree(path, ignore_errors=True)
