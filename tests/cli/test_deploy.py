"""`edgekit deploy`: the default end to end, a user model, and every bad input.

The tests that deploy the default model are kept in this file, after the end-to-end test that
trains and caches it: one test worker runs them in order, and the later ones load the cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.cli import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("edgekit: error:")]
    assert len(error_lines) == 1, err
    assert expected in error_lines[0], error_lines[0]


def test_default_deploy_end_to_end(tmp_path):
    """The first-time user's command, in a real process: trains the default, builds, measures."""
    out_dir = tmp_path / "out"
    env = dict(os.environ)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgekit",
            "deploy",
            "--target",
            "cpu",
            "--json",
            "--out",
            str(out_dir),
            "--runs",
            "200",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["target"] == "cpu"
    ref = report["reference"]["accuracy"]
    assert ref >= 0.97, f"default model reaches only {ref} on held-out digits"
    by_format = {a["format"]: a for a in report["artifacts"]}
    assert set(by_format) == {
        "tflite_fp32",
        "tflite_fp16",
        "tflite_dynamic",
        "tflite_int8",
        "onnx_fp32",
        "onnx_int8",
        "openvino_fp32",
        "openvino_int8",
    }
    for fmt in ("onnx_fp32", "openvino_fp32"):
        assert by_format[fmt]["top1_agreement"] == 1.0 and by_format[fmt]["max_abs_error"] < 1e-4
    assert by_format["openvino_fp32"]["runtime"]["inference_precision"] == "f32"
    for fmt in ("onnx_int8", "openvino_int8"):
        assert by_format[fmt]["accuracy"] >= ref - 0.01
    for a in report["artifacts"]:
        assert Path(a["path"]).is_file() and a["path"] in a["files"]
        assert sum(Path(f).stat().st_size for f in a["files"]) == a["size_bytes"]
        for key in ("p50", "p90", "p99"):
            assert a["latency_ms"][key] > 0
        # Every artifact of the default model stays within the default --max-drop (1 point)
        # of the Keras model on the held-out images; the float ones agree on nearly all.
        assert a["accuracy"] >= ref - 0.01, (a["format"], a["accuracy"], ref)
        assert a["check"]["passed"], a["format"]
        floor = 0.99 if "int8" not in a["format"] and a["format"] != "tflite_dynamic" else 0.97
        assert a["top1_agreement"] >= floor, (a["format"], a["top1_agreement"])
    int8, fp32 = by_format["tflite_int8"], by_format["tflite_fp32"]
    assert int8["accuracy"] >= ref - 0.01
    assert fp32["top1_agreement"] == 1.0 and fp32["max_abs_error"] < 1e-4
    assert int8["size_bytes"] < fp32["size_bytes"] * 0.5
    assert report["selected"] in by_format
    fastest = min(report["artifacts"], key=lambda a: a["latency_ms"]["p50"])
    assert report["selected"] == fastest["format"]
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert manifest["versions"]["tensorflow"] == "2.21.0"
    assert manifest["model"]["sha256"] and len(manifest["model"]["sha256"]) == 64
    assert manifest["artifacts"] == report["artifacts"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


@pytest.mark.skipif(shutil.which("edgetpu_compiler") is not None, reason="compiler present")
def test_coral_default_model_maps_every_op_and_reports_missing_compiler(tmp_path, capsys):
    code, out, err = run_cli(
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


def test_jetson_onnx_artifacts_validated_with_onnxruntime(tmp_path, capsys):
    from edgekit.measure import runtime_unavailable_reason

    out_dir = tmp_path / "j"
    code, out, err = run_cli(
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


def test_deploy_user_model_json(trained_tiny, tmp_path, capsys):
    _, model_path = trained_tiny
    code, out, err = run_cli(
        [
            "deploy",
            str(model_path),
            "--target",
            "cpu",
            "--json",
            "--runs",
            "20",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["model"]["source"] == str(model_path)
    assert report["reference"]["accuracy"] > 0.8
    assert {"format", "path", "size_bytes", "accuracy", "top1_agreement", "latency_ms"} <= set(
        report["artifacts"][0]
    )
    first = {Path(a["path"]).name for a in report["artifacts"]}
    # A second run into the same folder replaces edgekit's own output: a coral deploy (one
    # int8 artifact, quicker than the cpu target's eight) leaves none of the cpu files.
    code, out, err = run_cli(
        ["deploy", str(model_path), "--target", "coral", "--runs", "5", "--out", str(tmp_path / "o")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "selected:" in out
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["target"] == "coral"
    left = {p.name for p in (tmp_path / "o").iterdir()}
    assert {Path(a["path"]).name for a in manifest["artifacts"]} <= left
    assert not (first - {Path(a["path"]).name for a in manifest["artifacts"]}) & left


@pytest.mark.parametrize(
    "args, expected",
    [
        (["deploy", "{tmp}/missing.keras", "--target", "cpu"], "does not exist"),
        (["deploy", "{tmp}/notamodel.keras", "--target", "cpu"], "is not a Keras model"),
        (["deploy", "{tmp}/weights.bin", "--target", "cpu"], "is not a Keras model"),
        (["deploy", "--target", "corall"], "unknown target 'corall'; known targets: coral, cpu"),
        (["deploy", "{model}", "--target", "cpu", "--data", "{tmp}/emptydir"], "needs at least 2"),
        (["deploy", "{model}", "--target", "cpu", "--data", "{tmp}/badclasses"], "has no images"),
        (["deploy", "{model}", "--target", "cpu", "--max-drop", "-1"], "--max-drop must be 0..100"),
        (["deploy", "--target", "cpu", "--threads", "0"], "--threads"),
        (
            ["deploy", "{model}", "--target", "cpu", "--out", "{tmp}/foreign"],
            "was not written by edgekit",
        ),
        (["deploy", "{h5}", "--target", "cpu"], "--trust-model"),
        (["deploy"], "Missing option '--target'"),
        (["deploy", "--target", "cpu", "--frobnicate"], "No such option"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(args, expected, tmp_path, trained_tiny, capsys):
    _, model_path = trained_tiny
    (tmp_path / "notamodel.keras").write_text("this is text, not a zip archive")
    (tmp_path / "weights.bin").write_bytes(b"\0" * 64)
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "badclasses" / "a").mkdir(parents=True)
    (tmp_path / "badclasses" / "b").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("user data")
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    out_dir = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, model=model_path, h5=tmp_path / "m.h5") for a in args]
    if "--out" not in argv and len(argv) > 1:
        argv += ["--out", str(out_dir)]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, expected)
    assert not out_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "user data"


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgekit",
            "deploy",
            str(tmp_path / "nope.keras"),
            "--target",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("edgekit: error: model")
    assert proc.stdout == ""


def test_lambda_model_needs_trust(tmp_path, capsys):
    from edgekit._keras import keras

    inp = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    code, _, err = run_cli(
        ["deploy", str(path), "--target", "cpu", "--out", str(tmp_path / "o")], capsys
    )
    assert_one_line_error(code, err, "--trust-model")
    assert not (tmp_path / "o").exists()
