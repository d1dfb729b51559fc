"""Compact weight files: binarized kernels at 1 bit per weight, codebook indices at b bits.

One container format serves both (``kind`` in the header says which). Layout, little-endian::

    8 bytes   magic  b"EKWPACK1"
    4 bytes   uint32 header length H
    H bytes   header: zlib-compressed UTF-8 JSON
    payload   the byte sections the header points to (offsets count from the payload start)

The header is ``{"format": "edgekit-weight-pack", "version": 1, "kind": "binary" |
"codebook", "model": <name>, "layers": [{"name": <layer>, "weights": [<entry>, ...]}]}``,
one entry per weight of the layer in ``layer.get_weights()`` order, each with its variable
``name``, ``shape``, ``offset``, ``nbytes`` and ``encoding``:

- ``"raw"``: the array's bytes, C order, with its ``dtype`` (float32 for every float layer,
  batch norm and bias).
- ``"sign_bits"``: a binarized kernel, one bit per weight (1 = +1, 0 = -1) over the C-order
  kernel, ``np.packbits`` little bit order; ``"scale"`` is null or a raw float32 section
  ``{"offset", "nbytes", "shape"}`` of the per-output-channel scales (broadcastable shape).
  The kernel the network uses is ``scale * (±1)``.
- ``"codebook"``: a shared-value kernel; ``"codebook"`` is a raw float32 section
  ``{"offset", "nbytes", "count"}`` of the distinct values, the entry's own section holds one
  index into it per weight at ``"bits"`` bits each (packed little-endian, LSB first).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._io import write_bytes_atomic
from edgekit.compress.binary import BinaryLayer
from edgekit.errors import BadInputError, ModelLoadError

MAGIC = b"EKWPACK1"
FORMAT = "edgekit-weight-pack"
VERSION = 1
_LENGTH = struct.Struct("<I")


# -- bit packing --------------------------------------------------------------------------


def pack_uint(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers below ``2**bits`` at ``bits`` bits each (LSB first).

    Raises:
        ValueError: ``bits`` is not in 1..16 or a value does not fit.
    """
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16; got {bits}")
    flat = np.asarray(values).ravel().astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << bits):
        raise ValueError(f"values in [{flat.min()}, {flat.max()}] do not fit in {bits} bits")
    planes = (flat[:, None] >> np.arange(bits)) & 1
    return np.packbits(planes.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack_uint(data: bytes, bits: int, count: int) -> np.ndarray:
    """The ``count`` integers :func:`pack_uint` packed at ``bits`` bits each."""
    planes = np.unpackbits(np.frombuffer(data, np.uint8), count=count * bits, bitorder="little")
    weights = (1 << np.arange(bits)).astype(np.int64)
    return planes.reshape(count, bits).astype(np.int64) @ weights


def packed_size(count: int, bits: int) -> int:
    """Bytes :func:`pack_uint` takes for ``count`` values at ``bits`` bits."""
    return (count * bits + 7) // 8


# -- the container ------------------------------------------------------------------------


class PackWriter:
    """Collects byte sections; :meth:`finish` gives the file's bytes."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def add(self, data: bytes) -> dict[str, int]:
        """Append a section; returns its ``{"offset", "nbytes"}``."""
        ref = {"offset": self._size, "nbytes": len(data)}
        self._chunks.append(data)
        self._size += len(data)
        return ref

    def add_raw(self, array: np.ndarray) -> dict[str, Any]:
        """Append an array's C-order bytes; returns the ``"raw"`` entry fields."""
        arr = np.ascontiguousarray(array)
        return {
            "encoding": "raw",
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            **self.add(arr.tobytes()),
        }

    @property
    def payload_bytes(self) -> int:
        return self._size

    def finish(self, kind: str, model: str, layers: list[dict[str, Any]]) -> tuple[bytes, int]:
        """The whole file and its header's size in bytes."""
        header = {"format": FORMAT, "version": VERSION, "kind": kind, "model": model}
        header["layers"] = layers
        blob = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
        head = MAGIC + _LENGTH.pack(len(blob)) + blob
        return head + b"".join(self._chunks), len(head)


def read_pack(path: str | Path, kind: str) -> tuple[dict[str, Any], bytes]:
    """The header and payload of a weight pack of ``kind``.

    Raises:
        ModelLoadError: the file is missing, is not a weight pack, is of another kind or is
            truncated.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"weight pack '{p}' does not exist")
    data = p.read_bytes()
    start = len(MAGIC) + _LENGTH.size
    if len(data) < start or data[: len(MAGIC)] != MAGIC:
        raise ModelLoadError(f"'{p}' is not an edgekit weight pack (no {MAGIC!r} magic)")
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(zlib.decompress(data[start : start + length]).decode())
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"weight pack '{p}' has a corrupt header ({err})") from err
    if not isinstance(header, dict):
        raise ModelLoadError(f"weight pack '{p}' has a corrupt header (not a JSON object)")
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ModelLoadError(
            f"'{p}' is format {header.get('format')!r} version {header.get('version')!r}; "
            f"expected {FORMAT!r} version {VERSION}"
        )
    if header.get("kind") != kind:
        raise ModelLoadError(f"'{p}' holds {header.get('kind')!r} weights, not {kind!r}")
    payload = data[start + length :]
    end = max(
        (
            ref["offset"] + ref["nbytes"]
            for layer in header["layers"]
            for entry in layer["weights"]
            for ref in (entry, entry.get("scale") or entry, entry.get("codebook") or entry)
        ),
        default=0,
    )
    if end > len(payload):
        raise ModelLoadError(
            f"weight pack '{p}' is truncated: its header needs {end} payload bytes, it has "
            f"{len(payload)}"
        )
    return header, payload


def section(payload: bytes, ref: dict[str, Any]) -> bytes:
    return payload[ref["offset"] : ref["offset"] + ref["nbytes"]]


def read_raw(payload: bytes, entry: dict[str, Any]) -> np.ndarray:
    """The array of a ``"raw"`` entry (a copy, writable)."""
    dtype = np.dtype(entry.get("dtype", "<f4"))
    return np.frombuffer(section(payload, entry), dtype).reshape(entry["shape"]).copy()


# -- binarized models ---------------------------------------------------------------------


@dataclass(frozen=True)
class BinaryStorage:
    """Sizes of a binary model's weight pack.

    Attributes:
        binarized_weights: number of binarized kernel weights.
        packed_bytes: their signs at 1 bit per weight (each kernel rounded up to a byte).
        float32_bytes: the same weights in float32.
        scale_bytes: per-output-channel float32 scales of the scaled kernels.
        other_float_bytes: every other weight (float layers, batch norms, biases).
        header_bytes: magic, length and JSON header.
        file_bytes: the whole file.
    """

    binarized_weights: int
    packed_bytes: int
    float32_bytes: int
    scale_bytes: int
    other_float_bytes: int
    header_bytes: int
    file_bytes: int

    @property
    def ratio(self) -> float:
        """Packed bytes over float32 bytes of the binarized weights (1/32 plus rounding)."""
        return self.packed_bytes / self.float32_bytes if self.float32_bytes else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def _serialize_binary(model: Any) -> tuple[bytes, BinaryStorage]:
    writer = PackWriter()
    layers: list[dict[str, Any]] = []
    count = packed = scale_bytes = other = 0
    for layer in model.layers:
        values = layer.get_weights()
        if not values:
            continue
        entries: list[dict[str, Any]] = []
        latent = layer.latent_kernel if isinstance(layer, BinaryLayer) else None
        for var, value in zip(layer.weights, values, strict=True):
            if var is not latent:
                entries.append({"name": var.name, **writer.add_raw(value)})
                other += value.nbytes
                continue
            bits = np.packbits((value >= 0).ravel(), bitorder="little").tobytes()
            entry: dict[str, Any] = {
                "name": var.name,
                "encoding": "sign_bits",
                "shape": list(value.shape),
                **writer.add(bits),
                "scale": None,
            }
            alpha = layer.kernel_scale()
            if alpha is not None:
                arr = np.asarray(alpha.numpy(), dtype=np.float32)
                entry["scale"] = {**writer.add(arr.tobytes()), "shape": list(arr.shape)}
                scale_bytes += arr.nbytes
            entries.append(entry)
            count += value.size
            packed += len(bits)
        layers.append({"name": layer.name, "weights": entries})
    if count == 0:
        raise BadInputError(
            f"model '{model.name}' has no binary layer; binarize it first (binarize_model)"
        )
    data, header_bytes = writer.finish("binary", model.name, layers)
    return data, BinaryStorage(
        binarized_weights=count,
        packed_bytes=packed,
        float32_bytes=4 * count,
        scale_bytes=scale_bytes,
        other_float_bytes=other,
        header_bytes=header_bytes,
        file_bytes=len(data),
    )


def binary_storage(model: Any) -> BinaryStorage:
    """The sizes :func:`pack_binary_weights` would write, without writing.

    Raises:
        BadInputError: the model has no binary layer.
    """
    return _serialize_binary(model)[1]


def pack_binary_weights(model: Any, path: str | Path) -> BinaryStorage:
    """Write every weight of a binary model to ``path``: binarized kernels at 1 bit.

    The signs are those of the latent kernels (``sign(0) = +1``), the scales those the layers
    compute; everything else is stored as is. The file is written atomically.

    Args:
        model: a model from :func:`edgekit.compress.binary.binarize_model`.
        path: the file to write (suffix ``.ekpack`` by convention).

    Returns:
        The sizes, binarized bits against their float32 bytes.

    Raises:
        BadInputError: the model has no binary layer.
    """
    data, storage = _serialize_binary(model)
    write_bytes_atomic(path, data)
    return storage


@dataclass
class PackedWeights:
    """The content of a weight pack.

    Attributes:
        model: the name of the model it was written from.
        weights: every layer's weights in ``get_weights()`` order, the kernels decoded (a
            binarized kernel as ``scale * (±1)``, a codebook kernel as its shared values).
        signs: binarized kernels as ±1 float32, by layer.
        scales: their scales (broadcastable to the kernel), None when unscaled.
    """

    model: str
    weights: dict[str, list[np.ndarray]]
    signs: dict[str, np.ndarray] = field(default_factory=dict)
    scales: dict[str, np.ndarray | None] = field(default_factory=dict)


def unpack_binary_weights(path: str | Path) -> PackedWeights:
    """Read a file written by :func:`pack_binary_weights`, exactly.

    Raises:
        ModelLoadError: the file is missing, not a binary weight pack, or truncated.
    """
    header, payload = read_pack(path, "binary")
    out = PackedWeights(model=header["model"], weights={})
    for layer in header["layers"]:
        values: list[np.ndarray] = []
        for entry in layer["weights"]:
            if entry["encoding"] == "raw":
                values.append(read_raw(payload, entry))
                continue
            shape = tuple(entry["shape"])
            bits = np.unpackbits(
                np.frombuffer(section(payload, entry), np.uint8),
                count=int(np.prod(shape)),
                bitorder="little",
            )
            signs = (bits.astype(np.float32) * 2.0 - 1.0).reshape(shape)
            scale = None
            if entry["scale"] is not None:
                ref = entry["scale"]
                scale = np.frombuffer(section(payload, ref), np.float32).reshape(ref["shape"])
                scale = scale.copy()
            out.signs[layer["name"]] = signs
            out.scales[layer["name"]] = scale
            values.append(signs if scale is None else signs * scale)
        out.weights[layer["name"]] = values
    return out


def apply_packed_weights(model: Any, packed: PackedWeights, names: Sequence[str] = ()) -> None:
    """Set the weights of ``model``'s layers, by name, from a pack.

    For a binary pack, ``model`` is the float deployment model
    (:func:`edgekit.compress.binary.binary_to_float_model`), whose kernels take the
    ``scale * (±1)`` values; a binary layer takes them as latent kernel only when unscaled.

    Args:
        model: a model with the pack's layer names.
        packed: from :func:`unpack_binary_weights` or :func:`edgekit.compress.sharing.read_codebook`.
        names: only these layers (default: every layer in the pack).

    Raises:
        BadInputError: a layer is missing, its weights have other shapes, or it is a scaled
            binary layer (whose scale is recomputed from the latent kernel).
    """
    for name in names or list(packed.weights):
        try:
            layer = model.get_layer(name)
        except ValueError as err:
            raise BadInputError(
                f"model '{model.name}' has no layer '{name}' (the pack is from model "
                f"'{packed.model}')"
            ) from err
        if isinstance(layer, BinaryLayer) and packed.scales.get(name) is not None:
            raise BadInputError(
                f"layer '{name}' is a scaled binary layer, whose scale is computed from its "
                "latent kernel; apply the pack to binary_to_float_model(model) instead"
            )
        values = packed.weights[name]
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        if shapes != [tuple(v.shape) for v in values]:
            raise BadInputError(
                f"layer '{name}' has weights of shapes {shapes}; the pack holds "
                f"{[tuple(v.shape) for v in values]}"
            )
        layer.set_weights(values)
