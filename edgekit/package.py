"""Mobile packaging (``edgekit package``): models that carry their labels, normalisation and
input spec.

Android: a ``.tflite`` file whose flatbuffer has a ``Model.metadata`` entry named ``edgekit``
pointing to UTF-8 JSON (schema ``edgekit.mobile/1``), with ``labels.txt`` and
``edgekit.json`` in a zip appended after the flatbuffer, where Android's MetadataExtractor
finds associated files (see ``edgekit._tflite_metadata``).

iOS: a Core ML ``.mlpackage`` (ML program) whose image input's scale and bias do the
normalisation, with a classifier head holding the class labels and the same JSON in its
user-defined metadata. coremltools is the optional extra ``edgekit[ios]``.

Normalisation is stated on raw pixel values in [0, 255]: ``model_input = (pixel - mean) / std``
per channel. edgekit models take float images in [0, 1], hence the defaults mean 0, std 255.
An int8 model then quantizes ``model_input`` with its input tensor's scale and zero point,
``q = round(model_input / scale) + zero_point``, which the metadata also records.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import _coreml
from edgekit import _tflite_metadata as tfm
from edgekit._io import sha256_file, write_bytes_atomic
from edgekit.errors import (
    BadInputError,
    ConversionError,
    DataError,
    ModelLoadError,
    RuntimeUnavailableError,
)

log = logging.getLogger(__name__)

PLATFORMS = ("android", "ios")
METADATA_SCHEMA = "edgekit.mobile/1"
# precision of an Android package built from a Keras model -> the converter that makes it
ANDROID_PRECISIONS = {"int8": "tflite_int8", "fp32": "tflite_fp32"}
IOS_PRECISIONS = ("fp16", "fp32")
PIXEL_RANGE = (0.0, 255.0)
DEFAULT_MEAN = 0.0
DEFAULT_STD = 255.0
CHECK_SAMPLES = 16

Labels = Sequence[str] | str | Path | None
PerChannel = float | Sequence[float]


@dataclass
class PackageResult:
    """What ``package_android`` / ``package_ios`` wrote.

    Attributes:
        platform: ``"android"`` or ``"ios"``.
        path: the ``.tflite`` file or the ``.mlpackage`` folder.
        metadata: the JSON embedded in it (labels, normalisation, input and output spec).
        checks: what was verified on the written package, and what could not be.
    """

    platform: str
    path: Path
    metadata: dict[str, Any]
    checks: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size


def package_android(
    source: str | Path | Any,
    out_dir: str | Path,
    *,
    labels: Labels = None,
    data: Any = None,
    mean: PerChannel = DEFAULT_MEAN,
    std: PerChannel = DEFAULT_STD,
    precision: str | None = None,
    int_io: str = "int8",
    stem: str | None = None,
    trust_model: bool = False,
) -> PackageResult:
    """Write ``<out_dir>/<stem>.tflite`` with labels, normalisation and I/O spec embedded.

    A Keras source is converted first (full-integer int8 calibrated on ``data``, or float32
    with ``precision="fp32"``); a ``.tflite`` source is packaged as it is. Before the file is
    written, the packaged model is run in LiteRT and must give outputs identical to the
    unpackaged one, and its metadata is read back; the write is a temporary file and a rename.

    Args:
        source: a ``.keras`` model (``.h5`` / SavedModel with ``trust_model``), a ``.tflite``
            file, or an in-memory tf_keras model.
        out_dir: output folder, created if missing.
        labels: class names: a list, or the path of a text file with one label per line;
            None takes the class names of ``data``.
        data: a data set (``"digits"``, an image folder, an ``.npz``, or a loaded
            ``edgekit.data.Dataset``): class names, int8 calibration and check images.
        mean: mean on pixels in [0, 255], one value or one per channel.
        std: std on pixels in [0, 255], one value or one per channel.
        precision: ``"int8"`` (the default) or ``"fp32"``; only for a Keras source.
        int_io: ``"int8"`` or ``"uint8"`` input and output of an int8 model.
        stem: output file name stem; default the source's (``"model"`` in memory).
        trust_model: allow model formats that can run code (see ``load_keras_model``).

    Returns:
        The written package, its metadata and the checks made on it.

    Raises:
        ModelLoadError: the source is missing, not a model, or not a one-input classifier.
        BadInputError: labels do not fit the model's classes, bad mean / std / precision,
            no data for int8, the model does not run in LiteRT, or the output would
            overwrite the source.
        DataError: the data set or labels file cannot be read.
        ConversionError: conversion failed, or the packaged model differs from the original.
    """
    src = _open_source(source, trust_model)
    if src.kind == "tflite" and precision is not None:
        raise BadInputError(
            f"precision '{precision}' applies when converting a Keras model; '{src.path}' is "
            "already a TFLite model: package it without a precision"
        )
    precision = precision or "int8"
    if src.kind == "keras" and precision not in ANDROID_PRECISIONS:
        raise BadInputError(
            f"unknown Android precision '{precision}'; choose one of "
            f"{', '.join(ANDROID_PRECISIONS)}"
        )
    channels = src.input_hwc[2]
    dataset = _load_data(data, src.input_hwc)
    class_names = _resolve_labels(labels, dataset, src.classes, src.name)
    if src.kind == "keras" and precision == "int8" and dataset is None:
        raise BadInputError(
            "an int8 Android package needs calibration data; pass data (a folder, an .npz "
            "or digits) or precision 'fp32'"
        )
    norm = _normalization(mean, std, channels)
    out_dir = Path(out_dir)
    stem = stem or src.stem
    dest = out_dir / f"{stem}.tflite"
    if src.path is not None and dest.resolve() == src.path.resolve():
        raise BadInputError(
            f"packaging '{src.path}' into '{out_dir}' would overwrite the source; choose "
            "another output folder or stem"
        )

    with tempfile.TemporaryDirectory(prefix=".edgekit-package-") as tmp:
        work = Path(tmp)
        converter = None
        if src.kind == "keras":
            converter = ANDROID_PRECISIONS[precision]
            model_bytes = _convert_keras(src.model, converter, dataset, int_io, work, out_dir)
        else:
            model_bytes = src.tflite_bytes
        spec = tfm.io_spec(model_bytes)
        meta = {
            "schema": METADATA_SCHEMA,
            "platform": "android",
            "name": stem,
            "labels": class_names,
            "labels_file": tfm.LABELS_FILE,
            "normalization": norm,
            "input": {
                **spec["input"],
                "layout": "NHWC",
                "color": _color(channels),
                "range": _input_range(norm),
            },
            "output": {**spec["output"], "labels_axis": -1},
            "precision": precision if src.kind == "keras" else None,
            "converter": converter,
            "edgekit_version": _edgekit_version(),
            "source_sha256": src.sha256,
        }
        packaged = tfm.embed_metadata(model_bytes, meta, class_names)
        original_path = write_bytes_atomic(work / "original.tflite", model_bytes)
        packaged_path = write_bytes_atomic(work / "packaged.tflite", packaged)
        images = _check_images(dataset, src.input_hwc)
        checks = _verify_tflite(original_path, packaged_path, images, src.name)
        back = read_package_metadata(packaged_path)
        files = back.pop("associated_files")
        if back != meta or files.get(tfm.LABELS_FILE) != tfm.labels_text(class_names):
            raise ConversionError(
                "the metadata read back from the packaged model differs from what was written; "
                "this is a bug in edgekit, please report it"
            )
        checks["metadata_read_back"] = True
        out_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(dest, packaged)
    log.info("wrote %s (%d bytes)", dest, len(packaged))
    return PackageResult("android", dest, meta, checks)


def package_ios(
    source: str | Path | Any,
    out_dir: str | Path,
    *,
    labels: Labels = None,
    data: Any = None,
    mean: PerChannel = DEFAULT_MEAN,
    std: PerChannel = DEFAULT_STD,
    precision: str = "fp16",
    stem: str | None = None,
    trust_model: bool = False,
) -> PackageResult:
    """Write ``<out_dir>/<stem>.mlpackage``: a Core ML classifier with an image input.

    The normalisation becomes the image input's pre-processing, ``scale * pixel + bias``
    (see ``coreml_scale_bias``). The package is built in a hidden folder beside the output and
    renamed into place. Core ML predicts only on Apple platforms, so what is checked here is
    the saved spec: an image input of the model's size, the scale and bias, the labels.

    Args:
        source: a ``.keras`` model (``.h5`` / SavedModel with ``trust_model``) or an
            in-memory tf_keras model; a TFLite file cannot be converted to Core ML.
        out_dir: output folder, created if missing.
        labels: class names: a list, or a text file with one label per line; None takes the
            class names of ``data``.
        data: a data set (``"digits"``, a folder, an ``.npz`` or a loaded Dataset) whose
            class names are the labels.
        mean: mean on pixels in [0, 255], one value or one per channel.
        std: std on pixels in [0, 255]: one value (Core ML has one scale for all channels).
        precision: Core ML compute precision, ``"fp16"`` (the default) or ``"fp32"``.
        stem: output name stem; default the source's (``"model"`` in memory).
        trust_model: allow model formats that can run code.

    Returns:
        The written package, its metadata and the checks made on it.

    Raises:
        RuntimeUnavailableError: coremltools is not installed.
        ModelLoadError: the source is missing, not a model, or not a one-input classifier.
        BadInputError: a TFLite source, labels that do not fit the model's classes, bad
            mean / std / precision, or an existing output that is not a Core ML package.
        DataError: the data set or labels file cannot be read.
        ConversionError: coremltools failed (its log is kept in ``out_dir``), or the saved
            spec lacks what was asked.
    """
    src = _open_source(source, trust_model)
    if src.kind != "keras":
        raise BadInputError(
            f"'{src.path}' is a TFLite model; Core ML packages are converted from the Keras "
            "model: pass the .keras file"
        )
    if precision not in IOS_PRECISIONS:
        raise BadInputError(
            f"unknown iOS precision '{precision}'; choose one of {', '.join(IOS_PRECISIONS)}"
        )
    height, width, channels = src.input_hwc
    if channels not in (1, 3):
        raise BadInputError(
            f"model input has {channels} channels; a Core ML image input takes 1 (grayscale) "
            "or 3 (RGB)"
        )
    dataset = _load_data(data, src.input_hwc)
    class_names = _resolve_labels(labels, dataset, src.classes, src.name)
    norm = _normalization(mean, std, channels)
    scale, bias = coreml_scale_bias(norm["mean"], norm["std"])
    out_dir = Path(out_dir)
    stem = stem or src.stem
    dest = out_dir / f"{stem}.mlpackage"
    if dest.exists() and not (dest.is_dir() and (dest / "Manifest.json").is_file()):
        raise BadInputError(
            f"'{dest}' exists and is not a Core ML package; remove it or choose another stem"
        )
    from edgekit.compress.twin import model_for_converter

    ct = _coreml.import_coremltools()
    input_name = src.model.input_names[0]
    meta = {
        "schema": METADATA_SCHEMA,
        "platform": "ios",
        "name": stem,
        "labels": class_names,
        "normalization": norm,
        "input": {
            "name": input_name,
            "type": "image",
            "height": height,
            "width": width,
            "color": _color(channels),
            "range": _input_range(norm),
        },
        "output": {"class_label": "classLabel", "probabilities": "classLabel_probs"},
        "coreml": {"scale": scale, "bias": bias, "compute_precision": precision},
        "edgekit_version": _edgekit_version(),
        "source_sha256": src.sha256,
    }
    image = ct.ImageType(
        name=input_name,
        shape=(1, height, width, channels),
        scale=scale,
        bias=bias if channels == 3 else bias[0],
        color_layout=ct.colorlayout.RGB if channels == 3 else ct.colorlayout.GRAYSCALE,
    )
    try:
        with _coreml.quiet() as tool_log:
            mlmodel = ct.convert(
                model_for_converter(src.model, takes_fake_quant=False),  # Core ML: no FakeQuant
                source="tensorflow",
                inputs=[image],
                classifier_config=ct.ClassifierConfig(class_names),
                convert_to="mlprogram",
                compute_precision=(
                    ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
                ),
            )
    except Exception as err:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_path = write_bytes_atomic(out_dir / f"{stem}.coreml.log", tool_log.text.encode())
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConversionError(
            f"Core ML conversion failed: {first} (converter log: {log_path})"
        ) from err
    mlmodel.short_description = f"edgekit image classifier, {len(class_names)} classes"
    mlmodel.input_description[input_name] = (
        f"{_color(channels)} image {width}x{height}, pixels in [0, 255]"
    )
    mlmodel.user_defined_metadata[tfm.METADATA_NAME] = json.dumps(meta)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _coreml.staged_package(dest) as build:
        mlmodel.save(str(build))
        saved = _coreml.inspect_spec(ct.utils.load_spec(str(build)))
        checks = _check_coreml(saved, class_names, scale, bias, (height, width))
    log.info("wrote %s", dest)
    return PackageResult("ios", dest, meta, checks)


def read_package_metadata(path: str | Path) -> dict[str, Any]:
    """Read back the metadata that ``package_android`` or ``package_ios`` embedded.

    Args:
        path: a packaged ``.tflite`` file or ``.mlpackage`` folder.

    Returns:
        For a ``.tflite``: the JSON of its ``edgekit`` metadata entry, plus
        ``"associated_files"``: {file name: text} of the appended zip (``labels.txt``,
        ``edgekit.json``). For an ``.mlpackage`` (needs coremltools): the JSON of its
        user-defined metadata, plus ``"coreml_spec"``: what the saved spec itself holds
        (input, scale, bias, labels; see ``edgekit._coreml.inspect_spec``).

    Raises:
        BadInputError: the path does not exist, is not a TFLite model or Core ML package, or
            carries no edgekit metadata.
        RuntimeUnavailableError: an ``.mlpackage`` is read without coremltools.
    """
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"'{p}' does not exist; pass a packaged .tflite or .mlpackage")
    if p.is_dir():
        if p.suffix != ".mlpackage" or not (p / "Manifest.json").is_file():
            raise BadInputError(f"'{p}' is a folder but not a Core ML .mlpackage")
        return _read_mlpackage_metadata(p)
    blob = p.read_bytes()
    try:
        meta = tfm.read_metadata(blob)
    except BadInputError as err:
        raise BadInputError(f"'{p}': {err}; pass a packaged .tflite file") from err
    if meta is None:
        raise BadInputError(
            f"'{p}' has no edgekit metadata; package it with edgekit package --platform android"
        )
    meta["associated_files"] = {
        name: data.decode("utf-8", errors="replace")
        for name, data in tfm.read_associated_files(blob).items()
    }
    return meta


def coreml_scale_bias(mean: Sequence[float], std: Sequence[float]) -> tuple[float, list[float]]:
    """Core ML image pre-processing equal to ``(pixel - mean) / std``.

    Args:
        mean: per-channel mean on pixels in [0, 255].
        std: per-channel std; Core ML has one scale for all channels, so all must be equal.

    Returns:
        ``(scale, bias)`` with ``scale * pixel + bias == (pixel - mean) / std``.

    Raises:
        BadInputError: ``std`` differs between channels.
    """
    if len(set(std)) != 1:
        raise BadInputError(
            f"std {list(std)} differs between channels; Core ML image inputs take one scale "
            "for all channels: give a single std for iOS"
        )
    return 1.0 / std[0], [-m / std[0] for m in mean]


def load_labels(path: str | Path) -> list[str]:
    """Class names from a UTF-8 text file, one per line (trailing blank lines ignored).

    Raises:
        DataError: the file is missing or not UTF-8 text.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"labels file '{p}' does not exist; pass a text file with one label per line"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"labels file '{p}' is not UTF-8 text; save it as UTF-8") from err
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


# ---------------------------------------------------------------------------------------------
# Helpers


@dataclass
class _Source:
    kind: str  # "keras" or "tflite"
    name: str
    stem: str
    path: Path | None
    input_hwc: tuple[int, int, int]
    classes: int
    model: Any = None
    tflite_bytes: bytes = b""
    sha256: str | None = None


def _open_source(source: str | Path | Any, trust_model: bool) -> _Source:
    if not isinstance(source, (str, Path)):
        from edgekit.models._io import check_classifier

        check_classifier(source, "<in-memory model>")
        return _keras_source(source, None)
    p = Path(source)
    if not p.exists():
        raise ModelLoadError(f"model '{p}' does not exist; pass a .keras model or a .tflite file")
    if p.is_file():
        with open(p, "rb") as f:
            head = f.read(8)
        if head[4:8] == tfm.TFLITE_MAGIC:
            return _tflite_source(p)
        if p.suffix == ".tflite":
            raise ModelLoadError(
                f"'{p}' is not a TFLite model (no TFL3 identifier); pass a .tflite flatbuffer "
                "or a .keras model"
            )
    if p.is_dir() or p.suffix in (".keras", ".h5"):
        from edgekit.models._io import load_keras_model

        return _keras_source(load_keras_model(p, trust=trust_model), p)
    raise ModelLoadError(
        f"'{p}' is neither a Keras model (.keras, .h5, SavedModel folder) nor a TFLite model "
        "(.tflite); pass one of those"
    )


def _keras_source(model: Any, path: Path | None) -> _Source:
    h, w, c = (int(d) for d in model.inputs[0].shape[1:])
    return _Source(
        kind="keras",
        name=str(path) if path else "<in-memory model>",
        stem=path.stem if path else "model",
        path=path,
        input_hwc=(h, w, c),
        classes=int(model.outputs[0].shape[-1]),
        model=model,
        sha256=sha256_file(path) if path is not None and path.is_file() else None,
    )


def _tflite_source(path: Path) -> _Source:
    blob = path.read_bytes()
    try:
        spec = tfm.io_spec(blob)
    except BadInputError as err:
        raise ModelLoadError(f"'{path}': {err}") from err
    n_in, n_out = spec["counts"]["inputs"], spec["counts"]["outputs"]
    in_shape, out_shape = spec["input"]["shape"], spec["output"]["shape"]
    if n_in != 1 or n_out != 1 or len(in_shape) != 4 or len(out_shape) != 2:
        raise ModelLoadError(
            f"TFLite model '{path}' has {n_in} input(s) shaped {in_shape} and {n_out} output(s) "
            f"shaped {out_shape}; edgekit packages image classifiers: one (1, H, W, C) input "
            "and one (1, classes) output"
        )
    return _Source(
        kind="tflite",
        name=str(path),
        stem=path.stem,
        path=path,
        input_hwc=(in_shape[1], in_shape[2], in_shape[3]),
        classes=out_shape[1],
        tflite_bytes=blob,
        sha256=sha256_file(path),
    )


def _load_data(data: Any, input_hwc: tuple[int, int, int]) -> Any:
    if data is None or not isinstance(data, (str, Path)):
        return data
    from edgekit.data import load_dataset

    return load_dataset(data, input_hwc)


def _resolve_labels(labels: Labels, dataset: Any, classes: int, source: str) -> list[str]:
    if labels is None:
        if dataset is None:
            raise BadInputError(
                "no class labels given; pass labels (a list or a labels.txt file) or data "
                "whose class names are the labels"
            )
        names, origin = list(dataset.class_names), f"data '{dataset.name}'"
    elif isinstance(labels, (str, Path)):
        names, origin = load_labels(labels), f"labels file '{labels}'"
    else:
        names, origin = [str(v) for v in labels], "the labels given"
    if len(names) != classes:
        raise BadInputError(
            f"{origin} has {len(names)} labels but model '{source}' outputs {classes} "
            f"classes; give exactly {classes} labels, one per output"
        )
    bad = [n for n in names if not n.strip() or "\n" in n or "\r" in n]
    if bad:
        raise BadInputError(
            f"{origin} has an empty or multi-line label {bad[0]!r}; each label is one "
            "non-empty line"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadInputError(
            f"{origin} repeats label(s) {', '.join(repeated)}; labels must be unique"
        )
    return names


def _normalization(mean: PerChannel, std: PerChannel, channels: int) -> dict[str, Any]:
    means = _per_channel("mean", mean, channels)
    stds = _per_channel("std", std, channels)
    if any(s <= 0 for s in stds):
        raise BadInputError(f"std {stds} has a value <= 0; std must be positive")
    return {
        "mean": means,
        "std": stds,
        "pixel_range": list(PIXEL_RANGE),
        "formula": "(pixel - mean) / std",
    }


def _per_channel(name: str, value: PerChannel, channels: int) -> list[float]:
    values = [value] if isinstance(value, (int, float)) else list(value)
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        raise BadInputError(f"{name} {values} is not a list of numbers") from None
    if len(floats) == 1:
        floats *= channels
    if len(floats) != channels or not all(math.isfinite(v) for v in floats):
        raise BadInputError(
            f"{name} {values} does not fit the model's {channels}-channel input; give 1 or "
            f"{channels} finite numbers"
        )
    return floats


def _input_range(norm: dict[str, Any]) -> list[float]:
    lo, hi = PIXEL_RANGE
    pairs = zip(norm["mean"], norm["std"], strict=True)
    ends = [(v - m) / s for m, s in pairs for v in (lo, hi)]
    return [min(ends), max(ends)]


def _convert_keras(
    model: Any, fmt: str, dataset: Any, int_io: str, work: Path, out_dir: Path
) -> bytes:
    from edgekit.compress.twin import model_for_converter
    from edgekit.converters import ConvertOptions, get_converter

    calibration = dataset.x_train if dataset is not None else None
    options = ConvertOptions(stem="model", calibration=calibration, int_io=int_io)
    converter = get_converter(fmt)
    try:
        # A binarized or quantization-aware model converts as deploy converts it.
        art = converter.convert(
            model_for_converter(model, converter.takes_fake_quant), work, options
        )
    except ConversionError as err:
        # The converter keeps its log beside the artifact, in our temporary folder: keep it.
        logs = list(work.glob("*.log"))
        if not logs:
            raise
        out_dir.mkdir(parents=True, exist_ok=True)
        kept = out_dir / f"package_{fmt}.log"
        shutil.copyfile(logs[0], kept)
        raise ConversionError(str(err).replace(str(logs[0]), str(kept))) from err
    return art.path.read_bytes()


def _check_images(dataset: Any, hwc: tuple[int, int, int]) -> np.ndarray:
    if dataset is not None and len(dataset.x_test):
        return np.asarray(dataset.x_test[:CHECK_SAMPLES], dtype=np.float32)
    return np.random.default_rng(0).random((CHECK_SAMPLES, *hwc), dtype=np.float32)


def _verify_tflite(
    original: Path, packaged: Path, images: np.ndarray, source: str
) -> dict[str, Any]:
    from edgekit.measure import open_runner

    try:
        before = open_runner("litert", original, threads=1).predict(images)
    except RuntimeUnavailableError:
        raise
    except Exception as err:
        said = str(err).split(": ", 1)[-1].splitlines()[0] if str(err) else type(err).__name__
        raise BadInputError(
            f"'{source}' does not run in the LiteRT interpreter ({said}); edgekit packages "
            "models that run on LiteRT's built-in kernels"
        ) from err
    try:
        after = open_runner("litert", packaged, threads=1).predict(images)
    except Exception as err:
        raise ConversionError(
            f"the packaged model no longer loads in LiteRT ({err}); this is a bug in edgekit, "
            "please report it"
        ) from err
    if not np.array_equal(before, after):
        diff = float(np.abs(before - after).max())
        raise ConversionError(
            f"the packaged model's outputs differ from the original's (max abs difference "
            f"{diff:.3g}); this is a bug in edgekit, please report it"
        )
    return {"runs_in_litert": True, "outputs_identical": True, "samples": len(images)}


def _check_coreml(
    saved: dict[str, Any],
    labels: list[str],
    scale: float,
    bias: list[float],
    hw: tuple[int, int],
) -> dict[str, Any]:
    problems = []
    image = saved["input"]
    if image["type"] != "imageType":
        problems.append(f"input is a {image['type']}, not an image")
    elif (image["height"], image["width"]) != hw:
        problems.append(f"image size {image['height']}x{image['width']}")
    if saved["labels"] != labels:
        problems.append(f"labels {saved['labels'][:3]}...")
    # Pre-processing constants may be stored as float16: compare to that precision.
    if not math.isclose(saved["scale"], scale, rel_tol=1e-3):
        problems.append(f"scale {saved['scale']}")
    want_bias = bias if any(bias) else [0.0]
    got_bias = np.broadcast_to(np.asarray(saved["bias"], dtype=float), len(want_bias))
    if not np.allclose(got_bias, want_bias, rtol=1e-3, atol=1e-3):
        problems.append(f"bias {saved['bias']}")
    if problems:
        raise ConversionError(
            f"the saved Core ML spec does not hold what was asked ({'; '.join(problems)}); "
            "this is a bug in edgekit or coremltools, please report it"
        )
    return {
        "image_input": True,
        "scale_bias": True,
        "labels": True,
        "prediction_checked": False,
        "prediction_note": "Core ML predicts only on macOS / iOS; the saved spec was checked",
    }


def _read_mlpackage_metadata(path: Path) -> dict[str, Any]:
    ct = _coreml.import_coremltools()
    try:
        spec = ct.utils.load_spec(str(path))
    except Exception as err:
        raise BadInputError(f"'{path}' is not a readable Core ML package ({err})") from err
    raw = spec.description.metadata.userDefined.get(tfm.METADATA_NAME)
    if raw is None:
        raise BadInputError(
            f"'{path}' has no edgekit metadata; package it with edgekit package --platform ios"
        )
    meta: dict[str, Any] = json.loads(raw)
    meta["coreml_spec"] = _coreml.inspect_spec(spec)
    return meta


def _color(channels: int) -> str:
    return {1: "GRAY", 3: "RGB"}.get(channels, f"{channels}-channel")


def _edgekit_version() -> str:
    from edgekit import __version__

    return __version__
