"""Recipes: validation of every key before any work, built-ins, and `edgekit compress` end to end."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from edgekit.cli._main import main
from edgekit.compress._steps import Option, check_options, list_steps
from edgekit.compress.recipe import builtin_recipes, load_recipe, parse_recipe
from edgekit.errors import BadInputError, UnknownNameError

BUILTINS = {"prune50", "prune80-pqat", "cluster16", "pcqat", "channels50", "binary", "distill"}


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def test_every_builtin_recipe_parses_and_names_registered_steps() -> None:
    recipes = builtin_recipes()
    assert BUILTINS <= set(recipes), sorted(BUILTINS - set(recipes))
    steps = list_steps()
    for name, description in recipes.items():
        recipe = load_recipe(name)
        assert description and recipe.steps
        assert recipe.source == f"built-in:{name}"
        for step in recipe.steps:
            assert set(step.options) == set(steps[step.type].options)


_GOOD = """
description = "test"
[[step]]
type = "channels"
macs = 0.5
"""


@pytest.mark.parametrize(
    "text, fragments",
    [
        (
            _GOOD.replace('"channels"', '"chanels"'),
            ["step 1", "unknown step 'chanels'", "channels"],
        ),
        (_GOOD.replace("macs = 0.5", "mac = 0.5"), ["no option 'mac'", "macs", "criterion"]),
        (_GOOD.replace("0.5", "1.5"), ["channels.macs = 1.5", "in [0.05, 1]"]),
        (_GOOD.replace("0.5", '"half"'), ["channels.macs = 'half'", "a number"]),
        (_GOOD + 'criterion = "l3"\n', ["channels.criterion = 'l3'", "one of l1, l2"]),
        (_GOOD + "epochs = 2.5\n", ["channels.epochs = 2.5", "an integer"]),
        (_GOOD + "epochs = true\n", ["channels.epochs = True", "an integer"]),
        ('description = "x"\n', ["has no steps", "[[step]]"]),
        ("measure = 'onnx_fp32'\n" + _GOOD, ["measure = 'onnx_fp32'", "tflite_fp32, tflite_int8"]),
        ("steps = 3\n" + _GOOD, ["unknown key 'steps'", "description, measure, step"]),
        ("[[step]]\nmacs = 0.5\n", ["step 1", "needs a 'type' key"]),
        ("[[step\n", ["not valid TOML"]),
    ],
)
def test_bad_recipe_names_the_key_and_the_allowed_values(text: str, fragments: list[str]) -> None:
    with pytest.raises(BadInputError) as e:
        parse_recipe(text, source="r.toml")
    msg = str(e.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, msg


def test_defaults_are_filled_in_and_required_options_are_enforced() -> None:
    recipe = parse_recipe(_GOOD)
    assert recipe.steps[0].options == {
        "macs": 0.5,
        "criterion": "l1",
        "multiple_of": 1,
        "epochs": 10,
        "learning_rate": 1e-3,
    }
    step = list_steps()["channels"]
    required = type(step)(name="x", fn=step.fn, options={"k": Option(int, min=2, max=8)}, help="")
    with pytest.raises(
        BadInputError, match=r"step 'x' needs option 'k' \(an integer in \[2, 8\]\)"
    ):
        check_options(required, {}, "here")
    assert check_options(required, {"k": 3}, "here") == {"k": 3}


def test_unknown_recipe_name_and_missing_file() -> None:
    with pytest.raises(
        UnknownNameError, match=r"unknown recipe 'prune55'; built-in recipes: .*prune50"
    ):
        load_recipe("prune55")
    with pytest.raises(BadInputError, match=r"recipe file 'nope\.toml' does not exist"):
        load_recipe("nope.toml")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--recipe", "prune55"], "unknown recipe 'prune55'"),
        (["--recipe", "bad.toml"], "step 1: unknown step 'frobnicate'"),
        ([], "no --recipe given"),
        (["--recipe", "channels50", "--runs", "0"], "--runs must be >= 1"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragment: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text('[[step]]\ntype = "frobnicate"\n')
    code, out, err = _run(["compress", *args, "--out", "res"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("edgekit: error: ") and fragment in err, err
    assert err.count("\n") == 1
    assert not (tmp_path / "res").exists()


def test_cli_refuses_a_foreign_out_folder(
    trained_tiny: tuple[Any, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    model = trained_tiny[1]
    recipe = tmp_path / "r.toml"
    recipe.write_text(_GOOD + "epochs = 0\n")
    code, _, err = _run(
        ["compress", str(model), "--recipe", str(recipe), "--out", str(out)], capsys
    )
    assert code == 2 and "was not written by edgekit compress" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_compress_end_to_end_measures_reference_and_result_alike(
    trained_tiny: tuple[Any, Path],
    digits32: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A trained model halved in MACs and fine-tuned one epoch: both artifacts are converted,
    scored on the held-out images and timed alike, and every reported number can be
    recomputed from the files."""
    from edgekit.measure import open_runner
    from edgekit.measure._validate import accuracy
    from edgekit.models._io import load_keras_model
    from edgekit.train import evaluate_probs

    keras_model, model = trained_tiny
    recipe = tmp_path / "half.toml"
    recipe.write_text(_GOOD + "epochs = 1\n")
    out = tmp_path / "res"
    code, stdout, err = _run(
        [
            "compress", str(model), "--recipe", str(recipe), "--out", str(out),
            "--runs", "10", "--json",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    r = json.loads(stdout)
    ref, res = r["reference"], r["result"]
    ref_keras = accuracy(evaluate_probs(keras_model, digits32.x_test), digits32.y_test)
    assert ref["keras_accuracy"] == pytest.approx(ref_keras, abs=1e-6)
    for part in (ref, res):
        assert set(part) >= {"accuracy", "size_bytes", "size_gzip_bytes", "latency_ms", "sparsity"}
        assert part["latency_ms"]["p50"] > 0
        artifact = out / part["artifact"]
        assert artifact.stat().st_size == part["size_bytes"]
        assert len(gzip.compress(artifact.read_bytes(), 9, mtime=0)) == part["size_gzip_bytes"]
        # The accuracy is the artifact's own on the held-out images, and its int8 conversion
        # stays within 2 points of the Keras model it came from.
        probs = open_runner("litert", artifact).predict(digits32.x_test)
        assert part["accuracy"] == pytest.approx(accuracy(probs, digits32.y_test), abs=1e-6)
        assert part["accuracy"] >= part["keras_accuracy"] - 0.02, part
    # Half the MACs of a tiny network cost much of its accuracy, and one epoch of
    # fine-tuning recovers part of it (measured: 0.56 from 0.94): well above chance (0.1),
    # under the reference.
    assert 0.3 < res["keras_accuracy"] < ref_keras, (res["keras_accuracy"], ref_keras)
    assert r["delta"]["accuracy_points"] == pytest.approx(
        100 * (res["accuracy"] - ref["accuracy"]), abs=1e-2
    )
    assert 0.4 < res["macs"] / ref["macs"] < 0.6
    assert res["size_bytes"] < ref["size_bytes"]
    assert r["delta"]["p50_ratio"] == pytest.approx(
        res["latency_ms"]["p50"] / ref["latency_ms"]["p50"], rel=1e-3
    )
    # The result is a model deploy takes: loads in safe mode, same I/O, and scores what the
    # report says.
    loaded = load_keras_model(res["model"])
    assert tuple(loaded.inputs[0].shape[1:]) == (32, 32, 3)
    probs = evaluate_probs(loaded, digits32.x_test)
    assert accuracy(probs, digits32.y_test) == pytest.approx(res["keras_accuracy"], abs=1e-6)
    # The recipe is written back with every option spelled out, and reproduces itself.
    again = load_recipe(out / "recipe.toml")
    assert again.steps == load_recipe(recipe).steps
    assert (out / "compress.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".res.")]
