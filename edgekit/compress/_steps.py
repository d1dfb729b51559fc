"""Recipe steps: the registry every compression method plugs into.

A recipe is an ordered list of steps; each step names a registered step type and gives typed
options. A step type is a function ``fn(model, ctx, **options) -> model`` registered with
:func:`register_step` together with the declaration of its options, so a recipe file is
validated (unknown step, unknown option, wrong type, out of range) before any work starts.

Steps return an ordinary Keras model (TF-MOT wrappers stripped) unless they are the
quantization-aware step, whose fake-quant model is what the int8 converter consumes. What a
later step must know about an earlier one (the weights are sparse and should stay so, the
weights are clustered) travels in ``ctx.state``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.data import Dataset
from edgekit.errors import BadInputError, DuplicateRegistrationError, UnknownNameError

log = logging.getLogger(__name__)

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


@dataclass(frozen=True)
class Option:
    """One typed option of a step.

    Attributes:
        type: ``bool``, ``int``, ``float``, ``str`` or ``list`` (of ``item``).
        default: the value when the recipe omits the option; ``None`` means required unless
            ``optional`` is set.
        help: one line for ``edgekit compress --list`` and error messages.
        min, max: inclusive bounds for numbers (and for the items of a number list).
        choices: the allowed values of a string option.
        item: the item type of a ``list`` option.
        optional: the option may be absent with no default (the step decides).
    """

    type: type
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    item: type | None = None
    optional: bool = False

    def allowed(self) -> str:
        """The allowed values, in words (for error messages)."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.type is list:
            kind = (
                "a non-empty list of "
                + {int: "integers", float: "numbers", str: "strings"}[self.item or float]
            )
        else:
            kind = _TYPE_NAMES[self.type]
        if self.min is not None and self.max is not None:
            return f"{kind} in [{self.min:g}, {self.max:g}]"
        if self.min is not None:
            return f"{kind} >= {self.min:g}"
        if self.max is not None:
            return f"{kind} <= {self.max:g}"
        return kind


@dataclass(frozen=True)
class StepType:
    """A registered step: its function, declared options and a one-line description."""

    name: str
    fn: Callable[..., Any]
    options: dict[str, Option]
    help: str
    check: Callable[[dict[str, Any]], None] | None = None


@dataclass
class StepContext:
    """What every step can use besides the model.

    Attributes:
        data: the split data set (train for fine-tuning, val for choices, test for reports).
        seed: fixes every random choice of the step.
        batch_size: fine-tuning batch size.
        trust_model: a step that loads another model (a distillation teacher) may load
            code-carrying formats only when this is set.
        state: facts later steps need ("sparsity" when weights were pruned, "clusters" when
            they were clustered); steps read and add keys.
        notes: what the user should be told (a layer left in float, a layer skipped).
        progress: receives short status lines (the CLI shows them on stderr).
        training_callbacks: makes Keras callbacks (a progress bar) for an ``epochs`` fit.
    """

    data: Dataset
    seed: int = 0
    batch_size: int = 32
    trust_model: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    progress: Callable[[str], None] | None = None
    training_callbacks: Callable[[int], list[Any]] | None = None

    def say(self, message: str) -> None:
        """Report progress (no-op without a listener)."""
        log.info(message)
        if self.progress is not None:
            self.progress(message)

    def note(self, message: str) -> None:
        """Record something the user should read in the result."""
        self.notes.append(message)
        self.say(message)

    def fine_tune(
        self,
        model: Any,
        epochs: int,
        learning_rate: float = 1e-3,
        callbacks: list[Any] | tuple[Any, ...] = (),
        augment: bool = True,
    ) -> dict[str, list[float]]:
        """Train ``model`` for ``epochs`` on the training split (the shared training loop)."""
        from edgekit.train import TrainConfig, train_model

        if epochs <= 0:
            return {}
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=self.batch_size,
            learning_rate=learning_rate,
            seed=self.seed,
            augment=augment,
        )
        extra = self.training_callbacks(epochs) if self.training_callbacks else []
        return train_model(model, self.data, cfg, callbacks=[*callbacks, *extra])

    def accuracy(self, model: Any, split: str = "val") -> float:
        """Top-1 accuracy of a Keras model on ``split`` ("val" or "test")."""
        import numpy as np

        from edgekit.train import evaluate_probs

        x = getattr(self.data, f"x_{split}")
        y = getattr(self.data, f"y_{split}")
        if len(x) == 0:
            return float("nan")
        return float(np.mean(np.argmax(evaluate_probs(model, x), axis=1) == y))


_STEPS: dict[str, StepType] = {}


def register_step(
    name: str,
    options: dict[str, Option],
    help: str = "",
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn(model, ctx, **options) -> model`` as recipe step ``name``.

    ``check(options)``, when given, validates combinations of options (raising
    BadInputError) when the recipe is loaded, before any step runs.

    Raises:
        DuplicateRegistrationError: ``name`` is already registered.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _STEPS:
            raise DuplicateRegistrationError(f"recipe step '{name}' is already registered")
        doc = help or next(iter((fn.__doc__ or "").strip().splitlines()), "")
        _STEPS[name] = StepType(name=name, fn=fn, options=dict(options), help=doc, check=check)
        return fn

    return decorate


def _load_builtin_steps() -> None:
    # Each method's module registers its steps on import.
    import importlib

    for module in (
        "edgekit.compress.pruning",
        "edgekit.compress.channels_step",
        "edgekit.compress.qat",
        "edgekit.compress.binary",
        "edgekit.compress.sharing",
        "edgekit.compress.distill",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency, not a method not written yet
                raise


def list_steps() -> dict[str, StepType]:
    """Every registered step type, by name."""
    _load_builtin_steps()
    return dict(sorted(_STEPS.items()))


def get_step(name: str, where: str = "recipe") -> StepType:
    """The step type ``name``.

    Raises:
        UnknownNameError: no such step; the message lists the known ones.
    """
    steps = list_steps()
    if name not in steps:
        raise UnknownNameError(f"{where}: unknown step '{name}'; known steps: {', '.join(steps)}")
    return steps[name]


def check_options(step: StepType, given: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate ``given`` against the step's declared options and fill in defaults.

    Raises:
        BadInputError: an unknown option, a wrong type, a value out of range or not among
            the choices, or a missing required option; the message names the key and what
            is allowed.
    """
    out: dict[str, Any] = {}
    for key in given:
        if key not in step.options:
            known = ", ".join(step.options) or "none"
            raise BadInputError(
                f"{where}: step '{step.name}' has no option '{key}'; its options: {known}"
            )
    for key, opt in step.options.items():
        if key not in given:
            if opt.default is None and not opt.optional:
                raise BadInputError(
                    f"{where}: step '{step.name}' needs option '{key}' ({opt.allowed()})"
                )
            out[key] = opt.default
            continue
        out[key] = _check_value(given[key], opt, f"{where}: {step.name}.{key}")
    if step.check is not None:
        try:
            step.check(dict(out))
        except BadInputError as err:
            raise BadInputError(f"{where}: {err}") from err
    return out


def _check_value(value: Any, opt: Option, where: str) -> Any:
    def bad(what: Any) -> BadInputError:
        return BadInputError(f"{where} = {what!r} is not allowed; expected {opt.allowed()}")

    if opt.type is list:
        if not isinstance(value, list) or not value:
            raise bad(value)
        item_opt = Option(type=opt.item or float, min=opt.min, max=opt.max, choices=opt.choices)
        return [_check_scalar(v, item_opt, bad) for v in value]
    return _check_scalar(value, opt, bad)


def _check_scalar(value: Any, opt: Option, bad: Callable[[Any], BadInputError]) -> Any:
    t = opt.type
    if t is bool:
        if not isinstance(value, bool):
            raise bad(value)
        return value
    if t is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(value)
    elif t is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad(value)
        value = float(value)
    elif t is str:
        if not isinstance(value, str):
            raise bad(value)
        if opt.choices and value not in opt.choices:
            raise bad(value)
        return value
    if opt.min is not None and value < opt.min:
        raise bad(value)
    if opt.max is not None and value > opt.max:
        raise bad(value)
    return value
