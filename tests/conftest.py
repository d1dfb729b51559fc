"""Shared fixtures: the digits data at 32x32 and one small trained model per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import edgekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Never touch the user's cache; CI sets its own folder. Under pytest-xdist each worker
    # gets a folder of its own inside it: tests count the rows of the measurement store.
    given = os.environ.get("EDGEKIT_CACHE_DIR")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not given:
        os.environ["EDGEKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgekit-cache"))
    elif worker:
        os.environ["EDGEKIT_CACHE_DIR"] = str(Path(given) / worker)


@pytest.fixture(scope="session")
def digits32() -> Any:
    from edgekit.data import load_dataset

    return load_dataset("digits", (32, 32, 3))


@pytest.fixture(scope="session")
def trained_tiny(digits32: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """mobilenet_v2_tiny trained on digits until it is well above chance; saved as .keras.

    Trained once per test session: pytest-xdist workers share the file (the first trains it
    under a lock, the others wait and load it), and every worker uses the loaded model.
    """
    from edgekit.deploy import SilentProgress, _cache_lock
    from edgekit.models import create
    from edgekit.models._io import load_keras_model, save_keras_model
    from edgekit.train import TrainConfig, set_seed, train_model

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, which holds each worker's
    path = root / "trained_tiny" / "tiny.keras"
    with _cache_lock(path, SilentProgress()):  # the default model's cache lock
        if not path.is_file():
            set_seed(0)  # the initial weights too, not only the training order
            model = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10)
            train_model(model, digits32, TrainConfig(epochs=8, seed=0))
            save_keras_model(model, path)
    return load_keras_model(path), path
