"""Training with a fixed seed, light augmentation, and batch-norm friendly defaults."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.data import Dataset

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Hyper-parameters of ``train_model``."""

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0
    augment: bool = True
    label_smoothing: float = 0.0


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow; make TensorFlow's ops deterministic."""
    from edgekit._keras import keras, tf

    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except Exception:  # already enabled, or not supported by this build
        log.debug("op determinism not enabled", exc_info=True)


def _augment_fn(seed: int) -> Any:
    from edgekit._keras import tf

    def augment(x: Any, y: Any) -> tuple[Any, Any]:
        # Small random translations (up to 1/16 of the side), the augmentation that helps
        # centred small images such as digits without changing their class.
        h, w = x.shape[1], x.shape[2]
        pad_h, pad_w = max(1, h // 16), max(1, w // 16)
        padded = tf.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
        return tf.image.random_crop(padded, tf.shape(x), seed=seed), y

    return augment


def compile_model(
    model: Any, learning_rate: float, steps: int, label_smoothing: float = 0.0
) -> None:
    """Compile for sparse-label classification with Adam and a cosine learning-rate decay."""
    from edgekit._keras import keras

    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps, 1))
    loss: Any
    if label_smoothing:
        loss = _SmoothedSparseCE(label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=loss,
        metrics=["accuracy"],
    )


class _SmoothedSparseCE:
    def __init__(self, smoothing: float) -> None:
        self.smoothing = smoothing

    def __call__(self, y_true: Any, y_pred: Any) -> Any:
        from edgekit._keras import keras, tf

        k = tf.shape(y_pred)[-1]
        onehot = tf.one_hot(tf.cast(tf.reshape(y_true, [-1]), tf.int32), k)
        return keras.losses.categorical_crossentropy(onehot, y_pred, label_smoothing=self.smoothing)


def training_dataset(data: Dataset, batch_size: int, seed: int, augment: bool = True) -> Any:
    """The training split as a seeded, reshuffled, optionally augmented ``tf.data`` pipeline.

    Every training loop (plain training, distillation) reads its batches from here, so that
    the same seed gives the same batches whatever the loop.
    """
    from edgekit._keras import tf

    n = len(data.x_train)
    ds = tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    if augment:
        ds = ds.map(_augment_fn(seed), num_parallel_calls=1, deterministic=True)
    return ds.prefetch(2)


def build_for_fit(model: Any, data: Dataset) -> None:
    """Create, before ``fit``, the variables Keras would create inside its first training
    step: the optimizer's slots and the compiled loss's and metrics' state.

    A ``tf.function`` that creates variables on its first call is traced twice (once to
    create them, once more to run without creating any), and tracing the training step of
    a MobileNet takes seconds: 2.5 s for MobileNet v2 tiny at 32 px on a 2-core EPYC, paid
    by every training. Created here, the step is traced once. Nothing is trained: the
    slots start at the values Keras gives them anyway, and one training image is evaluated
    in inference mode (no BatchNorm statistic moves); the trained weights are the same.
    """
    model.optimizer.build(model.trainable_variables)
    model.evaluate(data.x_train[:1], data.y_train[:1], verbose=0)


def train_model(
    model: Any,
    data: Dataset,
    config: TrainConfig | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, list[float]]:
    """Train ``model`` on ``data.x_train``, validating on ``data.x_val``.

    Args:
        model: a tf_keras model whose output is a softmax over ``data.num_classes``.
        data: the split data set.
        config: hyper-parameters; defaults to ``TrainConfig()``.
        callbacks: Keras callbacks (the CLI passes a progress bar).

    Returns:
        The Keras history dict (loss, accuracy, val_loss, val_accuracy per epoch).
    """

    cfg = config or TrainConfig()
    set_seed(cfg.seed)
    steps_per_epoch = int(np.ceil(len(data.x_train) / cfg.batch_size))
    ds = training_dataset(data, cfg.batch_size, cfg.seed, cfg.augment)
    val = (data.x_val, data.y_val) if len(data.x_val) else None
    compile_model(model, cfg.learning_rate, steps_per_epoch * cfg.epochs, cfg.label_smoothing)
    build_for_fit(model, data)
    history = model.fit(
        ds,
        epochs=cfg.epochs,
        validation_data=val,
        verbose=0,
        callbacks=list(callbacks),
    )
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def evaluate_probs(model: Any, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """Class probabilities of a Keras model on ``x`` (inference mode)."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float32)


def recalibrate_batchnorm(
    model: Any, data: Dataset, batches: int, *, batch_size: int = 32, seed: int = 0
) -> int:
    """Re-estimate every BatchNormalization layer's moving mean and variance on training images.

    Removing channels changes what every later BatchNormalization layer sees, while its moving
    statistics still describe the unpruned network; in inference mode the pruned network is
    then far worse than its weights are (on MobileNet v1 at 176x176, pruning block4_pw from
    256 to 88 channels left 11% validation accuracy, 98% after this). Re-estimating the
    statistics ("adaptive BatchNorm", Li et al., EagleEye, ECCV 2020) changes no weight; it
    lets a few batches of fine-tuning, and the accuracy that ranks proposals, start from what
    the pruned weights can do.

    The statistics become the plain mean of ``batches`` batch statistics (not a decaying
    average), from images drawn without replacement with ``seed`` and without augmentation.

    Args:
        model: a Keras model; changed in place.
        data: its training split is used.
        batches: batches to average over (at most as many as the training split holds); 0
            leaves the model as it is.
        batch_size: images per batch.
        seed: fixes which images.

    Returns:
        The number of BatchNormalization layers re-estimated.
    """
    from edgekit._keras import keras

    layers = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    if batches <= 0 or not layers:
        return 0
    order = np.random.default_rng(seed).permutation(len(data.x_train))
    n = max(1, min(batches, len(order) // batch_size))
    momenta = [layer.momentum for layer in layers]
    try:
        for k in range(n):
            # moving <- moving * k/(k+1) + batch / (k+1): after n batches, their plain mean.
            for layer in layers:
                layer.momentum = k / (k + 1.0)
            model(data.x_train[order[k * batch_size : (k + 1) * batch_size]], training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)
