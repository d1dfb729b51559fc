"""Files and folders edgekit renames into place get the modes plain creation would give."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekit._io import staged_dir, umask, write_bytes_atomic, write_json_atomic


@pytest.fixture(params=[0o022, 0o077, 0o002])
def mask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_and_folders_follow_the_umask(mask: int, tmp_path: Path) -> None:
    assert umask() == mask
    # mkstemp / mkdtemp, which the atomic writes go through, would give 0600 / 0700.
    assert mode(write_bytes_atomic(tmp_path / "a.bin", b"x")) == 0o666 & ~mask
    assert mode(write_json_atomic(tmp_path / "a.json", {"a": 1})) == 0o666 & ~mask
    with staged_dir(tmp_path / "out") as stage:
        write_bytes_atomic(stage / "model.tflite", b"y")
    assert mode(tmp_path / "out") == 0o777 & ~mask
    assert mode(tmp_path / "out" / "model.tflite") == 0o666 & ~mask
    assert (tmp_path / "out" / "model.tflite").read_bytes() == b"y"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_saved_keras_model_follows_the_umask(tmp_path: Path) -> None:
    from edgekit._keras import keras
    from edgekit.models._io import save_keras_model

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    old = os.umask(0o022)
    try:
        path = save_keras_model(model, tmp_path / "m.keras")
    finally:
        os.umask(old)
    assert mode(path) == 0o644


def test_a_trained_model_is_saved_without_its_optimizer_and_keeps_it(tmp_path: Path) -> None:
    """The file holds the network only (not Adam's two slots per weight, not the compile
    config, whose loss Keras cannot always serialize), and the model in memory goes on
    training with the optimizer it had."""
    import zipfile

    import h5py
    import numpy as np

    from edgekit._keras import keras
    from edgekit.models._io import load_keras_model, save_keras_model
    from edgekit.train import compile_model

    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    compile_model(model, 1e-3, steps=2, label_smoothing=0.1)  # edgekit's own loss function
    x, y = np.random.default_rng(0).random((16, 8, 8, 3), np.float32), np.arange(16) % 10
    model.fit(x, y, epochs=1, verbose=0)
    optimizer, saved = model.optimizer, model.get_weights()
    path = save_keras_model(model, tmp_path / "m.keras")
    with zipfile.ZipFile(path) as z:
        z.extract("model.weights.h5", tmp_path)
        assert b"compile_config" not in z.read("config.json")
    with h5py.File(tmp_path / "model.weights.h5") as h5:
        assert "optimizer" not in h5
        assert h5.visit(lambda name: "optimizer" in name or None) is None
    assert model.optimizer is optimizer and int(optimizer.iterations.numpy()) == 1
    model.fit(x, y, epochs=1, verbose=0)
    assert int(optimizer.iterations.numpy()) == 2
    for got, want in zip(load_keras_model(path).get_weights(), saved, strict=True):
        np.testing.assert_array_equal(got, want)
