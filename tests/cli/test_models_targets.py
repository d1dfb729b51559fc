from __future__ import annotations

import json

import pytest

from edgekit.cli import main

FAMILIES = {
    "resnet",
    "densenet",
    "squeezenet",
    "mobilenet_v1",
    "mobilenet_v2",
    "shufflenet",
    "mnasnet",
}


def _json(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    return json.loads(out)


def test_models_json_covers_all_families_with_paper_figures(capsys):
    rows = {r["name"]: r for r in _json(["models", "--json"], capsys)}
    assert {r["family"] for r in rows.values()} >= FAMILIES
    v2, v1 = rows["mobilenet_v2"], rows["mobilenet_v1"]
    assert abs(v2["macs"] / 300e6 - 1) <= 0.03 and abs(v2["params"] / 3.47e6 - 1) <= 0.03
    assert abs(v1["macs"] / 569e6 - 1) <= 0.03 and abs(v1["params"] / 4.2e6 - 1) <= 0.03
    for r in rows.values():
        assert r["canonical"]["input_shape"] == [224, 224, 3] and r["canonical"]["classes"] == 1000
        assert r["params"] > 0 and r["macs"] > 0


def test_targets_json(capsys):
    rows = _json(["targets", "--json"], capsys)
    cpu = next(r for r in rows if r["name"] == "cpu")
    assert "tflite_int8" in cpu["formats"]
