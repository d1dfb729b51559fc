"""Knowledge distillation: the loss is the textbook one, only the student learns, an ensemble
teacher averages its members, and distilling makes a student better than it was, the same
way every time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit._keras import keras
from edgekit.compress._steps import StepContext, check_options, get_step
from edgekit.compress.distill import Distiller, build_student, distill, kd_loss, logits_model
from edgekit.data import Dataset
from edgekit.errors import BadInputError
from edgekit.models import create
from edgekit.models._io import save_keras_model


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _tiny(seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    return create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=10)


@pytest.mark.parametrize(("temperature", "lam"), [(1.0, 0.5), (4.0, 0.5), (4.0, 0.0), (2.5, 3.0)])
def test_kd_loss_matches_a_hand_computation(temperature: float, lam: float) -> None:
    student = np.array([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 3.0, -2.0], [-1.0, 1.0, 1.0, 4.0]])
    teacher = np.array([[3.0, 0.0, 1.0, -1.0], [0.0, 0.0, 5.0, 1.0], [0.5, -0.5, 2.0, 2.5]])
    labels = np.array([0, 2, 1])

    p_t = _softmax(teacher / temperature)
    p_s = _softmax(student / temperature)
    kl = np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1).mean()
    ce = -np.log(_softmax(student)[np.arange(3), labels]).mean()
    expected = kl * temperature**2 + lam * ce

    got = kd_loss(labels, student.astype(np.float32), teacher.astype(np.float32), temperature, lam)
    assert got.shape == ()
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # Labels as a column and the teacher matching the student: only the hard term is left.
    same = kd_loss(labels[:, None], student, student, temperature, lam)
    np.testing.assert_allclose(float(same), lam * ce, rtol=1e-5, atol=1e-6)


def test_logits_view_is_the_input_of_the_softmax() -> None:
    model = _tiny()
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    view = logits_model(model)
    expected = keras.Model(model.input, model.get_layer("logits").output)(x).numpy()
    np.testing.assert_allclose(view(x).numpy(), expected, rtol=1e-6)
    assert {w.ref() for w in view.weights} == {w.ref() for w in model.weights}  # shared

    # A Dense with a softmax activation: log p, the logits up to a per-sample constant.
    inputs = keras.Input((6,))
    dense = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    v = np.random.default_rng(1).random((5, 6), dtype=np.float32)
    np.testing.assert_allclose(
        _softmax(logits_model(dense)(v).numpy()), dense(v).numpy(), rtol=1e-5, atol=1e-7
    )


def test_a_train_step_changes_the_student_only(digits32: Dataset) -> None:
    teacher, student = _tiny(0), build_student("half", _tiny(1), StepContext(data=digits32))
    teacher_before = [w.copy() for w in teacher.get_weights()]  # BN statistics included
    student_before = [w.copy() for w in student.get_weights()]
    distiller = Distiller(student, teacher, temperature=4.0, lam=0.5)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = digits32.x_train[:32], digits32.y_train[:32]
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)

    for a, b in zip(teacher.get_weights(), teacher_before, strict=True):
        np.testing.assert_array_equal(a, b)
    after = student.get_weights()
    changed = [not np.array_equal(a, b) for a, b in zip(after, student_before, strict=True)]
    assert sum(changed) > len(changed) // 2, changed
    teacher_vars = {v.ref() for v in teacher.weights}
    assert not any(v.ref() in teacher_vars for v in distiller.trainable_variables)
    assert not any(v.ref() in teacher_vars for v in distiller.variables)
    assert all(layer.trainable for layer in teacher.layers)  # the caller's model untouched


def test_an_ensemble_teacher_averages_its_members_logits(digits32: Dataset) -> None:
    members = [_tiny(0), _tiny(1), _tiny(2)]
    student = build_student("half", members[0], StepContext(data=digits32))
    x = digits32.x_test[:8]
    each = [logits_model(m)(x, training=False).numpy() for m in members]
    ensemble = Distiller(student, members, temperature=2.0, lam=0.0)
    np.testing.assert_allclose(ensemble.teacher_logits(x).numpy(), np.mean(each, axis=0), atol=1e-5)
    single = Distiller(student, members[1], temperature=2.0, lam=0.0)
    np.testing.assert_allclose(single.teacher_logits(x).numpy(), each[1], atol=1e-6)


def _weights(model: Any) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def test_distill_improves_the_student_and_is_deterministic(
    trained_tiny: tuple[Any, Path], digits32: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """... and traces its training step once (the optimizer's slots exist before fit)."""
    import importlib

    distiller_class = importlib.import_module("edgekit.compress.distill")._distiller_class()
    traces = []
    fit = distiller_class.fit

    def counting_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        history = fit(self, *args, **kwargs)
        traces.append(self.train_function.experimental_get_tracing_count())
        return history

    monkeypatch.setattr(distiller_class, "fit", counting_fit)
    teacher, _ = trained_tiny
    ctx = StepContext(data=digits32, seed=3)
    untrained = ctx.accuracy(build_student("half", teacher, ctx))
    runs = []
    for _ in range(2):
        student = build_student("half", teacher, ctx)
        assert distill(student, teacher, ctx, epochs=2) is student
        runs.append((ctx.accuracy(student), _weights(student)))
    (acc, weights), (acc2, weights2) = runs
    assert traces == [1, 1]
    assert acc >= untrained + 0.15, (untrained, acc)
    assert acc == acc2
    for a, b in zip(weights, weights2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_distill_step_builds_and_trains_a_student(
    trained_tiny: tuple[Any, Path], digits32: Dataset
) -> None:
    teacher, path = trained_tiny
    step = get_step("distill")
    assert set(step.options) == {
        "teacher",
        "student",
        "epochs",
        "temperature",
        "lam",
        "learning_rate",
    }
    with pytest.raises(BadInputError, match="temperature"):
        check_options(step, {"temperature": 0.0}, "test")
    with pytest.raises(BadInputError, match="lam"):
        check_options(step, {"lam": -1.0}, "test")

    state: dict[str, Any] = {"pruned": True, "sparsity": 0.5}
    ctx = StepContext(data=digits32, state=state)
    options = check_options(step, {"epochs": 0}, "test")
    half = step.fn(teacher, ctx, **options)
    assert half.count_params() < 0.5 * teacher.count_params()
    assert [layer.name for layer in half.layers] == [layer.name for layer in teacher.layers]
    assert "pruned" not in ctx.state and "sparsity" not in ctx.state  # a new network
    assert ctx.state["distilled"] == {"teachers": 1, "student": "half"}
    # Re-initialised, not the teacher's weights cut down.
    assert ctx.accuracy(half) < 0.5

    # A teacher file and the input together (an ensemble), and a zoo student.
    options = check_options(
        step,
        {"teacher": f"input,{path}", "student": "mobilenet_v2_tiny?width=0.5", "epochs": 1},
        "test",
    )
    zoo = step.fn(teacher, ctx, **options)
    assert zoo.name == "mobilenet_v2_tiny"
    assert zoo.output_shape == (None, 10) and zoo.count_params() < teacher.count_params()
    assert ctx.state["distilled"]["teachers"] == 2


def test_distill_step_rejects_bad_students_and_teachers(
    trained_tiny: tuple[Any, Path], digits32: Dataset, tmp_path: Path
) -> None:
    teacher, _ = trained_tiny
    ctx = StepContext(data=digits32)
    step = get_step("distill")
    with pytest.raises(BadInputError, match="unknown option 'depth'; known: width"):
        build_student("mobilenet_v2?depth=2", teacher, ctx)
    with pytest.raises(BadInputError, match="width = 'wide' is not a number"):
        build_student("mobilenet_v2?width=wide", teacher, ctx)
    with pytest.raises(BadInputError, match="unknown model 'mobilenet_v9'"):
        build_student("mobilenet_v9", teacher, ctx)
    with pytest.raises(BadInputError, match="empty entry"):
        step.fn(teacher, ctx, **check_options(step, {"teacher": "input,"}, "test"))
    with pytest.raises(BadInputError, match="does not exist"):
        step.fn(teacher, ctx, **check_options(step, {"teacher": str(tmp_path / "no.keras")}, "t"))
    other = save_keras_model(
        create("mobilenet_v2_tiny", input_shape=(32, 32, 3), classes=5), tmp_path / "five.keras"
    )
    with pytest.raises(BadInputError, match=r"predict 5 classes; data 'digits' has .* 10 classes"):
        step.fn(teacher, ctx, **check_options(step, {"teacher": str(other)}, "test"))
    with pytest.raises(BadInputError, match="temperature must be a number > 0"):
        distill(teacher, teacher, ctx, epochs=1, temperature=0.0)
