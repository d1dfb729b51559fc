"""Compression recipes: TOML files of ordered, typed steps.

A recipe file looks like::

    description = "50% element-wise sparsity, pruned gradually while fine-tuning"
    measure = "tflite_fp32"          # the artifact both models are measured as

    [[step]]
    type = "prune"                   # a registered step (edgekit.compress.list_steps())
    method = "tfmot"
    sparsity = 0.5
    schedule = "polynomial"
    epochs = 4

Built-in recipes ship in ``edgekit/compress/recipes``; a user names one of them or gives the
path of a file of their own. The whole recipe is validated before any step runs.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgekit.compress._steps import check_options, get_step
from edgekit.errors import BadInputError, UnknownNameError

MEASURE_FORMATS = ("tflite_fp32", "tflite_int8")
_TOP_KEYS = {
    "description": "a one-line description",
    "measure": "the artifact the reference and the result are measured as: "
    + ", ".join(MEASURE_FORMATS),
    "step": "the ordered [[step]] tables",
}


@dataclass(frozen=True)
class RecipeStep:
    """One validated step: its type and its complete options (defaults filled in)."""

    type: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    """A validated recipe."""

    name: str
    source: str
    description: str
    measure: str
    steps: tuple[RecipeStep, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "description": self.description,
            "measure": self.measure,
            "steps": [{"type": s.type, **s.options} for s in self.steps],
        }


def builtin_recipes() -> dict[str, str]:
    """Built-in recipe name -> its description."""
    out = {}
    folder = resources.files("edgekit.compress") / "recipes"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            out[entry.name[: -len(".toml")]] = str(data.get("description", ""))
    return out


def load_recipe(name_or_path: str | Path) -> Recipe:
    """Load and validate a built-in recipe by name, or a recipe file by path.

    Raises:
        UnknownNameError: neither a built-in recipe nor an existing ``.toml`` file.
        BadInputError: the file is not TOML, or a key, step, option or value is not
            allowed; the message names the key and what is allowed.
    """
    text_name = str(name_or_path)
    path = Path(text_name)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise BadInputError(
                f"recipe file '{path}' does not exist; pass a .toml file or one of the "
                f"built-in recipes: {', '.join(builtin_recipes())}"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise BadInputError(f"recipe file '{path}' cannot be read: {err}") from err
        return parse_recipe(text, name=path.stem, source=str(path))
    known = builtin_recipes()
    if text_name not in known:
        raise UnknownNameError(
            f"unknown recipe '{text_name}'; built-in recipes: {', '.join(known)} "
            "(or pass the path of a .toml recipe file)"
        )
    entry = resources.files("edgekit.compress") / "recipes" / f"{text_name}.toml"
    return parse_recipe(
        entry.read_text(encoding="utf-8"), name=text_name, source=f"built-in:{text_name}"
    )


def parse_recipe(text: str, name: str = "recipe", source: str = "<string>") -> Recipe:
    """Validate recipe TOML ``text``.

    Raises:
        BadInputError: see :func:`load_recipe`.
    """
    where = f"recipe '{source}'"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise BadInputError(f"{where} is not valid TOML: {err}") from err
    for key in data:
        if key not in _TOP_KEYS:
            raise BadInputError(
                f"{where}: unknown key '{key}'; allowed keys: {', '.join(_TOP_KEYS)}"
            )
    description = data.get("description", "")
    if not isinstance(description, str):
        raise BadInputError(f"{where}: description must be a string; got {description!r}")
    measure = data.get("measure", "tflite_fp32")
    if measure not in MEASURE_FORMATS:
        raise BadInputError(
            f"{where}: measure = {measure!r} is not allowed; expected one of "
            f"{', '.join(MEASURE_FORMATS)}"
        )
    raw_steps = data.get("step")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise BadInputError(
            f"{where} has no steps; add at least one [[step]] table with a 'type' key"
        )
    steps = []
    for i, raw in enumerate(raw_steps, start=1):
        at = f"{where} step {i}"
        if not isinstance(raw, dict) or "type" not in raw:
            raise BadInputError(f"{at}: a step needs a 'type' key naming the step")
        options = dict(raw)
        kind = options.pop("type")
        if not isinstance(kind, str):
            raise BadInputError(f"{at}: type must be a string; got {kind!r}")
        step = get_step(kind, where=at)
        steps.append(RecipeStep(type=kind, options=check_options(step, options, at)))
    return Recipe(
        name=name, source=source, description=description, measure=measure, steps=tuple(steps)
    )
