"""Latency look-up tables: a tiny table built for real, keys, interpolation, profile errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.cli._main import main
from edgekit.measure._lut_grid import OPS
from edgekit.measure.lut import (
    SCHEMA,
    LayerKey,
    MissingLayerError,
    ProfileError,
    convert_micro_model,
    layer_key,
    list_profiles,
    load_profile,
    model_ops,
    predict_latency,
    save_profile,
)
from edgekit.models import LayerCost, count_layers, create


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobilenet_v2_tiny's layers at 32x32, int8, measured with a handful of runs."""
    out = tmp_path_factory.mktemp("lut") / "tiny_int8.json"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "lut", "build", "--target", "cpu", "--models", "mobilenet_v2_tiny",
                "--widths", "1.0", "--classes", "10", "--input-size", "32",
                "--runs", "5", "--rounds", "1", "--warmup-ms", "1", "--threads", "1",
                "--out", str(out),
            ]
        )  # fmt: skip
    assert e.value.code == 0
    return out


def _tiny(width: float = 1.0) -> object:
    return create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10, width=width)


def test_built_profile_has_schema_fingerprint_and_every_entry(tiny_profile: Path) -> None:
    profile = json.loads(tiny_profile.read_text())
    assert profile["schema"] == SCHEMA
    assert profile["precision"] == "int8" and profile["input_size"] == 32
    dev = profile["device"]
    assert dev["cpu"] and dev["cores"] >= 1 and dev["threads"] == 1
    assert isinstance(dev["flags"], list)
    assert dev["runtime"]["name"] == "litert" and dev["runtime"]["version"]
    assert profile["overhead_ms"] > 0
    assert profile["built"]["runs"] == 5 and profile["built"]["date"]
    # The grid's own model, timed whole in the same rounds, calibrates the sum.
    cal = profile["calibration"]
    assert cal["scale"] > 0
    (ref,) = cal["models"]
    assert ref["model"] == "mobilenet_v2_tiny@1" and ref["measured_ms"] > 0
    assert ref["predicted_ms"] == pytest.approx(
        profile["overhead_ms"] + cal["scale"] * (ref["sum_ms"] - profile["overhead_ms"]), rel=1e-3
    )
    keys = {LayerKey.from_dict(e) for e in profile["entries"]}
    ops = model_ops(_tiny(), "int8")
    assert {op.key for op in ops} == keys  # deduplicated: one entry per distinct op
    assert all(e["ms"] >= 0 for e in profile["entries"])
    assert [p.name for p in tiny_profile.parent.iterdir()] == [tiny_profile.name]  # no temp file


def test_predict_finds_every_layer(tiny_profile: Path) -> None:
    result = predict_latency(_tiny(), tiny_profile)
    assert result.missing == [] and result.interpolated == []
    assert result.latency_ms > result.overhead_ms > 0
    ref = load_profile(tiny_profile)["calibration"]["models"][0]
    assert result.latency_ms == pytest.approx(ref["predicted_ms"], rel=1e-3)
    assert len(result.per_layer) == len(model_ops(_tiny(), "int8"))
    assert all(e.source == "exact" for e in result.per_layer)


def test_profile_round_trips(tiny_profile: Path, tmp_path: Path) -> None:
    profile = load_profile(tiny_profile)
    again = save_profile(profile, tmp_path / "copy.json")
    reloaded = load_profile(again)
    assert reloaded["entries"] == profile["entries"]
    assert reloaded["device"] == profile["device"]
    assert reloaded["name"] == "copy"


def test_model_ops_match_the_converted_model(tmp_path: Path) -> None:
    """Folding BN and ReLU6 into convs gives exactly the ops the TFLite converter emits."""
    from edgekit.converters import ConvertOptions, get_converter
    from edgekit.measure import open_runner

    model = _tiny()
    artifact = get_converter("tflite_fp32").convert(model, tmp_path, ConvertOptions(stem="t"))
    runner = open_runner("litert", artifact.path, threads=1)
    tflite_ops = [
        o["op_name"]
        for o in runner.interpreter._get_ops_details()  # type: ignore[attr-defined]
        if o["op_name"] != "DELEGATE"
    ]
    ops = model_ops(model, "fp32")
    assert len(ops) == len(tflite_ops)
    names = {"conv": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D", "add": "ADD"}
    names |= {"dense": "FULLY_CONNECTED", "gap": "MEAN", "softmax": "SOFTMAX"}
    assert [names[op.key.op] for op in ops if op.key] == tflite_ops
    stem = ops[0]
    assert stem.name == "stem_conv" and stem.fused == ("stem_conv_bn", "stem_conv_relu")
    assert stem.key and stem.key.act == "relu6"
    project = next(op for op in ops if op.name == "block1_project")
    assert project.key and project.key.act == "none"  # the linear bottleneck


def test_layer_key_from_layer_cost_is_stable() -> None:
    cost = LayerCost(
        name="block2_dw",
        kind="depthwise",
        macs=0,
        params=0,
        trainable_params=0,
        input_shape=(None, 64, 64, 96),
        output_shape=(None, 32, 32, 96),
        kernel=(3, 3),
        stride=(2, 2),
        groups=96,
        in_channels=96,
        out_channels=96,
    )
    key = layer_key(cost, "int8", act="relu6")
    assert key == LayerKey(
        "depthwise", 64, 64, 96, 96, (3, 3), (2, 2), 96, "relu6", "same", 1, "int8"
    )
    assert str(key) == "depthwise 64x64x96->96 k3x3 s2x2 relu6 int8"
    assert LayerKey.from_dict(json.loads(json.dumps(key.as_dict()))) == key
    assert hash(layer_key(cost, "int8", act="relu6")) == hash(key)
    assert key.work == 3 * 3 * 96 * 32 * 32
    # The counter's costs of a real model give the same keys as model_ops.
    model = _tiny()
    costs = {c.name: c for c in count_layers(model)}
    for op in model_ops(model, "int8"):
        if op.key and op.key.op in ("conv", "depthwise", "dense"):
            assert layer_key(costs[op.name], "int8", act=op.key.act) == op.key


def _synthetic(entries: list[tuple[int, int, float]], input_size: int = 16) -> dict:
    """A profile of 1x1 int8 convs at 16x16 with the given (cin, cout, ms)."""
    return {
        "schema": SCHEMA,
        "name": "synthetic",
        "device": {"cpu": "test"},
        "precision": "int8",
        "input_size": input_size,
        "overhead_ms": 0.001,
        "entries": [
            {**LayerKey("conv", 16, 16, cin, cout).as_dict(), "ms": ms} for cin, cout, ms in entries
        ],
    }


def _one_conv(cin: int, cout: int) -> object:
    from edgekit._keras import keras

    inputs = keras.Input((16, 16, cin), name="input")
    x = keras.layers.Conv2D(cout, 1, use_bias=False, name="pw")(inputs)
    x = keras.layers.BatchNormalization(name="pw_bn")(x)
    return keras.Model(inputs, x, name="one_conv")


def test_interpolation_lies_between_its_neighbours() -> None:
    profile = _synthetic([(16, 32, 0.010), (32, 64, 0.040), (8, 512, 0.5)])
    result = predict_latency(_one_conv(24, 48), profile)
    (layer,) = result.per_layer
    assert layer.source == "interpolated" and result.interpolated == ["pw"]
    assert 0.010 < layer.ms < 0.040
    assert layer.neighbours == [
        "conv 16x16x16->32 k1x1 int8",
        "conv 16x16x32->64 k1x1 int8",
    ]
    # Linear in MACs: 24*48 lies 5/12 of the way from 16*32 to 32*64.
    assert layer.ms == pytest.approx(0.010 + (24 * 48 - 512) / (2048 - 512) * 0.030)
    assert result.latency_ms == pytest.approx(0.001 + layer.ms)


def test_a_layer_without_neighbours_is_named(tmp_path: Path) -> None:
    profile = _synthetic([(16, 32, 0.010), (32, 64, 0.040)])
    with pytest.raises(MissingLayerError, match="layer 'pw'") as err:
        predict_latency(_one_conv(128, 256), profile)  # 16x the largest entry's MACs
    assert "\n" not in str(err.value)
    lenient = predict_latency(_one_conv(128, 256), profile, strict=False)
    assert lenient.missing == ["pw"] and lenient.latency_ms == pytest.approx(0.001)


def test_load_profile_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="unknown profile 'nope'; shipped profiles: ") as err:
        load_profile("nope")
    assert "\n" not in str(err.value)
    bad = tmp_path / "bad.json"
    for text, fragment in [
        ("{not json", "not valid JSON"),
        (json.dumps({"schema": "other"}), "not an edgekit look-up table"),
        (json.dumps({**_synthetic([(8, 8, 0.1)]), "precision": "int4"}), "precision 'int4'"),
        (json.dumps({**_synthetic([(8, 8, 0.1)]), "entries": []}), "no entries"),
    ]:
        bad.write_text(text)
        with pytest.raises(ProfileError, match=fragment) as err:
            load_profile(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "absent.json")


def test_save_profile_refuses_an_invalid_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileError):
        save_profile({"schema": SCHEMA}, tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_shipped_profiles_cover_their_grid_and_were_calibrated_within_10_percent() -> None:
    """Every shipped table predicts each model family of its grid without a missing layer
    (one width each, the suite's time), and the whole-model timings it was checked against
    when built agree with its predictions within 10% (the README cites these errors)."""
    for name in list_profiles():
        profile = load_profile(name)
        grid = profile["grid"]
        models = profile["calibration"]["models"]
        assert len(models) >= 2 * len(grid["models"]), name
        for checked in models:
            assert abs(checked["error"]) < 0.10, (name, checked)
            assert checked["predicted_ms"] == pytest.approx(
                checked["measured_ms"] * (1 + checked["error"]), rel=1e-2, abs=2e-4
            ), (name, checked)
        for family in grid["models"]:
            model = create(
                family,
                input_shape=(profile["input_size"],) * 2 + (3,),
                classes=grid["classes"][0],
                width=grid["widths"][len(grid["widths"]) // 2],
            )
            result = predict_latency(model, profile)
            assert result.latency_ms > 0 and result.missing == [], (name, family)


@pytest.mark.parametrize("kind", ["zoo", "keras"])
def test_cli_predict_json(
    tiny_profile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    spec = "zoo:mobilenet_v2_tiny?classes=10"
    if kind == "keras":
        from edgekit.models._io import save_keras_model

        spec = str(save_keras_model(_tiny(), tmp_path / "tiny.keras"))
    code, out, err = _run(
        ["lut", "predict", spec, "--profile", str(tiny_profile), "--json"], capsys
    )
    assert code == 0, err
    r = json.loads(out)
    assert r["model"] == spec and r["latency_ms"] > 0 and r["missing"] == []
    assert r["precision"] == "int8" and len(r["per_layer"]) == r["layers"]
    expected = predict_latency(_tiny(), tiny_profile).latency_ms
    assert r["latency_ms"] == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--profile", "nope"], "unknown profile 'nope'; shipped profiles:"),
        (["--profile", "TINY", "--precision", "fp32"], "measured in int8, not fp32"),
        (
            ["--profile", "TINY", "--model", "zoo:mobilenet_v1_tiny"],
            "of model 'mobilenet_v1_tiny': no entry or neighbours",
        ),
        (["--profile", "TINY", "--model", "zoo:mobilenet_v2_tiny?depth=2"], "unknown option"),
    ],
)
def test_cli_predict_errors(
    tiny_profile: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    model = "zoo:mobilenet_v2_tiny?classes=10"
    if "--model" in args:
        i = args.index("--model")
        model = args[i + 1]
        args = args[:i] + args[i + 2 :]
    args = [str(tiny_profile) if a == "TINY" else a for a in args]
    code, out, err = _run(["lut", "predict", model, *args], capsys)
    assert code == 2 and out == ""
    assert err.startswith("edgekit: error: ") and fragment in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--target", "cpu", "--device", "ssh://pi@host"], "not implemented yet"),
        (["--target", "coral"], "target 'coral' is not supported"),
        (["--target", "cpu", "--models", "resnet50x"], "unknown model 'resnet50x'"),
    ],
)
def test_cli_build_errors_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    out = tmp_path / "p.json"
    code, _, err = _run(["lut", "build", *args, "--out", str(out)], capsys)
    assert code == 2 and fragment in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_list_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import edgekit.measure._lut_build as lut_build

    avx2 = ["sse4_2", "avx", "avx2", "fma", "f16c"]
    monkeypatch.setattr(lut_build, "_cpuinfo", lambda: {"cpu": "AMD EPYC", "flags": avx2})
    code, out, err = _run(["lut", "list", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)["profiles"]
    assert [r["name"] for r in rows] == list_profiles()
    assert all(r["precision"] in ("int8", "fp32") and r["entries"] > 0 for r in rows)
    # Tables of two CPU kinds that share a model name ("AMD EPYC") are told apart by their
    # kernel-selecting features, and whether this CPU has the same ones.
    kinds = {r["name"]: ("avx512_vnni" in r["flags"], r["input_size"]) for r in rows}
    assert kinds["litert_x86_avx512_int8_176"] == (True, 176)
    assert kinds["litert_x86_avx2_int8_176"] == (False, 176)
    this = {r["name"]: r["this_cpu"] for r in rows}
    assert this["litert_x86_avx2_int8_176"] is True and this["litert_x86_avx512_int8"] is False
    code, out, err = _run(["lut", "list"], capsys)
    # The ISA column: no table name holds "avx512_vnni"; yes and no for this CPU.
    assert code == 0 and "avx512_vnni" in out and " yes " in out and " no " in out


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_micro_model_is_the_op_it_measures(op: str, tmp_path: Path) -> None:
    from edgekit.measure import open_runner

    kw: dict = {}
    if op in ("conv", "group_conv", "depthwise", "avgpool", "maxpool"):
        kw["kernel"] = (3, 3)
    if op in ("avgpool", "maxpool"):
        kw["stride"] = (2, 2)
    if op == "group_conv":
        kw["groups"] = 2
    if op in ("add", "mul", "concat"):
        kw["inputs"] = 2
    side = 1 if op in ("dense", "softmax") else 8
    cout = 16 if op in ("conv", "group_conv", "dense", "concat") else 8
    key = LayerKey(op, side, side, 8, cout, precision="fp32", **kw)
    runner = open_runner("litert", convert_micro_model(key, tmp_path), threads=1)
    ops = [o["op_name"] for o in runner.interpreter._get_ops_details()]  # type: ignore[attr-defined]
    expected = {"conv": "CONV_2D", "group_conv": "CONV_2D", "depthwise": "DEPTHWISE_CONV_2D"}
    expected |= {"dense": "FULLY_CONNECTED", "gap": "MEAN", "sigmoid": "LOGISTIC"}
    expected |= {"avgpool": "AVERAGE_POOL_2D", "maxpool": "MAX_POOL_2D", "concat": "CONCATENATION"}
    real = [o for o in ops if o != "DELEGATE"]
    if op == "bn":  # a standalone batch norm is a scale and an offset
        assert real == ["MUL", "ADD"]
    else:
        assert real == [expected.get(op, op.upper())]


def test_calibration_scale_ignores_held_out_models() -> None:
    from edgekit.measure._lut_build import _calibrate
    from edgekit.measure._lut_grid import ModelOp

    profile = _synthetic([(16, 32, 0.010), (32, 64, 0.040)])
    small = [ModelOp("pw", LayerKey("conv", 16, 16, 16, 32))]
    large = [ModelOp("pw", LayerKey("conv", 16, 16, 32, 64))]
    # In context the small model runs 1.2x its entry, the large one 2x (held out).
    measured = {"small": 0.001 + 1.2 * 0.010, "large": 0.001 + 2.0 * 0.040}
    cal = _calibrate(profile, {"small": small, "large": large}, measured, {"large"})
    assert cal["scale"] == pytest.approx(1.2)
    rows = {m["model"]: m for m in cal["models"]}
    assert rows["small"]["fitted"] and not rows["large"]["fitted"]
    assert rows["small"]["error"] == pytest.approx(0, abs=1e-3)
    assert rows["large"]["error"] == pytest.approx((0.001 + 1.2 * 0.04) / 0.081 - 1, abs=1e-3)
    profile["calibration"] = cal
    assert predict_latency(_one_conv(16, 32), profile).latency_ms == pytest.approx(0.013)
