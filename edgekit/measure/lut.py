"""Latency look-up tables: measure one-op micro-models, predict a model by summing them.

A table (a *profile*, stored as JSON in ``profiles/``) holds, for one device, runtime,
thread count and precision, the latency of every layer configuration of a grid (see
:mod:`edgekit.measure._lut_grid`). Each entry is the p50 of a one-op micro-model *minus*
the latency of an empty model (the per-invoke overhead, paid once per inference however
many ops a model has); a prediction adds the overhead back once, and scales the sum by the
ratio measured on whole reference models (what isolated ops miss: weights that are no
longer in cache, buffers that are not the ones just written):

    latency(model) = overhead_ms + scale * sum over the model's ops of entry(op)

All timing is done warm and in alternating rounds (:func:`measure_alternating`).

Configurations missing from the table are interpolated linearly in work (MACs, or elements
for element-wise ops) between the nearest measured neighbours that differ only in channel
counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgekit._io import write_json_atomic
from edgekit.errors import BadInputError
from edgekit.measure._lut_build import (
    BUSY_WARNING,
    SCHEMA,
    best_int8_isa,
    build_lut,
    convert_micro_model,
    cpu_counters,
    device_fingerprint,
    int8_kind,
    kernel_flags_difference,
    measure_alternating,
    measure_key,
    other_load,
)
from edgekit.measure._lut_grid import (
    PRECISIONS,
    LayerKey,
    ModelOp,
    layer_key,
    model_ops,
    rechannel_ops,
    zoo_grid,
)
from edgekit.measure._lut_table import LayerEstimate, LutTable, sum_ops

__all__ = [
    "BUSY_WARNING",
    "SCHEMA",
    "LayerEstimate",
    "LayerKey",
    "LutPrediction",
    "MissingLayerError",
    "ModelOp",
    "ProfileError",
    "best_int8_isa",
    "build_lut",
    "context_scale",
    "convert_micro_model",
    "cpu_counters",
    "device_fingerprint",
    "int8_kind",
    "kernel_flags_difference",
    "layer_key",
    "list_profiles",
    "load_profile",
    "measure_alternating",
    "measure_key",
    "model_ops",
    "other_load",
    "predict_latency",
    "rechannel_ops",
    "save_profile",
    "zoo_grid",
]


class ProfileError(BadInputError):
    """A profile is unknown, unreadable, or does not fit the request."""


class MissingLayerError(BadInputError):
    """A model has a layer configuration the profile has no entry or neighbours for."""


# --------------------------------------------------------------------------- profiles I/O


def save_profile(profile: dict[str, Any], path: str | Path) -> Path:
    """Write a profile as JSON through a temporary file and a rename.

    Raises:
        ProfileError: the profile does not validate.
    """
    _validate(profile, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, {k: v for k, v in profile.items() if k != "name"})


def list_profiles() -> list[str]:
    """Names of the profiles shipped in ``edgekit.profiles``."""
    root = resources.files("edgekit.profiles")
    return sorted(
        p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json") and p.is_file()
    )


def load_profile(name_or_path: str | Path) -> dict[str, Any]:
    """Load a shipped profile by name, or a profile file by path.

    A name without a path separator or ``.json`` suffix is looked up in ``edgekit.profiles``;
    anything else is read as a file.

    Raises:
        ProfileError: unknown name (the message lists the shipped ones), unreadable file, or
            a file that is not an edgekit look-up table.
    """
    text_name = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or "/" in text_name or text_name.endswith(".json")
    if is_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ProfileError(f"profile file '{path}' does not exist")
        try:
            text = path.read_text()
        except OSError as err:
            raise ProfileError(f"profile file '{path}' cannot be read: {err}") from err
        source = str(path)
    else:
        entry = resources.files("edgekit.profiles").joinpath(f"{text_name}.json")
        if not entry.is_file():
            shipped = ", ".join(list_profiles()) or "none"
            raise ProfileError(
                f"unknown profile '{text_name}'; shipped profiles: {shipped} "
                "(or pass the path of a .json profile)"
            )
        text = entry.read_text()
        source = text_name
    try:
        profile = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProfileError(
            f"profile '{source}' is not valid JSON: {err.msg} at line {err.lineno}"
        ) from err
    _validate(profile, source)
    # The name is where the table was found, never stored in it (a copy is another table).
    profile["name"] = Path(source).stem if is_path else source
    return profile


def _validate(profile: Any, source: str) -> None:
    if not isinstance(profile, dict) or profile.get("schema") != SCHEMA:
        got = profile.get("schema") if isinstance(profile, dict) else type(profile).__name__
        raise ProfileError(
            f"profile '{source}' is not an edgekit look-up table "
            f"(schema {got!r}, expected '{SCHEMA}')"
        )
    if profile.get("precision") not in PRECISIONS:
        raise ProfileError(
            f"profile '{source}' has precision {profile.get('precision')!r}; "
            f"expected one of {', '.join(PRECISIONS)}"
        )
    entries = profile.get("entries")
    if not isinstance(entries, list) or not entries:
        raise ProfileError(f"profile '{source}' has no entries")
    if not isinstance(profile.get("overhead_ms"), int | float):
        raise ProfileError(f"profile '{source}' has no numeric overhead_ms")
    scale = profile.get("calibration", {"scale": 1.0})
    scale = scale.get("scale") if isinstance(scale, dict) else None
    if not isinstance(scale, int | float) or not 0 < scale < 10:
        raise ProfileError(f"profile '{source}' has a bad calibration scale {scale!r}")
    for e in entries:
        if (
            not isinstance(e, dict)
            or not isinstance(e.get("ms"), int | float)
            or not math.isfinite(e["ms"])
        ):
            raise ProfileError(f"profile '{source}' has an entry without a finite 'ms': {e!r}")
        try:
            LayerKey.from_dict(e)
        except BadInputError as err:
            raise ProfileError(f"profile '{source}': {err}") from err


# --------------------------------------------------------------------------- prediction


@dataclass
class LutPrediction:
    """A model's latency predicted from a look-up table.

    Attributes:
        latency_ms: overhead plus the sum of ``per_layer``.
        overhead_ms: the per-invoke overhead added once.
        per_layer: one estimate per op, in model order.
        missing: names of layers with no entry and no neighbours (not in the sum).
        interpolated: names of layers whose estimate was interpolated or extrapolated.
        profile: the profile's name.
        precision: the profile's precision.
        scale: the profile's calibration scale, applied to every entry.
        reasons: why each missing layer is missing.
    """

    latency_ms: float
    overhead_ms: float
    per_layer: list[LayerEstimate]
    missing: list[str]
    interpolated: list[str]
    profile: str = ""
    precision: str = ""
    scale: float = 1.0
    reasons: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "latency_ms": round(self.latency_ms, 6),
            "overhead_ms": round(self.overhead_ms, 6),
            "profile": self.profile,
            "precision": self.precision,
            "scale": self.scale,
            "layers": len(self.per_layer),
            "missing": self.missing,
            "interpolated": self.interpolated,
            "per_layer": [
                {
                    "name": e.name,
                    "key": e.key,
                    "ms": round(e.ms, 6),
                    "source": e.source,
                    **({"neighbours": e.neighbours} if e.neighbours else {}),
                }
                for e in self.per_layer
            ],
        }


def context_scale(profile: dict[str, Any]) -> float:
    """The profile's calibration scale (1.0 when it has none)."""
    scale = profile.get("calibration", {}).get("scale", 1.0)
    return float(scale) if isinstance(scale, int | float) and scale > 0 else 1.0


def predict_latency(
    model: Any,
    profile: dict[str, Any] | str | Path,
    *,
    strict: bool = True,
    ops: Sequence[ModelOp] | None = None,
) -> LutPrediction:
    """Predict a Keras model's latency from a look-up table.

    ``latency_ms = overhead_ms + scale * sum of the entries of the model's ops``, with the
    profile's calibration scale (see :func:`build_lut`); each ``per_layer`` estimate is its
    entry times the scale, so that they add up.

    Args:
        model: a built ``tf_keras`` functional model with a static input size.
        profile: a loaded profile, a shipped profile name, or a profile path.
        strict: raise on a layer with no entry and no neighbours (otherwise it is listed in
            ``missing`` and left out of the sum).
        ops: the model's ops, if already known (:func:`model_ops`, or
            :func:`rechannel_ops` for a pruned copy of ``model`` that was not built); the
            model then only names itself and its input size in messages.

    Returns:
        The prediction: ``latency_ms``, ``per_layer``, ``missing``, ``interpolated``.

    Raises:
        ProfileError: the profile cannot be loaded.
        MissingLayerError: (strict) a layer the table cannot estimate; the message names it.
    """
    if not isinstance(profile, dict):
        profile = load_profile(profile)
    table = _table_of(profile)
    precision = profile["precision"]
    _, per_layer, missing = sum_ops(ops if ops is not None else model_ops(model, precision), table)
    if missing and strict:
        op, reason = missing[0]
        side = profile.get("input_size")
        shape = tuple(model.inputs[0].shape[1:3])
        hint = (
            f"the model takes {shape[0]}x{shape[1]} inputs, the profile was built for "
            f"{side}x{side}: build one with `edgekit lut build --input-size {shape[0]}`"
            if side and shape != (side, side)
            else "build a profile that covers it with `edgekit lut build`"
        )
        raise MissingLayerError(
            f"layer '{op.name}' of model '{model.name}': {reason} in profile "
            f"'{profile.get('name', '?')}'; {hint}"
        )
    scale = context_scale(profile)
    for e in per_layer:
        e.ms *= scale
    overhead = float(profile["overhead_ms"])
    return LutPrediction(
        latency_ms=overhead + sum(e.ms for e in per_layer),
        overhead_ms=overhead,
        per_layer=per_layer,
        missing=[op.name for op, _ in missing],
        interpolated=[e.name for e in per_layer if e.source != "exact"],
        profile=str(profile.get("name", "")),
        precision=precision,
        scale=scale,
        reasons={op.name: reason for op, reason in missing},
    )


_TABLES: dict[int, tuple[dict[str, Any], LutTable]] = {}


def _table_of(profile: dict[str, Any]) -> LutTable:
    # Searches call predict_latency many times with one profile: index it once.
    cached = _TABLES.get(id(profile))
    if cached is not None and cached[0] is profile:
        return cached[1]
    table = LutTable(profile)
    _TABLES.clear()
    _TABLES[id(profile)] = (profile, table)
    return table
