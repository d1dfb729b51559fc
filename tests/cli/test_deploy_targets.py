"""`edgekit deploy` for the accelerator targets on a machine without their toolchains or
devices (as here): what is built, validated, skipped, and why.

The default model is cached by the end-to-end cpu test (tests/cli/test_deploy.py) when it
ran first; alone, these tests train it once."""

from __future__ import annotations

import json
import shutil

import pytest

from edgekit.cli import main


def _deploy(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.mark.skipif(shutil.which("edgetpu_compiler") is not None, reason="compiler present")
def test_coral_default_model_maps_every_op_and_reports_missing_compiler(tmp_path, capsys):
    # The default model is cached by the end-to-end cpu test when it ran first.
    code, out, err = _deploy(
        ["deploy", "--target", "coral", "--json", "--runs", "20", "--out", str(tmp_path / "c")],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    tpu = report["edgetpu"]
    assert tpu["ops_total"] > 10
    assert tpu["ops_mapped"] == tpu["ops_total"] and tpu["unmapped"] == []
    assert tpu["macs_mapped_fraction"] == 1.0
    assert [a["format"] for a in report["artifacts"]] == ["tflite_int8"]
    assert report["artifacts"][0]["accuracy"] >= report["reference"]["accuracy"] - 0.01
    skipped = {s["format"]: s["reason"] for s in report["skipped"]}
    assert "edgetpu_compiler" in skipped["edgetpu"]
    assert not list((tmp_path / "c").glob("*_edgetpu.tflite"))


def test_coral_float_model_is_reported_unmapped(trained_tiny, tmp_path):
    """An fp32 TFLite file through the analyser: the first op is not int8, the rest stay on CPU."""
    from edgekit.converters import ConvertOptions, get_converter
    from edgekit.targets import run_analysis

    model, _ = trained_tiny
    art = get_converter("tflite_fp32").convert(model, tmp_path, ConvertOptions())
    report = run_analysis("edgetpu", str(art.path)).as_dict()
    assert report["ops_mapped"] == 0
    first = report["unmapped"][0]
    assert "int8" in first["reason"]
    assert all("CPU" in u["reason"] or "int8" in u["reason"] for u in report["unmapped"])


def test_jetson_onnx_artifacts_validated_with_onnxruntime(tmp_path, capsys):
    from edgekit.measure import runtime_unavailable_reason

    out_dir = tmp_path / "j"
    code, out, err = _deploy(
        ["deploy", "--target", "jetson", "--json", "--runs", "20", "--out", str(out_dir)], capsys
    )
    assert code == 0, err
    report = json.loads(out)
    ref = report["reference"]["accuracy"]
    by = {a["format"]: a for a in report["artifacts"]}
    assert {"onnx_fp32", "onnx_fp16", "onnx_int8_trt"} <= set(by)
    assert by["onnx_fp16"]["top1_agreement"] >= 0.99
    assert by["onnx_int8_trt"]["accuracy"] >= ref - 0.01
    assert all(by[f]["runtime"]["name"] == "onnxruntime" for f in ("onnx_fp16", "onnx_int8_trt"))
    if runtime_unavailable_reason("tensorrt", "gpu:0"):
        skipped = {s["format"]: s["reason"] for s in report["skipped"]}
        assert set(skipped) == {"tensorrt_fp16", "tensorrt_int8"}
        # the exact commands for the device are written beside the ONNX files
        scripts = sorted(p.name for p in out_dir.glob("*_trtexec.sh"))
        assert len(scripts) == 2
        text = (out_dir / scripts[-1]).read_text()
        assert "trtexec" in text and "--onnx=" in text


def test_strict_coral_names_the_missing_compiler_before_any_work(tmp_path, capsys):
    from edgekit.targets import load_target, target_availability

    if target_availability(load_target("coral"))["build_all"]:
        pytest.skip("edgetpu_compiler is installed here")
    code, out, err = _deploy(
        ["deploy", "--target", "coral", "--strict", "--out", str(tmp_path / "o")], capsys
    )
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("edgekit: error: --strict")
    assert "edgetpu_compiler" in err
    assert not (tmp_path / "o").exists()


def test_model_of_other_classes_sent_to_coral_without_data(tmp_path, capsys):
    """A float model for 5 classes, no --data: says what is missing before any conversion."""
    from edgekit.models import create
    from edgekit.models._io import save_keras_model

    path = save_keras_model(
        create("squeezenet_tiny", input_shape=(32, 32, 3), classes=5), tmp_path / "m.keras"
    )
    code, out, err = _deploy(
        ["deploy", str(path), "--target", "coral", "--out", str(tmp_path / "o")], capsys
    )
    assert code != 0 and out == ""
    line = err.strip()
    assert line.count("\n") == 0 and "pass --data" in line and "calibrates tflite_int8" in line
    assert not (tmp_path / "o").exists()
