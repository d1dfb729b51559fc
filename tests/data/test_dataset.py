from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.data import load_dataset, representative_data
from edgekit.errors import DataError


def test_digits_split_is_deterministic_disjoint_and_resized(digits32):
    again = load_dataset("digits", (32, 32, 3))
    assert digits32.x_train.shape[1:] == (32, 32, 3)
    assert digits32.x_train.dtype == np.float32
    assert 0.0 <= digits32.x_train.min() and digits32.x_train.max() <= 1.0
    total = len(digits32.y_train) + len(digits32.y_val) + len(digits32.y_test)
    assert total == 1797  # scikit-learn's bundled digits
    assert np.array_equal(again.y_test, digits32.y_test)
    assert np.array_equal(again.x_test, digits32.x_test)
    # no test image appears in the training split
    train_keys = {x.tobytes() for x in digits32.x_train}
    assert (
        sum(x.tobytes() in train_keys for x in digits32.x_test) <= 2
    )  # digits has a few duplicates
    assert set(np.unique(digits32.y_test)) == set(range(10))


def test_digits_other_size_and_single_channel():
    d = load_dataset("digits", (48, 40, 1))
    assert d.x_test.shape[1:] == (48, 40, 1)


def test_representative_data_yields_single_samples(digits32):
    batches = list(representative_data(digits32.x_train, count=7))
    assert len(batches) == 7
    assert all(b[0].shape == (1, 32, 32, 3) for b in batches)


def _write_png(path: Path, value: int) -> None:
    from edgekit._keras import tf

    img = np.full((20, 20, 3), value, dtype=np.uint8)
    path.write_bytes(tf.io.encode_png(img).numpy())


def test_image_folder(tmp_path):
    for cls, value in (("cat", 30), ("dog", 220)):
        (tmp_path / cls).mkdir()
        for i in range(6):
            _write_png(tmp_path / cls / f"{i}.png", value + i)
    d = load_dataset(tmp_path, (32, 32, 3))
    assert d.class_names == ["cat", "dog"]
    assert d.x_train.shape[1:] == (32, 32, 3)
    # class 0 images are dark, class 1 light: labels follow folder names
    x = np.concatenate([d.x_train, d.x_val, d.x_test])
    y = np.concatenate([d.y_train, d.y_val, d.y_test])
    assert x[y == 0].mean() < 0.2 < 0.8 < x[y == 1].mean()


def test_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(
        path, x=rng.integers(0, 255, (30, 16, 16)).astype(np.uint8), y=np.repeat([3, 7, 9], 10)
    )
    d = load_dataset(path, (32, 32, 3))
    assert d.class_names == ["3", "7", "9"]
    assert d.x_train.max() <= 1.0


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "needs at least 2"),
        (
            lambda p: ((p / "f" / "a").mkdir(parents=True), (p / "f" / "b").mkdir())[0] or p / "f",
            "has no images",
        ),
        (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "neither a folder nor an .npz"),
        (lambda p: (p / "bad.npz").write_bytes(b"not a zip") and p / "bad.npz", "not a readable"),
    ],
)
def test_bad_data_gives_one_clear_line(tmp_path, make, expected):
    with pytest.raises(DataError) as err:
        load_dataset(make(tmp_path), (32, 32, 3))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_npz_missing_key_and_corrupt_image(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8)))
    with pytest.raises(DataError, match="no x or y"):
        load_dataset(tmp_path / "d.npz")
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        (tmp_path / "imgs" / cls / "0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot be decoded"):
        load_dataset(tmp_path / "imgs")
