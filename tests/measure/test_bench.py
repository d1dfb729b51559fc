"""`edgekit bench` on every local runtime, and what it says about bad artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.measure import measure_side_by_side


@pytest.fixture(scope="module")
def artifacts(trained_tiny, digits32, tmp_path_factory):
    from edgekit.converters import ConvertOptions, get_converter, plan_chain

    model, _ = trained_tiny
    out = tmp_path_factory.mktemp("bench")
    built = {"keras": model}
    opts = ConvertOptions(stem="m", calibration=digits32.x_train[:50])
    for step in plan_chain(["tflite_int8", "onnx_fp32", "openvino_fp32"]):
        conv = get_converter(step)
        built[step] = conv.convert(built[conv.source], out, opts)
    return {k: v.path for k, v in built.items() if k != "keras"}


def _bench(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", *args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.mark.parametrize(
    "fmt, runtime",
    [("tflite_int8", "litert"), ("onnx_fp32", "onnxruntime"), ("openvino_fp32", "openvino")],
)
def test_bench_json_fields(artifacts, fmt, runtime, capsys):
    code, out, err = _bench(
        [str(artifacts[fmt]), "--json", "--runs", "30", "--threads", "1"], capsys
    )
    assert code == 0, err
    r = json.loads(out)
    lat = r["latency_ms"]
    assert set(lat) == {"p50", "p90", "p95", "p99", "mean", "std", "min", "max"}
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert r["runs"] == 30 and r["load_ms"] > 0 and r["first_ms"] > 0 and r["peak_rss_mb"] > 0
    assert r["runtime"]["name"] == runtime and r["runtime"]["threads"] == 1
    assert len(r["artifact"]["sha256"]) == 64
    assert r["host"]["cores"] >= 1


def test_openvino_reports_the_precision_it_used(artifacts, capsys):
    code, out, _ = _bench([str(artifacts["openvino_fp32"]), "--json", "--runs", "5"], capsys)
    assert code == 0
    assert json.loads(out)["runtime"]["inference_precision"] == "f32"


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p / "missing.tflite", "does not exist"),
        (
            lambda p: (p / "t.tflite").write_bytes(b"\0" * 100) and p / "t.tflite",
            "not a TFLite model",
        ),
        (lambda p: (p / "t.onnx").write_text("hello") and p / "t.onnx", "not an ONNX model"),
        (lambda p: (p / "t.xml").write_text("hello") and p / "t.xml", "not an OpenVINO IR"),
        (lambda p: (p / "m.keras").write_text("x") and p / "m.keras", "not a runtime artifact"),
    ],
)
def test_bad_artifact_is_one_line(tmp_path, make, expected, capsys):
    code, out, err = _bench([str(make(tmp_path))], capsys)
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and expected in err and "Traceback" not in err


def test_truncated_tflite_is_one_line(artifacts, tmp_path, capsys):
    data = artifacts["tflite_int8"].read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    code, _, err = _bench([str(cut)], capsys)
    assert code != 0 and err.count("\n") == 1 and "Traceback" not in err


class _FakeRunner:
    """A runner whose run() sleeps a fixed time, to check the side-by-side bookkeeping."""

    def __init__(self, ms: float) -> None:
        self.ms, self.load_ms, self.calls = ms, 1.0, 0

    def prepare(self, x: np.ndarray) -> None:
        pass

    def run(self) -> None:
        import time

        self.calls += 1
        end = time.perf_counter() + self.ms / 1e3
        while time.perf_counter() < end:
            pass


def test_side_by_side_counts_and_orders():
    fast, slow = _FakeRunner(0.2), _FakeRunner(1.0)
    stats = measure_side_by_side(
        {"fast": fast, "slow": slow}, np.zeros(1), runs=23, warmup=2, rounds=4
    )
    assert stats["fast"].runs == stats["slow"].runs == 23
    # timed + first + warm-up + the untimed runs that open each of the 4 rounds (at least 2)
    assert fast.calls == slow.calls == 23 + 1 + 2 + 4 * 2
    fast.calls = 0
    measure_side_by_side({"fast": fast}, np.zeros(1), runs=10, warmup=3, rounds=2, round_warmup=0)
    assert fast.calls == 10 + 1 + 3
    assert stats["fast"].p50 < stats["slow"].p50
    assert 0.9 <= stats["slow"].p50 <= 1.5


@pytest.mark.parametrize(
    "fmt, source", [("openvino_fp32", "OpenVINO"), ("onnx_fp32", "ONNX Runtime")]
)
def test_per_layer_times(artifacts, fmt, source, capsys):
    code, out, err = _bench([str(artifacts[fmt]), "--json", "--runs", "10", "--per-layer"], capsys)
    assert code == 0, err
    pl = json.loads(out)["per_layer"]
    assert pl["source"].startswith(source)
    assert len(pl["layers"]) >= 5 and all(e["ms"] >= 0 for e in pl["layers"])
    assert any(e["type"] in ("Convolution", "Conv", "FusedConv") for e in pl["layers"])
    assert pl["sum_ms"] > 0


def test_per_layer_on_litert_says_why_not(artifacts, capsys):
    code, out, _ = _bench(
        [str(artifacts["tflite_int8"]), "--json", "--runs", "5", "--per-layer"], capsys
    )
    assert code == 0
    pl = json.loads(out)["per_layer"]
    assert pl["source"] is None and "no per-op profiler" in pl["note"]


def test_every_bench_is_stored_and_listed(artifacts, tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    ids = []
    for fmt in ("tflite_int8", "onnx_fp32"):
        code, out, _ = _bench(
            [str(artifacts[fmt]), "--json", "--runs", "5", "--db", str(db)], capsys
        )
        assert code == 0
        ids.append(json.loads(out)["record_id"])
    with pytest.raises(SystemExit) as e:
        main(["results", "--db", str(db), "--json"])
    rows = json.loads(capsys.readouterr()[0])
    assert e.value.code == 0
    assert [r["id"] for r in rows] == ids[::-1]
    assert {r["runtime"] for r in rows} == {"litert", "onnxruntime"}
    assert all(len(r["artifact_sha256"]) == 64 and r["p50_ms"] > 0 for r in rows)
    sha = rows[0]["artifact_sha256"][:10]
    with pytest.raises(SystemExit):
        main(["results", "--db", str(db), "--json", "--artifact", sha])
    assert len(json.loads(capsys.readouterr()[0])) == 1
