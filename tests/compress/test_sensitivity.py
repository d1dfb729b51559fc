"""Sensitivity analysis: per-layer curves on a trained model, the suggested s, the plot,
and `edgekit sensitivity` from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.cli._main import cli
from edgekit.cli._sensitivity_cmd import sensitivity_command
from edgekit.compress._steps import StepContext
from edgekit.compress.pruning import prunable_layers, prune_sensitivity, weight_sparsity
from edgekit.compress.sensitivity import (
    DEFAULT_LEVELS,
    SensitivityResult,
    choose_s,
    plot_sensitivity,
    sensitivity_analysis,
)
from edgekit.data import Dataset
from edgekit.errors import BadInputError

if "sensitivity" not in cli.commands:
    cli.add_command(sensitivity_command)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def scan(trained_tiny: tuple[Any, Path], digits32: Dataset) -> SensitivityResult:
    model, _ = trained_tiny
    return sensitivity_analysis(model, digits32)


def test_analysis_table_has_every_layer_and_level_and_restores_the_model(
    trained_tiny: tuple[Any, Path], digits32: Dataset, scan: SensitivityResult
) -> None:
    model, _ = trained_tiny
    before = model.get_weights()
    assert scan.levels == DEFAULT_LEVELS
    assert list(scan.layers) == prunable_layers(model)
    assert all(len(r.accuracy) == len(DEFAULT_LEVELS) for r in scan.layers.values())
    assert scan.baseline == pytest.approx(StepContext(data=digits32).accuracy(model))
    assert scan.baseline > 0.5
    # Zeroing 90% of some layer's weights costs accuracy; no trial leaves the model pruned.
    assert min(r.accuracy[-1] for r in scan.layers.values()) < scan.baseline - 0.1
    small = sensitivity_analysis(model, digits32, levels=[0.5], layers=["logits"])
    assert list(small.layers) == ["logits"] and small.baseline == scan.baseline
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_choose_s_gives_each_layer_its_tolerated_sparsity(
    trained_tiny: tuple[Any, Path], scan: SensitivityResult
) -> None:
    model, _ = trained_tiny
    choice = choose_s(scan, max_drop=2.0)
    assert set(choice.per_layer) == set(scan.layers)
    assert choice.s == pytest.approx(float(np.median(list(choice.per_layer.values()))))
    for name, level in choice.sparsity.items():
        row = scan.layers[name]
        if level == 0.0:
            assert choice.per_layer[name] == 0.0
            continue
        i = scan.levels.index(level)
        assert all((scan.baseline - a) * 100 <= 2.0 + 1e-9 for a in row.accuracy[: i + 1])
        # s_l * σ_l is the level pruner's threshold there, so the sensitivity pruner with
        # s_l prunes the layer at least to that level.
        assert choice.per_layer[name] * row.std == pytest.approx(row.thresholds[i])
        pruned, _ = prune_sensitivity(model, choice.per_layer[name], layers=[name])
        zeros = weight_sparsity(pruned)["layers"][name]["zeros"]
        assert zeros >= round(level * row.weights)  # what the level pruner zeroed

    everything = choose_s(scan, max_drop=100.0)
    assert set(everything.sparsity.values()) == {DEFAULT_LEVELS[-1]}
    with pytest.raises(BadInputError, match="max_drop"):
        choose_s(scan, max_drop=-1)


def test_plot_is_a_valid_png_written_atomically(scan: SensitivityResult, tmp_path: Path) -> None:
    import matplotlib.image

    path = plot_sensitivity(scan, tmp_path / "plots" / "sens.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert sorted(p.name for p in path.parent.iterdir()) == ["sens.png"]  # no temp file left


@pytest.mark.parametrize(
    ("levels", "message"),
    [([], "non-empty"), ([0.0, 0.5], "strictly between 0 and 1"), ([0.5, 0.5], "repeat")],
)
def test_analysis_refuses_bad_levels(
    trained_tiny: tuple[Any, Path], digits32: Dataset, levels: list, message: str
) -> None:
    with pytest.raises(BadInputError, match=message):
        sensitivity_analysis(trained_tiny[0], digits32, levels=levels)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return int(e.value.code or 0), out, err


def test_cli_json_and_png(
    trained_tiny: tuple[Any, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model_path = trained_tiny
    png = tmp_path / "sens.png"
    code, out, err = _run(
        ["sensitivity", str(model_path), "--levels", "0.5,0.9", "--png", str(png), "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["levels"] == [0.5, 0.9]
    assert result["split"] == "val" and 0.5 < result["baseline"] <= 1.0
    assert [r["name"] for r in result["layers"]][-1] == "logits"
    assert all(len(r["accuracy"]) == 2 for r in result["layers"])
    suggested = result["suggested"]
    assert suggested["max_drop"] == 1.0
    # The suggestion follows from the table printed with it: each layer's sparsity is the
    # largest level up to which every level keeps the accuracy within 1 point, and s is the
    # median of the layers' own s.
    for row in result["layers"]:
        within = [(result["baseline"] - a) * 100 <= 1.0 + 1e-9 for a in row["accuracy"]]
        kept = next((i for i, ok in enumerate(within) if not ok), len(within))
        level = result["levels"][kept - 1] if kept else 0.0
        assert suggested["sparsity"][row["name"]] == level, row
        assert (suggested["per_layer"][row["name"]] > 0) == (level > 0), row
    assert suggested["s"] == pytest.approx(float(np.median(list(suggested["per_layer"].values()))))
    assert result["png"] == str(png)
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    assert "logits" in err  # progress on stderr


def test_cli_table(trained_tiny: tuple[Any, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, model_path = trained_tiny
    code, out, err = _run(
        ["sensitivity", str(model_path), "--levels", "0.9", "--split", "test"], capsys
    )
    assert code == 0, err
    assert "head_conv" in out and "0.9" in out and "suggested s =" in out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--levels", "a,b"], "Invalid value for --levels"),
        (["--levels", "0,0.5"], "strictly between 0 and 1"),
        (["--levels", "0.5,1.5"], "strictly between 0 and 1"),
        (["--split", "train"], "Invalid value for '--split'"),
        (["--png", "{tmp}/plot.jpg"], "must end in .png"),
        (["--data", "{tmp}/missing.npz"], "does not exist"),
    ],
)
def test_cli_bad_input(
    trained_tiny: tuple[Any, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    expected: str,
) -> None:
    _, model_path = trained_tiny
    args = ["sensitivity", str(model_path), "--png", str(tmp_path / "out.png")]
    code, out, err = _run(args + [a.format(tmp=tmp_path) for a in extra], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.count("edgekit: error:") == 1 and expected in err, err
    assert out == ""
    assert not any(tmp_path.iterdir())  # no plot, no temp file


def test_cli_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["sensitivity", str(tmp_path / "nope.keras")], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.count("edgekit: error:") == 1 and "does not exist" in err


@pytest.mark.slow
def test_prune50_with_a_short_fine_tune_keeps_most_accuracy(
    trained_tiny: tuple[Any, Path], digits32: Dataset
) -> None:
    from edgekit.compress.pruning import prune_level, prune_tfmot

    model, _ = trained_tiny
    ctx = StepContext(data=digits32, seed=0)
    baseline = ctx.accuracy(model)
    one_shot = ctx.accuracy(prune_level(model, 0.5).model)
    # The training learning rate (3e-3) recovers more in 3 epochs than the default 1e-3.
    pruned = prune_tfmot(model, ctx, 0.5, schedule="constant", epochs=3, learning_rate=3e-3)
    accuracy = ctx.accuracy(pruned)
    assert ctx.state["sparsity"] > 0.45
    assert accuracy > one_shot + 0.3, (baseline, one_shot, accuracy)
    assert accuracy > baseline - 0.1, (baseline, one_shot, accuracy)
