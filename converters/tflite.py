"""Keras -> TFLite converters: fp32, fp16, dynamic-range int8, full-integer int8.

Every TFLite artifact has a static batch of 1 (the Edge TPU compiler and most on-device
runtimes need static shapes; batch 1 is what an edge deployment measures).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._io import write_bytes_atomic
from edgekit._native import capture_native_stderr
from edgekit.converters._base import Artifact, Converter, ConvertOptions, register_converter
from edgekit.errors import BadInputError, ConversionError

log = logging.getLogger(__name__)

INT_IO_TYPES = ("int8", "uint8")


class _KerasToTFLite(Converter):
    source = "keras"
    suffix = ".tflite"
    runtime = "litert"
    file_tag: str = ""

    def configure(self, converter: Any, options: ConvertOptions) -> dict[str, Any]:
        """Set quantization options on the TFLiteConverter; return details for the manifest."""
        return {}

    def convert(self, src: Any, out_dir: Path, options: ConvertOptions) -> Artifact:
        from edgekit._keras import tf

        model = src
        shape = tuple(model.inputs[0].shape[1:])
        if any(d is None for d in shape):
            raise BadInputError(
                f"model input shape {('batch', *shape)} is not static; TFLite export needs fixed "
                "height, width and channels"
            )
        # The converter saves its trackable object as a SavedModel first. Given the Keras
        # model, that save traces every layer's call functions (most of a small model's
        # conversion time); a bare module holding the variables and the one function is
        # all the converter reads.
        holder = tf.Module()
        holder.variables_ = list(model.variables)
        holder.serve = tf.function(lambda x: model(x, training=False))
        concrete = holder.serve.get_concrete_function(
            tf.TensorSpec((1, *shape), tf.float32, name="input")
        )
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
        details = self.configure(converter, options)
        path = Path(out_dir) / f"{options.stem}{self.file_tag}{self.suffix}"
        try:
            with capture_native_stderr() as native_log:
                blob = converter.convert()
        except Exception as err:
            log_path = path.with_suffix(".log")
            write_bytes_atomic(log_path, native_log.text.encode())
            raise ConversionError(
                f"TFLite conversion to {self.format} failed: {str(err).splitlines()[0]} "
                f"(converter log: {log_path})"
            ) from err
        write_bytes_atomic(path, blob)
        log.info("wrote %s (%d bytes)", path, len(blob))
        return Artifact(
            format=self.format,
            path=path,
            runtime=self.runtime,
            precision=self.precision,
            files=[path],
            details=details,
        )


@register_converter
class TFLiteFP32(_KerasToTFLite):
    format = "tflite_fp32"
    precision = "fp32"
    tolerance = 1e-4
    file_tag = "_fp32"
    description = "TFLite, float32 weights and compute"


@register_converter
class TFLiteFP16(_KerasToTFLite):
    format = "tflite_fp16"
    precision = "fp16"
    tolerance = 1e-2
    file_tag = "_fp16"
    description = "TFLite, float16 weights (dequantized to float32 on CPU)"

    def configure(self, converter: Any, options: ConvertOptions) -> dict[str, Any]:
        from edgekit._keras import tf

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
        return {"weights": "float16"}


@register_converter
class TFLiteDynamicInt8(_KerasToTFLite):
    format = "tflite_dynamic"
    precision = "int8w"
    quantized = True
    file_tag = "_dynamic"
    description = "TFLite, dynamic-range: int8 weights, float activations"

    def configure(self, converter: Any, options: ConvertOptions) -> dict[str, Any]:
        from edgekit._keras import tf

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return {"weights": "int8", "activations": "float32"}


@register_converter
class TFLiteFullInt8(_KerasToTFLite):
    format = "tflite_int8"
    precision = "int8"
    quantized = True
    needs_calibration = True
    takes_fake_quant = True  # the int8 model a quantization-aware model was trained for
    file_tag = "_int8"
    description = "TFLite, full-integer int8 (calibrated), integer I/O"

    def configure(self, converter: Any, options: ConvertOptions) -> dict[str, Any]:
        from edgekit._keras import tf
        from edgekit.data import representative_data

        if options.calibration is None or len(options.calibration) == 0:
            raise BadInputError(
                "full-integer int8 conversion needs calibration data; pass --data with "
                "representative images (a folder, an .npz, or digits)"
            )
        if options.int_io not in INT_IO_TYPES:
            raise BadInputError(
                f"unknown integer I/O type '{options.int_io}'; choose one of {', '.join(INT_IO_TYPES)}"
            )
        calib = np.asarray(options.calibration, dtype=np.float32)
        io_type = tf.int8 if options.int_io == "int8" else tf.uint8
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative_data(calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
        return {
            "weights": "int8",
            "activations": "int8",
            "io": options.int_io,
            "calibration_samples": int(min(len(calib), 200)),
        }
