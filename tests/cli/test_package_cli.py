"""`edgekit package` from the command line; the API itself is tested in tests/package."""

from __future__ import annotations

import json

import pytest

from edgekit.cli import main


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_package_android_reads_back(trained_tiny, tmp_path, capsys):
    from edgekit.package import read_package_metadata

    _, model_path = trained_tiny
    code, out, err = _run(
        ["package", str(model_path), "--platform", "android", "--out", str(tmp_path), "--json"],
        capsys,
    )
    assert code == 0, err
    result = json.loads(out)
    meta = read_package_metadata(result["path"])
    assert meta["labels"] == [str(i) for i in range(10)]
    assert meta["normalization"]["mean"] == [0.0, 0.0, 0.0]
    assert meta["normalization"]["std"] == [255.0, 255.0, 255.0]
    assert meta["input"]["shape"] == [1, 32, 32, 3]


def test_package_ios_builds_when_coremltools_is_installed(trained_tiny, tmp_path, capsys):
    pytest.importorskip(
        "coremltools", reason="coremltools not installed (pip install 'edgekit[ios]')"
    )
    _, model_path = trained_tiny
    code, out, err = _run(
        ["package", str(model_path), "--platform", "ios", "--out", str(tmp_path), "--json"], capsys
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["path"].endswith(".mlpackage")
    assert result["metadata"]["labels"] == [str(i) for i in range(10)]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--platform", "windows"], "Invalid value for '--platform'"),
        (["--platform", "android", "--std", "a,b"], "Invalid value for --std"),
        (["--platform", "android", "--labels", "{tmp}/three.txt"], "labels"),
    ],
)
def test_package_bad_input(trained_tiny, tmp_path, capsys, extra, expected):
    _, model_path = trained_tiny
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    out_dir = tmp_path / "out"
    args = ["package", str(model_path), "--out", str(out_dir)] + [
        a.format(tmp=tmp_path) for a in extra
    ]
    code, _, err = _run(args, capsys)
    assert code != 0 and "Traceback" not in err
    assert err.count("edgekit: error:") == 1 and expected in err
    assert not out_dir.exists() or not any(out_dir.iterdir())
