"""`edgekit deploy` for the accelerator targets on a machine without their toolchains or
devices (as here): what is built, validated, skipped, and why.

The coral and jetson deploys of the default model are in tests/cli/test_deploy.py, after the
test that trains and caches the default."""

from __future__ import annotations

import pytest

from edgekit.cli import main


def _deploy(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


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
