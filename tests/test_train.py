"""edgekit.train: BatchNormalization statistics re-estimated after pruning."""

from __future__ import annotations

from typing import Any

import numpy as np


def _conv_bn(seed: int = 0) -> Any:
    from edgekit._keras import keras
    from edgekit.train import set_seed

    set_seed(seed)
    x = keras.Input((32, 32, 3))
    y = keras.layers.Conv2D(4, 3, name="conv")(x)
    y = keras.layers.BatchNormalization(momentum=0.99, name="bn")(y)
    return keras.Model(x, keras.layers.ReLU()(y))


def test_recalibrate_batchnorm_sets_the_mean_of_the_batch_statistics(digits32: Any) -> None:
    from edgekit._keras import keras
    from edgekit.train import recalibrate_batchnorm

    model = _conv_bn()
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(4, 5.0, np.float32))
    bn.moving_variance.assign(np.full(4, 9.0, np.float32))
    kernel = model.get_layer("conv").get_weights()[0].copy()

    assert recalibrate_batchnorm(model, digits32, 3, batch_size=16, seed=7) == 1

    # The same images, in the same order: the plain mean of the three batches' statistics.
    order = np.random.default_rng(7).permutation(len(digits32.x_train))
    conv = keras.Model(model.input, model.get_layer("conv").output)
    outs = [conv(digits32.x_train[order[k * 16 : (k + 1) * 16]]).numpy() for k in range(3)]
    means = np.mean([o.mean(axis=(0, 1, 2)) for o in outs], axis=0)
    variances = np.mean([o.var(axis=(0, 1, 2)) for o in outs], axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variances, rtol=1e-2)
    assert bn.momentum == 0.99  # put back
    np.testing.assert_array_equal(model.get_layer("conv").get_weights()[0], kernel)


def test_recalibrate_batchnorm_zero_batches_changes_nothing(digits32: Any) -> None:
    from edgekit.train import recalibrate_batchnorm

    model = _conv_bn()
    before = [w.copy() for w in model.get_weights()]
    assert recalibrate_batchnorm(model, digits32, 0) == 0
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_recalibrated_pruned_network_recovers_accuracy(
    digits32: Any, trained_tiny: tuple[Any, Any]
) -> None:
    """Pruning leaves later layers' statistics stale; re-estimating them (no weight changes)
    gives back accuracy the pruned weights have."""
    from edgekit.compress import prune_channels
    from edgekit.search._executor import val_accuracy
    from edgekit.train import recalibrate_batchnorm

    model, _ = trained_tiny
    pruned = prune_channels(model, {"block3_expand": 8, "stem_conv": 8})
    stale = val_accuracy(pruned, digits32)
    recalibrate_batchnorm(pruned, digits32, 10)
    fresh = val_accuracy(pruned, digits32)
    # Measured: 0.94 unpruned, 0.10 pruned (chance), 0.59 re-estimated.
    assert fresh >= stale + 0.25, (stale, fresh)


def test_the_default_model_starts_from_the_same_weights_in_every_process(
    digits32: Any, monkeypatch: Any
) -> None:
    """The default's name says seed 0: its initial weights must not depend on the RNG's state
    (they did, so two machines trained different defaults)."""
    import edgekit.train
    from edgekit.deploy import SilentProgress, build_default_model

    initial: list[list[np.ndarray]] = []
    monkeypatch.setattr(
        edgekit.train, "train_model", lambda model, *a, **k: initial.append(model.get_weights())
    )
    for disturb in (1, 2):
        edgekit.train.set_seed(disturb)  # what ran before in the process
        np.random.default_rng(disturb).random()
        build_default_model(digits32, SilentProgress(), use_cache=False)
    assert len(initial) == 2
    for a, b in zip(initial[0], initial[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_processes_wanting_the_default_train_it_once(
    digits32: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    """The cache entry is made under a lock: a second caller waits for the first one's file
    and loads it instead of training the default again (two test workers did, 4 minutes
    each)."""
    import threading

    import edgekit.train
    from edgekit.deploy import SilentProgress, build_default_model

    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path))
    training, go = threading.Event(), threading.Event()
    trained: list[str] = []

    def fake_train(model: Any, *args: Any, **kwargs: Any) -> None:
        trained.append(model.name)
        training.set()
        assert go.wait(60)

    monkeypatch.setattr(edgekit.train, "train_model", fake_train)

    class Steps(SilentProgress):
        def __init__(self) -> None:
            self.steps: list[str] = []

        def step(self, message: str) -> None:
            self.steps.append(message)

    first, second = Steps(), Steps()
    got: dict[str, Any] = {}

    def call(name: str, progress: Steps) -> None:
        got[name] = build_default_model(digits32, progress)

    one = threading.Thread(target=call, args=("first", first))
    one.start()
    assert training.wait(60)
    two = threading.Thread(target=call, args=("second", second))
    two.start()
    for _ in range(600):
        if any(s.startswith("waiting for another edgekit process") for s in second.steps):
            break
        threading.Event().wait(0.05)
    go.set()
    one.join(60)
    two.join(60)
    assert len(trained) == 1, trained
    assert any(s.startswith("waiting for another edgekit process") for s in second.steps)
    assert any(s.startswith("using the cached default model") for s in second.steps)
    (model_1, path_1), (model_2, path_2) = got["first"], got["second"]
    assert path_1 == path_2 and path_1.is_file()
    for a, b in zip(model_1.get_weights(), model_2.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_training_traces_its_step_once_and_trains_as_keras_alone_would(
    digits32: Any, monkeypatch: Any
) -> None:
    """build_for_fit creates the optimizer's and metrics' variables before fit, so the
    training step is traced once, not twice (a step that creates variables is traced
    again); the trained weights are exactly those of fit left to create them itself."""
    import dataclasses

    from edgekit import train
    from edgekit.models import create

    # Three batches and a small validation split: what is tested is the tracing and the
    # weights, not what the network learns.
    small = dataclasses.replace(
        digits32,
        x_train=digits32.x_train[:96], y_train=digits32.y_train[:96],
        x_val=digits32.x_val[:32], y_val=digits32.y_val[:32],
    )  # fmt: skip

    def trained() -> tuple[Any, list[np.ndarray]]:
        train.set_seed(0)
        model = create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10, width=0.5)
        train.train_model(model, small, train.TrainConfig(epochs=1, seed=3))
        return model, model.get_weights()

    model, built = trained()
    assert model.train_function.experimental_get_tracing_count() == 1
    monkeypatch.setattr(train, "build_for_fit", lambda model, data: None)
    model, alone = trained()
    assert model.train_function.experimental_get_tracing_count() == 2
    assert len(built) == len(alone)
    for a, b in zip(built, alone, strict=True):
        np.testing.assert_array_equal(a, b)
