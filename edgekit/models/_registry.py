"""Model registry: families register builder functions by name; a duplicate is an error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import BadInputError, DuplicateRegistrationError, UnknownNameError

Builder = Callable[..., Any]  # returns a tf_keras.Model


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder and the configuration its paper uses."""

    name: str
    family: str
    builder: Builder
    canonical: dict[str, Any] = field(default_factory=dict)
    tiny: bool = False
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    family: str,
    canonical: dict[str, Any] | None = None,
    tiny: bool = False,
    description: str = "",
) -> Callable[[Builder], Builder]:
    """Register a model builder under ``name``.

    Args:
        name: registry name, e.g. ``"mobilenet_v2"`` or ``"mobilenet_v2_tiny"``.
        family: one of the zoo families (``resnet``, ``densenet``, ...).
        canonical: keyword arguments of the paper's configuration (224x224x3, 1000 classes,
            width 1.0 unless the family says otherwise).
        tiny: True for the small test variants.
        description: one line for ``edgekit models``.

    Raises:
        DuplicateRegistrationError: ``name`` is already registered.
    """

    def decorator(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise DuplicateRegistrationError(
                f"model '{name}' is already registered (by {_REGISTRY[name].builder.__module__}); "
                "choose another name"
            )
        _REGISTRY[name] = ModelSpec(
            name=name,
            family=family,
            builder=fn,
            canonical=dict(canonical or {"input_shape": (224, 224, 3), "classes": 1000}),
            tiny=tiny,
            description=description or _first_line(fn.__doc__),
        )
        return fn

    return decorator


def get_model_spec(name: str) -> ModelSpec:
    """Return the registered spec for ``name``.

    Raises:
        UnknownNameError: no such model; the message lists the registered names.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(n for n, s in _REGISTRY.items() if not s.tiny))
        raise UnknownNameError(f"unknown model '{name}'; known models: {known}") from None


def list_models(include_tiny: bool = False) -> list[ModelSpec]:
    """All registered models, sorted by name."""
    _ensure_loaded()
    return [s for _, s in sorted(_REGISTRY.items()) if include_tiny or not s.tiny]


def create(name: str, **kwargs: Any) -> Any:
    """Build a zoo model.

    Args:
        name: registered model name.
        **kwargs: ``input_shape``, ``classes``, ``width`` and family-specific options.

    Returns:
        An uncompiled ``tf_keras.Model``.

    Raises:
        UnknownNameError: unknown model name.
        BadInputError: an option the builder does not take or a value out of range.
    """
    spec = get_model_spec(name)
    try:
        return spec.builder(**kwargs)
    except TypeError as err:
        raise BadInputError(f"model '{name}' does not take these options: {err}") from err


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _ensure_loaded() -> None:
    # Importing the families registers them; done lazily so `edgekit --help` stays fast.
    from edgekit.models import _families  # noqa: F401
