"""Knowledge distillation: a small student learns from a frozen teacher (or an ensemble).

The loss (Hinton et al. 2015) is ``L = T² · KL(p_teacher^T ‖ p_student^T) + λ · CE(y, p_student)``
where ``p^T = softmax(logits / T)``. The KL divergence is used rather than the cross-entropy
between the soft targets: they differ by the teacher's entropy, a constant for the student
(same gradients), and the KL is 0 when the student matches the teacher, so the logged value
reads as a distance. ``T²`` keeps the soft term's gradients at the scale of the hard term's
as T grows. The hard term is the ordinary cross-entropy of the student (T = 1).

Zoo models end in a Dense ``logits`` and an ``Activation('softmax')``: the logits are that
softmax's input (:func:`logits_model`). A model ending in a Dense with a softmax activation,
or anything else, gives ``log p`` (p clipped at 1e-7), its logits up to a per-sample constant that
every softmax (at any T) cancels.

An ensemble teacher's logits are the mean of its members' logits, that is the normalised
geometric mean of their distributions; it is the same whether a member exposes its logits or
``log p`` (the per-sample constants average into one constant).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from edgekit.compress._steps import Option, StepContext, register_step
from edgekit.errors import BadInputError

log = logging.getLogger(__name__)

# Log-probabilities are clipped here: a probability of exactly 0 has no logarithm.
_MIN_PROB = 1e-7
STUDENT_OPTIONS = ("width",)
# What earlier steps recorded about the weights (later steps act on them); a student has new
# weights.
_WEIGHT_FACTS = ("pruned", "sparsity", "clustered", "clusters")


def kd_loss(
    y_true: Any, student_logits: Any, teacher_logits: Any, temperature: float, lam: float
) -> Any:
    """The distillation loss of a batch, a scalar tensor.

    ``mean(KL(softmax(t/T) ‖ softmax(s/T))) · T² + lam · mean(CE(y, softmax(s)))``; no
    gradient flows into ``teacher_logits``.

    Args:
        y_true: integer class labels, shape (batch,) or (batch, 1).
        student_logits: (batch, classes).
        teacher_logits: (batch, classes).
        temperature: T > 0; 1 is the plain softmax, larger values soften both distributions.
        lam: weight λ >= 0 of the hard-label cross-entropy.

    Returns:
        A float32 scalar.
    """
    soft, hard = _kd_terms(y_true, student_logits, teacher_logits, temperature)
    return soft * (temperature * temperature) + lam * hard


def logits_model(model: Any) -> Any:
    """A model that shares ``model``'s layers and outputs its logits instead of probabilities.

    Args:
        model: a Keras classifier with one output.

    Returns:
        A functional model over the input of ``model``: the input of its final softmax
        (``Activation('softmax')`` or ``Softmax`` layer), else ``log(p)`` of its output.
    """
    from edgekit._keras import keras

    last = model.layers[-1]
    softmax = isinstance(last, keras.layers.Softmax) or (
        type(last) is keras.layers.Activation
        and getattr(last.activation, "__name__", "") == "softmax"
    )
    if softmax and len(last.inbound_nodes) == 1:
        return keras.Model(model.inputs, last.input, name=f"{model.name}_logits")
    return keras.Model(model.inputs, _log_probs()(model.outputs[0]), name=f"{model.name}_logits")


def distill(
    student: Any,
    teacher: Any,
    ctx: StepContext,
    epochs: int = 10,
    temperature: float = 4.0,
    lam: float = 0.5,
    learning_rate: float = 3e-3,
) -> Any:
    """Train ``student`` on the training split to match ``teacher`` and the labels.

    The training loop is :func:`edgekit.train.train_model`'s: Adam with a cosine decay over
    all steps, the same seeded shuffle and random-shift augmentation (teacher and student
    see the same augmented batch), validation on the val split after each epoch.

    Args:
        student: the Keras model to train (trained in place); its output is a softmax over
            ``ctx.data.num_classes``.
        teacher: a Keras model, or a sequence of them (an ensemble: mean logits). Teachers
            run in inference mode and are never updated.
        ctx: data, seed, batch size, progress.
        epochs: passes over the training split; 0 returns the student untouched.
        temperature: T of :func:`kd_loss`.
        lam: λ of :func:`kd_loss`.
        learning_rate: peak learning rate of the cosine schedule.

    Returns:
        ``student``, trained.

    Raises:
        BadInputError: a teacher's classes or input shape differ from the student's or the
            data's, or a hyper-parameter is out of range.
    """
    from edgekit._keras import keras
    from edgekit.train import set_seed, training_dataset

    teachers = list(teacher) if isinstance(teacher, Sequence) else [teacher]
    _check_models(student, teachers)
    _check_data(student, ctx.data)
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise BadInputError(f"temperature must be a number > 0; got {temperature!r}")
    if not (isinstance(lam, int | float) and lam >= 0):
        raise BadInputError(f"lam must be a number >= 0; got {lam!r}")
    if epochs <= 0:
        return student
    data = ctx.data
    set_seed(ctx.seed)
    n = len(data.x_train)
    steps = math.ceil(n / ctx.batch_size) * epochs
    ds = training_dataset(data, ctx.batch_size, ctx.seed, augment=True)
    distiller = _distiller_class()(student, teachers, temperature=temperature, lam=lam)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(steps, 1))
    distiller.compile(optimizer=keras.optimizers.Adam(schedule))
    # The optimizer's slots made now, not in the first step: a step that creates variables
    # is traced twice (see edgekit.train.build_for_fit; the trackers exist already).
    distiller.optimizer.build(student.trainable_variables)
    callbacks = ctx.training_callbacks(epochs) if ctx.training_callbacks else []
    val = (data.x_val, data.y_val) if len(data.x_val) else None
    distiller.fit(ds, epochs=epochs, validation_data=val, verbose=0, callbacks=callbacks)
    return student


@register_step(
    "distill",
    options={
        "teacher": Option(
            str,
            "input",
            "'input' (the model entering the step) or .keras paths, comma-separated (ensemble)",
        ),
        "student": Option(
            str,
            "half",
            "'half' (the teacher with half the channels) or a zoo model, e.g. "
            "'mobilenet_v2?width=0.25'",
        ),
        "epochs": Option(int, 10, "training epochs of the student", min=0, max=1000),
        "temperature": Option(float, 4.0, "softmax temperature T (> 0)", min=0.01, max=100.0),
        "lam": Option(float, 0.5, "weight of the hard-label cross-entropy", min=0.0, max=100.0),
        "learning_rate": Option(float, 3e-3, "peak learning rate", min=1e-7, max=1.0),
    },
    help="train a smaller student to mimic a teacher (or an ensemble of teachers)",
)
def distill_step(
    model: Any,
    ctx: StepContext,
    *,
    teacher: str,
    student: str,
    epochs: int,
    temperature: float,
    lam: float,
    learning_rate: float,
) -> Any:
    """Distil the teacher(s) into a new student; the student leaves the step."""
    teachers = load_teachers(teacher, model, ctx)
    pupil = build_student(student, teachers[0], ctx)
    _check_models(pupil, teachers)
    ctx.say(
        f"distill: {len(teachers)} teacher(s) -> student '{student}' "
        f"({pupil.count_params():,} parameters), T={temperature:g}, lam={lam:g}"
    )
    distill(pupil, teachers, ctx, epochs, temperature, lam, learning_rate)
    # The student is a new network: what earlier steps did to the weights is gone.
    dropped = [k for k in _WEIGHT_FACTS if ctx.state.pop(k, None) is not None]
    if dropped:
        ctx.note(f"distill: the student is a new network; {', '.join(dropped)} no longer hold")
    ctx.state["distilled"] = {"teachers": len(teachers), "student": student}
    return pupil


def load_teachers(spec: str, model: Any, ctx: StepContext) -> list[Any]:
    """The teachers a ``teacher`` option names.

    Args:
        spec: ``"input"`` or comma-separated entries, each ``input`` (``model``) or a path
            loaded with :func:`edgekit.models._io.load_keras_model` (``ctx.trust_model``).
        model: the model entering the step.
        ctx: the step context.

    Raises:
        BadInputError: an empty entry; ModelLoadError for a file that does not load.
    """
    from edgekit.models._io import load_keras_model

    entries = [e.strip() for e in spec.split(",")]
    if not spec.strip() or any(not e for e in entries):
        raise BadInputError(
            f"distill.teacher = {spec!r} has an empty entry; give 'input' or .keras paths "
            "separated by commas"
        )
    return [
        model if e == "input" else load_keras_model(Path(e).expanduser(), ctx.trust_model)
        for e in entries
    ]


def build_student(spec: str, teacher: Any, ctx: StepContext) -> Any:
    """A freshly initialised student.

    Args:
        spec: ``"half"``: ``teacher``'s architecture with half the channels of every prunable
            group (:func:`edgekit.compress.channels.prune_channels`), re-initialised; or a zoo
            name with options, ``"mobilenet_v2?width=0.25"``, built at the data's input shape
            and class count.
        teacher: the (first) teacher.
        ctx: data (input shape, classes) and seed (initial weights).

    Raises:
        BadInputError: an unknown model or option, or a value that is not a number.
    """
    from edgekit._keras import keras
    from edgekit.compress.channels import prune_channels, uniform_channel_plan
    from edgekit.models import create
    from edgekit.train import set_seed

    set_seed(ctx.seed)
    if spec == "half":
        # clone_model builds new layers from their configs: fresh initial weights.
        half = prune_channels(teacher, uniform_channel_plan(teacher, 0.5))
        student = keras.models.clone_model(half)
        student.trainable = True  # layers frozen in the teacher are not frozen in the student
        return student
    name, _, query = spec.partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        pairs = [("", query)]
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key not in STUDENT_OPTIONS:
            raise BadInputError(
                f"distill.student = {spec!r}: unknown option {key!r}; known: "
                f"{', '.join(STUDENT_OPTIONS)} (or 'half')"
            )
        try:
            options[key] = float(value)
        except ValueError:
            raise BadInputError(
                f"distill.student = {spec!r}: {key} = {value!r} is not a number"
            ) from None
    return create(name, input_shape=ctx.data.input_shape, classes=ctx.data.num_classes, **options)


def __getattr__(name: str) -> Any:
    # Distiller subclasses keras.Model; it is defined on first use so that listing the
    # recipe steps does not import TensorFlow.
    if name == "Distiller":
        return _distiller_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- internals ----------------------------------------------------------------------------


def _kd_terms(y_true: Any, student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    from edgekit._keras import tf

    t = float(temperature)
    teacher_logits = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
    student_logits = tf.cast(student_logits, tf.float32)
    log_p_teacher = tf.nn.log_softmax(teacher_logits / t)
    log_p_student = tf.nn.log_softmax(student_logits / t)
    kl = tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=student_logits)
    return tf.reduce_mean(kl), tf.reduce_mean(ce)


def _check_models(student: Any, teachers: list[Any]) -> None:
    if not teachers:
        raise BadInputError("distillation needs at least one teacher")
    classes = int(student.outputs[0].shape[-1])
    shape = tuple(student.inputs[0].shape[1:])
    for i, t in enumerate(teachers):
        t_classes, t_shape = int(t.outputs[0].shape[-1]), tuple(t.inputs[0].shape[1:])
        if t_classes != classes or t_shape != shape:
            raise BadInputError(
                f"teacher {i + 1} ('{t.name}') takes {t_shape} and predicts {t_classes} classes; "
                f"the student takes {shape} and predicts {classes}: they must match"
            )


def _check_data(model: Any, data: Any) -> None:
    classes, shape = int(model.outputs[0].shape[-1]), tuple(model.inputs[0].shape[1:])
    if classes != data.num_classes or shape != tuple(data.input_shape):
        raise BadInputError(
            f"the models take {shape} and predict {classes} classes; data '{data.name}' has "
            f"{tuple(data.input_shape)} images of {data.num_classes} classes: pass the data set "
            "the teacher was trained on"
        )


_CACHE: dict[str, Any] = {}


def _log_probs() -> Any:
    if "log_probs" not in _CACHE:
        from edgekit._keras import keras, tf

        class LogProbs(keras.layers.Layer):
            """log(p), clipped: logits up to a per-sample constant."""

            def call(self, inputs: Any) -> Any:
                return tf.math.log(tf.clip_by_value(inputs, _MIN_PROB, 1.0))

        _CACHE["log_probs"] = LogProbs
    return _CACHE["log_probs"]()


def _distiller_class() -> type:
    if "distiller" in _CACHE:
        return _CACHE["distiller"]
    from edgekit._keras import keras, tf

    class Distiller(keras.Model):
        """Trains ``student`` with :func:`kd_loss` against frozen ``teachers``.

        ``fit`` runs :meth:`train_step`: the teachers' mean logits (inference mode), the
        student's logits (training mode), one optimizer step on the student's trainable
        weights only. ``evaluate`` / validation report the student's cross-entropy and
        accuracy. Calling the distiller calls the student.

        Args:
            student: a Keras classifier (softmax output); trained in place.
            teachers: one or more Keras classifiers with the same input and classes.
            temperature: T > 0.
            lam: λ >= 0.
        """

        def __init__(
            self, student: Any, teachers: Sequence[Any], temperature: float, lam: float
        ) -> None:
            super().__init__()
            teachers = list(teachers) if isinstance(teachers, Sequence) else [teachers]
            _check_models(student, teachers)
            self.student = student
            self.student_logits = logits_model(student)
            # The teachers are neither tracked (their weights are not the distiller's) nor
            # set non-trainable (that would change the caller's models): they run in
            # inference mode and the optimizer only sees the student's weights.
            views = [logits_model(t) for t in teachers]
            self._teacher_views = lambda: views
            self.temperature = float(temperature)
            self.lam = float(lam)
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.soft_tracker = keras.metrics.Mean(name="kd")
            self.hard_tracker = keras.metrics.Mean(name="ce")
            self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

        @property
        def metrics(self) -> list[Any]:
            return [self.loss_tracker, self.soft_tracker, self.hard_tracker, self.accuracy]

        def call(self, inputs: Any, training: bool = False) -> Any:
            return self.student(inputs, training=training)

        def teacher_logits(self, x: Any) -> Any:
            """Mean logits of the teachers (inference mode)."""
            outs = [view(x, training=False) for view in self._teacher_views()]
            return outs[0] if len(outs) == 1 else tf.add_n(outs) / float(len(outs))

        def train_step(self, data: Any) -> dict[str, Any]:
            x, y = data
            teacher = self.teacher_logits(x)
            with tf.GradientTape() as tape:
                student = self.student_logits(x, training=True)
                soft, hard = _kd_terms(y, student, teacher, self.temperature)
                loss = soft * (self.temperature**2) + self.lam * hard
            variables = self.student.trainable_variables
            grads = tape.gradient(loss, variables)
            self.optimizer.apply_gradients(zip(grads, variables, strict=True))
            self.loss_tracker.update_state(loss)
            self.soft_tracker.update_state(soft)
            self.hard_tracker.update_state(hard)
            self.accuracy.update_state(y, student)
            return {m.name: m.result() for m in self.metrics}

        def test_step(self, data: Any) -> dict[str, Any]:
            x, y = data
            student = self.student_logits(x, training=False)
            labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
            hard = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=student)
            )
            self.hard_tracker.update_state(hard)
            self.loss_tracker.update_state(hard)
            self.accuracy.update_state(y, student)
            return {m.name: m.result() for m in (self.loss_tracker, self.accuracy)}

    _CACHE["distiller"] = Distiller
    return Distiller
