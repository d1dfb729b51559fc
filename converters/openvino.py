"""ONNX -> OpenVINO IR (.xml + .bin): fp32, fp16 weights (for Myriad / NCS2), int8 (NNCF)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._native import capture_native_stderr
from edgekit.converters._base import Artifact, Converter, ConvertOptions, register_converter
from edgekit.errors import BadInputError, ConversionError, RuntimeUnavailableError

log = logging.getLogger(__name__)


def _import_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError as err:
        raise RuntimeUnavailableError("OpenVINO is not installed; pip install openvino") from err
    return ov


def _save_ir(ov: Any, model: Any, out_dir: Path, stem: str, compress_to_fp16: bool) -> list[Path]:
    """Save an IR pair into a temporary folder, then move both files into ``out_dir``."""
    final_xml = Path(out_dir) / f"{stem}.xml"
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        xml = Path(tmp) / final_xml.name
        ov.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
        # .bin first: the .xml is what readers look for, so it appears last.
        os.replace(xml.with_suffix(".bin"), final_xml.with_suffix(".bin"))
        os.replace(xml, final_xml)
    return [final_xml, final_xml.with_suffix(".bin")]


class _OnnxToOpenVINO(Converter):
    source = "onnx_fp32"
    suffix = ".xml"
    runtime = "openvino"
    compress_to_fp16 = False
    file_tag = ""

    def convert(self, src: Any, out_dir: Path, options: ConvertOptions) -> Artifact:
        ov = _import_openvino()
        source = Path(src.path if isinstance(src, Artifact) else src)
        if source.suffix != ".onnx" or not source.is_file():
            raise BadInputError(
                f"expected an .onnx file as the source of {self.format}, got '{source}'"
            )
        try:
            with capture_native_stderr():
                model = ov.convert_model(str(source))
        except Exception as err:
            raise ConversionError(
                f"OpenVINO could not convert '{source.name}': {str(err).splitlines()[0]}"
            ) from err
        model, details = self.transform(model, options)
        files = _save_ir(
            ov, model, out_dir, f"{options.stem}{self.file_tag}", self.compress_to_fp16
        )
        details["openvino"] = ov.get_version()
        return Artifact(self.format, files[0], self.runtime, self.precision, files, details)

    def transform(self, model: Any, options: ConvertOptions) -> tuple[Any, dict[str, Any]]:
        return model, {}


@register_converter
class OpenVINOFP32(_OnnxToOpenVINO):
    format = "openvino_fp32"
    precision = "fp32"
    tolerance = 1e-4
    file_tag = "_ov_fp32"
    description = "OpenVINO IR, float32"


@register_converter
class OpenVINOFP16(_OnnxToOpenVINO):
    format = "openvino_fp16"
    precision = "fp16"
    tolerance = 1e-2
    compress_to_fp16 = True
    file_tag = "_ov_fp16"
    description = "OpenVINO IR, float16 weights (what Myriad / NCS2 runs)"


@register_converter
class OpenVINOInt8(_OnnxToOpenVINO):
    format = "openvino_int8"
    precision = "int8"
    quantized = True
    needs_calibration = True
    file_tag = "_ov_int8"
    description = "OpenVINO IR, int8 by NNCF post-training quantization"

    def transform(self, model: Any, options: ConvertOptions) -> tuple[Any, dict[str, Any]]:
        if options.calibration is None or len(options.calibration) == 0:
            raise BadInputError(
                "openvino_int8 needs calibration data; pass --data with representative images"
            )
        try:
            import nncf
        except ImportError as err:
            raise RuntimeUnavailableError("NNCF is not installed; pip install nncf") from err
        calib = np.asarray(options.calibration, dtype=np.float32)
        idx = np.linspace(0, len(calib) - 1, num=min(300, len(calib))).round().astype(int)
        dataset = nncf.Dataset([calib[i : i + 1] for i in idx])
        try:
            # NNCF draws its progress bars on stdout, which belongs to results (--json):
            # send them to stderr with the rest of the progress.
            with capture_native_stderr(), contextlib.redirect_stdout(sys.stderr):
                quantized = nncf.quantize(
                    model, dataset, subset_size=len(idx), advanced_parameters=_overflow_fix(nncf)
                )
        except Exception as err:
            raise ConversionError(f"NNCF quantization failed: {str(err).splitlines()[0]}") from err
        return quantized, {
            "quantizer": f"nncf {nncf.__version__}",
            "weights": "7-bit range in every convolution and matmul (overflow fix)",
            "calibration_samples": len(idx),
        }


def _overflow_fix(nncf: Any) -> Any:
    """NNCF's overflow fix on every convolution and matmul: 7-bit weights. CPUs without VNNI
    (AVX2, AVX-512 F/BW) saturate 8-bit dot products into 16 bits; NNCF's default fixes the
    first layer only. On an AVX2 EPYC the test fixture (Keras 0.922 on digits) read 0.786
    without the fix, 0.847 with it on the first layer and 0.897 with it everywhere. The IR
    is meant for any Intel device, so it is made safe for all of them."""
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    return AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE)
