"""benchmarks/clutter_digits.py: the harder data set the NetAdapt benchmark can use."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgekit.data import load_dataset

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "clutter_digits.py"


def _module():
    spec = importlib.util.spec_from_file_location("clutter_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shift_blind_accuracy(x_train, y_train, x_test, y_test) -> float:
    """Test accuracy of a linear model on the log magnitude of each image's 2-D Fourier
    transform: features that do not change when the digit moves on the canvas."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    def features(x: np.ndarray) -> np.ndarray:
        return np.log1p(np.abs(np.fft.rfft2(x[..., 0]))).reshape(len(x), -1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=500).fit(features(x_train), y_train)
    return float((clf.predict(features(x_test)) == y_test).mean())


def test_same_seed_same_images_and_digits_own_labels() -> None:
    from sklearn.datasets import load_digits

    clutter = _module()
    x0, y0 = clutter.make(0)
    again, _ = clutter.make(0)
    other, _ = clutter.make(1)
    assert x0.shape == (1797, 32, 32) and x0.dtype == np.uint8
    np.testing.assert_array_equal(x0, again)
    assert np.mean(x0 != other) > 0.5
    np.testing.assert_array_equal(y0, load_digits().target)


def test_harder_than_digits_but_learnable_and_read_by_load_dataset(tmp_path: Path) -> None:
    out = tmp_path / "clutter.npz"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clutter.npz"]  # no temporary left
    clutter = load_dataset(out, (32, 32, 1))
    digits = load_dataset("digits", (32, 32, 1))
    assert clutter.summary() | {"name": "digits"} == digits.summary()
    # One image per source digit, split the same way: each split holds the same digits' labels.
    np.testing.assert_array_equal(clutter.y_test, digits.y_test)
    # A linear model on shift-blind features reads plain digits well (0.88 when written); on
    # the clutter it is far worse (0.27), yet above chance (0.1): the digits are there to
    # learn, and a network has work to do that plain digits do not ask of it.
    plain = _shift_blind_accuracy(digits.x_train, digits.y_train, digits.x_test, digits.y_test)
    hard = _shift_blind_accuracy(clutter.x_train, clutter.y_train, clutter.x_test, clutter.y_test)
    assert plain > 0.8, plain
    assert 0.18 < hard < plain - 0.4, (plain, hard)
    with np.load(out, allow_pickle=False) as z:
        assert "clutter_digits.py --seed 0" in str(z["about"])
