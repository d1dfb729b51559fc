"""`edgekit deploy --target coral` without the Edge TPU compiler or a device (as here)."""

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
