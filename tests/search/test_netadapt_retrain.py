"""benchmarks/netadapt_retrain.py: more training seeds for a saved --final scratch run; and
the parts of benchmarks/netadapt.py that such a run and a resumed run rely on."""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgekit.models import create
from edgekit.models._io import save_keras_model

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "netadapt_retrain.py"


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("netadapt_retrain", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _saved(final: str = "scratch") -> dict[str, Any]:
    return {
        "args": {"input_size": 32, "data": "digits", "seed": 0, "final": final, "width": 1.0},
        "rows": [
            {
                "model": "mobilenet_v2_tiny",
                "budget": "0.5x",
                "acc": 0.9,
                "epochs": 1,
                "final": {"how": "scratch", "epochs": 1, "seed": 1},
                "side_ms": 0.3,
            }
        ],
        "baselines": {
            "mobilenet_v2_tiny": [
                {"width": 1.0, "accuracy": 0.8, "latency_ms": 0.4},
                {"width": 0.5, "accuracy": 0.6, "latency_ms": 0.2},
            ]
        },
    }


def test_the_section_compares_the_means_at_the_results_latency() -> None:
    """Seed by seed the baseline is interpolated at the result's latency with that seed's
    widths; the verdict is on the means, in test images."""
    mod = _module()
    data = SimpleNamespace(y_test=np.zeros(100), name="digits")
    args = argparse.Namespace(seeds=3, section="s_seeds", source="s")
    trainings = {
        "mobilenet_v2_tiny 0.5x seed 1": {"accuracy": 0.7, "seconds": 150.0},
        "mobilenet_v2_tiny 0.5x seed 2": {"accuracy": 0.68, "seconds": 210.0},
        "mobilenet_v2_tiny width 1 seed 1": {"accuracy": 0.9},
        "mobilenet_v2_tiny width 1 seed 2": {"accuracy": 0.9},
        "mobilenet_v2_tiny width 0.5 seed 1": {"accuracy": 0.5},
        "mobilenet_v2_tiny width 0.5 seed 2": {"accuracy": 0.7},
    }
    text = mod.results_section(_saved(), {"trainings": trainings}, data, args, 60.0)
    row = next(line for line in text.splitlines() if line.startswith("| mobilenet_v2_tiny 0.5x |"))
    # Baseline at 0.3 ms: midway between the widths, seed by seed: 0.7, 0.7, 0.8.
    assert "| 0.9000, 0.7000, 0.6800 | 0.7000, 0.7000, 0.8000 |" in row
    # Means 0.76 against 0.7333: 2.7 images of 100 over.
    assert "| 0.7600 / 0.7333 | +2.7 | yes |" in row
    assert "| mobilenet_v2_tiny width 0.5 | 0.200 | 1 | 0.6000, 0.5000, 0.7000 | 0.6000 |" in text
    # Minutes of every recorded training, whichever invocation ran it.
    assert "the 6 recorded trainings of seeds 1 to 2 took 6 min (1 min of training in" in text
    # A seed not trained yet: the means of what there is, and no verdict.
    del trainings["mobilenet_v2_tiny width 0.5 seed 2"]
    text = mod.results_section(_saved(), {"trainings": trainings}, data, args, 60.0)
    row = next(line for line in text.splitlines() if line.startswith("| mobilenet_v2_tiny 0.5x |"))
    assert row.endswith("| (seeds missing) |"), row


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600
    )


def test_it_trains_each_network_again_and_goes_on_where_it_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One more seed of a (fake, tiny) saved run: the result's architecture and each width
    are trained once more, recorded, and not trained again by the next invocation."""
    mod = _module()
    run = tmp_path / "run"
    result = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10, width=0.5)
    save_keras_model(result, run / "mobilenet_v2_tiny" / "0.5x" / "result.keras")
    (run / "rows.json").write_text(json.dumps(_saved()))
    argv = ["netadapt_retrain.py", str(run), "--seeds", "2", "--section", "t", "--source", "s"]
    monkeypatch.setattr(sys, "argv", [*argv, "--no-write"])
    mod.main()
    first = capsys.readouterr()
    record = json.loads((run / "retrain.json").read_text())["trainings"]
    assert set(record) == {
        "mobilenet_v2_tiny 0.5x seed 1",
        "mobilenet_v2_tiny width 1 seed 1",
        "mobilenet_v2_tiny width 0.5 seed 1",
    }
    seeds = {entry["seed"] for entry in record.values()}
    assert len(seeds) == 3 and 1 not in seeds  # none is the run's own seed
    assert all(
        entry["epochs"] == 1 and 0.0 <= entry["accuracy"] <= 1.0 for entry in record.values()
    )
    assert "| mobilenet_v2_tiny 0.5x | 0.300 |" in first.out
    mod.main()
    again = capsys.readouterr()
    assert "seed 1:" not in again.err  # nothing trained again
    assert _without_minutes(again.out) == _without_minutes(first.out)

    # The run's record (netadapt.py leaves it next to its charts) stands in for the folder
    # once that is gone: it rebuilds the searched architecture, without weights.
    charts = tmp_path / "charts"
    path = _netadapt_module().write_run_record(run, charts / "run.json.gz")
    assert path.stat().st_size < 20_000
    saved = json.loads(gzip.decompress(path.read_bytes()))
    rebuilt = mod._searched(saved, charts, saved["rows"][0])
    assert [(w.name, tuple(w.shape)) for w in rebuilt.weights] == [
        (w.name, tuple(w.shape)) for w in result.weights
    ]
    shutil.copy(run / "retrain.json", charts / "retrain.json")
    shutil.rmtree(run)
    monkeypatch.setattr(sys, "argv", [argv[0], str(path), *argv[2:], "--no-write"])
    mod.main()
    from_record = capsys.readouterr()
    assert (
        "seed 1:" not in from_record.err
    )  # its trainings are read from the retrain.json beside it
    assert _without_minutes(from_record.out) == _without_minutes(first.out)


def _without_minutes(text: str) -> str:
    assert re.search(r"\d+ min of training", text), text
    return re.sub(r"\d+ min of training", "", text)


@pytest.mark.parametrize(
    ("saved", "extra", "expected"),
    [
        (None, [], "no rows.json there"),
        (_saved("fine-tune"), [], "only a --final scratch run's results can be trained again"),
        (_saved(), ["--seeds", "1"], "--seeds 1: give at least 2"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, saved: dict[str, Any] | None, extra: list[str], expected: str
) -> None:
    if saved is not None:
        (tmp_path / "rows.json").write_text(json.dumps(saved))
    proc = _run([str(tmp_path), "--section", "t", "--source", "s", "--no-write", *extra])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expected in proc.stderr.strip().splitlines()[-1]


def _netadapt_module() -> Any:
    spec = importlib.util.spec_from_file_location("netadapt_bench", SCRIPT.with_name("netadapt.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_recorded_architecture_with_a_lambda_layer_is_refused(tmp_path: Path) -> None:
    import tensorflow as tf

    from edgekit._keras import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    saved = {"architectures": {"m 0.5x": json.loads(model.to_json())}}
    with pytest.raises(SystemExit, match="holds a Lambda layer; refused"):
        _module()._searched(saved, tmp_path, {"model": "m", "budget": "0.5x"})
    # Nested in a sub-model too; a layer merely named "Lambda" is not one.
    inner = keras.Model(inputs, x, name="Lambda")
    outer_in = keras.Input((8, 8, 3))
    outer = keras.Model(outer_in, keras.layers.Dense(10, activation="softmax")(inner(outer_in)))
    saved = {"architectures": {"m 0.5x": json.loads(outer.to_json())}}
    with pytest.raises(SystemExit, match="holds a Lambda layer; refused"):
        _module()._searched(saved, tmp_path, {"model": "m", "budget": "0.5x"})
    plain = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10, width=0.5)
    config = json.loads(plain.to_json())
    config["config"]["layers"][1]["config"]["name"] = "Lambda"
    assert not _module()._has_lambda(config)
    # A tf.* call on a tensor is recorded as a TFOpLambda naming the function: refused too.
    y = keras.layers.GlobalAveragePooling2D()(inputs)
    op = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(tf.math.abs(y)))
    assert "TFOpLambda" in op.to_json() and _module()._has_lambda(json.loads(op.to_json()))


def test_a_file_that_is_not_a_run_record_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "run.json.gz"
    bad.write_bytes(b"not gzip")
    proc = _run([str(bad), "--section", "t", "--source", "s", "--no-write"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not a run record written by netadapt.py" in proc.stderr.strip().splitlines()[-1]


def test_a_width_trained_as_it_would_be_now_is_not_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """netadapt.py's baseline: a run given one more width trains only that width; a width
    recorded with other epochs, another seed or a lost artifact is trained again."""
    import edgekit.search
    from edgekit.search import ZooSpec, derive_seed

    mod = _netadapt_module()
    calls: list[float] = []

    def fake_train_width(zoo, multiplier, epochs, data, meter, folder, say, **kw):  # type: ignore[no-untyped-def]
        calls.append(multiplier)
        width = round(zoo.width * multiplier, 6)
        artifact = folder / f"width_{width:g}_int8.tflite"
        artifact.write_bytes(b"tflite")
        seed = derive_seed(kw["seed"], "baseline", width)
        entry = {"width": width, "accuracy": 0.5 + multiplier / 10, "artifact": str(artifact)}
        return None, {**entry, "seed": seed, "seconds": 10.0}

    monkeypatch.setattr(edgekit.search, "train_width", fake_train_width)
    monkeypatch.setattr(edgekit.search, "make_meter", lambda *a, **k: object())
    zoo = ZooSpec("mobilenet_v2_tiny", 1.0, 32, 1)
    data = SimpleNamespace(x_train=np.zeros((1, 32, 32, 3), np.float32))
    args = argparse.Namespace(baseline_widths="1.0,0.5", seed=3, runs=10)
    trained: dict[str, dict[str, Any]] = {}
    saves: list[int] = []
    save = lambda: saves.append(len(trained))  # noqa: E731
    first, seconds = mod.train_baseline(zoo, data, tmp_path, 4, args, trained=trained, save=save)
    assert calls == [1.0, 0.5] and saves == [1, 2] and seconds == 20.0
    assert trained["0.5"]["seed"] == derive_seed(3, "baseline", 0.5)

    args.baseline_widths = "1.0,0.5,0.4"  # one width more
    again, seconds = mod.train_baseline(zoo, data, tmp_path, 4, args, trained=trained, save=save)
    assert calls == [1.0, 0.5, 0.4] and seconds == 30.0
    assert again[:2] == first and again[2]["width"] == 0.4

    calls.clear()  # its artifact is gone: trained again
    Path(trained["1"]["artifact"]).unlink()
    mod.train_baseline(zoo, data, tmp_path, 4, args, trained=trained)
    assert calls == [1.0]
    for change in ("epochs", "seed", "teacher"):  # trained otherwise than now: trained again
        calls.clear()
        epochs = 5 if change == "epochs" else 4
        args.seed = 4 if change == "seed" else 3
        teacher = object() if change == "teacher" else None
        mod.train_baseline(zoo, data, tmp_path, epochs, args, teacher, trained=trained)
        assert calls == [1.0, 0.5, 0.4], change
        calls.clear()
        mod.train_baseline(zoo, data, tmp_path, epochs, args, teacher, trained=trained)
        assert calls == [], change


def test_a_run_started_again_with_other_search_settings_is_refused(tmp_path: Path) -> None:
    """netadapt.py goes on from a killed --out only with the settings it was started with
    (the budgets and the baseline's widths may differ)."""
    mod = _netadapt_module()
    args = argparse.Namespace(
        input_size=32, width=1.0, train_epochs=1, budgets="0.5x", baseline_widths="1.0",
        models="mobilenet_v2_tiny", proposals=4, screen_batches=0, seed=0, runs=100,
    )  # fmt: skip
    work = tmp_path / "mobilenet_v2_tiny"
    work.mkdir()
    recorded = {"input_size": 32, "width": 1.0, "train_epochs": 1, "proposals": 4, "seed": 0}
    progress = {"train_s": 1.0, "walls": {}, "settings": {**recorded, "screen_batches": 8}}
    (work / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(SystemExit, match=r"made with other settings \(runs, screen_batches\)"):
        mod.run_model("mobilenet_v2_tiny", None, work, args)
    del progress["settings"]  # written before settings were kept: nothing to check against
    (work / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(SystemExit, match="holds no settings to check"):
        mod.run_model("mobilenet_v2_tiny", None, work, args)


def test_widths_another_run_trained_alike_are_borrowed_and_others_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """netadapt.py --baseline-from: a width the other run trained as this one would (epochs,
    seed, undistilled, artifact there) is taken with its origin, and its training time is not
    counted as this run's; any other is trained; a run of another input size, data or zoo
    width is refused in one line; a model the other run did not train lends nothing."""
    import edgekit.search
    from edgekit.search import ZooSpec, derive_seed

    mod = _netadapt_module()
    calls: list[float] = []

    def fake_train_width(zoo, multiplier, epochs, data, meter, folder, say, **kw):  # type: ignore[no-untyped-def]
        calls.append(multiplier)
        width = round(zoo.width * multiplier, 6)
        (folder / f"w{width:g}").write_bytes(b"tflite")
        entry = {"width": width, "accuracy": 0.7, "artifact": str(folder / f"w{width:g}")}
        return None, {**entry, "seed": derive_seed(kw["seed"], "baseline", width), "seconds": 9.0}

    monkeypatch.setattr(edgekit.search, "train_width", fake_train_width)
    monkeypatch.setattr(edgekit.search, "make_meter", lambda *a, **k: object())
    other = tmp_path / "other"
    (other / "mobilenet_v2_tiny").mkdir(parents=True)
    artifact = other / "w1.tflite"
    artifact.write_bytes(b"tflite")

    def width(w: float, epochs: int = 4, seed: int = 3, path: Path = artifact) -> dict[str, Any]:
        return {
            "width": w, "accuracy": 0.9, "artifact": str(path), "epochs": epochs,
            "seed": derive_seed(seed, "baseline", w), "distilled": False, "seconds": 60.0,
        }  # fmt: skip

    theirs = {  # 0.75: other epochs, 0.5: another seed, 0.4: its artifact is gone
        "1": width(1.0), "0.75": width(0.75, epochs=5), "0.5": width(0.5, seed=4),
        "0.4": width(0.4, path=other / "gone.tflite"),
    }  # fmt: skip
    settings = {"input_size": 32, "data": "digits", "width": 1.0, "screen_batches": 5}
    progress = {"settings": settings, "baseline": theirs}
    (other / "mobilenet_v2_tiny" / "progress.json").write_text(json.dumps(progress))
    ours = {"input_size": 32, "data": "digits", "width": 1.0, "screen_batches": 0}
    borrowed = mod.borrowed_widths(other, "mobilenet_v2_tiny", ours)
    zoo = ZooSpec("mobilenet_v2_tiny", 1.0, 32, 1)
    data = SimpleNamespace(x_train=np.zeros((1, 32, 32, 3), np.float32))
    args = argparse.Namespace(
        baseline_widths="1.0,0.75,0.5,0.4", seed=3, runs=10, baseline_from=other
    )
    trained: dict[str, dict[str, Any]] = {}
    got, seconds = mod.train_baseline(
        zoo, data, tmp_path, 4, args, trained=trained, borrowed=borrowed
    )
    assert calls == [0.75, 0.5, 0.4] and seconds == 3 * 9.0
    assert got[0] == {"width": 1.0, "accuracy": 0.9, "artifact": str(artifact), "from": str(other)}
    assert "from" not in got[1]
    assert trained["1"]["from"] == str(other) and "from" not in trained["0.75"]
    calls.clear()  # taken into this run's record: not borrowed or trained again
    mod.train_baseline(zoo, data, tmp_path, 4, args, trained=trained)
    assert calls == []
    # Distilled widths learn from a run's own reference: never borrowed, not even one the
    # other run distilled with this epochs and seed.
    distilled = {"1": {**width(1.0), "distilled": True}}
    mod.train_baseline(zoo, data, tmp_path, 4, args, object(), trained={}, borrowed=distilled)
    assert calls == [1.0, 0.75, 0.5, 0.4]
    with pytest.raises(SystemExit, match=r"another input_size \(32, here 64\); give a run"):
        mod.borrowed_widths(other, "mobilenet_v2_tiny", {**ours, "input_size": 64})
    assert mod.borrowed_widths(other, "mobilenet_v1", ours) == {}
    del progress["settings"]
    (other / "mobilenet_v2_tiny" / "progress.json").write_text(json.dumps(progress))
    with pytest.raises(SystemExit, match="holds no settings to check its widths against"):
        mod.borrowed_widths(other, "mobilenet_v2_tiny", ours)


def test_width_trainings_of_a_run_alike_are_taken_not_trained_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--widths-from: another run with the same seed, input size, data and width lends its
    width trainings of the same epochs (marked with their origin); results and widths of
    other epochs are trained; a run that differs in what a width depends on is refused."""
    mod = _module()
    calls: list[str] = []

    def fake_trainings(saved, run, data, folder, k):  # type: ignore[no-untyped-def]
        def train(key: str) -> dict[str, Any]:
            calls.append(key)
            return {"seed": 9, "epochs": 1, "accuracy": 0.5}

        for what in ("0.5x", "width 1", "width 0.5"):
            key = f"mobilenet_v2_tiny {what} seed {k}"
            yield key, lambda key=key: train(key)

    monkeypatch.setattr(mod, "_trainings", fake_trainings)
    from edgekit.search import derive_seed

    run, other = tmp_path / "run", tmp_path / "other"
    for folder in (run, other):
        folder.mkdir()
        (folder / "rows.json").write_text(json.dumps(_saved()))

    def lent(width: float, k: int, **changed: Any) -> dict[str, Any]:
        seed = derive_seed(derive_seed(0, "repeat", k), "baseline", width)
        return {"seed": seed, "epochs": 1, "accuracy": 0.75, "seconds": 60.0, **changed}

    trainings = {
        "mobilenet_v2_tiny 0.5x seed 1": lent(1.0, 1),  # another search's result: never taken
        "mobilenet_v2_tiny width 1 seed 1": lent(1.0, 1),
        "mobilenet_v2_tiny width 0.5 seed 1": lent(0.5, 1, epochs=2),  # trained longer
        "mobilenet_v2_tiny width 1 seed 2": lent(1.0, 2, seed=7),  # another seed
        "mobilenet_v2_tiny width 0.5 seed 2": lent(0.5, 2, **{"from": "elsewhere"}),
    }
    record = {"source_seed": 0, "trainings": trainings}
    (other / "retrain.json").write_text(json.dumps(record))
    argv = ["netadapt_retrain.py", str(run), "--seeds", "3", "--section", "t", "--source", "s"]
    monkeypatch.setattr(sys, "argv", [*argv, "--widths-from", str(other), "--no-write"])
    mod.main()
    out = capsys.readouterr().out
    assert calls == [
        "mobilenet_v2_tiny 0.5x seed 1",
        "mobilenet_v2_tiny width 0.5 seed 1",
        "mobilenet_v2_tiny 0.5x seed 2",
        "mobilenet_v2_tiny width 1 seed 2",
    ]
    got = json.loads((run / "retrain.json").read_text())["trainings"]
    assert got["mobilenet_v2_tiny width 1 seed 1"] == {**lent(1.0, 1), "from": str(other)}
    assert got["mobilenet_v2_tiny width 0.5 seed 2"]["from"] == "elsewhere"  # the first origin
    assert "| mobilenet_v2_tiny width 1 | 0.400 | 1 | 0.8000, 0.7500, 0.5000 | 0.6833 |" in out
    # The section counts this run's own trainings' time and names where the others came from.
    assert "the 4 recorded trainings of seeds 1 to 2 took 0 min" in out
    assert f"; 2 trainings of widths were taken from {other}, elsewhere, which trained" in out

    for what, says in (
        ("source_seed", "was recorded for a run of seed 4, not the run beside it (seed 0)"),
        ("seed", "trained with another seed (5, here 0)"),
    ):
        (run / "retrain.json").unlink(missing_ok=True)
        if what == "source_seed":
            (other / "retrain.json").write_text(json.dumps({**record, "source_seed": 4}))
        else:
            differs = _saved()
            differs["args"]["seed"] = 5
            (other / "rows.json").write_text(json.dumps(differs))
        with pytest.raises(SystemExit):
            mod.main()
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert f"--widths-from {other}: " in err and says in err, err


def test_a_fresh_run_records_its_reference_and_settings_before_searching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """netadapt.py into an --out that does not exist yet: the trained reference's time and
    the run's settings are in progress.json before the first search starts."""
    import edgekit.search

    mod = _netadapt_module()

    class Searching(Exception):
        pass

    def search(*a: Any, **k: Any) -> None:
        raise Searching

    monkeypatch.setattr(edgekit.search, "train_zoo_model", lambda *a, **k: object())
    monkeypatch.setattr(edgekit.search, "netadapt", search)
    args = argparse.Namespace(
        input_size=32, width=1.0, train_epochs=1, budgets="0.5x", baseline_widths="1.0",
        models="mobilenet_v2_tiny", proposals=4, screen_batches=0, seed=0, runs=100,
        short_steps=1, bn_batches=0, learning_rate=1e-3, long_epochs=0, final="scratch",
        final_epochs=1, distill=False, init_fraction=0.1, decay=1.0, workers=None,
        baseline_from=None,
    )  # fmt: skip
    work = tmp_path / "out" / "mobilenet_v2_tiny"
    with pytest.raises(Searching):
        mod.run_model("mobilenet_v2_tiny", None, work, args)
    progress = json.loads((work / "progress.json").read_text())
    assert progress["walls"] == {} and progress["settings"]["proposals"] == 4


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--distill"], "under --distill every width learns from this run's own reference"),
        ([], "not a folder; give another run's --out"),
    ],
)
def test_baseline_from_that_cannot_lend_is_one_line(
    tmp_path: Path, extra: list[str], says: str
) -> None:
    other = tmp_path / "other"
    if extra:  # a folder that is there: refused for --distill alone
        other.mkdir()
    script = SCRIPT.with_name("netadapt.py")
    proc = subprocess.run(
        [sys.executable, str(script), "--baseline-from", str(other), *extra, "--no-write"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert says in proc.stderr.strip().splitlines()[-1]
    assert not any(tmp_path.glob("**/progress.json"))


def test_the_benchmark_sums_where_each_search_spent_its_iterations() -> None:
    """benchmarks/netadapt.py reports each search's planning, screening, fine-tuning and
    measuring minutes from the iterations' records; runs from before they were recorded
    report none."""
    bench = _netadapt_module()
    iterations = [
        {"phase_seconds": {"plan": 2.0, "screen": 30.0, "fine_tune": 90.0, "measure": 8.0}},
        {"phase_seconds": {"plan": 1.5, "screen": 20.5, "fine_tune": 60.0, "measure": 7.0}},
    ]
    totals = bench.phase_totals(iterations)
    assert totals == {"plan": 3.5, "screen": 50.5, "fine_tune": 150.0, "measure": 15.0}
    assert list(totals) == ["plan", "screen", "fine_tune", "measure"]  # the search's order
    assert bench.phase_totals([{"group": "conv1"}, {"group": "conv2"}]) == {}
