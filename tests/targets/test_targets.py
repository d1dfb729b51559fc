"""Targets as data: every file validates; the schema names bad keys; availability is reported."""

from __future__ import annotations

import json

import pytest

from edgekit.cli import main
from edgekit.errors import BadInputError, UnknownNameError
from edgekit.targets import list_targets, load_target, target_names, validate_target


def test_every_target_file_validates():
    names = target_names()
    assert {"cpu", "coral", "ncs2", "npu"} <= set(names)
    for t in list_targets():
        assert t.formats


@pytest.mark.parametrize(
    "data, expected",
    [
        (
            {"name": "x", "description": "d", "formats": ["tflite_fp32"], "colour": "red"},
            "unknown key 'colour'",
        ),
        ({"name": "x", "formats": ["tflite_fp32"]}, "missing required key 'description'"),
        (
            {"name": "x", "description": "d", "formats": ["tflite_fp64"]},
            "unknown format 'tflite_fp64'",
        ),
        ({"name": "x", "description": "d", "formats": "tflite_fp32"}, "'formats' must be list"),
        (
            {"name": "x", "description": "d", "formats": ["tflite_fp32"], "int_io": "int4"},
            "int_io 'int4'",
        ),
        (
            {
                "name": "x",
                "description": "d",
                "formats": ["openvino_fp16"],
                "runtime": {"openvino": {"dev": "NPU"}},
            },
            "allowed keys: device, fallback_device",
        ),
        (
            {
                "name": "x",
                "description": "d",
                "formats": ["tflite_int8"],
                "analysis": "edgetpu",
                "analysis_format": "onnx_fp32",
            },
            "'analysis_format' must be one of the target's formats",
        ),
        (
            {"name": "x", "description": "d", "formats": ["tflite_int8"], "channel_multiple": 0},
            "channel_multiple must be >= 1, got 0",
        ),
        (
            {"name": "x", "description": "d", "formats": ["tflite_int8"], "more_profiles": [1]},
            "'more_profiles' must be a list of names",
        ),
    ],
)
def test_schema_errors_name_the_key(data, expected):
    with pytest.raises((BadInputError, UnknownNameError)) as err:
        validate_target(data, "x.toml")
    assert expected in str(err.value)


def test_unknown_target_lists_known():
    with pytest.raises(UnknownNameError, match=r"known targets: coral, cpu, .*ncs2, npu"):
        load_target("corall")


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_targets_json_reports_availability_with_reasons(capsys):
    code, out, _ = _run(["targets", "--json"], capsys)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["cpu"]["available"] == {"build": True, "build_all": True, "run": True}
    assert rows["cpu"]["reason"] is None
    coral = rows["coral"]
    assert coral["available"]["build"] is True  # the full-int8 model always builds
    if coral["available"]["build_all"] is False:
        assert "edgetpu_compiler" in coral["reason"]
    ncs2 = rows["ncs2"]
    assert ncs2["devices"] == {"openvino": "MYRIAD"}
    if not ncs2["available"]["run"]:
        assert "MYRIAD" in ncs2["reason"]


def test_ncs2_builds_fp16_ir_validated_on_cpu(trained_tiny, tmp_path, capsys):
    from edgekit.measure import runtime_unavailable_reason

    _, model_path = trained_tiny
    out_dir = tmp_path / "ncs2"
    code, out, err = _run(
        [
            "deploy",
            str(model_path),
            "--target",
            "ncs2",
            "--json",
            "--runs",
            "20",
            "--out",
            str(out_dir),
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    (ir,) = report["artifacts"]
    assert ir["format"] == "openvino_fp16"
    assert ir["path"].endswith(".xml") and (out_dir / ir["path"].split("/")[-1]).is_file()
    assert any(f.endswith(".bin") for f in ir["files"])
    assert ir["top1_agreement"] >= 0.99
    if runtime_unavailable_reason("openvino", "MYRIAD"):
        assert ir["device"] == "CPU"
        assert "MYRIAD" in ir["device_note"]


def test_myriad_requested_on_new_openvino_is_one_line(tmp_path, capsys):
    from edgekit.measure import runtime_unavailable_reason

    reason = runtime_unavailable_reason("openvino", "MYRIAD")
    if reason is None:
        pytest.skip("this OpenVINO has a MYRIAD device")
    code, _, err = _run(
        ["deploy", "--target", "ncs2", "--device", "MYRIAD", "--out", str(tmp_path / "o")], capsys
    )
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("edgekit: error: --device MYRIAD")
    assert "2022.3" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.ncs
def test_ncs2_on_the_stick(trained_tiny, tmp_path, capsys):
    from edgekit.measure import runtime_unavailable_reason

    reason = runtime_unavailable_reason("openvino", "MYRIAD")
    if reason:
        pytest.skip(reason)
    _, model_path = trained_tiny
    code, out, err = _run(
        [
            "deploy",
            str(model_path),
            "--target",
            "ncs2",
            "--device",
            "MYRIAD",
            "--json",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["artifacts"][0]["top1_agreement"] >= 0.99
